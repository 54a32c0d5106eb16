#!/usr/bin/env bash
# The shared Redis token store (issue 18 item 9), on loopback.
#
# 1. store: c64 req/s through one credproxy with the Redis store against
#    the same with the file store (an OAuth 2 provider with tokens from the
#    upstream nginx's /oauth/token), interleaved, medians, and the ratio
#    (target: Redis >= 0.97x file; the request path never touches Redis).
# 2. fleet: N instances (default 12) sharing one Redis and @TOKEN_LIFETIME@ s
#    tokens (default 5 s), each under load at once for the run: every answer
#    must be 2xx, and the fleet makes about one token call per token
#    lifetime in total (N independent instances would make N times as many).
#
# usage: bench/fleet.sh [--quick] [--reps N] [--duration SECS]
#                       [--instances N] [--cases store,fleet] [--check]
#                       [--no-build] [--no-install] [--keep]
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF2'
usage: bench/fleet.sh [options]

  --quick          1 repetition, 3 s per c64 measurement, 12 s of fleet load
  --reps N         repetitions of the store case (default 3; 1 with --quick)
  --duration SECS  seconds per c64 measurement (default 10; 3 with --quick);
                   the fleet case runs 30 s (12 s with --quick)
  --instances N    instances in the fleet case (default 12)
  --cases LIST     comma-separated subset of: store,fleet (default both)
  --check          start everything, send one request through each
                   instance, print what would be measured, and stop: a
                   check that the benchmark starts, not a measurement
  --no-build       do not run 'cargo build --release' (use
                   target/release/credproxy, or $CREDPROXY_BIN)
  --no-install     do not apt-get install missing tools (redis-server too)
  --keep           keep the temporary directory (configs, logs)

Results: a summary on stdout, JSON lines in bench/results/<date>-fleet.jsonl
(not with --check). Run it on a quiet machine: the two stores are compared
against each other, on the same cores.
Environment: CREDPROXY_BIN, BENCH_CREDPROXY_LOG (as bench/run.sh),
TOKEN_LIFETIME (seconds, default 5).
EOF2
}

QUICK=0 BUILD=1 INSTALL=1 REPS="" DUR="" FLEET_DUR="" INSTANCES=12 CHECK=0
CASES="store,fleet"
while (($# > 0)); do
    case $1 in
        --quick) QUICK=1 ;;
        --reps) REPS=$2; shift ;;
        --duration) DUR=$2; shift ;;
        --instances) INSTANCES=$2; shift ;;
        --cases) CASES=$2; shift ;;
        --check) CHECK=1 ;;
        --no-build) BUILD=0 ;;
        --no-install) INSTALL=0 ;;
        --keep) KEEP_WORK=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
    shift
done
if [[ $QUICK == 1 ]]; then
    REPS=${REPS:-1} DUR=${DUR:-3} FLEET_DUR=12
else
    REPS=${REPS:-3} DUR=${DUR:-10} FLEET_DUR=30
fi
[[ $INSTANCES =~ ^[0-9]+$ && $INSTANCES -ge 1 ]] || die "--instances takes a number >= 1"
has_case() { [[ ",$CASES," == *",$1,"* ]]; }

# 32 bytes, base64; not a secret: the store lives and dies with the run.
BENCH_STORE_KEY=$(head -c 32 /dev/urandom | base64)
export BENCH_STORE_KEY

