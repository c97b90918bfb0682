//! Multi-node harness: N real `strom` processes, each in its own network namespace — the stand-in for the pods of
//! a Kubernetes StatefulSet.
//!
//! Layout of one [`Net`] (tag `T` = creating pid + a per-process counter, subnet `10.213.X.0/24`):
//!
//! ```text
//!  root ns (the test process)        hub ns strom-T-hub                node ns strom-T-<i>
//!  sr<T> 10.213.X.1/24  <--veth-->  host ─┐
//!                                         br0 ── n<i>   <--veth-->   eth0 10.213.X.(10+i)/24, lo
//! ```
//!
//! Every node namespace gets `/etc/netns/<ns>/hosts` mapping `strom-0` … `strom-(n-1)` to the node addresses;
//! `ip netns exec` bind-mounts it over `/etc/hosts`, so a node (and any client started with [`Net::exec`]) resolves
//! its peers by name. The root namespace does not: from the test process, use the addresses ([`NetNode::http`],
//! [`Net::ip`]).
//!
//! Link faults: [`Net::cut`] sets a node's veth down on the hub side (isolated from everyone, the test process
//! included); [`Net::cut_between`] drops the traffic of one pair with nftables rules inside the two node
//! namespaces (silent drops, both directions, established connections included). `tc` cannot do the latter on our
//! CI kernel: it has neither the `prio`/`netem` qdiscs nor the `gact` (drop) action.
//!
//! Everything is removed on drop (also on a panic's unwind); leftovers of crashed runs (whose pid is gone) are
//! removed by the next [`Net::new`]. Needs root and iproute2 (and nftables for `cut_between`); without them it
//! panics with a message rather than skipping.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use super::{http_get, publish_with, run_with_timeout, scratch, HttpResponse, Proc, Source};

/// The RTMP port every node listens on (its own address).
pub const RTMP_PORT: u16 = 1935;
/// The HTTP port every node listens on (its own address).
pub const HTTP_PORT: u16 = 8080;
/// The cluster port [`Net::spawn_cluster`] gives every node.
pub const CLUSTER_PORT: u16 = 4697;

/// Where subnet claims live (one lock file per `10.213.X.0/24`, holding the owner's pid).
const LOCK_DIR: &str = "/run/strom-netns";
/// The name prefix of namespaces (and `/etc/netns` directories) this harness creates.
const NS_PREFIX: &str = "strom-";
/// The name prefix of the root-namespace veth ends this harness creates.
const LINK_PREFIX: &str = "sr";

static NETS: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// A group of node namespaces on one bridge, reachable from the test process. Cheap to share: nodes keep the
/// namespaces alive, so dropping the `Net` before its nodes is fine; cleanup runs when the last of them goes.
pub struct Net {
    inner: Arc<Inner>,
}

struct Inner {
    tag: String,
    hub: String,
    nodes: Vec<String>,
    ips: Vec<Ipv4Addr>,
    host_ip: Ipv4Addr,
    host_link: String,
    lock: PathBuf,
    dir: PathBuf,
    /// Pairs `(i, j)`, `i < j`, cut by `cut_between`.
    cuts: Mutex<BTreeSet<(usize, usize)>>,
}

impl Net {
    /// Creates `n` node namespaces `strom-<tag>-0` … on a fresh bridge and a veth from the test process into it.
    /// Panics with an explanation when not root or when iproute2 cannot create namespaces.
    pub fn new(n: usize) -> Net {
        assert!((1..=200).contains(&n), "Net::new: 1..=200 nodes, got {n}");
        preflight();
        SWEEP.call_once(sweep_leftovers);
        let pid = std::process::id();
        let count = NETS.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{pid}-{count}");
        let host_link = format!("{LINK_PREFIX}{tag}");
        assert!(host_link.len() <= 15, "interface name {host_link} longer than 15 characters");
        let (x, lock) = claim_subnet(pid, count, &tag);
        let inner = Inner {
            hub: format!("{NS_PREFIX}{tag}-hub"),
            nodes: (0..n).map(|i| format!("{NS_PREFIX}{tag}-{i}")).collect(),
            ips: (0..n).map(|i| Ipv4Addr::new(10, 213, x, 10 + i as u8)).collect(),
            host_ip: Ipv4Addr::new(10, 213, x, 1),
            host_link,
            lock,
            dir: scratch(&format!("net-{tag}")),
            cuts: Mutex::new(BTreeSet::new()),
            tag,
        };
        // From here on, `Inner`'s drop undoes whatever part was built if a step panics.
        inner.build();
        Net { inner: Arc::new(inner) }
    }

