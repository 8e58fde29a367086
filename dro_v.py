"""DRO-V: Direct Reward Optimisation with a value network, on single-trajectory data (Richemond et al. 2024,
papers/dro-v.md §3; SPEC §10, D17). Not an algorithm of the STA paper: a baseline that needs no preference pairs.

Data: every one of the k samples from π_ref of every training prompt is its own triplet (x, y, r), generated once and
cached (the same samples as offline DPO, a different use), r the oracle's reward normalised to mean 0 / std 1 over the
data set (§4; config.json's "offline_data" records the constants and the data set's statistics). The KL-regularised
optimum (eq. 1) is
π*(y|x) = π_ref(y|x) exp(r/τ) / exp(V*(x)/τ) with V*(x) = τ log E_{π_ref}[exp(r/τ)] (eq. 2), and (π*, V*) is the
unique minimiser (Thm. 1) of the DRO loss (eq. 4, empirical form §3.3, averaged rather than summed):
  L(θ, φ) = ½ · mean_i ( r_i − V_φ(x_i) − τ ℓ_θ(x_i, y_i) )²,   ℓ_θ = log π_θ(y|x) − log π_ref(y|x) (sum over tokens).
Each iteration takes the k triplets of each of B prompts and steps both networks (Algorithm 1):
  - policy, eq. 8 rescaled by 1/τ: loss −(r − sg V)·log π_θ(y|x) + (τ/2)·ℓ², whose θ-gradient is (1/τ)·∂L/∂θ;
  - value, eq. 7: loss ½(r − V_φ(x) − τ·sg ℓ)², whose φ-gradient is ∂L/∂φ (and whose value is L itself).
V is not a variance-reduction baseline (§3.3): the samples come from μ = π_ref, not from π_θ, so
E_{y∼μ}[∇_θ log π_θ(y|x) V(x)] ≠ 0 and dropping or changing V biases the gradient; V must track
V^π(x) = E_μ[r − τℓ] (§3.2). For the same reason the ℓ² term stands where an on-policy method has the KL penalty.
Algorithm 1's box prints −½∇ℓ² where eq. 8, rescaled by 1/τ, gives −(τ/2)∇ℓ²: the two agree only at the paper's
τ = 1; we use (τ/2).

Choices where the paper is silent or differs (SPEC §10 (c)): V_φ is a separate network (sharing hurts, Fig. 5), the
reference backbone with a scalar head read at the last prompt token of the prompt alone, one value per example (D17);
a batch is B prompts × all k of their samples rather than B triplets drawn one by one (every triplet keeps the same
weight); μ is π_ref with D8's tie resampling, which keeps π_ref's support (all Thm. 1 needs); RMSprop and AdamW at the
project's learning rates, not AdaFactor at 1e-4; log-probs on generated token ids, prompt excluded (D3, D4); dropout
off (D20).
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
    """k: continuations per prompt in the offline data; each is its own triplet (x, y, r) (D17)"""
    prompt_len: Annotated[int, common.Range(2)] = 16
    """prompts are cut to this many tokens, BOS included (D1)"""
    max_new_tokens: Annotated[int, common.Range(1)] = 75
    """continuation length; generation stops earlier at EOS (D1)"""
    tau: Annotated[float, common.Range(0)] = 1.0
    """τ: weight of the KL regulariser (eq. 1), on rewards normalised to mean 0 / std 1"""
    policy_lr: Annotated[float, common.Range(0, low_open=True)] = 1e-6
    """RMSprop learning rate of the language model"""
    value_lr: Annotated[float, common.Range(0, low_open=True)] = 1e-5
    """AdamW learning rate of the value network V_φ"""
    eval_every: Annotated[int, common.Range(1)] = 10
    """evaluate at iteration 0 and every this many iterations (D19)"""
    eval_first: Annotated[int, common.Range(0)] = 0
    """also evaluate after each of the first this many iterations, where the reward-KL path moves fastest (0: no
    extra evaluations; they change no training step: the evaluation draws from its own generator)"""
    eval_batch_size: Annotated[int, common.Range(1)] = 32
    """test prompts per generation batch in the evaluation"""


def dro_v_policy_loss(logp, ref_logp, rewards, values, tau):
    """Eq. (8) × 1/τ: mean of −(r − sg V)·log π(y|x) + (τ/2)·ℓ², ℓ = log π(y|x) − log π_ref(y|x)."""
    logratio = logp - ref_logp
    return (-(rewards - values.detach()) * logp + tau / 2 * logratio.pow(2)).mean()


def dro_v_value_loss(logp, ref_logp, rewards, values, tau):
    """Eq. (7): mean of ½(r − V(x) − τ·sg ℓ)²; its value is the DRO loss of eq. (4)."""
    return 0.5 * (rewards - values - tau * (logp - ref_logp).detach()).pow(2).mean()


# τ = 0.1, the project's β (SPEC §10 (c)): with rewards normalised to std 1, the paper's τ = 1 lets the policy move
# about one nat from π_ref, which raises the laptop reward only from 1.0 to 1.4 in 100 iterations (3.7 with τ = 0.1)
LAPTOP = dict(policy_lr=1e-4, value_lr=1e-3, tau=0.1)

if __name__ == "__main__":
    args = common.parse_args(Args, LAPTOP)
    common.seed_everything(args.seed)
    tokenizer = common.load_tokenizer(args.model, args.prompt_len)
    train_prompts = common.load_prompts(args.prompts, "train", min_prompts=args.batch_size)
    test_prompts = common.load_prompts(args.prompts, "test")
    policy = common.load_policy(args.model, tokenizer, args.device)
    ref_policy = common.load_policy(args.model, tokenizer, args.device).requires_grad_(False)
    value_model = common.load_reward_model(args.model, tokenizer, args.device)  # V_φ: reference backbone + scalar head
    policy_optimizer = torch.optim.RMSprop(policy.parameters(), lr=args.policy_lr)
    value_optimizer = torch.optim.AdamW(value_model.parameters(), lr=args.value_lr)
    run = common.Run(args, "dro_v")
    models = {"policy": policy, "value_model": value_model}
    optimizers = {"policy": policy_optimizer, "value_model": value_optimizer}
    counters = run.start_or_resume(models, optimizers)
    # D17: k samples of every training prompt from π_ref, generated once (cached on disk); rewards normalised over it
    offline = common.offline_data(ref_policy, tokenizer, train_prompts, args.task, args.samples_per_prompt,
                                  args.max_new_tokens, args.seed, args.device)
    reward_mean, reward_std = offline["rewards"].mean().item(), offline["rewards"].std().clamp_min(1e-8).item()
    run.record("offline_data", {**offline["stats"], "normalised_by": [reward_mean, reward_std]})
    k = args.samples_per_prompt
    batches = common.prompt_batches(train_prompts, args.batch_size, args.seed, skip=counters["prompts_seen"] // args.batch_size)
    evaluation = run.last_evaluation()
    if counters["iteration"] == 0:
        evaluation = common.evaluate(policy, ref_policy, tokenizer, test_prompts, args.task, args.max_new_tokens,
                                     args.eval_batch_size, args.seed, args.device)
        run.log({**counters, "eval/reward": evaluation["reward"], "eval/kl": evaluation["kl"]})
        run.samples(0, evaluation["samples"])
    progress = tqdm(range(counters["iteration"] + 1, args.iterations + 1), desc="dro_v", initial=counters["iteration"], total=args.iterations)
    progress.set_postfix(prompts=counters["prompts_seen"], reward=f"{evaluation['reward']:.2f}", kl=f"{evaluation['kl']:.2f}")
    for iteration in progress:
        # 1. B prompts with all k of their offline samples, each sample its own triplet (x, y, r) (D17)
        batch = common.offline_rollout(offline, next(batches), args.device)
        counters["iteration"] = iteration
        counters["prompts_seen"] += args.batch_size
        ids, mask, P, continuation = batch.input_ids, batch.attention_mask, batch.prompt_width, batch.continuation_mask
        rewards = ((batch.rewards.flatten() - reward_mean) / reward_std).to(args.device)
        row = dict(counters)  # the offline data's oracle statistics are in config.json ("offline_data"), once

        # 2. one value per example: V_φ(x) at the last prompt token, computed once per prompt for its k samples
        values = common.reward_model_scores(value_model, ids[::k, :P], mask[::k, :P]).repeat_interleave(k)
        with torch.no_grad():
            ref_token_logp, _ = common.continuation_logprobs(ref_policy, ids, mask, P)
        token_logp, _ = common.continuation_logprobs(policy, ids, mask, P)
        logp, ref_logp = (token_logp * continuation).sum(1), (ref_token_logp * continuation).sum(1)  # D4

        # 3. one step of each network (Algorithm 1): eq. 8 × 1/τ for θ, eq. 7 for φ; the stop-gradients keep θ out of
        # the value loss and φ out of the policy loss, so one backward of the sum gives both
        policy_loss = dro_v_policy_loss(logp, ref_logp, rewards, values, args.tau)
        value_loss = dro_v_value_loss(logp, ref_logp, rewards, values, args.tau)
        policy_optimizer.zero_grad()
        value_optimizer.zero_grad()
        (policy_loss + value_loss).backward()
        row["policy/grad_norm"] = torch.nn.utils.clip_grad_norm_(policy.parameters(), float("inf")).item()
        row["value/grad_norm"] = torch.nn.utils.clip_grad_norm_(value_model.parameters(), float("inf")).item()
        policy_optimizer.step()
        value_optimizer.step()
        logratio = (logp - ref_logp).detach()
        row.update({"policy/loss": policy_loss.item(), "value/loss": value_loss.item(), "value/mean": values.mean().item(),
                    "dro_v/logratio": logratio.mean().item(), "dro_v/logratio_abs_max": logratio.abs().max().item()})

        if iteration % args.eval_every == 0 or iteration <= args.eval_first or iteration == args.iterations:
            evaluation = common.evaluate(policy, ref_policy, tokenizer, test_prompts, args.task, args.max_new_tokens,
                                         args.eval_batch_size, args.seed, args.device)
            row.update({"eval/reward": evaluation["reward"], "eval/kl": evaluation["kl"]})
            run.samples(iteration, evaluation["samples"])
            progress.set_postfix(prompts=counters["prompts_seen"], reward=f"{evaluation['reward']:.2f}", kl=f"{evaluation['kl']:.2f}")
        run.end_iteration(row, counters, models, optimizers)
    run.finish(policy, tokenizer, counters)
    print(f"done: {run.dir} (final eval reward {evaluation['reward']:.3f}, KL {evaluation['kl']:.3f})")
