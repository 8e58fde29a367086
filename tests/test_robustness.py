"""Runs that survive real use, for every algorithm script (a new script is covered by existing in conftest.SCRIPTS):
bad input, divergence, Ctrl-C, checkpoints and exact resume, reproducibility, final weights. Each run is its own
process, forked from a warm interpreter (conftest.ForkedRun) unless a test needs a fresh one."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from safetensors.torch import load_file

from conftest import REPO, SCRIPTS, TEST_MODEL, TINY, read_metrics, start_script


def tiny(prompts_file, task="wc"):
    """conftest's tiny configuration (prompts_file: its 32 train and 8 test prompts) on one task, seed 1."""
    return [*TINY, "--prompts", prompts_file, "--task", task, "--seed", "1"]


def start(args, out, env=None, fresh_interpreter=False):
    """`python args --output-dir out` on one thread, in a new process (conftest.start_script): forked from the warm
    interpreter, or with fresh_interpreter a new `python`, what a shell starts (and there NLTK_DATA can change)."""
    argv = [*map(str, args), "--output-dir", str(out)]
    return start_script(argv, env={"OMP_NUM_THREADS": "1", **(env or {})}, fresh_interpreter=fresh_interpreter)


def run_all(commands, tmp_path, env=None, fresh_interpreter=False):
    """Start every command at once, each in its own process, then collect them: (output dir, stdout, stderr, status)."""
    procs = [(tmp_path / f"case{i}", start(args, tmp_path / f"case{i}", env, fresh_interpreter))
             for i, args in enumerate(commands)]
    return [(out, *p.communicate(timeout=300), p.returncode) for out, p in procs]


