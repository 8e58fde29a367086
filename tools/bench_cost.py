"""The cost of every method: seconds per iteration, peak memory and the ratio to Naive STA, beside the paper's Appendix B
Table 1 (issue 15).

    python tools/bench_cost.py --out results/cost/laptop -- --laptop --task cwc --iterations 6 --eval-every 1000
    python tools/bench_cost.py --methods sta_naive sta_total --repeats 1 -- --laptop --iterations 3

Every method of tools/grid.py (default: all ten) runs its script with the flags after `--`, each run in its own child
process on one thread (OMP_NUM_THREADS=1 unless set), the methods alternating within each of --repeats rounds. A flag
that a script does not take (`--cg-damping` for any script but sta_total.py) is left out of that script's command, and
said so. The child is tools/bench_total.py's: each outer iteration is timed from the end of the previous one to its own
end, in wall-clock and CPU time, less the time spent evaluating; the first iteration (loading, warm-up and the offline
data) is left out, so --iterations 3 gives two timed iterations. Peak memory is the child's peak resident set
(getrusage, loading included) and, on CUDA, torch.cuda.max_memory_allocated.

Per method it reports seconds per outer iteration (mean ± std over the timed iterations of all repeats), the prompts an
iteration consumes (PARL's outer iteration takes S·B = 5B, the others B), seconds per B prompts, and the ratio of that to
Naive STA's: the methods compared at equal prompts, as the paper's Table 1 compares them (its runs all see 16,000
prompts). Offline DPO and DRO-V generate their data set once, before training; that is reported apart (generated afresh,
never read from the cache), as the seconds it took and the iterations' worth of time it equals. Beside each ratio: the
paper's Table 1 ratio on the task run and its range over the three tasks (its DPO read as offline DPO; iterated DPO,
DRO-V and Total-GN are not in the paper). The last lines compare the two orderings.

The first iteration's seconds are reported apart (first_iteration_s: from the child's start, so loading, warm-up, the
first evaluation and, on CUDA, compiling the static-cache sampler; the offline data set left out), with the KV cache the runs
sampled with (common.SAMPLER_CACHE: static on CUDA, dynamic on CPU; BENCH_SAMPLER_CACHE=dynamic or static in the
environment sets it for every device, as for the break-even in results/cost/run_bench_gpu.sh).

--out DIR writes DIR/cost.md (the table, the command and the machine) and DIR/cost.csv (one row per method),
rewritten after every method's run: a call stopped by a time limit leaves the methods it finished.
"""

import argparse
import csv
import functools
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import quiet_pipe  # noqa: F401  (`python tools/X.py | head` ends without a BrokenPipeError traceback)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_total import run  # noqa: E402  the timing child
from grid import METHODS  # noqa: E402
from results import PAPER_SECONDS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ["method", "script_flags", "timed_iterations", "s_per_iteration", "s_per_iteration_std", "cpu_s_per_iteration",
           "prompts_per_iteration", "s_per_batch", "ratio_to_naive", "cpu_ratio_to_naive", "paper_ratio", "paper_ratio_min",
           "paper_ratio_max", "peak_rss_mib", "peak_cuda_mib", "offline_data_s", "offline_data_iterations", "first_iteration_s", "sampler_cache"]


