"""The KL weight β (issue 25 §3): does "iterated DPO beats STA" survive at equal KL from π_ref, once each method's
front is extended by runs at other β instead of being extrapolated?

    python tools/beta.py results/laptop/runs results/laptop/tuned/runs results/laptop/beta/runs/beta0.1 \\
        results/laptop/beta/runs/beta0.3 results/laptop/beta/runs/beta0.03 --out results/laptop/beta

Reads each folder as tools/results.py does (results.load: config.json and metrics.csv, one run per seed; finished,
diverged and unfinished runs told apart) and keys each group of runs by (task, method, β), β being its runs'
args["beta"]; a later folder's group replaces an earlier one's with the same key (results.load_folders' rule, so the
tuned re-runs replace the untuned grid's at β = 0.1). Methods analysed: by default those with at least two β on some
task (Naive STA, Total STA and iterated DPO for the folders above), or --methods. Writes beta.md and beta_fronts.png to
--out (without --out, prints beta.md and draws nothing); matplotlib is optional: without it beta.md is still written.

Rules.
- Per task, a table method × β: finished runs n, final reward and final KL (the last evaluation; mean ± sample std over
  the finished seeds), and the runs that are not averaged (diverged, unfinished, missing seeds, other arguments).
- The reward of a method at a KL budget over β (its upper envelope across β): per seed, the maximum over the task's β
  values of results.reward_at_kl(the run's evaluations, budget) (the run's evaluations, iteration 0 at KL 0 included,
  joined in order by straight lines, the highest reward that path reaches at KL ≤ budget; a run that never reaches
  the budget scores its best evaluation). Every method gets the same β values (those of the task), so none gets more
  chances. A seed enters a method's envelope only when its runs at every β finished (a diverged run is named beside
  the comparisons); ties go to the smaller β. Reported as mean ± std over seeds, with how many seeds each β gives
  the maximum.
- Budgets of a task: K = the largest KL that every analysed method's envelope reaches, the minimum over the methods of
  (the maximum over its β of the mean final KL over seeds); the budgets are 0.25K, 0.5K, 0.75K and K, each rounded to
  0.1 (and the rounded values are the ones read).
- Comparisons: Naive − iterated DPO, Total − iterated DPO and Total − Naive (those whose methods are analysed), of the
  envelope rewards at each budget, paired by seed (claims.paired: the paired t test, two-sided p), all pairs × budgets
  of a task ONE family whose p values Holm's method adjusts (claims.holm; significant: adjusted p < 0.05).
- Between the budgets, descriptive only (no test, no verdict): each pair's mean paired difference and the seeds
  favouring its first method at every tenth of K (rounded to 0.1), with the seeds read below a first evaluation
  counted, so that a gap between the tested budgets is seen.
- Interpolation (claims.py's rule): a seed's envelope at a budget is read below a first evaluation when the budget lies
  below the KL of the first evaluation after iteration 0 of any of its runs (results.below_first_evaluation): there the
  run's reward is read on the straight line from iteration 0, an interpolation across its fastest-moving stretch, not
  a measurement and not a bound either way. Each envelope cell counts such seeds, and a significant difference with
  such seeds on either side is no finding (claims.holm: sign 0, "interpolated").
- Verdict per task on "iterated DPO beats STA at equal KL" (needs iterated DPO and at least one STA variant analysed;
  "STA" is the analysed variants, Naive and Total by default, and the verdict line names them):
  holds: iterated DPO beats every analysed STA variant significantly at every budget;
  does not hold: an STA variant beats iterated DPO significantly at some budget, or iterated DPO beats none at any
  budget even in the mean (every mean difference STA variant − iterated DPO is ≥ 0);
  holds at some budgets: neither of those, and iterated DPO beats every STA variant significantly at some budget;
  open (interpolated): otherwise, where a difference of STA against iterated DPO was significant only on an
  interpolation (above);
  within noise: otherwise (not shown either way).
  Incomplete (no test, no envelope): a task where an analysed method lacks one of the task's β values, or a group has
  an unfinished run (running, interrupted, failed, cut off) or misses a seed that another group of the task has, or
  fewer than two seeds enter every envelope.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from claims import fmt_paired, holm, paired  # noqa: E402
from results import (COLOURS, NAMES, TASK_NAMES, below_first_evaluation, curve, fail, fmt, load, mean_std,  # noqa: E402
                     reward_at_kl)

FRACTIONS = (0.25, 0.5, 0.75, 1.0)  # of K, the task's largest common KL
TENTHS = [i / 10 for i in range(1, 11)]  # of K: the descriptive reading between the tested budgets
PAIRS = [("sta_naive", "iterated_dpo"), ("sta_total", "iterated_dpo"), ("sta_total", "sta_naive")]
STYLES = ["-", "--", ":", "-."]  # one line style per β, in increasing order
STA = ("sta_naive", "sta_total")  # the variants whose comparison with iterated DPO the verdict reads


def name(method):
    return NAMES.get(method, method)


def beta_of(group):
    """The β of a group's runs (results.load keeps one set of arguments per group); None if its runs have none."""
    return next((r["args"].get("beta") for r in group["runs"] if r["args"] is not None), None)


