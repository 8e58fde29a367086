"""Cost of Total STA against Naive STA, and the CG damping λ (issue 6; the paper's Table 1 has Total at 2.6-4.6×
Naive's wall time and gives no λ).

Timing (no mode flag): tools/bench_cost.py's table for sta_naive.py and sta_total.py, `--repeats` rounds (default 2).
The child process below is that tool's timer: each outer iteration is timed from the end of the previous one to its
own end, wall-clock and CPU, less the time spent evaluating; the first iteration (warm-up) is left out. Peak memory is
the child's peak resident set (getrusage) and, on CUDA, torch.cuda.max_memory_allocated. Flags a script does not take
(sta_total.py's own, e.g. --cg-tol) are left out of the other's command.

Damping: `--damping 0.01,0.1,1` runs sta_total.py once per λ instead and prints, per λ, the CG iterations, the
relative residual ‖(H + λI)u − b‖/‖b‖, the breakdown rate (non-positive curvature) and the size of the implicit part.

Tolerance: `--tolerance 1e-1,1e-2,1e-3` runs sta_total.py once per --cg-tol and, at every outer iteration, also
solves the same system to a relative residual of 1e-7 (at most 50 CG steps); it prints the CG steps taken and the
relative error of u and of c = (⟨∇_ω ℓ_i, u⟩)_i against that reference: the implicit part is linear in c, so c's
error is the implicit part's error.

    python tools/bench_total.py --laptop --iterations 12 --eval-every 1000
    python tools/bench_total.py --damping 0.1,1,10 --laptop --iterations 20 --eval-every 1000
    python tools/bench_total.py --tolerance 1e-1,1e-2,1e-3 --laptop --iterations 20 --eval-every 1000
    python tools/bench_total.py --profile --laptop --iterations 12 --eval-every 1000
    python tools/bench_total.py --compare-curvature --laptop --task cwc --iterations 100 --eval-every 1000
    python tools/bench_total.py --laptop --task cwc --iterations 12 --eval-every 1000 --curvature gauss-newton

Curvature (issue 16): `--compare-curvature` runs sta_total.py once (its --curvature sets the trajectory) and, at every
solve, solves the same batch's system three more ways: exact CG at the script's settings, exact CG tightly (50 steps,
1e-6, or until it breaks down), and Gauss-Newton as --curvature gauss-newton does (pair space); then CG with
matrix-free Gauss-Newton products to --cg-tol, the alternative to the pair-space solve. It prints the cosine and norm
ratio of the implicit parts ∇_θ (1/|C|) Σ_i c_i score_i (eq. 19-26) of Gauss-Newton against exact, the breakdowns, and
the CPU seconds of each solve. Timing and the other modes take --curvature gauss-newton like any sta_total.py flag.

Profile: `--profile` runs each script once with every common.* call (rollout and, inside it, each generate call
(common.sample) and oracle call; RM scores, log-probs, CG, HVPs), every
autograd pass (by the script line that asks for it) and every optimizer step timed, and prints ms per iteration.
"""

import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import quiet_pipe  # noqa: F401  (`python tools/X.py | head` ends without a BrokenPipeError traceback)

REPO = Path(__file__).resolve().parents[1]

