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
#   1. builds $CARGO_TARGET_DIR (default target/)/release/kubescaler and the scale_run example (nice'd, release);
#   2. starts a dedicated control plane (hack/controlplane.sh) in $KUBESCALER_RUN_DIR with the
#      audit log of kubescaler's own identity (KUBESCALER_AUDIT=kubescaler); a plane already
#      running there is stopped first: the run needs an empty cluster;
#   3. runs that build's examples/scale_run, which populates the cluster, serves the
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
LOG_TAG=scale-run
# shellcheck source=hack/lib.sh
. "$ROOT/hack/lib.sh"

KEEP=${SCALE_RUN_KEEP:-0}
COPY_AUDIT=1
FAILED=FAILED
FAILED_FILES=logs
on_exit_cleanup

cd "$ROOT"
mkdir -p "$OUT"
rm -f "$OUT"/report.txt "$OUT"/report.json

build_example scale_run
start_fresh_plane

cmd="bash hack/scale-run.sh"
(($# > 0)) && cmd+=" $*"
run_example scale_run "$cmd" "$@"
