#!/usr/bin/env bash
# Streams 1 GiB up and 1 GiB down through credproxy and watches its memory:
# a proxy that streams keeps its RSS flat; one that buffers grows with the
# body. Issue 7's target: growth under 32 MiB.
#
# Three transfers per target, each with RSS sampled every 50 ms and VmHWM
# reset before it starts: an upload (curl -T of a sparse 1 GiB file), a
# download as fast as the client reads, and a download by a slow reader
# (curl --limit-rate), which makes the proxy hold back a fast upstream.
#
# usage: bench/rss-stream.sh [--all] [--size MIB] [--slow-rate RATE]
#                            [--no-build] [--no-install] [--keep]
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
usage: bench/rss-stream.sh [options]

  --all              also measure nginx and HAProxy (for comparison)
  --size MIB         bytes per transfer, in MiB (default 1024)
  --slow-rate RATE   the slow reader's curl --limit-rate (default 256M)
  --no-build         use target/release/credproxy (or $CREDPROXY_BIN) as it is
  --no-install       do not apt-get install missing tools
  --keep             keep the temporary directory
EOF
}

ALL=0 SIZE_MIB=1024 SLOW_RATE=256M BUILD=1 INSTALL=1 LIMIT_MIB=32
while (($# > 0)); do
    case $1 in
        --all) ALL=1 ;;
        --size) SIZE_MIB=$2; shift ;;
        --slow-rate) SLOW_RATE=$2; shift ;;
        --no-build) BUILD=0 ;;
        --no-install) INSTALL=0 ;;
        --keep) KEEP_WORK=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
    shift
done
[[ $SIZE_MIB =~ ^[1-9][0-9]*$ ]] || die "--size takes a positive number of MiB"

[[ $INSTALL == 1 ]] && bench_ensure_deps
PATH=$PATH:/usr/sbin
CREDPROXY_BIN=${CREDPROXY_BIN:-}
bench_build_credproxy "$BUILD"

bench_init_work
trap bench_cleanup EXIT
trap 'exit 130' INT TERM
bench_make_pki
bench_alloc_ports
bench_start_upstream
# A sparse file: reading it costs no disk I/O, so the proxy is the bottleneck.
truncate -s "${SIZE_MIB}M" "$WORK/www/1g"

declare -A URL=()
TARGETS=()
if bench_start_credproxy credproxy "$BENCH_DIR/credproxy.toml.in" "$CP_ADMIN_PORT" "$CP_ROUTE_PORT"; then
    TARGETS+=(credproxy)
    URL[credproxy]=http://127.0.0.1:$CP_ROUTE_PORT
else
    log "credproxy is not available; nothing to measure for it"
fi
if [[ $ALL == 1 ]]; then
    bench_start_nginx_proxy
    bench_start_haproxy
    TARGETS+=(nginx haproxy)
    URL[nginx]=http://127.0.0.1:$NGINX_PORT
    URL[haproxy]=http://127.0.0.1:$HAPROXY_PORT
fi
((${#TARGETS[@]} > 0)) || die "no target to measure (build credproxy, or pass --all)"

FAILED=0
RESULTS=()

# transfer TARGET KIND CURL-ARGS...: one transfer with RSS sampling.
transfer() {
    local t=$1 kind=$2 start hwm peak out sampler growth verdict
    shift 2
    local -a pids
    mapfile -t pids < <(bench_pids "$t")
    start=$(bench_status_kb VmRSS "${pids[@]}")
    bench_reset_hwm "${pids[@]}" || log "cannot reset VmHWM; peak is since start-up"
    : >"$WORK/samples"
    bench_rss_sampler "$WORK/samples" "${pids[@]}" &
    sampler=$!
    out=$(curl -sS --max-time 600 -w '%{http_code} %{size_upload} %{size_download} %{time_total}' "$@" 2>&1) ||
        out="curl failed: $out"
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    hwm=$(bench_status_kb VmHWM "${pids[@]}")
    peak=$(sort -n "$WORK/samples" | tail -n 1)
    peak=${peak:-0}
    ((hwm > peak)) && peak=$hwm
    growth=$((peak - start))
    verdict=PASS
    if ((growth >= LIMIT_MIB * 1024)); then
        verdict=FAIL
        if [[ $t == credproxy ]]; then FAILED=1; fi
    fi
    RESULTS+=("$(printf '%-10s %-14s %9.1f %9.1f %9.1f  %-4s  %s' "$t" "$kind" \
        "$(bc_mib "$start")" "$(bc_mib "$peak")" "$(bc_mib "$growth")" "$verdict" "$out")")
}

bc_mib() { awk -v kb="$1" 'BEGIN { printf "%.1f", kb / 1024 }'; }

for t in "${TARGETS[@]}"; do
    log "$t: ${SIZE_MIB} MiB upload, download, slow download ($SLOW_RATE/s)"
    transfer "$t" upload -o /dev/null -H 'Expect:' -T "$WORK/www/1g" "${URL[$t]}/upload"
    transfer "$t" download -o /dev/null "${URL[$t]}/1g"
    transfer "$t" slow-download -o /dev/null --limit-rate "$SLOW_RATE" "${URL[$t]}/1g"
done

printf '\n%-10s %-14s %9s %9s %9s  %-4s  %s\n' target transfer "start MiB" "peak MiB" "growth" "<${LIMIT_MIB}" \
    "curl: status up down seconds"
printf '%s\n' "${RESULTS[@]}"
exit "$FAILED"
