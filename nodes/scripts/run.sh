#!/usr/bin/env bash
# Runs an all-in-one strom node with embedded defaults (RTMP :1935, HTTP :8080), after installing whatever the
# build needs and building a release binary. Extra arguments go to strom (see `strom --help`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. nodes/scripts/packages.sh
ensure_packages "${BUILD_PACKAGES[@]}"
ensure_cargo
cargo build --release --locked -p strom
exec target/release/strom "$@"
