"""The shipped laptop-scale assets: prompt files, data/laptop-opt (tokenizer + tiny OPT reference model)."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

DATA = Path(__file__).resolve().parent.parent / "data"
MODEL_DIR = DATA / "laptop-opt"
TARGET_WORDS = ("data hope information provide example your however first have help additionally important "
                "include finally following happy code two create question possible understand generate contains "
                "appropriate best respectful ensure experience safe").split()


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(MODEL_DIR)


@pytest.fixture(scope="module")
def model():
    return AutoModelForCausalLM.from_pretrained(MODEL_DIR).eval()


def read_lines(name):
    return (DATA / "prompts" / name).read_text(encoding="utf-8").splitlines()


def test_prompt_files():
    train, test = read_lines("train.txt"), read_lines("test.txt")
    assert len(train) >= 1000 and len(set(train)) == len(train)
    assert len(test) == 160 and len(set(test)) == len(test)
    assert not set(train) & set(test)
    assert all(p.strip() == p and p for p in train + test)
    # some, but not all, prompts contain a word of W (the constrained task's penalty varies)
    with_w = sum(any(w in p.replace("?", " ").replace(".", " ").replace(",", " ").split() for w in TARGET_WORDS)
                 for p in test)
    assert 10 < with_w < 150


def test_corpus_uses_train_prompts_only():
    test = set(read_lines("test.txt"))
    with open(DATA / "laptop_corpus.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) >= 1000
    assert not {r["prompt"] for r in rows} & test


def test_tokenizer_special_tokens(tok):
    assert tok.bos_token == "<s>" and tok.eos_token == "</s>" and tok.pad_token == "<pad>"
    assert tok.unk_token == "<unk>"
    assert tok.pad_token_id != tok.eos_token_id
    assert tok.padding_side == "left"
    ids = tok("Can you provide an example?")["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.bos_token_id not in ids[1:]
    batch = tok(["Hi.", "Can you provide an example of your code?"], padding=True, return_tensors="pt")
    assert batch["input_ids"][0, 0] == tok.pad_token_id and batch["attention_mask"][0, 0] == 0  # left padding
    assert batch["input_ids"][0, -1] != tok.pad_token_id


def test_tokenizer_round_trip(tok):
    text = "However, your data is important: first, I have two examples of code to help you."
    ids = tok(text)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True).strip() == text
    for w in TARGET_WORDS:  # every target word survives encode -> decode with and without a leading space
        assert tok.decode(tok(f"The {w} here.")["input_ids"], skip_special_tokens=True).strip() == f"The {w} here."


def test_model_config(model, tok):
    cfg = model.config
    assert cfg.model_type == "opt"
    n = sum(p.numel() for p in model.parameters())
    assert 1e6 <= n <= 5e6
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (tok.bos_token_id, tok.eos_token_id,
                                                                      tok.pad_token_id)
    assert cfg.vocab_size == len(tok)
    assert cfg.dropout == 0.0 and cfg.attention_dropout == 0.0
    assert cfg.max_position_embeddings >= 16 + 75


def test_model_generates_english(model, tok):
    prompts = read_lines("test.txt")[:4]
    enc = tok(prompts, return_tensors="pt", padding=True, truncation=True, max_length=16)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: on a busy 2-core machine 2 threads are up to 20x slower
    try:
        with torch.no_grad():
            out = model.generate(**enc, do_sample=True, top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=32,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    finally:
        torch.set_num_threads(threads)
    gen = out[:, enc["input_ids"].shape[1]:]
    texts = tok.batch_decode(gen, skip_special_tokens=True)
    assert all(t.strip() for t in texts)
    words = [w.strip(".,!?;:()\"'").lower() for t in texts for w in t.split()]
    words = [w for w in words if w.isalpha()]
    assert len(words) > 4 * 8  # spaces between words
    common = {"the", "a", "and", "to", "of", "is", "in", "you", "for", "it", "that", "can", "your", "with", "are"}
    assert sum(w in common for w in words) / len(words) > 0.1  # reads like English, not random tokens
