#!/usr/bin/env python3
"""cert-manager's Secrets, made as cert-manager makes them, on real strom nodes configured as a render configures
its pods (the prod overlay: node-to-node mutual TLS, RTMPS and HTTPS, publish secrets, signed plays).

The render's Certificates are issued with openssl the way cert-manager issues them: privateKey's algorithm, size
and encoding (cert-manager's default encoding is PKCS1, for ECDSA the SEC1 "EC PRIVATE KEY" form), the usages as
key usage and extended key usage, dnsNames, isCA, duration. A self-signed Issuer self-signs; a CA Issuer signs with
its CA Certificate's key and writes that CA as ca.crt; a ClusterIssuer (Let's Encrypt) is stood in for by a root
and an intermediate made here (tls.crt = leaf + intermediate, no ca.crt), the root being what players trust.
Two pods then run the effective configuration of the render's StatefulSet (policy.PodFiles: strom.toml, the
STROM_* variables, every mounted Secret and ConfigMap; strom-secrets stood in for), moved to loopback ports.

Checks: the two pods form one cluster over mutual TLS; a third node with the same cookie but a certificate of
another CA is refused (strom_cluster_auth_failures_total) and never counted as a node; HTTPS and RTMPS present the
public certificate, valid for its dnsNames against the issuer's root; ffmpeg publishes over RTMPS to strom-0 with
a publish secret of strom-secrets (and is refused without it); strom-1 serves the stream, relayed over the mutual
TLS, as HTTP-FLV with a token from `strom sign` and refuses it without one. Every process started here is stopped
on exit (by its own pid).

usage: tls_loop.py --strom target/debug/strom --render prod.yaml [--work DIR]
"""
import argparse
import math
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import policy  # noqa: E402  (PodFiles, STAND_INS)

failures = []
KEY_USAGE = {"digital signature": "digitalSignature", "signing": "digitalSignature",
             "content commitment": "nonRepudiation", "key encipherment": "keyEncipherment",
             "key agreement": "keyAgreement", "data encipherment": "dataEncipherment", "cert sign": "keyCertSign",
             "crl sign": "cRLSign", "encipher only": "encipherOnly", "decipher only": "decipherOnly"}
EXT_USAGE = {"server auth": "serverAuth", "client auth": "clientAuth", "code signing": "codeSigning",
             "email protection": "emailProtection", "timestamping": "timeStamping", "ocsp signing": "OCSPSigning"}


