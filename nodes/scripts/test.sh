#!/usr/bin/env bash
# Runs the whole test suite: installs the real peers (ffmpeg, Chromium + hls.js/mpegts.js), checks formatting
# and lints, then runs every unit and end-to-end test and the offline checks of the Kubernetes deployment.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. nodes/scripts/packages.sh
ensure_packages "${BUILD_PACKAGES[@]}" ffmpeg procps ca-certificates "${NETNS_TEST_PACKAGES[@]}" "${PLAYER_TEST_PACKAGES[@]}" \
  "${NGINX_TEST_PACKAGES[@]}"
command -v npm >/dev/null 2>&1 || ensure_packages nodejs npm
ensure_cargo
bash nodes/tests/browser/setup.sh
# A real S3 server for the recording tests (s3s-fs: S3 over a directory; 0.14.1 is the newest for rustc 1.95).
command -v s3s-fs >/dev/null 2>&1 || [ -x "$HOME/.cargo/bin/s3s-fs" ] ||
  cargo install s3s-fs@0.14.1 --features binary --locked --quiet

step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
step "format"
cargo fmt --all -- --check
step "lint"
cargo clippy --locked --workspace --all-targets -- -D warnings
step "layers, vendored players and docs (no module uses a layer above it; hls.js/mpegts.js match their pinned hashes; every intra-doc link resolves)"
bash nodes/scripts/layers.sh
bash engine/console/vendor/vendor.sh check
RUSTDOCFLAGS="-D warnings" cargo doc --locked -p strom-engine --no-deps --quiet
step "tests"
# Each end-to-end test runs real strom + ffmpeg processes; three at a time fit a 2-core machine.
cargo test --locked --workspace -- --test-threads="${STROM_TEST_THREADS:-3}"
step "soak (3 minutes: a 3-node cluster under publisher and player churn, a node killed, abuse; nodes/tests/soak.rs)"
if [ "$(id -u)" = 0 ]; then
  STROM_SOAK_MINUTES=3 cargo test --locked -p strom --test soak -- --ignored --nocapture
else
  echo "skipped: the soak's network namespaces need root"
fi
step "engine without FFmpeg (the transcode feature off)"
cargo clippy --locked -p strom-engine --no-default-features --all-targets -- -D warnings
cargo test --locked -p strom-engine --no-default-features --lib
step "deploy (Kubernetes manifests, policy, HPA loop against Prometheus)"
bash deploy/statefulset/test/run.sh
if [ "${FUZZ_SECONDS:-0}" != 0 ]; then
  step "fuzz (${FUZZ_SECONDS}s per target)"
  cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet
  engine/fuzz/run.sh "$FUZZ_SECONDS"
fi
step "done"
