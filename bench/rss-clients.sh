#!/usr/bin/env bash
# Connects to credproxy from many distinct source addresses and watches its
# memory: the per-client connection table (max_connections_per_client) must
# hold only the clients that have a connection open, so a stream of new
# addresses cannot grow it. Issue 14 item 9's target: 100,000 distinct
# source addresses with credproxy's peak RSS under 32 MiB.
#
# The addresses come from a local route on the loopback device (Linux
# "AnyIP": `ip route add local 10.200.0.0/14 dev lo`), so every address of
# that range can be bound without adding it; this needs root (CAP_NET_ADMIN)
# and the route is removed on exit. Loopback addresses would not do: credproxy
# counts every 127.x address as one client.
#
# The client opens BATCH connections at once, each from its own address,
# sends one request on each through the route listener (proxied to the
# upstream), reads every answer, closes them, and goes on with the next
# batch, so the table holds up to BATCH clients at a time and sees ADDRESSES
# in all.
#
# usage: bench/rss-clients.sh [--addresses N] [--batch N] [--no-build]
#                             [--no-install] [--keep]
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<'EOF'
usage: bench/rss-clients.sh [options]     (needs root: it adds a local route)

  --addresses N   distinct source addresses in all (default 100000)
  --batch N       connections open at once, each from its own address (default 1000)
  --no-build      use target/release/credproxy (or $CREDPROXY_BIN) as it is
  --no-install    do not apt-get install missing tools
  --keep          keep the temporary directory
EOF
}

ADDRESSES=100000 BATCH=1000 BUILD=1 INSTALL=1 LIMIT_MIB=32
ROUTE_NET=10.200.0.0/14   # 262,144 addresses
while (($# > 0)); do
    case $1 in
        --addresses) ADDRESSES=$2; shift ;;
        --batch) BATCH=$2; shift ;;
        --no-build) BUILD=0 ;;
        --no-install) INSTALL=0 ;;
        --keep) KEEP_WORK=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
    shift
done
[[ $ADDRESSES =~ ^[1-9][0-9]*$ ]] && ((ADDRESSES <= 262144)) ||
    die "--addresses takes a number from 1 to 262144 (the size of $ROUTE_NET)"
[[ $BATCH =~ ^[1-9][0-9]*$ ]] || die "--batch takes a positive number"
[[ $(id -u) -eq 0 ]] || die "needs root to add the local route $ROUTE_NET on lo (ip route add local ...)"

[[ $INSTALL == 1 ]] && bench_ensure_deps
PATH=$PATH:/usr/sbin
CREDPROXY_BIN=${CREDPROXY_BIN:-}
bench_build_credproxy "$BUILD"
[[ -n $CREDPROXY_BIN ]] || die "no credproxy binary to measure"

ROUTE_ADDED=0
cleanup() {
    if [[ $ROUTE_ADDED == 1 ]]; then ip route del local "$ROUTE_NET" dev lo 2>/dev/null || true; fi
    bench_cleanup
}
bench_init_work
trap cleanup EXIT
trap 'exit 130' INT TERM
if ! ip route show table local | grep -q "^local $ROUTE_NET "; then
    ip route add local "$ROUTE_NET" dev lo || die "cannot add the local route $ROUTE_NET on lo"
    ROUTE_ADDED=1
fi
bench_make_pki
bench_alloc_ports
bench_start_upstream
bench_start_credproxy credproxy "$BENCH_DIR/credproxy.toml.in" "$CP_ADMIN_PORT" "$CP_ROUTE_PORT" ||
    die "credproxy did not start"

mapfile -t pids < <(bench_pids credproxy)
start=$(bench_status_kb VmRSS "${pids[@]}")
bench_reset_hwm "${pids[@]}" || log "cannot reset VmHWM; peak is since start-up"
log "credproxy: $ADDRESSES source addresses from $ROUTE_NET, $BATCH at a time"
out=$(python3 - "$CP_ROUTE_PORT" "$ADDRESSES" "$BATCH" <<'EOF'
import ipaddress, resource, socket, sys, time

port, total, batch = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
base = int(ipaddress.ip_address("10.200.0.0"))
request = b"GET /small HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
statuses, failed, begun = {}, 0, time.monotonic()
for first in range(0, total, batch):
    socks = []
    for i in range(first, min(first + batch, total)):
        s = socket.socket()
        s.bind((str(ipaddress.ip_address(base + i + 1)), 0))
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(request)
            socks.append(s)
        except OSError:
            failed += 1
            s.close()
    for s in socks:
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except OSError:
            pass
        s.close()
        code = data[9:12].decode("ascii", "replace") if data.startswith(b"HTTP/1.") else "none"
        statuses[code] = statuses.get(code, 0) + 1
seconds = time.monotonic() - begun
print(f"{total} addresses in {seconds:.1f} s; answers: "
      + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))
      + (f"; {failed} connects failed" if failed else ""))
EOF
)
hwm=$(bench_status_kb VmHWM "${pids[@]}")
now=$(bench_status_kb VmRSS "${pids[@]}")
bench_alive credproxy || die "credproxy died during the run"

mib() { awk -v kb="$1" 'BEGIN { printf "%.1f", kb / 1024 }'; }
verdict=PASS
((hwm < LIMIT_MIB * 1024)) || verdict=FAIL
printf '\n%-10s %9s %9s %9s %9s  %-4s  %s\n' target addresses "start MiB" "peak MiB" "end MiB" "<${LIMIT_MIB}" client
printf '%-10s %9s %9s %9s %9s  %-4s  %s\n' credproxy "$ADDRESSES" "$(mib "$start")" "$(mib "$hwm")" "$(mib "$now")" "$verdict" "$out"
[[ $verdict == PASS ]]
