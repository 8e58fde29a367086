"""ppo.py (SPEC §15.5): GAE, whitening, per-token rewards, the clipped surrogate, stop-gradients, and a laptop run."""

import pytest
import torch

import common
import ppo
from conftest import eval_rewards, read_metrics, run_script


# ---------------------------------------------------------------------------------------------------- GAE
# one full 3-token sequence and one that ends after 2 tokens (the third position is padding and must not count)
REWARDS = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 99.0]])
VALUES = torch.tensor([[0.5, 1.0, 1.5], [0.5, 1.0, 7.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])


def test_gae_lambda_0_is_one_step_td():
    # Â_t = r_t + V_{t+1} − V_t, with V = 0 after the last real token
    advantages, returns = ppo.gae(REWARDS, VALUES, MASK, gamma=1.0, lam=0.0)
    assert torch.allclose(advantages, torch.tensor([[1 + 1.0 - 0.5, 2 + 1.5 - 1.0, 3 + 0 - 1.5],
                                                    [1 + 1.0 - 0.5, 2 + 0 - 1.0, 0.0]]))
    assert torch.allclose(returns, torch.tensor([[2.0, 3.5, 3.0], [2.0, 2.0, 0.0]]))


def test_gae_lambda_1_is_reward_to_go_minus_value():
    # Â_t = Σ_{t' ≥ t} r_t' − V_t; returns are the rewards-to-go
    advantages, returns = ppo.gae(REWARDS, VALUES, MASK, gamma=1.0, lam=1.0)
    assert torch.allclose(advantages, torch.tensor([[6 - 0.5, 5 - 1.0, 3 - 1.5], [3 - 0.5, 2 - 1.0, 0.0]]))
    assert torch.allclose(returns, torch.tensor([[6.0, 5.0, 3.0], [3.0, 2.0, 0.0]]))


def test_gae_matches_the_discounted_sum_of_td_errors():
    # eq. 11-12 written out directly, for any γ, λ, on random data with ragged lengths
    torch.manual_seed(0)
    rewards, values = torch.randn(5, 9, dtype=torch.float64), torch.randn(5, 9, dtype=torch.float64)
    mask = (torch.arange(9)[None] < torch.tensor([9, 1, 4, 7, 2])[:, None]).double()
    gamma, lam = 0.9, 0.7
    advantages, returns = ppo.gae(rewards, values, mask, gamma, lam)
    r, v = rewards * mask, torch.cat([values * mask, torch.zeros(5, 1, dtype=torch.float64)], 1)
    delta = r + gamma * v[:, 1:] - v[:, :-1]
    expected = torch.stack([sum((gamma * lam) ** (l - t) * delta[:, l] for l in range(t, 9)) for t in range(9)], 1)
    assert torch.allclose(advantages, expected * mask, atol=1e-12)
    assert torch.allclose(returns, (expected + values) * mask, atol=1e-12)
    assert (advantages[mask == 0] == 0).all() and (returns[mask == 0] == 0).all()


# ---------------------------------------------------------------------------------------------------- whitening, rewards
def test_whitened_advantages_have_masked_mean_0_std_1_and_padding_stays_0():
    torch.manual_seed(0)
    x = 3.0 + 5.0 * torch.randn(6, 10)
    mask = (torch.arange(10)[None] < torch.tensor([10, 3, 7, 1, 5, 9])[:, None]).float()
    x = x + 1000.0 * (1 - mask)  # garbage on padding must not leak into the statistics
    white = ppo.masked_whiten(x, mask)
    real = white[mask == 1]
    assert abs(real.mean().item()) < 1e-5
    assert abs(real.var(unbiased=False).sqrt().item() - 1) < 1e-5
    assert (white[mask == 0] == 0).all()


def test_kl_rewards_sum_to_minus_beta_log_ratio_and_the_score_sits_on_the_last_real_token():
    torch.manual_seed(0)
    lengths = torch.tensor([6, 1, 4])
    mask = (torch.arange(6)[None] < lengths[:, None]).float()
    logp, ref_logp = -torch.rand(3, 6) * 5, -torch.rand(3, 6) * 5
    scores, beta = torch.tensor([3.0, -2.0, 7.0]), 0.1
    rewards = ppo.token_rewards(scores, logp, ref_logp, mask, beta)
    assert torch.allclose(rewards.sum(1), scores - beta * ((logp - ref_logp) * mask).sum(1))
    score_part = rewards - (-beta * (logp - ref_logp) * mask)
    for b in range(3):
        nonzero = score_part[b].abs() > 1e-6
        assert nonzero.sum() == 1 and nonzero.nonzero().item() == lengths[b] - 1
        assert torch.isclose(score_part[b, lengths[b] - 1], scores[b])
    assert (rewards[mask == 0] == 0).all()


# ---------------------------------------------------------------------------------------------------- clipped surrogate
def test_clipped_terms_give_zero_gradient():
    eps = 0.2
    old_logp = torch.zeros(1, 6)
    # tokens: A>0 ρ>1+ε (clipped), A<0 ρ<1−ε (clipped), A>0 ρ<1−ε, A<0 ρ>1+ε, A>0 ρ=1 (all three: gradient), padding
    ratio = torch.tensor([[1.5, 0.5, 0.5, 1.5, 1.0, 1.5]])
    advantages = torch.tensor([[1.0, -1.0, 1.0, -1.0, 2.0, 1.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0, 0.0]])
    logp = ratio.log().requires_grad_()
    loss, clip_fraction, approx_kl = ppo.clipped_surrogate(logp, old_logp, advantages, mask, eps)
    loss.backward()
    grad = logp.grad[0]
    assert grad[0] == 0 and grad[1] == 0 and grad[5] == 0
    # unclipped tokens: ∂(−ρA/5)/∂log ρ = −ρA/5
    assert torch.allclose(grad[2:5], -(ratio * advantages)[0, 2:5] / 5)
    assert clip_fraction.item() == pytest.approx(2 / 5)
    assert approx_kl.item() == pytest.approx(((ratio - 1 - ratio.log()) * mask).sum().item() / 5)
    assert loss.item() == pytest.approx(-(1.2 * 1 + 0.8 * -1 + 0.5 * 1 + 1.5 * -1 + 2.0) / 5)


@pytest.fixture(scope="module")
def models(model_dir):
    tokenizer = common.load_tokenizer(model_dir)
    policy = common.load_policy(model_dir, tokenizer, "cpu")
    ref_policy = common.load_policy(model_dir, tokenizer, "cpu").requires_grad_(False)
    return tokenizer, policy, ref_policy


PROMPTS = ["How do I make a good cup of coffee?", "Explain photosynthesis to a child.",
           "What is the best way to learn a new language?"]


def rollout_statistics(models, critic):
    """Steps 1-2 of ppo.py on a small batch: rollout, old and reference log-probs, values, rewards, GAE, whitening."""
    tokenizer, policy, ref_policy = models
    torch.manual_seed(0)
    batch = common.rollout(policy, tokenizer, PROMPTS, "wc", 2, 12, "cpu", tie_retries=0)
    ids, mask, P, continuation = batch.input_ids, batch.attention_mask, batch.prompt_width, batch.continuation_mask
    with torch.no_grad():
        old_token_logp, _ = common.continuation_logprobs(policy, ids, mask, P)
        ref_token_logp, _ = common.continuation_logprobs(ref_policy, ids, mask, P)
        features = ref_policy.base_model(input_ids=ids, attention_mask=mask).last_hidden_state[:, P - 1 : -1]
    values = critic(features).squeeze(-1) * continuation  # with gradient here, to check that GAE cuts it
    rewards = ppo.token_rewards(batch.rewards.flatten(), old_token_logp, ref_token_logp, continuation, 0.1)
    advantages, returns = ppo.gae(rewards, values, continuation, 1.0, 0.95)
    return batch, old_token_logp, features, values, ppo.masked_whiten(advantages, continuation), returns


def make_critic(ref_policy):
    torch.manual_seed(1)
    width = ref_policy.get_output_embeddings().in_features
    return torch.nn.Sequential(torch.nn.Linear(width, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1))


def test_first_minibatch_of_first_epoch_has_ratio_exactly_1(models):
    tokenizer, policy, ref_policy = models
    batch, old_token_logp, _, _, advantages, _ = rollout_statistics(models, make_critic(ref_policy))
    continuation = batch.continuation_mask
    # the first step of ppo.py (full batch): rows = arange(kB), same weights and inputs, now with gradient, dropout off
    rows = torch.arange(len(batch.input_ids))
    token_logp, _ = common.continuation_logprobs(policy, batch.input_ids[rows], batch.attention_mask[rows], batch.prompt_width)
    assert torch.equal(token_logp.detach(), old_token_logp)
    loss, clip_fraction, approx_kl = ppo.clipped_surrogate(token_logp, old_token_logp, advantages, continuation, 0.2)
    assert clip_fraction.item() == 0 and approx_kl.item() == 0
    # clipped = unclipped objective, so the loss is −mean(Â), which whitening makes 0
    assert loss.item() == pytest.approx(-ppo.masked_mean(advantages, continuation).item(), abs=1e-7)
    assert abs(loss.item()) < 1e-6


def test_advantages_and_returns_carry_no_gradient_and_the_losses_stay_on_their_own_model(models):
    tokenizer, policy, ref_policy = models
    critic = make_critic(ref_policy)
    batch, old_token_logp, features, values, advantages, returns = rollout_statistics(models, critic)
    assert values.requires_grad  # the critic's output has a graph ...
    assert not advantages.requires_grad and not returns.requires_grad  # ... that GAE does not pass on
    continuation = batch.continuation_mask
    policy.zero_grad(set_to_none=True)
    value_loss = 0.5 * ppo.masked_mean((critic(features).squeeze(-1) - returns) ** 2, continuation)
    value_loss.backward()
    assert all(p.grad is None for p in policy.parameters())  # the critic update cannot move π_θ
    assert all(p.grad is not None for p in critic.parameters())
    critic.zero_grad(set_to_none=True)
    token_logp, _ = common.continuation_logprobs(policy, batch.input_ids, batch.attention_mask, batch.prompt_width)
    pg_loss, _, _ = ppo.clipped_surrogate(token_logp, old_token_logp, advantages, continuation, 0.2)
    pg_loss.backward()
    assert all(p.grad is None for p in critic.parameters())  # and the policy loss cannot move the critic
    assert sum(p.grad.abs().sum() for p in policy.parameters() if p.grad is not None) > 0
    policy.zero_grad(set_to_none=True)


# ---------------------------------------------------------------------------------------------------- end to end
def test_laptop_run_raises_the_evaluation_reward(tmp_path):
    # the laptop preset, shortened to fit the suite: B = 4, 40 new tokens, 24 iterations (~35 CPU-seconds).
    # Measured rise of eval/reward at iteration 24 over iteration 0 with these flags, seeds 467, 532, 6518, 7107,
    # 8688: +1.04, +0.73, +0.52, +0.66, +0.48; the 100-iteration laptop run keeps rising (README).
    proc, run_dir = run_script("ppo", "--laptop", "--task", "wc", "--seed", "467", "--iterations", "24", "--eval-every", "24",
                               "--batch-size", "4", "--max-new-tokens", "40", "--eval-batch-size", "160",
                               tmp_path=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    logged = read_metrics(run_dir)[-1]
    for key in ("train/oracle_reward", "policy/kl", "ppo/clip_fraction", "ppo/approx_kl", "ppo/value_loss",
                "ppo/explained_variance"):
        assert logged[key] != "", key
    rewards = dict(eval_rewards(run_dir))
    assert set(rewards) == {0, 24}
    assert rewards[24] > rewards[0] + 0.3, rewards
