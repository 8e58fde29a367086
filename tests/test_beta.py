"""tools/beta.py (issue 25 §3): the envelope over β at a budget on hand-made reward-KL paths, the verdict rule, and on
synthetic folders at β 0.03, 0.1 and 0.3 (with tuned re-runs replacing the grid's) the budget K, the envelope cells,
the one Holm family per task, the incomplete case, a bad folder and the figure."""

import os
import subprocess
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import beta  # noqa: E402
from test_results import sta_rows, write_run  # noqa: E402

BETA = [sys.executable, str(REPO / "tools" / "beta.py")]
SEEDS = [467, 532, 6518, 7107, 8688]
NOISE = {"sta_naive": [0.0, 0.1, -0.1, 0.05, -0.05], "sta_total": [0.05, -0.1, 0.1, 0.0, -0.05]}
# (KLs, rewards) at iterations 0, 2, 4; e is the seed's noise, added to the STA variants' rewards
STA_PATHS = {0.03: ([0, 4, 8], [0, 2, 4]), 0.1: ([0, 2, 4], [0, 1, 3]), 0.3: ([0, 1, 2], [0, 0.5, 1])}
DPO_PATHS = {0.03: ([0, 3, 6], [0, 4, 8]), 0.1: ([0, 2, 4], [0, 3, 5]), 0.3: ([0, 1, 2], [0, 2, 3])}


def path(kls, rewards):
    """A run's evaluations, at iterations 0, 1, 2, ..."""
    return {"evals": [{"iteration": i, "kl": k, "reward": r} for i, (k, r) in enumerate(zip(kls, rewards))]}


def test_the_envelope_is_the_best_beta_at_each_budget():
    # β 0.03 reaches reward 4 by KL 1 and stops at KL 4; β 0.3 climbs slowly to 8 at KL 6
    # the third value: whether any of the seed's runs is read below its first evaluation after iteration 0
    runs = {0.03: path([0, 1, 4], [0, 4, 5]), 0.3: path([0, 2, 6], [0, 2, 8])}
    assert beta.envelope(runs, 1.0) == (4, 0.03, True)  # β 0.3's segment gives 1 at KL 1, below its first evaluation
    assert beta.envelope(runs, 6.0) == (8, 0.3, False)  # β 0.03 never reaches 6: its best evaluation, 5
    assert beta.envelope(runs, 10.0) == (8, 0.3, False)
    assert beta.envelope(runs, 3.0) == (pytest.approx(4 + 2 / 3), 0.03, False)  # 4 + (5 − 4)·(3 − 1)/3 against 2 + 6/4 = 3.5
    assert beta.envelope(runs, 0.5) == (2, 0.03, True)  # both runs read on their first segment: 4·0.5 against 2·0.5/2
    # a run that never reaches the budget scores its best evaluation, and that can be the maximum
    runs = {0.03: path([0, 1], [0, 7]), 0.3: path([0, 4, 8], [0, 4, 8])}
    assert beta.envelope(runs, 5.0) == (7, 0.03, False)  # against 4 + (8 − 4)·(5 − 4)/4 = 5
    assert beta.envelope({0.3: path([0, 2], [0, 2]), 0.1: path([0, 1], [0, 1])}, 1.0) == (1, 0.1, True)  # tie: smaller β
    assert beta.envelope({0.1: path([1, 2], [3, 4])}, 0.5) == (None, None, True)  # no evaluation within the budget


def comparison(mean, sign, interpolated=False):
    return {"mean": mean, "sign": sign, "interpolated": interpolated}


