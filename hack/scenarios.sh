#!/usr/bin/env bash
# Issue 12's targets across every built-in scenario: runs `kubescaler simulate --compare` for
# each --scenario and seeds 1..3 (override with SEEDS="1 2 3 4"), then prints one row per run
# (the target policy against the cheapest fixed buffer that met target-instant-start in
# hindsight) and checks the targets:
#   - the target policy reaches target-instant-start on every scenario and seed;
#   - its node-hours are at most 2 % above that cheapest fixed buffer, and below it on at
#     least half the runs;
#   - 0 server pods killed in any run.
# Exits 1 if a target is missed. Not part of `cargo test`: about 15 minutes on 2 cores.
#
# Usage: bash hack/scenarios.sh [extra simulate flags, e.g. --target-instant-start 0.995]
# Environment: SCENARIOS_OUT (default /tmp/kubescaler-scenarios), SEEDS, FIXED (the fixed
# buffers compared, default 0..16), LAUNCH_WINDOW (the launch scenario's buffer-schedule,
# default "* 11:50-12:20 UTC buffer=180"; simulated time starts at 00:00 UTC), KUBESCALER_BIN
# (default: $CARGO_TARGET_DIR or ./target, release build, built first).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${SCENARIOS_OUT:-/tmp/kubescaler-scenarios}
SEEDS=${SEEDS:-1 2 3}
FIXED=${FIXED:-0..16}
LAUNCH_WINDOW=${LAUNCH_WINDOW:-* 11:50-12:20 UTC buffer=180}
# SCENARIOS_SUMMARIZE=1: no runs, only the table and the check of $OUT/rows.tsv (kept by an
# earlier run).
if [[ ${SCENARIOS_SUMMARIZE:-} == 1 ]]; then :; elif [[ -z ${KUBESCALER_BIN:-} ]]; then
    (cd "$ROOT" && nice cargo build --release --quiet --bin kubescaler)
    KUBESCALER_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/kubescaler
fi
command -v jq >/dev/null || { echo "hack/scenarios.sh needs jq" >&2; exit 2; }

mkdir -p "$OUT"
rows=$OUT/rows.tsv
[[ ${SCENARIOS_SUMMARIZE:-} == 1 ]] || : >"$rows"
for scenario in weekday weekend launch slow-boot small-nodes big-nodes; do
    [[ ${SCENARIOS_SUMMARIZE:-} == 1 ]] && break
    for seed in $SEEDS; do
        dir=$OUT/$scenario-$seed
        extra=()
        # A launch is a known event that no measurement can foresee: its operator pre-warms
        # the pool with a buffer-schedule window (the figure: about one boot time of the
        # launch's arrivals); the target policy runs before and after it.
        if [[ $scenario == launch ]]; then extra=(--buffer-schedule "$LAUNCH_WINDOW"); fi
        "$KUBESCALER_BIN" simulate --compare --sweep-buffer "$FIXED" --scenario "$scenario" \
            --seed "$seed" --out "$dir" "${extra[@]}" "$@" \
            >"$dir.txt" 2>&1 || { cat "$dir.txt" >&2; exit 1; }
        jq -r --arg s "$scenario" --arg seed "$seed" '
            (.rows[-1].summary) as $t
            | (.cheapest_fixed_meeting_target) as $b
            | ([.rows[:-1][] | select(.summary.buffer == $b)][0].summary) as $f
            | [$s, $seed, .target_instant,
               $t.sessions.instant_share, $t.node_hours,
               ($b // -1), ($f.sessions.instant_share // 0), ($f.node_hours // 0),
               ([.rows[].summary.server_pods_killed] | add),
               (($t.actions.cordon + $t.actions.uncordon) / ([$t.actions.delete, 1] | max))]
            | @tsv' "$dir/compare.json" >>"$rows"
    done
done

awk -F'\t' '
BEGIN {
    printf "%-12s %4s  %14s %11s  %12s %14s %11s  %8s  %9s  %6s\n",
        "scenario", "seed", "target instant", "node-hours", "cheapest fix", "its instant", "node-hours",
        "vs fixed", "churn/del", "killed"
}
{
    vs = ($8 > 0) ? ($5 / $8 - 1) * 100 : 0
    fixed = ($6 >= 0) ? "fixed " $6 : "none"
    printf "%-12s %4s  %13.2f%% %11.2f  %12s %13.2f%% %11.2f  %+7.2f%%  %9.2f  %6d\n",
        $1, $2, $4 * 100, $5, fixed, $7 * 100, $8, vs, $10, $9
    runs++
    if ($4 < $3) { missed_instant++; print "  MISSED: " $1 " seed " $2 " below the instant-start target" }
    if ($6 >= 0 && vs > 2) { missed_cost++; print "  MISSED: " $1 " seed " $2 " more than 2 % above the cheapest fixed buffer" }
    # Cheaper only counts where the target was met: missing it is no saving.
    if ($6 >= 0 && vs < 0 && $4 >= $3) below++
    if ($6 < 0 && $4 >= $3) { below++; nofixed++ }
    if ($9 > 0) { killed++; print "  MISSED: " $1 " seed " $2 " killed server pods" }
}
END {
    printf "\n%d runs: target met on %d, within 2 %% of the cheapest fixed on %d, below it on %d (%d where no fixed buffer met the target), 0 killed on %d\n",
        runs, runs - missed_instant, runs - missed_cost, below, nofixed, runs - killed
    ok = (missed_instant == 0 && missed_cost == 0 && killed == 0 && below * 2 >= runs)
    if (!ok) { print "targets: MISSED"; exit 1 }
    print "targets: met"
}' "$rows" | tee "$OUT/summary.txt"
