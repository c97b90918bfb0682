//! Node-to-node TLS transport (on when `cluster.tls_*` are set; see [`crate::tls::ClusterTls`]).
//!
//! ractor_cluster 0.16's own TLS listener awaits each handshake inside its accept loop, so one socket that opens
//! a handshake and stalls blocks every later node from joining. strom therefore runs the cluster port itself:
//! [`serve`] accepts, and every handshake runs in a task of its own under [`HANDSHAKE_DEADLINE`], with at most
//! [`MAX_HANDSHAKES`] at once (more are closed at once). A finished TLS session is handed to the `NodeServer` as
//! an external transport, where the cookie's challenge runs inside it. [`dial`] is the outgoing side.
//!
//! The `NodeServer`'s own listener still exists (ractor_cluster always starts one): it is bound to an ephemeral
//! port on loopback and requires the same client certificate, so it is a dead end for anyone without one.
//!
//! Failed handshakes count in `strom_cluster_auth_failures_total` (like sessions that fail the cookie) and are
//! logged at most once per 10 s.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;
use ractor::ActorRef;
use ractor_cluster::{BoxRead, BoxWrite, ClusterBidiStream, NodeServerMessage};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::{debug, warn};

/// A TLS handshake (either side) must finish within this.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_millis(1500);
/// Inbound handshakes in progress at once; further connections are closed when accepted.
pub const MAX_HANDSHAKES: usize = 256;

/// A TLS session over TCP, handed to ractor_cluster as an external transport.
struct Tls<S> {
    stream: S,
    peer: SocketAddr,
    local: Option<SocketAddr>,
}

impl<S: AsyncRead + AsyncWrite + Send + 'static> ClusterBidiStream for Tls<S> {
    fn split(self: Box<Self>) -> (BoxRead, BoxWrite) {
        let (r, w) = tokio::io::split(self.stream);
        (Box::new(r), Box::new(w))
    }

    // Membership keys sessions by the peer's socket address (as for plain TCP sessions).
    fn peer_label(&self) -> Option<String> {
        Some(self.peer.to_string())
    }

    fn local_label(&self) -> Option<String> {
        self.local.map(|a| a.to_string())
    }
}

/// Logs a failed handshake, at most once per 10 s at warn (a flood of strangers), else at debug.
fn failed(counter: &IntCounter, peer: SocketAddr, incoming: bool, why: &str) {
    static LOGGED_MS: AtomicU64 = AtomicU64::new(0);
    counter.inc();
    let now = crate::clock::unix_ms();
    let last = LOGGED_MS.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= 10_000
        && LOGGED_MS.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    {
        warn!(%peer, incoming, error = %why, "cluster TLS handshake failed (not a node of this cluster's CA?)");
    } else {
        debug!(%peer, incoming, error = %why, "cluster TLS handshake failed");
    }
}

/// Accepts cluster connections on `listener` until the task is dropped: each handshake in its own task, under
/// the deadline; a finished one goes to `node_server`. `failures` counts handshakes that fail or stall.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    node_server: ActorRef<NodeServerMessage>,
    failures: IntCounter,
) {
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: wait instead of spinning.
                warn!(error = %e, "cluster listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            failed(&failures, peer, true, "too many handshakes in progress");
            continue;
        };
        let (acceptor, ns, failures) = (acceptor.clone(), node_server.clone(), failures.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tcp.set_nodelay(true);
            let local = tcp.local_addr().ok();
            match tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let stream = Box::new(Tls { stream, peer, local });
                    if ns.cast(NodeServerMessage::ConnectionOpenedExternal { stream, is_server: true }).is_err() {
                        debug!(%peer, "cluster node server gone; dropping a TLS session");
                    }
                }
                Ok(Err(e)) => failed(&failures, peer, true, &e.to_string()),
                Err(_) => failed(&failures, peer, true, "handshake deadline"),
            }
        });
    }
}

/// Connects to a peer at `sa` over TLS (TCP connect within `connect_timeout`, then the handshake within
/// [`HANDSHAKE_DEADLINE`]) and hands the session to `node_server`. `failures` counts failed handshakes.
pub async fn dial(
    node_server: &ActorRef<NodeServerMessage>,
    connector: &TlsConnector,
    sa: SocketAddr,
    connect_timeout: Duration,
    failures: &IntCounter,
) -> Result<(), String> {
    let tcp = tokio::time::timeout(connect_timeout, TcpStream::connect(sa))
        .await
        .map_err(|_| "connect timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let local = tcp.local_addr().ok();
    // The name is not checked (see `ClusterTls`); the address stands in for it.
    let name = ServerName::IpAddress(sa.ip().into());
    let stream = match tokio::time::timeout(HANDSHAKE_DEADLINE, connector.connect(name, tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            failed(failures, sa, false, &e.to_string());
            return Err(format!("TLS: {e}"));
        }
        Err(_) => {
            failed(failures, sa, false, "handshake deadline");
            return Err("TLS handshake deadline".into());
        }
    };
    ractor_cluster::client_connect_external(node_server, Box::new(Tls { stream, peer: sa, local }))
        .await
        .map_err(|e| e.to_string())
}
