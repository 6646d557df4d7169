"""Reversible layers pass every keyword of the attention call through, explicit per-row
positions included."""

import torch
from torch import nn

from attnlab.attention.multihead import MultiHeadAttention
from attnlab.layers import RotaryPositional
from attnlab.layers.reversible import AttentionSublayer


def test_attention_sublayer_uses_explicit_per_row_positions():
    mha = MultiHeadAttention(16, 2).to(torch.float64)
    norm = nn.LayerNorm(16).to(torch.float64)
    sub = AttentionSublayer(mha, norm)
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    rope = RotaryPositional(8)
    keep = torch.ones(2, 6, dtype=torch.bool)
    keep[0, :2] = False
    # Explicit positions that are not a shift of 0..T-1 (RoPE ignores a common shift): two
    # packed sequences in row 0, a stride of 2 in row 1.
    positions = torch.tensor([[0, 1, 2, 0, 1, 2], [0, 2, 4, 6, 8, 10]])
    kw = dict(causal=True, key_padding_mask=keep, positional=rope)
    want, _ = mha(norm(x), positions=positions, **kw)
    torch.testing.assert_close(sub(x, positions=positions, **kw), want)
    # and the positions matter here (else the check above would prove nothing)
    assert not torch.allclose(sub(x, **kw), want)


def test_chunked_checkpointed_ffn_replays_its_dropout_masks_in_backward():
    # Recomputing a chunk must redraw the forward's dropout mask: the gradients of the
    # checkpointed FFN equal those of the same chunks kept for backward, under one seed.
    from attnlab.layers import FeedForward
    from attnlab.layers.reversible import ChunkedFeedForward

    ffn = FeedForward(8, 32, "gelu", dropout=0.5).to(torch.float64).train()
    x = torch.randn(2, 10, 8, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(2, 10, 8, dtype=torch.float64)
    results = []
    for recompute in (True, False):
        chunked = ChunkedFeedForward(ffn, 3, checkpoint=recompute)
        torch.manual_seed(5)
        out = chunked(x)
        grads = torch.autograd.grad((out * probe).sum(), (x, *ffn.parameters()))
        results.append((out, grads))
    (out_ckpt, g_ckpt), (out_kept, g_kept) = results
    torch.testing.assert_close(out_ckpt, out_kept)
    for a, b in zip(g_ckpt, g_kept, strict=True):
        torch.testing.assert_close(a, b)
