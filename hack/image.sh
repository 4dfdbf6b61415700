#!/usr/bin/env bash
# Builds kubescaler's container image as an OCI image layout, without a container daemon:
# umoci (github.com/opencontainers/umoci, built from its Go module into a cache outside the
# repo) assembles the layers and the image config. The contents are those of the Dockerfile's
# final stage, as far as they can be had without pulling distroless:
#
#   /kubescaler                            the static release binary (hack/static-build.sh)
#   /etc/passwd, /etc/group                root, nobody and nonroot (65532), as distroless has
#   /etc/nsswitch.conf                     "hosts: files dns"
#   /etc/ssl/certs/ca-certificates.crt     this machine's (Debian's ca-certificates)
#   /usr/share/zoneinfo                    this machine's (Debian's tzdata), when present
#   /tmp (1777), /root, /home/nonroot      empty directories
#
# and the config the Dockerfile gives, read from it (so that the two cannot drift): its
# LABELs, USER, EXPOSE and ENTRYPOINT; plus distroless' PATH and SSL_CERT_FILE. Two layers,
# like the Dockerfile's: the base, then the binary. Docker stays the documented way to build
# the image (README, Deploy to a cluster); tests/e2e_image.rs runs this one with runc.
#
# Usage: hack/image.sh [--binary PATH] [OUT_DIR]
#   --binary PATH   the static binary to ship (default: build it with hack/static-build.sh,
#                   CARGO_TARGET_DIR defaulting to target/static as in CI); also
#                   KUBESCALER_STATIC_BIN
#   OUT_DIR         where the layout goes: OUT_DIR/oci (default: KUBESCALER_IMAGE_DIR, else
#                   target/image); rebuilt from scratch each run
#   Progress goes to stderr. Stdout is two lines to eval, as `hack/controlplane.sh start`'s:
#     export KUBESCALER_UMOCI=<umoci binary>
#     export KUBESCALER_IMAGE=<layout dir>:<tag>      (tag: the crate version)
#   so  eval "$(bash hack/image.sh)"  then  cargo test --test e2e_image.
#
# Needs root (the files' owners go into the layers as they are on disk), go (first run only)
# and the files above. Environment: KUBESCALER_CACHE (default ~/.cache/kubescaler).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

UMOCI_MODULE=github.com/opencontainers/umoci
UMOCI_VERSION=v0.6.0

