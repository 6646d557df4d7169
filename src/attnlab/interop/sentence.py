"""Sentence embeddings from an encoder, as sentence-transformers computes them for
all-MiniLM-L6-v2: token states -> mean over real tokens -> L2 normalization."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from attnlab.errors import AttnlabError
from attnlab.interop.tokenizer import HFTokenizer
from attnlab.models import Encoder
from attnlab.models.heads import masked_mean


def sentence_embedding(model: Encoder, tokenizer: HFTokenizer, texts: Sequence[str], *,
                       max_length: int | None = None, batch_size: int = 32,
                       normalize: bool = True) -> Tensor:
    """One unit vector per text: the mean of the encoder's last hidden states over the text's
    real tokens (special tokens included, padding excluded), L2-normalized.

    This is sentence-transformers' Transformer -> Pooling(mean) -> Normalize pipeline, so
    cosine similarity is a dot product. The model's own pooler (`pooling`) is not used.

    Args:
        model: an attnlab `Encoder` (e.g. `load_pretrained("all-MiniLM-L6-v2")`).
        tokenizer: its `HFTokenizer`.
        texts: the sentences.
        max_length: longest input in tokens; default the tokenizer's `max_length` (256 for
            all-MiniLM-L6-v2, from its sentence_bert_config.json), else the model's `max_len`.
        batch_size: texts per forward pass. Batches pad to their longest text; padding does
            not change a text's embedding.
        normalize: L2-normalize (sentence-transformers' Normalize module); False gives the
            plain mean.

    Returns:
        (len(texts), d_model) float tensor.
    """
    if not isinstance(model, Encoder):
        raise AttnlabError(f"sentence embeddings need an Encoder, got {type(model).__name__}")
    if not hasattr(tokenizer, "batch"):
        raise AttnlabError("sentence embeddings need the model's Hugging Face tokenizer "
                           "(HFTokenizer, from the folder's tokenizer.json)")
    max_length = min(max_length or tokenizer.max_length or model.config.max_len,
                     model.config.max_len)
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                ids, mask, types = tokenizer.batch(texts[start:start + batch_size],
                                                   max_length=max_length)
                h = model.forward_features(ids, key_padding_mask=mask, token_type_ids=(
                    types if model.config.type_vocab_size else None))
                pooled = masked_mean(h, mask)
                out.append(F.normalize(pooled, dim=-1) if normalize else pooled)
    finally:
        model.train(was_training)
    if not out:
        raise AttnlabError("give at least one text to embed")
    return torch.cat(out)
