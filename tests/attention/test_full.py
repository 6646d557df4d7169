import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.attention import build
from attnlab.attention.full import eager_attention
from attnlab.layers import ALiBiPositional


def reference(q, k, v, *, causal=False, key_padding_mask=None, bias=None):
    """Plain loops over queries in float64: what softmax attention means."""
    B, H, Tq, Dh = q.shape
    Tk = k.shape[2]
    out = torch.zeros(B, H, Tq, Dh, dtype=torch.float64)
    off = Tk - Tq
    for b, h, i in itertools.product(range(B), range(H), range(Tq)):
        allowed = [j for j in range(Tk)
                   if (not causal or j <= i + off)
                   and (key_padding_mask is None or key_padding_mask[b, j])]
        if not allowed:
            continue
        s = torch.stack([q[b, h, i].double() @ k[b, h, j].double() / Dh**0.5 for j in allowed])
        if bias is not None:
            s = s + torch.stack([bias[h, i, j].double() for j in allowed])
        w = s.softmax(0)
        out[b, h, i] = (w[:, None] * v[b, h, allowed].double()).sum(0)
    return out


MASKS = list(itertools.product([False, True], [False, True], [False, True]))


@pytest.mark.parametrize("causal, padded, biased", MASKS)
@pytest.mark.parametrize("tq", [9, 4])
def test_sdpa_and_eager_equal_reference_for_every_mask_combination(causal, padded, biased, tq):
    B, H, Tk, Dh = 2, 3, 9, 8
    q, k, v = torch.randn(B, H, tq, Dh), torch.randn(B, H, Tk, Dh), torch.randn(B, H, Tk, Dh)
    mask = None
    if padded:
        mask = torch.ones(B, Tk, dtype=torch.bool)
        mask[0, 6:] = False
        mask[1, :2] = False
    alibi = ALiBiPositional(H).attention_bias if biased else None
    dense_bias = None
    if biased:
        dense_bias = alibi(torch.arange(Tk - tq, Tk), torch.arange(Tk))
    ref = reference(q, k, v, causal=causal, key_padding_mask=mask, bias=dense_bias).float()
    kwargs = dict(causal=causal, key_padding_mask=mask, bias=alibi)
    sdpa, none = build("full")(q, k, v, **kwargs)
    eager, _ = build("full", impl="eager")(q, k, v, **kwargs)
    weighed, w = build("full")(q, k, v, need_weights=True, **kwargs)
    assert none is None and w.shape == (B, H, tq, Tk)
    for out in (sdpa, eager, weighed):
        assert torch.allclose(out, ref, atol=1e-5), (out - ref).abs().max()


@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(1, 3), H=st.integers(1, 4), Tq=st.integers(1, 12), extra=st.integers(0, 6),
    Dh=st.sampled_from([1, 4, 16]), causal=st.booleans(), data=st.data(),
)
def test_sdpa_equals_eager_on_random_shapes_and_masks(B, H, Tq, extra, Dh, causal, data):
    Tk = Tq + extra
    q, k, v = torch.randn(B, H, Tq, Dh), torch.randn(B, H, Tk, Dh), torch.randn(B, H, Tk, Dh)
    bits = data.draw(st.lists(st.booleans(), min_size=B * Tk, max_size=B * Tk))
    mask = torch.tensor(bits).view(B, Tk)
    a, _ = build("full")(q, k, v, causal=causal, key_padding_mask=mask)
    b, _ = build("full", impl="eager")(q, k, v, causal=causal, key_padding_mask=mask)
    assert torch.isfinite(a).all()
    assert torch.allclose(a, b, atol=1e-5)


def test_dropout_only_while_training_and_only_on_weights():
    attn = build("full", dropout=0.5)
    q, k, v = torch.randn(3, 1, 2, 6, 8).unbind(0)
    attn.eval()
    a, _ = attn(q, k, v)
    b, _ = build("full")(q, k, v)
    assert torch.allclose(a, b, atol=1e-6)
    attn.train()
    c, _ = attn(q, k, v)
    assert not torch.allclose(a, c, atol=1e-3)


def test_eager_helper_returns_normalized_weights():
    q, k, v = torch.randn(3, 1, 2, 5, 4).unbind(0)
    out, w = eager_attention(q, k, v, scale=0.5, keep=None)
    assert torch.allclose(w.sum(-1), torch.ones(1, 2, 5))
    assert torch.allclose(out, w @ v)
    assert torch.allclose(w, ((q @ k.transpose(-1, -2)) * 0.5).softmax(-1))
