"""PPO: the vanilla-RLHF baseline of Makar-Limanov et al., on the ground-truth reward, no reward model (SPEC §7, D15).

Token-level PPO (Schulman et al. 2017) as in "The N+ implementation details of RLHF with PPO" (Huang et al. 2024),
with the paper's numbers. Each iteration t:
  1. sample B prompts and k = 4 continuations each from π_{θ^{t-1}} (all kB sequences are PPO samples, as the
     authors' code); the oracle scores each continuation;
  2. per-token reward r_t = −β (log π_{θ^{t-1}}(y_t|s_t) − log π_ref(y_t|s_t)) (k1 KL penalty), plus the score at
     the last real continuation token; values V(s_t) from the critic, the paper's MLP (hidden → 256 → ReLU → 1) on
     the frozen reference model's last hidden state at s_t; GAE (γ = 1, λ = 0.95, eq. 11-12), returns R_t = Â_t + V;
     advantages whitened over the real tokens and detached;
  3. 4 epochs over the kB sequences (full batch by default, as the authors' code; `--minibatches M` splits every
     epoch into M shuffled minibatches): one RMSprop step on the clipped surrogate (eq. 7, ε = 0.2) and one AdamW
     step on the critic's ½ (V(s_t) − R_t)², both averaged over real tokens.
Equation numbers are those of the PPO paper (arXiv 1707.06347); the STA paper gives only the hyper-parameters.

Departures from the authors' code (SPEC §7(b)), which runs a sequence-level bandit PPO with the critic on the last
position and an advantage that is not detached: token-level rewards, GAE and advantage whitening; detached advantages
and returns; the critic reads every continuation position. Shared with every script: pure sampling (D2), token ids
kept and masks built from positions, so nothing after the first EOS counts (D3, D4), dropout off (D20). Tied prompts
are not resampled: PPO forms no pairs (D8) and needs on-policy samples.

Departures from the "N+ implementation details" practice cited above (SPEC §7(c)), each the paper's or D15's choice:
no value clipping (the critic's loss is plain ½ (V − R)²); the critic is an MLP on the frozen reference model's
features, not a copy of the policy or reward model trained end to end; RMSprop for the policy, not Adam; a fixed β, no
adaptive KL controller; the score is added at the last real token whether or not it is an EOS (N+ reads it at the
EOS), and a continuation without an EOS gets no penalty (N+ replaces its score by a constant, e.g. −1).
"""

import dataclasses
from typing import Annotated

import torch
from tqdm import tqdm

import common


