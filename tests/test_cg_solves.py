"""tools/cg_solves.py: counts of Total STA's CG solves per folder (breakdowns, at the cap, at the cap with a residual
above 1) and the list of the last kind, from metrics.csv alone; a folder without such runs is one line, exit 2."""

import subprocess
import sys

from conftest import REPO
from test_results import write_run

TOOL = [sys.executable, str(REPO / "tools" / "cg_solves.py")]


def rows(solves):
    """Iteration 0 (an evaluation, no solve), then one row per (breakdown, hit_cap, residual) of `solves`, an evaluation
    at iterations 2 and 4 (reward = iteration, KL = 10 × iteration)."""
    out = [{"iteration": 0, "wall_time": 0.0, "eval/reward": 0.0, "eval/kl": 0.0, "cg/iterations": "", "cg/breakdown": "",
            "cg/hit_cap": "", "cg/residual": "", "cg/u_norm": "", "policy/implicit_grad_norm": "",
            "policy/naive_grad_norm": ""}]
    for i, (breakdown, cap, residual) in enumerate(solves, 1):
        out.append({"iteration": i, "wall_time": float(i), "eval/reward": float(i) if i % 2 == 0 else "",
                    "eval/kl": 10.0 * i if i % 2 == 0 else "", "cg/iterations": 10 if cap else 3,
                    "cg/breakdown": int(breakdown), "cg/hit_cap": int(cap), "cg/residual": residual,
                    "cg/u_norm": 100.0 * residual, "policy/implicit_grad_norm": 50.0 * residual,
                    "policy/naive_grad_norm": 7.0})
    return out


def test_counts_and_the_solves_worse_than_zero(tmp_path):
    solves = [(True, False, 1.0), (False, True, 0.4), (False, True, 34.0), (False, False, 0.01)]
    write_run(tmp_path / "f", "wc__sta_total__1", "sta_total", "wc", 1, rows(solves))
    write_run(tmp_path / "f", "wc__sta_total__2", "sta_total", "wc", 2, rows([(True, False, 1.0)] * 4))
    write_run(tmp_path / "f", "wc__sta_naive__1", "sta_naive", "wc", 1, rows(solves))  # not Total: left out
    write_run(tmp_path / "old", "wc__sta_total__1", "sta_total", "wc", 1,
              [{k: v for k, v in r.items() if k != "cg/hit_cap"} for r in rows(solves)])  # from before cg/hit_cap
    done = subprocess.run([*TOOL, str(tmp_path / "f"), str(tmp_path / "old")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"| `{tmp_path / 'f'}` | 2 | 8 | 5 | 2 | 1 |" in done.stdout
    # iteration 3's solve: residual 34 > 1; the evaluation before it is iteration 2's, the last one iteration 4's
    assert f"| `{tmp_path / 'f'}` | wc__sta_total__1 | 3 | 34.00 | 3.4e+03 | 1.7e+03 / 7 | 2.00, 20.0 | 4.00, 40.0 |" \
        in done.stdout
    assert done.stdout.count("wc__sta_total__") == 1 and f"Left out, no Total STA run with a cg/hit_cap column " \
        f"(runs from before it): {tmp_path / 'old'}" in done.stdout
    bad = subprocess.run([*TOOL, str(tmp_path / "old")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "cg/hit_cap" in bad.stderr
