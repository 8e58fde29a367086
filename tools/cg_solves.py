"""Total STA's CG solves in folders of runs: per folder, how many broke down, how many took all their iterations
(`cg/hit_cap`), and how many of those returned a u with a relative residual above 1, worse than u = 0 (whose residual
is 1): CG returns its smallest-residual iterate on a breakdown but its last one at the cap (common.conjugate_gradient).
Each of those is listed with its run, iteration, ‖u‖, the implicit part's norm against the naive part's, and the run's
evaluation before it and at its end.

    python tools/cg_solves.py results/laptop/beta/runs/beta0.1 results/laptop/beta/runs/beta0.3 results/laptop/beta/runs/beta0.03
"""

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quiet_pipe  # noqa: E402,F401  (`python tools/X.py | head` ends without a BrokenPipeError traceback)
from results import fail  # noqa: E402


def solves(run_dir):
    """(rows with a CG solve, the run's rows) of one run's metrics.csv; no solves for a run without CG columns."""
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [r for r in rows if r.get("cg/hit_cap") not in (None, "") and r.get("cg/iterations") not in (None, "")], rows


def worse_than_zero(run_dir):
    """The solves of a run that hit the cap with a residual above 1, each with what came before and after it."""
    done, rows = solves(run_dir)
    evals = [r for r in rows if r.get("eval/reward") not in (None, "")]
    out = []
    for r in done:
        if r["cg/hit_cap"] == "1" and float(r["cg/residual"]) > 1:
            before = [e for e in evals if int(e["iteration"]) < int(r["iteration"])]
            out.append({"run": run_dir.name, "iteration": int(r["iteration"]), "residual": float(r["cg/residual"]),
                        "u_norm": float(r["cg/u_norm"]), "implicit": float(r["policy/implicit_grad_norm"]),
                        "naive": float(r["policy/naive_grad_norm"]),
                        "before": (float(before[-1]["eval/reward"]), float(before[-1]["eval/kl"])) if before else None,
                        "end": (float(evals[-1]["eval/reward"]), float(evals[-1]["eval/kl"])) if evals else None})
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", type=Path, nargs="+", help="folders of runs (TASK__sta_total__SEED subfolders)")
    cli = parser.parse_args(argv)
    table, listed, without = [], [], []
    for folder in cli.folders:
        if not folder.is_dir():
            fail(f"{folder} is not a folder of runs")
        runs = sorted(d for d in folder.glob("*__sta_total__*") if (d / "metrics.csv").exists())
        counts = [0, 0, 0, 0]
        for run_dir in runs:
            done, _ = solves(run_dir)
            counts[0] += len(done)
            counts[1] += sum(r["cg/breakdown"] == "1" for r in done)
            counts[2] += sum(r["cg/hit_cap"] == "1" for r in done)
            bad = worse_than_zero(run_dir)
            counts[3] += len(bad)
            listed += [(folder, b) for b in bad]
        if counts[0]:
            table.append((folder, len(runs), *counts))
        else:
            without.append(str(folder))
    if not table:
        fail("no Total STA run with CG columns (cg/hit_cap) under " + " ".join(map(str, cli.folders)))
    print("| folder | runs | CG solves | breakdowns | at the cap | at the cap, residual > 1 |\n|---|---|---|---|---|---|")
    for folder, n, total, broke, cap, bad in table:
        print(f"| `{folder}` | {n} | {total} | {broke} | {cap} | {bad} |")
    if without:
        print(f"\nLeft out, no Total STA run with a cg/hit_cap column (runs from before it): {', '.join(without)}")
    if listed:
        print("\n| folder | run | iteration | residual | ‖u‖ | ‖implicit‖ / ‖naive‖ | eval before (reward, KL) | "
              "eval at the end |\n|---|---|---|---|---|---|---|---|")
        for folder, b in listed:
            show = lambda e: f"{e[0]:.2f}, {e[1]:.1f}" if e else "–"  # noqa: E731
            print(f"| `{folder}` | {b['run']} | {b['iteration']} | {b['residual']:.2f} | {b['u_norm']:.3g} | "
                  f"{b['implicit']:.3g} / {b['naive']:.3g} | {show(b['before'])} | {show(b['end'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
