"""Schedule values the existing schedule tests leave open: the
constant schedule, cosine without warmup and past its end, noam's `lr` factor; and the
groups `build_optimizer` really hands to AdamW."""

import math

import pytest
import torch

from attnlab.models import GPT, GPTConfig
from attnlab.train.optim import build_optimizer, lr_at


def test_constant_schedule_warms_up_then_holds_lr():
    kw = dict(schedule="constant", lr=0.5, min_lr=0.01, warmup_steps=4, max_steps=100)
    assert [lr_at(s, **kw) for s in range(4)] == pytest.approx([0.125, 0.25, 0.375, 0.5])
    assert [lr_at(s, **kw) for s in (4, 50, 99, 500)] == [0.5] * 4
    assert lr_at(0, **{**kw, "warmup_steps": 0}) == 0.5


def test_cosine_without_warmup_and_after_its_end():
    kw = dict(schedule="cosine", lr=1.0, min_lr=0.1, warmup_steps=0, max_steps=10)
    for step in range(10):
        progress = (step + 1) / 10
        assert lr_at(step, **kw) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * progress)))
    assert lr_at(10, **kw) == lr_at(1000, **kw) == pytest.approx(0.1)  # held at min_lr


def test_noam_scales_by_lr_and_defaults_to_d_model_one():
    paper = lr_at(10, schedule="noam", lr=1.0, min_lr=0, warmup_steps=20, max_steps=1,
                  d_model=64)
    assert lr_at(10, schedule="noam", lr=3.0, min_lr=0, warmup_steps=20, max_steps=1,
                 d_model=64) == pytest.approx(3 * paper)
    assert lr_at(10, schedule="noam", lr=1.0, min_lr=0, warmup_steps=20,
                 max_steps=1) == pytest.approx(8 * paper)


def test_build_optimizer_hands_adamw_the_decay_and_betas_asked_for():
    model = GPT(GPTConfig(vocab_size=11, d_model=16, n_heads=2, n_layers=1))
    opt = build_optimizer(model, lr=2e-3, weight_decay=0.3, betas=(0.7, 0.8))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.3, 0.0]
    assert all(g["betas"] == (0.7, 0.8) and g["lr"] == 2e-3 for g in opt.param_groups)
    assert all(p.dim() >= 2 for p in opt.param_groups[0]["params"])
    assert all(p.dim() < 2 for p in opt.param_groups[1]["params"])
    frozen = GPT(GPTConfig(vocab_size=11, d_model=16, n_heads=2, n_layers=1))
    frozen.tok_emb.weight.requires_grad_(False)  # tied to the head: both frozen
    opt = build_optimizer(frozen, lr=2e-3, weight_decay=0.3)
    assert all(p.requires_grad for g in opt.param_groups for p in g["params"])
    assert torch.is_tensor(opt.param_groups[0]["params"][0])
