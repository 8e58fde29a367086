"""The paper's two summaries from the runs under runs/ (SPEC §1.9):

- reward against prompts seen, mean ± std over seeds, per task and algorithm;
- the KL-reward Pareto front: at every evaluation step, average (eval/kl, eval/reward) over the seeds; drop the
  points that another point weakly dominates (KL no larger and reward no smaller); keep the rest.

    python tools/pareto.py runs/                  # tables on stdout
    python tools/pareto.py runs/ --plot out.png   # also a figure (needs matplotlib, an optional dependency)
"""

import argparse
import csv
import json
import statistics
from collections import defaultdict
from pathlib import Path


def pareto_front(points):
    """Points (kl, reward) that no other point weakly dominates, sorted by KL; duplicates are kept once."""
    points = sorted(set(points), key=lambda p: (p[0], -p[1]))
    front, best = [], float("-inf")
    for kl, reward in points:  # by increasing KL, a point survives only if it beats every reward before it
        if reward > best:
            front.append((kl, reward))
            best = reward
    return front


def load_runs(root):
    """{(task, algo): {seed: [(iteration, prompts_seen, kl, reward), ...]}} from every run's config and metrics."""
    runs = defaultdict(dict)
    for config in sorted(Path(root).glob("*/config.json")):
        meta = json.loads(config.read_text())
        with open(config.parent / "metrics.csv", newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("eval/reward")]
        evals = [(int(r["iteration"]), int(r["prompts_seen"]), float(r["eval/kl"]), float(r["eval/reward"])) for r in rows]
        runs[(meta["args"]["task"], meta["algo"])][meta["args"]["seed"]] = evals
    return runs


def summarise(seeds):
    """Per evaluation step present in every seed: (iteration, prompts_seen, mean KL, mean reward, std reward)."""
    steps = set.intersection(*({e[0] for e in evals} for evals in seeds.values()))
    out = []
    for step in sorted(steps):
        at = [next(e for e in evals if e[0] == step) for evals in seeds.values()]
        rewards = [e[3] for e in at]
        out.append((step, at[0][1], statistics.mean(e[2] for e in at), statistics.mean(rewards),
                    statistics.stdev(rewards) if len(rewards) > 1 else 0.0))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default="runs", help="folder of run directories")
    parser.add_argument("--plot", default="", help="write a figure (reward curves and Pareto fronts) to this file")
    cli = parser.parse_args()
    runs = load_runs(cli.root)
    if not runs:
        raise SystemExit(f"error: no runs with config.json and metrics.csv under {cli.root}")
    summaries = {key: summarise(seeds) for key, seeds in runs.items()}
    for (task, algo), summary in sorted(summaries.items()):
        step, seen, kl, reward, std = summary[-1]
        front = pareto_front([(s[2], s[3]) for s in summary])
        print(f"{task:4} {algo:14} seeds={len(runs[(task, algo)])}  start reward {summary[0][3]:.3f}  "
              f"end (iteration {step}, {seen} prompts) reward {reward:.3f} ± {std:.3f}, KL {kl:.3f}")
        print("     Pareto front (KL, reward): " + ", ".join(f"({k:.3f}, {r:.3f})" for k, r in front))
    if cli.plot:
        import matplotlib.pyplot as plt

        tasks = sorted({task for task, _ in summaries})
        fig, axes = plt.subplots(2, len(tasks), figsize=(5 * len(tasks), 8), squeeze=False)
        for col, task in enumerate(tasks):
            for (t, algo), summary in sorted(summaries.items()):
                if t != task:
                    continue
                seen = [s[1] for s in summary]
                mean = [s[3] for s in summary]
                std = [s[4] for s in summary]
                axes[0][col].plot(seen, mean, label=algo)
                axes[0][col].fill_between(seen, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], alpha=0.2)
                front = pareto_front([(s[2], s[3]) for s in summary])
                axes[1][col].plot([p[0] for p in front], [p[1] for p in front], marker="o", label=algo)
            axes[0][col].set(title=task, xlabel="prompts seen", ylabel="eval reward")
            axes[1][col].set(xlabel="KL(π_θ ‖ π_ref)", ylabel="eval reward")
            axes[0][col].legend()
        fig.tight_layout()
        fig.savefig(cli.plot)
        print(f"wrote {cli.plot}")
