"""tools/claims.py (issue 18): the paired comparison and its t test, and each claim's verdict on synthetic runs built
to make it hold, fail or sit within noise; then the command on a folder of runs."""

import os
import random
import subprocess
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import claims  # noqa: E402
import results  # noqa: E402
from test_results import sta_rows, write_run  # noqa: E402

SEEDS = [467, 532, 6518, 7107, 8688]
STA = claims.STA


def run(seed, rewards, kls=None, status="finished", series=None, every=10):
    """A run as results.read_run gives it: evaluations every `every` iterations from 0."""
    kls = kls or [float(i) for i in range(len(rewards))]
    evals = [{"iteration": i * every, "reward": r, "kl": k, "prompts": 16.0 * i * every, "pairs": 16.0 * i * every}
             for i, (r, k) in enumerate(zip(rewards, kls))]
    return {"seed": seed, "status": status, "evals": evals, "series": {key: {} for key in results.SERIES} | (series or {}),
            "iteration": evals[-1]["iteration"], "s_per_iteration": 1.0, "s_per_run": 100.0, "prompts": evals[-1]["prompts"],
            "pairs": evals[-1]["pairs"], "kept": evals[-1]["pairs"]}


def group(*runs):
    return {"runs": list(runs), "excluded": []}


def test_paired_differences_and_their_t_statistic():
    p = claims.paired({1: 3.0, 2: 5.0, 3: 4.0, 4: 9.0}, {1: 1.0, 2: 2.0, 3: 2.0})  # seed 4 has no partner
    assert p["seeds"] == [1, 2, 3] and p["diffs"] == [2.0, 3.0, 2.0] and p["wins"] == 3
    assert p["mean"] == pytest.approx(7 / 3) and p["std"] == pytest.approx(0.57735, rel=1e-4)
    assert p["t"] == pytest.approx((7 / 3) / (0.57735 / 3**0.5), rel=1e-4) and p["significant"] and p["sign"] == 1
    assert p["p"] == pytest.approx(claims.t_p_value(7.0, 2), rel=1e-6) and p["p"] < 0.05
    noisy = claims.paired({s: d for s, d in zip(SEEDS, [1.0, -1.0, 2.0, -0.5, 0.2])}, {s: 0.0 for s in SEEDS})
    assert not noisy["significant"] and noisy["sign"] == 0 and noisy["wins"] == 3
    assert claims.fmt_paired(p).startswith("+2.33 ± 0.58 (3/3, t +7.0, p 0.020, Holm 0.020*")


def test_the_t_test_p_values_match_the_t_table():
    """Two-sided points of Student's t from a printed table: p 0.05 at 12.706 (df 1), 2.776 (4), 2.571 (5), 2.228 (10),
    2.042 (30); p 0.01 at 4.604 (4) and 3.169 (10); p 0.2 at 1.533 (4)."""
    for t, df, p in [(12.706, 1, 0.05), (2.776, 4, 0.05), (2.571, 5, 0.05), (2.228, 10, 0.05), (2.042, 30, 0.05),
                     (4.604, 4, 0.01), (3.169, 10, 0.01), (1.533, 4, 0.2)]:
        assert claims.t_p_value(t, df) == pytest.approx(p, rel=2e-3), (t, df)
        assert claims.t_p_value(-t, df) == claims.t_p_value(t, df)
    assert claims.t_p_value(0.0, 4) == 1.0 and claims.t_p_value(float("inf"), 4) == 0.0


def test_holm_adjusts_within_the_family():
    family = [{"p": p, "mean": 1.0} for p in (0.01, 0.04, 0.03, 0.005)] + [{"p": None, "mean": 1.0}]
    claims.holm(family)
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 → made non-decreasing: 0.06 for the last
    assert [c.get("p_holm") for c in family] == pytest.approx([0.03, 0.06, 0.06, 0.02, None])
    assert [c.get("significant") for c in family] == [True, False, False, True, None]
    assert claims.holm([{"p": 0.7, "mean": -1.0}])[0]["p_holm"] == 0.7  # a family of one: the raw p


