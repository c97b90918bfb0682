#!/usr/bin/env bash
# The console's vendored players (served by strom from engine/console/vendor/, embedded in the binary).
#
#   vendor.sh [check]   offline: the files match SHA256SUMS and carry the pinned versions
#   vendor.sh update    fetch the pinned npm tarballs (`npm pack`), verify each against its pinned
#                       npm integrity (sha512), extract the two files, rewrite SHA256SUMS
#
# To move to a new release: change the version AND its integrity below
# (`npm view hls.js@X.Y.Z dist.integrity`), run `vendor.sh update`, then `vendor.sh check`.
set -euo pipefail

HLS_VERSION=1.7.4
HLS_INTEGRITY=sha512-3GlxGdPvT2YHvQYOt+yOzT/DEior/qJVNIylHA77kgeoBTdQQqi70GwefNEUmHQeNGyjC8U62+bruqW/Tpm+tg==
MPEGTS_VERSION=1.8.2
MPEGTS_INTEGRITY=sha512-cZYMa5muASH55wrS6JK5IGkUqnCA96c0f+WdnW91jIK9s/N6NzjmTQDJNYg9A5u/G2Q5nj2b3w1Zwzze/9guxA==

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mode="${1:-check}"

# name-in-vendor  npm-package  version  integrity  file-in-tarball
entries() {
  echo "hls.min.js hls.js $HLS_VERSION $HLS_INTEGRITY package/dist/hls.min.js"
  echo "mpegts.min.js mpegts.js $MPEGTS_VERSION $MPEGTS_INTEGRITY package/dist/mpegts.js"
}

die() { echo "vendor.sh: $*" >&2; exit 1; }

# The version literal each library embeds (hls.js: `var vs="1.7.4"`, mpegts.js: `return"1.8.2"`), as the
# files have no banner comment naming it.
version_ok() { grep -q "\"$2\"" "$here/$1"; }

check() {
  [ -f "$here/SHA256SUMS" ] || die "SHA256SUMS missing (run vendor.sh update)"
  (cd "$here" && sha256sum --quiet -c SHA256SUMS) || die "checksum mismatch (run vendor.sh update, or restore the files)"
  while read -r out pkg ver _ _; do
    version_ok "$out" "$ver" || die "$out does not carry $pkg version \"$ver\" (pinned in vendor.sh)"
    grep -q " $out\$" "$here/SHA256SUMS" || die "SHA256SUMS has no line for $out"
  done < <(entries)
  echo "vendor.sh: ok (hls.js $HLS_VERSION, mpegts.js $MPEGTS_VERSION)"
}

update() {
  command -v npm >/dev/null || die "npm not found"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  while read -r out pkg ver integrity inner; do
    (cd "$tmp" && npm pack --silent "$pkg@$ver" >/dev/null) || die "npm pack $pkg@$ver failed"
    tgz="$tmp/$pkg-$ver.tgz"
    [ -f "$tgz" ] || die "npm pack left no $tgz"
    got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
    [ "$got" = "$integrity" ] || die "$pkg@$ver: integrity $got, pinned $integrity"
    mkdir -p "$tmp/x-$pkg"
    tar -xzf "$tgz" -C "$tmp/x-$pkg" "$inner" || die "$pkg@$ver: no $inner in the tarball"
    install -m 0644 "$tmp/x-$pkg/$inner" "$here/$out"
    version_ok "$out" "$ver" || die "$out does not carry version \"$ver\""
    echo "vendor.sh: $pkg@$ver ($integrity) -> $out"
    # Their licences (Apache-2.0) and mpegts.js's notices of what it bundles, kept beside them (not served).
    tar -xzf "$tgz" -C "$tmp/x-$pkg" package/LICENSE || die "$pkg@$ver: no LICENSE in the tarball"
    install -m 0644 "$tmp/x-$pkg/package/LICENSE" "$here/$pkg.LICENSE"
    if tar -xzf "$tgz" -C "$tmp/x-$pkg" "$inner.LICENSE.txt" 2>/dev/null; then
      install -m 0644 "$tmp/x-$pkg/$inner.LICENSE.txt" "$here/$out.LICENSE.txt"
    fi
  done < <(entries)
  (cd "$here" && sha256sum hls.min.js mpegts.min.js ./*LICENSE* | sed 's, \./, ,' > SHA256SUMS)
  check
}

case "$mode" in
  check) check ;;
  update) update ;;
  *) echo "usage: vendor.sh [check|update]" >&2; exit 2 ;;
esac
