"""Attention dropout acts only while training, on every path of every mechanism that has it
(the fused kernels, the eager reference twins, and the explicit weights paths)."""

import pytest
import torch

from attnlab.attention import build
from tests.conftest import TINY_OPTIONS

# (name, extra options, call keywords): each path that applies dropout
PATHS = [
    ("full", {"impl": "sdpa"}, {}),
    ("full", {"impl": "eager"}, {}),
    ("full", {}, {"need_weights": True}),
    ("full", {}, {"causal": True}),
    ("local", {"impl": "sdpa"}, {"causal": True}),
    ("local", {"impl": "eager"}, {"causal": True}),
    ("local", {}, {"need_weights": True}),
    ("longformer", {"impl": "sdpa"}, {}),
    ("longformer", {"impl": "eager"}, {}),
    ("longformer", {"impl": "sdpa"}, {"causal": True}),
    ("bigbird", {}, {}),
    ("bigbird", {}, {"causal": True}),
    ("linformer", {}, {}),
    ("lsh", {}, {}),
    ("lsh", {}, {"causal": True}),
    ("luong", {}, {}),
    ("luong", {}, {"need_weights": True}),
    ("luong-local", {}, {}),
]


@pytest.mark.parametrize("name, extra, kw", PATHS,
                         ids=["-".join([n, *(f"{a}={b}" for a, b in {**e, **k}.items())])
                              for n, e, k in PATHS])
def test_dropout_only_while_training_on_every_path(name, extra, kw):
    q, k, v = torch.randn(3, 2, 2, 12, 8).unbind(0)
    torch.manual_seed(1)
    with_dropout = build(name, **{**TINY_OPTIONS[name], **extra, "dropout": 0.5})
    torch.manual_seed(1)
    without = build(name, **{**TINY_OPTIONS[name], **extra}).eval()
    want, want_w = without(q, k, v, **kw)

    with_dropout.eval()
    got, got_w = with_dropout(q, k, v, **kw)
    torch.testing.assert_close(got, want)
    if want_w is not None:
        torch.testing.assert_close(got_w, want_w)  # the weights never carry the dropout

    with_dropout.train()
    trained, _ = with_dropout(q, k, v, **kw)
    assert not torch.allclose(trained, want, atol=1e-3), "dropout=0.5 had no effect in training"
