#!/usr/bin/env bash
# Runs the README's test command in a copy of this repository with nothing beside it (no
# ../shared, no control plane), as a user's fresh clone would, and checks that it passes and
# reports what it skipped and why. The copy keeps the tracked files' modification times and
# uses this checkout's target dir, so cargo rebuilds nothing and the check costs one test run.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
target=${CARGO_TARGET_DIR:-$repo/target}

work=$(mktemp -d "${TMPDIR:-/tmp}/kubescaler-alone.XXXXXX")
trap 'rm -rf "$work"' EXIT
copy="$work/kubescaler"
mkdir "$copy"
# Tracked files only (what a clone holds), times kept (so the build cache stays fresh).
git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$copy"
[ ! -e "$work/shared" ] || { echo "unexpected $work/shared" >&2; exit 1; }

log="$work/test.log"
# The environment of a user's machine: none of the variables CI sets for the full run.
(cd "$copy" && env -u KUBESCALER_E2E_KUBECONFIG -u KUBESCALER_TESTS_REQUIRED -u DOKS_FAKE_SPEC \
  -u KUBESCALER_CAPI_CRDS -u KUBESCALER_AGONES_CRDS -u KUBESCALER_HELM \
  -u KUBESCALER_IMAGE -u KUBESCALER_UMOCI -u KUBESCALER_RUNC \
  CARGO_TARGET_DIR="$target" bash hack/test.sh) > "$log" 2>&1 || {
  tail -n 60 "$log" >&2
  echo "the README test command failed in a copy of the repository alone (log above)" >&2
  exit 1
}

summary=$(grep '^kubescaler tests: ' "$log" | tail -n 1)
sed -n '/^Skipped tests/,/^kubescaler tests: /p' "$log"
# It must have skipped, visibly, for both things a clone alone lacks, and run the rest.
grep -q 'need the local control plane' "$log" || { echo "no control-plane skip reported" >&2; exit 1; }
grep -q "need DigitalOcean's API description" "$log" || { echo "no API-description skip reported" >&2; exit 1; }
skipped=$(sed -n 's/.* \([0-9]*\) skipped.*/\1/p' <<<"$summary")
# Counted wherever they stand: tests run in parallel, and a SKIPPED line on stderr can land
# after libtest's "test name ... " on stdout.
lines=$(grep -o 'SKIPPED [^ ]*: needs ' "$log" | wc -l)
[ "$skipped" -gt 0 ] && [ "$lines" -eq "$skipped" ] || {
  echo "skip count $skipped but $lines SKIPPED lines" >&2; exit 1; }
if grep -q '^\s*Compiling kubescaler ' "$log"; then
  echo "note: the copy rebuilt kubescaler (build cache not reused)"
fi
