import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.attention import build
from attnlab.attention.full import FullAttention
from attnlab.attention.masks import masked_softmax
from attnlab.attention.multihead import MultiHeadAttention
from attnlab.errors import CapabilityError, ConfigError
from attnlab.layers import RotaryPositional
from tests.helpers import LargestTensor


def lsh_reference(attn, q, k, v, *, causal, key_padding_mask=None):
    """Dense twin written from the definition, one (batch, head, round) at a time.

    Round r's attended set of query i: keys of i's bucket that are in view in round r's sorted
    order (by bucket, then item), allowed by causality and padding, and (shared QK) not i
    itself. The output is softmax attention over the union of the rounds' sets, which is what
    the paper's logsumexp weighting with its duplicate correction computes. Returns the output
    and the dense weights.
    """
    B, H, n, Dh = q.shape
    real = (torch.ones(B, n, dtype=torch.bool) if key_padding_mask is None
            else key_padding_mask)
    shared = attn.shared_qk
    m = 1 if shared else 2  # items per position
    N = m * n
    w = min(m * attn.chunk_size, N)
    pos = torch.arange(N) // m
    is_key = torch.ones(N, dtype=torch.bool) if shared else torch.arange(N) % 2 == 0
    is_query = torch.ones(N, dtype=torch.bool) if shared else ~is_key
    out, weights = torch.zeros_like(q), torch.zeros(B, H, n, n, dtype=q.dtype)
    for b in range(B):
        item_real = real[b][pos]
        for h in range(H):
            hashed = (torch.nn.functional.normalize(q[b, h], dim=-1) if shared
                      else torch.stack([k[b, h], q[b, h]], 1).reshape(N, Dh))
            buckets = attn.buckets(hashed)  # (R, N)
            union = torch.zeros(n, n, dtype=torch.bool)
            for r in range(attn.n_hashes):
                bucket = [int(buckets[r, i]) if item_real[i] else attn.n_buckets
                          for i in range(N)]
                order = sorted(range(N), key=lambda i, bk=bucket: (bk[i], i))
                s = [0] * N
                for rank, i in enumerate(order):
                    s[i] = rank
                for i in range(N):
                    if not (is_query[i] and item_real[i]):
                        continue
                    for j in range(N):
                        if not (is_key[j] and item_real[j]) or bucket[i] != bucket[j]:
                            continue
                        if (shared and i == j) or (causal and pos[j] > pos[i]):
                            continue
                        # causal: the band of w items before it; else: its chunk or the previous
                        band = s[i] - s[j] < w
                        if (band if causal else s[i] // w - s[j] // w in (0, 1)):
                            union[pos[i], pos[j]] = True
            keys = torch.nn.functional.normalize(q[b, h], dim=-1) if shared else k[b, h]
            wts = masked_softmax(q[b, h] @ keys.T * attn.softmax_scale(Dh), union)
            if shared:  # no other key in any round: the token attends to itself
                lonely = ~union.any(-1) & real[b]
                wts = wts + torch.diag(lonely.to(wts.dtype))
            weights[b, h] = wts
            out[b, h] = wts @ v[b, h]
    return out, weights


@settings(max_examples=60, deadline=None)
@given(T=st.integers(1, 32), n_buckets=st.sampled_from([1, 2, 4, 8]),
       n_hashes=st.integers(1, 3), chunk=st.integers(1, 8), causal=st.booleans(),
       shared=st.booleans(), data=st.data())
def test_equals_the_dense_union_of_rounds_twin(T, n_buckets, n_hashes, chunk, causal, shared,
                                               data):
    B, H, Dh = 2, 2, 4
    q, k, v = torch.randn(3, B, H, T, Dh, dtype=torch.float64).unbind(0)
    bits = data.draw(st.lists(st.booleans(), min_size=B * T, max_size=B * T))
    mask = torch.tensor(bits).view(B, T)
    attn = build("lsh", n_buckets=n_buckets, n_hashes=n_hashes, chunk_size=chunk,
                 shared_qk=shared, seed=data.draw(st.integers(0, 3)))
    out, w = attn.attention_weights(q, k, v, causal=causal, key_padding_mask=mask)
    ref, ref_w = lsh_reference(attn, q, k, v, causal=causal, key_padding_mask=mask)
    assert torch.allclose(out, ref, atol=1e-10)
    assert torch.allclose(w, ref_w, atol=1e-12)
    plain, none = attn(q, k, v, causal=causal, key_padding_mask=mask)
    assert none is None and torch.equal(plain, out)


def test_rounds_that_meet_the_same_key_count_it_once():
    """The duplicate correction: many rounds, so pairs meet more than once; the result must be
    softmax over the union. Without the log N correction it would weight them N times."""
    q, k, v = torch.randn(3, 1, 2, 16, 4, dtype=torch.float64).unbind(0)
    attn = build("lsh", n_buckets=2, n_hashes=4, chunk_size=4, shared_qk=False)
    out, _ = attn(q, k, v)
    ref, ref_w = lsh_reference(attn, q, k, v, causal=False)
    assert torch.allclose(out, ref, atol=1e-10)
    assert ((ref_w > 0).sum(-1) > 1).any()  # some queries do combine several rounds


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("chunk", [17, 40])
def test_one_bucket_one_chunk_equals_full(causal, chunk):
    q, k, v = torch.randn(3, 2, 3, 17, 8).unbind(0)
    mask = torch.ones(2, 17, dtype=torch.bool)
    mask[1, 12:] = False
    mask[0, :2] = False
    out, _ = build("lsh", n_buckets=1, n_hashes=2, chunk_size=chunk, shared_qk=False)(
        q, k, v, causal=causal, key_padding_mask=mask)
    ref, _ = build("full")(q, k, v, causal=causal, key_padding_mask=mask)
    real = mask[:, None, :, None].expand_as(out)
    assert torch.allclose(out[real], ref[real], atol=1e-5)
    assert torch.equal(out[~real], torch.zeros_like(out[~real]))  # padded queries: zeros


def test_buckets_are_argmax_of_the_seeded_rotations_and_ignore_scale():
    attn = build("lsh", n_buckets=8, n_hashes=3, seed=5)
    x = torch.randn(2, 10, 6)
    b = attn.buckets(x)
    assert b.shape == (2, 3, 10) and b.min() >= 0 and b.max() < 8
    rot = torch.randn(3, 6, 4, generator=torch.Generator().manual_seed(5))
    proj = torch.einsum("btd,rdk->brtk", x, rot)
    assert torch.equal(b, torch.cat([proj, -proj], -1).argmax(-1))
    assert torch.equal(attn.buckets(3.5 * x), b)  # angular: the direction only
    assert torch.equal(build("lsh", n_buckets=8, n_hashes=3, seed=5).buckets(x), b)
    assert not torch.equal(build("lsh", n_buckets=8, n_hashes=3, seed=6).buckets(x), b)
    assert len(set(b.flatten().tolist())) > 4  # the buckets are used
    state = attn.state_dict()
    assert "rotations" not in state and state["hash_seed"].tolist() == [5]


def test_unseeded_layers_hash_differently_and_a_checkpoint_restores_the_hashing():
    a, b = build("lsh", n_buckets=8), build("lsh", n_buckets=8)
    x = torch.randn(2, 16, 8)
    assert not torch.equal(a.buckets(x), b.buckets(x))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.buckets(x), b.buckets(x))


