import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from attnlab.errors import AttnlabError
from attnlab.models import GPT, GPTConfig
from attnlab.tasks.config import TrainConfig
from attnlab.train.distributed import Dist
from attnlab.train.trainer import Trainer, autocast_context, step_seed

T = 16


class ToyTask:
    """Next-token prediction on a fixed random token stream; batches from the generator only."""

    def __init__(self, seed: int):
        torch.manual_seed(seed)
        self.model = GPT(GPTConfig(vocab_size=17, d_model=32, n_heads=2, n_layers=2, max_len=T,
                                   dropout=0.1))
        # a learnable stream: a fixed cycle with 10% noise
        g = torch.Generator().manual_seed(0)
        clean = (torch.arange(2000) * 5) % 17
        noise = torch.randint(17, (2000,), generator=g)
        self.tokens = torch.where(torch.rand(2000, generator=g) < 0.1, noise, clean)
        self.val = self.tokens[:4 * (T + 1)].view(4, T + 1)

    def train_batch(self, generator, n, part):
        starts = torch.randint(len(self.tokens) - T - 1, (n,), generator=generator)
        rows = torch.stack([self.tokens[s:s + T + 1] for s in starts.tolist()])
        return rows[part, :-1], rows[part, 1:]

    def loss(self, model, batch):
        x, y = batch
        return F.cross_entropy(model(x).float().flatten(0, 1), y.flatten())

    def evaluate(self, model):
        return {"val_loss": self.loss(model, (self.val[:, :-1], self.val[:, 1:])).item()}


def config(**kw):
    base = dict(max_steps=12, batch_size=4, lr=1e-2, min_lr=1e-3, warmup_steps=2,
                eval_interval=5, checkpoint_interval=6, log_interval=1, seed=3)
    return TrainConfig(**{**base, **kw})


def trainer(tmp, seed=0, resume=False, **kw):
    return Trainer(ToyTask(seed), tmp, config(**kw), dist=Dist(), device=torch.device("cpu"),
                   resume=resume, progress=False)


def test_half_resume_half_is_bit_identical_to_straight(tmp_path):
    a = trainer(tmp_path / "a")
    (tmp_path / "a").mkdir()
    a.fit()
    (tmp_path / "b").mkdir()
    b = trainer(tmp_path / "b")
    for _ in range(6):
        b.train_step()
    b.save("last")
    b2 = trainer(tmp_path / "b", seed=99, resume=True)  # different init: weights must come back
    assert b2.step == 6
    b2.fit()
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b2.model.state_dict().items(),
                                 strict=True):
        assert torch.equal(x, y), name


def test_every_process_and_step_draws_its_own_dropout(tmp_path, monkeypatch):
    """The global RNG is seeded per (seed, rank, step): distributed ranks do not share their
    dropout masks, and a step's masks do not depend on what ran before it."""
    seeds = {step_seed(3, rank, step) for rank in range(8) for step in range(500)}
    assert len(seeds) == 8 * 500 and step_seed(3, 1, 7) == step_seed(3, 1, 7)
    assert step_seed(4, 1, 7) not in seeds

    def mask(seed):
        torch.manual_seed(seed)
        return F.dropout(torch.ones(4096), 0.5) > 0

    assert not torch.equal(mask(step_seed(3, 0, 5)), mask(step_seed(3, 1, 5)))
    calls = []
    real = torch.manual_seed
    monkeypatch.setattr(torch, "manual_seed", lambda s: (calls.append(s), real(s))[1])
    (tmp_path / "a").mkdir()
    t = trainer(tmp_path / "a")
    calls.clear()
    for _ in range(3):
        t.train_step()
    assert calls == [step_seed(3, 0, s) for s in range(3)]


