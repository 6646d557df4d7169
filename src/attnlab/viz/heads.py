"""Scores that find what a head does, from its attention map, not by eye.

- previous-token score: mean attention from position i to position i - 1 (over i >= 1).
- induction score (Olsson et al., 2022): for a token that occurred before, mean attention to
  the token that *followed* its most recent earlier occurrence: on "... A B ... A" the head
  attends from the second A to B, the copy that predicts what comes next.

Both are in [0, 1] for attention distributions; 1 is a head that does nothing else.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnlab.errors import AttnlabError


def _check(weights: Tensor) -> None:
    if weights.dim() != 4 or weights.shape[-1] != weights.shape[-2]:
        raise AttnlabError(f"head scores need square (B, H, T, T) self-attention, "
                           f"got {tuple(weights.shape)}")


def previous_token_score(weights: Tensor) -> Tensor:
    """(H,) mean of weights[b, h, i, i - 1] over batch rows and positions i >= 1."""
    _check(weights)
    return weights.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, 2))


def induction_targets(tokens: Tensor) -> Tensor:
    """(B, T) position after the most recent earlier occurrence of each token, -1 if none."""
    B, T = tokens.shape
    same = tokens[:, :, None] == tokens[:, None, :]  # (B, i, j)
    earlier = torch.ones(T, T, dtype=torch.bool).tril(-1)  # j < i
    pos = torch.arange(T).expand(B, T, T)
    last = torch.where(same & earlier, pos, -1).amax(-1)  # (B, T) most recent j, or -1
    return torch.where(last >= 0, last + 1, -1)


def induction_score(weights: Tensor, tokens: Tensor) -> Tensor:
    """(H,) mean attention to the induction target over positions that have one.

    Args:
        weights: (B, H, T, T) self-attention of one layer.
        tokens: (B, T) the token ids the model read.
    """
    _check(weights)
    if tokens.shape != (weights.shape[0], weights.shape[2]):
        raise AttnlabError(f"tokens {tuple(tokens.shape)} do not match the weights "
                           f"{tuple(weights.shape)}")
    target = induction_targets(tokens)  # (B, T)
    has = target >= 0
    if not has.any():
        raise AttnlabError("no token repeats: the induction score needs repeated tokens")
    picked = weights.gather(-1, target.clamp_min(0)[:, None, :, None].expand(
        -1, weights.shape[1], -1, 1)).squeeze(-1)  # (B, H, T)
    return (picked * has[:, None]).sum(dim=(0, 2)) / has.sum()


def head_scores(records, tokens: Tensor) -> list[dict]:
    """One row per (layer, head) of the self-attention records: previous-token and induction."""
    rows = []
    for layer, rec in enumerate(r for r in records if r.kind == "self"):
        prev, ind = previous_token_score(rec.weights), induction_score(rec.weights, tokens)
        rows += [{"layer": layer, "name": rec.name, "head": h, "previous_token": float(prev[h]),
                  "induction": float(ind[h])} for h in range(rec.n_heads)]
    return rows
