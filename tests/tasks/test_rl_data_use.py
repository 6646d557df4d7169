"""The offline-RL task's use of its data (test_rl.py checks the state statistics): validation
windows from held-out episodes only, a small
dataset still holds out one episode, and timesteps past the model's max_ep_len are clamped to
its last embedding row."""

import functools

import numpy as np

from attnlab.data.offline_rl import DatasetSpec, generate
from attnlab.models.decision import DecisionConfig, DecisionTransformer
from attnlab.tasks.rl import OfflineRL, split_episodes


@functools.cache
def _data():
    """Random episodes fall fast, expert ones last 500 steps: their states differ a lot."""
    return generate(DatasetSpec("CartPole-v1", 6, {"random": 0.5, "expert": 0.5}, seed=0),
                    progress=False)


def _task(max_ep_len=500, val_fraction=0.34):
    model = DecisionTransformer(DecisionConfig(d_model=8, n_heads=2, n_layers=1, context=3,
                                               max_ep_len=max_ep_len))
    return OfflineRL(model, _data(), val_fraction=val_fraction)


def _rows(data, episodes):
    a = data.arrays
    return np.concatenate([np.arange(a["episode_starts"][e],
                                     a["episode_starts"][e] + a["episode_lengths"][e])
                           for e in episodes])


def test_validation_windows_come_from_held_out_episodes():
    task, data = _task(), _data()
    assert not set(task.train_eps.tolist()) & set(task.val_eps.tolist())
    val_obs = {r.tobytes() for r in data.arrays["observations"][_rows(data, task.val_eps)]}
    obs, *_ , mask = task.val_batch
    real = obs[mask]
    assert len(real) > 0 and all(r.numpy().tobytes() in val_obs for r in real)


def test_a_small_dataset_still_holds_out_one_episode():
    train, val = split_episodes(5, 0.1)  # round(0.5) = 0, but at least one is held out
    assert len(val) == 1 and len(train) == 4
    assert sorted([*train, *val]) == list(range(5))


def test_timesteps_beyond_max_ep_len_use_its_last_row():
    task = _task(max_ep_len=50)  # the expert episodes run 500 steps
    assert int(task.timesteps.max()) == 49
    a = _data().arrays
    np.testing.assert_array_equal(task.timesteps.numpy(), np.minimum(a["timesteps"], 49))