def load_beta(roots):
    """{(task, method, β): group} over the folders in turn; a later folder's group replaces an earlier one's with the
    same key (results.load_folders' rule, keyed by β too). Each group keeps its folder."""
    groups = {}
    for root in roots:
        for (task, method), group in load(root).items():
            key = (task, method, beta_of(group))
            group["folder"] = str(root)
            if key in groups:
                group["replaced"] = f"{len(groups[key]['runs'])} run(s) under {groups[key]['folder']}"
            groups[key] = group
    return groups


def finished(group):
    return [r for r in group["runs"] if r["status"] == "finished" and r["evals"]]


def betas_of(groups, task, methods):
    """The β values of a task: those of any analysed method's group, increasing."""
    return sorted({b for t, m, b in groups if t == task and m in methods and b is not None})


def envelope(runs_by_beta, budget):
    """(reward, β, below) of one seed at a budget: the maximum over β of reward_at_kl of that β's run ({β: run}), the
    smaller β on a tie ((None, None) if no run comes within the budget), and whether any of the runs is read below its
    first evaluation there (an interpolation: the docstring's rule)."""
    best = (None, None)
    for beta in sorted(runs_by_beta):
        reward = reward_at_kl(runs_by_beta[beta]["evals"], budget)
        if reward is not None and (best[0] is None or reward > best[0]):
            best = (reward, beta)
    return (*best, any(below_first_evaluation(run, budget) for run in runs_by_beta.values()))


def seed_envelopes(groups, task, method, betas, budget):
    """{seed: (reward, β, below)} of a method at a budget, over the seeds whose runs at every β of the task finished."""
    runs = {b: {r["seed"]: r for r in finished(groups.get((task, method, b), {"runs": []}))} for b in betas}
    seeds = set.intersection(*(set(s) for s in runs.values())) if runs else set()
    return {s: envelope({b: runs[b][s] for b in betas}, budget) for s in sorted(seeds)}


def final_kl(group):
    return mean_std([r["evals"][-1]["kl"] for r in finished(group)])[0]


def largest_common_kl(groups, task, methods, betas):
    """K: the minimum over methods of the maximum over their β of the mean final KL; None if a method has none."""
    reach = []
    for method in methods:
        kls = [final_kl(groups[(task, method, b)]) for b in betas if (task, method, b) in groups]
        kls = [k for k in kls if k is not None]
        if not kls:
            return None
        reach.append(max(kls))
    return min(reach) if reach else None


def budgets_of(k, fractions=FRACTIONS):
    return [round(f * k, 1) for f in fractions]


