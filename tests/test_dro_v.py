"""dro_v.py (SPEC §15.7): zero loss at the optimum, the rescaled policy gradient, the stop-gradients between the two
networks, the closed-form optimum on an enumerated bandit, the optimal value for a fixed policy, and a laptop run."""

import json

import pytest
import torch

import common
import dro_v
from conftest import eval_rewards, read_metrics, run_script

PROMPTS = ["How do I make a good cup of coffee?", "Explain photosynthesis to a child.",
           "What is the best way to learn a new language?"]
K = 2  # samples per prompt in the model-level tests


def joint_loss(logp, ref_logp, rewards, values, tau):
    """Eq. (4), empirical and averaged: ½ mean (r − V − τ(log π − log π_ref))², written out independently of dro_v.py."""
    return 0.5 * ((rewards - values - tau * (logp - ref_logp)) ** 2).mean()


# ---------------------------------------------------------------------------------------------------- tabular
def test_policy_gradient_is_the_joint_gradient_over_tau_with_v_detached():
    torch.manual_seed(0)
    tau = 0.3
    theta = torch.randn(6, dtype=torch.float64, requires_grad=True)  # a softmax policy over 6 outcomes
    ref_logp = torch.log_softmax(torch.randn(6, dtype=torch.float64), 0)
    y = torch.tensor([0, 3, 3, 5, 1, 2, 4, 0])  # 8 logged samples
    rewards, values = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64, requires_grad=True)
    logp = torch.log_softmax(theta, 0)[y]
    grad, = torch.autograd.grad(dro_v.dro_v_policy_loss(logp, ref_logp[y], rewards, values, tau), theta, retain_graph=True)
    joint, = torch.autograd.grad(joint_loss(logp, ref_logp[y], rewards, values.detach(), tau), theta, retain_graph=True)
    assert joint.norm() > 1e-3
    assert torch.allclose(grad, joint / tau, rtol=1e-10, atol=1e-12)
    # and the value loss's gradient is the joint loss's φ-gradient, unscaled
    value_grad, = torch.autograd.grad(dro_v.dro_v_value_loss(logp, ref_logp[y], rewards, values, tau), values)
    joint_value_grad, = torch.autograd.grad(joint_loss(logp.detach(), ref_logp[y], rewards, values, tau), values)
    assert torch.allclose(value_grad, joint_value_grad, rtol=1e-12, atol=1e-14)


def test_enumerated_bandit_recovers_the_kl_regularised_optimum():
    """μ = π_ref with full support: each outcome y of prompt x appears in the data in proportion to π_ref(y|x), so the
    batch mean is the exact expectation. Alternating the implemented policy and value steps (Algorithm 1) converges to
    π* ∝ π_ref exp(r/τ) and V* = τ log E_{π_ref}[exp(r/τ)] (eq. 2, Thm. 1)."""
    torch.manual_seed(0)
    tau = 0.5
    counts = torch.tensor([[1, 2, 3, 4, 10], [5, 5, 4, 3, 3]])  # π_ref(y|x) = counts / 20
    ref_probs = counts.double() / counts.sum(1, keepdim=True)
    r = torch.randn(2, 5, dtype=torch.float64)
    x = torch.cat([torch.full((int(counts[i].sum()),), i) for i in range(2)])
    y = torch.cat([torch.arange(5).repeat_interleave(counts[i]) for i in range(2)])
    theta = torch.zeros(2, 5, dtype=torch.float64, requires_grad=True)  # π starts uniform, not at π_ref
    v = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([theta, v], lr=0.1)
    for _ in range(1000):
        logp = torch.log_softmax(theta, 1)[x, y]
        ref_logp = ref_probs.log()[x, y]
        policy_loss = dro_v.dro_v_policy_loss(logp, ref_logp, r[x, y], v[x], tau)
        value_loss = dro_v.dro_v_value_loss(logp, ref_logp, r[x, y], v[x], tau)
        optimizer.zero_grad()
        (policy_loss + value_loss).backward()
        optimizer.step()
    optimal_policy = ref_probs * torch.exp(r / tau)
    optimal_policy /= optimal_policy.sum(1, keepdim=True)
    optimal_value = tau * torch.log((ref_probs * torch.exp(r / tau)).sum(1))
    assert (torch.softmax(theta, 1) - optimal_policy).abs().max().item() < 1e-6
    assert (v - optimal_value).abs().max().item() < 1e-6
    # at the optimum r − V* − τℓ* = 0 for every sample, so the DRO loss is 0
    assert joint_loss(torch.log_softmax(theta, 1)[x, y], ref_probs.log()[x, y], r[x, y], v[x], tau).item() < 1e-8


