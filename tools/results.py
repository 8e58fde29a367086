"""The paper's figures and tables from a folder of runs, from each run's config.json and metrics.csv alone (issue 17).

    python tools/results.py runs --out results                 # after `python tools/grid.py ...`
    python tools/results.py runs --out results --kl-budget 20  # compare the Pareto fronts at KL ≤ 20

Writes to --out:
- figure1_reward.png: per task, evaluation reward against prompts seen (D18), mean and ± std band over seeds, one
  line per method (the paper's Figure 1; its STA lines are red and black, as here);
- figure1_reward_pairs.png: the same against preference pairs queried from the oracle, the paper's "size of the
  preference data set" (they differ for PARL, whose inner batches are never ranked; methods that query no pairs are
  left out);
- figure1_pareto.png: per task the KL-reward Pareto front of each method as the paper's §6 computes it: at each
  evaluation step the KL and reward averaged over the seeds, then the points that another weakly dominates dropped;
- equal_kl.png: per task, the reward at equal KL against the KL budget (reward_at_kl: per seed, the highest reward
  the run's reward-KL path over its evaluations reaches within the budget), mean ± std over seeds, one line per method,
  dashed where some run is read below its first evaluation (on the straight line from iteration 0: an interpolation);
- figure2_convergence.png: Naive and Total STA's (and Total-GN's) reward-model loss (rm/loss) and the RM reward the policy receives
  (rm/score_mean) per iteration, mean over seeds, with their cumulative averages (the paper's Figures 2 and 3);
- results.md and results.csv: per task and method the final evaluation reward and KL (mean ± std over seeds, and n),
  the reward at the KL budget (reward_at_kl per seed, then mean ± std) and the best reward on the Pareto front within
  it, seconds per iteration and per run, prompts seen, pairs
  queried and kept, and the measured time of each method relative to Naive STA beside the paper's Table 1.

The KL budget of a task, unless --kl-budget gives one: the smallest final mean KL among Naive STA, Total STA and
iterated DPO (the methods of the claims; docs/reproducing.md's tuning protocol sets its budget the same way), so that
each of them is read where it has evaluations; the smallest over all methods (DRO-V's 7-10 nats at laptop scale) would
read every STA run at iteration 0. Without any of the three, the smallest final mean KL of the task.

Only finished runs are averaged. Diverged runs (a method's outcome: kept out of the averages, listed apart),
unfinished ones (running, interrupted, failed, or killed while writing: a cut last metrics.csv row or an unreadable
config.json) and missing seeds are listed in each row. Runs of one task and method whose arguments differ in
anything but the seed and run plumbing (say laptop and paper scale in one folder) are never averaged together: the
set of arguments with the most finished runs is used and the others are listed as excluded. Run directories that
tools/grid.py moved aside (NAME.old-<n>) are ignored. matplotlib is optional: without it the tables are still written.
"""

import argparse
import csv
import io
import json
import math
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

NAMES = {"sta_naive": "Naive STA", "sta_total": "Total STA", "sta_total_gn": "Total STA (Gauss-Newton)",
         "simultaneous": "Simultaneous", "reversed": "Reversed", "parl": "PARL", "ppo": "PPO", "dpo": "DPO",
         "iterated_dpo": "Iterated DPO", "dro_v": "DRO-V"}
# the two STA methods in the paper's red and black; the others in matplotlib's default cycle
COLOURS = {"sta_total": "tab:red", "sta_naive": "black", "sta_total_gn": "darkred", "simultaneous": "tab:blue",
           "reversed": "tab:orange", "parl": "tab:green", "ppo": "tab:purple", "dpo": "tab:brown",
           "iterated_dpo": "tab:pink", "dro_v": "tab:olive"}
TASK_NAMES = {"wc": "Word collector (wc)", "cwc": "Constrained word collector (cwc)", "un": "Unique nouns (un)"}
# The paper's Appendix B, Table 1: "average running time in seconds of each method on the various tasks, averaged
# across seeds", one run of T = 1000 iterations (B = 16) on a GeForce 3090 or equivalent (§6). Its DPO is read as
# offline DPO. Its CWC row gives Simul. and PARL the same 1340.522 s.
PAPER_SECONDS = {
    "wc": {"sta_total": 11040.50, "sta_naive": 2558.152, "ppo": 3489.175, "dpo": 1143.555, "simultaneous": 2130.730,
           "reversed": 4102.406, "parl": 1847.278},
    "cwc": {"sta_total": 11043.6, "sta_naive": 2399.765, "ppo": 2004.738, "dpo": 652.607, "simultaneous": 1340.522,
            "reversed": 3130.647, "parl": 1340.522},
    "un": {"sta_total": 8220.03, "sta_naive": 3130.627, "ppo": 2133.094, "dpo": 654.742, "simultaneous": 2050.985,
           "reversed": 3370.721, "parl": 1527.929},
}
# arguments that may differ between runs that are averaged together
# the methods of the paper's claims whose smallest final mean KL is a task's default KL budget (docs/reproducing.md's
# tuning protocol sets its budget the same way)
BUDGET_METHODS = ("sta_naive", "sta_total", "iterated_dpo")
# arguments that never change a training step, so runs that differ only in them are averaged together (eval_first:
# extra early evaluations, whose generator is their own; runs from before it have no such key)
FREE_ARGS = {"seed", "run_name", "output_dir", "resume", "device", "save_every", "track", "wandb_project",
             "wandb_entity", "tensorboard", "eval_first"}
