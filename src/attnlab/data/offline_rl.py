"""Offline RL datasets that attnlab generates itself from gymnasium environments, with
returns-to-go, stored as safetensors plus a JSON sidecar (never pickled).

A dataset is `episodes` episodes of one environment, each run by one behaviour policy drawn
from a mix (see `attnlab.data.rl_policies`):

    random        uniform random actions
    noisy         the expert with epsilon-random actions, epsilon drawn per episode from
                  `epsilon` (a range), so noisy episodes span bad to nearly expert returns
    expert        the expert

File `NAME.safetensors` holds flat per-transition arrays (observations, actions, rewards,
returns_to_go, timesteps) and per-episode arrays (episode_starts, episode_lengths,
episode_returns, episode_policy, episode_epsilon, episode_seed); `NAME.json` beside it records
the environment id, the gymnasium and mujoco versions, the seed, the mix and the file's sha256.
Loading checks the sha256 and refuses a file that does not match its sidecar.

Named datasets (`DATASETS`) are generated on first use into `$ATTNLAB_HOME/rl/` and reused.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tqdm.auto import tqdm

from attnlab.data.corpora import cache_dir
from attnlab.data.rl_policies import expert_for, make_env, noisy, random_policy
from attnlab.errors import AttnlabError, did_you_mean
from attnlab.files import atomic_write, sha256_file

FORMAT = "attnlab-offline-rl"
FORMAT_VERSION = 2  # bump when the file layout, a generator or an expert changes
POLICIES = ("random", "noisy", "expert")


@dataclass(frozen=True)
class DatasetSpec:
    """How to generate a dataset: environment, episode count, policy mix, seed.

    Args:
        env_id: a gymnasium environment id.
        episodes: number of episodes.
        mix: policy name (random, noisy, expert) -> share of the episodes.
        epsilon: (low, high) range of the noisy-expert's per-episode random-action rate.
        seed: seeds every episode's reset and every policy's randomness.
    """

    env_id: str
    episodes: int
    mix: dict = field(default_factory=lambda: {"random": 1.0})
    epsilon: tuple[float, float] = (0.4, 0.9)
    seed: int = 0

    def counts(self) -> dict[str, int]:
        """Episodes per policy: shares rounded down, the remainder given to the first policy
        with a share > 0 (a policy at 0 never plays)."""
        for name, share in self.mix.items():
            if name not in POLICIES:
                raise AttnlabError(f"unknown behaviour policy '{name}'"
                                   f"{did_you_mean(name, POLICIES)}; choose from: "
                                   f"{', '.join(POLICIES)}")
            if not share >= 0 or not math.isfinite(share):  # NaN fails `>= 0`
                raise AttnlabError(f"policy share of '{name}' must be a finite number >= 0, "
                                   f"got {share}")
        total = sum(self.mix.values())
        if self.seed < 0:
            raise AttnlabError(f"the seed must be >= 0, got {self.seed}")
        if self.episodes < 1 or total <= 0:
            raise AttnlabError("a dataset needs episodes >= 1 and a policy mix with a share > 0")
        counts = {k: int(self.episodes * v / total + 1e-9) for k, v in self.mix.items()}
        first = next(k for k, v in self.mix.items() if v > 0)
        counts[first] += self.episodes - sum(counts.values())
        return counts


#: named datasets: mostly random and noisy-expert episodes, a few expert ones
DATASETS = {
    "cartpole-mixed": DatasetSpec("CartPole-v1", 200, {"random": 0.4, "noisy": 0.5,
                                                       "expert": 0.1}, (0.4, 0.9), 0),
    "hopper-mixed": DatasetSpec("Hopper-v5", 200, {"random": 0.3, "noisy": 0.5,
                                                   "expert": 0.2}, (0.1, 0.6), 0),
}


@dataclass
class OfflineDataset:
    """Transitions of many episodes, flat, with returns-to-go.

    Attributes:
        arrays: name -> numpy array (see the module docstring).
        meta: the sidecar's fields (env_id, versions, seed, mix, sha256, ...).
    """

    arrays: dict[str, np.ndarray]
    meta: dict

    @property
    def discrete(self) -> bool:
        return bool(self.meta["discrete"])

    @property
    def state_dim(self) -> int:
        return int(self.arrays["observations"].shape[1])

    @property
    def act_dim(self) -> int:
        """Number of actions (discrete) or the action vector's size (continuous)."""
        return int(self.meta["act_dim"])

    @property
    def n_episodes(self) -> int:
        return len(self.arrays["episode_starts"])

    def episode(self, i: int) -> dict[str, np.ndarray]:
        """Episode i's per-step arrays."""
        a = self.arrays
        s, n = int(a["episode_starts"][i]), int(a["episode_lengths"][i])
        return {k: a[k][s:s + n] for k in ("observations", "actions", "rewards",
                                           "returns_to_go", "timesteps")}

    def returns_by_policy(self) -> dict[str, dict]:
        """Mean / min / max episode return and episode count per behaviour policy, and all."""
        ret, pol = self.arrays["episode_returns"], self.arrays["episode_policy"]
        out = {}
        for name, rows in [(p, pol == i) for i, p in enumerate(POLICIES)] + [
                ("all", np.ones_like(pol, dtype=bool))]:
            if rows.any():
                r = ret[rows]
                out[name] = {"episodes": int(rows.sum()), "mean": float(r.mean()),
                             "min": float(r.min()), "max": float(r.max())}
        return out


