#!/usr/bin/env bash
# The default network (quantum 0.02) against the exact one (quantum 0) on
# the examples: step latency and wall time of each, side by side in one run.
# docs/RUNTIME.md keeps the results.
#
#   benches/quantum.sh [MOEC]          (default: target/release/moec)
set -euo pipefail
cd "$(dirname "$0")/.."
moec=${1:-target/release/moec}

# Mean step latency (ms) and wall seconds of one run.
measure() {
  local start end lat
  start=$(date +%s.%N)
  lat=$("$moec" run "examples/$1" --plan "$2" --no-numerics --steps "$3" --network-quantum "$4" --report json |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.6f" % (r["latency"]["mean_s"]*1e3))')
  end=$(date +%s.%N)
  printf '%s %.2f' "$lat" "$(echo "$end - $start" | bc -l)"
}

echo "| example | plan | steps | exact (ms) | default (ms) | difference | exact wall (s) | default wall (s) |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
while read -r file plan steps; do
  read -r e et <<< "$(measure "$file" "$plan" "$steps" 0)"
  read -r d dt <<< "$(measure "$file" "$plan" "$steps" 0.02)"
  printf '| %s | %s | %s | %s | %s | %+.2f%% | %s | %s |\n' "$file" "$plan" "$steps" "$e" "$d" \
    "$(echo "($d - $e) * 100 / $e" | bc -l)" "$et" "$dt"
done <<'CASES'
deepseek-v3-wafer.moe default 2
deepseek-v3-wafer-drift.moe static 3
deepseek-v3-wafer-drift.moe ni_balancer 3
qwen3-235b-wafer.moe default 2
qwen3-235b-wafer.moe tp_attention 2
qwen3-235b-wafer.moe er_mapping 2
dbrx-wafer.moe prefill 1
deepseek-v3-nvl72.moe default 2
mixtral-8x22b-wafer.moe default 2
deepseek-v2-wafer.moe default 2
CASES
