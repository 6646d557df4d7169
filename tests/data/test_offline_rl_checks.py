"""attnlab.data.offline_rl: every episode has its own reset seed
(spec.seed * 1_000_003 + i) and starts where that seed puts it; noisy episodes draw their
epsilon from the spec's range, one per episode; a named dataset is generated once and reused;
the sidecar's format and JSON are checked."""

import json

import numpy as np
import pytest

from attnlab.data import offline_rl
from attnlab.data.offline_rl import DatasetSpec, generate, load, load_dataset, save
from attnlab.data.rl_policies import make_env
from attnlab.errors import AttnlabError

TINY = DatasetSpec("CartPole-v1", 4, {"random": 1.0}, (0.5, 0.5), 2)


def test_each_episode_starts_from_its_own_seeded_reset():
    ds = generate(TINY, progress=False)
    seeds = [2 * 1_000_003 + i for i in range(4)]
    assert ds.arrays["episode_seed"].tolist() == seeds
    env = make_env("CartPole-v1")
    for i, seed in enumerate(seeds):
        first, _ = env.reset(seed=seed)
        np.testing.assert_array_equal(ds.episode(i)["observations"][0],
                                      np.asarray(first, dtype=np.float32))
    starts = {ds.episode(i)["observations"][0].tobytes() for i in range(4)}
    assert len(starts) == 4


def test_noisy_episodes_draw_their_epsilon_from_the_range():
    spec = DatasetSpec("CartPole-v1", 4, {"noisy": 1.0}, (0.6, 0.9), 1)
    eps = generate(spec, progress=False).arrays["episode_epsilon"]
    assert ((eps >= 0.6) & (eps <= 0.9)).all()
    assert len(set(eps.tolist())) == 4  # one draw per episode, not the range's end


@pytest.fixture
def generations(monkeypatch) -> list:
    """Named dataset "tiny" registered; the list gets an item per dataset generated."""
    monkeypatch.setitem(offline_rl.DATASETS, "tiny", TINY)
    calls = []
    real = offline_rl.generate
    monkeypatch.setattr(offline_rl, "generate",
                        lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    return calls


def test_a_named_dataset_is_generated_once_then_loaded(generations):
    first = load_dataset("tiny", progress=False)
    second = load_dataset("tiny", progress=False)
    assert generations == [1] and second.meta["sha256"] == first.meta["sha256"]


def test_a_sidecar_of_another_format_or_not_json_is_one_clear_error(tmp_path):
    path = tmp_path / "d.safetensors"
    save(generate(TINY, progress=False), path)
    side = tmp_path / "d.json"
    meta = json.loads(side.read_text())
    side.write_text(json.dumps({**meta, "format": "something-else"}))
    with pytest.raises(AttnlabError, match="does not describe an attnlab offline RL dataset"):
        load(path)
    side.write_text("{not json")
    with pytest.raises(AttnlabError, match=r"d\.json is corrupt \(not JSON\)"):
        load(path)


def test_an_existing_sidecar_alone_is_never_overwritten(tmp_path):
    side = tmp_path / "new.json"
    side.write_text('{"mine": true}')
    with pytest.raises(AttnlabError, match="is never overwritten"):
        offline_rl.make_dataset("CartPole-v1", out=tmp_path / "new.safetensors", episodes=1,
                                progress=False)
    assert side.read_text() == '{"mine": true}'
    assert not (tmp_path / "new.safetensors").exists()


@pytest.mark.parametrize("mix, message", [
    ({"random": 0.0}, "a policy mix with a share > 0"),
    ({"random": -1.0, "expert": 2.0}, "share of 'random' must be a finite number >= 0"),
    ({"random": float("nan")}, "share of 'random' must be a finite number >= 0"),
])
def test_a_mix_without_a_positive_share_or_with_a_negative_one_is_refused(mix, message):
    with pytest.raises(AttnlabError, match=message):
        DatasetSpec("CartPole-v1", 4, mix).counts()


def test_a_cached_dataset_of_another_format_version_is_not_reused(generations,
                                                                  monkeypatch):
    load_dataset("tiny", progress=False)
    monkeypatch.setattr(offline_rl, "FORMAT_VERSION", offline_rl.FORMAT_VERSION + 1)
    load_dataset("tiny", progress=False)  # new generator version: made anew, not the old file
    assert generations == [1, 1]


def test_saving_to_another_suffix_is_refused(tmp_path):
    with pytest.raises(AttnlabError, match=r"is a \.safetensors file, got .*d\.npz"):
        save(generate(TINY, progress=False), tmp_path / "d.npz")
    assert not list(tmp_path.iterdir())
