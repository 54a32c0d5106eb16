#!/usr/bin/env bash
# credproxy against nginx and HAProxy (and the upstream directly) on loopback.
#
# Starts an upstream nginx (plain HTTP and TLS with a throw-away CA), nginx
# and HAProxy configured to inject the same hard-coded credential, and
# credproxy with a static provider; then measures each case with wrk, the
# targets interleaved (direct nginx haproxy credproxy, direct nginx ...),
# and reports medians and the ratios credproxy/peer. See docs/BENCHMARKS.md.
# --baseline BIN adds a second credproxy from another binary (same config) as
# the target credproxy-base, for before/after comparisons of a change.
#
# usage: bench/run.sh [--quick] [--refresh] [--audit] [--reps N] [--duration SECS]
#                     [--cases LIST] [--no-build] [--no-install] [--keep]
#                     [--docs | --no-docs] [--serve]
#                     [--baseline BIN] [--only-credproxy]
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
usage: bench/run.sh [options]

  --quick          1 repetition, 2 s per measurement: about a minute
  --refresh        add the refresh-under-load case (credproxy only): an
                   OAuth 2 provider whose tokens live 5 s, 64 connections
                   for 30 s (12 s with --quick), against the static token
  --audit          add the audit-log case (credproxy only): 64 connections
                   against credproxy with audit_log on (credproxy-audit.toml.in),
                   interleaved with the same run without it; target >= 0.90x req/s
  --reps N         repetitions (default 3; 1 with --quick)
  --duration SECS  seconds per wrk measurement (default 10; 2 with --quick)
  --cases LIST     comma-separated subset of: lat1,c64,dl1m,upload,tls64,rss256
                   (default: all of them)
  --no-build       do not run 'cargo build --release' (use target/release/credproxy,
                   or $CREDPROXY_BIN)
  --no-install     do not apt-get install missing tools
  --keep           keep the temporary directory (configs, logs)
  --serve          start everything, print the URLs and PIDs, and wait for
                   Ctrl-C instead of measuring (for profiling by hand)
  --docs           rewrite the results section of docs/BENCHMARKS.md
                   (default for full runs; --no-docs to skip)
  --baseline BIN   also start credproxy from the binary BIN, with the same
                   configs as the credproxy under test (its own ports and
                   state dirs), as the target credproxy-base: measured
                   interleaved with the others, its CPU and RSS its own, and
                   a block comparing credproxy with it (c64 req/s and CPU per
                   request, lat1 p99; ratios of medians). Not in --refresh.
  --only-credproxy skip the direct, nginx and HAProxy targets (with
                   --baseline: a quick before/after comparison), e.g.
                   bench/run.sh --baseline OLD --only-credproxy --cases c64,lat1

Results: a table on stdout, JSON in bench/results/<date>[-quick].json.
Environment: CREDPROXY_BIN (binary to test), BENCH_CREDPROXY_LOG (CREDPROXY_LOG
for the proxy under test; default "warn", as nginx and HAProxy log nothing per request).
EOF
}

