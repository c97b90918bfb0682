#!/usr/bin/env python3
"""The HPA loop against a real Prometheus, offline.

Three real strom nodes (one cluster) on loopback; a real Prometheus (Debian's) scraping them every second
through the *shipped* scrape job (deploy/statefulset/prometheus/prometheus.yml: its kubernetes_sd_configs are
swapped for static targets carrying the same __meta_kubernetes_* labels a pod would have, so the shipped relabel
rules produce the namespace/pod labels) and loading the shipped alert rules; ffmpeg publishing, HTTP-FLV readers
on every node. The shipped prometheus-adapter rule (prometheus-adapter/values.yaml) is rendered as the adapter
renders it for the HPA's request and evaluated through Prometheus' HTTP API; Kubernetes' HPA formula is applied
with the shipped HPA's target, bounds and tolerance:

    desired = ceil(current * avg(metric) / target)   unless |avg/target - 1| <= 0.1

It must ask for fewer pods while the nodes idle and for more under load. Then every query of the Grafana
dashboard is evaluated against the same Prometheus, and every metric it names must be in the nodes' live
/metrics. The nodes transcode (one tiny ultrafast rung), so the ladder's metrics are real too; the readers on
strom-1 and strom-2 are relayed, so relay lag is. Every process started here is stopped on exit.

usage: hpa_loop.py --strom target/debug/strom --hpa rendered-base.yaml [--work DIR]
"""
import argparse
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
DEPLOY = os.path.dirname(HERE)
NAMESPACE = "strom"
NODES = 3
READERS_PER_NODE = 4
# Small on purpose: a few HTTP-FLV readers of one ~0.8 Mbit/s stream put a node far above 1.0.
EGRESS_MBPS = "2"
# The ABR ladder is on so the dashboard's encoder panels have data: one rung, as cheap as x264 gets.
TRANSCODE_RUNGS = '[{height = 160, bitrate_kbps = 200, preset = "ultrafast"}]'
# Series the dashboard needs that only appear (or only count) once something happened: the ladder's labelled
# series (a rung encoded, a ratio window reported), relay batches received, drops and a refused request. Each
# must be above 0 on some node before the dashboard is checked.
DASHBOARD_SERIES = [
    "strom_encoder_realtime_ratio", "strom_encoder_fps", "strom_encoder_frames_total",
    "strom_encoder_latency_seconds_count", "strom_cluster_relay_lag_seconds_count", "strom_frames_dropped_total",
    "strom_connections_rejected_total",
]
TOLERANCE = 0.1  # the HPA controller's default --horizontal-pod-autoscaler-tolerance

failures = []


def log(msg):
    print(f"[hpa-loop {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def check(ok, what):
    log(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)
    return ok


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=3):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def try_get(url, timeout=2):
    try:
        return http_get(url, timeout)
    except Exception:
        return None, b""


class Processes:
    """Every process this test starts, stopped (by its own pid) on exit."""

    def __init__(self, work):
        self.work = work
        self.procs = []

    def start(self, name, cmd, env=None):
        out = open(os.path.join(self.work, f"{name}.log"), "wb")
        p = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append((name, p))
        return p

    def stop(self, p, grace=3):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop_all(self):
        for _, p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        deadline = time.time() + 5
        for _, p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def quantity(q):
    """A Kubernetes quantity as a float (enough of it for HPA targets: plain, m, k, Ki...)."""
    q = str(q)
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
    for u in sorted(units, key=len, reverse=True):
        if q.endswith(u):
            return float(q[: -len(u)]) * units[u]
    return float(q)


def hpa_desired(values, target, current, lo, hi):
    """Kubernetes' replica calculator for a Pods metric with an AverageValue target."""
    ratio = (sum(values) / len(values)) / target
    desired = current if abs(ratio - 1.0) <= TOLERANCE else math.ceil(ratio * len(values))
    return max(lo, min(hi, desired)), desired, ratio


def label_name(key):
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