log() { printf '[image] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

binary=${KUBESCALER_STATIC_BIN:-}
out_dir=${KUBESCALER_IMAGE_DIR:-$ROOT/target/image}
while (($#)); do
    case $1 in
        --binary) [[ $# -ge 2 ]] || die "--binary needs a path"; binary=$2; shift 2 ;;
        --binary=*) binary=${1#--binary=}; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
        -*) die "unknown option $1" ;;
        *) out_dir=$1; shift ;;
    esac
done
[[ $EUID -eq 0 ]] || die "run as root: the layers record the files' owners (root, and 65532 for /home/nonroot)"
started=$SECONDS

# --- umoci, from the Go module proxy, cached ---------------------------------------------------
CACHE_ROOT=${KUBESCALER_CACHE:-$HOME/.cache/kubescaler}
UMOCI_DIR=$CACHE_ROOT/umoci/$UMOCI_VERSION
UMOCI=$UMOCI_DIR/umoci
if ! "$UMOCI" --version >/dev/null 2>&1; then
    command -v go >/dev/null || die "go not found in PATH (needed once, to build umoci)"
    mkdir -p "$UMOCI_DIR"
    exec 9>"$UMOCI_DIR/.build.lock"
    flock 9
    if ! "$UMOCI" --version >/dev/null 2>&1; then
        log "building $UMOCI_MODULE@$UMOCI_VERSION (once, into $UMOCI_DIR)"
        # `go install module@version` refuses umoci: its go.mod has a replace directive. So:
        # fetch the module (checked against the Go checksum database) and build it in place.
        src=$(go mod download -json "$UMOCI_MODULE@$UMOCI_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
        [[ -d $src ]] || die "go mod download gave no directory for $UMOCI_MODULE@$UMOCI_VERSION"
        (cd "$src" && GOFLAGS=-mod=mod go build -trimpath -o "$UMOCI.tmp" ./cmd/umoci) >&2
        mv "$UMOCI.tmp" "$UMOCI"
    fi
    exec 9>&-
fi
log "$("$UMOCI" --version | head -n1) at $UMOCI"

# --- the binary ---------------------------------------------------------------------------------
if [[ -z $binary ]]; then
    binary=$(CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/static} bash hack/static-build.sh | tail -n1)
fi
[[ -x $binary ]] || die "no executable binary at '$binary'"
if readelf -lW "$binary" | grep -q 'Requesting program interpreter'; then
    die "$binary is dynamically linked: the image has no libc (build it with hack/static-build.sh)"
fi
version=$("$binary" --version) || die "$binary --version failed"
tag=${version#kubescaler }
[[ $tag =~ ^[0-9A-Za-z._-]+$ ]] || die "cannot make a tag of '$version'"

# --- what the Dockerfile's final stage says ----------------------------------------------------
# The instructions after the last FROM, continuation lines joined.
final_stage=$(awk '/^FROM /{buf=""; next} {buf = buf $0 "\n"} END {printf "%s", buf}' Dockerfile \
    | sed -e ':a' -e '/\\$/N; s/\\\n//; ta' | grep -v '^\s*#')
instruction() { sed -n "s/^$1[[:space:]]\{1,\}//p" <<<"$final_stage"; }
mapfile -t labels < <(instruction LABEL | grep -oE '[A-Za-z0-9._-]+="[^"]*"' | sed 's/"//g')
user=$(instruction USER)
ports=$(instruction EXPOSE)
entrypoint_json=$(instruction ENTRYPOINT)
[[ ${#labels[@]} -gt 0 && -n $user && -n $ports && -n $entrypoint_json ]] \
    || die "the Dockerfile's final stage lacks LABEL, USER, EXPOSE or ENTRYPOINT"
[[ $entrypoint_json =~ ^\[(\"[^\"]*\"(,[[:space:]]*\"[^\"]*\")*)\]$ ]] \
    || die "ENTRYPOINT is not in exec form: $entrypoint_json"
mapfile -t entrypoint < <(grep -oE '"[^"]*"' <<<"${BASH_REMATCH[1]}" | sed 's/"//g')

# --- the root filesystem, staged as two layers --------------------------------------------------
CA=/etc/ssl/certs/ca-certificates.crt
ZONEINFO=/usr/share/zoneinfo
[[ -s $CA ]] || die "no $CA (Debian: apt-get install ca-certificates)"
mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd)
layout=$out_dir/oci
stage=$out_dir/stage
rm -rf "$layout" "$stage"
mkdir -p "$stage/base" "$stage/app"
base=$stage/base
install -d -m 0755 "$base/etc" "$base/etc/ssl" "$base/etc/ssl/certs" "$base/home" "$base/usr" "$base/usr/share"
install -d -m 1777 "$base/tmp"
install -d -m 0700 "$base/root"
install -d -m 0700 -o 65532 -g 65532 "$base/home/nonroot"
cat >"$base/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
cat >"$base/etc/group" <<'EOF'
root:x:0:
tty:x:5:
staff:x:50:
nobody:x:65534:
nonroot:x:65532:
EOF
echo 'hosts: files dns' >"$base/etc/nsswitch.conf"
chmod 0644 "$base/etc/passwd" "$base/etc/group" "$base/etc/nsswitch.conf"
install -m 0644 "$CA" "$base$CA"
if [[ -d $ZONEINFO ]]; then
    cp -a "$ZONEINFO" "$base$ZONEINFO"
    chown -R -h 0:0 "$base$ZONEINFO"
else
    log "no $ZONEINFO on this machine: the image has no tzdata (Debian: apt-get install tzdata)"
fi
install -m 0755 -o 0 -g 0 "$binary" "$stage/app/kubescaler"
# One date for every file and for the image (the last commit's), so that the same inputs make
# the same layers.
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
find "$stage" -exec touch -h -d "@$epoch" {} +

# --- the image ----------------------------------------------------------------------------------
ref=$layout:$tag
"$UMOCI" init --layout "$layout"
"$UMOCI" new --image "$ref"
"$UMOCI" insert --image "$ref" --history.created "$created" \
    --history.created_by "hack/image.sh: base (passwd, group, CA certificates, tzdata)" \
    "$base" /
"$UMOCI" insert --image "$ref" --history.created "$created" \
    --history.created_by "hack/image.sh: COPY kubescaler /kubescaler" \
    "$stage/app/kubescaler" /kubescaler
config_args=(--created "$created" --history.created "$created" --os linux --architecture amd64
    --config.user "$user"
    --config.env "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    --config.env "SSL_CERT_FILE=$CA")
for e in "${entrypoint[@]}"; do config_args+=(--config.entrypoint "$e"); done
for p in $ports; do [[ $p == */* ]] || p=$p/tcp; config_args+=(--config.exposedports "$p"); done
for l in "${labels[@]}"; do config_args+=(--config.label "$l"); done
"$UMOCI" config --image "$ref" --history.created_by "hack/image.sh: config from the Dockerfile" \
    "${config_args[@]}"
"$UMOCI" gc --layout "$layout"
rm -rf "$stage"

manifest=$(grep -oE '"digest":"sha256:[0-9a-f]+"' "$layout/index.json" | head -n1 | cut -d'"' -f4)
layers_kib=$(du -sk --apparent-size "$layout/blobs" | cut -f1)
log "built $ref in $((SECONDS - started)) s: manifest $manifest, blobs $((layers_kib / 1024)).$(((layers_kib % 1024) * 10 / 1024)) MiB (compressed), binary $(du -h "$binary" | cut -f1)"
log "run it: eval \"\$(bash hack/image.sh)\" && cargo test --test e2e_image"
printf 'export KUBESCALER_UMOCI=%q\n' "$UMOCI"
printf 'export KUBESCALER_IMAGE=%q\n' "$ref"
