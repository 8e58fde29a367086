"""PARL: the STA paper's PARL baseline (§5 "Competing approaches"; Chakraborty et al. 2023; D14, SPEC §6).

The reward model r_ω leads, the language model π_θ follows, and only the leader's data queries the oracle. Each outer
iteration t:
  1. follower: θ^{t,0} = θ^{t-1}, then S times: a FRESH batch of B prompts, k = 4 continuations each from the current
     π_θ, scored by the frozen r_{ω^{t-1}} (no oracle), and one RMSprop step on −R^β_LM(θ, ω^{t-1}) (eq. 8) with the
     REINFORCE estimator (eq. 17-18) on its kB samples:
     L_LM(θ) = −(1/N) Σ_j r_{ω^{t-1}}(y_j; x_j) · log π_θ(y_j|x_j) + β (1/N) Σ_j Σ_t KL(π_θ(·|s_t) ‖ π_ref(·|s_t));
  2. leader: one AdamW step on the Bradley-Terry loss on C, the oracle's best and worst of the LAST inner batch (D8),
     warm-started from ω^{t-1} (eq. 4): L_RM(ω) = −(1/|C|) Σ_i log σ(r_ω(y_w,i; x_i) − r_ω(y_l,i; x_i)).
An outer iteration consumes S·B prompts but asks the oracle about B of them, so "the LM may be updated based on an
outdated reward signal" (§5). The x-axis is prompts consumed (D18); prompts_seen, pairs_queried and pairs_kept are all logged.
So T defaults to 200 outer iterations, evaluated every 2: the 1000 LM steps and 16,000 prompts of the other methods'
1000 iterations (D19), which is also what the paper's runtimes imply (PARL 1847 s < Simultaneous 2131 s, SPEC §6(b)).
No hyper-gradient: the paper's PARL implementation takes a first-order RM step like the other baselines (SPEC §6).

Departures from the paper and the authors' code (SPEC Decisions): pure sampling, not top-k 50 (D2); token ids are
kept, never decoded and re-tokenized, and masks come from positions (D3, D4); the KL term is exact over the
vocabulary in the paper's direction KL(π_θ ‖ π_ref), differentiated through the logits only (the dependence of the
visited prefixes on θ is ignored) (D6); tied prompts are resampled, then dropped (D8); REINFORCE runs on all kB
samples of each inner batch: the inner batches are never ranked, so the 2B sequences of C (D12) do not exist there;
dropout is off (D20).
"""

import dataclasses
from typing import Annotated, Literal

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
    iterations: Annotated[int, common.Range(1)] = 200
    """T: outer iterations, S·B prompts each (200: the 16,000 prompts of the others' 1000 iterations, D18/D19)"""
    batch_size: Annotated[int, common.Range(1)] = 16
    """B: prompts per inner step (S·B per outer iteration)"""
    samples_per_prompt: Annotated[int, common.Range(2)] = 4
    """k: continuations per prompt; the oracle's best and worst form a pair (D8)"""
    prompt_len: Annotated[int, common.Range(2)] = 16
    """prompts are cut to this many tokens, BOS included (D1)"""
    max_new_tokens: Annotated[int, common.Range(1)] = 75
    """continuation length; generation stops earlier at EOS (D1)"""
    beta: Annotated[float, common.Range(0)] = 0.1
    """β: weight of KL(π_θ ‖ π_ref) in the LM objective (eq. 8)"""
    policy_lr: Annotated[float, common.Range(0, low_open=True)] = 1e-6
    """RMSprop learning rate of the language model"""
    inner_steps: Annotated[int, common.Range(1)] = 5
    """S: language-model steps per outer iteration, each on a fresh prompt batch"""
    rm_lr: Annotated[float, common.Range(0, low_open=True)] = 1e-5
    """AdamW learning rate of the reward model"""
    rm_weight_decay: Annotated[float, common.Range(0)] = 0.0
    """AdamW weight decay of the reward model (the authors' --regularize_pref)"""
    pg_baseline: Literal["none", "batch_mean"] = "none"
    """subtract the batch mean of the RM scores in REINFORCE (the paper has no baseline)"""
    eval_every: Annotated[int, common.Range(1)] = 2
    """evaluate at iteration 0 and every this many iterations (2: every 160 prompts, as the others' 10, D19)"""
    eval_first: Annotated[int, common.Range(0)] = 0
    """also evaluate after each of the first this many iterations, where the reward-KL path moves fastest (0: no
    extra evaluations; they change no training step: the evaluation draws from its own generator)"""
    eval_batch_size: Annotated[int, common.Range(1)] = 32
    """test prompts per generation batch in the evaluation"""


LAPTOP = dict(policy_lr=1e-4, rm_lr=1e-3, iterations=20)  # the 1,600 prompts of the others' 100 iterations

