#!/usr/bin/env bash
# The laptop grid of results/laptop/ (issue 18), as it was run on a 2-core CPU machine: two workers, one thread per run.
# First the cwc runs of Naive, Total and Total-GN over the five seeds (issue 16's comparison), then every method × task
# × seed (the grid skips what is done, so this script can be re-run after any interruption).
set -euo pipefail
cd "$(dirname "$0")/../.."
ALGOS="sta_naive sta_total sta_total_gn simultaneous reversed parl ppo dpo iterated_dpo dro_v"
python tools/grid.py --algos sta_naive sta_total sta_total_gn --tasks cwc --workers 2 --output-dir results/laptop/runs -- --laptop
python tools/grid.py --algos $ALGOS --tasks cwc wc un --workers 2 --output-dir results/laptop/runs -- --laptop
python tools/results.py results/laptop/runs --out results/laptop
python tools/claims.py results/laptop/runs --cost results/cost/laptop/cost.csv --out results/laptop
python tools/sync_tables.py README.md   # the front page's copies of the headline and claims tables
