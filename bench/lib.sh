# shellcheck shell=bash
# Variables set here are used by the scripts that source this file:
# shellcheck disable=SC2034
# Shared by bench/run.sh and bench/rss-stream.sh: dependencies, the build,
# the test CA, free ports, config rendering, starting and stopping the
# servers, and reading CPU time and RSS from /proc.
#
# Everything runs on 127.0.0.1 under one temporary directory ($WORK); every
# process started here is recorded in PIDS and killed by bench_cleanup, which
# the scripts install as an EXIT trap.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)

# The credential every proxy injects. Not a secret: the upstream checks it.
BENCH_TOKEN=${BENCH_TOKEN:-bench-static-token-0123456789abcdef}
BENCH_CLIENT_SECRET=${BENCH_CLIENT_SECRET:-bench-client-secret}
ORG_ID=org-bench
TOKEN_LIFETIME=${TOKEN_LIFETIME:-5}
export BENCH_TOKEN BENCH_CLIENT_SECRET

CLK_TCK=$(getconf CLK_TCK)
WORK=""
KEEP_WORK=0
declare -a PIDS=()
declare -A PID_OF=()      # name -> main pid

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- dependencies and build -------------------------------------------------

bench_ensure_deps() {
    local missing=() cmd pkg
    local -A pkg_of=([nginx]=nginx-light [haproxy]=haproxy [wrk]=wrk [openssl]=openssl
        [curl]=curl [python3]=python3)
    for cmd in nginx haproxy wrk openssl curl python3; do
        if ! command -v "$cmd" >/dev/null 2>&1 && [[ ! -x /usr/sbin/$cmd ]]; then
            pkg=${pkg_of[$cmd]}
            missing+=("$pkg")
        fi
    done
    if ((${#missing[@]} > 0)); then
        log "installing: ${missing[*]}"
        if [[ $(id -u) -ne 0 ]]; then
            die "missing ${missing[*]} and not root: install them with apt-get"
        fi
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
        # Debian starts a packaged service on install; the benchmark wants only
        # its own instances. Stop only what this install just brought in.
        if command -v service >/dev/null 2>&1; then
            for pkg in "${missing[@]}"; do
                case $pkg in
                    nginx-light) service nginx stop >/dev/null 2>&1 || true ;;
                    haproxy) service haproxy stop >/dev/null 2>&1 || true ;;
                esac
            done
        fi
    fi
    PATH=$PATH:/usr/sbin
}

# Sets CREDPROXY_BIN to a built binary, or to "" when there is none.
bench_build_credproxy() {
    local build=$1
    CREDPROXY_BIN=${CREDPROXY_BIN:-$REPO_DIR/target/release/credproxy}
    if [[ $build == 1 ]]; then
        log "cargo build --release (credproxy)"
        if ! (cd "$REPO_DIR" && cargo build --release --quiet); then
            log "credproxy: cargo build --release failed; the credproxy cases will be skipped"
            CREDPROXY_BIN=""
            return 0
        fi
    fi
    if [[ ! -x $CREDPROXY_BIN ]]; then
        log "credproxy: no binary at $CREDPROXY_BIN; the credproxy cases will be skipped"
        CREDPROXY_BIN=""
    fi
}

# --- work directory, PKI, ports, templates ----------------------------------

bench_cleanup() {
    local pid i
    # Newest first: proxies before the upstream they talk to.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid=${PIDS[i]}
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ $KEEP_WORK == 1 ]]; then
            log "kept work directory $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
}

bench_init_work() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/credproxy-bench.XXXXXX")
    mkdir -p "$WORK/pki" "$WORK/www" "$WORK/tmp" "$WORK/logs" "$WORK/conf"
    chmod 0700 "$WORK"
}

