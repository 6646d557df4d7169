"""Prompts of a random function class for in-context learning from scratch (Garg et al., 2022).

Linear regression in d dimensions: each prompt draws its own w ~ N(0, I_d) and K inputs
x_i ~ N(0, I_d), and y_i = w . x_i (noise-free, as in the paper). Var(y) = d, so the squared
error divided by d is 1 for the predictor that always says 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnlab.errors import AttnlabError

#: function classes this module draws from
FUNCTION_CLASSES = ("linear-regression",)


def sample_linear_regression(n_prompts: int, n_points: int, n_dims: int,
                             generator: torch.Generator, *, active_dims: int | None = None,
                             ) -> tuple[Tensor, Tensor]:
    """Draw `n_prompts` linear functions and `n_points` inputs for each.

    Args:
        n_prompts: B, one function each.
        n_points: K, (x, y) pairs per prompt.
        n_dims: d, the input dimension.
        generator: the only source of randomness (same state -> same prompts).
        active_dims: curriculum (Garg et al.): only the first `active_dims` coordinates of x
            are non-zero (default all d).

    Returns:
        xs (B, K, d) and ys (B, K), float32.
    """
    if min(n_prompts, n_points, n_dims) < 1:
        raise AttnlabError(f"n_prompts, n_points and n_dims must be >= 1, got {n_prompts}, "
                           f"{n_points}, {n_dims}")
    active = n_dims if active_dims is None else active_dims
    if not 1 <= active <= n_dims:
        raise AttnlabError(f"active_dims must be in [1, {n_dims}], got {active_dims}")
    xs = torch.randn(n_prompts, n_points, n_dims, generator=generator)  # (B, K, d)
    xs[..., active:] = 0.0
    w = torch.randn(n_prompts, n_dims, 1, generator=generator)  # (B, d, 1)
    ys = (xs @ w).squeeze(-1)  # (B, K)
    return xs, ys
