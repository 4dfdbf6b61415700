#!/usr/bin/env bash
# Builds the `helm` command line from its Go module (helm.sh/helm/v4) through the Go module
# proxy, into a cache directory outside the repo:
#
#   ${KUBESCALER_CACHE:-$HOME/.cache/kubescaler}/helm/<version>/bin/helm
#
# Idempotent: when the binary is already there (and says it is that version) it returns at
# once. Progress goes to stderr; the last line of stdout is the binary's path. The tests of the
# Helm chart (deploy/helm/kubescaler, tests/e2e_deploy.rs) read it from KUBESCALER_HELM
# (.ci/run exports it); a developer runs
#
#   export KUBESCALER_HELM=$(bash hack/helm.sh | tail -n1)
#
# Environment:
#   KUBESCALER_CACHE      cache root (default $HOME/.cache/kubescaler)
#   KUBESCALER_REBUILD=1  build again even if the binary exists
#
# A cold build (empty Go build cache) takes several minutes on 2 cores.
set -euo pipefail

# The one place the Helm version is named.
HELM_MODULE=helm.sh/helm/v4
HELM_VERSION=v4.3.2

log() { printf '[helm] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

CACHE_ROOT=${KUBESCALER_CACHE:-$HOME/.cache/kubescaler}
OUT_DIR=$CACHE_ROOT/helm/$HELM_VERSION
BIN=$OUT_DIR/bin/helm

# The binary is there and reports the pinned version (a half-written or foreign file is not).
have_it() {
    [[ -x $BIN ]] || return 1
    local v
    v=$("$BIN" version --template '{{.Version}}' 2>/dev/null) || return 1
    [[ $v == "$HELM_VERSION" ]]
}

source "$(dirname "${BASH_SOURCE[0]}")/cache.sh"
reuse_or_lock "$CACHE_ROOT/helm/.build.lock" "$HELM_MODULE@$HELM_VERSION" have_it \
    "${KUBESCALER_REBUILD:-0}" "$BIN"
command -v go >/dev/null || die "go not found in PATH"

# Build into a fresh directory and move the binary into place, so that a build that fails or
# is interrupted leaves no binary behind. Run outside any module, so that no go.mod is read or
# touched; `go install module@version` uses the module's own go.mod and go.sum.
work=$(mktemp -d)
tmp=$(mktemp -d "$CACHE_ROOT/helm/.$HELM_VERSION.XXXXXX")
trap 'rm -rf "$work" "$tmp"' EXIT
export GOWORK=off GOFLAGS="${GOFLAGS:-} -modcacherw" CGO_ENABLED=0 GOBIN=$tmp
# Helm's own Makefile stamps the version through -ldflags; without it `helm version` says the
# module's default. Stamp the pinned version so that have_it can check it.
ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION"

start=$SECONDS
log "building $HELM_MODULE/cmd/helm@$HELM_VERSION through the Go module proxy (GOPROXY) ..."
(cd "$work" && go install -trimpath -ldflags "$ldflags" "$HELM_MODULE/cmd/helm@$HELM_VERSION") ||
    die "go install $HELM_MODULE/cmd/helm@$HELM_VERSION failed"
[[ -x $tmp/helm ]] || die "go install left no helm binary in $tmp"

mkdir -p "$OUT_DIR/bin"
mv -f "$tmp/helm" "$BIN.new"
mv -f "$BIN.new" "$BIN"
have_it || die "$BIN does not report version $HELM_VERSION: $("$BIN" version 2>&1 || true)"
log "built $HELM_MODULE@$HELM_VERSION in $((SECONDS - start))s: $BIN"
echo "$BIN"
