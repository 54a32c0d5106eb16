#!/usr/bin/env bash
# Interception (issue 16, item 8): credproxy answering CONNECT api.bench:443 and
# terminating TLS with a leaf from its local CA, against nginx terminating TLS
# with a leaf of the same kind (ECDSA P-256, signed by a throw-away CA) and
# proxy_pass to the same plain upstream with the credential header. One load
# client for both, examples/tls_load.rs (CONNECT + TLS once per connection for
# credproxy, direct TLS for nginx), interleaved (nginx credproxy nginx ...),
# medians over the repetitions.
#
#   ka64     64 keep-alive connections, GET /small for the duration:
#            req/s and server CPU per request (/proc/PID/stat utime+stime of
#            credproxy, of nginx's master + workers)
#   newconn  16 at a time, a new TCP connection and a full TLS handshake per
#            request (tls_load --new-conn: no client session cache); for
#            credproxy each also pays its CONNECT. Leaves come from its cache.
#
# Targets (issue 16): ka64 req/s >= 1.0x nginx, CPU/request <= 1.0x;
# newconn handshakes/s >= 1.0x.
#
# usage: bench/intercept.sh [--quick] [--reps N] [--duration SECS]
#                           [--no-build] [--no-install] [--keep] [--check]
#   --quick  1 repetition of 3 s
#   --check  start everything, check the credential arrives (curl through
#            both), run tls_load for 40 requests per case and target (keep-alive on 2
#            connections, which must stay 2), print
#            its JSON, and stop: no measurement.
# Environment: CREDPROXY_BIN (default target/release/credproxy), TLS_LOAD_BIN
# (default: examples/tls_load next to it, built with the same profile).
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

QUICK=0 BUILD=1 INSTALL=1 REPS="" DUR="" CHECK=0
while (($# > 0)); do
    case $1 in
        --quick) QUICK=1 ;;
        --reps) REPS=$2; shift ;;
        --duration) DUR=$2; shift ;;
        --no-build) BUILD=0 ;;
        --no-install) INSTALL=0 ;;
        --keep) KEEP_WORK=1 ;;
        --check) CHECK=1 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [[ $QUICK == 1 ]]; then REPS=${REPS:-1} DUR=${DUR:-3}; else REPS=${REPS:-3} DUR=${DUR:-10}; fi
[[ $REPS =~ ^[1-9][0-9]*$ && $DUR =~ ^[1-9][0-9]*$ ]] || die "--reps and --duration take positive integers"

