"""A randomly initialised OPT with facebook/opt-125m's transformer body and the laptop tokenizer, for timing the
methods at the paper's shape where the hub is out of reach (the GPU machine of results/cost/run_bench_gpu.sh).

    python tools/build_shape_model.py /tmp/opt125m-shape            # 12 layers, 768 wide, 12 heads, FFN 3072
    python tools/build_shape_model.py /tmp/tiny-shape --layers 2 --hidden 64 --heads 2 --ffn 128   # a CPU smoke test

The body (layers, widths, heads, 2048 positions) is opt-125m's; the vocabulary is the laptop's 4096 words, not
opt-125m's 50272, because a tokenizer must decode what the model samples. That shrinks the policy's output layer
(31% of opt-125m's forward multiply-adds) and the embedding, not the reward model's body, where Total STA's
Hessian-vector products run. The weights are random (seeded): the timings are the shape's, not a trained model's
(its next-token distribution is near uniform, so EOS, one word in 4096, ends few continuations early).
"""

import argparse
import shutil
from pathlib import Path

import quiet_pipe  # noqa: F401  (`python tools/X.py | head` ends without a BrokenPipeError traceback)

import torch
from transformers import OPTConfig, OPTForCausalLM

LAPTOP = Path(__file__).resolve().parents[1] / "data" / "laptop-opt"

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("out", type=Path, help="directory to write (config, weights, the laptop tokenizer)")
parser.add_argument("--layers", type=int, default=12)
parser.add_argument("--hidden", type=int, default=768)
parser.add_argument("--heads", type=int, default=12)
parser.add_argument("--ffn", type=int, default=3072)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

laptop = OPTConfig.from_pretrained(LAPTOP)  # its special-token ids and vocabulary belong to the tokenizer we copy
config = OPTConfig(vocab_size=laptop.vocab_size, hidden_size=args.hidden, num_hidden_layers=args.layers,
                   ffn_dim=args.ffn, num_attention_heads=args.heads, word_embed_proj_dim=args.hidden,
                   max_position_embeddings=2048, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                   bos_token_id=laptop.bos_token_id, eos_token_id=laptop.eos_token_id, pad_token_id=laptop.pad_token_id)
torch.manual_seed(args.seed)
model = OPTForCausalLM(config)
args.out.mkdir(parents=True, exist_ok=True)
model.save_pretrained(args.out)
for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
    shutil.copy(LAPTOP / name, args.out / name)
print(f"{args.out}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
      f"{args.layers} layers x {args.hidden} wide, vocabulary {config.vocab_size}")