@functools.cache
def script_options(script):
    """The --flags a script's --help lists (tyro lists every field, booleans with their --no- form)."""
    proc = subprocess.run([sys.executable, script, "--help"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"})
    options = set(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", proc.stdout))
    if proc.returncode != 0 or not options:  # else every flag would be left out and the script run at paper scale
        sys.exit(f"error: `{script} --help` failed, so its flags are unknown:\n{proc.stderr[-2000:]}")
    return options


def flags_for(flags, options):
    """(kept, dropped): the flags a script takes and those it does not. A flag's value is the next word unless that is
    itself a --flag (`--online`), or it was given as --flag=value."""
    kept, dropped, i = [], [], 0
    while i < len(flags):
        name = flags[i].split("=", 1)[0]
        takes_value = "=" not in flags[i] and i + 1 < len(flags) and not flags[i + 1].startswith("--")
        words = flags[i : i + 1 + takes_value]
        (kept if name in options else dropped).extend(words)
        i += len(words)
    return kept, dropped


def measurement(report, rows, config):
    """One run's timings: the child's report (its marks give the timed iterations, see bench_total.run), the run's metrics
    rows and config.json."""
    last, first = rows[-1], report["marks"][0]
    offline = sum(w for w, _ in report.get("offline", []))
    device = config["args"]["device"]
    kind = ("cuda" if config["history"][0]["gpu"] else "cpu") if device == "auto" else device.split(":")[0]
    return {"seconds": report["seconds"], "peak": report["peak"], "offline": report.get("offline", []),
            "first_iteration": first[0] - report["started"] - offline, "sampler_cache": report["sampler_cache"].get(kind) or "dynamic",
            "prompts_per_iteration": float(last["prompts_seen"]) / float(last["iteration"]),
            "batch_size": config["args"]["batch_size"], "task": config["args"]["task"], "environment": config["history"][0]}


def summarise(measured, task):
    """One row per method from its runs' measurements (a list per method, in method order); ratios are per B prompts,
    B the batch size, against sta_naive's when it was measured."""
    rows = []
    for method, runs in measured.items():
        wall = [w for m in runs for w, _ in m["seconds"]]
        cpu = [c for m in runs for _, c in m["seconds"]]
        prompts, batch = runs[0]["prompts_per_iteration"], runs[0]["batch_size"]
        offline = [w for m in runs for w, _ in m["offline"]]
        row = {"method": method, "timed_iterations": len(wall), "s_per_iteration": statistics.mean(wall),
               "s_per_iteration_std": statistics.stdev(wall) if len(wall) > 1 else 0.0,
               "cpu_s_per_iteration": statistics.mean(cpu), "prompts_per_iteration": prompts,
               "s_per_batch": statistics.mean(wall) * batch / prompts, "cpu_s_per_batch": statistics.mean(cpu) * batch / prompts,
               "peak_rss_mib": max(m["peak"]["rss_mib"] for m in runs),
               "peak_cuda_mib": max((m["peak"]["cuda_mib"] for m in runs if "cuda_mib" in m["peak"]), default=None),
               "offline_data_s": statistics.mean(offline) if offline else None,
               "first_iteration_s": statistics.mean(m["first_iteration"] for m in runs),
               "sampler_cache": runs[0]["sampler_cache"]}
        row["offline_data_iterations"] = row["offline_data_s"] / row["s_per_iteration"] if offline else None
        paper = {t: seconds[method] / seconds["sta_naive"] for t, seconds in PAPER_SECONDS.items() if method in seconds}
        row["paper_ratio"] = paper.get(task)
        row["paper_ratio_min"] = min(paper.values()) if paper else None
        row["paper_ratio_max"] = max(paper.values()) if paper else None
        rows.append(row)
    naive = next((r for r in rows if r["method"] == "sta_naive"), None)
    for row in rows:
        row["ratio_to_naive"] = row["s_per_batch"] / naive["s_per_batch"] if naive else None
        row["cpu_ratio_to_naive"] = row["cpu_s_per_batch"] / naive["cpu_s_per_batch"] if naive else None
    return rows


def discordant_pairs(rows):
    """Pairs of methods in the paper's Table 1 that the measured ratios order the other way round (0: the same order)."""
    paper = [r for r in rows if r["paper_ratio"] is not None and r["ratio_to_naive"] is not None]
    return [(a["method"], b["method"]) for i, a in enumerate(paper) for b in paper[i + 1 :]
            if (a["ratio_to_naive"] - b["ratio_to_naive"]) * (a["paper_ratio"] - b["paper_ratio"]) < 0]


def fmt(value, digits=2):
    return "–" if value is None else f"{value:.{digits}f}"


def cpu_model():
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine(environment):
    """Where it was measured, from a run's config.json history entry (tools/results.py and the runs say the same)."""
    where = environment["gpu"] or cpu_model()
    return (f"{where}, {environment['cpu_count']} cores, {environment['torch_threads']} torch thread(s) per run, "
            f"torch {environment['torch']}, transformers {environment['transformers']}, commit "
            f"{(environment['git_commit'] or '?')[:7]}, {environment['time'][:10]}")


def markdown(rows, task, command, dropped, where):
    cuda = any(r["peak_cuda_mib"] is not None for r in rows)
    caches = ", ".join(sorted({r["sampler_cache"] for r in rows}))
    lines = [f"`{command}`", "", f"Measured on {where}; sampling with the {caches} KV cache.", ""]
    left_out = [f"- {script}: left out {' '.join(words)} (not among its flags)" for script, words in dropped.items() if words]
    lines += [*left_out, *([""] if left_out else []), f"| method | s / iteration (wall) | CPU s / iteration | prompts / iteration | s / B prompts | × Naive (wall, CPU) "
              f"| paper × Naive ({task}; range) | peak RSS MiB |" + (" peak CUDA MiB |" if cuda else "") + " offline data s (iterations) "
              "| first iteration s |", "|---" * (10 + cuda) + "|"]
    for r in rows:
        paper = "–" if r["paper_ratio_max"] is None else (
            f"{fmt(r['paper_ratio'])} ({fmt(r['paper_ratio_min'])}–{fmt(r['paper_ratio_max'])})")
        offline = "–" if r["offline_data_s"] is None else f"{r['offline_data_s']:.1f} ({r['offline_data_iterations']:.1f})"
        lines.append(f"| {r['method']} | {r['s_per_iteration']:.3f} ± {r['s_per_iteration_std']:.3f} (n {r['timed_iterations']}) "
                     f"| {r['cpu_s_per_iteration']:.3f} | {r['prompts_per_iteration']:g} | {r['s_per_batch']:.3f} "
                     f"| **{fmt(r['ratio_to_naive'])}**, {fmt(r['cpu_ratio_to_naive'])} | {paper} | {r['peak_rss_mib']:.0f} |"
                     + (f" {fmt(r['peak_cuda_mib'], 0)} |" if cuda else "") + f" {offline} | {r['first_iteration_s']:.1f} |")
    compared = [r for r in rows if r["paper_ratio"] is not None and r["ratio_to_naive"] is not None]
    if compared:
        def order(key):  # ties (the paper's cwc row gives Simultaneous and PARL the same seconds) joined by "="
            ranked = sorted(compared, key=lambda r: r[key])
            return ranked[0]["method"] + "".join((" = " if b[key] == a[key] else " < ") + b["method"]
                                                 for a, b in zip(ranked, ranked[1:]))
        swapped = discordant_pairs(rows)
        lines += ["", f"Measured order (× Naive): {order('ratio_to_naive')}", f"Paper's order on {task}: {order('paper_ratio')}",
                  f"Pairs ordered differently: {len(swapped)} of {len(compared) * (len(compared) - 1) // 2}"
                  + (": " + ", ".join(f"{a}/{b}" for a, b in swapped) if swapped else "")]
    return "\n".join(lines) + "\n"


def parse(argv):
    """(the benchmark's options, the script flags after --); bad options exit 2 with argparse's message."""
    own, flags = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], usage="%(prog)s [options] -- [script flags]")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), metavar="METHOD",
                        help=f"methods (default: all): {', '.join(METHODS)}")
    parser.add_argument("--repeats", type=int, default=1, help="rounds over the methods (default 1)")
    parser.add_argument("--out", type=Path, help="write cost.md and cost.csv here")
    cli = parser.parse_args(own)
    cli.methods = list(dict.fromkeys(cli.methods))
    if cli.repeats < 1:
        parser.error("--repeats must be at least 1")
    if any(f.split("=", 1)[0] in ("--output-dir", "--run-name", "--resume") for f in flags):
        parser.error("--output-dir, --run-name and --resume are the benchmark's own: leave them out")
    return cli, flags


