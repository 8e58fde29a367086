"""tools/bench_cost.py (issue 15): which flags go to which script, the timer's marks turned into iteration times with the
evaluation left out, the ratio arithmetic at equal prompts (PARL's outer iteration takes 5B prompts) beside the paper's
Table 1, the order comparison, one real invocation on the laptop model that writes the table, and the paper-shape
model of tools/build_shape_model.py."""

import csv
import os
import subprocess
import sys

import pytest
import torch

import common
from conftest import REPO, TINY

sys.path.insert(0, str(REPO / "tools"))
import bench_cost  # noqa: E402
from bench_total import iteration_seconds  # noqa: E402
from results import PAPER_SECONDS  # noqa: E402


def test_flags_go_only_to_the_scripts_that_take_them():
    flags = ["--laptop", "--task", "cwc", "--cg-damping", "10", "--online", "--iterations=3", "--policy-lr", "-1e-4"]
    options = {"--laptop", "--task", "--iterations", "--policy-lr"}
    kept, dropped = bench_cost.flags_for(flags, options)
    assert kept == ["--laptop", "--task", "cwc", "--iterations=3", "--policy-lr", "-1e-4"]
    assert dropped == ["--cg-damping", "10", "--online"]
    assert {"--cg-damping", "--curvature", "--no-implicit"} <= bench_cost.script_options("sta_total.py")
    assert "--cg-damping" not in bench_cost.script_options("sta_naive.py")
    assert "--online" in bench_cost.script_options("dpo.py")


def test_iteration_times_leave_out_the_first_iteration_and_the_evaluations():
    # (wall, CPU, evaluation wall so far, evaluation CPU so far) at the end of each iteration
    marks = [(10.0, 5.0, 3.0, 2.0), (12.0, 6.0, 3.0, 2.0), (17.0, 9.0, 6.5, 4.5), (19.5, 10.0, 6.5, 4.5)]
    assert iteration_seconds(marks) == [(2.0, 1.0), (1.5, 0.5), (2.5, 1.0)]


def synthetic(seconds, prompts, batch=16, rss=1000.0, offline=()):
    return {"seconds": seconds, "peak": {"rss_mib": rss}, "offline": list(offline), "prompts_per_iteration": prompts,
            "batch_size": batch, "task": "cwc", "first_iteration": 5.0, "sampler_cache": "dynamic"}


