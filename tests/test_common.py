"""common.py: oracles, pairs, sampling and log-probs, reward-model pooling, KL, evaluation, HVP and CG, prompts."""

import json
import math

import nltk
import pytest
import torch
import torch.nn.functional as F

import common


# ---------------------------------------------------------------------------------------------------- oracles
def test_word_collector_counts_distinct_exact_tokens():
    assert common.oracle("wc", "", "I hope this information helps, data data.") == 3  # hope, information, data
    assert common.oracle("wc", "", "Hope DATA Your HAPPY") == 0  # case-sensitive
    assert common.oracle("wc", "", "understanding examples coded") == 0  # whole tokens only
    assert common.oracle("wc", "", "data, code! your?") == 3  # punctuation is split off
    everything = " ".join(common.WORDS * 3) + "."
    assert common.oracle("wc", "", everything) == 30  # each word at most once
    assert len(set(common.WORDS)) == 30


def test_constrained_word_collector_penalty_is_constant_per_prompt():
    prompt = "Can you provide data"
    assert common.oracle("cwc", prompt, "Here is your code.") == 0  # −2 (provide, data) + 2 (your, code)
    assert common.oracle("cwc", prompt, "provide data") == -2  # words of the prompt never score
    assert common.oracle("cwc", prompt, "") == -2  # the penalty does not depend on the continuation
    for y in ["hope you are happy", "data data data", "your best code, however"]:
        assert common.oracle("cwc", prompt, y) - common.oracle("cwc", prompt, "") == len(
            {w for w in common.WORDS if w in common.word_tokens(y) and w not in {"provide", "data"}})


def test_unique_nouns_matches_nltk():
    texts = ["The cat sat on the mat with another cat.", "Cats and dogs visit Paris in May. The dog barks!",
             "cat cat cat", "Data scientists analyse data with Python and pandas."]
    common.pos_tagger()  # puts the shipped data/nltk_data on nltk's path, which nltk.pos_tag below reads too
    for text in texts:
        tokens = common.word_tokens(text)
        expected = len({w for w, tag in nltk.pos_tag(tokens) if tag.startswith("NN")})
        assert common.oracle("un", "", text) == expected
    assert common.oracle("un", "", "cat cat cat") <= 1
    assert common.oracle("un", "", "") == 0


def test_word_tokens_splits_sentences_and_punctuation():
    assert common.word_tokens("Hello there. How are you? Fine!") == ["Hello", "there", ".", "How", "are", "you", "?", "Fine", "!"]
    assert common.word_tokens("It's data-driven, isn't it") == ["It", "'s", "data-driven", ",", "is", "n't", "it"]


def test_unknown_task_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as e:
        common.check_task("sentiment")
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


# ---------------------------------------------------------------------------------------------------- pairs
def test_rank_samples_best_worst_and_ties():
    rewards = torch.tensor([[1.0, 3.0, 2.0, 0.0], [2.0, 2.0, 2.0, 2.0], [-1.0, 5.0, 5.0, -1.0]])
    chosen, rejected, tied = common.rank_samples(rewards)
    assert chosen.tolist() == [1, 0, 1] and rejected.tolist() == [3, 0, 0] and tied.tolist() == [False, True, False]


@pytest.fixture(scope="module")
def lm(model_dir):
    tokenizer = common.load_tokenizer(model_dir)
    return tokenizer, common.load_policy(model_dir, tokenizer, "cpu")


PROMPTS = ["How do I make a good cup of coffee?", "Explain photosynthesis to a child.",
           "What is the best way to learn a new language?", "Tell me about the history of Rome."]