@pytest.mark.parametrize("naive, total, verdict", [
    ([(-1, -1)] * 2, [(-1, -1)] * 2, "holds"),
    ([(-1, -1), (-1, 0)], [(-1, -1)] * 2, "holds at some budgets"),
    ([(-1, -1), (-1, -1)], [(-1, -1), (1, 1)], "does not hold"),  # Total beats it at the second budget
    ([(1, 0), (0, 0)], [(2, 0), (0.5, 0)], "does not hold"),  # it beats neither at any budget, even in the mean
    ([(-1, 0), (1, 0)], [(1, 0), (1, 0)], "within noise"),
    ([(-1, -1), (1, 0)], [(1, 0), (-1, -1)], "within noise"),  # it beats each at some budget, never both at one
    # a difference significant only on an interpolation (claims.holm set its sign to 0): open, not within noise
    ([(-1, 0, True), (1, 0)], [(-1, 0), (1, 0)], "open (interpolated)"),
    ([(-1, -1), (-1, 0, True)], [(-1, -1), (-1, -1)], "holds at some budgets"),
])
def test_the_verdict_rule(naive, total, verdict):
    budgets = [1.0, 2.0]
    tests = {("sta_naive", "iterated_dpo", k): comparison(*c) for k, c in zip(budgets, naive)}
    tests |= {("sta_total", "iterated_dpo", k): comparison(*c) for k, c in zip(budgets, total)}
    assert beta.verdict(tests, budgets) == verdict


@pytest.mark.parametrize("naive, verdict", [
    ([(-1, -1)] * 2, "holds"),
    ([(-1, -1), (-1, 0)], "holds at some budgets"),
    ([(-1, 0), (1, 1)], "does not hold"),
    ([(-1, 0), (1, 0)], "within noise"),
])
def test_the_verdict_reads_only_the_analysed_sta_variants(naive, verdict):
    # Naive alone (Total not analysed): iterated DPO beating Naive at both budgets holds, with no Total comparison
    budgets = [1.0, 2.0]
    tests = {("sta_naive", "iterated_dpo", k): comparison(*c) for k, c in zip(budgets, naive)}
    assert beta.verdict(tests, budgets) == verdict


def write_folder(root, b, methods, skip=(), untuned=False):
    """Runs of the methods at β = b under root: the STA variants on STA_PATHS with each seed's noise, iterated DPO on
    DPO_PATHS (untuned: rewards 10 times higher); skip holds (method, seed) left out."""
    for method in methods:
        for seed, e in zip(SEEDS, NOISE.get(method, [0.0] * 5)):
            if (method, seed) in skip:
                continue
            kls, rewards = (DPO_PATHS if method == "iterated_dpo" else STA_PATHS)[b]
            rewards = [0.0] + [10 * r if untuned else r + e for r in rewards[1:]]
            algo, extra = ("dpo", {"online": True}) if method == "iterated_dpo" else (method, {})
            write_run(root, f"wc__{method}__{seed}", algo, "wc", seed, sta_rows(1, rewards, kls, 8), beta=b, **extra)


@pytest.fixture
def folders(tmp_path):
    """grid (β 0.1: Naive, Total, an untuned iterated DPO, offline DPO), tuned (β 0.1: iterated DPO), beta0.03, beta0.3."""
    grid, tuned, low, high = (tmp_path / name for name in ("grid", "tuned", "beta0.03", "beta0.3"))
    write_folder(grid, 0.1, ["sta_naive", "sta_total"])
    write_folder(grid, 0.1, ["iterated_dpo"], untuned=True)
    write_run(grid, "wc__dpo__467", "dpo", "wc", 467, sta_rows(1, [0, 1, 2], [0, 1, 2], 8), beta=0.1)
    write_folder(tuned, 0.1, ["iterated_dpo"])
    write_folder(low, 0.03, ["sta_naive", "sta_total", "iterated_dpo"])
    write_folder(high, 0.3, ["sta_naive", "sta_total", "iterated_dpo"])
    return [grid, tuned, low, high]


