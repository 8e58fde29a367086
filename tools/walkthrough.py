"""One iteration of Total STA on one batch, stepped through, beside Naive STA on the same batch: writes
docs/walkthrough.md and its pictures (issue 26).

    python tools/walkthrough.py --out docs/walkthrough          # laptop model, B = 16, k = 4, λ = 10 (--laptop)

Any sta_total.py flag may follow (--task cwc, --seed 532, --batch-size 4, ...); the `--laptop` preset is always on.
The run is sta_total.py's first iteration, RNG for RNG: same seeding, same load order, same prompt_batches, and the
functions the script calls (common.rollout, common.reward_model_scores, common.continuation_logprobs,
common.exact_kl, sta_total.implicit_term, sta_total.implicit_term_gauss_newton, common.conjugate_gradient, ...). The
few lines of the script's loop it needs (the follower's steps, the leader's loss, b, the mixed term) are between the
`mirror` comments below, copied word for word (tests/test_walkthrough.py checks it, and checks the numbers against
sta_total.py's metrics.csv). Writes {out}/*.png, {out}/numbers.json and {out}.md.
"""

import time

STARTED = time.time()  # the page states the command's whole time, imports included

import argparse  # noqa: E402
import copy  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402
from unittest import mock  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import common  # noqa: E402
import sta_total  # noqa: E402
import quiet_pipe  # noqa: F401,E402  (`python tools/X.py | head` ends without a BrokenPipeError traceback)

DAMPINGS = (0.1, 1.0, 10.0)  # λ of the residual curves (section 3); the run's own λ is --cg-damping


@contextmanager
def recording_cg(residuals):
    """common.conjugate_gradient with record=residuals, for code that calls it (sta_total.implicit_term)."""
    with mock.patch.object(common, "conjugate_gradient", functools.partial(common.conjugate_gradient, record=residuals)):
        yield


def layer_of(name):
    """Parameter name → the layer it belongs to (OPT-like names: ...layers.3.self_attn...)."""
    match = re.search(r"layers\.(\d+)\.", name)
    if match:
        return f"layer {match.group(1)}"
    return "embeddings" if "embed" in name else "final norm / head"


