"""The paper's claims, checked against a folder of runs (issue 18): each marked holds, does not hold or within noise,
with the evidence, by the rules stated below and in claims.md.

    python tools/claims.py results/laptop/runs --cost results/cost/laptop/cost.csv --out results/laptop

Reads the runs as tools/results.py does (config.json and metrics.csv; finished runs, one per seed; diverged runs
counted apart). Comparisons between two methods are paired by seed, on the seeds both finished: the per-seed
differences, their mean ± standard deviation, how many favour the first method, the paired t statistic and its
two-sided p (Student's t with n − 1 degrees of freedom, its CDF computed here through the incomplete beta function).
The comparisons that decide a claim on a task form its family, and Holm's method adjusts their p values within it
(family-wise error 0.05); a difference is significant when its adjusted p is below 0.05. Five seeds detect only large
effects, so "within noise" means "not shown either way", and a claim of no difference (4) or no drift (5) that stands
only because nothing was significant is "not contradicted", never "holds". A claim is "incomplete" on a task while a
method it needs has no runs or unfinished ones (running, interrupted, failed, killed while writing), or fewer than two
seeds to pair. Diverged runs (a method's outcome) are named beside the comparisons they cannot enter.

Readings. Final reward: each run's last evaluation. Equal KL: each run's reward at its pair's KL budget, the smaller of
the two methods' final KLs (each the mean over seeds of the last evaluation's KL), read off the run's upper reward-KL
envelope (results.reward_at_kl: its evaluations, iteration 0 at KL 0 included, joined in order by straight lines, the
highest reward that path reaches at KL ≤ budget; a run that never reaches the budget scores its best evaluation). A
budget below a run's first evaluation after iteration 0 reads it on the straight line from iteration 0 to that
evaluation: an interpolation across the stretch where the run moves fastest, not a measurement, and not a bound either
way (runs evaluated there with --eval-first lie below that line as well as above it). Each equal-KL cell counts such
runs per method ("below the first evaluation: Naive STA 5/5"), and a significant difference with such runs on either
side is no finding: it enters the verdicts as not significant. Claim 1's verdict is "open (interpolated)" where it
would be within noise and such a comparison is among the reasons.

1. Both STA variants reach a higher final reward than every other method, per task (§6, Figure 1), under both
   readings (the paper's is final reward), each a family of 2 × (other methods) comparisons per task (Total-GN's
   column is a family of its own and decides nothing): holds on a task if both beat every other method
   significantly, does not hold if another method beats one of them significantly, within noise otherwise.
2. On wc and cwc the STA methods are Pareto-dominated (further from π_ref); on un their front is similar to the
   others' at a higher reward (§6). The fronts are results.py's (KL and reward averaged over seeds at each evaluation).
   wc, cwc: holds if at least half of each STA variant's front points are weakly dominated by another method's front
   point and its final KL is significantly above every other method's (paired over seeds, one Holm family of the
   2 × others KL comparisons per task); within noise if no KL comparison goes the other way but some are not
   significant; un: if fewer than half of its front's points are
   dominated and its final mean reward is above every other method's. Holds if so for both variants, does not hold if
   for neither, "holds for X only" otherwise (Pareto fronts are of means: there is no per-seed test here).
3. Reversed starts off competitive but becomes unstable (Figure 1's caption): competitive = its mean reward at the
   first evaluation after iteration 0 ranks in the upper half of the methods (rank ≤ n/2); unstable = a diverged seed, or a drop
   from its best evaluation to its last larger than Naive STA's, significantly (paired). Holds if both, does not
   hold if it is not competitive or its drop is not larger at all, within noise otherwise.
4. Total STA does not clearly beat Naive STA (§6), under both readings, one comparison each per task: does not hold
   if Total − Naive is significantly positive, holds if significantly negative, not contradicted otherwise.
5. Naive STA's reward model and policy converge (Figures 2-3, Appendix): per seed, the mean of rm/loss, rm/score_mean
   (per iteration) and eval/reward over the last quarter of the run minus the mean over the third quarter, the three
   series one Holm family per task: not contradicted if no series drifts significantly, does not hold otherwise. The spread within the last quarter is reported
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
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import (NAMES, PAPER_SECONDS, TASK_NAMES, below_first_evaluation, fail, load_folders,  # noqa: E402
                     pareto_front, reward_at_kl, sources, summarise)

STA = ["sta_naive", "sta_total"]
ALPHA = 0.05  # family-wise error rate of each family of comparisons (Holm)


def incomplete_beta(a, b, x):
    """The regularized incomplete beta function I_x(a, b), by its continued fraction (Numerical Recipes' betacf, modified
    Lentz): scipy is not a dependency."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast below this point: use the symmetry I_x(a,b) = 1 − I_1−x(b,a)
        return 1.0 - incomplete_beta(b, a, 1.0 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1 - x)) / a
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-14:
            break
    return front * h


