"""Generation: the sampling helpers against direct computations, the cached decoding loop against
full recomputation (inside and beyond the context), batching, seeds, eos, stop strings,
streaming, errors, and greedy decoding against Hugging Face GPT-2 on identical weights."""

import io
import os

import pytest
import torch

from attnlab.errors import AttnlabError, ConfigError
from attnlab.generate import (
    GenerationConfig,
    apply_repetition_penalty,
    generate,
    generate_text,
    sample_next,
    top_k_filter,
    top_p_filter,
)
from attnlab.models import GPT
from tests.helpers import decoding_gpt

os.environ.setdefault("HF_HUB_OFFLINE", "1")

V = 31
ALPHABET = "abcdefghijklmnopqrstuvwxyz .,!?"  # one character per token id
assert len(ALPHABET) == V

SAMPLED = dict(temperature=0.9, top_k=12, top_p=0.9, repetition_penalty=1.3, seed=7)


def tiny_gpt(max_len=16, vocab_size=V, **kw) -> GPT:
    return decoding_gpt(vocab_size, max_len, **kw)


class CharTokenizer:
    """Stand-in for a real tokenizer: one id per character of ALPHABET."""

    def encode(self, text):
        return [ALPHABET.index(c) for c in text]

    def decode(self, ids):
        return "".join(ALPHABET[i] for i in ids)


class ByteTokenizer:
    """Byte-level: an incomplete UTF-8 character decodes to U+FFFD until its bytes arrive."""

    def encode(self, text):
        return list(text.encode())

    def decode(self, ids):
        return bytes(ids).decode("utf-8", errors="replace")


class Counter:
    """Counts the model's forward calls and the tokens they process."""

    def __init__(self, model):
        self.calls = self.tokens = 0
        model.register_forward_pre_hook(self.hook)

    def hook(self, module, args):
        self.calls += 1
        self.tokens += args[0].numel()


class Recorder(io.StringIO):
    """A text stream that keeps each write separately."""

    def __init__(self):
        super().__init__()
        self.writes = []

    def write(self, s):
        self.writes.append(s)
        return super().write(s)


# ---------------------------------------------------------------------------------------------
# Config


@pytest.mark.parametrize("field, value, message", [
    ("temperature", -0.5, "temperature must be >= 0"),
    ("temperature", float("nan"), "temperature must be >= 0"),
    ("temperature", float("inf"), "temperature must be >= 0 and finite"),
    ("top_k", 0, "top_k must be an integer >= 1"),
    ("top_p", 0.0, r"top_p must be in \(0, 1\]"),
    ("top_p", 1.5, r"top_p must be in \(0, 1\]"),
    ("repetition_penalty", 0.0, "repetition_penalty must be > 0"),
    ("repetition_penalty", -1.0, "repetition_penalty must be > 0"),
    ("max_new_tokens", -1, "max_new_tokens must be an integer >= 0"),
    ("stop", ("",), "stop must be a list of non-empty strings"),
])
def test_config_rejects_bad_values_with_one_line(field, value, message):
    with pytest.raises(ConfigError, match=message) as err:
        GenerationConfig(**{field: value})
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=message):  # overrides are validated too
        generate(tiny_gpt(), [[1]], **{field: value})


def test_a_config_changed_after_it_was_built_is_checked_again():
    cfg = GenerationConfig(temperature=0, max_new_tokens=4)
    cfg.temperature = -1.0
    with pytest.raises(ConfigError, match="temperature must be >= 0"):
        generate(tiny_gpt(), [[1]], cfg)
    cfg.temperature, cfg.decoder = 0, "flt"
    with pytest.raises(ConfigError, match="unknown decoder 'flt'"):
        generate(tiny_gpt(), [[1]], cfg)
    cfg.decoder, cfg.stop = "auto", "q!"  # a bare string: one stop string, not two
    model, tok = tiny_gpt(max_len=64), CharTokenizer()
    ref = generate_text(model, tok, "hello", temperature=0, max_new_tokens=20)
    cfg.max_new_tokens, cfg.stop = 20, ref[5:9]
    assert generate_text(model, tok, "hello", cfg) == ref[:5]


