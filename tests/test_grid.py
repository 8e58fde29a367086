"""tools/grid.py on tiny real runs (issue 17): the product of methods, tasks and seeds with two workers; a second call
skips everything; a checkpoint left behind is resumed, a directory without one is moved aside and restarted, a
diverged run is skipped; a failing run is reported (exit 1) while the others complete; a directory with other
arguments is left alone; --dry-run lists exactly the product; the Slurm script runs locally as an array task, stops
with a checkpoint on SIGTERM (a time limit) and a second submission finishes the run.

The grid runs in this process with its runs forked from conftest's warm interpreter (ForkedRun below: each is still
its own process, with its own log, environment, exit status and signals); the Slurm test runs everything as a shell
would, `bash` then `python` for the grid and each run."""

import contextlib
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from unittest import mock

import pytest

import conftest
from conftest import REPO, TINY, read_metrics, start_script

sys.path.insert(0, str(REPO / "tools"))
import grid  # noqa: E402


def tiny(prompts_file, iterations=4):
    """Flags for every run of a tiny grid (conftest's tiny configuration): a few seconds per run."""
    return [*TINY, "--prompts", str(prompts_file), "--iterations", str(iterations)]


# a run as grid.launch starts it (stdout and stderr appended to its log), but forked from the warm interpreter
_CHILD = """
import os, runpy, sys
os.chdir(cwd)
os.environ.clear()
os.environ.update(env)
sys.stdout.flush(), sys.stderr.flush()
with open(log, "ab") as f:
    os.dup2(f.fileno(), 1), os.dup2(f.fileno(), 2)
sys.argv = argv
sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
runpy.run_path(argv[0], run_name="__main__")
"""


class ForkedRun:
    """The part of subprocess.Popen that grid.py uses (pid, poll, send_signal), for a run forked from the warm
    interpreter (conftest's fork server)."""

    def __init__(self, command, log, env):
        variables = {"argv": list(map(str, command)), "cwd": os.getcwd(), "env": dict(env), "log": str(log)}
        self._process = conftest._fork_server()[0].Process(target=exec, args=(_CHILD, variables), daemon=True)
        self._process.start()
        self.pid = self._process.pid

    def poll(self):
        return self._process.exitcode

    def send_signal(self, sig):
        os.kill(self.pid, sig)


def run_grid(*argv):
    """grid.main(argv) in this process, runs forked; returns (exit status, stdout, commands launched)."""
    launched, real_launch = [], grid.launch

    def launch(command, log, env):
        launched.append(command)
        return ForkedRun(command, log, env) if conftest.can_fork(env) else real_launch(command, log, env)

    stdout = io.StringIO()
    with mock.patch.object(grid, "launch", launch), mock.patch.dict(os.environ, {"OMP_NUM_THREADS": "1"}), \
            contextlib.redirect_stdout(stdout):
        code = grid.main(list(map(str, argv)))
    return code, stdout.getvalue(), launched


def test_a_grid_runs_the_product_and_a_second_call_skips_everything(tmp_path, prompts_file):
    """2 methods × 1 task × 2 seeds on 2 workers: each run finishes in {task}__{method}__{seed} with its log inside;
    iterated DPO is dpo.py --online. The same command again starts nothing."""
    selection = ["--algos", "sta_naive", "iterated_dpo", "--tasks", "wc", "--seeds", "1", "2", "--workers", "2",
                 "--output-dir", tmp_path / "runs", "--", *tiny(prompts_file)]
    code, out, launched = run_grid(*selection)
    assert code == 0, out
    assert "4 runs in " in out and "4 completed, 0 skipped, 0 failed" in out, out
    names = {f"wc__{m}__{s}" for m in ("sta_naive", "iterated_dpo") for s in (1, 2)}
    assert {p.name for p in (tmp_path / "runs").iterdir()} == names  # no stray NAME.log beside them
    for name in names:
        run = tmp_path / "runs" / name
        config, status = grid.run_status(run)
        assert status == "finished" and (run / "policy").is_dir()
        assert config["args"]["seed"] == int(name[-1]) and config["args"]["run_name"] == name
        assert config["args"].get("online", False) == ("iterated_dpo" in name)
        assert config["args"]["save_every"] == 10  # the grid's default checkpointing
        log = (run / "run.log").read_text()
        assert log.startswith("# grid ") and f"done: {run}" in log
        assert [int(r["iteration"]) for r in read_metrics(run)] == [0, 1, 2, 3, 4]
    assert len(launched) == 4
    code, out, launched = run_grid(*selection)
    assert code == 0 and launched == [] and "4 runs in " in out and "0 completed, 4 skipped, 0 failed" in out, out
    code, out, _ = run_grid("--dry-run", *selection)
    assert code == 0 and len(out.splitlines()) == 4 and all(line.endswith("# finished: skipped") for line in out.splitlines())