# per-iteration columns kept from metrics.csv: Figure 2's, and those tools/claims.py's measurements read
SERIES = ("rm/loss", "rm/score_mean", "rm/score_std", "rm/accuracy", "cg/iterations", "cg/returned_iterate",
          "cg/breakdown", "cg/residual", "policy/naive_grad_norm", "policy/implicit_grad_norm")
COLUMNS = ["task", "method", "n", "seeds", "final_reward_mean", "final_reward_std", "final_kl_mean", "final_kl_std",
           "kl_budget", "pareto_best_reward", "pareto_best_kl", "equal_kl_reward_mean", "equal_kl_reward_std",
           "s_per_iteration_mean", "s_per_iteration_std",
           "s_per_run_mean", "s_per_run_std", "time_ratio_to_naive", "paper_s_per_run", "paper_ratio_to_naive",
           "prompts_seen", "pairs_queried", "pairs_kept", "diverged", "unfinished", "missing", "excluded"]


def fail(message):
    """Bad input: one line on stderr, exit 2, nothing written (common.fail's convention)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def number(row, *keys):
    """The first of these columns that holds a number, as a float; None if none does."""
    for key in keys:
        if row.get(key) not in (None, ""):
            return float(row[key])
    return None


def mean_std(values):
    """(mean, sample standard deviation over seeds, n − 1) of the values that are not None; std None when n < 2."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None


def pareto_front(points):
    """Points (kl, reward) that no other point weakly dominates (KL no larger and reward no smaller), sorted by KL;
    duplicates are kept once."""
    front, best = [], -math.inf
    for kl, reward in sorted(set(points), key=lambda p: (p[0], -p[1])):  # by KL: a point must beat every reward before
        if reward > best:
            front.append((kl, reward))
            best = reward
    return front


def reward_at_kl(evals, budget):
    """A run's reward at a KL budget, read off its upper reward-KL envelope (the tuning protocol of docs/reproducing.md):
    the evaluations (dicts with "kl" and "reward", in order, iteration 0 at KL 0 included) joined in order by straight
    lines, and the highest reward that path reaches at KL ≤ budget. A run that never reaches the budget scores its best
    evaluation reward; nothing is extrapolated. None if the path never comes within the budget."""
    points = [(e["kl"], e["reward"]) for e in evals if e["kl"] is not None and e["reward"] is not None]
    reached = [r for k, r in points if k <= budget]  # the path's corners within the budget
    for (k0, r0), (k1, r1) in zip(points, points[1:]):  # a segment that crosses the budget: its point at KL = budget
        if min(k0, k1) < budget < max(k0, k1):
            reached.append(r0 + (r1 - r0) * (budget - k0) / (k1 - k0))
    return max(reached) if reached else None


def below_first_evaluation(run, budget):
    """Whether a run's reward at the budget is read on the straight line from iteration 0 to its first evaluation (the
    budget below that evaluation's KL): an interpolation across its fastest-moving stretch, not a measurement."""
    later = [e for e in run["evals"] if e["iteration"] > 0 and e["kl"] is not None]
    return bool(later) and budget < later[0]["kl"]


def method_of(config):
    """The grid's method name of a run: dpo.py --online is iterated DPO, sta_total.py --curvature gauss-newton is
    sta_total_gn (tools/grid.py's METHODS)."""
    algo, args = config["algo"], config.get("args", {})
    if algo == "dpo" and args.get("online"):
        return "iterated_dpo"
    if algo == "sta_total" and args.get("curvature") == "gauss-newton":
        return "sta_total_gn"
    return algo