def between(groups, task, pair, betas, k):
    """The descriptive reading between the tested budgets: at every tenth of K, the mean over seeds of the paired
    difference a − b of the envelopes, how many seeds favour a, n, and how many seeds are read below a first
    evaluation on either side, as (budget, mean, favourable, n, below); no test."""
    rows = []
    for budget in budgets_of(k, TENTHS):
        env = [seed_envelopes(groups, task, m, betas, budget) for m in pair]
        seeds = [s for s in env[0] if s in env[1]]
        diffs = [env[0][s][0] - env[1][s][0] for s in seeds]
        below = sum(env[0][s][2] or env[1][s][2] for s in seeds)
        rows.append((budget, sum(diffs) / len(diffs), sum(d > 0 for d in diffs), len(diffs), below))
    return rows


def where(run):
    """An unfinished run's seed, status and last iteration, as results.md lists it."""
    return f"seed {run['seed']} {run['status']}" + (f" at iteration {run['iteration']}" if run["iteration"] is not None else "")


def expected_seeds(groups, task, methods):
    """Every seed that some analysed group of the task has: a group without one of them misses it."""
    return sorted({r["seed"] for (t, m, b), g in groups.items() if t == task and m in methods for r in g["runs"]})


def incomplete(groups, task, methods, betas):
    """What keeps a task from being tested: missing groups, unfinished runs, missing seeds ([] if nothing)."""
    expected = expected_seeds(groups, task, methods)
    reasons = []
    for method in methods:
        for beta in betas:
            group = groups.get((task, method, beta))
            if group is None:
                reasons.append(f"{name(method)} β {beta:g}: no runs")
                continue
            seeds = {r["seed"] for r in group["runs"]}
            reasons += [f"{name(method)} β {beta:g} {where(r)}" for r in group["runs"]
                        if r["status"] not in ("finished", "diverged")]
            missing = [s for s in expected if s not in seeds]
            if missing:
                reasons.append(f"{name(method)} β {beta:g}: seed(s) {' '.join(map(str, missing))} missing")
    return reasons


def verdict(tests, budgets):
    """The verdict on "iterated DPO beats STA at equal KL" from {(a, b, budget): comparison} (the docstring's rule)."""
    sta = [(m, "iterated_dpo") for m in STA if (m, "iterated_dpo", budgets[0]) in tests]
    if any(tests[(a, b, k)]["sign"] == 1 for a, b in sta for k in budgets):
        return "does not hold"
    if all(tests[(a, b, k)]["mean"] >= 0 for a, b in sta for k in budgets):
        return "does not hold"
    beaten = [all(tests[(a, b, k)]["sign"] == -1 for a, b in sta) for k in budgets]
    if all(beaten):
        return "holds"
    if any(beaten):
        return "holds at some budgets"
    interpolated = any(tests[(a, b, k)].get("interpolated") for a, b in sta for k in budgets)
    return "open (interpolated)" if interpolated else "within noise"


def analyse(groups, task, methods):
    """The task's β values, budgets, per-budget envelopes {(method, budget): {seed: (reward, β)}}, the Holm family
    {(a, b, budget): comparison}, its verdict, and the reasons it is incomplete (then the rest is None)."""
    betas = betas_of(groups, task, methods)
    reasons = incomplete(groups, task, methods, betas)
    out = {"betas": betas, "incomplete": reasons, "k": None, "budgets": [], "envelopes": {}, "tests": {}, "verdict": None}
    if reasons:
        return out
    k = largest_common_kl(groups, task, methods, betas)
    out["k"], out["budgets"] = k, budgets_of(k) if k is not None else []
    out["envelopes"] = {(m, b): seed_envelopes(groups, task, m, betas, b) for m in methods for b in out["budgets"]}
    few = [name(m) for m in methods if len(seed_envelopes(groups, task, m, betas, 0.0)) < 2]
    if k is None or few:
        out["incomplete"] = [f"fewer than two seeds finished at every β: {', '.join(few)}"] if few else ["no final KL"]
        return out
    for a, b in PAIRS:
        if a in methods and b in methods:
            for budget in out["budgets"]:
                read = lambda m: {s: v[0] for s, v in out["envelopes"][(m, budget)].items()}
                below = {m: (sum(v[2] for v in out["envelopes"][(m, budget)].values()), len(out["envelopes"][(m, budget)]))
                         for m in (a, b)}
                out["tests"][(a, b, budget)] = {**paired(read(a), read(b)), "below_first": below}
    holm(list(out["tests"].values()))  # one family per task: every pair at every budget
    if "iterated_dpo" in methods and any(m in methods for m in STA):
        out["verdict"] = verdict(out["tests"], out["budgets"])
    return out


