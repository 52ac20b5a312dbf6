#!/usr/bin/env bash
# Runs every fuzz target for a bounded time and reports executions and findings.
# Needs: a nightly toolchain and cargo-fuzz (`rustup toolchain install nightly`,
# `cargo install cargo-fuzz`). Corpora start from the committed seeds (corpus/*/seed-*, from
# the test suite's zones, config and queries) and grow in place; crashes land in
# fuzz/artifacts/TARGET/ and each becomes a regression test in the normal suite.
# Usage: fuzz/run.sh [SECONDS_PER_TARGET] [PARALLEL] [TARGET...]   (default 600 s, 2 at a time, all)
set -uo pipefail
SECONDS_PER_TARGET=${1:-600}
PARALLEL=${2:-2}
shift 2 2>/dev/null || shift $#
cd "$(dirname "$0")"
TARGETS=${*:-"dns_message transfer_request zone_file config gossip_open api_body"}
command -v cargo-fuzz >/dev/null || { echo "fuzz/run.sh needs cargo-fuzz: cargo install cargo-fuzz" >&2; exit 1; }
cargo +nightly fuzz build >/dev/null || exit 1
mkdir -p logs
run() {
  local target=$1
  mkdir -p "corpus/$target"
  cargo +nightly fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 >"logs/$target.log" 2>&1
  echo "$target exit=$?"
}
running=0
for target in $TARGETS; do
  run "$target" &
  running=$((running + 1))
  if [ "$running" -ge "$PARALLEL" ]; then wait -n; running=$((running - 1)); fi
done
wait
echo
printf '%-18s %12s %10s %8s %s\n' target executions exec/s seconds findings
failed=0
for target in $TARGETS; do
  log="logs/$target.log"
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  found=$(ls "artifacts/$target" 2>/dev/null | wc -l)
  verdict=$(grep -q 'ERROR: libFuzzer\|panicked' "$log" && echo "CRASH (see $log)" || echo none)
  [ "$verdict" = none ] || failed=1
  printf '%-18s %12s %10s %8s %s (%s artifacts)\n' "$target" "${runs:-0}" "${speed:-0}" "$SECONDS_PER_TARGET" "$verdict" "$found"
done
exit $failed