def test_for_a_fixed_policy_the_optimal_value_is_the_mean_of_r_minus_tau_l():
    torch.manual_seed(0)
    tau = 0.7
    x = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])  # three prompts with 3, 2 and 4 samples
    logp, ref_logp, rewards = (torch.randn(9, dtype=torch.float64) for _ in range(3))
    target = rewards - tau * (logp - ref_logp)
    closed_form = torch.stack([target[x == i].mean() for i in range(3)])  # V^π(x) = E_μ[r − τℓ] (Prop. 1)
    v = closed_form.clone().requires_grad_(True)
    loss = dro_v.dro_v_value_loss(logp, ref_logp, rewards, v[x], tau)
    grad, = torch.autograd.grad(loss, v)
    assert grad.abs().max().item() < 1e-14
    for _ in range(20):  # a strict minimum: every perturbation costs
        assert dro_v.dro_v_value_loss(logp, ref_logp, rewards, (closed_form + 1e-3 * torch.randn(3, dtype=torch.float64))[x], tau) > loss


# ---------------------------------------------------------------------------------------------------- laptop models
@pytest.fixture(scope="module")
def models(model_dir):
    tokenizer = common.load_tokenizer(model_dir)
    policy = common.load_policy(model_dir, tokenizer, "cpu")
    ref_policy = common.load_policy(model_dir, tokenizer, "cpu").requires_grad_(False)
    torch.manual_seed(0)
    value_model = common.load_reward_model(model_dir, tokenizer, "cpu")
    prompt_ids, prompt_mask, _ = common.encode_prompts(tokenizer, PROMPTS, "cpu")
    prompt_ids, prompt_mask = prompt_ids.repeat_interleave(K, 0), prompt_mask.repeat_interleave(K, 0)
    continuation, continuation_mask = common.sample(ref_policy, tokenizer, prompt_ids, prompt_mask, 12)
    batch = (torch.cat([prompt_ids, continuation], 1), torch.cat([prompt_mask, continuation_mask], 1),
             prompt_ids.shape[1], continuation_mask)
    return policy, ref_policy, value_model, batch


def forward(policy, ref_policy, value_model, batch):
    """Step 2 of dro_v.py: one value per example (per prompt, shared by its K samples) and the sequence log-probs."""
    ids, mask, P, continuation = batch
    values = common.reward_model_scores(value_model, ids[::K, :P], mask[::K, :P]).repeat_interleave(K)
    with torch.no_grad():
        ref_token_logp, _ = common.continuation_logprobs(ref_policy, ids, mask, P)
    token_logp, _ = common.continuation_logprobs(policy, ids, mask, P)
    return (token_logp * continuation).sum(1), (ref_token_logp * continuation).sum(1), values


def grads(model):
    return [p.grad for p in model.parameters()]


