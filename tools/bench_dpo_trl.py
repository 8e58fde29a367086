"""Peer check of dpo.py against TRL's DPOTrainer (issue 8): a benchmark, not a test; TRL is needed only here
(`pip install trl`).

On the same model, the same batch of preference pairs (the same token ids: prompts of at most 16 tokens, sampled
continuations of at most --max-new-tokens tokens) and in one process:
  1. the DPO loss of dpo.py and of TRL's DPOTrainer (its own `compute_loss`, sigmoid loss, β = 0.1) for a policy that
     differs from the reference (3 DPO steps on other pairs), which must agree to 1e-5;
  2. the time of one DPO training step of each (reference forward, policy forward and backward, one RMSprop step;
     for TRL `trainer.training_step` + the same optimizer step), median over --repeats alternating steps, and the
     ratio ours / TRL (target ≤ 1.0).

    OMP_NUM_THREADS=1 python tools/bench_dpo_trl.py --model laptop --prompts bundled
"""

import copy
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import quiet_pipe  # noqa: F401  (`python tools/X.py | head` ends without a BrokenPipeError traceback)

import torch
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402
import dpo  # noqa: E402


@dataclasses.dataclass
class Args:
    model: str = "laptop"
    """reference model: 'laptop', 'smollm2', a local directory or a hub id"""
    prompts: str = "bundled"
    """prompts: 'bundled', 'ultrachat' or a .txt / .jsonl file (the first 2B training prompts are used)"""
    task: str = "wc"
    """task whose oracle ranks the samples into pairs"""
    batch_size: int = 16
    """B: prompts in the batch (pairs after D8's tie handling)"""
    max_new_tokens: int = 75
    """continuation length (D1)"""
    beta: float = 0.1
    """β of the DPO loss"""
    lr: float = 1e-4
    """RMSprop learning rate of both trainers (dpo.py's laptop preset)"""
    repeats: int = 10
    """timed steps of each trainer (after 2 warm-up steps each)"""
    device: str = "cpu"
    """torch device"""
    seed: int = 467
    """seed of the samples"""


def our_step(policy, ref_policy, optimizer, ids, mask, P, continuation, n_pairs, beta, train=True):
    """dpo.py's step 2, verbatim: one forward of winners and losers, the DPO loss, one RMSprop step."""
    with torch.no_grad():
        ref_token_logp, _ = common.continuation_logprobs(ref_policy, ids, mask, P)
    token_logp, _ = common.continuation_logprobs(policy, ids, mask, P)
    logratio = ((token_logp - ref_token_logp) * continuation).sum(1)
    loss, _ = dpo.dpo_loss(logratio[:n_pairs], logratio[n_pairs:], beta)
    if train:
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return loss.detach()


def trl_step(trainer, model, optimizer, inputs):
    optimizer.zero_grad()
    loss = trainer.training_step(model, dict(inputs))
    optimizer.step()
    return loss


