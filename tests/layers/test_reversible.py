"""Reversible residual layers and chunked feed-forward against the plain computation."""

import pytest
import torch
from tests.helpers import LargestTensor
from torch import nn

from attnlab.attention.multihead import MultiHeadAttention
from attnlab.errors import ConfigError
from attnlab.layers import Block, FeedForward, RotaryPositional
from attnlab.layers.reversible import (
    AttentionSublayer,
    ChunkedFeedForward,
    FeedForwardSublayer,
    ReversibleSequence,
)

D, HEADS, D_FF = 16, 2, 48


def make_seq(depth, *, attention="full", options=None, dropout=0.0, ffn_chunk=None,
             merge="mean", dtype=torch.float64):
    fs, gs = [], []
    for _ in range(depth):
        mha = MultiHeadAttention(D, HEADS, attention=attention, attention_options=options)
        fs.append(AttentionSublayer(mha, nn.LayerNorm(D), dropout))
        ffn = FeedForward(D, D_FF, "gelu", dropout=dropout)
        gs.append(FeedForwardSublayer(ffn if ffn_chunk is None else
                                      ChunkedFeedForward(ffn, ffn_chunk), nn.LayerNorm(D),
                                      dropout))
    return ReversibleSequence(fs, gs, merge=merge).to(dtype)


def plain_forward(seq, x, **kw):
    """y1 = x1 + F(x2), y2 = x2 + G(y1) with ordinary autograd, written out here."""
    x1 = x2 = x
    for f, g in zip(seq.blocks_f, seq.blocks_g, strict=True):
        x1 = x1 + f(x2, **kw)
        x2 = x2 + g(x1)
    return (x1 + x2) / 2 if seq.merge == "mean" else torch.cat([x1, x2], -1)


def grads(seq, x, out, probe):
    seq.zero_grad()
    x.grad = None
    (out * probe).sum().backward()
    return [x.grad] + [p.grad for p in seq.parameters()]


@pytest.mark.parametrize("attention, options", [
    ("full", None), ("lsh", {"n_buckets": 4, "n_hashes": 2, "chunk_size": 3})])
