"""The sampler at a shape (issue 27): generate's speed with the dynamic and the static KV cache, compile time included;
whether the two draw the same tokens; how far a bf16 sampler's distribution is from the fp32 policy's.

    python tools/bench_sampler.py --model /tmp/opt125m-shape --device cuda --out results/cost/gpu-opt125m-shape/sampler
    python tools/bench_sampler.py --model data/laptop-opt --device cpu --batch-size 4 --max-new-tokens 12 --repeats 1

Samplers: fp32 with transformers' dynamic cache (what CPU runs use), fp32 with a static cache (common.SAMPLER_CACHE's
default on CUDA, where transformers compiles the decoding step), and both again with a bf16 copy of the policy (not
offered to the scripts: it draws from another distribution, measured below). Each is timed on generate calls of
B·k rows (a rollout's first draw) and of k·t rows (the redraw of t tied prompts, --redraw-prompts), --repeats times per
size after a first call; the first call of a size includes its compilation (and a recompile for each new shape).

Same draws: from the same seed, the static and the dynamic fp32 sampler's B·k continuations; the share of rows that are
the same token for token (on CPU all are: tests/test_common.py).

bf16 mismatch: on B·k sequences drawn by the bf16 sampler, the fp32 and the bf16 model's next-token distributions
(each model's logits, log-softmaxed in fp32) at every continuation token: the per-token KL(π_fp32 ‖ π_bf16), and
per sequence the log importance ratio log π_fp32(y|x) − log π_bf16(y|x), the weight that would correct a bf16 sample
for the fp32 policy the scripts train.

Break-even: the static sampler's extra first-call time (its compilations, summed over the sizes) over what it saves
per rollout (one B·k call and, per --redraw-prompts size, one redraw call); tools/bench_cost.py gives the same at the
level of whole iterations (first_iteration_s).

--out DIR writes DIR/sampler.md (the tables, the command and the machine) and DIR/sampler.json. The exit status is 3
when the fp32 static sampler failed (results/cost/run_bench_gpu.sh then times the methods with the dynamic cache).
"""