def t_p_value(t, df):
    """Two-sided p of Student's t with df degrees of freedom: P(|T| ≥ |t|) = I_{df/(df+t²)}(df/2, 1/2)."""
    if math.isinf(t):
        return 0.0
    return incomplete_beta(df / 2, 0.5, df / (df + t * t))


def paired(a, b):
    """Per-seed differences a − b over the seeds both have ({seed: value} each), the paired t statistic and its two-sided
    p (raw; holm() adjusts it within a family and sets significant and sign from the adjusted p)."""
    seeds = sorted(s for s in set(a) & set(b) if a[s] is not None and b[s] is not None)
    diffs = [a[s] - b[s] for s in seeds]
    n = len(diffs)
    mean = statistics.mean(diffs) if diffs else None
    std = statistics.stdev(diffs) if n > 1 else None
    t = mean / (std / n**0.5) if std else (None if n < 2 else (0.0 if mean == 0 else float("inf") * (1 if mean > 0 else -1)))
    p = None if t is None else t_p_value(t, n - 1)
    significant = p is not None and p < ALPHA
    return {"seeds": seeds, "diffs": diffs, "n": n, "mean": mean, "std": std, "t": t, "wins": sum(d > 0 for d in diffs),
            "p": p, "p_holm": p, "significant": significant, "sign": 0 if not significant else (1 if mean > 0 else -1)}


def holm(family):
    """Holm's step-down correction within a family of paired comparisons: the k-th smallest of m raw p values is
    multiplied by m − k + 1, the products made non-decreasing and capped at 1; a comparison is significant when its
    adjusted p is below ALPHA. Sets p_holm, significant and sign in place; returns the family. An equal-KL comparison
    with runs read below their first evaluation (an interpolation, not a measurement) decides nothing: sign 0."""
    tested = sorted((c for c in family if c["p"] is not None), key=lambda c: c["p"])
    running = 0.0
    for k, c in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - k) * c["p"]))
        c["p_holm"], c["significant"] = running, running < ALPHA
        c["sign"] = 0 if not c["significant"] else (1 if c["mean"] > 0 else -1)
        if c["sign"] and any(below for below, _ in c.get("below_first", {}).values()):  # {a: (runs below, runs), b: ...}
            c["sign"], c["interpolated"] = 0, True
    return family


def fmt_p(p):
    return "–" if p is None else f"{p:.3f}" if p >= 0.001 else f"{p:.0e}"


def fmt_paired(p):
    if not p["n"]:
        return "–"
    std = f" ± {p['std']:.2f}" if p["std"] is not None else ""
    t = "" if p["t"] is None else (f", t {p['t']:+.1f}, p {fmt_p(p['p'])}, Holm {fmt_p(p['p_holm'])}"
                                   + ("*" if p["significant"] else ""))
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