def test_config_accepts_edges_and_names_unknown_overrides():
    cfg = GenerationConfig(temperature=0, top_k=1, top_p=1.0, repetition_penalty=0.5,
                           max_new_tokens=0, stop="END")
    assert cfg.stop == ("END",)  # a bare string is one stop string, not three
    with pytest.raises(ConfigError, match="did you mean 'temperature'"):
        generate(tiny_gpt(), [[1]], temprature=0.5)


# ---------------------------------------------------------------------------------------------
# Sampling helpers


def test_repetition_penalty_divides_positive_and_multiplies_negative_seen_logits():
    logits = torch.tensor([[2.0, -2.0, 1.0, -1.0, 0.0], [3.0, 3.0, -3.0, -3.0, 0.5]])
    seen = torch.tensor([[True, True, False, False, True], [False, True, False, True, False]])
    out = apply_repetition_penalty(logits, seen, 2.0)
    expected = logits.clone()
    for b in range(2):
        for v in range(5):
            if seen[b, v]:
                x = logits[b, v].item()
                expected[b, v] = x / 2.0 if x > 0 else x * 2.0
    assert torch.equal(out, expected)
    assert torch.equal(apply_repetition_penalty(logits, seen, 1.0), logits)


def test_top_k_keeps_exactly_k_largest():
    logits = torch.randn(4, 20)
    for k in (1, 3, 19):
        out = top_k_filter(logits, k)
        kept = out.isfinite()
        assert (kept.sum(-1) == k).all()
        assert torch.equal(out[kept], logits[kept])
        for b in range(4):
            assert set(kept[b].nonzero().flatten().tolist()) == set(
                logits[b].argsort(descending=True)[:k].tolist())
    ties = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert top_k_filter(ties, 2).isfinite().sum() == 2  # a threshold would keep three
    assert torch.equal(top_k_filter(logits, 20), logits)
    assert torch.equal(top_k_filter(logits, None), logits)


def nucleus(probs, p):
    """Direct computation: the smallest number of most likely tokens whose mass reaches p."""
    ranked = sorted(range(len(probs)), key=lambda i: -probs[i])
    total = 0.0
    for m, i in enumerate(ranked, 1):
        total += probs[i]
        if total >= p:
            return set(ranked[:m])
    return set(ranked)


@pytest.mark.parametrize("p", [1e-6, 0.3, 0.5, 0.9, 0.99])
def test_top_p_keeps_smallest_set_reaching_p(p):
    logits = torch.randn(6, 12, dtype=torch.float64) * 2
    out = top_p_filter(logits, p)
    for b in range(6):
        kept = set(out[b].isfinite().nonzero().flatten().tolist())
        assert kept == nucleus(logits[b].softmax(-1).tolist(), p)
        assert len(kept) >= 1
    assert torch.equal(out[out.isfinite()], logits[out.isfinite()])


def test_top_p_exact_boundary_and_one_keeps_all():
    probs = torch.tensor([[0.5, 0.25, 0.125, 0.125]])
    logits = probs.log()
    assert top_p_filter(logits, 0.75).isfinite().tolist() == [[True, True, False, False]]
    assert top_p_filter(logits, 0.76).isfinite().tolist() == [[True, True, True, False]]
    assert torch.equal(top_p_filter(logits, 1.0), logits)


def test_temperature_zero_is_argmax():
    logits = torch.randn(5, 17)
    assert torch.equal(sample_next(logits, temperature=0), logits.argmax(-1))
    assert torch.equal(sample_next(logits, temperature=0, top_k=3, top_p=0.1),
                       logits.argmax(-1))


@pytest.mark.parametrize("temperature", [1e-30, 1e-39, 1e-45])
def test_a_vanishing_temperature_samples_the_argmax(temperature):
    logits = torch.randn(5, 17) * 10  # / 1e-39 overflows float32 unless the max is taken off
    gen = [torch.Generator().manual_seed(b) for b in range(5)]
    assert torch.equal(sample_next(logits, temperature=temperature, generator=gen),
                       logits.argmax(-1))