@pytest.mark.parametrize("merge", ["mean", "concat"])
def test_reversible_equals_plain_values_and_every_gradient(attention, options, merge):
    seq = make_seq(3, attention=attention, options=options, merge=merge)
    x = torch.randn(2, 11, D, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(2, 11, dtype=torch.bool)
    mask[1, 8:] = False
    kw = dict(causal=True, key_padding_mask=mask, positional=RotaryPositional(D // HEADS))
    out = seq(x, **kw)
    ref = plain_forward(seq, x, **kw)
    assert out.shape == (2, 11, D if merge == "mean" else 2 * D)
    assert torch.allclose(out, ref, atol=1e-12)
    probe = torch.randn_like(out)
    got, want = grads(seq, x, out, probe), grads(seq, x, ref, probe)
    assert sum(g is not None for g in want) > 20
    for g, w in zip(got, want, strict=True):
        assert (g is None) == (w is None)  # a parameter unused by one is unused by both
        if w is not None:
            assert torch.allclose(g, w, atol=1e-6, rtol=0) and torch.allclose(g, w, atol=1e-10)


class ScaledRotation(nn.Module):
    """A positional hook with a trainable parameter: it reaches F only through the keywords."""

    attention_bias = None

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.3, dtype=torch.float64))

    def rotate(self, x, start, positions):
        return x * self.scale


def test_shared_layers_and_keyword_modules_get_their_gradients():
    """One F and one G reused in every layer (ALBERT-style), and a trainable module passed to F
    through its keywords: each parameter gets the sum of its uses, as in the plain stack."""
    one = make_seq(1)
    seq = ReversibleSequence([one.blocks_f[0]] * 3, [one.blocks_g[0]] * 3)
    pos = ScaledRotation()
    x = torch.randn(2, 6, D, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(2, 6, D, dtype=torch.float64)
    out = seq(x, positional=pos)
    got = [*grads(seq, x, out, probe), pos.scale.grad.clone()]
    pos.scale.grad = None
    want = [*grads(seq, x, plain_forward(seq, x, positional=pos), probe), pos.scale.grad]
    for g, w in zip(got, want, strict=True):
        assert torch.allclose(g, w, atol=1e-10)
    assert want[-1].abs() > 0


def test_dropout_is_replayed_in_the_recomputation():
    seq = make_seq(3, dropout=0.3).train()
    x = torch.randn(2, 9, D, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(2, 9, D, dtype=torch.float64)
    torch.manual_seed(7)
    out = seq(x, causal=True)
    got = grads(seq, x, out, probe)
    after_rev = torch.rand(3)  # backward's replays must not move the global RNG stream
    torch.manual_seed(7)
    ref = plain_forward(seq, x, causal=True)
    want = grads(seq, x, ref, probe)
    assert torch.equal(torch.rand(3), after_rev)
    assert torch.allclose(out, ref, atol=1e-12)
    for g, w in zip(got, want, strict=True):
        assert torch.allclose(g, w, atol=1e-10)
    torch.manual_seed(8)  # and the masks do matter: another draw gives other gradients
    other = grads(seq, x, plain_forward(seq, x, causal=True), probe)
    assert not torch.allclose(other[0], want[0], atol=1e-3)


def saved_bytes(fn):
    """Bytes of the distinct storages autograd keeps for backward, parameters excluded."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return storages


def activation_bytes(seq, fn):
    params = {p.untyped_storage().data_ptr() for p in seq.parameters()}
    return sum(n for ptr, n in saved_bytes(fn).items() if ptr not in params)


def test_activation_memory_is_flat_in_depth_and_the_plain_stack_grows():
    x = torch.randn(2, 32, D, requires_grad=True)
    rev, plain = {}, {}
    for depth in (2, 8):
        seq = make_seq(depth, dtype=torch.float32).train()
        rev[depth] = activation_bytes(seq, lambda s=seq: s(x, causal=True))
        plain[depth] = activation_bytes(seq, lambda s=seq: plain_forward(s, x, causal=True))
    # the two output streams (B, T, d) float32, whatever the depth
    assert rev[2] == rev[8] == 2 * 2 * 32 * D * 4
    assert plain[8] > 3.5 * plain[2] and plain[2] > 5 * rev[2]


def test_from_blocks_shares_the_blocks_modules_and_refuses_post_norm():
    blocks = [Block(MultiHeadAttention(D, HEADS), FeedForward(D, D_FF),
                    lambda: nn.LayerNorm(D), dropout=0.0) for _ in range(2)]
    seq = ReversibleSequence.from_blocks(blocks, ffn_chunk_size=4)
    assert seq.blocks_f[1].self_attn is blocks[1].self_attn
    assert seq.blocks_g[0].ffn.ffn is blocks[0].ffn and seq.blocks_g[0].norm is blocks[0].ffn_norm
    assert {id(p) for p in seq.parameters()} == {id(p) for b in blocks for p in b.parameters()}
    x = torch.randn(2, 10, D, requires_grad=True)
    assert torch.allclose(seq(x), plain_forward(seq, x), atol=1e-6)
    post = Block(MultiHeadAttention(D, HEADS), FeedForward(D, D_FF), lambda: nn.LayerNorm(D),
                 norm_first=False)
    with pytest.raises(ConfigError, match="block 0 cannot be made reversible"):
        ReversibleSequence.from_blocks([post])


def test_without_gradients_it_runs_the_plain_loop():
    seq = make_seq(2).eval()
    x = torch.randn(1, 7, D, dtype=torch.float64)
    with torch.no_grad():
        out = seq(x)
    assert torch.allclose(out, plain_forward(seq, x), atol=1e-12) and out.grad_fn is None


@pytest.mark.parametrize("kwargs, message", [
    (dict(blocks_f=[], blocks_g=[]), "as many F as G blocks, at least one; got 0 and 0"),
    (dict(blocks_f=[nn.Identity()], blocks_g=[]), "got 1 and 0"),
    (dict(blocks_f=[nn.Identity()], blocks_g=[nn.Identity()], merge="sum"), "merge must be"),
])
def test_invalid_reversible_configs(kwargs, message):
    with pytest.raises(ConfigError, match=message) as info:
        ReversibleSequence(**kwargs)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# ChunkedFeedForward


@pytest.mark.parametrize("activation", ["gelu", "swiglu"])
@pytest.mark.parametrize("T, chunk", [(13, 4), (12, 4), (5, 16)])
def test_chunked_ffn_equals_the_ffn_values_and_gradients(activation, T, chunk):
    ffn = FeedForward(D, D_FF, activation).double()
    x = torch.randn(3, T, D, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(3, T, D, dtype=torch.float64)
    for checkpoint in (True, False):
        out = ChunkedFeedForward(ffn, chunk, checkpoint=checkpoint)(x)
        got = torch.autograd.grad((out * probe).sum(), (x, *ffn.parameters()))
        ref = ffn(x)
        want = torch.autograd.grad((ref * probe).sum(), (x, *ffn.parameters()))
        assert torch.allclose(out, ref, atol=1e-12)
        for g, w in zip(got, want, strict=True):
            assert torch.allclose(g, w, atol=1e-12)


def test_chunked_ffn_never_creates_a_full_hidden_activation():
    B, T, c = 2, 64, 8
    ffn = FeedForward(D, 4 * D_FF)
    x = torch.randn(B, T, D, requires_grad=True)
    with LargestTensor() as probe:
        ChunkedFeedForward(ffn, c)(x).sum().backward()
    assert probe.numel <= B * c * 4 * D_FF  # one chunk's (B, c, d_ff) hidden activation
    with LargestTensor() as whole:
        ffn(x).sum().backward()
    assert whole.numel >= B * T * 4 * D_FF  # the probe sees it when it is there


def test_checkpointed_chunks_keep_no_hidden_activation_for_backward():
    B, T, d_ff = 2, 64, 4 * D_FF
    ffn = FeedForward(D, d_ff)
    x = torch.randn(B, T, D, requires_grad=True)
    kept = activation_bytes(ffn, lambda: ChunkedFeedForward(ffn, 8)(x))
    assert kept <= B * T * D * 4  # the input's chunks only, not (B, T, d_ff)
    kept_all = activation_bytes(ffn, lambda: ChunkedFeedForward(ffn, 8, checkpoint=False)(x))
    assert kept_all >= B * T * d_ff * 4  # without checkpointing the chunks add up


def test_reversible_with_chunked_ffn_never_holds_a_full_hidden_activation():
    B, T, c = 2, 32, 4
    seq = make_seq(3, ffn_chunk=c, dtype=torch.float32)
    x = torch.randn(B, T, D, requires_grad=True)
    with LargestTensor() as probe:
        seq(x, causal=True).sum().backward()
    assert probe.numel < B * T * D_FF
    assert all(p.grad is not None for p in seq.parameters())


def test_chunked_ffn_rejects_a_bad_chunk_size():
    with pytest.raises(ConfigError, match="chunk_size must be an integer >= 1, got 0"):
        ChunkedFeedForward(FeedForward(D, D_FF), 0)