    /// The unique part of every name this net created (`strom-<tag>-…`, `sr<tag>`).
    pub fn tag(&self) -> &str {
        &self.inner.tag
    }

    /// Number of node namespaces.
    pub fn len(&self) -> usize {
        self.inner.nodes.len()
    }

    /// Always false: a net has at least one node.
    pub fn is_empty(&self) -> bool {
        self.inner.nodes.is_empty()
    }

    /// The namespace name of node `i` (for `ip netns exec`).
    pub fn ns(&self, i: usize) -> &str {
        &self.inner.nodes[i]
    }

    /// The address of node `i`, reachable from the test process and from every node.
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        self.inner.ips[i]
    }

    /// The test process's address on the bridge.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.inner.host_ip
    }

    /// The host name of node `i` (`strom-<i>`), resolvable inside every node namespace only.
    pub fn hostname(&self, i: usize) -> String {
        format!("strom-{i}")
    }

    /// Starts `strom` in node `i`'s namespace:
    /// `strom --node-name strom-<i> --rtmp-listen <ip>:1935 --http-listen <ip>:8080 <args>` with `env` (and no
    /// inherited `STROM_*` variable); waits until it serves.
    pub fn spawn(&self, i: usize, args: &[&str], env: &[(&str, &str)]) -> NetNode {
        assert!(i < self.len(), "node {i} of a net of {}", self.len());
        let ip = self.ip(i);
        let mut node = NetNode {
            net: self.inner.clone(),
            index: i,
            ip,
            rtmp: SocketAddr::new(IpAddr::V4(ip), RTMP_PORT),
            http: SocketAddr::new(IpAddr::V4(ip), HTTP_PORT),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            child: None,
            stopped: false,
            generation: 0,
            dir: self.inner.dir.join(format!("node-{i}")),
            log: PathBuf::new(),
        };
        std::fs::create_dir_all(&node.dir).expect("node log dir");
        node.start();
        node
    }

    /// For the cluster tests (strom's clustering flags): [`Net::spawn`] with
    /// `--cluster-listen <ip>:4697 --cluster-advertise strom-<i> --seed <seed>:4697` and `STROM_CLUSTER_COOKIE`.
    /// Every node seeds from `strom-0`; `strom-0` itself seeds from `strom-1` (nothing in a one-node net).
    pub fn spawn_cluster(&self, i: usize, cookie: &str, extra_args: &[&str]) -> NetNode {
        self.spawn_cluster_with(i, cookie, extra_args, &[])
    }

    /// [`Net::spawn_cluster`] with more `STROM_*` variables.
    pub fn spawn_cluster_with(&self, i: usize, cookie: &str, extra_args: &[&str], env: &[(&str, &str)]) -> NetNode {
        let listen = format!("{}:{CLUSTER_PORT}", self.ip(i));
        let advertise = self.hostname(i);
        let mut args = vec!["--cluster-listen", listen.as_str(), "--cluster-advertise", advertise.as_str()];
        let seed = match i {
            0 if self.len() > 1 => Some(format!("{}:{CLUSTER_PORT}", self.hostname(1))),
            0 => None,
            _ => Some(format!("{}:{CLUSTER_PORT}", self.hostname(0))),
        };
        if let Some(seed) = &seed {
            args.extend(["--seed", seed.as_str()]);
        }
        args.extend_from_slice(extra_args);
        // strom refuses a cookie under 128 bits: the tests' short names get a fixed strong tail (two tests'
        // cookies still differ by their names).
        let cookie = format!("{cookie}-5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8");
        let mut vars = vec![("STROM_CLUSTER_COOKIE", cookie.as_str())];
        vars.extend_from_slice(env);
        self.spawn(i, &args, &vars)
    }

    /// A command running `program` inside node `i`'s namespace (with the net's `/etc/hosts`); add arguments and
    /// run it as usual. Processes left running in the namespace are killed when the net goes.
    pub fn exec(&self, i: usize, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.ns(i), program]);
        cmd
    }

    /// ffmpeg publishing a generated stream to `url`, run inside node `i`'s namespace (so `url` may use names).
    pub fn publish(&self, i: usize, url: &str, src: &Source) -> Proc {
        publish_with(self.exec(i, "ffmpeg"), url, src)
    }

    /// `curl -f` of `url` from inside node `i`'s namespace, bounded by `timeout`: the body, or curl's error.
    pub fn curl(&self, i: usize, url: &str, timeout: Duration) -> Result<String, String> {
        let secs = format!("{:.3}", timeout.as_secs_f64());
        let out = run_with_timeout(
            self.exec(i, "curl").args(["-sS", "-f", "--connect-timeout", &secs, "--max-time", &secs, url]),
            timeout + Duration::from_secs(5),
        );
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).to_string())
        } else {
            Err(format!("curl {url} from node {i}: {} {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    /// Isolates node `i` from everyone (the test process included): its veth goes down on the hub side.
    pub fn cut(&self, i: usize) {
        ip(&["-n", &self.inner.hub, "link", "set", &format!("n{i}"), "down"]);
    }

    /// Undoes [`Net::cut`].
    pub fn heal(&self, i: usize) {
        ip(&["-n", &self.inner.hub, "link", "set", &format!("n{i}"), "up"]);
    }

    /// Drops all traffic between nodes `i` and `j` (both directions, silently), leaving every other path alone.
    pub fn cut_between(&self, i: usize, j: usize) {
        self.set_cut(i, j, true);
    }

    /// Undoes [`Net::cut_between`].
    pub fn heal_between(&self, i: usize, j: usize) {
        self.set_cut(i, j, false);
    }

    fn set_cut(&self, i: usize, j: usize, cut: bool) {
        assert!(i != j && i < self.len() && j < self.len(), "cut_between({i}, {j}) in a net of {}", self.len());
        let pair = (i.min(j), i.max(j));
        let mut cuts = self.inner.cuts.lock().unwrap_or_else(|e| e.into_inner());
        if cut {
            cuts.insert(pair);
        } else {
            cuts.remove(&pair);
        }
        for k in [i, j] {
            let peers: Vec<String> = cuts
                .iter()
                .filter_map(|&(a, b)| {
                    if a == k {
                        Some(b)
                    } else if b == k {
                        Some(a)
                    } else {
                        None
                    }
                })
                .map(|p| self.ip(p).to_string())
                .collect();
            self.inner.write_cut_rules(k, &peers);
        }
    }
}

impl Inner {
    fn build(&self) {
        ip(&["netns", "add", &self.hub]);
        ip(&["-n", &self.hub, "link", "set", "lo", "up"]);
        ip(&["-n", &self.hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &self.hub, "link", "set", "br0", "up"]);
        let hosts = self.hosts_file();
        for (i, ns) in self.nodes.iter().enumerate() {
            let etc = Path::new("/etc/netns").join(ns);
            std::fs::create_dir_all(&etc).unwrap_or_else(|e| panic!("create {}: {e}", etc.display()));
            std::fs::write(etc.join("hosts"), &hosts).unwrap_or_else(|e| panic!("write {}/hosts: {e}", etc.display()));
            let hub_end = format!("n{i}");
            let addr = format!("{}/24", self.ips[i]);
            let node_mac = mac(self.ips[i]);
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&[
                "-n", &self.hub, "link", "add", &hub_end, "type", "veth", "peer", "name", "eth0", "address", &node_mac,
                "netns", ns,
            ]);
            ip(&["-n", &self.hub, "link", "set", &hub_end, "master", "br0", "up"]);
            ip(&["-n", ns, "addr", "add", &addr, "dev", "eth0"]);
            ip(&["-n", ns, "link", "set", "eth0", "up"]);
        }
        let addr = format!("{}/24", self.host_ip);
        let host_mac = mac(self.host_ip);
        ip(&[
            "link",
            "add",
            &self.host_link,
            "address",
            &host_mac,
            "type",
            "veth",
            "peer",
            "name",
            "host",
            "netns",
            &self.hub,
        ]);
        ip(&["-n", &self.hub, "link", "set", "host", "master", "br0", "up"]);
        ip(&["addr", "add", &addr, "dev", &self.host_link]);
        ip(&["link", "set", &self.host_link, "up"]);
        // Static ARP everywhere: a cut link then drops packets silently (connects hang, as across a real
        // partition) instead of failing ARP, and a healed link works at once rather than after ARP gives up.
        let all: Vec<Ipv4Addr> = self.ips.iter().copied().chain([self.host_ip]).collect();
        let neighbours = |me: Ipv4Addr, dev: &str| -> String {
            all.iter()
                .filter(|&&a| a != me)
                .map(|&a| format!("neigh replace {a} lladdr {} dev {dev} nud permanent\n", mac(a)))
                .collect()
        };
        for (i, ns) in self.nodes.iter().enumerate() {
            ip_batch(&["-n", ns], &neighbours(self.ips[i], "eth0"));
        }
        ip_batch(&[], &neighbours(self.host_ip, &self.host_link));
    }

    fn hosts_file(&self) -> String {
        let mut s = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        for (i, ip) in self.ips.iter().enumerate() {
            s.push_str(&format!("{ip}\tstrom-{i}\n"));
        }
        s
    }

    /// Replaces node `k`'s drop rules with drops to and from `peers` (none: the table goes).
    fn write_cut_rules(&self, k: usize, peers: &[String]) {
        // Declaring the table first makes the delete succeed whether or not it exists; the whole file is atomic.
        let mut script = String::from("table inet strom_cut\ndelete table inet strom_cut\n");
        if !peers.is_empty() {
            let set = peers.join(", ");
            script.push_str(&format!(
                "table inet strom_cut {{\n\
                 \tset peers {{ type ipv4_addr; elements = {{ {set} }}; }}\n\
                 \tchain out {{ type filter hook output priority 0; policy accept; ip daddr @peers drop; }}\n\
                 \tchain in {{ type filter hook input priority 0; policy accept; ip saddr @peers drop; }}\n\
                 }}\n"
            ));
        }
        let out = run_with_input(Command::new("ip").args(["netns", "exec", &self.nodes[k], "nft", "-f", "-"]), &script);
        assert!(
            out.status.success(),
            "nft in {} failed ({}): {}\ncut_between needs nftables (nodes/scripts/packages.sh installs it)",
            self.nodes[k],
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = quiet_ip(&["link", "del", &self.host_link]);
        for ns in self.nodes.iter().chain([&self.hub]) {
            remove_namespace(ns);
        }
        let _ = std::fs::remove_file(&self.lock);
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One `strom` process in a node namespace. Killed on drop (continued first if stopped).
pub struct NetNode {
    net: Arc<Inner>,
    index: usize,
    ip: Ipv4Addr,
    /// RTMP listen address (the node's address, port 1935).
    pub rtmp: SocketAddr,
    /// HTTP listen address (the node's address, port 8080).
    pub http: SocketAddr,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    stopped: bool,
    generation: u32,
    dir: PathBuf,
    log: PathBuf,
}

impl NetNode {
    /// The value of one metric series (`name{labels}`) on this node; 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        super::metric_in(&self.get("/metrics").text(), series)
    }

    fn start(&mut self) {
        self.generation += 1;
        self.log = self.dir.join(format!("strom-{}.log", self.generation));
        let logf = std::fs::File::create(&self.log).expect("node log file");
        let bin = env!("CARGO_BIN_EXE_strom");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.net.nodes[self.index], bin]);
        // The node sees only the variables a test gives it, not whatever `STROM_*` the runner's shell exports.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("STROM_") {
                cmd.env_remove(k);
            }
        }
        cmd.arg("--node-name")
            .arg(self.name())
            .arg("--rtmp-listen")
            .arg(self.rtmp.to_string())
            .arg("--http-listen")
            .arg(self.http.to_string())
            .args(&self.args)
            .env("STROM_LOG", "info,strom_engine=debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf);
        let mut child = cmd.spawn().expect("spawn ip netns exec strom");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = self.log();
            if text.lines().any(|l| l.contains("strom is serving")) {
                self.child = Some(child);
                self.stopped = false;
                return;
            }
            if Instant::now() > deadline || !matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not start in {}:\n{text}", self.name(), self.net.nodes[self.index]);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The node's index in its net.
    pub fn index(&self) -> usize {
        self.index
    }

    /// `strom-<i>`: its node name and host name.
    pub fn name(&self) -> String {
        format!("strom-{}", self.index)
    }

    /// The node's address.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// Process id of the running strom (0 when not running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// `rtmp://<ip>:1935/<key>`: works from the test process and every node.
    pub fn rtmp_url(&self, key: &str) -> String {
        format!("rtmp://{}/{key}", self.rtmp)
    }

    /// `rtmp://strom-<i>:1935/<key>`: works inside node namespaces only.
    pub fn rtmp_url_by_name(&self, key: &str) -> String {
        format!("rtmp://{}:{RTMP_PORT}/{key}", self.name())
    }

    /// `http://<ip>:8080<path>`: works from the test process and every node.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// `http://strom-<i>:8080<path>`: works inside node namespaces only.
    pub fn http_url_by_name(&self, path: &str) -> String {
        format!("http://{}:{HTTP_PORT}{path}", self.name())
    }

    /// GET from the test process; panics on a transport error.
    pub fn get(&self, path: &str) -> HttpResponse {
        http_get(self.http, path).unwrap_or_else(|e| panic!("GET {} {path}: {e}", self.name()))
    }

    /// GET from the test process with one deadline for connect and response (for unreachable or stopped nodes).
    pub fn try_get(&self, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
        get_with_timeout(self.http, path, timeout)
    }

    /// The names of the peers this node is joined with (`/api/v1/cluster`).
    pub fn peers(&self) -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.get("/api/v1/cluster").body).unwrap_or_default();
        v["peers"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["name"].as_str().map(String::from)).collect())
            .unwrap_or_default()
    }

    /// Waits until this node is joined with `n` peers (panics with its log after `timeout`).
    pub fn wait_peers(&self, n: usize, timeout: Duration) {
        let t = Instant::now();
        while self.peers().len() != n {
            assert!(
                t.elapsed() < timeout,
                "{} sees {:?}, expected {n} peers\n{}",
                self.name(),
                self.peers(),
                self.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The log of the current (or last) run of the process.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of [`NetNode::log`].
    pub fn log_tail(&self, n: usize) -> String {
        let t = self.log();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Whether the process is alive (stopped counts as alive).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGKILL, and reaps the process.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.stopped = false;
    }

    /// SIGTERM (and SIGCONT if stopped), then waits up to `timeout` for the exit; `None` if it is still running.
    pub fn term(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.signal("TERM");
        if self.stopped {
            self.signal("CONT");
            self.stopped = false;
        }
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                self.child = None;
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGSTOP, and waits until every thread has stopped: the process freezes (its listening sockets still
    /// complete handshakes into the backlog, nothing answers).
    pub fn stop(&mut self) {
        assert!(self.signal("STOP"), "{}: SIGSTOP failed (not running?)", self.name());
        self.stopped = true;
        // `kill` returns once the signal is queued; the threads stop when each is next scheduled, and until then
        // a running worker may still answer.
        let tasks = format!("/proc/{}/task", self.pid());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let states: Vec<String> = std::fs::read_dir(&tasks)
                .map(|d| {
                    d.flatten()
                        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
                        .filter_map(|st| st.rsplit_once(") ").map(|(_, rest)| rest[..1].to_string()))
                        .collect()
                })
                .unwrap_or_default();
            if !states.is_empty() && states.iter().all(|s| s == "T") {
                return;
            }
            assert!(Instant::now() < deadline, "{}: threads not stopped after SIGSTOP: {states:?}", self.name());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGCONT.
    pub fn cont(&mut self) {
        assert!(self.signal("CONT"), "{}: SIGCONT failed (not running?)", self.name());
        self.stopped = false;
    }

    /// Kills the process if it runs and starts it again in the same namespace with the same arguments and
    /// environment; waits until it serves. The new run logs to a new file ([`NetNode::log`]).
    pub fn restart(&mut self) {
        self.kill();
        self.start();
    }

    /// Sends `sig` to the process, if there is one; whether `kill` succeeded.
    fn signal(&self, sig: &str) -> bool {
        match &self.child {
            Some(c) => Command::new("kill")
                .args([&format!("-{sig}"), &c.id().to_string()])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            None => false,
        }
    }
}

impl Drop for NetNode {
    fn drop(&mut self) {
        if self.stopped {
            let _ = self.signal("CONT");
        }
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- {} log (tail) ----\n{}\n----", self.name(), self.log_tail(60));
        }
    }
}

/// Panics unless every namespace, link and `/etc/netns` directory named with `tag` is gone.
pub fn assert_no_leftovers(tag: &str) {
    let needle = format!("-{tag}-");
    let netns = output("ip", &["netns", "list"]);
    let links = output("ip", &["-o", "link", "show"]);
    let left: Vec<&str> =
        netns
            .lines()
            .filter(|l| l.contains(&needle))
            .chain(links.lines().filter(|l| {
                l.contains(&format!(" {LINK_PREFIX}{tag}@")) || l.contains(&format!(" {LINK_PREFIX}{tag}:"))
            }))
            .collect();
    assert!(left.is_empty(), "leftovers of net {tag}: {left:?}");
    let etc: Vec<String> = std::fs::read_dir("/etc/netns")
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect())
        .unwrap_or_default();
    assert!(!etc.iter().any(|e| e.contains(&needle)), "leftover /etc/netns dirs of net {tag}: {etc:?}");
    let claims: Vec<String> = std::fs::read_dir(LOCK_DIR)
        .map(|d| d.flatten().filter_map(|e| std::fs::read_to_string(e.path()).ok()).collect())
        .unwrap_or_default();
    assert!(!claims.iter().any(|c| c.split_whitespace().nth(1) == Some(tag)), "leftover subnet claim of net {tag}");
}

fn preflight() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|v| v.split_whitespace().nth(1));
    assert!(
        euid == Some("0"),
        "the netns test harness needs root (it creates network namespaces, veths and /etc/netns files); \
         CI runs as root — run the cluster tests as root (euid is {euid:?})"
    );
    match Command::new("ip").args(["netns", "list"]).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "the netns test harness needs `ip netns` (iproute2): `ip netns list` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!("the netns test harness needs iproute2 (`ip`): {e}; nodes/scripts/test.sh installs it"),
    }
}

