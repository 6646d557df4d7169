"""The attention contract: what every mechanism takes, returns and declares.

A mechanism is an `nn.Module` called as

    out, weights = attn(q, k, v, causal=..., key_padding_mask=..., bias=..., need_weights=...)

with head-split tensors q (B, H, Tq, Dh), k and v (B, H, Tk, Dh). It returns out (B, H, Tq, Dh)
and, when asked, weights (B, H, Tq, Tk) (else None).

Positions: when Tq < Tk the queries are the *last* Tq positions of the key sequence (the
bottom-right alignment of cached decoding), so query i sits at key position Tk - Tq + i. A causal
query attends to keys at positions <= its own.

`key_padding_mask` is (B, Tk) with True = keep. `bias` is a callable (an `AttentionBias`, e.g.
ALiBi) that maps query and key positions to an additive score bias; taking positions rather than
a dense (Tq, Tk) tensor lets a local or sparse mechanism evaluate it only on the blocks it
computes. Rows with no key left to attend give zeros, never NaN.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import ClassVar, Protocol

import torch
from torch import Tensor, nn

from attnlab.errors import CapabilityError, ConfigError


@dataclass(frozen=True)
class Capabilities:
    """What a mechanism can do. A request outside them is a `CapabilityError`, never a fallback.

    Args:
        causal: honours `causal=True`.
        padding_mask: honours a `key_padding_mask`.
        cross: queries and keys may come from different sequences (Tq != Tk, no positional tie).
        kv_cache: incremental decoding against cached keys (queries are the last Tq positions).
        bias: accepts an additive `AttentionBias` (ALiBi, relative positions).
        weights: can return the attention weights (B, H, Tq, Tk).
        exact: computes softmax attention over every allowed key (equal to `full`).
        permutation_equivariant: without positional encodings, permuting the tokens permutes
            the outputs (false for mechanisms that look at positions, such as a local window).
        shift_invariant: masked keys put before the sequence (left padding) leave every real
            query's output unchanged; false when the pattern is tied to absolute indices
            (Longformer's first tokens, BigBird's blocks). Batched generation left-pads only
            models whose mechanisms all have it and decodes the rows one at a time otherwise,
            so the default, for mechanisms that do not say, is that slower but exact path.
    """

    causal: bool
    padding_mask: bool
    cross: bool
    kv_cache: bool
    bias: bool
    weights: bool
    exact: bool
    permutation_equivariant: bool
    shift_invariant: bool = False

    def as_dict(self) -> dict[str, bool]:
        return asdict(self)

    def summary(self) -> str:
        """The names of the capabilities that hold, comma separated."""
        return ", ".join(k for k, v in asdict(self).items() if v) or "none"


class AttentionBias(Protocol):
    """Additive score bias from positions: `bias(q_idx, k_idx)`.

    q_idx (..., Tq) and k_idx (..., Tk) are integer positions with equal leading dims; the result
    broadcasts against scores (B, H, ..., Tq, Tk), i.e. it is (H or 1, ..., Tq, Tk).
    """

    def __call__(self, q_idx: Tensor, k_idx: Tensor) -> Tensor: ...


class Attention(nn.Module, ABC):
    """Base class of every mechanism: validates the request, then calls `attend`.

    Subclasses set `capabilities`, are registered with `@register(name)`, and implement
    `attend` with the signature of `forward`.

    Args:
        scale: multiplies the scores; default 1 / sqrt(head_dim).
        dropout: dropout on the attention weights while training, in [0, 1).
    """

    name: ClassVar[str] = "?"
    capabilities: ClassVar[Capabilities]
    #: How many past keys a KV cache must keep for the next step; None keeps them all.
    cache_keep: int | None = None
    #: The backward pass is a surrogate (straight-through), not the forward's true gradient.
    straight_through: ClassVar[bool] = False
    #: Keys are derived from the queries (the Reformer's shared-QK) and the `k` argument is
    #: ignored, so `MultiHeadAttention` builds no key projection and passes the queries as k.
    shares_qk: bool = False

    def __init__(self, scale: float | None = None, dropout: float = 0.0):
        super().__init__()
        if scale is not None and not scale > 0:
            raise ConfigError(f"attention '{self.name}': scale must be > 0, got {scale}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"attention '{self.name}': dropout must be in [0, 1), got {dropout}")
        self.scale = scale
        self.dropout = dropout

    def softmax_scale(self, head_dim: int) -> float:
        return self.scale if self.scale is not None else 1.0 / math.sqrt(head_dim)

    def attended_keys(self, n_queries: int, n_keys: int, causal: bool) -> float:
        """Keys scored per query, for FLOP estimates; dense mechanisms score all of them."""
        return float(n_keys)

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        causal: bool = False,
        key_padding_mask: Tensor | None = None,
        bias: AttentionBias | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        self.check(q, k, v, causal=causal, key_padding_mask=key_padding_mask, bias=bias,
                   need_weights=need_weights)
        return self.attend(q, k, v, causal=causal, key_padding_mask=key_padding_mask, bias=bias,
                           need_weights=need_weights)

    @abstractmethod
    def attend(self, q, k, v, *, causal, key_padding_mask, bias, need_weights):
        """The mechanism itself, called by `forward` after the request is checked."""

    def require(self, capability: str, what: str) -> None:
        """Raise a `CapabilityError` unless `capability` is declared."""
        if not getattr(self.capabilities, capability):
            raise CapabilityError(
                f"attention '{self.name}' cannot do {what}; it supports: "
                f"{self.capabilities.summary()}"
            )

    def check(self, q, k, v, *, causal, key_padding_mask, bias, need_weights) -> None:
        if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
            raise ValueError("attention expects q, k, v shaped (B, H, T, Dh)")
        if k.shape[:3] != v.shape[:3] or q.shape[:2] != k.shape[:2] or q.shape[-1] != k.shape[-1]:
            raise ValueError(f"mismatched q {tuple(q.shape)}, k {tuple(k.shape)}, "
                             f"v {tuple(v.shape)}")
        if causal:
            self.require("causal", "causal attention")
        if key_padding_mask is not None:
            self.require("padding_mask", "a key padding mask")
            if key_padding_mask.shape != (k.shape[0], k.shape[2]):
                raise ValueError(f"key_padding_mask must be (B, Tk) = {(k.shape[0], k.shape[2])}"
                                 f", got {tuple(key_padding_mask.shape)}")
            if key_padding_mask.dtype != torch.bool:  # a float 0/1 mask would be a score bias
                raise ValueError(f"key_padding_mask must be bool (True = a real key), got "
                                 f"{key_padding_mask.dtype}")
        if q.shape[2] != k.shape[2] and not (self.capabilities.cross or
                                             self.capabilities.kv_cache):
            self.require("cross", f"queries and keys of different lengths ({q.shape[2]} vs "
                                  f"{k.shape[2]})")
        if bias is not None:
            self.require("bias", "an additive attention bias (ALiBi, relative positions)")
        if need_weights:
            self.require("weights", "returning attention weights")


class KVCache:
    """Keys and values of one attention layer, kept across decoding steps.

    Keys are stored after positional rotation, (B, Hkv, T, Dh); with grouped-query attention only
    the Hkv key/value heads are kept, which is the memory the method saves. `seen` counts every
    token ever appended, so the next token's position is `seen` even when the cache keeps only
    the last `keep` keys (a sliding window needs no more). A `static` cache (cross-attention
    over an encoder's memory) is filled once and then reused.

    Args:
        keep: how many past keys to retain between calls; None keeps all.
        static: fill once, then return the stored keys and values unchanged.
    """

    def __init__(self, keep: int | None = None, static: bool = False):
        self.keep = keep
        self.static = static
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.mask: Tensor | None = None
        self.seen = 0
        self._buffers: tuple[Tensor, Tensor] | None = None  # see _write

    @property
    def filled(self) -> bool:
        return self.k is not None

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.shape[2]

    def update(self, k: Tensor, v: Tensor, key_padding_mask: Tensor | None = None):
        """Append this call's keys/values (and their padding mask); return everything attended.

        The returned tensors hold the retained past plus the new entries, so queries of this call
        can see their full window; only what the next call needs is then retained.
        """
        if self.static and self.filled:
            return self.k, self.v, self.mask
        B, _, T, _ = k.shape
        past = 0 if self.k is None else self.k.shape[2]
        if past and (self.mask is not None or key_padding_mask is not None):
            old = self.mask if self.mask is not None else k.new_ones(B, past, dtype=torch.bool)
            new = (key_padding_mask if key_padding_mask is not None
                   else k.new_ones(B, T, dtype=torch.bool))
            key_padding_mask = torch.cat([old, new], dim=1)
        if self.keep is None and not self.static and not torch.is_grad_enabled():
            k, v = self._write(k, v, past)
        elif past:
            self._buffers = None
            k = torch.cat([self.k, k], dim=2)
            v = torch.cat([self.v, v], dim=2)
        self.seen += T
        if self.keep is None or self.static:
            self.k, self.v, self.mask = k, v, key_padding_mask
        else:
            start = max(k.shape[2] - self.keep, 0)
            self.k, self.v = k[:, :, start:], v[:, :, start:]
            self.mask = None if key_padding_mask is None else key_padding_mask[:, start:]
        return k, v, key_padding_mask

    def _write(self, k: Tensor, v: Tensor, past: int) -> tuple[Tensor, Tensor]:
        """Append into preallocated buffers whose capacity doubles when full, and return views
        of their filled part: decoding then copies each new key once instead of re-copying the
        whole past every step (torch.cat). Only without autograd: in-place writes into a
        buffer that earlier views share would break a backward pass."""
        n = past + k.shape[2]
        if self._buffers is None or self._buffers[0].shape[2] < n:
            cap = max(2 * n, 64)
            kb = k.new_empty(*k.shape[:2], cap, k.shape[3])
            vb = v.new_empty(*v.shape[:2], cap, v.shape[3])
            if past:
                kb[:, :, :past] = self.k
                vb[:, :, :past] = self.v
            self._buffers = (kb, vb)
        kb, vb = self._buffers
        kb.narrow(2, past, n - past).copy_(k)  # narrow: cheaper than slice indexing per step
        vb.narrow(2, past, n - past).copy_(v)
        return kb.narrow(2, 0, n), vb.narrow(2, 0, n)

    def reorder(self, index: Tensor) -> None:
        """Select batch rows (beam search): every stored tensor is indexed along dim 0."""
        self._buffers = None
        for name in ("k", "v", "mask"):
            t = getattr(self, name)
            if t is not None:
                setattr(self, name, t.index_select(0, index))
