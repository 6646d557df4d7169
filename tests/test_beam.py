"""Beam search: beam 1 is greedy, a wide enough beam is exhaustive search, sources of a batch
do not interact, and the KV-cached encoder-decoder search equals the uncached one."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from attnlab.beam import beam_search, greedy_search, length_penalty
from attnlab.models import EncoderDecoder
from attnlab.models.config import Seq2SeqConfig

BOS, EOS = 3, 0


class TableModel:
    """A tiny made-up 'model': next-token log-probs from a random table indexed by the
    position, the last token and the token before it (so the search is not myopic)."""

    def __init__(self, vocab: int = 4, length: int = 8, seed: int = 0, sources: int = 1):
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(sources, length, vocab, vocab, vocab, generator=g) * 2
        self.beams = 1

    def __call__(self, prefix: torch.Tensor) -> torch.Tensor:
        t = prefix.size(1)
        last = prefix[:, -1]
        before = prefix[:, -2] if t > 1 else torch.full_like(last, BOS)
        source = torch.arange(prefix.size(0)) // self.beams
        return self.table[source, t - 1, before, last].log_softmax(-1)

    def logp(self, seq: list[int]) -> float:
        """log p(seq | source 0), one token at a time."""
        prefix, total = [BOS], 0.0
        for token in seq:
            total += float(self(torch.tensor([prefix]))[0, token])
            prefix.append(token)
        return total


def brute_force(model: TableModel, vocab: int, max_new: int, alpha: float) -> list[int]:
    """The best sequence over all that end in EOS within max_new tokens (or reach max_new)."""
    best, best_seq = -math.inf, None
    for n in range(1, max_new + 1):
        for body in itertools.product([t for t in range(vocab) if t != EOS], repeat=n - 1):
            for last in range(vocab):
                if last != EOS and n < max_new:
                    continue  # unfinished hypotheses only count at the length limit
                seq = [*body, last]
                score = model.logp(seq) / length_penalty(n, alpha)
                if score > best:
                    best, best_seq = score, [*body] if last == EOS else seq
    return best_seq


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.5])
@pytest.mark.parametrize("seed", range(4))
def test_wide_beam_equals_exhaustive_search(alpha, seed):
    vocab, max_new = 4, 4
    model = TableModel(vocab, seed=seed)
    model.beams = 27
    # a beam as wide as every non-EOS prefix (3 ** 3) keeps everything: search is exact
    got = beam_search(model, 1, bos=BOS, eos=EOS, beam_size=27, max_new_tokens=max_new,
                      alpha=alpha)
    assert got[0] == brute_force(model, vocab, max_new, alpha)


def test_narrow_beam_can_miss_what_exhaustive_search_finds():
    """The exhaustive check above is not vacuous: greedy misses the optimum on some tables."""
    misses = 0
    for seed in range(20):
        model = TableModel(4, seed=seed)
        greedy = beam_search(model, 1, bos=BOS, eos=EOS, beam_size=1, max_new_tokens=4)
        misses += greedy[0] != brute_force(model, 4, 4, 0.0)
    assert misses > 0


@pytest.mark.parametrize("seed", range(5))
def test_beam_one_is_greedy(seed):
    model = TableModel(6, length=12, seed=seed, sources=3)
    model.beams = 1
    got = beam_search(model, 3, bos=BOS, eos=EOS, beam_size=1, max_new_tokens=10)
    assert got == greedy_search(model, 3, bos=BOS, eos=EOS, max_new_tokens=10)


def test_sources_in_a_batch_do_not_interact():
    model = TableModel(5, length=10, seed=3, sources=3)
    model.beams = 4
    together = beam_search(model, 3, bos=BOS, eos=EOS, beam_size=4, max_new_tokens=8,
                           alpha=0.6)
    for b in range(3):
        single = TableModel(5, length=10, seed=3, sources=3)
        single.table = single.table[b:b + 1]
        single.beams = 4
        assert beam_search(single, 1, bos=BOS, eos=EOS, beam_size=4, max_new_tokens=8,
                           alpha=0.6)[0] == together[b]


def test_bad_settings_are_errors():
    from attnlab.errors import AttnlabError

    for kw in (dict(beam_size=0), dict(beam_size=2.5), dict(max_new_tokens=True)):
        with pytest.raises(AttnlabError, match="integer beam_size, max_new_tokens"):
            beam_search(TableModel(), 1, bos=BOS, eos=EOS, **kw)
    for alpha in (float("nan"), float("inf")):
        with pytest.raises(AttnlabError, match="finite length penalty alpha"):
            beam_search(TableModel(), 1, bos=BOS, eos=EOS, alpha=alpha)


@torch.no_grad()
def _tiny_seq2seq() -> EncoderDecoder:
    """A tiny encoder-decoder whose weights are drawn at a scale where the next token depends
    on the whole prefix (at the default init it barely does, and a cache that was never
    reordered would go unnoticed)."""
    torch.manual_seed(0)
    cfg = Seq2SeqConfig(vocab_size=11, d_model=16, n_heads=2, n_layers=1, max_len=32,
                        norm_first=True)
    model = EncoderDecoder(cfg).eval()
    for p in model.parameters():
        if p.dim() == 2:
            p.normal_(0.0, 2 * p.shape[1] ** -0.5 if p.shape[0] != 11 else 0.25)
    return model


def test_cached_encoder_decoder_search_equals_uncached():
    """The KV cache, reordered after every step, gives the same beams as recomputing the
    whole prefix each step."""
    model = _tiny_seq2seq()
    src = torch.randint(4, 11, (2, 7), generator=torch.Generator().manual_seed(1))
    memory = model.encode(src).repeat_interleave(3, 0)

    def full(prefix):
        return model.forward_head(model.decode(prefix, memory)[:, -1]).log_softmax(-1)

    cache = model.new_cache()

    def cached(prefix):
        h = model.decode(prefix[:, cache.seen:], memory, cache=cache)
        return model.forward_head(h[:, -1]).log_softmax(-1)

    settings = dict(bos=1, eos=2, beam_size=3, max_new_tokens=12, alpha=0.6)
    a = beam_search(full, 2, **settings)
    b = beam_search(cached, 2, reorder=cache.reorder, **settings)
    assert a == b and any(len(x) > 1 for x in a)
    assert len({t for row in a for t in row}) >= 3  # not a degenerate repetition
