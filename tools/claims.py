"""The paper's claims, checked against a folder of runs (issue 18): each marked holds, does not hold or within noise,
with the evidence, by the rules stated below and in claims.md.

    python tools/claims.py results/laptop/runs --cost results/cost/laptop/cost.csv --out results/laptop

Reads the runs as tools/results.py does (config.json and metrics.csv; finished runs, one per seed; diverged runs
counted apart). Comparisons between two methods are paired by seed, on the seeds both finished: the per-seed
differences, their mean ± standard deviation, how many favour the first method, and the paired t statistic. A
difference is called significant when |t| exceeds the two-sided 95% point of Student's t with n − 1 degrees of freedom
(2.78 for the paper's five seeds); five seeds detect only large effects, so "within noise" means "not shown either way".
A claim is "incomplete" on a task while a method it needs has no runs or unfinished ones, or fewer than two seeds to
pair. Diverged runs (a method's outcome) are named beside the comparisons they cannot enter.

1. Both STA variants reach a higher final reward than every other method, per task (§6, Figure 1): holds on a task
   if both beat every other method significantly, does not hold if another method beats one of them significantly,
   within noise otherwise.
2. On wc and cwc the STA methods are Pareto-dominated (further from π_ref); on un their front is similar to the
   others' at a higher reward (§6). The fronts are results.py's (KL and reward averaged over seeds at each evaluation).
   wc, cwc: holds if at least half of each STA variant's front points are weakly dominated by another method's front
   point and its final KL is above every other method's mean; un: if fewer than half of its front's points are
   dominated and its final mean reward is above every other method's. Holds if so for both variants, does not hold if
   for neither, "holds for X only" otherwise (Pareto fronts are of means: there is no per-seed test here).
3. Reversed starts off competitive but becomes unstable (Figure 1's caption): competitive = its mean reward at the
   first evaluation after iteration 0 ranks in the upper half of the methods (rank ≤ n/2); unstable = a diverged seed, or a drop
   from its best evaluation to its last larger than Naive STA's, significantly (paired). Holds if both, does not
   hold if it is not competitive or its drop is not larger at all, within noise otherwise.
4. Total STA does not clearly beat Naive STA (§6): holds unless Total − Naive final reward is significantly positive on
   some task (then does not hold).
5. Naive STA's reward model and policy converge (Figures 2-3, Appendix): per seed, the mean of rm/loss, rm/score_mean
   (per iteration) and eval/reward over the last quarter of the run minus the mean over the third quarter: holds if no
   series drifts significantly on any task, does not hold otherwise. The spread within the last quarter is reported
   beside it: a converged cumulative average can hide an oscillating value.
6. Table 1's cost order: offline DPO is the cheapest method, Total STA takes 2.6-4.6× Naive STA's time, Reversed more
   than Naive. From the grid's seconds per run (whole runs, equal prompts; noisy where runs share a machine) and,
   with --cost, tools/bench_cost.py's quiet per-iteration ratios at equal prompts (the offline data set apart). Each
   part holds if every source agrees with the paper, does not hold if none does, "sources disagree" otherwise.

claims.md ends with measurements that bear on the verdicts and carry none (measurements()): each method's gain over
the second half of its run; the learned reward models' accuracy on fresh oracle pairs, their in-sample loss and score
spread, the policy's early KL; and Total STA's solve of eq. 11.
"""

import argparse
import csv
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import NAMES, PAPER_SECONDS, TASK_NAMES, load, pareto_front, summarise  # noqa: E402

# two-sided 95% points of Student's t by degrees of freedom
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228, 12: 2.179,
       15: 2.131, 20: 2.086, 30: 2.042}
STA = ["sta_naive", "sta_total"]


def t95(df):
    return T95[max(k for k in T95 if k <= df)] if df >= 1 else float("inf")


def paired(a, b):
    """Per-seed differences a − b over the seeds both have ({seed: value} each)."""
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    n = len(diffs)
    mean = statistics.mean(diffs) if diffs else None
    std = statistics.stdev(diffs) if n > 1 else None
    t = mean / (std / n**0.5) if std else (None if n < 2 else (0.0 if mean == 0 else float("inf") * (1 if mean > 0 else -1)))
    significant = t is not None and abs(t) > t95(n - 1)
    return {"seeds": seeds, "diffs": diffs, "n": n, "mean": mean, "std": std, "t": t, "wins": sum(d > 0 for d in diffs),
            "significant": significant, "sign": 0 if not significant else (1 if mean > 0 else -1)}