def final_reward_groups(sta_shift, noise):
    rng = random.Random(0)
    groups = {}
    for method in ["sta_naive", "sta_total", "ppo", "dpo"]:
        shift = sta_shift if method.startswith("sta") else 0.0
        groups[("cwc", method)] = group(*(run(s, [0.0, 1.0 + shift + rng.gauss(0, noise)]) for s in SEEDS))
    return groups


@pytest.mark.parametrize("shift, noise, verdict", [(3.0, 0.1, "holds"), (-3.0, 0.1, "does not hold"), (0.2, 1.0, "within noise")])
def test_final_reward_claim(shift, noise, verdict):
    groups = final_reward_groups(shift, noise)
    lines, verdicts = claims.claim_final_reward(groups, ["cwc"], ["sta_naive", "sta_total", "ppo", "dpo"])
    assert verdicts == {"cwc (final reward)": verdict, "cwc (equal KL)": verdict}  # equal KLs: the same reading
    assert sum(line.startswith("| PPO |") or line.startswith("| DPO |") for line in lines) == 4


def test_final_reward_claim_under_holm_and_at_equal_kl():
    """Two comparisons at raw p 0.031 and 0.036 among four: each significant alone, neither after Holm (0.062); and
    STA ahead at the end only because it went further from π_ref."""
    e = [-1.0, -0.5, 0.0, 0.5, 1.0]
    groups = {("cwc", "sta_naive"): group(*(run(s, [0.0, 1.15 + x]) for s, x in zip(SEEDS, e))),
              ("cwc", "sta_total"): group(*(run(s, [0.0, 1.1 + x]) for s, x in zip(SEEDS, e))),
              ("cwc", "ppo"): group(*(run(s, [0.0, 0.0]) for s in SEEDS)),
              ("cwc", "dpo"): group(*(run(s, [0.0, -10.0]) for s in SEEDS))}
    assert claims.paired(claims.finals(groups, "cwc", "sta_naive"), claims.finals(groups, "cwc", "ppo"))["significant"]
    verdicts = claims.claim_final_reward(groups, ["cwc"], ["sta_naive", "sta_total", "ppo", "dpo"])[1]
    assert verdicts["cwc (final reward)"] == "within noise"
    rng = random.Random(2)
    # STA climbs 1 a 10 nats to 6 at KL 60; the others 3 at KL 10 then 4.5 at KL 20: higher at every KL both reach
    groups = {("cwc", m): group(*(run(s, [0.0, 2.0, 4.0, 6.0 + rng.gauss(0, 0.1)], kls=[0.0, 20.0, 40.0, 60.0])
                                  if m.startswith("sta") else run(s, [0.0, 3.0, 4.5 + rng.gauss(0, 0.1)], kls=[0.0, 10.0, 20.0])
                                  for s in SEEDS)) for m in ["sta_naive", "sta_total", "ppo", "dpo"]}
    lines, verdicts = claims.claim_final_reward(groups, ["cwc"], ["sta_naive", "sta_total", "ppo", "dpo"])
    assert verdicts == {"cwc (final reward)": "holds", "cwc (equal KL)": "does not hold"}
    assert any(line.startswith("| PPO | -2.") and line.endswith("at KL 20.0 |") for line in lines)  # 2 against 4.5
    # a budget below STA's first evaluation (KL 30): STA is read on the line from iteration 0, and the cell says so
    for m in STA:
        groups[("cwc", m)] = group(*(run(s, [0.0, 2.0, 4.0, 6.0], kls=[0.0, 30.0, 40.0, 60.0]) for s in SEEDS))
    lines = claims.claim_final_reward(groups, ["cwc"], ["sta_naive", "sta_total", "ppo", "dpo"])[0]
    ppo = [line for line in lines if line.startswith("| PPO |")][1]  # the equal-KL table
    # 2 × 20/30 = 1.33 on the line against 4.5: −3.1x in both STA columns, each naming its own method
    assert ppo.count("| -3.1") == 2, ppo  # 4.5 plus the seeds' noise
    assert "at KL 20.0 (below the first evaluation: Naive STA 5/5; significant only on the interpolation: no finding) |" in ppo
    assert "at KL 20.0 (below the first evaluation: Total STA 5/5; significant only on the interpolation: no finding) |" in ppo
    # so the equal-KL reading has no significant finding against STA: open, not "does not hold"
    assert claims.claim_final_reward(groups, ["cwc"], ["sta_naive", "sta_total", "ppo", "dpo"])[1]["cwc (equal KL)"] == "open (interpolated)"


