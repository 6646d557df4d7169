"""Behaviour policies that generate the offline RL datasets: random, expert and noisy-expert.

A policy is a callable `policy(obs, rng) -> action` (an int for a discrete action space, a
float32 array for a continuous one); `rng` is a numpy Generator, the only randomness used.

Experts:
- CartPole-v1: hand-written linear state feedback, push right when
  0.1 x + 0.5 x' + 10 theta + 2 theta' > 0; it balances for the full 500 steps from every
  start we tried (and still reaches 500 with 20% random actions).
- Hopper-v5: no pretrained expert exists offline, so attnlab trains a linear policy with
  Augmented Random Search (ARS V2-t, Mania et al., 2018) from a fixed seed and caches it. It is a
  fair expert (returns about 2,400; see `docs/decision.md`), not a state-of-the-art one.

Noisy-expert: each step, with probability `epsilon`, a uniformly random action instead of the
expert's (epsilon-greedy noise, the same for discrete and continuous actions).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from safetensors.numpy import load_file
from tqdm.auto import tqdm

from attnlab.data.corpora import cache_dir
from attnlab.errors import AttnlabError
from attnlab.files import atomic_write

Policy = Callable[[np.ndarray, np.random.Generator], object]

CARTPOLE_GAINS = np.array([0.1, 0.5, 10.0, 2.0])


def make_env(env_id: str):
    """`gymnasium.make(env_id)`, with an unknown id as one clear AttnlabError line."""
    import gymnasium as gym
    from gymnasium.envs.registration import registry

    from attnlab.errors import did_you_mean

    if env_id not in registry:
        raise AttnlabError(f"unknown environment id '{env_id}'"
                           f"{did_you_mean(env_id, list(registry))}; e.g. CartPole-v1, Hopper-v5")
    try:
        return gym.make(env_id)
    except (gym.error.Error, ImportError) as e:  # e.g. mujoco missing for a MuJoCo task
        raise AttnlabError(f"cannot make environment '{env_id}': {e}") from None


def random_policy(env) -> Policy:
    """Uniform random actions from the env's action space (drawn with the caller's rng)."""
    space = env.action_space
    if hasattr(space, "n"):
        n = int(space.n)
        return lambda obs, rng: int(rng.integers(n))
    low, high = space.low.astype(np.float32), space.high.astype(np.float32)
    return lambda obs, rng: rng.uniform(low, high).astype(np.float32)


def cartpole_expert(obs: np.ndarray, rng: np.random.Generator) -> int:
    """Linear state feedback that balances CartPole (x, x', theta, theta')."""
    return int(float(obs @ CARTPOLE_GAINS) > 0)


@dataclass
class LinearPolicy:
    """a = clip(M (obs - mean) / std, low, high): ARS's linear policy on normalized states."""

    matrix: np.ndarray  # (A, S)
    mean: np.ndarray  # (S,)
    std: np.ndarray  # (S,)
    low: np.ndarray
    high: np.ndarray

    def __call__(self, obs: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        return np.clip(self.matrix @ ((obs - self.mean) / self.std), self.low,
                       self.high).astype(np.float32)


def noisy(expert: Policy, rand: Policy, epsilon: float) -> Policy:
    """The expert, except with probability `epsilon` per step a random action."""
    def policy(obs, rng):
        return rand(obs, rng) if rng.random() < epsilon else expert(obs, rng)
    return policy


def run_episode(env, policy: Policy, rng: np.random.Generator, seed: int,
                reward_shift: float = 0.0, on_obs=None) -> tuple[float, int]:
    """(return, steps) of one episode; `reward_shift` is subtracted from every reward (ARS
    removes Hopper's survival bonus while training) and `on_obs` sees each observation."""
    obs, _ = env.reset(seed=seed)
    total, steps = 0.0, 0
    while True:
        if on_obs is not None:
            on_obs(obs)
        obs, reward, terminated, truncated, _ = env.step(policy(obs, rng))
        total += float(reward) - reward_shift
        steps += 1
        if terminated or truncated:
            return total, steps


class RunningStats:
    """Mean and std of every observation seen (Welford), for ARS V2's state normalization."""

    def __init__(self, dim: int):
        self.n, self.mean, self.m2 = 0, np.zeros(dim), np.zeros(dim)

    def push(self, x: np.ndarray) -> None:
        self.n += 1
        delta = x - self.mean
        self.mean = self.mean + delta / self.n
        self.m2 = self.m2 + delta * (x - self.mean)

    @property
    def std(self) -> np.ndarray:
        var = self.m2 / max(self.n - 1, 1)
        return np.where(var > 1e-8, np.sqrt(np.maximum(var, 1e-8)), 1.0)


def train_ars(env_id: str, *, iterations: int = 120, directions: int = 8, top: int = 4,
              step_size: float = 0.08, noise: float = 0.05, reward_shift: float = 1.0,
              seed: int = 0, max_minutes: float = 0.0, progress: bool = True) -> tuple[
                  LinearPolicy, list[float]]:
    """Augmented Random Search V2-t on a linear policy.

    Each iteration perturbs the matrix by +-noise * delta along `directions` Gaussian
    directions, keeps the `top` best by max(r+, r-), and steps along their reward differences
    divided by those rewards' std. States are normalized by running statistics of every state
    visited (frozen within an iteration).

    Returns:
        the policy and the evaluation return (without the shift) after each iteration.
    """
    env = make_env(env_id)
    s_dim, a_dim = env.observation_space.shape[0], env.action_space.shape[0]
    low, high = env.action_space.low, env.action_space.high
    rng = np.random.default_rng(seed)
    matrix = np.zeros((a_dim, s_dim))
    stats = RunningStats(s_dim)
    history: list[float] = []
    start = time.perf_counter()
    episode = 0
    for _ in tqdm(range(iterations), desc=f"ARS {env_id}", disable=not progress):
        mean, std = stats.mean.copy(), stats.std.copy()
        deltas = rng.standard_normal((directions, a_dim, s_dim))
        plus, minus = np.zeros(directions), np.zeros(directions)
        for k in range(directions):
            for sign, out in ((1, plus), (-1, minus)):
                pol = LinearPolicy(matrix + sign * noise * deltas[k], mean, std, low, high)
                out[k], _ = run_episode(env, pol, rng, seed=seed * 100_003 + episode,
                                        reward_shift=reward_shift, on_obs=stats.push)
                episode += 1
        order = np.argsort(-np.maximum(plus, minus))[:top]
        sigma = np.concatenate([plus[order], minus[order]]).std() + 1e-8
        grad = np.einsum("k,kas->as", plus[order] - minus[order], deltas[order])
        matrix = matrix + step_size / (top * sigma) * grad
        pol = LinearPolicy(matrix, stats.mean.copy(), stats.std.copy(), low, high)
        history.append(run_episode(env, pol, rng, seed=seed * 100_003 + episode)[0])
        episode += 1
        if max_minutes and time.perf_counter() - start > 60 * max_minutes:
            break
    return LinearPolicy(matrix, stats.mean.copy(), stats.std.copy(), low, high), history


#: version of the Hopper expert recipe; bump when train_ars or its settings change
HOPPER_EXPERT_VERSION = 2
HOPPER_ARS = {"iterations": 120, "directions": 8, "top": 4, "step_size": 0.08, "noise": 0.05,
              "reward_shift": 1.0, "seed": 0}


def hopper_expert(*, progress: bool = True) -> LinearPolicy:
    """The ARS-trained Hopper-v5 policy, trained once (a few minutes on one core) and cached
    under $ATTNLAB_HOME/rl/ as safetensors with a JSON note of its training."""
    path = cache_dir() / "rl" / f"hopper-v5-ars-v{HOPPER_EXPERT_VERSION}.safetensors"
    if not path.exists():
        policy, history = train_ars("Hopper-v5", progress=progress, **HOPPER_ARS)
        tensors = {"matrix": policy.matrix, "mean": policy.mean, "std": policy.std,
                   "low": policy.low.astype(np.float64), "high": policy.high.astype(np.float64)}
        note = {"env_id": "Hopper-v5", "algorithm": "ARS V2-t", **HOPPER_ARS,
                "eval_returns": [round(r, 1) for r in history]}
        atomic_write(path.with_suffix(".json"), json.dumps(note, indent=2))
        atomic_write(path, lambda f: f.write(_safetensors_bytes(tensors)))
    t = load_file(str(path))
    return LinearPolicy(t["matrix"], t["mean"], t["std"], t["low"].astype(np.float32),
                        t["high"].astype(np.float32))


def _safetensors_bytes(tensors: dict[str, np.ndarray], metadata: dict | None = None) -> bytes:
    from safetensors.numpy import save
    return save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=metadata)


def expert_for(env_id: str, *, progress: bool = True) -> Policy:
    """The expert policy attnlab has for `env_id` (CartPole-v1, Hopper-v5)."""
    if env_id == "CartPole-v1":
        return cartpole_expert
    if env_id == "Hopper-v5":
        return hopper_expert(progress=progress)
    raise AttnlabError(f"attnlab has no expert policy for '{env_id}' (only CartPole-v1 and "
                       f"Hopper-v5); use a mix of random policies only")


__all__ = ["LinearPolicy", "cartpole_expert", "expert_for", "hopper_expert", "make_env", "noisy",
           "random_policy", "run_episode", "train_ars"]
