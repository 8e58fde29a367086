"""tools/tuning.py (issue 25): the tuning protocol's selection rule of docs/reproducing.md on synthetic run folders
whose scores at KL 35 are known: the envelope score, the tie within 0.10 broken by final reward, a diverged seed that
makes a configuration unselectable, and a missing or cut-off seed that leaves the method's selection pending."""

import csv
import os
import subprocess
import sys

from conftest import REPO
from test_results import write_run

sys.path.insert(0, str(REPO / "tools"))
import tuning  # noqa: E402

TUNING = [sys.executable, str(REPO / "tools" / "tuning.py")]


def rows(kls, rewards):
    """metrics.csv rows of a run evaluated every 10 iterations at these KLs and rewards (iteration 0 first)."""
    return [{"iteration": 10 * i, "wall_time": 1.0 * i, "prompts_seen": 160 * i, "pairs_queried": 160 * i,
             "eval/reward": r, "eval/kl": k} for i, (k, r) in enumerate(zip(kls, rewards))]


def test_the_selection_rule_on_synthetic_tuning_runs(tmp_path):
    root = tmp_path / "runs"
    # folders named against the rates they hold: configurations come from the runs' arguments, not folder names
    naive = {3e-5: ([0, 10, 20], [1, 3, 4]),  # never reaches KL 35: scores its best evaluation, 4
             1e-4: ([0, 30, 40], [1, 4, 6]),  # crosses KL 35 at 5 (seed 202: 5.05, mean 5.025); final reward 6
             3e-4: ([0, 35, 80], [1, 4.95, 8])}  # 4.95 at KL 35, within 0.10 of 5.025, final reward 8: selected
    for folder, lr in zip(["x3", "x0.3", "x1"], naive):
        for seed in (101, 202):
            kls, rewards = naive[lr]
            rewards = [r + (0.1 if lr == 1e-4 and seed == 202 and i == 1 else 0) for i, r in enumerate(rewards)]
            write_run(root / folder, f"cwc__sta_naive__{seed}", "sta_naive", "cwc", seed, rows(kls, rewards), policy_lr=lr)
    (root / "x3" / "cwc__sta_naive__101" / "policy").mkdir()
    (root / "x3" / "cwc__sta_naive__101" / "policy" / "config.json").write_text('{"model_type": "gpt2"}')  # not a run
    write_run(root / "x3", "cwc__sta_naive__101.old-1", "sta_naive", "cwc", 101, rows([0, 1], [1, 99]), policy_lr=9e-4)
    # Total STA: the best score (9) has a diverged seed, so it cannot be selected; the preset's rate wins
    for lr, score, folder in [(3e-5, 4.0, "x0.3"), (1e-4, 5.0, "x1"), (3e-4, 9.0, "x3")]:
        for seed in (101, 202):
            status = "diverged" if lr == 3e-4 and seed == 101 else "finished"
            write_run(root / folder, f"cwc__sta_total__{seed}", "sta_total", "cwc", seed, rows([0, 30], [1, score]),
                      status=status, policy_lr=lr)
    # iterated DPO: one seed missing; Total-GN: a seed killed mid-row (metrics.csv cut): both wait
    for lr, folder in [(3e-5, "x0.3"), (1e-4, "x1"), (3e-4, "x3")]:
        for seed in (101, 202) if lr != 3e-5 else (101,):
            write_run(root / folder, f"cwc__iterated_dpo__{seed}", "dpo", "cwc", seed, rows([0, 30], [1, 5]),
                      policy_lr=lr, online=True)
            write_run(root / folder, f"cwc__sta_total_gn__{seed}", "sta_total", "cwc", seed, rows([0, 30], [1, 5]),
                      policy_lr=lr, curvature="gauss-newton")
    write_run(root / "x0.3", "cwc__sta_total_gn__202", "sta_total", "cwc", 202, rows([0, 30], [1, 5]), status="running",
              policy_lr=3e-5, curvature="gauss-newton")
    metrics = root / "x0.3" / "cwc__sta_total_gn__202" / "metrics.csv"
    metrics.write_text(metrics.read_text() + "3.0,20,32")

    done = subprocess.run([*TUNING, str(root), "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    md = (tmp_path / "out" / "tuning.md").read_text()
    with open(tmp_path / "out" / "tuning.csv", newline="") as f:
        table = {(r["method"], float(r["policy_lr"])): r for r in csv.DictReader(f)}
    assert {lr for m, lr in table if m == "sta_naive"} == {3e-5, 1e-4, 3e-4}  # the .old-1 run and policy/ left out
    assert float(table[("sta_naive", 3e-5)]["score_mean"]) == 4.0
    assert abs(float(table[("sta_naive", 1e-4)]["score_mean"]) - 5.025) < 1e-9
    assert abs(float(table[("sta_naive", 3e-4)]["score_mean"]) - 4.95) < 1e-9
    assert [lr for (m, lr), r in table.items() if m == "sta_naive" and r["selected"] == "True"] == [3e-4]
    assert "| cwc | Naive STA | policy_lr 0.0003 selected (2 configurations within 0.1 of the best mean score 5.03; " \
           "the highest mean final reward, 8.00) | 0.0001 | yes |" in md
    assert "| 3e-05 | 101: 4.00, 202: 4.00 | 4.00 | 4.00 | 20.0 | complete |" in md
    assert table[("sta_total", 3e-4)]["status"] == "not selectable (seed 101 diverged)"
    assert "| cwc | Total STA | policy_lr 0.0001 selected (the highest mean score, 5.00) | 0.0001 | no |" in md
    assert table[("iterated_dpo", 3e-5)]["status"] == "incomplete (seed 202 missing)"
    assert "| cwc | Iterated DPO | selection pending: policy_lr 3e-05 incomplete (seed 202 missing) | 0.0001 | – |" in md
    assert ("selection pending: policy_lr 3e-05 incomplete (seed 202 cut off (last metrics.csv row cut))"
            in table[("sta_total_gn", 1e-4)]["selection"])
    assert "| cwc | PPO | selection pending: no runs yet | 3e-05 | – |" in md
    assert not any(r["selected"] == "True" for (m, _), r in table.items() if m in ("iterated_dpo", "sta_total_gn"))

    done = subprocess.run([*TUNING, str(tmp_path / "out"), "--out", str(tmp_path / "o2")], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("error: no run directories") and not (tmp_path / "o2").exists()
    read, write = os.pipe()
    os.close(read)  # `| head` that has already exited: the files are written, the closing line meets no reader
    done = subprocess.run([*TUNING, str(root), "--out", str(tmp_path / "o3")], stdout=write, stderr=subprocess.PIPE,
                          text=True, timeout=120)
    os.close(write)
    assert done.returncode in (0, 1) and done.stderr == "" and (tmp_path / "o3" / "tuning.md").exists(), done.stderr


def test_the_preset_stays_when_no_configuration_is_selectable():
    config = lambda lr, status, score: {"lr": lr, "status": status, "score": score, "final_reward": 1.0}
    configs = [config(3e-5, "not selectable (seed 101 diverged)", None), config(1e-4, "not selectable (seed 202 failed)", None)]
    assert tuning.select(configs) == (None, "the preset stays: every configuration has a diverged or failed seed")
    assert tuning.select([]) == (None, "selection pending: no runs yet")
    chosen, sentence = tuning.select([config(3e-5, "complete", 2.0), config(1e-4, "complete", 2.11)])
    assert chosen["lr"] == 1e-4 and sentence == "policy_lr 0.0001 selected (the highest mean score, 2.11)"  # 0.11 apart


def test_a_method_waits_until_all_three_configurations_have_runs(tmp_path):
    """The protocol compares three configurations per method: with the 3× rate not yet run, nothing is selected, even
    though the two finished ones would decide it."""
    root = tmp_path / "runs"
    for lr, folder in [(3e-5, "x0.3"), (1e-4, "x1")]:
        for seed in (101, 202):
            write_run(root / folder, f"cwc__sta_naive__{seed}", "sta_naive", "cwc", seed, rows([0, 30], [1, 5]),
                      policy_lr=lr)
    done = subprocess.run([*TUNING, str(root), "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    md = (tmp_path / "out" / "tuning.md").read_text()
    assert "| cwc | Naive STA | selection pending: policy_lr 0.0003 incomplete (no runs yet) |" in md
    assert "| cwc | PPO | selection pending: no runs yet |" in md
