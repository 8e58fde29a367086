"""tools/results.py (issue 17): on synthetic runs whose means, standard deviations, Pareto fronts and times are known,
every number of results.csv and the notes of results.md (diverged, unfinished, missing, other arguments, moved-aside
directories); on a tiny real grid, the figures."""

import csv
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import results  # noqa: E402
from test_grid import run_grid, tiny  # noqa: E402  (the grid's runs, forked from the warm interpreter)

RESULTS = [sys.executable, str(REPO / "tools" / "results.py")]


def test_pareto_front_keeps_exactly_the_points_no_other_weakly_dominates():
    assert results.pareto_front([(1, 5), (2, 4), (0.5, 3), (2, 6)]) == [(0.5, 3), (1, 5), (2, 6)]
    assert results.pareto_front([(1, 1), (1, 1), (1, 2)]) == [(1, 2)]  # equal KL, more reward
    assert results.pareto_front([(1, 2), (0.5, 2)]) == [(0.5, 2)]  # equal reward, less KL
    assert results.pareto_front([]) == []


def write_run(root, name, algo, task, seed, rows, status="finished", policy=False, **args):
    """A run directory as the scripts write it: config.json and metrics.csv (and policy/ if asked)."""
    run = root / name
    run.mkdir(parents=True)
    config = {"algo": algo, "script": f"{algo}.py", "args": {"task": task, "seed": seed, "laptop": True, "iterations": 4,
                                                               "run_name": name, "output_dir": str(root), **args}}
    if status is not None:  # None: a run from before config.json had a status
        config["status"] = status
    (run / "config.json").write_text(json.dumps(config))
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(run / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    if policy:
        (run / "policy").mkdir()


def sta_rows(t, rewards, kls, pairs, last=4):
    """Iterations 0..last, evaluations at 0, 2 and 4 (rewards, kls); t seconds per iteration, 10 more per evaluation."""
    rows, wall = [], 5.0
    for i in range(last + 1):
        wall += (t + (10 if i % 2 == 0 else 0)) if i else 0.0
        row = {"iteration": i, "wall_time": wall, "prompts_seen": 2 * i, "pairs_queried": round(pairs * i / 4),
               "pairs_kept": round(7 * i / 4), "eval/reward": "", "eval/kl": "", "rm/loss": "", "rm/score_mean": ""}
        if i % 2 == 0:
            row.update({"eval/reward": rewards[i // 2], "eval/kl": kls[i // 2]})
        if i:
            row.update({"rm/loss": 1.0 / i, "rm/score_mean": float(i)})
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """wc: Naive STA, seeds 1-3 finished (final reward 1, 2, 3; KL 2, 4, 6; 1, 2, 3 s an iteration), seed 4
    diverged, seed 5 unfinished, seed 6 with other arguments, and a moved-aside directory; offline DPO (old format:
    oracle_pairs, no status) seeds 1, 2; iterated DPO (dpo.py --online) seed 1. cwc: PARL seed 1."""
    root = tmp_path_factory.mktemp("runs")
    for seed, t in [(1, 1.0), (2, 2.0), (3, 3.0)]:
        write_run(root, f"wc__sta_naive__{seed}", "sta_naive", "wc", seed,
                  sta_rows(t, rewards=[0, 1 + seed, seed], kls=[0, 1, 2 * seed], pairs=7 + seed))
    write_run(root, "wc__sta_naive__4", "sta_naive", "wc", 4, sta_rows(1, [0, 9, 9], [0, 1, 1], 8)[:3], status="diverged")
    write_run(root, "wc__sta_naive__5", "sta_naive", "wc", 5, sta_rows(1, [0, 9, 9], [0, 1, 1], 8)[:2], status="running")
    write_run(root, "wc__sta_naive__6", "sta_naive", "wc", 6, sta_rows(1, [0, 9, 99], [0, 1, 1], 8), iterations=1000)
    write_run(root, "wc__sta_naive__1.old-1", "sta_naive", "wc", 1, sta_rows(1, [0, 50, 99], [0, 1, 1], 8))
    for seed, final_kl, wall in [(1, 0.5, 10.0), (2, 1.5, 20.0)]:
        rows = [{"iteration": 0, "wall_time": 0.0, "prompts_seen": 0, "oracle_pairs": 0, "eval/reward": 0.0, "eval/kl": 0.0},
                {"iteration": 4, "wall_time": wall, "prompts_seen": 8, "oracle_pairs": 6, "eval/reward": 1.0, "eval/kl": final_kl}]
        write_run(root, f"wc__dpo__{seed}", "dpo", "wc", seed, rows, status=None, policy=True)
    rows = [{"iteration": 0, "wall_time": 0.0, "prompts_seen": 0, "pairs_queried": 0, "eval/reward": 0.5, "eval/kl": 0.0},
            {"iteration": 4, "wall_time": 3.0, "prompts_seen": 8, "pairs_queried": 8, "eval/reward": 2.5, "eval/kl": 3.0}]
    write_run(root, "wc__iterated_dpo__1", "dpo", "wc", 1, rows, online=True)
    rows = [{"iteration": 0, "wall_time": 0.0, "prompts_seen": 0, "pairs_queried": 0, "eval/reward": 1.0, "eval/kl": 0.0},
            {"iteration": 1, "wall_time": 4.0, "prompts_seen": 10, "pairs_queried": 2, "eval/reward": 2.0, "eval/kl": 5.0}]
    write_run(root, "cwc__parl__1", "parl", "cwc", 1, rows)
    return root


def read_csv(out):
    with open(out / "results.csv", newline="") as f:
        return {(r["task"], r["method"]): r for r in csv.DictReader(f)}


def close(text, value):
    return float(text) == pytest.approx(value)


def test_every_number_on_synthetic_runs(synthetic, tmp_path):
    done = subprocess.run([*RESULTS, str(synthetic), "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    table = read_csv(tmp_path)
    naive = table[("wc", "sta_naive")]
    assert naive["n"] == "3" and naive["seeds"] == "1 2 3"
    assert close(naive["final_reward_mean"], 2) and close(naive["final_reward_std"], 1)  # 1, 2, 3 (sample std)
    assert close(naive["final_kl_mean"], 4) and close(naive["final_kl_std"], 2)  # 2, 4, 6
    # Pareto points (mean KL, mean reward) at iterations 0, 2, 4: (0, 0), (1, 3), (4, 2); the last is dominated
    # the budget: the smallest final mean KL among Naive, Total and iterated DPO (3), not DPO's 1 on wc
    assert close(naive["kl_budget"], 3)
    assert close(naive["pareto_best_reward"], 3) and close(naive["pareto_best_kl"], 1)
    # reward at KL ≤ 3 per seed: 2 (never reaches 3: best evaluation), 3 (corner at KL 1 above the crossing's 2.33),
    # 4 (corner at KL 1 above the crossing's 3.6)
    assert close(naive["equal_kl_reward_mean"], 3) and close(naive["equal_kl_reward_std"], 1)
    assert close(naive["s_per_iteration_mean"], 2) and close(naive["s_per_iteration_std"], 1)  # evaluations left out
    assert close(naive["s_per_run_mean"], 33) and close(naive["s_per_run_std"], 4)  # 5 + 4t + 20 for t = 1, 2, 3
    assert close(naive["prompts_seen"], 8) and close(naive["pairs_queried"], 9) and close(naive["pairs_kept"], 7)
    assert close(naive["time_ratio_to_naive"], 1) and close(naive["paper_s_per_run"], 2558.152)
    assert naive["diverged"] == "seed 4 after iteration 2" and naive["unfinished"] == "seed 5 running at iteration 1"
    assert naive["missing"] == "" and "wc__sta_naive__6" in naive["excluded"] and "iterations: 4 here, 1000 there" in naive["excluded"]
    assert ".old-1" not in naive["excluded"]

    dpo = table[("wc", "dpo")]  # old format: no status (policy/ ⇒ finished), oracle_pairs
    assert dpo["n"] == "2" and close(dpo["final_reward_mean"], 1) and close(dpo["final_reward_std"], 0)
    assert close(dpo["final_kl_mean"], 1) and close(dpo["final_kl_std"], 2 ** -0.5)
    assert close(dpo["pareto_best_reward"], 1) and close(dpo["pareto_best_kl"], 1)  # front (0, 0), (1, 1)
    assert close(dpo["equal_kl_reward_mean"], 1) and close(dpo["equal_kl_reward_std"], 0)
    assert close(dpo["pairs_queried"], 6) and dpo["pairs_kept"] == "" and dpo["s_per_iteration_mean"] == ""
    assert close(dpo["time_ratio_to_naive"], 15 / 33) and close(dpo["paper_ratio_to_naive"], 1143.555 / 2558.152)
    assert dpo["missing"] == "3 4 5"  # every seed that some run of the folder has

    online = table[("wc", "iterated_dpo")]
    assert online["n"] == "1" and close(online["final_reward_mean"], 2.5) and online["final_reward_std"] == ""
    assert online["pareto_best_reward"] == "2.5" and online["paper_s_per_run"] == ""  # its final KL is the budget

    parl = table[("cwc", "parl")]
    assert close(parl["kl_budget"], 5) and close(parl["equal_kl_reward_mean"], 2) and close(parl["pareto_best_reward"], 2) and close(parl["prompts_seen"], 10)
    assert parl["time_ratio_to_naive"] == "" and close(parl["paper_ratio_to_naive"], 1340.522 / 2399.765)
    assert table[("cwc", "sta_naive")]["n"] == "0" and table[("cwc", "sta_naive")]["missing"] == "1 2 3 4 5"

    md = (tmp_path / "results.md").read_text()
    assert "KL budget: 3.00 (the smallest final mean KL among Naive STA, Total STA and iterated DPO" in md
    assert "| Naive STA | 3 | 2.00 ± 1.00 | 4.00 ± 2.00 | 3.00 ± 1.00 | 3.00 (1.00) | 2.000 ± 1.000 | 33.0 ± 4.0 | 8 | 9 | 7 |" in md
    assert "diverged: seed 4 after iteration 2; unfinished: seed 5 running at iteration 1 |" in md
    assert "| wc | DPO | 15.0 | 0.45 | 1144 | 0.45 |" in md and "Appendix B Table 1" in md
    assert "wc__sta_naive__6" in md and ".old-1" not in md
    # the front page's table: reward ± std (KL; n where fewer than the most), the best per task in bold
    assert "| Naive STA | 2.00 ± 1.00 (4.0) | – |" in md and "| Iterated DPO | **2.50** (3.0; n 1) | – |" in md
    assert "| DPO | 1.00 ± 0.00 (1.0; n 2) | – |" in md

    budget = subprocess.run([*RESULTS, str(synthetic), "--out", str(tmp_path / "b"), "--kl-budget", "0.5"],
                            capture_output=True, text=True, timeout=300)
    assert budget.returncode == 0 and "0.50 (given with `--kl-budget`)" in (tmp_path / "b" / "results.md").read_text()
    assert close(read_csv(tmp_path / "b")[("wc", "sta_naive")]["pareto_best_reward"], 0)


def test_figures_of_a_tiny_grid(tmp_path, prompts_file):
    """Naive and Total STA × 2 seeds through tools/grid.py, then tools/results.py: a table with n = 2 for both and,
    where matplotlib is installed, the four figures."""
    prompts = prompts_file
    code, out, _ = run_grid("--algos", "sta_naive", "sta_total", "--tasks", "wc", "--seeds", "1", "2", "--workers", "2",
                            "--output-dir", tmp_path / "runs", "--", *tiny(prompts))
    assert code == 0, out
    done = subprocess.run([*RESULTS, str(tmp_path / "runs"), "--out", str(tmp_path / "out")], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    table = read_csv(tmp_path / "out")
    assert table[("wc", "sta_naive")]["n"] == "2" and table[("wc", "sta_total")]["n"] == "2"
    assert float(table[("wc", "sta_total")]["time_ratio_to_naive"]) > 0
    print((tmp_path / "out" / "results.md").read_text())
    pytest.importorskip("matplotlib")
    for name in ["figure1_reward.png", "figure1_reward_pairs.png", "figure1_pareto.png", "equal_kl.png",
                 "figure2_convergence.png"]:
        assert (tmp_path / "out" / name).stat().st_size > 1000, name


def test_tables_without_matplotlib(synthetic, tmp_path):
    """matplotlib is optional: with it hidden, the tables are written and results.md says why there are no figures."""
    # run as `python tools/results.py` is: the script's folder first on sys.path (its tools/quiet_pipe.py)
    hide = "import os, sys; sys.modules['matplotlib'] = None; sys.argv = sys.argv[1:]; import runpy; " \
           "sys.path.insert(0, os.path.dirname(sys.argv[0])); runpy.run_path(sys.argv[0], run_name='__main__')"
    done = subprocess.run([sys.executable, "-c", hide, RESULTS[1], str(synthetic), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Not drawn: matplotlib is not installed" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "results.csv").exists() and not list(tmp_path.glob("*.png"))


def test_active_time_is_the_union_of_the_runs_running_intervals():
    at = lambda hh_mm: f"2026-11-30T{hh_mm}:00+0000"
    ev = lambda event, hh_mm: {"event": event, "time": at(hh_mm)}
    runs = [{"history": [ev("start", "08:00"), ev("finished", "09:00")], "s_per_run": 3600.0},
            {"history": [ev("start", "08:30"), ev("interrupted", "09:30"), ev("resume", "12:00"), ev("finished", "12:30")],
             "s_per_run": 5400.0},
            {"history": [ev("start", "13:00")], "s_per_run": None},  # still going (or crashed): no stop, left out
            # killed at 13:20 with no stop event, resumed from its checkpoint: its wall_time carries on, 20 + 30 min
            {"history": [ev("start", "13:00"), ev("resume", "13:30"), ev("finished", "14:00")], "s_per_run": 3000.0}]
    total, first, last, added = results.active_time(runs)
    assert total == 2.5 * 3600  # 08:00-09:30, 12:00-12:30, 13:30-14:00; the pause 09:30-12:00 does not count
    # the runs' own times are their final wall_time: the 20 minutes before the kill count (the history has no stop
    # for them, so adding up history intervals gave 3 h)
    assert (last - first) == 6 * 3600 and added == 12000.0
    assert results.active_time([{"history": []}]) is None


def test_reward_at_kl_reads_the_upper_envelope_of_the_reward_kl_path():
    at = lambda points, budget: results.reward_at_kl([{"kl": k, "reward": r} for k, r in points], budget)
    zigzag = [(0, 0), (10, 5), (20, 3), (30, 8)]  # reward falls then rises along a rising KL
    assert at(zigzag, 15) == 5  # the corner at KL 10 beats the crossing at 15 (4)
    assert at(zigzag, 25) == pytest.approx(5.5)  # the segment (20, 3)-(30, 8) crosses KL 25 at 5.5, above the corners
    assert at(zigzag, 10) == 5 and at(zigzag, 40) == 8  # a corner on the budget; never reaching it: the best evaluation
    back = [(0, 0), (10, 4), (6, 6), (20, 10)]  # KL not monotone: the path comes back below 10
    assert at(back, 8) == pytest.approx(6 + 4 * 2 / 14)  # three segments cross KL 8; the last one is highest
    assert at([(0, 0), (20, 10), (5, 2)], 10) == pytest.approx(5)  # out and back: the outbound crossing, not 4.67
    assert at([(0, 1), (5, 3)], 2) == pytest.approx(1.8)  # budget below the first evaluation after iteration 0
    assert at([(5, 1), (10, 2)], 3) is None  # no iteration 0 and never within the budget: nothing to read
    assert results.reward_at_kl([{"kl": 0.0, "reward": 1.0}, {"kl": None, "reward": 9.0}], 1) == 1.0


def test_a_run_killed_while_writing_is_listed_as_unfinished(tmp_path):
    """A cut last metrics.csv row and a config.json cut short: both runs are listed as unfinished, the others averaged
    (before: int(None) on the cut row and a skipped, unlisted run)."""
    root = tmp_path / "runs"
    for seed in (1, 2):
        write_run(root, f"wc__sta_naive__{seed}", "sta_naive", "wc", seed, sta_rows(1.0, [0, 1, seed], [0, 1, 2], 8))
    write_run(root, "wc__sta_naive__3", "sta_naive", "wc", 3, sta_rows(1.0, [0, 1, 3], [0, 1, 2], 8), status="running")
    metrics = root / "wc__sta_naive__3" / "metrics.csv"
    metrics.write_text(metrics.read_text() + "99.5")  # killed after writing the first field of a row
    write_run(root, "wc__sta_naive__4", "sta_naive", "wc", 4, sta_rows(1.0, [0, 1, 3], [0, 1, 2], 8))
    (root / "wc__sta_naive__4" / "config.json").write_text('{"algo": "sta_naive", "script": "sta_na')
    done = subprocess.run([*RESULTS, str(root), "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    naive = read_csv(tmp_path / "out")[("wc", "sta_naive")]
    assert naive["n"] == "2" and close(naive["final_reward_mean"], 1.5)
    assert naive["unfinished"] == ("seed 3 cut off (last metrics.csv row cut) at iteration 4; "
                                   "seed 4 unreadable (config.json or metrics.csv)")


def test_an_empty_folder_and_a_closed_pipe(tmp_path):
    done = subprocess.run([*RESULTS, str(tmp_path), "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and done.stderr.startswith("error: no run")
    assert not (tmp_path / "out").exists()
    root = tmp_path / "runs"
    write_run(root, "wc__sta_naive__1", "sta_naive", "wc", 1, sta_rows(1.0, [0, 1, 2], [0, 1, 2], 8))
    read, write = os.pipe()
    os.close(read)  # `| head` that has already exited
    done = subprocess.run([*RESULTS, str(root), "--out", str(tmp_path / "out")], stdout=write, stderr=subprocess.PIPE,
                          text=True)
    os.close(write)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert (tmp_path / "out" / "results.md").exists()


def test_a_later_folder_replaces_an_earlier_ones_runs_of_a_method_on_a_task(synthetic, tmp_path):
    """Issue 25 §2: `results.py untuned tuned` reads the tuned re-runs in place of the untuned runs of the methods the
    tuning changed, the untuned runs of the others, and says which folder gave what; claims.py reads the same."""
    tuned = tmp_path / "tuned"
    rows = [{"iteration": 0, "wall_time": 0.0, "prompts_seen": 0, "pairs_queried": 0, "eval/reward": 0.5, "eval/kl": 0.0},
            {"iteration": 4, "wall_time": 3.0, "prompts_seen": 8, "pairs_queried": 8, "eval/reward": 7.5, "eval/kl": 9.0}]
    for seed in (1, 2):
        write_run(tuned, f"wc__iterated_dpo__{seed}", "dpo", "wc", seed, rows, online=True, policy_lr=3e-5)
    done = subprocess.run([*RESULTS, str(synthetic), str(tuned), "--out", str(tmp_path / "out")], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    table = read_csv(tmp_path / "out")
    assert table[("wc", "iterated_dpo")]["n"] == "2" and close(table[("wc", "iterated_dpo")]["final_reward_mean"], 7.5)
    assert table[("wc", "sta_naive")]["n"] == "3" and close(table[("wc", "sta_naive")]["final_reward_mean"], 2.0)
    text = (tmp_path / "out" / "results.md").read_text()
    assert f"a later folder's runs of a method on a task in place of an earlier one's (Iterated DPO on wc from `{tuned}`; the rest from `{synthetic}`)" in text
    groups = results.load_folders([synthetic, tuned])
    assert groups[("wc", "iterated_dpo")]["folder"] == str(tuned) and groups[("wc", "dpo")]["folder"] == str(synthetic)
    claims = subprocess.run([sys.executable, str(REPO / "tools" / "claims.py"), str(synthetic), str(tuned)],
                            capture_output=True, text=True, timeout=300)
    assert claims.returncode == 0, claims.stderr
    assert f"(Iterated DPO on wc from `{tuned}`; the rest from `{synthetic}`)" in claims.stdout
    missing = subprocess.run([*RESULTS, str(synthetic), str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.strip().endswith("is not a folder")
    # a re-run grid still under way (one run running, or fewer seeds) does not replace finished runs until it is done
    for seed, status in ((1, "finished"), (2, "running")):
        write_run(tuned, f"wc__dpo__{seed}", "dpo", "wc", seed, rows, status=status, policy_lr=3e-5)
    groups = results.load_folders([synthetic, tuned])
    assert groups[("wc", "dpo")]["folder"] == str(synthetic) and groups[("wc", "dpo")]["waiting"] == (str(tuned), 1, 2)
    assert f"; not yet in place, still under way: DPO on wc under `{tuned}`, 1 of 2 runs done)" in results.sources([synthetic, tuned], groups)


def test_runs_with_extra_early_evaluations_average_with_runs_without(tmp_path):
    """--eval-first changes no training step (tests/test_eval_first.py), so a run with it and a run from before the flag
    existed are one group: both averaged, their extra evaluations on each run's own reward-KL path."""
    rows = lambda final: [{"iteration": i, "wall_time": float(i), "prompts_seen": 16 * i, "pairs_queried": 16 * i,
                           "eval/reward": float(r), "eval/kl": float(k)} for i, r, k in [(0, 0, 0), (1, 1, 5), (10, final, 30)]]
    write_run(tmp_path, "cwc__sta_naive__1", "sta_naive", "cwc", 1, rows(4.0), eval_first=1)
    write_run(tmp_path, "cwc__sta_naive__2", "sta_naive", "cwc", 2, [r for r in rows(6.0) if r["iteration"] != 1])
    group = results.load(tmp_path)[("cwc", "sta_naive")]
    assert [r["seed"] for r in group["runs"]] == [1, 2] and group["excluded"] == []
    assert [results.reward_at_kl(r["evals"], 5.0) for r in group["runs"]] == [1.0, 1.0]  # a point, and 6 × 5/30 on the line