def test_ratios_are_at_equal_prompts_beside_the_papers_table():
    measured = {
        "sta_naive": [synthetic([(2.0, 1.0), (4.0, 3.0)], 16), synthetic([(3.0, 2.0)], 16, rss=1200.0)],
        "parl": [synthetic([(10.0, 5.0), (12.0, 7.0)], 80)],  # 5B prompts an outer iteration
        "dpo": [synthetic([(0.5, 0.25)], 16, offline=[(30.0, 29.0)])],
        "dro_v": [synthetic([(0.6, 0.3)], 16, offline=[(33.0, 31.0)])],
        "sta_total": [synthetic([(6.0, 4.0)], 16)],
    }
    rows = {r["method"]: r for r in bench_cost.summarise(measured, "cwc")}
    naive, parl, dpo, total = rows["sta_naive"], rows["parl"], rows["dpo"], rows["sta_total"]
    assert naive["timed_iterations"] == 3 and naive["s_per_iteration"] == pytest.approx(3.0)
    assert naive["s_per_iteration_std"] == pytest.approx(1.0) and naive["cpu_s_per_iteration"] == pytest.approx(2.0)
    assert naive["peak_rss_mib"] == 1200.0 and naive["ratio_to_naive"] == pytest.approx(1.0)
    assert parl["s_per_iteration"] == pytest.approx(11.0) and parl["s_per_batch"] == pytest.approx(11.0 / 5)
    assert parl["ratio_to_naive"] == pytest.approx(2.2 / 3.0) and parl["cpu_ratio_to_naive"] == pytest.approx(1.2 / 2.0)
    assert dpo["offline_data_s"] == 30.0 and dpo["offline_data_iterations"] == pytest.approx(60.0)
    assert total["ratio_to_naive"] == pytest.approx(2.0)
    paper = PAPER_SECONDS["cwc"]
    assert total["paper_ratio"] == pytest.approx(paper["sta_total"] / paper["sta_naive"])
    totals = [s["sta_total"] / s["sta_naive"] for s in PAPER_SECONDS.values()]
    assert (total["paper_ratio_min"], total["paper_ratio_max"]) == pytest.approx((min(totals), max(totals)))
    assert rows["dro_v"]["paper_ratio"] is None and rows["dro_v"]["paper_ratio_max"] is None  # not in the paper
    # the paper on cwc: dpo 0.27 < parl 0.56 < naive 1 < total 4.6; measured: dpo 0.17 < parl 0.73 < naive < total
    assert bench_cost.discordant_pairs(list(rows.values())) == []
    measured["parl"] = [synthetic([(20.0, 10.0)], 80)]  # now 1.33× Naive: above it, unlike the paper
    rows = bench_cost.summarise(measured, "cwc")
    assert bench_cost.discordant_pairs(rows) == [("sta_naive", "parl")]
    table = bench_cost.markdown(rows, "cwc", "python tools/bench_cost.py", {"sta_naive.py": ["--cg-damping", "10"]}, "here")
    assert "Pairs ordered differently: 1 of 6: sta_naive/parl" in table
    assert "sta_naive.py: left out --cg-damping 10" in table
    assert "| dro_v | 0.600 ± 0.000 (n 1) |" in table and "| 33.0 (55.0) |" in table


def test_a_real_invocation_writes_the_table(tmp_path, prompts_file):
    out = tmp_path / "cost"
    flags = [*TINY, "--prompts", str(prompts_file), "--iterations", "2", "--task", "cwc", "--cg-damping", "10"]
    bench_cost.main(["--methods", "sta_naive", "dpo", "--out", str(out), "--", *flags])
    with open(out / "cost.csv") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"sta_naive", "dpo"}
    for row in rows.values():
        assert int(row["timed_iterations"]) == 1 and float(row["s_per_iteration"]) > 0 and float(row["peak_rss_mib"]) > 100
        assert float(row["prompts_per_iteration"]) == 2  # --batch-size 2
    assert float(rows["sta_naive"]["ratio_to_naive"]) == 1.0
    assert float(rows["dpo"]["offline_data_s"]) > 0 and rows["sta_naive"]["offline_data_s"] == ""
    assert "--cg-damping" not in rows["dpo"]["script_flags"]
    assert all(float(r["first_iteration_s"]) > 0 and r["sampler_cache"] == "dynamic" for r in rows.values())  # CPU's
    table = (out / "cost.md").read_text()
    assert "| sta_naive |" in table and "| dpo |" in table and "Measured on " in table


def test_ties_in_the_papers_order_and_a_script_whose_help_fails():
    measured = {m: [synthetic([(s, s)], 16)] for m, s in [("sta_naive", 2.0), ("simultaneous", 1.0), ("parl", 1.5)]}
    measured["parl"] = [synthetic([(7.5, 7.5)], 80)]  # 1.5 per B prompts
    table = bench_cost.markdown(bench_cost.summarise(measured, "cwc"), "cwc", "python tools/bench_cost.py", {}, "here")
    assert "Paper's order on cwc: simultaneous = parl < sta_naive" in table  # Table 1 gives both 1340.522 s on cwc
    assert "Measured order (× Naive): simultaneous < parl < sta_naive" in table
    with pytest.raises(SystemExit, match="--help` failed"):
        bench_cost.script_options("no_such_script.py")
    cli, flags = bench_cost.parse(["--methods", "dpo", "dpo", "sta_naive", "--", "--laptop"])
    assert cli.methods == ["dpo", "sta_naive"] and flags == ["--laptop"]
    with pytest.raises(SystemExit):
        bench_cost.parse(["--", "--run-name=x"])


