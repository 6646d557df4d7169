"""Properties every registered mechanism must have, parametrized over the registry."""

import pytest
import torch

from attnlab.attention import available, build, get
from attnlab.errors import CapabilityError
from attnlab.layers import ALiBiPositional
from tests.conftest import TINY_OPTIONS

MECHANISMS = sorted(available())


def make(name, **extra):
    return build(name, **{**TINY_OPTIONS[name], **extra})


def qkv(B=2, H=2, T=10, Dh=8, dtype=torch.float32, Tq=None, grad=False):
    Tq = T if Tq is None else Tq
    q = torch.randn(B, H, Tq, Dh, dtype=dtype, requires_grad=grad)
    k = torch.randn(B, H, T, Dh, dtype=dtype, requires_grad=grad)
    v = torch.randn(B, H, T, Dh, dtype=dtype, requires_grad=grad)
    return q, k, v


def causal_flags(name):
    return [False, True] if available()[name].causal else [False]


@pytest.mark.parametrize("name", MECHANISMS)
def test_forward_backward_tiny(name):
    attn = make(name)
    for causal in causal_flags(name):
        q, k, v = qkv(grad=True)
        out, weights = attn(q, k, v, causal=causal)
        assert out.shape == q.shape and weights is None
        out.square().sum().backward()
        for t in (q, k, v):
            assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


@pytest.mark.parametrize("name", [n for n in MECHANISMS if not get(n).straight_through])
def test_gradcheck_float64(name):
    """True gradients everywhere; straight-through mechanisms test their surrogate instead."""
    attn = make(name)
    for causal in causal_flags(name):
        q, k, v = qkv(B=1, H=2, T=7, Dh=4, dtype=torch.float64, grad=True)
        mask = torch.tensor([[True] * 6 + [False]])
        assert torch.autograd.gradcheck(
            lambda q, k, v, c=causal, m=mask: attn(q, k, v, causal=c, key_padding_mask=m)[0],
            (q, k, v), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", [n for n in MECHANISMS if available()[n].causal])
def test_causality_future_never_moves_the_past(name):
    attn = make(name)
    T = 10
    q, k, v = qkv(T=T)
    out, _ = attn(q, k, v, causal=True)
    for t in range(T - 1):
        q2, k2, v2 = q.clone(), k.clone(), v.clone()
        for x in (q2, k2, v2):
            x[:, :, t + 1:] = torch.randn_like(x[:, :, t + 1:]) * 3
        out2, _ = attn(q2, k2, v2, causal=True)
        assert torch.allclose(out[:, :, : t + 1], out2[:, :, : t + 1], atol=1e-6), t
        assert not torch.allclose(out[:, :, t + 1:], out2[:, :, t + 1:], atol=1e-3)


@pytest.mark.parametrize("name", [n for n in MECHANISMS if available()[n].padding_mask])
def test_padding_invariance(name):
    attn = make(name)
    B, T = 2, 10
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, 7:] = False  # right padding
    mask[1, :3] = False  # left padding
    for causal in causal_flags(name):
        q, k, v = qkv(B=B, T=T)
        out, _ = attn(q, k, v, causal=causal, key_padding_mask=mask)
        k2, v2 = k.clone(), v.clone()
        pad = ~mask[:, None, :, None].expand_as(k)
        k2[pad] = torch.randn(int(pad.sum())) * 5
        v2[pad] = torch.randn(int(pad.sum())) * 5
        out2, _ = attn(q, k2, v2, causal=causal, key_padding_mask=mask)
        # Every query that has at least one real key in view is unaffected by the padded keys.
        assert torch.allclose(out, out2, atol=1e-6)
        assert not torch.equal(k, k2)


@pytest.mark.parametrize("name", [n for n in MECHANISMS if available()[n].padding_mask])
def test_fully_masked_rows_are_zero_not_nan(name):
    attn = make(name)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1] = False
    for causal in causal_flags(name):
        q, k, v = qkv(grad=True)
        out, _ = attn(q, k, v, causal=causal, key_padding_mask=mask)
        assert torch.isfinite(out).all()
        assert torch.equal(out[1], torch.zeros_like(out[1]))
        out.sum().backward()
        assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
        if available()[name].weights:
            _, w = attn(q, k, v, causal=causal, key_padding_mask=mask, need_weights=True)
            assert torch.equal(w[1], torch.zeros_like(w[1]))


@pytest.mark.parametrize("name", [n for n in MECHANISMS if available()[n].permutation_equivariant])
def test_permutation_equivariance(name):
    attn = make(name)
    q, k, v = qkv(B=1, T=9)
    perm = torch.randperm(9)
    out, _ = attn(q, k, v)
    out_p, _ = attn(q[:, :, perm], k[:, :, perm], v[:, :, perm])
    assert torch.allclose(out[:, :, perm], out_p, atol=1e-6)


@pytest.mark.parametrize(
    "name", [n for n in MECHANISMS if not available()[n].permutation_equivariant])
def test_declared_not_equivariant_really_is_positional(name):
    attn = make(name)
    q, k, v = qkv(B=1, T=9)
    perm = torch.randperm(9)
    out, _ = attn(q, k, v)
    out_p, _ = attn(q[:, :, perm], k[:, :, perm], v[:, :, perm])
    assert not torch.allclose(out[:, :, perm], out_p, atol=1e-4)


