"""A GPT that reads real vectors instead of tokens: in-context learning of a function class
(Garg et al., 2022, "What Can Transformers Learn In-Context? A Case Study of Simple Function
Classes").

A prompt (x_1, f(x_1), ..., x_k, f(x_k), x_{k+1}) is one sequence of 2K vectors: each x_i is a
token, each y_i = f(x_i) is a token of its own (the scalar in the first coordinate, zeros after,
as in the paper). A linear read-in replaces the token embedding, attnlab's causal
`TransformerStack` runs unchanged, and a linear read-out at each x_i token predicts y_i from the
i - 1 pairs before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnlab.errors import AttnlabError, ConfigError
from attnlab.models.config import GPTConfig
from attnlab.models.transformer import (
    ModelInfo,
    TransformerStack,
    init_gpt2_,
    interleave,
    linear_flops,
    positional_from_config,
)


@dataclass
class FunctionGPTConfig(GPTConfig):
    """A causal GPT over (x, f(x)) pairs.

    Args:
        n_dims: dimension d of the inputs x.
        n_points: most (x, y) pairs in one prompt; max_len must be >= 2 * n_points.

    `vocab_size` and `tie_embeddings` are unused (there are no tokens).
    """

    n_dims: int = 5
    n_points: int = 40
    max_len: int = 80

    def __post_init__(self):
        super().__post_init__()
        if self.n_dims < 1 or self.n_points < 1:
            raise ConfigError(f"n_dims and n_points must be >= 1, got {self.n_dims}, "
                              f"{self.n_points}")
        if self.max_len < 2 * self.n_points:
            raise ConfigError(f"max_len {self.max_len} is too short for {self.n_points} (x, y) "
                              f"pairs; set max_len >= {2 * self.n_points}")


def interleave_points(xs: Tensor, ys: Tensor) -> Tensor:
    """xs (B, K, d), ys (B, K) -> (B, 2K, d): x_1, [y_1, 0, ...], x_2, [y_2, 0, ...], ..."""
    ys_wide = torch.zeros_like(xs)
    ys_wide[..., 0] = ys  # (B, K, d) the scalar padded with zeros
    return interleave(xs, ys_wide)


class FunctionGPT(ModelInfo, nn.Module):
    """Causal transformer predicting y_i from (x_1, y_1, ..., x_{i-1}, y_{i-1}, x_i).

    Args:
        config: a `FunctionGPTConfig`.
    """

    def __init__(self, config: FunctionGPTConfig):
        super().__init__()
        self.config = c = config
        self.read_in = nn.Linear(c.n_dims, c.d_model)
        self.positional = positional_from_config(c)
        self.drop = nn.Dropout(c.dropout) if c.dropout > 0 else nn.Identity()
        self.stack = TransformerStack(c, c.n_layers)
        self.read_out = nn.Linear(c.d_model, 1)
        init_gpt2_(self, c.n_layers)

    def forward(self, xs: Tensor, ys: Tensor) -> Tensor:
        """xs (B, K, n_dims), ys (B, K) -> (B, K): the prediction of each y_i from the pairs
        before it (y_i itself comes after x_i, so it is never seen)."""
        c = self.config
        if xs.dim() != 3 or xs.shape[-1] != c.n_dims or ys.shape != xs.shape[:2]:
            raise AttnlabError(f"expected xs (B, K, {c.n_dims}) and ys (B, K), got "
                               f"{tuple(xs.shape)} and {tuple(ys.shape)}")
        if xs.shape[1] > c.n_points:
            raise AttnlabError(f"{xs.shape[1]} points exceed the model's n_points "
                               f"{c.n_points}")
        z = self.read_in(interleave_points(xs, ys))  # (B, 2K, d_model)
        h = self.stack(self.drop(self.positional.embed(z, 0, None)), causal=True,
                       positional=self.positional)
        return self.read_out(h[:, ::2]).squeeze(-1)  # (B, K) read at the x tokens

    def forward_flops(self, seq_len: int) -> float:
        return (self.stack.forward_flops(seq_len, causal=True)
                + seq_len * (linear_flops(self.read_in) + linear_flops(self.read_out)))
