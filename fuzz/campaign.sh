#!/usr/bin/env bash
# Runs every cargo-fuzz target for a fixed wall-clock time and prints one summary line per target
# (executions, coverage, features, corpus size) for docs/SECURITY.md. Needs nightly + cargo-fuzz.
#   fuzz/campaign.sh [seconds-per-target] [parallel-jobs] [targets...]
# New inputs go to a scratch corpus under $WORK (default fuzz/target/campaign, ignored by git); the committed corpus
# is only read.
set -euo pipefail
cd "$(dirname "$0")"
SECS=${1:-600}
JOBS=${2:-2}
shift $(( $# > 2 ? 2 : $# )) || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || mapfile -t TARGETS < <(cargo +nightly fuzz list)
WORK=${WORK:-$(pwd)/target/campaign}
# Our code forbids `unsafe`, so a panic is the failure we look for; without ASan a run gets ~2x the executions.
SANITIZER=${SANITIZER:-none}
mkdir -p "$WORK/logs" "$WORK/artifacts"

cargo +nightly fuzz build -O -s "$SANITIZER" >/dev/null
# Run copies of the binaries: editing the tree during a campaign must not rebuild or change what is fuzzed.
mkdir -p "$WORK/bin"
for t in "${TARGETS[@]}"; do
  cp "target/x86_64-unknown-linux-gnu/release/$t" "$WORK/bin/$t"
done
git rev-parse --short HEAD >"$WORK/commit" 2>/dev/null || true

run_one() {
  local t=$1
  mkdir -p "$WORK/corpus/$t" "$WORK/artifacts/$t"
  # nice: the campaign shares the machine with builds; wall-clock time is what -max_total_time counts.
  nice -n 19 "$WORK/bin/$t" "$WORK/corpus/$t" "$(pwd)/corpus/$t" \
    -max_total_time="$SECS" -print_final_stats=1 -artifact_prefix="$WORK/artifacts/$t/" \
    >"$WORK/logs/$t.log" 2>&1 && echo "$t ok" || echo "$t FAILED (see $WORK/logs/$t.log)"
}
export -f run_one; export SECS WORK SANITIZER
printf '%s\n' "${TARGETS[@]}" | xargs -P "$JOBS" -I{} bash -c 'run_one {}'

echo
printf '%-16s %12s %8s %8s %8s %s\n' target execs exec/s cov ft crashes
for t in "${TARGETS[@]}"; do
  log="$WORK/logs/$t.log"
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1 | grep -o '[0-9]*' || echo '?')
  ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -n 1 | grep -o '[0-9]*' || echo '?')
  crashes=$(find "$WORK/artifacts/$t" -type f | wc -l)
  printf '%-16s %12s %8s %8s %8s %s\n' "$t" "$execs" "$rate" "$cov" "$ft" "$crashes"
done
