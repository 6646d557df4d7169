"""Decision Transformer vs behaviour cloning on attnlab's offline RL datasets: achieved return
against the target return, beside the dataset's own returns.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.decision [--envs cartpole,hopper]
        [--runs runs/decision-bench] [--out docs/bench/decision.json] [--episodes 10]
        [--set train.max_steps=4000 ...]

For each environment: generates (or reuses, from the cache) the named mixed dataset, trains the
DT recipe and the same recipe with `model.condition_on_return=false` (behaviour cloning: the
same network without return tokens, the same steps, batch and seed) into --runs unless their
directories exist, then rolls out the final weights for `--episodes` episodes (environment
seeds 0..N-1) at each target return. Discrete actions are reported both sampled from the
predicted distribution (the recipes' default, as the DT paper does for Atari) and greedy.
Writes the JSON (with seeds, gymnasium / mujoco versions and the dataset's sha256), a PNG
beside it, and prints a markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from attnlab.data.offline_rl import load_dataset, versions
from attnlab.tasks.config import load_run_config
from attnlab.tasks.rl import rollout
from attnlab.tasks.run import load_run, read_run_config, run_config_difference, train_run
from attnlab.viz.curves import read_metrics
from attnlab.viz.plotting import figure
from attnlab.viz.plotting import save as save_png
from benchmarks.common import machine, save

#: env key -> (DT recipe, target returns rolled out)
SETUPS = {"cartpole": ("dt-cartpole", [500, 400, 300, 200, 100, 50]),
          "hopper": ("dt-hopper", None)}  # hopper: fractions of the dataset's best return
HOPPER_FRACTIONS = [1.2, 1.0, 0.75, 0.5, 0.25]


def train_if_missing(recipe: str, overrides: list[str], run: Path) -> Path:
    cfg = load_run_config(recipe, overrides)
    if not (run / "config.json").exists():
        train_run(cfg, run, resume=False)
        return run
    # a run left by an earlier recipe or other --set values must not pass for this one
    diff = run_config_difference(read_run_config(run), cfg, ("model", "data", "train"))
    if diff:
        raise SystemExit(f"{run} was trained with another config than {recipe} {overrides}: "
                         f"{diff}; give another --runs folder")
    return run


def evaluate(run: Path, targets: list[float], episodes: int) -> dict:
    """Achieved returns at each target (one set for BC), sampled and greedy where discrete."""
    model, _, cfg = load_run(run, checkpoint="last")
    env_id = load_dataset(cfg.data.source).meta["env_id"]
    modes = ("sampled", "greedy") if cfg.model.discrete else ("deterministic",)
    seeds = list(range(episodes))
    out = {}
    for mode in modes:
        rows = []
        for target in tqdm(targets if cfg.model.condition_on_return else targets[:1],
                           desc=f"{run.name} {mode}"):
            r = rollout(model, env_id, float(target), seeds, sample=mode == "sampled")
            rows.append({"target": float(target), "mean": float(r.mean()),
                         "std": float(r.std()), "returns": r.tolist()})
        out[mode] = rows
    metrics = read_metrics(run / "metrics.jsonl")
    trained = max((r for r in metrics if "elapsed_s" in r), key=lambda r: r["step"])
    return {"run": str(run), "config": cfg.to_dict(), "parameters": model.num_parameters(),
            "steps": trained["step"], "train_seconds": trained["elapsed_s"], "seeds": seeds,
            "rollouts": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default="cartpole,hopper")
    parser.add_argument("--runs", type=Path, default=Path("runs/decision-bench"))
    parser.add_argument("--out", type=Path, default=Path("docs/bench/decision.json"))
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for both runs, e.g. train.max_steps=4000")
    args = parser.parse_args()
    envs = [e.strip() for e in args.envs.split(",")]
    results = {"machine": machine(), "versions": versions(), "episodes": args.episodes,
               "envs": {}}
    fig, axes = figure(1, len(envs), figsize=(6.5 * len(envs), 4.4))
    axes = np.atleast_1d(axes)
    lines = []
    for ax, env in zip(axes, envs, strict=True):
        recipe, targets = SETUPS[env]
        cfg = load_run_config(recipe, args.set)
        data = load_dataset(cfg.data.source)
        best = float(data.arrays["episode_returns"].max())
        if targets is None:
            targets = [round(f * best) for f in HOPPER_FRACTIONS]
        dt = train_if_missing(recipe, args.set, args.runs / f"{env}-dt")
        bc = train_if_missing(recipe, [*args.set, "model.condition_on_return=false"],
                              args.runs / f"{env}-bc")
        res = {"dataset": {k: data.meta[k] for k in ("env_id", "gymnasium", "mujoco", "seed",
                                                      "episodes", "mix", "epsilon", "sha256",
                                                      "transitions")},
               "dataset_returns": data.returns_by_policy(), "targets": targets,
               "dt": evaluate(dt, targets, args.episodes),
               "bc": evaluate(bc, targets, args.episodes)}
        results["envs"][env] = res
        # plot: achieved vs target, BC and dataset levels as horizontal lines
        ax.plot(targets, targets, color="gray", lw=0.8, ls=":", label="achieved = target")
        for i, (mode, rows) in enumerate(res["dt"]["rollouts"].items()):
            ax.errorbar([r["target"] for r in rows], [r["mean"] for r in rows],
                        yerr=[r["std"] for r in rows], fmt="o-", capsize=3, color=f"C{i}",
                        label=f"DT ({mode})")
        for i, (mode, rows) in enumerate(res["bc"]["rollouts"].items()):
            ax.axhline(rows[0]["mean"], color=f"C{i}", ls="--", lw=1.2,
                       label=f"BC ({mode}) {rows[0]['mean']:.0f}")
        for name, style in (("expert", (0, (4, 1, 1, 1, 1, 1))), ("noisy", "-."), ("random", ":")):
            if name in res["dataset_returns"]:
                ax.axhline(res["dataset_returns"][name]["mean"], color="black", ls=style,
                           lw=0.8, label=f"dataset {name} mean")
        ax.set(xlabel="target return", ylabel=f"achieved return ({args.episodes} seeds)",
               title=f"{data.meta['env_id']} ({data.n_episodes} episodes, mixed)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        lines.append(table(env, res))
    png = save_png(fig, args.out.with_suffix(".png"), title="Decision Transformer vs BC")
    results["png"] = str(png)
    save(results, args.out)
    print("\n\n".join(lines))
    print(f"\nwrote {args.out} and {png}")


def table(env: str, res: dict) -> str:
    d = res["dataset"]
    head = (f"**{d['env_id']}** (gymnasium {d['gymnasium']}, mujoco {d['mujoco']}), dataset "
            f"seed {d['seed']}, {d['episodes']} episodes, mix {d['mix']}, sha256 "
            f"`{d['sha256']}`; rollouts on environment seeds {res['dt']['seeds'][0]}.."
            f"{res['dt']['seeds'][-1]}; DT {res['dt']['train_seconds']:.0f} s and BC "
            f"{res['bc']['train_seconds']:.0f} s of training ({res['dt']['steps']} steps each)")
    rows = ["| method | actions | target | achieved (mean +- std) | achieved / target |",
            "|---|---|---|---|---|"]
    for mode, dt_rows in res["dt"]["rollouts"].items():
        for r in dt_rows:
            rows.append(f"| DT | {mode} | {r['target']:.0f} | {r['mean']:.1f} +- {r['std']:.1f}"
                        f" | {r['mean'] / r['target']:.2f} |")
    for mode, bc_rows in res["bc"]["rollouts"].items():
        r = bc_rows[0]
        rows.append(f"| BC | {mode} | - | {r['mean']:.1f} +- {r['std']:.1f} | - |")
    for name, r in res["dataset_returns"].items():
        rows.append(f"| dataset: {name} ({r['episodes']} ep.) | - | - | {r['mean']:.1f} "
                    f"(min {r['min']:.0f}, max {r['max']:.0f}) | - |")
    return head + "\n\n" + "\n".join(rows)


if __name__ == "__main__":
    main()
