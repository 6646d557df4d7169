"""`hard`: hard attention — each query takes the value of its best-scoring key (or top k).

Forward: weights are one-hot on the argmax of the scores (k-hot, each selected key weighted 1/k,
for `k > 1`), so the output is exactly a selected value (or the mean of k of them). Backward: the
argmax has no useful gradient, so the straight-through estimator passes the gradient of the
softmax in its place (Bengio et al., 2013), at temperature `tau`.

With `gumbel=True`, training samples the selection instead: Gumbel(0, 1) noise is added to the
scores before the argmax, which draws the key from softmax(scores) (the Gumbel-max trick, used as
the straight-through Gumbel-softmax of Jang et al., 2017). Evaluation is always the
deterministic argmax.

Departure from Xu et al. (2015), whose "hard" attention samples a location and trains with
REINFORCE: the straight-through estimator here is lower-variance and needs no reward baseline.
"""

from __future__ import annotations

import torch

from attnlab.attention.base import Attention, Capabilities
from attnlab.attention.masks import dense_keep_mask, masked_softmax, query_positions
from attnlab.attention.registry import register
from attnlab.errors import ConfigError


@register("hard")
class HardAttention(Attention):
    """Argmax (top-k) attention, trained with a straight-through softmax gradient.

    Args:
        k: keys selected per query (weights 1/k each).
        gumbel: sample the selection with Gumbel noise while training.
        tau: temperature of the surrogate softmax whose gradient is used.
        scale: score scale; default 1 / sqrt(head_dim).
    """

    capabilities = Capabilities(causal=True, padding_mask=True, cross=True, kv_cache=True,
                                bias=True, weights=True, exact=False,
                                permutation_equivariant=True, shift_invariant=True)
    straight_through = True

    def __init__(self, *, k: int = 1, gumbel: bool = False, tau: float = 1.0,
                 scale: float | None = None):
        super().__init__(scale=scale)
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"attention 'hard': k must be an integer >= 1, got {k!r}")
        if not tau > 0:
            raise ConfigError(f"attention 'hard': tau must be > 0, got {tau}")
        self.k, self.gumbel, self.tau = k, gumbel, tau

    def extra_repr(self) -> str:
        return f"k={self.k}, gumbel={self.gumbel}, tau={self.tau}"

    def attend(self, q, k, v, *, causal, key_padding_mask, bias, need_weights):
        Tq, Tk = q.shape[2], k.shape[2]
        scores = (q @ k.transpose(-2, -1)) * self.softmax_scale(q.shape[-1])  # (B, H, Tq, Tk)
        if bias is not None:
            scores = scores + bias(query_positions(Tq, Tk, q.device),
                                   torch.arange(Tk, device=q.device))
        if self.gumbel and self.training:
            u = torch.rand_like(scores).clamp_(torch.finfo(scores.dtype).tiny, 1.0)
            scores = scores - torch.log(-torch.log(u))  # + Gumbel(0, 1) noise
        keep = dense_keep_mask(Tq, Tk, causal=causal, key_padding_mask=key_padding_mask,
                               device=q.device)
        soft = masked_softmax(scores / self.tau, keep)

        kk = min(self.k, Tk)
        ranked = scores if keep is None else scores.masked_fill(~keep, float("-inf"))
        top = ranked.topk(kk, dim=-1).indices  # (B, H, Tq, kk)
        picked = torch.ones_like(top, dtype=scores.dtype)
        if keep is not None:  # a row with fewer than k allowed keys picks only those
            picked = keep.expand_as(scores).gather(-1, top).to(scores.dtype)
        hard = torch.zeros_like(scores).scatter_(-1, top, picked)
        hard = hard / hard.sum(-1, keepdim=True).clamp(min=1.0)

        weights = hard + (soft - soft.detach())  # forward: exactly hard; backward: softmax
        return weights @ v, (weights if need_weights else None)
