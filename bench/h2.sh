#!/usr/bin/env bash
# HTTP/2 downstream (issue 16): credproxy against nginx `listen ... http2` with
# proxy_pass, measured with h2load (Debian nghttp2-client), 16 connections x
# 32 concurrent streams, interleaved (nginx credproxy nginx ...), medians.
#
#   h2c   cleartext HTTP/2 with prior knowledge: h2load -> credproxy's route
#         listener / nginx `listen P http2`, each to the plain HTTP/1.1 upstream.
#   h2tls HTTP/2 over TLS chosen by ALPN: h2load -> connect_shim -> credproxy's
#         main listener (CONNECT api.bench.test:443, intercepted, leaf from its
#         CA, ALPN h2 since the upstream speaks HTTP/2), or -> the same relay
#         (no CONNECT) -> nginx `listen P ssl http2`. h2load can't use a
#         proxy, so both go through examples/connect_shim.rs (its CPU is
#         counted for neither). Upstream: the TLS upstream nginx, with HTTP/2
#         on; credproxy speaks HTTP/2 to it, nginx HTTP/1.1 (proxy_pass has no
#         HTTP/2), each its best.
#
# Target (issue 16): credproxy req/s >= 1.0x nginx's in both cases.
#
# usage: bench/h2.sh [--quick] [--reps N] [--duration SECS] [--cases h2c,h2tls]
#                    [--no-build] [--no-install] [--keep] [--check]
#   --check  start everything, send one request per target and 32 with h2load
#            (-n 32 -c 1), print what each answered, and stop: no measurement.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

QUICK=0 BUILD=1 INSTALL=1 REPS="" DUR="" CHECK=0 CASES="h2c,h2tls"
while (($# > 0)); do
    case $1 in
        --quick) QUICK=1 ;;
        --reps) REPS=$2; shift ;;
        --duration) DUR=$2; shift ;;
        --cases) CASES=$2; shift ;;
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
IFS=, read -r -a CASE_LIST <<<"$CASES"
for c in "${CASE_LIST[@]}"; do [[ $c =~ ^(h2c|h2tls)$ ]] || die "unknown case: $c"; done

if [[ $INSTALL == 1 ]]; then
    bench_ensure_deps
    if ! command -v h2load >/dev/null; then
        [[ $(id -u) -eq 0 ]] || die "h2load is missing: apt-get install nghttp2-client"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client >/dev/null
    fi
fi
PATH=$PATH:/usr/sbin
for cmd in nginx h2load curl openssl python3; do
    command -v "$cmd" >/dev/null || die "$cmd is missing (run without --no-install)"