@dataclasses.dataclass
class Args:
    task: str = "wc"
    """task: wc (word collector), cwc (constrained word collector) or un (unique nouns)"""
    seed: Annotated[int, common.Range(*common.SEEDS)] = 467
    """random seed (the paper's: 467, 532, 6518, 7107, 8688)"""
    laptop: bool = False
    """laptop scale: the preset listed at the top of --help (the shipped small OPT model and bundled prompts on the CPU,
    this script's learning rates); flags given explicitly override it"""
    model: str = "facebook/opt-125m"
    """reference model: a hub id or local directory, 'laptop' (shipped) or 'smollm2' (SmolLM2-135M-Instruct, GGUF)"""
    prompts: str = "ultrachat"
    """prompts: 'ultrachat' (the paper's split), 'bundled' (shipped) or a .txt / .jsonl file"""
    device: str = "auto"
    """torch device: 'auto' (cuda if available), 'cpu', 'cuda', ..."""
    output_dir: str = "runs"
    """runs are written to {output_dir}/{run_name}/"""
    run_name: str = ""
    """name of the run directory (default: {task}__{algo}__{seed}__{unix_time})"""
    save_every: Annotated[int, common.Range(0)] = 0
    """write a checkpoint every this many iterations (0: only on Ctrl-C and SIGTERM)"""
    resume: str = ""
    """continue the run in this directory from its checkpoint, with its latest arguments (flags given here override
    them; config.json keeps the history)"""
    track: bool = False
    """stream every metric and the config to Weights & Biases (pip install wandb; WANDB_MODE=offline needs no network)"""
    wandb_project: str = "stackelberg-rlhf"
    """Weights & Biases project of --track"""
    wandb_entity: str = ""
    """Weights & Biases entity (user or team) of --track; empty: your default"""
    tensorboard: bool = False
    """also write TensorBoard event files beside metrics.csv (pip install tensorboard)"""
    iterations: Annotated[int, common.Range(1)] = 1000
    """T: outer iterations (D19)"""
    batch_size: Annotated[int, common.Range(1)] = 16
    """B: prompts per iteration"""
    samples_per_prompt: Annotated[int, common.Range(2)] = 4
    """k: continuations per prompt; all kB sequences are PPO samples (as the authors' code)"""
    prompt_len: Annotated[int, common.Range(2)] = 16
    """prompts are cut to this many tokens, BOS included (D1)"""
    max_new_tokens: Annotated[int, common.Range(1)] = 75
    """continuation length; generation stops earlier at EOS (D1)"""
    beta: Annotated[float, common.Range(0)] = 0.1
    """β: per-token k1 KL penalty in the reward, r_t = −β (log π_θ − log π_ref) (D15)"""
    policy_lr: Annotated[float, common.Range(0, low_open=True)] = 1e-6
    """RMSprop learning rate of the language model"""
    critic_lr: Annotated[float, common.Range(0, low_open=True)] = 1e-5
    """AdamW learning rate of the critic (the paper's)"""
    gamma: Annotated[float, common.Range(0, 1)] = 1.0
    """γ: discount of GAE"""
    lam: Annotated[float, common.Range(0, 1)] = 0.95
    """λ: GAE parameter (0: one-step TD advantages, 1: Monte-Carlo returns minus V)"""
    clip_eps: Annotated[float, common.Range(0)] = 0.2
    """ε: clipping range of the probability ratio (eq. 7)"""
    ppo_epochs: Annotated[int, common.Range(1)] = 4
    """PPO epochs over each rollout (the paper's "4 PPO update steps per trajectory batch")"""
    minibatches: Annotated[int, common.Range(1)] = 1
    """minibatches per epoch: 1 = one step on all kB sequences (the authors' code), M = M shuffled minibatches"""
    eval_every: Annotated[int, common.Range(1)] = 10
    """evaluate at iteration 0 and every this many iterations (D19)"""
    eval_first: Annotated[int, common.Range(0)] = 0
    """also evaluate after each of the first this many iterations, where the reward-KL path moves fastest (0: no
    extra evaluations; they change no training step: the evaluation draws from its own generator)"""
    eval_batch_size: Annotated[int, common.Range(1)] = 32
    """test prompts per generation batch in the evaluation"""


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum()


def masked_var(x, mask):
    return masked_mean((x - masked_mean(x, mask)) ** 2, mask)


def masked_whiten(x, mask):
    """(x − mean) / std over the real tokens; padding stays 0."""
    return (x - masked_mean(x, mask)) * torch.rsqrt(masked_var(x, mask) + 1e-8) * mask


def token_rewards(scores, logp, ref_logp, mask, beta):
    """r_t = −β (log π(y_t|s_t) − log π_ref(y_t|s_t)) on every real token (k1 KL penalty), plus the oracle score at
    the last real token (the EOS when one was emitted). Summed over t: score − β Σ_t (log π − log π_ref)."""
    rewards = -beta * (logp - ref_logp) * mask
    last = mask.sum(1).long() - 1
    rewards[torch.arange(len(last), device=last.device), last] += scores
    return rewards


