"""GGUF metadata attnlab does not compute (scaled or partial RoPE) must be refused, not loaded
into a model that silently computes another function; the plain settings must load."""

import pytest

from attnlab.errors import AttnlabError
from attnlab.interop.gguf import hf_config
from attnlab.interop.hf import llama_config

BASE = {"general.architecture": "llama", "llama.embedding_length": 64,
        "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2,
        "llama.feed_forward_length": 96, "llama.block_count": 2,
        "llama.attention.layer_norm_rms_epsilon": 1e-5, "llama.rope.freq_base": 500.0,
        "llama.context_length": 32, "tokenizer.ggml.tokens": ["a"] * 97}
NAMES = {"token_embd.weight", "output_norm.weight", "blk.0.attn_q.weight"}


def test_plain_metadata_gives_the_llama_config():
    for extra in ({}, {"llama.rope.scaling.type": "none"},
                  {"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 1.0},
                  {"llama.rope.dimension_count": 16}):
        cfg = llama_config(hf_config({**BASE, **extra}, NAMES))
        assert (cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_ff, cfg.n_layers) == (
            64, 4, 2, 96, 2)
        assert (cfg.rope_theta, cfg.norm_eps, cfg.max_len, cfg.vocab_size) == (
            500.0, 1e-5, 32, 97)
        assert cfg.tie_embeddings  # no output.weight


@pytest.mark.parametrize("extra, names", [
    ({"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 4.0}, set()),
    ({"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 1.0}, set()),
    ({"llama.rope.scaling.type": "yarn"}, set()),
    ({"llama.rope.scaling.factor": 8.0}, set()),
    ({}, {"rope_freqs.weight"}),  # llama-3.1 style per-frequency factors
    ({"llama.rope.dimension_count": 8}, set()),  # partial rotary
], ids=["linear-x4", "yarn-x1", "yarn", "factor-only", "rope-freqs", "partial-rotary"])
def test_scaled_or_partial_rope_is_refused(extra, names):
    with pytest.raises(AttnlabError, match=r"RoPE|rotary"):
        hf_config({**BASE, **extra}, NAMES | names)


@pytest.mark.parametrize("pre, split", [("gpt2", False), ("default", False), (None, False),
                                        ("smollm", True), ("starcoder", True)])
def test_digit_splitting_pre_tokenizers_cut_every_digit_apart(pre, split):
    """SmolLM2's and StarCoder's tokenizer.json put Digits(individual_digits=True) before
    byte-level BPE: a merge of two digits (or of a space and a digit) is never applied."""
    from tokenizers import pre_tokenizers

    from attnlab.interop.gguf import gguf_tokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = [*alphabet, "12", "Ġ1"]
    meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre,
            "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.merges": ["1 2", "Ġ 1"],
            "tokenizer.ggml.token_type": [1] * len(tokens)}
    tok = gguf_tokenizer(meta)
    one, two, space = tokens.index("1"), tokens.index("2"), tokens.index("Ġ")
    want = [one, two, space, one] if split else [tokens.index("12"), tokens.index("Ġ1")]
    assert tok.encode("12 1") == want
    assert tok.decode(tok.encode("12 1")) == "12 1"
