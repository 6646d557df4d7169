"""Offline RL: train a Decision Transformer (or behaviour cloning, the same network without
return conditioning) on an attnlab offline dataset, then roll it out in the environment.

Data: `data.source` is a named dataset (cartpole-mixed, hopper-mixed; generated on first use)
or a .safetensors dataset file (`attnlab.data.offline_rl`). The last `data.val_fraction` of
the episodes (in a fixed shuffled order) are held out.
Training: windows of `model.context` steps ending at a uniformly drawn transition (shorter at
an episode's start: left-padded and masked); loss = cross-entropy (discrete) or squared error
(continuous) of every real step's action.
Evaluation during training: the held-out episodes' action loss (`val_loss`).
`attnlab eval`: rollouts in the environment, `eval_episodes` episodes (seeds 0..N-1) per target
return, each conditioned on its target (the return-to-go then falls by each reward received);
achieved returns beside the target and the dataset's own returns, with the seeds, simulator
versions and the dataset's sha256.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from attnlab.data.offline_rl import OfflineDataset, load_dataset, versions
from attnlab.data.rl_policies import make_env
from attnlab.errors import AttnlabError
from attnlab.models.decision import DecisionTransformer

#: held-out windows scored for val_loss: at most this many, evenly spread
VAL_WINDOWS = 512


def split_episodes(n: int, val_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) episode indices: a fixed shuffle, the last fraction (at least one) held
    out; a dataset of one episode trains and validates on it."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(n * val_fraction)) if n > 1 else 0
    return np.sort(order[:n - n_val]), np.sort(order[n - n_val:] if n_val else order)


class OfflineRL:
    """A `DecisionTransformer` and its offline dataset.

    Args:
        model: the network (moved to `device`); its state statistics are set from the
            training episodes by `OfflineRLRun.build`.
        data: the dataset.
        val_fraction: share of the episodes held out.
        device: where batches go.
    """

    def __init__(self, model: DecisionTransformer, data: OfflineDataset, *,
                 val_fraction: float = 0.1, device: torch.device | str = "cpu"):
        c = model.config
        if data.state_dim != c.state_dim or data.act_dim != c.act_dim or (
                data.discrete != c.discrete):
            raise AttnlabError(f"the model ({c.state_dim} state dims, {c.act_dim} actions) does "
                               f"not fit dataset {data.meta['env_id']} ({data.state_dim}, "
                               f"{data.act_dim})")
        self.data, self.context = data, c.context
        self.device = torch.device(device)
        self.model = model.to(self.device)
        a = data.arrays
        self.obs = torch.from_numpy(a["observations"])
        self.actions = torch.from_numpy(a["actions"])
        self.rtg = torch.from_numpy(a["returns_to_go"])
        self.timesteps = torch.from_numpy(a["timesteps"]).clamp_max(c.max_ep_len - 1)
        self.train_eps, self.val_eps = split_episodes(data.n_episodes, val_fraction)
        starts, lengths = a["episode_starts"], a["episode_lengths"]
        self.episode_start = np.repeat(starts, lengths)  # per transition: its episode's start
        self.train_ends = torch.from_numpy(np.concatenate(
            [np.arange(starts[e], starts[e] + lengths[e]) for e in self.train_eps]))
        val_ends = np.concatenate([np.arange(starts[e], starts[e] + lengths[e])
                                   for e in self.val_eps])
        pick = np.linspace(0, len(val_ends) - 1, min(VAL_WINDOWS, len(val_ends))).astype(int)
        self.val_batch = self.windows(torch.from_numpy(val_ends[pick]))

    def state_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of the training episodes' observations."""
        obs = self.obs[self.train_ends].double()
        return obs.mean(0).numpy(), obs.std(0).numpy()

    def windows(self, ends: torch.Tensor):
        """Windows of `context` steps ending at transitions `ends`, never crossing into the
        previous episode: left-padded (mask False) where the episode is younger than that."""
        k = self.context
        idx = ends.unsqueeze(1) - torch.arange(k - 1, -1, -1)  # (B, K)
        first = torch.from_numpy(self.episode_start[ends.numpy()]).unsqueeze(1)
        mask = idx >= first
        idx = torch.where(mask, idx, ends.unsqueeze(1))  # padding repeats a real row
        batch = (self.obs[idx], self.actions[idx], self.rtg[idx], self.timesteps[idx], mask)
        return tuple(t.to(self.device) for t in batch)

    def train_batch(self, generator: torch.Generator, n: int, part: slice):
        rows = torch.randint(len(self.train_ends), (n,), generator=generator)[part]
        return self.windows(self.train_ends[rows])

    def loss(self, model, batch) -> torch.Tensor:
        states, actions, rtg, timesteps, mask = batch
        pred = model(states, actions, rtg, timesteps, mask=mask).float()
        if self.data.discrete:
            per_step = F.cross_entropy(pred.transpose(1, 2), actions, reduction="none")
        else:
            per_step = ((pred - actions) ** 2).mean(-1)
        return (per_step * mask).sum() / mask.sum()

    def evaluate(self, model) -> dict:
        with torch.no_grad():
            return {"val_loss": self.loss(model, self.val_batch).item()}

    def baselines(self) -> dict:
        """The dataset's returns, and what identifies it (logged at step 0 of every run)."""
        r, m = self.data.returns_by_policy(), self.data.meta
        return {"dataset_return_mean": r["all"]["mean"], "dataset_return_max": r["all"]["max"],
                "env_id": m["env_id"], "gymnasium": m["gymnasium"], "mujoco": m["mujoco"],
                "dataset_seed": m["seed"], "dataset_sha256": m["sha256"]}