/// Claims a free `10.213.X.0/24`: an exclusive lock file per X (pid inside, stale ones taken over), and no
/// address or route of the root namespace in it.
fn claim_subnet(pid: u32, count: u32, tag: &str) -> (u8, PathBuf) {
    std::fs::create_dir_all(LOCK_DIR).unwrap_or_else(|e| panic!("create {LOCK_DIR}: {e}"));
    let start = (pid.wrapping_mul(2_654_435_761) >> 8).wrapping_add(count.wrapping_mul(37)) % 256;
    let used = format!("{}\n{}", output("ip", &["-4", "-o", "addr", "show"]), output("ip", &["-4", "route", "show"]));
    for k in 0..256 {
        let x = ((start + k) % 256) as u8;
        if used.contains(&format!("10.213.{x}.")) {
            continue;
        }
        let lock = Path::new(LOCK_DIR).join(format!("subnet-{x}"));
        for _ in 0..2 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&lock) {
                Ok(mut f) => {
                    f.write_all(format!("{pid} {tag}\n").as_bytes()).expect("write subnet lock");
                    return (x, lock);
                }
                Err(_) => {
                    let owner = std::fs::read_to_string(&lock).unwrap_or_default();
                    match owner.split_whitespace().next().unwrap_or("").parse::<u32>() {
                        Ok(p) if !alive(p) => {
                            let _ = std::fs::remove_file(&lock);
                        }
                        _ => break,
                    }
                }
            }
        }
    }
    panic!("no free 10.213.X.0/24 subnet (see {LOCK_DIR})");
}

