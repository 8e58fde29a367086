#!/usr/bin/env bash
# The tuning grid of issue 25 (protocol: docs/reproducing.md, "The tuning protocol"): every method at 0.3×, 1× and 3×
# its LAPTOP policy learning rate, on cwc, tuning seeds 101 and 202, two workers with one thread each. The grid skips
# finished runs and resumes checkpointed ones, so re-run this script to continue after any interruption.
# Beside it: results/laptop/commit_finished.sh results/laptop/tuning/runs
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=results/laptop/tuning/runs
# method and its LAPTOP policy learning rate; the methods of the paper's claims first
PRESETS="sta_naive:1e-4 iterated_dpo:1e-4 sta_total:1e-4 sta_total_gn:1e-4 simultaneous:1e-4 reversed:2e-5 parl:1e-4
ppo:3e-5 dpo:1e-4 dro_v:1e-4"
for preset in $PRESETS; do
  method=${preset%%:*}
  lr=${preset##*:}
  for x in 0.3 1 3; do
    rate=$(python -c "print(f'{$x * $lr:.3g}')")
    python tools/grid.py --algos "$method" --tasks cwc --seeds 101 202 --workers 2 --output-dir "$OUT/x$x" \
      -- --laptop --policy-lr "$rate" || echo "tuning: $method x$x had a failed run (see its log); going on"
  done
done
