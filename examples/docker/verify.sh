#!/usr/bin/env bash
# Verifies the Dockerfile's runtime stage where no Docker engine runs and no
# base image can be pulled: builds credproxy as a static binary on this
# machine, builds the Dockerfile's final stage (FROM scratch, taken from the
# Dockerfile itself) with buildah from that binary, runs the image with
# `buildah run --isolation chroot`, and checks what an operator relies on:
#
#   - the binary is statically linked and the image is small;
#   - image metadata: numeric non-root user, CREDPROXY_CONFIG, volume, ports,
#     stop signal, healthcheck, entrypoint and command;
#   - /var/lib/credproxy is owned by that user, mode 0700;
#   - `credproxy check` finds /etc/credproxy/config.toml through CREDPROXY_CONFIG;
#   - `credproxy run` serves /healthz and /readyz, runs as uid 65532;
#   - it obtains an OAuth 2 token from a local token server, stores it in
#     /var/lib/credproxy (0600, uid 65532), and a request through the proxy
#     reaches a local upstream with `Authorization: Bearer <that token>`;
#   - `credproxy healthcheck` exits 0 while it runs and 1 after it stopped;
#   - SIGTERM stops it promptly.
#
# usage: examples/docker/verify.sh [--no-build] [--keep]
#   CREDPROXY_STATIC_BIN=path  test this binary instead of building one
# Needs root (buildah) and buildah (apt-get install -y buildah).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
IMAGE=localhost/credproxy:verify
BUILD=1 KEEP=0
while (($# > 0)); do
    case $1 in
        --no-build) BUILD=0 ;;
        --keep) KEEP=1 ;;
        -h | --help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
    shift
done

say() { printf '[verify] %s\n' "$*" >&2; }
FAILS=0
check() { # check NAME COMMAND...: runs COMMAND, prints PASS/FAIL
    local name=$1
    shift
    if "$@"; then
        printf '  PASS  %s\n' "$name"
    else
        printf '  FAIL  %s\n' "$name"
        FAILS=$((FAILS + 1))
    fi
}

command -v buildah >/dev/null || {
    say "buildah is missing: apt-get install -y buildah"
    exit 2
}

TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
BIN=${CREDPROXY_STATIC_BIN:-$ROOT/target/$TRIPLE/release/credproxy}
if [[ -z ${CREDPROXY_STATIC_BIN:-} && $BUILD == 1 ]]; then
    say "building a static binary: RUSTFLAGS=-C target-feature=+crt-static cargo build --release --target $TRIPLE"
    (cd "$ROOT" && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$TRIPLE")
fi
[[ -x $BIN ]] || { say "no binary at $BIN"; exit 1; }

CTX=$(mktemp -d "${TMPDIR:-/tmp}/credproxy-image.XXXXXX")
CTR=""
RUN_PID=""
FAKE_PID=""
# shellcheck disable=SC2317 # runs from the EXIT trap
cleanup() {
    if [[ -n $FAKE_PID ]]; then
        kill "$FAKE_PID" 2>/dev/null || true
        wait "$FAKE_PID" 2>/dev/null || true
    fi
    if [[ -n $RUN_PID ]] && kill -0 "$RUN_PID" 2>/dev/null; then
        kill -TERM "$RUN_PID" 2>/dev/null || true
        wait "$RUN_PID" 2>/dev/null || true
    fi
    if [[ -n $CTR ]]; then buildah rm "$CTR" >/dev/null 2>&1 || true; fi
    if [[ $KEEP == 0 ]]; then
        buildah rmi "$IMAGE" >/dev/null 2>&1 || true
        rm -rf "$CTX"
    else
        say "kept image $IMAGE and context $CTX"
    fi
}
trap cleanup EXIT

# --- the build context: what the Dockerfile's builder stage produces ---------
# (kept in step with the Dockerfile's two RUN steps of the builder stage)
install -D -m 0755 "$BIN" "$CTX/rootfs/credproxy"
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$CTX/rootfs/etc/ssl/certs/ca-certificates.crt"
printf 'credproxy:x:65532:65532:credproxy:/var/lib/credproxy:/sbin/nologin\n' >"$CTX/rootfs/etc/passwd"
printf 'credproxy:x:65532:\n' >"$CTX/rootfs/etc/group"
install -d -m 0755 "$CTX/rootfs/etc/credproxy" "$CTX/rootfs/var/lib"
install -d -m 0700 -o 65532 -g 65532 "$CTX/state/credproxy"

# The runtime stage, taken from the Dockerfile: everything from the last FROM,
# with `COPY --from=builder /x` turned into `COPY x` from the context.
awk '/^FROM /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' "$ROOT/Dockerfile" |
    sed -e 's|--from=builder /rootfs/|rootfs/|' -e 's|--from=builder \(--chown=[0-9:]*\) /state/|\1 state/|' \
        >"$CTX/Containerfile"
if grep -q -- '--from=' "$CTX/Containerfile"; then
    say "the runtime stage copies something this script does not prepare:"
    grep -- '--from=' "$CTX/Containerfile" >&2
    exit 1
fi
say "runtime stage used:"
sed 's/^/    /' "$CTX/Containerfile" >&2

# --docker format keeps HEALTHCHECK and STOPSIGNAL (OCI image config has no
# HEALTHCHECK field).
buildah build --quiet --format docker --isolation chroot -f "$CTX/Containerfile" -t "$IMAGE" "$CTX" >/dev/null

echo "image checks:"
FILE_OUT=$(file -L "$BIN")
check "binary is statically linked ($(cut -d, -f1-5 <<<"${FILE_OUT#*: }"))" grep -q 'static' <<<"$FILE_OUT"
SIZE_BYTES=$(du -sb "$CTX/rootfs" | cut -f1)
check "image content under 20 MB ($((SIZE_BYTES / 1024)) KiB; buildah says $(buildah images --format '{{.Size}}' "$IMAGE"))" \
    test "$SIZE_BYTES" -lt 20000000
inspect() { buildah inspect --type image --format "$1" "$IMAGE"; }
check "USER 65532:65532 ($(inspect '{{.Docker.Config.User}}'))" test "$(inspect '{{.Docker.Config.User}}')" = 65532:65532
check "ENV CREDPROXY_CONFIG=/etc/credproxy/config.toml" grep -q 'CREDPROXY_CONFIG=/etc/credproxy/config.toml' <<<"$(inspect '{{.Docker.Config.Env}}')"
check "VOLUME /var/lib/credproxy" grep -q '/var/lib/credproxy' <<<"$(inspect '{{.Docker.Config.Volumes}}')"
check "EXPOSE 8080 9090 ($(inspect '{{.Docker.Config.ExposedPorts}}'))" grep -q '8080/tcp.*9090/tcp' <<<"$(inspect '{{.Docker.Config.ExposedPorts}}')"
check "STOPSIGNAL SIGTERM" test "$(inspect '{{.Docker.Config.StopSignal}}')" = SIGTERM
check "HEALTHCHECK ($(inspect '{{.Docker.Config.Healthcheck.Test}}'))" grep -q '/credproxy healthcheck' <<<"$(inspect '{{.Docker.Config.Healthcheck.Test}}')"
check "ENTRYPOINT /credproxy, CMD run" test "$(inspect '{{.Docker.Config.Entrypoint}} {{.Docker.Config.Cmd}}')" = "[/credproxy] [run]"

CTR=$(buildah from --quiet "$IMAGE")
MNT=$(buildah mount "$CTR")
STATE=$(stat -c '%u:%g %a' "$MNT/var/lib/credproxy")
check "/var/lib/credproxy is 65532:65532 mode 0700 ($STATE)" test "$STATE" = "65532:65532 700"
check "CA bundle present" test -s "$MNT/etc/ssl/certs/ca-certificates.crt"
check "no shell or other binaries in the image ($(cd "$MNT" && find . -type f | wc -l) files)" \
    test ! -e "$MNT/bin/sh"
buildah umount "$CTR" >/dev/null

# --- run it -------------------------------------------------------------------
# chroot isolation shares the host's network, so the listeners are on the
# host's loopback, on free ports. `credproxy healthcheck` (the image's
# HEALTHCHECK, run exactly as written there) finds the admin listener by
# reading the config through CREDPROXY_CONFIG.
read -r PROXY_PORT ADMIN_PORT UP_PORT < <(python3 -c '
import socket
s = [socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))')

# A token endpoint and an upstream in one small server on the host: POST
# /oauth/token issues a token, GET /echo answers with the Authorization
# header it received.
cat >"$CTX/fake.py" <<'PY'
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def reply(self, body, ctype):
        b = body.encode()
        self.send_response(200)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.reply(json.dumps({"access_token": "verify-token-1", "token_type": "Bearer",
                               "expires_in": 3600}), "application/json")
    def do_GET(self):
        self.reply(self.headers.get("authorization", "") + "\n", "text/plain")
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
python3 "$CTX/fake.py" "$UP_PORT" &
FAKE_PID=$!
cat >"$CTX/config.toml" <<EOF
[proxy]
listen = "127.0.0.1:$PROXY_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
state_dir = "/var/lib/credproxy"

[providers.github]
preset = "static"
hosts = ["api.github.com"]
token = "\${GITHUB_TOKEN}"

[providers.local]
preset = "oauth2"
hosts = ["127.0.0.1:$UP_PORT"]
upstream = "http://127.0.0.1:$UP_PORT"
token_url = "http://127.0.0.1:$UP_PORT/oauth/token"
grant = "client_credentials"
client_id = "verify"
client_secret = "verify-secret"
EOF
RUN_OPTS=(--isolation chroot -v "$CTX/config.toml:/etc/credproxy/config.toml:ro"
    --env GITHUB_TOKEN=verify-not-a-real-token)

echo "run checks:"
check "credproxy check (config found through CREDPROXY_CONFIG)" \
    buildah run "${RUN_OPTS[@]}" "$CTR" -- /credproxy check
buildah run "${RUN_OPTS[@]}" "$CTR" -- /credproxy run >"$CTX/run.log" 2>&1 &
RUN_PID=$!

up=0
for _ in $(seq 1 100); do
    if curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$ADMIN_PORT/healthz"; then up=1; break; fi
    kill -0 "$RUN_PID" 2>/dev/null || break
    sleep 0.1
done
check "credproxy run: /healthz answers 200 on 127.0.0.1:$ADMIN_PORT" test "$up" = 1
if [[ $up == 1 ]]; then
    code=""
    for _ in $(seq 1 50); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$ADMIN_PORT/readyz")
        [[ $code == 200 ]] && break
        sleep 0.2
    done
    check "/readyz answers 200 once the OAuth 2 token has come ($code)" test "$code" = 200
    got=$(curl -s --max-time 5 -x "http://127.0.0.1:$PROXY_PORT" "http://127.0.0.1:$UP_PORT/echo")
    check "a request through the proxy reaches the upstream with the token ('$got')" \
        test "$got" = "Bearer verify-token-1"
    # The process in the container: a descendant of `buildah run`.
    descendants() { local p; for p in $(pgrep -P "$1"); do echo "$p"; descendants "$p"; done; }
    CP_PID=""
    for p in $(descendants "$RUN_PID"); do
        if [[ $(readlink "/proc/$p/exe" 2>/dev/null) == */credproxy ]]; then CP_PID=$p; fi
    done
    if [[ -n $CP_PID ]]; then
        uid=$(awk '/^Uid:/ { print $2 }' "/proc/$CP_PID/status")
        check "runs as uid 65532 (uid $uid)" test "$uid" = 65532
        rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$CP_PID/status")
        echo "  info  idle RSS in the container: $((rss / 1024)) MiB"
        # The state directory as the process sees it: buildah run, like
        # Docker, puts an image VOLUME on a fresh volume seeded from the image.
        STORE=$(cd "/proc/$CP_PID/root/var/lib/credproxy" &&
            find . -printf '%p %u:%g %m\n' | sort)
        echo "  info  /var/lib/credproxy in the running container: ${STORE//$'\n'/; }"
        check "state dir is 65532:65532 mode 0700 in the running container" \
            grep -q '^\. 65532:65532 700$' <<<"$STORE"
        check "the token store wrote a file owned by 65532, mode 0600" \
            grep -q '\.json 65532:65532 600$' <<<"$STORE"
    else
        check "found the credproxy process under buildah run" false
    fi
    check "credproxy healthcheck exits 0 while serving" \
        buildah run "${RUN_OPTS[@]}" "$CTR" -- /credproxy healthcheck
    start=$(date +%s%N)
    kill -TERM "${CP_PID:-$RUN_PID}"
    rc=0
    wait "$RUN_PID" || rc=$?
    RUN_PID=""
    ms=$((($(date +%s%N) - start) / 1000000))
    check "SIGTERM: exits within 10 s with status 0 (status $rc after $ms ms)" test "$rc" = 0 -a "$ms" -lt 10000
    rc=0
    buildah run "${RUN_OPTS[@]}" "$CTR" -- /credproxy healthcheck >/dev/null 2>&1 || rc=$?
    check "credproxy healthcheck exits 1 once stopped (status $rc)" test "$rc" = 1
fi
if [[ $FAILS -gt 0 ]]; then
    echo "credproxy run output:"
    sed 's/^/    /' "$CTX/run.log" 2>/dev/null | tail -n 20
fi
echo "$FAILS check(s) failed"
exit $((FAILS > 0))