/// Removes namespaces (killing what still runs in them), root-namespace links, `/etc/netns` directories and
/// subnet claims of nets whose creating process is gone ([`Net::new`] runs it once per process).
pub fn sweep_leftovers() {
    let dead = |owner: Option<u32>| owner.is_some_and(|p| !alive(p));
    for line in output("ip", &["-o", "link", "show"]).lines() {
        // "12: sr1234-0@if11: <BROADCAST,…"
        if let Some(name) = line.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n)) {
            if dead(owner_pid(name, LINK_PREFIX, false)) {
                let _ = quiet_ip(&["link", "del", name]);
            }
        }
    }
    for line in output("ip", &["netns", "list"]).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if dead(owner_pid(name, NS_PREFIX, true)) {
            remove_namespace(name);
        }
    }
    if let Ok(dir) = std::fs::read_dir("/etc/netns") {
        for e in dir.flatten() {
            if dead(owner_pid(&e.file_name().to_string_lossy(), NS_PREFIX, true)) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir(LOCK_DIR) {
        for e in dir.flatten() {
            let owner = std::fs::read_to_string(e.path()).unwrap_or_default();
            if dead(owner.split_whitespace().next().and_then(|p| p.parse().ok())) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// The creating pid in a name of ours: `<prefix><pid>-<count>` (links) or `<prefix><pid>-<count>-<hub|i>`
/// (namespaces); `None` for any other name.
fn owner_pid(name: &str, prefix: &str, namespace: bool) -> Option<u32> {
    let parts: Vec<&str> = name.strip_prefix(prefix)?.split('-').collect();
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let shape = match (namespace, parts.as_slice()) {
        (false, [p, c]) => numeric(p) && numeric(c),
        (true, [p, c, i]) => numeric(p) && numeric(c) && (*i == "hub" || numeric(i)),
        _ => false,
    };
    let pid: u32 = if shape { parts[0].parse().ok()? } else { return None };
    (pid > 1).then_some(pid)
}

/// Kills whatever still runs in `ns`, deletes it and its `/etc/netns` directory.
fn remove_namespace(ns: &str) {
    for _ in 0..50 {
        let pids = output("ip", &["netns", "pids", ns]);
        if pids.trim().is_empty() {
            break;
        }
        for p in pids.split_whitespace() {
            let _ = Command::new("kill").args(["-CONT", p]).stderr(Stdio::null()).status();
            let _ = Command::new("kill").args(["-KILL", p]).stderr(Stdio::null()).status();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = quiet_ip(&["netns", "del", ns]);
    let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The MAC address of a net address: `02:13:<x>:00:00:<host>` (locally administered, unique per subnet).
fn mac(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:13:{:02x}:00:00:{:02x}", o[2], o[3])
}

/// Runs `ip <opts> -batch -` with `commands` (one a line) on stdin; panics with its stderr on failure.
fn ip_batch(opts: &[&str], commands: &str) {
    let out = run_with_input(Command::new("ip").args(opts).args(["-batch", "-"]), commands);
    assert!(
        out.status.success(),
        "ip {opts:?} -batch failed: {}\n{commands}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Runs `cmd` with `input` on its stdin; its stderr is kept for the caller's error message.
fn run_with_input(cmd: &mut Command, input: &str) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
    child.wait_with_output().expect("wait")
}

/// Runs `ip args…`; panics with its stderr on failure.
fn ip(args: &[&str]) {
    if let Err(e) = quiet_ip(args) {
        panic!("ip {}: {e}", args.join(" "));
    }
}

fn quiet_ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).stdin(Stdio::null()).output().map_err(|e| format!("spawn ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn output(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// GET `path` from `addr` with one deadline for connect and response: (status, body); status 0 when the answer
/// has none.
pub fn get_with_timeout(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}