def test_a_failing_run_is_reported_and_the_others_complete(tmp_path, prompts_file):
    """A flag that dpo.py does not have: its run fails (exit 2, nothing written, the log beside the run directory),
    the summary names it with its log and last line, the other run completes, and the grid exits with 1."""
    code, out, _ = run_grid("--algos", "iterated_dpo", "sta_naive", "--tasks", "wc", "--seeds", "1", "--workers", "2",
                            "--output-dir", tmp_path / "runs", "--", *tiny(prompts_file), "--inner-steps", "2")
    assert code == 1, out
    assert "1 completed, 0 skipped, 1 failed" in out, out
    log = tmp_path / "runs" / "wc__iterated_dpo__1.log"
    line = next(line for line in out.splitlines() if line.strip().startswith("failed: wc__iterated_dpo__1"))
    assert f"exit 2, {log}: " in line and "--inner-steps" in line, line
    assert not (tmp_path / "runs" / "wc__iterated_dpo__1").exists() and "--inner-steps" in log.read_text()
    assert grid.run_status(tmp_path / "runs" / "wc__sta_naive__1")[1] == "finished"


def test_checkpoints_resume_crashed_runs_restart_and_diverged_runs_are_skipped(tmp_path, prompts_file):
    """Seed 1 stopped with Ctrl-C (a checkpoint): resumed to the end. Seed 2 crashed before any checkpoint: its
    directory is moved aside to .old-1, never deleted, and the run starts again. Seed 3 diverged: skipped, reported
    apart, not a failure."""
    runs = tmp_path / "runs"
    first = start_script([REPO / "sta_naive.py", "--task", "wc", "--seed", "1", *tiny(prompts_file, iterations=12),
                          "--output-dir", runs, "--run-name", "wc__sta_naive__1"], env={"OMP_NUM_THREADS": "1"})
    metrics = runs / "wc__sta_naive__1" / "metrics.csv"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.05)
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 130 and (runs / "wc__sta_naive__1" / "checkpoint" / "state.pt").exists(), err[-2000:]
    stopped_at = len(read_metrics(runs / "wc__sta_naive__1")) - 1
    config = json.loads((runs / "wc__sta_naive__1" / "config.json").read_text())
    for seed, status in [(2, "running"), (3, "diverged")]:
        run = runs / f"wc__sta_naive__{seed}"
        run.mkdir()
        args = {**config["args"], "seed": seed, "run_name": run.name}
        (run / "config.json").write_text(json.dumps({**config, "args": args, "status": status}))
        (run / "metrics.csv").write_text("iteration,wall_time\n0,1.0\n")

    code, out, launched = run_grid("--algos", "sta_naive", "--tasks", "wc", "--seeds", "1", "2", "3", "--workers", "2",
                                   "--output-dir", runs, "--", *tiny(prompts_file, iterations=12))
    assert code == 0, out  # a divergence is the method's outcome, not a failure
    assert "1 resumed, 1 restarted, 0 skipped, 1 diverged, 0 failed" in out, out
    assert "diverged: wc__sta_naive__3" in out
    assert "restarted: wc__sta_naive__2: running, no checkpoint: moved aside to wc__sta_naive__2.old-1" in out
    assert len(launched) == 2 and "--resume" in launched[0] and "--resume" not in launched[1]
    assert f"resuming {runs / 'wc__sta_naive__1'} after iteration {stopped_at}" in (runs / "wc__sta_naive__1" / "run.log").read_text()
    for seed in (1, 2):
        assert [int(r["iteration"]) for r in read_metrics(runs / f"wc__sta_naive__{seed}")] == list(range(13))
        assert grid.run_status(runs / f"wc__sta_naive__{seed}")[1] == "finished"
    aside = runs / "wc__sta_naive__2.old-1"
    assert json.loads((aside / "config.json").read_text())["status"] == "running"  # kept as it was
    assert (aside / "metrics.csv").read_text() == "iteration,wall_time\n0,1.0\n"
    assert not (runs / "wc__sta_naive__3" / "policy").exists()