def step_and_logprobs(policy, grads, lr, ids, mask, P, continuation):
    """A copy of π_θ^{t-1} after one RMSprop step (a fresh optimizer, as at iteration 1) along `grads`; its sequence
    log-probs of the rows ids."""
    stepped = copy.deepcopy(policy)
    optimizer = torch.optim.RMSprop(stepped.parameters(), lr=lr)
    for p, g in zip(stepped.parameters(), grads):
        p.grad = g.clone()
    optimizer.step()
    with torch.no_grad():
        token_logp, _ = common.continuation_logprobs(stepped, ids, mask, P)
    return (token_logp * continuation).sum(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="docs/walkthrough", help="folder of the pictures; the page is {out}.md")
    parser.add_argument("--no-pictures", action="store_true", help="numbers.json and the page only (tests)")
    own, rest = parser.parse_known_args()
    command = "python tools/walkthrough.py " + " ".join(sys.argv[1:])
    sys.argv = [sys.argv[0], "--laptop", *rest]
    args = common.parse_args(sta_total.Args, sta_total.LAPTOP)
    if (args.pg_samples, args.mixed_score, args.curvature, args.implicit) != ("pairs", "pairs", "exact", True):
        common.fail("the walkthrough follows the paper's Total STA: drop --pg-samples, --mixed-score, --curvature "
                    "and --no-implicit (section 3 shows Gauss-Newton beside the exact Hessian anyway)")

    # ---- as sta_total.py before its loop: same seeding, same load order (the RM head's init draws from the RNG)
    common.seed_everything(args.seed)
    tokenizer = common.load_tokenizer(args.model, args.prompt_len)
    train_prompts = common.load_prompts(args.prompts, "train", min_prompts=args.batch_size)
    policy = common.load_policy(args.model, tokenizer, args.device)
    ref_policy = common.load_policy(args.model, tokenizer, args.device).requires_grad_(False)
    reward_model = common.load_reward_model(args.model, tokenizer, args.device)
    rm_optimizer = torch.optim.AdamW(reward_model.parameters(), lr=args.rm_lr, weight_decay=args.rm_weight_decay)
    batches = common.prompt_batches(train_prompts, args.batch_size, args.seed)
    numbers = {"args": {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))}}

    # ---- 1. the batch C (D8)
    batch = common.rollout(policy, tokenizer, next(batches), args.task, args.samples_per_prompt,
                           args.max_new_tokens, args.device)
    pairs = torch.cat([batch.rows("chosen"), batch.rows("rejected")])  # winners first, then losers
    n_pairs = len(pairs) // 2
    ids, mask, P = batch.input_ids, batch.attention_mask, batch.prompt_width
    if n_pairs == 0:
        common.fail("every prompt of this batch tied (no pair in C): pass another --seed")
    numbers["batch"] = {"prompts": batch.prompt_texts, "continuations": batch.continuation_texts,
                        "rewards": batch.rewards.tolist(), "chosen": batch.chosen.tolist(),
                        "rejected": batch.rejected.tolist(), "keep": batch.keep.tolist(), "redraws": batch.redraws}

    # ---- 2. the follower: S AdamW steps on L_RM (eq. 4); loss and pair accuracy before each step and after the last
    row, follower = {}, {"loss": [], "accuracy": []}
    # mirror: sta_total.py's follower (its lines, word for word)
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
        # end mirror
        follower["loss"].append(rm_loss.item())
        follower["accuracy"].append((margin > 0).float().mean().item())
    with torch.no_grad():  # L_RM on C after this iteration's RM step(s)
        scores = common.reward_model_scores(reward_model, ids[pairs], mask[pairs])
    row["rm/loss"] = -F.logsigmoid(scores[:n_pairs] - scores[n_pairs:]).mean().item()
    follower["loss"].append(row["rm/loss"])
    follower["accuracy"].append((scores[:n_pairs] > scores[n_pairs:]).float().mean().item())
    margins = (scores[:n_pairs] - scores[n_pairs:]).tolist()  # Δ_i at ω^t
    numbers["follower"] = follower

    # ---- 3. leader: naive loss, b = ∇_ω R_LM, u from (H + λI) u = b (eq. 11), c_i, the mixed term
    # mirror: sta_total.py's leader (its lines, word for word; --pg-samples pairs, --mixed-score pairs, exact curvature)
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
    rm_params = list(reward_model.parameters())
    scores = common.reward_model_scores(reward_model, pg_ids, pg_mask)
    retain = args.pg_samples == "pairs" and args.curvature == "exact"
    b = common.flat(torch.autograd.grad(scores.mean(), rm_params, retain_graph=retain))
    # end mirror
    residuals = []
    with recording_cg(residuals):
        u, c, cg = sta_total.implicit_term(-F.logsigmoid(scores[:n_pairs] - scores[n_pairs:]), rm_params, b,
                                           args.cg_iterations, args.cg_damping, args.cg_tol)
    del scores
    # mirror: sta_total.py's mixed term
    seq_logp = (token_logp * pg_continuation).sum(1)
    pair_logp = seq_logp if args.pg_samples == "pairs" else seq_logp[pairs]
    score = pair_logp[:n_pairs] + pair_logp[n_pairs:]
    implicit_grads = torch.autograd.grad((c * score).mean(), list(policy.parameters()), retain_graph=True)
    # end mirror
    naive_grads = torch.autograd.grad(policy_loss, list(policy.parameters()))  # what policy_loss.backward() puts in .grad
    numbers["leader"] = {"n_params": len(b), "b_norm": b.norm().item(), "u_norm": u.norm().item(), "c": c.tolist(), "margins": margins,
                         "cg_residuals": residuals, **{k: v for k, v in cg.items()}, "pg_loss": pg_loss.item(),
                         "kl": kl.mean().item(), "rm_scores": rm_scores.tolist()}

    # the residual curves: the same solve to --cg-iterations steps (no early stop) at each λ, exact H and G
    curves = {}
    for damping in DAMPINGS:
        scores = common.reward_model_scores(reward_model, ids[pairs], mask[pairs])
        exact = []
        with recording_cg(exact):
            _, _, info = sta_total.implicit_term(-F.logsigmoid(scores[:n_pairs] - scores[n_pairs:]), rm_params, b,
                                                 args.cg_iterations, damping, 0.0)
        # G by CG: J from the per-pair margins as implicit_term_gauss_newton builds it, G p = Jᵀ diag(σσ') J p / |C|
        jacobian = torch.stack([common.flat(torch.autograd.grad(scores[i] - scores[n_pairs + i], rm_params, retain_graph=True))
                                for i in range(n_pairs)])
        margin = (scores[:n_pairs] - scores[n_pairs:]).detach()
        curvature = torch.sigmoid(margin) * torch.sigmoid(-margin) / n_pairs
        gauss_newton = []
        common.conjugate_gradient(lambda p: common.gauss_newton_vector_product(jacobian, curvature, p)[0], b,
                                  args.cg_iterations, damping, 0.0, record=gauss_newton)
        pair_scores = (common.reward_model_scores(reward_model, ids[rows], mask[rows]) for rows in pairs.view(2, -1).T)
        _, _, direct = sta_total.implicit_term_gauss_newton((s[0] - s[1] for s in pair_scores), n_pairs, rm_params, b, damping)
        curves[str(damping)] = {"exact": exact, "exact_breakdown": info["breakdown"],
                                "exact_returned_iterate": info["returned_iterate"], "gauss_newton": gauss_newton,
                                "gauss_newton_direct": direct["residual"]}
        del scores, jacobian
    numbers["cg_curves"] = curves

    # ---- 5. naive, implicit and total gradients, whole and per layer (the script's metrics, then per layer)
    dot = sum((n * g).sum() for n, g in zip(naive_grads, implicit_grads))
    naive_norm = torch.nn.utils.get_total_norm(naive_grads)
    implicit_norm = torch.nn.utils.get_total_norm(implicit_grads)
    total_grads = [n + g for n, g in zip(naive_grads, implicit_grads)]
    numbers["gradients"] = {"naive_norm": naive_norm.item(), "implicit_norm": implicit_norm.item(),
                            "implicit_cosine": (dot / (naive_norm * implicit_norm).clamp_min(1e-30)).item(),
                            "total_norm": torch.nn.utils.get_total_norm(total_grads).item()}
    layers = {}
    for (name, _), n, g in zip(policy.named_parameters(), naive_grads, implicit_grads):
        entry = layers.setdefault(layer_of(name), {"nn": 0.0, "gg": 0.0, "ng": 0.0})
        entry["nn"] += (n * n).sum().item()
        entry["gg"] += (g * g).sum().item()
        entry["ng"] += (n * g).sum().item()
    numbers["layers"] = {
        name: {"naive": e["nn"] ** 0.5, "implicit": e["gg"] ** 0.5, "total": (e["nn"] + e["gg"] + 2 * e["ng"]) ** 0.5,
               "cos_naive_implicit": e["ng"] / max((e["nn"] * e["gg"]) ** 0.5, 1e-30),
               "cos_naive_total": (e["nn"] + e["ng"]) / max((e["nn"] * (e["nn"] + e["gg"] + 2 * e["ng"])) ** 0.5, 1e-30)}
        for name, e in layers.items()}

    # ---- 6. one RMSprop step each way, from the same θ^{t-1}: log-probs of C's winners and losers before and after
    continuation = batch.continuation_mask[pairs]
    before = seq_logp.detach()[: 2 * n_pairs] if args.pg_samples == "pairs" else seq_logp.detach()[pairs]
    after_naive = step_and_logprobs(policy, naive_grads, args.policy_lr, ids[pairs], mask[pairs], P, continuation)
    after_total = step_and_logprobs(policy, total_grads, args.policy_lr, ids[pairs], mask[pairs], P, continuation)
    numbers["step"] = {"before": before.tolist(), "naive": (after_naive - before).tolist(),
                       "total": (after_total - before).tolist(), "n_pairs": n_pairs}
    numbers["command"] = command
    numbers["machine"] = f"{common._cpu_model() or platform.processor()}, torch {torch.__version__}, " \
                         f"{torch.get_num_threads()} thread(s)"

    out = Path(own.out)
    out.mkdir(parents=True, exist_ok=True)
    if not own.no_pictures:
        pictures(numbers, out)
    numbers["seconds"] = time.time() - STARTED
    (out / "numbers.json").write_text(json.dumps(numbers, indent=1) + "\n")
    out.with_suffix(".md").write_text(page(numbers, out))
    print(f"wrote {out.with_suffix('.md')} and {out}/ in {numbers['seconds']:.0f} s")

