"""Shared fixtures: the model the tests run on, and a way to run a script end to end."""

import csv
import multiprocessing
import multiprocessing.forkserver
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network


def pytest_configure(config):
    # torch.func.jvp (test_pair_directional_derivatives_match_jvp_and_finite_differences) registers torch's own JVP
    # decompositions on first use through torch.jit.script, which torch 2.13 deprecates: 18 warnings from inside torch
    # (torch/_decomp/decompositions_for_jvp.py), none from our code, and nothing we can change.
    config.addinivalue_line("filterwarnings", "ignore:`torch.jit.script` is deprecated:DeprecationWarning")


# the algorithm scripts that exist; tests parametrised over scripts pick them up from here
SCRIPTS = [s for s in ["sta_naive", "sta_total", "reversed", "simultaneous", "parl", "ppo", "dpo", "dro_v"]
           if (REPO / f"{s}.py").exists()]
TEST_MODEL = os.environ.get("STACKELBERG_TEST_MODEL", str(REPO / "data" / "laptop-opt"))


@pytest.fixture(scope="session")
def model_dir():
    """The shipped laptop model: small enough for every unit test."""
    return TEST_MODEL


# a tiny configuration on the laptop model, a few seconds per run: flags, and a 40-line prompts file (32 train, 8 test)
TINY = ["--laptop", "--model", TEST_MODEL, "--batch-size", "2", "--max-new-tokens", "12", "--eval-every", "3",
        "--eval-batch-size", "8"]
TINY_PROMPTS = [f"Tell me something about topic number {i}, please." for i in range(40)]


@pytest.fixture(scope="session")
def prompts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("\n".join(TINY_PROMPTS) + "\n")
    return path


def run_script(script, *args, tmp_path, timeout=600, env=None):
    """Run `python {script}.py args --output-dir tmp_path/runs` (start_script); returns (completed process, run
    directory or None)."""
    out = Path(tmp_path) / "runs"
    argv = [str(REPO / f"{script}.py"), *map(str, args), "--output-dir", str(out)]
    proc = start_script(argv, env=env)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    runs = sorted(out.glob("*")) if out.exists() else []
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr), (runs[-1] if runs else None)


def read_metrics(run_dir):
    with open(Path(run_dir) / "metrics.csv") as f:
        return list(csv.DictReader(f))


def eval_rewards(run_dir):
    """(iteration, eval/reward) at every evaluation of a run."""
    return [(int(r["iteration"]), float(r["eval/reward"])) for r in read_metrics(run_dir) if r.get("eval/reward")]


# ---------------------------------------------------------------------------------------------------- forked runs
# Starting Python and importing torch, transformers and NLTK costs ~5 CPU-seconds per script run, more than a tiny run
# itself, and the tests start ~170 runs. A fork server (multiprocessing's) imports them once; each run is then a new
# child process forked from it that runs the script as __main__, as `python script.py args` does, with its own argv,
# environment, working directory, stdout, stderr and exit status, and takes the signals sent to its pid. What the
# preloaded modules read from the environment as they load is the server's, so a run that needs other values of
# READ_AT_IMPORT gets a fresh interpreter instead (start_script).
FORK_SERVER_PRELOAD = ["torch", "torch._inductor", "transformers", "transformers.models.opt.modeling_opt", "tyro", "tqdm",
                       "safetensors.torch", "nltk"]
# the tests' runs are on one thread; a run that inherits another setting from the caller gets a fresh interpreter
FORK_SERVER_ENV = {"OMP_NUM_THREADS": "1"}
READ_AT_IMPORT = ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "HF_HUB_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "XDG_CACHE_HOME",
                  "NLTK_DATA", "HOME"]
_CHILD = """
import os, runpy, sys
os.chdir(cwd)
os.environ.clear()
os.environ.update(env)
sys.stdout.flush(), sys.stderr.flush()
for fd, path in ((1, stdout), (2, stderr)):
    with open(path, "wb") as f:
        os.dup2(f.fileno(), fd)
sys.argv = argv
sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
runpy.run_path(argv[0], run_name="__main__")
"""
_FORK_SERVER = {}


def _fork_server():
    """The forkserver context and the environment its server started with (os.environ and FORK_SERVER_ENV); started on
    first use, kept until pytest exits."""
    if not _FORK_SERVER:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(FORK_SERVER_PRELOAD)
        with mock.patch.dict(os.environ, FORK_SERVER_ENV):
            multiprocessing.forkserver.ensure_running()
            _FORK_SERVER.update(context=context, env=dict(os.environ))
    return _FORK_SERVER["context"], _FORK_SERVER["env"]


def can_fork(env):
    """Whether a run with this full environment can be forked: READ_AT_IMPORT as the fork server read them."""
    if "forkserver" not in multiprocessing.get_all_start_methods():  # Windows
        return False
    server_env = _fork_server()[1]
    return all(env.get(k) == server_env.get(k) for k in READ_AT_IMPORT)


class ForkedRun:
    """`python argv...` in cwd, with env added to os.environ, as a child of the fork server; has the part of
    subprocess.Popen that the tests use: pid, send_signal, kill, communicate (stdout and stderr as text) and returncode
    (SystemExit's code, as the interpreter makes it the exit status; an uncaught exception prints its traceback, 1)."""

    def __init__(self, argv, cwd=REPO, env=None):
        env = {**os.environ, **(env or {})}
        assert can_fork(env), f"{READ_AT_IMPORT} differ from the fork server's: use a fresh interpreter"
        self._files = {}
        for name in ("stdout", "stderr"):
            fd, self._files[name] = tempfile.mkstemp(prefix=f"forked-run-{name}-")
            os.close(fd)
        variables = {"argv": list(map(str, argv)), "cwd": str(cwd), "env": env, **self._files}
        # daemon: a run a failed test left behind is ended when pytest exits, instead of pytest waiting for it
        self._process = _fork_server()[0].Process(target=exec, args=(_CHILD, variables), daemon=True)
        self._process.start()
        self.pid = self._process.pid

    def send_signal(self, sig):
        os.kill(self.pid, sig)

    def kill(self):
        self._process.kill()

    @property
    def returncode(self):
        return self._process.exitcode

    def communicate(self, timeout=None):
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(self._process.name, timeout)
        outputs = tuple(Path(self._files[name]).read_text(errors="replace") for name in ("stdout", "stderr"))
        for path in self._files.values():
            os.unlink(path)
        return outputs


def start_script(argv, cwd=REPO, env=None, fresh_interpreter=False):
    """Start `python argv...` (env added to os.environ), stdout and stderr captured as text: forked (ForkedRun) when
    the environment allows, else, or with fresh_interpreter, as a new `python` process (what a shell starts)."""
    if fresh_interpreter or not can_fork({**os.environ, **(env or {})}):
        return subprocess.Popen([sys.executable, *map(str, argv)], cwd=cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    return ForkedRun(argv, cwd=cwd, env=env)
