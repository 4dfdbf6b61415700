#!/usr/bin/env bash
# Scale run: the real kubescaler binary against a real, local API server holding 1,000 nodes
# (500 of them in kubescaler's pool: the DOKS fake caps a pool at 512) and 30,000 pods
# (10,000 of them game servers). Reports kubescaler's resident memory (target < 100 MB), the time from a
# burst of server pods to its grow call (target p99 < 1 s) and its API requests per idle
# minute (target < 10). Not part of `cargo test`: about 5 minutes on 2 cores, more on a busy
# machine.
#
# Usage: bash hack/scale-run.sh [OPTIONS OF examples/scale_run.rs]
#   e.g. bash hack/scale-run.sh --trials 50 --tick 1
#   (options: cargo run --release --example scale_run -- --help)
#
# What it does:
#   1. builds target/release/kubescaler and the scale_run example (nice'd, release);
#   2. starts a dedicated control plane (hack/controlplane.sh) in $KUBESCALER_RUN_DIR with the
#      audit log of kubescaler's own identity (KUBESCALER_AUDIT=kubescaler); a plane already
#      running there is stopped first: the run needs an empty cluster;
#   3. runs target/release/examples/scale_run, which populates the cluster, serves the
#      DigitalOcean API with the DOKS fake, runs kubescaler against both and measures (see the
#      example's docs);
#   4. copies the audit log and the control plane's logs next to the report, stops the plane
#      (also on failure or Ctrl-C) and prints the report.
#
# Environment:
#   KUBESCALER_RUN_DIR   control plane run dir (default /tmp/cp-scale); removed at the end
#   SCALE_RUN_OUT        report dir (default /tmp/kubescaler-scale-run): report.txt,
#                        report.json, kubescaler.log, kubescaler.yaml, rss.csv, audit.log
#   SCALE_RUN_KEEP=1     leave the control plane running at the end (to look around;
#                        stop it with KUBESCALER_RUN_DIR=... bash hack/controlplane.sh stop)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export KUBESCALER_RUN_DIR=${KUBESCALER_RUN_DIR:-/tmp/cp-scale}
export KUBESCALER_AUDIT=kubescaler
OUT=${SCALE_RUN_OUT:-/tmp/kubescaler-scale-run}
CP=$ROOT/hack/controlplane.sh

log() { printf '[scale-run] %s\n' "$*" >&2; }

started_plane=0
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    # kubescaler is the example's child and dies with it; make sure of it.
    if [[ -f $OUT/kubescaler.pid ]]; then
        local pid
        pid=$(<"$OUT/kubescaler.pid")
        if [[ $pid =~ ^[0-9]+$ ]] && [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == */kubescaler ]]; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
        rm -f "$OUT/kubescaler.pid"
    fi
    if ((started_plane)); then
        if [[ -f $KUBESCALER_RUN_DIR/audit.log ]]; then cp "$KUBESCALER_RUN_DIR/audit.log" "$OUT/" || true; fi
        for c in etcd kube-apiserver kube-scheduler; do
            if [[ -f $KUBESCALER_RUN_DIR/$c.log ]]; then
                tail -n 200 "$KUBESCALER_RUN_DIR/$c.log" >"$OUT/$c.log.tail" || true
            fi
        done
        if [[ ${SCALE_RUN_KEEP:-0} == 1 ]]; then
            log "control plane left running in $KUBESCALER_RUN_DIR"
        else
            bash "$CP" stop || true
        fi
    fi
    if ((rc == 0)); then
        log "done; report in $OUT/report.txt"
    else
        log "FAILED (exit $rc); logs in $OUT"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cd "$ROOT"
mkdir -p "$OUT"
rm -f "$OUT"/report.txt "$OUT"/report.json

log "building kubescaler and the scale_run example (release)"
nice -n 10 cargo build --release --locked --bin kubescaler --example scale_run

log "starting a fresh control plane in $KUBESCALER_RUN_DIR"
if bash "$CP" status >/dev/null 2>&1; then
    log "a control plane is running in $KUBESCALER_RUN_DIR; stopping it (the run needs an empty cluster)"
fi
bash "$CP" stop >/dev/null 2>&1 || true
started_plane=1
bash "$CP" start >/dev/null

cmd="bash hack/scale-run.sh"
(($# > 0)) && cmd+=" $*"
"$ROOT/target/release/examples/scale_run" \
    --run-dir "$KUBESCALER_RUN_DIR" \
    --kubescaler "$ROOT/target/release/kubescaler" \
    --out "$OUT" \
    --command "$cmd" \
    "$@"