@torch.no_grad()
def rollout(model: DecisionTransformer, env_id: str, target: float, seeds: list[int], *,
            sample: bool = True, sample_seed: int = 0) -> np.ndarray:
    """Returns of one episode per seed, all run side by side, conditioned on `target`.

    At step t the model reads the last `context` steps (R, s, a) with a placeholder for a_t
    (it cannot see it) and acts from its prediction at s_t; R_{t+1} = R_t - r_t.

    Args:
        model: a trained `DecisionTransformer` (BC ignores the target).
        env_id: gymnasium id; the episodes reset with `seeds`.
        target: the return to condition on.
        sample: discrete actions sampled from the softmax (else argmax).
        sample_seed: seeds that sampling.
    """
    envs = [make_env(env_id) for _ in seeds]  # an unknown id fails first
    c = model.config
    model.eval()
    device = next(model.parameters()).device
    n, k = len(seeds), c.context
    gen = torch.Generator().manual_seed(sample_seed)
    horizon = min(int(envs[0].spec.max_episode_steps or c.max_ep_len), c.max_ep_len)
    states = torch.zeros(n, horizon, c.state_dim)
    actions = (torch.zeros(n, horizon, dtype=torch.long) if c.discrete
               else torch.zeros(n, horizon, c.act_dim))
    rtg = torch.zeros(n, horizon)
    done = np.zeros(n, dtype=bool)
    returns = np.zeros(n)
    for i, (env, seed) in enumerate(zip(envs, seeds, strict=True)):
        states[i, 0] = torch.as_tensor(env.reset(seed=seed)[0], dtype=torch.float32)
    rtg[:, 0] = target
    for t in range(horizon):
        lo = max(0, t + 1 - k)
        steps = torch.arange(lo, t + 1).expand(n, -1)
        pred = model(states[:, lo:t + 1].to(device), actions[:, lo:t + 1].to(device),
                     rtg[:, lo:t + 1].to(device), steps.to(device))[:, -1].float().cpu()
        if c.discrete:
            act = (torch.multinomial(pred.softmax(-1), 1, generator=gen).squeeze(1) if sample
                   else pred.argmax(-1))
        else:
            act = pred
        actions[:, t] = act
        for i, env in enumerate(envs):
            if done[i]:
                continue
            a = int(act[i]) if c.discrete else act[i].numpy()
            obs, reward, terminated, truncated, _ = env.step(a)
            returns[i] += reward
            done[i] = terminated or truncated
            if t + 1 < horizon:
                states[i, t + 1] = torch.as_tensor(obs, dtype=torch.float32)
                rtg[i, t + 1] = rtg[i, t] - float(reward)
        if done.all():
            break
    for env in envs:
        env.close()
    return returns