def test_total_against_naive_and_a_missing_method():
    groups = final_reward_groups(0.0, 0.1)
    groups[("cwc", "sta_total")] = group(*(run(s, [0.0, 5.0 + 0.1 * i]) for i, s in enumerate(SEEDS)))
    assert claims.claim_total_vs_naive(groups, ["cwc"])[1]["cwc (final reward)"] == "does not hold"  # Total clearly beats Naive
    # no difference shown: the claim stands only through absence of evidence
    assert claims.claim_total_vs_naive(final_reward_groups(0.0, 1.0), ["cwc"])[1] == {
        "cwc (final reward)": "not contradicted", "cwc (equal KL)": "not contradicted"}
    groups[("cwc", "sta_total")] = group(*(run(s, [0.0, -5.0 + 0.1 * i]) for i, s in enumerate(SEEDS)))
    assert claims.claim_total_vs_naive(groups, ["cwc"])[1]["cwc (final reward)"] == "holds"  # Naive clearly ahead
    del groups[("cwc", "sta_total")]
    assert claims.claim_total_vs_naive(groups, ["cwc"])[1] == {"cwc (final reward)": "incomplete", "cwc (equal KL)": "incomplete"}
    assert claims.claim_final_reward(groups, ["cwc"], ["sta_naive", "ppo", "dpo"])[1] == {
        "cwc (final reward)": "incomplete", "cwc (equal KL)": "incomplete"}


def test_convergence_is_the_absence_of_drift_between_the_last_two_quarters():
    rng = random.Random(1)
    flat = lambda: {i: 0.3 + rng.gauss(0, 0.05) for i in range(1, 101)}
    falling = lambda: {i: 1.0 - 0.008 * i + rng.gauss(0, 0.01) for i in range(1, 101)}
    for loss, verdict in [(flat, "not contradicted"), (falling, "does not hold")]:
        runs = [run(s, [0.0] + [5.0 + rng.gauss(0, 0.05) for _ in range(10)], series={"rm/loss": loss(), "rm/score_mean": flat()})
                for s in SEEDS]
        lines, verdicts = claims.claim_convergence({("cwc", "sta_naive"): group(*runs)}, ["cwc"])
        assert verdicts == {"cwc": verdict}
    assert claims.quarters({i: float(i) for i in range(1, 9)}) == pytest.approx((5.5, 7.5, 0.5**0.5))  # (4, 6] and (6, 8]
    assert claims.quarters({i: 1.0 for i in range(1, 8)}) is None  # too short


def test_reversed_competitive_then_unstable():
    groups = {("cwc", "sta_naive"): group(*(run(s, [0.0, 1.0, 2.0, 3.0]) for s in SEEDS)),
              ("cwc", "ppo"): group(*(run(s, [0.0, 0.5, 1.0, 1.5]) for s in SEEDS)),
              ("cwc", "reversed"): group(*(run(s, [0.0, 2.0, 2.5, 0.5]) for s in SEEDS[:4]),
                                         run(SEEDS[4], [0.0, 2.0], status="diverged"))}
    lines, verdicts = claims.claim_reversed(groups, ["cwc"], ["sta_naive", "reversed", "ppo"])
    assert verdicts == {"cwc": "holds"} and "| cwc | 1 of 3 at iteration 10" in lines[2] and "| 8688 |" in lines[2]
    groups[("cwc", "reversed")] = group(*(run(s, [0.0, 0.1, 0.2, 0.3]) for s in SEEDS))  # last at first, no drop
    assert claims.claim_reversed(groups, ["cwc"], ["sta_naive", "reversed", "ppo"])[1] == {"cwc": "does not hold"}


