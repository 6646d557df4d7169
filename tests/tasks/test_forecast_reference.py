"""The forecasting task's loss and its linear-AR baseline, against hand computations: the loss
is the squared error in each window's normalized units, and the AR map is fitted on the
training windows only (never on the windows it is scored on)."""

import numpy as np
import torch

from attnlab.data.series import Series, split_points, windows
from attnlab.models.timeseries import ForecastConfig, Forecaster
from attnlab.tasks.forecast import Forecasting, fit_linear_ar


def task(seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(240, dtype=np.float64)
    values = 50 + 0.3 * t + 4 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 1, t.size)
    torch.manual_seed(seed)
    model = Forecaster(ForecastConfig(context=12, horizon=4, d_model=16, n_heads=2,
                                      n_layers=1, max_len=12)).eval()
    return Forecasting(model, Series("toy", values, 12, "0"), val_fraction=0.1), values


def test_loss_is_the_squared_error_in_each_windows_own_units():
    forecasting, _ = task()
    past, future = forecasting.tensors["val"]
    with torch.no_grad():
        pred = forecasting.model(past)
        std = past.std(1, keepdim=True, unbiased=False)
        want = (((pred - future) / std) ** 2).mean()
        torch.testing.assert_close(forecasting.loss(forecasting.model, (past, future)), want)
        got = forecasting.evaluate(forecasting.model, "val")
    assert np.isclose(got["val_loss"], want.item(), rtol=1e-5)
    err = pred.double().numpy() - future.double().numpy()
    assert np.isclose(got["val_mae"], np.abs(err).mean(), rtol=1e-5)
    assert np.isclose(got["val_rmse"], np.sqrt((err ** 2).mean()), rtol=1e-5)


def test_linear_ar_is_fitted_on_the_training_windows_only():
    forecasting, values = task()
    val_start, _ = split_points(len(values), 0.1)
    x, y = windows(values, 12, 4, 0, val_start)
    np.testing.assert_allclose(forecasting.ar_weights, fit_linear_ar(x, y), rtol=1e-9,
                               atol=1e-9)
