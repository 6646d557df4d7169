"""Beam search over any next-token model, for a batch of sources.

The model is a function `step(prefix) -> log-probs`: prefix (N, t) holds every row's tokens so
far (beginning with `bos`), N = batch x beam with source b's beams in rows b*K .. b*K + K - 1,
and the result (N, V) the log-probabilities of the next token. A cached model keeps its own
state and gets `reorder(index)` after every step, with the rows the surviving beams came from.

Scores follow GNMT (Wu et al., 2016): log p(y) / lp(|y|), lp(L) = ((5 + L) / 6) ** alpha,
|y| counting the generated tokens with the final EOS. Departure from the usual stopping rule
(stop once K hypotheses are finished): a source stops once its best finished hypothesis scores
at least the best any live beam could still reach (log-probs only fall as a beam grows, so
that bound is log p / lp(max length) for alpha >= 0); with a beam wide enough to keep every
prefix this makes the search exact, which the tests check against brute force.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from attnlab.errors import AttnlabError


def length_penalty(length: int, alpha: float) -> float:
    """GNMT's lp(L) = ((5 + L) / 6) ** alpha (1 for alpha = 0)."""
    return ((5.0 + length) / 6.0) ** alpha


@torch.no_grad()
def beam_search(step: Callable[[Tensor], Tensor], batch_size: int, *, bos: int, eos: int,
                beam_size: int = 4, max_new_tokens: int = 32, alpha: float = 0.0,
                reorder: Callable[[Tensor], None] | None = None,
                device: torch.device | str = "cpu") -> list[list[int]]:
    """The best-scoring output of each source.

    Args:
        step: prefix (N, t) -> (N, V) next-token log-probs (see the module docstring).
        batch_size: number of sources B (N = B * beam_size).
        bos: the token every prefix starts with (not returned).
        eos: the token that ends a hypothesis (not returned).
        beam_size: beams K kept per source; 1 is greedy decoding.
        max_new_tokens: hypotheses still open at this length end there, unfinished.
        alpha: length penalty exponent (0 = plain log-probability; GNMT uses 0.6-1.0).
        reorder: called with the (N,) source rows of the surviving beams, for a KV cache.
        device: where the prefix tensor lives.

    Returns:
        B lists of token ids, without bos and eos.
    """
    counts = (beam_size, max_new_tokens, batch_size)
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in counts):
        raise AttnlabError(f"beam search needs integer beam_size, max_new_tokens and batch size "
                           f">= 1, got {beam_size!r}, {max_new_tokens!r}, {batch_size!r}")
    if not math.isfinite(alpha):
        raise AttnlabError(f"beam search needs a finite length penalty alpha, got {alpha!r}")
    B, K = batch_size, beam_size
    prefix = torch.full((B * K, 1), bos, dtype=torch.long, device=device)
    # only the first beam of each source is alive at the start: the others are copies of it
    scores = torch.full((B, K), -math.inf)
    scores[:, 0] = 0.0
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
    done = [False] * B
    bound_lp = length_penalty(max_new_tokens, alpha)
    for t in range(1, max_new_tokens + 1):
        logp = step(prefix).float().cpu()  # (N, V)
        V = logp.size(-1)
        total = (scores.view(B * K, 1) + logp).view(B, K * V)  # (B, K*V)
        top, idx = total.topk(min(2 * K, K * V), dim=-1)  # (B, 2K)
        rows = torch.arange(B * K).view(B, K) * 0  # source rows of the new beams
        tokens = torch.full((B, K), eos, dtype=torch.long)
        new_scores = torch.full((B, K), -math.inf)
        for b in range(B):
            kept = 0
            for rank in range(top.size(1)):
                score, flat = float(top[b, rank]), int(idx[b, rank])
                if done[b] or score == -math.inf or kept == K:
                    break
                beam, token = divmod(flat, V)
                if token == eos or t == max_new_tokens:
                    if token == eos and rank >= K:
                        continue  # an EOS below the top K would not have been kept as a beam
                    seq = prefix[b * K + beam, 1:].tolist() + ([] if token == eos else [token])
                    finished[b].append((score / length_penalty(t, alpha), seq))
                    continue
                rows[b, kept], tokens[b, kept], new_scores[b, kept] = b * K + beam, token, score
                kept += 1
            if not done[b] and finished[b]:
                best = max(s for s, _ in finished[b])
                live = new_scores[b][new_scores[b] > -math.inf]
                reach = (float(live.max()) / (bound_lp if alpha >= 0 else
                                              length_penalty(t + 1, alpha))
                         if len(live) else -math.inf)
                done[b] = best >= reach or t == max_new_tokens
            if done[b]:
                rows[b] = b * K  # keep any valid rows; the source is no longer searched
                new_scores[b] = -math.inf
        if all(done):
            break
        index = rows.view(-1).to(prefix.device)
        prefix = torch.cat([prefix[index], tokens.view(-1, 1).to(prefix.device)], dim=1)
        scores = new_scores
        if reorder is not None:
            reorder(index)
    return [max(f, key=lambda x: x[0])[1] if f else [] for f in finished]


@torch.no_grad()
def greedy_search(step: Callable[[Tensor], Tensor], batch_size: int, *, bos: int, eos: int,
                  max_new_tokens: int = 32, device: torch.device | str = "cpu") -> list[list[int]]:
    """Argmax decoding with the same `step` interface as `beam_search` (no cache reordering
    needed: rows never move).

    Args:
        step: prefix (B, t) -> next-token log-probabilities (B, V), as for `beam_search`.
        batch_size: sources B.
        bos, eos: the start and end ids; a row ends after eos (not returned).
        max_new_tokens: at most this many tokens per row.
        device: where the prefix tensor lives.

    Returns:
        One list of token ids per row.
    """
    prefix = torch.full((batch_size, 1), bos, dtype=torch.long, device=device)
    out: list[list[int]] = [[] for _ in range(batch_size)]
    open_ = [True] * batch_size
    for _ in range(max_new_tokens):
        nxt = step(prefix).argmax(-1)  # (B,)
        for b, token in enumerate(nxt.tolist()):
            if open_[b]:
                if token == eos:
                    open_[b] = False
                else:
                    out[b].append(token)
        if not any(open_):
            break
        prefix = torch.cat([prefix, nxt.view(-1, 1)], dim=1)
    return out
