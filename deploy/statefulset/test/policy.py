#!/usr/bin/env python3
"""Policy and consistency checks on the rendered overlays (kubectl kustomize output), the Dockerfile and the
prometheus-adapter rule. Fails on what a schema cannot see: missing probes or resources, `:latest` or untagged
images, root containers, a writable root filesystem, a grace period shorter than the drain, references that
point nowhere (Service selectors and ports, Ingress backends, ServiceMonitor, HPA target and metric, PDB,
volume mounts), recordings (storage.path) that would land on the read-only root filesystem,
and a strom configuration that strom itself refuses (the real binary checks each overlay's effective config).

A self-test first mutates a rendered StatefulSet in each of the ways above and requires every mutation to be
caught, so the policy cannot pass by checking nothing.

usage: policy.py --strom target/debug/strom NAME=rendered.yaml...
"""
import argparse
import copy
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


def strom_checks(name, sts, docs, strom):
    """The drain arithmetic, cluster wiring, and the real strom accepting the effective configuration."""
    errs = []
    spec, meta = pod_spec(sts)
    c = next(c for c in spec["containers"] if c["name"] == "strom")
    cms = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    vol = next((v for v in spec.get("volumes", []) if "configMap" in v), None)
    if not vol or vol["configMap"]["name"] not in cms:
        return [f"{name}: the strom.toml ConfigMap volume points to no ConfigMap"]
    toml_text = cms[vol["configMap"]["name"]]["data"]["strom.toml"]
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
    need = sleep + effective("drain_secs") + effective("shutdown_timeout_secs")
    if not grace > need:
        errs.append(f"{name}: terminationGracePeriodSeconds {grace} <= preStop {sleep} + drain_secs + "
                    f"shutdown_timeout_secs = {need}")
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
    # The real strom on the effective configuration: file + the container's STROM_* variables.
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
        writable = []
        for mount in c.get("volumeMounts", []):
            src = next((v for v in spec.get("volumes", []) if v["name"] == mount["name"]), None)
            if src is None and mount["name"] in claims:
                src = {"persistentVolumeClaim": {}}
            if src is None:
                errs.append(f"{name}: volumeMount {mount['name']} names no volume and no volumeClaimTemplate")
                continue
            if "secret" in src:
                paths[mount["mountPath"]] = tmp  # stand-in files for the Secret's keys
            if not mount.get("readOnly") and ("persistentVolumeClaim" in src or "emptyDir" in src):
                writable.append(mount["mountPath"].rstrip("/"))
        # The root filesystem is read-only: recordings must land on a writable volume (unless they go to S3).
        storage = conf.get("storage", {})
        path = storage.get("path", "./data")
        if "url" not in storage and not any(path == w or path.startswith(w + "/") for w in writable):
            errs.append(f"{name}: storage.path {path!r} is on no writable volume (the root filesystem is read-only)")
        if "url" not in storage:
            paths[path] = os.path.join(tmp, "data")
        for key, value in (("cookie", "policy-test-" + "ab12" * 16), ("publish_secrets", "live/test policy-secret")):
            with open(os.path.join(tmp, key), "w") as f:
                f.write(value + "\n")
        text = toml_text
        for mount_path, local in paths.items():
            text = text.replace(mount_path, local)
        cfg = os.path.join(tmp, "strom.toml")
        with open(cfg, "w") as f:
            f.write(text)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        values = {"POD_NAME": f"{sts['metadata']['name']}-0"}
        for e in c.get("env", []):
            v = e.get("value")
            if v is None:
                fr = e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
                if e.get("valueFrom", {}).get("secretKeyRef"):
                    v = "policy-test-secret-value"
                else:
                    v = values["POD_NAME"] if fr == "metadata.name" else env_value(c, e["name"], res)
            if v is None:
                errs.append(f"{name}: cannot compute variable {e['name']}")
                continue
            v = re.sub(r"\$\((\w+)\)", lambda m: values.get(m.group(1), m.group(0)), v)
            values[e["name"]] = v
            env[e["name"]] = v
        args = [a for a in c.get("args", []) if a != "/etc/strom/strom.toml"]
        r = subprocess.run([strom, *args, cfg, "--print-config"], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            errs.append(f"{name}: strom refuses the effective configuration: {r.stderr.strip()}")
        elif "advertise = \"strom-0.strom-cluster\"" not in r.stdout:
            errs.append(f"{name}: strom's effective cluster.advertise is not strom-0.strom-cluster")
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


def check_docs(name, docs, strom):
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
            errs += strom_checks(name, w, docs, strom)
    errs += reference_checks(name, docs)
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


def self_test(docs, strom):
    """Each mutation of a good render must be caught."""
    def sts_container(d):
        return next(x for x in d if x["kind"] == "StatefulSet")["spec"]["template"]["spec"]["containers"][0]

    def pod(d):
        return next(x for x in d if x["kind"] == "StatefulSet")["spec"]["template"]["spec"]

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
    }
    missed = []
    for what, mutate in mutations.items():
        d = copy.deepcopy(docs)
        mutate(d)
        if not check_docs("self-test", d, strom):
            missed.append(what)
    return missed, len(mutations)


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
    first = next(iter(renders.values()))
    missed, n = self_test(first, args.strom)
    print(f"policy: self-test: {n - len(missed)} of {n} mutations caught")
    errs += [f"self-test: the policy misses: {m}" for m in missed]
    for e in errs:
        print("FAIL " + e)
    sys.exit(1 if errs else 0)


if __name__ == "__main__":
    main()
