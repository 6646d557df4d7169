"""Luong global / local and Bahdanau (concat) attention against hand computations, plus the
registry's properties on the learned variants (the registry-wide tests run dot and local-m)."""

import math

import pytest
import torch

from attnlab.attention import build
from attnlab.attention import luong as luong_module
from attnlab.errors import AttnlabError, ConfigError
from tests.helpers import LargestTensor

Dh = 6
LEARNED = [
    ("luong", {"score": "general", "head_dim": Dh}),
    ("luong", {"score": "concat", "head_dim": Dh}),
    ("luong-local", {"score": "general", "head_dim": Dh, "window": 2}),
    ("luong-local", {"score": "concat", "head_dim": Dh, "window": 2}),
    ("luong-local", {"mode": "p", "head_dim": Dh, "window": 2}),
    ("luong-local", {"mode": "p", "score": "concat", "head_dim": Dh, "window": 3}),
]
IDS = [f"{n}-{o.get('mode', 'm' if n.endswith('local') else '')}-{o.get('score', 'dot')}"
       for n, o in LEARNED]


def qkv(B=2, H=2, Tq=9, Tk=9, dtype=torch.float32, grad=False):
    return tuple(torch.randn(B, H, T, Dh, dtype=dtype, requires_grad=grad)
                 for T in (Tq, Tk, Tk))


def test_dot_is_unscaled_softmax_attention():
    q, k, v = qkv()
    out, w = build("luong")(q, k, v, need_weights=True)
    ref_w = torch.softmax(q @ k.transpose(-1, -2), -1)
    torch.testing.assert_close(w, ref_w)
    torch.testing.assert_close(out, ref_w @ v)
    full, _ = build("full", scale=1.0)(q, k, v)
    torch.testing.assert_close(out, full, rtol=1e-5, atol=1e-5)


def test_general_score_is_q_wa_k():
    attn = build("luong", score="general", head_dim=Dh)
    q, k, v = qkv(Tq=4, Tk=7)
    out, w = attn(q, k, v, need_weights=True)
    scores = torch.einsum("bhid,de,bhje->bhij", q, attn.scorer.W_a.detach(), k)
    torch.testing.assert_close(w, torch.softmax(scores, -1))
    torch.testing.assert_close(out, w @ v)


def test_concat_is_bahdanau_additive_score_by_hand():
    """score(h_t, h_s) = v_a^T tanh(W_a [h_t; h_s]), one pair at a time."""
    attn = build("luong", score="concat", head_dim=Dh)
    q, k, v = qkv(B=1, H=2, Tq=3, Tk=5)
    W, va = attn.scorer.W_a.detach(), attn.scorer.v_a.detach()
    scores = torch.empty(1, 2, 3, 5)
    for h in range(2):
        for i in range(3):
            for j in range(5):
                scores[0, h, i, j] = va @ torch.tanh(W @ torch.cat([q[0, h, i], k[0, h, j]]))
    out, w = attn(q, k, v, need_weights=True)
    torch.testing.assert_close(w, torch.softmax(scores, -1))
    torch.testing.assert_close(out, w @ v)


def test_concat_query_blocks_change_nothing(monkeypatch):
    attn = build("luong", score="concat", head_dim=Dh)
    q, k, v = qkv(Tq=11, Tk=7)
    whole, _ = attn(q, k, v)
    monkeypatch.setattr(luong_module, "CONCAT_BLOCK", 2 * 2 * 7 * Dh * 3)  # 3 queries a block
    torch.testing.assert_close(attn(q, k, v)[0], whole)


