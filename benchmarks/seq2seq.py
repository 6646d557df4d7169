"""Summarization and translation: train the seq2seq recipes, decode the test subset with beam
search, and compare with the trivial baselines on the same pairs.

Each recipe (translate-en-es, summarize-debian, summarize-debian-gpt) is trained with
`attnlab train RECIPE` in a child process under its own time budget (the recipe's
`train.max_minutes`, or --minutes), then evaluated with `attnlab eval RUN_DIR --json`: beam 4,
GNMT length penalty 0.6, on the first 200 pairs of the seeded test split. The baselines are
copying the source (translation) and the description's lead sentence (summarization).

    .venv/bin/python -m benchmarks.seq2seq [--recipes a,b,c] [--minutes 10] [--steps N]
        [--parallel] [--out docs/bench/seq2seq.json] [--runs runs/seq2seq]

`--parallel` trains the recipes at the same time (one process each), for a machine whose cores
are shared anyway. Prints a markdown table; saves JSON and a bar chart.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import machine, save

RECIPES = ("translate-en-es", "summarize-debian", "summarize-debian-gpt")
METRICS = ("bleu", "chrf", "rouge1", "rouge2", "rougeL")


def start(recipe: str, run_dir: Path, minutes: float | None, steps: int | None,
          threads: int | None = None):
    if run_dir.exists():
        shutil.rmtree(run_dir)
    cmd = [sys.executable, "-m", "attnlab", "train", recipe, "--out", str(run_dir),
           "--no-progress"]
    if minutes is not None:
        cmd += ["--max-minutes", str(minutes)]
    if steps is not None:
        cmd += ["--max-steps", str(steps)]
    env = dict(os.environ)
    if threads is not None:  # children sharing the cores: more threads than cores only spin
        env["OMP_NUM_THREADS"] = str(threads)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)


def finish(recipe: str, child, run_dir: Path) -> dict:
    output = child.stdout.read()
    if child.wait() != 0:
        raise SystemExit(f"{recipe} failed:\n{output}")
    start_eval = time.perf_counter()
    metrics = json.loads(subprocess.run(
        [sys.executable, "-m", "attnlab", "eval", str(run_dir), "--json"],
        check=True, capture_output=True, text=True).stdout)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    config = json.loads((run_dir / "config.json").read_text())
    metrics.update({
        "task": config["task"], "data": config["data"]["source"],
        "steps": max(r["step"] for r in rows), "max_steps": config["train"]["max_steps"],
        "train_s": max(r.get("elapsed_s", 0.0) for r in rows),
        "eval_s": time.perf_counter() - start_eval,
        "parameters": _parameters(run_dir),
    })
    return metrics


def _parameters(run_dir: Path) -> int:
    from safetensors.torch import load_file

    weights = load_file(str(run_dir / "best" / "model.safetensors"))
    # tied matrices are stored once
    return sum(t.numel() for t in weights.values())


def table(results: dict) -> str:
    lines = ["| recipe | model | steps (time) | val loss | metric | model | baseline |",
             "|---|---|---|---|---|---|---|"]
    for recipe, r in results.items():
        base = next(k.split("_", 1)[0] for k in r if k.endswith(("_bleu", "_rouge1")))
        first = True
        for m in METRICS:
            if m not in r:
                continue
            head = (f"| {recipe} | {r['task']}, {r['parameters'] / 1e6:.1f}M | {r['steps']} "
                    f"({r['train_s'] / 60:.1f} min) | {r['val_loss']:.3f} " if first
                    else "| | | | ")
            lines.append(f"{head}| {m} | {r[m]:.2f} | {r[f'{base}_{m}']:.2f} ({base}) |")
            first = False
    return "\n".join(lines)


def plot(results: dict, out: Path) -> None:
    from attnlab.viz.plotting import figure
    from attnlab.viz.plotting import save as save_png

    fig, axes = figure(1, len(results), figsize=(4.5 * len(results), 3.6), squeeze=False)
    for ax, (recipe, r) in zip(axes[0], results.items(), strict=True):
        base = next(k.split("_", 1)[0] for k in r if k.endswith(("_bleu", "_rouge1")))
        names = [m for m in METRICS if m in r]
        xs = range(len(names))
        ax.bar([x - 0.2 for x in xs], [r[m] for m in names], 0.4, label=r["task"])
        ax.bar([x + 0.2 for x in xs], [r[f"{base}_{m}"] for m in names], 0.4,
               label=f"{base} baseline", color="gray")
        ax.set_xticks(list(xs), names)
        ax.set(title=f"{recipe} ({r['steps']} steps)", ylabel="score (0-100)")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    save_png(fig, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--minutes", type=float, help="time budget per recipe (default: its own)")
    parser.add_argument("--steps", type=int, help="steps per recipe (default: its own)")
    parser.add_argument("--parallel", action="store_true", help="train the recipes at once")
    parser.add_argument("--out", type=Path, default=Path("docs/bench/seq2seq.json"))
    parser.add_argument("--runs", type=Path, default=Path("runs/seq2seq"))
    args = parser.parse_args()
    recipes = args.recipes.split(",")
    results: dict = {"machine": machine(), "parallel": args.parallel, "recipes": {}}
    if args.parallel:
        threads = max(1, (os.cpu_count() or 1) // len(recipes))
        children = {r: start(r, args.runs / r, args.minutes, args.steps, threads)
                    for r in recipes}
        for r, child in children.items():
            results["recipes"][r] = finish(r, child, args.runs / r)
            save(results, args.out)
    else:
        for r in recipes:
            child = start(r, args.runs / r, args.minutes, args.steps)
            results["recipes"][r] = finish(r, child, args.runs / r)
            save(results, args.out)  # partial results survive an interrupted sweep
    print(table(results["recipes"]))
    plot(results["recipes"], args.out.with_suffix(".png"))
    print(f"\nresults: {args.out}, plot: {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