def fmt_paired(p):
    if not p["n"]:
        return "–"
    std = f" ± {p['std']:.2f}" if p["std"] is not None else ""
    t = "" if p["t"] is None else f", t {p['t']:+.1f}" + ("*" if p["significant"] else "")
    return f"{p['mean']:+.2f}{std} ({p['wins']}/{p['n']}{t})"


def finished(groups, task, method):
    return [r for r in groups.get((task, method), {"runs": []})["runs"] if r["status"] == "finished" and r["evals"]]


def finals(groups, task, method, key="reward"):
    return {r["seed"]: r["evals"][-1][key] for r in finished(groups, task, method)}


def pending(groups, task, methods):
    """The methods with no run on this task, or a run neither finished nor diverged (the grid is not done with them)."""
    return [m for m in methods if not groups.get((task, m), {"runs": []})["runs"]
            or any(r["status"] not in ("finished", "diverged") for r in groups[(task, m)]["runs"])]


def left_out(groups, task, methods):
    """A line naming the runs that the paired comparisons cannot use (diverged, unfinished), or ''."""
    notes = [f"{name(m)} seed {r['seed']} {r['status']}" for m in methods
             for r in groups.get((task, m), {"runs": []})["runs"] if r["status"] != "finished"]
    return f"Not in the comparisons: {'; '.join(notes)}." if notes else ""


def name(method):
    return NAMES.get(method, method)


def tasks_and_methods(groups):
    tasks = [t for t in TASK_NAMES if any(k[0] == t for k in groups)]
    methods = [m for m in NAMES if any(k[1] == m for k in groups)]
    return tasks, methods


def claim_final_reward(groups, tasks, methods):
    lines, verdicts = [], {}
    for task in tasks:
        rivals = [m for m in methods if m not in STA and m != "sta_total_gn"]
        others = [m for m in rivals if finals(groups, task, m)]
        columns = [m for m in [*STA, "sta_total_gn"] if finals(groups, task, m)]
        if not columns or not others:
            verdicts[task] = "incomplete"
            lines += [f"**{task}**: no finished runs to compare yet.", ""]
            continue
        lines += [f"**{task}** (final reward, mean over seeds: "
                  + ", ".join(f"{name(m)} {statistics.mean(finals(groups, task, m).values()):.2f}" for m in [*columns, *others]) + ")",
                  "", "| other method | " + " | ".join(f"{name(m)} − other" for m in columns) + " |", "|---" * (len(columns) + 1) + "|"]
        signs = []
        for other in others:
            cells = [paired(finals(groups, task, m), finals(groups, task, other)) for m in columns]
            signs += [c["sign"] for m, c in zip(columns, cells) if m in STA]
            lines.append(f"| {name(other)} | " + " | ".join(fmt_paired(c) for c in cells) + " |")
        lines += [line for line in [left_out(groups, task, [*columns, *rivals])] if line]
        verdicts[task] = ("incomplete" if pending(groups, task, [*STA, *rivals]) else "does not hold" if -1 in signs else
                          "holds" if all(s == 1 for s in signs) else "within noise")
        lines += ["", f"Verdict on {task}: **{verdicts[task]}**.", ""]
    return lines, verdicts


def dominated_share(front, others):
    """Share of a front's points that a point of another front weakly dominates (KL no larger, reward no smaller, one
    of them strictly)."""
    if not front:
        return None
    hit = [any(ok <= k and orw >= r and (ok, orw) != (k, r) for ok, orw in others) for k, r in front]
    return sum(hit) / len(front)