# runs one script in this child process, timing each outer iteration (wall and CPU time, at the end of each
# iteration), then reports the timings and the peak memory on its last line
CHILD = """
import time
started = time.perf_counter()
import json, os, resource, runpy, sys, torch
import common
marks, errors, end_iteration = [], [], common.Run.end_iteration
if os.environ.get("BENCH_SAMPLER_CACHE"):  # the KV cache to sample with on every device: dynamic or static (issue 27)
    cache = os.environ["BENCH_SAMPLER_CACHE"]
    assert cache in ("dynamic", "static"), f"BENCH_SAMPLER_CACHE={cache}: dynamic or static"
    common.SAMPLER_CACHE.update(cpu=None if cache == "dynamic" else cache, cuda=None if cache == "dynamic" else cache)
if os.environ.get("BENCH_CG_REFERENCE"):  # --tolerance: compare each solve with a tight one of the same system
    solve = common.conjugate_gradient
    def checked_solve(matvec, b, iterations=10, damping=0.0, tol=1e-10):
        u, info = solve(matvec, b, iterations, damping, tol)
        reference, reference_info = solve(matvec, b, 50, damping, 1e-7)
        relative = lambda x, y: float((x - y).norm() / y.norm()) if y is not None and y.any() else 0.0  # y = 0: both 0
        errors.append({"u": relative(u, reference), "c": relative(info["m_x"], reference_info["m_x"]), "steps": info["iterations"]})
        return u, info
    common.conjugate_gradient = checked_solve
compare, seen = [], {}
if os.environ.get("BENCH_COMPARE_CURVATURE"):  # --compare-curvature: both curvatures' implicit parts at every solve
    import torch.nn.functional as F
    import sta_total
    def recorded(name, fn):  # keeps the batch, the reward model and the policy's log-probs that the solve works on
        def wrapper(*args, **kwargs):
            out = fn(*args, **kwargs)
            if name == "rollout":
                seen["batch"] = out
            elif name == "reward_model_scores":
                seen["reward_model"] = args[0]
            elif torch.is_grad_enabled():  # the policy's continuation_logprobs (the reference's run without grad)
                seen["policy"], seen["token_logp"], seen["mask"], seen["width"] = args[0], out[0], args[2], args[3]
            return out
        return wrapper
    for name in ("rollout", "reward_model_scores", "continuation_logprobs"):
        setattr(common, name, recorded(name, getattr(common, name)))
    def compare_curvatures(b, damping):
        args = sys.modules["__main__"].args  # the script's, as runpy runs it
        assert args.pg_samples == "pairs" and args.mixed_score == "pairs", "--compare-curvature: default scores only"
        batch, reward_model, policy = seen["batch"], seen["reward_model"], seen["policy"]
        pairs = torch.cat([batch.rows("chosen"), batch.rows("rejected")])
        n = len(pairs) // 2
        ids, mask, params = batch.input_ids[pairs], batch.attention_mask[pairs], list(reward_model.parameters())
        seconds, solves = {}, {}
        def timed_solve(name, solve):
            start = time.process_time()
            solves[name] = solve()
            seconds[name] = time.process_time() - start
        def exact(iterations, tol):  # as the script: CG on H + λI with c riding along (its forward shared with b: untimed)
            scores = common.reward_model_scores(reward_model, ids, mask)
            timed_solve(f"exact_{tol:g}", lambda: sta_total.implicit_term(-F.logsigmoid(scores[:n] - scores[n:]), params, b,
                                                                           iterations, damping, tol))
        exact(args.cg_iterations, args.cg_tol)
        exact(50, 1e-6)  # tight, where CG allows (it stops at a breakdown)
        timed_solve("gauss_newton", lambda: sta_total.implicit_term_gauss_newton(  # as the script: per-pair forwards included
            ((lambda s: s[0] - s[1])(common.reward_model_scores(reward_model, ids[[i, n + i]], mask[[i, n + i]])) for i in range(n)),
            n, params, b, damping))
        # the alternative: CG on G + λI with matrix-free Gauss-Newton products (J p by the double-vjp trick, then Jᵀ(w ⊙ J p))
        scores = common.reward_model_scores(reward_model, ids, mask)
        def gauss_newton_cg():
            margin = scores[:n] - scores[n:]
            dual = torch.zeros(n, requires_grad=True)
            transposed = common.flat(torch.autograd.grad(margin, params, grad_outputs=dual, create_graph=True))  # Jᵀ dual
            weights = (torch.sigmoid(margin) * torch.sigmoid(-margin)).detach() / n
            def product(p):
                jp = torch.autograd.grad(transposed, dual, grad_outputs=p, retain_graph=True)[0]
                return common.flat(torch.autograd.grad(margin, params, grad_outputs=weights * jp, retain_graph=True)), jp
            u, info = common.conjugate_gradient(product, b, args.cg_iterations, damping, args.cg_tol)
            return u, info
        timed_solve("gauss_newton_cg", gauss_newton_cg)
        del scores
        seq_logp = (seen["token_logp"] * seen["mask"][:, seen["width"]:]).sum(1)
        score = seq_logp[:n] + seq_logp[n:]
        policy_params = list(policy.parameters())
        part = lambda c: common.flat(torch.autograd.grad((c * score).mean(), policy_params, retain_graph=True))  # eq. 19-26
        script, tight, gn = (solves[k] for k in (f"exact_{args.cg_tol:g}", "exact_1e-06", "gauss_newton"))
        parts = {name: part(solve[1]) for name, solve in (("script", script), ("tight", tight), ("gn", gn))}
        cos = lambda x, y: float(x @ y / (x.norm() * y.norm()).clamp_min(1e-30))
        ratio = lambda x, y: float(x.norm() / y.norm().clamp_min(1e-30))
        u_cg, cg_info = solves["gauss_newton_cg"]
        return {"pairs": n, "script_breakdown": script[2]["breakdown"], "script_iterations": script[2]["iterations"],
                "script_zero": not script[0].any(), "tight_zero": not tight[0].any(),
                "tight_breakdown": tight[2]["breakdown"], "tight_iterations": tight[2]["iterations"],
                "tight_residual": tight[2]["residual"], "gn_residual": gn[2]["residual"],
                "cos_gn_tight": cos(parts["gn"], parts["tight"]), "ratio_gn_tight": ratio(parts["gn"], parts["tight"]),
                "cos_gn_script": cos(parts["gn"], parts["script"]), "ratio_gn_script": ratio(parts["gn"], parts["script"]),
                "cos_script_tight": cos(parts["script"], parts["tight"]), "cos_u_gn_tight": cos(gn[0], tight[0]),
                "gn_cg_steps": cg_info["iterations"], "gn_cg_breakdown": cg_info["breakdown"],
                "gn_cg_u_error": float((u_cg - gn[0]).norm() / gn[0].norm().clamp_min(1e-30)), "seconds": seconds}
    def comparing(solve, b_at):  # b's position in the solver's arguments; λ is the fourth in both
        def wrapper(*args, **kwargs):
            out = solve(*args, **kwargs)
            if not seen.get("busy"):
                seen["busy"] = True
                try:
                    compare.append(compare_curvatures(args[b_at], args[3]))
                finally:
                    seen["busy"] = False
            return out
        return wrapper
    common.conjugate_gradient = comparing(common.conjugate_gradient, 1)  # (matvec, b, iterations, damping, tol)
    common.gauss_newton_solve = comparing(common.gauss_newton_solve, 2)  # (jacobian, curvature, b, damping)
profile, in_eval = {}, []
if os.environ.get("BENCH_PROFILE"):  # --profile: time every common call, autograd pass and optimizer step by call site
    import linecache
    def timed(label_of, fn):
        def wrapper(*args, **kwargs):
            if in_eval:
                return fn(*args, **kwargs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            entry = profile.setdefault(label_of(), [0.0, 0])
            entry[0] += time.perf_counter() - start
            entry[1] += 1
            return out
        return wrapper
    def call_site():  # the script line (or common.py function) that made the call
        frame = sys._getframe(2)
        while frame.f_code.co_filename.endswith(("bench_total.py", "<string>")) or "torch" in frame.f_code.co_filename:
            frame = frame.f_back
        where = os.path.basename(frame.f_code.co_filename)
        if where == "common.py":
            return f"common.{frame.f_code.co_name}: autograd"
        return f"{where}:{frame.f_lineno} " + linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()[:70]
    for name in ("rollout", "sample", "oracle", "reward_model_scores", "continuation_logprobs", "conjugate_gradient",
                 "hessian_vector_product"):  # sample and oracle: inside rollout (its generate calls, its rankings)
        setattr(common, name, timed(lambda name=name: f"common.{name}", getattr(common, name)))
    torch.autograd.grad = timed(call_site, torch.autograd.grad)
    torch.Tensor.backward = timed(call_site, torch.Tensor.backward)
    for optimizer in (torch.optim.RMSprop, torch.optim.AdamW):
        optimizer.step = timed(lambda optimizer=optimizer: f"{optimizer.__name__}.step", optimizer.step)
    evaluate = common.evaluate
    def untimed_evaluate(*args, **kwargs):
        in_eval.append(1)
        try:
            return evaluate(*args, **kwargs)
        finally:
            in_eval.pop()
    common.evaluate = untimed_evaluate
evaluating, offline = [0.0, 0.0], []  # evaluation time so far (wall, CPU); the one-off offline data set's (wall, CPU)
evaluate_ = common.evaluate
def timed_evaluate(*args, **kwargs):  # left out of the iteration it falls in
    start = time.perf_counter(), time.process_time()
    try:
        return evaluate_(*args, **kwargs)
    finally:
        evaluating[0] += time.perf_counter() - start[0]
        evaluating[1] += time.process_time() - start[1]
common.evaluate = timed_evaluate
offline_data = common.offline_data
def timed_offline_data(*args, **kwargs):  # generated afresh in a scratch cache, so a cached data set never hides its cost
    import tempfile
    from pathlib import Path
    cache_dir, start = common.cache_dir, (time.perf_counter(), time.process_time())
    with tempfile.TemporaryDirectory() as fresh:
        common.cache_dir = lambda: Path(fresh)
        try:
            return offline_data(*args, **kwargs)
        finally:
            common.cache_dir = cache_dir
            offline.append((time.perf_counter() - start[0], time.process_time() - start[1]))
common.offline_data = timed_offline_data
def timed_end_iteration(run, row, *args):
    marks.append((time.perf_counter(), time.process_time(), *evaluating))
    if len(marks) == 1:  # the first iteration is warm-up
        profile.clear()
    return end_iteration(run, row, *args)
common.Run.end_iteration = timed_end_iteration
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
peak = {"rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
if torch.cuda.is_available():
    peak["cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
print("bench " + json.dumps({"marks": marks, "peak": peak, "offline": offline, "errors": errors, "profile": profile,
                            "compare": compare, "started": started, "sampler_cache": dict(common.SAMPLER_CACHE)}))
"""


