"""Attention capture cases: ALiBi's bias in the recorded
weights, training-mode noise kept out of them, and longformer's causal pattern."""

import math

import torch

from attnlab.viz.capture import capture_attention
from tests.viz.test_capture import _call, _run, gpt


def _mechanism_io(mech):
    """Record the mechanism's inputs and output on its next calls."""
    seen = []
    handle = mech.register_forward_hook(
        lambda m, args, kwargs, out: seen.append((args, out[0])), with_kwargs=True)
    return seen, handle


def test_alibi_weights_carry_the_bias_and_reproduce_the_output():
    model = gpt(positional="alibi")
    idx = torch.randint(0, 50, (2, 10))
    seen, handle = _mechanism_io(model.stack.blocks[0].self_attn.attn)
    with capture_attention(model) as cap:
        model(idx)
    handle.remove()
    (q, k, v), out = seen[0]
    rec = cap.records[0]
    torch.testing.assert_close(rec.weights @ v, out, rtol=1e-5, atol=1e-6)
    # by hand: softmax(q k^T / sqrt(d) - slope_h * (i - j)), slopes 2^(-8 h / H), causal
    T = q.shape[2]
    slopes = torch.tensor([2.0 ** (-8 * (h + 1) / 4) for h in range(4)])
    dist = (torch.arange(T)[:, None] - torch.arange(T)[None]).float()
    scores = q @ k.transpose(-1, -2) / math.sqrt(8) - slopes[:, None, None] * dist
    scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    torch.testing.assert_close(rec.weights, scores.softmax(-1), rtol=1e-5, atol=1e-6)


def test_training_mode_weights_are_the_evaluation_selection():
    """A gumbel hard-attention model in training mode is shown with the selection evaluation
    makes, not one drawn with noise (see the capture module doc)."""
    model = gpt(attention="hard", attention_options={"k": 2, "gumbel": True})
    idx = torch.randint(0, 50, (2, 10))
    with capture_attention(model) as cap:
        model(idx)
    evaluated = cap.records[0].weights  # layer 0's q, k do not depend on the noise
    model.train()
    for seed in range(3):
        torch.manual_seed(seed)
        with capture_attention(model) as cap:
            model(idx)
        assert model.stack.blocks[0].self_attn.attn.training  # the mode is restored
        torch.testing.assert_close(cap.records[0].weights, evaluated)


def test_causal_longformer_pattern_never_looks_ahead():
    mech, call = _call("longformer", T=16, causal=True, window=3, global_tokens=2)
    out, weights, pattern, _ = _run(mech, call)
    future = ~torch.ones(16, 16, dtype=torch.bool).tril()
    assert not pattern[0, 0][future].any()
    assert torch.equal(weights != 0, pattern.expand_as(weights))
    assert pattern[0, 0, :, :2].tril().equal(torch.ones(16, 2, dtype=torch.bool).tril())
    torch.testing.assert_close(weights @ call.v, out)