@pytest.mark.parametrize("script", SCRIPTS)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(script, tmp_path, prompts_file):
    """Each bad input ends the run with exit status 2 and one `error: ...` line that names the problem (no traceback)
    before anything is written. Every case is its own process; the first also runs in a fresh interpreter."""
    empty, latin1, numbers = tmp_path / "empty.txt", tmp_path / "latin1.txt", tmp_path / "numbers.jsonl"
    empty.write_text("\n \n")
    latin1.write_bytes("caf\xe9 au lait?\n".encode("latin-1") * 10)
    numbers.write_text("".join(f'{{"prompt": {i}}}\n' for i in range(40)))
    truncated, pickled = tmp_path / "truncated-model", tmp_path / "pickle-model"
    for model in (truncated, pickled):
        shutil.copytree(TEST_MODEL, model)
    weights = truncated / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")  # what from_pretrained unpickles
    (pickled / "model.safetensors").unlink()
    no_model, missing = tmp_path / "no-such-model", tmp_path / "missing.txt"
    base = [f"{script}.py", *tiny(prompts_file)]
    cases = {  # name: (command, a distinctive part of its error line)
        "unknown task": ([*base, "--task", "sentiment"], "unknown task 'sentiment'"),
        "unknown model": ([*base, "--model", no_model], f"could not load model '{no_model}'"),
        "unreachable hub, no cache": ([*base, "--model", "facebook/opt-125m"], "could not load model 'facebook/opt-125m'"),
        "missing prompts file": ([*base, "--prompts", missing], f"prompts file '{missing}' not found"),
        "empty prompts file": ([*base, "--prompts", empty], "has 0 prompt(s)"),
        "non-UTF-8 prompts file": ([*base, "--prompts", latin1], "is not UTF-8 text"),
        "JSONL prompts that are not strings": ([*base, "--prompts", numbers], "whose value is a string"),
        "batch size 0": ([*base, "--batch-size", "0"], "--batch-size: must be an integer ≥ 1 (got 0)"),
        "iterations -1": ([*base, "--iterations", "-1"], "--iterations: must be an integer ≥ 1 (got -1)"),
        "prompt length 1 (BOS only)": ([*base, "--prompt-len", "1"], "--prompt-len: must be an integer ≥ 2"),
        "seed beyond torch's": ([*base, "--seed", str(2**64)], "--seed: must be an integer in [0, 18446744073709551615]"),
        "output dir that is a file": (base, "is a file, not a folder"),  # its --output-dir is made a file below
        "run name '.'": ([*base, "--run-name", "."], "is a path"),
        "run name '..'": ([*base, "--run-name", ".."], "is a path"),
        "run name longer than NAME_MAX": ([*base, "--run-name", "x" * (os.pathconf(tmp_path, "PC_NAME_MAX") + 1)],
                                          "this file system takes names of at most"),
        "truncated safetensors": ([*base, "--model", truncated], f"could not load model '{truncated}'"),
        "pickle weights only": ([*base, "--model", pickled], "no file named model.safetensors"),
        "resume from nowhere": ([*base, "--resume", tmp_path / "nowhere"], "not a run directory"),
        "positions beyond the model's": ([*base, "--max-new-tokens", "200"], "exceed the 128 positions"),
        "negative policy lr": ([*base, "--policy-lr", "-1"], "--policy-lr: must be a finite number > 0"),
        "run name with a path": ([*base, "--run-name", "../../x"], "is a path"),
        "batch larger than the prompts": ([*base, "--batch-size", "33"], "--batch-size 33 is larger than the 32 train prompts"),
        "not a torch device": ([*base, "--device", "gpu0"], "is not a torch device"),
    }
    if not torch.cuda.is_available():
        cases["--device cuda without CUDA"] = ([*base, "--device", "cuda"], "torch sees no CUDA GPU")
    help_run = start_script([f"{script}.py", "--help"], env={"OMP_NUM_THREADS": "1"})
    help_text = help_run.communicate(timeout=300)[0]
    assert help_run.returncode == 0 and "--batch-size" in help_text, help_text
    if "--samples-per-prompt" in help_text:
        cases["one sample per prompt"] = ([*base, "--samples-per-prompt", "1"], "--samples-per-prompt: must be an integer ≥ 2")
    for lr in sorted(set(re.findall(r"--[a-z-]+-lr\b", help_text)) - {"--policy-lr"}):  # every learning rate, 0 too
        cases[f"zero {lr}"] = ([*base, lr, "0"], f"{lr}: must be a finite number > 0")
    for coef in ("--beta", "--tau"):
        if coef in help_text:
            cases[f"negative {coef}"] = ([*base, coef, "-0.1"], f"{coef}: must be a finite number ")
            cases[f"infinite {coef}"] = ([*base, coef, "inf"], f"{coef}: must be a finite number ")
    a_file = tmp_path / f"case{list(cases).index('output dir that is a file')}"  # run_all's --output-dir of that case
    a_file.write_text("not a folder\n")
    env = {"HF_HUB_OFFLINE": "1"}
    fresh = start(cases["unknown task"][0], tmp_path / "fresh", env=env, fresh_interpreter=True)  # runs meanwhile
    results = dict(zip(cases, run_all([command for command, _ in cases.values()], tmp_path, env=env)))
    results["unknown task, fresh interpreter"] = (tmp_path / "fresh", *fresh.communicate(timeout=300), fresh.returncode)
    cases["unknown task, fresh interpreter"] = cases["unknown task"]
    for name, (out, stdout, stderr, code) in results.items():
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert code == 2, f"{name}: exit {code}\n{stderr[-2000:]}"
        assert lines and lines[-1].startswith("error: ") and "Traceback" not in stderr, f"{name}: {stderr[-2000:]}"
        assert cases[name][1] in lines[-1], f"{name}: failed for another reason: {lines[-1]}"
        assert not out.is_dir() or not any(out.iterdir()), f"{name}: wrote {list(out.iterdir())}"
    assert a_file.read_text() == "not a folder\n"
    assert not (tmp_path.parent / "x").exists()  # the path-like run name wrote nothing outside --output-dir


