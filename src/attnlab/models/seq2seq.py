"""The encoder-decoder of "Attention Is All You Need" (Vaswani et al., 2017).

    memory = Encoder(Embed(src) * sqrt(d) + PE)
    logits = Head(Decoder(Embed(tgt) * sqrt(d) + PE, memory))   # causal self-attn + cross-attn

Defaults follow the paper (post-norm, sinusoidal positions, ReLU, shared embeddings tied to the
output). Departure: `torch.nn.Transformer` and tensor2tensor add a final LayerNorm after each
stack; `final_norm=True` reproduces that, and with copied weights this model then equals
`torch.nn.Transformer` (tested with norm_first False and True).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from attnlab.models.config import Seq2SeqConfig
from attnlab.models.transformer import (
    ModelInfo,
    StackCache,
    TransformerStack,
    check_tokens,
    linear_flops,
    positional_from_config,
)


class EncoderDecoder(ModelInfo, nn.Module):
    """Sequence-to-sequence Transformer.

    `forward_features(src, tgt)` gives the decoder's (B, T, d) states, `forward_head` the target
    vocabulary logits; `encode` and `decode` split the two halves for generation.

    Args:
        config: a `Seq2SeqConfig`.
    """

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.config = c = config
        self.src_emb = nn.Embedding(c.vocab_size, c.d_model)
        self.tgt_emb = self.src_emb if c.share_embeddings else nn.Embedding(c.target_vocab,
                                                                            c.d_model)

        self.src_positional = positional_from_config(c)
        self.tgt_positional = positional_from_config(c)
        self.drop = nn.Dropout(c.dropout) if c.dropout > 0 else nn.Identity()
        self.encoder = TransformerStack(c, c.n_layers)
        self.decoder = TransformerStack(c, c.decoder_layers, cross=True)
        self.head = nn.Linear(c.d_model, c.target_vocab, bias=False)
        self._reset_parameters()
        if c.tie_embeddings:
            self.head.weight = self.tgt_emb.weight
        self.emb_scale = math.sqrt(c.d_model) if c.scale_embeddings else 1.0

    def _reset_parameters(self) -> None:
        # Xavier-uniform matrices as torch.nn.Transformer; embeddings N(0, d^-1/2) so that the
        # sqrt(d) scaling gives unit-variance inputs (tensor2tensor).
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for emb in {self.src_emb, self.tgt_emb}:
            nn.init.normal_(emb.weight, std=self.config.d_model ** -0.5)

    def embed_source(self, src: Tensor) -> Tensor:
        check_tokens(src, self.config.vocab_size, "source token ids")
        return self.drop(self.src_positional.embed(self.src_emb(src) * self.emb_scale))

    def embed_target(self, tgt: Tensor, start: int = 0) -> Tensor:
        check_tokens(tgt, self.config.target_vocab, "target token ids")
        return self.drop(self.tgt_positional.embed(self.tgt_emb(tgt) * self.emb_scale, start))

    def encode(self, src: Tensor, *, src_key_padding_mask: Tensor | None = None) -> Tensor:
        """src (B, S) -> memory (B, S, d)."""
        return self.encoder(self.embed_source(src), key_padding_mask=src_key_padding_mask,
                            positional=self.src_positional)

    def decode(self, tgt: Tensor, memory: Tensor, *,
               memory_key_padding_mask: Tensor | None = None,
               tgt_key_padding_mask: Tensor | None = None,
               cache: StackCache | None = None) -> Tensor:
        """tgt (B, T) -> (B, T, d), attending causally to itself and fully to `memory`."""
        start = cache.seen if cache is not None else 0
        return self.decoder(self.embed_target(tgt, start), causal=True,
                            key_padding_mask=tgt_key_padding_mask, memory=memory,
                            memory_key_padding_mask=memory_key_padding_mask,
                            positional=self.tgt_positional, cache=cache)

    def new_cache(self) -> StackCache:
        """An empty decoder cache (self-attention keys grow; cross-attention keys fill once)."""
        return self.decoder.new_cache()

    def forward_features(self, src: Tensor, tgt: Tensor, *,
                         src_key_padding_mask: Tensor | None = None,
                         tgt_key_padding_mask: Tensor | None = None) -> Tensor:
        memory = self.encode(src, src_key_padding_mask=src_key_padding_mask)
        return self.decode(tgt, memory, memory_key_padding_mask=src_key_padding_mask,
                           tgt_key_padding_mask=tgt_key_padding_mask)

    def forward_head(self, h: Tensor) -> Tensor:
        """(B, T, d) -> (B, T, target vocab) logits."""
        return self.head(h)

    def forward(self, src: Tensor, tgt: Tensor, *, src_key_padding_mask: Tensor | None = None,
                tgt_key_padding_mask: Tensor | None = None) -> Tensor:
        return self.forward_head(self.forward_features(
            src, tgt, src_key_padding_mask=src_key_padding_mask,
            tgt_key_padding_mask=tgt_key_padding_mask))

    def forward_flops(self, seq_len: int) -> float:
        """Source and target both `seq_len` tokens; per-token figures divide by the target."""
        return (self.encoder.forward_flops(seq_len, causal=False)
                + self.decoder.forward_flops(seq_len, causal=True, n_memory=seq_len)
                + seq_len * linear_flops(self.head))
