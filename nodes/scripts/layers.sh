#!/usr/bin/env bash
# The engine's layers (see engine/src/lib.rs): each module may use only the modules of the layers below it. This
# fails on any `crate::<module>` path in code (doc comments may link anywhere) that crosses a layer upwards.
set -euo pipefail
cd "$(dirname "$0")/../../engine/src"

plumbing="bufqueue clock config memory metrics shutdown tls"
declare -A allowed=(
    [formats]=""
    [bufqueue]="" [clock]="" [metrics]="" [shutdown]="" [tls]="" [memory]="metrics"
    [config]="formats"
    [stream]="formats $plumbing"
    [cluster]="stream formats $plumbing"
    [storage]="cluster stream formats $plumbing"
    [transcode]="storage cluster stream formats $plumbing"
    [load]="cluster $plumbing"
    [servers]="storage transcode cluster stream formats load $plumbing"
    [node]="servers load storage transcode cluster stream formats $plumbing"
)

bad=0
for module in "${!allowed[@]}"; do
    if [ -d "$module" ]; then files=$(find "$module" -name '*.rs'); else files="$module.rs"; fi
    # Code lines only: doc and plain comments are left out.
    used=$(grep -hv '^\s*//' $files | grep -oE 'crate::[a-z_]+' | sed 's/crate:://' | sort -u || true)
    for dep in $used; do
        [ "$dep" = "$module" ] && continue
        if [[ " ${allowed[$module]} " != *" $dep "* ]]; then
            echo "layers: $module uses crate::$dep, a layer above it (or not listed in nodes/scripts/layers.sh):" >&2
            grep -nE "crate::$dep\b" $files | grep -v ':\s*//' | head -5 >&2
            bad=1
        fi
    done
done
modules=$(ls | sed 's/\.rs$//' | grep -v '^lib$' | sort)
for m in $modules; do
    [ -n "${allowed[$m]+x}" ] || { echo "layers: module $m has no layer in nodes/scripts/layers.sh" >&2; bad=1; }
done
[ $bad = 0 ] && echo "layers: ok (formats → stream → cluster / storage → transcode → servers → node)"
exit $bad
