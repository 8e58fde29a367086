"""dpo.py (SPEC §15.6): the loss at initialisation, its gradient, ties, swaps, prompt masking, the fixed reference of
iterated DPO, the cached offline data of common.py, and laptop runs of DPO and iterated DPO."""

import math
import runpy
import signal
import sys
import time

import pytest
import torch

import common
import dpo
from conftest import REPO, eval_rewards, run_script

BETA = 0.1
PROMPTS = ["How do I make a good cup of coffee?", "Explain photosynthesis to a child.",
           "What is the best way to learn a new language?"]


@pytest.fixture(scope="module")
def models(model_dir):
    tokenizer = common.load_tokenizer(model_dir)
    policy = common.load_policy(model_dir, tokenizer, "cpu")
    ref_policy = common.load_policy(model_dir, tokenizer, "cpu").requires_grad_(False)
    return tokenizer, policy, ref_policy


@pytest.fixture(scope="module")
def pairs(models):
    """Two samples per prompt from π_ref (left-padded prompts of different lengths): rows 2i (winner) and 2i+1 (loser)."""
    tokenizer, _, ref_policy = models
    prompt_ids, prompt_mask, _ = common.encode_prompts(tokenizer, PROMPTS, "cpu")
    prompt_ids, prompt_mask = prompt_ids.repeat_interleave(2, 0), prompt_mask.repeat_interleave(2, 0)
    torch.manual_seed(0)
    continuation, continuation_mask = common.sample(ref_policy, tokenizer, prompt_ids, prompt_mask, 12)
    ids, mask = torch.cat([prompt_ids, continuation], 1), torch.cat([prompt_mask, continuation_mask], 1)
    return ids, mask, prompt_ids.shape[1], continuation_mask


def logratios(policy, ref_policy, ids, mask, P, continuation_mask):
    """log π_θ(y|x) − log π_ref(y|x) per row, as dpo.py computes it."""
    with torch.no_grad():
        ref_token_logp, _ = common.continuation_logprobs(ref_policy, ids, mask, P)
    token_logp, _ = common.continuation_logprobs(policy, ids, mask, P)
    return ((token_logp - ref_token_logp) * continuation_mask).sum(1)


def sequence_logp(policy, ids, mask, P, continuation_mask):
    token_logp, _ = common.continuation_logprobs(policy, ids, mask, P)
    return (token_logp * continuation_mask).sum(1)


def flat_grad(loss, model):
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params, allow_unused=False)])


@pytest.fixture
def perturbed(models):
    """A policy that differs from π_ref (the module's policy is restored afterwards)."""
    _, policy, _ = models
    saved = [p.detach().clone() for p in policy.parameters()]
    torch.manual_seed(1)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.02 * torch.randn_like(p))
    yield policy
    with torch.no_grad():
        for p, s in zip(policy.parameters(), saved):
            p.copy_(s)


# ---------------------------------------------------------------------------------------------------- the loss
def test_at_initialisation_loss_is_log_2_implicit_rewards_0_accuracy_0(models, pairs):
    tokenizer, policy, ref_policy = models
    ids, mask, P, continuation = pairs
    logratio = logratios(policy, ref_policy, ids, mask, P, continuation)
    assert torch.equal(logratio, torch.zeros_like(logratio))  # π_θ = π_ref, dropout off: identical forward passes
    loss, h = dpo.dpo_loss(logratio[0::2], logratio[1::2], BETA)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-7)
    assert torch.equal(BETA * logratio.detach(), torch.zeros(len(ids)))  # implicit rewards
    assert (h > 0).float().mean().item() == 0  # accuracy with a strict ">"


def test_gradient_at_initialisation_is_half_beta_times_the_log_prob_difference(models, pairs):
    tokenizer, policy, ref_policy = models
    ids, mask, P, continuation = pairs
    loss, _ = dpo.dpo_loss(*logratios(policy, ref_policy, ids, mask, P, continuation).view(-1, 2).unbind(1), BETA)
    grad = flat_grad(loss, policy)
    # σ(0) = ½, so ∇L = −(β/2)·mean_i(∇log π(y_w,i) − ∇log π(y_l,i))
    logp = sequence_logp(policy, ids, mask, P, continuation)
    expected = flat_grad(-(BETA / 2) * (logp[0::2] - logp[1::2]).mean(), policy)
    assert expected.norm() > 0
    assert ((grad - expected).norm() / expected.norm()).item() < 1e-5


