"""What every architecture shares: a stack of Blocks built from a config, its decoding cache,
weight initialization and the parameter / FLOP accounting behind the uniform model API."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from attnlab.attention.multihead import MultiHeadAttention
from attnlab.errors import AttnlabError, CapabilityError, ConfigError
from attnlab.layers.block import Block
from attnlab.layers.feedforward import FeedForward
from attnlab.layers.norms import build_norm
from attnlab.layers.positional import build_positional
from attnlab.layers.reversible import ChunkedFeedForward, ReversibleSequence
from attnlab.models.config import TransformerConfig

_REVERSIBLE_NO_CACHE = ("reversible=True layers cannot decode with a KV cache; generate with "
                        "use_cache=False or set reversible=False")


class StackCache(list):
    """Per-layer (self-attention cache, cross-attention cache or None) pairs of one stack."""

    @property
    def seen(self) -> int:
        """Tokens decoded so far: the position of the next one."""
        return self[0][0].seen if self else 0

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows `index` in every layer's cache (beam search)."""
        for self_cache, cross_cache in self:
            self_cache.reorder(index)
            if cross_cache is not None:
                cross_cache.reorder(index)


class TransformerStack(nn.Module):
    """`n_layers` Blocks made from `config` (with cross-attention for a decoder), then the final
    norm when the config asks for one.

    `config.reversible` runs the Blocks as reversible layers: `self.reversible` is a
    `ReversibleSequence` over the Blocks' own modules, so the parameters and their state-dict
    names are those of the plain stack (`blocks.{i}...`). `config.ff_chunks` wraps each Block's
    FFN in a `ChunkedFeedForward` (its weights under `blocks.{i}.ffn.ffn.`).

    Args:
        config: the shared architecture settings.
        n_layers: number of Blocks.
        cross: decoder Blocks, with cross-attention over an encoder's memory.
    """

    def __init__(self, config: TransformerConfig, n_layers: int, *, cross: bool = False):
        super().__init__()
        c = config
        if c.reversible and cross:
            raise ConfigError("reversible=True cannot make decoder layers with cross-attention "
                              "reversible; set reversible=False")

        def mha():
            return MultiHeadAttention(c.d_model, c.n_heads, n_kv_heads=c.n_kv_heads,
                                      attention=c.attention,
                                      attention_options=dict(c.attention_options), bias=c.bias)

        def cross_mha():  # cross-attention stays full softmax: it is not the quadratic part
            return MultiHeadAttention(c.d_model, c.n_heads, n_kv_heads=c.n_kv_heads, bias=c.bias)

        def norm():
            return build_norm(c.norm, c.d_model, c.norm_eps, bias=c.bias)

        def ffn():
            ffn = FeedForward(c.d_model, c.ffn_dim, c.activation, c.dropout, c.bias)
            return ChunkedFeedForward(ffn, c.ff_chunks) if c.ff_chunks else ffn

        self.blocks = nn.ModuleList(
            Block(mha(), ffn(), norm, cross_attn=cross_mha() if cross else None,
                  norm_first=c.norm_first, dropout=c.dropout)
            for _ in range(n_layers)
        )
        self.norm = norm() if c.use_final_norm else nn.Identity()
        # A plain attribute, not a submodule: it shares the Blocks' modules, and registering it
        # would list every parameter a second time under other names.
        self.__dict__["reversible"] = (ReversibleSequence.from_blocks(self.blocks)
                                       if c.reversible else None)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.reversible is not None:  # outside the module tree: not reached by super()
            self.reversible.train(mode)  # it saves RNG states for dropout replay in training
        return self

    def new_cache(self) -> StackCache:
        if self.reversible is not None:
            raise CapabilityError(_REVERSIBLE_NO_CACHE)
        return StackCache(
            (blk.self_attn.new_cache(),
             blk.cross_attn.new_cache(cross=True) if blk.cross_attn is not None else None)
            for blk in self.blocks
        )

    def forward(
        self,
        x: Tensor,
        *,
        causal: bool = False,
        key_padding_mask: Tensor | None = None,
        memory: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        positional=None,
        positions: Tensor | None = None,
        cache: StackCache | None = None,
    ) -> Tensor:
        if self.reversible is not None:
            if cache is not None:
                raise CapabilityError(_REVERSIBLE_NO_CACHE)
            x = self.reversible(x, causal=causal, key_padding_mask=key_padding_mask,
                                positional=positional, positions=positions)
            return self.norm(x)
        for i, block in enumerate(self.blocks):
            self_cache, cross_cache = cache[i] if cache is not None else (None, None)
            x = block(x, causal=causal, key_padding_mask=key_padding_mask, memory=memory,
                      memory_key_padding_mask=memory_key_padding_mask, positional=positional,
                      positions=positions, cache=self_cache, cross_cache=cross_cache)
        return self.norm(x)

    def forward_flops(self, n_tokens: int, *, causal: bool, n_memory: int | None = None) -> float:
        """Matmul FLOPs of one forward over `n_tokens` (cross-attending `n_memory` tokens)."""
        flops = n_tokens * linear_flops(self)
        for block in self.blocks:
            flops += attention_flops(block.self_attn, n_tokens, n_tokens, causal)
            if block.cross_attn is not None:
                flops += attention_flops(block.cross_attn, n_tokens, n_memory, False)
        return flops


