#!/usr/bin/env bash
# HD-MoE's setting (../shared/PAPERS.md): three NMP meshes (4x4, 4x8, 8x8)
# by three models (Mixtral-8x7B, DeepSeekMoE-16B, Qwen2-57B), decode at
# batch 64 and context 1024, each model's experts as TP, EP, the
# compute-balanced split and HD-MoE's hybrid (NodeBalance with its
# weight-read term, then LinkBalance), all on one simulator in one run.
# Prints a markdown table: step p50 per form and the hybrid's speedup
# over each baseline. docs/RESULTS.md keeps the results.
#
#   benches/hd_moe_grid.sh [MOEC] [STEPS]   (default: target/release/moec, 4)
set -euo pipefail
cd "$(dirname "$0")/.."
moec=${1:-target/release/moec}
steps=${2:-4}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
root=$(pwd)

forms="tp ep compute_balanced hybrid"
{
  for model in mixtral-8x7b deepseekmoe-16b qwen2-57b-a14b; do
    echo "import \"$root/examples/models/$model.moe\""
  done
  for mesh in 4x4 4x8 8x8; do
    echo "import \"$root/examples/machines/nmp-$mesh.moe\""
  done
  echo 'workload decode_64 {
  phase = decode
  batch = 64
  context = 1024
  routing = zipf(s = 0.15, layer_corr = 0.6, seed = 7)
}'
  for model in mixtral_8x7b deepseekmoe_16b qwen2_57b; do
    for mesh in 4x4 4x8 8x8; do
      for form in $forms; do
        echo "plan ${model}_${mesh}_${form} { model = $model; machine = nmp_$mesh; workload = decode_64; attention = dp; parallel = $form }"
      done
    done
  done
} > "$dir/grid.moe"

# Step p50 in ms, or the diagnostic code when the plan does not run.
p50() {
  local out
  if out=$("$moec" run "$dir/grid.moe" --plan "$1" --steps "$steps" --no-numerics --report json 2>"$dir/err"); then
    echo "$out" | python3 -c 'import json,sys; print("%.3f" % (json.load(sys.stdin)["latency"]["p50_s"] * 1e3))'
  else
    grep -o 'error\[E[0-9]*\]' "$dir/err" | head -1 || echo failed
  fi
}

ratio() {
  python3 -c "import sys; a, b = sys.argv[1:]; print('%.2fx' % (float(a) / float(b)) if a[0].isdigit() and b[0].isdigit() else '-')" "$1" "$2"
}

echo "| model | mesh | tp (ms) | ep (ms) | compute_balanced (ms) | hybrid (ms) | hybrid over tp | over ep | over compute_balanced |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for model in mixtral_8x7b deepseekmoe_16b qwen2_57b; do
  for mesh in 4x4 4x8 8x8; do
    tp=$(p50 "${model}_${mesh}_tp")
    ep=$(p50 "${model}_${mesh}_ep")
    cb=$(p50 "${model}_${mesh}_compute_balanced")
    hy=$(p50 "${model}_${mesh}_hybrid")
    echo "| $model | $mesh | $tp | $ep | $cb | $hy | $(ratio "$tp" "$hy") | $(ratio "$ep" "$hy") | $(ratio "$cb" "$hy") |"
  done
done
