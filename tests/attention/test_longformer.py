import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.attention import MultiHeadAttention, build
from attnlab.attention.masks import dense_keep_mask, masked_softmax
from attnlab.errors import ConfigError
from attnlab.layers import ALiBiPositional
from tests.helpers import (
    LargestTensor,
    assert_same_values_and_gradients,
    random_qkv_with_padding,
)


def longformer_reference(q, k, v, window, n_global, *, causal, key_padding_mask=None,
                         bias=None):
    """Dense twin: softmax attention under the banded mask plus global columns and rows."""
    Tq, Tk = q.shape[2], k.shape[2]
    q_pos, k_pos = torch.arange(Tk - Tq, Tk), torch.arange(Tk)
    keep = dense_keep_mask(Tq, Tk, causal=causal, window=window)[0, 0]  # (Tq, Tk) the band
    glob = (k_pos[None, :] < n_global) | (q_pos[:, None] < n_global)
    if causal:
        glob = glob & (k_pos[None, :] <= q_pos[:, None])
    keep = (keep | glob)[None, None]
    if key_padding_mask is not None:
        keep = keep & key_padding_mask[:, None, None, :]
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    if bias is not None:
        scores = scores + bias(q_pos, k_pos)
    w = masked_softmax(scores, keep)
    return w @ v, w


@settings(max_examples=60, deadline=None)
@given(Tk=st.integers(1, 40), window=st.integers(1, 12), n_global=st.integers(0, 5),
       causal=st.booleans(), biased=st.booleans(), data=st.data())
