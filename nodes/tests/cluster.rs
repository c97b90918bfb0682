//! Smoke tests of the multi-node harness (`common/netns.rs`): real strom processes in their own network
//! namespaces, named `strom-0` … like StatefulSet pods, with link faults. Needs root (CI runs as root).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::netns::{assert_no_leftovers, sweep_leftovers, Net, NetNode};
use common::*;

const KEY: &str = "live/test";
/// How long a probe of a path that should be blocked waits.
const BLOCKED: Duration = Duration::from_millis(1000);
/// How long a probe of a path that should work may take (a healed link may need an ARP round first).
const REACHABLE: Duration = Duration::from_secs(5);

fn spawn_all(net: &Net) -> Vec<NetNode> {
    (0..net.len()).map(|i| net.spawn(i, &[], &[])).collect()
}

/// `GET /healthz` of node `to` by name from inside node `from`'s namespace works.
fn assert_reaches(net: &Net, from: usize, to: usize) {
    let url = format!("http://strom-{to}:8080/healthz");
    match net.curl(from, &url, REACHABLE) {
        Ok(body) => assert_eq!(body.trim(), "ok", "{url} from node {from}"),
        Err(e) => panic!("expected node {from} to reach node {to}: {e}"),
    }
}

/// `GET /healthz` of node `to` by name from inside node `from`'s namespace fails within the probe's timeout.
fn assert_blocked(net: &Net, from: usize, to: usize) {
    let url = format!("http://strom-{to}:8080/healthz");
    let started = Instant::now();
    let r = net.curl(from, &url, BLOCKED);
    assert!(r.is_err(), "expected node {from} not to reach node {to}, got {r:?}");
    assert!(started.elapsed() < BLOCKED + Duration::from_secs(3), "blocked probe took {:?}", started.elapsed());
}

#[test]
fn nodes_are_reachable_from_the_host_and_by_name_from_each_other() {
    let net = Net::new(3);
    let nodes = spawn_all(&net);
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(n.ip(), net.ip(i));
        let r = n.get("/healthz");
        assert_eq!((r.status, r.text().trim()), (200, "ok"), "node {i} from the host");
        let serving = n.log().lines().find(|l| l.contains("strom is serving")).map(String::from).unwrap_or_default();
        assert!(serving.contains(&format!("strom-{i}")), "node name in the log: {serving}");
        assert!(serving.contains(&format!("http={}:8080", net.ip(i))), "listen address in the log: {serving}");
    }
    // /etc/netns/<ns>/hosts is what the node namespace sees as /etc/hosts.
    let out = run_with_timeout(net.exec(1, "getent").args(["hosts", "strom-2"]), Duration::from_secs(5));
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(line.starts_with(&format!("{} ", net.ip(2))), "getent hosts strom-2 in node 1: {line:?}");
    assert_reaches(&net, 1, 0);
    assert_reaches(&net, 1, 2);
    assert_reaches(&net, 0, 1);
}

#[test]
fn publish_by_name_from_another_namespace_and_play_hls_from_the_host() {
    let net = Net::new(2);
    let n0 = net.spawn(0, &[], &[]);
    // Node 1's namespace hosts only the publisher: ffmpeg resolves strom-0 through /etc/netns hosts.
    let src = Source { width: 320, height: 240, fps: 25, gop_secs: 2.0, audio: true, seconds: 20.0, bitrate_k: 400 };
    let mut ffmpeg = net.publish(1, &n0.rtmp_url_by_name(KEY), &src);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = n0.get(&format!("/{KEY}/index.m3u8"));
        if r.status == 200 && r.text().matches("#EXTINF").count() >= 2 {
            break;
        }
        assert!(ffmpeg.is_running(), "ffmpeg exited: {}", ffmpeg.log_text());
        assert!(Instant::now() < deadline, "no HLS segments on strom-0:\n{}", n0.log_tail(30));
        std::thread::sleep(Duration::from_millis(100));
    }
    let publishing = n0
        .log()
        .lines()
        .find(|l| l.contains("publishing") && l.contains("peer="))
        .map(String::from)
        .unwrap_or_default();
    assert!(publishing.contains(&format!("peer={}:", net.ip(1))), "publisher came from node 1: {publishing}");
    let (frames, stderr) = probe_video(&n0.http_url(&format!("/{KEY}/index.m3u8")), 2.0);
    assert_playable("hls via the bridge", &frames, 40, 320, 240, &stderr);
}

