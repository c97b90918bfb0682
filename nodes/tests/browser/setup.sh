#!/usr/bin/env bash
# Idempotent setup for the browser harness (nodes/tests/browser/play.mjs, console.mjs).
# - installs Debian's chromium if /usr/bin/chromium is missing (needs root + apt)
# - runs `npm ci` here if node_modules is missing or older than package-lock.json
# Never downloads a browser build through playwright.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

if [ ! -x /usr/bin/chromium ]; then
  echo "setup.sh: /usr/bin/chromium missing, installing Debian's chromium" >&2
  sudo_cmd=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo_cmd="sudo"; else
      echo "setup.sh: not root and no sudo; install chromium by hand" >&2; exit 2
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y --no-install-recommends chromium
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "setup.sh: node/npm not found (need Node >= 18)" >&2; exit 2
fi

stamp="$here/node_modules/.package-lock.json"   # written by npm ci/install
need_ci=0
if [ ! -d "$here/node_modules" ] || [ ! -f "$stamp" ]; then
  need_ci=1
elif [ "$here/package-lock.json" -nt "$stamp" ] || [ "$here/package.json" -nt "$stamp" ]; then
  need_ci=1
else
  for m in playwright-core/package.json hls.js/dist/hls.min.js mpegts.js/dist/mpegts.js axe-core/axe.min.js; do
    [ -f "$here/node_modules/$m" ] || need_ci=1
  done
fi

if [ "$need_ci" = 1 ]; then
  echo "setup.sh: npm ci in $here" >&2
  (cd "$here" && npm ci --no-audit --no-fund)
else
  echo "setup.sh: node_modules up to date" >&2
fi

echo "setup.sh: $(/usr/bin/chromium --version 2>/dev/null || echo "chromium --version failed")" >&2