def test_the_shape_model_has_the_asked_body_and_the_laptop_vocabulary(tmp_path):
    """tools/build_shape_model.py (results/cost/run_bench_gpu.sh): the body asked for, the laptop tokenizer's vocabulary
    and special tokens, and a model the scripts load and sample from through common's loaders."""
    out = tmp_path / "shape"
    subprocess.run([sys.executable, str(REPO / "tools" / "build_shape_model.py"), str(out), "--layers", "2", "--hidden", "32",
                    "--heads", "2", "--ffn", "64"], check=True, capture_output=True)
    tokenizer = common.load_tokenizer(str(out))
    laptop = common.load_tokenizer("laptop")
    assert tokenizer.get_vocab() == laptop.get_vocab() and tokenizer.pad_token_id == laptop.pad_token_id
    policy = common.load_policy(str(out), tokenizer, "cpu")
    config = policy.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.ffn_dim) == (2, 32, 2, 64)
    assert config.vocab_size == len(laptop) and config.max_position_embeddings == 2048
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (laptop.bos_token_id, laptop.eos_token_id,
                                                                              laptop.pad_token_id)
    reward_model = common.load_reward_model(str(out), tokenizer, "cpu")
    assert torch.equal(reward_model.model.decoder.layers[1].fc1.weight, policy.model.decoder.layers[1].fc1.weight)
    torch.manual_seed(0)
    prompt_ids, prompt_mask, _ = common.encode_prompts(tokenizer, ["Tell me about data.", "Write a short poem."], "cpu")
    continuation, mask = common.sample(policy, tokenizer, prompt_ids, prompt_mask, max_new_tokens=8)
    assert continuation.shape[0] == 2 and 1 <= continuation.shape[1] <= 8 and mask.sum() > 0 and int(continuation.max()) < len(laptop)
    assert all(isinstance(t, str) for t in common.decode_continuations(tokenizer, continuation, mask))


def test_the_gpu_script_runs_end_to_end_on_the_cpu_at_a_tiny_shape(tmp_path):
    """Issue 27: results/cost/run_bench_gpu.sh with SMOKE=1 (CPU, tiny shape) builds the model, checks the sampler
    (the static cache draws the dynamic one's tokens on CPU; the bf16 mismatch is measured), times Naive, Total and
    offline DPO (all ten on a GPU) with the static cache forced, Naive STA with the dynamic one, and writes the break-even."""
    import json

    out = tmp_path / "gpu"
    proc = subprocess.run(["bash", str(REPO / "results" / "cost" / "run_bench_gpu.sh"), str(out)], capture_output=True,
                          text=True, env={**os.environ, "SMOKE": "1", "OMP_NUM_THREADS": "1"}, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sampler = json.loads((out / "sampler" / "sampler.json").read_text())
    assert sampler["same_draws"]["identical_rows"] == sampler["same_draws"]["rows"] == 8  # B = 2, k = 4
    assert set(sampler["seconds"]) == {"fp32 dynamic", "fp32 static", "bf16 dynamic", "bf16 static"}
    assert not any("failed" in seconds for seconds in sampler["seconds"].values())
    bf16 = sampler["bf16"]
    assert bf16["tokens"] > 0 and 0 <= bf16["token_kl_median"] <= bf16["token_kl_max"] < 1
    assert bf16["ratio_min"] <= bf16["ratio_p5"] <= bf16["ratio_p95"] <= bf16["ratio_max"]
    with open(out / "all" / "cost.csv") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"sta_naive", "sta_total", "dpo"} and {r["sampler_cache"] for r in rows.values()} == {"static"}
    with open(out / "naive-dynamic" / "cost.csv") as f:
        assert [(r["method"], r["sampler_cache"]) for r in csv.DictReader(f)] == [("sta_naive", "dynamic")]
    assert "| default | static |" in (out / "break-even.md").read_text() and (out / "log.txt").stat().st_size > 0
