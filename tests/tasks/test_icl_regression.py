"""In-context regression from scratch: the prompt generator, the baselines against numpy, the
model's causality, and a tiny training run through `attnlab train` / `attnlab eval`."""

import json

import numpy as np
import pytest
import torch

from attnlab.cli import main
from attnlab.data.functions import sample_linear_regression
from attnlab.errors import AttnlabError, ConfigError
from attnlab.models.function_gpt import FunctionGPT, FunctionGPTConfig, interleave_points
from attnlab.tasks.icl_regression import active_dims
from attnlab.tasks.regression_baselines import (
    averaging,
    least_squares,
    nearest_neighbours,
    normalized_errors,
)


def test_prompts_have_shapes_are_deterministic_and_linear():
    xs, ys = sample_linear_regression(6, 9, 4, torch.Generator().manual_seed(1))
    assert xs.shape == (6, 9, 4) and ys.shape == (6, 9) and xs.dtype == torch.float32
    again = sample_linear_regression(6, 9, 4, torch.Generator().manual_seed(1))
    assert torch.equal(xs, again[0]) and torch.equal(ys, again[1])
    other = sample_linear_regression(6, 9, 4, torch.Generator().manual_seed(2))
    assert not torch.equal(xs, other[0])
    # y = w.x with one w per prompt
    for x, y in zip(xs.double().numpy(), ys.double().numpy(), strict=True):
        w = np.linalg.lstsq(x, y, rcond=None)[0]
        np.testing.assert_allclose(x @ w, y, atol=1e-4)
    xs, _ = sample_linear_regression(3, 5, 4, torch.Generator().manual_seed(0), active_dims=2)
    assert (xs[..., 2:] == 0).all() and (xs[..., :2] != 0).all()
    with pytest.raises(AttnlabError, match="active_dims"):
        sample_linear_regression(3, 5, 4, torch.Generator(), active_dims=5)


def test_curriculum_grows_from_two_dims_to_all():
    steps = [active_dims(s, 5, 1000) for s in range(0, 1000, 10)]
    assert steps[0] == 2 and steps[-1] == 5 and steps == sorted(steps)
    assert active_dims(400, 5, 1000) == 5 and active_dims(0, 1, 1000) == 1


def test_baselines_match_numpy():
    xs, ys = sample_linear_regression(5, 12, 4, torch.Generator().manual_seed(3))
    ls, nn3, avg = least_squares(xs, ys), nearest_neighbours(xs, ys), averaging(xs, ys)
    X, Y = xs.double().numpy(), ys.double().numpy()
    for b in range(5):
        assert ls[b, 0] == nn3[b, 0] == avg[b, 0] == 0
        for k in range(1, 12):
            w = np.linalg.lstsq(X[b, :k], Y[b, :k], rcond=None)[0]  # min-norm when k < d
            assert ls[b, k].item() == pytest.approx(X[b, k] @ w, abs=1e-4)
            dist = np.linalg.norm(X[b, :k] - X[b, k], axis=1)
            near = np.argsort(dist)[: min(3, k)]
            assert nn3[b, k].item() == pytest.approx(Y[b, near].mean(), abs=1e-5)
            w_avg = (Y[b, :k, None] * X[b, :k]).mean(0)
            assert avg[b, k].item() == pytest.approx(X[b, k] @ w_avg, abs=1e-4)
    # noise-free and k >= d: least squares is exact
    assert normalized_errors(ls, ys, 4)[5:].max() < 1e-8
    assert normalized_errors(torch.zeros_like(ys), ys, 4).shape == (12,)


def tiny_config(**kw) -> FunctionGPTConfig:
    return FunctionGPTConfig(**{"n_dims": 3, "n_points": 8, "max_len": 16, "d_model": 32,
                                "n_heads": 4, "n_layers": 2, **kw})


