# Shared by run.sh and test.sh: install the Debian packages that are missing (as root, or through sudo).
ensure_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "strom: installing missing packages: ${missing[*]}" >&2
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "strom: not root and no sudo: install ${missing[*]} by hand" >&2; return 1; }
    sudo="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

ensure_cargo() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 || {
    echo "strom: a Rust toolchain (cargo, Rust >= 1.85) is needed; see https://rustup.rs" >&2
    return 1
  }
}

# What building strom needs from Debian: a C toolchain, and for the ABR ladder (ffmpeg-next) FFmpeg 5.1's
# development libraries (libavcodec brings libx264) plus clang/libclang for bindgen.
BUILD_PACKAGES=(build-essential pkg-config clang libclang-dev
  libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev libavfilter-dev libavdevice-dev)

# What the multi-node tests (nodes/tests/cluster.rs, nodes/tests/common/netns.rs) need besides iproute2: nftables
# to cut the link between two node namespaces (`Net::cut_between`; the CI kernel has no tc drop action, no prio or
# netem qdisc, so tc cannot drop one pair's traffic) and curl as the in-namespace HTTP client. The rules live only
# inside the test namespaces; nothing touches the host's ruleset.
NETNS_TEST_PACKAGES=(iproute2 nftables curl)

# The players the end-to-end tests run besides ffmpeg/ffprobe and Chromium: VLC 3, headless (`cvlc` with dummy
# outputs; nodes/tests/live.rs).
# openssl makes the TLS tests' CA and certificates; certutil (libnss3-tools) puts the CA in the NSS database the
# headless Chromium of the HTTPS test trusts.
PLAYER_TEST_PACKAGES=(vlc-bin vlc-plugin-base openssl libnss3-tools curl)

# What deploy/statefulset/test/run.sh needs beyond Python: Prometheus and promtool (a real Prometheus scrapes real
# strom nodes for the HPA loop), ffmpeg (the publisher), curl (HTTP-FLV readers).
DEPLOY_TEST_PACKAGES=(prometheus ffmpeg curl)

# The balancer of the rolling-restart test (nodes/tests/rolling_restart.rs): nginx (run by the test as its own child,
# with its own configuration in a scratch directory; the packaged service is not used) and its `stream` module for
# RTMP over L4.
NGINX_TEST_PACKAGES=(nginx-light libnginx-mod-stream)
