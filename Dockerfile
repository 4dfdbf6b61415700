# syntax=docker/dockerfile:1
# kubescaler container image: a static (musl) release binary on distroless/static, nonroot.
#
#   docker build --platform linux/amd64 -t kubescaler:0.2.0 .    (BuildKit: the cache mounts
#                                                                  need it; x86_64 only)
#
# The binary is built by hack/static-build.sh, the same command CI runs (.ci/run), which
# fails unless the result is static and `kubescaler --version` runs. The final image has no
# shell, no package manager and no libc: only /kubescaler, CA certificates, /etc/passwd with
# the nonroot user, and tzdata, all from distroless. It runs as uid/gid 65532.

ARG RUST_VERSION=1.95.0

# --- build -----------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS build
# musl-tools: musl-gcc for the C code of ring (TLS); binutils and file: the static checks.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools binutils file \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
# KUBESCALER_STATIC_REQUIRE_MUSL=1: never ship the static-glibc fallback, whose DNS lookups
# would need glibc's NSS modules (absent from distroless/static).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    KUBESCALER_STATIC_REQUIRE_MUSL=1 bash hack/static-build.sh > /tmp/binary-path \
 && install -D -m 0755 "$(tail -n1 /tmp/binary-path)" /out/kubescaler

# --- run ---------------------------------------------------------------------------------------
FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="kubescaler" \
      org.opencontainers.image.description="Scales a Kubernetes node pool for stateful dedicated game servers" \
      org.opencontainers.image.source="https://github.com/kubescaler/kubescaler" \
      org.opencontainers.image.licenses="MIT"
COPY --from=build /out/kubescaler /kubescaler
USER 65532:65532
# Starts in the final image, as the final user, with no shell (exec form).
RUN ["/kubescaler", "--version"]
# /healthz, /readyz, /metrics (http-listen-address, default 0.0.0.0:8080)
EXPOSE 8080
ENTRYPOINT ["/kubescaler"]