# fleet_start NAME STORE: one credproxy with the file store (STORE=file) or
# the Redis store (STORE=redis); its route port in ROUTE_OF[NAME].
declare -A ROUTE_OF=()
fleet_start() {
    local name=$1 store=$2 ports
    read -r -a ports <<<"$(bench_free_ports 3)"
    mkdir -p "$WORK/state-$name"
    chmod 0700 "$WORK/state-$name"
    sed -e "s|@FL_PORT@|${ports[0]}|g" -e "s|@FL_ADMIN_PORT@|${ports[1]}|g" \
        -e "s|@FL_ROUTE_PORT@|${ports[2]}|g" -e "s|@FL_STATE@|$WORK/state-$name|g" \
        "$BENCH_DIR/credproxy-store.toml.in" >"$WORK/conf/$name.toml.in"
    if [[ $store == redis ]]; then
        sed -e "s|@REDIS_PORT@|$REDIS_PORT|g" "$BENCH_DIR/store-redis.toml.in" \
            >>"$WORK/conf/$name.toml.in"
    fi
    bench_start_credproxy "$name" "$WORK/conf/$name.toml.in" "${ports[1]}" "${ports[2]}" || return 1
    ROUTE_OF[$name]=${ports[2]}
    curl -sf --max-time 5 -o /dev/null "http://127.0.0.1:${ports[2]}/small" || {
        log "$name: /small through it did not answer 2xx"
        return 1
    }
}

token_requests() { wc -l <"$WORK/token-requests.log" 2>/dev/null || echo 0; }

# wrk_json NAME CONNS THREADS SECS: wrk's summary (one JSON object) for /small
# through instance NAME.
wrk_json() {
    local out
    out=$(wrk -t "$3" -c "$2" -d "${4}s" --timeout 10s -s "$BENCH_DIR/wrk-report.lua" \
        "http://127.0.0.1:${ROUTE_OF[$1]}/small" 2>&1) || { log "wrk failed for $1: $out"; return 1; }
    sed -n 's/^WRKJSON //p' <<<"$out"
}

run_store() {
    local rep t json
    for ((rep = 1; rep <= REPS; rep++)); do
        for t in store-file store-redis; do
            json=$(wrk_json "$t" 64 2 "$DUR") || continue
            printf '{"case":"c64","target":"%s","rep":%d,"wrk":%s}\n' "$t" "$rep" "$json" >>"$RAW"
            log "c64 $t rep $rep: $(python3 -c 'import json,sys; w=json.loads(sys.argv[1]); print("%.0f req/s, p99 %d us, non-2xx %d" % (w["requests"]/w["duration_us"]*1e6, w["latency_us"]["p99"], w["errors"]["status"]))' "$json")"
        done
    done
}

run_fleet() {
    local i before after pids=() f
    before=$(token_requests)
    for ((i = 0; i < INSTANCES; i++)); do
        # 64 connections over the fleet, at least 2 each.
        wrk_json "fleet-$i" $(((64 + INSTANCES - 1) / INSTANCES < 2 ? 2 : (64 + INSTANCES - 1) / INSTANCES)) 1 \
            "$FLEET_DUR" >"$WORK/fleet-$i.json" &
        pids+=("$!")
    done
    for f in "${pids[@]}"; do wait "$f" || true; done
    after=$(token_requests)
    python3 - "$WORK" "$INSTANCES" "$FLEET_DUR" "$TOKEN_LIFETIME" "$((after - before))" >>"$RAW" <<'PY'
import json, sys
work, n, secs, lifetime, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
total = {"requests": 0, "non_2xx": 0, "socket_errors": 0, "p99_us_max": 0}
for i in range(n):
    try:
        w = json.loads(open(f"{work}/fleet-{i}.json").read() or "null")
    except (OSError, ValueError):
        w = None
    if not w:
        total["socket_errors"] += 1  # a wrk that did not report counts against the run
        continue
    e = w["errors"]
    total["requests"] += w["requests"]
    total["non_2xx"] += e["status"]
    total["socket_errors"] += e["connect"] + e["read"] + e["write"] + e["timeout"]
    total["p99_us_max"] = max(total["p99_us_max"], w["latency_us"]["p99"])
print(json.dumps({"case": "fleet", "instances": n, "seconds": secs, "token_lifetime_s": lifetime,
                  "token_requests": calls, **total}))
PY
    log "fleet: $(tail -n 1 "$RAW")"
}

# --- main ---------------------------------------------------------------------