def pictures(numbers, out):
    """The five PNGs of the page (sections 1-4 and 6; section 5 has one too)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "figure.dpi": 110})
    win, lose = "tab:green", "tab:red"

    # 1. oracle rewards of the k samples per prompt, winner and loser marked
    rewards, keep = numbers["batch"]["rewards"], numbers["batch"]["keep"]
    fig, ax = plt.subplots(figsize=(6.4, 2.6))
    for b, row in enumerate(rewards):
        ax.scatter([b] * len(row), row, color="0.6", s=14, zorder=2)
        if keep[b]:
            ax.scatter(b, row[numbers["batch"]["chosen"][b]], color=win, s=40, zorder=3, label="winner y_w" if b == 0 else None)
            ax.scatter(b, row[numbers["batch"]["rejected"][b]], color=lose, s=40, zorder=3, label="loser y_l" if b == 0 else None)
        else:
            ax.annotate("tied: dropped", (b, row[0]), fontsize=7, rotation=90, va="bottom", ha="center")
    ax.set(xlabel="prompt b", ylabel="oracle reward", title="1. the k samples of each prompt (grey) and the pair C keeps")
    ax.set_xticks(range(len(rewards)))
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "1_batch.png")
    plt.close(fig)

    # 2. follower: L_RM and pair accuracy at ω^{t-1,s}, s = 0..S
    follower = numbers["follower"]
    steps = range(len(follower["loss"]))
    fig, ax = plt.subplots(figsize=(5.2, 2.6))
    ax.plot(steps, follower["loss"], "o-", color="tab:blue", label="L_RM on C")
    ax.axhline(0.6931, color="tab:blue", lw=0.6, ls=":", label="log 2 (a coin flip)")
    ax.set(xlabel="follower step s (0: ω^{t-1}, S: ω^t)", ylabel="L_RM", title="2. the reward model's S AdamW steps on C")
    ax2 = ax.twinx()
    ax2.plot(steps, follower["accuracy"], "s--", color="tab:orange", label="pair accuracy")
    ax2.set(ylabel="pair accuracy", ylim=(-0.05, 1.05))
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(lines, [l.get_label() for l in lines], fontsize=8, loc="center right")
    fig.tight_layout()
    fig.savefig(out / "2_follower.png")
    plt.close(fig)

    # 3. CG residual per step, exact H and Gauss-Newton G, per λ
    fig, ax = plt.subplots(figsize=(7.6, 3.2))
    colors = ["tab:red", "tab:blue", "tab:green", "tab:purple"]
    for color, (damping, curve) in zip(colors, numbers["cg_curves"].items()):
        exact = curve["exact"]
        ax.semilogy(range(len(exact)), exact, "o-", color=color, ms=3, label=f"H + λI, λ = {float(damping):g}" + (" (--laptop)" if float(damping) == numbers["args"]["cg_damping"] else ""))
        if curve["exact_breakdown"]:
            ax.scatter(len(exact) - 1, exact[-1], marker="X", s=90, color=color, zorder=4)
            ax.annotate("breakdown: pᵀ(H+λI)p ≤ 0", (len(exact) - 1, exact[-1]), fontsize=7, color=color,
                        xytext=(5, 5), textcoords="offset points")
        gn = curve["gauss_newton"]
        ax.semilogy(range(len(gn)), gn, "--", color=color, lw=1, label=f"G + λI, λ = {float(damping):g}")
    ax.axhline(numbers["args"]["cg_tol"], color="0.4", lw=0.7, ls=":", label="--cg-tol (the script stops here)")
    ax.set(xlabel="CG step k", ylabel="‖r_k‖ / ‖b‖ (CG's residual)", title="3. solving (H + λI) u = b by conjugate gradient",
           ylim=(1e-9, 30 * max(1.0, *(max(cv["exact"]) for cv in numbers["cg_curves"].values()))))
    # below ~1e-7 CG's updated residual is float32 round-off, not a more exact u; the top keeps a breakdown's ✕ in view
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(out / "3_cg.png")
    plt.close(fig)

    # 4. c_i against Δ_i
    leader = numbers["leader"]
    fig, ax = plt.subplots(figsize=(5.2, 3.0))
    c, margins = leader["c"], leader["margins"]
    ax.scatter(margins, c, color=["tab:purple" if ci > 0 else "tab:cyan" for ci in c], s=30, zorder=3)
    for i, (m, ci) in enumerate(zip(margins, c)):
        ax.annotate(str(i), (m, ci), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(0, color="0.5", lw=0.7)
    ax.axvline(0, color="0.5", lw=0.7)
    ax.set(xlabel="margin Δ_i = r_ω(y_w,i) − r_ω(y_l,i) at ω^t", ylabel="c_i = ⟨∇_ω ℓ_i, u⟩",
           title="4. c_i per pair: purple c_i > 0, cyan c_i < 0")
    fig.tight_layout()
    fig.savefig(out / "4_c_vs_margin.png")
    plt.close(fig)

    # 5. per-layer norms and cosines
    layers = numbers["layers"]
    names = sorted(layers, key=lambda n: (n != "embeddings", n.startswith("final"), int(n.split()[1]) if n.startswith("layer") else 0))
    x = torch.arange(len(names)).float()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(8.0, 3.0))
    for shift, key, color in ((-0.27, "naive", "tab:blue"), (0.0, "implicit", "tab:orange"), (0.27, "total", "tab:gray")):
        ax.bar(x + shift, [layers[n][key] for n in names], width=0.27, color=color, label=key)
    ax.set_xticks(x, names, rotation=20, fontsize=8)
    ax.set_yscale("log")
    ax.set(ylabel="gradient norm (log scale)", title="5a. norm per layer")
    ax.legend(fontsize=8)
    bx.bar(x - 0.2, [layers[n]["cos_naive_implicit"] for n in names], width=0.4, color="tab:orange", label="cos(naive, implicit)")
    bx.bar(x + 0.2, [layers[n]["cos_naive_total"] for n in names], width=0.4, color="tab:gray", label="cos(naive, total)")
    bx.axhline(0, color="0.5", lw=0.7)
    bx.set_xticks(x, names, rotation=20, fontsize=8)
    bx.set(ylim=(-1.05, 1.05), title="5b. cosine per layer")
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "5_layers.png")
    plt.close(fig)

    # 6. change of log π of winners and losers, Naive against Total
    step = numbers["step"]
    n = step["n_pairs"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(8.4, 3.8))
    c = numbers["leader"]["c"]
    for rows, color, label in ((slice(0, n), win, "winners y_w"), (slice(n, 2 * n), lose, "losers y_l")):
        ax.scatter(step["naive"][rows], step["total"][rows], color=color, s=24, label=label)
        difference = [t - v for t, v in zip(step["total"][rows], step["naive"][rows])]
        bx.scatter(c, difference, color=color, s=24, label=label)
    bx.axhline(0, color="0.6", lw=0.6)
    bx.axvline(0, color="0.6", lw=0.6)
    bx.ticklabel_format(axis="x", style="sci", scilimits=(-2, 2))
    bx.set(xlabel="c_i of the sequence's pair", ylabel="Total − Naive (Δ log π)", title="6b. what the implicit term changed")
    bx.legend(fontsize=8)
    everything = step["naive"] + step["total"]
    lo, hi = min(everything), max(everything)
    ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.7, ls=":", label="Naive = Total")
    ax.axhline(0, color="0.8", lw=0.6)
    ax.axvline(0, color="0.8", lw=0.6)
    ax.set(xlabel="Δ log π(y|x) after the Naive step", ylabel="Δ log π(y|x) after the Total step",
           title="6a. one policy step from the same θ^{t-1}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "6_logprob.png")
    plt.close(fig)


def script_line(text, script="sta_total.py"):
    """Line number of the first line of `script` that contains `text` (the page cites the lines it mirrors)."""
    lines = (REPO / script).read_text().splitlines()
    return next(i + 1 for i, line in enumerate(lines) if text in line)


def page(numbers, out):
    """docs/walkthrough.md: per section the equation, a picture or table, a few sentences, the code that computes it."""
    import os

    here = out.resolve().parent
    code = lambda file, name: f"[`{name}`]({os.path.relpath(REPO / file, here)})"  # noqa: E731
    pic = lambda name: f"![{name}]({out.name}/{name})"  # noqa: E731
    lines_of = lambda a, b: f"{script_line(a)}–{script_line(b)}"  # noqa: E731
    a, batch, follower, leader = numbers["args"], numbers["batch"], numbers["follower"], numbers["leader"]
    grads, step, curves = numbers["gradients"], numbers["step"], numbers["cg_curves"]
    k, n = a["samples_per_prompt"], step["n_pairs"]
    c, margins = leader["c"], leader["margins"]
    shown = next(b for b, kept in enumerate(batch["keep"]) if kept)
    one_line = lambda t: t.replace("\n", " ").replace("|", "\\|").strip() or "(empty)"  # noqa: E731
    samples = "\n".join(
        f"| {j} | {one_line(batch['continuations'][shown * k + j])[:90]} | {batch['rewards'][shown][j]:g} | "
        f"{'winner y_w' if j == batch['chosen'][shown] else 'loser y_l' if j == batch['rejected'][shown] else ''} |"
        for j in range(k))
    to_tol = lambda curve: next((str(i) for i, r in enumerate(curve) if r <= a["cg_tol"]), "not reached")  # noqa: E731
    breakdowns = [float(d) for d, cv in curves.items() if cv["exact_breakdown"]]
    breakdown_text = (f"With the exact H, CG broke down at λ = {', '.join(f'{d:g}' for d in breakdowns)} (the ✕): it met a "
                      f"direction of negative curvature and returned its best iterate so far." if breakdowns else
                      "On this batch CG met no negative curvature at these λ (no breakdown): after S steps the RM sits "
                      "near a minimum of L_RM on C, where H is close to positive semi-definite. On SmolLM2-135M, λ ≤ 30 "
                      "broke down on every iteration ([docs/sta_total.md](sta_total.md)).")
    breakdown_text += (" Over whole laptop runs, where each iteration's RM starts from the last one's on a new batch, CG"
                       " stopped on non-positive curvature in 79-86% of iterations at λ = 10, and in 40-50% at its very"
                       " first step, returning u = 0 (Total then takes Naive's step): the last section of"
                       " [results/laptop/claims.md](../results/laptop/claims.md).")
    cg_rows = "\n".join(
        f"| {float(d):g} | {to_tol(cv['exact'])} | "
        f"{'at step ' + str(len(cv['exact'])) + ', kept u_' + str(cv['exact_returned_iterate']) if cv['exact_breakdown'] else 'no'} "
        f"| {to_tol(cv['gauss_newton'])} | {cv['gauss_newton_direct']:.1e} |"
        for d, cv in curves.items())
    layer_rows = "\n".join(
        f"| {name} | {e['naive']:.3g} | {e['implicit']:.3g} | {e['total']:.3g} | {e['cos_naive_implicit']:+.2f} | "
        f"{e['cos_naive_total']:+.2f} |" for name, e in numbers["layers"].items())
    positive = sum(ci > 0 for ci in c)
    mean = lambda xs: sum(xs) / max(len(xs), 1)  # noqa: E731
    win_naive, lose_naive = mean(step["naive"][:n]), mean(step["naive"][n:])
    win_total, lose_total = mean(step["total"][:n]), mean(step["total"][n:])
    differences, pair_c = [t - v for t, v in zip(step["total"], step["naive"])], c + c
    dm, cm = mean(differences), mean(pair_c)
    cov = sum((d - dm) * (x - cm) for d, x in zip(differences, pair_c))
    corr = cov / max((sum((d - dm) ** 2 for d in differences) * sum((x - cm) ** 2 for x in pair_c)) ** 0.5, 1e-30)
    return f"""# A walkthrough of one Total STA iteration