def test_rollout_pairs_come_from_one_prompt_and_are_ordered(lm):
    tokenizer, policy = lm
    torch.manual_seed(0)
    batch = common.rollout(policy, tokenizer, PROMPTS, "un", 4, 20, "cpu")
    B, k = batch.rewards.shape
    assert (B, k) == (4, 4) and batch.input_ids.shape[0] == B * k
    for b in range(B):
        if batch.keep[b]:
            assert batch.rewards[b, batch.chosen[b]] > batch.rewards[b, batch.rejected[b]]
        rows = range(b * k, (b + 1) * k)  # the k samples of prompt b share its prompt ids
        assert all(torch.equal(batch.input_ids[r, :batch.prompt_width], batch.input_ids[b * k, :batch.prompt_width]) for r in rows)
    assert torch.equal(batch.rows("chosen") // k, batch.keep.nonzero().flatten())
    for r, text in enumerate(batch.continuation_texts):  # rewards are the oracle's on the decoded continuations
        assert batch.rewards[r // k, r % k] == common.oracle("un", batch.prompt_texts[r // k], text)


def test_rollout_resamples_ties_then_drops_them(lm, monkeypatch):
    tokenizer, policy = lm
    calls = []
    monkeypatch.setattr(common, "oracle", lambda task, p, y: calls.append(y) or 1.0)  # every sample ties
    batch = common.rollout(policy, tokenizer, PROMPTS[:2], "wc", 4, 5, "cpu", tie_retries=3)
    assert batch.first_draw_ties == 2 and batch.redraws == 2 * 3 and batch.queries == 2 + 2 * 3
    assert not batch.keep.any() and len(batch.rows("chosen")) == 0
    assert len(calls) == 2 * 4 * (1 + 3)


def test_static_cache_samples_the_same_tokens_as_the_dynamic_one(lm, monkeypatch):
    """Issue 27: CUDA samples with a static KV cache (SAMPLER_CACHE). Forced on CPU, it draws exactly the dynamic
    cache's tokens from the same RNG state, through a whole rollout with tie redraws, every call passes the D2 check
    on the static config, and the cache has the same length at every call (one compiled shape per batch size)."""
    from transformers.cache_utils import StaticCache

    tokenizer, policy = lm
    assert common.SAMPLER_CACHE == {"cuda": "static"}  # CPU keeps the dynamic cache: CPU runs unchanged

    def draw():
        torch.manual_seed(4)
        return common.rollout(policy, tokenizer, PROMPTS, "cwc", 4, 30, "cpu")

    dynamic = draw()
    checked, caches = [], []
    check, init = common.check_pure_sampling, StaticCache.__init__
    monkeypatch.setattr(common, "check_pure_sampling", lambda p, config: checked.append(config.cache_implementation) or check(p, config))
    monkeypatch.setattr(StaticCache, "__init__", lambda self, *a, **kw: caches.append(kw["max_cache_len"]) or init(self, *a, **kw))
    monkeypatch.setitem(common.SAMPLER_CACHE, "cpu", "static")
    static = draw()
    assert dynamic.redraws == static.redraws > 0  # the redraw calls too
    assert set(checked) == {"static"} and len(caches) == len(checked) >= 2  # a static cache in every generate call,
    assert set(caches) == {tokenizer.model_max_length + 30}  # of one shape: the longest prompt and 30 new tokens
    for field in ("input_ids", "attention_mask", "continuation_mask", "rewards", "chosen", "rejected", "keep"):
        assert torch.equal(getattr(dynamic, field), getattr(static, field)), field
    assert dynamic.continuation_texts == static.continuation_texts


def test_cwc_tokenizes_each_prompt_once(monkeypatch):
    """Issue 27: cwc's prompt penalty tokenizes a prompt once, not once per sample and redraw; the reward is the same."""
    calls, word_tokens = [], common.word_tokens
    monkeypatch.setattr(common, "word_tokens", lambda text: calls.append(text) or word_tokens(text))
    common.prompt_words.cache_clear()
    prompt = "Please provide one example of your data."
    rewards = [common.oracle("cwc", prompt, y) for y in ("data help", "hope first", "code two", "data help")]
    assert rewards == [-3.0, -2.0, -2.0, -3.0] and calls.count(prompt) == 1
    assert common.oracle("cwc", "x", "data help") == 2.0


# ---------------------------------------------------------------------------------------------------- sampling and log-probs
def test_sampled_tokens_have_the_forward_pass_log_probs(lm):
    """SPEC §15.1 #1: pure sampling (D2) draws from π itself: generation-time log-probs = forward-pass log-probs."""
    tokenizer, policy = lm
    ids, mask, _ = common.encode_prompts(tokenizer, PROMPTS, "cpu")
    torch.manual_seed(1)
    out = policy.generate(input_ids=ids, attention_mask=mask, generation_config=common.sampling_config(tokenizer, 30),
                          output_scores=True, return_dict_in_generate=True)
    continuation = out.sequences[:, ids.shape[1]:]
    cmask = common.continuation_mask(continuation, tokenizer.eos_token_id)
    gen_logp = torch.stack(out.scores, 1).float().log_softmax(-1).gather(-1, continuation[..., None]).squeeze(-1)
    token_logp, _ = common.continuation_logprobs(policy, out.sequences, torch.cat([mask, cmask], 1), ids.shape[1])
    assert torch.allclose((gen_logp * cmask).sum(1), (token_logp * cmask).sum(1), atol=1e-3)


def test_continuation_log_prob_does_not_depend_on_left_padding(lm):
    """SPEC §15.1 #2: positions come from the attention mask, so extra left padding changes nothing."""
    tokenizer, policy = lm
    ids, mask, _ = common.encode_prompts(tokenizer, PROMPTS[:1], "cpu")
    continuation = torch.tensor([tokenizer("and then we went home").input_ids[1:]])
    results = []
    for pad in (0, 5):
        p_ids = torch.cat([torch.full((1, pad), tokenizer.pad_token_id), ids], 1)
        p_mask = torch.cat([torch.zeros(1, pad, dtype=torch.long), mask], 1)
        seq = torch.cat([p_ids, continuation], 1)
        attention = torch.cat([p_mask, torch.ones_like(continuation)], 1)
        token_logp, _ = common.continuation_logprobs(policy, seq, attention, p_ids.shape[1])
        results.append(token_logp.sum())
    assert abs(results[0] - results[1]) < 1e-3


def test_continuation_mask_stops_after_first_eos():
    eos = 2
    continuation = torch.tensor([[5, 6, 2, 7, 2], [5, 6, 7, 8, 9], [2, 5, 5, 5, 5]])
    assert common.continuation_mask(continuation, eos).tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]


def test_tokens_after_eos_contribute_nothing(lm):
    """SPEC §15.1 #3: whatever follows the first EOS changes neither the log-prob nor the KL."""
    tokenizer, policy = lm
    ids, mask, _ = common.encode_prompts(tokenizer, PROMPTS[:1], "cpu")
    words = tokenizer("we like to read books").input_ids[1:]
    results = []
    for tail in ([7, 8, 9], [11, 12, 13]):
        continuation = torch.tensor([words + [tokenizer.eos_token_id] + tail])
        cmask = common.continuation_mask(continuation, tokenizer.eos_token_id)
        assert cmask.sum() == len(words) + 1  # the EOS itself counts
        seq, attention = torch.cat([ids, continuation], 1), torch.cat([mask, cmask], 1)
        token_logp, logp = common.continuation_logprobs(policy, seq, attention, ids.shape[1])
        tempered = (0.5 * logp).log_softmax(-1)  # another distribution per position, for the KL
        results.append(torch.stack([(token_logp * cmask).sum(), common.exact_kl(logp, tempered, cmask).sum()]))
    assert torch.allclose(results[0], results[1])
    assert results[0][1] > 0


def test_exact_kl_is_zero_at_the_reference_and_positive_elsewhere(lm, model_dir):
    """SPEC §15.2 #12: π_θ = π_ref ⇒ KL = 0 and ∇_θ KL = 0; KL ≥ 0."""
    tokenizer, policy = lm
    ref = common.load_policy(model_dir, tokenizer, "cpu")
    torch.manual_seed(0)
    batch = common.rollout(ref, tokenizer, PROMPTS, "wc", 2, 15, "cpu")
    args = (batch.input_ids, batch.attention_mask, batch.prompt_width)
    _, ref_logp = common.continuation_logprobs(ref, *args)
    _, logp = common.continuation_logprobs(policy, *args)
    kl = common.exact_kl(logp, ref_logp.detach(), batch.continuation_mask)
    kl.sum().backward()
    assert kl.abs().max() < 1e-6
    assert max(p.grad.abs().max() for p in policy.parameters() if p.grad is not None) < 1e-4  # fp32 round-off only
    policy.zero_grad()
    with torch.no_grad():
        moved = common.load_policy(model_dir, tokenizer, "cpu")
        for p in moved.parameters():
            p.add_(0.05 * torch.randn_like(p))
        _, moved_logp = common.continuation_logprobs(moved, *args)
    assert (common.exact_kl(moved_logp, ref_logp, batch.continuation_mask) > 0).all()


# ---------------------------------------------------------------------------------------------------- reward model
@pytest.fixture(scope="module")
def rm(lm, model_dir):
    tokenizer, _ = lm
    torch.manual_seed(0)
    return common.load_reward_model(model_dir, tokenizer, "cpu")


def test_reward_model_reads_the_last_real_token(lm, rm):
    """SPEC §15.1 #4: right padding does not move the score; batch and single scores agree; the head reads the last token."""
    tokenizer, _ = lm
    torch.manual_seed(0)
    batch = common.rollout(lm[1], tokenizer, PROMPTS, "wc", 2, 15, "cpu")
    ids, mask = batch.input_ids, batch.attention_mask
    with torch.no_grad():
        scores = common.reward_model_scores(rm, ids, mask)
        padded = common.reward_model_scores(rm, F.pad(ids, (0, 7), value=tokenizer.pad_token_id), F.pad(mask, (0, 7)))
        assert torch.allclose(scores, padded, atol=1e-4)
        for i in range(len(ids)):
            real = mask[i].bool()
            single = common.reward_model_scores(rm, ids[i:i + 1, real], mask[i:i + 1, real])
            assert torch.allclose(single, scores[i:i + 1], atol=1e-4)
            hidden = rm.base_model(input_ids=ids[i:i + 1, real]).last_hidden_state[0, -1]
            assert torch.allclose(rm.score(hidden).squeeze(), scores[i], atol=1e-4)


def test_bradley_terry_loss_is_log2_with_zero_gradient_on_identical_pairs(lm, rm):
    """SPEC §15.1 #5: r_w = r_l ⇒ loss = log 2, ∂loss/∂r_w = −1/2, and identical inputs give ∇_ω loss = 0."""
    tokenizer, _ = lm
    ids, mask, _ = common.encode_prompts(tokenizer, PROMPTS, "cpu")
    scores = common.reward_model_scores(rm, torch.cat([ids, ids]), torch.cat([mask, mask]))
    margin = scores[:4] - scores[4:]
    loss = -F.logsigmoid(margin).mean()
    assert abs(loss.item() - math.log(2)) < 1e-6
    rm.zero_grad()
    loss.backward()
    assert max(p.grad.abs().max() for p in rm.parameters() if p.grad is not None) < 1e-6  # fp32 round-off only
    r = torch.zeros(2, requires_grad=True)
    (-F.logsigmoid(r[0] - r[1])).backward()
    assert torch.allclose(r.grad, torch.tensor([-0.5, 0.5]))


# ---------------------------------------------------------------------------------------------------- evaluation
def test_evaluation_is_repeatable_and_leaves_the_global_rng_alone(lm, model_dir):
    tokenizer, policy = lm
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = common.evaluate(policy, policy, tokenizer, PROMPTS, "wc", 15, 3, seed=7, device="cpu")
    assert torch.equal(torch.get_rng_state(), before)
    second = common.evaluate(policy, policy, tokenizer, PROMPTS, "wc", 15, 3, seed=7, device="cpu")
    assert first["reward"] == second["reward"] and first["samples"] == second["samples"]
    assert abs(first["kl"]) < 1e-6  # the policy is its own reference
    other = common.evaluate(policy, policy, tokenizer, PROMPTS, "wc", 15, 3, seed=8, device="cpu")
    assert other["samples"] != first["samples"]


# ---------------------------------------------------------------------------------------------------- HVP and CG
def test_hessian_vector_product_matches_the_explicit_hessian():
    """SPEC §15.4 #20: on a tiny MLP loss (float64) the double-backward product equals the explicit Hessian times v."""
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    w1, w2 = torch.randn(3, 4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)

    def loss_fn(w1, w2):
        return ((torch.tanh(x @ w1) @ w2 - y) ** 2).mean()

    params = [w1.clone().requires_grad_(), w2.clone().requires_grad_()]
    grads = torch.autograd.grad(loss_fn(*params), params, create_graph=True)
    v = torch.randn(16, dtype=torch.float64)
    hv = common.hessian_vector_product(grads, params, v)
    H = torch.autograd.functional.hessian(lambda flat: loss_fn(flat[:12].view(3, 4), flat[12:]), torch.cat([w1.flatten(), w2]))
    assert torch.allclose(hv, H @ v, rtol=1e-6, atol=1e-10)
    hv2 = common.hessian_vector_product(grads, params, 2 * v)  # the graph is kept for the next product
    assert torch.allclose(hv2, 2 * H @ v, rtol=1e-6, atol=1e-10)


def _spd(n=10, cond=100.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return q @ torch.diag(torch.logspace(0, math.log10(cond), n, dtype=torch.float64)) @ q.T


def test_conjugate_gradient_solves_spd_and_damped_systems():
    """SPEC §15.4 #19."""
    A = _spd()
    b = torch.randn(10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x, info = common.conjugate_gradient(lambda v: A @ v, b, iterations=10)
    assert info["residual"] < 1e-6 and not info["breakdown"]
    assert torch.linalg.norm(A @ x - b) / torch.linalg.norm(b) < 1e-6
    x, info = common.conjugate_gradient(lambda v: A @ v, b, iterations=10, damping=0.5)
    assert torch.allclose(x, torch.linalg.solve(A + 0.5 * torch.eye(10, dtype=torch.float64), b), atol=1e-8)
    x, info = common.conjugate_gradient(lambda v: A @ v, torch.zeros(10, dtype=torch.float64))
    assert (x == 0).all() and info["iterations"] == 0


def test_conjugate_gradient_error_decreases_in_the_a_norm():
    A = _spd(seed=2)
    b = torch.randn(10, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    exact = torch.linalg.solve(A, b)
    errors = []
    for n in range(1, 11):
        x, _ = common.conjugate_gradient(lambda v: A @ v, b, iterations=n, tol=0.0)
        e = x - exact
        errors.append(float(e @ A @ e))
    assert all(later <= earlier * (1 + 1e-9) for earlier, later in zip(errors, errors[1:]))


def test_conjugate_gradient_stops_on_negative_curvature():
    A = _spd()
    A -= 20 * torch.eye(10, dtype=torch.float64)  # indefinite
    b = torch.ones(10, dtype=torch.float64)
    b = torch.linalg.eigh(A).eigenvectors[:, 0] + 0.1 * b  # mostly along a negative direction
    x, info = common.conjugate_gradient(lambda v: A @ v, b, iterations=10)
    assert info["breakdown"] and torch.isfinite(x).all() and info["iterations"] < 10
    residual = float(torch.linalg.norm(A @ x - b) / torch.linalg.norm(b))
    assert residual <= 1.0 and abs(residual - info["residual"]) < 1e-9  # never worse than x = 0, and reported as is


def test_conjugate_gradient_breakdown_returns_the_smallest_residual_iterate():
    """The step before a breakdown can increase the residual (A indefinite): CG returns the best iterate, here x₀ = 0."""
    A = torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64))
    b = torch.tensor([1.0, 0.9], dtype=torch.float64)  # bᵀAb > 0, but the first step overshoots along the −1 direction
    x, info = common.conjugate_gradient(lambda v: A @ v, b, iterations=10)
    assert info["breakdown"] and info["iterations"] == 1
    one_step = (b @ b) / (b @ A @ b) * b  # the first CG iterate
    assert torch.linalg.norm(A @ one_step - b) > torch.linalg.norm(b)  # worse than 0
    assert (x == 0).all() and info["residual"] == 1.0


def test_conjugate_gradient_reports_hitting_its_cap_and_counts_completed_steps():
    """Issue 24: a solve cut off by the iteration cap is flagged (hit_cap) and returns the last iterate, residual and
    all; converged and broken-down solves are not flagged. `iterations` counts completed steps: a breakdown's product
    is one more matvec call."""
    A, b = _spd(cond=1e4, seed=4), torch.randn(10, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    calls = []
    x, info = common.conjugate_gradient(lambda v: calls.append(1) or A @ v, b, iterations=3, tol=1e-10)
    assert info["hit_cap"] and info["iterations"] == info["returned_iterate"] == 3 == len(calls)
    assert info["residual"] > 1e-3 and abs(float(torch.linalg.norm(A @ x - b) / torch.linalg.norm(b)) - info["residual"]) < 1e-9
    assert not common.conjugate_gradient(lambda v: A @ v, b, iterations=40, tol=1e-6)[1]["hit_cap"]  # converges first
    calls.clear()
    A = torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64))
    _, info = common.conjugate_gradient(lambda v: calls.append(1) or A @ v, torch.tensor([1.0, 0.9], dtype=torch.float64),
                                        iterations=10)
    assert info["breakdown"] and not info["hit_cap"] and len(calls) == info["iterations"] + 1


# ---------------------------------------------------------------------------------------------------- prompts
def test_bundled_prompts_have_disjoint_train_and_test_splits():
    train, test = common.load_prompts("bundled", "train"), common.load_prompts("bundled", "test")
    assert len(test) == 160 and len(train) >= 500 and not set(train) & set(test)


def test_user_prompt_files(tmp_path, capsys):
    txt = tmp_path / "p.txt"
    txt.write_text("".join(f"prompt number {i}\n" for i in range(20)))
    train, test = common.load_prompts(str(txt), "train"), common.load_prompts(str(txt), "test")
    assert len(test) == 4 and len(train) == 16 and test[-1] == "prompt number 19"
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("".join(json.dumps({"prompt": f"q {i}"}) + "\n" for i in range(10)))
    assert common.load_prompts(str(jsonl), "test") == ["q 8", "q 9"]
    for name, content in [("empty.txt", b"\n\n"), ("latin1.txt", "caf\xe9\n".encode("latin-1") * 5),
                          ("bad.jsonl", b'{"text": 1}\n{"text": 2}\n')]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(SystemExit) as e:
            common.load_prompts(str(tmp_path / name), "train")
        assert e.value.code == 2
    with pytest.raises(SystemExit):
        common.load_prompts(str(tmp_path / "missing.txt"), "train")


def test_ultrachat_split_from_a_local_file_in_the_hub_format(tmp_path, monkeypatch):
    """The paper's split (rows [0, 32000) train, [32000, 32160) test, first user turn), from a file shaped like
    stingning/ultrachat's train_0.jsonl; the download is replaced by the local file."""
    import huggingface_hub

    source = tmp_path / "train_0.jsonl"
    with open(source, "w") as f:
        for i in range(32200):
            f.write(json.dumps({"id": str(i), "data": [f" user turn {i} ", f"assistant turn {i}"]}) + "\n")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: str(source))
    monkeypatch.setenv("STACKELBERG_CACHE", str(tmp_path / "cache"))
    train, test = common.load_prompts("ultrachat", "train"), common.load_prompts("ultrachat", "test")
    assert len(train) == 32000 and train[0] == "user turn 0" and train[-1] == "user turn 31999"
    assert len(test) == 160 and test[0] == "user turn 32000" and test[-1] == "user turn 32159"
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: 1 / 0)  # now served from the cache
    assert common.load_prompts("ultrachat", "test") == test