def test_sampling_helpers_reject_what_gives_no_distribution():
    logits = torch.randn(2, 7)
    for kw, message in [(dict(top_k=0), "top_k must be an integer >= 1"),
                        (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
                        (dict(temperature=-1.0), "temperature must be >= 0")]:
        with pytest.raises(ConfigError, match=message):
            sample_next(logits, **kw)
    with pytest.raises(AttnlabError, match="give no distribution"):
        sample_next(torch.full((2, 7), float("nan")))
    with pytest.raises(AttnlabError, match="give no distribution"):
        sample_next(torch.full((2, 7), float("-inf")))


def test_sampling_frequencies_follow_filtered_tempered_softmax():
    logits = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -1.0])
    n, T, k = 40000, 0.7, 4
    draws = sample_next(logits.expand(n, -1), temperature=T, top_k=k,
                        generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=6).double() / n
    expected = torch.zeros(6, dtype=torch.float64)
    expected[:k] = (logits[:k].double() / T).softmax(-1)
    assert freq[k:].sum() == 0  # filtered tokens are never drawn
    assert torch.allclose(freq, expected, atol=0.01), (freq, expected)


def test_per_row_generators_make_rows_independent():
    logits = torch.randn(3, 10)
    gens = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    together = sample_next(logits, generator=gens)
    alone = [sample_next(logits[b:b + 1], generator=torch.Generator().manual_seed(b + 1))
             for b in range(3)]
    assert together.tolist() == [int(a) for a in alone]


# ---------------------------------------------------------------------------------------------
# Cached decoding equals full recomputation


PROMPTS = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11, 12, 13]]  # left-padded; the second reaches
# the 16-token context after 6 new tokens, so 20 tokens also test decoding beyond it


@pytest.mark.parametrize("mode", ["greedy", "sampled"])
@pytest.mark.parametrize("attention", ["full", "local"])
@pytest.mark.parametrize("positional", ["none", "sinusoidal", "learned", "rope", "alibi"])
def test_cached_equals_uncached_token_for_token(positional, attention, mode):
    opts = {"window": 4} if attention == "local" else {}
    model = tiny_gpt(positional=positional, attention=attention, attention_options=opts)
    kw = dict(max_new_tokens=20, **(SAMPLED if mode == "sampled" else {"temperature": 0}))
    cached = generate(model, PROMPTS, **kw)
    uncached = generate(model, PROMPTS, use_cache=False, **kw)
    assert cached == uncached
    assert [len(r) for r in cached] == [20, 20]
    assert len({t for r in cached for t in r}) > 3  # not a degenerate repetition


def crop_reference(model, prompt, n, *, penalty, seed, top_k):
    """nanoGPT's loop, written out: the model sees the last max_len tokens, recomputed each
    step; CTRL's penalty on every token of the sequence so far (cropped ones included); one
    draw per step from the generator seeded with `seed` (row 0's)."""
    seq = list(prompt)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([seq[-model.config.max_len:]]))[0, -1]
            for t in set(seq):
                logits[t] = logits[t] / penalty if logits[t] > 0 else logits[t] * penalty
            seq.append(int(sample_next(logits[None], top_k=top_k, generator=[gen])))
    return seq[len(prompt):]


@pytest.mark.parametrize("penalty", [1.0, 1.3])  # 1.0: no seen-token tracking at all
@pytest.mark.parametrize("positional", ["learned", "rope"])
def test_beyond_the_context_the_model_sees_the_last_max_len_tokens(positional, penalty):
    model = tiny_gpt(positional=positional)
    prompt = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8]
    kw = dict(max_new_tokens=24, repetition_penalty=penalty, seed=5, top_k=10)
    expected = crop_reference(model, prompt, 24, penalty=penalty, seed=5, top_k=10)  # 36 > 16
    assert generate(model, [prompt], **kw) == [expected]
    assert generate(model, [prompt], use_cache=False, **kw) == [expected]
    assert len(set(expected[8:])) > 3


SHIFT_VARIANT = {  # mechanisms whose pattern left padding would move: rows run one at a time
    "longformer": {"window": 3, "global_tokens": 2},
    "bigbird": {"block_size": 2, "num_random_blocks": 1, "num_global_blocks": 1},
    "luong-local": {"window": 2, "mode": "p", "head_dim": 8},
}


@pytest.mark.parametrize("mode", ["greedy", "sampled"])
@pytest.mark.parametrize("positional, attention", [
    ("learned", "full"), ("rope", "full"), ("alibi", "full"), ("rope", "local"),
    *(("learned", name) for name in SHIFT_VARIANT)])
