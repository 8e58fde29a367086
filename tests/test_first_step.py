"""tools/first_step.py: the KL and reward change at iteration 1 per task and method, finished runs only; a folder
without an evaluation at iteration 1 is one line, exit 2."""

import subprocess
import sys

from conftest import REPO
from test_results import write_run

TOOL = [sys.executable, str(REPO / "tools" / "first_step.py")]


def rows(kl1, reward1, early=True):
    out = [{"iteration": 0, "wall_time": 0.0, "eval/reward": 1.0, "eval/kl": 0.0}]
    out.append({"iteration": 1, "wall_time": 1.0, "eval/reward": reward1 if early else "", "eval/kl": kl1 if early else ""})
    out.append({"iteration": 2, "wall_time": 2.0, "eval/reward": 9.0, "eval/kl": 30.0})
    return out


def test_ranges_over_finished_runs_and_a_folder_without_early_evaluations(tmp_path):
    write_run(tmp_path / "a", "wc__sta_naive__1", "sta_naive", "wc", 1, rows(10.0, 1.5))
    write_run(tmp_path / "a", "wc__sta_naive__2", "sta_naive", "wc", 2, rows(14.0, 0.8))
    write_run(tmp_path / "a", "wc__sta_naive__3", "sta_naive", "wc", 3, rows(99.0, 9.0), status="running")  # left out
    done = subprocess.run([*TOOL, str(tmp_path / "a")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "| wc | Naive STA | 2 | 10.0 to 14.0 | -0.20 to +0.50 |" in done.stdout
    write_run(tmp_path / "b", "wc__sta_naive__1", "sta_naive", "wc", 1, rows(10.0, 1.5, early=False))
    bad = subprocess.run([*TOOL, str(tmp_path / "b")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--eval-first" in bad.stderr