This page follows **one** iteration of [Total STA](sta_total.md) (`sta_total.py`) on one batch, on the laptop model,
and puts [Naive STA](sta_naive.md) beside it on the same batch. Two models play a game: the language model π_θ (the
*leader*) writes continuations; the reward model r_ω (the *follower*) learns to score them from preference pairs.
Naive STA updates the leader as if the follower stood still. Total STA also asks how the follower will *react* to the
leader's change, and adds that to the leader's gradient: the *implicit term* of eq. 11. Equation numbers are the
paper's (Makar-Limanov et al., appendix A for eq. 11 and after).

Every number and picture below comes from one command, on {numbers['machine']}, in {numbers['seconds']:.0f} s:

```bash
OMP_NUM_THREADS=1 {numbers['command']}
```

Its settings are `sta_total.py --laptop`'s: task `{a['task']}`, seed {a['seed']}, B = {a['batch_size']} prompts,
k = {k} samples each, up to {a['max_new_tokens']} new tokens, S = {a['inner_steps']} follower steps, λ =
{a['cg_damping']:g}, at most {a['cg_iterations']} CG steps, β = {a['beta']:g}. It is the script's first iteration, random
number for random number (same seeding, same load order, same prompt order), and it calls the script's own functions;
the few lines of the script's loop that it repeats are marked `# mirror` in [`tools/walkthrough.py`](../tools/walkthrough.py)
(sta_total.py lines {lines_of('for step in range(args.inner_steps):', 'rm_optimizer.step()')},
{lines_of('pg_rows = pairs if', 'b = common.flat(torch.autograd.grad(scores.mean()')} and
{lines_of('seq_logp = (token_logp', 'implicit_grads = torch.autograd.grad')}). `tests/test_walkthrough.py` runs it at a
tiny size and checks its numbers against what `sta_total.py` writes to `metrics.csv` for the same seed.

