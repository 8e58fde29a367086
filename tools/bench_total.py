"""Cost of Total STA against Naive STA, and the CG damping λ (issue 6; the paper's Table 1 has Total at 2.6-4.6×
Naive's wall time and gives no λ).

Timing: runs sta_naive.py and sta_total.py with the same flags, `--repeats` times, alternating, each in its own child
process (so each has its own peak memory), and prints seconds per outer iteration for both, their ratio and peak
memory. An iteration is timed from the end of the previous one to its own end, in wall-clock and in CPU time (the
latter is what to compare on a shared machine); the first iteration (warm-up) and those that evaluate are left out,
so pass --iterations ≥ 3 and an --eval-every beyond it. Peak memory is the child's peak resident set (getrusage) and,
on CUDA, torch.cuda.max_memory_allocated.

Damping: `--damping 0.01,0.1,1` runs sta_total.py once per λ instead and prints, per λ, the CG iterations, the
relative residual ‖(H + λI)u − b‖/‖b‖, the breakdown rate (non-positive curvature) and the size of the implicit part.

    python tools/bench_total.py --laptop --iterations 12 --eval-every 1000
    python tools/bench_total.py --damping 0.1,1,10 --laptop --iterations 20 --eval-every 1000
"""

import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# runs one script in this child process, timing each outer iteration (wall and CPU time, at the end of each
# iteration), then reports the timings and the peak memory on its last line
CHILD = """
import json, resource, runpy, sys, time, torch
import common
marks, end_iteration = [], common.Run.end_iteration
def timed_end_iteration(run, row, *args):
    marks.append((time.perf_counter(), time.process_time(), "eval/reward" in row))
    return end_iteration(run, row, *args)
common.Run.end_iteration = timed_end_iteration
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
peak = {"rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
if torch.cuda.is_available():
    peak["cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
print("bench " + json.dumps({"marks": marks, "peak": peak}))
"""


def run(script, flags, out_dir, name):
    """Run a script to completion; returns (metrics rows, [(wall, CPU) seconds of each timed iteration], peak memory).
    Timed: iterations 2, 3, ... without an evaluation (the first one is warm-up)."""
    proc = subprocess.run([sys.executable, "-c", CHILD, f"{script}.py", *flags, "--output-dir", str(out_dir), "--run-name", name],
                          cwd=REPO, capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", **os.environ})
    if proc.returncode != 0:
        sys.exit(f"{script} failed:\n{proc.stderr[-3000:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1].removeprefix("bench "))
    marks = report["marks"]
    seconds = [(marks[i][0] - marks[i - 1][0], marks[i][1] - marks[i - 1][1]) for i in range(1, len(marks)) if not marks[i][2]]
    if not seconds:
        sys.exit("no timed iteration: pass --iterations 3 or more and an --eval-every beyond it")
    with open(out_dir / name / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return rows, seconds, report["peak"]


def timing(flags, repeats, tmp):
    results = {"sta_naive": ([], []), "sta_total": ([], [])}
    for r in range(repeats):
        for script, (seconds, peaks) in results.items():
            _, s, peak = run(script, flags, tmp, f"{script}_{r}")
            seconds += s
            peaks.append(peak)
            print(f"{script} run {r}: {statistics.mean(w for w, _ in s):.3f} s/iteration wall, "
                  f"{statistics.mean(c for _, c in s):.3f} CPU, over {len(s)} iterations; peak {peak}", flush=True)
    wall = {script: statistics.mean(w for w, _ in s) for script, (s, _) in results.items()}
    cpu = {script: statistics.mean(c for _, c in s) for script, (s, _) in results.items()}
    print(f"\nflags: {' '.join(flags)}")
    for script, (s, peaks) in results.items():
        print(f"{script}: {wall[script]:.3f} s/iteration wall, {cpu[script]:.3f} s CPU ({len(s)} iterations), peak "
              + ", ".join(f"{key} {max(p[key] for p in peaks):.0f} MiB" for key in peaks[0]))
    print(f"ratio Total / Naive: {wall['sta_total'] / wall['sta_naive']:.2f} wall, {cpu['sta_total'] / cpu['sta_naive']:.2f} CPU")


def damping(flags, lambdas, tmp):
    print(f"flags: {' '.join(flags)}")
    print("λ        CG iterations  residual (median, max)  breakdowns  ‖u‖ (median)  ‖implicit‖/‖naive‖ (median)  cosine (mean)")
    for lam in lambdas:
        rows, _, _ = run("sta_total", [*flags, "--cg-damping", lam], tmp, f"damping_{lam}")
        rows = [r for r in rows if r.get("cg/iterations")]
        get = lambda key: [float(r[key]) for r in rows]
        ratio = [i / n for i, n in zip(get("policy/implicit_grad_norm"), get("policy/naive_grad_norm"))]
        print(f"{lam:<8} {statistics.mean(get('cg/iterations')):13.1f}  {statistics.median(get('cg/residual')):10.2e} "
              f"{max(get('cg/residual')):10.2e}  {sum(get('cg/breakdown')):4.0f}/{len(rows):<5}  {statistics.median(get('cg/u_norm')):12.3g}"
              f"  {statistics.median(ratio):27.3g}  {statistics.mean(get('policy/implicit_cosine')):13.3f}", flush=True)


if __name__ == "__main__":
    flags = sys.argv[1:]
    if "-h" in flags or "--help" in flags:
        sys.exit(print(__doc__))
    options = {"--repeats": "2", "--damping": ""}
    for option in options:
        if option in flags:
            i = flags.index(option)
            options[option] = flags[i + 1]
            del flags[i : i + 2]
    with tempfile.TemporaryDirectory() as tmp:
        if options["--damping"]:
            damping(flags, options["--damping"].split(","), Path(tmp))
        else:
            timing(flags, int(options["--repeats"]), Path(tmp))
