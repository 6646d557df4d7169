import json

import numpy as np
import pytest
import torch
import yaml

from attnlab.cli import main
from attnlab.data.offline_rl import DatasetSpec, generate, save
from attnlab.errors import AttnlabError
from attnlab.tasks.rl import OfflineRL, rollout, split_episodes
from attnlab.tasks.run import load_run


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLAB_HOME", str(tmp_path / "home"))
    spec = DatasetSpec("CartPole-v1", 12, {"random": 0.5, "expert": 0.5}, seed=0)
    data = save(generate(spec, progress=False), tmp_path / "cp.safetensors")
    recipe = tmp_path / "dt.yaml"
    recipe.write_text(yaml.safe_dump({
        "task": "rl",
        "model": {"context": 5, "d_model": 32, "n_heads": 2, "n_layers": 1,
                  "return_scale": 500.0, "eval_targets": "500", "eval_episodes": 3},
        "data": {"source": str(tmp_path / "cp.safetensors"), "val_fraction": 0.2},
        "train": {"max_steps": 150, "batch_size": 32, "lr": 3e-3, "warmup_steps": 10,
                  "eval_interval": 75, "checkpoint_interval": 150, "precision": "fp32"}}))
    return tmp_path, recipe, data


def test_windows_stay_inside_their_episode_and_pad_on_the_left(setup):
    from attnlab.models.decision import DecisionConfig, DecisionTransformer

    _, _, data = setup
    model = DecisionTransformer(DecisionConfig(d_model=8, n_heads=2, n_layers=1, context=4,
                                               max_ep_len=500))
    task = OfflineRL(model, data, val_fraction=0.2)
    start = int(data.arrays["episode_starts"][1])
    obs, _, rtg, steps, mask = task.windows(torch.tensor([start + 1, start + 10]))
    assert mask.tolist() == [[False, False, True, True], [True] * 4]
    assert steps[1].tolist() == [7, 8, 9, 10] and steps[0, 2:].tolist() == [0, 1]
    torch.testing.assert_close(obs[1], torch.from_numpy(
        data.arrays["observations"][start + 7:start + 11]))
    assert rtg[0, 2].item() == data.arrays["episode_returns"][1]
    train, val = split_episodes(12, 0.2)
    assert len(val) == 2 and sorted([*train, *val]) == list(range(12))


def test_tiny_dt_trained_on_cartpole_beats_random_play(setup, capsys):
    tmp, recipe, data = setup
    run = tmp / "run"
    assert main(["train", str(recipe), "--out", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "held-out action loss" in out and "dataset returns" in out
    assert data.meta["sha256"] in out and "gymnasium 1.4.0" in out
    step0 = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert step0["dataset_sha256"] == data.meta["sha256"] and step0["dataset_seed"] == 0
    model, _, cfg = load_run(run)
    assert cfg.model.state_dim == 4 and cfg.model.act_dim == 2 and cfg.model.max_ep_len == 500
    torch.testing.assert_close(model.state_mean, torch.from_numpy(
        data.arrays["observations"]).mean(0), atol=0.05, rtol=0.2)  # statistics were saved
    random_mean = data.returns_by_policy()["random"]["mean"]
    achieved = rollout(model, "CartPole-v1", 500.0, [0, 1, 2], sample=False)
    assert achieved.mean() > 4 * random_mean, (achieved, random_mean)
    assert main(["eval", str(run), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["eval_seeds"] == [0, 1, 2] and m["dataset_sha256"] == data.meta["sha256"]
    assert m["versions"]["gymnasium"] == "1.4.0" and m["rollouts"][0]["target"] == 500.0
    assert len(m["rollouts"][0]["returns"]) == 3
    assert main(["eval", str(run)]) == 0
    text = capsys.readouterr().out
    assert "target 500: return" in text and data.meta["sha256"] in text


def run_fails(capsys, args, message):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err


def test_bad_input_is_one_line_and_exit_2(setup, capsys):
    tmp, recipe, _ = setup
    run_fails(capsys, ["rl-data", "CartPole-v9", "--out", str(tmp / "x.safetensors")],
              "unknown environment id 'CartPole-v9'")
    assert not (tmp / "x.safetensors").exists()
    run_fails(capsys, ["rl-data", "CartPole-v1", "--out", str(tmp / "cp.safetensors")],
              "is never overwritten")
    run_fails(capsys, ["train", str(recipe), "--out", str(tmp / "r1"),
                       "--set", "data.source=cartpole-mixd"], "did you mean 'cartpole-mixed'")
    path = tmp / "cp.safetensors"
    path.write_bytes(path.read_bytes()[:-1] + b" ")
    run_fails(capsys, ["train", str(recipe), "--out", str(tmp / "r2")], "checksum mismatch")
    with pytest.raises(AttnlabError, match="unknown environment id"):
        rollout(None, "Nope-v0", 1.0, [0])


def test_rl_data_command_writes_a_dataset_and_sidecar(setup, capsys):
    tmp, _, _ = setup
    out = tmp / "new.safetensors"
    assert main(["rl-data", "CartPole-v1", "--out", str(out), "--episodes", "3",
                 "--mix", "random=1", "--seed", "5", "--no-progress"]) == 0
    text = capsys.readouterr().out
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["seed"] == 5 and meta["episodes"] == 3 and meta["sha256"] in text
    assert "random" in text and np.isclose(meta["mix"]["random"], 1.0)


def test_a_context_longer_than_any_episode_is_refused_at_once():
    """It would train for nothing but padding (and, at 5000 steps, run out of memory)."""
    from attnlab.errors import ConfigError
    from attnlab.models.decision import DecisionConfig

    with pytest.raises(ConfigError, match="context 30 is longer than an episode can be "
                                          r"\(max_ep_len 20\)"):
        DecisionConfig(d_model=8, n_heads=2, n_layers=1, context=30, max_ep_len=20)
    assert DecisionConfig(d_model=8, n_heads=2, n_layers=1, context=20, max_ep_len=20)


def test_state_statistics_come_from_the_training_episodes_only(setup):
    """Normalizing by statistics that include held-out episodes would leak them into training."""
    from attnlab.models.decision import DecisionConfig, DecisionTransformer

    _, _, data = setup
    model = DecisionTransformer(DecisionConfig(d_model=8, n_heads=2, n_layers=1, context=4,
                                               max_ep_len=500))
    task = OfflineRL(model, data, val_fraction=0.2)
    a = data.arrays

    def rows(episodes):
        return np.concatenate([a["observations"][s:s + n] for s, n in zip(
            a["episode_starts"][episodes], a["episode_lengths"][episodes], strict=True)]
        ).astype(np.float64)

    train = rows(task.train_eps)
    mean, std = task.state_stats()
    np.testing.assert_allclose(mean, train.mean(0), rtol=1e-12)
    np.testing.assert_allclose(std, train.std(0, ddof=1), rtol=1e-12)  # torch's default
    everything = rows(np.arange(data.n_episodes))
    assert not np.allclose(mean, everything.mean(0))
