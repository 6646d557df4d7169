import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.attention import build
from attnlab.attention.masks import masked_softmax
from attnlab.errors import ConfigError
from tests.helpers import LargestTensor


def dense_pattern(attn, n, n_heads, causal, random_nb=None):
    """The BigBird pattern as a dense (H, n, n) mask, built from the paper's rules and the
    module's chosen random blocks (the only part taken from the module), drawn as for
    `random_nb` blocks (a padded row's own length; default all)."""
    b = attn.block_size
    nb = -(-n // b)
    g, h = attn.num_global_blocks, attn.window_blocks // 2
    blk = torch.arange(n) // b
    i, j = blk[:, None], blk[None, :]
    keep = ((i - j).abs() <= h) | (j < g) | (i < g)  # window, global keys, global queries
    rand = torch.zeros(n_heads, nb, nb, dtype=torch.bool)
    table = attn.random_blocks(nb, n_heads, causal).clone()  # (H, nb, r), -1 = none
    if random_nb is not None:  # the row's own blocks draw for its length; padding keeps nb's
        table[:, :random_nb] = attn.random_blocks(random_nb, n_heads, causal)
    for head, row, slot in (table >= 0).nonzero().tolist():
        rand[head, row, table[head, row, slot]] = True
    keep = keep | rand[:, blk][:, :, blk]  # (H, n, n)
    if causal:
        keep = keep & torch.ones(n, n, dtype=torch.bool).tril()
    return keep


def own_blocks(mask, b):
    """Each row's blocks up to its last real key (1 for a row with none)."""
    return [max((int(row.nonzero().max()) // b + 1) if row.any() else 1, 1) for row in mask]


def dense_reference(attn, q, k, v, *, causal, key_padding_mask=None):
    _, H, n, Dh = q.shape
    if key_padding_mask is None or causal:
        keep = dense_pattern(attn, n, H, causal)[None]  # (1, H, n, n)
    else:  # a row's random blocks are drawn for its own length (see row_patterns)
        keep = torch.stack([dense_pattern(attn, n, H, causal, u)
                            for u in own_blocks(key_padding_mask, attn.block_size)])
    if key_padding_mask is not None:
        keep = keep & key_padding_mask[:, None, None, :]
    w = masked_softmax(q @ k.transpose(-1, -2) / Dh**0.5, keep)
    return w @ v, w


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), block=st.integers(1, 6), window=st.sampled_from([1, 3, 5]),
       glob=st.integers(0, 3), rand=st.integers(0, 3), seed=st.integers(0, 5),
       causal=st.booleans(), data=st.data())
def test_equals_dense_reference_with_the_same_block_pattern(n, block, window, glob, rand, seed,
                                                            causal, data):
    B, H, Dh = 2, 3, 4
    q, k, v = torch.randn(3, B, H, n, Dh).unbind(0)
    bits = data.draw(st.lists(st.booleans(), min_size=B * n, max_size=B * n))
    mask = torch.tensor(bits).view(B, n)
    attn = build("bigbird", block_size=block, window_blocks=window, num_global_blocks=glob,
                 num_random_blocks=rand, seed=seed)
    out, w = attn(q, k, v, causal=causal, key_padding_mask=mask, need_weights=True)
    ref, ref_w = dense_reference(attn, q, k, v, causal=causal, key_padding_mask=mask)
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(w, ref_w, atol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("options", [
    dict(window_blocks=9, num_global_blocks=0, num_random_blocks=0),  # window >= 2 nb - 1
    dict(window_blocks=1, num_global_blocks=5, num_random_blocks=0),  # every block global
    dict(window_blocks=1, num_global_blocks=0, num_random_blocks=4),  # random covers the rest
    dict(window_blocks=3, num_global_blocks=1, num_random_blocks=2),  # together they cover
], ids=["window", "global", "random", "mixed"])
def test_covering_every_block_equals_full(causal, options):
    n, b = 17, 4  # 5 blocks, the last one padded internally
    q, k, v = torch.randn(3, 2, 3, n, 8).unbind(0)
    attn = build("bigbird", block_size=b, **options)
    ref_attn = build("full")
    for mask in (None, torch.tensor([[True] * n, [False] * 2 + [True] * 10 + [False] * 5])):
        out, _ = attn(q, k, v, causal=causal, key_padding_mask=mask)
        ref, _ = ref_attn(q, k, v, causal=causal, key_padding_mask=mask)
        assert torch.allclose(out, ref, atol=1e-5)


def test_a_key_in_two_sets_counts_once():
    """Block 0 is global and inside block 1's window; with equal scores every distinct key it
    sees weighs the same (a duplicate slot would double block 0's weight)."""
    n, b = 12, 2
    q = torch.zeros(1, 1, n, 4)
    k, v = torch.randn(2, 1, 1, n, 4).unbind(0)
    attn = build("bigbird", block_size=b, window_blocks=3, num_global_blocks=1,
                 num_random_blocks=0)
    _, w = attn(q, k, v, need_weights=True)
    row = w[0, 0, 2]  # query 2 sits in block 1: keys of blocks 0, 1, 2, nothing else
    assert torch.allclose(row[:6], torch.full((6,), 1 / 6))
    assert torch.equal(row[6:], torch.zeros(n - 6))


def test_sees_window_global_and_random_blocks_exactly():
    n, b, H = 24, 2, 2  # 12 blocks
    attn = build("bigbird", block_size=b, window_blocks=3, num_global_blocks=1,
                 num_random_blocks=2, seed=3)
    q, k, v = torch.randn(3, 1, H, n, 4).unbind(0)
    _, w = attn(q, k, v, need_weights=True)
    table = attn.random_blocks(12, H, causal=False)
    for head in range(H):
        assert bool((w[0, head, :b] > 0).all())  # global queries see every key
        for row in range(1, 12):
            seen = {int(p) // b for p in (w[0, head, row * b] > 0).nonzero().flatten()}
            expected = {0, row - 1, row, row + 1} & set(range(12))
            assert seen == expected | set(table[head, row].tolist())


@pytest.mark.parametrize("causal", [False, True])
def test_random_blocks_lie_outside_window_and_global_and_are_fixed(causal):
    attn = build("bigbird", block_size=4, window_blocks=3, num_global_blocks=2,
                 num_random_blocks=3, seed=7)
    nb, H = 20, 4
    table = attn.random_blocks(nb, H, causal)
    assert table.shape == (H, nb, 3)
    assert (table[:, :2] == -1).all()  # global query blocks draw nothing
    for head in range(H):
        for row in range(2, nb):
            picked = [j for j in table[head, row].tolist() if j >= 0]
            allowed = [j for j in range(2, nb) if abs(j - row) > 1 and (j < row or not causal)]
            assert len(set(picked)) == len(picked) == min(3, len(allowed))
            assert set(picked) <= set(allowed)
    assert not all(torch.equal(table[0], table[h]) for h in range(1, H))  # drawn per head
    again = build("bigbird", block_size=4, window_blocks=3, num_global_blocks=2,
                  num_random_blocks=3, seed=7)
    assert torch.equal(again.random_blocks(nb, H, causal), table)  # the seed fixes them
    other = build("bigbird", block_size=4, window_blocks=3, num_global_blocks=2,
                  num_random_blocks=3, seed=8)
    assert not torch.equal(other.random_blocks(nb, H, causal), table)


def test_random_blocks_are_not_redrawn_between_calls_or_in_training():
    attn = build("bigbird", block_size=2, window_blocks=1, num_global_blocks=0,
                 num_random_blocks=2).train()
    q, k, v = torch.randn(3, 1, 2, 20, 4).unbind(0)
    first, _ = attn(q, k, v)
    assert torch.equal(attn(q, k, v)[0], first)
    assert torch.equal(attn.eval()(q, k, v)[0], first)


def test_causal_output_does_not_depend_on_the_length():
    """Causal random blocks depend on the block index only: a prefix gives the prefix output."""
    attn = build("bigbird", block_size=3, window_blocks=3, num_global_blocks=1,
                 num_random_blocks=2)
    q, k, v = torch.randn(3, 2, 2, 40, 4).unbind(0)
    out, _ = attn(q, k, v, causal=True)
    for m in (7, 19, 30):
        short, _ = attn(q[:, :, :m], k[:, :, :m], v[:, :, :m], causal=True)
        assert torch.allclose(short, out[:, :, :m], atol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
def test_memory_is_linear_never_an_n_by_n_matrix(causal):
    n, b = 2048, 64
    q, k, v = (t.requires_grad_() for t in torch.randn(3, 1, 1, n, 16).unbind(0))
    attn = build("bigbird", block_size=b)  # the paper's 3 window, 2 global, 3 random blocks
    with LargestTensor() as probe:
        out, _ = attn(q, k, v, causal=causal)
        out.sum().backward()
    # scores are (B, H, n/b - 2, b, 8 b): 8 key blocks gathered per query block
    assert probe.numel <= (n - 2 * b) * 8 * b
    assert probe.numel < n * n / 4
    with LargestTensor() as dense:
        build("full", impl="eager")(q, k, v, causal=causal)
    assert dense.numel >= n * n  # the probe does see a dense matrix when there is one


@pytest.mark.parametrize("options, message", [
    (dict(block_size=0), "block_size must be an integer >= 1"),
    (dict(window_blocks=0), "window_blocks must be an integer >= 1"),
    (dict(window_blocks=2), "window_blocks must be odd"),
    (dict(num_global_blocks=-1), "num_global_blocks must be an integer >= 0"),
    (dict(num_random_blocks=-2), "num_random_blocks must be an integer >= 0"),
    (dict(block_size=2.5), "block_size must be an integer"),
    (dict(seed="x"), "seed must be an integer"),
])
def test_invalid_options_are_one_line_config_errors(options, message):
    with pytest.raises(ConfigError, match=f"attention 'bigbird': {message}") as info:
        build("bigbird", **options)
    assert "\n" not in str(info.value)


def test_attended_keys_counts_the_gathered_blocks():
    attn = build("bigbird", block_size=64, window_blocks=3, num_global_blocks=2,
                 num_random_blocks=3)
    n = 4096
    # 128 global rows score all n keys; the rest score 8 blocks of 64
    assert attn.attended_keys(n, n, causal=False) == (128 * n + (n - 128) * 8 * 64) / n
    assert attn.attended_keys(n, n, causal=True) == (128 * 128 + (n - 128) * 7 * 64) / n
    assert attn.attended_keys(64, 64, causal=False) == 64  # one block: it is all global
