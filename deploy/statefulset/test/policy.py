#!/usr/bin/env python3
"""Policy and consistency checks on the rendered overlays (kubectl kustomize output), the Dockerfile and the
prometheus-adapter rule. Fails on what a schema cannot see: missing probes or resources, `:latest` or untagged
images, root containers, a writable root filesystem, a grace period shorter than the drain, references that
point nowhere (Service selectors and ports, Ingress backends, ServiceMonitor, HPA target and metric, PDB,
volume mounts), recordings (storage.path) that would land on the read-only root filesystem,
and a strom configuration that strom itself refuses (the real binary checks each overlay's effective config).

Secrets and TLS: every Secret a pod mounts or references is strom-secrets (with a key secret.example.env lists)
or the secretName of a Certificate in the render, mounted whole (a subPath mount never sees a renewal); every
`*_file` of the effective configuration is a file some mounted Secret or ConfigMap provides; `strom sign` signs
with the mounted play key; the node certificate (cluster.tls_*) has server and client auth, names the advertised
pods and is issued by a CA Issuer whose CA Certificate (isCA, key kept at renewal) is in the render and is what
cluster.tls_ca_file holds; the listeners' certificate has server auth; every Certificate and Issuer is used; one
namespace for all; each listener is on a container port, and the NetworkPolicy lets every published port in and
keeps the cluster port to strom pods. Renders named prod* must have cluster TLS, the TLS listeners and signed
plays.

A self-test first mutates the renders in each of the ways above and requires every mutation to be caught, so the
policy cannot pass by checking nothing.

usage: policy.py --strom target/debug/strom NAME=rendered.yaml...
"""
import argparse
import copy
import hashlib
import hmac
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import tomllib

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
DEPLOY = os.path.dirname(HERE)
ROOT = os.path.dirname(os.path.dirname(DEPLOY))
WORKLOADS = {"StatefulSet", "Deployment", "DaemonSet", "ReplicaSet", "Job", "CronJob"}
# strom's defaults for the keys the drain arithmetic needs (README, Configuration).
DEFAULTS = {"drain_secs": 0.0, "shutdown_timeout_secs": 10.0}
CONFIG_PATH = "/etc/strom/strom.toml"
# The Secret made by hand (secret.example.env), and stand-ins for its keys' contents.
SECRET = "strom-secrets"
STAND_INS = {"cookie": "policy-test-" + "ab12" * 16, "publish_secrets": "live/test policy-secret",
             "admin_token": "policy-test-admin-token", "play_key": "policy-test-play-key-" + "cd34" * 8}
