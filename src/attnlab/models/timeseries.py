"""A Transformer forecaster: an encoder reads a window of past values and one linear layer
writes the next `horizon` values at once (direct multi-step forecasting).

    z = (past - mean) / std                      per window (instance normalization)
    h = Stack(Pos(Linear(z_t)))                  (B, C, d): one token per past step
    forecast = Linear(flatten(h)) * std + mean   (B, H)

Instance normalization without learned affine (RevIN, Kim et al., 2022) lets a model trained on
one level of a trending series forecast at another; the flattened head over all tokens is
PatchTST's (Nie et al., 2023), with one token per step instead of per patch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnlab.errors import AttnlabError, ConfigError
from attnlab.models.config import TransformerConfig, check_positive
from attnlab.models.transformer import (
    ModelInfo,
    TransformerStack,
    init_gpt2_,
    linear_flops,
    positional_from_config,
)

#: floor of a window's standard deviation, relative to 1: a flat window is not divided by ~0
STD_FLOOR = 1e-5


@dataclass
class ForecastConfig(TransformerConfig):
    """An encoder forecaster over past windows of a univariate series.

    Args:
        context: past steps the model reads (its sequence length; max_len must be >= it).
        horizon: future steps it forecasts.
        season: the series' seasonal period in steps (for a file series; a named series has
            its own); the seasonal-naive baseline needs context >= season.
    """

    positional: str = "sinusoidal"
    context: int = 36
    horizon: int = 12
    season: int = 12

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "context", "horizon", "season")
        if self.positional == "learned" and self.max_len < self.context:
            raise ConfigError(f"learned positions need max_len >= context, got max_len "
                              f"{self.max_len} < context {self.context}")


def window_stats(past: Tensor) -> tuple[Tensor, Tensor]:
    """Per-window mean and std, each (B, 1)."""
    mean = past.mean(dim=1, keepdim=True)
    std = past.std(dim=1, keepdim=True, unbiased=False).clamp_min(STD_FLOOR)
    return mean, std


class Forecaster(ModelInfo, nn.Module):
    """past (B, context) -> forecast (B, horizon), in the series' own units.

    Args:
        config: a `ForecastConfig`.
    """

    def __init__(self, config: ForecastConfig):
        super().__init__()
        self.config = c = config
        self.in_proj = nn.Linear(1, c.d_model)  # continuous input: a value -> a token
        self.positional = positional_from_config(c)
        self.drop = nn.Dropout(c.dropout) if c.dropout > 0 else nn.Identity()
        self.stack = TransformerStack(c, c.n_layers)
        self.head = nn.Linear(c.context * c.d_model, c.horizon)
        init_gpt2_(self, c.n_layers)

    def forward_features(self, z: Tensor) -> Tensor:
        """Normalized past (B, C) -> tokens (B, C, d)."""
        x = self.positional.embed(self.in_proj(z.unsqueeze(-1)))  # (B, C, d)
        return self.stack(self.drop(x), positional=self.positional)

    def forward_head(self, h: Tensor) -> Tensor:
        """(B, C, d) -> normalized forecast (B, H)."""
        return self.head(h.flatten(1))

    def forward(self, past: Tensor) -> Tensor:
        if past.dim() != 2 or past.shape[1] != self.config.context:
            raise AttnlabError(f"past windows must be shaped (batch, {self.config.context}), got "
                               f"{tuple(past.shape)}")
        if not bool(torch.isfinite(past).all()):
            raise AttnlabError("past windows hold NaN or infinite values (gaps); fill them first")
        mean, std = window_stats(past)
        return self.forward_head(self.forward_features((past - mean) / std)) * std + mean

    def forward_flops(self, seq_len: int | None = None) -> float:
        n = self.config.context if seq_len is None else seq_len
        return (n * linear_flops(self.in_proj) + self.stack.forward_flops(n, causal=False)
                + linear_flops(self.head))
