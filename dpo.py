"""DPO and iterated DPO: the direct-preference baselines of Makar-Limanov et al. (SPEC §8-9, D16).

No reward model: the policy is fitted to the preference pairs C = {(x, y_w, y_l)} with the loss of Rafailov et al.
(2023, eq. 7), whose minimiser is the optimum of the same β-KL-regularised objective as the paper's eq. 8:
  L_DPO(θ) = −(1/|C|) Σ_i log σ(β h_i),   h = [log π_θ(y_w|x) − log π_ref(y_w|x)] − [log π_θ(y_l|x) − log π_ref(y_l|x)].
Each iteration takes B prompts, forms C from k = 4 samples each (best vs worst by the oracle, D8) and makes one
RMSprop step on L_DPO. Where the samples come from is the only switch:
  - offline DPO (default): from π_ref, generated once for all training prompts and cached (D16);
  - `--online`, iterated DPO (paper §6, "we retrain a DPO model after sampling new completions from the current
    policy"): fresh samples from the current π_θ every batch, π_ref fixed, as the authors' IteratedDPOTrainer does
    (SPEC §9: one step per batch, no reference refresh).
Logged: the loss, the implicit rewards β(log π_θ(y|x) − log π_ref(y|x)) of winners and losers, their margin β·h,
and the accuracy (fraction of pairs whose winner has the strictly larger implicit reward).

Departures from the authors' code (SPEC Decisions): log-probs of the generated token ids of prompt ⊕ continuation,
prompt positions excluded but the prompt conditioning kept, not of re-tokenized continuation text without the prompt
(D3, D4, SPEC §8 (c)); the offline pairs come from the training prompts, not UltraFeedback (SPEC §1.2); pure
sampling (D2); tied prompts are resampled, then dropped (D8); dropout is off, so h = 0 and L = log 2 at
initialisation (D20).
"""

import dataclasses
from typing import Annotated

import torch
import torch.nn.functional as F
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
    """k: continuations per prompt; the oracle's best and worst form a pair (D8)"""
    prompt_len: Annotated[int, common.Range(2)] = 16
    """prompts are cut to this many tokens, BOS included (D1)"""
    max_new_tokens: Annotated[int, common.Range(1)] = 75
    """continuation length; generation stops earlier at EOS (D1)"""
    beta: Annotated[float, common.Range(0, low_open=True)] = 0.1  # −log σ(β h) is constant at β = 0
    """β: weight of KL(π_θ ‖ π_ref) in the LM objective (eq. 8)"""
    policy_lr: Annotated[float, common.Range(0, low_open=True)] = 1e-6
    """RMSprop learning rate of the language model"""
    online: bool = False
    """iterated DPO: fresh pairs from the current policy every batch, π_ref fixed (default: offline pairs from π_ref)"""
    eval_every: Annotated[int, common.Range(1)] = 10
    """evaluate at iteration 0 and every this many iterations (D19)"""
    eval_first: Annotated[int, common.Range(0)] = 0
    """also evaluate after each of the first this many iterations, where the reward-KL path moves fastest (0: no
    extra evaluations; they change no training step: the evaluation draws from its own generator)"""
    eval_batch_size: Annotated[int, common.Range(1)] = 32
    """test prompts per generation batch in the evaluation"""


def dpo_loss(chosen_logratio, rejected_logratio, beta):
    """Rafailov et al. eq. (7): mean of −log σ(β h), h = chosen − rejected log-ratio log π_θ(y|x) − log π_ref(y|x).
    Returns (loss, h)."""
    h = chosen_logratio - rejected_logratio
    return -F.logsigmoid(beta * h).mean(), h


# policy_lr by the tuning protocol, per method (docs/laptop-scale.md): DPO 1e-4, iterated DPO 3e-5 (1e-4 before it)
LAPTOP = dict(policy_lr=1e-4, online={True: dict(policy_lr=3e-5)})

