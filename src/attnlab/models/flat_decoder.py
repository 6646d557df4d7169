"""KV-cached GPT decoding as one flat loop of functional calls on the model's own weights.

At batch 1 a decoding step is a few dozen matrix-vector products of ~10-20 us each on a CPU.
Running them through the module tree (`nn.Module.__call__` and its hook checks, parameter
lookups, argument checks, a cache object per layer) adds about half as much Python time again,
which is the difference between a 7-9x and a 10-12x speed-up over recomputation
(benchmarks/decode_floor.py). `FlatDecoder` gathers the weights of a `GPT` once and runs the
step as plain functional calls into a cache allocated once.

It is a second forward, so the modular one is its reference twin: tests hold the two equal,
logits and tokens, for every part it accepts. It reuses what carries the model's semantics
rather than restating it: the positional encoding's own `embed` / `rotate` /
`attention_bias`, the mechanism's own `attend` (masking, scale, fused kernel), and
`FeedForward`'s activation table. It only restates the wiring of a Block and of the heads.

It accepts a `GPT` in eval mode whose modules are exactly attnlab's standard parts (not
subclasses: a LoRA Linear, a parametrized weight or a norm with its own forward computes
something the flat step would not), around any positional encoding and any mechanism that
caches every key, pre- or post-norm, grouped-query heads; with no forward hooks (they would
silently not run), no forward set on an instance and no autocast. Any other model decodes
through its modules; `unsupported(model)` names the first thing that rules it out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules import module as module_globals

from attnlab.attention.base import Attention
from attnlab.attention.multihead import MultiHeadAttention, repeat_kv
from attnlab.errors import CapabilityError
from attnlab.layers.block import Block
from attnlab.layers.feedforward import ACTIVATIONS, FeedForward
from attnlab.models.gpt import GPT
from attnlab.models.transformer import TransformerStack, check_tokens

#: The module types whose forward the flat step restates. The positional encoding and the
#: attention mechanism (and whatever they hold) may be anything: their own methods run.
_RESTATED = (GPT, TransformerStack, nn.ModuleList, Block, MultiHeadAttention, FeedForward,
             nn.Linear, nn.Embedding, nn.LayerNorm, nn.RMSNorm, nn.Identity, nn.Dropout)


def unsupported(model) -> str | None:
    """Why `FlatDecoder` cannot decode `model`, or None when it can."""
    if type(model) is not GPT:
        return f"{type(model).__name__} is not attnlab's GPT"
    device = model.tok_emb.weight.device.type
    if torch.is_autocast_enabled(device):  # addmv and the cache's dtype are not autocast
        return "autocast is enabled"
    if (module_globals._global_forward_hooks or module_globals._global_forward_pre_hooks
            or module_globals._global_forward_hooks_always_called):
        return "global module hooks are registered"
    own_methods = {id(m) for part in (model.positional, *(blk.self_attn.attn for blk in
                                                            model.stack.blocks))
                   for m in part.modules()}
    for name, m in model.named_modules():
        name = name or "model"
        if m._forward_hooks or m._forward_pre_hooks:
            return f"module '{name}' has a forward hook"
        if m.training:  # dropout would apply in the modules and not here
            return f"module '{name}' is in training mode (dropout)"
        if "forward" in vars(m):
            return f"module '{name}' has a forward of its own"
        # Exact types: a subclass (LoRA, a parametrization, a quantized Linear) computes
        # something the flat step does not.
        if id(m) not in own_methods and type(m) not in _RESTATED:
            return f"module '{name}' is a {type(m).__name__}, which the flat step does not run"
    if model.stack.reversible is not None:
        return "reversible layers"
    if model.tok_emb.max_norm is not None:
        return "the token embedding renormalizes (max_norm)"
    for i, blk in enumerate(model.stack.blocks):
        mha = blk.self_attn
        if blk.cross_attn is not None:
            return f"block {i} has cross-attention"
        if mha.k_proj is None:
            return f"block {i} attention shares queries and keys"
        attn = mha.attn
        if not attn.capabilities.kv_cache or attn.cache_keep is not None:
            return f"attention '{attn.name}' does not cache every key"
        if type(attn).forward is not Attention.forward:
            return f"attention '{attn.name}' overrides forward"
    return None


class FlatCache:
    """Keys and values of every layer, (B, Hkv, capacity, Dh) each, allocated once; the key
    padding mask (B, capacity) from the first call that has padding."""

    def __init__(self, n_layers: int, batch: int, n_kv_heads: int, head_dim: int, capacity: int,
                 *, dtype: torch.dtype, device):
        shape = (batch, n_kv_heads, capacity, head_dim)
        self.keys = [torch.empty(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.values = [torch.empty(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.mask: Tensor | None = None
        self.capacity, self.seen = capacity, 0


class FlatDecoder:
    """A `GPT`'s KV-cached forward as flat functional calls (see the module docstring).

    Args:
        model: an attnlab `GPT` that `unsupported` accepts; its weights are read, not copied,
            so it must not change shape while the decoder is in use.

    Raises:
        CapabilityError: `unsupported(model)` gave a reason.
    """

    def __init__(self, model: GPT):
        reason = unsupported(model)
        if reason is not None:
            raise CapabilityError(f"flat decoding cannot run this model: {reason}")
        c = model.config
        self.vocab_size, self.d_model = c.vocab_size, c.d_model
        self.positional = model.positional
        self.tok_emb = model.tok_emb.weight
        self.head = (model.head.weight, model.head.bias)
        self.final_norm = _norm(model.stack.norm)
        self.layers = [_layer(blk) for blk in model.stack.blocks]
        mha = model.stack.blocks[0].self_attn
        self.n_kv_heads, self.head_dim = mha.n_kv_heads, mha.head_dim
        self.dtype, self.device = self.tok_emb.dtype, self.tok_emb.device

    def new_cache(self, batch: int, capacity: int) -> FlatCache:
        """An empty cache for `batch` rows of up to `capacity` tokens."""
        return FlatCache(len(self.layers), batch, self.n_kv_heads, self.head_dim, capacity,
                         dtype=self.dtype, device=self.device)

    def __call__(self, idx: Tensor, *, cache: FlatCache, key_padding_mask: Tensor | None = None,
                 positions: Tensor | None = None) -> Tensor:
        """idx (B, T) the tokens after the cached ones -> (B, vocab) logits of the last one.

        Args:
            cache: from `new_cache`; it receives the keys and values of `idx`.
            key_padding_mask: (B, T) True = real token, as for `GPT.forward`.
            positions: (B, T) or (T,) positions, as for `GPT.forward`.
        """
        B, T = idx.shape
        start, end = cache.seen, cache.seen + T
        if end > cache.capacity:
            raise CapabilityError(f"the flat decoding cache holds {cache.capacity} tokens; "
                                  f"{end} were given")
        check_tokens(idx, self.vocab_size)
        if B * T == 1 and key_padding_mask is None and positions is None and cache.mask is None:
            return self._one_token(idx, cache)
        mask = self._update_mask(cache, key_padding_mask, start, end)
        pos = self.positional

        def attention(layer: _Layer, h: Tensor, keys: Tensor, values: Tensor) -> Tensor:
            H, Hkv, Dh = layer.n_heads, layer.n_kv_heads, layer.head_dim
            q = layer.q(h).view(B, T, H, Dh).transpose(1, 2)  # (B, H, T, Dh)
            k = layer.k(h).view(B, T, Hkv, Dh).transpose(1, 2)  # (B, Hkv, T, Dh)
            keys[:, :, start:end] = pos.rotate(k, start, positions)
            values[:, :, start:end] = layer.v(h).view(B, T, Hkv, Dh).transpose(1, 2)
            k, v = repeat_kv(keys[:, :, :end], H // Hkv), repeat_kv(values[:, :, :end], H // Hkv)
            a, _ = layer.attn.attend(pos.rotate(q, start, positions), k, v, causal=True,
                                     key_padding_mask=mask, bias=pos.attention_bias,
                                     need_weights=False)  # (B, H, T, Dh)
            return layer.out(a.transpose(1, 2).reshape(B, T, self.d_model))

        x = pos.embed(F.embedding(idx, self.tok_emb), start, positions)  # (B, T, d)
        x = self._blocks(x, cache, attention)
        cache.seen = end
        return F.linear(self.final_norm(x[:, -1]), *self.head)  # (B, vocab)

    def _one_token(self, idx: Tensor, cache: FlatCache) -> Tensor:
        """`__call__` for one unpadded token: the residual stream stays a (d,) vector, so
        each projection is one matrix-vector product and the heads are one view, ~20 fewer
        tensor ops per layer than the (B, T, d) path."""
        start = cache.seen
        end = start + 1
        pos = self.positional

        def attention(layer: _Layer, h: Tensor, keys: Tensor, values: Tensor) -> Tensor:
            H, Hkv, Dh = layer.n_heads, layer.n_kv_heads, layer.head_dim
            q = pos.rotate(layer.q(h).view(1, H, 1, Dh), start)  # (1, H, 1, Dh)
            keys.narrow(2, start, 1).copy_(pos.rotate(layer.k(h).view(1, Hkv, 1, Dh), start))
            values.narrow(2, start, 1).copy_(layer.v(h).view(1, Hkv, 1, Dh))
            k = repeat_kv(keys.narrow(2, 0, end), H // Hkv)  # (1, H, end, Dh)
            v = repeat_kv(values.narrow(2, 0, end), H // Hkv)
            a, _ = layer.attn.attend(q, k, v, causal=True, key_padding_mask=None,
                                     bias=pos.attention_bias, need_weights=False)  # (1, H, 1, Dh)
            return layer.out(a.reshape(-1))  # a mechanism may return a strided view

        x = pos.embed(F.embedding(idx, self.tok_emb), start).view(-1)  # (d,)
        x = self._blocks(x, cache, attention)
        cache.seen = end
        return F.linear(self.final_norm(x), *self.head).view(1, -1)  # (1, vocab)

    def _blocks(self, x: Tensor, cache: FlatCache,
                attention: Callable[[_Layer, Tensor, Tensor, Tensor], Tensor]) -> Tensor:
        """Every Block's wiring (pre- or post-norm residuals, feed-forward) around
        `attention(layer, h, keys, values)`, which writes the cache and attends."""
        for layer, keys, values in zip(self.layers, cache.keys, cache.values, strict=True):
            norm1, norm2 = layer.norm1, layer.norm2
            if layer.norm_first:
                x = x + attention(layer, norm1(x), keys, values)
                x = x + layer.ffn(norm2(x))
            else:
                x = norm1(x + attention(layer, x, keys, values))
                x = norm2(x + layer.ffn(x))
        return x

    @staticmethod
    def _update_mask(cache: FlatCache, key_padding_mask: Tensor | None, start: int,
                     end: int) -> Tensor | None:
        """The padding mask over keys [0, end): None until some call has padding."""
        if key_padding_mask is None and cache.mask is None:
            return None
        if cache.mask is None:
            cache.mask = torch.ones(key_padding_mask.shape[0], cache.capacity, dtype=torch.bool,
                                    device=key_padding_mask.device)
        if key_padding_mask is not None:
            cache.mask[:, start:end] = key_padding_mask
        else:
            cache.mask[:, start:end] = True
        return cache.mask[:, :end]


def _norm(norm: nn.Module):
    """A norm as one functional call on its parameters."""
    if isinstance(norm, nn.LayerNorm):
        shape, w, b, eps = norm.normalized_shape, norm.weight, norm.bias, norm.eps
        return lambda x: F.layer_norm(x, shape, w, b, eps)
    if isinstance(norm, nn.RMSNorm):
        shape, w, eps = norm.normalized_shape, norm.weight, norm.eps
        return lambda x: F.rms_norm(x, shape, w, eps)
    return lambda x: x  # nn.Identity: no final norm


class _Linear:
    """`F.linear` on a module's weights; one token goes through addmv, which skips the
    (B, T, d) -> matrix bookkeeping of `linear` (~1.5 us of a ~8 us call at d = 256)."""

    __slots__ = ("bias", "weight")

    def __init__(self, weight: Tensor, bias: Tensor | None):
        self.weight, self.bias = weight, bias

    def __call__(self, x: Tensor) -> Tensor:
        if x.dim() != 1:
            return F.linear(x, self.weight, self.bias)
        w = self.weight
        return torch.mv(w, x) if self.bias is None else torch.addmv(self.bias, w, x)


def _linear(lin: nn.Linear) -> _Linear:
    return _Linear(lin.weight, lin.bias)


def _feedforward(ffn: FeedForward):
    fc1, fc2 = _linear(ffn.fc1), _linear(ffn.fc2)
    if ffn.gated:
        up = _linear(ffn.fc_up)
        return lambda x: fc2(F.silu(fc1(x)) * up(x))
    act = ACTIVATIONS[ffn.activation]
    return lambda x: fc2(act(fc1(x)))


class _Layer(NamedTuple):
    """What a Block's step needs, gathered once."""

    norm1: Callable[[Tensor], Tensor]  # before (pre-norm) or after (post-norm) attention
    norm2: Callable[[Tensor], Tensor]  # the same for the feed-forward
    norm_first: bool
    q: _Linear
    k: _Linear
    v: _Linear
    out: _Linear
    n_heads: int
    n_kv_heads: int
    head_dim: int
    attn: Attention  # the mechanism, whose own `attend` runs
    ffn: Callable[[Tensor], Tensor]


def _layer(blk: Block) -> _Layer:
    mha = blk.self_attn
    return _Layer(_norm(blk.attn_norm), _norm(blk.ffn_norm), blk.norm_first, _linear(mha.q_proj),
                  _linear(mha.k_proj), _linear(mha.v_proj), _linear(mha.out_proj), mha.n_heads,
                  mha.n_kv_heads, mha.head_dim, mha.attn, _feedforward(blk.ffn))