def test_interleave_puts_y_after_its_x_padded_with_zeros():
    xs = torch.arange(12.0).view(1, 2, 6)[..., :3].reshape(1, 2, 3)
    ys = torch.tensor([[10.0, 20.0]])
    z = interleave_points(xs, ys)
    assert torch.equal(z[0, 0], xs[0, 0]) and torch.equal(z[0, 2], xs[0, 1])
    assert z[0, 1].tolist() == [10.0, 0.0, 0.0] and z[0, 3].tolist() == [20.0, 0.0, 0.0]


@pytest.mark.parametrize("positional", ["learned", "rope"])
def test_prediction_at_k_ignores_later_points(positional):
    torch.manual_seed(0)
    model = FunctionGPT(tiny_config(positional=positional)).eval()
    xs, ys = sample_linear_regression(2, 8, 3, torch.Generator().manual_seed(0))
    base = model(xs, ys)
    for k in range(8):
        xs2, ys2 = xs.clone(), ys.clone()
        xs2[:, k + 1:] += 5.0
        ys2[:, k:] -= 7.0  # y_k itself comes after x_k: not seen by prediction k either
        out = model(xs2, ys2)
        torch.testing.assert_close(out[:, : k + 1], base[:, : k + 1])
        if k < 7:
            assert (out[:, k + 1:] - base[:, k + 1:]).abs().max() > 1e-4


def test_config_and_input_errors():
    with pytest.raises(ConfigError, match="max_len 10 is too short"):
        tiny_config(max_len=10)
    model = FunctionGPT(tiny_config())
    with pytest.raises(AttnlabError, match="exceed"):
        model(torch.zeros(1, 9, 3), torch.zeros(1, 9))
    with pytest.raises(AttnlabError, match="expected xs"):
        model(torch.zeros(1, 4, 2), torch.zeros(1, 4))


def test_tiny_training_run_lowers_the_error(tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "icl-linear", "--out", str(run), "--no-progress", "--max-steps", "250",
                 "--set", "model.n_dims=1", "--set", "model.n_points=6", "--set",
                 "model.max_len=12", "--set", "model.d_model=32", "--set", "model.n_layers=2",
                 "--set", "train.batch_size=64", "--set", "train.warmup_steps=10",
                 "--set", "train.schedule=constant", "--set", "train.grad_clip=0",
                 "--set", "train.eval_interval=250", "--set", "train.lr=3e-3"])
    assert code == 0
    assert "least squares" in capsys.readouterr().out
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    zero = rows[0]["zero_loss"]
    final = [r for r in rows if "val_loss" in r][-1]["val_loss"]
    assert final < 0.8 * zero, (final, zero)
    assert main(["eval", str(run), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["k"] == list(range(6)) and len(m["model"]) == 6
    assert m["least_squares"][5] < 1e-6 and m["model"][5] < m["model"][0]
    assert main(["eval", str(run)]) == 0
    assert "3_nearest_neighbours" in capsys.readouterr().out


def test_unknown_function_class_is_one_line(tmp_path, capsys):
    code = main(["train", "icl-linear", "--out", str(tmp_path / "r"), "--no-progress",
                 "--set", "data.source=quadratic"])
    assert code == 2
    assert "unknown function class 'quadratic'" in capsys.readouterr().err


def test_resuming_to_more_steps_says_the_curriculum_moved(tmp_path):
    """The curriculum grows over train.max_steps, like a cosine schedule decays over it."""
    import dataclasses
    import json

    from attnlab.tasks.config import load_run_config
    from attnlab.tasks.run import _continue_records

    cfg = load_run_config("icl-linear", ["train.schedule=constant"])
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    longer = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, max_steps=cfg.train.max_steps * 2))
    said = []
    _continue_records(tmp_path, longer, 10, said.append)
    assert any("paces its curriculum by train.max_steps" in line for line in said), said
    said.clear()
    _continue_records(tmp_path, longer, 10, said.append)  # config.json now holds it: silent
    assert said == []