def test_pareto_claim_and_the_dominated_share():
    assert claims.dominated_share([(1, 1), (2, 3), (5, 4)], [(1, 2), (4, 4)]) == pytest.approx(2 / 3)
    assert claims.dominated_share([(1, 1)], [(1, 1)]) == 0.0  # the same point does not dominate
    methods = ["sta_naive", "sta_total", "ppo"]
    far = lambda s: run(s, [0.0, 2.0, 4.0, 5.0], kls=[0.0, 20.0, 40.0, 60.0])  # STA: more KL for each reward
    near = lambda s: run(s, [0.0, 2.0, 4.0, 4.5], kls=[0.0, 5.0, 10.0, 15.0])
    groups = {(t, m): group(*((far if m.startswith("sta") else near)(s) for s in SEEDS)) for t in ("cwc", "un") for m in methods}
    rows, curves = results.summarise(groups, None)
    lines, verdicts = claims.claim_pareto(groups, ["cwc", "un"], methods, curves, rows)
    assert verdicts["cwc"] == "holds"  # 2 of 4 STA front points dominated (not the shared start, nor the top), KL above PPO's
    assert verdicts["un"] == "does not hold"  # on un the claim is a front like the others': here it is dominated
    assert "| cwc | Naive STA | 60.0 ± 0.0 | 5.00 | 4 | 0.50 |" in lines
    # further from π_ref on mean KL (42 against 15) but not in a paired test (diffs 45, -5, 45, -5, 55): within noise
    wobbly = lambda s, k: run(s, [0.0, 2.0, 4.0, 5.0], kls=[0.0, 20.0, 40.0, k])
    groups.update({("cwc", m): group(*(wobbly(s, k) for s, k in zip(SEEDS, [60.0, 10.0, 60.0, 10.0, 70.0]))) for m in STA})
    rows, curves = results.summarise(groups, None)
    assert claims.claim_pareto(groups, ["cwc"], methods, curves, rows)[1]["cwc"] == "within noise"


def test_cost_claim_from_the_grid_and_the_quiet_benchmark():
    rows = [{"task": "cwc", "method": m, "time_ratio_to_naive": v}
            for m, v in [("sta_naive", 1.0), ("sta_total", 1.35), ("reversed", 1.2), ("dpo", 0.45), ("ppo", 0.9)]]
    cost = [{"method": m, "ratio_to_naive": str(v)} for m, v in [("sta_naive", 1.0), ("sta_total", 3.0), ("reversed", 0.9),
                                                                  ("dpo", 0.2), ("dro_v", 0.1)]]
    lines, verdicts = claims.claim_cost(rows, cost)
    assert verdicts["offline DPO is the cheapest"] == "holds"  # DRO-V is cheaper, but not one of the paper's methods
    assert verdicts["Total STA at 2.6-4.6× Naive"] == "sources disagree"  # 1.35 in the grid, 3.0 in the benchmark
    assert verdicts["Reversed above Naive"] == "sources disagree"
    assert "| the paper's Table 1 (range over tasks) | 0.21–0.45 | 2.63–4.60 | 1.08–1.60 | DPO |" in lines


def test_the_command_writes_claims_md(tmp_path):
    root = tmp_path / "runs"
    for method in ["sta_naive", "sta_total", "ppo"]:
        for i, seed in enumerate(SEEDS):
            rows = [{"iteration": it, "wall_time": 1.0 * it, "prompts_seen": 16 * it, "pairs_queried": 16 * it,
                     "eval/reward": (3.0 if method.startswith("sta") else 1.0) * it / 4 + 0.01 * i, "eval/kl": float(it),
                     "rm/loss": 0.3, "rm/score_mean": 0.1} for it in range(5)]
            write_run(root, f"cwc__{method}__{seed}", method, "cwc", seed, rows)
    assert claims.main([str(root), "--out", str(tmp_path / "out")]) is None
    text = (tmp_path / "out" / "claims.md").read_text()
    assert ("| 1. Both STA variants reach a higher final reward than every other method, per task | cwc (final reward): "
            "holds; cwc (equal KL): holds |") in text
    assert "| 4. Total STA does not clearly beat Naive STA | cwc (final reward): not contradicted;" in text
    assert "## 4. Total STA does not clearly beat Naive STA\n\nReadings: final reward and reward at equal KL" in text
    assert "| 5. Naive STA's reward model and policy converge | cwc: incomplete |" in text  # 5 iterations: too few
    with pytest.raises(SystemExit) as e:
        claims.main([str(tmp_path / "nothing")])
    assert e.value.code == 2