def test_budgets_envelopes_and_one_holm_family(folders):
    groups = beta.load_beta(folders)
    methods = ["sta_naive", "sta_total", "iterated_dpo"]
    # the tuned re-runs replace the grid's iterated DPO at β 0.1 (final KL 4 either way, reward 5 instead of 50)
    assert groups[("wc", "iterated_dpo", 0.1)]["folder"] == str(folders[1])
    assert [r["evals"][-1]["reward"] for r in groups[("wc", "iterated_dpo", 0.1)]["runs"]] == [5.0] * 5
    # K: the largest mean final KL over β is 8 for both STA variants (β 0.03), 6 for iterated DPO: K = 6
    assert beta.largest_common_kl(groups, "wc", methods, [0.03, 0.1, 0.3]) == 6
    result = beta.analyse(groups, "wc", methods)
    assert result["incomplete"] == [] and result["betas"] == [0.03, 0.1, 0.3] and result["budgets"] == [1.5, 3.0, 4.5, 6.0]
    # iterated DPO at KL ≤ 1.5: 4·1.5/3 = 2 (β 0.03), 3·1.5/2 = 2.25 (β 0.1), 2 + 0.5 = 2.5 (β 0.3); at KL ≤ 6: β 0.03's
    # corner 8 beats β 0.1's best evaluation 5 and β 0.3's 3
    # (1.5 lies below the first evaluations of β 0.03 and 0.1, at KL 3 and 2: read on the line from iteration 0)
    assert set(result["envelopes"][("iterated_dpo", 1.5)].values()) == {(2.5, 0.3, True)}
    assert set(result["envelopes"][("iterated_dpo", 6.0)].values()) == {(8, 0.03, False)}
    # Naive at KL ≤ 1.5, seed noise e: 0.375·(2 + e) (β 0.03), 0.75·(1 + e) (β 0.1), 0.75 + e (β 0.3): β 0.3 where
    # e > 0, β 0.03 where e < 0 and on the tie at e = 0; at KL ≤ 3, β 0.1's 2 + e
    naive = result["envelopes"][("sta_naive", 1.5)]
    assert [naive[s][1] for s in SEEDS] == [0.03, 0.3, 0.03, 0.3, 0.03]
    assert [naive[s][0] for s in SEEDS] == pytest.approx([0.75, 0.85, 0.375 * 1.9, 0.8, 0.375 * 1.95])
    assert [v[0] for v in result["envelopes"][("sta_naive", 3.0)].values()] == pytest.approx([2 + e for e in NOISE["sta_naive"]])
    # one Holm family of 3 pairs × 4 budgets; each adjusted p by Holm's definition over the whole family
    tests = result["tests"]
    assert len(tests) == 12
    ranked = sorted(tests.values(), key=lambda c: c["p"])
    expected, running = [], 0.0
    for k, c in enumerate(ranked):
        running = max(running, min(1.0, (12 - k) * c["p"]))
        expected.append(running)
    assert [c["p_holm"] for c in ranked] == pytest.approx(expected)
    assert ranked[0]["p_holm"] == pytest.approx(12 * ranked[0]["p"]) and ranked[0]["p"] < 1 / 12  # not a family of 4
    assert tests[("sta_naive", "iterated_dpo", 3.0)]["mean"] == pytest.approx(-2.0)  # 2 + e − 4, e averaging 0
    # iterated DPO beats both STA variants significantly at every budget, but at 1.5 and 3.0 (below the STA variants'
    # first evaluation at β 0.03, KL 4) only on the interpolation: no finding there
    sta = [("sta_naive", "iterated_dpo"), ("sta_total", "iterated_dpo")]
    assert [[tests[(a, b, k)].get("interpolated", False) for k in result["budgets"]] for a, b in sta] == [[True, True, False, False]] * 2
    assert [[tests[(a, b, k)]["sign"] for k in result["budgets"]] for a, b in sta] == [[0, 0, -1, -1]] * 2
    assert result["verdict"] == "holds at some budgets"