def test_fit_writes_metrics_best_and_last(tmp_path):
    t = trainer(tmp_path)
    summary = t.fit()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train] == list(range(1, 13))
    vals = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in vals] == [5, 10, 12]
    assert summary["best_val_loss"] == min(r["val_loss"] for r in vals)
    assert train[0]["loss"] > train[-1]["loss"]
    assert json.loads((tmp_path / "last" / "trainer.json").read_text())["step"] == 12
    best = json.loads((tmp_path / "best" / "trainer.json").read_text())
    assert best["val_loss"] == summary["best_val_loss"]
    assert not (tmp_path / "best" / "optimizer.safetensors").exists()


def test_gradient_accumulation_equals_the_big_batch(tmp_path):
    big = Trainer(ToyTask(0), tmp_path, config(batch_size=8), dist=Dist(),
                  device=torch.device("cpu"), progress=False)
    acc = Trainer(ToyTask(0), tmp_path, config(batch_size=4, grad_accum=2), dist=Dist(),
                  device=torch.device("cpu"), progress=False)
    for t in (big, acc):
        t.model.eval()  # no dropout: the two differ only in how the batch is split
        t.task.train_batch = _fixed_batches(t.task)
        t.train_step()
    for (name, x), (_, y) in zip(big.model.state_dict().items(), acc.model.state_dict().items(),
                                 strict=True):
        assert torch.allclose(x, y, atol=1e-6), name


def _fixed_batches(task):
    rows = torch.randint(17, (8, T + 1), generator=torch.Generator().manual_seed(7))
    calls = {"n": 0}

    def batch(generator, n, part):
        if n == 8:
            sel = rows
        else:
            sel = rows[calls["n"] * 4:(calls["n"] + 1) * 4]
            calls["n"] += 1
        return sel[part, :-1], sel[part, 1:]

    return batch


def test_time_limit_stops_and_checkpoints(tmp_path):
    t = trainer(tmp_path, max_steps=10_000, max_minutes=1e-9)
    summary = t.fit()
    assert summary["stopped_early"] and summary["step"] == 1
    assert json.loads((tmp_path / "last" / "trainer.json").read_text())["step"] == 1


def test_resume_without_checkpoint_and_finished_run_are_errors(tmp_path):
    with pytest.raises(AttnlabError, match="no checkpoint"):
        trainer(tmp_path, resume=True)
    t = trainer(tmp_path, max_steps=2)
    t.fit()
    with pytest.raises(AttnlabError, match="already at step 2 of 2"):
        trainer(tmp_path, resume=True, max_steps=2).fit()


def test_resume_refuses_weights_of_another_model_with_the_same_shapes(tmp_path):
    t = trainer(tmp_path, max_steps=2)
    t.fit()
    task = ToyTask(0)
    task.model = GPT(dataclasses.replace(task.model.config, n_heads=4))  # same tensor shapes
    with pytest.raises(AttnlabError, match=r"holds another model's weights \(n_heads is 2 "
                                           r"there, 4 here\)"):
        Trainer(task, tmp_path, config(max_steps=4), dist=Dist(), device=torch.device("cpu"),
                resume=True, progress=False)
    trainer(tmp_path, resume=True, max_steps=4).fit()  # its own model resumes


def test_fp16_on_cpu_is_refused_and_bf16_autocasts():
    with pytest.raises(AttnlabError, match="fp16 needs a GPU"):
        autocast_context("fp16", torch.device("cpu"))
    with autocast_context("bf16", torch.device("cpu")):
        assert (torch.randn(2, 2) @ torch.randn(2, 2)).dtype == torch.bfloat16


@pytest.mark.slow
def test_compiled_training_matches_eager_training(tmp_path):
    """train.compile wraps the model in torch.compile: same losses as eager (to rounding)."""
    eager = trainer(tmp_path / "e", max_steps=3)
    compiled = trainer(tmp_path / "c", max_steps=3, compile=True)
    for t in (eager, compiled):
        t.model.eval()  # no dropout: the two differ only in how the graph runs
    losses = [[t.train_step() for _ in range(3)] for t in (eager, compiled)]
    assert compiled.train_model is not compiled.model  # really the compiled wrapper
    for a, b in zip(*losses, strict=True):
        assert abs(a - b) < 1e-4, losses
