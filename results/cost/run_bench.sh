#!/usr/bin/env bash
# The cost tables of the README (issue 15), as measured on a quiet 2-core CPU machine: one run at a time, one thread,
# nothing else running. Each call writes cost.md (the table, its command and the machine) and cost.csv.
set -euo pipefail
cd "$(dirname "$0")/../.."
# the laptop model at its preset (B = 16, k = 4, 75 new tokens): 5 timed iterations per run, 2 rounds
python tools/bench_cost.py --repeats 2 --out results/cost/laptop -- --laptop --task cwc --iterations 6 --eval-every 1000
# SmolLM2-135M-Instruct at the reduced shape of the README (B = 4, 24 new tokens): 2 timed iterations, 1 round
head -60 data/prompts/train.txt > /tmp/smol_prompts.txt   # 48 train, 12 test prompts: a short offline data set and evaluation
python tools/bench_cost.py --out results/cost/smollm2 -- --model smollm2 --prompts /tmp/smol_prompts.txt --device cpu \
    --task cwc --batch-size 4 --max-new-tokens 24 --iterations 3 --eval-every 1000 --eval-batch-size 12
