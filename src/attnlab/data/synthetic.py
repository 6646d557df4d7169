"""Synthetic sequence transduction: copy, reverse and sort random symbol sequences.

Ids: 0 = PAD, 1 = BOS, 2 = EOS, symbols 3 .. 3 + n_symbols - 1. A source row is L symbols (L
uniform in [min_len, max_len]) padded on the right; the target is the copy, the reversal or the
ascending sort of the same symbols, then EOS. Same seed, same sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from attnlab.errors import ConfigError, did_you_mean

PAD, BOS, EOS = 0, 1, 2
SPECIALS = 3
KINDS = ("copy", "reverse", "sort")


def vocab_size(n_symbols: int) -> int:
    return SPECIALS + n_symbols


@dataclass
class SequenceBatch:
    """src (N, S) padded sources and src_mask (N, S) True = real; tgt_in (N, T) = BOS + target
    and tgt_out (N, T) = target + EOS, padded with PAD (the loss ignores PAD)."""

    src: Tensor
    src_mask: Tensor
    tgt_in: Tensor
    tgt_out: Tensor

    def __len__(self) -> int:
        return self.src.shape[0]

    def rows(self, index) -> SequenceBatch:
        return SequenceBatch(self.src[index], self.src_mask[index], self.tgt_in[index],
                             self.tgt_out[index])

    def to(self, device) -> SequenceBatch:
        return SequenceBatch(*(t.to(device) for t in (self.src, self.src_mask, self.tgt_in,
                                                       self.tgt_out)))


def transduce(kind: str, symbols: Tensor) -> Tensor:
    """The target of one (L,) row of symbols."""
    if kind == "copy":
        return symbols
    if kind == "reverse":
        return symbols.flip(0)
    return symbols.sort().values


def make_sequences(kind: str, n: int, *, min_len: int, max_len: int, n_symbols: int = 16,
                   seed: int = 0) -> SequenceBatch:
    """`n` rows of task `kind` with lengths in [min_len, max_len], generated from `seed`.

    Args:
        kind: copy, reverse or sort.
        n: rows.
        min_len, max_len: source lengths (inclusive).
        n_symbols: distinct symbols.
        seed: the generator's seed.
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown sequence task '{kind}'{did_you_mean(kind, KINDS)}; choose "
                          f"from: {', '.join(KINDS)}")
    if not 1 <= min_len <= max_len:
        raise ConfigError(f"sequence lengths need 1 <= min_len <= max_len, got {min_len}, "
                          f"{max_len}")
    if n_symbols < 2:
        raise ConfigError(f"n_symbols must be >= 2, got {n_symbols}")
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (n,), generator=g)
    symbols = torch.randint(SPECIALS, SPECIALS + n_symbols, (n, max_len), generator=g)
    src = torch.full((n, max_len), PAD, dtype=torch.long)
    tgt_in = torch.full((n, max_len + 1), PAD, dtype=torch.long)
    tgt_out = torch.full((n, max_len + 1), PAD, dtype=torch.long)
    tgt_in[:, 0] = BOS
    for i, L in enumerate(lengths.tolist()):
        row = symbols[i, :L]
        y = transduce(kind, row)
        src[i, :L] = row
        tgt_in[i, 1:L + 1] = y
        tgt_out[i, :L] = y
        tgt_out[i, L] = EOS
    return SequenceBatch(src, src != PAD, tgt_in, tgt_out)


def accuracy(pred: Tensor, tgt_out: Tensor) -> dict[str, float]:
    """Token accuracy over the non-PAD target positions (EOS included) and the share of rows
    whose every such position is right. pred (N, >= T) greedy ids, tgt_out (N, T)."""
    pred = pred[:, :tgt_out.shape[1]]
    real = tgt_out != PAD
    right = (pred == tgt_out) & real
    return {"token_acc": float(right.sum() / real.sum()),
            "seq_acc": float((right.sum(1) == real.sum(1)).float().mean())}