def test_batched_left_padded_equals_one_at_a_time(positional, attention, mode):
    opts = {"window": 4} if attention == "local" else SHIFT_VARIANT.get(attention, {})
    model = tiny_gpt(positional=positional, attention=attention, attention_options=opts)
    # bigbird and luong-local keep no KV cache: they decode by recomputation.
    kw = dict(max_new_tokens=10, use_cache=attention not in ("bigbird", "luong-local"),
              **(dict(temperature=0) if mode == "greedy" else SAMPLED))
    prompts = [[5], [3, 1, 4], [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 11, 12], [2, 7]]
    streamed = [[] for _ in prompts]
    batched = generate(model, prompts, on_token=lambda b, t: streamed[b].append(t),
                       **kw)  # past 16 for row 2
    seed = kw.pop("seed", None)
    alone = [generate(model, [p], seed=None if seed is None else seed + b, **kw)[0]
             for b, p in enumerate(prompts)]
    assert batched == alone == streamed
    assert len({tuple(r) for r in batched}) > 1


def test_tensor_prompts_equal_list_prompts():
    model = tiny_gpt()
    prompts = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert (generate(model, prompts, temperature=0, max_new_tokens=6)
            == generate(model, prompts.tolist(), temperature=0, max_new_tokens=6))


def test_cached_path_processes_each_token_once():
    model = tiny_gpt(max_len=64)
    P, n = 5, 8
    prompt = [list(range(1, P + 1))]
    counter = Counter(model)
    generate(model, prompt, temperature=0, max_new_tokens=n)
    assert (counter.calls, counter.tokens) == (n, P + n - 1)  # prefill, then one per step
    counter.calls = counter.tokens = 0
    generate(model, prompt, temperature=0, max_new_tokens=n, use_cache=False)
    assert (counter.calls, counter.tokens) == (n, sum(P + s for s in range(n)))  # O(n^2)


def test_cached_path_rebuilds_the_window_once_the_context_is_full():
    model = tiny_gpt(max_len=16)
    counter = Counter(model)
    generate(model, [list(range(10))], temperature=0, max_new_tokens=10)
    # Prefill 10; the sequences of 11..16 tokens take one token each; those of 17, 18, 19
    # rebuild the cache from the last 15 tokens, then step one: 16 tokens each.
    assert counter.tokens == 10 + 6 * 1 + 3 * 16


# ---------------------------------------------------------------------------------------------
# Seeds, eos, streaming of token ids, mode


def test_seeded_sampling_is_reproducible_and_seeds_differ():
    model = tiny_gpt()
    kw = dict(max_new_tokens=16, temperature=1.0)
    a = generate(model, PROMPTS, seed=1, **kw)
    assert generate(model, PROMPTS, seed=1, **kw) == a
    assert generate(model, PROMPTS, seed=2, **kw) != a
    # Row b samples from its own generator seeded with seed + b: batching does not change it.
    assert generate(model, [PROMPTS[1]], seed=2, **kw) == [a[1]]


def test_unseeded_sampling_varies_and_leaves_the_global_rng_alone():
    model = tiny_gpt()
    state = torch.get_rng_state()
    runs = {tuple(generate(model, [[1, 2]], max_new_tokens=16, temperature=1.0)[0])
            for _ in range(3)}
    assert len(runs) > 1
    assert torch.equal(torch.get_rng_state(), state)


def test_eos_ends_its_row_only_and_all_done_ends_early():
    model = tiny_gpt(max_len=64)
    ref = generate(model, PROMPTS, temperature=0, max_new_tokens=20)
    k = next(i for i in range(2, 20) if ref[0][i] not in ref[0][:i])  # a first occurrence
    eos = ref[0][k]
    out = generate(model, PROMPTS, temperature=0, max_new_tokens=20, eos_id=eos)
    assert out[0] == ref[0][:k + 1]  # eos included, nothing after it
    j = ref[1].index(eos) + 1 if eos in ref[1] else 20
    assert out[1] == ref[1][:j]
    counter = Counter(model)
    assert generate(model, PROMPTS[:1], temperature=0, max_new_tokens=20,
                    eos_id=eos) == [ref[0][:k + 1]]
    assert counter.calls == k + 1  # prefill + k steps, not max_new_tokens