def test_identical_winner_and_loser_give_zero_gradient(models, pairs, perturbed):
    tokenizer, _, ref_policy = models
    ids, mask, P, continuation = pairs
    same = torch.tensor([0, 0, 2, 2, 4, 4])  # every pair is (y, y)
    logratio = logratios(perturbed, ref_policy, ids[same], mask[same], P, continuation[same])
    loss, h = dpo.dpo_loss(logratio[0::2], logratio[1::2], BETA)
    assert torch.equal(h.detach(), torch.zeros(3)) and loss.item() == pytest.approx(math.log(2), abs=1e-7)
    grad = flat_grad(loss, perturbed)
    different = flat_grad(dpo.dpo_loss(*logratios(perturbed, ref_policy, ids, mask, P, continuation).view(-1, 2).unbind(1), BETA)[0], perturbed)
    assert different.norm() > 1e-3
    # exactly opposite contributions; what is left is float32 rounding in the batched backward
    assert grad.abs().max().item() <= 1e-6 * different.abs().max().item()


def test_swapping_winner_and_loser_maps_h_to_minus_h(models, pairs, perturbed):
    tokenizer, _, ref_policy = models
    ids, mask, P, continuation = pairs
    logratio = logratios(perturbed, ref_policy, ids, mask, P, continuation).detach()
    assert logratio.abs().min() > 1e-3  # the policy really differs from π_ref
    for i in range(3):
        loss, h = dpo.dpo_loss(logratio[2 * i : 2 * i + 1], logratio[2 * i + 1 : 2 * i + 2], BETA)
        swapped_loss, swapped_h = dpo.dpo_loss(logratio[2 * i + 1 : 2 * i + 2], logratio[2 * i : 2 * i + 1], BETA)
        assert torch.equal(swapped_h, -h)
        # logistic loss: −log σ(βh) + log σ(−βh) = −βh
        assert (loss - swapped_loss).item() == pytest.approx(-BETA * h.item(), abs=1e-6)


def test_prompt_tokens_never_contribute_but_the_prompt_conditions(models, pairs):
    tokenizer, policy, _ = models
    ids, mask, P, continuation = pairs
    with torch.no_grad():
        logp = sequence_logp(policy, ids, mask, P, continuation)
        # garbage in the logits that predict prompt tokens (positions < P - 1) changes nothing
        hook = policy.get_output_embeddings().register_forward_hook(
            lambda module, inputs, out: torch.cat([out[:, : P - 1] + 100 * torch.randn_like(out[:, : P - 1]), out[:, P - 1 :]], 1))
        try:
            garbled = sequence_logp(policy, ids, mask, P, continuation)
        finally:
            hook.remove()
        assert torch.equal(logp, garbled)
        # ... but the prompt is in the context: another prompt with the same continuation changes the log-prob
        other = ids.clone()
        real = mask[:, :P].bool()
        other[:, :P][real] = torch.randint(4, len(tokenizer), (int(real.sum()),))
        assert (sequence_logp(policy, other, mask, P, continuation) - logp).abs().min() > 1e-3