def test_the_descriptive_reading_between_the_budgets(folders, capsys):
    groups = beta.load_beta(folders)
    rows = beta.between(groups, "wc", ("sta_naive", "iterated_dpo"), [0.03, 0.1, 0.3], 6.0)
    assert [r[0] for r in rows] == [0.6, 1.2, 1.8, 2.4, 3.0, 3.6, 4.2, 4.8, 5.4, 6.0]  # every tenth of K = 6
    # at 3.0: Naive's β 0.1 run reads 1 + e + (3 − 1)·(3 − 2)/(4 − 2) = 2 + e (its best β), iterated DPO 4 (β 0.03's
    # 4·3/3): −2 in the mean, no seed ahead, every seed read below Naive's β 0.03 first evaluation (KL 4)
    assert rows[4][1:] == (pytest.approx(-2.0), 0, 5, 5)
    # at 6.0: Naive 3 + e (β 0.03's line from (4, 2 + e) to (8, 4 + e), and β 0.1's best), iterated DPO 8; all measured
    assert rows[9][1:] == (pytest.approx(-5.0), 0, 5, 0)
    beta.main([str(f) for f in folders])
    md = capsys.readouterr().out
    assert "descriptive only (no test)" in md and "| Naive STA − Iterated DPO | " in md and "-5.00 (0/5) |" in md


def test_the_report_and_the_later_folder_rule(folders, tmp_path, capsys):
    beta.main([str(f) for f in folders])
    md = capsys.readouterr().out
    assert "Methods: Naive STA, Total STA, Iterated DPO." in md  # offline DPO has a single β: not analysed
    assert "| wc | holds at some budgets |" in md and "one Holm family of 12 comparisons" in md
    assert md.count("significant only on the interpolation: no finding") == 4
    replaced = f"`{folders[1]}` (in place of 5 run(s) under {folders[0]})"
    assert f"| Iterated DPO | 0.1 | 5 | 5.00 ± 0.00 | 4.00 ± 0.00 | {replaced}" in md
    assert "K = 6.00" in md and "budgets 1.5, 3.0, 4.5, 6.0" in md
    assert "| Iterated DPO | 2.50 ± 0.00 (n 5; 0.3 ×5; below the first evaluation: 5/5) |" in md
    assert "8.00 ± 0.00 (n 5; 0.03 ×5) |" in md
    # Naive at KL ≤ 1.5: 0.75, 0.85, 0.7125, 0.8, 0.73125: mean 0.76875, std √(0.0125/4) = 0.056
    assert "| Naive STA | 0.77 ± 0.06 (n 5; 0.03 ×3, 0.3 ×2; below the first evaluation: 5/5) |" in md
    # the grid folder last: its untuned iterated DPO (rewards 10 times higher) is read at β 0.1
    beta.main([str(f) for f in folders[1:]] + [str(folders[0])])
    assert "| Iterated DPO | 0.1 | 5 | 50.00 ± 0.00 |" in capsys.readouterr().out


def test_naive_and_iterated_dpo_alone_get_a_verdict(folders, capsys):
    beta.main([str(f) for f in folders] + ["--methods", "sta_naive", "iterated_dpo"])
    md = capsys.readouterr().out
    # one family of 4 budgets (one pair), the verdict naming the one STA variant read
    assert "Methods: Naive STA, Iterated DPO." in md and "one Holm family of 4 comparisons" in md
    assert "Verdict, iterated DPO beats STA (Naive STA) at equal KL: **holds at some budgets**." in md
    assert "| wc | holds at some budgets |" in md and "Total STA" not in md.split("| task | verdict |")[1]


