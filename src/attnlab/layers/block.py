"""One Transformer layer, built from injected parts.

    pre-norm  (GPT-2, most modern models):  x = x + Sublayer(Norm(x))
    post-norm (the paper's):               x = Norm(x + Sublayer(x))

Sublayers in order: self-attention, cross-attention (decoder layers of an encoder-decoder
only), feed-forward. Each has its own norm and residual dropout ("Residual Dropout", §5.4).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from attnlab.attention.base import KVCache
from attnlab.attention.multihead import MultiHeadAttention


class Block(nn.Module):
    """A residual layer around injected self-attention, optional cross-attention and FFN.

    Args:
        self_attn: a `MultiHeadAttention`.
        ffn: the feed-forward module (d_model -> d_model).
        norm: a factory returning a fresh norm module (one per sublayer).
        cross_attn: a `MultiHeadAttention` over the encoder's memory, for decoder layers.
        norm_first: pre-norm if True, the paper's post-norm if False.
        dropout: dropout on each sublayer's output before the residual add.
    """

    def __init__(
        self,
        self_attn: MultiHeadAttention,
        ffn: nn.Module,
        norm: Callable[[], nn.Module],
        *,
        cross_attn: MultiHeadAttention | None = None,
        norm_first: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn, self.attn_norm = self_attn, norm()
        self.cross_attn = cross_attn
        self.cross_norm = norm() if cross_attn is not None else None
        self.ffn, self.ffn_norm = ffn, norm()
        # None rather than nn.Identity at p = 0: a module call per sublayer costs ~4 us, which
        # token-by-token decoding pays 8 times per token in a 4-layer model.
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None

    def _residual(self, x: Tensor, norm: nn.Module, sublayer: Callable[[Tensor], Tensor]):
        out = sublayer(norm(x) if self.norm_first else x)
        if self.dropout is not None:
            out = self.dropout(out)
        return x + out if self.norm_first else norm(x + out)

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
        cache: KVCache | None = None,
        cross_cache: KVCache | None = None,
    ) -> Tensor:
        """x (B, T, d) -> (B, T, d); `memory` (B, S, d) is the encoder output (cross-attention)."""

        def self_attention(h):
            return self.self_attn(h, causal=causal, key_padding_mask=key_padding_mask,
                                  positional=positional, positions=positions, cache=cache)[0]

        x = self._residual(x, self.attn_norm, self_attention)
        if self.cross_attn is not None:

            def cross_attention(h):
                return self.cross_attn(h, memory, key_padding_mask=memory_key_padding_mask,
                                       cache=cross_cache)[0]

            x = self._residual(x, self.cross_norm, cross_attention)
        return self._residual(x, self.ffn_norm, self.ffn)