## 1. The batch: B prompts, k samples each, one pair per prompt (D8)

π_θ samples k = {k} continuations for each of B = {a['batch_size']} prompts (pure sampling, D2). The oracle of the
task scores each one (here `{a['task']}`: the reward counts target words). The best sample becomes the winner y_w, the
worst the loser y_l; a prompt whose k samples all tie is resampled up to 3 times, then dropped (D8). The pairs form
C, {n} of them here ({batch['redraws']} redraw(s)).

{pic('1_batch.png')}

Prompt {shown}, as the oracle saw it: "{one_line(batch['prompts'][shown])}"

| sample | continuation (first 90 characters) | oracle reward | role |
|---|---|---|---|
{samples}

Code: {code('common.py', 'common.rollout')}, which calls `common.sample`, `common.oracle` and `common.rank_samples`.

## 2. The follower: S steps on the Bradley-Terry loss (eq. 4)

L_RM(ω) = −(1/|C|) Σ_i log σ(Δ_i), with Δ_i = r_ω(y_w,i; x_i) − r_ω(y_l,i; x_i) the pair's *margin*.

The reward model takes S = {a['inner_steps']} AdamW steps on this loss, on the same C, starting from last iteration's ω
(here the first iteration: a fresh linear head on the reference model). ω^t, after the last step, is the follower's
answer to the leader's current policy.