def test_a_run_directory_with_other_arguments_is_left_alone(tmp_path, prompts_file):
    """A finished run of another length (or scale) in the same folder: not skipped as if it were this grid's, not
    touched; reported as a failure that says what differs."""
    run = tmp_path / "runs" / "wc__sta_naive__1"
    run.mkdir(parents=True)
    config = {"algo": "sta_naive", "args": {"task": "wc", "seed": 1, "laptop": True, "iterations": 100}, "status": "finished"}
    (run / "config.json").write_text(json.dumps(config))
    code, out, launched = run_grid("--algos", "sta_naive", "--tasks", "wc", "--seeds", "1",
                                   "--output-dir", tmp_path / "runs", "--", *tiny(prompts_file))
    assert code == 1 and launched == [], out
    assert "iterations: 100 ≠ 4" in out and "left alone, use another --output-dir" in out
    assert json.loads((run / "config.json").read_text()) == config and sorted(os.listdir(tmp_path / "runs")) == [run.name]
    code, out, launched = run_grid("--algos", "sta_naive", "--tasks", "wc", "--seeds", "1",
                                   "--output-dir", tmp_path / "runs", "--", "--iterations", "100")  # paper scale now
    assert code == 1 and launched == [] and "laptop: True ≠ False" in out, out


def test_dry_run_lists_exactly_the_product(tmp_path, monkeypatch):
    """One command per run: the default grid is 9 methods × 3 tasks × 5 seeds; a selection is its product, each
    method with its script and flags, OMP_NUM_THREADS = cores // workers."""
    stdout = io.StringIO()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with contextlib.redirect_stdout(stdout):
        assert grid.main(["--dry-run", "--output-dir", str(tmp_path), "--", "--laptop"]) == 0
    lines = stdout.getvalue().splitlines()
    assert len(lines) == 9 * 3 * 5 == 135
    cores = len(os.sched_getaffinity(0))
    assert all(line.startswith(f"OMP_NUM_THREADS={cores} python ") for line in lines)
    # task, then seed, then method: the first nine are every method on wc with the first seed
    assert {line.split("--run-name ")[1].split()[0] for line in lines[:9]} == {f"wc__{m}__467" for m in grid.DEFAULT_METHODS}

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        grid.main(["--dry-run", "--algos", "iterated_dpo", "sta_total", "sta_total_gn", "--tasks", "un", "cwc",
                   "--seeds", "7", "8", "--workers", "2", "--output-dir", str(tmp_path), "--", "--laptop"])
    found = set()
    for line in stdout.getvalue().splitlines():
        words = shlex.split(line)
        assert words[0] == f"OMP_NUM_THREADS={max(1, cores // 2)}" and words[1] == "python"
        flags = words[3:]
        task, seed, name = (flags[flags.index(f) + 1] for f in ("--task", "--seed", "--run-name"))
        method = name.split("__")[1]
        script, extra = grid.METHODS[method]
        assert words[2] == os.path.relpath(REPO / script) and flags[:len(extra)] == extra
        assert name == f"{task}__{method}__{seed}" and flags[-2:] == ["--save-every", "10"] and "--laptop" in flags
        found.add((task, method, int(seed)))
    assert found == {(t, m, s) for t in ("un", "cwc") for m in ("iterated_dpo", "sta_total", "sta_total_gn") for s in (7, 8)}
    assert len(stdout.getvalue().splitlines()) == 12


