"""Every method × task × seed of the paper's experiments, run locally with N workers or as a Slurm job array (issue 17).

    python tools/grid.py --workers 2 -- --laptop                        # the whole grid at laptop scale, here
    python tools/grid.py --algos sta_naive sta_total --tasks cwc --seeds 467 532 -- --laptop
    python tools/grid.py --dry-run -- --laptop                          # the commands, one per line
    python tools/grid.py --slurm grid.sbatch --workers 20 --slurm-time 6:00:00   # paper scale, GPUs: sbatch grid.sbatch

Each run is `python {script}.py --task T --seed S [flags after --] --output-dir DIR --run-name {task}__{method}__{seed}
--save-every K`, with its stdout and stderr in DIR/NAME/run.log (in DIR/NAME.log until the script has made DIR/NAME, and
there for good if it never does, e.g. on bad input). OMP_NUM_THREADS = cores // workers unless it is set.

The same command, run again, completes a grid after a crash, Ctrl-C, a reboot or a Slurm time limit:
- a run whose config.json says "finished" or "diverged" is skipped (a divergence is the method's outcome, not a
  failure: re-running the same seed diverges again);
- a run with a complete checkpoint (common.checkpoint_dir: DIR/NAME/checkpoint/, or the checkpoint.tmp/ or
  checkpoint.old/ a run killed while checkpointing leaves) is resumed with `--resume DIR/NAME`, whatever its status
  ("interrupted", "failed", or "running" after a crash);
- a run directory without a checkpoint is moved aside to DIR/NAME.old-<n> (never deleted) and the run starts again;
- a run directory whose arguments differ from the grid's flags (say `--laptop` then paper scale into the same DIR) is
  left alone and reported as a failure: pass another --output-dir.
Two grids must not share a folder at the same time (Slurm's array tasks do not: each has its own run). A failed run
never stops the others. Ctrl-C or SIGTERM to the grid sends SIGTERM to every running run, which finishes its iteration
and writes a checkpoint; the grid waits for them and exits with 130 or 143 (a second Ctrl-C aborts the runs at once).
Exit status 1 if a run failed or was interrupted from outside the grid, 2 on bad input, else 0.

`--slurm FILE` writes a job array instead of running: one array task per run (`--array=0-(n-1)%workers`), resources
from the --slurm-* flags, a log per task in DIR/slurm/, and SIGTERM --slurm-grace seconds before the time limit. Each
task calls this runner with `--index $SLURM_ARRAY_TASK_ID` (one run of the same selection), so skip and resume are
the same there: submit the same file again to finish a grid.

CleanRL's benchmark utility (cleanrl_utils/benchmark.py) is the model; unlike it, this one reports failed runs,
skips finished ones, resumes interrupted ones, and sweeps methods and tasks as well as seeds.
"""

import argparse
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import quiet_pipe  # noqa: F401  (`python tools/X.py | head` ends without a BrokenPipeError traceback)

from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from common import checkpoint_dir  # noqa: E402  (the rule --resume goes by: a checkpoint killed mid-write counts)