if [[ $INSTALL == 1 ]]; then
    bench_ensure_deps
    if ! command -v redis-server >/dev/null 2>&1; then
        [[ $(id -u) -eq 0 ]] || die "redis-server is missing and not root: apt-get install redis-server"
        log "installing: redis-server"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
        command -v service >/dev/null 2>&1 && { service redis-server stop >/dev/null 2>&1 || true; }
    fi
fi
PATH=$PATH:/usr/sbin
for cmd in nginx wrk openssl curl python3 redis-server; do
    [[ $cmd == wrk && $CHECK == 1 ]] && continue
    command -v "$cmd" >/dev/null || die "$cmd is missing (run without --no-install)"
done
CREDPROXY_BIN=${CREDPROXY_BIN:-}
bench_build_credproxy "$BUILD"
[[ -n $CREDPROXY_BIN ]] || die "no credproxy binary (see above)"

bench_init_work
trap bench_cleanup EXIT
trap 'exit 130' INT TERM
RAW=$WORK/raw.jsonl
: >"$RAW"
bench_make_pki
bench_alloc_ports
read -r REDIS_PORT <<<"$(bench_free_ports 1)"

log "upstream nginx on 127.0.0.1:$UP_PORT (http) and :$UP_TLS_PORT (https, /oauth/token: ${TOKEN_LIFETIME} s tokens)"
bench_start_upstream
bench_start redis "$WORK/logs/redis.log" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
    --save "" --appendonly no
for _ in $(seq 100); do bench_tcp_open "$REDIS_PORT" && break; sleep 0.1; done
bench_tcp_open "$REDIS_PORT" || die "redis-server did not start: $(cat "$WORK/logs/redis.log")"
log "redis-server on 127.0.0.1:$REDIS_PORT"

if has_case store; then
    fleet_start store-file file || die "credproxy with the file store did not start"
    fleet_start store-redis redis || die "credproxy with the Redis store did not start"
fi
if has_case fleet; then
    for ((i = 0; i < INSTANCES; i++)); do
        fleet_start "fleet-$i" redis || die "fleet instance $i did not start"
    done
fi
if [[ $CHECK == 1 ]]; then
    log "check: everything started and answered 2xx (${#ROUTE_OF[@]} instances); would measure:"
    has_case store && log "  c64 store-file vs store-redis: $REPS x ${DUR}s each, interleaved"
    has_case fleet && log "  fleet: $INSTANCES instances, ${FLEET_DUR}s of load, ${TOKEN_LIFETIME}s tokens"
    exit 0
fi

has_case store && run_store
has_case fleet && run_fleet

mkdir -p "$BENCH_DIR/results"
out="$BENCH_DIR/results/$(date -u +%Y-%m-%dT%H%M%SZ)$([[ $QUICK == 1 ]] && echo -quick || true)-fleet.jsonl"
cp "$RAW" "$out"
python3 - "$RAW" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rps = {}
for r in rows:
    if r["case"] == "c64":
        w = r["wrk"]
        rps.setdefault(r["target"], []).append(w["requests"] / w["duration_us"] * 1e6)
if rps:
    for t, v in sorted(rps.items()):
        print(f"c64 {t:12} median {statistics.median(v):9.0f} req/s over {len(v)} runs")
    if "store-file" in rps and "store-redis" in rps:
        ratio = statistics.median(rps["store-redis"]) / statistics.median(rps["store-file"])
        print(f"c64 redis/file: {ratio:.3f}x (target >= 0.97x)")
for r in rows:
    if r["case"] == "fleet":
        one = r["seconds"] / (r["token_lifetime_s"] * 0.5)
        print(f"fleet: {r['instances']} instances, {r['seconds']} s, {r['token_lifetime_s']} s tokens: "
              f"{r['requests']} requests, {r['non_2xx']} non-2xx, {r['socket_errors']} socket errors, "
              f"{r['token_requests']} token requests (one fleet: about {one:.0f}; "
              f"{r['instances']} alone: about {one * r['instances']:.0f}); worst p99 {r['p99_us_max']} us")
PY
log "raw results: $out"
