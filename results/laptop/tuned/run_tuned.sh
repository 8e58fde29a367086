#!/usr/bin/env bash
# Issue 25 §2: the five-seed grid of every method whose LAPTOP preset the tuning protocol changed (docs/reproducing.md,
# "The tuning protocol"; the selection: results/laptop/tuning/tuning.md), on all three tasks and the paper's five seeds,
# at the tuned preset (`--laptop` alone: the scripts' LAPTOP lines carry the selected rates). The untuned runs stay in
# results/laptop/runs/. Give the methods as arguments (default: the two changed so far). The grid skips finished runs
# and resumes checkpointed ones: re-run to continue. Beside it: results/laptop/commit_finished.sh results/laptop/tuned/runs
set -euo pipefail
cd "$(dirname "$0")/../../.."
methods=("$@")
[ ${#methods[@]} -gt 0 ] || methods=(iterated_dpo sta_total_gn)
for method in "${methods[@]}"; do
  python tools/grid.py --algos "$method" --tasks cwc wc un --workers 2 --output-dir results/laptop/tuned/runs -- --laptop
done