def returns_to_go(rewards: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """R_t = sum_{t' >= t} gamma^(t' - t) r_t' of one episode (float64 sums, float32 out)."""
    out = np.zeros(len(rewards), dtype=np.float64)
    acc = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        acc = float(rewards[t]) + gamma * acc
        out[t] = acc
    return out.astype(np.float32)


def versions() -> dict[str, str | None]:
    """Versions of the simulators that made (or would remake) a dataset."""
    out = {}
    for pkg in ("gymnasium", "mujoco"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def generate(spec: DatasetSpec, *, progress: bool = True) -> OfflineDataset:
    """Roll out `spec.episodes` episodes of the policy mix; deterministic given the spec and
    the simulator versions."""
    counts = spec.counts()
    env = make_env(spec.env_id)
    discrete = hasattr(env.action_space, "n")
    rand = random_policy(env)
    expert = expert_for(spec.env_id, progress=progress) if (
        counts.get("noisy", 0) or counts.get("expert", 0)) else None
    rng = np.random.default_rng(spec.seed)
    cols: dict[str, list] = {k: [] for k in ("observations", "actions", "rewards",
                                             "returns_to_go", "timesteps")}
    episodes: dict[str, list] = {k: [] for k in ("starts", "lengths", "returns", "policy",
                                                 "epsilon", "seed")}
    plan = [name for name in POLICIES for _ in range(counts.get(name, 0))]
    start = 0
    for i, name in enumerate(tqdm(plan, desc=f"episodes {spec.env_id}", disable=not progress)):
        eps = float(rng.uniform(*spec.epsilon)) if name == "noisy" else (
            1.0 if name == "random" else 0.0)
        policy = {"random": rand, "expert": expert}.get(name) or noisy(expert, rand, eps)
        seed = spec.seed * 1_000_003 + i
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        o, a, r = [], [], []
        while True:
            action = policy(obs, rng)
            o.append(np.asarray(obs, dtype=np.float32))
            a.append(action)
            obs, reward, terminated, truncated, _ = env.step(action)
            r.append(float(reward))
            if terminated or truncated:
                break
        rewards = np.asarray(r, dtype=np.float32)
        cols["observations"].append(np.stack(o))
        cols["actions"].append(np.asarray(a, dtype=np.int64 if discrete else np.float32))
        cols["rewards"].append(rewards)
        cols["returns_to_go"].append(returns_to_go(rewards))
        cols["timesteps"].append(np.arange(len(r), dtype=np.int64))
        for key, value in (("starts", start), ("lengths", len(r)),
                           ("returns", float(np.sum(rewards, dtype=np.float64))),
                           ("policy", POLICIES.index(name)), ("epsilon", eps), ("seed", seed)):
            episodes[key].append(value)
        start += len(r)
    arrays = {k: np.concatenate(v) for k, v in cols.items()}
    dtypes = {"starts": np.int64, "lengths": np.int64, "returns": np.float32,
              "policy": np.int64, "epsilon": np.float32, "seed": np.int64}
    arrays.update({f"episode_{k}": np.asarray(v, dtype=dtypes[k]) for k, v in episodes.items()})
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "env_id": spec.env_id,
            **versions(), "seed": spec.seed, "episodes": spec.episodes, "mix": dict(spec.mix),
            "epsilon": list(spec.epsilon), "discrete": discrete,
            "act_dim": int(env.action_space.n) if discrete else int(env.action_space.shape[0]),
            "max_episode_steps": int(env.spec.max_episode_steps), "transitions": start}
    env.close()
    return OfflineDataset(arrays, meta)


def sidecar(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def save(dataset: OfflineDataset, path: Path) -> OfflineDataset:
    """Write `path` (.safetensors) and its JSON sidecar (with the file's sha256), atomically."""
    from safetensors.numpy import save as to_bytes

    path = Path(path)
    if path.suffix != ".safetensors":
        raise AttnlabError(f"an offline RL dataset is a .safetensors file, got {path}")
    data = to_bytes({k: np.ascontiguousarray(v) for k, v in dataset.arrays.items()})
    atomic_write(path, data)
    meta = {**dataset.meta, "sha256": sha256_file(path)}
    atomic_write(sidecar(path), json.dumps(meta, indent=2))
    return OfflineDataset(dataset.arrays, meta)


def load(path: Path) -> OfflineDataset:
    """Read a dataset written by `save`; a missing sidecar or a sha256 that does not match it
    is an error (one line), as is a file that is not an attnlab offline RL dataset."""
    path = Path(path)
    if not path.is_file():
        raise AttnlabError(f"no offline RL dataset at {path}")
    if not sidecar(path).is_file():
        raise AttnlabError(f"{path} has no sidecar {sidecar(path).name} (env id, seeds, "
                           f"sha256); write datasets with attnlab rl-data")
    try:
        meta = json.loads(sidecar(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise AttnlabError(f"{sidecar(path)} is corrupt (not JSON)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise AttnlabError(f"{sidecar(path)} does not describe an attnlab offline RL dataset")
    digest = sha256_file(path)
    if digest != meta.get("sha256"):
        raise AttnlabError(f"{path}: checksum mismatch (sha256 {digest[:12]}..., sidecar says "
                           f"{str(meta.get('sha256'))[:12]}...); the file was changed or "
                           f"truncated: regenerate it")
    try:
        arrays = load_file(str(path))
    except Exception as e:  # safetensors raises its own error type for a malformed header
        raise AttnlabError(f"{path} is not a readable safetensors file ({e})") from None
    return OfflineDataset(arrays, meta)


def dataset_path(name: str) -> Path:
    return cache_dir() / "rl" / f"{name}-v{FORMAT_VERSION}.safetensors"


def load_dataset(source: str, *, progress: bool = True) -> OfflineDataset:
    """A named dataset (generated into the cache on first use) or a .safetensors file."""
    if source in DATASETS:
        path = dataset_path(source)
        if not path.exists():
            save(generate(DATASETS[source], progress=progress), path)
        return load(path)
    if source.endswith(".safetensors") or Path(source).exists():
        return load(Path(source))
    raise AttnlabError(f"unknown offline RL dataset '{source}'{did_you_mean(source, DATASETS)}"
                       f"; named: {', '.join(DATASETS)} (or a .safetensors file)")


def parse_mix(text: str) -> dict[str, float]:
    """'random=0.4,noisy=0.5,expert=0.1' -> {'random': 0.4, ...}."""
    mix = {}
    for part in text.split(","):
        name, sep, share = part.partition("=")
        try:
            value = float(share)
        except ValueError:
            sep = ""
        if not sep:
            raise AttnlabError(f"--mix takes policy=share pairs like random=0.4,noisy=0.5,"
                               f"expert=0.1; got '{part}'")
        if name.strip() in mix:
            raise AttnlabError(f"--mix names '{name.strip()}' twice")
        mix[name.strip()] = value
    return mix


def make_dataset(source: str, *, out: Path | None = None, episodes: int | None = None,
                 mix: str | None = None, seed: int | None = None,
                 progress: bool = True) -> tuple[OfflineDataset, Path]:
    """A named dataset (its cached copy, or written to `out`), or a new one of environment
    `source` written to `out` (which must not exist yet); flags override the named spec."""
    base = DATASETS.get(source)
    if base is not None and out is None and episodes is mix is seed is None:
        return load_dataset(source, progress=progress), dataset_path(source)
    if out is None:
        hint = did_you_mean(source, DATASETS) if base is None else ""
        raise AttnlabError(f"--out FILE.safetensors is needed for a dataset other than the "
                           f"named ones as they are ({', '.join(DATASETS)}){hint}")
    out = Path(out)
    if out.exists() or sidecar(out).exists():
        raise AttnlabError(f"{out} (or its .json sidecar) exists; a dataset is never "
                           f"overwritten: choose another --out")
    if base is None:
        make_env(source).close()  # an unknown id fails before anything is written
        base = DatasetSpec(source, 100, {"random": 0.4, "noisy": 0.5, "expert": 0.1})
    spec = DatasetSpec(base.env_id, episodes if episodes is not None else base.episodes,
                       parse_mix(mix) if mix is not None else dict(base.mix), base.epsilon,
                       seed if seed is not None else base.seed)
    if out.suffix != ".safetensors":
        raise AttnlabError(f"an offline RL dataset is a .safetensors file, got {out}")
    return save(generate(spec, progress=progress), out), out


def describe(dataset: OfflineDataset) -> str:
    """Several lines: environment, versions, size, sha256 and returns per behaviour policy."""
    m = dataset.meta
    lines = [f"{m['env_id']} (gymnasium {m['gymnasium']}, mujoco {m['mujoco']}): "
             f"{dataset.n_episodes} episodes, {m['transitions']:,} transitions, seed "
             f"{m['seed']}, mix {m['mix']}", f"sha256 {m['sha256']}"]
    for name, r in dataset.returns_by_policy().items():
        lines.append(f"  {name:<7} {r['episodes']:>4} episodes  return mean {r['mean']:8.1f}  "
                     f"min {r['min']:8.1f}  max {r['max']:8.1f}")
    return "\n".join(lines)