def claim_pareto(groups, tasks, methods, curves, rows):
    lines, verdicts = [], {}
    lines += ["| task | method | final KL | final reward | front points | share dominated by the others' fronts |",
              "|---|---|---|---|---|---|"]
    shares, kls, rewards = {}, {}, {}
    for task in tasks:
        fronts = {m: pareto_front([(p["kl"][0], p["reward"][0]) for p in curves.get((task, m), [])]) for m in methods}
        for m in methods:
            row = next((r for r in rows if r["task"] == task and r["method"] == m), None)
            if not row or row["final_kl_mean"] is None:
                continue
            rivals = [p for o in methods if o != m and o not in ([*STA, "sta_total_gn"] if m in STA else []) for p in fronts[o]]
            shares[(task, m)] = dominated_share(fronts[m], rivals)
            kls[(task, m)], rewards[(task, m)] = row["final_kl_mean"], row["final_reward_mean"]
            lines.append(f"| {task} | {name(m)} | {row['final_kl_mean']:.1f} ± {row['final_kl_std'] or 0:.1f} | "
                         f"{row['final_reward_mean']:.2f} | {len(fronts[m])} | "
                         + ("–" if shares[(task, m)] is None else f"{shares[(task, m)]:.2f}") + " |")
    lines.append("")
    for task in tasks:
        if not all((task, m) in shares for m in STA) or pending(groups, task, methods):
            verdicts[task] = "incomplete"
            continue
        others = [m for m in methods if m not in [*STA, "sta_total_gn"] and (task, m) in kls]
        if task in ("wc", "cwc"):
            each = [shares[(task, m)] >= 0.5 and all(kls[(task, m)] > kls[(task, o)] for o in others) for m in STA]
        else:
            each = [shares[(task, m)] < 0.5 and all(rewards[(task, m)] > rewards[(task, o)] for o in others) for m in STA]
        verdicts[task] = ("holds" if all(each) else "does not hold" if not any(each) else
                          f"holds for {name(STA[each.index(True)])} only")
        lines.append(f"Verdict on {task}: **{verdicts[task]}**.")
    lines.append("")
    return lines, verdicts


