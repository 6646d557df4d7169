"""The trainer's optimizer step against a hand-built reference (torch's own AdamW, clipping and
schedule), and the state a resume must carry beyond the weights.

Why by hand: the other trainer tests compare runs with runs (straight vs
resumed, big batch vs accumulated), which a wrong learning rate, weight decay, beta, clip or
loss scale leaves equal on both sides.
"""

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnlab.models import GPT, GPTConfig
from attnlab.tasks.config import TrainConfig
from attnlab.train.distributed import Dist
from attnlab.train.optim import lr_at
from attnlab.train.trainer import Trainer

T, V = 8, 11


class Task:
    """A dropout-free GPT whose vectors are LayerNorm scales only; batches drawn from the
    generator alone, so a reference that replays the same generator sees the same rows."""

    def __init__(self):
        torch.manual_seed(0)
        self.model = GPT(GPTConfig(vocab_size=V, d_model=16, n_heads=2, n_layers=1, max_len=T,
                                   dropout=0.0, tie_embeddings=False, bias=False))
        # bias=False: a key bias has a zero gradient but for rounding (softmax ignores a shift
        # shared by all keys), and Adam turns that rounding into steps of size lr

    def train_batch(self, generator, n, part):
        rows = torch.randint(V, (n, T + 1), generator=generator)
        return rows[part, :-1], rows[part, 1:]

    def loss(self, model, batch):
        x, y = batch
        return F.cross_entropy(model(x).float().flatten(0, 1), y.flatten())

    def evaluate(self, model):
        return {"val_loss": 1.0}


def cfg(**kw):
    base = dict(max_steps=10, batch_size=4, lr=3e-2, min_lr=1e-3, warmup_steps=1,
                weight_decay=0.5, beta1=0.8, beta2=0.9, grad_clip=0.0, seed=5,
                precision="fp32", eval_interval=100, checkpoint_interval=100, log_interval=1)
    return TrainConfig(**{**base, **kw})


def make(tmp_path, **kw):
    return Trainer(Task(), tmp_path, cfg(**kw), dist=Dist(), device=torch.device("cpu"),
                   progress=False)


