"""Encoder-only, BERT-style model (Devlin et al., 2019): bidirectional Blocks and a pooled
output for sequence-level tasks.

Departures from BERT: no segment (token-type) embeddings and no embedding LayerNorm by default;
pre-norm unless `norm_first=False`. The pretraining heads (MLM, NSP) are not part of the model:
a task adds its one layer with `reset_head`.
"""

from __future__ import annotations

from torch import Tensor, nn

from attnlab.models.config import EncoderConfig
from attnlab.models.heads import Pooler, classifier
from attnlab.models.transformer import (
    ModelInfo,
    TransformerStack,
    check_tokens,
    init_gpt2_,
    linear_flops,
    positional_from_config,
)


class Encoder(ModelInfo, nn.Module):
    """Bidirectional encoder. `forward_features` gives (B, T, d) token states; `forward_head`
    pools them to (B, d) and applies the classifier (Identity when `num_classes` is 0).

    Args:
        config: an `EncoderConfig`.
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.d_model)
        self.positional = positional_from_config(c)
        self.drop = nn.Dropout(c.dropout) if c.dropout > 0 else nn.Identity()
        self.stack = TransformerStack(c, c.n_layers)
        self.pooler = Pooler(c.d_model, c.pooling)
        self.head = classifier(c.d_model, c.num_classes)
        init_gpt2_(self, c.n_layers)

    def reset_head(self, num_classes: int) -> None:
        """Replace the classifier with a fresh linear layer to `num_classes` (0: none)."""
        self.head = classifier(self.config.d_model, num_classes)

    def forward_features(self, idx: Tensor, *, key_padding_mask: Tensor | None = None) -> Tensor:
        """idx (B, T) -> (B, T, d_model); `key_padding_mask` (B, T) True = real token."""
        check_tokens(idx, self.config.vocab_size)
        x = self.drop(self.positional.embed(self.tok_emb(idx)))
        return self.stack(x, key_padding_mask=key_padding_mask, positional=self.positional)

    def forward_head(self, h: Tensor, *, key_padding_mask: Tensor | None = None,
                     pre_logits: bool = False) -> Tensor:
        """(B, T, d) -> pooled (B, d) -> classifier; `pre_logits` stops after pooling."""
        pooled = self.pooler(h, key_padding_mask)
        return pooled if pre_logits else self.head(pooled)

    def forward(self, idx: Tensor, *, key_padding_mask: Tensor | None = None) -> Tensor:
        h = self.forward_features(idx, key_padding_mask=key_padding_mask)
        return self.forward_head(h, key_padding_mask=key_padding_mask)

    def forward_flops(self, seq_len: int) -> float:
        heads = linear_flops(self.pooler) + linear_flops(self.head)  # once per sequence
        return self.stack.forward_flops(seq_len, causal=False) + heads