def test_the_tagger_loads_from_the_shipped_copy_with_no_other_nltk_data(tmp_path):
    """Issue 24: the POS tagger comes from data/nltk_data, with no NLTK_DATA, no ~/nltk_data and no network (a fresh
    interpreter: NLTK reads NLTK_DATA and HOME when it is imported)."""
    env = {**os.environ, "NLTK_DATA": str(tmp_path / "no-nltk-data"), "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", "import common; print(common.pos_tagger().tag(['The', 'cat']))"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "('cat', 'NN')" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.parametrize("script", SCRIPTS)
def test_missing_nltk_tagger_data_is_a_one_line_error(script, tmp_path, prompts_file):
    """Without the tagger data (a copy of the scripts without data/nltk_data, no NLTK_DATA, no ~/nltk_data, no
    network), `--task un` stops with one line that says how to get it, before writing anything (a fresh interpreter:
    NLTK reads NLTK_DATA and HOME when it is imported)."""
    bare = tmp_path / "bare"
    bare.mkdir()
    for source in REPO.glob("*.py"):
        shutil.copy(source, bare)
    env = {"NLTK_DATA": str(tmp_path / "no-nltk-data"), "HOME": str(tmp_path)}
    (out, stdout, stderr, code), = run_all([[bare / f"{script}.py", *tiny(prompts_file, task="un")]], tmp_path, env=env,
                                          fresh_interpreter=True)
    assert code == 2 and stderr.strip().splitlines()[-1].startswith("error: NLTK tagger data missing"), stderr[-2000:]
    assert not out.exists()


@pytest.mark.parametrize("script", SCRIPTS)
def test_an_existing_run_directory_is_refused(script, tmp_path, prompts_file):
    """--run-name of a directory that exists: exit 2 and one line, and the directory is left as it was."""
    (tmp_path / "case0" / "taken").mkdir(parents=True)
    (out, stdout, stderr, code), = run_all([[f"{script}.py", *tiny(prompts_file), "--run-name", "taken"]], tmp_path)
    assert code == 2 and "already exists" in stderr.strip().splitlines()[-1]
    assert not any((out / "taken").iterdir())


@pytest.mark.parametrize("script", SCRIPTS)
def test_divergence_stops_with_the_iteration_and_quantity_and_keeps_the_metrics(script, tmp_path, prompts_file):
    """A non-finite metric stops the run with exit 3 and a line naming the iteration and the quantity; the metrics of
    every earlier iteration are kept, finite, and no checkpoint or final weights are saved."""
    lr_flag = "--policy-lr"
    (out, stdout, stderr, code), = run_all([[f"{script}.py", *tiny(prompts_file), lr_flag, "1e30", "--iterations", "6",
                                             "--run-name", "div"]], tmp_path)
    assert code == 3, stderr[-3000:]
    message = stderr.strip().splitlines()[-1]
    assert message.startswith("diverged at iteration ") and " = " in message, message
    iteration = int(message.split()[3].rstrip(":"))
    rows = read_metrics(out / "div")
    assert [int(r["iteration"]) for r in rows] == list(range(iteration))  # everything before it, intact
    for r in rows:
        assert all(v == "" or float(v) == float(v) and abs(float(v)) != float("inf") for k, v in r.items()), r
    assert not (out / "div" / "checkpoint").exists() and not (out / "div" / "policy").exists()


def _metrics_without_time(run_dir):
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in read_metrics(run_dir)]


@pytest.mark.parametrize("script", SCRIPTS)
def test_ctrl_c_checkpoints_and_resume_reproduces_the_uninterrupted_run(script, tmp_path, prompts_file):
    """Same seed twice ⇒ identical metrics; Ctrl-C ⇒ clean stop with a checkpoint and a resume line; the resumed run
    writes the same metrics from the checkpoint on as the uninterrupted run; final weights load with from_pretrained."""
    from transformers import AutoModelForCausalLM

    args = [f"{script}.py", *tiny(prompts_file), "--iterations", "6"]
    procs = {name: start([*args, "--run-name", name], tmp_path / name) for name in ("a", "b")}
    metrics = tmp_path / "b" / "b" / "metrics.csv"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.05)
    procs["b"].send_signal(signal.SIGINT)
    _, err = procs["b"].communicate(timeout=300)
    assert procs["b"].returncode == 130, err[-3000:]
    full = tmp_path / "a"
    run_dir = tmp_path / "b" / "b"
    assert f"--resume {run_dir}" in err.strip().splitlines()[-1]
    assert (run_dir / "checkpoint" / "state.pt").exists() and not (run_dir / "checkpoint.tmp").exists()
    stopped_at = len(read_metrics(run_dir)) - 1
    assert 1 <= stopped_at < 6
    resumed = start_script([f"{script}.py", "--resume", run_dir], env={"OMP_NUM_THREADS": "1"})  # while a finishes
    _, full_err = procs["a"].communicate(timeout=300)
    assert procs["a"].returncode == 0, full_err[-3000:]
    _, resumed_err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, resumed_err[-3000:]
    assert _metrics_without_time(run_dir) == _metrics_without_time(full / "a")
    policy = AutoModelForCausalLM.from_pretrained(run_dir / "policy")
    reference = AutoModelForCausalLM.from_pretrained(full / "a" / "policy")
    assert all(torch.equal(p, q) for p, q in zip(policy.parameters(), reference.parameters()))
