"""tools/same_training.py: a re-run with extra early evaluations trains the same; a changed training cell is found."""

import subprocess
import sys

from conftest import REPO
from test_results import write_run

TOOL = [sys.executable, str(REPO / "tools" / "same_training.py")]


def rows(extra_eval, loss_at_2=0.5, diagnostic=False):
    out = []
    for i in range(4):
        row = {"iteration": i, "wall_time": 10.0 * i + extra_eval, "policy/loss": 1.0 / (i + 1), "eval/reward": "", "eval/kl": ""}
        if diagnostic:  # a column a later version of the script logs, the earlier did not
            row["cg/hit_cap"] = 0
        if i in (0, 3) or (extra_eval and i == 1):
            row.update({"eval/reward": 1.0 + i, "eval/kl": 2.0 * i})
        out.append(row)
    out[2]["policy/loss"] = loss_at_2
    return out


def test_extra_evaluations_are_the_same_training_and_a_changed_cell_is_not(tmp_path):
    write_run(tmp_path / "a", "cwc__sta_naive__1", "sta_naive", "cwc", 1, rows(0))
    write_run(tmp_path / "b", "cwc__sta_naive__1", "sta_naive", "cwc", 1, rows(1))  # an evaluation at 1, other wall times
    write_run(tmp_path / "a", "cwc__sta_naive__2", "sta_naive", "cwc", 2, rows(0))
    write_run(tmp_path / "b", "cwc__sta_naive__2", "sta_naive", "cwc", 2, rows(1, loss_at_2=0.25))
    write_run(tmp_path / "b", "cwc__sta_naive__3", "sta_naive", "cwc", 3, rows(1), status="running")  # not compared
    write_run(tmp_path / "a", "cwc__sta_total__1", "sta_total", "cwc", 1, rows(0))
    write_run(tmp_path / "b", "cwc__sta_total__1", "sta_total", "cwc", 1, rows(1, diagnostic=True))
    done = subprocess.run([*TOOL, str(tmp_path / "a"), str(tmp_path / "b")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stdout.splitlines() == ["cwc__sta_naive__1: same training", "cwc__sta_naive__2: 1 cells differ",
                                        "cwc__sta_total__1: same training (logged by one of the two only, not "
                                        "compared: cg/hit_cap)", "2 of 3 runs trained the same"]
    bad = subprocess.run([*TOOL, str(tmp_path / "a"), str(tmp_path / "none")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip() == f"error: {tmp_path / 'none'} is not a folder of runs"