def evaluate_returns(model: DecisionTransformer, data: OfflineDataset, *,
                     targets: list[float] | None = None, episodes: int | None = None,
                     sample: bool | None = None, progress: bool = False) -> dict:
    """Achieved return per target (mean, std, each episode) over seeds 0..episodes-1, with the
    dataset's returns by behaviour policy and what made the numbers reproducible."""
    from tqdm.auto import tqdm

    c = model.config
    best = float(data.arrays["episode_returns"].max())
    targets = targets or c.targets() or [best]
    if not c.condition_on_return:
        targets = targets[:1]  # behaviour cloning ignores the target: one set of rollouts
    seeds = list(range(episodes or c.eval_episodes))
    sample = c.sample_actions if sample is None else sample
    rows = []
    for target in tqdm(targets, desc="rollouts", disable=not progress):
        r = rollout(model, data.meta["env_id"], target, seeds, sample=sample)
        rows.append({"target": target, "mean": float(r.mean()), "std": float(r.std()),
                     "returns": r.tolist()})
    return {"env_id": data.meta["env_id"], "versions": versions(),
            "dataset_sha256": data.meta["sha256"], "eval_seeds": seeds,
            "sample_actions": bool(sample and c.discrete),
            "conditioned": c.condition_on_return, "rollouts": rows,
            "dataset_returns": data.returns_by_policy(), "dataset_best_return": best}


class OfflineRLRun:
    """How a run directory of task `rl` is built, reloaded and evaluated (see tasks.run). Its
    data are transitions: no tokenizer."""

    model_class = DecisionTransformer
    sized_fields = ("state_dim", "act_dim", "discrete", "max_ep_len")  # filled from the data
    bounded_eval = False  # evaluate() scores whole splits

    def build(self, cfg, run_dir: Path, *, device, dist, fresh: bool):
        """The dataset, and a network sized to it with its state statistics."""
        data = load_dataset(cfg.data.source)
        cfg.model = dataclasses.replace(
            cfg.model, state_dim=data.state_dim, act_dim=data.act_dim, discrete=data.discrete,
            max_ep_len=int(data.meta["max_episode_steps"]))
        torch.manual_seed(cfg.train.seed)  # the model's initialization
        task = OfflineRL(DecisionTransformer(cfg.model), data,
                         val_fraction=cfg.data.val_fraction, device=device)
        task.model.set_state_stats(*task.state_stats())
        return task, None

    def load_tokenizer(self, run_dir: Path):
        return None

    def describe(self, task: OfflineRL) -> str:
        m = task.data.meta
        kind = "DT" if task.model.config.condition_on_return else "behaviour cloning"
        return (f"{kind} on {m['env_id']}: {task.data.n_episodes} episodes, "
                f"{m['transitions']:,} transitions (sha256 {m['sha256'][:12]})")

    def evaluate(self, model, tokenizer, cfg, *, batches: int | None = None) -> dict:
        """The held-out action loss, then rollouts at the config's target returns."""
        data = load_dataset(cfg.data.source)
        task = OfflineRL(model, data, val_fraction=cfg.data.val_fraction)
        return {**task.evaluate(model), **evaluate_returns(model, data, progress=True)}

    @staticmethod
    def format_metrics(m: dict) -> str:
        """Held-out loss; after `attnlab eval`, achieved return per target and the dataset's."""
        lines = [f"held-out action loss {m['val_loss']:.4f}"]
        if "rollouts" not in m:
            return (f"{lines[0]}; dataset returns: mean {m['dataset_return_mean']:.1f}, best "
                    f"{m['dataset_return_max']:.1f}\n{m['env_id']}, gymnasium {m['gymnasium']}, "
                    f"mujoco {m['mujoco']}, dataset seed {m['dataset_seed']}, sha256 "
                    f"{m['dataset_sha256']}")
        for row in m["rollouts"]:
            target = f"target {row['target']:.0f}" if m["conditioned"] else "no target (BC)"
            lines.append(f"{target}: return {row['mean']:.1f} +- {row['std']:.1f} over "
                         f"{len(row['returns'])} episodes (seeds {m['eval_seeds'][0]}.."
                         f"{m['eval_seeds'][-1]})")
        d = m["dataset_returns"]
        lines.append("dataset: " + ", ".join(f"{k} {v['mean']:.1f} ({v['episodes']} ep.)"
                                             for k, v in d.items()))
        v = m["versions"]
        lines.append(f"{m['env_id']}, gymnasium {v['gymnasium']}, mujoco {v['mujoco']}, "
                     f"dataset sha256 {m['dataset_sha256']}")
        return "\n".join(lines)