def read_run(run_dir):
    """A run's config and metrics, reduced to what the figures and tables need."""
    config = json.loads((run_dir / "config.json").read_text(errors="replace"))
    rows, cut = [], False
    if (run_dir / "metrics.csv").exists():
        text = (run_dir / "metrics.csv").read_text(errors="replace")
        if text and not text.endswith("\n"):  # a process killed mid-write: its last row is cut, drop it
            text, cut = text[:text.rfind("\n") + 1], True
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
    status = config.get("status")
    if cut:  # the run was stopped while writing, whatever config.json last said
        status = "cut off (last metrics.csv row cut)"
    if status is None:  # runs written before config.json had a status
        status = "finished" if (run_dir / "policy").is_dir() else "running"
        log = run_dir / "run.log"
        if status == "running" and log.exists() and "diverged at iteration" in log.read_text(errors="replace")[-4000:]:
            status = "diverged"
    evals = [{"iteration": int(r["iteration"]), "prompts": number(r, "prompts_seen"),
              "pairs": number(r, "pairs_queried", "oracle_pairs"), "kl": number(r, "eval/kl"),
              "reward": number(r, "eval/reward")} for r in rows if r.get("eval/reward")]
    # seconds per iteration: the median step between consecutive rows, evaluations (slower) left out
    steps = [number(b, "wall_time") - number(a, "wall_time") for a, b in zip(rows, rows[1:])
             if not b.get("eval/reward") and number(a, "wall_time") is not None and number(b, "wall_time") is not None]
    last = rows[-1] if rows else {}
    return {
        "dir": run_dir, "task": config["args"]["task"], "method": method_of(config), "seed": config["args"]["seed"],
        "args": {k: v for k, v in config["args"].items() if k not in FREE_ARGS}, "status": status, "evals": evals,
        "iteration": int(last["iteration"]) if last else None,
        "s_per_iteration": statistics.median(steps) if steps else None, "s_per_run": number(last, "wall_time"),
        "prompts": number(last, "prompts_seen"), "pairs": number(last, "pairs_queried", "oracle_pairs"),
        "kept": number(last, "pairs_kept"),
        "series": {key: {int(r["iteration"]): float(r[key]) for r in rows if r.get(key)} for key in SERIES},
        "history": config.get("history", []),
    }


def load(root):
    """{(task, method): group} for every run directory under root; a group holds the runs that are averaged (one per
    seed) and notes on the runs that are not."""
    runs = []
    for d in sorted(Path(root).iterdir()):
        if (d / "config.json").is_file() and not re.search(r"\.old-\d+$", d.name):
            try:
                runs.append(read_run(d))
            except (ValueError, KeyError, TypeError, AttributeError) as e:  # a config.json cut short, or not a run
                # a run killed while writing config.json: listed as unfinished under its grid name task__method__seed
                parts = d.name.split("__")
                print(f"{d}: unreadable config.json or metrics.csv ({type(e).__name__}: {e}); listed as unfinished",
                      file=sys.stderr)
                if len(parts) == 3 and parts[2].isdigit():
                    runs.append({"dir": d, "task": parts[0], "method": parts[1], "seed": int(parts[2]), "args": None,
                                 "status": "unreadable (config.json or metrics.csv)", "evals": [], "iteration": None,
                                 "s_per_iteration": None, "s_per_run": None, "prompts": None, "pairs": None,
                                 "kept": None, "series": {key: {} for key in SERIES}, "history": []})
    by_key = defaultdict(list)
    for run in runs:
        by_key[(run["task"], run["method"])].append(run)
    groups = {}
    for key, members in by_key.items():
        by_args = defaultdict(list)
        for run in members:
            if run["args"] is not None:  # an unreadable run joins the chosen arguments' seeds below
                by_args[json.dumps(run["args"], sort_keys=True, default=str)].append(run)
        if not by_args:
            by_args["unreadable"] = []
        # the set of arguments with the most finished runs (then the most runs) is the one reported
        chosen = max(by_args, key=lambda a: (sum(r["status"] == "finished" for r in by_args[a]), len(by_args[a])))
        excluded = []
        for signature, others in by_args.items():
            if signature != chosen:
                differ = [f"{k}: {by_args[chosen][0]['args'].get(k)} here, {others[0]['args'].get(k)} there"
                          for k in sorted(set(others[0]["args"]) | set(by_args[chosen][0]["args"]))
                          if others[0]["args"].get(k) != by_args[chosen][0]["args"].get(k)]
                excluded.append(f"{len(others)} run(s) with other arguments ({'; '.join(differ)}): "
                                f"{', '.join(r['dir'].name for r in others)}")
        per_seed = {}
        rank = {"finished": 0, "diverged": 1}
        unreadable = [r for r in members if r["args"] is None]
        for run in sorted(by_args[chosen] + unreadable, key=lambda r: (rank.get(r["status"], 2), -r["dir"].stat().st_mtime)):
            if run["seed"] in per_seed:
                excluded.append(f"{run['dir'].name}: a second run of seed {run['seed']} "
                                f"(using {per_seed[run['seed']]['dir'].name})")
            else:
                per_seed[run["seed"]] = run
        groups[key] = {"runs": [per_seed[s] for s in sorted(per_seed)], "excluded": excluded}
    return groups


