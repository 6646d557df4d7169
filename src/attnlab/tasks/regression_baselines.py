"""Estimators an in-context regressor is compared with at every prompt length k (Garg et al.,
2022): each predicts y_{k+1} at x_{k+1} from the k pairs before it, for every k at once.

All return (B, K) predictions: column k uses pairs 0..k-1 only, and k = 0 (no pairs) predicts 0.
"""

from __future__ import annotations

import torch
from torch import Tensor


def least_squares(xs: Tensor, ys: Tensor) -> Tensor:
    """Minimum-norm least squares: w = pinv(X_k) y_k, then x_{k+1} . w. With k < d pairs the
    system is under-determined and the minimum-norm solution is the Bayes-optimal estimate
    for w ~ N(0, I) without noise.

    Args:
        xs: (B, K, d) inputs.
        ys: (B, K) targets.
    """
    x64, y64 = xs.double(), ys.double()
    preds = torch.zeros_like(y64)  # (B, K)
    for k in range(1, xs.shape[1]):
        w = torch.linalg.pinv(x64[:, :k]) @ y64[:, :k, None]  # (B, d, 1)
        preds[:, k] = (x64[:, k, None] @ w)[:, 0, 0]
    return preds.to(ys.dtype)


def nearest_neighbours(xs: Tensor, ys: Tensor, n_neighbours: int = 3) -> Tensor:
    """Mean of the y of the `n_neighbours` pairs whose x is nearest (Euclidean) to x_{k+1};
    all k pairs while k < n_neighbours.

    Args:
        xs: (B, K, d) inputs.
        ys: (B, K) targets.
        n_neighbours: how many.
    """
    preds = torch.zeros_like(ys)
    for k in range(1, xs.shape[1]):
        dist = torch.cdist(xs[:, k:k + 1], xs[:, :k])[:, 0]  # (B, k)
        nearest = dist.topk(min(n_neighbours, k), dim=-1, largest=False).indices
        preds[:, k] = ys[:, :k].gather(1, nearest).mean(-1)
    return preds


def averaging(xs: Tensor, ys: Tensor) -> Tensor:
    """w = mean_i y_i x_i (unbiased for w when x ~ N(0, I)), then x_{k+1} . w.

    Args:
        xs: (B, K, d) inputs.
        ys: (B, K) targets.
    """
    sums = torch.cumsum(ys[..., None] * xs, dim=1)  # (B, K, d) sum of the first k+1 pairs
    counts = torch.arange(1, xs.shape[1] + 1, dtype=xs.dtype, device=xs.device)
    w = sums / counts[:, None]  # (B, K, d): row k averages pairs 0..k
    preds = torch.zeros_like(ys)
    preds[:, 1:] = (w[:, :-1] * xs[:, 1:]).sum(-1)
    return preds


BASELINES = {"least_squares": least_squares, "3_nearest_neighbours": nearest_neighbours,
             "averaging": averaging}


def normalized_errors(preds: Tensor, ys: Tensor, n_dims: int) -> Tensor:
    """(B, K) predictions and targets -> (K,) mean squared error at each k, divided by d."""
    return ((preds.double() - ys.double()) ** 2).mean(0) / n_dims