def at_equal_kl(groups, task, a, b):
    """Per-seed rewards of methods a and b at their pair's KL budget, the smaller of their final KLs (each the mean over
    seeds of the final evaluation's KL), read off each run's upper reward-KL envelope (results.reward_at_kl); and that
    budget."""
    budget = min(statistics.mean(finals(groups, task, m, "kl").values()) for m in (a, b))
    read = lambda m: {r["seed"]: reward_at_kl(r["evals"], budget) for r in finished(groups, task, m)}
    return read(a), read(b), budget


def compare(groups, task, a, b, reading):
    """The paired comparison of a − b under a reading: "final reward", "equal KL" (at the pair's budget) or "final KL";
    the equal-KL one carries its budget and, per method, how many of its runs are read below their first evaluation."""
    if reading == "equal KL":
        ra, rb, budget = at_equal_kl(groups, task, a, b)
        line = {m: (sum(below_first_evaluation(r, budget) for r in finished(groups, task, m)), len(finished(groups, task, m)))
                for m in (a, b)}
        return {**paired(ra, rb), "budget": budget, "below_first": line}
    key = "kl" if reading == "final KL" else "reward"
    return paired(finals(groups, task, a, key), finals(groups, task, b, key))


def cell(c):
    if c.get("budget") is None or not c["n"]:
        return fmt_paired(c)
    below = [f"{name(m)} {k}/{n}" for m, (k, n) in c["below_first"].items() if k]
    caveat = "; significant only on the interpolation: no finding" if c.get("interpolated") else ""
    return (fmt_paired(c) + f" at KL {c['budget']:.1f}" +
            (f" (below the first evaluation: {', '.join(below)}{caveat})" if below else ""))