@pytest.mark.parametrize("score", ["dot", "general", "concat"])
def test_local_m_with_a_window_covering_the_source_equals_global(score):
    glob = build("luong", score=score, head_dim=Dh)
    local = build("luong-local", mode="m", window=8, score=score, head_dim=Dh)
    local.scorer.load_state_dict(glob.scorer.state_dict())
    q, k, v = qkv(Tq=5, Tk=9)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, 7:] = False
    a, wa = glob(q, k, v, key_padding_mask=mask, need_weights=True)
    b, wb = local(q, k, v, key_padding_mask=mask, need_weights=True)
    torch.testing.assert_close(b, a)
    torch.testing.assert_close(wb, wa)
    # and causal: query i (position i) sees keys 0..i, as global attention's top-left rows do
    c, _ = local(q, k, v, causal=True)
    keep = torch.ones(5, 9, dtype=torch.bool).tril()
    ref = torch.softmax(glob.scorer.dense(q, k).masked_fill(~keep, -math.inf), -1) @ v
    torch.testing.assert_close(c, ref)


def test_local_m_window_is_centred_on_the_query_position():
    attn = build("luong-local", mode="m", window=1)
    q, k, v = qkv(B=1, H=1, Tq=4, Tk=6)
    _, w = attn(q, k, v, need_weights=True)
    nonzero = (w[0, 0] > 0)
    expected = torch.zeros(4, 6, dtype=torch.bool)
    for t in range(4):
        expected[t, max(t - 1, 0):t + 2] = True
    assert torch.equal(nonzero, expected)
    # one query at a time with query_start = t gives the same rows
    rows = [attn(q[:, :, t:t + 1], k, v, query_start=t)[0] for t in range(4)]
    torch.testing.assert_close(torch.cat(rows, 2), attn(q, k, v)[0])


def test_local_p_gaussian_by_hand():
    D = 2
    attn = build("luong-local", mode="p", window=D, score="general", head_dim=Dh)
    q, k, v = qkv(B=1, H=1, Tq=3, Tk=10)
    mask = torch.ones(1, 10, dtype=torch.bool)
    mask[0, 8:] = False  # S = 8 real keys
    out, w = attn(q, k, v, key_padding_mask=mask, need_weights=True)
    Wp, vp, Wa = attn.W_p.detach(), attn.v_p.detach(), attn.scorer.W_a.detach()
    expected = torch.zeros(3, 10)
    for t in range(3):
        h = q[0, 0, t]
        p = 7 * torch.sigmoid(vp @ torch.tanh(Wp @ h))  # (S - 1) sigmoid(v_p^T tanh(W_p h_t))
        c = int(torch.round(p))
        window = [s for s in range(c - D, c + D + 1) if 0 <= s < 8]
        scores = torch.stack([h @ Wa @ k[0, 0, s] for s in window])
        align = torch.softmax(scores, 0)
        for a, s in zip(align, window, strict=True):
            expected[t, s] = a * math.exp(-(s - float(p)) ** 2 / (2 * (D / 2) ** 2))
    torch.testing.assert_close(w[0, 0], expected)
    torch.testing.assert_close(out[0, 0], expected @ v[0, 0])
    assert (w.sum(-1) < 1).all()  # the paper's weights: softmax times a Gaussian, not renormalized


def test_local_p_predictor_gets_gradients_through_the_gaussian():
    attn = build("luong-local", mode="p", window=2, head_dim=Dh)
    q, k, v = qkv()
    attn(q, k, v)[0].square().sum().backward()
    assert attn.W_p.grad.abs().sum() > 0 and attn.v_p.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", ["m", "p"])
def test_local_never_builds_the_query_by_key_matrix(mode):
    n = 512
    attn = build("luong-local", mode=mode, window=4, head_dim=8)
    q, k, v = (torch.randn(1, 1, n, 8) for _ in range(3))
    with LargestTensor() as seen, torch.no_grad():
        attn(q, k, v, key_padding_mask=torch.ones(1, n, dtype=torch.bool))
    assert seen.numel < n * n // 4, seen.numel  # windows: n * 9 * 8; the matrix: n * n