def group_notes(group, expected):
    notes = [f"diverged: seed {r['seed']} after iteration {r['iteration']}" for r in group["runs"]
             if r["status"] == "diverged"]
    notes += [f"unfinished: {where(r)}" for r in group["runs"] if r["status"] not in ("finished", "diverged")]
    missing = [s for s in expected if s not in {r["seed"] for r in group["runs"]}]
    notes += [f"missing seeds: {' '.join(map(str, missing))}"] if missing else []
    notes += group["excluded"]
    return notes


def test_cell(c):
    """A comparison's cell; where Holm found it significant only on an interpolation, says so (claims.cell's wording)."""
    return fmt_paired(c) + ("; significant only on the interpolation: no finding" if c.get("interpolated") else "")


def task_lines(groups, task, methods, result):
    betas = result["betas"]
    expected = expected_seeds(groups, task, methods)
    lines = [f"## {TASK_NAMES.get(task, task)}", "",
             "| method | β | n | final reward | final KL | folder | not averaged |", "|---|---|---|---|---|---|---|"]
    for method in methods:
        for beta in betas:
            group = groups.get((task, method, beta))
            if group is None:
                lines.append(f"| {name(method)} | {beta:g} | 0 | – | – | – | no runs |")
                continue
            done = finished(group)
            reward = mean_std([r["evals"][-1]["reward"] for r in done])
            kl = mean_std([r["evals"][-1]["kl"] for r in done])
            folder = f"`{group['folder']}`" + (f" (in place of {group['replaced']})" if "replaced" in group else "")
            lines.append(f"| {name(method)} | {beta:g} | {len(done)} | {fmt(*reward)} | {fmt(*kl)} | {folder} | "
                         f"{'; '.join(group_notes(group, expected)) or '–'} |")
    lines.append("")
    if result["incomplete"]:
        return lines + [f"Verdict: incomplete: {'; '.join(result['incomplete'])}.", ""]
    budgets = result["budgets"]
    lines += [f"K = {result['k']:.2f} (the minimum over the methods of the largest mean final KL over their β); budgets "
              f"{', '.join(f'{b:.1f}' for b in budgets)}.", "",
              "Reward at KL ≤ budget, the envelope over β (per seed the best β's reward_at_kl; mean ± std over seeds), "
              "and the β giving the maximum (seeds per β):", "",
              "| method | " + " | ".join(f"KL ≤ {b:.1f}" for b in budgets) + " |", "|---" * (len(budgets) + 1) + "|"]
    for method in methods:
        cells = []
        for budget in budgets:
            env = result["envelopes"][(method, budget)]
            counts = [f"{beta:g} ×{sum(v[1] == beta for v in env.values())}" for beta in betas
                      if any(v[1] == beta for v in env.values())]
            below = sum(v[2] for v in env.values())
            cells.append(f"{fmt(*mean_std([v[0] for v in env.values()]))} (n {len(env)}; {', '.join(counts)}"
                         + (f"; below the first evaluation: {below}/{len(env)}" if below else "") + ")")
        lines.append(f"| {name(method)} | " + " | ".join(cells) + " |")
    lines.append("")
    diverged = [f"{name(m)} β {b:g} seed {r['seed']}" for m in methods for b in betas
                for r in groups[(task, m, b)]["runs"] if r["status"] == "diverged"]
    if diverged:
        lines += [f"Not in the envelopes (diverged): {'; '.join(diverged)}.", ""]
    if result["tests"]:
        pairs = list(dict.fromkeys((a, b) for a, b, _ in result["tests"]))
        lines += ["Paired differences of the envelope rewards, one Holm family of "
                  f"{len(result['tests'])} comparisons:", "",
                  "| difference | " + " | ".join(f"KL ≤ {b:.1f}" for b in budgets) + " |", "|---" * (len(budgets) + 1) + "|"]
        lines += [f"| {name(a)} − {name(b)} | " + " | ".join(test_cell(result["tests"][(a, b, k)]) for k in budgets) + " |"
                  for a, b in pairs]
        lines.append("")
        tenths = budgets_of(result["k"], TENTHS)
        lines += ["Between those budgets, descriptive only (no test): the mean paired difference of the envelopes at every "
                  "tenth of K (seeds favouring the first method / n; \"i\" and a count: seeds read below a first "
                  "evaluation on either side, an interpolation):", "",
                  "| difference | " + " | ".join(f"{b:.1f}" for b in tenths) + " |", "|---" * (len(tenths) + 1) + "|"]
        lines += [f"| {name(a)} − {name(b)} | " + " | ".join(f"{m:+.2f} ({f}/{n}{f'; i {i}' if i else ''})" for _, m, f, n, i in
                                                            between(groups, task, (a, b), betas, result["k"])) + " |"
                  for a, b in pairs]
        lines.append("")
    if result["verdict"]:
        lines += [f"Verdict, iterated DPO beats STA ({', '.join(name(m) for m in STA if m in methods)}) at equal KL: "
                  f"**{result['verdict']}**.", ""]
    return lines