def test_shared_qk_ignores_k_and_excludes_self_unless_alone():
    q, k, v = (t.requires_grad_() for t in torch.randn(3, 1, 2, 12, 8).unbind(0))
    attn = build("lsh", n_buckets=4, n_hashes=2, chunk_size=4)
    assert attn.shared_qk
    out, w = attn.attention_weights(q, k, v, causal=True)
    out2, _ = attn(q, torch.randn_like(k), v, causal=True)
    assert torch.equal(out, out2)
    out.sum().backward()
    assert k.grad is None and q.grad.abs().sum() > 0  # why TINY_OPTIONS tests shared_qk=False
    diag = w[0].diagonal(dim1=-2, dim2=-1)  # (H, T)
    others = (w[0] - torch.diag_embed(diag)).sum(-1)
    assert torch.equal(diag > 0, others == 0)  # itself exactly when there is nobody else
    assert torch.allclose(out[:, :, 0], v[:, :, 0])  # causal token 0: only itself
    assert (others > 0).sum() > 12  # most tokens do find others


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_nothing_at_a_padded_position_moves_a_real_output(shared, causal):
    """Stronger than the registry test: queries at padded positions change too."""
    attn = build("lsh", n_buckets=4, n_hashes=2, chunk_size=3, shared_qk=shared)
    q, k, v = torch.randn(3, 2, 2, 14, 4).unbind(0)
    mask = torch.ones(2, 14, dtype=torch.bool)
    mask[0, 9:] = False
    mask[1, :4] = False
    out, _ = attn(q, k, v, causal=causal, key_padding_mask=mask)
    pad = ~mask[:, None, :, None].expand_as(q)
    q2, k2, v2 = (x.masked_scatter(pad, torch.randn(int(pad.sum())) * 4) for x in (q, k, v))
    out2, _ = attn(q2, k2, v2, causal=causal, key_padding_mask=mask)
    assert torch.allclose(out[~pad], out2[~pad], atol=1e-6)
    assert torch.equal(out2[pad], torch.zeros_like(out2[pad]))


