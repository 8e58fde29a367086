"""Total STA-RLHF: Algorithm 1 of Makar-Limanov et al. with the implicit (total-derivative) term of eq. 11 (SPEC §3).

The language model π_θ leads, the reward model r_ω follows. Each outer iteration t:
  1. sample B prompts and k = 4 continuations each from π_{θ^{t-1}}; the oracle's best and worst form C (D8);
  2. follower: ω^{t-1,0} = ω^{t-1}, then S AdamW steps on the Bradley-Terry loss on the same C (eq. 4),
     L_RM(ω) = −(1/|C|) Σ_i log σ(r_ω(y_w,i; x_i) − r_ω(y_l,i; x_i));
  3. leader: one RMSprop step on −R^β_LM(θ, ω^t) (eq. 8), with the REINFORCE estimator (eq. 17-18):
     L_LM(θ) = −(1/N) Σ_j r_{ω^t}(y_j; x_j) · log π_θ(y_j|x_j) + β (1/N) Σ_j Σ_t KL(π_θ(·|s_t) ‖ π_ref(·|s_t)).
     "Only using ∇_θ R_LM results in our naive STA-RLHF algorithm": Total STA adds eq. 11's implicit term,
     dF/dθ = ∇_θ R^β_LM − ∇_θ⟨∇_ω L_RM, u⟩ with (H + λI) u = ∇_ω R_LM and H = ∇²_ω L_RM on C, all at (θ^{t-1}, ω^t):
     b = ∇_ω R_LM is the gradient of the mean RM score over the REINFORCE sequences (eq. 34-35); u comes from at most
     10 conjugate-gradient steps whose Hessian-vector products differentiate one create_graph gradient again (D13);
     θ enters L_RM only through the sampling of C, so the mixed term is a score-function estimate (eq. 19-26),
     ∇_θ (1/|C|) Σ_i sg(c_i)·(log π_θ(y_w,i|x_i) + log π_θ(y_l,i|x_i)) with c_i = ⟨∇_ω ℓ_i, u⟩ the directional
     derivative of pair i's loss ℓ_i = −log σ(r_ω(y_w,i) − r_ω(y_l,i)) along u.
     `--curvature gauss-newton` solves the same eq. 11 (same b, same mixed term) with H replaced by the generalised
     Gauss-Newton matrix G = (1/|C|) Σ_i σ(Δ_i)(1 − σ(Δ_i)) ∇Δ_i ∇Δ_iᵀ of L_RM, Δ_i = r_ω(y_w,i) − r_ω(y_l,i): H without
     its −(1/|C|) Σ_i (1 − σ(Δ_i)) ∇²Δ_i term, positive semi-definite and of rank ≤ |C|, so u is solved directly in the
     |C|-dimensional pair space from the |C| per-pair gradients ∇Δ_i.

Departures from the paper and the authors' code (SPEC Decisions): pure sampling, not top-k 50 (D2); token ids are
kept, never decoded and re-tokenized, and masks come from positions (D3, D4); the KL term is exact over the
vocabulary in the paper's direction KL(π_θ ‖ π_ref), differentiated through the logits only (the dependence of the
visited prefixes on θ is ignored) (D6); tied prompts are resampled, then dropped (D8); REINFORCE runs on the 2B
sequences of C as the paper says, `--pg-samples all` uses all kB samples (D12); dropout is off (D20). CG runs on the
damped loss Hessian H + λI (the paper gives no λ) and stops on non-positive curvature (D13), or, with
`--curvature gauss-newton`, G + λI replaces it (D13 allows it; not the paper's); `--mixed-score all`
scores all k samples of a prompt instead of the selected pair, the unbiased score of best/worst-of-k (SPEC §3(c)).
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
    """S: reward-model steps per outer iteration"""
    rm_lr: Annotated[float, common.Range(0, low_open=True)] = 1e-5
    """AdamW learning rate of the reward model"""
    rm_weight_decay: Annotated[float, common.Range(0)] = 0.0
    """AdamW weight decay of the reward model (the authors' --regularize_pref)"""
    pg_samples: Literal["pairs", "all"] = "pairs"
    """REINFORCE on the 2B sequences of C (paper) or on all kB samples (unbiased) (D12)"""
    pg_baseline: Literal["none", "batch_mean"] = "none"
    """subtract the batch mean of the RM scores in REINFORCE (the paper has no baseline)"""
    implicit: bool = True
    """add eq. 11's implicit term to the leader's gradient (--no-implicit gives Naive STA, bit for bit)"""
    curvature: Literal["exact", "gauss-newton"] = "exact"
    """curvature of the RM loss in eq. 11: its Hessian H (the paper's, by CG) or its generalised Gauss-Newton part G
    (positive semi-definite, solved directly in the |C|-dimensional pair space) (D13)"""
    cg_iterations: Annotated[int, common.Range(1)] = 10
    """conjugate-gradient iterations for u = (H + λI)⁻¹ ∇_ω R_LM (the paper's 10; exact curvature only)"""
    cg_damping: Annotated[float, common.Range(0)] = 100.0
    """λ: damping added to the curvature; the Hessian of the RM loss is indefinite away from a minimum (D13; measured on
    SmolLM2-135M up to B = 8 and 48 tokens: λ ≤ 30 broke down on every iteration, λ = 100 on none; docs/sta_total.md);
    gauss-newton needs λ > 0"""
    cg_tol: Annotated[float, common.Range(0)] = 1e-2
    """CG stops before cg_iterations once ‖(H + λI)u − b‖ ≤ cg_tol·‖b‖; each step is one HVP (~6 RM forwards); at 1e-2,
    u and c were measured within 1% of a tight solve (README; exact curvature only)"""
    mixed_score: Literal["pairs", "all"] = "pairs"
    """score of the mixed term: log π of the selected pair (eq. 22) or of all k samples (needs --pg-samples all)"""
    eval_every: Annotated[int, common.Range(1)] = 10
    """evaluate at iteration 0 and every this many iterations (D19)"""
    eval_first: Annotated[int, common.Range(0)] = 0
    """also evaluate after each of the first this many iterations, where the reward-KL path moves fastest (0: no
    extra evaluations; they change no training step: the evaluation draws from its own generator)"""
    eval_batch_size: Annotated[int, common.Range(1)] = 32
    """test prompts per generation batch in the evaluation"""


# λ = 10: docs/sta_total.md's damping table; policy_lr by the tuning protocol, per curvature (docs/laptop-scale.md):
# 1e-4 with the Hessian, 3e-5 with Gauss-Newton (1e-4 before it)
LAPTOP = dict(policy_lr=1e-4, rm_lr=1e-3, cg_damping=10.0, curvature={"gauss-newton": dict(policy_lr=3e-5)})


def implicit_term(pair_losses, rm_params, b, cg_iterations, cg_damping, cg_tol):
    """The follower's side of eq. 11, given per-pair losses ℓ_i(ω) of C with L_RM = (1/|C|) Σ_i ℓ_i (eq. 4).

    u = (H + λI)⁻¹ b, H = ∇²_ω L_RM, by CG whose Hessian-vector products all differentiate one create_graph gradient
    again (D13). c_i = ⟨∇_ω ℓ_i, u⟩ rides along them (double-vjp trick): with per-pair weights w (all 1),
    ∇_ω L_RM = (1/|C|) Σ_i w_i ∇_ω ℓ_i, so the backward that gives H p also gives ∂⟨∇_ω L_RM, p⟩/∂w_i = ⟨∇_ω ℓ_i, p⟩/|C|,
    and CG sums these along its steps into c for its u (no product of its own). Returns (u, c, CG info).
    """
    pair_weights = torch.ones_like(pair_losses, requires_grad=True)
    rm_grads = torch.autograd.grad((pair_weights * pair_losses).mean(), rm_params, create_graph=True)
    u, info = common.conjugate_gradient(lambda p: common.hessian_vector_product(rm_grads, rm_params, p, also_wrt=pair_weights),
                                        b, cg_iterations, cg_damping, cg_tol)
    m_u = info.pop("m_x")  # None when u = 0
    c = len(pair_losses) * m_u if m_u is not None else torch.zeros_like(pair_losses)
    return u, c, info


def implicit_term_gauss_newton(pair_margins, n_pairs, rm_params, b, cg_damping, pair_weights=None):
    """implicit_term with the generalised Gauss-Newton matrix G of L_RM in place of H (D13, --curvature gauss-newton),
    given the margins Δ_i(ω) = r_ω(y_w,i) − r_ω(y_l,i) of C's n_pairs pairs, each with its own graph (an iterable: one
    pair's forward and backward at a time); `pair_weights` a_i weight the pairs, L_RM = (1/|C|) Σ_i a_i ℓ_i (default 1,
    eq. 4).

    ℓ_i = −log σ(Δ_i): ∇²ℓ_i = σ(Δ_i)σ(−Δ_i) ∇Δ_i ∇Δ_iᵀ − σ(−Δ_i) ∇²Δ_i, and G = (1/|C|) Σ_i a_i σ(Δ_i)σ(−Δ_i) ∇Δ_i ∇Δ_iᵀ
    keeps the first term: positive semi-definite, so the solve cannot break down, and of rank ≤ |C|. With J the |C|
    per-pair gradients ∇Δ_i, u = (G + λI)⁻¹ b is solved directly in the |C|-dimensional pair space
    (common.gauss_newton_solve): on the laptop it took 0.26 CPU-s a solve, CG with Gauss-Newton products 1.15 s to reach
    1e-2 (README), at the price of holding J, |C| copies of ω (paper scale: 16 × 125M floats, 8 GB). c_i = ⟨∇_ω ℓ_i, u⟩ =
    −a_i σ(−Δ_i) ⟨∇Δ_i, u⟩ comes from J u. Returns (u, c, info) with implicit_term's info: 0 CG iterations, no breakdown,
    the residual ‖(G + λI)u − b‖/‖b‖."""
    jacobian, margin = b.new_empty(n_pairs, len(b)), b.new_empty(n_pairs)  # J filled row by row: no second copy of it
    for i, pair_margin in enumerate(pair_margins):
        jacobian[i], margin[i] = common.flat(torch.autograd.grad(pair_margin, rm_params)), pair_margin.detach()
    weights = torch.ones_like(margin) if pair_weights is None else pair_weights
    curvature = weights * torch.sigmoid(margin) * torch.sigmoid(-margin) / len(margin)
    u, ju = common.gauss_newton_solve(jacobian, curvature, b, cg_damping)
    residual = (common.gauss_newton_vector_product(jacobian, curvature, u)[0] + cg_damping * u - b).norm() / b.norm()
    info = {"iterations": 0, "returned_iterate": 0, "residual": float(residual) if b.any() else 0.0, "breakdown": False,
            "hit_cap": False}
    return u, -weights * torch.sigmoid(-margin) * ju, info


if __name__ == "__main__":
    args = common.parse_args(Args, LAPTOP)
    if args.mixed_score == "all" and args.pg_samples != "all":
        common.fail("--mixed-score all reuses the log-probs of all k samples: pass --pg-samples all too")
    if args.curvature == "gauss-newton" and not args.cg_damping > 0:
        common.fail(f"--curvature gauss-newton needs --cg-damping > 0: G has rank at most |C| (got {args.cg_damping})")
    common.seed_everything(args.seed)
    tokenizer = common.load_tokenizer(args.model, args.prompt_len)
    train_prompts = common.load_prompts(args.prompts, "train", min_prompts=args.batch_size)
    test_prompts = common.load_prompts(args.prompts, "test")
    policy = common.load_policy(args.model, tokenizer, args.device)
    ref_policy = common.load_policy(args.model, tokenizer, args.device).requires_grad_(False)
    reward_model = common.load_reward_model(args.model, tokenizer, args.device)
    policy_optimizer = torch.optim.RMSprop(policy.parameters(), lr=args.policy_lr)
    rm_optimizer = torch.optim.AdamW(reward_model.parameters(), lr=args.rm_lr, weight_decay=args.rm_weight_decay)
    run = common.Run(args, "sta_total" if args.curvature == "exact" else "sta_total_gn")
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
    progress = tqdm(range(counters["iteration"] + 1, args.iterations + 1), desc="sta_total", initial=counters["iteration"], total=args.iterations)
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
            # 2. follower: S AdamW steps on L_RM(ω; C) (eq. 4), warm-started from ω^{t-1}
            for step in range(args.inner_steps):
                scores = common.reward_model_scores(reward_model, ids[pairs], mask[pairs])
                margin = scores[:n_pairs] - scores[n_pairs:]
                rm_loss = -F.logsigmoid(margin).mean()
                if step == 0:  # accuracy on pairs this RM has not been trained on yet
                    row["rm/accuracy"] = (margin > 0).float().mean().item()
                rm_optimizer.zero_grad()
                rm_loss.backward()
                row["rm/grad_norm"] = torch.nn.utils.clip_grad_norm_(reward_model.parameters(), float("inf")).item()
                rm_optimizer.step()
            with torch.no_grad():  # L_RM on C after this iteration's RM step(s)
                scores = common.reward_model_scores(reward_model, ids[pairs], mask[pairs])
            row["rm/loss"] = -F.logsigmoid(scores[:n_pairs] - scores[n_pairs:]).mean().item()

            # 3. leader: one RMSprop step on L_LM(θ) = −(1/N) Σ_j r_{ω^t}(y_j) log π_θ(y_j|x_j) + β KL (eq. 8, 17-18)
            pg_rows = pairs if args.pg_samples == "pairs" else torch.arange(len(ids), device=ids.device)  # D12
            pg_ids, pg_mask, pg_continuation = ids[pg_rows], mask[pg_rows], batch.continuation_mask[pg_rows]
            with torch.no_grad():
                rm_scores = common.reward_model_scores(reward_model, pg_ids, pg_mask)
                _, ref_logp = common.continuation_logprobs(ref_policy, pg_ids, pg_mask, P)
            weights = rm_scores - rm_scores.mean() if args.pg_baseline == "batch_mean" else rm_scores
            token_logp, logp = common.continuation_logprobs(policy, pg_ids, pg_mask, P)
            kl = common.exact_kl(logp, ref_logp, pg_continuation)
            pg_loss = -(weights * (token_logp * pg_continuation).sum(1)).mean()
            policy_loss = pg_loss + args.beta * kl.mean()
            if args.implicit:
                # eq. 11 at (θ^{t-1}, ω^t): dF/dθ = ∇_θ R^β_LM − ∇_θ⟨∇_ω L_RM, u⟩ with (H + λI) u = ∇_ω R_LM (SPEC §3)
                rm_params = list(reward_model.parameters())
                # b = ∇_ω R_LM: gradient of the mean RM score over the REINFORCE sequences (eq. 34-35)
                scores = common.reward_model_scores(reward_model, pg_ids, pg_mask)
                retain = args.pg_samples == "pairs" and args.curvature == "exact"
                b = common.flat(torch.autograd.grad(scores.mean(), rm_params, retain_graph=retain))
                if args.curvature == "gauss-newton":  # G for H: each pair's ∇Δ_i from a forward on its 2 sequences
                    pair_scores = (common.reward_model_scores(reward_model, ids[rows], mask[rows]) for rows in pairs.view(2, -1).T)
                    u, c, cg = implicit_term_gauss_newton((s[0] - s[1] for s in pair_scores), n_pairs, rm_params, b,
                                                          args.cg_damping)
                else:
                    if args.pg_samples == "all":  # H and c_i are on C alone (with "pairs" the same forward serves both)
                        scores = common.reward_model_scores(reward_model, ids[pairs], mask[pairs])
                    u, c, cg = implicit_term(-F.logsigmoid(scores[:n_pairs] - scores[n_pairs:]), rm_params, b,
                                             args.cg_iterations, args.cg_damping, args.cg_tol)
                del scores  # frees the RM's graph before the policy's backward
                # eq. 19-26: ∇_θ⟨∇_ω L_RM, u⟩ = ∇_θ (1/|C|) Σ_i sg(c_i)·score_i, on the log-probs REINFORCE computed
                seq_logp = (token_logp * pg_continuation).sum(1)
                if args.mixed_score == "pairs":  # eq. 22: log π_θ(y_w,i) + log π_θ(y_l,i)
                    pair_logp = seq_logp if args.pg_samples == "pairs" else seq_logp[pairs]
                    score = pair_logp[:n_pairs] + pair_logp[n_pairs:]
                else:  # Σ_j log π_θ(y_i,j) over all k samples the pair was selected from (pg_rows = all rows)
                    score = seq_logp.view(batch.rewards.shape)[batch.keep].sum(1)
                implicit_grads = torch.autograd.grad((c * score).mean(), list(policy.parameters()), retain_graph=True)
                row.update({"cg/iterations": cg["iterations"], "cg/returned_iterate": cg["returned_iterate"],
                            "cg/residual": cg["residual"], "cg/breakdown": int(cg["breakdown"]), "cg/b_norm": b.norm().item(),
                            "cg/u_norm": u.norm().item(), "cg/c_mean_abs": c.abs().mean().item(),
                            "cg/hit_cap": int(cg["hit_cap"])})
            policy_optimizer.zero_grad()
            policy_loss.backward()
            if args.implicit:  # descent on −dF/dθ: .grad = ∇_θ L_LM + ∇_θ J (naive part + implicit part)
                dot = sum((p.grad * g).sum() for p, g in zip(policy.parameters(), implicit_grads))
                naive_norm = torch.nn.utils.get_total_norm([p.grad for p in policy.parameters()])
                implicit_norm = torch.nn.utils.get_total_norm(implicit_grads)
                for p, g in zip(policy.parameters(), implicit_grads):
                    p.grad += g
                row.update({"policy/naive_grad_norm": naive_norm.item(), "policy/implicit_grad_norm": implicit_norm.item(),
                            "policy/implicit_cosine": (dot / (naive_norm * implicit_norm).clamp_min(1e-30)).item()})
            row["policy/grad_norm"] = torch.nn.utils.clip_grad_norm_(policy.parameters(), float("inf")).item()
            policy_optimizer.step()
            row.update({"policy/loss": policy_loss.item(), "policy/pg_loss": pg_loss.item(), "policy/kl": kl.mean().item(),
                        "rm/score_mean": rm_scores.mean().item(), "rm/score_std": rm_scores.std().item()})

        if iteration % args.eval_every == 0 or iteration <= args.eval_first or iteration == args.iterations:
            evaluation = common.evaluate(policy, ref_policy, tokenizer, test_prompts, args.task, args.max_new_tokens,
                                         args.eval_batch_size, args.seed, args.device)
            row.update({"eval/reward": evaluation["reward"], "eval/kl": evaluation["kl"]})
            run.samples(iteration, evaluation["samples"])
            progress.set_postfix(prompts=counters["prompts_seen"], reward=f"{evaluation['reward']:.2f}", kl=f"{evaluation['kl']:.2f}")
        run.end_iteration(row, counters, models, optimizers)
    run.finish(policy, tokenizer, counters)
    print(f"done: {run.dir} (final eval reward {evaluation['reward']:.3f}, KL {evaluation['kl']:.3f})")
