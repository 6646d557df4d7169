import torch

from attnlab.attention.masks import dense_keep_mask, keep_mask, masked_softmax, query_positions


def test_keep_mask_matches_its_definition_elementwise():
    q_idx, k_idx = torch.arange(3, 8), torch.arange(8)
    pad = torch.tensor([[True] * 6 + [False] * 2, [False] + [True] * 7])
    m = keep_mask(q_idx, k_idx, causal=True, window=3, key_padding_mask=pad)
    assert m.shape == (2, 1, 5, 8)
    for b in range(2):
        for i, qi in enumerate(q_idx.tolist()):
            for j in range(8):
                expected = (j <= qi) and (qi - j < 3) and bool(pad[b, j])
                assert bool(m[b, 0, i, j]) == expected


def test_no_constraint_gives_no_mask():
    assert keep_mask(torch.arange(4), torch.arange(4)) is None
    assert dense_keep_mask(4, 4) is None


def test_blocked_positions_broadcast_over_leading_dims():
    q_idx = torch.arange(6).view(2, 3)
    k_idx = torch.arange(6).view(2, 3)
    pad = torch.ones(4, 2, 3, dtype=torch.bool)
    assert keep_mask(q_idx, k_idx, causal=True, key_padding_mask=pad).shape == (4, 1, 2, 3, 3)
    assert keep_mask(q_idx, k_idx, causal=True).shape == (1, 1, 2, 3, 3)


def test_query_positions_are_bottom_right_aligned():
    assert query_positions(2, 5).tolist() == [3, 4]
    assert query_positions(5, 5).tolist() == [0, 1, 2, 3, 4]


def test_masked_softmax_zero_rows_and_finite_gradients():
    s = torch.randn(2, 4, requires_grad=True)
    keep = torch.tensor([[True, False, True, False], [False] * 4])
    w = masked_softmax(s, keep)
    assert torch.allclose(w[0, [0, 2]], torch.softmax(s[0, [0, 2]], 0))
    assert torch.equal(w[0, [1, 3]], torch.zeros(2))
    assert torch.equal(w[1], torch.zeros(4))
    w.sum().backward()
    assert torch.isfinite(s.grad).all()


def test_masked_softmax_fast_options_equal_the_default():
    """in_place adds the minimum into the caller's scores instead of filling a copy, and
    rows_keep_some skips zeroing empty rows: the same weights and gradients, in float64."""
    s = torch.randn(3, 5, 7, dtype=torch.float64)
    keep = torch.rand(1, 5, 7) > 0.5
    keep[0, 1] = False  # an empty row
    g = torch.randn(3, 5, 7, dtype=torch.float64)
    a, b = s.clone().requires_grad_(), s.clone().requires_grad_()
    ref = masked_softmax(a, keep)
    scores = b * 1.0  # the caller's own temporary
    fast = masked_softmax(scores, keep, in_place=True)
    assert torch.allclose(fast, ref, atol=1e-15) and torch.equal(fast[:, 1], torch.zeros(3, 7))
    assert (scores[~keep.expand_as(s)] == torch.finfo(s.dtype).min).all()  # masked in place
    ref.backward(g)
    fast.backward(g)
    assert torch.allclose(a.grad, b.grad, atol=1e-15)
    keep[..., 0] = True  # now every row keeps a key
    ref = masked_softmax(s, keep)
    assert torch.allclose(masked_softmax(s.clone(), keep, in_place=True, rows_keep_some=True),
                          ref, atol=1e-15)
