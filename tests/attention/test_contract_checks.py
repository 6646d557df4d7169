"""Contract checks that guard silent mistakes: a key padding mask of the wrong length, and a
beam reorder of a cache that holds a padding mask."""

import pytest
import torch

from attnlab.attention import MultiHeadAttention, available, build
from attnlab.attention.base import KVCache
from tests.conftest import TINY_OPTIONS


@pytest.mark.parametrize("name", [n for n, c in available().items() if c.padding_mask])
@pytest.mark.parametrize("length", [1, 11, 13])
def test_a_padding_mask_of_the_wrong_length_is_a_clear_error(name, length):
    # A (B, 1) mask would otherwise broadcast over every key without a word.
    attn = build(name, **TINY_OPTIONS[name])
    q, k, v = torch.randn(3, 2, 2, 12, 8).unbind(0)
    with pytest.raises(ValueError, match=r"key_padding_mask must be \(B, Tk\)"):
        attn(q, k, v, key_padding_mask=torch.ones(2, length, dtype=torch.bool))


def test_reorder_selects_the_padding_mask_rows_too():
    c = KVCache()
    k = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 1, 2, 1)
    mask = torch.tensor([[False, True], [True, True], [True, False]])
    c.update(k, k, mask)
    index = torch.tensor([2, 2, 0])
    c.reorder(index)
    assert torch.equal(c.mask, mask[index])


def test_beam_reordered_padded_cache_decodes_like_the_reordered_batch():
    mha = MultiHeadAttention(16, 4).eval()
    x = torch.randn(2, 6, 16)
    keep = torch.ones(2, 6, dtype=torch.bool)
    keep[0, :2] = False  # row 0 is left-padded, row 1 is not
    index = torch.tensor([1, 0])
    full, _ = mha(x[index], causal=True, key_padding_mask=keep[index])
    cache = mha.new_cache()
    mha(x[:, :5], causal=True, key_padding_mask=keep[:, :5], cache=cache)
    cache.reorder(index)  # beam search swaps the rows
    step, _ = mha(x[index, 5:], causal=True, cache=cache)
    torch.testing.assert_close(step, full[:, 5:], atol=1e-5, rtol=1e-5)
