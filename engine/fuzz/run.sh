#!/usr/bin/env bash
# Builds every fuzz target of strom-engine once, runs each for SECONDS (default 20), prints one summary line per
# target and exits non-zero if any target found a crash (panic, failed assertion, sanitizer report, timeout,
# out-of-memory). Usable from CI; see README.md.
#
#   engine/fuzz/run.sh [seconds-per-target] [target...]
#
# Environment:
#   FUZZ_JOBS=N                  cargo build jobs (default: cargo's; use 1 when the machine is shared)
#   FUZZ_TARGETS="a b"           targets to run (default: all; positional targets win)
#   FUZZ_ARGS="..."              extra libFuzzer flags for every target (e.g. "-max_len=65536")
#   FUZZ_SESSION_PANICS=D  rtmp_session saves every input that made rml_rtmp panic into directory D
#
# Generated corpus entries go to work/corpus/<target>/ (git-ignored; keep it between runs to start warm), the
# committed seeds in corpus/<target>/ are read only. Crash reproducers go to artifacts/<target>/, logs to
# work/logs/<target>.log.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

secs="${1:-20}"
shift || true
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
    echo "usage: $0 [seconds-per-target] [target...]" >&2
    exit 2
fi
all_targets=(flv_tags avc aac amf0 ts_muxer chunk_guard rtmp_session rtmp_handshake cluster_wire http_sniff cmaf hls_timestamps vod_names playlist_text play_token)
if [ "$#" -gt 0 ]; then
    targets=("$@")
elif [ -n "${FUZZ_TARGETS:-}" ]; then
    read -r -a targets <<<"$FUZZ_TARGETS"
else
    targets=("${all_targets[@]}")
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
    exit 2
fi

# cargo-fuzz passes nightly-only flags (-Zsanitizer, -Cpasses=sancov-module); stable rustc accepts them with this.
export RUSTC_BOOTSTRAP=1
if [ -n "${FUZZ_JOBS:-}" ]; then
    export CARGO_BUILD_JOBS="$FUZZ_JOBS"
fi

t0=$(date +%s)
# -O: optimised; -a: debug assertions and overflow checks on (strom's dev profile has them; rml_rtmp's
# arithmetic is only checked with them).
mkdir -p work
echo "building fuzz targets (cargo fuzz build -O -a; log: engine/fuzz/work/build.log)"
if ! cargo fuzz build -O -a >work/build.log 2>&1; then
    tail -40 work/build.log >&2
    echo "fuzz build failed" >&2
    exit 2
fi
t1=$(date +%s)
echo "build: $((t1 - t0)) s"

bin_dir="${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release"  # cargo fuzz builds there
failed=()
for t in "${targets[@]}"; do
    exe="$bin_dir/$t"
    if [ ! -x "$exe" ]; then
        echo "$t: no such target" >&2
        failed+=("$t")
        continue
    fi
    mkdir -p "work/corpus/$t" "artifacts/$t" work/logs
    log="work/logs/$t.log"
    seeds=()
    [ -d "corpus/$t" ] && seeds=("corpus/$t")
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    "$exe" "work/corpus/$t" "${seeds[@]}" \
        -max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=30 \
        -print_final_stats=1 -artifact_prefix="artifacts/$t/" ${FUZZ_ARGS:-} >"$log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([^ ]*\).*/\1/p' <<<"$last")
    extra=""
    if [ "$t" = rtmp_session ]; then
        kinds=$(grep -c 'rml_rtmp panicked' "$log")
        n=$(sed -n 's/^rtmp_session: \([0-9]*\) inputs so far made rml_rtmp panic.*/\1/p' "$log" | tail -1)
        extra=" session-panics: ${n:-0}+ inputs, ${kinds} kinds (contained)"
    fi
    if [ "$rc" -eq 0 ]; then
        status=ok
    else
        status="CRASH (exit $rc)"
        failed+=("$t")
    fi
    printf '%-13s %-16s execs: %-9s exec/s: %-7s cov: %-5s ft: %-6s corpus: %-12s rss: %sMB%s\n' \
        "$t" "$status" "${runs:-?}" "${eps:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "${rss:-?}" "$extra"
    if [ "$rc" -ne 0 ]; then
        grep -E 'ERROR|panicked at|SUMMARY|Test unit written|artifact_prefix' "$log" | grep -v 'contained by strom' | head -12 | sed 's/^/    /'
        echo "    log: engine/fuzz/$log"
    fi
done
t2=$(date +%s)
echo "total: $((t2 - t0)) s (build $((t1 - t0)) s, fuzzing $((t2 - t1)) s)"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "FAILED: ${failed[*]} (reproduce: $bin_dir/<target> artifacts/<target>/<file>)"
    exit 1
fi
echo "all ${#targets[@]} targets ok"