@torch.no_grad()  # D15: advantages and returns are constants of the losses (the authors' code lets gradients through)
def gae(rewards, values, mask, gamma, lam):
    """eq. 11-12: Â_t = Σ_l (γλ)^l δ_{t+l}, δ_t = r_t + γ V(s_{t+1}) − V(s_t); the episode ends at the last real token
    (V = 0 after it). Returns (advantages Â_t, returns R_t = Â_t + V(s_t), the critic's targets), 0 on padding."""
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    n = rewards.shape[1]
    for t in reversed(range(n)):
        next_value = values[:, t + 1] if t + 1 < n else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    return advantages, advantages + values


def clipped_surrogate(logp, old_logp, advantages, mask, clip_eps):
    """eq. 7 as a loss: −mean_t min(ρ_t Â_t, clip(ρ_t, 1 − ε, 1 + ε) Â_t) with ρ_t = π_θ(y_t|s_t) / π_θold(y_t|s_t),
    over the real tokens. Also returns the clip fraction (tokens whose clipped term is the minimum: no gradient) and
    the approx-KL mean_t[(ρ_t − 1) − log ρ_t] (k3 estimate of KL(π_θold ‖ π_θ), ≥ 0)."""
    log_ratio = logp - old_logp
    ratio = log_ratio.exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages
    loss = -masked_mean(torch.min(unclipped, clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped < unclipped).float(), mask)
        approx_kl = masked_mean((ratio - 1) - log_ratio, mask)
    return loss, clip_fraction, approx_kl


LAPTOP = dict(policy_lr=3e-5, critic_lr=1e-3)

