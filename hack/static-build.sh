#!/usr/bin/env bash
# Builds kubescaler as a fully static release binary and checks it: THE build command of the
# container image (Dockerfile) and of CI (.ci/run), so both build the binary the same way.
#
# Usage: hack/static-build.sh
#   Progress goes to stderr; the last line of stdout is the binary's path, so
#     BIN=$(hack/static-build.sh | tail -n1)
#   Exit 0 only when the binary was built, is static (no ELF interpreter, no shared library
#   needed) and `kubescaler --version` runs and prints "kubescaler <version>".
#
# Method, first that applies:
#   1. musl: when the Rust standard library for x86_64-unknown-linux-musl is installed
#      (`rustup target add x86_64-unknown-linux-musl`; the Dockerfile does that). musl targets
#      link statically by default. This is what the image ships: a static musl binary resolves
#      host names (the cloud API) without any libc files in the image.
#   2. static glibc: otherwise, `-C target-feature=+crt-static` on x86_64-unknown-linux-gnu,
#      which needs nothing but the gnu toolchain and glibc's static libraries (libc6-dev).
#      Good for checking the build in CI; NOT for the distroless/static image: glibc's
#      getaddrinfo in a static binary loads NSS modules at run time, which that image lacks.
#
# Environment:
#   KUBESCALER_STATIC_TARGET=musl|gnu   force a method (fail if it cannot be used)
#   KUBESCALER_STATIC_REQUIRE_MUSL=1    fail instead of falling back to static glibc (Dockerfile)
#   CARGO_TARGET_DIR                    cargo's output dir (default ./target); a separate one,
#                                       e.g. /tmp/ks-static-target, keeps the release build
#                                       from locking the dev build dir
#   CARGO_BUILD_JOBS, RUSTFLAGS         passed to cargo as usual (RUSTFLAGS is extended)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

log() { printf '[static-build] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

ARCH=$(uname -m)
[[ $ARCH == x86_64 ]] || die "only x86_64 is supported (this machine is $ARCH)"
MUSL=x86_64-unknown-linux-musl
GNU=x86_64-unknown-linux-gnu

# Is the Rust standard library for a target installed (no rustup needed to tell)?
has_std() { # <target>
    local libdir
    libdir=$(rustc --print target-libdir --target "$1" 2>/dev/null) || return 1
    compgen -G "$libdir/libstd-*.rlib" >/dev/null
}

method=${KUBESCALER_STATIC_TARGET:-}
case $method in
    "") if has_std "$MUSL"; then method=musl
        elif [[ ${KUBESCALER_STATIC_REQUIRE_MUSL:-} == 1 ]]; then
            die "KUBESCALER_STATIC_REQUIRE_MUSL=1 but the $MUSL standard library is not installed (rustup target add $MUSL)"
        else method=gnu; log "the $MUSL standard library is not installed: static glibc build"
        fi ;;
    musl) has_std "$MUSL" || die "KUBESCALER_STATIC_TARGET=musl but the $MUSL standard library is not installed (rustup target add $MUSL)" ;;
    gnu) [[ ${KUBESCALER_STATIC_REQUIRE_MUSL:-} != 1 ]] || die "KUBESCALER_STATIC_TARGET=gnu contradicts KUBESCALER_STATIC_REQUIRE_MUSL=1" ;;
    *) die "KUBESCALER_STATIC_TARGET must be musl or gnu, not '$method'" ;;
esac

# --target is always explicit: RUSTFLAGS then apply to kubescaler and its dependencies only,
# not to build scripts and proc macros (which must stay dynamic host programs).
if [[ $method == musl ]]; then
    target=$MUSL
    # C code of dependencies (ring) is compiled for the target. cc-rs looks for
    # x86_64-linux-musl-gcc only; use Debian's musl-tools wrapper (musl-gcc) when that is
    # missing, else the host cc (ring's C and assembly need no libc headers beyond the
    # compiler's own, so that links fine into a musl binary).
    if [[ -z ${CC_x86_64_unknown_linux_musl:-} ]] && ! command -v x86_64-linux-musl-gcc >/dev/null; then
        if command -v musl-gcc >/dev/null; then
            export CC_x86_64_unknown_linux_musl=musl-gcc
        else
            command -v cc >/dev/null || die "no C compiler for $MUSL: install musl-tools (or gcc)"
            log "no musl-gcc (Debian: musl-tools): compiling C code for $MUSL with the host cc"
            export CC_x86_64_unknown_linux_musl=cc
        fi
    fi
    export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static"
else
    target=$GNU
    export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static"
fi

log "$(rustc --version); method: $method ($target); RUSTFLAGS='$RUSTFLAGS'"
start=$SECONDS
cargo build --release --locked --bin kubescaler --target "$target" >&2
log "built in $((SECONDS - start)) s"

target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $target_dir == /* ]] || target_dir=$ROOT/$target_dir
bin=$target_dir/$target/release/kubescaler
[[ -x $bin ]] || die "no binary at $bin"

# --- checks -----------------------------------------------------------------------------

# Static: no program interpreter (PT_INTERP) and no shared library needed (DT_NEEDED).
# (A static-pie binary still has a dynamic section, but needs nothing.)
command -v readelf >/dev/null || die "readelf (binutils) is needed to check the binary"
if readelf -lW "$bin" | grep -q 'Requesting program interpreter'; then
    die "$bin has an ELF interpreter: it is dynamically linked"
fi
if readelf -dW "$bin" 2>/dev/null | grep -q '(NEEDED)'; then
    die "$bin needs shared libraries: $(readelf -dW "$bin" | grep '(NEEDED)' | tr -s ' ' | tr '\n' ';')"
fi
if command -v file >/dev/null; then
    desc=$(file -b "$bin")
    log "file: $desc"
    [[ $desc == *"statically linked"* || $desc == *"static-pie linked"* ]] \
        || die "file(1) does not call $bin static: $desc"
fi
if command -v ldd >/dev/null; then
    # ldd exits non-zero for "not a dynamic executable": only its words matter here.
    out=$(ldd "$bin" 2>&1 || true)
    log "ldd: $out"
    [[ $out == *"not a dynamic executable"* || $out == *"statically linked"* ]] \
        || die "ldd lists shared libraries for $bin: $out"
fi

version=$("$bin" --version) || die "$bin --version failed"
[[ $version == "kubescaler "* ]] || die "$bin --version printed '$version', not 'kubescaler <version>'"
log "$version; $(du -h "$bin" | cut -f1) at $bin"

echo "$bin"
