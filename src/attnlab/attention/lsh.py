"""`lsh`: angular locality-sensitive-hashing attention, the Reformer's (Kitaev et al., 2020).

Softmax is dominated by the keys closest to the query, so each query only looks at keys that
land in its hash bucket. Per round r (of `n_hashes`):

    h_r(x) = argmax([x R_r ; -x R_r]),   R_r a random (Dh, n_buckets / 2) Gaussian matrix

Positions are sorted by (bucket, position), the sorted sequence is cut into chunks of
`chunk_size`, and each chunk attends to itself and to the previous chunk ("look one back"),
restricted to keys of the query's own bucket. Rounds are combined with the paper's weights:
round r's output o_r counts with softmax over rounds of its log-sum-exp z_r, and a key that a
query meets in N rounds has its score lowered by log N (the paper's duplicate correction, done
exactly: every computed pair is checked in every round, same bucket and in view there).
Together these make the result exactly softmax attention over the *union* of the keys the
query met in any round, each key once. One set of rotations per layer, shared by its heads.

Memory: scores are (B, H, n_hashes, n / c, c, 2c) for chunk c: O(n * c * n_hashes), never
n x n. Sequences not divisible by the chunk are padded internally.

Departures from the paper, each chosen so a registry-wide property holds exactly:

* Same-bucket only. The paper lets a query attend to every key in its chunk pair; here keys of
  other buckets that share the chunk are masked. Which foreign keys share a chunk depends on how
  many tokens fall in the other buckets (including *future* and *padded* ones), so allowing them
  would leak the future through the chunk boundaries and make padding visible.
* Causal: a band, not the chunk pair. A causal query sees the same-bucket keys among the
  `chunk` items ending at it in sorted order. The chunk pair would reach back
  between `chunk` and `2 * chunk` items depending on where the boundaries fall, which again
  depends on the counts of other buckets, future tokens included: the band makes the set
  depend on the query's own past only, so no output moves when a future token changes.
  Bidirectional attention keeps the paper's chunk pair.
* Padded positions are taken out of the hashing: their items go to a bucket of their own,
  sorted after every real bucket, so nothing at a padded position (query, key or value) can
  displace a real token or change a real output. The price: queries at padded positions
  output zeros, where `full` would let them attend to the real keys (in shared-QK a padded
  token's query is its padded key anyway). Every real position is unaffected.
* Fixed rotations: the paper draws fresh random rotations at every call; here each layer
  draws them once, from its `seed`, so a model is a deterministic function, evaluation
  repeats, and reversible layers can recompute it. The seed (by default drawn from torch's
  generator at construction, so layers differ) is the buffer `hash_seed`, saved with the
  model; the rotations themselves are regenerated from it and not saved.
* Weights are not a capability: a query that meets no key has a row of zeros, so rows are not
  distributions in general; `attention_weights()` returns the dense matrix for inspection.

Shared-QK (the paper's default, `shared_qk=True`): keys are the normalized queries,
k_j = q_j / |q_j|, so a query always shares a bucket with its own key; the `k` argument is
ignored except for its shape (it receives no gradient; `shares_qk` tells `MultiHeadAttention`
to build no key projection and pass the queries as k). A token never attends to itself
unless it finds no other key in any round, in which case its output is its own value: the
paper's rule, which it implements with a large finite penalty on the self score and which is
applied here exactly. With `shared_qk=False` queries and keys are hashed separately and
bucketed jointly: the 2n items (each position's key, then its query) are sorted together, and
a chunk holds 2 * `chunk_size` items. A query whose buckets hold no key outputs zeros; the
joint chunks cost about 4x the scores of shared-QK.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from attnlab.attention.base import Attention, Capabilities
from attnlab.attention.registry import register
from attnlab.errors import ConfigError


def _count(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"attention 'lsh': {name} must be an integer >= {minimum}, "
                          f"got {value!r}")
    return value


@register("lsh")
class LSHAttention(Attention):
    """Reformer attention: angular LSH buckets, sorted chunks, look-one-back, multi-round.

    Args:
        n_buckets: hash buckets per round; 1, or an even number (random rotations give
            n_buckets / 2 directions and their negatives). The paper takes about 2n / chunk.
        n_hashes: hashing rounds; more rounds, fewer missed neighbours, proportionally more cost.
        chunk_size: positions per chunk; each query scores two chunks' keys per round.
        shared_qk: the paper's shared query-key space (keys = normalized queries, `k` ignored
            except for its shape); False hashes queries and keys separately.
        seed: seed of the random rotations (fixed, not redrawn per call: see the module doc);
            None draws one from torch's generator. Saved with the model as `hash_seed`.
        scale: softmax temperature; default 1 / sqrt(head_dim).
        dropout: dropout on the attention weights while training.
    """

    capabilities = Capabilities(causal=True, padding_mask=True, cross=False, kv_cache=False,
                                bias=False, weights=False, exact=False,
                                permutation_equivariant=False, shift_invariant=True)

    def __init__(self, *, n_buckets: int = 32, n_hashes: int = 2, chunk_size: int = 64,
                 shared_qk: bool = True, seed: int | None = None, scale: float | None = None,
                 dropout: float = 0.0):
        super().__init__(scale=scale, dropout=dropout)
        if (isinstance(n_buckets, bool) or not isinstance(n_buckets, int) or n_buckets < 1
                or (n_buckets > 1 and n_buckets % 2)):
            raise ConfigError(f"attention 'lsh': n_buckets must be 1 or an even integer >= 2, "
                              f"got {n_buckets!r}")
        self.n_buckets = n_buckets
        self.n_hashes = _count("n_hashes", n_hashes)
        self.chunk_size = _count("chunk_size", chunk_size)
        if not isinstance(shared_qk, bool):
            raise ConfigError(f"attention 'lsh': shared_qk must be true or false, "
                              f"got {shared_qk!r}")
        self.shared_qk = shared_qk
        if seed is None:
            seed = int(torch.randint(2**62, ()))
        # Persistent, so a loaded checkpoint hashes as the saved model did.
        self.register_buffer("hash_seed", torch.tensor([_count("seed", seed, minimum=0)]))
        # (n_hashes, Dh, n_buckets / 2), drawn from the seed at the first call, when Dh is
        # known. Not persistent: the seed alone determines it.
        self.register_buffer("rotations", torch.empty(0), persistent=False)
        self._rotations_seed: int | None = None

    @property
    def shares_qk(self) -> bool:
        return self.shared_qk

    def extra_repr(self) -> str:
        return (f"n_buckets={self.n_buckets}, n_hashes={self.n_hashes}, "
                f"chunk_size={self.chunk_size}, shared_qk={self.shared_qk}")

    # -- hashing ----------------------------------------------------------------------------

    def _rotations(self, head_dim: int, x: Tensor) -> Tensor:
        shape = (self.n_hashes, head_dim, self.n_buckets // 2)
        seed = int(self.hash_seed[0])
        if tuple(self.rotations.shape) != shape or seed != self._rotations_seed:
            gen = torch.Generator().manual_seed(seed)
            self.rotations = torch.randn(shape, generator=gen).to(x.device)
            self._rotations_seed = seed
        return self.rotations.to(device=x.device, dtype=x.dtype)

    def buckets(self, x: Tensor) -> Tensor:
        """Bucket of every vector in every round: (..., T, Dh) -> (..., n_hashes, T) int64.

        Depends on the direction of x only (argmax is invariant to positive scaling).
        """
        *lead, T, Dh = x.shape
        if self.n_buckets == 1:
            return torch.zeros(*lead, self.n_hashes, T, dtype=torch.long, device=x.device)
        with torch.no_grad():
            proj = torch.einsum("...td,rdb->...rtb", x.detach(), self._rotations(Dh, x))
            # argmax over [proj, -proj] without building it: the larger of max and -min, ties
            # (first index) to the first half as argmax would
            top, arg_top = proj.max(dim=-1)  # (..., n_hashes, T)
            bottom, arg_bottom = proj.min(dim=-1)
            return torch.where(top >= -bottom, arg_top, arg_bottom + proj.shape[-1])

    # -- cost -------------------------------------------------------------------------------

    def _layout(self, n: int) -> tuple[int, int, int, int]:
        """(items, block, blocks, span): items per row, chunk in items, chunks, keys per chunk."""
        m = 1 if self.shared_qk else 2  # items per position: the token, or its key and query
        N = m * n
        w = max(min(m * self.chunk_size, N), 1)  # one chunk covers short sequences exactly
        nb = -(-N // w)
        return N, w, nb, (2 * w if nb > 1 else w)

    def attended_keys(self, n_queries: int, n_keys: int, causal: bool) -> float:
        """Scores computed per query: every round scores its chunk pair (padding included)."""
        _, w, nb, span = self._layout(n_queries)
        return float(nb * w * span * self.n_hashes) / max(n_queries, 1)

    # -- attention --------------------------------------------------------------------------

    def attend(self, q, k, v, *, causal, key_padding_mask, bias, need_weights):
        return self._lsh(q, k, v, causal, key_padding_mask, dense=False)

    def attention_weights(self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False,
                          key_padding_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Output and the dense (B, H, T, T) weights the output is made of, for inspection.

        Not the contract's `need_weights` (capability `weights` is False): a query whose buckets
        hold no key has a row of zeros, so rows are not distributions in general. O(n^2) memory.
        """
        self.check(q, k, v, causal=causal, key_padding_mask=key_padding_mask, bias=None,
                   need_weights=False)
        return self._lsh(q, k, v, causal, key_padding_mask, dense=True)

    def _items(self, q, k, v, key_padding_mask):
        """The sequence that is hashed and sorted, with what each item is.

        Returns query vectors, key vectors and values (G, N, Dh), item positions (N,), and which
        items are real keys and real queries (G, N); G = B * H.
        """
        B, H, n, Dh = q.shape
        G = B * H
        real = (torch.ones(B, n, dtype=torch.bool, device=q.device) if key_padding_mask is None
                else key_padding_mask.bool())
        real = real[:, None].expand(B, H, n).reshape(G, n)
        pos = torch.arange(n, device=q.device)
        if self.shared_qk:
            qv = q.reshape(G, n, Dh)
            # The paper's shared-QK keys: normalized queries (k is ignored by design).
            return qv, F.normalize(qv, dim=-1), v.reshape(G, n, Dh), pos, real, real
        # Item 2p is position p's key, item 2p + 1 its query: sorting ties by item index puts
        # a position's key just before its query, so a causal query can see its own key.
        kq = torch.stack([k, q], dim=3).reshape(G, 2 * n, Dh)  # (G, 2n, Dh)
        vals = torch.stack([v, v], dim=3).reshape(G, 2 * n, Dh)  # a query item's value is unused
        even = torch.arange(2 * n, device=q.device) % 2 == 0
        real = real.repeat_interleave(2, dim=1)
        # Queries at padded positions are dropped too: in the joint order a query item takes a
        # slot, so a padded query could otherwise push a real key out of a real query's view.
        return kq, kq, vals, pos.repeat_interleave(2), real & even, real & ~even

    def _lsh(self, q, k, v, causal, key_padding_mask, dense):
        B, H, n, Dh = q.shape
        if n == 0:
            return q.new_zeros(q.shape), (q.new_zeros(B, H, 0, 0) if dense else None)
        R = self.n_hashes
        qv, kv, vals, pos, is_key, is_query = self._items(q, k, v, key_padding_mask)
        G = qv.shape[0]
        N, w, nb, span = self._layout(n)
        Np, front = nb * w, span - w  # padded length; look-back columns before chunk 0
        dev = q.device

        # Hash; items that are neither real keys nor real queries go to a last bucket of
        # their own, so whatever padding holds cannot move a real item in the sorted order.
        bucket = self.buckets(kv)  # (G, R, N)
        bucket = bucket.masked_fill(~(is_key | is_query)[:, None], self.n_buckets)
        ids = torch.arange(N, device=dev)
        perm = (bucket * N + ids).argsort(dim=-1)  # (G, R, N): sort by (bucket, item)
        sidx = torch.empty_like(perm).scatter_(-1, perm, ids.expand_as(perm))  # inverse
        # The item in each sorted slot; slots past the end hold item N, a filler that is
        # neither key nor query (and reads zero rows), so every mask drops it.
        s_item = F.pad(perm, (0, Np - N), value=N)  # (G, R, Np)

        # The G * R sorted rows are laid end to end and cut into C chunks of w slots. Chunk t
        # reads its keys from slots t w - front ... t w + w - 1: one strided view for all
        # chunks (unfold), which matmul takes without copying out (C, span, Dh). The look-back
        # of a row's chunk 0 lands in the previous row (or in `front` zero rows before the
        # first): keys of another row's buckets, which the bucket test below drops.
        C = G * R * nb

        def table(x, fill):  # (G, N) per item -> (G, R, Np) per slot
            return F.pad(x, (0, 1), value=fill).gather(1, s_item.flatten(1)).view(G, R, Np)

        def windows(x, fill):  # (G, R, Np) per slot -> (G, R, nb, span): each chunk's columns
            return F.pad(x.flatten(), (front, 0), value=fill).unfold(0, span, w).view(
                G, R, nb, span)

        def sort_rows(x, lead=0):  # (G, N, D) -> (lead + G R Np, D) in sorted order
            src = F.pad(x, (0, 0, 0, 1)).view(G * (N + 1), -1)  # a zero row closes each group
            idx = (s_item + (N + 1) * torch.arange(G, device=dev)[:, None, None]).flatten()
            return src.index_select(0, F.pad(idx, (lead, 0), value=N))  # lead: zero rows

        scale = self.softmax_scale(Dh)
        sq = sort_rows(qv * scale).view(C, w, Dh)  # queries pre-scaled: Dh, not span, per query
        sk = sort_rows(kv, front).unfold(0, span, w)  # (C, Dh, span)
        sv = sort_rows(vals, front).unfold(0, span, w).transpose(1, 2)  # (C, span, Dh)

        # Same bucket, tested once for all masks: a slot's code is its bucket made unique per
        # (row, round), or -2 (rows) / -1 (columns) for items that are no real query / key.
        gid = bucket + (self.n_buckets + 1) * torch.arange(G * R, device=dev).view(G, R, 1)
        s_gid = F.pad(gid.gather(2, perm), (0, Np - N))  # (G, R, Np) in sorted order
        row_code = s_gid.masked_fill(~table(is_query, False), -2).view(G, R, nb, w)
        col_code = windows(s_gid.masked_fill(~table(is_key, False), -1), -1)  # (G, R, nb, span)
        drop = (row_code[..., :, None] != col_code[..., None, :]).view(C, w, span)
        # Row i of a chunk is slot front + i of its columns: the token itself (shared-QK).
        # Causal: within a bucket the sorted order is the order of positions, so "causal by
        # position, in the band of w items" is the fixed pattern of columns i + front - w < c
        # <= i + front (the item itself at c = i + front).
        if causal:
            rel = front + torch.arange(w, device=dev)[:, None] - torch.arange(span, device=dev)
            drop |= (rel < 0) | (rel >= w)  # (w, span), the same in every chunk
        if self.shared_qk:
            drop.diagonal(offset=front, dim1=1, dim2=2).fill_(True)

        scores = torch.bmm(sq, sk)  # (C, w, span)
        if R > 1:  # the paper's duplicate correction: a key met in N rounds counts once
            self._count_duplicates(scores.view(G, R, nb, w, span), bucket, sidx, s_item,
                                   windows, causal, w)
        # Masked: the lowest value, added (several times faster than masked_fill on CPU); a
        # float32 score below 1e31 then is that value.
        scores.add_(drop, alpha=torch.finfo(scores.dtype).min)

        # softmax's fused kernel, not exp: exp of masked (hugely negative) scores is many times
        # slower here than of ordinary ones. The row's log-sum-exp then comes from any one of
        # its keys a as lse = s_a - log p_a; a = the row's max keeps it well conditioned, and a
        # fixed index keeps its gradient exactly p. Rows with no key (all masked: a uniform
        # softmax) are zeroed and get an lse of the fill value.
        low = torch.finfo(scores.dtype).min
        seen = ~drop.all(-1)  # (C, w)
        weights = scores.softmax(dim=-1)  # (C, w, span)
        top, a = scores.max(dim=-1, keepdim=True)  # (C, w, 1): the max and where it is
        lse = (top - weights.gather(-1, a).log()).squeeze(-1)
        lse = lse.masked_fill(~seen, low)  # (C, w)
        del scores  # not needed for backward: one (C, w, span) buffer less from here on
        dropped = F.dropout(weights, self.dropout, self.training) if self.dropout else weights
        out = torch.bmm(dropped, sv) * seen[..., None]  # (C, w, Dh), sorted order

        # Back to item order; each round weighted by softmax over rounds of its log-sum-exp.
        out = out.view(G, R, Np, Dh)[:, :, :N].gather(2, sidx[..., None].expand(G, R, N, Dh))
        lse = lse.view(G, R, Np)[:, :, :N].gather(2, sidx)  # (G, R, N)
        per_round = lse.softmax(dim=1)  # (G, R, N); empty rounds get weight 0
        out = (per_round[..., None] * out).sum(dim=1)  # (G, N, Dh)
        lonely = None
        if self.shared_qk:  # the paper's rule: no other key in any round -> attend to itself
            lonely = ~seen.view(G, R, Np)[:, :, :N].gather(2, sidx).any(dim=1) & is_key
            out = torch.where(lonely[..., None], vals, out)
        out = (out if self.shared_qk else out[:, 1::2]).reshape(B, H, n, Dh)
        if not dense:
            return out, None

        # Dense (B, H, n, n): scatter each round's weights, times its round weight, by
        # (query position, key position); O(n^2) by nature, only on request.
        weights = (weights * seen[..., None]).view(G, R, nb, w, span)
        rw = F.pad(per_round.gather(2, perm), (0, Np - N)).view(G, R, nb, w, 1)
        s_pos = table(pos.expand(G, N), 0)  # (G, R, Np)
        r_pos, c_pos = s_pos.view(G, R, nb, w), windows(s_pos, 0)
        flat = (r_pos[..., None] * n + c_pos[..., None, :]).flatten(1)
        full = weights.new_zeros(G, n * n).scatter_add_(1, flat, (weights * rw).flatten(1))
        full = full.view(G, n, n)
        if lonely is not None:
            full = full + torch.diag_embed(lonely.to(full.dtype))
        return out, full.view(B, H, n, n)

    def _count_duplicates(self, scores, bucket, sidx, s_item, windows, causal, w):
        """Lower each pair's score by log(N), N the number of rounds in which the pair is in view
        (same bucket, and causal: within the w items before it; else: in its chunk or the
        previous one), in place on scores (G, R, nb, w, span).

        A kept pair is in view in its own round; another round r2 is tested with one code per
        item: bucket * big + where r2 sorts it (chunk, or slot when causal), so that "in view"
        is one range test on the difference of two codes.
        """
        G, R, nb = scores.shape[:3]
        N = bucket.shape[-1]
        big, lo, hi = (N + w, 1 - w, w - 1) if causal else (nb + 1, 0, 1)
        # int32 halves the (G, nb, w, span) differences wherever the codes fit
        dtype = torch.int32 if (self.n_buckets + 1) * big < 2**31 else torch.int64
        codes = []  # per round r2: the r2-code of the item in every slot of every round
        for r2 in range(R):
            where = sidx[:, r2] if causal else sidx[:, r2].div(w, rounding_mode="floor")
            code = F.pad(bucket[:, r2] * big + where, (0, 1))  # (G, N + 1): item N a filler
            codes.append(code.gather(1, s_item.flatten(1)).view(G, R, -1).to(dtype))
        for r in range(R):
            met = []
            for r2 in range(R):
                if r2 != r:
                    rows = codes[r2][:, r].view(G, nb, w)[..., :, None]
                    cols = windows(codes[r2], 0)[:, r][..., None, :]
                    diff = rows - cols  # (G, nb, w, span)
                    met.append((diff >= lo) & (diff <= hi))
            if len(met) == 1:  # two rounds: the pair is met once or twice
                scores[:, r].add_(met[0], alpha=-math.log(2))
            else:
                scores[:, r].sub_(torch.stack(met).sum(0, dtype=scores.dtype).log1p_())
