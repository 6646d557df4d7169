import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.attention import build
from attnlab.attention.masks import dense_keep_mask, masked_softmax
from attnlab.layers import ALiBiPositional
from tests.helpers import (
    LargestTensor,
    assert_same_values_and_gradients,
    random_qkv_with_padding,
)


def banded_reference(q, k, v, window, *, causal, key_padding_mask=None, bias=None):
    """Dense twin: full softmax attention with every key outside the band masked."""
    Tq, Tk = q.shape[2], k.shape[2]
    keep = dense_keep_mask(Tq, Tk, causal=causal, window=window,
                           key_padding_mask=key_padding_mask)
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    if bias is not None:
        scores = scores + bias(torch.arange(Tk - Tq, Tk), torch.arange(Tk))
    w = masked_softmax(scores, keep)
    return w @ v, w


@settings(max_examples=60, deadline=None)
@given(T=st.integers(1, 40), window=st.integers(1, 12), causal=st.booleans(),
       biased=st.booleans(), data=st.data())
def test_equals_banded_dense_reference(T, window, causal, biased, data):
    B, H, Dh = 2, 2, 4
    q, k, v = torch.randn(3, B, H, T, Dh).unbind(0)
    bits = data.draw(st.lists(st.booleans(), min_size=B * T, max_size=B * T))
    mask = torch.tensor(bits).view(B, T)
    bias = ALiBiPositional(H).attention_bias if biased else None
    out, w = build("local", window=window)(q, k, v, causal=causal, key_padding_mask=mask,
                                           bias=bias, need_weights=True)
    ref, ref_w = banded_reference(q, k, v, window, causal=causal, key_padding_mask=mask,
                                  bias=bias)
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(w, ref_w, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(Tk=st.integers(1, 300), window=st.integers(1, 150), causal=st.booleans(),
       past=st.integers(0, 3), data=st.data())
def test_fused_path_equals_the_dense_reference_in_value_and_gradient(Tk, window, causal, past,
                                                                     data):
    # The default path (no weights, no bias) runs blocks of up to 128 queries through SDPA.
    Tq = max(1, Tk - past)  # queries are the last Tq positions, as after a KV cache
    q, k, v, mask = random_qkv_with_padding(data, 2, 2, Tq, Tk, 4)
    out, w = build("local", window=window)(q, k, v, causal=causal, key_padding_mask=mask)
    ref, _ = banded_reference(q, k, v, window, causal=causal, key_padding_mask=mask)
    assert w is None
    assert_same_values_and_gradients(out, ref, (q, k, v), atol=1e-10)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [17, 40])
def test_window_covering_the_sequence_equals_full(causal, window):
    q, k, v = torch.randn(3, 2, 3, 17, 8).unbind(0)
    mask = torch.ones(2, 17, dtype=torch.bool)
    mask[1, 12:] = False
    out, _ = build("local", window=window)(q, k, v, causal=causal, key_padding_mask=mask)
    ref, _ = build("full")(q, k, v, causal=causal, key_padding_mask=mask)
    assert torch.allclose(out, ref, atol=1e-5)


def test_sees_exactly_its_window():
    q, k, v = torch.randn(3, 1, 1, 12, 4).unbind(0)
    _, w = build("local", window=3)(q, k, v, causal=True, need_weights=True)
    seen = w[0, 0] > 0
    for i in range(12):
        assert seen[i].nonzero().flatten().tolist() == list(range(max(0, i - 2), i + 1))
    _, w = build("local", window=3)(q, k, v, causal=False, need_weights=True)
    seen = w[0, 0] > 0
    assert seen[5].nonzero().flatten().tolist() == [3, 4, 5, 6, 7]


@pytest.mark.parametrize("causal", [False, True])
def test_memory_is_linear_never_an_n_by_n_matrix(causal):
    T, w = 1024, 16
    q, k, v = (t.requires_grad_() for t in torch.randn(3, 1, 2, T, 16).unbind(0))
    with LargestTensor() as probe:
        out, _ = build("local", window=w)(q, k, v, causal=causal)
        out.sum().backward()
    # scores are (B, H, T/w, w, 3w - 2): about 3 w T per head, far below T * T
    assert probe.numel <= 2 * T * (3 * w) * 16
    assert probe.numel < T * T / 2
    with LargestTensor() as dense:
        build("full", impl="eager")(q, k, v, causal=causal)
    assert dense.numel >= 2 * T * T  # the probe does see a dense matrix when there is one


def test_attended_keys_counts_the_band():
    attn = build("local", window=8)
    assert attn.attended_keys(100, 100, causal=True) == 8 + 7
    assert attn.attended_keys(100, 100, causal=False) == 8 + 14
    assert attn.attended_keys(4, 4, causal=True) == 4 + 3


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window, T", [(5, 40), (40, 64)])
def test_rows_laid_end_to_end_equal_the_padded_layout(causal, window, T):
    """T a multiple of the query block takes the fast layout: the B * H rows end to end, a
    window past its row's ends reading the neighbouring row's keys, masked. It must equal the
    dense twin, an all-true mask (the masked path) and the padded layout (taken when Tq < Tk),
    in float64, values and gradients."""
    B, H, Dh = 2, 3, 4
    # As MultiHeadAttention passes them: (B, H, T, Dh) views of (B, T, H, Dh) memory.
    q, k, v = (t.requires_grad_() for t in torch.randn(3, B, T, H, Dh, dtype=torch.float64))
    q_, k_, v_ = (t.transpose(1, 2) for t in (q, k, v))
    attn = build("local", window=window)
    out, w = attn(q_, k_, v_, causal=causal, need_weights=True)
    ref, ref_w = banded_reference(q_, k_, v_, window, causal=causal)
    assert torch.allclose(out, ref, atol=1e-12) and torch.allclose(w, ref_w, atol=1e-12)
    masked, _ = attn(q_, k_, v_, causal=causal, key_padding_mask=torch.ones(B, T, dtype=bool))
    assert torch.allclose(masked, out, atol=1e-14)
    tail, _ = attn(q_[:, :, 1:], k_, v_, causal=causal)  # queries: the last T - 1 positions
    assert torch.allclose(tail, out[:, :, 1:], atol=1e-12)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), g)
    ref_grads = torch.autograd.grad(ref, (q, k, v), g)
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(grads, ref_grads, strict=True))
