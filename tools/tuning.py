"""The tuning protocol's selection (issue 25), applied to its runs exactly as docs/reproducing.md declares it.

    python tools/tuning.py results/laptop/tuning/runs --out results/laptop/tuning

Reads every run folder under RUNS_DIR (results/laptop/tuning/runs/x{0.3,1,3}/<task>__<method>__<seed>/, from each run's
config.json and metrics.csv alone, as tools/results.py reads them). A configuration is a task, a method and the run's
arguments other than the seed and run plumbing (the folder name plays no part), named by its policy learning rate.

- The score of a run: its reward at KL ≤ 35 on its upper reward-KL envelope (tools/results.py's reward_at_kl: the
  evaluations, iteration 0 at KL 0 included, joined in order by straight lines, the highest reward that path reaches
  at KL ≤ 35; a run that never reaches KL 35 scores its best evaluation reward).
- A configuration is complete when both tuning seeds (101, 202) finished, not selectable when one of them diverged or
  failed, and incomplete while a seed is missing or unfinished (running, interrupted, killed while writing).
- Per task and method: "selection pending" while any of its configurations is incomplete (or a run folder of it is
  unreadable); otherwise, among the complete configurations, those within 0.10 of the highest mean score (over the two
  seeds) are tied and the one with the highest mean final evaluation reward among them is selected; if no
  configuration is complete, the preset stays.

Writes tuning.md (per method: each configuration's per-seed score, mean score, mean final reward and KL, status; the
selected rate and whether it differs from the preset) and tuning.csv (one row per configuration) to --out.
"""

import argparse
import csv
import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import FREE_ARGS, NAMES, fail, read_run, reward_at_kl  # noqa: E402

KL_BUDGET = 35.0  # nats: the protocol's budget (the smallest final KL among Naive, Total and iterated DPO on cwc, rounded down)
TIE = 0.10  # mean scores within this of the best are tied; the mean final reward breaks the tie
SEEDS = (101, 202)  # the two tuning seeds, outside the paper's five
# each method's LAPTOP policy learning rate when the protocol was declared (results/laptop/tuning/run_tuning.sh)
PRESET = {"sta_naive": 1e-4, "sta_total": 1e-4, "sta_total_gn": 1e-4, "simultaneous": 1e-4, "reversed": 2e-5,
          "parl": 1e-4, "ppo": 3e-5, "dpo": 1e-4, "iterated_dpo": 1e-4, "dro_v": 1e-4}
MULTIPLIERS = (0.3, 1, 3)  # the protocol's three configurations per method, as run_tuning.sh rounds them


def expected_rates(method):
    return [float(f"{m * PRESET[method]:.3g}") for m in MULTIPLIERS]


COLUMNS = ["task", "method", "policy_lr", "preset_lr", "seeds_finished", "scores", "score_mean", "final_reward_mean",
           "final_kl_mean", "status", "selected", "selection"]


def read_runs(root):
    """Every run folder (task__method__seed) under root, at any depth, as results.read_run gives it; the ones whose
    config.json or metrics.csv cannot be read are returned apart, by folder. Folders moved aside (NAME.old-<n>) are
    left out."""
    runs, unreadable = [], []
    for config in sorted(Path(root).rglob("config.json")):
        d = config.parent  # a run folder is named task__method__seed (a saved model's config.json inside it is not one)
        if not re.fullmatch(r"[^_/]+__\w+__\d+", d.name) or any(re.search(r"\.old-\d+$", p.name) for p in [d, *d.parents]):
            continue
        try:
            runs.append(read_run(d))
        except (ValueError, KeyError, TypeError, AttributeError):
            unreadable.append(d)
    return runs, unreadable


def configurations(runs):
    """{(task, method): {signature: [runs]}}, a signature being the run's arguments without seed and plumbing."""
    by = defaultdict(lambda: defaultdict(list))
    for run in runs:
        args = {k: v for k, v in run["args"].items() if k != "seed"}
        by[(run["task"], run["method"])][json.dumps(args, sort_keys=True, default=str)].append(run)
    return by


def judge(config_runs):
    """One configuration: per tuning seed its run (the finished one if there are several), score, final reward and
    KL, and the configuration's status."""
    per_seed = {}
    for run in sorted(config_runs, key=lambda r: r["status"] != "finished"):
        per_seed.setdefault(run["seed"], run)
    seeds = {s: per_seed.get(s) for s in SEEDS}
    statuses = {s: (r["status"] if r else "missing") for s, r in seeds.items()}
    if any(v not in ("finished", "diverged", "failed") for v in statuses.values()):
        status = "incomplete (" + ", ".join(f"seed {s} {v}" for s, v in statuses.items() if v != "finished") + ")"
    elif any(v != "finished" for v in statuses.values()):
        status = "not selectable (" + ", ".join(f"seed {s} {v}" for s, v in statuses.items() if v != "finished") + ")"
    else:
        status = "complete"
    done = {s: r for s, r in seeds.items() if r and r["status"] == "finished" and r["evals"]}
    scores = {s: reward_at_kl(r["evals"], KL_BUDGET) for s, r in done.items()}
    mean = lambda values: statistics.mean(values) if values else None
    return {"lr": config_runs[0]["args"].get("policy_lr"), "status": status, "scores": scores,
            "score": mean([v for v in scores.values() if v is not None]) if status == "complete" else None,
            "final_reward": mean([r["evals"][-1]["reward"] for r in done.values()]),
            "final_kl": mean([r["evals"][-1]["kl"] for r in done.values()])}