def log(msg):
    print(f"[tls-loop {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def check(ok, what):
    log(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)
    return ok


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=3, limit=None, token=None):
    """(status, body) of a GET (with a bearer token); body read up to `limit` bytes or `timeout`."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = b""
            end = time.time() + timeout
            while time.time() < end and (limit is None or len(body) < limit):
                chunk = r.read(16384)
                if not chunk:
                    break
                body += chunk
            return r.status, body
    except urllib.error.HTTPError as e:
        return e.code, b""
    except Exception:
        return None, b""


def metric(http, name, labels=""):
    _, body = get(http + "/metrics")
    vals = re.findall(rb"^" + name.encode() + rb"(\{[^}]*" + labels.encode() + rb"[^}]*\})? ([0-9.e+-]+)$", body, re.M)
    return sum(float(v) for _, v in vals)


def wait(cond, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.25)
    return False


class Issuer:
    """Issues the render's Certificates into Secret contents ({secretName: {key: PEM}}) as cert-manager would."""

    def __init__(self, docs, work):
        self.docs, self.work = docs, work
        self.secrets = {}
        self.roots = {}  # ClusterIssuer name -> the stand-in root players trust
        self.keys = {}  # secretName -> (cert path, key path) of issued certificates
        self.n = 0

    def openssl(self, *args):
        r = subprocess.run(["openssl", *args], cwd=self.work, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(args)}: {r.stderr}")

    def key(self, pk, path):
        alg, enc = pk.get("algorithm", "RSA"), pk.get("encoding", "PKCS1")
        if alg == "ECDSA":
            curve = {256: "prime256v1", 384: "secp384r1", 521: "secp521r1"}[pk.get("size", 256)]
            self.openssl("ecparam", "-name", curve, "-genkey", "-noout", "-out", path)  # SEC1
            if enc == "PKCS8":
                self.openssl("pkcs8", "-topk8", "-nocrypt", "-in", path, "-out", path)
        elif alg == "RSA":
            self.openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{pk.get('size', 2048)}",
                         "-out", path)
            if enc == "PKCS1":
                self.openssl("rsa", "-in", path, "-traditional", "-out", path)
        else:
            self.openssl("genpkey", "-algorithm", "ed25519", "-out", path)

    def sign(self, name, spec, signer=None, days=90):
        """A certificate for `spec` (a Certificate's spec, or a stand-in's), signed by `signer` (cert, key) or by
        itself; returns (cert path, key path)."""
        self.n += 1
        base = os.path.join(self.work, f"{self.n:02d}-{name}")
        self.key(spec.get("privateKey", {}), base + ".key")
        usages = list(spec.get("usages", ["digital signature", "key encipherment"]))
        if spec.get("isCA") and "cert sign" not in usages:
            usages.append("cert sign")  # cert-manager adds it to a CA
        ext = [f"basicConstraints=critical,CA:{'TRUE' if spec.get('isCA') else 'FALSE'}",
               "subjectKeyIdentifier=hash"]
        ku = sorted({KEY_USAGE[u] for u in usages if u in KEY_USAGE})
        eku = sorted({EXT_USAGE[u] for u in usages if u in EXT_USAGE})
        if ku:
            ext.append("keyUsage=critical," + ",".join(ku))
        if eku:
            ext.append("extendedKeyUsage=" + ",".join(eku))
        if spec.get("dnsNames"):
            ext.append("subjectAltName=" + ",".join(f"DNS:{d}" for d in spec["dnsNames"]))
        with open(base + ".ext", "w") as f:
            f.write("\n".join(ext) + "\n")
        subject = f"/CN={spec['commonName']}" if spec.get("commonName") else "/"
        self.openssl("req", "-new", "-key", base + ".key", "-subj", subject, "-out", base + ".csr")
        sign = ["-CA", signer[0], "-CAkey", signer[1], "-CAcreateserial"] if signer else ["-signkey", base + ".key"]
        self.openssl("x509", "-req", "-in", base + ".csr", *sign, "-days", str(days), "-extfile", base + ".ext",
                     "-out", base + ".crt")
        return base + ".crt", base + ".key"

    def issue(self, cert):
        """Issues a Certificate of the render (and first the CA it needs) into self.secrets."""
        spec = cert["spec"]
        secret = spec["secretName"]
        if secret in self.secrets:
            return
        ref = spec["issuerRef"]
        days = max(1, math.ceil(float(spec.get("duration", "2160h").rstrip("h")) / 24))
        read = lambda p: open(p).read()  # noqa: E731
        if ref.get("kind", "Issuer") == "ClusterIssuer":
            root = self.sign(f"{ref['name']}-root", {"isCA": True, "commonName": f"stand-in {ref['name']} root",
                                                     "privateKey": {"algorithm": "ECDSA", "size": 384}}, days=30)
            inter = self.sign(f"{ref['name']}-intermediate", {"isCA": True, "commonName": "stand-in intermediate",
                                                              "privateKey": {"algorithm": "ECDSA", "size": 384}},
                              signer=root, days=30)
            crt, key = self.sign(cert["metadata"]["name"], spec, signer=inter, days=days)
            self.roots[secret] = root[0]
            self.secrets[secret] = {"tls.crt": read(crt) + read(inter[0]), "tls.key": read(key)}
            return
        issuer = next(d for d in self.docs if d["kind"] == "Issuer" and d["metadata"]["name"] == ref["name"])
        if "selfSigned" in issuer["spec"]:
            crt, key = self.sign(cert["metadata"]["name"], spec, days=days)
            self.secrets[secret] = {"tls.crt": read(crt), "tls.key": read(key), "ca.crt": read(crt)}
        else:
            ca_secret = issuer["spec"]["ca"]["secretName"]
            ca = next(d for d in self.docs if d["kind"] == "Certificate" and d["spec"]["secretName"] == ca_secret)
            self.issue(ca)
            crt, key = self.sign(cert["metadata"]["name"], spec, signer=self.keys[ca_secret], days=days)
            self.secrets[secret] = {"tls.crt": read(crt), "tls.key": read(key),
                                    "ca.crt": self.secrets[ca_secret]["tls.crt"]}
        self.keys[secret] = (crt, key)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--strom", required=True)
    ap.add_argument("--render", required=True)
    ap.add_argument("--work")
    args = ap.parse_args()
    started = time.time()
    work = args.work or tempfile.mkdtemp(prefix="strom-tls-loop-")
    os.makedirs(work, exist_ok=True)
    procs = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        run(args, work, procs)
    finally:
        for _, p in procs:
            if p.poll() is None:
                p.terminate()
        for _, p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        log(f"stopped {len(procs)} processes; logs in {work}; {time.time() - started:.0f} s")
    if failures:
        log(f"{len(failures)} failed: " + "; ".join(failures))
        sys.exit(1)