def interleave(*streams: Tensor) -> Tensor:
    """n token streams (B, K, d) -> (B, n K, d) ordered step by step: s1_1, s2_1, ..., s1_2, ...
    (the Decision Transformer's R, s, a; the in-context regressor's x, y)."""
    b, k, d = streams[0].shape
    return torch.stack(streams, dim=2).reshape(b, len(streams) * k, d)


def positional_from_config(c: TransformerConfig):
    """The positional encoding a config names, sized for it."""
    return build_positional(c.positional, d_model=c.d_model, n_heads=c.n_heads,
                            max_len=c.max_len, rope_theta=c.rope_theta)


def linear_flops(module: nn.Module) -> float:
    """2 * weights of every nn.Linear inside: the matmul FLOPs of running it on one token."""
    return 2.0 * sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Linear))


def attention_flops(mha: MultiHeadAttention, n_queries: int, n_keys: int, causal: bool) -> float:
    """Scores (Q K^T) and weighted sum (A V): 2 * 2 * d_model FLOPs per (query, scored key)."""
    return 4.0 * mha.d_model * n_queries * mha.attn.attended_keys(n_queries, n_keys, causal)


def check_tokens(idx: Tensor, vocab_size: int, what: str = "token ids") -> None:
    """Token ids must be integers in [0, vocab_size): say so instead of an index error."""
    if idx.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise AttnlabError(f"{what} must be an integer tensor, got {idx.dtype}")
    if idx.dim() != 2:
        raise AttnlabError(f"{what} must be shaped (batch, length), got {tuple(idx.shape)}")
    # Reading values back breaks a torch.compile graph (and warns): compiled training feeds
    # ids its own tokenizer made, so the range check is left to eager calls.
    if idx.numel() and not torch.compiler.is_compiling():
        low, high = (int(v) for v in idx.aminmax())
        if low < 0 or high >= vocab_size:
            raise AttnlabError(f"{what} must lie in [0, {vocab_size}), got range "
                               f"[{low}, {high}]")


def init_gpt2_(model: nn.Module, n_residual_layers: int) -> None:
    """GPT-2 initialization: N(0, 0.02) weights, zero biases, and the projections that write
    into the residual stream scaled by 1/sqrt(2 * layers) so its variance does not grow."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)
    std = 0.02 / math.sqrt(2 * n_residual_layers)
    for m in model.modules():
        if isinstance(m, MultiHeadAttention):
            nn.init.normal_(m.out_proj.weight, std=std)
        elif isinstance(m, FeedForward):
            nn.init.normal_(m.fc2.weight, std=std)


class ModelInfo(ABC):
    """Parameter count and FLOP estimate, shared by every model."""

    def num_parameters(self, *, trainable_only: bool = False) -> int:
        """Parameters, each shared (tied) tensor counted once."""
        params = {id(p): p for p in self.parameters() if p.requires_grad or not trainable_only}
        return sum(p.numel() for p in params.values())

    def flops_per_token(self, seq_len: int) -> float:
        """Forward matmul FLOPs per token at sequence length `seq_len` (training: about 3x).

        Counts every linear layer and the attention scores and sums as computed by the model's
        mechanism (dense mechanisms score every key, causal or not, as the kernels do).
        """
        if seq_len < 1:
            raise ConfigError(f"sequence length must be >= 1, got {seq_len}")
        return self.forward_flops(seq_len) / seq_len

    @abstractmethod
    def forward_flops(self, seq_len: int) -> float:
        """Matmul FLOPs of one forward pass over a sequence of `seq_len` tokens."""

