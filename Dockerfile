# syntax=docker/dockerfile:1
#
# credproxy as a small static image: one binary, CA certificates, nothing else.
#
#   docker build -t credproxy .
#   docker run --rm -v ./credproxy.toml:/etc/credproxy/config.toml:ro \
#       -v credproxy-state:/var/lib/credproxy -p 127.0.0.1:8080:8080 credproxy
#
# The config must listen on 0.0.0.0 (with allow_remote = true and proxy_auth)
# to be reachable from outside the container: see examples/compose/.
# examples/docker/verify.sh builds the runtime stage below from a locally
# built binary (no registry needed) and runs it.

ARG RUST_VERSION=1.95

# ---- builder: a statically linked binary (glibc, crt-static) -----------------
FROM rust:${RUST_VERSION}-bookworm AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
# .dockerignore lets through only what the build needs.
COPY . .
# --target makes RUSTFLAGS apply to the binary only, not to build scripts and
# proc macros (which cannot be static). Statically linked glibc still resolves
# names through /etc/hosts and /etc/resolv.conf, which Docker and Kubernetes
# provide.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(rustc -vV | sed -n 's/^host: //p')" \
    && RUSTFLAGS="-C target-feature=+crt-static" \
       cargo build --release --locked --target "$target" \
    && install -D -m 0755 "target/$target/release/credproxy" /rootfs/credproxy
# The rest of the runtime file system: CA roots, a passwd entry for the
# numeric user (so tools that look it up find a name and a home), the config
# directory, and the state directory (0700, owned by the user: the token
# store refuses a directory others can read).
RUN install -D -m 0644 /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ca-certificates.crt \
    && printf 'credproxy:x:65532:65532:credproxy:/var/lib/credproxy:/sbin/nologin\n' >/rootfs/etc/passwd \
    && printf 'credproxy:x:65532:\n' >/rootfs/etc/group \
    && install -d -m 0755 /rootfs/etc/credproxy /rootfs/var/lib \
    && install -d -m 0700 -o 65532 -g 65532 /state/credproxy

# ---- runtime ------------------------------------------------------------------
FROM scratch
COPY --from=builder /rootfs/ /
# Copying the directory entry (not its contents) keeps its 0700 mode; /var/lib
# already exists, so --chown touches nothing but /var/lib/credproxy.
COPY --from=builder --chown=65532:65532 /state/ /var/lib/
ENV CREDPROXY_CONFIG=/etc/credproxy/config.toml \
    XDG_STATE_HOME=/var/lib \
    HOME=/var/lib/credproxy \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
VOLUME ["/var/lib/credproxy"]
# 8080: the main proxy listener; 9090: admin (/healthz /readyz /metrics).
EXPOSE 8080 9090
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/credproxy", "healthcheck"]
ENTRYPOINT ["/credproxy"]
CMD ["run"]
