#!/usr/bin/env bash
# Issue 25 §3: the KL weight β. Naive STA, iterated DPO and Total STA at β = 0.1, 0.3 and 0.03 on all three tasks and
# the paper's five seeds, at each script's (tuned) LAPTOP preset, every run with an evaluation after each of its first 9
# iterations as well (--eval-first 9), where the reward-KL path moves fastest and the grid's runs have none: 135 runs
# under results/laptop/beta/runs/beta{0.1,0.3,0.03}/. β = 0.1 first: those are the grid's runs of the three methods
# (results/laptop/runs/, results/laptop/tuned/runs/) again, the same training steps (the extra evaluations draw from
# their own generator; tests/test_eval_first.py), now with their early path measured. The grid skips finished runs and
# resumes checkpointed ones: re-run to continue. Beside it: results/laptop/commit_finished.sh results/laptop/beta/runs
set -euo pipefail
cd "$(dirname "$0")/../../.."
for beta in 0.1 0.3 0.03; do
  python tools/grid.py --algos sta_naive iterated_dpo sta_total --tasks cwc wc un --workers 2 \
    --output-dir "results/laptop/beta/runs/beta$beta" -- --laptop --beta "$beta" --eval-first 9
done
