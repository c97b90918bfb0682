//! Node-to-node TLS (`cluster.tls_cert_file`, `cluster.tls_key_file`, `cluster.tls_ca_file`) on real `strom`
//! processes in network namespaces, with certificates made by openssl: nodes of the cluster CA join (also one
//! that knows only a node other than the first: it learns the rest through its peers), media relays over TLS;
//! 50 sockets stalled in a TLS handshake do not stop a node from joining within 3 s; a node with a certificate
//! from another CA, and a plaintext node, are refused and counted.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::netns::{Net, NetNode, CLUSTER_PORT};
use common::*;

const COOKIE: &str = "tls-cookie-5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8";

fn openssl(dir: &Path, args: &[&str]) {
    let out = run_with_timeout(Command::new("openssl").current_dir(dir).args(args), Duration::from_secs(60));
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA `<ca>.pem` and a node certificate `<name>.pem`/`<name>.key` it issued (server and client auth; the
/// names of the StatefulSet's pods, which the nodes do not check).
fn make_ca_and_node(dir: &Path, ca: &str, name: &str) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let ca_key = format!("{ca}.key");
    let ca_pem = format!("{ca}.pem");
    let subj = format!("/CN={ca}");
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    a.extend(["-keyout", &ca_key, "-out", &ca_pem, "-days", "2", "-subj", &subj]);
    openssl(dir, &a);
    let ext = format!("{name}.ext");
    std::fs::write(
        dir.join(&ext),
        "subjectAltName=DNS:*.strom-cluster,DNS:strom-cluster\nbasicConstraints=CA:FALSE\n\
         extendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    let (key, csr, pem, cn) =
        (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("/CN={name}"));
    let mut r = vec!["req"];
    r.extend(ec);
    r.extend(["-keyout", &key, "-out", &csr, "-subj", &cn]);
    openssl(dir, &r);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-days",
            "2",
            "-CAcreateserial",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-out",
            &pem,
            "-extfile",
            &ext,
        ],
    );
}

/// Node `i` with cluster TLS from `dir` (certificate `cert`, CA `ca`; `None`: plaintext), seeding from `seed`.
fn spawn(net: &Net, i: usize, seed: usize, tls: Option<(&Path, &str, &str)>) -> NetNode {
    let listen = format!("{}:{CLUSTER_PORT}", net.ip(i));
    let advertise = net.hostname(i);
    let seed = format!("{}:{CLUSTER_PORT}", net.hostname(seed));
    let args = ["--cluster-listen", &listen, "--cluster-advertise", &advertise, "--seed", &seed];
    let files = tls.map(|(dir, cert, ca)| {
        let f = |n: String| dir.join(n).to_str().unwrap().to_string();
        (f(format!("{cert}.pem")), f(format!("{cert}.key")), f(format!("{ca}.pem")))
    });
    let mut env = vec![("STROM_CLUSTER_COOKIE", COOKIE)];
    if let Some((cert, key, ca)) = &files {
        env.extend([
            ("STROM_CLUSTER_TLS_CERT_FILE", cert.as_str()),
            ("STROM_CLUSTER_TLS_KEY_FILE", key.as_str()),
            ("STROM_CLUSTER_TLS_CA_FILE", ca.as_str()),
        ]);
    }
    net.spawn(i, &args, &env)
}

fn peers(node: &NetNode) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(&node.get("/api/v1/cluster").body).unwrap_or_default();
    let mut p: Vec<String> = v["peers"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["name"].as_str().map(String::from)).collect())
        .unwrap_or_default();
    p.sort();
    p
}

fn wait_peers(node: &NetNode, want: &[&str], timeout: Duration) -> Duration {
    let t = Instant::now();
    while peers(node) != want {
        assert!(
            t.elapsed() < timeout,
            "{} sees {:?} after {:?}, expected {want:?}\n{}",
            node.name(),
            peers(node),
            t.elapsed(),
            node.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    t.elapsed()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn failures_in(node: &NetNode) -> f64 {
    node.metric("strom_cluster_auth_failures_total{direction=\"in\"}")
}

#[test]
fn nodes_of_the_cluster_ca_join_over_tls_and_strangers_stalls_and_plaintext_are_refused() {
    let dir = scratch("cluster-tls");
    make_ca_and_node(&dir, "cluster-ca", "node");
    make_ca_and_node(&dir, "other-ca", "rogue");
    let net = Net::new(4);
    let tls = Some((dir.as_path(), "node", "cluster-ca"));
    let a = spawn(&net, 0, 1, tls);
    let port = std::net::SocketAddr::new(a.ip().into(), CLUSTER_PORT);
    wait_until("strom-0's cluster port", Duration::from_secs(20), || TcpStream::connect(port).is_ok());

    // 50 sockets open a TLS handshake (the first bytes of a ClientHello) and stall; strom-1 joins meanwhile.
    let before = failures_in(&a);
    let mut stalled: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = TcpStream::connect(port).expect("connect");
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]).unwrap();
            s
        })
        .collect();
    let started = Instant::now();
    let b = spawn(&net, 1, 0, tls);
    wait_peers(&a, &["strom-1"], Duration::from_secs(3));
    let joined = started.elapsed();
    wait_peers(&b, &["strom-0"], Duration::from_secs(3));
    eprintln!("strom-1 joined over TLS in {joined:?} (from its start) while 50 handshakes stalled");
    // The stalled ones are closed by the handshake deadline and counted.
    for s in &mut stalled {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        let closed = loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break true,
                Ok(_) => continue,
            }
        };
        assert!(closed);
    }
    wait_until("the stalled handshakes to be counted", Duration::from_secs(5), || failures_in(&a) >= before + 50.0);

    // strom-2 knows only strom-1, and finds strom-0 through it (no plaintext transitive dial).
    let c = spawn(&net, 2, 1, tls);
    wait_peers(&c, &["strom-0", "strom-1"], Duration::from_secs(15));
    wait_peers(&a, &["strom-1", "strom-2"], Duration::from_secs(5));

    // Media crosses the TLS links: published on strom-0, played on strom-2.
    let key = "live/sealed";
    let _p = publish(&a.rtmp_url(key), &Source { seconds: 60.0, ..Source::default() });
    wait_until("the stream on strom-0", Duration::from_secs(30), || a.get(&format!("/{key}/index.m3u8")).status == 200);
    let (frames, stderr) = probe_video(&c.http_url(&format!("/{key}.flv")), 2.0);
    assert_playable("flv relayed over TLS to strom-2", &frames, 30, 426, 240, &stderr);

    // A node with a certificate from another CA is refused (both ways), and so is a plaintext node.
    let before = failures_in(&a);
    let mut rogue = spawn(&net, 3, 0, Some((dir.as_path(), "rogue", "other-ca")));
    wait_until("the rogue node's refusal to be counted", Duration::from_secs(10), || failures_in(&a) > before);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(peers(&a), vec!["strom-1", "strom-2"], "a node of another CA joined");
    assert!(peers(&rogue).is_empty(), "the rogue node sees {:?}", peers(&rogue));
    rogue.kill();
    let before = failures_in(&a);
    let plain = spawn(&net, 3, 0, None);
    wait_until("the plaintext node's refusal to be counted", Duration::from_secs(10), || failures_in(&a) > before);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(peers(&a), vec!["strom-1", "strom-2"], "a plaintext node joined");
    assert!(peers(&plain).is_empty(), "the plaintext node sees {:?}", peers(&plain));
    // The cluster is whole after all of it.
    assert_eq!(peers(&b), vec!["strom-0", "strom-2"]);
    assert!(a.log().contains("tls=true"), "strom-0 did not log cluster TLS");
}
