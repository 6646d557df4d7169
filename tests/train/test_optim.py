import itertools
import math

import pytest
import torch

from attnlab.errors import ConfigError
from attnlab.models import GPT, GPTConfig
from attnlab.train.optim import build_optimizer, lr_at, param_groups


def test_param_groups_decay_matrices_only_and_count_tied_once():
    model = GPT(GPTConfig(vocab_size=11, d_model=16, n_heads=2, n_layers=1))
    decay, no_decay = param_groups(model, 0.1)
    assert all(p.dim() >= 2 for p in decay["params"]) and decay["weight_decay"] == 0.1
    assert all(p.dim() < 2 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
    ids = [id(p) for p in decay["params"] + no_decay["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert sum(p.numel() for p in decay["params"] + no_decay["params"]) == model.num_parameters()
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.1)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.95)


def test_cosine_schedule_warms_up_then_decays_to_min():
    kw = dict(schedule="cosine", lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110)
    assert lr_at(0, **kw) == pytest.approx(0.1)
    assert lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(59, **kw) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(109, **kw) == pytest.approx(0.1)
    lrs = [lr_at(s, **kw) for s in range(9, 110)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))


def test_noam_schedule_is_the_papers_formula():
    d, warm = 512, 4000
    for step in (0, 100, 3999, 4000, 20000):
        s = step + 1
        expected = d ** -0.5 * min(s ** -0.5, s * warm ** -1.5)
        got = lr_at(step, schedule="noam", lr=1.0, min_lr=0, warmup_steps=warm,
                    max_steps=10**6, d_model=d)
        assert got == pytest.approx(expected)
    peak = max(range(8000), key=lambda st: lr_at(st, schedule="noam", lr=1.0, min_lr=0,
                                                 warmup_steps=warm, max_steps=1, d_model=d))
    assert peak == warm - 1


def test_unknown_schedule_suggests():
    with pytest.raises(ConfigError, match="did you mean 'cosine'"):
        lr_at(0, schedule="cosin", lr=1, min_lr=0, warmup_steps=0, max_steps=1)
