"""KV cache and positional offsets during cached decoding (MultiHeadAttention + KVCache)."""

import pytest
import torch

from attnlab.attention import MultiHeadAttention
from attnlab.layers import ALiBiPositional, RotaryPositional
from tests.conftest import TINY_OPTIONS


def test_past_without_a_mask_stays_visible_when_a_step_brings_one():
    # A prefill without padding, then steps that pass a (all-real) mask: the past is real keys.
    mha = MultiHeadAttention(16, 4).eval()
    x = torch.randn(2, 7, 16)
    full, _ = mha(x, causal=True)
    cache = mha.new_cache()
    outs = [mha(x[:, :4], causal=True, cache=cache)[0]]
    for t in range(4, 7):
        step_mask = torch.ones(2, 1, dtype=torch.bool)
        outs.append(mha(x[:, t:t + 1], causal=True, key_padding_mask=step_mask, cache=cache)[0])
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["local", "full"])
def test_rope_positions_count_every_token_seen_even_past_a_sliding_window(name):
    # local keeps only window - 1 keys: the next token's rotary position is still `seen`.
    mha = MultiHeadAttention(16, 2, attention=name, attention_options=TINY_OPTIONS[name]).eval()
    rope = RotaryPositional(8)
    x = torch.randn(1, 10, 16)
    full, _ = mha(x, causal=True, positional=rope)
    cache = mha.new_cache()
    outs = [mha(x[:, :2], causal=True, positional=rope, cache=cache)[0]]
    outs += [mha(x[:, t:t + 1], causal=True, positional=rope, cache=cache)[0]
             for t in range(2, 10)]
    assert cache.seen == 10
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=1e-5)


def test_alibi_does_not_bias_cross_attention():
    # Relative position biases tie a query to its own sequence; an encoder's memory has none.
    mha = MultiHeadAttention(16, 4).eval()
    x, mem = torch.randn(2, 3, 16), torch.randn(2, 6, 16)
    with_alibi, _ = mha(x, mem, positional=ALiBiPositional(4))
    plain, _ = mha(x, mem)
    torch.testing.assert_close(with_alibi, plain)


def test_rope_does_not_rotate_cross_attention():
    mha = MultiHeadAttention(16, 2).eval()
    x, mem = torch.randn(2, 3, 16), torch.randn(2, 6, 16)
    torch.testing.assert_close(mha(x, mem, positional=RotaryPositional(8))[0], mha(x, mem)[0])


@torch.no_grad()
def test_inference_cache_keeps_the_past_when_its_buffer_grows():
    # The no-grad cache writes into buffers of capacity max(2 n, 64) and reallocates when full:
    # decode well past the first capacity and compare with the full forward.
    mha = MultiHeadAttention(8, 2, n_kv_heads=1).eval()
    x = torch.randn(2, 140, 8)
    full, _ = mha(x, causal=True)
    cache = mha.new_cache()
    outs = [mha(x[:, :3], causal=True, cache=cache)[0]]
    outs += [mha(x[:, t:t + 1], causal=True, cache=cache)[0] for t in range(3, 140)]
    assert cache._buffers is not None  # the buffered path was taken
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["full", "local", "longformer", "luong", "performer", "hard"])
def test_left_padded_cached_decoding_equals_the_full_forward(name):
    # A left-padded prefill, then steps: the cache keeps (and, for a sliding window, trims)
    # the padding mask with its keys, and the real positions match the full padded forward.
    mha = MultiHeadAttention(16, 4, n_kv_heads=2, attention=name,
                             attention_options=TINY_OPTIONS[name]).eval()
    x = torch.randn(2, 10, 16)
    keep = torch.ones(2, 10, dtype=torch.bool)
    keep[0, :3] = False  # row 0: three pad tokens on the left
    full, _ = mha(x, causal=True, key_padding_mask=keep)
    cache = mha.new_cache()
    outs = [mha(x[:, :5], causal=True, key_padding_mask=keep[:, :5], cache=cache)[0]]
    for t in range(5, 10):
        outs.append(mha(x[:, t:t + 1], causal=True, key_padding_mask=keep[:, t:t + 1],
                        cache=cache)[0])
    got = torch.cat(outs, 1)
    torch.testing.assert_close(got[keep], full[keep], atol=1e-5, rtol=1e-5)