if __name__ == "__main__":
    args = common.parse_args(Args, LAPTOP)
    common.seed_everything(args.seed)
    tokenizer = common.load_tokenizer(args.model, args.prompt_len)
    train_prompts = common.load_prompts(args.prompts, "train", min_prompts=args.batch_size)
    test_prompts = common.load_prompts(args.prompts, "test")
    policy = common.load_policy(args.model, tokenizer, args.device)
    ref_policy = common.load_policy(args.model, tokenizer, args.device).requires_grad_(False)
    # the paper's critic: model output size → 256 → ReLU → 1, on the width the LM head reads
    width = ref_policy.get_output_embeddings().in_features
    critic = torch.nn.Sequential(torch.nn.Linear(width, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1)).to(args.device)
    policy_optimizer = torch.optim.RMSprop(policy.parameters(), lr=args.policy_lr)
    critic_optimizer = torch.optim.AdamW(critic.parameters(), lr=args.critic_lr)  # torch's weight decay 0.01, as the authors'
    run = common.Run(args, "ppo")
    models = {"policy": policy, "critic": critic}
    optimizers = {"policy": policy_optimizer, "critic": critic_optimizer}
    counters = run.start_or_resume(models, optimizers)
    batches = common.prompt_batches(train_prompts, args.batch_size, args.seed, skip=counters["prompts_seen"] // args.batch_size)
    evaluation = run.last_evaluation()
    if counters["iteration"] == 0:
        evaluation = common.evaluate(policy, ref_policy, tokenizer, test_prompts, args.task, args.max_new_tokens,
                                     args.eval_batch_size, args.seed, args.device)
        run.log({**counters, "eval/reward": evaluation["reward"], "eval/kl": evaluation["kl"]})
        run.samples(0, evaluation["samples"])
    progress = tqdm(range(counters["iteration"] + 1, args.iterations + 1), desc="ppo", initial=counters["iteration"], total=args.iterations)
    progress.set_postfix(prompts=counters["prompts_seen"], reward=f"{evaluation['reward']:.2f}", kl=f"{evaluation['kl']:.2f}")
    for iteration in progress:
        # 1. rollout: B prompts, k samples each from π_θ^{t-1}, scored by the oracle; no pairs, so no tie resampling
        batch = common.rollout(policy, tokenizer, next(batches), args.task, args.samples_per_prompt,
                               args.max_new_tokens, args.device, tie_retries=0)
        counters["iteration"] = iteration
        counters["prompts_seen"] += args.batch_size
        ids, mask, P = batch.input_ids, batch.attention_mask, batch.prompt_width
        continuation = batch.continuation_mask
        scores = batch.rewards.flatten().to(args.device)  # row b*k + j: sample j of prompt b
        row = {**counters, "train/oracle_reward": scores.mean().item()}

        # 2. per-token rewards, values and GAE advantages under π_θ^{t-1}, all constants of the PPO losses
        with torch.no_grad():
            old_token_logp, old_logp = common.continuation_logprobs(policy, ids, mask, P)
            # one reference pass: log-probs, and the critic's input at s_t, the last hidden state where y_t is predicted
            ref_token_logp, ref_logp, features = common.continuation_logprobs(ref_policy, ids, mask, P, return_hidden=True)
            features = features.float()
            kl = common.exact_kl(old_logp, ref_logp, continuation)  # D6: exact; the reward uses its k1 estimate
            del old_logp, ref_logp  # two [N, n, V] tensors, not kept through the epochs
            values = critic(features).squeeze(-1) * continuation
        rewards = token_rewards(scores, old_token_logp, ref_token_logp, continuation, args.beta)
        advantages, returns = gae(rewards, values, continuation, args.gamma, args.lam)
        advantages = masked_whiten(advantages, continuation)

        # 3. PPO epochs: clipped surrogate (eq. 7) for π_θ, ½ (V − R)² for the critic; separate parameters and optimizers
        stats = []
        for epoch in range(args.ppo_epochs):
            order = torch.randperm(len(ids)) if args.minibatches > 1 else torch.arange(len(ids))
            for rows in order.to(ids.device).chunk(args.minibatches):
                token_logp, _ = common.continuation_logprobs(policy, ids[rows], mask[rows], P)
                pg_loss, clip_fraction, approx_kl = clipped_surrogate(token_logp, old_token_logp[rows], advantages[rows],
                                                                      continuation[rows], args.clip_eps)
                value_loss = 0.5 * masked_mean((critic(features[rows]).squeeze(-1) - returns[rows]) ** 2, continuation[rows])
                policy_optimizer.zero_grad()
                critic_optimizer.zero_grad()
                (pg_loss + value_loss).backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), float("inf")).item()
                policy_optimizer.step()
                critic_optimizer.step()
                stats.append({"ppo/pg_loss": pg_loss.item(), "ppo/value_loss": value_loss.item(), "ppo/clip_fraction": clip_fraction.item(),
                              "ppo/approx_kl": approx_kl.item(), "policy/grad_norm": grad_norm})
        kl_k1 = ((old_token_logp - ref_token_logp) * continuation).sum(1)
        # how much of the returns' variance the rollout values explain (1: perfect critic, ≤ 0: no better than a constant)
        explained_variance = 1 - masked_var(returns - values, continuation) / masked_var(returns, continuation).clamp_min(1e-8)
        row.update({key: sum(s[key] for s in stats) / len(stats) for key in stats[0]})  # means over epochs and minibatches
        row.update({"policy/kl": kl.mean().item(), "policy/kl_k1": kl_k1.mean().item(), "ppo/value_mean": masked_mean(values, continuation).item(),
                    "ppo/explained_variance": explained_variance.item()})

        if iteration % args.eval_every == 0 or iteration <= args.eval_first or iteration == args.iterations:
            evaluation = common.evaluate(policy, ref_policy, tokenizer, test_prompts, args.task, args.max_new_tokens,
                                         args.eval_batch_size, args.seed, args.device)
            row.update({"eval/reward": evaluation["reward"], "eval/kl": evaluation["kl"]})
            run.samples(iteration, evaluation["samples"])
            progress.set_postfix(prompts=counters["prompts_seen"], reward=f"{evaluation['reward']:.2f}", kl=f"{evaluation['kl']:.2f}")
        run.end_iteration(row, counters, models, optimizers)
    run.finish(policy, tokenizer, counters)
    print(f"done: {run.dir} (final eval reward {evaluation['reward']:.3f}, KL {evaluation['kl']:.3f})")
