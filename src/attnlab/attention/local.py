"""`local`: sliding-window attention — each query attends only to keys within `window` positions.

Causal: the `window` keys ending at the query (Mistral, Longformer's causal band). Bidirectional:
keys less than `window` away on either side (`2 * window - 1` keys). Equal to `full` when the
window covers the sequence.

Computed block by block, never by masking an n x n matrix: queries are cut into blocks of b
positions; block j reads the keys from `window - 1` before its first query to `window - 1`
after its last as a strided view (`unfold`), so the work is O(n * w) instead of O(n^2). Two
paths over the same blocks, held equal by the tests:
- fused (`impl="sdpa"`, the default): each block goes through `scaled_dot_product_attention`
  with its band mask, blocks folded into the batch (b = 128 for windows >= 128), so the
  (b, span) scores never reach autograd; at n = 1024, window 256 it trains 3x faster than
  the reference;
- reference (`impl="eager"`): explicit scores (B, H, n/b, b, b + 2(w - 1)) and a masked
  softmax (b = 32), also taken whenever the attention weights or an additive bias are asked
  for.
With a KV cache, only the last `window - 1` keys are retained between decoding steps.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from attnlab.attention.base import Attention, Capabilities
from attnlab.attention.masks import keep_mask, masked_softmax
from attnlab.attention.registry import register
from attnlab.errors import ConfigError, unknown

QUERY_BLOCK = 32  # queries per block of the reference path (fewer if the window is smaller)
# Queries per block of the fused path: larger blocks mean fewer, larger kernel calls against
# more masked keys per block; 128 measured fastest at windows 64 and 256 (n = 1024, one thread).
FUSED_QUERY_BLOCK = 128


class Band(NamedTuple):
    """The blocked sliding-window layout of `local` (query blocks of b positions).

    qb (B, H, nb, b, Dh) query blocks; kw, vw (B, H, nb, Dh, span) each block's keys/values as
    a strided view; q_idx (nb, b) and k_idx (nb, span) their positions; real (B, nb, span) True
    for a real key (False for padding and for positions outside [0, Tk)); left: the padding
    before key 0, so key position p is column p + left of a padded row of length `width`.
    """

    qb: Tensor
    kw: Tensor
    vw: Tensor
    q_idx: Tensor
    k_idx: Tensor
    real: Tensor
    left: int
    width: int


def window_band(q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None, *,
                causal: bool, window: int, block: int | None = None) -> Band:
    """Cut queries into blocks and view each block's key band (as `local` does).

    The queries are the last Tq of Tk positions; `window` must be <= Tk. Block j reads the keys
    from `window - 1` before its first query to `window - 1` after its last (bidirectional) or
    to its last query (causal): O(n * window) memory as views plus one padded copy of k and v.
    `block` is the queries per block (default: the reference path's, min(window, 32)).
    """
    B, H, Tq, Dh = q.shape
    Tk = k.shape[2]
    off = Tk - Tq  # queries are the last Tq key positions
    # Query blocks of b positions read span = b + 2 (window - 1) keys (causal: b + window - 1),
    # of which a query needs 2 window - 1 (window): the b - 1 others are masked work. Small
    # blocks waste less but make more, smaller matmuls; 32 measured fastest (window 256) for
    # explicit scores.
    b = min(window, QUERY_BLOCK) if block is None else block
    left, right = window - 1, (0 if causal else window - 1)
    span = b + left + right  # keys read per query block
    nb = -(-Tq // b)
    pad_q = nb * b - Tq
    pad_r = pad_q + right  # so that the last window ends inside the padded keys

    if off == 0 and pad_q == 0:
        # The blocks tile every row exactly (self-attention, Tk a multiple of the block): lay
        # the B * H rows end to end, so that every block's window, in every row, is one strided
        # view that matmul takes as it is instead of copying out (B, H, nb, Dh, span). A window
        # that runs past its row's ends reads the neighbouring row's keys: positions outside
        # [0, Tk), which `real` masks exactly as it masks zero padding.
        qb = q.reshape(B, H, nb, b, Dh)

        def windows(x):  # (B, H, Tk, Dh) -> (B, H, nb, Dh, span), a view of one padded copy
            flat = F.pad(x.reshape(B * H * Tk, Dh), (0, 0, left, right))
            return flat.unfold(0, span, b).view(B, H, nb, Dh, span)

        kw, vw = windows(k), windows(v)
    else:
        qb = F.pad(q, (0, 0, 0, pad_q)).view(B, H, nb, b, Dh)  # (B, H, nb, b, Dh)
        # Key position p sits at index p + left of the padded keys; block j's window starts at
        # index off + j * b. unfold gives (B, H, nb, Dh, span) as a view of the padded keys.
        kw = F.pad(k, (0, 0, left, pad_r))[:, :, off:].unfold(2, span, b)
        vw = F.pad(v, (0, 0, left, pad_r))[:, :, off:].unfold(2, span, b)

    starts = off + b * torch.arange(nb, device=q.device)  # first query position per block
    q_idx = starts[:, None] + torch.arange(b, device=q.device)  # (nb, b)
    k_idx = starts[:, None] - left + torch.arange(span, device=q.device)  # (nb, span)
    real = (k.new_ones(B, Tk, dtype=torch.bool) if key_padding_mask is None
            else key_padding_mask)
    real = F.pad(real, (left, pad_r), value=False)[:, off:].unfold(1, span, b)  # (B, nb, span)
    return Band(qb, kw, vw, q_idx, k_idx, real, left, left + Tk + pad_r)


def fused_block(window: int) -> int:
    """Queries per block of the fused path: at least 32 (fewer kernel calls), at most 128."""
    return max(32, min(window, FUSED_QUERY_BLOCK))


def blocked_sdpa(qb: Tensor, kw: Tensor, vw: Tensor, keep: Tensor, *, scale: float,
                 dropout: float) -> Tensor:
    """Softmax attention of each query block over its own keys, by the fused SDPA kernel.

    Args:
        qb: (B, H, nb, b, Dh) query blocks.
        kw, vw: (B, H, nb, Dh, S) each block's keys and values (views are copied once here).
        keep: (B or 1, 1, nb, b, S) True where a query sees a key.
        scale: softmax temperature.
        dropout: dropout probability on the weights (0 outside training).
    Returns:
        (B, H, nb, b, Dh); a query that keeps no key gets zeros (on every backend).
    """
    B, H, nb, b, Dh = qb.shape
    S = kw.shape[-1]
    # Blocks join the batch and heads stay second, so one mask per block broadcasts over heads.
    q = qb.transpose(1, 2).reshape(B * nb, H, b, Dh)
    k = kw.permute(0, 2, 1, 4, 3).reshape(B * nb, H, S, Dh)
    v = vw.permute(0, 2, 1, 4, 3).reshape(B * nb, H, S, Dh)
    mask = keep.expand(B, 1, nb, b, S).transpose(1, 2).reshape(B * nb, 1, b, S)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale)
    out = out * mask.any(-1, keepdim=True)  # (B * nb, H, b, Dh)
    return out.view(B, nb, H, b, Dh).transpose(1, 2)


@register("local")
class LocalAttention(Attention):
    """Sliding-window softmax attention in O(n * window) time and memory.

    Args:
        window: keys within this distance are seen (causal: the `window` most recent keys,
            the query's own included).
        impl: "sdpa" (blocks through the fused kernel) or "eager" (the reference twin, explicit
            scores; also taken whenever weights or a bias are asked for).
        scale: softmax temperature; default 1 / sqrt(head_dim).
        dropout: dropout on the attention weights while training.
    """

    capabilities = Capabilities(causal=True, padding_mask=True, cross=False, kv_cache=True,
                                bias=True, weights=True, exact=False,
                                permutation_equivariant=False, shift_invariant=True)

    def __init__(self, *, window: int = 128, impl: str = "sdpa", scale: float | None = None,
                 dropout: float = 0.0):
        super().__init__(scale=scale, dropout=dropout)
        if impl not in ("sdpa", "eager"):
            raise unknown("attention 'local' impl", impl, ("sdpa", "eager"))
        self.impl = impl
        if not isinstance(window, int) or window < 1:
            raise ConfigError(f"attention 'local': window must be an integer >= 1, got {window!r}")
        self.window = window
        self.cache_keep = window - 1

    def extra_repr(self) -> str:
        return f"window={self.window}, impl={self.impl}"

    def attended_keys(self, n_queries: int, n_keys: int, causal: bool) -> float:
        w = min(self.window, n_keys)
        return float(w + (w - 1) * (1 if causal else 2))

    def attend(self, q, k, v, *, causal, key_padding_mask, bias, need_weights):
        B, H, Tq, Dh = q.shape
        Tk = k.shape[2]
        if Tq > Tk:
            raise ValueError(f"local attention needs Tq <= Tk, got {Tq} > {Tk}")
        w = min(self.window, Tk)  # a window past the sequence is the whole sequence
        if self.impl == "sdpa" and bias is None and not need_weights:
            band = window_band(q, k, v, key_padding_mask, causal=causal, window=w,
                               block=fused_block(w))
            # The band is the same relative to each block's first query: build it for block 0
            # and broadcast it against the real keys (B, nb, span).
            keep = keep_mask(band.q_idx[:1], band.k_idx[:1], causal=causal, window=w,
                             key_padding_mask=band.real)
            out = blocked_sdpa(band.qb, band.kw, band.vw, keep, scale=self.softmax_scale(Dh),
                               dropout=self.dropout if self.training else 0.0)
            return out.reshape(B, H, -1, Dh)[:, :, :Tq], None
        # Scaling q costs Dh per query, scaling the scores `span` (over 2 window).
        qb, kw, vw, q_idx, k_idx, real, left, width = window_band(
            q * self.softmax_scale(Dh), k, v, key_padding_mask, causal=causal, window=w)
        nb, b, span = qb.shape[2], qb.shape[3], kw.shape[-1]
        # The band depends on the offset of key to query only, the same in every block: build
        # it for block 0, (b, span), and broadcast it against the real keys (B, nb, span).
        keep = keep_mask(q_idx[:1], k_idx[:1], causal=causal, window=w, key_padding_mask=real)

        scores = qb @ kw  # (B, H, nb, b, span)
        if bias is not None:
            scores = scores + bias(q_idx, k_idx)
        # Without padding every query keeps at least its own key (pad rows of the last block,
        # past Tq, keep key Tk - 1), so no row needs zeroing.
        weights = masked_softmax(scores, keep, in_place=True,
                                 rows_keep_some=key_padding_mask is None)
        dropped = F.dropout(weights, self.dropout, self.training) if self.dropout else weights
        out = (dropped @ vw.transpose(-1, -2)).reshape(B, H, nb * b, Dh)[:, :, :Tq]

        dense = None
        if need_weights:  # an explicit request: scatter the bands into (B, H, Tq, Tk)
            index = (k_idx + left)[:, None, :].expand(B, H, nb, b, span)
            dense = weights.new_zeros(B, H, nb, b, width)
            dense = dense.scatter_add(-1, index, weights)[..., left:left + Tk]
            dense = dense.reshape(B, H, nb * b, Tk)[:, :, :Tq]
        return out, dense