# What cert-manager writes into a Certificate's Secret.
CERT_KEYS = ("tls.crt", "tls.key", "ca.crt")
CLUSTER_SCOPED = {"Namespace", "ClusterIssuer", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def pod_spec(obj):
    spec = obj["spec"]
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"], spec["template"]["metadata"]


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def cpu_cores(q):
    q = str(q)
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def container_checks(name, c, pod_sc):
    errs = []
    where = f"{name}: container {c['name']}"
    image = c.get("image", "")
    last = image.rsplit("/", 1)[-1]
    if "@sha256:" not in image:
        if ":" not in last:
            errs.append(f"{where}: image {image!r} has no tag")
        elif last.rsplit(":", 1)[1] == "latest":
            errs.append(f"{where}: image {image!r} uses :latest")
    for probe in ("readinessProbe", "livenessProbe"):
        if probe not in c:
            errs.append(f"{where}: no {probe}")
    res = c.get("resources", {})
    for kind, keys in (("requests", ("cpu", "memory")), ("limits", ("memory",))):
        for k in keys:
            if k not in res.get(kind, {}):
                errs.append(f"{where}: no resources.{kind}.{k}")
    sc = c.get("securityContext", {})
    non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
    user = sc.get("runAsUser", pod_sc.get("runAsUser"))
    if non_root is not True:
        errs.append(f"{where}: runAsNonRoot is not true")
    if user == 0:
        errs.append(f"{where}: runs as uid 0")
    if sc.get("readOnlyRootFilesystem") is not True:
        errs.append(f"{where}: readOnlyRootFilesystem is not true")
    if sc.get("allowPrivilegeEscalation") is not False:
        errs.append(f"{where}: allowPrivilegeEscalation is not false")
    if "ALL" not in sc.get("capabilities", {}).get("drop", []):
        errs.append(f"{where}: capabilities are not dropped (drop: [ALL])")
    if sc.get("privileged"):
        errs.append(f"{where}: privileged")
    return errs


def env_value(c, name, res):
    """The value a container gets for variable `name` (plain values and resourceFieldRef), or None."""
    for e in c.get("env", []):
        if e["name"] != name:
            continue
        if "value" in e:
            return e["value"]
        ref = e.get("valueFrom", {}).get("resourceFieldRef")
        if ref:
            kind, what = ref["resource"].split(".")
            q = res.get(kind, {}).get(what)
            if q is None:
                return None
            divisor = cpu_cores(ref.get("divisor", "1"))
            return str(math.ceil(cpu_cores(q) / divisor))  # the kubelet rounds up
    return None


class PodFiles:
    """A strom pod of the render laid out in `tmp`: strom.toml from its ConfigMap, every mounted Secret and
    ConfigMap as files (stand-ins, or `contents[secret][key]` where given), the PVC as a directory, and the
    container's environment with mount paths pointing there. `origin`: local file -> (source, key)."""

    def __init__(self, sts, docs, tmp, pod_name=None, contents=None):
        self.errs = []
        spec, _ = pod_spec(sts)
        c = next(c for c in spec["containers"] if c["name"] == "strom")
        res = c.get("resources", {})
        self.container = c
        self.paths = {}  # mountPath -> the local stand-in
        self.origin = {}
        self.writable = []
        toml_text = ""
        claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
        for mount in c.get("volumeMounts", []):
            src = next((v for v in spec.get("volumes", []) if v["name"] == mount["name"]), None)
            if src is None and mount["name"] in claims:
                src = {"persistentVolumeClaim": {}}
            if src is None:
                self.errs.append(f"volumeMount {mount['name']} names no volume and no volumeClaimTemplate")
                continue
            provided = volume_files(src, docs, contents or {})
            if mount["mountPath"] == CONFIG_PATH:
                toml_text = (provided or {}).get(mount.get("subPath", "strom.toml"), (0, 0, ""))[2]
                continue
            if provided is not None:
                local = os.path.join(tmp, "mounts", mount["name"])
                for rel, (source, key, content) in provided.items():
                    if mount.get("subPath") and rel != mount["subPath"]:
                        continue
                    f = os.path.join(local, rel)
                    os.makedirs(os.path.dirname(f), exist_ok=True)
                    with open(f, "w") as out:
                        out.write(content)
                    self.origin[f] = (source, key)
                self.paths[mount["mountPath"]] = os.path.join(local, mount["subPath"]) if mount.get("subPath") else local
            if not mount.get("readOnly") and ("persistentVolumeClaim" in src or "emptyDir" in src):
                self.writable.append(mount["mountPath"].rstrip("/"))
                self.paths[mount["mountPath"]] = os.path.join(tmp, "volumes", mount["name"])
                os.makedirs(self.paths[mount["mountPath"]], exist_ok=True)
        self.toml = self.local(toml_text)
        self.cfg = os.path.join(tmp, "strom.toml")
        with open(self.cfg, "w") as f:
            f.write(self.toml)
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        values = {"POD_NAME": pod_name or f"{sts['metadata']['name']}-0"}
        for e in c.get("env", []):
            v = e.get("value")
            if v is None:
                fr = e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
                if e.get("valueFrom", {}).get("secretKeyRef"):
                    ref = e["valueFrom"]["secretKeyRef"]
                    v = (contents or {}).get(ref["name"], {}).get(ref["key"], "policy-test-secret-value")
                else:
                    v = values["POD_NAME"] if fr == "metadata.name" else env_value(c, e["name"], res)
            if v is None:
                self.errs.append(f"cannot compute variable {e['name']}")
                continue
            v = re.sub(r"\$\((\w+)\)", lambda m: values.get(m.group(1), m.group(0)), v)
            values[e["name"]] = v
            self.env[e["name"]] = self.local(v)

    def local(self, text):
        for mount_path in sorted(self.paths, key=len, reverse=True):
            text = text.replace(mount_path, self.paths[mount_path])
        return text

    def pod_path(self, text):
        for mount_path, here in sorted(self.paths.items(), key=lambda kv: len(kv[1]), reverse=True):
            text = text.replace(here, mount_path)
        return text


def strom_checks(name, sts, docs, strom, strict):
    """The drain arithmetic, cluster wiring, and the real strom accepting the effective configuration."""
    errs = []
    spec, meta = pod_spec(sts)
    c = next(c for c in spec["containers"] if c["name"] == "strom")
    cms = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    mount = next((m for m in c.get("volumeMounts", []) if m["mountPath"] == CONFIG_PATH), {})
    vol = next((v for v in spec.get("volumes", []) if v["name"] == mount.get("name") and "configMap" in v), None)
    if not vol or vol["configMap"]["name"] not in cms:
        return [f"{name}: {CONFIG_PATH} is no mount of a ConfigMap in the render"]
    toml_text = cms[vol["configMap"]["name"]]["data"][mount.get("subPath", "strom.toml")]
    conf = tomllib.loads(toml_text)
    res = c.get("resources", {})

    def effective(key):
        v = env_value(c, "STROM_" + key.upper(), res)
        return float(v) if v is not None else float(conf.get(key, DEFAULTS[key]))

    pre = c.get("lifecycle", {}).get("preStop", {})
    sleep = 0.0
    if "exec" in pre and pre["exec"]["command"][:1] == ["sleep"]:
        sleep = float(pre["exec"]["command"][1])
    elif "sleep" in pre:
        sleep = float(pre["sleep"]["seconds"])
    grace = spec.get("terminationGracePeriodSeconds", 30)
    # A stream whose last picture is repeated is handed over for up to stream.repeat_frame_secs after the drain,
    # then the node that took it over copies its window for up to 2 s (HANDOVER_COPY in engine/src/node.rs).
    v = env_value(c, "STROM_STREAM_REPEAT_FRAME_SECS", res)
    repeat = float(v) if v is not None else float(conf.get("stream", {}).get("repeat_frame_secs", 5.0))
    handover_copy = 2.0
    need = sleep + effective("drain_secs") + repeat + handover_copy + effective("shutdown_timeout_secs")
    if not grace > need:
        errs.append(f"{name}: terminationGracePeriodSeconds {grace} <= preStop {sleep} + drain_secs + "
                    f"stream.repeat_frame_secs + 2 s of window copy + shutdown_timeout_secs = {need}")
    if "startupProbe" not in c:
        errs.append(f"{name}: strom has no startupProbe")
    if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
        errs.append(f"{name}: readiness is not /readyz (it turns false at the start of a drain)")
    if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
        errs.append(f"{name}: liveness is not /healthz")
    if spec.get("enableServiceLinks") is not False:
        errs.append(f"{name}: enableServiceLinks is not false (STROM_* service-link variables)")
    if sts["kind"] == "StatefulSet":
        if sts["spec"].get("podManagementPolicy") != "Parallel":
            errs.append(f"{name}: podManagementPolicy is not Parallel")
        headless = next((d for d in docs if d["kind"] == "Service"
                         and d["metadata"]["name"] == sts["spec"].get("serviceName")), None)
        if not headless or headless["spec"].get("clusterIP") != "None":
            errs.append(f"{name}: serviceName is not a headless Service")
        else:
            svc = headless["metadata"]["name"]
            if headless["spec"].get("publishNotReadyAddresses") is not True:
                errs.append(f"{name}: headless Service {svc} does not publish not-ready addresses")
            if conf.get("cluster", {}).get("dns", "").split(":")[0] != svc:
                errs.append(f"{name}: cluster.dns does not name the headless Service {svc}")
            adv = env_value(c, "STROM_CLUSTER_ADVERTISE", res) or ""
            if adv != f"$(POD_NAME).{svc}":
                errs.append(f"{name}: cluster.advertise {adv!r} is not $(POD_NAME).{svc}")
    # The real strom on the effective configuration: file + the container's STROM_* variables, every mounted
    # Secret and ConfigMap stood in for by the files it provides (a Certificate's Secret: tls.crt, tls.key, ca.crt;
    # strom-secrets: the keys of secret.example.env).
    with tempfile.TemporaryDirectory() as tmp:
        pod = PodFiles(sts, docs, tmp)
        errs += [f"{name}: {e}" for e in pod.errs]
        cfg, env, origin, pod_path = pod.cfg, pod.env, pod.origin, pod.pod_path
        # The root filesystem is read-only: recordings must land on a writable volume (unless they go to S3).
        storage = conf.get("storage", {})
        path = storage.get("path", "./data")
        if "url" not in storage and not any(path == w or path.startswith(w + "/") for w in pod.writable):
            errs.append(f"{name}: storage.path {path!r} is on no writable volume (the root filesystem is read-only)")
        args = [a for a in c.get("args", []) if a != CONFIG_PATH]
        r = subprocess.run([strom, *args, cfg, "--print-config"], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            errs.append(f"{name}: strom refuses the effective configuration: {r.stderr.strip()}")
            return errs
        if "advertise = \"strom-0.strom-cluster\"" not in r.stdout:
            errs.append(f"{name}: strom's effective cluster.advertise is not strom-0.strom-cluster")
        eff = tomllib.loads(r.stdout)
        # Every file the configuration names is one that a mounted Secret or ConfigMap provides.
        files = {}
        for key, value in config_files(eff):
            if value not in origin:
                errs.append(f"{name}: {key} = {pod_path(value)!r} is no file that a mounted Secret or ConfigMap "
                            "provides")
            else:
                files[key] = origin[value]
        # Each listener's port is a port of the container (what Services and the NetworkPolicy name).
        ports = {p["containerPort"] for p in c.get("ports", [])}
        for section in ("rtmp", "http", "cluster", "rtmps", "https"):
            listen = eff.get(section, {}).get("listen")
            if listen and int(listen.rsplit(":", 1)[1]) not in ports:
                errs.append(f"{name}: {section}.listen {listen} is on no containerPort of strom")
        # Signed play URLs: `strom sign` with the mounted key mints the token a backend would (HMAC-SHA256).
        key_file = eff.get("auth", {}).get("play_key_file")
        if key_file in origin:
            errs += sign_check(name, strom, cfg, env, open(key_file).read().strip())
        # JWT plays: the mounted key set holds a public key strom can use (it ignores symmetric ones).
        jwks = eff.get("auth", {}).get("jwks_file")
        if jwks in origin:
            try:
                keys = [k for k in json.load(open(jwks))["keys"] if k.get("kty") in ("RSA", "EC", "OKP")]
            except (ValueError, KeyError, TypeError):
                keys = []
            if not keys:
                errs.append(f"{name}: auth.jwks_file ({origin[jwks][0]}) holds no RSA, EC or Ed25519 public key")
        errs += tls_checks(name, docs, files, sts["spec"].get("serviceName"), strict)
    return errs


def config_files(conf, prefix=""):
    """(key, path) of every `*_file` key of an effective configuration."""
    for k, v in conf.items():
        if isinstance(v, dict):
            yield from config_files(v, f"{prefix}{k}.")
        elif k.endswith("_file") and isinstance(v, str):
            yield prefix + k, v


def example_secret_keys():
    """The keys of strom-secrets, as secret.example.env lists them."""
    keys = []
    for line in open(os.path.join(DEPLOY, "secret.example.env")):
        if line.strip() and not line.startswith("#"):
            keys.append(line.split("=", 1)[0].strip())
    return keys


def secret_keys(secret, docs):
    """The keys a Secret the pods use provides ({key: stand-in content}), or None when the render does not say
    where that Secret comes from: a Certificate's secretName (cert-manager writes tls.crt, tls.key, ca.crt), a
    Secret in the render (an overlay's secretGenerator), or strom-secrets made by hand (secret.example.env)."""
    if any(d["kind"] == "Certificate" and d["spec"]["secretName"] == secret for d in docs):
        return {k: f"stand-in {k} of {secret}\n" for k in CERT_KEYS}
    obj = next((d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == secret), None)
    if obj is not None:
        keys = list(obj.get("data", {})) + list(obj.get("stringData", {}))
    elif secret == SECRET:
        keys = example_secret_keys()
    else:
        return None
    return {k: STAND_INS.get(k, "policy-test-value") + "\n" for k in keys}


def volume_files(src, docs, contents=None):
    """{relative path: (source, key, content)} of a Secret or ConfigMap volume; None for other volumes. A Secret's
    contents are stand-ins unless `contents[secret name]` gives them."""
    if "secret" in src:
        kind, ref = "Secret", src["secret"]["secretName"]
        keys = (contents or {}).get(ref) or secret_keys(ref, docs) or {}
        items = src["secret"].get("items")
    elif "configMap" in src:
        kind, ref = "ConfigMap", src["configMap"]["name"]
        cm = next((d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == ref), {})
        keys = cm.get("data", {})
        items = src["configMap"].get("items")
    else:
        return None
    pick = {i["path"]: i["key"] for i in items} if items else {k: k for k in keys}
    return {rel: (f"{kind}/{ref}", key, keys[key]) for rel, key in pick.items() if key in keys}


def sign_check(name, strom, cfg, env, key):
    r = subprocess.run([strom, "--config", cfg, "sign", "--path", "/live/policy", "--ttl", "600"], env=env,
                       capture_output=True, text=True)
    m = re.fullmatch(r"token=(\d+)\.([0-9a-f]{64})\n", r.stdout)
    if r.returncode != 0 or not m:
        return [f"{name}: strom sign fails on the effective configuration: {r.stderr.strip() or r.stdout!r}"]
    want = hmac.new(key.encode(), f"/live/policy\n{m.group(1)}".encode(), hashlib.sha256).hexdigest()
    if m.group(2) != want:
        return [f"{name}: strom sign does not sign with the key of auth.play_key_file"]
    return []


def issuer_chain(cert, docs, seen=()):
    """The Issuers from a Certificate up to a self-signed one or a ClusterIssuer: (chain of names, error)."""
    ref = cert["spec"]["issuerRef"]
    kind = ref.get("kind", "Issuer")
    if ref.get("group", "cert-manager.io") != "cert-manager.io" or kind not in ("Issuer", "ClusterIssuer"):
        return [], f"Certificate {cert['metadata']['name']} has an issuerRef outside cert-manager.io"
    if kind == "ClusterIssuer":
        return [f"ClusterIssuer/{ref['name']}"], None  # a prerequisite of the cluster, outside the render
    issuer = next((d for d in docs if d["kind"] == "Issuer" and d["metadata"]["name"] == ref["name"]), None)
    if issuer is None:
        return [], f"Certificate {cert['metadata']['name']} names Issuer {ref['name']}, which is not in the render"
    if issuer["metadata"].get("namespace") != cert["metadata"].get("namespace"):
        return [], f"Issuer {ref['name']} is not in the namespace of Certificate {cert['metadata']['name']}"
    here = [f"Issuer/{ref['name']}"]
    if "selfSigned" in issuer["spec"]:
        return here, None
    if "ca" in issuer["spec"]:
        secret = issuer["spec"]["ca"]["secretName"]
        ca = next((d for d in docs if d["kind"] == "Certificate" and d["spec"]["secretName"] == secret), None)
        if ca is None or not ca["spec"].get("isCA"):
            return here, f"CA Issuer {ref['name']} signs with Secret {secret}, which no CA Certificate (isCA) fills"
        if ca["metadata"]["name"] in seen:
            return here, f"the issuer chain of Certificate {cert['metadata']['name']} loops"
        rest, err = issuer_chain(ca, docs, seen + (ca["metadata"]["name"],))
        return here + [f"Certificate/{ca['metadata']['name']}"] + rest, err
    return here, None  # ACME, Vault, ...: issued outside the cluster


def usages(cert):
    # cert-manager's default when none are listed.
    return set(cert["spec"].get("usages", ["digital signature", "key encipherment"]))


def tls_checks(name, docs, files, service, strict):
    """The TLS files strom is configured with come from cert-manager the right way. `files`: config key ->
    (volume source, key). strict (prod): node-to-node TLS, the TLS listeners and signed plays are required."""
    errs = []
    by_secret = {d["spec"]["secretName"]: d for d in docs if d["kind"] == "Certificate"}

    def pair(cert_key, key_key, what):
        crt, key = files.get(cert_key), files.get(key_key)
        if not crt or not key:
            return None
        if crt[0] != key[0] or (crt[1], key[1]) != ("tls.crt", "tls.key"):
            errs.append(f"{name}: {cert_key} and {key_key} are not tls.crt and tls.key of one Secret")
            return None
        cert = by_secret.get(crt[0].split("/", 1)[1]) if crt[0].startswith("Secret/") else None
        if cert is None:
            errs.append(f"{name}: the {what} certificate ({crt[0]}) is not the Secret of a Certificate in the render")
            return None
        if cert["spec"].get("isCA"):
            errs.append(f"{name}: the {what} certificate {cert['metadata']['name']} is a CA")
        return cert

    node = pair("cluster.tls_cert_file", "cluster.tls_key_file", "node-to-node")
    if node is not None:
        n = node["metadata"]["name"]
        missing = {"server auth", "client auth"} - usages(node)
        if missing:
            errs.append(f"{name}: node Certificate {n} lacks usages {sorted(missing)} (each connection is mutual)")
        if f"*.{service}" not in node["spec"].get("dnsNames", []):
            errs.append(f"{name}: node Certificate {n} does not name the advertised pods *.{service}")
        chain, err = issuer_chain(node, docs)
        if err:
            errs.append(f"{name}: {err}")
        ca_name = next((x.split("/", 1)[1] for x in chain if x.startswith("Certificate/")), None)
        if not err and ca_name is None:
            errs.append(f"{name}: node Certificate {n} is not issued by a CA Issuer of a CA Certificate in the "
                        f"render ({' -> '.join(chain)}): peers would have no cluster CA to check")
        ca_cert = next((d for d in docs if d["kind"] == "Certificate" and d["metadata"]["name"] == ca_name), None)
        if ca_cert is not None:
            if ca_cert["spec"].get("privateKey", {}).get("rotationPolicy") != "Never":
                errs.append(f"{name}: CA Certificate {ca_name} rotates its key at renewal (rotationPolicy is not "
                            "Never): node certificates issued before would stop verifying")
            ca = files.get("cluster.tls_ca_file")
            ok = ca is not None and (ca == (f"Secret/{node['spec']['secretName']}", "ca.crt") or (
                ca[0] == f"Secret/{ca_cert['spec']['secretName']}" and ca[1] in ("ca.crt", "tls.crt")))
            if not ok:
                got = f"{ca[1]} of {ca[0]}" if ca else "none"
                errs.append(f"{name}: cluster.tls_ca_file ({got}) is not the CA that issued node Certificate {n}")
    elif strict:
        errs.append(f"{name}: no node-to-node TLS (cluster.tls_* from a Certificate)")
    public = pair("tls.cert_file", "tls.key_file", "listeners'")
    if public is not None:
        if "server auth" not in usages(public):
            errs.append(f"{name}: Certificate {public['metadata']['name']} lacks the usage server auth")
        if not public["spec"].get("dnsNames"):
            errs.append(f"{name}: Certificate {public['metadata']['name']} names no host")
        chain, err = issuer_chain(public, docs)
        if err:
            errs.append(f"{name}: {err}")
    elif strict:
        errs.append(f"{name}: no RTMPS/HTTPS certificate (tls.* from a Certificate)")
    if strict and "auth.play_key_file" not in files:
        errs.append(f"{name}: plays are not signed (auth.play_key_file from {SECRET})")
    return errs


def secret_checks(name, docs):
    """Every Secret a pod mounts or references comes from somewhere the render names (see secret_keys), with
    the key asked for; Certificate Secrets are mounted whole (a subPath mount never sees a renewal); every
    Certificate and Issuer is used; every namespaced object is in one namespace."""
    errs = []
    for w in docs:
        if w["kind"] not in WORKLOADS:
            continue
        spec, _ = pod_spec(w)
        refs = []  # (secret, key or None, where)
        for v in spec.get("volumes", []):
            if "secret" in v:
                items = v["secret"].get("items") or [{"key": None}]
                refs += [(v["secret"]["secretName"], i["key"], f"volume {v['name']}") for i in items]
            for src in v.get("projected", {}).get("sources", []):
                if "secret" in src:
                    items = src["secret"].get("items") or [{"key": None}]
                    refs += [(src["secret"]["name"], i["key"], f"volume {v['name']}") for i in items]
        for c in spec.get("initContainers", []) + spec["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.append((ref["name"], ref["key"], f"variable {e['name']}"))
            for e in c.get("envFrom", []):
                if "secretRef" in e:
                    refs.append((e["secretRef"]["name"], None, "envFrom"))
            for m in c.get("volumeMounts", []):
                v = next((v for v in spec.get("volumes", []) if v["name"] == m["name"]), {})
                if "secret" in v and m.get("subPath") and any(
                        d["kind"] == "Certificate" and d["spec"]["secretName"] == v["secret"]["secretName"]
                        for d in docs):
                    errs.append(f"{name}: the Certificate Secret {v['secret']['secretName']} is mounted with "
                                "subPath: the pod would never see a renewed certificate")
        for secret, key, where in refs:
            keys = secret_keys(secret, docs)
            if keys is None:
                errs.append(f"{name}: {w['kind']}/{w['metadata']['name']} {where} uses Secret {secret}, which is "
                            f"neither {SECRET} nor the secretName of a Certificate in the render")
            elif key is not None and key not in keys:
                errs.append(f"{name}: {w['kind']}/{w['metadata']['name']} {where} wants key {key} of Secret {secret}, "
                            f"which provides {sorted(keys)}")
    used = set()
    for w in docs:
        if w["kind"] in WORKLOADS:
            spec, _ = pod_spec(w)
            used |= {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
    certs = [d for d in docs if d["kind"] == "Certificate"]
    used |= {d["spec"]["ca"]["secretName"] for d in docs if d["kind"] == "Issuer" and "ca" in d["spec"]}
    secrets = [c["spec"]["secretName"] for c in certs]
    for c in certs:
        if secrets.count(c["spec"]["secretName"]) > 1:
            errs.append(f"{name}: two Certificates write Secret {c['spec']['secretName']}")
        if c["spec"]["secretName"] not in used:
            errs.append(f"{name}: Certificate {c['metadata']['name']}'s Secret {c['spec']['secretName']} is used "
                        "by no pod and no Issuer")
    issued_by = {c["spec"]["issuerRef"]["name"] for c in certs if c["spec"]["issuerRef"].get("kind", "Issuer") == "Issuer"}
    for i in (d for d in docs if d["kind"] == "Issuer"):
        if i["metadata"]["name"] not in issued_by:
            errs.append(f"{name}: Issuer {i['metadata']['name']} issues no Certificate of the render")
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] not in CLUSTER_SCOPED}
    if len(namespaces) != 1 or None in namespaces:
        errs.append(f"{name}: the namespaced objects are not all in one namespace: {sorted(map(str, namespaces))}")
    return errs


def reference_checks(name, docs):
    errs = []
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    pods = [(w, pod_spec(w)) for w in docs if w["kind"] in WORKLOADS]
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    for s in services.values():
        sel = s["spec"].get("selector")
        targets = [(spec, meta) for _, (spec, meta) in pods if matches(sel, meta.get("labels", {}))]
        if not targets:
            errs.append(f"{name}: Service {s['metadata']['name']} selects no pod")
            continue
        named = {p["name"] for spec, _ in targets for c in spec["containers"] for p in c.get("ports", [])}
        for p in s["spec"]["ports"]:
            tp = p.get("targetPort", p["port"])
            if isinstance(tp, str) and tp not in named:
                errs.append(f"{name}: Service {s['metadata']['name']} targets unknown port {tp}")
    errs += network_policy_checks(name, services, pods, by_kind.get("NetworkPolicy", []))
    for ing in by_kind.get("Ingress", []):
        for rule in ing["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                b = path["backend"]["service"]
                svc = services.get(b["name"])
                port = b["port"].get("name", b["port"].get("number"))
                if not svc or port not in {p.get("name") for p in svc["spec"]["ports"]} | {
                        p["port"] for p in svc["spec"]["ports"]}:
                    errs.append(f"{name}: Ingress {ing['metadata']['name']} routes to {b['name']}:{port}, which "
                                "does not exist")
    for sm in by_kind.get("ServiceMonitor", []):
        sel = sm["spec"]["selector"]["matchLabels"]
        hit = [s for s in services.values() if matches(sel, s["metadata"].get("labels", {}))]
        if not hit:
            errs.append(f"{name}: ServiceMonitor {sm['metadata']['name']} selects no Service")
        for ep in sm["spec"]["endpoints"]:
            if not any(ep["port"] in {p.get("name") for p in s["spec"]["ports"]} for s in hit):
                errs.append(f"{name}: ServiceMonitor endpoint port {ep['port']} is not a port of its Service")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        if not any(matches(pdb["spec"]["selector"]["matchLabels"], m.get("labels", {})) for _, (_, m) in pods):
            errs.append(f"{name}: PodDisruptionBudget {pdb['metadata']['name']} selects no pod")
    adapter = yaml.safe_load(open(os.path.join(DEPLOY, "prometheus-adapter", "values.yaml")))
    served = {r["name"]["as"] for r in adapter["rules"]["custom"]}
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        ref = hpa["spec"]["scaleTargetRef"]
        target = next((w for w in docs if w["kind"] == ref["kind"] and w["metadata"]["name"] == ref["name"]), None)
        if not target:
            errs.append(f"{name}: HPA {hpa['metadata']['name']} scales {ref['kind']}/{ref['name']}, which does not exist")
        elif "replicas" in target["spec"]:
            errs.append(f"{name}: {ref['kind']}/{ref['name']} sets replicas although an HPA owns them")
        for m in hpa["spec"]["metrics"]:
            if m["type"] == "Pods" and m["pods"]["metric"]["name"] not in served:
                errs.append(f"{name}: HPA metric {m['pods']['metric']['name']} is served by no prometheus-adapter rule")
            if m["type"] == "Resource" and target:
                for c in pod_spec(target)[0]["containers"]:
                    if m["resource"]["name"] not in c.get("resources", {}).get("requests", {}):
                        errs.append(f"{name}: HPA on {m['resource']['name']} utilization but no request for it")
        beh = hpa["spec"].get("behavior", {}).get("scaleDown", {})
        if beh.get("stabilizationWindowSeconds", 300) < 60 or not beh.get("policies"):
            errs.append(f"{name}: HPA scale-down has no stabilization window or policy (drain time)")
        if hpa["spec"].get("minReplicas", 1) > hpa["spec"]["maxReplicas"]:
            errs.append(f"{name}: HPA minReplicas > maxReplicas")
    return errs


def network_policy_checks(name, services, pods, policies):
    """Every port a Service publishes gets through the NetworkPolicies that select its pods; the cluster port
    (node-to-node) is open to strom pods only."""
    errs = []

    def allows(rule, number, port_name):
        return "ports" not in rule or any(p.get("port") in (number, port_name) for p in rule["ports"])

    for _, (spec, meta) in pods:
        labels = meta.get("labels", {})
        pols = [p for p in policies if "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
                and all(labels.get(k) == v for k, v in p["spec"]["podSelector"].get("matchLabels", {}).items())]
        if not pols:
            continue
        numbers = {p["name"]: p["containerPort"] for c in spec["containers"] for p in c.get("ports", []) if "name" in p}
        rules = [r for p in pols for r in p["spec"].get("ingress", [])]
        for s in services.values():
            if not matches(s["spec"].get("selector"), labels):
                continue
            for p in s["spec"]["ports"]:
                tp = p.get("targetPort", p["port"])
                number = numbers.get(tp) if isinstance(tp, str) else tp
                port_name = tp if isinstance(tp, str) else None
                if number is not None and not any(allows(r, number, port_name) for r in rules):
                    errs.append(f"{name}: the NetworkPolicy lets nothing reach port {tp} ({number}) that Service "
                                f"{s['metadata']['name']} publishes")
        if "cluster" in numbers and any("from" not in r and allows(r, numbers["cluster"], "cluster") for r in rules):
            errs.append(f"{name}: the NetworkPolicy opens the cluster port {numbers['cluster']} to everyone")
    return errs


def check_docs(name, docs, strom, strict=None):
    """strict (default: renders named prod*): node-to-node TLS, the TLS listeners and signed plays required."""
    strict = name.startswith("prod") if strict is None else strict
    errs = []
    for w in docs:
        if w["kind"] not in WORKLOADS:
            continue
        spec, _ = pod_spec(w)
        pod_sc = spec.get("securityContext", {})
        if spec.get("hostNetwork") or spec.get("hostPID"):
            errs.append(f"{name}: {w['metadata']['name']} uses the host's network or PIDs")
        if any("hostPath" in v for v in spec.get("volumes", [])):
            errs.append(f"{name}: {w['metadata']['name']} mounts a hostPath")
        for c in spec.get("initContainers", []) + spec["containers"]:
            errs += container_checks(f"{name}: {w['kind']}/{w['metadata']['name']}", c, pod_sc)
        if any(c["name"] == "strom" for c in spec["containers"]):
            errs += strom_checks(name, w, docs, strom, strict)
    errs += reference_checks(name, docs)
    errs += secret_checks(name, docs)
    return errs


def dockerfile_checks():
    errs = []
    text = open(os.path.join(DEPLOY, "Dockerfile")).read()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    for image in froms:
        if ":" not in image or image.endswith(":latest"):
            errs.append(f"Dockerfile: base image {image} is not pinned to a tag")
    if not froms or froms[0].split(":")[0] != "rust" or froms[-1] != "debian:12-slim":
        errs.append("Dockerfile: expected a rust builder stage and a debian:12-slim runtime stage")
    runtime = text[text.rindex("\nFROM "):]
    user = re.findall(r"^USER\s+(\S+)", runtime, re.M)
    if not user or not re.fullmatch(r"[1-9]\d*(:\d+)?", user[-1]):
        errs.append("Dockerfile: the runtime stage has no numeric non-root USER (runAsNonRoot needs a uid)")
    members = tomllib.load(open(os.path.join(ROOT, "Cargo.toml"), "rb"))["workspace"]["members"]
    for m in members:
        if f"COPY {m}/Cargo.toml" not in text or f"{m}/src" not in text:
            errs.append(f"Dockerfile: workspace member {m} is missing from the dependency layer (manifest + stub)")
    ignore = open(os.path.join(DEPLOY, "Dockerfile.dockerignore")).read()
    for src in re.findall(r"^COPY\s+(?!--from)(.+?)\s+\S+$", text, re.M):
        for path in src.split():
            if not os.path.exists(os.path.join(ROOT, path)):
                errs.append(f"Dockerfile: COPY {path}: no such path in the repository")
            if f"!{path}" not in ignore:
                errs.append(f"Dockerfile: COPY {path} is excluded by Dockerfile.dockerignore")
    return errs, (user[-1].split(":")[0] if user else None)


def self_test(renders, strom):
    """Each mutation of a good render must be caught: the general ones on the first render, the TLS and Secret
    ones on the first render with cert-manager Certificates (prod)."""
    def sts_container(d):
        return next(x for x in d if x["kind"] == "StatefulSet")["spec"]["template"]["spec"]["containers"][0]

    def pod(d):
        return next(x for x in d if x["kind"] == "StatefulSet")["spec"]["template"]["spec"]

    def obj(d, kind, name):
        return next(x for x in d if x["kind"] == kind and x["metadata"]["name"] == name)

    def env(d, var):
        return next(e for e in sts_container(d)["env"] if e["name"] == var)

    def drop_env(d, *names):
        sts_container(d)["env"] = [e for e in sts_container(d)["env"] if e["name"] not in names]

    def volume(d, name):
        return next(v for v in pod(d)["volumes"] if v["name"] == name)

    mutations = {
        "no readiness probe": lambda d: sts_container(d).pop("readinessProbe"),
        "no liveness probe": lambda d: sts_container(d).pop("livenessProbe"),
        "no resources": lambda d: sts_container(d).pop("resources"),
        ":latest image": lambda d: sts_container(d).update(image="strom:latest"),
        "untagged image": lambda d: sts_container(d).update(image="registry.example.com/strom"),
        "root user": lambda d: pod(d)["securityContext"].update(runAsUser=0),
        "runAsNonRoot off": lambda d: (pod(d)["securityContext"].pop("runAsNonRoot"),
                                       sts_container(d)["securityContext"].pop("runAsNonRoot")),
        "writable root filesystem": lambda d: sts_container(d)["securityContext"].pop("readOnlyRootFilesystem"),
        "short grace period": lambda d: pod(d).update(terminationGracePeriodSeconds=10),
        "replicas beside the HPA": lambda d: next(x for x in d if x["kind"] == "StatefulSet")["spec"].update(replicas=3),
        "unknown STROM_ variable": lambda d: sts_container(d)["env"].append({"name": "STROM_NO_SUCH_KEY", "value": "1"}),
        "recordings on the read-only root": lambda d: sts_container(d).update(
            volumeMounts=[m for m in sts_container(d)["volumeMounts"] if m["name"] != "data"]),
        "Service port typo": lambda d: next(x for x in d if x["kind"] == "Service")["spec"]["ports"][0].update(
            targetPort="htttp"),
        "cluster port open to everyone": lambda d: obj(d, "NetworkPolicy", "strom-cluster-port")["spec"]["ingress"][0][
            "ports"].append({"port": 4697}),
        "a key strom-secrets does not have": lambda d: env(d, "STROM_AUTH_ADMIN_TOKEN")["valueFrom"][
            "secretKeyRef"].update(key="admin-token"),
    }
    tls_mutations = {
        "a Secret from nowhere": lambda d: volume(d, "public-tls")["secret"].update(secretName="strom-tls-by-hand"),
        "a Certificate Secret mounted with subPath": lambda d: next(
            m for m in sts_container(d)["volumeMounts"] if m["name"] == "cluster-tls").update(subPath="tls.crt"),
        "play key file strom-secrets does not provide": lambda d: env(d, "STROM_AUTH_PLAY_KEY_FILE").update(
            value="/etc/strom/secrets/playkey"),
        "plays not signed (prod)": lambda d: drop_env(d, "STROM_AUTH_PLAY_KEY_FILE"),
        "node certificate without client auth": lambda d: obj(d, "Certificate", "strom-cluster-tls")["spec"].update(
            usages=["digital signature", "server auth"]),
        "node certificate without the pods' names": lambda d: obj(d, "Certificate", "strom-cluster-tls")[
            "spec"].update(dnsNames=["strom.example.com"]),
        "node certificate from the self-signed Issuer": lambda d: obj(d, "Certificate", "strom-cluster-tls")[
            "spec"]["issuerRef"].update(name="strom-selfsigned"),
        "CA Certificate that is no CA": lambda d: obj(d, "Certificate", "strom-cluster-ca")["spec"].update(isCA=False),
        "CA Issuer on a Secret no Certificate fills": lambda d: obj(d, "Issuer", "strom-cluster-ca")["spec"][
            "ca"].update(secretName="strom-ca"),
        "CA key replaced at renewal": lambda d: obj(d, "Certificate", "strom-cluster-ca")["spec"]["privateKey"].update(
            rotationPolicy="Always"),
        "cluster CA from the listeners' Secret": lambda d: env(d, "STROM_CLUSTER_TLS_CA_FILE").update(
            value="/etc/strom/tls/ca.crt"),
        "cluster TLS half configured": lambda d: drop_env(d, "STROM_CLUSTER_TLS_CA_FILE"),
        "no cluster TLS (prod)": lambda d: drop_env(d, "STROM_CLUSTER_TLS_CERT_FILE", "STROM_CLUSTER_TLS_KEY_FILE",
                                                    "STROM_CLUSTER_TLS_CA_FILE"),
        "listeners' certificate without server auth": lambda d: obj(d, "Certificate", "strom-public-tls")[
            "spec"].update(usages=["digital signature", "client auth"]),
        "RTMPS on a port the container lacks": lambda d: env(d, "STROM_RTMPS_LISTEN").update(value="0.0.0.0:1937"),
        "RTMPS shut out by the NetworkPolicy": lambda d: obj(d, "NetworkPolicy", "strom-cluster-port")["spec"][
            "ingress"][0].update(ports=[p for p in obj(d, "NetworkPolicy", "strom-cluster-port")["spec"]["ingress"][0][
                "ports"] if p["port"] != 1936]),
        "a Certificate in another namespace": lambda d: obj(d, "Certificate", "strom-public-tls")["metadata"].update(
            namespace="default"),
        "an Issuer that issues nothing": lambda d: d.append({"apiVersion": "cert-manager.io/v1", "kind": "Issuer",
                                                             "metadata": {"name": "spare", "namespace": "strom"},
                                                             "spec": {"selfSigned": {}}}),
    }
    first = next(iter(renders.items()))
    tls = next(((n, d) for n, d in renders.items() if any(x["kind"] == "Certificate" for x in d)), None)
    missed = []
    if tls is None:
        missed.append("(no render with Certificates to mutate)")
        tls_mutations = {}
    for (src, docs), muts in ((first, mutations), (tls, tls_mutations)):
        if not muts:
            continue
        if check_docs(src, docs, strom):
            missed.append(f"(the unmutated {src} fails)")
        for what, mutate in muts.items():
            d = copy.deepcopy(docs)
            mutate(d)
            if not check_docs(f"self-test {src}", d, strom, strict=src.startswith("prod")):
                missed.append(f"{what} ({src})")
    return missed, len(mutations) + len(tls_mutations)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--strom", required=True)
    ap.add_argument("renders", nargs="+", help="NAME=rendered.yaml")
    args = ap.parse_args()
    errs = []
    renders = {}
    for arg in args.renders:
        name, path = arg.split("=", 1)
        renders[name] = [d for d in yaml.safe_load_all(open(path)) if d]
        e = check_docs(name, renders[name], args.strom)
        print(f"policy: {name}: {len(renders[name])} objects, {'ok' if not e else f'{len(e)} problems'}")
        errs += e
    e, uid = dockerfile_checks()
    errs += e
    for name, docs in renders.items():
        for w in docs:
            if w["kind"] == "StatefulSet":
                run_as = pod_spec(w)[0].get("securityContext", {}).get("runAsUser")
                if uid and run_as is not None and str(run_as) != uid:
                    errs.append(f"{name}: runAsUser {run_as} is not the image's user {uid}")
    print(f"policy: Dockerfile: {'ok' if not e else f'{len(e)} problems'}")
    missed, n = self_test(renders, args.strom)
    print(f"policy: self-test: {n - len(missed)} of {n} mutations caught")
    errs += [f"self-test: the policy misses: {m}" for m in missed]
    for e in errs:
        print("FAIL " + e)
    sys.exit(1 if errs else 0)


if __name__ == "__main__":
    main()