PATH=$PATH:/usr/sbin
missing=()
for cmd in nginx curl openssl python3; do command -v "$cmd" >/dev/null || missing+=("$cmd"); done
if ((${#missing[@]} > 0)); then
    [[ $INSTALL == 1 && $(id -u) -eq 0 ]] || die "missing: ${missing[*]} (apt-get install nginx-light curl openssl python3)"
    apt-get update -qq
    pkgs=("${missing[@]/nginx/nginx-light}")
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
    command -v service >/dev/null && service nginx stop >/dev/null 2>&1 || true
fi
CREDPROXY_BIN=${CREDPROXY_BIN:-}
bench_build_credproxy "$BUILD"
[[ -n $CREDPROXY_BIN ]] || die "no credproxy binary (build it, or set CREDPROXY_BIN)"
LOAD_BIN=${TLS_LOAD_BIN:-$(dirname "$CREDPROXY_BIN")/examples/tls_load}
if [[ -z ${TLS_LOAD_BIN:-} && ($BUILD == 1 || ! -x $LOAD_BIN) ]]; then
    profile=release
    [[ $CREDPROXY_BIN == */debug/* ]] && profile=dev
    (cd "$REPO_DIR" && cargo build -q --profile "$profile" --example tls_load)
fi
[[ -x $LOAD_BIN ]] || die "no $LOAD_BIN (cargo build --release --example tls_load)"

bench_init_work
trap bench_cleanup EXIT
trap 'exit 130' INT TERM
bench_make_pki
bench_alloc_ports

# nginx's leaf: api.bench, ECDSA P-256, signed by the bench CA.
d=$WORK/pki
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$d/api-bench.key" -out "$d/api-bench.csr" -subj "/CN=api.bench" 2>/dev/null
printf '%s\n' "subjectAltName=DNS:api.bench" "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$d/api-bench.ext"
openssl x509 -req -in "$d/api-bench.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
    -CAcreateserial -out "$d/api-bench.pem" -days 2 -extfile "$d/api-bench.ext" 2>/dev/null

bench_start_upstream
bench_render "$BENCH_DIR/nginx-intercept.conf.in" "$WORK/conf/nginx-intercept.conf"
bench_start nginx "$WORK/logs/nginx-intercept.log" \
    nginx -c "$WORK/conf/nginx-intercept.conf" -e "$WORK/nginx-intercept.err"
for ((i = 0; i < 100; i++)); do bench_tcp_open "$NGINX_TLS_PORT" && break; sleep 0.1; done
bench_alive nginx || die "nginx did not start: $(cat "$WORK/logs/nginx-intercept.log" "$WORK/nginx-intercept.err" 2>/dev/null)"

bench_start_credproxy credproxy "$BENCH_DIR/credproxy-intercept.toml.in" "$CP_ADMIN_PORT" "$CP_PORT" ||
    die "credproxy did not start"
CP_CA=$WORK/state-tls/ca/ca.pem
[[ -s $CP_CA ]] || die "credproxy made no CA at $CP_CA"

# sanity TARGET: the upstream must see exactly the injected credential (curl).
sanity() {
    local got want="Bearer $BENCH_TOKEN|$ORG_ID"
    case $1 in
        nginx) got=$(curl -sS --max-time 5 --cacert "$WORK/pki/ca.pem" \
            --resolve "api.bench:$NGINX_TLS_PORT:127.0.0.1" "https://api.bench:$NGINX_TLS_PORT/echo" 2>&1) || true ;;
        credproxy) got=$(curl -sS --max-time 5 --cacert "$CP_CA" -x "http://127.0.0.1:$CP_PORT" \
            https://api.bench/echo 2>&1) || true ;;
    esac
    log "sanity $1: $got"
    [[ $got == "$want" ]]
}

# load TARGET CASE EXTRA...: tls_load's JSON line.
load() {
    local t=$1 c=$2
    shift 2
    local -a how=(--target "127.0.0.1:$NGINX_TLS_PORT" --ca "$WORK/pki/ca.pem")
    [[ $t == credproxy ]] && how=(--proxy "127.0.0.1:$CP_PORT" --ca "$CP_CA")
    case $c in
        ka64) "$LOAD_BIN" "${how[@]}" --authority api.bench:443 -c "${KA_CONNS:-64}" --path /small "$@" ;;
        newconn) "$LOAD_BIN" "${how[@]}" --authority api.bench:443 -c 16 --new-conn --path /small "$@" ;;
    esac
}

for t in nginx credproxy; do
    sanity "$t" || die "$t does not answer /echo over TLS with the credential"
done
if [[ $CHECK == 1 ]]; then
    fail=0
    for c in ka64 newconn; do
        for t in nginx credproxy; do
            # 2 keep-alive connections for 40 requests: "connections" must stay 2.
            out=$(KA_CONNS=2 load "$t" "$c" -d 10 -n 40 2>&1) || fail=1
            log "check $c/$t: $out"
            python3 -c 'import json,sys; j=json.loads(sys.argv[1]); sys.exit(0 if j["requests"] > 0 and j["errors"] == 0 and (sys.argv[2] == "newconn" or j["connections"] == 2) else 1)' "$out" "$c" 2>/dev/null || fail=1
        done
    done
    [[ $fail == 0 ]] || die "check failed: see the lines above"
    log "check done: everything starts (no measurement)"
    exit 0
fi

RAW=$WORK/raw.jsonl
: >"$RAW"
# measure CASE TARGET REP
measure() {
    local c=$1 t=$2 rep=$3 out c0 c1 u0 u1
    local -a pids=() upids=()
    mapfile -t pids < <(bench_pids "$t")
    mapfile -t upids < <(bench_pids upstream)
    c0=$(bench_cpu_ticks "${pids[@]}")
    u0=$(bench_cpu_ticks "${upids[@]}")
    out=$(load "$t" "$c" -d "$DUR") || { log "tls_load failed for $c/$t: $out"; return 0; }
    c1=$(bench_cpu_ticks "${pids[@]}")
    u1=$(bench_cpu_ticks "${upids[@]}")
    printf '{"case":"%s","target":"%s","rep":%d,"load":%s,"proxy_cpu_ticks":%d,"upstream_cpu_ticks":%d,"clk_tck":%d}\n' \
        "$c" "$t" "$rep" "$out" "$((c1 - c0))" "$((u1 - u0))" "$CLK_TCK" >>"$RAW"
    log "$c/$t rep $rep: $out; CPU $((c1 - c0)) ticks"
}

log "$REPS repetition(s) of ${DUR}s; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for ((rep = 1; rep <= REPS; rep++)); do
    for c in ka64 newconn; do
        for t in nginx credproxy; do measure "$c" "$t" "$rep"; done
    done
done

mkdir -p "$BENCH_DIR/results"
OUT=$BENCH_DIR/results/$(date -u +%Y-%m-%dT%H%M%SZ)-intercept$([[ $QUICK == 1 ]] && echo -quick || true).json
MACHINE=$(bench_machine_json 2>/dev/null || echo null)
python3 - "$RAW" "$OUT" "$MACHINE" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
out = {"machine": json.loads(sys.argv[3]), "rows": rows, "summary": {}}
med = {}
print(f"{'case':8} {'target':10} {'req/s':>10} {'CPU us/req':>11} {'p50 us':>8} {'p99 us':>8} {'errors':>7}")
for case in ("ka64", "newconn"):
    for t in ("nginx", "credproxy"):
        rs = [r for r in rows if r["case"] == case and r["target"] == t]
        if not rs:
            continue
        m = {
            "rps": statistics.median(r["load"]["rps"] for r in rs),
            "cpu_us_per_req": statistics.median(
                1e6 * r["proxy_cpu_ticks"] / r["clk_tck"] / max(r["load"]["requests"], 1) for r in rs),
            "p50_us": statistics.median(r["load"]["p50_us"] for r in rs),
            "p99_us": statistics.median(r["load"]["p99_us"] for r in rs),
            "errors": sum(r["load"]["errors"] for r in rs),
        }
        med[(case, t)] = m
        print(f"{case:8} {t:10} {m['rps']:10.0f} {m['cpu_us_per_req']:11.1f} {m['p50_us']:8.0f} {m['p99_us']:8.0f} {m['errors']:7d}")
def ratio(case, key):
    a, b = med.get((case, "credproxy")), med.get((case, "nginx"))
    return a[key] / b[key] if a and b and b[key] else None
checks = [("ka64", "rps", ">=", "req/s"), ("ka64", "cpu_us_per_req", "<=", "CPU/request"),
          ("newconn", "rps", ">=", "handshakes/s")]
print()
for case, key, op, label in checks:
    r = ratio(case, key)
    if r is None:
        continue
    ok = r >= 1.0 if op == ">=" else r <= 1.0
    out["summary"].setdefault(case, {})[key + "_ratio"] = r
    print(f"{case:8} credproxy/nginx {label:13} {r:6.3f}x  (target {op} 1.0x) {'met' if ok else 'NOT met'}")
json.dump(out, open(sys.argv[2], "w"), indent=1)
PY
log "JSON: ${OUT#"$REPO_DIR"/}"
