"""Whether the finished runs of one folder trained exactly as the same-named finished runs of another: every metrics.csv cell equal
except wall_time, the evaluations only one of the two made (--eval-first adds evaluations and changes no training
step, tests/test_eval_first.py) and the columns only one of the two logged (a diagnostic added to a script later, such
as sta_total.py's cg/hit_cap; named beside the run). Bit-identity holds on the same CPU model, thread count, torch and
transformers.

    python tools/same_training.py results/laptop/runs results/laptop/beta/runs/beta0.1
"""

import argparse
import csv
import json
import sys
from pathlib import Path

import quiet_pipe  # noqa: F401  (`python tools/X.py | head` ends without a BrokenPipeError traceback)


def differing_cells(a, b):
    """Cells of metrics.csv a and b (lists of rows) that differ, over the columns both logged, leaving out wall_time and
    evaluation cells of rows where only one run evaluated; a row count that differs counts each missing row's cells."""
    columns = set(a[0] if a else {}) & set(b[0] if b else {})
    n = abs(len(a) - len(b)) * len(columns)
    for x, y in zip(a, b):
        both_evaluated = bool(x.get("eval/reward")) == bool(y.get("eval/reward"))
        n += sum(x[k] != y[k] for k in columns if k != "wall_time" and (both_evaluated or not k.startswith("eval/")))
    return n


def one_sided(a, b):
    """The columns only one of metrics.csv a and b logged, sorted."""
    return sorted(set(a[0] if a else {}) ^ set(b[0] if b else {}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path, help="a folder of runs")
    parser.add_argument("second", type=Path, help="another folder of runs; runs with the same name are compared")
    cli = parser.parse_args(argv)
    for root in (cli.first, cli.second):
        if not root.is_dir():
            print(f"error: {root} is not a folder of runs", file=sys.stderr)
            return 2
    read = lambda d: list(csv.DictReader(open(d / "metrics.csv", newline="")))
    finished = lambda d: (d / "config.json").is_file() and json.loads((d / "config.json").read_text()).get("status") == "finished"
    names = sorted(d.name for d in cli.second.iterdir() if finished(d) and finished(cli.first / d.name))
    same = 0
    for name in names:
        a, b = read(cli.first / name), read(cli.second / name)
        n, only = differing_cells(a, b), one_sided(a, b)
        same += n == 0
        print(f"{name}: {'same training' if n == 0 else f'{n} cells differ'}"
              + (f" (logged by one of the two only, not compared: {', '.join(only)})" if only else ""))
    print(f"{same} of {len(names)} runs trained the same")
    return 0 if same == len(names) else 1


if __name__ == "__main__":
    sys.exit(main())
