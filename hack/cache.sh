# Shared by the scripts that build or fetch a pinned tool into the cache outside the repo
# (hack/build-controlplane.sh, hack/capi-crds.sh, hack/helm.sh); sourced, not run. The script
# defines `log` and a check that its result is complete, then calls:
#
#   reuse_or_lock LOCKFILE WHAT CHECK AGAIN RESULT
#
# With AGAIN not 1 and CHECK passing, it logs "up to date", prints RESULT and exits 0.
# Otherwise it takes LOCKFILE (waiting while another run of WHAT holds it: parallel test runs,
# CI and a developer's shell), checks again (the other run may have made it) and returns with
# the lock held, for the caller to build.

reuse_or_lock() {
    local lock=$1 what=$2 check=$3 again=$4 result=$5
    if [[ $again != 1 ]] && "$check"; then
        log "up to date: $what"
        echo "$result"
        exit 0
    fi
    command -v flock >/dev/null || return 0
    mkdir -p "$(dirname "$lock")"
    exec 9>"$lock"
    if ! flock -n 9; then
        log "another run for $what is going; waiting for it"
        flock 9
    fi
    if [[ $again != 1 ]] && "$check"; then
        log "made by the other run: $what"
        echo "$result"
        exit 0
    fi
}
