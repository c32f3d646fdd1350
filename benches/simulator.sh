#!/usr/bin/env bash
# The simulator's speed, an old build against a new one, side by side in one
# run on this machine: every case is timed with both binaries in turn, and
# each figure is the lower of RUNS wall times (the machine is shared: read
# the ratios, not the absolute times). docs/RUNTIME.md keeps the results.
#
#   benches/simulator.sh OLD_MOEC NEW_MOEC [RUNS] [CASE...]
#
# e.g. with the old build from a worktree of an earlier commit:
#   git worktree add /tmp/moec-base <commit> && (cd /tmp/moec-base && cargo build --release -p moec)
#   cargo build --release -p moec
#   benches/simulator.sh /tmp/moec-base/target/release/moec target/release/moec 3
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1
new=$2
runs=${3:-3}
shift $(( $# < 3 ? $# : 3 ))
cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=(step-8x8 step-4wafers drift-100 netbench-8x8 netbench-16x16)

# Seconds of the fastest of $runs runs of a command (its output discarded).
fastest() {
  local best=""
  for _ in $(seq "$runs"); do
    local start end t
    start=$(date +%s.%N)
    "$@" > /dev/null 2>&1 || { echo "failed: $*" >&2; return 1; }
    end=$(date +%s.%N)
    t=$(echo "$end - $start" | bc -l)
    if [ -z "$best" ] || [ "$(echo "$t < $best" | bc -l)" = 1 ]; then best=$t; fi
  done
  printf '%.3f' "$best"
}

# One case, both binaries: "case | old s | new s | old/new".
row() {
  local name=$1; shift
  local a b
  a=$(fastest "$old" "$@")
  b=$(fastest "$new" "$@")
  printf '| %s | %s | %s | %.1fx |\n' "$name" "$a" "$b" "$(echo "$a / $b" | bc -l)"
}

echo "| case | old (s) | new (s) | speed-up |"
echo "| --- | --- | --- | --- |"
for c in "${cases[@]}"; do
  case $c in
    # Decode steps of DeepSeek-V3, timing only (compiling is milliseconds).
    step-8x8) row "DeepSeek-V3 decode, 8x8 wafer, 4 steps" run examples/deepseek-v3-wafer.moe --no-numerics --steps 4 ;;
    step-4wafers) row "DeepSeek-V3 decode, 4 wafers, 2 steps" run examples/deepseek-v3-4wafers.moe --no-numerics --steps 2 ;;
    drift-100) row "drift example, ni_balancer, 100 steps" run examples/deepseek-v3-wafer-drift.moe --plan ni_balancer --no-numerics --steps 100 ;;
    place-auto) row "place(auto), 4 wafers" compile examples/deepseek-v3-4wafers.moe --plan her_mapping --passes 'place(auto)' ;;
    parallel-auto) row "parallel(auto), 4 wafers" compile examples/deepseek-v3-4wafers.moe --plan her_mapping --passes 'place(er_mapping),parallel(auto)' ;;
    compare) row "moec compare, 8x8 wafer" compare examples/deepseek-v3-wafer.moe ;;
    # BookSim's speed case (tests/netbench/speed.csv): uniform, 16-flit
    # packets (256 B), 1,000 messages a die, the new build alone (the old one
    # has no router to model BookSim's). The injection window is
    # 1000 x 256 B / (load x 16 GB/s) = 16 us / load; the figure is wall
    # milliseconds per simulated microsecond of it (BookSim: per 1,000 cycles).
    netbench-8x8 | netbench-16x16)
      k=${c#netbench-}
      # 16x16 uniform saturates at 0.25 (BookSim aborts past it too).
      loads="0.1 0.2 0.3 0.4"
      [ "$k" = 16x16 ] && loads="0.1 0.2"
      for l in $loads; do
        t=$(fastest "$new" netbench "examples/machines/booksim-mesh-$k.moe" --message-size 256 --messages 1000 --loads "$l")
        printf '| netbench %s uniform 16 flits, load %s | | %s | %.3f ms per simulated us |\n' "$k" "$l" "$t" "$(echo "$t * 1000 / (16 / $l)" | bc -l)"
      done ;;
    *) echo "unknown case $c" >&2; exit 2 ;;
  esac
done
