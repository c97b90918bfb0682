#!/usr/bin/env python3
"""Strict validation of the custom resources in rendered overlays, which kubernetes-validate cannot check (it
ships no CRD schemas): cert-manager's Certificate, Issuer and ClusterIssuer, and the Prometheus operator's
ServiceMonitor. The schemas are those projects' APIs as pydantic models generated from their CRDs (PyPI:
cloudcoil-models-cert-manager, cloudcoil-models-prometheus-operator): types, enums (usages, key algorithms) and
required fields; a walk over the models refuses unknown fields as the API server's strict field validation does
(the models alone would drop them silently). Any other custom resource in the render fails: it needs a schema here.

A self-test first mutates a Certificate and a ServiceMonitor of the renders (misspelt field, unknown usage, wrong
type) and requires each mutation to be refused, so the check cannot pass by checking nothing.

usage: crd_validate.py rendered.yaml...
"""
import copy
import sys
import typing

import pydantic
import yaml
from cloudcoil.models import cert_manager, prometheus_operator

CM, MON = "cert-manager.io/v1", "monitoring.coreos.com/v1"
MODELS = {
    (CM, "Certificate"): cert_manager.v1.Certificate,
    (CM, "Issuer"): cert_manager.v1.Issuer,
    (CM, "ClusterIssuer"): cert_manager.v1.ClusterIssuer,
    (MON, "ServiceMonitor"): prometheus_operator.v1.ServiceMonitor,
}
# API groups whose objects are custom resources (everything else is checked by kubernetes-validate).
CUSTOM = ("cert-manager.io/", "monitoring.coreos.com/", "acme.cert-manager.io/")


def models_in(annotation):
    """The pydantic model classes an annotation holds (through Optional, List, Annotated; not Dict values)."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (dict, typing.Dict):
        return []
    return [m for a in typing.get_args(annotation) for m in models_in(a)]


def unknown_fields(model, data, path):
    if not isinstance(data, dict):
        return []
    fields = {(f.alias or n): f for n, f in model.model_fields.items()}
    out = []
    for key, value in data.items():
        f = fields.get(key)
        if f is None:
            out.append(f"{path}.{key}: unknown field")
            continue
        for sub in models_in(f.annotation):
            items = value if isinstance(value, list) else [value]
            for i, item in enumerate(items):
                out += unknown_fields(sub, item, f"{path}.{key}" + (f"[{i}]" if isinstance(value, list) else ""))
    return out


def check(doc):
    """Problems of one custom resource (empty when valid)."""
    where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    model = MODELS.get((doc.get("apiVersion"), doc.get("kind")))
    if model is None:
        return [f"{where}: no schema here for {doc.get('apiVersion')} {doc.get('kind')}"]
    errs = [f"{where}: {p}" for p in unknown_fields(model, doc, "")]
    try:
        model.model_validate(doc)
    except pydantic.ValidationError as e:
        errs.append(f"{where}: {' '.join(str(e).split())}")
    return errs


def main():
    renders = {path: [d for d in yaml.safe_load_all(open(path)) if d] for path in sys.argv[1:]}
    errs = []
    counted = {}
    for path, docs in renders.items():
        for d in docs:
            if d.get("apiVersion", "").startswith(CUSTOM):
                counted[d["kind"]] = counted.get(d["kind"], 0) + 1
                errs += [f"{path}: {p}" for p in check(d)]

    def first(kind):
        return next((d for docs in renders.values() for d in docs if d.get("kind") == kind), None)

    def rename(obj, key, new):
        obj["spec"][new] = obj["spec"].pop(key, None)

    mutations = {
        ("Certificate", "misspelt field"): lambda c: rename(c, "secretName", "secretname"),
        ("Certificate", "unknown usage"): lambda c: c["spec"].update(usages=["server-auth"]),
        ("Certificate", "wrong type"): lambda c: c["spec"].update(isCA="yes please"),
        ("ServiceMonitor", "misspelt field"): lambda m: rename(m, "endpoints", "endpoint"),
        ("ServiceMonitor", "misspelt nested field"): lambda m: m["spec"]["endpoints"][0].update(
            intervall=m["spec"]["endpoints"][0].pop("interval", "15s")),
    }
    for (kind, what), mutate in mutations.items():
        obj = first(kind)
        if obj is None:
            errs.append(f"self-test: no {kind} in the renders to mutate")
            continue
        obj = copy.deepcopy(obj)
        mutate(obj)
        if not check(obj):
            errs.append(f"self-test: a {kind} with a {what} is accepted")
    print("custom resources checked: " + ", ".join(f"{n} {k}" for k, n in sorted(counted.items())) +
          f"; self-test: {len(mutations)} mutations")
    for e in errs:
        print("FAIL " + e)
    sys.exit(1 if errs else 0)


if __name__ == "__main__":
    main()