{pic('2_follower.png')}

| step s | {' | '.join(str(s) for s in range(len(follower['loss'])))} |
|---|{'---|' * len(follower['loss'])}
| L_RM | {' | '.join(f'{v:.3f}' for v in follower['loss'])} |
| pair accuracy | {' | '.join(f'{v:.2f}' for v in follower['accuracy'])} |

Accuracy is the fraction of pairs with Δ_i > 0. The script logs the step-0 accuracy as `rm/accuracy` (pairs the RM has
not trained on) and the last loss as `rm/loss`. Code: the loop in `sta_total.py` (lines
{lines_of('for step in range(args.inner_steps):', 'rm_optimizer.step()')}), {code('common.py', 'common.reward_model_scores')}.

## 3. b = ∇_ω R_LM and the solve (H + λI) u = b (eq. 11)

The leader's objective is R^β_LM(θ, ω) = E[r_ω(y; x)] − β KL(π_θ ‖ π_ref) (eq. 8). Naive STA climbs ∇_θ R^β_LM (REINFORCE,
eq. 17). Total STA climbs the total derivative of F(θ) = R^β_LM(θ, ω*(θ)), where ω*(θ) is the follower's best answer;
the implicit function theorem gives eq. 11:

dF/dθ = ∇_θ R^β_LM − ∇_θ⟨∇_ω L_RM, u⟩, with (H + λI) u = b, b = ∇_ω R_LM, H = ∇²_ω L_RM on C.