if __name__ == "__main__":
    args = common.parse_args(Args, LAPTOP)
    common.seed_everything(args.seed)
    tokenizer = common.load_tokenizer(args.model, args.prompt_len)
    train_prompts = common.load_prompts(args.prompts, "train", min_prompts=args.batch_size)
    test_prompts = common.load_prompts(args.prompts, "test")
    policy = common.load_policy(args.model, tokenizer, args.device)
    ref_policy = common.load_policy(args.model, tokenizer, args.device).requires_grad_(False)
    policy_optimizer = torch.optim.RMSprop(policy.parameters(), lr=args.policy_lr)
    run = common.Run(args, "iterated_dpo" if args.online else "dpo")  # two methods: runs group apart
    models = {"policy": policy}
    optimizers = {"policy": policy_optimizer}
    counters = run.start_or_resume(models, optimizers)
    if not args.online:  # D16: k samples of every training prompt from π_ref, generated once (cached on disk)
        offline = common.offline_data(ref_policy, tokenizer, train_prompts, args.task, args.samples_per_prompt,
                                      args.max_new_tokens, args.seed, args.device)
        run.record("offline_data", offline["stats"])
        if counters["iteration"] == 0:  # every oracle query of the offline data was made before training
            counters["pairs_queried"] = offline["stats"]["pairs_queried"]
    batches = common.prompt_batches(train_prompts, args.batch_size, args.seed, skip=counters["prompts_seen"] // args.batch_size)
    evaluation = run.last_evaluation()
    if counters["iteration"] == 0:
        evaluation = common.evaluate(policy, ref_policy, tokenizer, test_prompts, args.task, args.max_new_tokens,
                                     args.eval_batch_size, args.seed, args.device)
        run.log({**counters, "eval/reward": evaluation["reward"], "eval/kl": evaluation["kl"]})
        run.samples(0, evaluation["samples"])
    progress = tqdm(range(counters["iteration"] + 1, args.iterations + 1), desc=run.algo, initial=counters["iteration"], total=args.iterations)
    progress.set_postfix(prompts=counters["prompts_seen"], reward=f"{evaluation['reward']:.2f}", kl=f"{evaluation['kl']:.2f}")
    for iteration in progress:
        # 1. C: B prompts, k samples each (π_ref's cached ones, or fresh ones from π_θ with --online), best vs worst (D8)
        if args.online:
            batch = common.rollout(policy, tokenizer, next(batches), args.task, args.samples_per_prompt,
                                   args.max_new_tokens, args.device)
        else:
            batch = common.offline_rollout(offline, next(batches), args.device)
        counters["iteration"] = iteration
        counters["prompts_seen"] += args.batch_size
        counters["pairs_queried"] += batch.queries
        counters["pairs_kept"] += int(batch.keep.sum())
        pairs = torch.cat([batch.rows("chosen"), batch.rows("rejected")])  # winners first, then losers
        n_pairs = len(pairs) // 2
        ids, mask, P = batch.input_ids, batch.attention_mask, batch.prompt_width
        row = {**counters, "train/dropped_pairs": args.batch_size - n_pairs}
        if args.online:  # the offline data's oracle statistics are in config.json ("offline_data"), once
            row.update({"train/oracle_reward": batch.rewards.mean().item(),
                        "train/first_draw_tie_rate": batch.first_draw_ties / args.batch_size, "train/redraws": batch.redraws})
        if n_pairs > 0:
            # 2. one RMSprop step on L_DPO(θ) (eq. 7), winners and losers in one forward pass; the log-ratio sums the
            # continuation tokens only, each conditioned on the prompt (D4)
            pair_ids, pair_mask, pair_continuation = ids[pairs], mask[pairs], batch.continuation_mask[pairs]
            with torch.no_grad():
                ref_token_logp, _ = common.continuation_logprobs(ref_policy, pair_ids, pair_mask, P)
            token_logp, _ = common.continuation_logprobs(policy, pair_ids, pair_mask, P)
            logratio = ((token_logp - ref_token_logp) * pair_continuation).sum(1)
            policy_loss, h = dpo_loss(logratio[:n_pairs], logratio[n_pairs:], args.beta)
            policy_optimizer.zero_grad()
            policy_loss.backward()
            row["policy/grad_norm"] = torch.nn.utils.clip_grad_norm_(policy.parameters(), float("inf")).item()
            policy_optimizer.step()
            implicit_reward = args.beta * logratio.detach()  # β(log π_θ − log π_ref): DPO's implicit reward
            row.update({"policy/loss": policy_loss.item(), "dpo/chosen_reward": implicit_reward[:n_pairs].mean().item(),
                        "dpo/rejected_reward": implicit_reward[n_pairs:].mean().item(),
                        "dpo/margin": (args.beta * h).mean().item(), "dpo/accuracy": (h > 0).float().mean().item()})

        if iteration % args.eval_every == 0 or iteration <= args.eval_first or iteration == args.iterations:
            evaluation = common.evaluate(policy, ref_policy, tokenizer, test_prompts, args.task, args.max_new_tokens,
                                         args.eval_batch_size, args.seed, args.device)
            row.update({"eval/reward": evaluation["reward"], "eval/kl": evaluation["kl"]})
            run.samples(iteration, evaluation["samples"])
            progress.set_postfix(prompts=counters["prompts_seen"], reward=f"{evaluation['reward']:.2f}", kl=f"{evaluation['kl']:.2f}")
        run.end_iteration(row, counters, models, optimizers)
    run.finish(policy, tokenizer, counters)
    print(f"done: {run.dir} (final eval reward {evaluation['reward']:.3f}, KL {evaluation['kl']:.3f})")
