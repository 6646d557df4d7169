"""Multi-head attention around any registered mechanism: projections, heads, masks, cache.

    head_i = Attention(x W_q^i, c W_k^i, c W_v^i),   MHA(x, c) = concat(head_1..head_H) W_o

with c = x for self-attention and an encoder's output for cross-attention. Grouped-query
attention (Ainslie et al., 2023) shares each key/value head among `n_heads / n_kv_heads` query
heads; `n_kv_heads = 1` is multi-query attention.
"""

from __future__ import annotations

from torch import Tensor, nn

from attnlab.attention.base import Attention, KVCache
from attnlab.attention.registry import build
from attnlab.errors import CapabilityError, ConfigError


def repeat_kv(x: Tensor, groups: int) -> Tensor:
    """(B, Hkv, T, Dh) -> (B, Hkv * groups, T, Dh): query head h reads key/value head
    h // groups."""
    if groups == 1:
        return x
    B, Hkv, T, Dh = x.shape
    return x[:, :, None].expand(B, Hkv, groups, T, Dh).reshape(B, Hkv * groups, T, Dh)


class MultiHeadAttention(nn.Module):
    """Projections and heads around an injected attention mechanism.

    Args:
        d_model: width of the queries' input and of the output.
        n_heads: query heads; `d_model` must divide evenly.
        n_kv_heads: key/value heads (grouped-query attention); must divide `n_heads`.
        attention: a registered mechanism name, or an `Attention` instance. One that shares
            queries and keys (`shares_qk`, e.g. lsh's shared QK) gets no `k_proj` (None): its
            keys are the projected queries, and it attends within `x` only.
        attention_options: options for `build(attention, ...)` when a name is given.
        kdim, vdim: the width of the context keys and values are projected from (cross-
            attention); one context, so one width: give either; default d_model.
        bias: projections have biases.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        n_kv_heads: int | None = None,
        attention: str | Attention = "full",
        attention_options: dict | None = None,
        kdim: int | None = None,
        vdim: int | None = None,
        bias: bool = True,
    ):
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if n_heads < 1 or d_model % n_heads:
            raise ConfigError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        if n_kv_heads < 1 or n_heads % n_kv_heads:
            raise ConfigError(f"n_kv_heads {n_kv_heads} must divide n_heads {n_heads}")
        self.d_model, self.n_heads, self.n_kv_heads = d_model, n_heads, n_kv_heads
        self.head_dim = d_model // n_heads
        kv_width = n_kv_heads * self.head_dim
        if isinstance(attention, str):
            attention = build(attention, **(attention_options or {}))
        elif attention_options:
            raise ConfigError("attention_options go with an attention name, not an instance")
        if kdim is not None and vdim is not None and kdim != vdim:
            # unlike nn.MultiheadAttention there is one context, the source of keys and values
            raise ConfigError(f"kdim {kdim} != vdim {vdim}: keys and values are projected from "
                              f"the same context, so they have one width (give kdim alone)")
        vdim = kdim if vdim is None else vdim
        if attention.shares_qk and (kdim or d_model) != d_model:
            raise ConfigError(f"attention '{attention.name}' shares queries and keys, so it has "
                              f"no key projection from a context of width kdim={kdim}")
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        # Shared-QK mechanisms take the queries as keys: a key projection would get no gradient.
        self.k_proj = (None if attention.shares_qk
                       else nn.Linear(kdim or d_model, kv_width, bias=bias))
        self.v_proj = nn.Linear(vdim or d_model, kv_width, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.attn = attention

    def new_cache(self, cross: bool = False) -> KVCache:
        """An empty cache for incremental decoding with this layer."""
        if cross:
            return KVCache(static=True)
        if not self.attn.capabilities.kv_cache:
            raise CapabilityError(f"attention '{self.attn.name}' cannot do KV-cached decoding; "
                                  f"it supports: {self.attn.capabilities.summary()}")
        return KVCache(keep=self.attn.cache_keep)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        causal: bool = False,
        key_padding_mask: Tensor | None = None,
        positional=None,
        positions: Tensor | None = None,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from `x` (B, T, d_model) to itself, or to `context` (B, S, kdim).

        Args:
            causal: each position sees only itself and the past.
            key_padding_mask: (B, S) True = real key, for the keys computed in this call (with
                a cache: the new tokens; the cache keeps the mask of the past).
            positional: the model's positional encoding; rotary ones turn q and k, relative
                ones bias the scores. Not applied to cross-attention.
            positions: explicit (T,) or (B, T) token positions for rotary encodings (default:
                consecutive, starting after the cached tokens).
            cache: a `KVCache` from `new_cache()`; self-attention appends to it, a cross cache
                computes the context's keys once.
            need_weights: also return (B, H, T, S) weights (the mechanism's weight path).

        Returns:
            (B, T, d_model) output and the weights or None.
        """
        B, T, _ = x.shape
        H, Hkv, Dh = self.n_heads, self.n_kv_heads, self.head_dim
        cross = context is not None
        if cross:
            self.attn.require("cross", "cross-attention")
            if self.k_proj is None:
                raise CapabilityError(f"attention '{self.attn.name}' shares queries and keys, "
                                      f"so it cannot do cross-attention")
        q = self.q_proj(x).view(B, T, H, Dh).transpose(1, 2)  # (B, H, T, Dh)
        if cross and cache is not None and cache.filled:
            k, v, key_padding_mask = cache.k, cache.v, cache.mask  # encoder memory, computed once
        else:
            src = context if cross else x
            S = src.shape[1]
            # (B, Hkv, S, Dh), or shared-QK's queries as the keys, (B, H, S, Dh)
            k = q if self.k_proj is None else self.k_proj(src).view(B, S, Hkv, Dh).transpose(1, 2)
            v = self.v_proj(src).view(B, S, Hkv, Dh).transpose(1, 2)  # (B, Hkv, S, Dh)
            if not cross and positional is not None:
                start = cache.seen if cache is not None else 0
                q = positional.rotate(q, start, positions)
                k = positional.rotate(k, start, positions)
            if cache is not None:
                if not cross:
                    self.attn.require("kv_cache", "KV-cached decoding")
                k, v, key_padding_mask = cache.update(k, v, key_padding_mask)
        bias = positional.attention_bias if (positional is not None and not cross) else None
        # k has Hkv heads, or H when it is the queries (shared-QK)
        k, v = repeat_kv(k, H // k.shape[1]), repeat_kv(v, H // Hkv)  # (B, H, S, Dh)
        out, weights = self.attn(q, k, v, causal=causal, key_padding_mask=key_padding_mask,
                                 bias=bias, need_weights=need_weights)
        out = out.transpose(1, 2).reshape(B, T, self.d_model)  # (B, T, d_model)
        return self.out_proj(out), weights
