"""The one mask helper: every mechanism builds its masks and masked softmax here.

Masks are boolean with True = may attend. They are built from integer *positions* rather than
shapes, so a blocked mechanism asks for exactly the (query block, key block) tiles it computes
and never materializes an n x n mask.
"""

from __future__ import annotations

import torch
from torch import Tensor


def query_positions(n_queries: int, n_keys: int, device=None) -> Tensor:
    """Positions of the queries among the keys: the last `n_queries` of `n_keys` (cached decoding).

    Cross-attention with more queries than keys starts at 0 (no positional tie).
    """
    start = max(n_keys - n_queries, 0)
    return torch.arange(start, start + n_queries, device=device)


def keep_mask(
    q_idx: Tensor,
    k_idx: Tensor,
    *,
    causal: bool = False,
    window: int | None = None,
    key_padding_mask: Tensor | None = None,
) -> Tensor | None:
    """Boolean mask of which query may attend which key, or None when all may.

    Args:
        q_idx: (..., Tq) query positions.
        k_idx: (..., Tk) key positions, same leading dims as `q_idx`.
        causal: a query sees keys at positions <= its own.
        window: a query sees keys less than `window` positions away (and, when causal, only
            behind it): a band of `window` keys causal, `2 * window - 1` bidirectional.
        key_padding_mask: (B, ..., Tk), True = a real key, already laid out like `k_idx`.

    Returns:
        (B or 1, 1, ..., Tq, Tk), broadcasting against scores (B, H, ..., Tq, Tk).
    """
    keep = None
    if causal or window is not None:
        rel = q_idx.unsqueeze(-1) - k_idx.unsqueeze(-2)  # (..., Tq, Tk): how far the key is behind
    if causal:
        keep = rel >= 0
    if window is not None:
        band = (rel < window) & (rel > -window)
        keep = band if keep is None else keep & band
    if key_padding_mask is not None:
        pad = key_padding_mask.unsqueeze(-2)  # (B, ..., 1, Tk)
        keep = pad if keep is None else keep & pad
        return keep.unsqueeze(1)  # (B, 1, ..., Tq, Tk)
    if keep is None:
        return None
    return keep[None, None]  # (1, 1, ..., Tq, Tk)


def masked_softmax(scores: Tensor, keep: Tensor | None, *, in_place: bool = False,
                   rows_keep_some: bool = False) -> Tensor:
    """Softmax over the last dim restricted to `keep`; rows with nothing to keep are zeros.

    A finite minimum instead of -inf keeps fully masked rows free of NaN in both passes; the
    final multiply turns their uniform distribution into zeros.

    Two savings for callers that can vouch for them:
      in_place: `scores` is the caller's own temporary; the minimum is *added* into it where
        `keep` is False (a float32 score below 1e31 then is the minimum), through a float
        copy of `keep`: on CPU an add runs several times faster than masked_fill, so use it
        where `keep` broadcasts (much smaller than the scores). Masked scores must be finite.
      rows_keep_some: every row keeps at least one key, so no row needs zeroing.
    """
    if keep is None:
        return scores.softmax(dim=-1)
    low = torch.finfo(scores.dtype).min
    if in_place:
        scores = scores.add_((~keep).to(scores.dtype) * low)  # 0 (kept) or the minimum
    else:
        scores = scores.masked_fill(~keep, low)
    if rows_keep_some:
        return scores.softmax(dim=-1)
    return scores.softmax(dim=-1) * keep.any(dim=-1, keepdim=True)


def dense_keep_mask(
    n_queries: int,
    n_keys: int,
    *,
    causal: bool = False,
    window: int | None = None,
    key_padding_mask: Tensor | None = None,
    device=None,
) -> Tensor | None:
    """`keep_mask` over every query and key: (B or 1, 1, Tq, Tk). For dense mechanisms only."""
    if not causal and window is None and key_padding_mask is None:
        return None
    q_idx = query_positions(n_queries, n_keys, device=device)
    k_idx = torch.arange(n_keys, device=device)
    return keep_mask(q_idx, k_idx, causal=causal, window=window, key_padding_mask=key_padding_mask)