import argparse
import copy
import json
import platform
import shlex
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402
import quiet_pipe  # noqa: F401,E402  (`python tools/X.py | head` ends without a BrokenPipeError traceback)


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(common.LAPTOP_MODEL), help="model directory or name (default: the laptop model)")
    parser.add_argument("--prompts", default="bundled", help="prompt source, as the scripts' --prompts (train split)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16, help="B (default 16, the paper's)")
    parser.add_argument("--samples-per-prompt", type=int, default=4, help="k (default 4)")
    parser.add_argument("--max-new-tokens", type=int, default=75)
    parser.add_argument("--redraw-prompts", type=int, nargs="*", default=[4, 1],
                        help="tied prompts t of the redraw calls timed (k·t rows each; default 4 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per size after the first (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write sampler.md and sampler.json here")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    args.device = common.check_device(args.device)
    return args


def draw(policy, tokenizer, ids, mask, max_new_tokens, cache, device):
    """common.sample with the KV cache `cache` (None: dynamic); (continuation, mask, seconds)."""
    kind = torch.device(device).type
    saved = dict(common.SAMPLER_CACHE)
    common.SAMPLER_CACHE.pop(kind, None)
    if cache:
        common.SAMPLER_CACHE[kind] = cache
    try:
        if kind == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        continuation, continuation_mask = common.sample(policy, tokenizer, ids, mask, max_new_tokens)
        if kind == "cuda":
            torch.cuda.synchronize()
        return continuation, continuation_mask, time.perf_counter() - start
    finally:
        common.SAMPLER_CACHE.clear()
        common.SAMPLER_CACHE.update(saved)


def timings(policies, tokenizer, ids, mask, args):
    """{sampler: {rows: [first call s, then the repeats' s]} or {"failed": message}}."""
    k = args.samples_per_prompt
    sizes = [len(ids)] + [k * t for t in args.redraw_prompts if 0 < t * k < len(ids)]
    draw(policies[torch.float32], tokenizer, ids[:k], mask[:k], 2, None, args.device)  # device and library warm-up
    out = {}
    for name, (dtype, cache) in SAMPLERS.items():
        seconds = {}
        try:
            for rows in sizes:
                torch.manual_seed(args.seed)
                seconds[rows] = [draw(policies[dtype], tokenizer, ids[:rows], mask[:rows], args.max_new_tokens, cache,
                                      args.device)[2] for _ in range(1 + args.repeats)]
                print(f"{name}, {rows} rows: first {seconds[rows][0]:.3f} s, then {statistics.median(seconds[rows][1:]):.3f} s",
                      flush=True)
        except Exception as e:  # a sampler that cannot run here is reported, the others still measured
            traceback.print_exc()
            seconds = {"failed": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
        out[name] = seconds
    return out


SAMPLERS = {"fp32 dynamic": (torch.float32, None), "fp32 static": (torch.float32, "static"),
            "bf16 dynamic": (torch.bfloat16, None), "bf16 static": (torch.bfloat16, "static")}


def same_draws(policy, tokenizer, ids, mask, args):
    """Static against dynamic fp32 from the same seed: rows identical token for token, and all rows."""
    draws = []
    for cache in (None, "static"):
        torch.manual_seed(args.seed + 1)
        continuation, continuation_mask, _ = draw(policy, tokenizer, ids, mask, args.max_new_tokens, cache, args.device)
        draws.append((continuation, continuation_mask))
    (a, ma), (b, mb) = draws
    width = max(a.shape[1], b.shape[1])
    a, b = common._pad_right(a, width, tokenizer.pad_token_id), common._pad_right(b, width, tokenizer.pad_token_id)
    return {"identical_rows": int((a == b).all(1).sum()), "rows": len(a)}


def quantile(values, q):
    return float(torch.quantile(values.double(), q))


def mismatch(policies, tokenizer, ids, mask, args):
    """Per-token KL(π_fp32 ‖ π_bf16) and per-sequence log importance ratios on sequences the bf16 sampler drew."""
    torch.manual_seed(args.seed + 2)
    continuation, continuation_mask, _ = draw(policies[torch.bfloat16], tokenizer, ids, mask, args.max_new_tokens, None,
                                              args.device)
    sequence, attention = torch.cat([ids, continuation], 1), torch.cat([mask, continuation_mask], 1)
    with torch.no_grad():
        token32, logp32 = common.continuation_logprobs(policies[torch.float32], sequence, attention, ids.shape[1])
        token16, logp16 = common.continuation_logprobs(policies[torch.bfloat16], sequence, attention, ids.shape[1])
    real = continuation_mask.bool()
    kl = (logp32.exp() * (logp32 - logp16)).sum(-1)[real].cpu()  # per continuation token
    log_ratio = ((token32 - token16) * continuation_mask).sum(1).cpu()  # per sequence
    ratio = log_ratio.exp()
    return {"tokens": int(real.sum()), "sequences": len(log_ratio),
            "token_kl_mean": float(kl.mean()), "token_kl_median": quantile(kl, 0.5), "token_kl_p99": quantile(kl, 0.99),
            "token_kl_max": float(kl.max()), "sequence_kl_mean": float(kl.sum() / len(log_ratio)),
            "log_ratio_mean": float(log_ratio.mean()), "log_ratio_std": float(log_ratio.std()),
            "ratio_p5": quantile(ratio, 0.05), "ratio_p95": quantile(ratio, 0.95), "ratio_min": float(ratio.min()),
            "ratio_max": float(ratio.max()), "ratio_outside_0.8_1.25": float(((ratio < 0.8) | (ratio > 1.25)).float().mean())}


def break_even(seconds):
    """(the static fp32 sampler's extra first-call seconds over the dynamic one's, seconds it saves per rollout of one
    call per size, rollouts to break even: 0 where its first calls cost nothing extra, None where it saves nothing)."""
    dynamic, static = seconds["fp32 dynamic"], seconds["fp32 static"]
    if "failed" in dynamic or "failed" in static:
        return None
    extra = sum((static[r][0] - statistics.median(static[r][1:])) - (dynamic[r][0] - statistics.median(dynamic[r][1:]))
                for r in static)
    saved = sum(statistics.median(dynamic[r][1:]) - statistics.median(static[r][1:]) for r in static)
    return {"compile_s": extra, "saved_s_per_rollout": saved, "rollouts": max(extra, 0.0) / saved if saved > 0 else None}


def machine(device):
    import transformers

    where = torch.cuda.get_device_name() if torch.device(device).type == "cuda" else platform.processor() or platform.machine()
    return f"{where}, torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} torch thread(s)"


def markdown(report, args, argv):
    rows = sorted({r for s in report["seconds"].values() for r in s if r != "failed"}, key=int, reverse=True)
    lines = [f"`python tools/bench_sampler.py {shlex.join(argv)}`", "", f"Measured on {report['machine']}; "
             f"B = {args.batch_size}, k = {args.samples_per_prompt}, {args.max_new_tokens} new tokens.", "",
             "| sampler | " + " | ".join(f"{r} rows: first call s | then s" for r in rows) + " |",
             "|---" * (1 + 2 * len(rows)) + "|"]
    for name, seconds in report["seconds"].items():
        cells = ([f"failed: {seconds['failed']}"] + [""] * (2 * len(rows) - 1) if "failed" in seconds else
                 [x for r in rows for x in (f"{seconds[r][0]:.3f}", f"{statistics.median(seconds[r][1:]):.3f}")])
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    even, same, m = report["break_even"], report["same_draws"], report["bf16"]
    lines += [""]
    if even:
        lines.append(f"Static fp32 against dynamic fp32: {even['compile_s']:.1f} s more in first calls (compilation), "
                     f"{even['saved_s_per_rollout']:.3f} s saved per rollout of one call per size: break-even after "
                     + (f"{even['rollouts']:.0f} rollouts." if even["rollouts"] is not None else "never (it saves nothing)."))
    if same:
        lines.append(f"Same draws (same seed, static vs dynamic fp32): {same['identical_rows']} of {same['rows']} rows "
                     "identical token for token.")
    if m:
        lines += ["", f"bf16 sampler against the fp32 policy, on {m['sequences']} sequences ({m['tokens']} tokens) it drew:",
                  "", "| per-token KL(π_fp32 ‖ π_bf16): mean | median | p99 | max | per-sequence KL mean "
                  "| log π_fp32/π_bf16: mean | std | ratio p5 | p95 | min | max | share outside [0.8, 1.25] |",
                  "|---" * 12 + "|",
                  f"| {m['token_kl_mean']:.2e} | {m['token_kl_median']:.2e} | {m['token_kl_p99']:.2e} | {m['token_kl_max']:.2e} "
                  f"| {m['sequence_kl_mean']:.2e} | {m['log_ratio_mean']:.3f} | {m['log_ratio_std']:.3f} | {m['ratio_p5']:.3f} "
                  f"| {m['ratio_p95']:.3f} | {m['ratio_min']:.3f} | {m['ratio_max']:.3f} | {m['ratio_outside_0.8_1.25']:.2f} |"]
    return "\n".join(lines) + "\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    tokenizer = common.load_tokenizer(args.model)
    policy = common.load_policy(args.model, tokenizer, args.device)
    policies = {torch.float32: policy, torch.bfloat16: copy.deepcopy(policy).to(torch.bfloat16)}
    prompts = common.load_prompts(args.prompts, "train", min_prompts=args.batch_size)[: args.batch_size]
    ids, mask, _ = common.encode_prompts(tokenizer, prompts, args.device)
    ids, mask = ids.repeat_interleave(args.samples_per_prompt, 0), mask.repeat_interleave(args.samples_per_prompt, 0)
    report = {"machine": machine(args.device), "seconds": timings(policies, tokenizer, ids, mask, args)}
    static_ok = "failed" not in report["seconds"]["fp32 static"]
    report["same_draws"] = same_draws(policy, tokenizer, ids, mask, args) if static_ok else None
    report["break_even"] = break_even(report["seconds"])
    report["bf16"] = mismatch(policies, tokenizer, ids, mask, args) if "failed" not in report["seconds"]["bf16 dynamic"] else None
    table = markdown(report, args, argv)
    print("\n" + table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "sampler.md").write_text(table)
        (args.out / "sampler.json").write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out / 'sampler.md'} and {args.out / 'sampler.json'}")
    if not static_ok:
        sys.exit(3)


if __name__ == "__main__":
    main()
