#!/usr/bin/env bash
# The cost at the paper's shape on one GPU, offline, in one call that fits a 10-minute device command (issue 27):
#   1. builds facebook/opt-125m's transformer body (random weights, the laptop's 4096-word vocabulary:
#      tools/build_shape_model.py says why);
#   2. checks the sampler (tools/bench_sampler.py): the static-cache fp32 sampler that is the CUDA default against the
#      dynamic one (same draws from the same seed, speed, compile time, break-even in rollouts), and the mismatch of a
#      bf16 sampler (per-token KL to the fp32 policy, importance-ratio spread); if the static sampler fails, the
#      methods below are timed with the dynamic cache and log.txt says so;
#   3. times all ten methods of tools/grid.py in one tools/bench_cost.py call: the paper's settings (B = 16, k = 4,
#      75 new tokens, S = 5, λ = 100), cwc, 2 timed iterations each, one CPU thread per run;
#   4. times Naive STA again with the dynamic cache, for the whole-iteration speed-up, the compile time and the
#      break-even number of iterations (break-even.md).
# Timing prompts: the first 200 bundled training prompts as a prompts file (the scripts take its last 40 as the test
# split, the other 160 as training prompts), so DPO's and DRO-V's offline data set is 160 prompts × k (three
# generate calls of 64 prompts) instead of 1230 × k, and an evaluation 40 prompts; the offline data's seconds are
# reported apart anyway (bench_cost's offline column), and evaluations are left out of the iteration times.
#
#   bash results/cost/run_bench_gpu.sh [OUT_DIR]          # default results/cost/gpu-opt125m-shape/static
#   bash results/cost/run_bench_gpu.sh "$OUT/static"      # on a lent device (its $OUT comes back even when cut short)
#   SMOKE=1 bash results/cost/run_bench_gpu.sh OUT_DIR    # the same steps on the CPU at a tiny shape, the static
#                                                         # sampler forced in step 3: checks this script end to end
#                                                         # (step 3 on Naive, Total and DPO; SMOKE_METHODS="..." for others)
# Writes OUT_DIR/log.txt (everything printed), OUT_DIR/sampler/sampler.{md,json}, OUT_DIR/all/cost.{md,csv} (rewritten
# after every method, so a call cut short keeps the methods it finished), OUT_DIR/naive-dynamic/cost.{md,csv} and
# OUT_DIR/break-even.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-results/cost/gpu-opt125m-shape/static}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
exec > >(tee "$out/log.txt") 2>&1
head -n 200 data/prompts/train.txt > "$work/prompts.txt"
if [[ -n "${SMOKE:-}" ]]; then
    python tools/build_shape_model.py "$work/model" --layers 2 --hidden 64 --heads 2 --ffn 128
    shape=(--device cpu --batch-size 2 --max-new-tokens 8)
    export BENCH_SAMPLER_CACHE=static  # step 3 on the CUDA default's code path
    limit=(timeout 900)
    # three methods (online, with the implicit term, offline data) keep the test suite short; SMOKE_METHODS="..." for more
    read -ra methods <<< "${SMOKE_METHODS:-sta_naive sta_total dpo}"
    methods=(--methods "${methods[@]}")
else
    python tools/build_shape_model.py "$work/model"
    shape=(--device cuda)
    # step 3's share of a 600-second command, the finished methods kept if it runs out. Every step's limit has -k: the
    # scripts finish their current iteration on SIGTERM (a compilation can take minutes), so SIGKILL follows 15 s later.
    # Steps 2-4 at most 80 + 300 + 60 s (+ 3 × 15), leaving over 100 s of the 600 for a fresh machine's setup and the
    # model's build: on 2026-12-04 the earlier 100 + 390 + 60 s, without -k, ran past 600 s and nothing came back.
    limit=(timeout -k 15 300)
    methods=()  # all ten
fi
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__,
                                            torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
flags=(--model "$work/model" --prompts "$work/prompts.txt" "${shape[@]}" --task cwc --iterations 3 --eval-every 1000
       --eval-batch-size 64)

echo "== sampler: static against dynamic cache, bf16 mismatch"
status=0
timeout -k 15 80 python tools/bench_sampler.py --model "$work/model" --prompts "$work/prompts.txt" "${shape[@]}" --repeats 1 \
    --out "$out/sampler" || status=$?
if [[ $status == 3 ]]; then
    echo "the static-cache sampler failed (above): timing every method with the dynamic cache"
    export BENCH_SAMPLER_CACHE=dynamic
elif [[ $status != 0 ]]; then
    echo "bench_sampler stopped (status $status); the methods are timed with the default sampler"
fi

echo "== all ten methods"
"${limit[@]}" python tools/bench_cost.py "${methods[@]}" --out "$out/all" -- "${flags[@]}" || echo "bench_cost stopped (status $?): $out/all has the methods it finished"

echo "== Naive STA with the dynamic cache"
BENCH_SAMPLER_CACHE=dynamic timeout -k 15 60 python tools/bench_cost.py --methods sta_naive --out "$out/naive-dynamic" -- "${flags[@]}" \
    || echo "bench_cost stopped (status $?)"

python - "$out" <<'EOF'
import csv, sys
from pathlib import Path

out = Path(sys.argv[1])
def naive(folder):
    path = out / folder / "cost.csv"
    rows = [r for r in csv.DictReader(open(path))] if path.exists() else []
    return next((r for r in rows if r["method"] == "sta_naive"), None)
fast, slow = naive("all"), naive("naive-dynamic")
if not (fast and slow):
    sys.exit(f"break-even: Naive STA missing from {out}/all or {out}/naive-dynamic")
t_fast, t_slow = float(fast["s_per_iteration"]), float(slow["s_per_iteration"])
compile_s = float(fast["first_iteration_s"]) - float(slow["first_iteration_s"])
saved = t_slow - t_fast
lines = ["| Naive STA | KV cache | s / iteration | first iteration s |", "|---|---|---|---|",
         f"| default | {fast['sampler_cache']} | {t_fast:.3f} | {float(fast['first_iteration_s']):.1f} |",
         f"| dynamic | {slow['sampler_cache']} | {t_slow:.3f} | {float(slow['first_iteration_s']):.1f} |", "",
         f"Speed-up {t_slow / t_fast:.2f}× with the default cache; its first iteration is {compile_s:.1f} s longer "
         "(compilation): " + ("never paid back (no saving)." if saved <= 0 else
                              f"paid back after {max(compile_s, 0.0) / saved:.0f} iterations.")]
(out / "break-even.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