def commands_for(methods, flags):
    """{method: its script's flags}, {script: the flags it does not take (left out)}."""
    options = {script: script_options(script) for script in sorted({METHODS[m][0] for m in methods})}
    commands, dropped = {}, {}
    for method in methods:
        script, extra = METHODS[method]
        kept, dropped[script] = flags_for(flags, options[script])
        commands[method] = [*kept, *extra]
    return commands, dropped


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    cli, flags = parse(argv)
    commands, dropped = commands_for(cli.methods, flags)
    for script, words in dropped.items():
        if words:
            print(f"{script}: left out {' '.join(words)} (not among its flags)", flush=True)
    measured = {method: [] for method in cli.methods}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(cli.repeats):
            for method in cli.methods:
                name = f"{method}_{r}"
                rows, seconds, peak, report = run(METHODS[method][0].removesuffix(".py"), commands[method], Path(tmp), name)
                config = json.loads((Path(tmp) / name / "config.json").read_text())
                measured[method].append(measurement(report, rows, config))
                print(f"{method} round {r}: {statistics.mean(w for w, _ in seconds):.3f} s/iteration wall, "
                      f"{statistics.mean(c for _, c in seconds):.3f} CPU, {len(seconds)} timed; peak "
                      + ", ".join(f"{k} {v:.0f} MiB" for k, v in peak.items()), flush=True)
                if cli.out:  # the table so far, so that a call stopped by a time limit keeps the methods it finished
                    write(cli.out, *tables({m: runs for m, runs in measured.items() if runs}, commands, dropped, argv))
    rows, table = tables(measured, commands, dropped, argv)
    print("\n" + table)
    if cli.out:
        write(cli.out, rows, table)
        print(f"wrote {cli.out / 'cost.md'} and {cli.out / 'cost.csv'}")


def tables(measured, commands, dropped, argv):
    """(the summary rows, the markdown table) of the methods measured."""
    task = next(iter(measured.values()))[0]["task"]
    rows = summarise(measured, task)
    for row in rows:
        row["script_flags"] = " ".join([METHODS[row["method"]][0], *commands[row["method"]]])
    command = "python tools/bench_cost.py " + shlex.join(argv)
    return rows, markdown(rows, task, command, dropped, machine(next(iter(measured.values()))[0]["environment"]))


def write(out, rows, table):
    out.mkdir(parents=True, exist_ok=True)
    (out / "cost.md").write_text(table)
    with open(out / "cost.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

if __name__ == "__main__":
    main()
