#!/usr/bin/env bash
# The cost at the paper's shape on a GPU, offline: facebook/opt-125m's transformer body (random weights, the laptop's
# 4096-word vocabulary: tools/build_shape_model.py says why) with the paper's settings (B = 16, k = 4, 75 new tokens,
# S = 5, λ = 100) on the bundled prompts; 2 timed iterations per method, 1 round, one CPU thread per run.
# Measured on one H200 (results/cost/gpu-opt125m-shape/README.md): the two calls fit a 15-minute GPU loan, all ten
# methods in one call did not.
#   bash results/cost/run_bench_gpu.sh [OUT_DIR]      # default results/cost/gpu-opt125m-shape
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-results/cost/gpu-opt125m-shape}
model=/tmp/opt125m-shape
python tools/build_shape_model.py "$model"
flags=(--model "$model" --prompts bundled --device cuda --task cwc --iterations 3 --eval-every 1000)
python tools/bench_cost.py --methods sta_naive sta_total --out "$out/total" -- "${flags[@]}"
python tools/bench_cost.py --methods sta_naive reversed simultaneous --out "$out/reversed" -- "${flags[@]}"