def test_eos_id_takes_one_id_or_a_list():
    # test_generate_rows.py checks that each id of a list ends a row
    assert GenerationConfig(eos_id=[7]).eos_id == 7 and GenerationConfig().eos_ids == set()
    for bad in ([], [1, -2], [1.5], "3"):
        with pytest.raises(ConfigError, match="eos_id must be a token id >= 0, a list"):
            GenerationConfig(eos_id=bad)


def test_on_token_streams_each_token_as_produced():
    model = tiny_gpt()
    counter = Counter(model)
    seen = []
    out = generate(model, PROMPTS, temperature=0, max_new_tokens=6,
                   on_token=lambda row, t: seen.append((row, t, counter.calls)))
    assert [(r, t) for r, t, _ in seen] == [(b, out[b][s]) for s in range(6) for b in range(2)]
    assert [c for _, _, c in seen] == [s + 1 for s in range(6) for _ in range(2)]


def test_restores_each_submodules_own_mode():
    model = tiny_gpt(dropout=0.5).train()
    model.stack.blocks[0].eval()  # e.g. a frozen layer inside a model being trained
    before = {name: m.training for name, m in model.named_modules()}
    generate(model, [[1, 2, 3]], temperature=0, max_new_tokens=3)
    assert {name: m.training for name, m in model.named_modules()} == before
    assert not all(before.values()) and any(before.values())


def test_runs_in_eval_and_inference_mode_then_restores_the_mode():
    model = tiny_gpt(dropout=0.5).train()
    state = []
    out = generate(model, [[1, 2, 3]], temperature=0, max_new_tokens=8,
                   on_token=lambda r, t: state.append((model.training,
                                                       torch.is_inference_mode_enabled())))
    assert set(state) == {(False, True)}
    assert model.training
    assert generate(model, [[1, 2, 3]], temperature=0, max_new_tokens=8) == out  # no dropout


# ---------------------------------------------------------------------------------------------
# Errors


def test_prompt_longer_than_the_context_is_an_error():
    model = tiny_gpt(max_len=16)
    with pytest.raises(AttnlabError, match="prompt has 17 tokens but the model's context is "
                                           "16; shorten it"):
        generate(model, [list(range(17))], max_new_tokens=1)
    assert len(generate(model, [list(range(16))], temperature=0, max_new_tokens=3)[0]) == 3


def test_empty_prompt_is_an_error():
    model = tiny_gpt()
    with pytest.raises(AttnlabError, match="empty prompt"):
        generate(model, [[1, 2], []])
    with pytest.raises(AttnlabError, match="empty prompt"):
        generate_text(model, CharTokenizer(), "")
    for prompt in (123, ["a", 5], b"bytes"):
        with pytest.raises(AttnlabError, match="prompt must be a string or a list of strings"):
            generate_text(model, CharTokenizer(), prompt)


@pytest.mark.parametrize("prompts, message", [
    ([1, 2, 3], "wrap a single prompt"),
    ([[1.5, 2]], "integer ids"),
    (torch.tensor([1, 2]), r"shaped \(batch, length\)"),
    ("abc", "list of token-id lists"),
])
def test_malformed_prompts_are_errors(prompts, message):
    with pytest.raises(AttnlabError, match=message):
        generate(tiny_gpt(), prompts)


def test_bool_prompts_eos_outside_the_vocabulary_and_uncallable_on_token_are_errors():
    model = tiny_gpt()
    with pytest.raises(AttnlabError, match="integer ids shaped"):
        generate(model, torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ConfigError, match=f"eos_id {V} is not a token of this model"):
        generate(model, [[1]], eos_id=V)
    with pytest.raises(AttnlabError, match="on_token must be callable"):
        generate(model, [[1]], on_token=5)
    with pytest.raises(AttnlabError, match="tokenizer must have encode"):
        generate_text(model, None, "abc")