@pytest.mark.parametrize("shared", [False, True])
def test_causal_outputs_depend_on_the_past_only(shared):
    """The band makes a query's key set independent of future tokens' buckets."""
    attn = build("lsh", n_buckets=2, n_hashes=3, chunk_size=3, shared_qk=shared)
    q, k, v = torch.randn(3, 2, 2, 16, 4).unbind(0)
    out, _ = attn(q, k, v, causal=True)
    for t in (3, 8, 12):
        q2, k2, v2 = (torch.cat([x[:, :, :t], torch.randn_like(x[:, :, t:])], 2)
                      for x in (q, k, v))
        out2, _ = attn(q2, k2, v2, causal=True)
        assert torch.allclose(out[:, :, :t], out2[:, :, :t], atol=1e-6)
        assert not torch.allclose(out[:, :, t:], out2[:, :, t:], atol=1e-3)


def test_shared_qk_gradcheck_float64():
    """True gradients w.r.t. q and v (k is unused); buckets are piecewise constant, so the
    check holds away from bucket boundaries, which random inputs avoid at eps = 1e-6."""
    attn = build("lsh", n_buckets=4, n_hashes=2, chunk_size=3)
    q, v = (t.requires_grad_() for t in torch.randn(2, 1, 2, 9, 4, dtype=torch.float64))
    mask = torch.tensor([[True] * 7 + [False] * 2])
    for causal in (False, True):
        assert torch.autograd.gradcheck(
            lambda q, v, c=causal: attn(q, q, v, causal=c, key_padding_mask=mask)[0],
            (q, v), eps=1e-6, atol=1e-5)


def test_fully_padded_rows_are_zero_with_finite_gradients_in_shared_mode():
    attn = build("lsh", n_buckets=4, n_hashes=2, chunk_size=3)
    q, v = (t.requires_grad_() for t in torch.randn(2, 2, 2, 10, 4).unbind(0))
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1] = False
    for causal in (False, True):
        out, _ = attn(q, q, v, causal=causal, key_padding_mask=mask)
        assert torch.equal(out[1], torch.zeros_like(out[1]))
        out.sum().backward()
        assert torch.isfinite(q.grad).all() and torch.isfinite(v.grad).all()