def prometheus_config(pods, work):
    """The shipped prometheus.yml with its Kubernetes discovery replaced by static targets with pod labels."""
    conf = yaml.safe_load(open(os.path.join(DEPLOY, "prometheus", "prometheus.yml")))
    conf["global"]["scrape_interval"] = "1s"
    conf["global"]["evaluation_interval"] = "1s"
    conf["rule_files"] = [os.path.join(DEPLOY, "prometheus", f) for f in conf.get("rule_files", [])]
    job = next(j for j in conf["scrape_configs"] if j["job_name"] == "strom-pods")
    sd = job.pop("kubernetes_sd_configs")
    assert sd and sd[0]["role"] == "pod", "the strom-pods job discovers pods"
    job["static_configs"] = []
    for pod in pods:
        labels = {
            "__meta_kubernetes_namespace": NAMESPACE,
            "__meta_kubernetes_pod_name": pod["name"],
            "__meta_kubernetes_pod_container_port_name": "http",
        }
        for k, v in pod["labels"].items():
            labels["__meta_kubernetes_pod_label_" + label_name(k)] = v
        for k, v in pod["annotations"].items():
            labels["__meta_kubernetes_pod_annotation_" + label_name(k)] = v
        # A pod's address is IP:containerPort; the annotation names the metrics port. Loopback nodes listen
        # on their own ports, so the annotation carries that port (8080 in the cluster).
        labels["__meta_kubernetes_pod_annotation_prometheus_io_port"] = str(pod["http_port"])
        job["static_configs"].append({"targets": [f"127.0.0.1:{pod['cluster_port']}"], "labels": labels})
    path = os.path.join(work, "prometheus.yml")
    with open(path, "w") as f:
        yaml.safe_dump(conf, f, sort_keys=False)
    return path


class Prom:
    def __init__(self, base):
        self.base = base

    def api(self, path, **params):
        url = f"{self.base}/api/v1/{path}?" + urllib.parse.urlencode(params, doseq=True)
        try:
            _, body = http_get(url, timeout=5)
        except urllib.error.HTTPError as e:
            body = e.read()
        return json.loads(body)

    def query(self, expr):
        r = self.api("query", query=expr)
        if r.get("status") != "success":
            raise RuntimeError(f"{expr}: {r.get('error')}")
        return r["data"]["result"]


def adapter_query(rule, pods):
    """rules.custom[].metricsQuery rendered as prometheus-adapter renders it for an HPA's pods request."""
    matchers = f'namespace="{NAMESPACE}",pod=~"{"|".join(pods)}"'
    series = re.match(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", rule["seriesQuery"]).group(1)
    q = rule["metricsQuery"]
    for k, v in {"<<.Series>>": series, "<<.LabelMatchers>>": matchers, "<<.GroupBy>>": "pod"}.items():
        q = q.replace(k, v)
    assert "<<" not in q, f"unrendered template in {q}"
    return q


PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
    "inf", "nan",
}