# A test CA and a certificate for the upstream valid for localhost and
# 127.0.0.1, signed by that CA. Nothing outside $WORK trusts it.
bench_make_pki() {
    local d=$WORK/pki
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$d/ca.key" -out "$d/ca.pem" -days 2 -subj "/CN=credproxy bench CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$d/upstream.key" -out "$d/upstream.csr" -subj "/CN=localhost" 2>/dev/null
    printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
        "extendedKeyUsage=serverAuth" >"$d/upstream.ext"
    openssl x509 -req -in "$d/upstream.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
        -CAcreateserial -out "$d/upstream.pem" -days 2 -extfile "$d/upstream.ext" 2>/dev/null
}

# Prints N distinct free TCP ports on 127.0.0.1 (held open together while
# choosing, so they differ; released before use).
bench_free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# With BENCH_BASE_PORTS=1, also the ports of run.sh --baseline's second
# credproxy (CPB_* plain, CPBT_* TLS upstream).
bench_alloc_ports() {
    local -a p
    local n=15
    [[ ${BENCH_BASE_PORTS:-0} == 1 ]] && n=21
    read -r -a p <<<"$(bench_free_ports "$n")"
    UP_PORT=${p[0]} UP_TLS_PORT=${p[1]}
    NGINX_PORT=${p[2]} NGINX_TLS_PORT=${p[3]}
    HAPROXY_PORT=${p[4]} HAPROXY_TLS_PORT=${p[5]}
    CP_PORT=${p[6]} CP_ADMIN_PORT=${p[7]} CP_ROUTE_PORT=${p[8]}
    CPT_PORT=${p[9]} CPT_ADMIN_PORT=${p[10]} CPT_ROUTE_PORT=${p[11]}
    CPR_PORT=${p[12]} CPR_ADMIN_PORT=${p[13]} CPR_ROUTE_PORT=${p[14]}
    if [[ ${BENCH_BASE_PORTS:-0} == 1 ]]; then
        CPB_PORT=${p[15]} CPB_ADMIN_PORT=${p[16]} CPB_ROUTE_PORT=${p[17]}
        CPBT_PORT=${p[18]} CPBT_ADMIN_PORT=${p[19]} CPBT_ROUTE_PORT=${p[20]}
    fi
}

# render TEMPLATE OUT: replaces @NAME@ with the value of shell variable NAME.
bench_render() {
    local in=$1 out=$2 name args=()
    local RUN_USER RUN_GROUP
    RUN_USER=$(id -un) RUN_GROUP=$(id -gn)
    for name in RUN_USER RUN_GROUP WORK TOKEN ORG_ID TOKEN_LIFETIME UP_PORT UP_TLS_PORT NGINX_PORT NGINX_TLS_PORT \
        HAPROXY_PORT HAPROXY_TLS_PORT CP_PORT CP_ADMIN_PORT CP_ROUTE_PORT \
        CPT_PORT CPT_ADMIN_PORT CPT_ROUTE_PORT CPR_PORT CPR_ADMIN_PORT CPR_ROUTE_PORT; do
        if [[ $name == TOKEN ]]; then
            args+=(-e "s|@TOKEN@|${BENCH_TOKEN}|g")
        else
            args+=(-e "s|@${name}@|${!name}|g")
        fi
    done
    sed "${args[@]}" "$in" >"$out"
    if grep -q '@[A-Z_]*@' "$out"; then
        die "unrendered placeholder in $out: $(grep -o '@[A-Z_]*@' "$out" | head -1)"
    fi
}

# --- processes ----------------------------------------------------------------

# wait_http URL [SECONDS [NAME]]: until URL answers anything at all; gives
# up early when the process started as NAME has exited.
bench_wait_http() {
    local url=$1 secs=${2:-10} name=${3:-} i
    for ((i = 0; i < secs * 10; i++)); do
        if curl -s -o /dev/null --max-time 1 "$url"; then
            return 0
        fi
        if [[ -n $name ]] && ! bench_alive "$name"; then
            return 1
        fi
        sleep 0.1
    done
    return 1
}