def test_a_claim_without_the_evidence_for_it_is_incomplete():
    short = {i: 0.3 for i in range(1, 8)}  # 7 points a run: too few for quarters
    runs = [run(s, [0.0, 5.0], series={"rm/loss": short, "rm/score_mean": short}) for s in SEEDS]
    assert claims.claim_convergence({("cwc", "sta_naive"): group(*runs)}, ["cwc"])[1] == {"cwc": "incomplete"}
    assert claims.quarters({**{i: 1.0 for i in range(7)}, 100: 2.0}) is None  # uneven steps: an empty third quarter
    groups = {("cwc", "sta_naive"): group(*(run(s, [0.0, 1.0]) for s in SEEDS[:2])),
              ("cwc", "sta_total"): group(*(run(s, [0.0, 9.0]) for s in SEEDS[2:]))}  # no seed in common
    assert claims.claim_total_vs_naive(groups, ["cwc"])[1] == {"cwc (final reward)": "incomplete", "cwc (equal KL)": "incomplete"}
    groups = final_reward_groups(3.0, 0.1)  # would hold, but a PPO run is still going
    groups[("cwc", "ppo")]["runs"][0]["status"] = "interrupted"
    assert claims.claim_final_reward(groups, ["cwc"], ["sta_naive", "sta_total", "ppo", "dpo"])[1]["cwc (final reward)"] == "incomplete"
    groups[("cwc", "ppo")]["runs"][0]["status"] = "failed"  # listed, not averaged: the grid has to rerun it
    assert claims.claim_final_reward(groups, ["cwc"], ["sta_naive", "sta_total", "ppo", "dpo"])[1]["cwc (equal KL)"] == "incomplete"
    groups[("cwc", "ppo")]["runs"][0]["status"] = "diverged"  # a method's outcome: the claim is judged without that seed
    lines, verdicts = claims.claim_final_reward(groups, ["cwc"], ["sta_naive", "sta_total", "ppo", "dpo"])
    assert verdicts["cwc (final reward)"] == "holds" and "Not in the comparisons: PPO seed 467 diverged." in lines
    rows = [{"task": "cwc", "method": m, "time_ratio_to_naive": v} for m, v in [("sta_naive", 1.0), ("ppo", 0.9)]]
    assert claims.claim_cost(rows, None)[1]["offline DPO is the cheapest"] == "incomplete"  # no DPO timing at all


def test_reversed_unstable_by_a_significantly_larger_drop():
    groups = {("cwc", "sta_naive"): group(*(run(s, [0.0, 1.0, 2.0, 3.0 - 0.1 * i]) for i, s in enumerate(SEEDS))),
              ("cwc", "ppo"): group(*(run(s, [0.0, 0.5, 1.0, 1.5]) for s in SEEDS)),
              ("cwc", "reversed"): group(*(run(s, [0.0, 2.0, 2.5, 1.0 + 0.05 * i]) for i, s in enumerate(SEEDS)))}
    lines, verdicts = claims.claim_reversed(groups, ["cwc"], ["sta_naive", "reversed", "ppo"])
    assert verdicts == {"cwc": "holds"} and "| none |" in lines[2]  # no divergence: the drop (1.5 vs ≤ 0.4) decides