def timed(step, device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


if __name__ == "__main__":
    args = tyro.cli(Args)
    try:
        import trl
        from datasets import Dataset
        from trl import DPOConfig, DPOTrainer
        from trl.trainer.dpo_trainer import DataCollatorForPreference
    except ImportError:
        common.fail("the TRL benchmark needs TRL: pip install trl")
    common.seed_everything(args.seed)
    tokenizer = common.load_tokenizer(args.model)
    policy = common.load_policy(args.model, tokenizer, args.device)
    ref_policy = common.load_policy(args.model, tokenizer, args.device).requires_grad_(False)
    prompts = common.load_prompts(args.prompts, "train")[: 2 * args.batch_size]

    def pairs_of(prompts):
        """k = 4 samples per prompt from π_ref, best vs worst (D8), as dpo.py forms C: (ids, mask, P, continuation, n)."""
        batch = common.rollout(ref_policy, tokenizer, prompts, args.task, 4, args.max_new_tokens, args.device)
        pairs = torch.cat([batch.rows("chosen"), batch.rows("rejected")])
        return (batch.input_ids[pairs], batch.attention_mask[pairs], batch.prompt_width, batch.continuation_mask[pairs],
                len(pairs) // 2)

    ids, mask, P, continuation, n_pairs = pairs_of(prompts[: args.batch_size])  # the benchmark batch
    # the same pairs as TRL examples: the real (unpadded) prompt ids and the continuation ids up to and including EOS
    examples = [{"prompt_ids": ids[i, :P][mask[i, :P].bool()].tolist(),
                 "chosen_ids": ids[i, P:][continuation[i].bool()].tolist(),
                 "rejected_ids": ids[n_pairs + i, P:][continuation[n_pairs + i].bool()].tolist()} for i in range(n_pairs)]
    inputs = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)(examples)
    inputs = {k: v.to(args.device) for k, v in inputs.items()}

    # a policy that differs from the reference: 3 of our DPO steps on the pairs of the next B prompts
    optimizer = torch.optim.RMSprop(policy.parameters(), lr=args.lr)
    other = pairs_of(prompts[args.batch_size :])
    for _ in range(3):
        our_step(policy, ref_policy, optimizer, *other, args.beta)

    # TRL's trainer on copies of the same weights (it patches its models' forward with a fused LM head)
    trl_policy, trl_ref = copy.deepcopy(policy), copy.deepcopy(ref_policy)
    text = {"prompt": ["x"], "chosen": ["a"], "rejected": ["b"]}  # only to construct it: the batch is given below
    with tempfile.TemporaryDirectory() as out:
        config = DPOConfig(output_dir=out, beta=args.beta, loss_type=["sigmoid"], max_length=None, report_to="none",
                           use_cpu=torch.device(args.device).type == "cpu", bf16=False, fp16=False,
                           per_device_train_batch_size=n_pairs, gradient_accumulation_steps=1, seed=args.seed)
        trainer = DPOTrainer(model=trl_policy, ref_model=trl_ref, args=config, train_dataset=Dataset.from_dict(text),
                             processing_class=tokenizer)
        trl_optimizer = torch.optim.RMSprop(trl_policy.parameters(), lr=args.lr)
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train's loop, which we do not run

        # 1. the loss on the same batch
        with torch.no_grad():
            ours = our_step(policy, ref_policy, None, ids, mask, P, continuation, n_pairs, args.beta, train=False).item()
            theirs = trainer.compute_loss(trl_policy, dict(inputs)).item()
        print(f"pairs {n_pairs}, sequence width ours {ids.shape[1]} (left-padded prompts), TRL {inputs['input_ids'].shape[1]}")
        print(f"DPO loss  dpo.py {ours:.8f}  TRL {trl.__version__} {theirs:.8f}  |Δ| {abs(ours - theirs):.2e}  "
              f"({'agree' if abs(ours - theirs) <= 1e-5 else 'DISAGREE'} to 1e-5; log 2 = 0.69314718)")

        # 2. one training step of each, alternating, after 2 warm-up steps each
        ours_times, trl_times = [], []
        for repeat in range(args.repeats + 2):
            t_ours = timed(lambda: our_step(policy, ref_policy, optimizer, ids, mask, P, continuation, n_pairs, args.beta), args.device)
            t_trl = timed(lambda: trl_step(trainer, trl_policy, trl_optimizer, inputs), args.device)
            if repeat >= 2:
                ours_times.append(t_ours)
                trl_times.append(t_trl)
    ours_median, trl_median = statistics.median(ours_times), statistics.median(trl_times)
    print(f"one DPO step (median of {args.repeats}): dpo.py {1000 * ours_median:.1f} ms, TRL {1000 * trl_median:.1f} ms, "
          f"ratio ours/TRL {ours_median / trl_median:.2f} (threads {torch.get_num_threads()}, device {args.device})")