def test_an_incomplete_task_is_not_tested(tmp_path, capsys):
    grid, low, high = tmp_path / "grid", tmp_path / "low", tmp_path / "high"
    write_folder(grid, 0.1, ["sta_naive", "sta_total", "iterated_dpo"])
    write_folder(low, 0.03, ["sta_naive", "sta_total", "iterated_dpo"], skip={("sta_total", 8688)})
    write_folder(high, 0.3, ["sta_naive", "iterated_dpo"], skip={("sta_naive", 7107)})  # no Total STA at β 0.3
    write_run(high, "wc__sta_naive__7107", "sta_naive", "wc", 7107, sta_rows(1, [0, 1, 2], [0, 1, 2], 8)[:2],
              status="running", beta=0.3)
    beta.main([str(grid), str(low), str(high)])
    md = capsys.readouterr().out
    assert "Total STA β 0.3: no runs" in md and "Total STA β 0.03: seed(s) 8688 missing" in md
    assert "Naive STA β 0.3 seed 7107 running at iteration 1" in md
    assert "| wc | incomplete: " in md and "Paired differences" not in md and "Verdict, " not in md


def test_a_diverged_seed_leaves_the_envelope_but_the_task_is_tested(tmp_path, capsys):
    low, mid, high = tmp_path / "low", tmp_path / "mid", tmp_path / "high"
    write_folder(low, 0.03, ["sta_naive", "sta_total", "iterated_dpo"])
    write_folder(mid, 0.1, ["sta_naive", "sta_total", "iterated_dpo"])
    write_folder(high, 0.3, ["sta_naive", "sta_total", "iterated_dpo"], skip={("iterated_dpo", 8688)})
    write_run(high, "wc__iterated_dpo__8688", "dpo", "wc", 8688, sta_rows(1, [0, 9, 9], [0, 1, 1], 8)[:3],
              status="diverged", beta=0.3, online=True)
    beta.main([str(low), str(mid), str(high)])
    md = capsys.readouterr().out
    assert "| Iterated DPO | 0.3 | 4 | 3.00 ± 0.00 | 2.00 ± 0.00 |" in md and "diverged: seed 8688 after iteration 2" in md
    assert "Not in the envelopes (diverged): Iterated DPO β 0.3 seed 8688." in md
    assert "| Iterated DPO | 2.50 ± 0.00 (n 4; 0.3 ×4; below the first evaluation: 4/4) |" in md  # β 0.03, 0.1: not alone
    assert "(0/4, t " in md and "| wc | holds at some budgets |" in md  # Naive − iterated DPO paired on the four seeds both have


@pytest.mark.parametrize("bad", ["missing", "file"])
def test_a_bad_folder_is_one_line_and_exit_2(tmp_path, bad):
    target = tmp_path / "nothing"
    if bad == "file":
        target.write_text("not runs")
    done = subprocess.run([*BETA, str(target), "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"error: {target} is not a folder of runs") and not (tmp_path / "out").exists()


def test_the_parent_of_the_beta_folders_names_them(folders, tmp_path):
    done = subprocess.run([*BETA, str(tmp_path)], capture_output=True, text=True, timeout=60)  # grid/, tuned/, beta0.03/...
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and done.stdout == ""
    assert f"give the folders of runs themselves: {folders[2]} {folders[3]} {folders[0]} {folders[1]}" in done.stderr


def test_a_closed_pipe_ends_quietly(folders):
    read, write = os.pipe()
    os.close(read)  # `| head` that has already exited
    done = subprocess.run([*BETA, *map(str, folders)], stdout=write, stderr=subprocess.PIPE, text=True, timeout=60)
    os.close(write)
    assert done.returncode in (0, 1) and done.stderr == "", done.stderr  # 1: the write that found the pipe closed


def test_the_figure(folders, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    beta.main([str(f) for f in folders] + ["--out", str(out)])
    assert (out / "beta_fronts.png").stat().st_size > 10_000
    assert "`beta_fronts.png`" in (out / "beta.md").read_text()


def test_without_matplotlib_the_tables_are_still_written(folders, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    out = tmp_path / "out"
    beta.main([str(f) for f in folders] + ["--out", str(out)])
    assert not (out / "beta_fronts.png").exists()
    md = (out / "beta.md").read_text()
    assert "Not drawn: matplotlib is not installed" in md and "| wc | holds at some budgets |" in md
