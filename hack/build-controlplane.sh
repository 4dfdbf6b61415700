#!/usr/bin/env bash
# Builds a local Kubernetes control plane (kube-apiserver, kube-scheduler, etcd)
# from the official Go modules pinned in hack/controlplane/go.mod and
# hack/controlplane/etcd/go.mod, into a cache directory outside the repo:
#
#   ${KUBESCALER_CACHE:-$HOME/.cache/kubescaler}/controlplane/<k8s-version>-<etcd-version>/bin/
#
# Idempotent: when the three binaries are already there it returns at once.
# Progress goes to stderr; the last line of stdout is the bin directory, so
#   BIN=$(hack/build-controlplane.sh | tail -n1)
#
# Environment:
#   KUBESCALER_CACHE   cache root (default $HOME/.cache/kubescaler)
#   KUBESCALER_REBUILD=1  rebuild even if the binaries exist
#
# A cold build (empty Go build cache) takes about half an hour on 2 cores;
# the Go module and build caches (go env GOMODCACHE GOCACHE) make later builds
# of another version faster.
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MOD_DIR=$HACK_DIR/controlplane
ETCD_MOD_DIR=$MOD_DIR/etcd

log() { printf '[build-controlplane] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# The version a go.mod requires for a module, single-line or block form.
required_version() { # <go.mod> <module>
    awk -v m="$2" '
        $1 == "require" && $2 == m { print $3; exit }
        $1 == m && $2 ~ /^v/ { print $2; exit }
    ' "$1"
}

K8S_VERSION=$(required_version "$MOD_DIR/go.mod" k8s.io/kubernetes)
ETCD_VERSION=$(required_version "$ETCD_MOD_DIR/go.mod" go.etcd.io/etcd/server/v3)
[[ -n $K8S_VERSION ]] || die "no k8s.io/kubernetes requirement in $MOD_DIR/go.mod"
[[ -n $ETCD_VERSION ]] || die "no go.etcd.io/etcd/server/v3 requirement in $ETCD_MOD_DIR/go.mod"

CACHE_ROOT=${KUBESCALER_CACHE:-$HOME/.cache/kubescaler}
OUT_DIR=$CACHE_ROOT/controlplane/$K8S_VERSION-$ETCD_VERSION
BIN_DIR=$OUT_DIR/bin
BINARIES=(kube-apiserver kube-scheduler etcd)

have_all() {
    local b
    for b in "${BINARIES[@]}"; do [[ -x $BIN_DIR/$b ]] || return 1; done
}

source "$(dirname "${BASH_SOURCE[0]}")/cache.sh"
# Serialise concurrent builds of the same version (e.g. parallel test runs).
reuse_or_lock "$OUT_DIR/.build.lock" "Kubernetes $K8S_VERSION, etcd $ETCD_VERSION" have_all \
    "${KUBESCALER_REBUILD:-0}" "$BIN_DIR"

command -v go >/dev/null || die "go not found in PATH"

# Every staging module must be replaced by its published v0.<minor>.<patch>.
STAGING_VERSION=v0.${K8S_VERSION#v1.}
bad_replaces=$(awk -v want="$STAGING_VERSION" '
    $2 == "=>" && $1 ~ /^k8s\.io\// && ($3 != $1 || $4 != want) { print }
' "$MOD_DIR/go.mod")
[[ -z $bad_replaces ]] || die "replace lines in $MOD_DIR/go.mod do not match $STAGING_VERSION:
$bad_replaces"

mkdir -p "$OUT_DIR"

TMP_BIN=$(mktemp -d "$OUT_DIR/.bin.XXXXXX")
trap 'rm -rf "$TMP_BIN"' EXIT

export CGO_ENABLED=0 GOWORK=off GOFLAGS="${GOFLAGS:-} -mod=readonly"
unset GOOS GOARCH

# Same version stamping as upstream's hack/lib/version.sh, so /version and
# `kube-apiserver --version` report the real release.
minor=${K8S_VERSION#v1.}
minor=${minor%%.*}
stamp=""
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    stamp+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    stamp+=" -X $pkg.gitTreeState=clean"
done

start=$SECONDS
log "building kube-apiserver and kube-scheduler $K8S_VERSION (go $(go env GOVERSION), nice 10) ..."
(
    cd "$MOD_DIR"
    nice -n 10 go build -trimpath -ldflags="-s -w$stamp" -o "$TMP_BIN/" \
        k8s.io/kubernetes/cmd/kube-apiserver \
        k8s.io/kubernetes/cmd/kube-scheduler
)
log "kube-apiserver and kube-scheduler built in $((SECONDS - start))s"

t=$SECONDS
log "building etcd $ETCD_VERSION ..."
(
    cd "$ETCD_MOD_DIR"
    nice -n 10 go build -trimpath -ldflags="-s -w" -o "$TMP_BIN/etcd" .
)
log "etcd built in $((SECONDS - t))s"

mkdir -p "$BIN_DIR"
for b in "${BINARIES[@]}"; do
    mv -f "$TMP_BIN/$b" "$BIN_DIR/$b"
done
log "done in $((SECONDS - start))s: $BIN_DIR"
echo "$BIN_DIR"
