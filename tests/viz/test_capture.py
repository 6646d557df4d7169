"""Attention capture: outputs untouched, weights equal to hand-computed references, patterns
equal to where each mechanism really attends."""

import math

import pytest
import torch
import torch.nn.functional as F

from attnlab.attention import build
from attnlab.errors import CapabilityError
from attnlab.models import GPT, Encoder, EncoderDecoder
from attnlab.models.config import EncoderConfig, GPTConfig, Seq2SeqConfig
from attnlab.viz.capture import (
    Call,
    bigbird_pattern,
    capture_attention,
    linformer_projected,
    report,
)

SMALL = dict(vocab_size=50, d_model=32, n_heads=4, n_layers=2, max_len=64)


def gpt(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**SMALL, **kw})).eval()


def test_outputs_identical_with_capture_on_and_off_and_no_hooks_left():
    model = gpt(dropout=0.1, attention_options={"dropout": 0.2})
    model.train()  # dropout on: the capture must not consume the random stream
    idx = torch.randint(0, 50, (2, 12))
    torch.manual_seed(1)
    off = model(idx)
    with capture_attention(model) as cap:
        torch.manual_seed(1)
        on = model(idx)
    torch.manual_seed(1)
    after = model(idx)
    assert torch.equal(on, off) and torch.equal(after, off)
    assert len(cap.records) == 2
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


def test_full_weights_equal_softmax_of_the_modules_own_projections():
    model = gpt(positional="learned")
    idx = torch.randint(0, 50, (2, 10))
    inputs = {}
    mha = model.stack.blocks[1].self_attn
    handle = mha.register_forward_pre_hook(lambda m, a: inputs.update(x=a[0]))
    with capture_attention(model) as cap:
        model(idx)
    handle.remove()
    rec = cap.by_name()["stack.blocks.1.self_attn"]
    x = inputs["x"]  # (B, T, d): what the layer saw
    B, T, _ = x.shape
    q = mha.q_proj(x).view(B, T, 4, 8).transpose(1, 2)
    k = mha.k_proj(x).view(B, T, 4, 8).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(8)
    scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    expected = scores.softmax(-1)
    assert rec.kind == "self" and rec.mechanism == "full" and rec.weights.shape == (B, 4, T, T)
    torch.testing.assert_close(rec.weights, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rec.weights.sum(-1), torch.ones(B, 4, T))
    assert torch.equal(rec.weights.triu(1), torch.zeros_like(rec.weights))  # causal
    assert rec.pattern.shape[-2:] == (T, T) and torch.equal(
        rec.pattern[0, 0], torch.ones(T, T, dtype=torch.bool).tril())


def test_encoder_padding_and_rope_weights():
    torch.manual_seed(0)
    model = Encoder(EncoderConfig(**SMALL, positional="rope")).eval()
    idx = torch.randint(0, 50, (2, 9))
    pad = torch.ones(2, 9, dtype=torch.bool)
    pad[1, 6:] = False
    with capture_attention(model) as cap:
        model(idx, key_padding_mask=pad)
    for rec in cap.records:
        assert not rec.weights.triu(1).eq(0).all()  # bidirectional
        assert torch.equal(rec.weights[1, :, :, 6:], torch.zeros(4, 9, 3))
        torch.testing.assert_close(rec.weights.sum(-1), torch.ones(2, 4, 9))


def test_seq2seq_records_self_and_cross_attention():
    torch.manual_seed(0)
    model = EncoderDecoder(Seq2SeqConfig(**SMALL)).eval()
    src, tgt = torch.randint(0, 50, (1, 7)), torch.randint(0, 50, (1, 5))
    with capture_attention(model) as cap:
        model(src, tgt)
    kinds = [(r.name, r.kind, tuple(r.weights.shape[-2:])) for r in cap.records]
    cross = [r for r in cap.records if r.kind == "cross"]
    assert len(cross) == 2 and all(r.weights.shape[-2:] == (5, 7) for r in cross), kinds
    assert all("cross_attn" in r.name for r in cross)
    enc = [r for r in cap.records if r.name.startswith("encoder")]
    assert all(r.weights.shape[-2:] == (7, 7) for r in enc) and len(enc) == 2
    # rollout follows one stack: the decoder's self-attention does not act on source tokens
    from attnlab.errors import AttnlabError
    from attnlab.viz.rollout import attention_rollout

    with pytest.raises(AttnlabError, match="an encoder and a decoder; roll out one of them"):
        attention_rollout(cap.records)
    assert attention_rollout(cap.records, prefix="encoder.").shape == (1, 7, 7)
    assert attention_rollout(cap.records, prefix="decoder.").shape == (1, 5, 5)


def _call(mech_name, T=20, causal=False, pad=None, H=2, Dh=8, **options):
    torch.manual_seed(0)
    mech = build(mech_name, **options).eval()
    q, k, v = (torch.randn(1, H, T, Dh) for _ in range(3))
    return mech, Call(q, k, v, causal, pad, None)


def _run(mech, call):
    """The mechanism's own output and the captured report for the same inputs."""
    out, _ = mech(call.q, call.k, call.v, causal=call.causal,
                  key_padding_mask=call.key_padding_mask)
    weights, pattern, _, extra = report(mech, call)
    return out, weights, pattern, extra


