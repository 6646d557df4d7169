"""Attention rollout (Abnar & Zuidema, 2020): how much each output position draws on each input
token through all layers, treating the residual stream as attention to oneself.

    A_l = (1 - r) * mean_heads(W_l) + r * I,   rows renormalized,   R = A_L ... A_2 A_1

with r = 0.5 as in the paper. For encoders (and ViT-style models: any stack of self-attention
over one sequence); a decoder's cross-attention records are not part of the product.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnlab.errors import AttnlabError
from attnlab.viz.capture import AttentionRecord


def attention_rollout(records: list[AttentionRecord], *, residual: float = 0.5,
                      prefix: str | None = None) -> Tensor:
    """(B, T, T) rollout of the self-attention records, in the order they ran.

    Args:
        records: from `capture_attention` (one forward pass).
        residual: weight r of the identity (the skip connection); 0 multiplies raw attention.
        prefix: keep only records whose module path starts with it (e.g. "encoder." in an
            encoder-decoder).

    Departure from the paper: mechanisms whose weights are not distributions (linformer's
    signed W F) are refused rather than rolled out.
    """
    if not 0.0 <= residual <= 1.0:
        raise AttnlabError(f"rollout residual must be in [0, 1], got {residual}")
    chosen = [r for r in records if r.kind == "self" and (prefix is None or
                                                          r.name.startswith(prefix))]
    if not chosen:
        raise AttnlabError("no self-attention records to roll out")
    stacks = sorted({r.name.split(".")[0] for r in chosen})
    if prefix is None and {"encoder", "decoder"} <= set(stacks):
        # the decoder's self-attention does not act on the encoder's tokens: one chain each
        raise AttnlabError("the records hold an encoder and a decoder; roll out one of them "
                           "with prefix='encoder.' or prefix='decoder.'")
    rollout = None
    for rec in chosen:
        if rec.mechanism == "linformer":
            raise AttnlabError("attention rollout needs attention distributions; linformer's "
                               "weights mapped to positions (W F) are signed")
        T, Tk = rec.weights.shape[-2:]
        if Tk != T:
            raise AttnlabError(f"{rec.name}: rollout needs square self-attention, got "
                               f"{T} queries over {Tk} keys")
        eye = torch.eye(T, dtype=rec.weights.dtype)
        a = (1 - residual) * rec.weights.mean(1) + residual * eye  # (B, T, T)
        a = a / a.sum(-1, keepdim=True).clamp_min(1e-12)
        rollout = a if rollout is None else a @ rollout
    return rollout