def reference_steps(model: nn.Module, c: TrainConfig, steps: int):
    """`steps` optimizer steps by hand: mean loss over grad_accum micro-batches, global-norm
    clip, torch AdamW (decay on matrices only) at lr_at(step). Returns the losses."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": c.weight_decay},
                             {"params": rest, "weight_decay": 0.0}],
                            lr=c.lr, betas=(c.beta1, c.beta2))
    gen = torch.Generator().manual_seed(c.seed)
    task, losses = Task(), []
    for step in range(steps):
        lr = lr_at(step, schedule=c.schedule, lr=c.lr, min_lr=c.min_lr,
                   warmup_steps=c.warmup_steps, max_steps=c.max_steps,
                   d_model=model.config.d_model)
        for g in opt.param_groups:
            g["lr"] = lr
        micro = [task.loss(model, task.train_batch(gen, c.batch_size, slice(None)))
                 for _ in range(c.grad_accum)]
        loss = sum(micro) / c.grad_accum
        loss.backward()
        if c.grad_clip > 0:
            assert nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip) > c.grad_clip
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("schedule", ["cosine", "noam", "constant"])
@pytest.mark.parametrize("grad_clip", [0.0, 0.05])
def test_steps_are_adamw_with_the_configured_groups_betas_clip_and_scheduled_lr(
        tmp_path, schedule, grad_clip):
    t = make(tmp_path, schedule=schedule, grad_clip=grad_clip, lr=0.1 if schedule == "noam"
             else 3e-2)
    assert [g["weight_decay"] for g in t.optimizer.param_groups] == [0.5, 0.0]
    assert all(g["betas"] == (0.8, 0.9) for g in t.optimizer.param_groups)
    ref = copy.deepcopy(t.model)
    got = [t.train_step() for _ in range(3)]
    want = reference_steps(ref, t.cfg, 3)
    assert got == pytest.approx(want, rel=1e-5)
    for (name, a), (_, b) in zip(t.model.state_dict().items(), ref.state_dict().items(),
                                 strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5), name


def test_accumulated_gradient_is_the_mean_over_micro_batches_and_so_is_the_loss(tmp_path):
    """Adam hides a gradient scaled by grad_accum (its update is nearly scale-free): look at the
    gradient the optimizer is handed, and at the loss train_step reports."""
    t = make(tmp_path, batch_size=3, grad_accum=3)
    seen = {}
    step = t.optimizer.step

    def spy(*args, **kwargs):
        seen.update({n: p.grad.clone() for n, p in t.model.named_parameters()})
        return step(*args, **kwargs)

    t.optimizer.step = spy
    ref = copy.deepcopy(t.model)
    got = t.train_step()
    task, gen = Task(), torch.Generator().manual_seed(t.cfg.seed)
    rows = [task.train_batch(gen, 3, slice(None)) for _ in range(3)]
    x, y = torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows])
    loss = task.loss(ref, (x, y))  # one batch of all 9 rows: the mean over them
    loss.backward()
    assert got == pytest.approx(loss.item(), rel=1e-5)
    for name, p in ref.named_parameters():
        assert torch.allclose(seen[name], p.grad, atol=1e-6, rtol=1e-5), name


def test_a_resumed_run_keeps_its_best_and_does_not_replace_it_with_a_worse_one(tmp_path):
    first = make(tmp_path, max_steps=2, eval_interval=2)
    first.task.evaluate = lambda model: {"val_loss": 1.0}
    first.fit()
    again = Trainer(Task(), tmp_path, cfg(max_steps=4, eval_interval=2), dist=Dist(),
                    device=torch.device("cpu"), resume=True, progress=False)
    assert again.best == 1.0
    again.task.evaluate = lambda model: {"val_loss": 2.0}
    summary = again.fit()
    assert summary["best_val_loss"] == 1.0
    best = json.loads((tmp_path / "best" / "trainer.json").read_text())
    assert best["val_loss"] == 1.0 and best["step"] == 2
    last = json.loads((tmp_path / "last" / "trainer.json").read_text())
    assert last["step"] == 4 and last["best_val_loss"] == 1.0


def test_checkpoints_and_log_rows_follow_their_intervals_and_the_last_step(tmp_path,
                                                                           monkeypatch):
    t = make(tmp_path, max_steps=7, eval_interval=2, checkpoint_interval=3, log_interval=5)
    saved = []
    real = t.save
    monkeypatch.setattr(t, "save", lambda which="last", metrics=None: (
        saved.append((which, t.step)), real(which, metrics))[1])
    t.fit()
    assert [s for which, s in saved if which == "last"] == [3, 6, 7]
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [5, 7]
    assert [r["step"] for r in rows if "val_loss" in r] == [2, 4, 6, 7]


def test_a_batch_that_does_not_split_evenly_among_processes_is_refused(tmp_path):
    from attnlab.errors import AttnlabError

    with pytest.raises(AttnlabError, match="batch_size 4 must divide evenly among 3 processes"):
        Trainer(Task(), tmp_path, cfg(batch_size=4), dist=Dist(rank=0, world=3),
                device=torch.device("cpu"), progress=False)


def test_evaluation_runs_without_dropout_or_gradients_and_training_resumes_after(tmp_path):
    t = make(tmp_path, max_steps=2, eval_interval=1)
    seen = []

    def evaluate(model):
        seen.append((model.training, torch.is_grad_enabled()))
        return {"val_loss": 1.0}

    t.task.evaluate = evaluate
    modes = []
    step = t.train_step
    t.train_step = lambda: (modes.append(t.model.training), step())[1]
    t.fit()
    assert seen == [(False, False), (False, False)]
    assert modes == [True, True]  # dropout back on for the step after an evaluation