b = (1/N) Σ_j ∇_ω r_ω(y_j; x_j) (eq. 34-35) says how the mean RM score of the batch's sequences moves with ω (‖b‖ = {leader['b_norm']:.3g}). H is the Hessian
of the follower's loss, a {leader['n_params']:,} × {leader['n_params']:,} matrix here: too big to write down, so u comes from
conjugate gradient (CG), which only needs products H p (each one a second backward pass through the RM, D13). The
damping λ adds λI: away from a minimum H is *indefinite*, and CG stops ("breaks down") when it meets a direction p with
pᵀ(H + λI)p ≤ 0, keeping its best iterate. The script's solve at λ = {a['cg_damping']:g}: {leader['iterations']} CG
step(s), relative residual {leader['residual']:.2e}, breakdown {'yes' if leader['breakdown'] else 'no'}, ‖u‖ =
{leader['u_norm']:.3g}.

Below, the same solve run to {a['cg_iterations']} steps (no early stop) at three λ, with the exact H (solid) and with the
Gauss-Newton matrix G (dashed; `--curvature gauss-newton`, which keeps the positive semi-definite part of H and so
cannot break down; the script solves it directly, not by CG).

{pic('3_cg.png')}

| λ | exact H: steps to --cg-tol {a['cg_tol']:g} | exact H: breakdown | G: steps to --cg-tol | G: direct solve's residual |
|---|---|---|---|---|
{cg_rows}

{breakdown_text} A larger λ makes the system better conditioned (fewer steps), but moves u towards b/λ: a plain
gradient step for the follower rather than a Newton step. The curves are CG's own residual ‖r_k‖/‖b‖ (what the script
logs as `cg/residual`); below about 1e-7 that is float32 round-off, so the plot stops at 1e-9. Code: {code('sta_total.py', 'sta_total.implicit_term')} (CG with H),
{code('sta_total.py', 'sta_total.implicit_term_gauss_newton')} (G), {code('common.py', 'common.conjugate_gradient')},
{code('common.py', 'common.hessian_vector_product')}, {code('common.py', 'common.gauss_newton_solve')}.

