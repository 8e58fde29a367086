"""Naive against Total STA (exact and Gauss-Newton curvature), seed by seed, from a folder of grid runs (issue 16).

    python tools/compare_total.py results/laptop/runs --task cwc

Prints, from each finished run's metrics.csv: the final evaluation reward (and KL) per seed, the paired differences of
the final reward (same seed), their mean ± std, and per Total run the CG breakdowns and the median ratio of the
implicit to the naive gradient norm (policy/implicit_grad_norm / policy/naive_grad_norm).
"""

import argparse
import csv
import json
import statistics
from pathlib import Path

import quiet_pipe  # noqa: F401  (`python tools/X.py | head` ends without a BrokenPipeError traceback)

METHODS = ["sta_naive", "sta_total", "sta_total_gn"]
PAIRS = [("sta_total", "sta_naive"), ("sta_total_gn", "sta_naive"), ("sta_total_gn", "sta_total")]

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("runs", help="folder of run directories named {task}__{method}__{seed} (tools/grid.py)")
parser.add_argument("--task", default="cwc")
parser.add_argument("--seeds", type=int, nargs="+", default=[467, 532, 6518, 7107, 8688])
cli = parser.parse_args()

final, solver = {}, {}
for method in METHODS:
    for seed in cli.seeds:
        run = Path(cli.runs) / f"{cli.task}__{method}__{seed}"
        if not (run / "config.json").exists() or json.loads((run / "config.json").read_text()).get("status") != "finished":
            continue
        with open(run / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        last = [r for r in rows if r.get("eval/reward")][-1]
        final[method, seed] = float(last["eval/reward"]), float(last["eval/kl"])
        if method != "sta_naive":
            steps = [r for r in rows if r.get("policy/implicit_grad_norm")]
            solver[method, seed] = (sum(int(r["cg/breakdown"]) for r in steps), len(steps), statistics.median(
                float(r["policy/implicit_grad_norm"]) / float(r["policy/naive_grad_norm"]) for r in steps))

print("| seed | " + " | ".join(METHODS) + " | " + " | ".join(f"{a} − {b}" for a, b in PAIRS) + " |")
print("|---" * (len(METHODS) + len(PAIRS) + 1) + "|")
differences = {pair: [] for pair in PAIRS}
for seed in cli.seeds:
    cells = [f"{final[m, seed][0]:.2f} ({final[m, seed][1]:.1f})" if (m, seed) in final else "–" for m in METHODS]
    for a, b in PAIRS:
        if (a, seed) in final and (b, seed) in final:
            differences[a, b].append(final[a, seed][0] - final[b, seed][0])
            cells.append(f"{differences[a, b][-1]:+.2f}")
        else:
            cells.append("–")
    print(f"| {seed} | " + " | ".join(cells) + " |")


def mean_std(values):
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values) if len(values) > 1 else float('nan'):.2f}"


for method in METHODS:
    done = [final[method, s] for s in cli.seeds if (method, s) in final]
    if done:
        print(f"{method}: n = {len(done)}, final reward {mean_std([r for r, _ in done])}, KL {mean_std([k for _, k in done])}")
for (a, b), values in differences.items():
    if values:
        print(f"{a} − {b}: {mean_std(values)} over {len(values)} seeds, {sum(v > 0 for v in values)} positive")
for (method, seed), (breakdowns, steps, ratio) in sorted(solver.items()):
    print(f"{method} seed {seed}: {breakdowns}/{steps} CG breakdowns, median ‖implicit‖/‖naive‖ {ratio:.2f}")