def test_models_that_cannot_generate_are_one_line_errors():
    from transformers import GPT2Config, GPT2LMHeadModel

    hf = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_positions=16, n_embd=16, n_layer=1,
                                    n_head=2))
    with pytest.raises(AttnlabError, match=r"GPT2LMHeadModel.*attnlab\.interop\.gpt_from_hf"):
        generate(hf, [[1, 2]])
    with pytest.raises(AttnlabError, match="got NoneType"):
        generate(None, [[1, 2]])
    from attnlab.models import GPTConfig

    with torch.device("meta"):
        meta = GPT(GPTConfig(vocab_size=V, d_model=16, n_heads=2, n_layers=1, max_len=16))
    with pytest.raises(AttnlabError, match="meta device"):
        generate(meta, [[1, 2]])


def test_a_large_token_budget_costs_only_what_is_generated(monkeypatch):
    import attnlab.generate as gen

    model = tiny_gpt(max_len=16)
    first = generate(model, [[1, 2, 3]], temperature=0, max_new_tokens=1)[0][0]
    # eos ends the row at once: nothing is allocated for the other 10**12 tokens.
    assert generate(model, [[1, 2, 3]], temperature=0, max_new_tokens=10**12,
                    eos_id=first) == [[first]]
    # The token buffer grows by doubling; the tokens are those of one large buffer.
    prompts, kw = [[1, 2, 3], [4]], dict(max_new_tokens=40, **SAMPLED)
    expected = generate(model, prompts, **kw)
    monkeypatch.setattr(gen, "_FIRST_ROOM", 2)
    assert generate(model, prompts, **kw) == expected
    assert generate(model, prompts, use_cache=False, **kw) == expected


def test_zero_new_tokens_and_no_prompts():
    model = tiny_gpt()
    counter = Counter(model)
    assert generate(model, PROMPTS, max_new_tokens=0) == [[], []]
    assert generate(model, []) == []
    assert counter.calls == 0


# ---------------------------------------------------------------------------------------------
# Text


def test_generate_text_returns_the_decoded_continuation():
    model, tok = tiny_gpt(), CharTokenizer()
    text = generate_text(model, tok, "hello", temperature=0, max_new_tokens=12)
    assert text == tok.decode(generate(model, [tok.encode("hello")], temperature=0,
                                       max_new_tokens=12)[0])
    assert len(text) == 12
    batch = generate_text(model, tok, ["hello", "a"], temperature=0, max_new_tokens=12)
    assert batch == [text, generate_text(model, tok, "a", temperature=0, max_new_tokens=12)]


def test_eos_is_not_part_of_the_text():
    model, tok = tiny_gpt(), CharTokenizer()
    ids = generate(model, [tok.encode("hello")], temperature=0, max_new_tokens=12)[0]
    eos = ids[4]
    text = generate_text(model, tok, "hello", temperature=0, max_new_tokens=12, eos_id=eos)
    assert text == tok.decode(ids[:ids.index(eos)])


def first_stop(text, stops):
    cuts = [text.find(s) for s in stops if s in text]
    return min(cuts) if cuts else None


def test_stop_strings_cut_the_text_and_end_the_row():
    model, tok = tiny_gpt(max_len=64), CharTokenizer()
    prompts = ["hello", "the cat"]
    ref = generate_text(model, tok, prompts, temperature=0, max_new_tokens=40)
    i = 6
    stops = (ref[0][i:i + 3], "zzzz")
    assert first_stop(ref[0], stops) is not None
    out = generate_text(model, tok, prompts, temperature=0, max_new_tokens=40, stop=stops)
    for text, full in zip(out, ref, strict=True):
        cut = first_stop(full, stops)
        assert text == (full if cut is None else full[:cut])
    # One character per token: the row ends with the token that completes the stop string.
    counter = Counter(model)
    single = generate_text(model, tok, prompts[0], temperature=0, max_new_tokens=40, stop=stops)
    cut = first_stop(ref[0], stops)
    assert single == ref[0][:cut]
    assert counter.calls == cut + len(ref[0][cut:cut + 3])  # prefill + steps up to the stop