@pytest.mark.parametrize("name, opts", LEARNED, ids=IDS)
def test_learned_variants_have_the_registry_properties(name, opts):
    """What tests/attention/test_properties.py checks, at the fixed head size they need."""
    attn = build(name, **opts)
    B, T = 2, 9
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, 7:] = False  # every window (D >= 2) still holds a real key
    for causal in (False, True):
        # weights: rows sum to 1 (local-p: at most 1), padded keys get none, out = w @ v
        q, k, v = qkv(B=B, Tq=T, Tk=T)
        out, w = attn(q, k, v, causal=causal, key_padding_mask=mask, need_weights=True)
        sums = w.sum(-1)
        if opts.get("mode") == "p":
            # (causal: a window predicted wholly after its query is empty, so zeros)
            assert (sums <= 1 + 1e-6).all() and (causal or (sums > 0).all())
        else:
            torch.testing.assert_close(sums, torch.ones_like(sums))
        assert torch.equal(w[0, :, :, 7:], torch.zeros_like(w[0, :, :, 7:]))
        if causal:
            assert torch.equal(w.triu(1), torch.zeros_like(w))
        torch.testing.assert_close(out, w @ v, rtol=1e-5, atol=1e-5)
        # padding invariance
        k2, v2 = k.clone(), v.clone()
        k2[0, :, 7:] += 5 * torch.randn_like(k2[0, :, 7:])
        v2[0, :, 7:] += 5 * torch.randn_like(v2[0, :, 7:])
        torch.testing.assert_close(attn(q, k2, v2, causal=causal, key_padding_mask=mask)[0], out)
        # causality: changing the future moves no past output
        if causal:
            q3, k3, v3 = q.clone(), k.clone(), v.clone()
            for x in (q3, k3, v3):
                x[:, :, 5:] = torch.randn_like(x[:, :, 5:])
            torch.testing.assert_close(attn(q3, k3, v3, causal=True)[0][:, :, :5],
                                       attn(q, k, v, causal=True)[0][:, :, :5])
        # fully masked rows are zeros, with finite gradients
        dead = mask.clone()
        dead[1] = False
        qg, kg, vg = qkv(B=B, Tq=T, Tk=T, grad=True)
        o, _ = attn(qg, kg, vg, causal=causal, key_padding_mask=dead)
        assert torch.equal(o[1], torch.zeros_like(o[1]))
        o.sum().backward()
        assert all(torch.isfinite(t.grad).all() for t in (qg, kg, vg))
    # float64 gradients (round(p_t) is locally constant, so local-p is smooth almost everywhere)
    attn = attn.double()
    q, k, v = qkv(B=1, Tq=5, Tk=7, dtype=torch.float64, grad=True)
    m = torch.tensor([[True] * 6 + [False]])
    assert torch.autograd.gradcheck(
        lambda q, k, v: attn(q, k, v, key_padding_mask=m)[0], (q, k, v), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name, opts, message", [
    ("luong", {"score": "general"}, "set head_dim"),
    ("luong", {"score": "concat", "head_dim": 0}, "set head_dim"),
    ("luong", {"score": "additive"}, "unknown attention 'luong' score"),
    ("luong-local", {"mode": "p"}, "mode 'p' predicts positions"),
    ("luong-local", {"mode": "p", "head_dim": 4, "window": 0}, "needs window >= 1"),
    ("luong-local", {"mode": "x"}, "unknown attention 'luong-local' mode"),
    ("luong-local", {"window": -1}, "window must be an integer >= 0"),
])
def test_bad_options_are_one_line_config_errors(name, opts, message):
    with pytest.raises(AttnlabError, match=message) as info:
        build(name, **opts)
    assert "\n" not in str(info.value)


def test_a_head_size_other_than_the_parameters_is_an_error():
    attn = build("luong", score="general", head_dim=4)
    with pytest.raises(ValueError, match="built for head_dim 4, got heads of 6"):
        attn(*qkv())
    with pytest.raises(ConfigError):
        build("luong", scorr="dot")


def test_learned_scores_work_behind_multihead_attention():
    from attnlab.attention import MultiHeadAttention

    mha = MultiHeadAttention(16, 2, attention="luong",
                             attention_options={"score": "concat", "head_dim": 8})
    x, mem = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    out, w = mha(x, mem, need_weights=True)
    assert out.shape == (2, 5, 16) and w.shape == (2, 2, 5, 7)
    out.sum().backward()
    assert mha.attn.scorer.v_a.grad.abs().sum() > 0
