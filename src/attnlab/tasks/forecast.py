"""Time-series forecasting: a `Forecaster` reads `context` past values and predicts the next
`horizon` values at once.

Data: a `Series` (`data.source`: co2, or a file of numbers) split in time: the first 70% of the
steps train, the next `data.val_fraction` validate, the last 20% test. A window belongs to the
split its forecast targets lie in (its past may reach back into the split before, as it would
in use). Loss: squared error in each window's normalized units (see `models.timeseries`).
Metrics: MAE and RMSE in the series' units over every test window and step ahead, beside two
baselines on the same windows:

- seasonal naive: each future step repeats the value one season earlier (y[t+h-s*ceil(h/s)]);
- linear autoregression: one least-squares linear map (with intercept) from the `context`
  past values to the `horizon` future values, fitted on the training windows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from attnlab.data.series import Series, load_series, split_points, windows
from attnlab.errors import ConfigError
from attnlab.models.timeseries import Forecaster, window_stats


def seasonal_naive(past: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """(W, C) past -> (W, H): step h repeats past value at h - season * ceil(h / season)."""
    if past.shape[1] < season:
        raise ConfigError(f"seasonal naive needs context >= season ({season}), got "
                          f"{past.shape[1]}")
    h = np.arange(1, horizon + 1)
    back = season * np.ceil(h / season).astype(int) - h  # steps before the last past value
    return past[:, past.shape[1] - 1 - back]


def fit_linear_ar(past: np.ndarray, future: np.ndarray) -> np.ndarray:
    """(C + 1, H) least-squares weights of future ~ [past, 1] (direct multi-step AR)."""
    x = np.hstack([past, np.ones((len(past), 1))])
    weights, *_ = np.linalg.lstsq(x, future, rcond=None)
    return weights


def linear_ar(past: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return np.hstack([past, np.ones((len(past), 1))]) @ weights


def errors(pred: np.ndarray, truth: np.ndarray) -> dict:
    """MAE and RMSE over every window and step ahead."""
    diff = np.asarray(pred, dtype=np.float64) - truth
    return {"mae": float(np.abs(diff).mean()), "rmse": float(np.sqrt((diff ** 2).mean()))}


class Forecasting:
    """A `Forecaster` with a series cut into train / val / test windows.

    Args:
        model: a `Forecaster` (moved to `device`).
        series: the series.
        val_fraction: share of the steps before the test part held out for validation.
        device: where batches go.
    """

    def __init__(self, model: Forecaster, series: Series, *, val_fraction: float = 0.1,
                 device: torch.device | str = "cpu"):
        c = model.config
        self.series, self.context, self.horizon = series, c.context, c.horizon
        self.device = torch.device(device)
        self.model = model.to(self.device)
        n = len(series.values)
        val_start, test_start = split_points(n, val_fraction)
        bounds = {"train": (0, val_start), "val": (val_start, test_start), "test": (test_start, n)}
        self.bounds = bounds
        self.windows = {k: windows(series.values, c.context, c.horizon, a, b)
                        for k, (a, b) in bounds.items()}
        for split, (past, _) in self.windows.items():
            if len(past) == 0:
                raise ConfigError(f"series '{series.name}' ({n} steps) has no {split} window of "
                                  f"context {c.context} + horizon {c.horizon}; shorten them or "
                                  f"use a longer series")
        self.tensors = {k: (torch.tensor(p, dtype=torch.float32),
                            torch.tensor(f, dtype=torch.float32))
                        for k, (p, f) in self.windows.items()}
        self.ar_weights = fit_linear_ar(*self.windows["train"])

    def train_batch(self, generator: torch.Generator, n: int, part: slice):
        past, future = self.tensors["train"]
        rows = torch.randint(len(past), (n,), generator=generator)[part]
        return past[rows].to(self.device), future[rows].to(self.device)

    def loss(self, model, batch) -> torch.Tensor:
        past, future = batch
        _, std = window_stats(past)
        return (((model(past).float() - future) / std) ** 2).mean()

    @torch.no_grad()
    def predict(self, model, split: str) -> np.ndarray:
        """(W, H) forecasts of every window of `split`."""
        past, _ = self.tensors[split]
        return torch.cat([model(past[i:i + 512].to(self.device)).float().cpu()
                          for i in range(0, len(past), 512)]).numpy()

    def evaluate(self, model, split: str = "val") -> dict:
        past, future = self.tensors[split]
        with torch.no_grad():
            loss = self.loss(model, (past.to(self.device), future.to(self.device))).item()
        e = errors(self.predict(model, split), self.windows[split][1])
        return {f"{split}_loss": loss, f"{split}_mae": e["mae"], f"{split}_rmse": e["rmse"]}

    def baseline_forecasts(self, split: str) -> dict[str, np.ndarray]:
        past, _ = self.windows[split]
        return {"seasonal_naive": seasonal_naive(past, self.horizon, self.series.season),
                "linear_ar": linear_ar(past, self.ar_weights)}

    def baselines(self, split: str = "val") -> dict:
        out = {}
        for name, pred in self.baseline_forecasts(split).items():
            for metric, value in errors(pred, self.windows[split][1]).items():
                out[f"{split}_{name}_{metric}"] = value
        return out


class ForecastRun:
    """How a run directory of task `forecast` is built, reloaded and evaluated (see tasks.run).
    Its data are real values: no tokenizer."""

    model_class = Forecaster
    sized_fields = ()
    bounded_eval = False  # evaluate() scores whole splits

    @staticmethod
    def _task(model, cfg, device="cpu") -> Forecasting:
        series = load_series(cfg.data.source, season=cfg.model.season)
        return Forecasting(model, series, val_fraction=cfg.data.val_fraction, device=device)

    def build(self, cfg, run_dir: Path, *, device, dist, fresh: bool):
        torch.manual_seed(cfg.train.seed)  # the model's initialization
        return self._task(Forecaster(cfg.model), cfg, device), None

    def load_tokenizer(self, run_dir: Path):
        return None

    def describe(self, task: Forecasting) -> str:
        return (f"series {task.series.name} ({len(task.series.values)} steps), "
                f"{len(task.windows['train'][0])} training windows of {task.context} -> "
                f"{task.horizon}")

    def evaluate(self, model, tokenizer, cfg, *, batches: int | None = None) -> dict:
        """Validation and test MAE / RMSE of the model beside both baselines."""
        task = self._task(model, cfg)
        return {**task.evaluate(model), **task.evaluate(model, "test"), **task.baselines("val"),
                **task.baselines("test"), "test_windows": len(task.windows["test"][0]),
                "unit": task.series.unit}

    @staticmethod
    def format_metrics(m: dict) -> str:
        """MAE / RMSE of the model and both baselines, per split present."""
        lines = []
        for split in ("val", "test"):
            if f"{split}_mae" not in m:
                continue
            row = [f"{split}: model MAE {m[f'{split}_mae']:.4f} RMSE {m[f'{split}_rmse']:.4f}"]
            for name in ("seasonal_naive", "linear_ar"):
                if f"{split}_{name}_mae" in m:
                    row.append(f"{name.replace('_', '-')} MAE {m[f'{split}_{name}_mae']:.4f} "
                               f"RMSE {m[f'{split}_{name}_rmse']:.4f}")
            lines.append("; ".join(row))
        return "\n".join(lines)
