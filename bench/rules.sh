#!/usr/bin/env bash
# Rules per provider (issue 19): c64 req/s through credproxy with 20 allow/deny
# rules on the provider against the same credproxy without rules.
#
# Starts the upstream nginx (bench/lib.sh), credproxy with bench/credproxy.toml.in
# (no rules) and with bench/credproxy-rules.toml.in (20 rules; the measured
# GET /small passes all ten deny rules and matches the last allow rule), checks
# that both inject the credential and that the rules refuse what they should,
# then runs run.sh's c64 case (wrk, 64 connections, 2 threads, /small) on the
# two, interleaved, and reports the medians and the ratio rules/plain.
# Target: >= 0.97.
#
# usage: bench/rules.sh [--reps N] [--duration SECS] [--no-build] [--no-install]
#                       [--keep] [--dry-run]
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
usage: bench/rules.sh [options]

  --reps N         repetitions (default 5), each measuring both, interleaved
  --duration SECS  seconds per wrk measurement (default 10)
  --no-build       do not run 'cargo build --release' (use target/release/credproxy,
                   or $CREDPROXY_BIN)
  --no-install     do not apt-get install missing tools
  --keep           keep the temporary directory (configs, logs)
  --dry-run        start everything and run the checks, measure nothing (a
                   debug build will do: CREDPROXY_BIN=target/debug/credproxy)

Results: a table on stdout, the raw records in bench/results/<date>-rules.jsonl.
EOF
}

REPS=5 DUR=10 BUILD=1 INSTALL=1 DRY=0
while (($# > 0)); do
    case $1 in
        --reps) REPS=$2; shift ;;
        --duration) DUR=$2; shift ;;
        --no-build) BUILD=0 ;;
        --no-install) INSTALL=0 ;;
        --keep) KEEP_WORK=1 ;;
        --dry-run) DRY=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
    shift
done
[[ $REPS =~ ^[1-9][0-9]*$ && $DUR =~ ^[1-9][0-9]*$ ]] || die "--reps and --duration take positive integers"

[[ $INSTALL == 1 ]] && bench_ensure_deps
PATH=$PATH:/usr/sbin
needed=(nginx openssl curl python3)
[[ $DRY == 0 ]] && needed+=(wrk)
for cmd in "${needed[@]}"; do
    command -v "$cmd" >/dev/null || die "$cmd is missing (run without --no-install)"
done
CREDPROXY_BIN=${CREDPROXY_BIN:-}
bench_build_credproxy "$BUILD"
[[ -n $CREDPROXY_BIN ]] || die "no credproxy binary to measure"

bench_init_work
trap bench_cleanup EXIT
trap 'exit 130' INT TERM
bench_make_pki
bench_alloc_ports
mkdir -p "$WORK/state-rules"
log "upstream nginx on 127.0.0.1:$UP_PORT"
bench_start_upstream

# The no-rules credproxy on the CP_* ports, the one with rules on the CPR_*
# ports (the refresh case's, unused here).
bench_start_credproxy plain "$BENCH_DIR/credproxy.toml.in" "$CP_ADMIN_PORT" "$CP_ROUTE_PORT" ||
    die "credproxy (no rules) did not start"
bench_start_credproxy rules "$BENCH_DIR/credproxy-rules.toml.in" "$CPR_ADMIN_PORT" "$CPR_ROUTE_PORT" ||
    die "credproxy (20 rules) did not start"
declare -A URL=([plain]="http://127.0.0.1:$CP_ROUTE_PORT" [rules]="http://127.0.0.1:$CPR_ROUTE_PORT")

# expect TARGET METHOD PATH STATUS: the answer's status, or die.
expect() {
    local got
    got=$(curl -sS --path-as-is --max-time 5 -o /dev/null -w '%{http_code}' -X "$2" "${URL[$1]}$3" 2>&1) || true
    [[ $got == "$4" ]] || die "$1: $2 $3 answered $got, wanted $4"
}
for t in plain rules; do
    got=$(curl -sS --max-time 5 "${URL[$t]}/echo" 2>&1) || true
    [[ $got == "Bearer $BENCH_TOKEN|$ORG_ID" ]] || die "$t: /echo answered '$got'"
    expect "$t" GET /small 200
done
expect rules GET /admin/x 403
expect rules DELETE /small 403
expect rules GET /a/b/collaborators/c 403
expect rules GET /not-allowed 403
expect rules GET /repos/acme/../small 400
expect plain GET /not-allowed 404
log "both credproxies inject the credential; the rules refuse what they should"

if [[ $DRY == 1 ]]; then
    log "dry run: would measure c64 ($REPS x ${DUR}s each, interleaved) on: ${URL[plain]}/small ${URL[rules]}/small"
    exit 0
fi

RAW=$WORK/raw.jsonl
: >"$RAW"
log "warm-up: 3s at 64 connections each"
for t in plain rules; do
    wrk -t 2 -c 64 -d 3s "${URL[$t]}/small" >/dev/null
done
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
for ((rep = 1; rep <= REPS; rep++)); do
    for t in plain rules; do
        mapfile -t pids < <(bench_pids "$t")
        c0=$(bench_cpu_ticks "${pids[@]}")
        out=$(wrk -t 2 -c 64 -d "${DUR}s" --timeout 10s -s "$BENCH_DIR/wrk-report.lua" \
            "${URL[$t]}/small" 2>&1) || die "wrk failed for $t: $out"
        c1=$(bench_cpu_ticks "${pids[@]}")
        json=$(sed -n 's/^WRKJSON //p' <<<"$out")
        [[ -n $json ]] || die "no wrk summary for $t: $out"
        printf '{"case":"c64","target":"%s","rep":%d,"wrk":%s,"proxy_cpu_ticks":%d,"clk_tck":%d}\n' \
            "$t" "$rep" "$json" "$((c1 - c0))" "$CLK_TCK" >>"$RAW"
        log "rep $rep $t: $(python3 -c 'import json, sys
w = json.loads(sys.argv[1])
print("{:,.0f} req/s".format(w["requests"] / w["duration_us"] * 1e6))' "$json")"
    done
done

mkdir -p "$BENCH_DIR/results"
OUT=$BENCH_DIR/results/$(date -u +%Y-%m-%dT%H%M%SZ)-rules.jsonl
cp "$RAW" "$OUT"
python3 - "$RAW" "$LOAD_START" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import json, statistics, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
def rps(r):
    w = r["wrk"]
    return w["requests"] / w["duration_us"] * 1e6
def cpu(r):
    w = r["wrk"]
    return r["proxy_cpu_ticks"] / r["clk_tck"] / w["requests"] * 1e5
med = {}
for t in ("plain", "rules"):
    rs = [r for r in recs if r["target"] == t]
    med[t] = (statistics.median(map(rps, rs)), statistics.median(map(cpu, rs)),
              sum(sum(r["wrk"]["errors"].values()) for r in rs))
print(f"load average {sys.argv[2]} -> {sys.argv[3]}")
print(f"{'c64, GET /small':<22}{'req/s':>12}{'CPU s/100k':>12}{'errors':>13}")
for t, label in (("plain", "no rules"), ("rules", "20 rules")):
    r, c, bad = med[t]
    print(f"{label:<22}{r:>12,.0f}{c:>12.2f}{bad:>13}")
ratio = med["rules"][0] / med["plain"][0]
print(f"ratio rules/plain: {ratio:.3f} (target >= 0.97: {'met' if ratio >= 0.97 else 'NOT met'})")
PY
log "raw records: ${OUT#"$REPO_DIR"/}"