def select(configs, unreadable=()):
    """(selected configuration or None, a sentence) by the protocol's rule."""
    pending = [c for c in configs if c["status"].startswith("incomplete")]
    if configs and len(pending) == len(configs) and not unreadable and all("no runs" in c["status"] for c in pending):
        return None, "selection pending: no runs yet"
    if pending or unreadable or not configs:
        why = ([f"policy_lr {c['lr']:g} {c['status']}" for c in pending] + [f"{d.name} unreadable" for d in unreadable]
               or ["no runs yet"])
        return None, "selection pending: " + "; ".join(why)
    complete = [c for c in configs if c["status"] == "complete" and c["score"] is not None]
    if not complete:
        return None, "the preset stays: every configuration has a diverged or failed seed"
    best = max(c["score"] for c in complete)
    tied = [c for c in complete if best - c["score"] <= TIE + 1e-12]
    chosen = max(tied, key=lambda c: c["final_reward"])
    how = (f"the highest mean score, {chosen['score']:.2f}" if len(tied) == 1 else
           f"{len(tied)} configurations within {TIE} of the best mean score {best:.2f}; the highest mean final reward, "
           f"{chosen['final_reward']:.2f}")
    return chosen, f"policy_lr {chosen['lr']:g} selected ({how})"


def fmt(value, digits=2):
    return "–" if value is None else f"{value:.{digits}f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, help="the tuning runs (results/laptop/tuning/runs)")
    parser.add_argument("--out", type=Path, required=True, help="folder for tuning.md and tuning.csv")
    cli = parser.parse_args(argv)
    if not cli.runs.is_dir():
        fail(f"{cli.runs} is not a folder of runs")
    runs, unreadable = read_runs(cli.runs)
    if not runs and not unreadable:
        fail(f"no run directories (with config.json) under {cli.runs}")
    by = configurations(runs)
    tasks = sorted({t for t, _ in by} | {d.name.split("__")[0] for d in unreadable if d.name.count("__") == 2})
    lines = ["# Tuning: the protocol's selection", "",
             f"From `{cli.runs}` by `python tools/tuning.py`, by the rule declared in docs/reproducing.md (\"The tuning "
             f"protocol\"): the score of a run is its reward at KL ≤ {KL_BUDGET:g} on its reward-KL envelope (its "
             f"evaluations joined in order by straight lines, iteration 0 at KL 0 included; a run that never reaches "
             f"KL {KL_BUDGET:g} scores its best evaluation); the configuration with the highest mean score over seeds "
             f"{' and '.join(map(str, SEEDS))} is selected, those within {TIE} of it tied and broken by the mean final "
             f"evaluation reward; a configuration with a diverged or failed seed cannot be selected; a method with an "
             f"incomplete configuration waits (selection pending).", "",
             "| task | method | selection | preset policy_lr | differs from the preset |", "|---|---|---|---|---|"]
    sections, rows = [], []
    for task in tasks:
        for method in [m for m in NAMES if m in PRESET]:
            configs = [judge(members) for members in by.get((task, method), {}).values()]
            for rate in expected_rates(method):  # a configuration with no run yet keeps the selection pending
                if not any(c["lr"] and abs(c["lr"] - rate) <= 1e-6 * rate for c in configs):
                    configs.append({"lr": rate, "status": "incomplete (no runs yet)", "scores": {}, "score": None,
                                    "final_reward": None, "final_kl": None})
            configs.sort(key=lambda c: c["lr"] or 0)
            lost = [d for d in unreadable if d.name.startswith(f"{task}__{method}__")]
            chosen, sentence = select(configs, lost)
            preset = PRESET[method]
            differs = "–" if chosen is None else ("yes" if abs(chosen["lr"] - preset) > 1e-6 * preset else "no")
            lines.append(f"| {task} | {NAMES[method]} | {sentence} | {preset:g} | {differs} |")
            sections += [f"## {task}, {NAMES[method]}", "",
                         f"| policy_lr | score at KL ≤ {KL_BUDGET:g}, per seed | mean score | mean final reward | "
                         "mean final KL | status |", "|---|---|---|---|---|---|"]
            for c in configs:
                per_seed = ", ".join(f"{s}: {fmt(v)}" for s, v in sorted(c["scores"].items())) or "–"
                mark = " (selected)" if c is chosen else ""
                sections.append(f"| {c['lr']:g}{mark} | {per_seed} | {fmt(c['score'])} | {fmt(c['final_reward'])} | "
                                f"{fmt(c['final_kl'], 1)} | {c['status']} |")
                rows.append({"task": task, "method": method, "policy_lr": c["lr"], "preset_lr": preset,
                             "seeds_finished": " ".join(str(s) for s in sorted(c["scores"])),
                             "scores": " ".join(fmt(v, 4) for _, v in sorted(c["scores"].items())),
                             "score_mean": c["score"], "final_reward_mean": c["final_reward"],
                             "final_kl_mean": c["final_kl"], "status": c["status"], "selected": c is chosen,
                             "selection": sentence})
            sections += [*(f"Unreadable run folder: `{d}`." for d in lost), "", f"Selection: {sentence}.", ""]
    cli.out.mkdir(parents=True, exist_ok=True)
    (cli.out / "tuning.md").write_text("\n".join(lines + [""] + sections))
    with open(cli.out / "tuning.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows({k: "" if r[k] is None else r[k] for k in COLUMNS} for r in rows)
    print(f"wrote {cli.out / 'tuning.md'} and tuning.csv ({len(runs)} runs, {len(unreadable)} unreadable)")


if __name__ == "__main__":
    import quiet_pipe  # noqa: F401,E402  (`python tools/X.py | head` ends without a BrokenPipeError traceback)

    main()
