"""`linformer`: attention over keys and values projected along the sequence (Wang et al., 2020).

    K' = E K,   V' = F V,   Attention = softmax(Q K'^T / sqrt(d_k)) V'

E and F are learned (k x seq_len) matrices, so the n keys and values become k "summary" rows
and every query scores k of them instead of n: O(n * k) time and memory. The paper's argument is
that the n x n attention matrix is close to low rank, so a random-like projection of rank k
keeps most of it (Johnson-Lindenstrauss).

Sequence lengths. The projections are sized for a fixed maximum `seq_len`. A shorter input is
treated as zero-padded to `seq_len`: E is sliced to its first n columns, which is the same
product without materializing the padding (as the authors' fairseq code does). Keys longer than
`seq_len` cannot be projected and are an error naming `seq_len`.

Masking. Padded keys (and values) are zeroed before the projection, so they cannot reach any
projected row. A projected row that no real key feeds (its E row is zero on every real key,
e.g. E = identity and that key padded, or every key padded) is masked out of the softmax:
otherwise it would enter the softmax with score 0. For a random E no row is ever empty, so this
only matters in degenerate settings, where it makes k = n, E = F = I exactly `full` attention,
padding included; and a query with no real key outputs zeros.

Not causal: every projected row mixes all positions, future ones included, so causal attention
is a `CapabilityError` by design. No KV cache for the same reason.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from attnlab.attention.base import Attention, Capabilities
from attnlab.attention.masks import masked_softmax
from attnlab.attention.registry import register
from attnlab.errors import AttnlabError, ConfigError

SCORES_PER_BLOCK = 2**21  # scores computed at once (8 MiB in float32) ...
QUERY_BLOCK_MIN = 64  # ... but at least this many queries per matmul


@register("linformer")
class LinformerAttention(Attention):
    """Softmax attention of the queries over k learned projections of the keys and values.

    Departures from the paper:
      - Padded keys are zeroed before the projection and projected rows with no real key are
        masked out of the softmax (the paper and its fairseq code do not treat padding).
      - Layerwise sharing (one E for all layers) is not offered: a mechanism does not see the
        other layers. `headwise=True` gives each head its own E, F (the paper's unshared
        default); `headwise=False` shares one E, F across heads (the paper's "headwise
        sharing"), which the paper reports performs as well. Per-head projections need the
        head count at construction time, hence `n_heads`.
      - Weights are not returned: they are (B, H, Tq, k) over projected keys, not over the
        (Tq, Tk) token pairs the contract's weights describe.

    Initialization: E and F as in the authors' fairseq code, `xavier_uniform_` with gain
    1/sqrt(2) (uniform in +-sqrt(3 / (k + seq_len))), one matrix per head when headwise.

    Args:
        seq_len: the longest key sequence; E and F have this many columns.
        k: projected length (rows of E and F), 1 <= k <= seq_len.
        share_kv: use one projection for keys and values (E = F).
        headwise: a separate projection per head (needs `n_heads`) instead of one shared.
        n_heads: the number of heads, for `headwise=True` only.
        scale: softmax temperature; default 1 / sqrt(head_dim).
        dropout: dropout on the (B, H, Tq, k) attention weights while training.
    """

    capabilities = Capabilities(causal=False, padding_mask=True, cross=True, kv_cache=False,
                                bias=False, weights=False, exact=False,
                                permutation_equivariant=False)

    def __init__(self, *, seq_len: int = 512, k: int = 128, share_kv: bool = False,
                 headwise: bool = False, n_heads: int | None = None,
                 scale: float | None = None, dropout: float = 0.0):
        super().__init__(scale=scale, dropout=dropout)
        if not isinstance(seq_len, int) or seq_len < 1:
            raise ConfigError(f"attention 'linformer': seq_len must be an integer >= 1, "
                              f"got {seq_len!r}")
        if not isinstance(k, int) or not 1 <= k <= seq_len:
            raise ConfigError(f"attention 'linformer': k must be an integer in [1, seq_len = "
                              f"{seq_len}], got {k!r}")
        if headwise and (not isinstance(n_heads, int) or n_heads < 1):
            raise ConfigError(f"attention 'linformer': headwise=True needs n_heads (an integer "
                              f">= 1, the number of heads), got {n_heads!r}")
        if not headwise and n_heads is not None:
            raise ConfigError("attention 'linformer': n_heads is only used with headwise=True")
        self.seq_len, self.k, self.share_kv, self.headwise = seq_len, k, share_kv, headwise
        self.n_heads = n_heads
        shape = (n_heads, k, seq_len) if headwise else (k, seq_len)
        self.proj_k = nn.Parameter(torch.empty(shape))  # E
        self.proj_v = None if share_kv else nn.Parameter(torch.empty(shape))  # F
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform with gain 1/sqrt(2), per (k, seq_len) matrix, as in fairseq."""
        for p in (self.proj_k, self.proj_v):
            if p is not None:
                for matrix in p.view(-1, self.k, self.seq_len):  # one per head when headwise
                    nn.init.xavier_uniform_(matrix, gain=1 / math.sqrt(2))

    def extra_repr(self) -> str:
        return (f"seq_len={self.seq_len}, k={self.k}, share_kv={self.share_kv}, "
                f"headwise={self.headwise}, dropout={self.dropout}")

    def attended_keys(self, n_queries: int, n_keys: int, causal: bool) -> float:
        # k projected keys per query, plus the projections E K and F V (k x n_keys each)
        # amortized over the queries: the same 4 * Dh FLOPs per (row, key) unit.
        k = min(self.k, self.seq_len)
        return float(k + k * n_keys / max(n_queries, 1))

    def attend(self, q, k, v, *, causal, key_padding_mask, bias, need_weights):
        B, H, Dh = q.shape[0], q.shape[1], q.shape[3]
        n = k.shape[2]
        if n > self.seq_len:
            raise AttnlabError(f"attention 'linformer': {n} keys exceed seq_len {self.seq_len};"
                               f" build it with seq_len >= {n}")
        if self.headwise and self.n_heads != H:
            raise AttnlabError(f"attention 'linformer': built headwise for n_heads "
                               f"{self.n_heads}, called with {H} heads")
        # Slicing to the first n columns == zero-padding the input to seq_len.
        E = self.proj_k[..., :n].to(q.dtype)  # (k, n) or (H, k, n)
        Fm = E if self.proj_v is None else self.proj_v[..., :n].to(q.dtype)
        if key_padding_mask is None:
            # (k,) or (H, k): how much real key mass reaches each row (no |E| temporary)
            fed = torch.linalg.vector_norm(E, ord=1, dim=-1)
            keep = (fed > 0)[..., None, :]  # (1 or H, 1, k), broadcasts against (B, H, Tq, k)
        else:
            pad = ~key_padding_mask[:, None, :, None]  # (B, 1, n, 1)
            k = k.masked_fill(pad, 0.0)  # padded keys cannot reach a projected row
            v = v.masked_fill(pad, 0.0)
            real = key_padding_mask.to(q.dtype)  # (B, n)
            if self.headwise:
                fed = torch.einsum("hrn,bn->bhr", E.abs(), real)  # (B, H, k)
            else:
                fed = (real @ E.abs().T)[:, None]  # (B, 1, k)
            keep = (fed > 0)[:, :, None, :]  # (B, 1 or H, 1, k)
        if keep.all():  # as for any random E: no row to mask, one pass over the scores less
            keep = None
        # einsum makes each projection one GEMM over all batches and heads, (k, n) @ (n, B H Dh)
        # (per head when headwise); matmul would broadcast E into a copy per batch and head.
        # The softmax scale goes on the k projected keys, not on the Tq x k scores.
        eq = "hrn,bhnd->bhrd" if self.headwise else "rn,bhnd->bhrd"
        kp = torch.einsum(eq, E, k) * self.softmax_scale(Dh)  # (B, H, k, Dh)
        vp = torch.einsum(eq, Fm, v)  # (B, H, k, Dh)
        # Queries a block at a time: the scores and weights, (B, H, Tq, k) and the largest
        # tensors here, then exist for one block only. The same work.
        rows = max(QUERY_BLOCK_MIN, SCORES_PER_BLOCK // (B * H * kp.shape[2]))
        out = []
        for qb in q.split(rows, dim=2):
            scores = qb @ kp.transpose(-2, -1)  # (B, H, rows, k)
            weights = masked_softmax(scores, keep, in_place=True)  # no fed row: zeros
            if self.dropout:
                weights = F.dropout(weights, self.dropout, self.training)
            out.append(weights @ vp)  # (B, H, rows, Dh)
        return (out[0] if len(out) == 1 else torch.cat(out, dim=2)), None  # (B, H, Tq, Dh)
