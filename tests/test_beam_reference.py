"""Beam search behaviours: GNMT's length penalty by value, the early-stop bound with a strong
penalty, and an EOS candidate does not cost a live beam (test_beam.py checks the cache
reordering)."""

import math

import pytest
import torch

from attnlab.beam import beam_search, length_penalty
from tests.test_beam import BOS, EOS, TableModel, brute_force


def test_length_penalty_is_gnmt_by_value():
    # lp(L) = ((5 + L) / 6) ** alpha (Wu et al., 2016)
    assert length_penalty(1, 0.6) == pytest.approx(1.0)
    assert length_penalty(7, 1.0) == pytest.approx(2.0)
    assert length_penalty(13, 0.5) == pytest.approx(math.sqrt(3.0))
    assert length_penalty(9, 0.0) == 1.0


@pytest.mark.parametrize("alpha", [1.5, 3.0])
def test_wide_beam_equals_exhaustive_search_under_a_strong_length_penalty(alpha):
    """A live beam may still overtake the best finished one by growing longer; stopping on the
    bound at the current length would return too early (seeds 5, 22, 26, 28 show it)."""
    for seed in range(30):
        model = TableModel(4, seed=seed)
        model.beams = 27
        got = beam_search(model, 1, bos=BOS, eos=EOS, beam_size=27, max_new_tokens=4,
                          alpha=alpha)
        assert got[0] == brute_force(model, 4, 4, alpha), seed


def table_step(table):
    """step() from a dict: prefix tuple (after BOS) -> next-token probabilities."""
    def step(prefix):
        rows = [table.get(tuple(r[1:]), [1 / 3] * 3) for r in prefix.tolist()]
        return torch.tensor(rows).clamp_min(1e-30).log()
    return step


def test_an_eos_in_the_top_k_does_not_take_a_live_beams_place():
    """K = 2: after BOS, EOS is the best candidate, then tokens 1 and 2. EOS finishes; both 1
    and 2 must continue as the two live beams (the 2K candidates cover that). A strong length
    penalty keeps the search going after the first step."""
    seen = []
    step = table_step({(): [0.4, 0.35, 0.25]})
    beam_search(lambda p: (seen.append(p.tolist()), step(p))[1], 1, bos=3, eos=0,
                beam_size=2, max_new_tokens=4, alpha=3.0)
    assert sorted(seen[1]) == [[3, 1], [3, 2]]