# ---------------------------------------------------------------------------------------------------- offline data
def test_offline_data_is_scored_ranked_cached_and_rebuilt_as_rollouts(models, tmp_path, monkeypatch):
    tokenizer, _, ref_policy = models
    monkeypatch.setenv("STACKELBERG_CACHE", str(tmp_path))
    prompts = PROMPTS + ["Give me a simple recipe for banana bread.", "How can I stay focused while studying?"]
    data = common.offline_data(ref_policy, tokenizer, prompts, "wc", 4, 12, seed=3, device="cpu", batch_size=2)
    assert data["rewards"].shape == (5, 4) and len(list((tmp_path / "offline").iterdir())) == 1
    start = time.time()
    again = common.offline_data(ref_policy, tokenizer, prompts, "wc", 4, 12, seed=3, device="cpu", batch_size=2)
    assert time.time() - start < 5 and torch.equal(again["continuation"], data["continuation"])  # a cache hit
    common.offline_data(ref_policy, tokenizer, prompts, "wc", 4, 12, seed=4, device="cpu", batch_size=2)
    assert len(list((tmp_path / "offline").iterdir())) == 2  # another seed is another data set

    batch = common.offline_rollout(data, [prompts[3], prompts[0]], "cpu")
    assert batch.input_ids.shape[0] == 8 and batch.rewards.shape == (2, 4)
    P = batch.prompt_width
    for b, prompt in enumerate([prompts[3], prompts[0]]):
        # the prompt ids are the ones the tokenizer gives, the texts are what the oracle scored
        prompt_ids = tokenizer(prompt, truncation=True).input_ids
        for j in range(4):
            r = 4 * b + j
            assert batch.input_ids[r, :P][batch.attention_mask[r, :P].bool()].tolist() == prompt_ids
            ids = batch.input_ids[r, P:][batch.continuation_mask[r].bool()]
            assert tokenizer.decode(ids, skip_special_tokens=True) == batch.continuation_texts[r]
            assert batch.rewards[b, j].item() == common.oracle("wc", batch.prompt_texts[b], batch.continuation_texts[r])
    for b in range(2):  # D8 ranking
        assert batch.rewards[b, batch.chosen[b]] == batch.rewards[b].max()
        assert batch.rewards[b, batch.rejected[b]] == batch.rewards[b].min()
        assert batch.keep[b] == (batch.rewards[b].max() > batch.rewards[b].min())
    # the log-probs of a re-batched sample equal those of the same sample in another batch (padding invariance)
    alone = common.offline_rollout(data, [prompts[0]], "cpu")
    with torch.no_grad():
        a, _ = common.continuation_logprobs(ref_policy, batch.input_ids[4:], batch.attention_mask[4:], P)
        b, _ = common.continuation_logprobs(ref_policy, alone.input_ids, alone.attention_mask, alone.prompt_width)
    width = alone.continuation_mask.shape[1]
    assert torch.allclose((a[:, :width] * alone.continuation_mask).sum(1), (b * alone.continuation_mask).sum(1), atol=1e-3)


# ---------------------------------------------------------------------------------------------------- iterated DPO
def test_iterated_dpo_keeps_the_reference_fixed_and_moves_the_policy(model_dir, tmp_path, monkeypatch):
    """The real script, in this process: after a few --online steps π_ref is bit-identical to the model on disk."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"Tell me something about topic number {i}, please." for i in range(20)) + "\n")
    monkeypatch.setattr(sys, "argv", ["dpo.py", "--laptop", "--model", model_dir, "--prompts", str(prompts), "--online",
                                      "--iterations", "3", "--batch-size", "4", "--max-new-tokens", "12",
                                      "--eval-every", "3", "--output-dir", str(tmp_path / "runs")])
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        run = runpy.run_path(str(REPO / "dpo.py"), run_name="__main__")
    finally:
        for s, handler in handlers.items():  # the script's Run installed its Ctrl-C and SIGTERM handlers
            signal.signal(s, handler)
    tokenizer = common.load_tokenizer(model_dir)
    on_disk = common.load_policy(model_dir, tokenizer, "cpu")
    assert all(torch.equal(p, q) for p, q in zip(run["ref_policy"].state_dict().values(), on_disk.state_dict().values()))
    assert not all(torch.equal(p, q) for p, q in zip(run["policy"].state_dict().values(), on_disk.state_dict().values()))
    assert run["counters"]["pairs_kept"] > 0 and run["counters"]["pairs_queried"] >= run["counters"]["pairs_kept"]


# ---------------------------------------------------------------------------------------------------- end to end
def small_prompts(tmp_path):
    """160 bundled training prompts and 40 bundled test prompts (a user file's last fifth is its test split): the
    offline data then takes k·160 samples instead of k·1230, so a laptop run fits the test budget."""
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(common.load_prompts("bundled", "train")[:160] + common.load_prompts("bundled", "test")[:40]) + "\n")
    return path


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_laptop_run_raises_the_evaluation_reward(mode, tmp_path):
    flags = ["--online"] if mode == "online" else []
    proc, run_dir = run_script("dpo", "--laptop", "--prompts", small_prompts(tmp_path), "--task", "wc", "--seed", "467",
                               "--iterations", "20", "--eval-every", "20", "--batch-size", "8", *flags, tmp_path=tmp_path,
                               env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    rewards = dict(eval_rewards(run_dir))
    assert set(rewards) == {0, 20}
    assert rewards[20] > rewards[0] + 0.5, rewards