# Whether something accepts TCP connections on 127.0.0.1:PORT.
bench_tcp_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# start NAME LOGFILE CMD...: runs CMD in the background and records it.
bench_start() {
    local name=$1 logf=$2
    shift 2
    "$@" >"$logf" 2>&1 &
    PID_OF[$name]=$!
    PIDS+=("$!")
}

bench_alive() { kill -0 "${PID_OF[$1]}" 2>/dev/null; }

bench_start_upstream() {
    head -c 1048576 /dev/urandom >"$WORK/www/1m"
    bench_render "$BENCH_DIR/nginx-upstream.conf.in" "$WORK/conf/nginx-upstream.conf"
    bench_start upstream "$WORK/logs/upstream.log" \
        nginx -c "$WORK/conf/nginx-upstream.conf" -e "$WORK/nginx-upstream.err"
    bench_wait_http "http://127.0.0.1:$UP_PORT/" 10 upstream ||
        die "upstream nginx did not start: $(cat "$WORK/logs/upstream.log" "$WORK/nginx-upstream.err" 2>/dev/null)"
}

bench_start_nginx_proxy() {
    bench_render "$BENCH_DIR/nginx-proxy.conf.in" "$WORK/conf/nginx-proxy.conf"
    bench_start nginx "$WORK/logs/nginx-proxy.log" \
        nginx -c "$WORK/conf/nginx-proxy.conf" -e "$WORK/nginx-proxy.err"
    bench_wait_http "http://127.0.0.1:$NGINX_PORT/" 10 nginx ||
        die "nginx proxy did not start: $(cat "$WORK/logs/nginx-proxy.log" "$WORK/nginx-proxy.err" 2>/dev/null)"
}

bench_start_haproxy() {
    bench_render "$BENCH_DIR/haproxy.cfg.in" "$WORK/conf/haproxy.cfg"
    haproxy -c -q -f "$WORK/conf/haproxy.cfg" || die "haproxy rejected its config"
    bench_start haproxy "$WORK/logs/haproxy.log" haproxy -db -f "$WORK/conf/haproxy.cfg"
    bench_wait_http "http://127.0.0.1:$HAPROXY_PORT/" 10 haproxy ||
        die "haproxy did not start: $(cat "$WORK/logs/haproxy.log")"
}

# start_credproxy NAME TEMPLATE ADMIN_PORT ROUTE_PORT: returns 1 (after
# saying why) when credproxy is missing, exits at once, or does not answer.
bench_start_credproxy() {
    local name=$1 tmpl=$2 admin=$3 route=$4 i
    if [[ -z ${CREDPROXY_BIN:-} ]]; then
        log "$name: skipped (no credproxy binary)"
        return 1
    fi
    bench_render "$tmpl" "$WORK/conf/$name.toml"
    mkdir -p "$WORK/state-plain" "$WORK/state-tls" "$WORK/state-refresh"
    chmod 0700 "$WORK"/state-*
    # Per-request log lines are off, as nginx's access_log and HAProxy's log
    # are: set BENCH_CREDPROXY_LOG=info to measure with them.
    # BENCH_CREDPROXY_WRAP runs credproxy under a tool, e.g.
    # "valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p".
    local -a wrap=()
    read -r -a wrap <<<"${BENCH_CREDPROXY_WRAP:-}"
    local tries=100
    ((${#wrap[@]} > 0)) && tries=600
    bench_start "$name" "$WORK/logs/$name.log" env CREDPROXY_LOG="${BENCH_CREDPROXY_LOG:-warn}" \
        "${wrap[@]}" "$CREDPROXY_BIN" run --config "$WORK/conf/$name.toml"
    # Up when the admin listener's /healthz or, failing that (a build without
    # the admin listener), the route listener answers.
    local up=""
    for ((i = 0; i < tries; i++)); do
        if ! bench_alive "$name"; then
            local rc=0
            wait "${PID_OF[$name]}" 2>/dev/null || rc=$?
            log "$name: skipped: 'credproxy run' exited at once (status $rc). Its output:"
            sed 's/^/    /' "$WORK/logs/$name.log" | tail -n 20 >&2
            return 1
        fi
        if curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$admin/healthz"; then
            up="admin"
            break
        fi
        if ((i >= 20)) && bench_tcp_open "$route"; then
            up="route"
            break
        fi
        sleep 0.1
    done
    case $up in
        admin)
            # A provider whose token comes from a token endpoint needs a moment.
            for ((i = 0; i < 100; i++)); do
                curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$admin/readyz" && break
                sleep 0.1
            done
            ;;
        route) log "$name: no /healthz on 127.0.0.1:$admin; going by the route listener" ;;
        *)
            log "$name: skipped: neither /healthz on 127.0.0.1:$admin nor the route 127.0.0.1:$route answered within $((tries / 10)) s. Output:"
            sed 's/^/    /' "$WORK/logs/$name.log" | tail -n 20 >&2
            kill -TERM "${PID_OF[$name]}" 2>/dev/null || true
            return 1
            ;;
    esac
    return 0
}

