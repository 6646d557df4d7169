"""`longformer`: sliding-window attention plus a few global tokens (Beltagy et al., 2020).

Every query attends to the keys of its window (the semantics of `local`: causal, the `window`
most recent keys, its own included; bidirectional, keys less than `window` away) and to the
first `global_tokens` keys, which are global; the global tokens' queries attend to every key.

Computed with `local`'s blocked layout, never by masking an n x n matrix: query blocks read
their band of keys as a strided view, the g global keys join every block's keys, and both go
through ONE softmax per query (a key that is in both sets is masked in the band, so none
counts twice). The g global query rows score all n keys: g x n, linear in n. As in `local`,
the default path runs each block through the fused SDPA kernel; the explicit-scores reference
is taken when the weights or an additive bias are asked for.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attnlab.attention.base import Attention, Capabilities
from attnlab.attention.local import blocked_sdpa, fused_block, window_band
from attnlab.attention.masks import keep_mask, masked_softmax
from attnlab.attention.registry import register
from attnlab.errors import ConfigError, unknown


@register("longformer")
class LongformerAttention(Attention):
    """Sliding window plus leading global tokens, in O(n * (window + global_tokens)).

    Departures from the paper, all deliberate:
    - The global tokens are the first `global_tokens` positions (the paper lets a task choose
      them, e.g. [CLS] or the question tokens); put the tokens that need to be global first.
    - Global and window attention share the query/key/value projections: the paper gives the
      global attention its own projections (Q_g, K_g, V_g); here they are one mechanism behind
      one `MultiHeadAttention`.
    - No dilation (the paper dilates the window of some heads in its character-level LM).
    - Causal: a query sees the global keys only in its past (the global tokens' queries then
      see their past only), the window is `local`'s causal band.
    - KV cache: decoding stays exact only if the cache keeps the global keys *and* the last
      `window - 1` keys; `KVCache(keep=...)` can only keep a suffix, so `cache_keep` is None
      and the cache keeps every key. Each step still scores only window + global_tokens keys.

    Args:
        window: keys within this distance are seen (causal: the `window` most recent keys,
            the query's own included), as in `local`.
        global_tokens: leading positions that are global (every query sees them; they see all).
        impl: "sdpa" (blocks through the fused kernel) or "eager" (the reference twin, explicit
            scores; also taken whenever weights or a bias are asked for).
        scale: softmax temperature; default 1 / sqrt(head_dim).
        dropout: dropout on the attention weights while training.
    """

    capabilities = Capabilities(causal=True, padding_mask=True, cross=False, kv_cache=True,
                                bias=True, weights=True, exact=False,
                                permutation_equivariant=False)
    #: The cache must keep the first g keys and the last window - 1; KVCache keeps suffixes only.
    cache_keep = None

    def __init__(self, *, window: int = 512, global_tokens: int = 1, impl: str = "sdpa",
                 scale: float | None = None, dropout: float = 0.0):
        super().__init__(scale=scale, dropout=dropout)
        if impl not in ("sdpa", "eager"):
            raise unknown("attention 'longformer' impl", impl, ("sdpa", "eager"))
        self.impl = impl
        for option, value, low in (("window", window, 1), ("global_tokens", global_tokens, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"attention 'longformer': {option} must be an integer >= "
                                  f"{low}, got {value!r}")
        self.window = window
        self.global_tokens = global_tokens

    def extra_repr(self) -> str:
        return f"window={self.window}, global_tokens={self.global_tokens}, impl={self.impl}"

    def attended_keys(self, n_queries: int, n_keys: int, causal: bool) -> float:
        w = min(self.window, n_keys)
        g = min(self.global_tokens, n_keys)
        band = w + (w - 1) * (1 if causal else 2) + g
        if causal:  # global queries need no extra rows: their past is all global
            return float(band)
        rows = min(g, n_queries)  # these rows score every key, the rest their band
        return (rows * n_keys + (n_queries - rows) * band) / n_queries

    def attend(self, q, k, v, *, causal, key_padding_mask, bias, need_weights):
        B, H, Tq, Dh = q.shape
        Tk = k.shape[2]
        if Tq > Tk:
            raise ValueError(f"longformer attention needs Tq <= Tk, got {Tq} > {Tk}")
        w = min(self.window, Tk)  # a window past the sequence is the whole sequence
        g = min(self.global_tokens, Tk)
        scale = self.softmax_scale(Dh)
        dev = q.device

        fused = self.impl == "sdpa" and bias is None and not need_weights
        band = window_band(q, k, v, key_padding_mask, causal=causal, window=w,
                           block=fused_block(w) if fused else None)
        nb, b = band.q_idx.shape
        # Keys before g are scored in the global tile; masking their band copy keeps every key
        # counted once in the shared softmax.
        keep = keep_mask(band.q_idx, band.k_idx, causal=causal, window=w,
                         key_padding_mask=band.real & (band.k_idx >= g))  # (B, 1, nb, b, span)
        if g:
            g_idx = torch.arange(g, device=dev).expand(nb, g)  # (nb, g)
            real_g = (k.new_ones(B, g, dtype=torch.bool) if key_padding_mask is None
                      else key_padding_mask[:, :g])
            keep_g = keep_mask(band.q_idx, g_idx, causal=causal,
                               key_padding_mask=real_g[:, None].expand(B, nb, g))
            keep_g = keep_g.expand(B, 1, nb, b, g)  # without causal its query axis is 1
        if fused:  # every block's band keys and the global keys, one kernel call per block
            kw, vw = band.kw, band.vw
            if g:
                kw = torch.cat([kw, k[:, :, None, :g].transpose(-1, -2).expand(-1, -1, nb, -1, -1)],
                               -1)  # (B, H, nb, Dh, span + g)
                vw = torch.cat([vw, v[:, :, None, :g].transpose(-1, -2).expand(-1, -1, nb, -1, -1)],
                               -1)
                keep = torch.cat([keep, keep_g], -1)
            out = blocked_sdpa(band.qb, kw, vw, keep, scale=scale,
                               dropout=self.dropout if self.training else 0.0)
            out = out.reshape(B, H, nb * b, Dh)[:, :, :Tq]
            return self._global_rows(q, k, v, out, None, causal=causal, bias=bias,
                                     key_padding_mask=key_padding_mask, g=g)
        scores = (band.qb @ band.kw) * scale  # (B, H, nb, b, span)
        if bias is not None:
            scores = scores + bias(band.q_idx, band.k_idx)
        if g:
            scores_g = band.qb @ k[:, :, None, :g].transpose(-1, -2) * scale  # (B, H, nb, b, g)
            if bias is not None:
                scores_g = scores_g + bias(band.q_idx, g_idx)
            # ONE softmax per query over its band and the global keys together.
            scores = torch.cat([scores, scores_g], -1)  # (B, H, nb, b, span + g)
            keep = torch.cat([keep, keep_g], -1)
        weights = masked_softmax(scores, keep)
        dropped = F.dropout(weights, self.dropout, self.training) if self.dropout else weights
        span = band.k_idx.shape[-1]
        out = dropped[..., :span] @ band.vw.transpose(-1, -2)  # (B, H, nb, b, Dh)
        if g:
            out = out + dropped[..., span:] @ v[:, :, None, :g]
        out = out.reshape(B, H, nb * b, Dh)[:, :, :Tq]

        dense = None
        if need_weights:  # an explicit request: scatter the tiles into (B, H, Tq, Tk)
            index = (band.k_idx + band.left)[:, None, :].expand(B, H, nb, b, span)
            dense = weights.new_zeros(B, H, nb, b, band.width)
            dense = dense.scatter_add(-1, index, weights[..., :span])
            dense = dense[..., band.left:band.left + Tk]  # (B, H, nb, b, Tk)
            if g:  # the band's copies of global keys are masked: adding is exact
                dense = torch.cat([dense[..., :g] + weights[..., span:], dense[..., g:]], -1)
            dense = dense.reshape(B, H, nb * b, Tk)[:, :, :Tq]
        return self._global_rows(q, k, v, out, dense, causal=causal, bias=bias,
                                 key_padding_mask=key_padding_mask, g=g)

    def _global_rows(self, q, k, v, out, dense, *, causal, bias, key_padding_mask, g):
        """Replace the rows of the queries that are global tokens: they attend to every key.
        (Causal: their past is all global, already exact.)"""
        Tq, Dh, Tk = q.shape[2], q.shape[3], k.shape[2]
        off = Tk - Tq
        dev = q.device
        scale = self.softmax_scale(Dh)
        rows = max(0, min(g - off, Tq))  # queries that are global tokens
        if rows and not causal:
            q_pos = off + torch.arange(rows, device=dev)
            k_pos = torch.arange(Tk, device=dev)
            keep_r = keep_mask(q_pos, k_pos, key_padding_mask=key_padding_mask)
            scores_r = (q[:, :, :rows] @ k.transpose(-1, -2)) * scale  # (B, H, rows, Tk)
            if bias is not None:
                scores_r = scores_r + bias(q_pos, k_pos)
            weights_r = masked_softmax(scores_r, keep_r)
            dropped_r = (F.dropout(weights_r, self.dropout, self.training) if self.dropout
                         else weights_r)
            out = torch.cat([dropped_r @ v, out[:, :, rows:]], 2)  # (B, H, Tq, Dh)
            if dense is not None:
                dense = torch.cat([weights_r, dense[:, :, rows:]], 2)
        return out, dense
