#!/usr/bin/env bash
# Fetches Cluster API's CustomResourceDefinitions (MachineDeployment, MachineSet, Machine,
# MachinePool, Cluster) from the Go module sigs.k8s.io/cluster-api through the Go module proxy,
# into a cache directory outside the repo:
#
#   ${KUBESCALER_CACHE:-$HOME/.cache/kubescaler}/capi-crds/<version>/
#
# Idempotent: when the five files are already there it returns at once. Progress goes to
# stderr; the last line of stdout is that directory. The end-to-end tests of the Cluster API
# provider read it from KUBESCALER_CAPI_CRDS (.ci/run exports it); a developer runs
#
#   export KUBESCALER_CAPI_CRDS=$(bash hack/capi-crds.sh | tail -n1)
#
# The CRDs serve v1beta1 (deprecated) and v1beta2 (stored), with no conversion webhook.
#
# Environment:
#   KUBESCALER_CACHE     cache root (default $HOME/.cache/kubescaler)
#   KUBESCALER_REFETCH=1 fetch and copy again even if the files exist
set -euo pipefail

# The one place the Cluster API version is named.
CAPI_MODULE=sigs.k8s.io/cluster-api
CAPI_VERSION=v1.14.2
# Where the module zip keeps them (from v1.14; up to v1.13 it was config/crd/bases).
CRD_SUBDIR=core/config/crd/bases
KINDS=(machinedeployments machinesets machines machinepools clusters)

log() { printf '[capi-crds] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

CACHE_ROOT=${KUBESCALER_CACHE:-$HOME/.cache/kubescaler}
OUT_DIR=$CACHE_ROOT/capi-crds/$CAPI_VERSION

have_all() {
    local k
    for k in "${KINDS[@]}"; do [[ -s $OUT_DIR/cluster.x-k8s.io_$k.yaml ]] || return 1; done
}

source "$(dirname "${BASH_SOURCE[0]}")/cache.sh"
reuse_or_lock "$CACHE_ROOT/capi-crds/.fetch.lock" "$CAPI_MODULE@$CAPI_VERSION" have_all \
    "${KUBESCALER_REFETCH:-0}" "$OUT_DIR"
command -v go >/dev/null || die "go not found in PATH"

# A module cache of our own inside the cache root (writable, so that `rm -rf` of the cache
# works), and a working directory outside any module so that no go.mod is read or touched.
export GOMODCACHE=$CACHE_ROOT/capi-crds/gomod GOWORK=off GOFLAGS="${GOFLAGS:-} -modcacherw"
work=$(mktemp -d)
tmp=""
trap 'rm -rf "$work" ${tmp:+"$tmp"}' EXIT

log "downloading $CAPI_MODULE@$CAPI_VERSION through the Go module proxy (GOPROXY) ..."
json=$(cd "$work" && go mod download -json "$CAPI_MODULE@$CAPI_VERSION") ||
    die "go mod download $CAPI_MODULE@$CAPI_VERSION failed${json:+: $json}"
# The JSON has one "Dir": "<path>" line; an "Error" field means the module was refused.
if grep -q '"Error"' <<<"$json"; then
    die "go mod download $CAPI_MODULE@$CAPI_VERSION: $json"
fi
dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")
[[ -n $dir && -d $dir/$CRD_SUBDIR ]] || die "no $CRD_SUBDIR in the module (Dir=${dir:-none})"

tmp=$(mktemp -d "$CACHE_ROOT/capi-crds/.$CAPI_VERSION.XXXXXX")
chmod 0755 "$tmp"
for k in "${KINDS[@]}"; do
    src=$dir/$CRD_SUBDIR/cluster.x-k8s.io_$k.yaml
    [[ -s $src ]] || die "$src is missing"
    grep -q '^kind: CustomResourceDefinition$' "$src" || die "$src is not a CustomResourceDefinition"
    install -m 0644 "$src" "$tmp/"
done
rm -rf "$OUT_DIR"
mv "$tmp" "$OUT_DIR"
tmp=""
log "copied ${#KINDS[@]} CRDs of $CAPI_MODULE@$CAPI_VERSION to $OUT_DIR"
echo "$OUT_DIR"