# --- /proc readings -----------------------------------------------------------

# The process and its children (nginx: master + workers).
bench_pids() {
    local pid=${PID_OF[$1]}
    printf '%s\n' "$pid"
    pgrep -P "$pid" || true
}

# Sum of utime+stime clock ticks over the given pids.
bench_cpu_ticks() {
    local total=0 pid stat rest
    local -a f
    for pid in "$@"; do
        stat=$(<"/proc/$pid/stat") || continue
        rest=${stat##*) }   # fields after "(comm)", starting at field 3
        read -r -a f <<<"$rest"
        total=$((total + f[11] + f[12]))
    done
    printf '%s\n' "$total"
}

# bench_status_kb FIELD PIDS...: sum of a /proc/PID/status field (kB).
bench_status_kb() {
    local field=$1 total=0 pid v
    shift
    for pid in "$@"; do
        v=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
        total=$((total + ${v:-0}))
    done
    printf '%s\n' "$total"
}

# Resets VmHWM to the current RSS (Linux >= 4.0; needs to own the process).
bench_reset_hwm() {
    local pid ok=0
    for pid in "$@"; do
        if echo 5 >"/proc/$pid/clear_refs" 2>/dev/null; then ok=1; fi
    done
    [[ $ok == 1 ]]
}

# Samples summed VmRSS of the pids every 50 ms into FILE until killed.
bench_rss_sampler() {
    local out=$1
    shift
    while :; do
        bench_status_kb VmRSS "$@" >>"$out"
        sleep 0.05
    done
}

# bench_machine_json [BASELINE_BIN]: with an argument, also "credproxy_base"
# (that binary's --version; null when the argument is "").
bench_machine_json() {
    python3 - "$CREDPROXY_BIN" "$REPO_DIR" "$@" <<'PY'
import json, os, platform, subprocess, sys
def run(*cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except Exception:
        return None
cpu = None
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip(); break
except OSError:
    pass
mem = None
try:
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal"):
            mem = int(line.split()[1]) // 1024; break
except OSError:
    pass
debian = None
try:
    debian = open("/etc/debian_version").read().strip()
except OSError:
    pass
binary, repo = sys.argv[1], sys.argv[2]
extra = {}
if len(sys.argv) > 3:
    extra["credproxy_base"] = run(sys.argv[3], "--version") if sys.argv[3] else None
print(json.dumps({
    "cpu": cpu, "cores": os.cpu_count(), "mem_mib": mem,
    "kernel": platform.release(), "debian": debian,
    "nginx": run("nginx", "-v"), "haproxy": run("haproxy", "-v"), "wrk": run("wrk", "-v"),
    "openssl": run("openssl", "version"),
    "credproxy": run(binary, "--version") if binary else None,
    "git": run("git", "-C", repo, "describe", "--always", "--dirty"),
    **extra,
}))
PY
}