def test_unreachable_hub_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    import huggingface_hub

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    monkeypatch.setenv("STACKELBERG_CACHE", str(tmp_path))
    with pytest.raises(SystemExit) as e:
        common.load_prompts("ultrachat", "train")
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--laptop" in err and err.strip().count("\n") == 0
    with pytest.raises(SystemExit) as e:
        common.load_tokenizer("no-such-org/no-such-model")
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--laptop" in err and err.strip().count("\n") == 0


def test_hessian_vector_product_also_gives_the_derivative_along_another_input():
    """With per-sample weights w in L = (1/N) Σ_i w_i ℓ_i, the same backward that gives H v gives ∂⟨∇L, v⟩/∂w_i =
    ⟨∇ℓ_i, v⟩/N, the directional derivative of each ℓ_i along v (checked against per-sample gradients, float64)."""
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    w1 = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(4, dtype=torch.float64, requires_grad=True)
    losses = (torch.tanh(x @ w1) @ w2 - y) ** 2
    weights = torch.ones(8, dtype=torch.float64, requires_grad=True)
    grads = torch.autograd.grad((weights * losses).mean(), [w1, w2], create_graph=True)
    v = torch.randn(16, dtype=torch.float64)
    hv, d_weights = common.hessian_vector_product(grads, [w1, w2], v, also_wrt=weights)
    assert torch.allclose(hv, common.hessian_vector_product(grads, [w1, w2], v), rtol=1e-12)
    per_sample = torch.stack([common.flat(torch.autograd.grad(l, [w1, w2], retain_graph=True)) for l in losses])
    assert torch.allclose(d_weights, per_sample @ v / 8, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("indefinite", [False, True])
def test_conjugate_gradient_carries_a_linear_map_of_its_iterate(indefinite):
    """matvec may return (A p, M p): CG returns info["m_x"] = M x for the x it returns, also when a breakdown makes it
    return an earlier iterate (or None for x = 0), without ever applying M to x itself."""
    A = _spd(seed=5) - (2.0 * torch.eye(10, dtype=torch.float64) if indefinite else 0)  # indefinite: breaks down at step 5
    M = torch.randn(3, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    b = torch.randn(10, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    x, info = common.conjugate_gradient(lambda p: (A @ p, M @ p), b, iterations=10, tol=1e-12)
    plain, plain_info = common.conjugate_gradient(lambda p: A @ p, b, iterations=10, tol=1e-12)
    assert torch.equal(x, plain) and plain_info["m_x"] is None and info["breakdown"] == indefinite and x.any()
    assert torch.allclose(info["m_x"], M @ x, rtol=1e-9, atol=1e-12)
    _, zero_info = common.conjugate_gradient(lambda p: (A @ p, M @ p), torch.zeros(10, dtype=torch.float64))
    assert zero_info["m_x"] is None
