"""--eval-first (issue 25): extra evaluations after each of the first iterations, where the reward-KL path moves
fastest, and nothing else changed: the evaluation draws from its own generator (common.evaluate forks the RNG)."""

import os

import pytest

from conftest import TINY, read_metrics, run_script


@pytest.mark.parametrize("script,flags", [("sta_naive", []), ("sta_total", []), ("dpo", ["--online"]), ("parl", [])])
def test_extra_early_evaluations_change_no_training_step(script, flags, prompts_file, tmp_path):
    """--eval-first N evaluates after each of the first N iterations as well (issue 25: the reward-KL path where it
    moves fastest), and changes nothing else: the evaluation draws from its own generator, so every training column of
    every iteration, and the evaluations both runs make, are the same to the last digit."""
    base = [*TINY, "--prompts", prompts_file, "--task", "cwc", "--iterations", "4", *flags]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    plain, plain_dir = run_script(script, *base, tmp_path=tmp_path / "plain", env=env)
    early, early_dir = run_script(script, *base, "--eval-first", "2", tmp_path=tmp_path / "early", env=env)
    assert plain.returncode == 0 and early.returncode == 0, (plain.stderr[-1000:], early.stderr[-1000:])
    plain_rows, early_rows = read_metrics(plain_dir), read_metrics(early_dir)
    evaluated = lambda rows: [int(r["iteration"]) for r in rows if r.get("eval/reward")]
    assert evaluated(plain_rows) == [0, 3, 4] and evaluated(early_rows) == [0, 1, 2, 3, 4]  # TINY: --eval-every 3
    for a, b in zip(plain_rows, early_rows, strict=True):
        if int(a["iteration"]) in (1, 2):  # the extra evaluations: only their columns differ
            a = {k: v for k, v in a.items() if not k.startswith("eval/")}
            b = {k: v for k, v in b.items() if not k.startswith("eval/")}
        assert {k: v for k, v in a.items() if k != "wall_time"} == {k: v for k, v in b.items() if k != "wall_time"}