def claim_reversed(groups, tasks, methods):
    lines, verdicts = ["| task | Reversed's rank at the first evaluation (mean reward) | diverged seeds | drop from best to last "
                       "evaluation, Reversed − Naive STA (per seed) |", "|---|---|---|---|"], {}
    for task in tasks:
        runs = groups.get((task, "reversed"), {"runs": []})["runs"]
        if not runs or not finished(groups, task, "sta_naive"):
            verdicts[task] = "incomplete"
            continue
        first = {}
        for m in methods:
            at = [r["evals"][1]["reward"] for r in groups.get((task, m), {"runs": []})["runs"] if len(r["evals"]) > 1]
            if at:
                first[m] = statistics.mean(at)
        ranked = sorted(first, key=lambda m: -first[m])
        rank = ranked.index("reversed") + 1 if "reversed" in first else None
        competitive = rank is not None and rank <= max(1, len(ranked) // 2)
        diverged = [r["seed"] for r in runs if r["status"] == "diverged"]
        drop = lambda rs: {r["seed"]: max(e["reward"] for e in r["evals"]) - r["evals"][-1]["reward"] for r in rs if r["evals"]}
        difference = paired(drop([r for r in runs if r["status"] in ("finished", "diverged")]),
                            drop(finished(groups, task, "sta_naive")))
        unstable = bool(diverged) or difference["sign"] == 1
        if rank is None or (not diverged and difference["n"] < 2) or pending(groups, task, methods):
            verdicts[task] = "incomplete"
        else:
            verdicts[task] = ("holds" if competitive and unstable else
                              "does not hold" if not competitive or (not diverged and difference["mean"] <= 0) else "within noise")
        step = next((r["evals"][1]["iteration"] for r in runs if len(r["evals"]) > 1), None)
        where = "–" if rank is None else (f"{rank} of {len(ranked)} at iteration {step} ({first['reversed']:.2f}; best "
                                           f"{name(ranked[0])} {first[ranked[0]]:.2f})")
        lines.append(f"| {task} | {where} | {', '.join(map(str, diverged)) or 'none'} | {fmt_paired(difference)} |")
    lines += ["", *(f"Verdict on {t}: **{v}**." for t, v in verdicts.items()), ""]
    return lines, verdicts


def claim_total_vs_naive(groups, tasks):
    lines, verdicts = ["| task | Total − Naive final reward | Total-GN − Naive | Total − Naive final KL |", "|---|---|---|---|"], {}
    for task in tasks:
        naive = finals(groups, task, "sta_naive")
        total, gn = finals(groups, task, "sta_total"), finals(groups, task, "sta_total_gn")
        if not naive or not total:
            verdicts[task] = "incomplete"
            continue
        difference = paired(total, naive)
        verdicts[task] = ("incomplete" if difference["n"] < 2 or pending(groups, task, STA) else
                          "does not hold" if difference["sign"] == 1 else "holds")
        lines.append(f"| {task} | {fmt_paired(difference)} | {fmt_paired(paired(gn, naive))} | "
                     f"{fmt_paired(paired(finals(groups, task, 'sta_total', 'kl'), finals(groups, task, 'sta_naive', 'kl')))} |")
    lines += ["", *(f"Verdict on {t}: **{v}**." for t, v in verdicts.items()), ""]
    return lines, verdicts


def quarters(series):
    """(mean of the third quarter, mean of the last quarter, std within the last quarter) of {iteration: value}."""
    steps = sorted(series)
    if len(steps) < 8:
        return None
    last = steps[-1]
    third = [series[s] for s in steps if 0.5 * last < s <= 0.75 * last]
    fourth = [series[s] for s in steps if s > 0.75 * last]
    if not third or len(fourth) < 2:  # uneven steps
        return None
    return statistics.mean(third), statistics.mean(fourth), statistics.stdev(fourth)


def claim_convergence(groups, tasks):
    lines, verdicts = ["| task | series | last quarter − third quarter (per seed) | last quarter: mean, spread within |",
                       "|---|---|---|---|"], {}
    for task in tasks:
        runs = finished(groups, task, "sta_naive")
        if not runs:
            verdicts[task] = "incomplete"
            continue
        drifts = []
        for key in ("rm/loss", "rm/score_mean", "eval/reward"):
            got = {r["seed"]: quarters({e["iteration"]: e["reward"] for e in r["evals"]} if key == "eval/reward" else r["series"][key])
                   for r in runs}
            got = {s: q for s, q in got.items() if q}
            if not got:  # fewer than 8 points a run
                lines.append(f"| {task} | {key} | too few points to compare quarters | – |")
                continue
            difference = paired({s: q[1] for s, q in got.items()}, {s: q[0] for s, q in got.items()})
            if difference["n"] >= 2:
                drifts.append(difference["sign"])
            lines.append(f"| {task} | {key} | {fmt_paired(difference)} | "
                         f"{statistics.mean(q[1] for q in got.values()):.3f}, {statistics.mean(q[2] for q in got.values()):.3f} |")
        verdicts[task] = ("incomplete" if len(drifts) < 3 or pending(groups, task, ["sta_naive"]) else
                          "does not hold" if any(drifts) else "holds")
    lines += ["", *(f"Verdict on {t}: **{v}**." for t, v in verdicts.items()), ""]
    return lines, verdicts


def claim_cost(rows, cost):
    lines, verdicts = [], {}
    measured = {}  # source: {method: ratio}
    for task in dict.fromkeys(r["task"] for r in rows):
        ratios = {r["method"]: r["time_ratio_to_naive"] for r in rows if r["task"] == task and r["time_ratio_to_naive"]}
        if ratios:
            measured[f"grid, {task}, seconds per run"] = ratios
    if cost:
        measured["bench_cost, per B prompts (offline data apart)"] = {r["method"]: float(r["ratio_to_naive"]) for r in cost
                                                                       if r["ratio_to_naive"]}
    lines += ["| source | DPO | Total | Reversed | cheapest of the paper's methods |", "|---|---|---|---|---|"]
    paper_methods = set(PAPER_SECONDS["wc"])
    checks = {"dpo_cheapest": [], "total_range": [], "reversed_above": []}
    for source, ratios in measured.items():
        present = {m: v for m, v in ratios.items() if m in paper_methods}
        cheapest = min(present, key=present.get) if present else None
        if "dpo" in present:
            checks["dpo_cheapest"].append(cheapest == "dpo")
        if "sta_total" in ratios:
            checks["total_range"].append(2.6 <= ratios["sta_total"] <= 4.6)
        if "reversed" in ratios:
            checks["reversed_above"].append(ratios["reversed"] > 1)
        cell = lambda m: f"{ratios[m]:.2f}" if m in ratios else "–"
        lines.append(f"| {source} | {cell('dpo')} | {cell('sta_total')} | {cell('reversed')} | {name(cheapest) if cheapest else '–'} |")
    paper = lambda m: "–".join(f"{f(s[m] / s['sta_naive'] for s in PAPER_SECONDS.values()):.2f}" for f in (min, max))
    lines.append(f"| the paper's Table 1 (range over tasks) | {paper('dpo')} | {paper('sta_total')} | {paper('reversed')} | DPO |")
    for key, what in [("dpo_cheapest", "offline DPO is the cheapest"), ("total_range", "Total STA at 2.6-4.6× Naive"),
                      ("reversed_above", "Reversed above Naive")]:
        values = checks[key]
        verdicts[what] = ("incomplete" if not values else "holds" if all(values) else "does not hold" if not any(values)
                          else "sources disagree")
    lines += ["", *(f"{what}: **{v}**." for what, v in verdicts.items()), ""]
    return lines, verdicts


def spread(values, form=".2f"):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    return f"{statistics.mean(values):{form}}" + (f" ± {statistics.stdev(values):{form}}" if len(values) > 1 else "")


def part(series, lo, hi):
    """The mean of {iteration: value} over lo·T < iteration ≤ hi·T, T the run's last iteration (None if empty)."""
    if not series:
        return None
    last = max(series)
    values = [v for i, v in series.items() if lo * last < i <= hi * last]
    return statistics.mean(values) if values else None


def measurements(groups, tasks, methods):
    """Logged quantities that bear on the verdicts, no verdict of their own: whether each method is still improving
    over the second half of its run, how well each learned reward model ranks pairs it has not been trained on yet,
    the spread of the scores the policy follows and how far the policy has moved at the start, and how Total STA's
    solve of eq. 11 fares. Each cell is the per-seed mean (a median where stated) over the stated part of the run, then
    the mean ± std over seeds (finished runs). Parts are fractions of the run, so PARL's 20 outer iterations compare
    with the others' 100 at equal prompts."""
    half_lines = ["Every method's second half: evaluation reward and KL at the evaluation nearest the middle of the run and at "
                  "the end, and the gain between them (per seed, then mean ± std over seeds): a method that has stopped "
                  "improving shows a gain near 0.", "",
                  "| task | method | reward at half | final reward | gain over the second half | KL at half | final KL |",
                  "|---|---|---|---|---|---|---|"]
    lines = ["The reward model of each method that trains one. `rm/accuracy`: the fraction of the iteration's oracle pairs it "
             "ranks right before its first step on them. `rm/score_std`: the spread of the RM scores that weight the "
             "policy's update, which each method takes at a different point: Naive and Total STA from the RM after its S "
             "steps on those same pairs, Simultaneous and Reversed from the RM before its step, PARL from the frozen RM on "
             "all k samples of its last inner batch. `rm/loss`: its Bradley-Terry loss on the iteration's pairs after its "
             "steps on them (in sample). Evaluation KL at the first evaluation after iteration 0: how far the policy has "
             "moved by then. The first tenth of a run is its first 160 prompts.", "",
             "| task | method | RM held-out accuracy, first tenth | RM held-out accuracy, last half | RM loss after its steps, "
             "first tenth | RM score std, first tenth | RM score std, last half | evaluation KL at the first evaluation "
             "| final reward |", "|---|---|---|---|---|---|---|---|---|"]
    cg_lines = ["Total STA's solve of eq. 11 per iteration: conjugate-gradient steps (`cg/iterations`; Gauss-Newton solves "
                "directly), the share of iterations where CG stopped on non-positive curvature (`cg/breakdown`), the share "
                "where it returned u = 0 (`cg/returned_iterate` 0: that iteration's step is Naive STA's), the relative "
                "residual of the returned u (`cg/residual`), and the median over the run of the implicit part's norm over "
                "the naive gradient's.", "",
                "| task | method | CG steps, first tenth | CG steps, whole run | breakdown share | u = 0 share | relative residual "
                "| median ‖implicit‖ / ‖naive‖ |", "|---|---|---|---|---|---|---|---|"]
    for task in tasks:
        for m in methods:
            runs = finished(groups, task, m)
            if runs and all(len(r["evals"]) > 2 for r in runs):
                middle = [min(r["evals"], key=lambda e: abs(e["iteration"] - r["evals"][-1]["iteration"] / 2)) for r in runs]
                ends = [r["evals"][-1] for r in runs]
                half_lines.append(f"| {task} | {name(m)} | {spread([e['reward'] for e in middle])} | "
                                  f"{spread([e['reward'] for e in ends])} | "
                                  f"{spread([b['reward'] - a['reward'] for a, b in zip(middle, ends)])} | "
                                  f"{spread([e['kl'] for e in middle], '.1f')} | {spread([e['kl'] for e in ends], '.1f')} |")
            if runs and any(r["series"].get("rm/accuracy") for r in runs):
                per = lambda key, lo, hi: [part(r["series"].get(key), lo, hi) for r in runs]
                first_kl = [next((e["kl"] for e in r["evals"] if e["iteration"] > 0), None) for r in runs]
                lines.append(f"| {task} | {name(m)} | {spread(per('rm/accuracy', 0, 0.1))} | {spread(per('rm/accuracy', 0.5, 1))} "
                             f"| {spread(per('rm/loss', 0, 0.1))} | {spread(per('rm/score_std', 0, 0.1))} | {spread(per('rm/score_std', 0.5, 1))} | {spread(first_kl)} | "
                             f"{spread([r['evals'][-1]['reward'] for r in runs])} |")
            if runs and any(r["series"].get("cg/residual") for r in runs):
                per = lambda key, hi=1: [part(r["series"].get(key), 0, hi) for r in runs]
                ratio = [statistics.median(v / r["series"]["policy/naive_grad_norm"][i]
                                           for i, v in r["series"]["policy/implicit_grad_norm"].items()
                                           if r["series"]["policy/naive_grad_norm"].get(i)) for r in runs
                         if any(r["series"]["policy/naive_grad_norm"].get(i) for i in r["series"]["policy/implicit_grad_norm"])]
                zero = [part({i: float(v == 0) for i, v in r["series"].get("cg/returned_iterate", {}).items()}, 0, 1) for r in runs]
                cells = (["direct", "direct", "–", "–", spread(per("cg/residual"), ".1e")] if m == "sta_total_gn" else
                         [spread(per("cg/iterations", 0.1)), spread(per("cg/iterations")), spread(per("cg/breakdown")),
                          spread(zero), spread(per("cg/residual"))])
                cg_lines.append(f"| {task} | {name(m)} | " + " | ".join(cells) + f" | {spread(ratio)} |")
    return half_lines + [""] + lines + [""] + cg_lines + [""]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, help="a folder of runs (tools/grid.py's --output-dir)")
    parser.add_argument("--cost", type=Path, help="tools/bench_cost.py's cost.csv, for claim 6")
    parser.add_argument("--out", type=Path, help="write claims.md here (default: print it)")
    cli = parser.parse_args(argv)
    if not cli.runs.is_dir():
        parser.error(f"{cli.runs}: not a folder of runs")
    groups = load(cli.runs)
    rows, curves = summarise(groups, None)
    tasks, methods = tasks_and_methods(groups)
    cost = None
    if cli.cost:
        with open(cli.cost, newline="") as f:
            cost = list(csv.DictReader(f))
    sections = [
        ("1. Both STA variants reach a higher final reward than every other method, per task", claim_final_reward(groups, tasks, methods)),
        ("2. wc, cwc: the STA methods are Pareto-dominated; un: a similar front at a higher reward", claim_pareto(groups, tasks, methods, curves, rows)),
        ("3. Reversed starts off competitive but becomes unstable", claim_reversed(groups, tasks, methods)),
        ("4. Total STA does not clearly beat Naive STA", claim_total_vs_naive(groups, tasks)),
        ("5. Naive STA's reward model and policy converge", claim_convergence(groups, tasks)),
        ("6. Table 1's cost order", claim_cost(rows, cost)),
    ]
    n = max((len(g["runs"]) for g in groups.values()), default=0)
    text = ["# The paper's claims at this scale", "",
            f"From `{cli.runs}` by `python tools/claims.py {' '.join(sys.argv[1:] if argv is None else argv)}`. Paired "
            f"differences are `mean ± std (favourable seeds/n, t)`, `*` where |t| exceeds the two-sided 95% point of "
            f"Student's t (n − 1 degrees of freedom; 2.78 at n = 5). Rules: the docstring of tools/claims.py.", "",
            "| claim | verdict |", "|---|---|"]
    for title, (_, verdicts) in sections:
        text.append(f"| {title} | " + "; ".join(f"{k}: {v}" for k, v in verdicts.items()) + " |")
    text.append("")
    for title, (lines, _) in sections:
        text += [f"## {title}", "", *lines]
    text += ["## Measurements behind the verdicts", "", *measurements(groups, tasks, methods)]
    out = "\n".join(text)
    if cli.out:
        cli.out.mkdir(parents=True, exist_ok=True)
        (cli.out / "claims.md").write_text(out)
        print(f"wrote {cli.out / 'claims.md'} ({n} seeds at most per method)")
    else:
        print(out)


if __name__ == "__main__":
    main()
