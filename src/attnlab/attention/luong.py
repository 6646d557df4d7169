"""`luong` and `luong-local`: the attention of RNN translation (Luong, Pham & Manning, 2015),
with Bahdanau's additive score (Bahdanau, Cho & Bengio, 2015) as Luong's `concat`.

Scores of a query h_t (the decoder state) against a key h_s (an encoder state):

    dot      h_t . h_s                               (unscaled: `scale` = 1)
    general  h_t^T W_a h_s
    concat   v_a^T tanh(W_a [h_t; h_s])              (= Bahdanau's additive v^T tanh(W s + U h))

`luong` (global) takes a softmax over every allowed key. `luong-local` looks only at a window of
2D + 1 keys around an aligned position p_t:

    local-m  p_t = t (query i is tied to key position i: monotonic alignment)
    local-p  p_t = (S - 1) * sigmoid(v_p^T tanh(W_p h_t)), and the window's softmax weights are
             multiplied by a Gaussian exp(-(s - p_t)^2 / (2 sigma^2)), sigma = D / 2

Parameters. `general` (W_a, Dh x Dh), `concat` (W_a, Dh x 2 Dh, and v_a, Dh) and local-p's
predictor (W_p, Dh x Dh, and v_p, Dh) are owned by the mechanism, shared by all heads and sized
by the head dimension, so they need `head_dim` and a call with another head size is an error.
Behind `MultiHeadAttention`, `general`'s W_a is redundant (it folds into the query and key
projections, q^T W_a k = x^T W_q^T W_a W_k c), and `concat`'s W_a folds likewise, leaving v_a
and the tanh as what the projections cannot express. In an RNN (one head, no projections, the
model in `attnlab.models.rnn`), they are the paper's parameters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.attention.base import Attention, Capabilities
from attnlab.attention.masks import dense_keep_mask, masked_softmax, query_positions
from attnlab.attention.registry import register
from attnlab.errors import ConfigError, unknown

SCORES = ("dot", "general", "concat")
CONCAT_BLOCK = 2**22  # elements of the (.., Tq, Tk, Dh) tanh temporary of `concat` at once


class LuongScore(nn.Module):
    """The score functions of Luong et al. (2015): dot, general, concat (additive).

    Args:
        score: "dot", "general" or "concat".
        head_dim: the head dimension the parameters of general / concat are sized by.
        scale: multiplies the scores (the paper's are unscaled: 1).
    """

    def __init__(self, score: str, head_dim: int | None, scale: float, owner: str):
        super().__init__()
        if score not in SCORES:
            raise unknown(f"attention '{owner}' score", score, SCORES)
        if score != "dot" and (not isinstance(head_dim, int) or head_dim < 1):
            raise ConfigError(f"attention '{owner}': score '{score}' has learned parameters "
                              f"sized by the head dimension; set head_dim (an integer >= 1)")
        self.score, self.head_dim, self.scale, self.owner = score, head_dim, scale, owner
        if score == "general":
            self.W_a = nn.Parameter(torch.empty(head_dim, head_dim))
        elif score == "concat":
            self.W_a = nn.Parameter(torch.empty(head_dim, 2 * head_dim))  # acts on [h_t; h_s]
            self.v_a = nn.Parameter(torch.empty(head_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.score == "dot":
            return
        # uniform in +-1/sqrt(fan_in), as nn.Linear's default
        bound = 1.0 / math.sqrt(self.W_a.shape[1])
        nn.init.uniform_(self.W_a, -bound, bound)
        if self.score == "concat":
            nn.init.uniform_(self.v_a, -1.0 / math.sqrt(self.head_dim),
                             1.0 / math.sqrt(self.head_dim))

    def check_dim(self, Dh: int) -> None:
        if self.score != "dot" and Dh != self.head_dim:
            raise ValueError(f"attention '{self.owner}' score '{self.score}' was built for "
                             f"head_dim {self.head_dim}, got heads of {Dh}")

    def prepare(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """Per-query and per-key terms: dot/general give (q', k) with score = q' . k; concat
        gives (W_q q, W_k k) whose sum goes through tanh and v_a."""
        if self.score == "dot":
            return q, k
        W = self.W_a.to(q.dtype)
        if self.score == "general":
            return q @ W, k  # h_t^T W_a, (B, H, Tq, Dh)
        Dh = self.head_dim
        return q @ W[:, :Dh].T, k @ W[:, Dh:].T  # (B, H, Tq, Dh), (B, H, Tk, Dh)

    def pair(self, qp: Tensor, kp: Tensor) -> Tensor:
        """Scores of prepared terms with a shared trailing layout: qp (..., Dh) against kp
        (..., n, Dh) -> (..., n)."""
        if self.score == "concat":
            return (torch.tanh(qp.unsqueeze(-2) + kp) @ self.v_a.to(qp.dtype)) * self.scale
        return (kp @ qp.unsqueeze(-1)).squeeze(-1) * self.scale

    def dense(self, q: Tensor, k: Tensor) -> Tensor:
        """(B, H, Tq, Tk) scores of every query against every key."""
        qp, kp = self.prepare(q, k)
        if self.score != "concat":
            return (qp @ kp.transpose(-2, -1)) * self.scale
        # concat builds a (Tq, Tk, Dh) temporary per head: cut the queries into blocks.
        B, H, Tq, Dh = qp.shape
        step = max(1, CONCAT_BLOCK // max(1, B * H * kp.shape[2] * Dh))
        v = self.v_a.to(qp.dtype)
        rows = [torch.tanh(qp[:, :, i:i + step, None, :] + kp[:, :, None]) @ v
                for i in range(0, Tq, step)]
        return torch.cat(rows, dim=2) * self.scale


@register("luong")
class LuongAttention(Attention):
    """Luong global attention: softmax over every allowed key of a dot / general / concat score.

    Departures: the paper has one head and unprojected states; here the scores act on whatever
    head-split q, k the caller gives (in `attnlab.models.rnn`, one head of the raw LSTM states).
    The dense (B, H, Tq, Tk) scores are built (the paper's algorithm; `concat` has no fused
    kernel), so memory is O(Tq * Tk), plus O(Tq * Tk * Dh / blocks) for concat's tanh.

    Args:
        score: "dot" (default), "general" or "concat" (additive, Bahdanau's).
        head_dim: head size; required by general and concat, whose parameters it sizes.
        scale: multiplies the scores; the paper's 1 (unscaled) by default.
        dropout: dropout on the attention weights while training.
    """

    capabilities = Capabilities(causal=True, padding_mask=True, cross=True, kv_cache=True,
                                bias=True, weights=True, exact=False,
                                permutation_equivariant=True, shift_invariant=True)

    def __init__(self, *, score: str = "dot", head_dim: int | None = None, scale: float = 1.0,
                 dropout: float = 0.0):
        super().__init__(scale=scale, dropout=dropout)
        self.scorer = LuongScore(score, head_dim, scale, self.name)

    def extra_repr(self) -> str:
        return f"score={self.scorer.score}, head_dim={self.scorer.head_dim}, scale={self.scale}"

    def attend(self, q, k, v, *, causal, key_padding_mask, bias, need_weights):
        Tq, Tk = q.shape[2], k.shape[2]
        self.scorer.check_dim(q.shape[-1])
        scores = self.scorer.dense(q, k)  # (B, H, Tq, Tk)
        if bias is not None:
            scores = scores + bias(query_positions(Tq, Tk, q.device),
                                   torch.arange(Tk, device=q.device))
        keep = dense_keep_mask(Tq, Tk, causal=causal and Tq > 1,
                               key_padding_mask=key_padding_mask, device=q.device)
        weights = masked_softmax(scores, keep)
        dropped = F.dropout(weights, self.dropout, self.training) if self.dropout else weights
        return dropped @ v, (weights if need_weights else None)


@register("luong-local")
class LuongLocalAttention(Attention):
    """Luong local attention: a window of 2D + 1 keys around an aligned source position p_t.

    Only the window is gathered, (B, H, Tq, 2D + 1, Dh): O(Tq * D) memory and time, never the
    Tq x Tk matrix (which is built only on the explicit `need_weights` request).

    Positions: query i sits at position `query_start + i` (Luong's p_t = t: target step t is
    tied to source position t, whatever the lengths), not at the bottom-right alignment of
    cached decoding; so there is no KV cache. An RNN decoder stepping one query at a time
    passes its step as `query_start`. `causal` drops keys after the query's position.

    Departures from the paper:
      - positions count from 0 and local-p predicts p_t = (S - 1) * sigmoid(...) so the centre
        lies on a real source position (the paper's S * sigmoid with positions 1..S); S is the
        row's number of real keys, so padding is expected on the right.
      - local-p's window is the 2D + 1 positions around round(p_t); the Gaussian uses the real
        p_t, which is how gradients reach the position predictor.
      - local-p's weights are the paper's softmax-in-window times the Gaussian: they do not sum
        to 1 (local-m's do).

    Args:
        mode: "m" (monotonic, p_t = t) or "p" (predictive).
        window: D, the half width: keys within D positions of p_t.
        score: "dot" (default), "general" or "concat".
        head_dim: head size; required by general, concat and mode "p" (learned parameters).
        scale: multiplies the scores; the paper's 1 by default.
        dropout: dropout on the attention weights while training.
    """

    capabilities = Capabilities(causal=True, padding_mask=True, cross=True, kv_cache=False,
                                bias=False, weights=True, exact=False,
                                permutation_equivariant=False)

    def __init__(self, *, mode: str = "m", window: int = 10, score: str = "dot",
                 head_dim: int | None = None, scale: float = 1.0, dropout: float = 0.0):
        super().__init__(scale=scale, dropout=dropout)
        if mode not in ("m", "p"):
            raise unknown("attention 'luong-local' mode", mode, ("m", "p"))
        if not isinstance(window, int) or window < 0:
            raise ConfigError(f"attention 'luong-local': window must be an integer >= 0, "
                              f"got {window!r}")
        if mode == "p" and (not isinstance(head_dim, int) or head_dim < 1):
            raise ConfigError("attention 'luong-local': mode 'p' predicts positions with "
                              "learned parameters sized by the head dimension; set head_dim")
        if mode == "p" and window < 1:
            raise ConfigError("attention 'luong-local': mode 'p' needs window >= 1 (its "
                              "Gaussian has sigma = window / 2)")
        self.mode, self.window = mode, window
        self.scorer = LuongScore(score, head_dim, scale, self.name)
        if mode == "p":
            self.W_p = nn.Parameter(torch.empty(head_dim, head_dim))
            self.v_p = nn.Parameter(torch.empty(head_dim))
            bound = 1.0 / math.sqrt(head_dim)
            nn.init.uniform_(self.W_p, -bound, bound)
            nn.init.uniform_(self.v_p, -bound, bound)

    def extra_repr(self) -> str:
        return (f"mode={self.mode}, window={self.window}, score={self.scorer.score}, "
                f"head_dim={self.scorer.head_dim}")

    def attended_keys(self, n_queries: int, n_keys: int, causal: bool) -> float:
        return float(min(2 * self.window + 1, n_keys))

    def forward(self, q, k, v, *, causal=False, key_padding_mask=None, bias=None,
                need_weights=False, query_start: int = 0):
        """The contract's call, plus `query_start`: the position of the first query."""
        self.check(q, k, v, causal=causal, key_padding_mask=key_padding_mask, bias=bias,
                   need_weights=need_weights)
        return self.attend(q, k, v, causal=causal, key_padding_mask=key_padding_mask, bias=bias,
                           need_weights=need_weights, query_start=query_start)

    def predicted_positions(self, q: Tensor, n_real: Tensor) -> Tensor:
        """local-p's p_t = (S - 1) sigmoid(v_p^T tanh(W_p h_t)): (B, H, Tq) from q (B, H, Tq, Dh)
        and n_real (B,) keys per row."""
        W, vp = self.W_p.to(q.dtype), self.v_p.to(q.dtype)
        z = torch.tanh(q @ W.T) @ vp  # (B, H, Tq)
        return (n_real.to(q.dtype) - 1).clamp(min=0)[:, None, None] * torch.sigmoid(z)

    def attend(self, q, k, v, *, causal, key_padding_mask, bias, need_weights, query_start=0):
        B, H, Tq, Dh = q.shape
        Tk = k.shape[2]
        self.scorer.check_dim(Dh)
        D = self.window
        t = query_start + torch.arange(Tq, device=q.device)  # (Tq,) query positions
        offsets = torch.arange(-D, D + 1, device=q.device)  # (W,)
        if self.mode == "m":
            centre = t[None, None].expand(B, H, Tq)  # p_t = t
            p = centre.to(q.dtype)
        else:
            n_real = (torch.full((B,), Tk, device=q.device) if key_padding_mask is None
                      else key_padding_mask.sum(-1))
            p = self.predicted_positions(q, n_real)  # (B, H, Tq), real-valued
            centre = torch.round(p.detach()).long()
        pos = centre.unsqueeze(-1) + offsets  # (B, H, Tq, W) key positions of each window
        inside = (pos >= 0) & (pos < Tk)
        idx = pos.clamp(0, Tk - 1)
        keep = inside
        if key_padding_mask is not None:
            keep = keep & key_padding_mask.gather(1, idx.reshape(B, -1)).view_as(idx)
        if causal:
            keep = keep & (pos <= t[:, None])

        qp, kp = self.scorer.prepare(q, k)
        Wn = idx.shape[-1]
        flat = idx.reshape(B, H, Tq * Wn, 1)

        def window_of(x):  # (B, H, Tk, Dh) -> (B, H, Tq, W, Dh), the gathered windows
            return x.gather(2, flat.expand(B, H, Tq * Wn, x.shape[-1])).view(B, H, Tq, Wn, -1)

        scores = self.scorer.pair(qp, window_of(kp))  # (B, H, Tq, W)
        weights = masked_softmax(scores, keep)
        if self.mode == "p":
            sigma = D / 2
            weights = weights * torch.exp(-(pos.to(q.dtype) - p.unsqueeze(-1)) ** 2
                                          / (2 * sigma ** 2))
        dropped = F.dropout(weights, self.dropout, self.training) if self.dropout else weights
        out = (dropped.unsqueeze(-2) @ window_of(v)).squeeze(-2)  # (B, H, Tq, Dh)

        dense = None
        if need_weights:  # an explicit request: scatter the windows into (B, H, Tq, Tk)
            dense = weights.new_zeros(B, H, Tq, Tk).scatter_add(-1, idx, weights * keep)
        return out, dense
