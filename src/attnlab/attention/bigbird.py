"""`bigbird`: block-sparse attention with window, global and random blocks (Zaheer et al., 2020).

The sequence is cut into blocks of `block_size` tokens. Each query block attends to
- `window_blocks` key blocks centred on it (3 = previous, self, next),
- the first `num_global_blocks` blocks, which are global: every query attends to them and their
  queries attend to every key (the ITC variant: existing tokens are made global),
- `num_random_blocks` random key blocks, chosen outside the window and global blocks.

Computed by gathering, never by masking an n x n matrix: the key/value blocks of each query
block are gathered into (B, H, nb, keys_per_row, Dh) tensors, one softmax per query over them;
only the g global query blocks score all n keys, g * block_size rows, linear in n.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from attnlab.attention.base import Attention, Capabilities
from attnlab.attention.masks import keep_mask, masked_softmax
from attnlab.attention.registry import register
from attnlab.errors import ConfigError


@register("bigbird")
class BigBirdAttention(Attention):
    """BigBird-ITC block-sparse attention in O(n * keys_per_query) time and memory.

    Departures from the paper and its reference code, all deliberate:
    - Lengths need not be multiples of `block_size`: the sequence is padded internally to whole
      blocks and the padding is masked like padded tokens (the reference code raises).
    - The global blocks are the *first* `num_global_blocks` blocks (the reference code makes
      the first and the last block global).
    - Random blocks are drawn once per module, per head, from `seed` (a `torch.Generator`), and
      cached per number of blocks; they are never redrawn, in training or evaluation. (The
      Hugging Face port redraws them every training step from NumPy's global state and uses
      none in evaluation.) So every layer built with the same options shares one pattern; give
      layers different seeds for different patterns. The pattern is deterministic, which makes
      checkpoints reload to the same function. Without `causal` the candidates depend on the
      number of blocks, so a row with a padding mask draws for its own length (the blocks up
      to its last real key): padding after a row's text does not change what its tokens meet,
      and a padded batch computes what its rows would alone (tested). In the reference code
      the draw is over the padded batch's blocks.
    - Keys covered twice (a window block that is also global) are masked in all but one slot,
      so no key is counted twice in a softmax.
    - `causal=True` is an addition (the paper's BigBird is an encoder; its decoders use full
      attention): the window keeps the blocks behind the query's own (causally masked inside),
      global key blocks are seen once they are in the past, global queries see only their past,
      and random blocks are drawn only from blocks entirely behind the window. A causal block's
      draw depends only on its index, never on the sequence length, so the output at a
      position does not change when later tokens are appended. The pattern is exact as
      described; no KV cache (kv_cache=False).
    - No additive positional bias (bias=False): with a different pattern per head the bias
      callable's (H, ..., Tq, Tk) result would be computed H times over. Rotary, sinusoidal
      and learned positions act outside the mechanism and work.

    Args:
        block_size: tokens per block (the paper uses 64).
        window_blocks: key blocks of the sliding window, centred on the query block; odd.
        num_global_blocks: leading blocks that are global (the paper's ITC uses 2).
        num_random_blocks: random key blocks per query block (the paper uses 3); fewer when not
            enough blocks lie outside the window and global blocks.
        seed: seeds the random blocks.
        scale: softmax temperature; default 1 / sqrt(head_dim).
        dropout: dropout on the attention weights while training.
    """

    capabilities = Capabilities(causal=True, padding_mask=True, cross=False, kv_cache=False,
                                bias=False, weights=True, exact=False,
                                permutation_equivariant=False)

    def __init__(
        self,
        *,
        block_size: int = 64,
        window_blocks: int = 3,
        num_global_blocks: int = 2,
        num_random_blocks: int = 3,
        seed: int = 0,
        scale: float | None = None,
        dropout: float = 0.0,
    ):
        super().__init__(scale=scale, dropout=dropout)
        for option, value, low in (("block_size", block_size, 1),
                                   ("window_blocks", window_blocks, 1),
                                   ("num_global_blocks", num_global_blocks, 0),
                                   ("num_random_blocks", num_random_blocks, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"attention 'bigbird': {option} must be an integer >= {low}, "
                                  f"got {value!r}")
        if window_blocks % 2 == 0:
            raise ConfigError(f"attention 'bigbird': window_blocks must be odd (centred on the "
                              f"query block), got {window_blocks}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"attention 'bigbird': seed must be an integer, got {seed!r}")
        self.block_size = block_size
        self.window_blocks = window_blocks
        self.num_global_blocks = num_global_blocks
        self.num_random_blocks = num_random_blocks
        self.seed = seed
        # (nb, n_heads, causal) -> (H, nb, r) random key blocks; CPU, built on first use.
        self._random: dict[tuple[int, int, bool], Tensor] = {}

    def extra_repr(self) -> str:
        return (f"block_size={self.block_size}, window_blocks={self.window_blocks}, "
                f"num_global_blocks={self.num_global_blocks}, "
                f"num_random_blocks={self.num_random_blocks}, seed={self.seed}")

    def _shape(self, nb: int) -> tuple[int, int]:
        """Global blocks and window half-width for `nb` blocks (a window past them is all)."""
        return min(self.num_global_blocks, nb), min(self.window_blocks // 2, nb - 1)

    def attended_keys(self, n_queries: int, n_keys: int, causal: bool) -> float:
        b = self.block_size
        nb = -(-n_keys // b)
        g, h = self._shape(nb)
        slots = g + h + 1 + (0 if causal else h) + self.num_random_blocks
        G = min(g * b, n_keys)  # global query rows score every key (causal: the global ones)
        per_row = min(slots * b, n_keys)
        return (G * (G if causal else n_keys) + (n_keys - G) * per_row) / n_keys

    def random_blocks(self, nb: int, n_heads: int, causal: bool) -> Tensor:
        """The random key blocks: (H, nb, num_random_blocks) block indices, -1 where none.

        Row i (a query block) draws, per head, without replacement from the blocks that are
        neither global nor in its window (causal: only blocks behind its window). Global query
        blocks draw nothing (they see every key). Drawn once per (nb, n_heads, causal) from
        `seed`, row by row, so a causal row depends on its index only.
        """
        key = (nb, n_heads, causal)
        if key not in self._random:
            g, h = self._shape(nb)
            r = self.num_random_blocks
            table = torch.full((n_heads, nb, r), -1, dtype=torch.long)
            gen = torch.Generator().manual_seed(self.seed)
            for i in range(g, nb):
                behind = torch.arange(g, max(g, i - h))
                ahead = torch.arange(min(max(g, i + h + 1), nb), nb)
                cand = behind if causal else torch.cat([behind, ahead])
                m = min(r, len(cand))
                if m:
                    # Top-m of uniform noise is a uniform draw without replacement, per head.
                    pick = torch.rand(n_heads, len(cand), generator=gen).topk(m, dim=-1).indices
                    table[:, i, :m] = cand[pick]
            self._random[key] = table
        return self._random[key]

    def block_pattern(self, nb: int, n_heads: int, causal: bool,
                      random_nb: int | None = None) -> tuple[Tensor, Tensor]:
        """Key blocks gathered for each non-global query block g..nb-1.

        Args:
            random_nb: draw the random blocks of query blocks 0..random_nb-1 as for a sequence
                of this many blocks (a row's own length inside a padded batch); default nb.

        Returns:
            idx (H, nb - g, K) block indices in [0, nb) and valid (H, nb - g, K): False for a
            slot outside the sequence, in the future (causal), or repeating an earlier slot.
            Slots are ordered global, window, random.
        """
        g, h = self._shape(nb)
        rows = torch.arange(g, nb)  # (nq,)
        window = rows[:, None] + torch.arange(-h, (0 if causal else h) + 1)  # (nq, nw)
        glob = torch.arange(g).expand(len(rows), g)  # (nq, g)
        idx = torch.cat([glob, window], -1).expand(n_heads, -1, -1)  # (H, nq, g + nw)
        u = nb if random_nb is None else random_nb
        # Query blocks past the row's own (padding only) keep the whole batch's draw.
        rand = self.random_blocks(nb, n_heads, causal).clone()
        rand[:, :u] = self.random_blocks(u, n_heads, causal)
        idx = torch.cat([idx, rand[:, g:]], -1)  # (H, nq, K)
        valid = (idx >= 0) & (idx < nb)
        # A window block that is also global appears twice: keep its first (global) slot only,
        # else its keys would get double weight in the softmax.
        K = idx.shape[-1]
        same = (idx[..., :, None] == idx[..., None, :]) & valid[..., None, :]  # (H, nq, K, K)
        earlier = torch.ones(K, K, dtype=torch.bool).tril(-1)  # [s, t]: slot t precedes s
        valid = valid & ~(same & earlier).any(-1)
        return idx.clamp(0, nb - 1), valid

    def row_patterns(self, n: int, n_heads: int, causal: bool,
                     key_padding_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """`block_pattern` for a batch, (B or 1, H, nq, K) each.

        Without `causal` the random draw depends on the number of blocks, so each row draws
        for its own: the blocks up to its last real key. Padding after a row's text then does
        not change what its tokens meet, and a padded batch computes what its rows alone
        would. (A causal row's draw depends on its index only.)"""
        nb = -(-n // self.block_size)
        if causal or key_padding_mask is None or not self.num_random_blocks:
            return tuple(t[None] for t in self.block_pattern(nb, n_heads, causal))
        real = key_padding_mask.any(-1)
        last = n - 1 - key_padding_mask.flip(-1).int().argmax(-1)  # last real key per row
        own = torch.where(real, last // self.block_size + 1, 1).tolist()
        patterns = {u: self.block_pattern(nb, n_heads, causal, random_nb=u) for u in set(own)}
        if len(patterns) == 1:  # every row the same length: one pattern for the batch
            return tuple(t[None] for t in patterns[own[0]])
        return (torch.stack([patterns[u][0] for u in own]),
                torch.stack([patterns[u][1] for u in own]))

    def attend(self, q, k, v, *, causal, key_padding_mask, bias, need_weights):
        B, H, n, Dh = q.shape  # cross=False and kv_cache=False: Tq == Tk == n (checked)
        b = self.block_size
        nb = -(-n // b)
        N = nb * b  # padded length
        g, _ = self._shape(nb)
        G = g * b  # global query rows
        nq = nb - g  # non-global query blocks
        scale = self.softmax_scale(Dh)
        dev = q.device

        qp, kp, vp = (F.pad(t, (0, 0, 0, N - n)) for t in (q, k, v))  # (B, H, N, Dh)
        # Padding beyond n is masked like padded tokens.
        real = (k.new_ones(B, n, dtype=torch.bool) if key_padding_mask is None
                else key_padding_mask)
        real = F.pad(real, (0, N - n), value=False)  # (B, N)

        outs, dense = [], []
        if G:  # global queries: every key (causal: every earlier key, all inside the g blocks)
            Nk = G if causal else N
            keep = keep_mask(torch.arange(G, device=dev), torch.arange(Nk, device=dev),
                             causal=causal, key_padding_mask=real[:, :Nk])  # (B, 1, G, Nk)
            scores = (qp[:, :, :G] @ kp[:, :, :Nk].transpose(-1, -2)) * scale  # (B, H, G, Nk)
            weights = masked_softmax(scores, keep)
            outs.append(self._drop(weights) @ vp[:, :, :Nk])  # (B, H, G, Dh)
            if need_weights:
                dense.append(F.pad(weights, (0, N - Nk)))  # (B, H, G, N)

        if nq:
            idx, valid = (t.to(dev) for t in self.row_patterns(n, H, causal, key_padding_mask))
            K = idx.shape[-1]  # idx, valid: (B or 1, H, nq, K)
            rows = torch.arange(B, device=dev)[:, None, None, None]  # (B, 1, 1, 1)
            heads = torch.arange(H, device=dev)[:, None, None]  # (H, 1, 1)
            # Gather each query block's key/value blocks: advanced indexing on (row, head,
            # block).
            kg = kp.view(B, H, nb, b, Dh)[rows, heads, idx].reshape(B, H, nq, K * b, Dh)
            vg = vp.view(B, H, nb, b, Dh)[rows, heads, idx].reshape(B, H, nq, K * b, Dh)
            realg = real.view(B, nb, b)[rows, idx] & valid[..., None]  # (B, H, nq, K, b)
            k_idx = (idx[..., None] * b + torch.arange(b, device=dev)).flatten(-2)
            if causal or idx.shape[0] == 1:
                q_idx = (G + torch.arange(nq * b, device=dev)).view(nq, b).expand(H, nq, b)
                # The head axis is one of keep_mask's leading dims here (patterns differ per
                # head): drop the broadcast head axis it inserts.
                keep = keep_mask(q_idx, k_idx[0], causal=causal,
                                 key_padding_mask=realg.flatten(-2))[:, 0]  # (B, H, nq, b, Kb)
            else:  # per-row patterns, not causal: a key counts where it is real and its slot valid
                keep = realg.flatten(-2)[..., None, :].expand(B, H, nq, b, K * b)
            qs = qp[:, :, G:].view(B, H, nq, b, Dh)  # (B, H, nq, b, Dh)
            scores = (qs @ kg.transpose(-1, -2)) * scale  # (B, H, nq, b, Kb)
            weights = masked_softmax(scores, keep)
            outs.append((self._drop(weights) @ vg).reshape(B, H, nq * b, Dh))
            if need_weights:  # masked and duplicate slots carry weight 0: scatter_add is exact
                index = k_idx[:, :, :, None, :].expand(B, H, nq, b, K * b)
                sparse = weights.new_zeros(B, H, nq, b, N).scatter_add(-1, index, weights)
                dense.append(sparse.reshape(B, H, nq * b, N))

        out = torch.cat(outs, 2)[:, :, :n]  # (B, H, n, Dh)
        if not need_weights:
            return out, None
        return out, torch.cat(dense, 2)[:, :, :n, :n]  # (B, H, n, n), on explicit request

    def _drop(self, weights: Tensor) -> Tensor:
        return F.dropout(weights, self.dropout, self.training) if self.dropout else weights