def test_equals_banded_plus_global_dense_reference(Tk, window, n_global, causal, biased, data):
    B, H, Dh = 2, 2, 4
    Tq = data.draw(st.integers(1, Tk)) if causal else Tk  # causal also as cached decoding
    q = torch.randn(B, H, Tq, Dh)
    k, v = torch.randn(2, B, H, Tk, Dh).unbind(0)
    bits = data.draw(st.lists(st.booleans(), min_size=B * Tk, max_size=B * Tk))
    mask = torch.tensor(bits).view(B, Tk)
    bias = ALiBiPositional(H).attention_bias if biased else None
    attn = build("longformer", window=window, global_tokens=n_global)
    out, w = attn(q, k, v, causal=causal, key_padding_mask=mask, bias=bias, need_weights=True)
    ref, ref_w = longformer_reference(q, k, v, window, n_global, causal=causal,
                                      key_padding_mask=mask, bias=bias)
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(w, ref_w, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(Tk=st.integers(1, 300), window=st.integers(1, 150), n_global=st.integers(0, 5),
       causal=st.booleans(), data=st.data())
def test_fused_path_equals_the_dense_reference_in_value_and_gradient(Tk, window, n_global,
                                                                     causal, data):
    # The default path (no weights, no bias) runs blocks of up to 128 queries, with the global
    # keys appended to each block's band, through SDPA.
    Tq = data.draw(st.integers(1, Tk)) if causal else Tk
    q, k, v, mask = random_qkv_with_padding(data, 2, 2, Tq, Tk, 4)
    attn = build("longformer", window=window, global_tokens=n_global)
    out, w = attn(q, k, v, causal=causal, key_padding_mask=mask)
    ref, _ = longformer_reference(q, k, v, window, n_global, causal=causal,
                                  key_padding_mask=mask)
    assert w is None
    assert_same_values_and_gradients(out, ref, (q, k, v), atol=1e-10)


def test_bidirectional_queries_that_are_not_the_first_are_not_global():
    """Non-causal with Tq < Tk: only queries at positions < global_tokens are global rows."""
    q = torch.randn(1, 2, 4, 4)
    k, v = torch.randn(2, 1, 2, 20, 4).unbind(0)
    out, w = build("longformer", window=3, global_tokens=2)(q, k, v, need_weights=True)
    ref, ref_w = longformer_reference(q, k, v, 3, 2, causal=False)
    assert torch.allclose(out, ref, atol=1e-5) and torch.allclose(w, ref_w, atol=1e-6)


@pytest.mark.parametrize("causal, window, n_global", [
    (False, 17, 0), (False, 17, 3), (False, 40, 2), (True, 17, 0), (True, 17, 3), (True, 40, 2),
    (False, 2, 17),  # every token global (causal global keys would only cover the past)
])
def test_covering_the_sequence_equals_full(causal, window, n_global):
    q, k, v = torch.randn(3, 2, 3, 17, 8).unbind(0)
    mask = torch.ones(2, 17, dtype=torch.bool)
    mask[1, 12:] = False
    mask[0, :2] = False
    out, _ = build("longformer", window=window, global_tokens=n_global)(
        q, k, v, causal=causal, key_padding_mask=mask)
    ref, _ = build("full")(q, k, v, causal=causal, key_padding_mask=mask)
    assert torch.allclose(out, ref, atol=1e-5)


def test_sees_exactly_its_window_and_the_global_tokens():
    q, k, v = torch.randn(3, 1, 1, 12, 4).unbind(0)
    attn = build("longformer", window=3, global_tokens=2)
    _, w = attn(q, k, v, causal=True, need_weights=True)
    seen = w[0, 0] > 0
    for i in range(12):
        expected = sorted({0, 1} & set(range(i + 1)) | set(range(max(0, i - 2), i + 1)))
        assert seen[i].nonzero().flatten().tolist() == expected
    _, w = attn(q, k, v, causal=False, need_weights=True)
    seen = w[0, 0] > 0
    assert seen[:2].all()  # global queries see every key
    assert seen[8].nonzero().flatten().tolist() == [0, 1, 6, 7, 8, 9, 10]


def test_a_key_in_the_window_and_global_counts_once():
    """With equal scores, a query whose window contains the global keys weighs every distinct
    key equally (a key scored in both tiles would weigh double)."""
    q = torch.zeros(1, 1, 10, 4)
    k, v = torch.randn(2, 1, 1, 10, 4).unbind(0)
    _, w = build("longformer", window=3, global_tokens=2)(q, k, v, causal=True,
                                                          need_weights=True)
    assert torch.allclose(w[0, 0, 2, :3], torch.full((3,), 1 / 3))  # keys 0, 1, 2
    assert torch.allclose(w[0, 0, 3, :4], torch.full((4,), 1 / 4))  # 0, 1 global; 1..3 window


@pytest.mark.parametrize("causal", [False, True])
def test_memory_is_linear_never_an_n_by_n_matrix(causal):
    n, w, g = 2048, 32, 2
    q, k, v = (t.requires_grad_() for t in torch.randn(3, 1, 2, n, 16).unbind(0))
    with LargestTensor() as probe:
        out, _ = build("longformer", window=w, global_tokens=g)(q, k, v, causal=causal)
        out.sum().backward()
    # scores are (B, H, n/w, w, 3w - 2 + g): about (3w + g) n per head, far below n * n
    assert probe.numel <= 2 * n * (3 * w + g)
    assert probe.numel < n * n / 4
    with LargestTensor() as dense:
        build("full", impl="eager")(q, k, v, causal=causal)
    assert dense.numel >= 2 * n * n  # the probe does see a dense matrix when there is one


def test_kv_cached_decoding_keeps_the_global_keys_beyond_the_window():
    """The cache keeps every key (KVCache keeps suffixes only; the global keys are a prefix)."""
    torch.manual_seed(1)
    mha = MultiHeadAttention(16, 2, attention="longformer",
                             attention_options={"window": 3, "global_tokens": 2}).eval()
    assert mha.attn.cache_keep is None
    x = torch.randn(2, 20, 16)
    full, _ = mha(x, causal=True)
    cache = mha.new_cache()
    steps = [mha(x[:, :4], causal=True, cache=cache)[0]]
    steps += [mha(x[:, t:t + 1], causal=True, cache=cache)[0] for t in range(4, 20)]
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)
    # and the global keys matter: without them the late outputs differ
    plain = MultiHeadAttention(16, 2, attention="local", attention_options={"window": 3}).eval()
    plain.load_state_dict(mha.state_dict())
    assert not torch.allclose(plain(x, causal=True)[0][:, 10:], full[:, 10:], atol=1e-3)


@pytest.mark.parametrize("options, message", [
    (dict(window=0), "window must be an integer >= 1"),
    (dict(window=2.0), "window must be an integer >= 1"),
    (dict(global_tokens=-1), "global_tokens must be an integer >= 0"),
])
def test_invalid_options_are_one_line_config_errors(options, message):
    with pytest.raises(ConfigError, match=f"attention 'longformer': {message}") as info:
        build("longformer", **options)
    assert "\n" not in str(info.value)


def test_attended_keys_counts_band_and_global_keys():
    attn = build("longformer", window=8, global_tokens=2)
    assert attn.attended_keys(100, 100, causal=True) == 8 + 7 + 2
    assert attn.attended_keys(100, 100, causal=False) == (2 * 100 + 98 * (8 + 14 + 2)) / 100