def settled(group):
    """Every run of the group finished or diverged: a re-run grid still going has not."""
    return all(r["status"] in ("finished", "diverged") for r in group["runs"])


def load_folders(roots):
    """load() of each folder in turn; a later folder's (task, method) group replaces an earlier one's whole, so
    `results/laptop/runs results/laptop/tuned/runs` reads the tuned re-runs in place of the untuned runs of the
    methods whose preset the tuning changed, and the untuned runs of the others. Each group keeps its folder. A later
    group still under way (a run not finished or diverged, or fewer seeds than the earlier group) does not replace a
    settled earlier one until it is complete: the earlier group keeps it as "waiting" (folder, runs done, runs
    expected), which sources() names."""
    groups = {}
    for root in roots:
        for key, group in load(root).items():
            group["folder"] = str(root)
            if key in groups:
                earlier = groups[key]
                if settled(earlier) and (not settled(group) or len(group["runs"]) < len(earlier["runs"])):
                    done = sum(r["status"] in ("finished", "diverged") for r in group["runs"])
                    earlier["waiting"] = (str(root), done, max(len(group["runs"]), len(earlier["runs"])))
                    continue
                group["replaced"] = f"{len(earlier['runs'])} run(s) under {earlier['folder']}"
            groups[key] = group
    return groups


def sources(roots, groups):
    """Where the runs come from: the folder, or with several, which method on which task each later folder gave."""
    if len(roots) == 1:
        return f"From `{roots[0]}`"
    given = []
    for root in roots[1:]:
        tasks = defaultdict(list)  # method: the tasks this folder gave it
        for task, method in sorted(k for k, g in groups.items() if g["folder"] == str(root)):
            tasks[method].append(task)
        given += [f"{NAMES.get(m, m)} on {', '.join(ts)} from `{root}`" for m, ts in tasks.items()]
    waiting = [f"{NAMES.get(m, m)} on {t} under `{g['waiting'][0]}`, {g['waiting'][1]} of {g['waiting'][2]} runs done"
               for (t, m), g in sorted(groups.items()) if "waiting" in g]
    return (f"From `{'`, `'.join(map(str, roots))}`, a later folder's runs of a method on a task in place of an earlier "
            f"one's ({'; '.join(given) or 'nothing from the later folders'}; the rest from `{roots[0]}`"
            + (f"; not yet in place, still under way: {'; '.join(waiting)}" if waiting else "") + ")")


def curve(runs):
    """Per evaluation step present in every run: prompts, pairs, KL and reward, each (mean, std) over the runs."""
    if not runs:
        return []
    common_steps = set.intersection(*({e["iteration"] for e in r["evals"]} for r in runs))
    out = []
    for step in sorted(common_steps):
        at = [next(e for e in r["evals"] if e["iteration"] == step) for r in runs]
        out.append({"iteration": step, **{k: mean_std([e[k] for e in at]) for k in ("prompts", "pairs", "kl", "reward")}})
    return out


