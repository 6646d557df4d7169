import json

import numpy as np
import pytest
import torch
import yaml

from attnlab.cli import main
from attnlab.data.series import load_co2, load_series, read_series, split_points, windows
from attnlab.errors import AttnlabError
from attnlab.models.timeseries import ForecastConfig, Forecaster
from attnlab.tasks.forecast import errors, fit_linear_ar, linear_ar, seasonal_naive


def test_series_files_with_gaps_or_non_numbers_are_one_clear_error(tmp_path):
    good = tmp_path / "s.csv"
    good.write_text("date,value\n2001-01,1.5\n2001-02,2\n2001-03,-3e1\n\n")
    s = read_series(good, season=4)
    assert s.values.tolist() == [1.5, 2.0, -30.0] and s.season == 4 and s.name == "s"
    tsv = tmp_path / "s.tsv"  # tab-separated: the last field of each line
    tsv.write_text("date\tvalue\n2001-01\t1.5\n2001-02\t2\n")
    assert read_series(tsv, season=4).values.tolist() == [1.5, 2.0]
    for body, message in (("1\n\n3\n", "line 2: missing value"), ("1\nNaN\n", "line 2: missing"),
                          ("x,1\ny,NA\n", "line 2: missing value"),
                          ("1\n2\nabc\n", "line 3: 'abc' is not a number"),
                          ("1\ninf\n", "line 2: value inf is not finite"),
                          ("header\n", "holds no numbers")):
        bad = tmp_path / "bad.txt"
        bad.write_text(body)
        with pytest.raises(AttnlabError, match=message):
            read_series(bad, season=12)
    with pytest.raises(AttnlabError, match=r"unknown series 'co3'.*did you mean 'co2'"):
        load_series("co3")


def test_co2_is_the_monthly_mean_of_the_statsmodels_weekly_readings():
    from statsmodels.datasets import co2

    weekly = co2.load_pandas().data["co2"]
    s = load_co2()
    assert len(s.values) == 452 and np.isfinite(s.values).all() and s.season == 12
    may_1964 = weekly["1964-05-01":"1964-05-31"].dropna()
    assert s.values[0] == pytest.approx(float(may_1964.mean()))
    dec_2001 = weekly["2001-12-01":"2001-12-31"].dropna()
    assert s.values[-1] == pytest.approx(float(dec_2001.mean()))


def test_windows_and_baselines_by_hand():
    values = np.arange(20, dtype=np.float64)
    past, future = windows(values, 4, 2, 10, 16)
    assert past[:, -1].tolist() == [9, 10, 11, 12, 13]  # targets start at 10 .. 14
    assert future.tolist() == [[10, 11], [11, 12], [12, 13], [13, 14], [14, 15]]
    assert split_points(100, 0.1) == (70, 80)
    past = np.array([[1.0, 2, 3, 4, 5, 6]])  # season 3: step h repeats past[-3 + (h-1) % 3]
    assert seasonal_naive(past, 5, 3).tolist() == [[4, 5, 6, 4, 5]]
    # data made by a known linear map are fitted exactly by the least-squares AR
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 2))
    x = rng.normal(size=(40, 4))
    y = np.hstack([x, np.ones((40, 1))]) @ w
    np.testing.assert_allclose(fit_linear_ar(x, y), w, atol=1e-10)
    np.testing.assert_allclose(linear_ar(x, w), y)
    assert errors(np.array([[1.0, 3.0]]), np.array([[0.0, 0.0]])) == {
        "mae": 2.0, "rmse": pytest.approx(np.sqrt(5.0))}


def test_forecaster_equals_its_hand_assembled_twin_and_is_level_and_scale_equivariant():
    torch.manual_seed(0)
    model = Forecaster(ForecastConfig(context=8, horizon=3, d_model=16, n_heads=2, n_layers=2,
                                      max_len=8)).eval()
    past = torch.randn(4, 8) * 3 + 5
    mean = past.mean(1, keepdim=True)
    std = past.std(1, keepdim=True, unbiased=False)
    x = model.in_proj(((past - mean) / std).unsqueeze(-1))
    x = model.positional.embed(x)  # sinusoidal
    h = model.stack(x)
    expected = model.head(h.flatten(1)) * std + mean
    with torch.no_grad():
        got = model(past)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        # instance normalization: forecasting a*x + b gives a * forecast + b
        torch.testing.assert_close(model(2.5 * past + 100), 2.5 * got + 100, rtol=1e-4,
                                   atol=1e-3)
    with pytest.raises(AttnlabError, match="NaN or infinite"):
        model(torch.tensor([[1.0] * 7 + [float("nan")]]))
    with pytest.raises(AttnlabError, match=r"shaped \(batch, 8\)"):
        model(torch.zeros(2, 5))


TINY = {"task": "forecast",
        "model": {"context": 12, "horizon": 4, "season": 6, "d_model": 16, "n_heads": 2,
                  "n_layers": 1, "max_len": 12},
        "train": {"max_steps": 6, "batch_size": 8, "eval_interval": 3, "checkpoint_interval": 3,
                  "log_interval": 1, "warmup_steps": 1, "precision": "fp32"}}


def test_forecast_runs_train_and_evaluate_from_the_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ATTNLAB_HOME", str(tmp_path / "home"))
    t = np.arange(200)
    series = tmp_path / "wave.csv"
    series.write_text("value\n" + "\n".join(f"{0.1 * i + np.sin(2 * np.pi * i / 6):.6f}"
                                            for i in t) + "\n")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({**TINY, "data": {"source": str(series)}}))
    run = tmp_path / "run"
    assert main(["train", str(recipe), "--out", str(run), "--no-progress"]) == 0
    assert "seasonal-naive MAE" in capsys.readouterr().out
    assert main(["eval", str(run), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    # a pure trend + season-6 wave: seasonal naive is off by exactly the trend over a season
    # (0.1 * 6 for steps 1..6 ahead), and the least-squares AR is exact
    assert m["test_seasonal_naive_mae"] == pytest.approx(0.6, abs=1e-5)
    assert m["test_linear_ar_mae"] < 1e-3
    assert m["test_windows"] == 200 - 160 - 4 + 1 and np.isfinite(m["test_mae"])
    # the run pinned its data file: changed data are refused by eval and resume
    import hashlib

    stored = json.loads((run / "config.json").read_text())["data"]
    assert stored["sha256"] == hashlib.sha256(series.read_bytes()).hexdigest()
    series.write_text(series.read_text().replace("value\n", "value\n100\n"))
    for args in (["eval", str(run)], ["train", "--resume", "--out", str(run), "--max-steps",
                                      "99", "--no-progress"]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "but the run was trained on data with sha256" in err and err.count("\n") == 1
    # a named data set is pinned by its own checksums: a data.sha256 for it is refused
    recipe.write_text(yaml.safe_dump({**TINY, "data": {"source": "co2", "sha256": "beef"}}))
    assert main(["train", str(recipe), "--out", str(tmp_path / "r3"), "--no-progress"]) == 2
    assert "'co2' is a named data set" in capsys.readouterr().err
    gap = tmp_path / "gap.csv"
    gap.write_text("1\n2\n\n4\n" + "5\n" * 100)
    recipe.write_text(yaml.safe_dump({**TINY, "data": {"source": str(gap)}}))
    assert main(["train", str(recipe), "--out", str(tmp_path / "r2"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"attnlab: error: {gap} line 3: missing value (a gap in the series); fill "
                   f"or remove gaps before forecasting"]