@pytest.mark.parametrize("causal", [False, True])
def test_local_zero_outside_window_and_output_is_weights_times_values(causal):
    mech, call = _call("local", causal=causal, window=4)
    out, weights, pattern, _ = _run(mech, call)
    rel = torch.arange(20)[:, None] - torch.arange(20)[None]
    band = (rel < 4) & (rel > (-1 if causal else -4))
    assert torch.equal(pattern[0, 0], band)
    assert torch.equal(weights != 0, band.expand_as(weights))
    torch.testing.assert_close(weights @ call.v, out)


@pytest.mark.parametrize("causal", [False, True])
def test_bigbird_pattern_is_its_block_layout(causal):
    mech, call = _call("bigbird", T=40, causal=causal, block_size=4, window_blocks=3,
                       num_global_blocks=1, num_random_blocks=2)
    out, weights, pattern, _ = _run(mech, call)
    assert pattern.shape == (1, 2, 40, 40)
    assert torch.equal(weights != 0, pattern)  # nonzero exactly on the layout
    torch.testing.assert_close(weights @ call.v, out)
    # the layout by hand: block 5 (tokens 20..23) sees the global block 0, blocks 4..6 (or
    # 4..5 causal), and its random blocks from random_blocks()
    rnd = mech.random_blocks(10, 2, causal)[0, 5]
    seen = {0, 4, 5} | ({6} if not causal else set()) | {int(r) for r in rnd if r >= 0}
    row = pattern[0, 0, 21 if not causal else 23].view(10, 4).any(-1)
    assert {i for i in range(10) if row[i]} == seen
    assert pattern[0, :, :4].all() if not causal else True  # global rows see every key


def test_bigbird_pattern_helper_with_padding():
    mech = build("bigbird", block_size=2, num_global_blocks=1, num_random_blocks=0)
    pad = torch.ones(1, 6, dtype=torch.bool)
    pad[0, 4:] = False
    p = bigbird_pattern(mech, 6, 1, False, pad)
    assert not p[..., 4:].any() and p[0, 0, 0, :4].all()


def test_longformer_pattern():
    mech, call = _call("longformer", T=16, causal=False, window=3, global_tokens=2)
    out, weights, pattern, _ = _run(mech, call)
    assert torch.equal(weights != 0, pattern.expand_as(weights))
    assert pattern[0, 0, :2].all() and pattern[0, 0, :, :2].all()
    assert not pattern[0, 0, 10, 5] and pattern[0, 0, 10, 8]
    torch.testing.assert_close(weights @ call.v, out)


def test_lsh_dense_weights_reproduce_output_and_buckets():
    mech, call = _call("lsh", T=32, n_buckets=4, n_hashes=2, chunk_size=8, seed=3)
    out, weights, pattern, extra = _run(mech, call)
    torch.testing.assert_close(weights @ call.v, out, rtol=1e-4, atol=1e-5)
    assert extra["buckets"].shape == (1, 2, 2, 32)
    # a query attends only to keys sharing a bucket with it in some round
    b = extra["buckets"][0, 0]  # (R, T)
    shared = (b[:, :, None] == b[:, None, :]).any(0)
    assert not (pattern[0, 0] & ~shared).any()


def test_linformer_projected_weights_reproduce_output():
    mech, call = _call("linformer", T=12, seq_len=16, k=5)
    pad = torch.ones(1, 12, dtype=torch.bool)
    pad[0, 9:] = False
    call.key_padding_mask = pad
    out, weights, _, extra = _run(mech, call)
    W = extra["projected"]
    assert W.shape == (1, 2, 12, 5)
    torch.testing.assert_close(W.sum(-1), torch.ones(1, 2, 12))
    torch.testing.assert_close(weights @ call.v, out, rtol=1e-5, atol=1e-6)
    assert torch.equal(weights[..., 9:], torch.zeros(1, 2, 12, 3))
    W2, _, _ = linformer_projected(mech, call)
    assert torch.equal(W, W2)


@pytest.mark.parametrize("name,options", [
    ("performer", {"nb_features": 16, "seed": 0}), ("hard", {"k": 2}), ("flash", {}),
    ("full", {}), ("luong", {"score": "general", "head_dim": 8}),
    ("luong-local", {"window": 2}), ("luong-local", {"window": 2, "mode": "p", "head_dim": 8})])
def test_other_mechanisms_weights_reproduce_output(name, options):
    mech, call = _call(name, T=10, causal=True, **options)
    out, weights, pattern, _ = _run(mech, call)
    torch.testing.assert_close(weights @ call.v, out, rtol=1e-4, atol=1e-5)
    assert not (weights.abs() > 0)[~pattern.expand_as(weights)].any()
    if name != "hard" and options.get("mode") != "p":  # local-p: softmax times a Gaussian
        torch.testing.assert_close(weights.sum(-1), torch.ones(1, 2, 10), rtol=1e-4,
                                   atol=1e-5)


def test_flash_equals_eager_softmax():
    mech, call = _call("flash", T=8)
    _, weights, _, _ = _run(mech, call)
    ref = F.softmax(call.q @ call.k.transpose(-1, -2) / math.sqrt(8), -1)
    torch.testing.assert_close(weights, ref)


def test_model_without_attention_is_an_error():
    with pytest.raises(CapabilityError), capture_attention(torch.nn.Linear(2, 2)):
        pass


def test_every_registered_mechanism_has_an_attention_report():
    from attnlab.attention import available
    from attnlab.viz.capture import REPORTS

    assert set(available()) <= set(REPORTS)
