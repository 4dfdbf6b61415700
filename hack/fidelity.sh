#!/usr/bin/env bash
# Simulator fidelity (issue 12): replays one demand trace in compressed time against the real
# kubescaler binary, the DOKS fake (hack/doks-fake, in-process, registering pool nodes as Nodes
# after a boot delay) and a real local control plane (kube-apiserver + etcd + kube-scheduler),
# runs `kubescaler simulate` on the same trace, config and seed, and reports both side by side:
# instant-start %, p99 wait, node-hours, cordons, uncordons, deletions, server pods killed.
# Targets: instant starts within 2 percentage points, node-hours within 5 %, no server pod
# killed; exits 1 and says MISSED otherwise. Not part of `cargo test`: about 35 minutes (the
# trace's 30 minutes in real time, plus building and start-up) on 2 cores.
#
# Usage: bash hack/fidelity.sh [OPTIONS OF examples/fidelity.rs]
#   e.g. bash hack/fidelity.sh --seed 7 --buffer 6
#   (options: cargo run --release --example fidelity -- --help)
#
# What it does:
#   1. writes the trace, $FIDELITY_OUT/trace.csv (time,concurrent_sessions): 10 sessions,
#      a ramp to 60, a hold, a ramp down to 5, over $FIDELITY_SECS seconds; sessions of 60 s
#      on average (simulate clamps every session to at least 60 s), 4 servers per node, boot
#      delay 5 s, tick 1 s, empty-node-expiration 3 s, scale-down holds 10 s;
#   2. builds $CARGO_TARGET_DIR (default target/)/release/kubescaler and the fidelity example (nice'd, release);
#   3. starts a dedicated control plane (hack/controlplane.sh) in $KUBESCALER_RUN_DIR; a plane
#      already running there is stopped first: the run needs an empty cluster;
#   4. runs that build's examples/fidelity, which runs `kubescaler simulate`, then the
#      replay (see the example's docs), and writes the report;
#   5. copies the control plane's log tails next to the report and stops the plane (also on
#      failure or Ctrl-C).
#
# Environment:
#   KUBESCALER_RUN_DIR   control plane run dir (default /tmp/cp-fidelity); removed at the end
#   FIDELITY_OUT         report dir (default /tmp/kubescaler-fidelity): report.txt,
#                        report.json, series.csv, sessions.csv, trace.csv, kubescaler.yaml,
#                        kubescaler.log, simulate/ (simulate's report.json and chart.svg)
#   FIDELITY_SECS        length of the trace in seconds (default 1800; e.g. 300 for a smoke
#                        run, whose figures mean little)
#   FIDELITY_KEEP=1      leave the control plane running at the end (stop it with
#                        KUBESCALER_RUN_DIR=... bash hack/controlplane.sh stop)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export KUBESCALER_RUN_DIR=${KUBESCALER_RUN_DIR:-/tmp/cp-fidelity}
# kubescaler's requests need no audit trail here.
export KUBESCALER_AUDIT=${KUBESCALER_AUDIT:-off}
OUT=${FIDELITY_OUT:-/tmp/kubescaler-fidelity}
SECS=${FIDELITY_SECS:-1800}
LOG_TAG=fidelity
# shellcheck source=hack/lib.sh
. "$ROOT/hack/lib.sh"

[[ $SECS =~ ^[0-9]+$ ]] && ((SECS >= 60)) || { log "FIDELITY_SECS must be a number of seconds >= 60"; exit 2; }

KEEP=${FIDELITY_KEEP:-0}
COPY_AUDIT=0
FAILED="FAILED or MISSED"
FAILED_FILES="report and logs"
on_exit_cleanup

cd "$ROOT"
mkdir -p "$OUT"
rm -rf "$OUT"/report.txt "$OUT"/report.json "$OUT"/simulate

# The trace: points at fractions of the span (integer seconds, increasing).
at() { echo $((SECS * $1 / 1000)); }
{
    echo "time,concurrent_sessions"
    echo "0,10"
    echo "$(at 133),10"
    echo "$(at 400),60"
    echo "$(at 667),60"
    echo "$(at 867),5"
    echo "$SECS,5"
} >"$OUT/trace.csv"
log "trace $OUT/trace.csv: $(tail -n +2 "$OUT/trace.csv" | tr '\n' ' ')"

build_example fidelity
start_fresh_plane

cmd="bash hack/fidelity.sh"
[[ $SECS != 1800 ]] && cmd="FIDELITY_SECS=$SECS $cmd"
(($# > 0)) && cmd+=" $*"
run_example fidelity "$cmd" --trace "$OUT/trace.csv" "$@"