def claim_final_reward(groups, tasks, methods):
    """Claim 1 under two readings, each its own family per task (the 2 × others comparisons of Naive and Total STA
    against every other method; Total-GN's column is shown as a family of its own and enters no verdict)."""
    lines, verdicts = [], {}
    for task in tasks:
        rivals = [m for m in methods if m not in STA and m != "sta_total_gn"]
        others = [m for m in rivals if finals(groups, task, m)]
        columns = [m for m in [*STA, "sta_total_gn"] if finals(groups, task, m)]
        if not columns or not others:
            for reading in ("final reward", "equal KL"):
                verdicts[f"{task} ({reading})"] = "incomplete"
            lines += [f"**{task}**: no finished runs to compare yet.", ""]
            continue
        for reading in ("final reward", "equal KL"):
            cells = {(m, o): compare(groups, task, m, o, reading) for o in others for m in columns}
            holm([c for (m, _), c in cells.items() if m in STA])
            holm([c for (m, _), c in cells.items() if m not in STA])
            what = ("final reward, mean over seeds: " if reading == "final reward" else
                    "reward at equal KL, per pair at the smaller of the two methods' mean final KLs; final KL, mean over seeds: ")
            key = "reward" if reading == "final reward" else "kl"
            lines += [f"**{task}, {reading}** ({what}"
                      + ", ".join(f"{name(m)} {statistics.mean(finals(groups, task, m, key).values()):.2f}" for m in [*columns, *others]) + ")",
                      "", "| other method | " + " | ".join(f"{name(m)} − other" for m in columns) + " |", "|---" * (len(columns) + 1) + "|"]
            for other in others:
                lines.append(f"| {name(other)} | " + " | ".join(cell(cells[(m, other)]) for m in columns) + " |")
            signs = [c["sign"] for (m, _), c in cells.items() if m in STA]
            verdict = ("incomplete" if pending(groups, task, [*STA, *rivals]) else "does not hold" if -1 in signs else
                       "holds" if all(s == 1 for s in signs) else "within noise")
            if verdict == "within noise" and any(c.get("interpolated") for (m, _), c in cells.items() if m in STA):
                verdict = "open (interpolated)"  # a difference seen only where runs have no evaluation
            verdicts[f"{task} ({reading})"] = verdict
            lines += ["", f"Verdict on {task}, {reading}: **{verdict}** ({len(signs)} comparisons in the family).", ""]
        lines += [line for line in [left_out(groups, task, [*columns, *rivals])] if line]
        lines.append("")
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
            # "further from π_ref": final KL, STA − other, paired over seeds; one Holm family per task
            tests = {(m, o): compare(groups, task, m, o, "final KL") for m in STA for o in others}
            holm(list(tests.values()))
            lines += [f"**{task}**, final KL, STA − other (paired):", "",
                      "| other method | " + " | ".join(f"{name(m)} − other" for m in STA) + " |", "|---|---|---|"]
            lines += [f"| {name(o)} | " + " | ".join(fmt_paired(tests[(m, o)]) for m in STA) + " |" for o in others]
            each = []
            for m in STA:
                signs = [tests[(m, o)]["sign"] for o in others]
                # True: dominated and significantly further than every other; False: not dominated, or some other
                # method significantly further; None: within noise
                each.append(False if shares[(task, m)] < 0.5 or -1 in signs else
                            True if signs and all(s == 1 for s in signs) else None)
            lines.append("")
        else:
            each = [shares[(task, m)] < 0.5 and all(rewards[(task, m)] > rewards[(task, o)] for o in others) for m in STA]
        verdicts[task] = ("holds" if all(e is True for e in each) else "does not hold" if all(e is False for e in each) else
                          f"holds for {name(STA[each.index(True)])} only" if True in each and None not in each else
                          "within noise")
        lines += [f"Verdict on {task}: **{verdicts[task]}**.", ""]
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
    """Claim 4 under two readings, each one comparison per task (Holm over a family of one is the raw p): holds if
    Total − Naive is significantly negative, does not hold if significantly positive, not contradicted otherwise (no
    difference shown either way: the claim stands through absence of evidence)."""
    lines, verdicts = ["| task | Total − Naive final reward | Total − Naive reward at equal KL | Total-GN − Naive final reward "
                       "| Total − Naive final KL |", "|---|---|---|---|---|"], {}
    for task in tasks:
        if not finals(groups, task, "sta_naive") or not finals(groups, task, "sta_total"):
            verdicts[f"{task} (final reward)"] = verdicts[f"{task} (equal KL)"] = "incomplete"
            continue
        tests = {reading: holm([compare(groups, task, "sta_total", "sta_naive", reading)])[0]
                 for reading in ("final reward", "equal KL", "final KL")}
        for reading in ("final reward", "equal KL"):
            difference = tests[reading]
            verdicts[f"{task} ({reading})"] = ("incomplete" if difference["n"] < 2 or pending(groups, task, STA) else
                                               "does not hold" if difference["sign"] == 1 else
                                               "holds" if difference["sign"] == -1 else "not contradicted")
        gn = (compare(groups, task, "sta_total_gn", "sta_naive", "final reward") if finals(groups, task, "sta_total_gn")
              else paired({}, {}))
        lines.append(f"| {task} | {fmt_paired(tests['final reward'])} | {cell(tests['equal KL'])} | {fmt_paired(gn)} | "
                     f"{fmt_paired(tests['final KL'])} |")
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
        family, rows = [], []
        for key in ("rm/loss", "rm/score_mean", "eval/reward"):
            got = {r["seed"]: quarters({e["iteration"]: e["reward"] for e in r["evals"]} if key == "eval/reward" else r["series"][key])
                   for r in runs}
            got = {s: q for s, q in got.items() if q}
            if not got:  # fewer than 8 points a run
                lines.append(f"| {task} | {key} | too few points to compare quarters | – |")
                continue
            difference = paired({s: q[1] for s, q in got.items()}, {s: q[0] for s, q in got.items()})
            family.append(difference)
            rows.append((key, difference, got))
        holm(family)  # the three series of a task are one family
        for key, difference, got in rows:
            lines.append(f"| {task} | {key} | {fmt_paired(difference)} | "
                         f"{statistics.mean(q[1] for q in got.values()):.3f}, {statistics.mean(q[2] for q in got.values()):.3f} |")
        drifts = [d["sign"] for d in family if d["n"] >= 2]
        # no drift shown is absence of evidence at this number of seeds: "not contradicted", never "holds"
        verdicts[task] = ("incomplete" if len(drifts) < 3 or pending(groups, task, ["sta_naive"]) else
                          "does not hold" if any(drifts) else "not contradicted")
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
    parser.add_argument("runs", type=Path, nargs="+", help="folder(s) of runs (tools/grid.py's --output-dir); with "
                        "several, a later folder's runs of a method on a task replace an earlier one's")
    parser.add_argument("--cost", type=Path, help="tools/bench_cost.py's cost.csv, for claim 6")
    parser.add_argument("--out", type=Path, help="write claims.md here (default: print it)")
    cli = parser.parse_args(argv)
    for root in cli.runs:
        if not root.is_dir():
            fail(f"{root} is not a folder of runs")
    groups = load_folders(cli.runs)
    if not groups:
        fail(f"no run directories (with config.json) under {' '.join(map(str, cli.runs))}")
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
            f"{sources(cli.runs, groups)} by `python tools/claims.py {' '.join(sys.argv[1:] if argv is None else argv)}`. Paired "
            f"differences are `mean ± std (favourable seeds/n, t, p, Holm)`: p the two-sided p of the paired t test "
            f"(n − 1 degrees of freedom), Holm the p adjusted by Holm's method within the claim's family of "
            f"comparisons on that task, `*` where the adjusted p is below {ALPHA}. Readings: final reward (the last "
            f"evaluation) and equal KL (per seed, each run's reward-KL path over its evaluations, iteration 0 at KL 0 "
            f"included, read at the pair's KL budget, the smaller of the two methods' mean final KLs; a run that never "
            f"reaches it scores its best evaluation). Verdicts: holds, does not hold, within noise (no significant "
            f"difference either way where the claim needs one), not contradicted (a claim of no difference or no "
            f"drift that stands only because none was significant), open (interpolated) (an equal-KL verdict that runs read "
            f"below their first evaluation, on a straight line from iteration 0, keep from being settled). Rules: the "
            f"docstring of tools/claims.py.", "",
            "| claim | verdict |", "|---|---|"]
    for title, (_, verdicts) in sections:
        text.append(f"| {title} | " + "; ".join(f"{k}: {v}" for k, v in verdicts.items()) + " |")
    text.append("")
    readings = [  # what each claim is read on, in the order of the sections
        "Readings: final reward (the paper's) and reward at equal KL, each a Holm family of the 2 × (other methods) "
        "comparisons of Naive and Total STA per task.",
        "Reading: wc and cwc, Pareto fronts of the seed-averaged curves and final KL, STA − other, paired over seeds (a Holm "
        "family of the 2 × others comparisons per task); un, the fronts and final mean reward (no per-seed test).",
        "Reading: reward at the first evaluation (mean over seeds) and the drop from the best evaluation to the last, "
        "Reversed − Naive STA, paired (one comparison per task).",
        "Readings: final reward and reward at equal KL, Total − Naive, paired (one comparison each per task).",
        "Reading: the drift of rm/loss, rm/score_mean and eval/reward from the third quarter of the run to the last, "
        "paired per seed (a Holm family of the three series per task).",
        "Reading: seconds per run of the grid and, with --cost, the quiet benchmark's per-iteration ratios (no test).",
    ]
    for (title, (lines, _)), reading in zip(sections, readings):
        text += [f"## {title}", "", reading, "", *lines]
    text += ["## Measurements behind the verdicts", "", *measurements(groups, tasks, methods)]
    out = "\n".join(text)
    if cli.out:
        cli.out.mkdir(parents=True, exist_ok=True)
        (cli.out / "claims.md").write_text(out)
        print(f"wrote {cli.out / 'claims.md'} ({n} seeds at most per method)")
    else:
        print(out)


if __name__ == "__main__":
    import quiet_pipe  # noqa: F401,E402  (`python tools/X.py | head` ends without a BrokenPipeError traceback)

    main()