## 4. c_i: which pairs the implicit term pushes, and which way (eq. 19-26)

θ enters L_RM only through which sequences π_θ samples into C. So ∇_θ⟨∇_ω L_RM, u⟩ is a score-function estimate
(eq. 22): ∇_θ (1/|C|) Σ_i c_i · (log π_θ(y_w,i|x_i) + log π_θ(y_l,i|x_i)), with c_i = ⟨∇_ω ℓ_i, u⟩ held fixed and
ℓ_i = −log σ(Δ_i) pair i's loss. c_i is how much pair i's loss changes if ω moves along u. The implicit term is
*subtracted*, so the leader makes pairs with c_i > 0 **less** likely (both samples) and pairs with c_i < 0 **more**
likely. The c_i come out of the CG solve's own backward passes (no extra pass).

{pic('4_c_vs_margin.png')}

Here {positive} of {n} pairs have c_i > 0; mean |c_i| = {mean([abs(x) for x in c]):.3g} (`cg/c_mean_abs`). ∇_ω ℓ_i =
−σ(−Δ_i) ∇_ω Δ_i, so a pair the RM already separates well (large Δ_i) has a small c_i: after S steps every margin
here lies between {min(margins):.1f} and {max(margins):.1f}, so σ(−Δ_i) is at most {1 / (1 + math.exp(min(margins))):.3f}, and every c_i is small.
Code: {code('sta_total.py', 'sta_total.implicit_term')}; the mixed term is `(c * score).mean()` in `sta_total.py` (line
{script_line('implicit_grads = torch.autograd.grad')}).

## 5. Naive, implicit and total policy gradients

The naive part is the gradient of L_LM = −(1/N) Σ_j r_ω(y_j) log π_θ(y_j|x_j) + β KL (eq. 8, 17-18), on the 2|C|
sequences of C. The implicit part is ∇_θ of the mixed term above. The total is their sum, and it is what Total STA's
RMSprop step descends.

| | naive | implicit | total | cos(naive, implicit) |
|---|---|---|---|---|
| whole policy | {grads['naive_norm']:.3g} | {grads['implicit_norm']:.3g} | {grads['total_norm']:.3g} | {grads['implicit_cosine']:+.3f} |

{pic('5_layers.png')}

| layer | naive | implicit | total | cos(naive, implicit) | cos(naive, total) |
|---|---|---|---|---|---|
{layer_rows}

The script logs the whole-policy numbers as `policy/naive_grad_norm`, `policy/implicit_grad_norm` and
`policy/implicit_cosine`. When the implicit part is small beside the naive one, Total STA's step is nearly Naive's;
the cosine says whether the follower's reaction pulls with the naive gradient or against it. This first iteration,
with a fresh RM that separates C after its S steps (small c_i), is the small end: over whole laptop runs the median
‖implicit‖ / ‖naive‖ is 0.09-0.20 ([results/laptop/claims.md](../results/laptop/claims.md), last section). Code: `sta_total.py` lines
{lines_of('if args.implicit:  # descent on', 'p.grad += g')}.

## 6. The effect of the step: log-probabilities of winners and losers, Naive against Total

Both methods take one RMSprop step (learning rate {a['policy_lr']:g}) from the same θ^{{t-1}}: Naive along the naive
gradient (what `sta_naive.py` does on this batch: its iteration is this one without the implicit term, bit for bit),
Total along the total gradient. Below, the change of log π_θ(y|x) of C's {n} winners and {n} losers.

{pic('6_logprob.png')}

| mean Δ log π | Naive | Total |
|---|---|---|
| winners y_w | {win_naive:+.3f} | {win_total:+.3f} |
| losers y_l | {lose_naive:+.3f} | {lose_total:+.3f} |

Left, each sequence's change under Total against Naive; right, the difference Total − Naive against the c_i of the
sequence's pair (the implicit term pushes down both sequences of a pair with c_i > 0, and up those with c_i < 0).
Correlation of c_i with that difference: {corr:+.2f} over the {2 * n} sequences.

RMSprop's first step divides each gradient entry by its own magnitude (about lr · sign(g) / 0.1), so the step's size
hardly depends on the gradient's norm: what the implicit term changes is the *direction*, entry by entry. Code:
`step_and_logprobs` in [`tools/walkthrough.py`](../tools/walkthrough.py), {code('common.py', 'common.continuation_logprobs')}.
"""


if __name__ == "__main__":
    main()
