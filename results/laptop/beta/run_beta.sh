#!/usr/bin/env bash
# Issue 25 §3: the KL weight β. Naive STA, iterated DPO and Total STA at β = 0.03 and 0.3 (the grid's 0.1 is in
# results/laptop/runs/ or, for a tuned preset, results/laptop/tuned/runs/) on all three tasks and the paper's five seeds,
# at each script's LAPTOP preset: 90 runs under results/laptop/beta/runs/beta{0.03,0.3}/. Run it after the tuning of
# docs/reproducing.md has settled the presets, so that the β fronts extend the published ones. The grid skips finished
# runs and resumes checkpointed ones: re-run to continue. Beside it: results/laptop/commit_finished.sh results/laptop/beta/runs
set -euo pipefail
cd "$(dirname "$0")/../../.."
for beta in 0.3 0.03; do  # 0.3 first: it adds the low-KL evaluations that the equal-KL readings lack most
  python tools/grid.py --algos sta_naive iterated_dpo sta_total --tasks cwc wc un --workers 2 \
    --output-dir "results/laptop/beta/runs/beta$beta" -- --laptop --beta "$beta"
done
