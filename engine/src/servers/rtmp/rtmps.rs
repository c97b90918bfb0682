//! The RTMPS listener (`rtmps.listen`; OBS: `rtmps://HOST:PORT/live`): TLS is ended here and the plain RTMP
//! bytes go to this node's own RTMP listener over loopback, so one RTMP implementation serves both.
//!
//! The RTMP listener must see the client, not loopback: before connecting, the loopback socket is bound to learn
//! its port, and `NodeContext::rtmps_peers` maps that port to the client's address, which the RTMP accept loop
//! takes (limits per address, logs, hooks and address-bound tokens all see the real client). The TLS side holds
//! a node-wide connection slot from accept; its handshake is due within `rtmp.handshake_timeout_secs`; after it,
//! the relay ends as soon as either side does, so the RTMP side's time limits govern the session.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info_span, warn, Instrument};

use crate::servers::NodeContext;
use crate::shutdown::ShutdownSignal;

/// Accepts RTMPS connections until `shutdown`, and relays each to the RTMP listener at `plain`.
pub async fn serve(
    listener: TcpListener,
    plain: SocketAddr,
    acceptor: TlsAcceptor,
    node: Arc<NodeContext>,
    mut shutdown: ShutdownSignal,
) {
    // The RTMP listener as seen from this host.
    let target = match plain.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), plain.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), plain.port()),
        _ => plain,
    };
    let handshake = crate::config::secs(node.config.rtmp.handshake_timeout_secs);
    let mut next_id = 0u64;
    loop {
        let (socket, peer) = tokio::select! {
            _ = shutdown.recv() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "rtmps accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        next_id += 1;
        // A node-wide connection slot for the TLS side (the RTMP side takes its own, per address too, once the
        // handshake is done): a flood of silent TLS sockets is bounded like any other.
        let Ok(slot) = node.connections.clone().try_acquire_owned() else {
            node.refused(peer.ip(), "rtmps", "max_connections");
            continue;
        };
        let acceptor = acceptor.clone();
        let node = node.clone();
        let mut stop = shutdown.clone();
        let span = info_span!("rtmps", conn = next_id, %peer, node = %node.config.node_name);
        tokio::spawn(
            async move {
                let _slot = slot;
                let _ = socket.set_nodelay(true);
                let tls = match tokio::time::timeout(handshake, acceptor.accept(socket)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => return debug!(error = %e, "TLS handshake failed"),
                    Err(_) => return debug!("TLS handshake not completed in time"),
                };
                debug!("RTMPS session");
                let (plain, port) = match connect(target, peer, &node).await {
                    Ok(s) => s,
                    Err(e) => return warn!(error = %e, rtmp = %target, "cannot reach this node's RTMP listener"),
                };
                // Either side ending ends both: the RTMP side applies its handshake, idle and write time limits
                // (a client that stops reading blocks the relay, then the RTMP side's writes, which time out), and
                // this relay follows it.
                let (mut tls_rd, mut tls_wr) = tokio::io::split(tls);
                let (mut plain_rd, mut plain_wr) = plain.into_split();
                tokio::select! {
                    r = tokio::io::copy(&mut tls_rd, &mut plain_wr) => debug!(result = ?r.map(|_| ()), "rtmps client side ended"),
                    r = tokio::io::copy(&mut plain_rd, &mut tls_wr) => debug!(result = ?r.map(|_| ()), "rtmps server side ended"),
                    // The RTMP side ends its own connection at shutdown; this one goes with it, or soon after.
                    _ = async { stop.recv().await; tokio::time::sleep(Duration::from_secs(5)).await } => {}
                }
                node.rtmps_peers.remove(&port);
            }
            .instrument(span),
        );
    }
}

/// A loopback connection to the RTMP listener, announced under the client's address before it connects; and the
/// loopback port (the announcement is taken by the RTMP side at accept, or removed when the relay ends).
async fn connect(
    target: SocketAddr,
    peer: SocketAddr,
    node: &NodeContext,
) -> std::io::Result<(tokio::net::TcpStream, u16)> {
    let socket = if target.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    let local = if target.is_ipv4() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { IpAddr::V6(Ipv6Addr::LOCALHOST) };
    socket.bind(SocketAddr::new(local, 0))?;
    let port = socket.local_addr()?.port();
    node.rtmps_peers.insert(port, peer);
    match socket.connect(target).await {
        Ok(s) => {
            let _ = s.set_nodelay(true);
            Ok((s, port))
        }
        Err(e) => {
            node.rtmps_peers.remove(&port);
            Err(e)
        }
    }
}