def summarise(groups, kl_budget):
    """One row of numbers per (task, method); the runs that are averaged are the finished ones."""
    expected = sorted({r["seed"] for g in groups.values() for r in g["runs"]})
    tasks = sorted({t for t, _ in groups}, key=lambda t: (list(TASK_NAMES).index(t) if t in TASK_NAMES else 99, t))
    methods = sorted({m for _, m in groups}, key=lambda m: (list(NAMES).index(m) if m in NAMES else 99, m))
    rows, curves = [], {}
    for task in tasks:
        for method in methods:
            group = groups.get((task, method), {"runs": [], "excluded": []})
            finished = [r for r in group["runs"] if r["status"] == "finished"]
            seeds = {r["seed"] for r in group["runs"]}
            curves[(task, method)] = curve(finished)
            final = [r["evals"][-1] for r in finished if r["evals"]]
            reward, kl = mean_std([e["reward"] for e in final]), mean_std([e["kl"] for e in final])
            per_iteration, per_run = mean_std([r["s_per_iteration"] for r in finished]), mean_std([r["s_per_run"] for r in finished])
            rows.append({
                "task": task, "method": method, "n": len(finished), "seeds": " ".join(str(r["seed"]) for r in finished),
                "final_reward_mean": reward[0], "final_reward_std": reward[1], "final_kl_mean": kl[0], "final_kl_std": kl[1],
                "s_per_iteration_mean": per_iteration[0], "s_per_iteration_std": per_iteration[1],
                "s_per_run_mean": per_run[0], "s_per_run_std": per_run[1],
                "prompts_seen": mean_std([r["prompts"] for r in finished])[0],
                "pairs_queried": mean_std([r["pairs"] for r in finished])[0],
                "pairs_kept": mean_std([r["kept"] for r in finished])[0],
                "diverged": "; ".join(f"seed {r['seed']} after iteration {r['iteration']}" for r in group["runs"]
                                      if r["status"] == "diverged"),
                "unfinished": "; ".join(f"seed {r['seed']} {r['status']}"
                                        + (f" at iteration {r['iteration']}" if r["iteration"] is not None else "")
                                        for r in group["runs"] if r["status"] not in ("finished", "diverged")),
                "missing": " ".join(str(s) for s in expected if s not in seeds),
                "excluded": "; ".join(group["excluded"]),
            })
        # the KL budget: given, or the smallest final mean KL among the methods of the claims (BUDGET_METHODS), as
        # the tuning protocol sets it: a KL all three reach, so each is read where it has evaluations (the smallest
        # over all methods is DRO-V's 7-10 nats, where every other method is read at iteration 0); without those
        # methods, the smallest final mean KL of the task
        task_rows = [r for r in rows if r["task"] == task]
        finals = [r["final_kl_mean"] for r in task_rows if r["final_kl_mean"] is not None]
        claimed = [r["final_kl_mean"] for r in task_rows if r["method"] in BUDGET_METHODS and r["final_kl_mean"] is not None]
        budget = kl_budget if kl_budget is not None else (min(claimed) if claimed else min(finals) if finals else None)
        naive = next((r["s_per_run_mean"] for r in task_rows if r["method"] == "sta_naive"), None)
        paper = PAPER_SECONDS.get(task, {})
        for row in task_rows:
            front = pareto_front([(p["kl"][0], p["reward"][0]) for p in curves[(task, row["method"])]])
            within = [p for p in front if budget is not None and p[0] <= budget]
            best = max(within, key=lambda p: p[1]) if within else (None, None)
            measured, published = row["s_per_run_mean"], paper.get(row["method"])
            finished = [r for r in groups.get((task, row["method"]), {"runs": []})["runs"] if r["status"] == "finished"]
            at_budget = mean_std([reward_at_kl(r["evals"], budget) for r in finished] if budget is not None else [])
            row.update({"kl_budget": budget, "pareto_best_reward": best[1], "pareto_best_kl": best[0],
                        "equal_kl_reward_mean": at_budget[0], "equal_kl_reward_std": at_budget[1],
                        "time_ratio_to_naive": measured / naive if naive and measured else None,
                        "paper_s_per_run": published,
                        "paper_ratio_to_naive": published / paper["sta_naive"] if published else None})
    return rows, curves


def fmt(value, std=None, digits=2):
    if value is None:
        return "–"
    text = f"{value:.{digits}f}"
    return f"{text} ± {std:.{digits}f}" if std is not None else text