QUICK=0 REFRESH=0 AUDIT=0 BUILD=1 INSTALL=1 REPS="" DUR="" DOCS=auto SERVE=0
BASELINE_BIN="" ONLY_CP=0
CASES="lat1,c64,dl1m,upload,tls64,rss256"
while (($# > 0)); do
    case $1 in
        --quick) QUICK=1 ;;
        --refresh) REFRESH=1 ;;
        --audit) AUDIT=1 ;;
        --reps) REPS=$2; shift ;;
        --duration) DUR=$2; shift ;;
        --cases) CASES=$2; shift ;;
        --no-build) BUILD=0 ;;
        --no-install) INSTALL=0 ;;
        --keep) KEEP_WORK=1 ;;
        --serve) SERVE=1 ;;
        --docs) DOCS=1 ;;
        --no-docs) DOCS=0 ;;
        --baseline)
            (($# >= 2)) || die "--baseline takes the path of a credproxy binary"
            BASELINE_BIN=$2
            shift
            ;;
        --only-credproxy) ONLY_CP=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
    shift
done
if [[ $QUICK == 1 ]]; then
    REPS=${REPS:-1} DUR=${DUR:-2} WARM=1 REFRESH_DUR=12
else
    REPS=${REPS:-3} DUR=${DUR:-10} WARM=3 REFRESH_DUR=30
fi
[[ $DOCS == auto ]] && DOCS=$((1 - QUICK))
[[ $REPS =~ ^[1-9][0-9]*$ && $DUR =~ ^[1-9][0-9]*$ ]] || die "--reps and --duration take positive integers"
IFS=, read -r -a CASE_LIST <<<"$CASES"
for c in "${CASE_LIST[@]}"; do
    [[ $c =~ ^(lat1|c64|dl1m|upload|tls64|rss256)$ ]] || die "unknown case: $c"
done
if [[ -n $BASELINE_BIN ]]; then
    [[ $BASELINE_BIN == */* ]] || BASELINE_BIN=$(command -v "$BASELINE_BIN" || echo "$BASELINE_BIN")
    [[ -f $BASELINE_BIN && -x $BASELINE_BIN ]] || die "--baseline $BASELINE_BIN: not an executable file"
    BASELINE_BIN=$(cd "$(dirname "$BASELINE_BIN")" && pwd)/$(basename "$BASELINE_BIN")
fi

# --- targets ------------------------------------------------------------------

TARGETS=(direct nginx haproxy)     # credproxy (and credproxy-base) are appended once up
[[ $ONLY_CP == 1 ]] && TARGETS=()

# url TARGET TLS(0|1)
target_url() {
    local t=$1 tls=$2
    case $t:$tls in
        direct:0) echo "http://127.0.0.1:$UP_PORT" ;;
        direct:1) echo "https://127.0.0.1:$UP_TLS_PORT" ;;
        nginx:0) echo "http://127.0.0.1:$NGINX_PORT" ;;
        nginx:1) echo "http://127.0.0.1:$NGINX_TLS_PORT" ;;
        haproxy:0) echo "http://127.0.0.1:$HAPROXY_PORT" ;;
        haproxy:1) echo "http://127.0.0.1:$HAPROXY_TLS_PORT" ;;
        credproxy:0) echo "http://127.0.0.1:$CP_ROUTE_PORT" ;;
        credproxy:1) echo "http://127.0.0.1:$CPT_ROUTE_PORT" ;;
        credproxy-refresh:0) echo "http://127.0.0.1:$CPR_ROUTE_PORT" ;;
        credproxy-audit:0) echo "http://127.0.0.1:$CPA_ROUTE_PORT" ;;
        credproxy-base:0) echo "http://127.0.0.1:$CPB_ROUTE_PORT" ;;
        credproxy-base:1) echo "http://127.0.0.1:$CPBT_ROUTE_PORT" ;;
        *) die "no url for $t tls=$tls" ;;
    esac
}

# The process whose CPU and memory count for TARGET ("" for direct).
target_proc() {
    local t=$1 tls=$2
    case $t:$tls in
        direct:*) echo "" ;;
        credproxy:1) echo credproxy-tls ;;
        credproxy-base:1) echo credproxy-base-tls ;;
        *) echo "$t" ;;
    esac
}

# Whether TARGET has its TLS-upstream variant running (tls64).
has_tls() {
    case $1 in
        credproxy) [[ $CPT_OK == 1 ]] ;;
        credproxy-base) [[ $CPBT_OK == 1 ]] ;;
        *) return 0 ;;
    esac
}

auth_args() { # prints wrk/curl -H arguments for the direct target, one per line
    if [[ $1 == direct ]]; then
        printf '%s\n' -H "Authorization: Bearer $BENCH_TOKEN" -H "x-bv-org-id: $ORG_ID"
    fi
}

RAW=""

# measure CASE TARGET REP TLS CONNS THREADS SECS PATH
measure() {
    local case=$1 t=$2 rep=$3 tls=$4 conns=$5 threads=$6 secs=$7 path=$8
    local url proc out json c0 c1 u0 u1 hwm="null" rss="null" peak="null" sampler="" cpu="null"
    local -a pids=() upids hdr=()
    url=$(target_url "$t" "$tls")$path
    proc=$(target_proc "$t" "$tls")
    mapfile -t hdr < <(auth_args "$t")
    mapfile -t upids < <(bench_pids upstream)
    if [[ -n $proc ]]; then
        mapfile -t pids < <(bench_pids "$proc")
    fi
    if [[ $case == rss256 && -n $proc ]]; then
        bench_reset_hwm "${pids[@]}" || log "cannot reset VmHWM of $proc; peak includes earlier cases"
        bench_rss_sampler "$WORK/rss-$proc.samples" "${pids[@]}" &
        sampler=$!
    fi
    u0=$(bench_cpu_ticks "${upids[@]}")
    if [[ -n $proc ]]; then c0=$(bench_cpu_ticks "${pids[@]}"); fi
    out=$(wrk -t "$threads" -c "$conns" -d "${secs}s" --timeout 10s \
        -s "$BENCH_DIR/wrk-report.lua" "${hdr[@]}" "$url" 2>&1) || {
        log "wrk failed for $case/$t: $out"
        return 0
    }
    u1=$(bench_cpu_ticks "${upids[@]}")
    if [[ -n $proc ]]; then
        c1=$(bench_cpu_ticks "${pids[@]}")
        cpu=$((c1 - c0))
    fi
    if [[ -n $sampler ]]; then
        kill "$sampler" 2>/dev/null || true
        wait "$sampler" 2>/dev/null || true
        hwm=$(bench_status_kb VmHWM "${pids[@]}")
        rss=$(bench_status_kb VmRSS "${pids[@]}")
        peak=$(sort -n "$WORK/rss-$proc.samples" | tail -n 1)
        rm -f "$WORK/rss-$proc.samples"
    fi
    json=$(sed -n 's/^WRKJSON //p' <<<"$out")
    [[ -n $json ]] || { log "no wrk summary for $case/$t: $out"; return 0; }
    printf '{"case":"%s","target":"%s","rep":%d,"conns":%d,"threads":%d,"wrk":%s,"proxy_cpu_ticks":%s,"upstream_cpu_ticks":%d,"clk_tck":%d,"hwm_kb":%s,"rss_after_kb":%s,"rss_sampled_peak_kb":%s}\n' \
        "$case" "$t" "$rep" "$conns" "$threads" "$json" "$cpu" "$((u1 - u0))" "$CLK_TCK" \
        "$hwm" "$rss" "${peak:-null}" >>"$RAW"
    python3 -B "$BENCH_DIR/report.py" --line "$(tail -n 1 "$RAW")" >&2
}

# upload TARGET REP: one 64 MiB PUT through the target, timed by curl.
measure_upload() {
    local t=$1 rep=$2 url proc out code bytes secs c0 c1 cpu="null"
    local -a pids=() hdr=()
    url=$(target_url "$t" 0)/upload
    proc=$(target_proc "$t" 0)
    mapfile -t hdr < <(auth_args "$t")
    if [[ -n $proc ]]; then
        mapfile -t pids < <(bench_pids "$proc")
        c0=$(bench_cpu_ticks "${pids[@]}")
    fi
    out=$(curl -sS -o /dev/null -H 'Expect:' "${hdr[@]}" -T "$WORK/upload-64m.bin" \
        -w '%{http_code} %{size_upload} %{time_total}' --max-time 120 "$url" 2>&1) || {
        log "upload through $t failed: $out"
        return 0
    }
    if [[ -n $proc ]]; then
        c1=$(bench_cpu_ticks "${pids[@]}")
        cpu=$((c1 - c0))
    fi
    read -r code bytes secs <<<"$out"
    printf '{"case":"upload","target":"%s","rep":%d,"upload":{"status":%d,"bytes":%d,"expected_bytes":%d,"seconds":%s},"proxy_cpu_ticks":%s,"clk_tck":%d}\n' \
        "$t" "$rep" "$code" "$bytes" "$((64 << 20))" "$secs" "$cpu" "$CLK_TCK" >>"$RAW"
    python3 -B "$BENCH_DIR/report.py" --line "$(tail -n 1 "$RAW")" >&2
}

run_case() {
    local case=$1 rep=$2 t
    for t in "${TARGETS[@]}"; do
        case $case in
            lat1) measure lat1 "$t" "$rep" 0 1 1 "$DUR" /small ;;
            c64) measure c64 "$t" "$rep" 0 64 2 "$DUR" /small ;;
            dl1m) measure dl1m "$t" "$rep" 0 8 2 "$DUR" /1m ;;
            upload) measure_upload "$t" "$rep" ;;
            tls64)
                if has_tls "$t"; then
                    measure tls64 "$t" "$rep" 1 64 2 "$DUR" /small
                fi
                ;;
            rss256) measure rss256 "$t" "$rep" 0 256 2 "$DUR" /small ;;
        esac
    done
}

# Refresh under load (issue 7): the same 64-connection run against credproxy
# with the static token and against credproxy with an OAuth 2 provider whose
# token endpoint issues 5-second tokens; interleaved, medians. Target: zero
# non-2xx answers and p99 within 1.5x of the static run.
#
# The token endpoint is the upstream nginx's /oauth/token (see
# nginx-upstream.conf.in), so the case needs nothing from credproxy beyond
# the documented `oauth2` provider keys.
# TODO(issue 7): once `credproxy demo --token-lifetime 5s --listen ADDR`
# exists, add a variant that runs against the demo's own token server, to
# check the demo too; keep the nginx token endpoint as the measured case so
# the demo's in-process API does not share the proxy's runtime.
run_refresh() {
    local rep before after
    if [[ $CP_OK != 1 || $CPR_OK != 1 ]]; then
        log "refresh: skipped (needs credproxy with the static and the oauth2 provider running)"
        return 0
    fi
    for ((rep = 1; rep <= REPS; rep++)); do
        measure refresh-static credproxy "$rep" 0 64 2 "$REFRESH_DUR" /small
        before=$(wc -l <"$WORK/token-requests.log" 2>/dev/null || echo 0)
        measure refresh credproxy-refresh "$rep" 0 64 2 "$REFRESH_DUR" /small
        after=$(wc -l <"$WORK/token-requests.log" 2>/dev/null || echo 0)
        printf '{"case":"refresh-tokens","target":"credproxy-refresh","rep":%d,"token_requests":%d,"seconds":%d}\n' \
            "$rep" "$((after - before))" "$REFRESH_DUR" >>"$RAW"
        log "refresh rep $rep: $((after - before)) token requests in ${REFRESH_DUR}s"
    done
}

# The audit log's cost (issue 19): the 64-connection run against credproxy
# with and without audit_log, interleaved, medians; the file is emptied
# between repetitions so the disk does not fill.
run_audit() {
    local rep
    if [[ $CP_OK != 1 || $CPA_OK != 1 ]]; then
        log "audit: skipped (needs credproxy and credproxy-audit running)"
        return 0
    fi
    for ((rep = 1; rep <= REPS; rep++)); do
        measure audit-off credproxy "$rep" 0 64 2 "$DUR" /small
        measure audit credproxy-audit "$rep" 0 64 2 "$DUR" /small
        : >"$WORK/logs/audit.jsonl"
    done
}

# start_credproxy_audit: credproxy-audit.toml.in on ports of its own (CPA_*),
# handed to bench_render under the CP_* names as start_credproxy_base does.
start_credproxy_audit() {
    read -r CPA_PORT CPA_ADMIN_PORT CPA_ROUTE_PORT <<<"$(bench_free_ports 3)"
    # shellcheck disable=SC2034
    local CP_PORT=$CPA_PORT CP_ADMIN_PORT=$CPA_ADMIN_PORT CP_ROUTE_PORT=$CPA_ROUTE_PORT
    mkdir -p "$WORK/state-audit" "$WORK/logs"
    chmod 0700 "$WORK/state-audit"
    bench_start_credproxy credproxy-audit "$BENCH_DIR/credproxy-audit.toml.in" "$CPA_ADMIN_PORT" "$CPA_ROUTE_PORT"
}

# sanity TARGET TLS: the upstream must see exactly the injected credential.
sanity() {
    local t=$1 tls=$2 got want="Bearer $BENCH_TOKEN|$ORG_ID" url
    local -a hdr=()
    mapfile -t hdr < <(auth_args "$t")
    url=$(target_url "$t" "$tls")
    got=$(curl -sS -k --max-time 5 "${hdr[@]}" "$url/echo" 2>&1) || true
    if [[ $got != "$want" ]]; then
        log "sanity: $t (tls=$tls) /echo answered '$got', wanted '$want'"
        return 1
    fi
    got=$(curl -sS -k --max-time 5 -o /dev/null -w '%{http_code} %{size_download}' "${hdr[@]}" "$url/small" 2>&1) || true
    if [[ $got != "200 20" ]]; then
        log "sanity: $t (tls=$tls) /small answered '$got', wanted '200 20'"
        return 1
    fi
}

# start_credproxy_base NAME TEMPLATE: the --baseline binary with the same
# template as the credproxy under test; only its ports (CPB_* for CP_*,
# CPBT_* for CPT_*) and its state directory (state-base-*) differ.
start_credproxy_base() {
    local name=$1 tmpl=$2
    local CREDPROXY_BIN=$BASELINE_BIN
    # bench_render reads these by name: dynamic scope hands it the base ports.
    # shellcheck disable=SC2034
    local CP_PORT=$CPB_PORT CP_ADMIN_PORT=$CPB_ADMIN_PORT CP_ROUTE_PORT=$CPB_ROUTE_PORT
    # shellcheck disable=SC2034
    local CPT_PORT=$CPBT_PORT CPT_ADMIN_PORT=$CPBT_ADMIN_PORT CPT_ROUTE_PORT=$CPBT_ROUTE_PORT
    local admin=$CP_ADMIN_PORT route=$CP_ROUTE_PORT
    if [[ $name == *-tls ]]; then admin=$CPT_ADMIN_PORT route=$CPT_ROUTE_PORT; fi
    sed 's|@WORK@/state-|@WORK@/state-base-|g' "$tmpl" >"$WORK/conf/$name.toml.in"
    grep -q '@WORK@/state-base-' "$WORK/conf/$name.toml.in" ||
        die "$tmpl: no state_dir under @WORK@/state-; cannot give $name its own"
    mkdir -p "$WORK/state-base-plain" "$WORK/state-base-tls"
    bench_start_credproxy "$name" "$WORK/conf/$name.toml.in" "$admin" "$route"
}

# --- main ---------------------------------------------------------------------

[[ $INSTALL == 1 ]] && bench_ensure_deps
PATH=$PATH:/usr/sbin
for cmd in nginx haproxy wrk openssl curl python3; do
    [[ $cmd == haproxy && $ONLY_CP == 1 ]] && continue
    command -v "$cmd" >/dev/null || die "$cmd is missing (run without --no-install)"
done
CREDPROXY_BIN=${CREDPROXY_BIN:-}
bench_build_credproxy "$BUILD"

bench_init_work
trap bench_cleanup EXIT
trap 'exit 130' INT TERM
RAW=$WORK/raw.jsonl
: >"$RAW"
bench_make_pki
[[ -n $BASELINE_BIN ]] && BENCH_BASE_PORTS=1
bench_alloc_ports
head -c $((64 << 20)) /dev/urandom >"$WORK/upload-64m.bin"

log "upstream nginx on 127.0.0.1:$UP_PORT (http) and :$UP_TLS_PORT (https)"
bench_start_upstream
if [[ $ONLY_CP == 0 ]]; then
    bench_start_nginx_proxy
    bench_start_haproxy
fi

CP_OK=0 CPT_OK=0 CPR_OK=0
if bench_start_credproxy credproxy "$BENCH_DIR/credproxy.toml.in" "$CP_ADMIN_PORT" "$CP_ROUTE_PORT"; then
    if sanity credproxy 0; then
        CP_OK=1
        TARGETS+=(credproxy)
    else
        log "credproxy: skipped: it does not inject the credential as expected"
    fi
fi
if [[ $CP_OK == 1 ]] &&
    bench_start_credproxy credproxy-tls "$BENCH_DIR/credproxy-tls.toml.in" "$CPT_ADMIN_PORT" "$CPT_ROUTE_PORT"; then
    if sanity credproxy 1; then CPT_OK=1; else log "credproxy-tls: skipped (see above)"; fi
fi
if [[ $REFRESH == 1 && $CP_OK == 1 ]] &&
    bench_start_credproxy credproxy-refresh "$BENCH_DIR/credproxy-refresh.toml.in" "$CPR_ADMIN_PORT" "$CPR_ROUTE_PORT"; then
    if curl -sf --max-time 5 -o /dev/null "$(target_url credproxy-refresh 0)/small"; then
        CPR_OK=1
    else
        log "credproxy-refresh: skipped: /small through it did not answer 2xx"
    fi
fi

CPA_OK=0
if [[ $AUDIT == 1 && $CP_OK == 1 ]] && start_credproxy_audit; then
    # The writer thread appends just after the answers went out: give it a moment.
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        [[ -s $WORK/logs/audit.jsonl ]] && break
        sleep 0.1
    done
    if sanity credproxy-audit 0 && [[ -s $WORK/logs/audit.jsonl ]]; then
        CPA_OK=1
    else
        log "credproxy-audit: skipped: no injected credential, or nothing in its audit log"
    fi
fi

CPB_OK=0 CPBT_OK=0
if [[ -n $BASELINE_BIN ]]; then
    log "credproxy-base: $BASELINE_BIN ($("$BASELINE_BIN" --version 2>&1 | head -n 1))"
    if start_credproxy_base credproxy-base "$BENCH_DIR/credproxy.toml.in"; then
        if sanity credproxy-base 0; then
            CPB_OK=1
            TARGETS+=(credproxy-base)
        else
            log "credproxy-base: skipped: it does not inject the credential as expected"
        fi
    fi
    if [[ $CPB_OK == 1 ]] && start_credproxy_base credproxy-base-tls "$BENCH_DIR/credproxy-tls.toml.in"; then
        if sanity credproxy-base 1; then CPBT_OK=1; else log "credproxy-base-tls: skipped (see above)"; fi
    fi
fi

if [[ $ONLY_CP == 0 ]]; then
    for t in direct nginx haproxy; do
        sanity "$t" 0 || die "$t does not pass the credential through; fix the bench configs"
        sanity "$t" 1 || die "$t (TLS upstream) does not pass the credential through"
    done
fi
((${#TARGETS[@]} > 0)) || die "nothing to measure: no credproxy started (--only-credproxy)"

if [[ $SERVE == 1 ]]; then
    echo "Serving until Ctrl-C (work directory $WORK):"
    for t in "${TARGETS[@]}"; do
        printf '  %-10s %-32s %-32s pid %s\n' "$t" "$(target_url "$t" 0)/small" \
            "$(target_url "$t" 1)/small" "$(bench_pids "$(target_proc "$t" 0 | sed 's/^$/upstream/')" | paste -sd,)"
    done
    if [[ $CPA_OK == 1 ]]; then
        printf '  %-10s %-32s (audit log: %s)\n' credproxy-audit "$(target_url credproxy-audit 0)/small" \
            "$WORK/logs/audit.jsonl"
    fi
    echo "  direct needs: -H 'Authorization: Bearer $BENCH_TOKEN' -H 'x-bv-org-id: $ORG_ID'"
    # wait (not a foreground sleep) so SIGINT/SIGTERM run the traps at once.
    sleep infinity &
    PIDS+=("$!")
    wait "$!" || true
    exit 0
fi

# Idle RSS: after start-up and the sanity requests, before any load.
sleep 1
IDLE_JSON="{"
for t in "${TARGETS[@]}"; do
    [[ $t == direct ]] && continue
    mapfile -t pids < <(bench_pids "$t")
    IDLE_JSON+="\"$t\":$(bench_status_kb VmRSS "${pids[@]}"),"
done
IDLE_JSON="${IDLE_JSON%,}}"
printf '{"case":"idle","rss_kb":%s}\n' "$IDLE_JSON" >>"$RAW"
log "idle RSS (kB): $IDLE_JSON"

log "warm-up: ${WARM}s at 64 connections per target"
for t in "${TARGETS[@]}"; do
    hdr=()
    mapfile -t hdr < <(auth_args "$t")
    wrk -t 2 -c 64 -d "${WARM}s" "${hdr[@]}" "$(target_url "$t" 0)/small" >/dev/null
    if has_tls "$t"; then
        wrk -t 2 -c 64 -d "${WARM}s" "${hdr[@]}" "$(target_url "$t" 1)/small" >/dev/null
    fi
done

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "targets: ${TARGETS[*]}; cases: ${CASE_LIST[*]}; $REPS repetition(s) of ${DUR}s; load average $LOAD_START"
for ((rep = 1; rep <= REPS; rep++)); do
    for c in "${CASE_LIST[@]}"; do
        run_case "$c" "$rep"
    done
done
[[ $REFRESH == 1 ]] && run_refresh
[[ $AUDIT == 1 ]] && run_audit

STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
SUFFIX=""
[[ $QUICK == 1 ]] && SUFFIX="-quick"
OUT=$BENCH_DIR/results/$STAMP$SUFFIX.json
mkdir -p "$BENCH_DIR/results"
[[ $CP_OK == 1 ]] || CREDPROXY_BIN=""
if [[ -n $BASELINE_BIN ]]; then
    base_for_json=""
    [[ $CPB_OK == 1 ]] && base_for_json=$BASELINE_BIN
    bench_machine_json "$base_for_json" >"$WORK/machine.json"
else
    bench_machine_json >"$WORK/machine.json"
fi
# Only with the new options, so a default run's JSON keeps its keys.
extra_params=""
if [[ -n $BASELINE_BIN ]]; then
    extra_params+=",\"baseline\":$(python3 -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$BASELINE_BIN")"
fi
[[ $ONLY_CP == 1 ]] && extra_params+=",\"only_credproxy\":true"
report_args=(--raw "$RAW" --machine "$WORK/machine.json" --out "$OUT"
    --params "{\"quick\":$([[ $QUICK == 1 ]] && echo true || echo false),\"reps\":$REPS,\"duration_s\":$DUR,\"refresh_duration_s\":$REFRESH_DUR,\"token_lifetime_s\":$TOKEN_LIFETIME,\"credproxy_log\":\"${BENCH_CREDPROXY_LOG:-warn}\",\"loadavg_start\":\"$LOAD_START\",\"loadavg_end\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"$extra_params}")
[[ $DOCS == 1 ]] && report_args+=(--docs "$REPO_DIR/docs/BENCHMARKS.md")
python3 -B "$BENCH_DIR/report.py" "${report_args[@]}"
log "JSON: ${OUT#"$REPO_DIR"/}"