@pytest.mark.parametrize("with_stop", [False, True])
def test_stream_writes_exactly_the_returned_text_as_it_is_produced(with_stop):
    model, tok = tiny_gpt(max_len=64), CharTokenizer()
    ref = generate_text(model, tok, "hello", temperature=0, max_new_tokens=30)
    stops = (ref[10:14],) if with_stop else ()
    counter = Counter(model)
    stream = Recorder()
    calls_at_write = []
    orig_write = stream.write
    stream.write = lambda s: (calls_at_write.append(counter.calls), orig_write(s))[1]
    text = generate_text(model, tok, "hello", temperature=0, max_new_tokens=30, stop=stops,
                         stream=stream)
    assert stream.getvalue() == text
    assert text == (ref[:ref.index(stops[0])] if with_stop else ref)
    assert len(stream.writes) > 3 and calls_at_write[0] < counter.calls  # incremental


@pytest.mark.parametrize("span", [(0, 6), (2, 9)])  # the stop starts the text / comes early
def test_stream_writes_nothing_past_a_stop_longer_than_the_text_before_it(span):
    model, tok = tiny_gpt(max_len=64), CharTokenizer()
    ref = generate_text(model, tok, "hello", temperature=0, max_new_tokens=30)
    stop = ref[span[0]:span[1]]
    stream = Recorder()
    text = generate_text(model, tok, "hello", temperature=0, max_new_tokens=30, stop=[stop],
                         stream=stream)
    assert text == ref[:span[0]]
    assert stream.getvalue() == text


def test_stream_holds_back_incomplete_utf8_characters():
    model, tok = tiny_gpt(vocab_size=256, max_len=128), ByteTokenizer()
    stream = Recorder()
    text = generate_text(model, tok, "hi", max_new_tokens=100, temperature=1.5, seed=3,
                         stream=stream)
    assert stream.getvalue() == text
    # The test is only meaningful if a multi-byte character was completed along the way.
    assert any(ord(c) > 127 and c != "\ufffd" for c in text)


def test_stream_takes_one_prompt():
    with pytest.raises(AttnlabError, match="single prompt"):
        generate_text(tiny_gpt(), CharTokenizer(), ["a", "b"], stream=io.StringIO())


# ---------------------------------------------------------------------------------------------
# Hugging Face GPT-2


@torch.no_grad()
def gpt2_pair():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    d, n_pos, vocab = 32, 40, 53
    hf_cfg = GPT2Config(vocab_size=vocab, n_positions=n_pos, n_embd=d, n_layer=2, n_head=4,
                        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0, bos_token_id=vocab - 1, eos_token_id=vocab - 1,
                        pad_token_id=0, tie_word_embeddings=True)
    hf_cfg._attn_implementation = "eager"
    hf = GPT2LMHeadModel(hf_cfg).eval()
    for name, p in hf.named_parameters():  # a scale at which greedy decoding goes somewhere
        if "wte" in name or "wpe" in name:
            p.normal_(0.0, 0.3)
        elif p.dim() == 2:
            p.normal_(0.0, 2 * p.shape[0] ** -0.5)  # Conv1D weights are (in, out)
        elif ".ln_" not in name:
            p.normal_(0.0, 0.1)
    from attnlab.interop import gpt_from_hf

    model = gpt_from_hf(hf_cfg.to_dict(), hf.state_dict()).eval()
    assert model.head.weight is model.tok_emb.weight
    return model, hf


def test_greedy_equals_hugging_face_gpt2_generate():
    model, hf = gpt2_pair()
    prompts = [[5, 17, 3, 29, 40, 8, 11], [22, 1, 9]]
    T = 7
    ids = torch.zeros(2, T, dtype=torch.long)
    mask = torch.zeros(2, T, dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, T - len(p):] = torch.tensor(p)
        mask[b, T - len(p):] = 1
    hf_kw = dict(do_sample=False, max_new_tokens=20, pad_token_id=0)
    with torch.no_grad():  # HF: left padding + attention mask, positions from the mask
        theirs = hf.generate(ids, attention_mask=mask, **hf_kw)[:, T:].tolist()
        # HF's penalty would also hit padding ids, so compare it on an unpadded prompt.
        penalized = hf.generate(ids[:1], repetition_penalty=1.3, **hf_kw)[0, T:].tolist()
    assert generate(model, prompts, temperature=0, max_new_tokens=20) == theirs
    assert generate(model, prompts[:1], temperature=0, max_new_tokens=20,
                    repetition_penalty=1.3) == [penalized]
    assert len(set(theirs[0])) > 3 and len(set(penalized)) > 5
