"""tools/pareto.py: the Pareto-front helper keeps exactly the non-dominated points (SPEC §15.1 #8)."""

import csv
import json
import subprocess
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import pareto  # noqa: E402


def test_pareto_front_keeps_only_non_dominated_points():
    assert pareto.pareto_front([(1, 5), (2, 4), (0.5, 3), (2, 6)]) == [(0.5, 3), (1, 5), (2, 6)]
    assert pareto.pareto_front([(1, 1), (1, 1), (1, 2)]) == [(1, 2)]  # weak domination: equal KL, more reward
    assert pareto.pareto_front([(1, 2), (0.5, 2)]) == [(0.5, 2)]  # equal reward, less KL


def test_summary_over_seeds_from_run_directories(tmp_path):
    for seed, rewards in [(1, [1.0, 2.0]), (2, [3.0, 6.0])]:
        run = tmp_path / f"wc__sta_naive__{seed}__0"
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"algo": "sta_naive", "args": {"task": "wc", "seed": seed}}))
        with open(run / "metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, ["iteration", "prompts_seen", "eval/reward", "eval/kl"])
            writer.writeheader()
            writer.writerow({"iteration": 0, "prompts_seen": 0, "eval/reward": rewards[0], "eval/kl": 0.0})
            writer.writerow({"iteration": 1, "prompts_seen": 16, "eval/reward": "", "eval/kl": ""})
            writer.writerow({"iteration": 10, "prompts_seen": 160, "eval/reward": rewards[1], "eval/kl": 0.5})
    summary = pareto.summarise(pareto.load_runs(tmp_path)[("wc", "sta_naive")])
    assert summary == [(0, 0, 0.0, 2.0, 2 ** 0.5), (10, 160, 0.5, 4.0, 8 ** 0.5)]
    out = subprocess.run([sys.executable, str(REPO / "tools" / "pareto.py"), str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0 and "(0.000, 2.000), (0.500, 4.000)" in out.stdout