def metric_names(expr):
    """The metric names a PromQL expression reads (enough of PromQL for the dashboard's queries)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # ranges
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        word = m.group(0)
        rest = e[m.end():].lstrip()
        if rest.startswith("(") or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def dashboard_queries(path):
    dash = json.load(open(path))
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                out.append((p.get("title", ""), t["expr"]))
            walk(p.get("panels", []))

    walk(dash["panels"])
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if v.get("type") == "query" and q:
            m = re.match(r"label_values\((.*),\s*\w+\)$", q)
            out.append((f"variable {v['name']}", m.group(1) if m else q))
    return out


def substitute(expr):
    for k, v in {"$__rate_interval": "15s", "$namespace": NAMESPACE, "$pod": ".*", "${datasource}": ""}.items():
        expr = expr.replace(k, v)
    return expr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--strom", required=True)
    ap.add_argument("--hpa", required=True, help="rendered manifests holding the HPA (kubectl kustomize base)")
    ap.add_argument("--work")
    args = ap.parse_args()
    started = time.time()
    work = args.work or tempfile.mkdtemp(prefix="strom-hpa-loop-")
    os.makedirs(work, exist_ok=True)
    shutil.rmtree(os.path.join(work, "tsdb"), ignore_errors=True)  # series of an earlier run would count
    procs = Processes(work)
    # SIGTERM (CI's timeout) unwinds like Ctrl-C, so the finally below still stops every process.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        run(args, work, procs)
    finally:
        procs.stop_all()
        log(f"stopped {len(procs.procs)} processes; logs in {work}")
    log(f"{time.time() - started:.0f} s")
    if failures:
        log(f"{len(failures)} failed: " + "; ".join(failures))
        sys.exit(1)


def run(args, work, procs):
    docs = [d for d in yaml.safe_load_all(open(args.hpa)) if d]
    hpa = next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler")
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    metric = hpa["spec"]["metrics"][0]
    assert metric["type"] == "Pods", "the shipped HPA scales on a per-pod custom metric"
    metric_name = metric["pods"]["metric"]["name"]
    target = quantity(metric["pods"]["target"]["averageValue"])
    lo, hi = hpa["spec"].get("minReplicas", 1), hpa["spec"]["maxReplicas"]
    values = yaml.safe_load(open(os.path.join(DEPLOY, "prometheus-adapter", "values.yaml")))
    rule = next(r for r in values["rules"]["custom"] if r["name"]["as"] == metric_name)
    log(f"HPA: {metric_name} target {target:g}, replicas {lo}..{hi}; adapter rule: {rule['metricsQuery']}")

    # --- three strom nodes, one cluster ---
    tmpl = sts["spec"]["template"]["metadata"]
    pods = []
    for i in range(NODES):
        pods.append({
            "name": f"strom-{i}", "rtmp_port": free_port(), "http_port": free_port(),
            "cluster_port": free_port(), "labels": tmpl["labels"], "annotations": tmpl["annotations"],
        })
    cookie = "hpa-loop-test-" + os.urandom(32).hex()  # one for all nodes; strom wants at least 128 bits
    for i, pod in enumerate(pods):
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "STROM_CLUSTER_COOKIE": cookie,
            "STROM_LIMITS_CAPACITY_CORES": "1",
            "STROM_LIMITS_CAPACITY_EGRESS_MBPS": EGRESS_MBPS,
            # A tiny fan-out ring so the stalled reader below is skipped to keyframes (strom_frames_dropped_total).
            "STROM_STREAM_PLAYER_QUEUE_FRAMES": "16",
            "STROM_STREAM_SLOW_PLAYER_TIMEOUT_SECS": "30",
            "STROM_TRANSCODE_MODE": "always",
            "STROM_TRANSCODE_RUNGS": TRANSCODE_RUNGS,
            "STROM_LOG": "warn",
        }
        cmd = [args.strom, "--node-name", pod["name"], "--rtmp-listen", f"127.0.0.1:{pod['rtmp_port']}",
               "--http-listen", f"127.0.0.1:{pod['http_port']}", "--cluster-listen",
               f"127.0.0.1:{pod['cluster_port']}", "--cluster-advertise", "127.0.0.1"]
        if i > 0:
            cmd += ["--seed", f"127.0.0.1:{pods[0]['cluster_port']}"]
        pod["proc"] = procs.start(pod["name"], cmd, env)
    http = [f"http://127.0.0.1:{p['http_port']}" for p in pods]

    def wait(what, cond, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if cond():
                return True
            time.sleep(0.25)
        return False

    check(wait("ready", lambda: all(try_get(h + "/readyz")[0] == 200 for h in http), 15), "3 strom nodes ready")

    def cluster_size(h):
        _, body = try_get(h + "/metrics")
        m = re.search(rb"^strom_cluster_nodes (\d+)", body, re.M)
        return int(m.group(1)) if m else 0

    check(wait("cluster", lambda: all(cluster_size(h) == NODES for h in http), 20),
          "the nodes formed one cluster (strom_cluster_nodes = 3 on each)")

    # --- Prometheus with the shipped scrape job and rules ---
    conf = prometheus_config(pods, work)
    r = subprocess.run(["promtool", "check", "config", conf], capture_output=True, text=True)
    check(r.returncode == 0, "promtool check config: the shipped scrape job (static targets) and rules")
    if r.returncode != 0:
        print(r.stdout + r.stderr)
    prom_port = free_port()
    procs.start("prometheus", [
        "prometheus", f"--config.file={conf}", f"--storage.tsdb.path={work}/tsdb",
        f"--web.listen-address=127.0.0.1:{prom_port}", "--storage.tsdb.retention.time=1h",
        "--log.level=warn",
    ])
    prom = Prom(f"http://127.0.0.1:{prom_port}")
    check(wait("prometheus", lambda: try_get(prom.base + "/-/ready")[0] == 200, 20), "Prometheus ready")

    def targets_up():
        try:
            t = prom.api("targets")["data"]["activeTargets"]
        except Exception:
            return False
        return len(t) == NODES and all(x["health"] == "up" for x in t)

    check(wait("targets", targets_up, 15), "Prometheus scrapes the 3 nodes through the shipped relabel rules")
    # the labels the adapter maps to Kubernetes objects
    series = prom.api("series", **{"match[]": rule["seriesQuery"]})["data"]
    check(sorted({s.get("pod") for s in series}) == [p["name"] for p in pods]
          and all(s.get("namespace") == NAMESPACE for s in series),
          f"adapter seriesQuery {rule['seriesQuery']} finds every pod with namespace and pod labels")
    rules = [r for g in prom.api("rules")["data"]["groups"] for r in g["rules"]]
    check(rules and all(r["health"] == "ok" for r in rules), f"the shipped alert rules load and evaluate ({len(rules)})")

    query = adapter_query(rule, [p["name"] for p in pods])
    current = NODES

    def hpa_now():
        res = prom.query(query)
        vals = {s["metric"].get("pod"): float(s["value"][1]) for s in res}
        if len(vals) != NODES:
            return None, vals
        return hpa_desired(list(vals.values()), target, current, lo, hi), vals

    # --- idle: fewer pods ---
    wait("samples", lambda: all(
        float(s["value"][1]) >= 4
        for s in prom.query(f'count_over_time({metric_name}{{namespace="{NAMESPACE}"}}[1m])')
    ) and len(prom.query(f'{metric_name}{{namespace="{NAMESPACE}"}}')) == NODES, 15)
    (idle, vals) = hpa_now()
    if check(idle is not None, "the adapter rule yields one value per pod while idle"):
        bounded, raw, ratio = idle
        log(f"idle: {vals} -> usage ratio {ratio:.3f}, formula {raw}, desired {bounded} (current {current})")
        check(bounded < current, f"idle: the HPA asks for fewer pods ({bounded} < {current})")

    # --- load: a publisher, HTTP-FLV readers on every node (two of them through relays) ---
    log("load: ffmpeg publishing to strom-0, HTTP-FLV readers on every node")
    procs.start("ffmpeg", [
        "ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
        "-f", "lavfi", "-i", "sine=frequency=440", "-t", "90", "-c:v", "libx264", "-preset", "ultrafast",
        "-tune", "zerolatency", "-g", "30", "-b:v", "800k", "-maxrate", "800k", "-bufsize", "800k",
        "-c:a", "aac", "-b:a", "64k", "-f", "flv", f"rtmp://127.0.0.1:{pods[0]['rtmp_port']}/live/k",
    ])
    check(wait("stream", lambda: b'"live/k"' in try_get(http[0] + "/api/v1/streams")[1]
               or b'"k"' in try_get(http[0] + "/api/v1/streams")[1], 15), "the stream is live on strom-0")
    for i, h in enumerate(http):
        for j in range(READERS_PER_NODE):
            procs.start(f"reader-{i}-{j}", ["curl", "-s", "-o", "/dev/null", "--max-time", "90", h + "/live/k.flv"])
    # A second, audio-only publisher with MP3 audio: HLS carries AAC only, so its segmenter drops every frame
    # (strom_frames_dropped_total{reason="unsupported_codec"}), which gives the dashboard's drop panel data.
    # (A stalled player would be the other source, but on loopback the kernel buffers ~4 MB per socket first.)
    procs.start("ffmpeg-mp3", [
        "ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "sine=frequency=220", "-t", "90",
        "-c:a", "libmp3lame", "-b:a", "64k", "-f", "flv", f"rtmp://127.0.0.1:{pods[1]['rtmp_port']}/live/mp3",
    ])

    # A request with a path over http.max_path_len is refused (strom_connections_rejected_total{reason=
    # "path_too_long"}), which gives the dashboard's refusals panel data.
    try:
        status = http_get(http[2] + "/live/" + "x" * 1100 + ".flv")[0]
    except urllib.error.HTTPError as e:
        status = e.code
    check(status == 414, f"a request with an over-long path is refused ({status})")

    loaded = [None, {}]

    def scaled_up():
        loaded[0], loaded[1] = hpa_now()
        return loaded[0] is not None and loaded[0][0] > current and all(v > 0 for v in loaded[1].values())

    wait("load", scaled_up, 45)
    if check(loaded[0] is not None, "the adapter rule yields one value per pod under load"):
        bounded, raw, ratio = loaded[0]
        log(f"load: {loaded[1]} -> usage ratio {ratio:.3f}, formula {raw}, desired {bounded} (current {current})")
        check(bounded > current, f"under load: the HPA asks for more pods ({bounded} > {current})")
        check(all(v > 0 for v in loaded[1].values()), "every pod carries load (relays reach strom-1 and strom-2)")

    # --- the dashboard against the same Prometheus and the live /metrics ---
    def series_missing():
        return [s for s in DASHBOARD_SERIES if not prom.query(f'{s}{{namespace="{NAMESPACE}"}} > 0')]

    waited = time.time()
    wait("dashboard series", lambda: not series_missing(), 30)
    log(f"dashboard series present after {time.time() - waited:.1f} s more; missing: {series_missing()}")
    for q in (0.5, 0.99):
        lag = prom.query(f'histogram_quantile({q}, sum by (le, pod) (rate(strom_cluster_relay_lag_seconds_bucket'
                         f'{{namespace="{NAMESPACE}"}}[1m])))')
        log(f"relay lag p{q * 100:g}: " + ", ".join(f"{s['metric'].get('pod')} {float(s['value'][1]) * 1000:.1f} ms"
                                                   for s in lag))
    ratio = prom.query(f'strom_encoder_realtime_ratio{{namespace="{NAMESPACE}"}}')
    log("encoder real-time ratio: " + ", ".join(f"{s['metric'].get('pod')} {s['metric'].get('stream')} "
                                                f"{float(s['value'][1]):.1f}" for s in ratio))
    live = set()
    for h in http:
        _, body = try_get(h + "/metrics")
        live |= {m.group(1) for m in re.finditer(rb"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", body, re.M)}
    live = {m.decode() for m in live}
    dash = os.path.join(DEPLOY, "grafana", "strom-dashboard.json")
    queries = dashboard_queries(dash)
    names = set()
    empty = []
    for title, expr in queries:
        names |= metric_names(expr)
        try:
            if not prom.query(substitute(expr)):
                empty.append(title)
        except RuntimeError as e:
            check(False, f"dashboard query of '{title}' evaluates: {e}")
    missing = sorted(names - live)
    check(not missing, f"every metric the dashboard queries is in a live /metrics ({len(names)} metrics)"
          + (f"; missing: {missing}" if missing else ""))
    check(not empty, f"every dashboard query ({len(queries)}) returns data under load"
          + (f"; empty: {empty}" if empty else ""))


if __name__ == "__main__":
    main()