@pytest.mark.parametrize("shared", [True, False])
def test_memory_is_n_times_chunk_never_n_by_n(shared):
    n, c, R = 2048, 64, 2
    q, k, v = (t.requires_grad_() for t in torch.randn(3, 1, 1, n, 16).unbind(0))
    attn = build("lsh", n_buckets=2 * n // c, n_hashes=R, chunk_size=c, shared_qk=shared)
    with LargestTensor() as probe:
        out, _ = attn(q, k, v, causal=True)
        out.sum().backward()
    items = 1 if shared else 2  # the joint query-key sequence is twice as long, chunks too
    # scores: (rounds, items * n / (items * c) chunks, items * c queries, 2 * items * c keys)
    assert probe.numel <= R * (items * n) * (2 * items * c)
    if shared:
        assert probe.numel < n * n / 4
    else:
        assert probe.numel < n * n / 1.5
    with LargestTensor() as dense:
        build("full", impl="eager")(q, k, v, causal=True)
    assert dense.numel >= n * n  # the probe does see a dense matrix when there is one


def test_attended_keys_counts_the_chunk_pairs():
    attn = build("lsh", n_buckets=8, n_hashes=2, chunk_size=64)
    assert attn.attended_keys(1024, 1024, causal=True) == 2 * 128
    assert attn.attended_keys(32, 32, causal=False) == 2 * 32  # one chunk, no look-back
    joint = build("lsh", n_hashes=2, chunk_size=64, shared_qk=False)
    assert joint.attended_keys(1024, 1024, causal=True) == 2 * 2 * 256


def test_dropout_only_while_training():
    attn = build("lsh", n_buckets=2, n_hashes=2, chunk_size=4, dropout=0.5, seed=1)
    q, k, v = torch.randn(3, 1, 2, 12, 4).unbind(0)
    ref, _ = build("lsh", n_buckets=2, n_hashes=2, chunk_size=4, seed=1)(q, k, v)
    assert torch.equal(attn.eval()(q, k, v)[0], ref)
    assert not torch.allclose(attn.train()(q, k, v)[0], ref)


@pytest.mark.parametrize("options, message", [
    (dict(n_buckets=0), "n_buckets must be 1 or an even integer >= 2, got 0"),
    (dict(n_buckets=3), "n_buckets must be 1 or an even integer >= 2, got 3"),
    (dict(n_buckets=True), "n_buckets must be"),
    (dict(n_hashes=0), "n_hashes must be an integer >= 1, got 0"),
    (dict(chunk_size=0), "chunk_size must be an integer >= 1, got 0"),
    (dict(chunk_size=2.5), "chunk_size must be an integer >= 1, got 2.5"),
    (dict(shared_qk="yes"), "shared_qk must be true or false"),
    (dict(seed=-1), "seed must be an integer >= 0"),
])
def test_invalid_options_are_one_line_config_errors(options, message):
    with pytest.raises(ConfigError, match=message) as info:
        build("lsh", **options)
    assert "\n" not in str(info.value) and "attention 'lsh'" in str(info.value)


def test_weights_are_an_explicit_inspection_method_not_need_weights():
    q = torch.randn(1, 1, 6, 4)
    with pytest.raises(CapabilityError, match="'lsh' cannot do returning attention weights"):
        build("lsh")(q, q, q, need_weights=True)
    with pytest.raises(CapabilityError, match="'lsh' cannot do queries and keys of different"):
        build("lsh")(q[:, :, :3], q, q)


# ---------------------------------------------------------------------------------------------
# Shared QK inside MultiHeadAttention: no key projection, the queries are passed as keys


def heads(x, n):  # (B, T, n * Dh) -> (B, n, T, Dh)
    return x.view(*x.shape[:2], n, -1).transpose(1, 2)


@pytest.mark.parametrize("n_kv_heads", [4, 2])
def test_multihead_with_shared_qk_has_no_key_projection_and_no_dead_parameter(n_kv_heads):
    d, H, B, T = 16, 4, 2, 12
    mha = MultiHeadAttention(d, H, n_kv_heads=n_kv_heads, attention="lsh", attention_options=dict(
        n_buckets=4, n_hashes=2, chunk_size=4)).double()
    assert mha.attn.shares_qk and mha.k_proj is None
    assert not any("k_proj" in name for name in mha.state_dict())
    x = torch.randn(B, T, d, dtype=torch.float64)
    out, _ = mha(x, causal=True)
    # By hand: the mechanism on the projected queries; value head j serves query heads of group j
    q = heads(mha.q_proj(x), H)
    v = heads(mha.v_proj(x), n_kv_heads).repeat_interleave(H // n_kv_heads, dim=1)
    ref, _ = mha.attn(q, torch.zeros_like(q), v, causal=True)  # k: its shape only
    assert torch.allclose(out, mha.out_proj(ref.transpose(1, 2).reshape(B, T, d)), atol=1e-12)
    out.square().sum().backward()
    for name, p in mha.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    separate = MultiHeadAttention(d, H, attention="lsh", attention_options={"shared_qk": False})
    assert not separate.attn.shares_qk and separate.k_proj is not None


class SharedQKFull(FullAttention):
    """Softmax attention told to share queries and keys: it reads k, so it shows what MHA
    passes as keys (lsh ignores them)."""

    shares_qk = True


def test_multihead_passes_the_rotated_queries_as_keys():
    d, H, B, T = 16, 4, 2, 7
    mha = MultiHeadAttention(d, H, n_kv_heads=2, attention=SharedQKFull()).double()
    rope = RotaryPositional(d // H)
    x = torch.randn(B, T, d, dtype=torch.float64)
    out, _ = mha(x, causal=True, positional=rope)
    q = rope.rotate(heads(mha.q_proj(x), H))
    v = heads(mha.v_proj(x), 2).repeat_interleave(2, dim=1)
    scores = (q @ q.transpose(-1, -2)) / (d // H) ** 0.5
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    ref = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, d)
    assert torch.allclose(out, mha.out_proj(ref), atol=1e-12)


def test_multihead_with_shared_qk_refuses_a_context():
    x, memory = torch.randn(1, 6, 16), torch.randn(1, 5, 16)
    with pytest.raises(CapabilityError, match="'lsh' cannot do cross-attention"):
        MultiHeadAttention(16, 4, attention="lsh")(x, memory)
    with pytest.raises(CapabilityError, match="shares queries and keys, so it cannot do cross"):
        MultiHeadAttention(16, 4, attention=SharedQKFull())(x, memory)
    with pytest.raises(ConfigError, match="shares queries and keys, so it has no key projection "
                                          "from a context of width kdim=8") as info:
        MultiHeadAttention(16, 4, attention="lsh", kdim=8)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# The layout: all (batch, head, round) rows end to end, one strided view of every chunk's keys


@pytest.mark.parametrize("n_buckets", [1, 4])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("causal", [False, True])
def test_rows_end_to_end_equal_the_twin_without_a_mask_and_with_an_all_true_one(
        n_buckets, shared, causal):
    """Many chunks, rows and rounds: each row's chunk 0 looks back into the previous row (in
    one bucket: the same bucket number), whose keys the bucket codes must drop. Without a
    mask, with an all-true one and in the twin: one result, in float64, and true gradients."""
    B, H, T, Dh = 2, 3, 24, 4
    attn = build("lsh", n_buckets=n_buckets, n_hashes=3, chunk_size=3, shared_qk=shared, seed=2)
    q, k, v = torch.randn(3, B, H, T, Dh, dtype=torch.float64).unbind(0)
    out, _ = attn(q, k, v, causal=causal)
    ref, _ = lsh_reference(attn, q, k, v, causal=causal)
    assert torch.allclose(out, ref, atol=1e-10)
    all_real, _ = attn(q, k, v, causal=causal, key_padding_mask=torch.ones(B, T, dtype=bool))
    assert torch.allclose(all_real, out, atol=1e-14)
    small = [t[:1, :2, :10].clone().requires_grad_() for t in (q, k, v)]
    assert torch.autograd.gradcheck(lambda q, k, v: attn(q, k, v, causal=causal)[0], small,
                                    eps=1e-6, atol=1e-5)