def active_time(runs):
    """(seconds during which at least one run was running, first start, last stop, the runs' own seconds added up): the
    first three from the start/resume and stop events of the runs' config.json histories, a grid's wall time without its
    pauses (a part with no stop event, a crash or a run still going, is left out); the last from each run's own
    wall_time, metrics.csv's last row, which a resumed run carries on from its checkpoint, so the part before a crash
    that left no stop event counts too."""
    from datetime import datetime

    parts = []
    for run in runs:
        began = None
        for event in run["history"]:
            when = datetime.strptime(event["time"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
            if event["event"] in ("start", "resume"):
                began = when
            elif began is not None:  # interrupted, diverged or finished
                parts.append((began, when))
                began = None
    if not parts:
        return None
    total, end = 0.0, -math.inf
    for a, b in sorted(parts):  # the union of the intervals
        total += max(0.0, b - max(a, end))
        end = max(end, b)
    return total, min(a for a, _ in parts), max(b for _, b in parts), sum(r["s_per_run"] or 0.0 for r in runs)


def headline(rows):
    """The front page's table: final reward ± std (final KL) per method and task, the best mean per task in bold."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    best = {t: max((r["final_reward_mean"] for r in rows if r["task"] == t and r["final_reward_mean"] is not None),
                   default=None) for t in tasks}
    lines = ["## Final reward by task", "",
             "Final evaluation reward, mean ± std over seeds (final KL to π_ref; n finished runs where fewer than the "
             "most); the best mean per task in bold.", "",
             "| method | " + " | ".join(TASK_NAMES.get(t, t) for t in tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    most = max((r["n"] for r in rows), default=0)
    for method in dict.fromkeys(r["method"] for r in rows):
        cells = []
        for task in tasks:
            r = next((r for r in rows if r["task"] == task and r["method"] == method), None)
            if r is None or r["final_reward_mean"] is None:
                cells.append("–")
                continue
            reward = fmt(r["final_reward_mean"], r["final_reward_std"])
            reward = f"**{reward}**" if r["final_reward_mean"] == best[task] else reward
            cells.append(f"{reward} ({fmt(r['final_kl_mean'], digits=1)}" + (f"; n {r['n']})" if r["n"] < most else ")"))
        lines.append(f"| {NAMES.get(method, method)} | " + " | ".join(cells) + " |")
    return lines + [""]


def markdown(rows, roots, groups, figures, kl_budget):
    runs = [r for g in groups.values() for r in g["runs"]]
    count = {s: sum(r["status"] == s for r in runs) for s in ("finished", "diverged")}
    lines = [
        "# Results", "",
        f"{sources(roots, groups)}: {len(runs)} runs ({count['finished']} finished, {count['diverged']} diverged, "
        f"{len(runs) - sum(count.values())} unfinished), read from each run's `config.json` and `metrics.csv` by "
        "`tools/results.py`. Mean ± sample standard deviation (n − 1) over seeds; n counts the finished runs, the only "
        "ones averaged. Final = the run's last evaluation. Pareto front as in the paper's §6: "
        "KL and reward averaged over the seeds at each evaluation step, weakly dominated points dropped. s/iteration is "
        "the median wall time of an iteration without evaluation; s/run the whole run's wall time (both then averaged "
        "over seeds).", "",
    ]
    settings = [(key, sorted({str(r["args"].get(key)) for r in runs if r["status"] == "finished"}))
                for key in ("laptop", "model", "prompts", "iterations", "batch_size", "max_new_tokens")]
    lines += ["Settings of the averaged runs: " + "; ".join(f"{key} = {' or '.join(values)}" for key, values in settings
                                                           if values) + ".", ""]
    active = active_time(runs)
    if active:
        from datetime import datetime, timezone

        day = lambda t: datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        lines += [f"Wall time with at least one run going: {active[0] / 3600:.1f} h, between {day(active[1])} and "
                  f"{day(active[2])} (the union of the start-to-stop intervals in the `config.json` histories of the "
                  f"runs reported here, so pauses between sessions do not count, nor do reruns moved aside); the runs' own times add up to {active[3] / 3600:.1f} h.", ""]
    lines += headline(rows)
    for task in dict.fromkeys(r["task"] for r in rows):
        task_rows = [r for r in rows if r["task"] == task]
        budget = task_rows[0]["kl_budget"]
        where = ("given with `--kl-budget`" if kl_budget is not None else
                 "the smallest final mean KL among Naive STA, Total STA and iterated DPO, the methods of the claims, as "
                 "the tuning protocol of docs/reproducing.md sets its budget; each of the three has evaluations up to it")
        lines += [f"## {TASK_NAMES.get(task, task)}", "",
                  f"KL budget: {fmt(budget)} ({where}). Reward at the budget: per seed, the highest reward that the run's "
                  "evaluations joined in order by straight lines (iteration 0 at KL 0 included) reach at KL ≤ budget, "
                  "its best evaluation if it never reaches the budget, then mean ± std over seeds; best Pareto reward: "
                  "on the front of the seed-averaged curve.", "",
                  "| method | n | final reward | final KL | reward at KL ≤ budget | best Pareto reward at KL ≤ budget (its KL) "
                  "| s/iteration | s/run | prompts seen | pairs queried | pairs kept | not averaged |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in task_rows:
            notes = [f"{what}: {r[key]}" for key, what in [("diverged", "diverged"), ("unfinished", "unfinished"),
                                                           ("missing", "missing seeds")] if r[key]]
            best = r["pareto_best_reward"] is not None and f"{fmt(r['pareto_best_reward'])} ({fmt(r['pareto_best_kl'])})"
            cells = [NAMES.get(r["method"], r["method"]), r["n"], fmt(r["final_reward_mean"], r["final_reward_std"]),
                     fmt(r["final_kl_mean"], r["final_kl_std"]), fmt(r["equal_kl_reward_mean"], r["equal_kl_reward_std"]),
                     best or "–",
                     fmt(r["s_per_iteration_mean"], r["s_per_iteration_std"], 3),
                     fmt(r["s_per_run_mean"], r["s_per_run_std"], 1), fmt(r["prompts_seen"], digits=0),
                     fmt(r["pairs_queried"], digits=0), fmt(r["pairs_kept"], digits=0), "; ".join(notes) or "–"]
            lines.append("| " + " | ".join(map(str, cells)) + " |")
        lines.append("")
    lines += ["## Time relative to Naive STA", "",
              "Seconds per run, measured here, beside the paper's Appendix B Table 1 (\"average running time in seconds "
              "of each method on the various tasks, averaged across seeds\": T = 1000 iterations of B = 16 prompts on a "
              "GeForce 3090 or equivalent, so 2.4–3.1 s an iteration for Naive STA and 8.2–11.0 s for Total; its DPO is "
              "read as offline DPO, and its CWC row gives Simultaneous and PARL the same 1340.522 s). A run of each "
              "method consumes the same prompts (PARL in fewer, longer outer iterations), so runs are what compare; "
              "the ratios compare across machines, the seconds do not.", "",
              "| task | method | measured s/run | ratio to Naive | paper s/run | paper ratio to Naive |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        if r["s_per_run_mean"] is not None or r["paper_s_per_run"] is not None:
            cells = [r["task"], NAMES.get(r["method"], r["method"]), fmt(r["s_per_run_mean"], digits=1),
                     fmt(r["time_ratio_to_naive"]), fmt(r["paper_s_per_run"], digits=0), fmt(r["paper_ratio_to_naive"])]
            lines.append("| " + " | ".join(cells) + " |")
    excluded = [f"- {r['task']}, {NAMES.get(r['method'], r['method'])}: {r['excluded']}" for r in rows if r["excluded"]]
    if excluded:
        lines += ["", "## Runs left out", "", *excluded]
    lines += ["", "## Figures", "", *figures, ""]
    return "\n".join(lines)


def plot(rows, curves, groups, out, x_axes="both"):
    """The five figures; returns a line per figure for results.md."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["Not drawn: matplotlib is not installed (`pip install matplotlib`)."]
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    notes = []

    def panels(n_rows=1, legend_below=False):
        height = 4 * n_rows + (1.6 if legend_below else 0)  # room for a legend under each panel
        fig, axes = plt.subplots(n_rows, len(tasks), figsize=(5 * len(tasks), height), squeeze=False)
        return fig, axes

    def legend_below(ax):  # under the panel, where it hides no curve (the methods' early rise is top left)
        if ax.get_legend_handles_labels()[0]:  # a panel can be empty while a grid is running
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)

    def save(fig, name, what):
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        notes.append(f"- `{name}`: {what}")

    for x, name, label in [("prompts", "figure1_reward.png", "prompts seen"),
                           ("pairs", "figure1_reward_pairs.png", "preference pairs queried")]:
        if x_axes not in (x, "both"):
            continue
        fig, axes = panels(legend_below=True)
        left_out = set()
        for col, task in enumerate(tasks):
            ax = axes[0][col]
            for method in methods:
                points = curves[(task, method)]
                if not points:
                    continue
                xs = [p[x][0] for p in points]
                if x == "pairs" and not any(xs):
                    left_out.add(NAMES.get(method, method))
                    continue
                mean = [p["reward"][0] for p in points]
                std = [p["reward"][1] or 0.0 for p in points]
                n = len([r for r in groups[(task, method)]["runs"] if r["status"] == "finished"])
                ax.plot(xs, mean, color=COLOURS.get(method), label=f"{NAMES.get(method, method)} (n={n})")
                ax.fill_between(xs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                                color=COLOURS.get(method), alpha=0.2, linewidth=0)
            ax.set(title=TASK_NAMES.get(task, task), xlabel=label, ylabel="evaluation reward")
            legend_below(ax)
        extra = f"; left out, as they query no pairs: {', '.join(sorted(left_out))}" if left_out else ""
        save(fig, name, f"evaluation reward against {label}, mean ± std over seeds{extra}")

    fig, axes = panels(legend_below=True)
    for col, task in enumerate(tasks):
        ax = axes[0][col]
        for method in methods:
            front = pareto_front([(p["kl"][0], p["reward"][0]) for p in curves[(task, method)]])
            if front:
                ax.plot([p[0] for p in front], [p[1] for p in front], marker="o", markersize=3,
                        color=COLOURS.get(method), label=NAMES.get(method, method))
        budget = next(r["kl_budget"] for r in rows if r["task"] == task)
        if budget is not None:
            ax.axvline(budget, color="grey", linestyle=":", linewidth=1)
        ax.set(title=TASK_NAMES.get(task, task), xlabel="KL(π_θ ‖ π_ref), mean over seeds",
               ylabel="evaluation reward, mean over seeds")
        legend_below(ax)
    save(fig, "figure1_pareto.png", "KL-reward Pareto fronts (dotted: the KL budget of the table)")

    fig, axes = panels(legend_below=True)
    for col, task in enumerate(tasks):
        ax = axes[0][col]
        runs = {m: [r for r in groups.get((task, m), {"runs": []})["runs"] if r["status"] == "finished" and r["evals"]]
                for m in methods}
        top = max((r["evals"][-1]["kl"] or 0.0 for rs in runs.values() for r in rs), default=0.0)
        budgets = [top * i / 60 for i in range(61)]
        for method in methods:
            if not runs[method]:
                continue
            at = [mean_std([reward_at_kl(r["evals"], b) for r in runs[method]]) for b in budgets]
            mean, std = [a[0] for a in at], [a[1] or 0.0 for a in at]
            # dashed where some run is read below its first evaluation: an interpolation, not a measurement
            read = [not any(below_first_evaluation(r, b) for r in runs[method]) for b in budgets]
            ax.plot(budgets, [m if r else math.nan for m, r in zip(mean, read)], color=COLOURS.get(method),
                    label=f"{NAMES.get(method, method)} (n={len(runs[method])})")
            ax.plot(budgets, [m if not r or (i and not read[i - 1]) else math.nan for i, (m, r) in enumerate(zip(mean, read))],
                    color=COLOURS.get(method), linestyle="--", linewidth=0.8)  # to the first measured budget
            ax.fill_between(budgets, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            color=COLOURS.get(method), alpha=0.15, linewidth=0)
        budget = next(r["kl_budget"] for r in rows if r["task"] == task)
        if budget is not None:
            ax.axvline(budget, color="grey", linestyle=":", linewidth=1)
        ax.set(title=TASK_NAMES.get(task, task), xlabel="KL budget (nats)", ylabel="reward at KL ≤ budget")
        legend_below(ax)
    save(fig, "equal_kl.png", "reward at equal KL: per seed the highest reward of the run's reward-KL path within the "
         "KL budget (its best evaluation once the budget is past its last KL), mean ± std over seeds, against the "
         "budget (dashed where some run is read below its first evaluation, an interpolation; dotted: the table's budget)")

    sta = [m for m in ("sta_naive", "sta_total", "sta_total_gn") if any(curves.get((t, m)) for t in tasks)]
    if not sta:
        notes.append("- `figure2_convergence.png`: not drawn, no finished Naive or Total STA run")
        return notes
    fig, axes = panels(2)
    for col, task in enumerate(tasks):
        for row, (key, label) in enumerate([("rm/loss", "reward-model loss"), ("rm/score_mean", "RM reward of the policy")]):
            ax = axes[row][col]
            for method in sta:
                finished = [r for r in groups.get((task, method), {"runs": []})["runs"] if r["status"] == "finished"]
                if not finished:
                    continue
                steps = sorted(set.intersection(*(set(r["series"][key]) for r in finished)))
                mean = [statistics.mean(r["series"][key][s] for r in finished) for s in steps]
                cumulative = [sum(mean[:i + 1]) / (i + 1) for i in range(len(mean))]
                colour = COLOURS[method]
                ax.plot(steps, mean, color=colour, alpha=0.3, linewidth=0.8)
                ax.plot(steps, cumulative, color=colour, label=f"{NAMES[method]}, cumulative average (n={len(finished)})")
            ax.set(title=TASK_NAMES.get(task, task), xlabel="iteration", ylabel=label)
            if ax.get_legend_handles_labels()[0]:  # a panel can be empty while a grid is running
                ax.legend(fontsize=7)
    save(fig, "figure2_convergence.png", "Naive and Total STA (and Total-GN): rm/loss and rm/score_mean per iteration (faint, mean "
         "over seeds) and their cumulative averages (the paper's Figures 2 and 3)")
    return notes


if __name__ == "__main__":
    import quiet_pipe  # noqa: F401,E402  (`python tools/X.py | head` ends without a BrokenPipeError traceback)

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="folder(s) of run directories (tools/grid.py's --output-dir); with "
                        "several, a later folder's runs of a method on a task replace an earlier one's (untuned grid "
                        "first, tuned re-runs after)")
    parser.add_argument("--out", default="results", help="folder for the figures, results.md and results.csv")
    parser.add_argument("--kl-budget", type=float, default=None,
                        help="KL budget of the equal-KL and Pareto columns (default: per task, the smallest final "
                             "mean KL among Naive STA, Total STA and iterated DPO)")
    parser.add_argument("--x", choices=["prompts", "pairs", "both"], default="both",
                        help="x-axis of Figure 1: prompts seen (figure1_reward.png, D18), pairs queried "
                             "(figure1_reward_pairs.png) or both")
    cli = parser.parse_args()
    for root in cli.runs:
        if not Path(root).is_dir():
            fail(f"{root} is not a folder")
    groups = load_folders(cli.runs)
    if not groups:
        fail(f"no run directories (with config.json) under {' '.join(cli.runs)}")
    out = Path(cli.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, curves = summarise(groups, cli.kl_budget)
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows({k: "" if r[k] is None else r[k] for k in COLUMNS} for r in rows)
    figures = plot(rows, curves, groups, out, cli.x)
    (out / "results.md").write_text(markdown(rows, cli.runs, groups, figures, cli.kl_budget))
    print(f"wrote to {out}: results.md, results.csv" + "".join(f", {p.name}" for p in sorted(out.glob("*.png"))))