done
CREDPROXY_BIN=${CREDPROXY_BIN:-}
bench_build_credproxy "$BUILD"
[[ -n $CREDPROXY_BIN ]] || die "no credproxy binary (build it, or set CREDPROXY_BIN)"
SHIM_BIN=${SHIM_BIN:-$(dirname "$CREDPROXY_BIN")/examples/connect_shim}
if [[ $BUILD == 1 || ! -x $SHIM_BIN ]]; then
    profile=release
    [[ $CREDPROXY_BIN == */debug/* ]] && profile=dev
    (cd "$REPO_DIR" && cargo build -q --profile "$profile" --example connect_shim)
fi
[[ -x $SHIM_BIN ]] || die "no $SHIM_BIN (cargo build --release --example connect_shim)"

bench_init_work
trap bench_cleanup EXIT
trap 'exit 130' INT TERM
bench_make_pki
bench_alloc_ports
read -r SHIM_CP_PORT SHIM_NGINX_PORT <<<"$(bench_free_ports 2)"
mkdir -p "$WORK/tmp"

# The usual upstream, with HTTP/2 on its TLS listener (ALPN h2, http/1.1).
sed 's|^\( *listen 127.0.0.1:@UP_TLS_PORT@ ssl\)|\1 http2|' "$BENCH_DIR/nginx-upstream.conf.in" >"$WORK/conf/nginx-upstream-h2.conf.in"
grep -q '@UP_TLS_PORT@ ssl http2' "$WORK/conf/nginx-upstream-h2.conf.in" || die "could not turn on HTTP/2 in the upstream's TLS listener"
head -c 1048576 /dev/urandom >"$WORK/www/1m"
bench_render "$WORK/conf/nginx-upstream-h2.conf.in" "$WORK/conf/nginx-upstream.conf"
bench_start upstream "$WORK/logs/upstream.log" nginx -c "$WORK/conf/nginx-upstream.conf" -e "$WORK/nginx-upstream.err"
bench_wait_http "http://127.0.0.1:$UP_PORT/" 10 upstream || die "upstream nginx did not start: $(cat "$WORK/nginx-upstream.err" 2>/dev/null)"

bench_render "$BENCH_DIR/nginx-h2.conf.in" "$WORK/conf/nginx-h2.conf"
bench_start nginx "$WORK/logs/nginx-h2.log" nginx -c "$WORK/conf/nginx-h2.conf" -e "$WORK/nginx-h2.err"
bench_wait_http "http://127.0.0.1:$NGINX_PORT/" 10 nginx ||
    curl -s --http2-prior-knowledge -o /dev/null "http://127.0.0.1:$NGINX_PORT/small" ||
    die "nginx (h2) did not start: $(cat "$WORK/logs/nginx-h2.log" "$WORK/nginx-h2.err" 2>/dev/null)"

bench_start_credproxy credproxy "$BENCH_DIR/credproxy-h2.toml.in" "$CP_ADMIN_PORT" "$CP_ROUTE_PORT" ||
    die "credproxy did not start"
bench_start shim-credproxy "$WORK/logs/shim-credproxy.log" \
    "$SHIM_BIN" "127.0.0.1:$SHIM_CP_PORT" "127.0.0.1:$CP_PORT" api.bench.test:443
bench_start shim-nginx "$WORK/logs/shim-nginx.log" \
    "$SHIM_BIN" "127.0.0.1:$SHIM_NGINX_PORT" "127.0.0.1:$NGINX_TLS_PORT"
for port in "$SHIM_CP_PORT" "$SHIM_NGINX_PORT"; do
    for ((i = 0; i < 50; i++)); do bench_tcp_open "$port" && break; sleep 0.1; done
done

# url CASE TARGET
url_of() {
    case $1:$2 in
        h2c:credproxy) echo "http://127.0.0.1:$CP_ROUTE_PORT" ;;
        h2c:nginx) echo "http://127.0.0.1:$NGINX_PORT" ;;
        h2tls:credproxy) echo "https://127.0.0.1:$SHIM_CP_PORT" ;;
        h2tls:nginx) echo "https://127.0.0.1:$SHIM_NGINX_PORT" ;;
    esac
}
# h2load's -H: the intercepted tunnel's requests must name its host (else 421).
authority_args() {
    [[ $1 == h2tls ]] && printf '%s\n' -H ":authority: api.bench.test"
    return 0
}

# sanity CASE TARGET: the upstream must see exactly the injected credential,
# over HTTP/2 (curl --http2-prior-knowledge, or --http2 through the relay).
sanity() {
    local c=$1 t=$2 url got want="Bearer $BENCH_TOKEN|$ORG_ID"
    local -a how=(--http2-prior-knowledge)
    url=$(url_of "$c" "$t")
    [[ $c == h2tls ]] && how=(--http2 -k --connect-to "api.bench.test:443:127.0.0.1:${url##*:}")
    [[ $c == h2tls ]] && url="https://api.bench.test"
    got=$(curl -sS --max-time 5 "${how[@]}" -w ' %{http_version}' "$url/echo" 2>&1 | tr -d '\n') || true
    log "sanity $c/$t: $got"
    [[ $got == "$want 2" ]]
}

RAW=$WORK/raw.jsonl
: >"$RAW"
# measure CASE TARGET REP
measure() {
    local c=$1 t=$2 rep=$3 url out c0 c1 reqs ok failed
    local -a pids=() extra=()
    url=$(url_of "$c" "$t")/small
    mapfile -t extra < <(authority_args "$c")
    mapfile -t pids < <(bench_pids "$t")
    c0=$(bench_cpu_ticks "${pids[@]}")
    out=$(h2load -c 16 -m 32 -t 2 -D "$DUR" --warm-up-time=1 "${extra[@]}" "$url" 2>&1) || {
        log "h2load failed for $c/$t: $out"
        return 0
    }
    c1=$(bench_cpu_ticks "${pids[@]}")
    reqs=$(sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p' <<<"$out")
    ok=$(sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p' <<<"$out")
    failed=$(sed -n 's/^requests: .* \([0-9]*\) failed.*/\1/p' <<<"$out")
    printf '{"case":"%s","target":"%s","rep":%d,"req_s":%s,"succeeded":%s,"failed":%s,"proxy_cpu_ticks":%d,"clk_tck":%d}\n' \
        "$c" "$t" "$rep" "${reqs:-0}" "${ok:-0}" "${failed:-0}" "$((c1 - c0))" "$CLK_TCK" >>"$RAW"
    log "$c/$t rep $rep: ${reqs:-?} req/s, ${ok:-?} succeeded, ${failed:-?} failed, CPU $((c1 - c0)) ticks"
}

for c in "${CASE_LIST[@]}"; do
    for t in nginx credproxy; do
        sanity "$c" "$t" || die "$c/$t does not answer /echo over HTTP/2 with the credential"
    done
done
if [[ $CHECK == 1 ]]; then
    for c in "${CASE_LIST[@]}"; do
        for t in nginx credproxy; do
            mapfile -t extra < <(authority_args "$c")
            out=$(h2load -n 32 -c 1 -m 8 "${extra[@]}" "$(url_of "$c" "$t")/small" 2>&1 | grep -E '^requests:|^status codes:|Application protocol' | tr '\n' ' ')
            log "check $c/$t: $out"
        done
    done
    log "check done: everything starts (no measurement)"
    exit 0
fi

log "cases: ${CASE_LIST[*]}; $REPS repetition(s) of ${DUR}s; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for ((rep = 1; rep <= REPS; rep++)); do
    for c in "${CASE_LIST[@]}"; do
        for t in nginx credproxy; do measure "$c" "$t" "$rep"; done
    done
done

mkdir -p "$BENCH_DIR/results"
OUT=$BENCH_DIR/results/$(date -u +%Y-%m-%dT%H%M%SZ)-h2$([[ $QUICK == 1 ]] && echo -quick || true).json
python3 - "$RAW" "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
out = {"rows": rows, "summary": {}}
print(f"{'case':6} {'target':10} {'req/s':>10} {'CPU ms/kreq':>12} {'failed':>7}")
for case in dict.fromkeys(r["case"] for r in rows):
    med = {}
    for t in ("nginx", "credproxy"):
        rs = [r for r in rows if r["case"] == case and r["target"] == t]
        if not rs:
            continue
        req = statistics.median(r["req_s"] for r in rs)
        cpu = statistics.median(1000 * r["proxy_cpu_ticks"] / r["clk_tck"] / max(r["succeeded"], 1) * 1000 for r in rs)
        med[t] = (req, cpu)
        print(f"{case:6} {t:10} {req:10.0f} {cpu:12.3f} {sum(r['failed'] for r in rs):7d}")
    if len(med) == 2:
        ratio = med["credproxy"][0] / med["nginx"][0] if med["nginx"][0] else 0
        cpu_ratio = med["credproxy"][1] / med["nginx"][1] if med["nginx"][1] else 0
        out["summary"][case] = {"req_s_ratio": ratio, "cpu_per_request_ratio": cpu_ratio}
        print(f"{case:6} credproxy/nginx: req/s {ratio:.3f}x (target >= 1.0x), CPU/request {cpu_ratio:.3f}x")
json.dump(out, open(sys.argv[2], "w"), indent=1)
PY
log "JSON: ${OUT#"$REPO_DIR"/}"
