#!/usr/bin/env bash
# The test command README.md gives: the whole suite, then one closing line counting what was
# skipped and why. Tests that need something a plain clone lacks (the local control plane,
# DigitalOcean's API description in ../shared/) skip with a SKIPPED line each; with
# KUBESCALER_TESTS_REQUIRED=1 (CI) any such test fails instead, and so does this script if a
# skip was still recorded. Extra arguments go to `cargo test` (e.g. a test name filter).
set -uo pipefail
cd "$(dirname "$0")/.."

skips=$(mktemp "${TMPDIR:-/tmp}/kubescaler-skips.XXXXXX")
results=$(mktemp "${TMPDIR:-/tmp}/kubescaler-results.XXXXXX")
trap 'rm -f "$skips" "$results"' EXIT
export KUBESCALER_SKIP_LOG="$skips"

start=$(date +%s)
cargo test --locked --workspace --all-targets "$@" | tee "$results"
status=${PIPESTATUS[0]}
elapsed=$(( $(date +%s) - start ))

# libtest's per-binary lines: "test result: ok. 12 passed; 0 failed; 1 ignored; ..."
read -r passed failed ignored < <(awk '
  /^test result:/ { for (i = 1; i <= NF; i++) {
      if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1);
      if ($(i) ~ /^ignored;?$/) g += $(i-1) } }
  END { print p+0, f+0, g+0 }' "$results")
skipped=$(wc -l < "$skips" | tr -d ' ')

echo
if [ "$skipped" -gt 0 ]; then
  echo "Skipped tests (they need what this checkout lacks):"
  # One line per reason: how many, what is missing, how to run them.
  awk -F'\t' '{ n[$2]++; how[$2] = $3 } END { for (m in n) printf "  %d need %s: %s\n", n[m], m, how[m] }' "$skips" | sort -rn
fi
# libtest counts a skipped test as passed: the closing line does not.
echo "kubescaler tests: $((passed - skipped)) passed, $failed failed, $skipped skipped ($ignored ignored) in ${elapsed}s"

if [ "$status" -ne 0 ]; then exit "$status"; fi
if [ "${KUBESCALER_TESTS_REQUIRED:-}" = 1 ] && [ "$skipped" -gt 0 ]; then
  echo "KUBESCALER_TESTS_REQUIRED=1 but $skipped tests skipped" >&2
  exit 1
fi
