"""In-context learning from scratch (Garg et al., 2022): a `FunctionGPT` trained on prompts
(x_1, f(x_1), ..., x_K, f(x_K)) of random linear functions learns to regress in context.

Data: every training batch draws fresh functions and inputs (`attnlab.data.functions`); the
validation set is a fixed draw (its own seed), so evaluations are comparable. Loss: squared
error of every y_i predicted from the pairs before it, divided by d, averaged over i. Metrics:
that error at every number of in-context examples k, beside least squares (min-norm),
3-nearest-neighbours and averaging on the same prompts.

Curriculum (Garg et al. grow dimensions and points): the inputs' active dimensions grow from 2
to d over the first `CURRICULUM_FRACTION` of the training steps (the other coordinates are 0);
points stay K. Without it the model sat at the predict-0 plateau (error 1.0) for 1,000+ steps.

Departure from the paper: d = 5 and K = 40 with a small model and a few thousand steps (theirs:
d = 20, K = 41, 12 layers, 500k steps), so it trains on a CPU in minutes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from attnlab.data.functions import FUNCTION_CLASSES, sample_linear_regression
from attnlab.errors import ConfigError, did_you_mean
from attnlab.models.function_gpt import FunctionGPT
from attnlab.tasks.regression_baselines import BASELINES, least_squares, normalized_errors
from attnlab.train.checkpoint import resolve

#: seed of the fixed validation prompts (not the run's seed: runs compare on the same prompts)
VAL_SEED = 20220801
#: share of the training steps over which the active input dimensions grow from 2 to d
CURRICULUM_FRACTION = 0.4


def active_dims(step: int, n_dims: int, max_steps: int) -> int:
    """Input dimensions drawn at `step` of `max_steps`: 2 (or d if smaller) growing linearly
    to d by step CURRICULUM_FRACTION * max_steps."""
    start = min(2, n_dims)
    ramp = max(int(CURRICULUM_FRACTION * max_steps), 1)
    return min(n_dims, start + (n_dims - start + 1) * step // ramp)


class InContextRegression:
    """A `FunctionGPT` and its function class, with the loss and metrics of the task.

    Args:
        model: a `FunctionGPT` (moved to `device`).
        val_prompts: prompts in the fixed validation set.
        batch_size: prompts per evaluation batch.
        device: where batches go.
        max_steps: the run's length, which paces the curriculum (0 = no curriculum).
        step: the optimizer step training starts at (a resumed run's).
        grad_accum: `train_batch` calls per optimizer step.
    """

    def __init__(self, model: FunctionGPT, *, val_prompts: int = 1024, batch_size: int = 256,
                 device: torch.device | str = "cpu", max_steps: int = 0, step: int = 0,
                 grad_accum: int = 1):
        c = model.config
        self.max_steps, self.grad_accum = max_steps, grad_accum
        self.calls = step * grad_accum  # train_batch calls so far: the curriculum's clock
        self.n_dims, self.n_points, self.batch_size = c.n_dims, c.n_points, batch_size
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.val = sample_linear_regression(val_prompts, c.n_points, c.n_dims,
                                            torch.Generator().manual_seed(VAL_SEED))

    def train_batch(self, generator: torch.Generator, n: int, part: slice):
        step = self.calls // self.grad_accum
        self.calls += 1
        active = (active_dims(step, self.n_dims, self.max_steps) if self.max_steps
                  else self.n_dims)
        xs, ys = sample_linear_regression(n, self.n_points, self.n_dims, generator,
                                          active_dims=active)
        return xs[part].to(self.device), ys[part].to(self.device)

    def loss(self, model, batch) -> torch.Tensor:
        xs, ys = batch
        return F.mse_loss(model(xs, ys).float(), ys) / self.n_dims

    @torch.no_grad()
    def errors(self, model) -> torch.Tensor:
        """(K,) validation error at each k = 0..K-1 in-context examples (squared error / d)."""
        xs, ys = self.val
        preds = torch.cat([model(xs[i:i + self.batch_size].to(self.device),
                                 ys[i:i + self.batch_size].to(self.device)).float().cpu()
                           for i in range(0, len(ys), self.batch_size)])
        return normalized_errors(preds, ys, self.n_dims)

    def evaluate(self, model) -> dict:
        err = self.errors(model)
        out = {"val_loss": float(err.mean())}
        for k in sorted({1, self.n_dims, 2 * self.n_dims, self.n_points - 1}):
            if k < self.n_points:
                out[f"error_k{k}"] = float(err[k])
        return out

    def baseline_errors(self) -> dict[str, list[float]]:
        """Each baseline's (K,) validation error, as lists."""
        xs, ys = self.val
        return {name: normalized_errors(f(xs, ys), ys, self.n_dims).tolist()
                for name, f in BASELINES.items()}

    def baselines(self) -> dict:
        xs, ys = self.val
        return {"zero_loss": float(normalized_errors(torch.zeros_like(ys), ys,
                                                     self.n_dims).mean()),
                "least_squares_loss": float(normalized_errors(least_squares(xs, ys), ys,
                                                              self.n_dims).mean())}


class InContextRegressionRun:
    """How a run directory of task `icl-regression` is built, reloaded and evaluated (see
    tasks.run). Its data are real vectors: no tokenizer. `data.source` names the function
    class (linear-regression)."""

    model_class = FunctionGPT
    sized_fields = ()
    bounded_eval = True  # evaluate() honours `batches`
    paced_by_max_steps = True  # the curriculum (see above) grows over train.max_steps

    @staticmethod
    def _check(cfg) -> None:
        if cfg.data.source not in FUNCTION_CLASSES:
            raise ConfigError(f"unknown function class '{cfg.data.source}' for task "
                              f"icl-regression{did_you_mean(cfg.data.source, FUNCTION_CLASSES)}"
                              f"; choose from: {', '.join(FUNCTION_CLASSES)}")

    def build(self, cfg, run_dir, *, device, dist, fresh: bool):
        self._check(cfg)
        step = 0
        if not fresh:  # a resumed run continues the curriculum where it stopped
            found = resolve(Path(run_dir) / "last")
            if found is not None:
                step = int(json.loads((found / "trainer.json").read_text())["step"])
        torch.manual_seed(cfg.train.seed)  # the model's initialization
        task = InContextRegression(FunctionGPT(cfg.model), device=device,
                                   max_steps=cfg.train.max_steps, step=step,
                                   grad_accum=cfg.train.grad_accum)
        return task, None

    def load_tokenizer(self, run_dir):
        return None

    def describe(self, task: InContextRegression) -> str:
        return (f"fresh linear functions every step, d={task.n_dims}, {task.n_points} (x, y) "
                f"pairs per prompt")

    def evaluate(self, model, tokenizer, cfg, *, batches: int | None = None) -> dict:
        """Validation error at every k for the model and each baseline (lists indexed by k)."""
        self._check(cfg)
        prompts = 256 * batches if batches else 1024
        task = InContextRegression(model, val_prompts=prompts)
        err = task.errors(model)
        return {"val_loss": float(err.mean()), "k": list(range(task.n_points)),
                "model": err.tolist(), **task.baseline_errors(), "n_dims": task.n_dims,
                "prompts": prompts}

    @staticmethod
    def format_metrics(m: dict) -> str:
        """Text for people: after training (flat metrics) the validation error beside least
        squares; from `evaluate` the error at a few k beside every baseline."""
        if "k" not in m:
            return (f"validation error {m['val_loss']:.4f} (squared error / d, mean over k); "
                    f"least squares {m['least_squares_loss']:.4f}, predicting 0 "
                    f"{m['zero_loss']:.4f}")
        names = ["model", *BASELINES]
        ks = [k for k in (0, 1, 2, 3, 5, 8, 10, 15, 20, 30, 39, 50, 80) if k < len(m["k"])]
        lines = [f"squared error / d at k in-context examples ({m['prompts']} validation "
                 f"prompts, d={m['n_dims']}):",
                 "k".rjust(4) + "".join(n.rjust(22) for n in names)]
        for k in ks:
            lines.append(f"{k:4d}" + "".join(f"{m[n][k]:22.4f}" for n in names))
        return "\n".join(lines)