def markdown(groups, roots, tasks, methods, results, command, figure):
    lines = ["# The KL weight β (issue 25 §3)", "",
             f"From {' then '.join(f'`{r}`' for r in roots)} (a later folder's runs of a method at a β on a task replace "
             f"an earlier one's) by `python tools/beta.py {command}`. Methods: {', '.join(name(m) for m in methods)}. "
             "Mean ± sample std over seeds; final = the last evaluation.", "",
             "Rule: the reward of a method at a KL budget is, per seed, the maximum over the task's β values of the "
             "reward its run at that β reaches within the budget (results.reward_at_kl: the evaluations joined in order "
             "by straight lines, iteration 0 at KL 0 included; a run that never reaches the budget scores its best "
             "evaluation): the method's upper envelope across β, the same β values for every method. K is the largest "
             "KL every method's envelope reaches (the minimum over methods of the maximum over β of the mean final KL); "
             "budgets 0.25K, 0.5K, 0.75K, K rounded to 0.1. Differences are paired by seed, `mean ± std (favourable "
             "seeds/n, t, p, Holm)`, all pairs × budgets of a task one Holm family, `*` where the adjusted p is below "
             "0.05. Verdict on \"iterated DPO beats STA at equal KL\" (STA: the analysed variants of Naive and Total STA): "
             "holds if it beats each significantly at every budget; does not hold if one beats it significantly at some "
             "budget or it beats none at any budget even in the mean; holds at some budgets if it beats each "
             "significantly at some; "
             "open (interpolated) if a difference against it was significant only where a seed's runs are read below their first "
             "evaluation (an interpolation from iteration 0, counted in the envelope cells); within noise otherwise. "
             "Rules in full: the docstring of tools/beta.py.", "",
             "| task | verdict |", "|---|---|"]
    for task in tasks:
        r = results[task]
        v = f"incomplete: {'; '.join(r['incomplete'])}" if r["incomplete"] else (r["verdict"] or "not tested (needs "
                                                                                   "iterated DPO and an STA variant)")
        lines.append(f"| {task} | {v} |")
    lines.append("")
    for task in tasks:
        lines += task_lines(groups, task, methods, results[task])
    if figure:
        lines += ["## Figure", "", figure, ""]
    return "\n".join(lines)