if __name__ == "__main__":
    args = common.parse_args(Args, LAPTOP)
    common.seed_everything(args.seed)
    tokenizer = common.load_tokenizer(args.model, args.prompt_len)
    train_prompts = common.load_prompts(args.prompts, "train", min_prompts=args.batch_size)
    test_prompts = common.load_prompts(args.prompts, "test")
    policy = common.load_policy(args.model, tokenizer, args.device)
    ref_policy = common.load_policy(args.model, tokenizer, args.device).requires_grad_(False)
    reward_model = common.load_reward_model(args.model, tokenizer, args.device)
    policy_optimizer = torch.optim.RMSprop(policy.parameters(), lr=args.policy_lr)
    rm_optimizer = torch.optim.AdamW(reward_model.parameters(), lr=args.rm_lr, weight_decay=args.rm_weight_decay)
    run = common.Run(args, "parl")
    models = {"policy": policy, "reward_model": reward_model}
    optimizers = {"policy": policy_optimizer, "reward_model": rm_optimizer}
    counters = run.start_or_resume(models, optimizers)
    batches = common.prompt_batches(train_prompts, args.batch_size, args.seed, skip=counters["prompts_seen"] // args.batch_size)
    evaluation = run.last_evaluation()
    if counters["iteration"] == 0:
        evaluation = common.evaluate(policy, ref_policy, tokenizer, test_prompts, args.task, args.max_new_tokens,
                                     args.eval_batch_size, args.seed, args.device)
        run.log({**counters, "eval/reward": evaluation["reward"], "eval/kl": evaluation["kl"]})
        run.samples(0, evaluation["samples"])
    progress = tqdm(range(counters["iteration"] + 1, args.iterations + 1), desc="parl", initial=counters["iteration"], total=args.iterations)
    progress.set_postfix(prompts=counters["prompts_seen"], reward=f"{evaluation['reward']:.2f}", kl=f"{evaluation['kl']:.2f}")
    for iteration in progress:
        counters["iteration"] = iteration
        # 1. follower: S RMSprop steps on L_LM(θ) = −(1/N) Σ_j r_{ω^{t-1}}(y_j) log π_θ(y_j|x_j) + β KL (eq. 8, 17-18),
        #    each on B fresh prompts with k samples from the current π_θ; only the last batch goes to the oracle (D14)
        for step in range(args.inner_steps):
            batch = common.rollout(policy, tokenizer, next(batches), args.task, args.samples_per_prompt,
                                   args.max_new_tokens, args.device, query_oracle=step == args.inner_steps - 1)
            counters["prompts_seen"] += args.batch_size
            ids, mask, P = batch.input_ids, batch.attention_mask, batch.prompt_width
            with torch.no_grad():
                rm_scores = common.reward_model_scores(reward_model, ids, mask)
                _, ref_logp = common.continuation_logprobs(ref_policy, ids, mask, P)
            weights = rm_scores - rm_scores.mean() if args.pg_baseline == "batch_mean" else rm_scores
            token_logp, logp = common.continuation_logprobs(policy, ids, mask, P)
            kl = common.exact_kl(logp, ref_logp, batch.continuation_mask)
            pg_loss = -(weights * (token_logp * batch.continuation_mask).sum(1)).mean()
            policy_loss = pg_loss + args.beta * kl.mean()
            policy_optimizer.zero_grad()
            policy_loss.backward()
            policy_grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), float("inf")).item()
            policy_optimizer.step()

        # C: the oracle's best vs worst of the last inner batch (D8)
        counters["pairs_queried"] += batch.queries
        counters["pairs_kept"] += int(batch.keep.sum())
        pairs = torch.cat([batch.rows("chosen"), batch.rows("rejected")])  # winners first, then losers
        n_pairs = len(pairs) // 2
        row = {**counters, "train/oracle_reward": batch.rewards.mean().item(),
               "train/first_draw_tie_rate": batch.first_draw_ties / args.batch_size, "train/redraws": batch.redraws,
               "train/dropped_pairs": args.batch_size - n_pairs}
        row.update({"policy/loss": policy_loss.item(), "policy/pg_loss": pg_loss.item(), "policy/kl": kl.mean().item(),
                    "policy/grad_norm": policy_grad_norm, "rm/score_mean": rm_scores.mean().item(),
                    "rm/score_std": rm_scores.std().item()})  # of the last inner step
        if n_pairs > 0:
            # 2. leader: one AdamW step on L_RM(ω; C) (eq. 4), warm-started from ω^{t-1}
            scores = common.reward_model_scores(reward_model, ids[pairs], mask[pairs])
            margin = scores[:n_pairs] - scores[n_pairs:]
            rm_loss = -F.logsigmoid(margin).mean()
            row["rm/accuracy"] = (margin > 0).float().mean().item()  # on pairs this RM has not been trained on yet
            rm_optimizer.zero_grad()
            rm_loss.backward()
            row["rm/grad_norm"] = torch.nn.utils.clip_grad_norm_(reward_model.parameters(), float("inf")).item()
            rm_optimizer.step()
            with torch.no_grad():  # L_RM on C after this iteration's RM step(s)
                scores = common.reward_model_scores(reward_model, ids[pairs], mask[pairs])
            row["rm/loss"] = -F.logsigmoid(scores[:n_pairs] - scores[n_pairs:]).mean().item()

        if iteration % args.eval_every == 0 or iteration <= args.eval_first or iteration == args.iterations:
            evaluation = common.evaluate(policy, ref_policy, tokenizer, test_prompts, args.task, args.max_new_tokens,
                                         args.eval_batch_size, args.seed, args.device)
            row.update({"eval/reward": evaluation["reward"], "eval/kl": evaluation["kl"]})
            run.samples(iteration, evaluation["samples"])
            progress.set_postfix(prompts=counters["prompts_seen"], reward=f"{evaluation['reward']:.2f}", kl=f"{evaluation['kl']:.2f}")
        run.end_iteration(row, counters, models, optimizers)
    run.finish(policy, tokenizer, counters)
    print(f"done: {run.dir} (final eval reward {evaluation['reward']:.3f}, KL {evaluation['kl']:.3f})")