def run(script, flags, out_dir, name, env=None):
    """Run a script to completion; returns (metrics rows, [(wall, CPU) seconds of each timed iteration], peak memory,
    the child's whole report). Timed: iterations 2, 3, ..., each less its evaluation time (the first one is warm-up)."""
    proc = subprocess.run([sys.executable, "-c", CHILD, f"{script}.py", *flags, "--output-dir", str(out_dir), "--run-name", name],
                          cwd=REPO, capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", **os.environ, **(env or {})})
    if proc.returncode != 0:
        sys.exit(f"{script} failed:\n{proc.stderr[-3000:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1].removeprefix("bench "))
    seconds = iteration_seconds(report["marks"])
    if not seconds:
        sys.exit("no timed iteration: pass --iterations 2 or more")
    with open(out_dir / name / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    report["seconds"] = seconds
    return rows, seconds, report["peak"], report


def iteration_seconds(marks):
    """(wall, CPU) seconds of each iteration after the first (warm-up), from the marks (wall, CPU, evaluation wall, evaluation
    CPU, each cumulative) taken at the end of every iteration; the time spent evaluating is left out."""
    return [tuple((marks[i][k] - marks[i - 1][k]) - (marks[i][k + 2] - marks[i - 1][k + 2]) for k in (0, 1))
            for i in range(1, len(marks))]


def damping(flags, lambdas, tmp):
    print(f"flags: {' '.join(flags)}")
    print("λ        CG iterations  residual (median, max)  breakdowns  ‖u‖ (median)  ‖implicit‖/‖naive‖ (median)  cosine (mean)")
    for lam in lambdas:
        rows, _, _, _ = run("sta_total", [*flags, "--cg-damping", lam], tmp, f"damping_{lam}")
        rows = [r for r in rows if r.get("cg/iterations")]
        get = lambda key: [float(r[key]) for r in rows]
        ratio = [i / n for i, n in zip(get("policy/implicit_grad_norm"), get("policy/naive_grad_norm"))]
        print(f"{lam:<8} {statistics.mean(get('cg/iterations')):13.1f}  {statistics.median(get('cg/residual')):10.2e} "
              f"{max(get('cg/residual')):10.2e}  {sum(get('cg/breakdown')):4.0f}/{len(rows):<5}  {statistics.median(get('cg/u_norm')):12.3g}"
              f"  {statistics.median(ratio):27.3g}  {statistics.mean(get('policy/implicit_cosine')):13.3f}", flush=True)


def profiled(flags, tmp):
    from bench_cost import flags_for, script_options
    print(f"flags: {' '.join(flags)}")
    print("ms per outer iteration (inclusive: common.conjugate_gradient contains the HVPs, a script line its calls)")
    for script in ("sta_naive", "sta_total"):
        rows, seconds, _, report = run(script, flags_for(flags, script_options(f"{script}.py"))[0], tmp, f"profile_{script}",
                                       env={"BENCH_PROFILE": "1"})
        iterations = len(report["marks"]) - 1
        print(f"\n{script}: {statistics.mean(w for w, _ in seconds) * 1000:.0f} ms per iteration (wall, timing wrappers on)")
        for label, (total, calls) in sorted(report["profile"].items(), key=lambda item: -item[1][0]):
            print(f"  {total / iterations * 1000:8.0f} ms  {calls / iterations:5.1f} calls  {label}")


def tolerance(flags, tolerances, tmp):
    print(f"flags: {' '.join(flags)}")
    print("tol      CG steps (mean, max)  relative error of u (median, max)  of c (median, max)  breakdowns")
    for tol in tolerances:
        rows, _, _, report = run("sta_total", [*flags, "--cg-tol", tol], tmp, f"tolerance_{tol}", env={"BENCH_CG_REFERENCE": "1"})
        errors = report["errors"]
        steps, u, c = ([e[key] for e in errors] for key in ("steps", "u", "c"))
        breakdowns = sum(int(r["cg/breakdown"]) for r in rows if r.get("cg/breakdown"))
        print(f"{tol:<8} {statistics.mean(steps):8.1f} {max(steps):6d}  {statistics.median(u):17.2e} {max(u):10.2e}  "
              f"{statistics.median(c):12.2e} {max(c):9.2e}  {breakdowns:4d}/{len(errors)}", flush=True)


def compare_curvature(flags, tmp):
    rows, _, _, report = run("sta_total", flags, tmp, "compare_curvature", env={"BENCH_COMPARE_CURVATURE": "1"})
    compared = report["compare"]
    print(f"flags: {' '.join(flags)}")
    print("iteration  pairs  exact CG: steps, breakdown | tight: steps, breakdown, residual | GN vs tight: cosine, norm ratio"
          " | GN vs exact CG: cosine, norm ratio")
    versus = lambda c, key, zero: "        exact u = 0" if c[zero] else f"{c[f'cos_{key}']:8.3f} {c[f'ratio_{key}']:10.3f}"
    for i, c in enumerate(compared, 1):
        print(f"{i:9d}  {c['pairs']:5d}  {c['script_iterations']:15d} {c['script_breakdown']!s:>10} | {c['tight_iterations']:12d}"
              f" {c['tight_breakdown']!s:>10} {c['tight_residual']:9.1e} | {versus(c, 'gn_tight', 'tight_zero'):>30}"
              f" | {versus(c, 'gn_script', 'script_zero'):>33}")
    tight = [c for c in compared if not c["tight_breakdown"]]
    partial = [c for c in compared if c["tight_breakdown"] and not c["tight_zero"]]
    median = lambda key, cs: statistics.median(c[key] for c in cs) if cs else float("nan")
    quartiles = lambda key, cs: statistics.quantiles([c[key] for c in cs], n=4) if len(cs) > 1 else [float("nan")] * 3
    print(f"\n{len(compared)} solves; exact CG at the script's settings broke down on "
          f"{sum(c['script_breakdown'] for c in compared)} (returning u = 0 on {sum(c['script_zero'] for c in compared)}), "
          f"the tight one (50 steps, 1e-6) on {len(compared) - len(tight)} (u = 0 on {sum(c['tight_zero'] for c in compared)})")
    for label, key, cs in (("GN vs tight exact, where the tight CG converged", "gn_tight", tight),
                           ("GN vs tight exact, where it broke down with u ≠ 0", "gn_tight", partial),
                           ("GN vs exact at the script's settings, where its u ≠ 0", "gn_script",
                            [c for c in compared if not c["script_zero"]])):
        cq, rq = quartiles(f"cos_{key}", cs), quartiles(f"ratio_{key}", cs)
        print(f"{label} ({len(cs)}): cosine median {median(f'cos_{key}', cs):.3f} (quartiles {cq[0]:.3f}, {cq[2]:.3f}; min "
              f"{min((c[f'cos_{key}'] for c in cs), default=float('nan')):.3f}), norm ratio median {median(f'ratio_{key}', cs):.3f} "
              f"(quartiles {rq[0]:.3f}, {rq[2]:.3f})")
    print(f"exact at the script's settings vs tight, where the tight CG converged: cosine median {median('cos_script_tight', tight):.3f}")
    print(f"GN: residual max {max(c['gn_residual'] for c in compared):.1e}; CG with Gauss-Newton products to the same --cg-tol: "
          f"{statistics.mean(c['gn_cg_steps'] for c in compared):.1f} steps (mean), {sum(c['gn_cg_breakdown'] for c in compared)} "
          f"breakdowns, u's error against the pair-space solve median {median('gn_cg_u_error', compared):.1e}")
    print("CPU seconds per solve, median (one thread; the reward-model forward shared with b is left out of CG's):")
    for name in compared[0]["seconds"]:
        print(f"  {name}: {statistics.median(c['seconds'][name] for c in compared):.3f}")


if __name__ == "__main__":
    flags = sys.argv[1:]
    if "-h" in flags or "--help" in flags:
        sys.exit(print(__doc__))
    options = {"--repeats": "2", "--damping": "", "--tolerance": "", "--profile": None, "--compare-curvature": None}
    for option, value in options.items():
        if option in flags:
            i = flags.index(option)
            options[option] = True if value is None else flags[i + 1]
            del flags[i : i + (1 if value is None else 2)]
    with tempfile.TemporaryDirectory() as tmp:
        if options["--damping"]:
            damping(flags, options["--damping"].split(","), Path(tmp))
        elif options["--profile"]:
            profiled(flags, Path(tmp))
        elif options["--tolerance"]:
            tolerance(flags, options["--tolerance"].split(","), Path(tmp))
        elif options["--compare-curvature"]:
            compare_curvature(flags, Path(tmp))
        else:  # the cost table of tools/bench_cost.py, for these two
            from bench_cost import main
            main(["--methods", "sta_naive", "sta_total", "--repeats", options["--repeats"], "--", *flags])