def plot(groups, tasks, methods, results, out):
    """beta_fronts.png; returns its line for beta.md."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "Not drawn: matplotlib is not installed (`pip install matplotlib`)."
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 5.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        betas = results[task]["betas"]
        for method in methods:
            colour = COLOURS.get(method)
            for beta, style in zip(betas, STYLES * len(betas)):
                points = curve(finished(groups.get((task, method, beta), {"runs": []})))
                if points:
                    ax.plot([p["kl"][0] for p in points], [p["reward"][0] for p in points], color=colour,
                            linestyle=style, linewidth=0.8, alpha=0.7, label=f"{name(method)}, β {beta:g}")
            k = results[task]["k"]
            if k is None or results[task]["incomplete"]:
                continue
            xs = [k * i / 40 for i in range(41)]
            at = [mean_std([v[0] for v in seed_envelopes(groups, task, method, betas, x).values()]) for x in xs]
            mean, std = [a[0] for a in at], [a[1] or 0.0 for a in at]
            ax.plot(xs, mean, color=colour, linewidth=2.5, label=f"{name(method)}, envelope over β")
            ax.fill_between(xs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], color=colour,
                            alpha=0.15, linewidth=0)
        ax.set(title=TASK_NAMES.get(task, task), xlabel="KL(π_θ ‖ π_ref) / KL budget (nats)", ylabel="evaluation reward")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(out / "beta_fronts.png", dpi=120)
    plt.close(fig)
    return ("- `beta_fronts.png`: per task, thin lines: the seed-averaged reward-KL path of each method at each β "
            "(line style per β); thick lines with ± std band: the envelope over β, the reward at KL ≤ budget against the "
            "budget from 0 to K, mean over seeds (complete tasks only)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="folders of runs, each at one β per method; a later "
                        "folder's runs of a method at a β on a task replace an earlier one's")
    parser.add_argument("--methods", nargs="+", help="methods to analyse (grid names: sta_naive iterated_dpo "
                        "sta_total ...; default: those with at least two β on some task)")
    parser.add_argument("--out", type=Path, help="write beta.md and beta_fronts.png here (default: print beta.md)")
    cli = parser.parse_args(argv)
    for root in cli.runs:
        if not root.is_dir():
            fail(f"{root} is not a folder of runs")
    groups = load_beta(cli.runs)
    if not groups:
        nested = [str(d) for root in cli.runs for d in sorted(root.iterdir()) if d.is_dir() and any(d.glob("*/config.json"))]
        fail(f"no run directories (with config.json) under {' '.join(map(str, cli.runs))}"
             + (f"; give the folders of runs themselves: {' '.join(nested)}" if nested else ""))
    present = {m for _, m, _ in groups}
    if cli.methods:
        unknown = [m for m in cli.methods if m not in present]
        if unknown:
            fail(f"--methods: no runs of {' '.join(unknown)} (present: {' '.join(sorted(present))})")
        methods = [m for m in NAMES if m in cli.methods] + [m for m in cli.methods if m not in NAMES]
    else:
        several = {m for t, m, _ in groups if len({b for t2, m2, b in groups if (t2, m2) == (t, m)}) >= 2}
        methods = [m for m in list(NAMES) + sorted(present - set(NAMES)) if m in several]
        if not methods:
            fail("no method has runs at two β values on a task; give more folders or --methods")
    tasks = [t for t in list(TASK_NAMES) + sorted({t for t, _, _ in groups} - set(TASK_NAMES))
             if any(k[0] == t and k[1] in methods for k in groups)]
    results = {task: analyse(groups, task, methods) for task in tasks}
    command = " ".join(sys.argv[1:] if argv is None else map(str, argv))
    if cli.out:
        cli.out.mkdir(parents=True, exist_ok=True)
        figure = plot(groups, tasks, methods, results, cli.out)
        (cli.out / "beta.md").write_text(markdown(groups, cli.runs, tasks, methods, results, command, figure))
        print(f"wrote to {cli.out}: beta.md" + (", beta_fronts.png" if (cli.out / "beta_fronts.png").exists() else ""))
    else:
        print(markdown(groups, cli.runs, tasks, methods, results, command, None))


if __name__ == "__main__":
    import quiet_pipe  # noqa: F401,E402  (`python tools/X.py | head` ends without a BrokenPipeError traceback)

    main()
