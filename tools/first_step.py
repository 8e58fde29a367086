"""What a run's first update does: per task and method, the range over the finished runs of a folder of the KL from
π_ref and the change of evaluation reward at iteration 1 (the runs need an evaluation there: --eval-first).

    python tools/first_step.py results/laptop/beta/runs/beta0.1
"""

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quiet_pipe  # noqa: E402,F401  (`python tools/X.py | head` ends without a BrokenPipeError traceback)
from results import NAMES, fail, load  # noqa: E402


def first_steps(groups):
    """{(task, method): [(KL at iteration 1, reward at iteration 1 − reward at iteration 0)]} over finished runs."""
    out = defaultdict(list)
    for (task, method), group in sorted(groups.items()):
        for run in group["runs"]:
            at = {e["iteration"]: e for e in run["evals"]}
            if run["status"] == "finished" and 0 in at and 1 in at:
                out[(task, method)].append((at[1]["kl"], at[1]["reward"] - at[0]["reward"]))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, help="a folder of runs evaluated at iteration 1 (--eval-first)")
    cli = parser.parse_args(argv)
    if not cli.runs.is_dir():
        fail(f"{cli.runs} is not a folder of runs")
    steps = first_steps(load(cli.runs))
    if not steps:
        fail(f"no finished run under {cli.runs} has an evaluation at iteration 1 (run it with --eval-first 1 or more)")
    print("| task | method | runs | KL at iteration 1 | reward change at iteration 1 |\n|---|---|---|---|---|")
    for (task, method), values in steps.items():
        kls, gains = [k for k, _ in values], [g for _, g in values]
        print(f"| {task} | {NAMES.get(method, method)} | {len(values)} | {min(kls):.1f} to {max(kls):.1f} | "
              f"{min(gains):+.2f} to {max(gains):+.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