def run(args, work, procs):
    docs = [d for d in yaml.safe_load_all(open(args.render)) if d]
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    certs = [d for d in docs if d["kind"] == "Certificate"]
    issuer = Issuer(docs, os.path.join(work, "pki"))
    os.makedirs(issuer.work)
    for c in certs:
        issuer.issue(c)
    log("issued like cert-manager: " + ", ".join(f"{c['metadata']['name']} -> Secret {c['spec']['secretName']}"
                                                 for c in certs))
    # Which Secret holds the node certificate, and which the listeners' (from the pods' environment).
    env0 = policy.PodFiles(sts, docs, os.path.join(work, "probe")).container.get("env", [])
    val = {e["name"]: e.get("value", "") for e in env0}
    node_secret = next((v["secret"]["secretName"] for v in policy.pod_spec(sts)[0]["volumes"] if "secret" in v
                        and val.get("STROM_CLUSTER_TLS_CERT_FILE", "").startswith(mount_of(sts, v["name"]) + "/")),
                       None)
    public_secret = next((v["secret"]["secretName"] for v in policy.pod_spec(sts)[0]["volumes"] if "secret" in v
                          and val.get("STROM_TLS_CERT_FILE", "").startswith(mount_of(sts, v["name"]) + "/")), None)
    if not check(node_secret in issuer.secrets and public_secret in issuer.secrets,
                 f"the render's pods take cluster TLS ({node_secret}) and the listeners' certificate "
                 f"({public_secret}) from Certificates"):
        return
    # A stranger: the same cookie and Certificate spec, issued by a CA of its own.
    node_cert = next(c for c in certs if c["spec"]["secretName"] == node_secret)
    other = Issuer(docs, os.path.join(work, "pki-other"))
    os.makedirs(other.work)
    ca = other.sign("other-ca", {"isCA": True, "commonName": "another cluster's CA",
                                 "privateKey": {"algorithm": "ECDSA", "size": 256}})
    crt, key = other.sign("stranger", node_cert["spec"], signer=ca)
    stranger_secrets = dict(issuer.secrets)
    stranger_secrets[node_secret] = {"tls.crt": open(crt).read(), "tls.key": open(key).read(),
                                     "ca.crt": open(ca[0]).read()}

    pods = []
    for name, secrets in (("strom-0", issuer.secrets), ("strom-1", issuer.secrets), ("stranger", stranger_secrets)):
        pod = policy.PodFiles(sts, docs, os.path.join(work, name), pod_name=name, contents=secrets)
        if pod.errs:
            check(False, f"{name}: " + "; ".join(pod.errs))
            return
        ports = {k: free_port() for k in ("rtmp", "http", "cluster", "rtmps", "https")}
        # No Kubernetes DNS here: the first pod is the others' seed instead of cluster.dns.
        with open(pod.cfg, "w") as f:
            f.write(re.sub(r'(?m)^dns = ".*"$', "", pod.toml))
        env = dict(pod.env, STROM_NODE_NAME=name, STROM_CLUSTER_ADVERTISE="127.0.0.1", STROM_DRAIN_SECS="0",
                   STROM_LOG="warn,strom_engine::cluster=info", STROM_LIMITS_CAPACITY_CORES="1",
                   **{f"STROM_{k.upper()}_LISTEN": f"127.0.0.1:{p}" for k, p in ports.items()})
        if pods:
            env["STROM_CLUSTER_SEEDS"] = f'["127.0.0.1:{pods[0]["ports"]["cluster"]}"]'
        cmd = [args.strom, *[a if a != policy.CONFIG_PATH else pod.cfg for a in pod.container.get("args", [])]]
        pods.append({"name": name, "ports": ports, "env": env, "cfg": pod.cfg, "cmd": cmd,
                     "http": f"http://127.0.0.1:{ports['http']}"})
    s0, s1, stranger = pods
    for p in (s0, s1):
        procs.append((p["name"], subprocess.Popen(p["cmd"], env=p["env"], stdin=subprocess.DEVNULL,
                                                  stdout=open(os.path.join(work, p["name"] + ".log"), "wb"),
                                                  stderr=subprocess.STDOUT)))
    if not check(wait(lambda: all(get(p["http"] + "/readyz")[0] == 200 for p in (s0, s1)), 20),
                 "strom-0 and strom-1 start on the render's configuration and cert-manager-shaped Secrets"):
        return
    check(wait(lambda: all(metric(p["http"], "strom_cluster_nodes") == 2 for p in (s0, s1)), 20),
          "they form one cluster over mutual TLS (strom_cluster_nodes = 2 on each)")

    # The stranger dials strom-0 and must be refused.
    before = metric(s0["http"], "strom_cluster_auth_failures_total")
    procs.append(("stranger", subprocess.Popen(stranger["cmd"], env=stranger["env"], stdin=subprocess.DEVNULL,
                                               stdout=open(os.path.join(work, "stranger.log"), "wb"),
                                               stderr=subprocess.STDOUT)))
    check(wait(lambda: metric(s0["http"], "strom_cluster_auth_failures_total") > before, 15),
          "a node whose certificate comes from another CA is refused (strom_cluster_auth_failures_total)")
    time.sleep(2)
    check(all(metric(p["http"], "strom_cluster_nodes") == 2 for p in (s0, s1))
          and metric(stranger["http"], "strom_cluster_nodes") == 1,
          "... and never counted: 2 nodes on strom-0 and strom-1, 1 on the stranger")

    # The listeners' certificate, as players and OBS see it.
    cert = next(c for c in certs if c["spec"]["secretName"] == public_secret)
    host = cert["spec"]["dnsNames"][0]
    ctx = ssl.create_default_context(cafile=issuer.roots.get(public_secret) or issuer.keys[public_secret][0])
    ctx.set_alpn_protocols(["http/1.1"])
    try:
        with socket.create_connection(("127.0.0.1", s0["ports"]["https"]), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname=host) as tls:
                tls.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
                status = tls.recv(64).split(b" ")[1].decode()
        check(status == "200", f"HTTPS presents the certificate for {host}, valid against its issuer ({status})")
    except (OSError, ssl.SSLError, IndexError) as e:
        check(False, f"HTTPS presents the certificate for {host}, valid against its issuer: {e}")
    try:
        with socket.create_connection(("127.0.0.1", s0["ports"]["rtmps"]), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname=host) as tls:
                version = tls.version()
        check(version is not None, f"RTMPS presents the same certificate ({version})")
    except (OSError, ssl.SSLError) as e:
        check(False, f"RTMPS presents the same certificate: {e}")

    # OBS's path: RTMPS with a publish secret, played on the other pod with a signed token.
    app_name, secret = policy.STAND_INS["publish_secrets"].split(" ")
    app, stream = app_name.split("/")
    url = f"rtmps://127.0.0.1:{s0['ports']['rtmps']}/{app}/{stream}"

    def publish(name, query):
        return subprocess.Popen([
            "ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440", "-t", "30", "-c:v", "libx264", "-preset", "ultrafast",
            "-g", "25", "-b:v", "300k", "-c:a", "aac", "-b:a", "64k", "-f", "flv", url + query],
            stdin=subprocess.DEVNULL, stdout=open(os.path.join(work, name + ".log"), "wb"), stderr=subprocess.STDOUT)

    bad = publish("ffmpeg-no-secret", "")
    procs.append(("ffmpeg-no-secret", bad))
    try:
        bad.wait(15)
    except subprocess.TimeoutExpired:
        pass
    check(bad.poll() not in (None, 0), "a publish over RTMPS without its secret is refused")
    procs.append(("ffmpeg", publish("ffmpeg", f"?secret={secret}")))
    # The API's reads need the admin token here (auth.read_api is private once a token is set).
    admin = s0["env"].get("STROM_AUTH_ADMIN_TOKEN")
    live = wait(lambda: f'"{app}/{stream}"'.encode() in get(s0["http"] + "/api/v1/streams", token=admin)[1], 15)
    if not check(live, f"ffmpeg publishes {app}/{stream} over RTMPS with its secret from strom-secrets"):
        log(f"/api/v1/streams: {get(s0['http'] + '/api/v1/streams', token=admin)}")
        return
    r = subprocess.run([args.strom, "--config", s1["cfg"], "sign", "--path", f"/{app}/{stream}", "--ttl", "600"],
                       env=s1["env"], capture_output=True, text=True)
    query = r.stdout.strip()
    check(r.returncode == 0 and query.startswith("token="), f"strom sign on strom-1's configuration: {query[:24]}…")
    flv = f"{s1['http']}/{app}/{stream}.flv"
    status, _ = get(flv, timeout=5, limit=1)
    check(status == 403, f"strom-1 refuses the stream without a token ({status})")
    status, body = get(f"{flv}?{query}", timeout=10, limit=100_000)
    check(status == 200 and body[:3] == b"FLV" and len(body) >= 100_000,
          f"strom-1 plays it with the token, relayed from strom-0 over mutual TLS ({status}, {len(body)} bytes)")
    check(metric(s1["http"], "strom_cluster_relay_bytes_total", 'direction="in"') > 0,
          "strom-1 received the stream through the cluster (strom_cluster_relay_bytes_total{direction=\"in\"})")


def mount_of(sts, volume):
    c = next(c for c in policy.pod_spec(sts)[0]["containers"] if c["name"] == "strom")
    return next((m["mountPath"].rstrip("/") for m in c.get("volumeMounts", []) if m["name"] == volume), "\0")


if __name__ == "__main__":
    main()
