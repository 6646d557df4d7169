"""Decoder-only GPT-style language model (Radford et al., 2018, 2019).

Token embedding + positional encoding -> N causal Blocks -> final norm -> linear head (tied to
the embedding by default). With pre-norm, learned positions, GELU and LayerNorm it is GPT-2;
with RMSNorm, RoPE, SwiGLU and grouped-query attention it is LLaMA-shaped.
"""

from __future__ import annotations

from torch import Tensor, nn

from attnlab.models.config import GPTConfig
from attnlab.models.transformer import (
    ModelInfo,
    StackCache,
    TransformerStack,
    check_tokens,
    init_gpt2_,
    linear_flops,
    positional_from_config,
)


class GPT(ModelInfo, nn.Module):
    """Causal LM. `forward_features` gives (B, T, d) hidden states, `forward_head` the logits.

    Args:
        config: a `GPTConfig`.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.d_model)
        self.positional = positional_from_config(c)
        self.drop = nn.Dropout(c.dropout) if c.dropout > 0 else nn.Identity()
        self.stack = TransformerStack(c, c.n_layers)
        self.head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        init_gpt2_(self, c.n_layers)
        if c.tie_embeddings:
            self.head.weight = self.tok_emb.weight

    def new_cache(self) -> StackCache:
        """An empty KV cache for `forward(..., cache=...)` token-by-token decoding."""
        return self.stack.new_cache()

    def forward_features(self, idx: Tensor, *, key_padding_mask: Tensor | None = None,
                         positions: Tensor | None = None,
                         cache: StackCache | None = None) -> Tensor:
        """idx (B, T) token ids -> (B, T, d_model).

        Args:
            key_padding_mask: (B, T) True = real token (with a cache: of the new tokens).
            positions: (B, T) or (T,) token positions; default consecutive after the cache.
                Left-padded batches pass each row's own positions.
            cache: from `new_cache()`; idx are then the tokens after the cached ones.
        """
        check_tokens(idx, self.config.vocab_size)
        start = cache.seen if cache is not None else 0
        x = self.drop(self.positional.embed(self.tok_emb(idx), start, positions))  # (B, T, d)
        return self.stack(x, causal=True, key_padding_mask=key_padding_mask,
                          positional=self.positional, positions=positions, cache=cache)

    def forward_head(self, h: Tensor) -> Tensor:
        """(B, T, d_model) -> (B, T, vocab_size) next-token logits."""
        return self.head(h)

    def forward(self, idx: Tensor, *, key_padding_mask: Tensor | None = None,
                positions: Tensor | None = None, cache: StackCache | None = None) -> Tensor:
        h = self.forward_features(idx, key_padding_mask=key_padding_mask, positions=positions,
                                  cache=cache)
        return self.forward_head(h)

    def forward_flops(self, seq_len: int) -> float:
        return (self.stack.forward_flops(seq_len, causal=True)
                + seq_len * linear_flops(self.head))
