"""Encoder-only, BERT-style model (Devlin et al., 2019): bidirectional Blocks and a pooled
output for sequence-level tasks.

    x = Norm_emb(TokEmb(idx) + PosEmb(pos) + TypeEmb(token_type))  ->  N Blocks  ->  (B, T, d)

With `norm_first=False`, learned positions, GELU, `type_vocab_size=2` and `embed_norm=True` it
is BERT exactly (`attnlab.interop.encoder_from_hf` loads BERT checkpoints that way).

Departures from BERT, all defaults that a config can undo: no token-type embeddings
(`type_vocab_size=0`), no embedding LayerNorm (`embed_norm=False`) and pre-norm Blocks
(`norm_first=True`, which trains more stably from scratch). The pretraining heads (MLM, NSP) are
not part of the model: a task adds its one layer with `reset_head`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnlab.errors import AttnlabError
from attnlab.layers.norms import build_norm
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
        self.type_emb = nn.Embedding(c.type_vocab_size, c.d_model) if c.type_vocab_size else None
        self.embed_norm = (build_norm(c.norm, c.d_model, c.norm_eps, bias=c.bias)
                           if c.embed_norm else nn.Identity())
        self.drop = nn.Dropout(c.dropout) if c.dropout > 0 else nn.Identity()
        self.stack = TransformerStack(c, c.n_layers)
        self.pooler = Pooler(c.d_model, c.pooling)
        self.head = classifier(c.d_model, c.num_classes)
        init_gpt2_(self, c.n_layers)

    def reset_head(self, num_classes: int) -> Encoder:
        """Replace the classifier with a fresh linear layer to `num_classes` (0: none).

        Args:
            num_classes: outputs of the new head; 0 leaves features only.

        Returns:
            The model itself, as `nn.Module.train` does: `Encoder(cfg).reset_head(3)` is a
            classifier.
        """
        self.head = classifier(self.config.d_model, num_classes)
        return self

    def embed(self, idx: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        """Token + position (+ token-type) embeddings, normed when `embed_norm`: (B, T, d)."""
        check_tokens(idx, self.config.vocab_size)
        x = self.positional.embed(self.tok_emb(idx))
        if self.type_emb is not None:
            if token_type_ids is None:  # one segment: every token is of type 0, as in BERT
                token_type_ids = torch.zeros_like(idx)
            elif token_type_ids.shape != idx.shape:
                raise AttnlabError(f"token_type_ids have shape {tuple(token_type_ids.shape)}, "
                                   f"the token ids {tuple(idx.shape)}; give one type per token")
            check_tokens(token_type_ids, self.config.type_vocab_size, "token type ids")
            x = x + self.type_emb(token_type_ids)
        elif token_type_ids is not None:
            raise AttnlabError("this encoder has no token-type embeddings (type_vocab_size=0); "
                               "drop token_type_ids or build it with type_vocab_size > 0")
        return self.drop(self.embed_norm(x))

    def forward_features(self, idx: Tensor, *, key_padding_mask: Tensor | None = None,
                         token_type_ids: Tensor | None = None) -> Tensor:
        """idx (B, T) -> (B, T, d_model).

        Args:
            key_padding_mask: (B, T) True = real token.
            token_type_ids: (B, T) segment of each token (default all 0); needs
                `type_vocab_size > 0`.
        """
        x = self.embed(idx, token_type_ids)
        return self.stack(x, key_padding_mask=key_padding_mask, positional=self.positional)

    def forward_head(self, h: Tensor, *, key_padding_mask: Tensor | None = None,
                     pre_logits: bool = False) -> Tensor:
        """(B, T, d) -> pooled (B, d) -> classifier; `pre_logits` stops after pooling."""
        pooled = self.pooler(h, key_padding_mask)
        return pooled if pre_logits else self.head(pooled)

    def forward(self, idx: Tensor, *, key_padding_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> Tensor:
        h = self.forward_features(idx, key_padding_mask=key_padding_mask,
                                  token_type_ids=token_type_ids)
        return self.forward_head(h, key_padding_mask=key_padding_mask)

    def forward_flops(self, seq_len: int) -> float:
        heads = linear_flops(self.pooler) + linear_flops(self.head)  # once per sequence
        return self.stack.forward_flops(seq_len, causal=False) + heads
