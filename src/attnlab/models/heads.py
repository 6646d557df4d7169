"""Small heads that sit on a model's features: pooling and classification."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def masked_mean(h: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
    """(B, T, d) -> (B, d): the mean over real tokens (mask (B, T), True = real), padding
    excluded; a row without any real token gives zeros."""
    if key_padding_mask is None:
        return h.mean(dim=1)
    w = key_padding_mask.to(h.dtype).unsqueeze(-1)  # (B, T, 1)
    return (h * w).sum(1) / w.sum(1).clamp(min=1.0)


class Pooler(nn.Module):
    """(B, T, d) -> (B, d).

    "cls": the first token through dense + tanh (BERT's pooler). "mean": the mean over real
    tokens (sentence-transformers), padding excluded.
    """

    def __init__(self, d_model: int, mode: str = "cls"):
        super().__init__()
        self.mode = mode
        self.dense = nn.Linear(d_model, d_model) if mode == "cls" else None

    def forward(self, h: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        if self.mode == "cls":
            return torch.tanh(self.dense(h[:, 0]))
        return masked_mean(h, key_padding_mask)


def classifier(d_model: int, num_classes: int) -> nn.Module:
    """One linear layer to `num_classes` logits, or Identity for 0 (features only)."""
    return nn.Linear(d_model, num_classes) if num_classes > 0 else nn.Identity()