@pytest.mark.parametrize("argv, message", [
    (["--", "--seed", "3"], "error: --seed is set by the grid"),
    (["--", "--output-dir=x"], "error: --output-dir is set by the grid"),
    (["--index", "135"], "error: --index 135 is outside the grid's 135 runs"),
    (["--workers", "0"], "error: --workers must be positive"),
    (["--algos", "sta_naive", "nope"], "invalid choice: 'nope'"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        grid.main(["--dry-run", *argv])
    assert stop.value.code == 2 and message in capsys.readouterr().err.strip().splitlines()[-1]


def test_an_unusable_output_dir_or_slurm_folder_is_one_line_and_exit_2_before_anything_is_written(tmp_path, capsys):
    """Issue 24: --output-dir that is a file or sits under one, a --slurm file whose folder is missing or a file, or a
    --slurm path that is a folder: one line, exit 2, and nothing written (not even the slurm/ log folder)."""
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    out = tmp_path / "out"
    cases = [
        (["--dry-run", "--output-dir", a_file], "is a file, not a folder"),
        (["--output-dir", a_file / "runs", "--slurm", tmp_path / "grid.sbatch"], f"{a_file} is a file"),
        (["--output-dir", out, "--slurm", tmp_path / "no-such-folder" / "grid.sbatch"], "does not exist: create it first"),
        (["--output-dir", out, "--slurm", a_file / "grid.sbatch"], "is a file, not a folder"),
        (["--output-dir", out, "--slurm", tmp_path], "is a folder: give the path of the script file"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as stop:
            grid.main([*map(str, argv), "--algos", "sta_naive", "--tasks", "wc", "--seeds", "1"])
        lines = capsys.readouterr().err.strip().splitlines()
        assert stop.value.code == 2 and len(lines) == 1 and message in lines[0], (argv, lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"] and a_file.read_text() == "x"


def test_dry_run_into_a_closed_pipe_ends_without_a_traceback(tmp_path):
    """Issue 24: `grid.py --dry-run | head -1`, with the reader gone before the first line: no BrokenPipeError
    traceback, nothing on stderr."""
    proc = subprocess.run(f"{shlex.quote(sys.executable)} tools/grid.py --dry-run --output-dir {tmp_path / 'runs'} | head -1",
                          shell=True, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.stdout.startswith("OMP_NUM_THREADS=") and proc.stderr == "", proc.stderr[-2000:]
    read_end, write_end = os.pipe()
    os.close(read_end)  # closed before grid.py writes anything: its first print fails
    with os.fdopen(write_end, "w") as closed:
        proc = subprocess.run([sys.executable, "tools/grid.py", "--dry-run", "--output-dir", tmp_path / "runs"], cwd=REPO,
                              stdout=closed, stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr == "", proc.stderr[-2000:]


def test_slurm_array_task_runs_its_run_and_a_time_limit_checkpoints(tmp_path, prompts_file):
    """The job-array script: one task per run, %workers, resources from the flags, SIGTERM before the time limit.
    Its body, run by bash as Slurm would with SLURM_ARRAY_TASK_ID=1, runs exactly the second run. SIGTERM to that
    shell (Slurm's `--signal=B:TERM`) reaches the training run through `exec` and the grid: the run checkpoints and
    stops, the grid exits with 143. Submitting again resumes and finishes it, and a third time skips it."""
    script, runs = tmp_path / "grid.sbatch", tmp_path / "runs"
    selection = ["--algos", "sta_naive", "--tasks", "wc", "--seeds", "1", "2", "--workers", "2", "--output-dir", runs]
    with contextlib.redirect_stdout(io.StringIO()):
        assert grid.main([*map(str, selection), "--slurm", str(tmp_path / "gpu.sbatch"), "--slurm-partition", "p1",
                          "--slurm-mem", "32G"]) == 0
        assert grid.main([*map(str, selection), "--slurm", str(script), "--slurm-gpus", "0", "--slurm-grace", "120",
                          "--", *tiny(prompts_file, iterations=12)]) == 0
    gpu = (tmp_path / "gpu.sbatch").read_text().splitlines()
    assert {"#SBATCH --gpus-per-task=1", "#SBATCH --partition=p1", "#SBATCH --mem=32G"} <= set(gpu)
    text = script.read_text()
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash" and "#SBATCH --array=0-1%2" in lines and "#SBATCH --signal=B:TERM@120" in lines
    assert "#SBATCH --cpus-per-task=4" in lines and not any("gpus" in line or "partition" in line for line in lines)
    assert f"#SBATCH --output={runs.resolve()}/slurm/%A_%a.out" in lines and (runs / "slurm").is_dir()
    assert lines[-1].startswith("exec ") and '--index "$SLURM_ARRAY_TASK_ID" --' in lines[-1]

    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "1", "OMP_NUM_THREADS": "1"}
    shell = subprocess.Popen(["bash", str(script)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    metrics = runs / "wc__sta_naive__2" / "metrics.csv"
    deadline = time.time() + 300
    while time.time() < deadline and shell.poll() is None and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.05)
    shell.send_signal(signal.SIGTERM)  # the time limit is near
    out, err = shell.communicate(timeout=300)
    assert shell.returncode == 143, out + err[-3000:]
    assert "0 completed" in out and "interrupted: wc__sta_naive__2" in out and "grid: run 1 is wc__sta_naive__2" in err
    assert sorted(p.name for p in runs.iterdir()) == ["slurm", "wc__sta_naive__2"]  # index 0's run is another task's
    assert (runs / "wc__sta_naive__2" / "checkpoint" / "state.pt").exists()
    config, status = grid.run_status(runs / "wc__sta_naive__2")
    assert status == "interrupted" and config["history"][-1].get("signal", "SIGTERM") == "SIGTERM", config["history"]

    again = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr[-3000:]
    assert "0 completed, 1 resumed, 0 skipped" in again.stdout, again.stdout
    assert [int(r["iteration"]) for r in read_metrics(runs / "wc__sta_naive__2")] == list(range(13))
    third = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0 and "0 completed, 1 skipped, 0 failed" in third.stdout, third.stdout