def test_pi_ref_and_v_equal_to_r_give_zero_loss_and_zero_gradients(models):
    policy, ref_policy, value_model, batch = models
    logp, ref_logp, values = forward(policy, ref_policy, value_model, batch)
    assert torch.equal(logp.detach(), ref_logp)  # π_θ = π_ref
    rewards = values.detach().clone()  # V_φ(x_i) = r_i
    policy.zero_grad(set_to_none=True)
    value_model.zero_grad(set_to_none=True)
    policy_loss = dro_v.dro_v_policy_loss(logp, ref_logp, rewards, values, 1.0)
    value_loss = dro_v.dro_v_value_loss(logp, ref_logp, rewards, values, 1.0)
    assert policy_loss.item() == 0 and value_loss.item() == 0
    (policy_loss + value_loss).backward()
    assert all(g is not None and torch.equal(g, torch.zeros_like(g)) for g in grads(policy) + grads(value_model))
    policy.zero_grad(set_to_none=True)
    value_model.zero_grad(set_to_none=True)


def test_value_update_never_touches_theta_and_policy_update_never_touches_phi(models):
    policy, ref_policy, value_model, batch = models
    torch.manual_seed(1)
    rewards = torch.randn(len(batch[0]))
    saved = [p.detach().clone() for p in policy.parameters()]
    with torch.no_grad():  # a policy away from π_ref, so that ℓ ≠ 0 and ℓ's stop-gradient matters
        for p in policy.parameters():
            p.add_(0.02 * torch.randn_like(p))
    try:
        for model in (policy, value_model):
            model.zero_grad(set_to_none=True)
        logp, ref_logp, values = forward(policy, ref_policy, value_model, batch)
        dro_v.dro_v_value_loss(logp, ref_logp, rewards, values, 1.0).backward()
        assert all(g is None for g in grads(policy))
        value_only = [g.clone() for g in grads(value_model)]
        assert sum(g.abs().sum() for g in value_only) > 0
        value_model.zero_grad(set_to_none=True)

        logp, ref_logp, values = forward(policy, ref_policy, value_model, batch)
        dro_v.dro_v_policy_loss(logp, ref_logp, rewards, values, 1.0).backward()
        assert all(g is None for g in grads(value_model))
        policy_only = [g.clone() for g in grads(policy)]
        assert sum(g.abs().sum() for g in policy_only) > 0
        policy.zero_grad(set_to_none=True)

        # so dro_v.py's single backward of the sum gives each network exactly its own gradient
        logp, ref_logp, values = forward(policy, ref_policy, value_model, batch)
        (dro_v.dro_v_policy_loss(logp, ref_logp, rewards, values, 1.0)
         + dro_v.dro_v_value_loss(logp, ref_logp, rewards, values, 1.0)).backward()
        assert all(torch.allclose(g, h, rtol=1e-5, atol=1e-8) for g, h in zip(grads(policy), policy_only))
        assert all(torch.allclose(g, h, rtol=1e-5, atol=1e-8) for g, h in zip(grads(value_model), value_only))
    finally:
        with torch.no_grad():
            for p, s in zip(policy.parameters(), saved):
                p.copy_(s)
        policy.zero_grad(set_to_none=True)
        value_model.zero_grad(set_to_none=True)


# ---------------------------------------------------------------------------------------------------- end to end
def test_laptop_run_raises_the_evaluation_reward(tmp_path):
    # 160 bundled training prompts and 40 bundled test prompts (a user file's last fifth is its test split), so that
    # the offline data (the same as test_dpo.py's offline run, cached) takes k·160 samples instead of k·1230
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(common.load_prompts("bundled", "train")[:160] + common.load_prompts("bundled", "test")[:40]) + "\n")
    proc, run_dir = run_script("dro_v", "--laptop", "--prompts", prompts, "--task", "wc", "--seed", "467", "--iterations", "20",
                               "--eval-every", "20", "--batch-size", "8", tmp_path=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    rewards = dict(eval_rewards(run_dir))
    assert set(rewards) == {0, 20}
    assert rewards[20] > rewards[0] + 0.5, rewards
    data = json.loads((run_dir / "config.json").read_text())["offline_data"]  # the data set's statistics, once
    assert data["normalised_by"][1] > 0 and data["prompts"] == 160 and data["pairs_queried"] >= 160
    assert not any(key.startswith(("data/", "train/")) for key in read_metrics(run_dir)[-1])