#[test]
fn cut_isolates_a_node_and_cut_between_blocks_one_pair() {
    let net = Net::new(3);
    let nodes = spawn_all(&net);
    assert_reaches(&net, 0, 2);

    net.cut(2);
    assert_blocked(&net, 0, 2);
    assert_blocked(&net, 2, 1);
    assert!(nodes[2].try_get("/healthz", BLOCKED).is_err(), "the host must not reach a cut node");
    assert_reaches(&net, 0, 1);
    net.heal(2);
    assert_reaches(&net, 0, 2);
    assert_reaches(&net, 2, 1);

    net.cut_between(0, 1);
    assert_blocked(&net, 0, 1);
    assert_blocked(&net, 1, 0);
    assert_reaches(&net, 0, 2);
    assert_reaches(&net, 2, 0);
    assert_reaches(&net, 1, 2);
    assert_reaches(&net, 2, 1);
    for n in &nodes {
        assert_eq!(n.try_get("/healthz", REACHABLE).expect("host reaches every node").0, 200);
    }
    // A second cut pair and healing one of them leaves the other in place.
    net.cut_between(1, 2);
    net.heal_between(0, 1);
    assert_reaches(&net, 0, 1);
    assert_blocked(&net, 2, 1);
    net.heal_between(1, 2);
    assert_reaches(&net, 2, 1);
}

#[test]
fn kill_stop_cont_restart_and_term() {
    let net = Net::new(1);
    let mut n = net.spawn(0, &[], &[("STROM_HLS_WINDOW", "4")]);
    let healthy = |n: &NetNode| matches!(n.try_get("/healthz", Duration::from_secs(2)), Ok((200, _)));
    assert!(healthy(&n));

    // A stopped process still accepts (the kernel does) but never answers.
    n.stop();
    let r = n.try_get("/healthz", Duration::from_millis(500));
    assert!(r.is_err(), "a stopped node answered: {r:?}");
    n.cont();
    assert!(healthy(&n), "continued node answers");

    let first = n.pid();
    n.kill();
    assert!(!n.is_running());
    assert!(n.try_get("/healthz", Duration::from_millis(500)).is_err(), "a killed node answered");

    n.restart();
    assert!(n.is_running());
    assert_ne!(n.pid(), first);
    assert!(healthy(&n), "restarted node answers:\n{}", n.log_tail(20));

    n.restart(); // while running
    assert!(healthy(&n));
    let st = n.term(Duration::from_secs(10)).expect("strom exits on SIGTERM");
    assert!(st.success(), "exit status after SIGTERM: {st}\n{}", n.log_tail(20));

    // Dropping a stopped node must not hang.
    n.restart();
    n.stop();
}

#[test]
fn dropping_a_net_leaves_nothing_behind_also_on_panic_and_after_a_crash() {
    // Normal drop, with a stray process left in a namespace.
    let net = Net::new(2);
    let tag = net.tag().to_string();
    let node = net.spawn(0, &[], &[]);
    let mut stray = net.exec(1, "sleep").arg("60").spawn().expect("spawn sleep in node 1");
    drop(net); // the node keeps the namespaces until it goes
    assert_eq!(node.get("/healthz").status, 200);
    drop(node);
    assert_no_leftovers(&tag);
    assert!(stray.wait().is_ok(), "the stray process was killed");

    // A panicking test.
    let seen = Arc::new(Mutex::new(String::new()));
    let seen2 = seen.clone();
    let r = std::panic::catch_unwind(move || {
        let net = Net::new(2);
        *seen2.lock().expect("tag lock") = net.tag().to_string();
        let _n = net.spawn(1, &[], &[]);
        net.cut_between(0, 1);
        panic!("deliberate panic inside a netns test");
    });
    assert!(r.is_err());
    let tag = seen.lock().expect("tag lock").clone();
    assert!(!tag.is_empty());
    assert_no_leftovers(&tag);

    // Leftovers of a crashed run (its pid is gone) are swept.
    let mut dead = std::process::Command::new("true").spawn().expect("spawn true");
    let pid = dead.id();
    dead.wait().expect("wait true");
    let tag = format!("{pid}-0");
    let hub = format!("strom-{tag}-hub");
    let node = format!("strom-{tag}-0");
    for ns in [&hub, &node] {
        let st = std::process::Command::new("ip").args(["netns", "add", ns]).status().expect("ip netns add");
        assert!(st.success(), "ip netns add {ns}");
    }
    // A sweep by a concurrently running test binary may already have taken the hub: then there is no link either.
    let _ = std::process::Command::new("ip")
        .args(["link", "add", &format!("sr{tag}"), "type", "veth", "peer", "name", "host", "netns", &hub])
        .stderr(std::process::Stdio::null())
        .status();
    std::fs::create_dir_all(format!("/etc/netns/{node}")).expect("mkdir /etc/netns/…");
    sweep_leftovers();
    assert_no_leftovers(&tag);
}
