import json

import numpy as np
import pytest

from attnlab.data import offline_rl
from attnlab.data.offline_rl import (
    DatasetSpec,
    generate,
    load,
    load_dataset,
    parse_mix,
    returns_to_go,
    save,
)
from attnlab.data.rl_policies import cartpole_expert, make_env, run_episode
from attnlab.errors import AttnlabError

TINY = DatasetSpec("CartPole-v1", 5, {"random": 0.6, "noisy": 0.2, "expert": 0.2}, (0.5, 0.5), 3)


def test_returns_to_go_by_hand():
    assert returns_to_go(np.array([1.0, 2.0, 3.0])).tolist() == [6.0, 5.0, 3.0]
    # gamma 0.5: 3; 2 + 0.5 * 3 = 3.5; 1 + 0.5 * 3.5 = 2.75
    assert returns_to_go(np.array([1.0, 2.0, 3.0]), gamma=0.5).tolist() == [2.75, 3.5, 3.0]
    assert returns_to_go(np.zeros(0)).tolist() == []


def test_generated_episodes_carry_their_returns_to_go_and_policies():
    ds = generate(TINY, progress=False)
    a = ds.arrays
    assert ds.n_episodes == 5 and a["episode_policy"].tolist() == [0, 0, 0, 1, 2]
    assert a["episode_epsilon"].tolist() == [1.0, 1.0, 1.0, 0.5, 0.0]
    assert int(a["episode_lengths"].sum()) == len(a["rewards"]) == ds.meta["transitions"]
    for i in range(ds.n_episodes):
        ep = ds.episode(i)
        assert ep["timesteps"].tolist() == list(range(len(ep["rewards"])))
        np.testing.assert_allclose(ep["returns_to_go"], np.cumsum(ep["rewards"][::-1])[::-1])
        assert ep["returns_to_go"][0] == a["episode_returns"][i]
    assert a["episode_returns"][4] == 500.0  # the expert balances to the time limit
    assert a["episode_returns"][:3].max() < 100  # random play falls fast
    assert ds.discrete and ds.state_dim == 4 and ds.act_dim == 2
    assert ds.meta["gymnasium"] == "1.4.0" and ds.meta["env_id"] == "CartPole-v1"
    by = ds.returns_by_policy()
    assert by["expert"] == {"episodes": 1, "mean": 500.0, "min": 500.0, "max": 500.0}
    assert by["all"]["episodes"] == 5


def test_cartpole_expert_balances_every_seed():
    env = make_env("CartPole-v1")
    rng = np.random.default_rng(0)
    assert [run_episode(env, cartpole_expert, rng, seed)[0] for seed in range(5)] == [500.0] * 5


def test_round_trip_same_bytes_for_same_spec_and_checksum_mismatch_refused(tmp_path):
    first = save(generate(TINY, progress=False), tmp_path / "a.safetensors")
    second = save(generate(TINY, progress=False), tmp_path / "b.safetensors")
    assert first.meta["sha256"] == second.meta["sha256"]  # deterministic given the spec
    back = load(tmp_path / "a.safetensors")
    assert back.meta == first.meta and back.meta["seed"] == 3
    assert json.loads((tmp_path / "a.json").read_text())["mix"] == TINY.mix
    for key, value in first.arrays.items():
        np.testing.assert_array_equal(back.arrays[key], value)
        assert back.arrays[key].dtype == value.dtype
    path = tmp_path / "a.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(AttnlabError, match="checksum mismatch"):
        load(path)
    (tmp_path / "b.json").unlink()
    with pytest.raises(AttnlabError, match="has no sidecar"):
        load(tmp_path / "b.safetensors")
    with pytest.raises(AttnlabError, match="no offline RL dataset"):
        load(tmp_path / "missing.safetensors")


def test_named_datasets_are_cached_and_bad_names_are_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(offline_rl.DATASETS, "tiny", TINY)
    ds = load_dataset("tiny", progress=False)
    assert offline_rl.dataset_path("tiny").exists()
    assert load_dataset("tiny").meta["sha256"] == ds.meta["sha256"]
    with pytest.raises(AttnlabError, match=r"unknown offline RL dataset 'cartpole-mixd'.*"
                                           r"did you mean 'cartpole-mixed'"):
        load_dataset("cartpole-mixd")


def test_unknown_env_and_policy_and_mix_are_clear_errors():
    with pytest.raises(AttnlabError, match=r"unknown environment id 'CartPole-v9'.*did you mean"):
        make_env("CartPole-v9")
    with pytest.raises(AttnlabError, match="unknown behaviour policy 'exprt'"):
        DatasetSpec("CartPole-v1", 4, {"exprt": 1.0}).counts()
    with pytest.raises(AttnlabError, match="no expert policy for 'Acrobot-v1'"):
        generate(DatasetSpec("Acrobot-v1", 1, {"expert": 1.0}), progress=False)
    assert parse_mix("random=0.5, expert=0.5") == {"random": 0.5, "expert": 0.5}
    with pytest.raises(AttnlabError, match="--mix takes policy=share"):
        parse_mix("random:0.5")
    assert DatasetSpec("CartPole-v1", 7, {"random": 0.5, "expert": 0.5}).counts() == {
        "random": 4, "expert": 3}
    # the remainder never goes to a policy the mix leaves out
    assert DatasetSpec("CartPole-v1", 5, {"random": 0, "noisy": 0.5, "expert": 0.5}).counts() == {
        "random": 0, "noisy": 3, "expert": 2}


def test_ars_is_deterministic_and_its_linear_policy_respects_the_action_bounds():
    from attnlab.data.rl_policies import LinearPolicy, train_ars

    a, hist_a = train_ars("Hopper-v5", iterations=2, directions=2, top=1, progress=False)
    b, hist_b = train_ars("Hopper-v5", iterations=2, directions=2, top=1, progress=False)
    assert a.matrix.shape == (3, 11) and len(hist_a) == 2 and hist_a == hist_b
    np.testing.assert_array_equal(a.matrix, b.matrix)
    assert np.abs(a.matrix).sum() > 0  # it moved from the zero start
    big = LinearPolicy(np.full((3, 11), 100.0), np.zeros(11), np.ones(11), a.low, a.high)
    act = big(np.ones(11))
    assert act.dtype == np.float32 and act.tolist() == [1.0, 1.0, 1.0]
