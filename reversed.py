"""Reversed: Algorithm 2 of Makar-Limanov et al. (App. C), STA-RLHF with the players' roles swapped (SPEC §5).

The reward model r_ω leads, the language model π_θ follows. Each outer iteration t:
  1. sample B prompts and k = 4 continuations each from π_{θ^{t-1}}; the oracle's best and worst form C (D8);
  2. follower: θ^{t-1,0} = θ^{t-1}, then S RMSprop steps on −R^β_LM(θ, ω^{t-1}) (eq. 8) on the same C, with the
     REINFORCE estimator (eq. 17-18) and the scores of the fixed r_{ω^{t-1}}, computed once:
     L_LM(θ) = −(1/N) Σ_j r_{ω^{t-1}}(y_j; x_j) · log π_θ(y_j|x_j) + β (1/N) Σ_j Σ_t KL(π_θ(·|s_t) ‖ π_ref(·|s_t)).
     Steps 2…S reuse the samples of π_{θ^{t-1}} with no importance weights, as the paper does; the KL is recomputed
     at the current θ every step;
  3. leader: one AdamW step on the Bradley-Terry loss on C (eq. 4), warm-started from ω^{t-1},
     L_RM(ω) = −(1/|C|) Σ_i log σ(r_ω(y_w,i; x_i) − r_ω(y_l,i; x_i)).
The paper: "Reversed starts off competitive, but becomes unstable" (Fig. 1).

Departures from the paper and the authors' code (SPEC Decisions): pure sampling, not top-k 50 (D2); token ids are
kept, never decoded and re-tokenized, and masks come from positions (D3, D4); the KL term is exact over the
vocabulary in the paper's direction KL(π_θ ‖ π_ref), differentiated through the logits only (the dependence of the
visited prefixes on θ is ignored) (D6); tied prompts are resampled, then dropped (D8); REINFORCE runs on the 2B
sequences of C as the paper says, `--pg-samples all` uses all kB samples (D12); dropout is off (D20).
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
    beta: Annotated[float, common.Range(0)] = 0.1
    """β: weight of KL(π_θ ‖ π_ref) in the LM objective (eq. 8)"""
    policy_lr: Annotated[float, common.Range(0, low_open=True)] = 1e-6
    """RMSprop learning rate of the language model"""
    inner_steps: Annotated[int, common.Range(1)] = 5
    """S: language-model steps per outer iteration, all on the same C"""
    rm_lr: Annotated[float, common.Range(0, low_open=True)] = 1e-5
    """AdamW learning rate of the reward model"""
    rm_weight_decay: Annotated[float, common.Range(0)] = 0.0
    """AdamW weight decay of the reward model (the authors' --regularize_pref)"""
    pg_samples: Literal["pairs", "all"] = "pairs"
    """REINFORCE on the 2B sequences of C (paper) or on all kB samples (unbiased) (D12)"""
    pg_baseline: Literal["none", "batch_mean"] = "none"
    """subtract the batch mean of the RM scores in REINFORCE (the paper has no baseline)"""
    eval_every: Annotated[int, common.Range(1)] = 10
    """evaluate at iteration 0 and every this many iterations (D19)"""
    eval_first: Annotated[int, common.Range(0)] = 0
    """also evaluate after each of the first this many iterations, where the reward-KL path moves fastest (0: no
    extra evaluations; they change no training step: the evaluation draws from its own generator)"""
    eval_batch_size: Annotated[int, common.Range(1)] = 32
    """test prompts per generation batch in the evaluation"""


LAPTOP = dict(policy_lr=2e-5, rm_lr=1e-3)  # S = 5 LM steps per iteration on the same C

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
    run = common.Run(args, "reversed")
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
    progress = tqdm(range(counters["iteration"] + 1, args.iterations + 1), desc="reversed", initial=counters["iteration"], total=args.iterations)
    progress.set_postfix(prompts=counters["prompts_seen"], reward=f"{evaluation['reward']:.2f}", kl=f"{evaluation['kl']:.2f}")
    for iteration in progress:
        # 1. C: B prompts, k samples each from π_θ^{t-1}, best vs worst by the oracle (D8)
        batch = common.rollout(policy, tokenizer, next(batches), args.task, args.samples_per_prompt,
                               args.max_new_tokens, args.device)
        counters["iteration"] = iteration
        counters["prompts_seen"] += args.batch_size
        counters["pairs_queried"] += batch.queries
        counters["pairs_kept"] += int(batch.keep.sum())
        pairs = torch.cat([batch.rows("chosen"), batch.rows("rejected")])  # winners first, then losers
        n_pairs = len(pairs) // 2
        ids, mask, P = batch.input_ids, batch.attention_mask, batch.prompt_width
        row = {**counters, "train/oracle_reward": batch.rewards.mean().item(),
               "train/first_draw_tie_rate": batch.first_draw_ties / args.batch_size, "train/redraws": batch.redraws,
               "train/dropped_pairs": args.batch_size - n_pairs}
        if n_pairs > 0:
            # 2. follower: S RMSprop steps on L_LM(θ) = −(1/N) Σ_j r_{ω^{t-1}}(y_j) log π_θ(y_j|x_j) + β KL (eq. 8, 17-18)
            pg_rows = pairs if args.pg_samples == "pairs" else torch.arange(len(ids), device=ids.device)  # D12
            pg_ids, pg_mask, pg_continuation = ids[pg_rows], mask[pg_rows], batch.continuation_mask[pg_rows]
            with torch.no_grad():  # r_{ω^{t-1}} and π_ref are fixed during the inner loop: scored once
                rm_scores = common.reward_model_scores(reward_model, pg_ids, pg_mask)
                _, ref_logp = common.continuation_logprobs(ref_policy, pg_ids, pg_mask, P)
            weights = rm_scores - rm_scores.mean() if args.pg_baseline == "batch_mean" else rm_scores
            for step in range(args.inner_steps):
                # the samples of π_{θ^{t-1}} are reused without importance weights (Alg. 2); the KL is taken at the current θ
                token_logp, logp = common.continuation_logprobs(policy, pg_ids, pg_mask, P)
                kl = common.exact_kl(logp, ref_logp, pg_continuation)
                pg_loss = -(weights * (token_logp * pg_continuation).sum(1)).mean()
                policy_loss = pg_loss + args.beta * kl.mean()
                policy_optimizer.zero_grad()
                policy_loss.backward()
                row["policy/grad_norm"] = torch.nn.utils.clip_grad_norm_(policy.parameters(), float("inf")).item()
                policy_optimizer.step()
            row.update({"policy/loss": policy_loss.item(), "policy/pg_loss": pg_loss.item(), "policy/kl": kl.mean().item(),
                        "rm/score_mean": rm_scores.mean().item(), "rm/score_std": rm_scores.std().item()})

            # 3. leader: one AdamW step on L_RM(ω; C) (eq. 4), warm-started from ω^{t-1}
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