def test_measurements_average_each_part_of_a_run_per_seed_then_over_seeds():
    assert claims.part({i: float(i) for i in range(1, 101)}, 0, 0.1) == pytest.approx(5.5)  # iterations 1-10
    assert claims.part({i: float(i) for i in range(1, 21)}, 0.5, 1) == pytest.approx(15.5)  # PARL's 20: iterations 11-20
    assert claims.part({}, 0, 1) is None and claims.spread([None]) == "–" and claims.spread([1.0]) == "1.00"
    accuracy = lambda a, b: {i: (a if i <= 10 else b) for i in range(1, 101)}
    runs = [run(s, [0.0, 1.0, 2.0], kls=[0.0, 10.0 + 2 * j, 20.0],
                series={"rm/accuracy": accuracy(0.5, 0.6 + 0.1 * j), "rm/score_std": accuracy(2.0, 1.0),
                        "rm/loss": accuracy(0.1, 0.3)})
            for j, s in enumerate(SEEDS[:2])]
    ten = lambda f: {i: f(i) for i in range(1, 11)}
    total = [run(s, [0.0, 2.0], series={"rm/accuracy": accuracy(0.5, 0.5), "cg/iterations": ten(lambda i: 2.0 if i == 1 else 4.0),
                                        "cg/breakdown": ten(lambda i: float(i <= 5)), "cg/residual": ten(lambda i: 0.5),
                                        "cg/returned_iterate": ten(lambda i: 0.0 if i <= 2 else 3.0),
                                        "policy/naive_grad_norm": ten(lambda i: 10.0),
                                        "policy/implicit_grad_norm": ten(float)}) for s in SEEDS[:2]]
    groups = {("cwc", "sta_naive"): group(*runs), ("cwc", "sta_total"): group(*total),
              ("cwc", "ppo"): group(*(run(s, [0.0, 1.0]) for s in SEEDS[:2]))}  # trains no RM: no row
    lines = claims.measurements(groups, ["cwc"], ["sta_naive", "sta_total", "ppo"])
    assert "| cwc | Naive STA | 0.50 ± 0.00 | 0.65 ± 0.07 | 0.10 ± 0.00 | 2.00 ± 0.00 | 1.00 ± 0.00 | 11.00 ± 1.41 | 2.00 ± 0.00 |" in lines
    # CG: steps over the first tenth (iteration 1) and the run, breakdowns, u = 0 share, residual, median norm ratio
    assert ("| cwc | Total STA | 2.00 ± 0.00 | 3.80 ± 0.00 | 0.50 ± 0.00 | 0.20 ± 0.00 | 0.50 ± 0.00 | 0.55 ± 0.00 |"
            in lines)
    assert not any("PPO" in line for line in lines)  # too short for a second half, and no RM
    # the second half: the evaluation at iteration 10 of 20 against the last, per seed
    assert "| cwc | Naive STA | 1.00 ± 0.00 | 2.00 ± 0.00 | 1.00 ± 0.00 | 11.0 ± 1.4 | 20.0 ± 0.0 |" in lines


def test_runs_killed_while_writing_an_empty_folder_and_a_closed_pipe(tmp_path):
    """A cut last metrics.csv row and a cut config.json are listed as unfinished (the claims they enter: incomplete);
    an empty folder is one line and exit 2; a reader that closes the pipe (`| head`) gets no traceback."""
    root = tmp_path / "runs"
    for method in ["sta_naive", "sta_total", "ppo"]:
        for seed in SEEDS[:3]:
            write_run(root, f"cwc__{method}__{seed}", method, "cwc", seed, sta_rows(1.0, [0, 1, 2 + seed % 7], [0, 1, 2], 8))
    metrics = root / f"cwc__ppo__{SEEDS[0]}" / "metrics.csv"
    metrics.write_text(metrics.read_text() + "12.5,5,10")  # killed mid-row
    (root / f"cwc__sta_total__{SEEDS[1]}" / "config.json").write_text('{"algo": "sta_total", "args": {"ta')
    assert claims.main([str(root), "--out", str(tmp_path / "out")]) is None
    text = (tmp_path / "out" / "claims.md").read_text()
    assert f"PPO seed {SEEDS[0]} cut off (last metrics.csv row cut)" in text
    assert f"Total STA seed {SEEDS[1]} unreadable (config.json or metrics.csv)" in text
    assert "cwc (final reward): incomplete" in text
    (tmp_path / "empty").mkdir()
    done = subprocess.run([sys.executable, str(REPO / "tools" / "claims.py"), str(tmp_path / "empty")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr == f"error: no run directories (with config.json) under {tmp_path / 'empty'}\n"
    read, write = os.pipe()
    os.close(read)  # `| head` that has already exited
    done = subprocess.run([sys.executable, str(REPO / "tools" / "claims.py"), str(root)], stdout=write,
                          stderr=subprocess.PIPE, text=True)
    os.close(write)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