# method: (script, extra flags); iterated DPO is dpo.py --online (D16), sta_total_gn the Gauss-Newton curvature (D13)
METHODS = {
    "sta_naive": ("sta_naive.py", []),
    "sta_total": ("sta_total.py", []),
    "simultaneous": ("simultaneous.py", []),
    "reversed": ("reversed.py", []),
    "parl": ("parl.py", []),
    "ppo": ("ppo.py", []),
    "dpo": ("dpo.py", []),
    "iterated_dpo": ("dpo.py", ["--online"]),
    "dro_v": ("dro_v.py", []),
    "sta_total_gn": ("sta_total.py", ["--curvature", "gauss-newton"]),
}
DEFAULT_METHODS = [m for m in METHODS if m != "sta_total_gn"]  # the paper's eight and DRO-V
TASKS = ["wc", "cwc", "un"]
SEEDS = [467, 532, 6518, 7107, 8688]  # D21
# set by the grid for every run, so never in the flags after --
OWN_FLAGS = ["--task", "--seed", "--output-dir", "--run-name", "--resume"]
# arguments that may differ between a run directory and the grid's flags (as in tools/results.py)
FREE_ARGS = {"seed", "run_name", "output_dir", "resume", "device", "save_every", "track", "wandb_project",
             "wandb_entity", "tensorboard"}


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def check_writable_folder(folder, what):
    """`folder` is, or can be created as, a folder this process can write: else one line, exit 2, nothing written."""
    if folder.exists() and not folder.is_dir():
        fail(f"{what} {folder} is a file, not a folder: give a folder")
    existing = next(p for p in [folder, *folder.parents] if p.exists())  # the folder, or where it would be created
    if not existing.is_dir():
        fail(f"{what} {folder} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        fail(f"{what} {folder} is not writable ({existing}): give a folder you can write to")


def run_status(run_dir):
    """(config or None, status): status from config.json ("running", "interrupted", "failed", "finished",
    "diverged"); runs written before config.json had one count as finished when policy/ exists, diverged when their
    log says so."""
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None, None
    status = config.get("status")
    if status is None:
        status = "finished" if (run_dir / "policy").is_dir() else "running"
        if status == "running" and last_line(run_dir / "run.log").startswith("diverged at iteration"):
            status = "diverged"
    return config, status


def last_line(log):
    """The line of a log that says why it ended: the last of its last ten lines that mentions an error (a traceback's
    last line, the scripts' `error: ...`, tyro's unrecognized options), else the last one with words in it. Progress
    bars redraw with \\r (the text after the last one counts); the frame of tyro's boxes is dropped."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 8192))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [line.strip(" │╭╮╰╯─") for line in text.replace("\r", "\n").splitlines()]
    lines = [line for line in lines if any(c.isalnum() for c in line)]
    errors = [line for line in lines[-10:] if re.search(r"error|exception|unrecognized|invalid", line, re.IGNORECASE)]
    return (errors or lines or [""])[-1]


def flag_values(flags):
    """{field: value} from flags like `--laptop --iterations 20 --no-online --curvature=gauss-newton`."""
    values, i = {}, 0
    while i < len(flags):
        if flags[i].startswith("--"):
            name, _, value = flags[i][2:].partition("=")
            following = []
            while not value and i + 1 < len(flags) and not flags[i + 1].startswith("--"):
                following.append(flags[i + 1])
                i += 1
            field = name.replace("-", "_")
            if value or following:
                values[field] = value or (following[0] if len(following) == 1 else following)
            elif field.startswith("no_"):
                values[field[3:]] = False
            else:
                values[field] = True
        i += 1
    return values


def same(saved, given):
    """Whether a saved argument equals a flag's value (a string, a list of strings, or True/False for a bare flag)."""
    if isinstance(saved, bool) or isinstance(given, bool):
        return str(saved).lower() == str(given).lower()
    if isinstance(saved, list):
        return [str(v) for v in saved] == (given if isinstance(given, list) else [given])
    try:
        return float(saved) == float(given)  # 1e-4 and 0.0001 are the same learning rate
    except (TypeError, ValueError):
        return str(saved) == str(given)


def conflicts(config, flags):
    """The arguments of a run directory that differ from the grid's flags: ["iterations: 100 ≠ 20", ...]."""
    saved, wanted = config.get("args", {}), flag_values(flags)
    wanted.setdefault("laptop", False)  # the preset changes the defaults of everything
    return [f"{field}: {saved[field]} ≠ {value}" for field, value in wanted.items()
            if field not in FREE_ARGS and field in saved and not same(saved[field], value)]


def plan(runs, output_dir, flags, save_every):
    """What to do with each run: (run, action, command, note), action one of start, resume, restart, skip, diverged,
    conflict. run = (task, method, seed, name)."""
    out = []
    for task, method, seed, name in runs:
        script, extra = METHODS[method]
        run_dir = output_dir / name
        checkpoint = ["--save-every", str(save_every)] if save_every and "--save-every" not in flags else []
        fresh = [str(REPO / script), *extra, "--task", task, "--seed", str(seed), *flags,
                 "--output-dir", str(output_dir), "--run-name", name, *checkpoint]
        resume = [str(REPO / script), "--resume", str(run_dir), *extra, *flags, *checkpoint]
        action, command, note = "start", fresh, ""
        if run_dir.exists():
            config, status = run_status(run_dir)
            differ = conflicts(config, [*extra, *flags]) if config else []
            if differ:
                action, note = "conflict", f"{run_dir} has other arguments ({'; '.join(differ)}): left alone, use " \
                                           "another --output-dir"
            elif status == "finished":
                action, note = "skip", "finished"
            elif status == "diverged":
                action, note = "diverged", "diverged before"
            elif checkpoint_dir(run_dir):
                action, command = "resume", resume
            else:
                action, note = "restart", f"{status or 'no config.json'}, no checkpoint"
        out.append(((task, method, seed, name), action, command, note))
    return out


def move_aside(run_dir):
    """DIR/NAME -> DIR/NAME.old-<n> with the first free n; returns the new path."""
    n = 1
    while run_dir.with_name(f"{run_dir.name}.old-{n}").exists():
        n += 1
    aside = run_dir.with_name(f"{run_dir.name}.old-{n}")
    run_dir.rename(aside)
    return aside


def launch(command, log, env):
    """Start one run (`python script.py ...`), stdout and stderr appended to log. It gets a session of its own, so a
    Ctrl-C at the terminal reaches the grid alone, which passes on exactly one SIGTERM."""
    with open(log, "ab") as f:
        return subprocess.Popen([sys.executable, *command], stdout=f, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


def duration(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def run_grid(planned, output_dir, workers, env):
    """Run the planned runs, at most `workers` at once, with one progress bar; returns (outcomes, the signal that
    stopped the grid or None, seconds): outcomes {name: (outcome, detail)}, outcome one of completed, resumed,
    restarted, skipped, diverged, failed, interrupted, not started."""
    decided = {"skip": "skipped", "diverged": "diverged", "conflict": "failed"}  # before anything runs
    outcomes = {run[3]: (decided[action], note) for run, action, _, note in planned if action in decided}
    queue = [p for p in planned if p[1] in ("start", "resume", "restart")]
    running, times, stop = {}, [], {"signal": None}

    def on_signal(signum, frame):
        first = stop["signal"] is None
        stop["signal"] = stop["signal"] or signum
        for proc, *_ in running.values():
            try:  # first SIGTERM: each run finishes its iteration and checkpoints; then SIGINT, a second Ctrl-C: abort
                proc.send_signal(signal.SIGTERM if first else signal.SIGINT)
            except ProcessLookupError:
                pass
        what = "the runs stop after their iteration, with a checkpoint" if first else "again: the runs stop at once"
        print(f"\ngrid: {signal.Signals(signum).name}: {what}; run the same command again to resume", file=sys.stderr)

    handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    bar = tqdm(total=len(planned), initial=len(outcomes), desc="grid", file=sys.stderr, dynamic_ncols=True,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} runs [{elapsed}{postfix}]")
    start = last_draw = time.time()
    redraw = 1 if sys.stderr.isatty() else 60  # seconds; a log (Slurm's) gets a line a minute, plus one per run done
    try:
        while queue or running:
            while queue and len(running) < workers and stop["signal"] is None:
                (task, method, seed, name), action, command, note = queue.pop(0)
                run_dir = output_dir / name
                if action == "restart":
                    note = f"{note}: moved aside to {move_aside(run_dir).name}, started again"
                run_dir.parent.mkdir(parents=True, exist_ok=True)
                log = run_dir / "run.log" if run_dir.is_dir() else run_dir.with_name(f"{name}.log")
                with open(log, "a") as f:
                    f.write(f"# grid {datetime.now().isoformat(timespec='seconds')}: "
                            f"{shlex.join([Path(sys.executable).name, *command])}\n")
                running[name] = (launch(command, log, env), action, note, run_dir, log, time.time())
            time.sleep(0.2)
            for name, (proc, action, note, run_dir, log, began) in list(running.items()):
                if log.parent != run_dir and run_dir.is_dir():  # the script made its directory: the log moves in
                    log.rename(run_dir / "run.log")
                    log = run_dir / "run.log"
                    running[name] = (proc, action, note, run_dir, log, began)
                code = proc.poll()
                if code is None:
                    continue
                del running[name]
                if code == 0:
                    outcomes[name] = ({"start": "completed", "resume": "resumed"}.get(action, "restarted"), note)
                    times.append(time.time() - began)
                elif code == 3:
                    outcomes[name] = ("diverged", last_line(log))
                    times.append(time.time() - began)
                elif code in (130, 143, -signal.SIGINT, -signal.SIGTERM):
                    outcomes[name] = ("interrupted", f"{log}: {last_line(log)}")
                else:
                    outcomes[name] = ("failed", f"exit {code}, {log}: {last_line(log)}")
                bar.update(outcomes[name][0] != "interrupted")  # the bar counts the runs that are done
                last_draw = 0
            if stop["signal"] is not None:
                for run, *_ in queue:
                    outcomes[run[3]] = ("not started", "")
                queue = []
            failed = sum(o == "failed" for o, _ in outcomes.values())
            left = len(planned) - len(outcomes)
            if time.time() - last_draw >= redraw:
                # ETA: the mean time of the runs that ended here, for the rounds of `workers` runs still to go
                eta = duration(sum(times) / len(times) * math.ceil(left / workers)) if times else "?"
                bar.set_postfix_str(f"{len(running)} running, {failed} failed, ETA {eta}", refresh=False)
                bar.refresh()
                last_draw = time.time()
    finally:
        bar.close()
        for s, handler in handlers.items():
            signal.signal(s, handler)
    return outcomes, stop["signal"], time.time() - start


def summary(planned, outcomes, elapsed):
    """Counts per outcome, then one line per run that did not complete."""
    order = ["completed", "resumed", "restarted", "skipped", "diverged", "failed", "interrupted", "not started"]
    counts = {o: sum(v[0] == o for v in outcomes.values()) for o in order}
    shown = [o for o in order if counts[o] or o in ("completed", "skipped", "failed")]
    lines = [f"grid: {len(planned)} runs in {duration(elapsed)}: " + ", ".join(f"{counts[o]} {o}" for o in shown)]
    for outcome in ["restarted", "diverged", "failed", "interrupted", "not started"]:
        for run, *_ in planned:
            if outcomes[run[3]][0] == outcome:
                lines.append(f"  {outcome}: {run[3]}" + (f": {outcomes[run[3]][1]}" if outcomes[run[3]][1] else ""))
    if counts["interrupted"] or counts["not started"]:
        lines.append("  run the same command again to resume the interrupted runs and start the others")
    return "\n".join(lines)


def slurm_script(cli, runs, flags, output_dir):
    """A job array: one task per run, each `grid.py <same selection> --index $SLURM_ARRAY_TASK_ID -- flags`."""
    selection = ["--algos", *cli.algos, "--tasks", *cli.tasks, "--seeds", *map(str, cli.seeds),
                 "--output-dir", str(output_dir.resolve()), "--save-every", str(cli.save_every)]
    logs = output_dir.resolve() / "slurm"
    sbatch = [f"--job-name={cli.slurm_job_name}", f"--array=0-{len(runs) - 1}%{cli.workers}", "--ntasks=1",
              f"--cpus-per-task={cli.slurm_cpus}", f"--time={cli.slurm_time}", f"--output={logs}/%A_%a.out",
              f"--signal=B:TERM@{cli.slurm_grace}"]
    sbatch += [f"--gpus-per-task={cli.slurm_gpus}"] if cli.slurm_gpus else []
    sbatch += [f"--mem={cli.slurm_mem}"] if cli.slurm_mem else []
    sbatch += [f"--partition={cli.slurm_partition}"] if cli.slurm_partition else []
    grid = [sys.executable, str(Path(__file__).resolve()), *selection, "--index"]
    return "\n".join([
        "#!/bin/bash",
        f"# Written by tools/grid.py: {len(runs)} runs, one array task each ({runs[0][3]} ... {runs[-1][3]}).",
        "# Submit with `sbatch THIS_FILE`; submit it again to skip the finished runs and resume the others.",
        *(f"#SBATCH {line}" for line in sbatch),
        f"# {cli.slurm_grace} s before the time limit Slurm sends SIGTERM to this shell (B:); `exec` makes the grid",
        "# runner this shell, and it passes the signal on to the training run, which writes a checkpoint and exits.",
        f"cd {shlex.quote(os.getcwd())}",
        f'exec {shlex.join(grid)} "$SLURM_ARRAY_TASK_ID" -- {shlex.join(flags)}'.rstrip(),
        "",
    ])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    flags = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="flags after -- go to every run",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", default=DEFAULT_METHODS, choices=list(METHODS), metavar="METHOD",
                        help=f"methods (default: all but sta_total_gn): {', '.join(METHODS)}")
    parser.add_argument("--tasks", nargs="+", default=TASKS, choices=TASKS, help="tasks (default: all three)")
    parser.add_argument("--seeds", nargs="+", type=int, default=SEEDS, help="seeds (default: the paper's five, D21)")
    parser.add_argument("--workers", type=int, default=1, help="runs at once (with --slurm: array tasks at once)")
    parser.add_argument("--output-dir", default="runs", help="the runs go to OUTPUT_DIR/{task}__{method}__{seed}")
    parser.add_argument("--save-every", type=int, default=10, help="each run checkpoints every this many iterations")
    parser.add_argument("--dry-run", action="store_true", help="print the command of every run, one per line")
    parser.add_argument("--index", type=int, help="run only the run with this index (0-based) in the selection")
    parser.add_argument("--slurm", metavar="FILE", help="write a Slurm job-array script to FILE instead of running")
    parser.add_argument("--slurm-gpus", type=int, default=1, help="GPUs per array task (0: none)")
    parser.add_argument("--slurm-cpus", type=int, default=4, help="CPUs per array task")
    parser.add_argument("--slurm-time", default="12:00:00", help="time limit per array task (Slurm format)")
    parser.add_argument("--slurm-mem", default="", help="memory per array task, e.g. 32G (default: the cluster's)")
    parser.add_argument("--slurm-partition", default="", help="partition (default: the cluster's)")
    parser.add_argument("--slurm-grace", type=int, default=300,
                        help="seconds before the time limit at which the run is told to checkpoint and stop")
    parser.add_argument("--slurm-job-name", default="stackelberg-rlhf", help="job name")
    cli = parser.parse_args(argv)
    own = [f for f in flags if f.split("=")[0] in OWN_FLAGS]
    if own:
        fail(f"{own[0].split('=')[0]} is set by the grid for every run: use --tasks, --seeds or --output-dir instead")
    if cli.workers < 1 or cli.save_every < 0:
        fail("--workers must be positive and --save-every non-negative")
    missing = sorted({METHODS[m][0] for m in cli.algos if not (REPO / METHODS[m][0]).exists()})
    if missing:
        fail(f"{', '.join(missing)} not found in {REPO}")
    # task, then seed, then method: a grid cut short holds every method's runs of its first seeds (comparable)
    runs = [(task, method, seed, f"{task}__{method}__{seed}") for task in cli.tasks for seed in cli.seeds
            for method in cli.algos]
    runs = list(dict.fromkeys(runs))  # a method or seed given twice runs once
    if cli.index is not None:
        if not 0 <= cli.index < len(runs):
            fail(f"--index {cli.index} is outside the grid's {len(runs)} runs (0 to {len(runs) - 1})")
        runs = [runs[cli.index]]
    output_dir = Path(cli.output_dir)
    check_writable_folder(output_dir, "--output-dir")
    if cli.slurm:
        slurm_folder = Path(cli.slurm).absolute().parent
        if Path(cli.slurm).is_dir():
            fail(f"--slurm {cli.slurm} is a folder: give the path of the script file to write")
        if not slurm_folder.is_dir():
            fail(f"--slurm {cli.slurm}: its folder {slurm_folder} " + ("is a file, not a folder" if slurm_folder.exists()
                                                                       else "does not exist: create it first"))
        if not os.access(slurm_folder, os.W_OK | os.X_OK):
            fail(f"--slurm {cli.slurm}: its folder {slurm_folder} is not writable")
        output_dir.joinpath("slurm").mkdir(parents=True, exist_ok=True)
        Path(cli.slurm).write_text(slurm_script(cli, runs, flags, output_dir))
        print(f"wrote {cli.slurm}: {len(runs)} array tasks, {cli.workers} at once; submit it with: sbatch {cli.slurm}")
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, cores // (1 if cli.index is not None else cli.workers)))
    env = {**os.environ, "OMP_NUM_THREADS": threads}
    planned = plan(runs, output_dir, flags, cli.save_every)
    if cli.dry_run:
        for run, action, command, note in planned:
            line = shlex.join(["python", os.path.relpath(command[0]), *command[1:]])
            comment = {"skip": "  # finished: skipped", "diverged": "  # diverged: skipped", "resume": "  # resume",
                       "restart": f"  # {note}: restart, the folder moved aside",
                       "conflict": f"  # conflict: {note}"}.get(action, "")
            print(f"OMP_NUM_THREADS={threads} {line}{comment}")
        return 0
    if cli.index is not None:
        print(f"grid: run {cli.index} is {runs[0][3]}", file=sys.stderr)
    outcomes, stopped, elapsed = run_grid(planned, output_dir, cli.workers, env)
    print(summary(planned, outcomes, elapsed))
    if stopped:
        return 128 + stopped
    return 1 if any(o in ("failed", "interrupted") for o, _ in outcomes.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