@pytest.mark.parametrize("name", [n for n in MECHANISMS if available()[n].weights])
def test_weights_are_what_the_output_is_made_of(name):
    attn = make(name)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[0, 8:] = False
    for causal in causal_flags(name):
        q, k, v = qkv()
        out, w = attn(q, k, v, causal=causal, key_padding_mask=mask, need_weights=True)
        assert w.shape == (2, 2, 10, 10)
        assert torch.allclose(w.sum(-1), torch.ones(2, 2, 10), atol=1e-5)
        assert torch.equal(w[0, :, :, 8:], torch.zeros_like(w[0, :, :, 8:]))
        if causal:
            assert torch.equal(w.triu(1), torch.zeros_like(w))
        assert torch.allclose(out, w @ v, atol=1e-5)
        plain, _ = attn(q, k, v, causal=causal, key_padding_mask=mask)
        assert torch.allclose(out, plain, atol=1e-5)


@pytest.mark.parametrize("name", [n for n in MECHANISMS if available()[n].kv_cache])
def test_bottom_right_alignment_matches_full_sequence(name):
    """Queries that are the last Tq positions see what they would see in the full sequence."""
    attn = make(name)
    q, k, v = qkv(T=10)
    bias = ALiBiPositional(2).attention_bias if available()[name].bias else None
    out, _ = attn(q, k, v, causal=True, bias=bias)
    for tq in (1, 3):
        tail, _ = attn(q[:, :, -tq:], k, v, causal=True, bias=bias)
        assert torch.allclose(tail, out[:, :, -tq:], atol=1e-6)


@pytest.mark.parametrize("name", MECHANISMS)
def test_requests_outside_capabilities_are_errors(name):
    attn = make(name)
    caps = available()[name]
    q, k, v = qkv()
    requests = {
        "causal": dict(causal=True),
        "padding_mask": dict(key_padding_mask=torch.ones(2, 10, dtype=torch.bool)),
        "bias": dict(bias=ALiBiPositional(2).attention_bias),
        "weights": dict(need_weights=True),
    }
    for cap, kwargs in requests.items():
        if getattr(caps, cap):
            attn(q, k, v, **kwargs)
        else:
            with pytest.raises(CapabilityError, match=f"'{name}' cannot do"):
                attn(q, k, v, **kwargs)


def left_padded(name, causal, pad=3, T=7, **options):
    """The mechanism's output on one sequence alone, and on it after `pad` masked keys."""
    attn = make(name, **options)
    q, k, v = qkv(B=1, T=pad + T)
    mask = torch.ones(1, pad + T, dtype=torch.bool)
    mask[:, :pad] = False
    padded, _ = attn(q, k, v, causal=causal, key_padding_mask=mask)
    alone, _ = attn(q[:, :, pad:], k[:, :, pad:], v[:, :, pad:], causal=causal)
    return alone, padded[:, :, pad:]


@pytest.mark.parametrize("name", [n for n in MECHANISMS if available()[n].shift_invariant])
def test_left_padding_is_invisible_when_declared(name):
    assert available()[name].padding_mask
    for causal in causal_flags(name):
        alone, padded = left_padded(name, causal)
        assert torch.allclose(alone, padded, atol=1e-5), causal


@pytest.mark.parametrize(
    "name", [n for n in MECHANISMS if available()[n].padding_mask
             and not available()[n].shift_invariant])
def test_declared_shift_variant_really_moves_with_padding(name):
    # luong-local's local-m is shift invariant; its local-p (counts real keys, places the window
    # by index) is why the class cannot declare it.
    options = {"mode": "p", "head_dim": 8} if name == "luong-local" else {}
    alone, padded = left_padded(name, causal=available()[name].causal, **options)
    assert not torch.allclose(alone, padded, atol=1e-4)


@pytest.mark.parametrize("name", [n for n in MECHANISMS if available()[n].padding_mask])
@pytest.mark.parametrize("dtype", [torch.float32, torch.long, torch.uint8])
def test_a_non_bool_padding_mask_is_refused_not_read_as_a_bias(name, dtype):
    """SDPA reads a float mask as scores to add: 0/1 would then mask nothing."""
    q, k, v = qkv()
    mask = torch.ones(2, 10, dtype=dtype)
    mask[0, 7:] = 0
    with pytest.raises(ValueError, match=f"key_padding_mask must be bool .*got {dtype}"):
        make(name)(q, k, v, key_padding_mask=mask)


@pytest.mark.parametrize("name", [n for n in MECHANISMS if available()[n].padding_mask])
def test_right_padding_is_invisible(name):
    """A row alone and the same row padded at the end of a longer batch: its real tokens get
    the same outputs (BigBird draws its random blocks for the row's own length)."""
    options = {"bigbird": {"num_random_blocks": 3, "block_size": 2},
               "linformer": {"seq_len": 40, "k": 6}}.get(name, {})
    attn = make(name, **options)
    T, pad = 24, 10  # 12 blocks of 2: room for random blocks outside window and globals
    for causal in causal_flags(name):
        q, k, v = qkv(B=1, T=T + pad)
        mask = torch.ones(1, T + pad, dtype=torch.bool)
        mask[:, T:] = False
        padded, _ = attn(q, k, v, causal=causal, key_padding_mask=mask)
        alone, _ = attn(q[:, :, :T], k[:, :, :T], v[:, :, :T], causal=causal)
        assert torch.allclose(padded[:, :, :T], alone, atol=1e-5), causal
