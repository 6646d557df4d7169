"""Long-range tasks, every mechanism, one budget: test accuracy, training time, peak memory.

Each (task, mechanism) pair is trained with `attnlab train lra-TASK --set model.attention=NAME`
for the same number of steps (the recipe's model, data and schedule; the mechanism's default
options), in a fresh process whose peak resident memory is read from the kernel when it exits
(`os.wait4`), then evaluated on the test split with `attnlab eval --json`.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.lra [--tasks listops,retrieval]
        [--mechanisms full,local,...] [--steps 400] [--out docs/bench/lra.json]
        [--runs runs/lra] [--keep]

(One thread: the times in docs/benchmarks.md are per thread, and two sweeps can then share
the machine's two cores.)

`--keep` reuses the pairs already in --out (trained with the same --steps) and trains only the
missing ones, so a long sweep can be run in parts.

Prints a markdown table per task and saves the results as JSON and a plot (accuracy against
training time, marker size = peak memory).
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

from tqdm import tqdm

from benchmarks.common import machine, save

MECHANISMS = ("full", "local", "longformer", "bigbird", "linformer", "performer", "lsh")
# options a mechanism cannot default: Linformer's projections are sized for one length
OPTIONS = {"linformer": ["model.attention_options.seq_len=1024"]}


def train_one(task: str, mechanism: str, steps: int, run_dir: Path) -> dict:
    """Train in a child process; its wall time and peak RSS, then its test metrics."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    cmd = [sys.executable, "-m", "attnlab", "train", f"lra-{task}", "--out", str(run_dir),
           "--no-progress", "--max-steps", str(steps), "--set", f"model.attention={mechanism}",
           "--set", f"train.eval_interval={steps}", "--set", f"train.checkpoint_interval={steps}"]
    for option in OPTIONS.get(mechanism, []):
        cmd += ["--set", option]
    start = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"lra-{task} with {mechanism} failed:\n{output}")
    metrics = json.loads(subprocess.run(
        [sys.executable, "-m", "attnlab", "eval", str(run_dir), "--json"],
        check=True, capture_output=True, text=True).stdout)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_s = max(r.get("elapsed_s", 0.0) for r in rows)
    return {"test_accuracy": metrics["test_accuracy"], "val_accuracy": metrics["val_accuracy"],
            "chance_accuracy": metrics["chance_accuracy"],
            "majority_accuracy": metrics["majority_accuracy"],
            "first_token_accuracy": metrics["first_token_accuracy"], "steps": steps,
            "train_s": train_s, "ms_per_step": 1e3 * train_s / steps, "wall_s": seconds,
            "peak_rss_mb": usage.ru_maxrss / 1024}


def _newest(runs: dict) -> dict:
    """A row with every baseline (rows from before the first-token baseline lack it)."""
    return next((r for r in runs.values() if "first_token_accuracy" in r),
                next(iter(runs.values())))


def table(task: str, results: dict) -> str:
    first = _newest(results)
    reading = (f", first token alone {first['first_token_accuracy']:.3f}"
               if "first_token_accuracy" in first else "")
    lines = [f"lra-{task} (validation): chance {first['chance_accuracy']:.3f}, majority class "
             f"{first['majority_accuracy']:.3f}{reading}", "",
             "| mechanism | test accuracy | train time (s) | ms / step | peak memory (MB) |",
             "|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['test_accuracy']:.3f} | {r['train_s']:.0f} | "
                     f"{r['ms_per_step']:.0f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def plot(results: dict, out: Path) -> None:
    from attnlab.viz.plotting import figure
    from attnlab.viz.plotting import save as save_png

    fig, axes = figure(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, (task, runs) in zip(axes[0], results.items(), strict=True):
        for name, r in runs.items():
            ax.scatter(r["train_s"], r["test_accuracy"], s=r["peak_rss_mb"] / 4, alpha=0.6)
            ax.annotate(name, (r["train_s"], r["test_accuracy"]), fontsize=9)
        first = _newest(runs)
        ax.axhline(first["chance_accuracy"], color="gray", ls=":", lw=1, label="chance")
        ax.axhline(first["majority_accuracy"], color="gray", ls="--", lw=1, label="majority")
        if "first_token_accuracy" in first:
            ax.axhline(first["first_token_accuracy"], color="gray", ls="-.", lw=1,
                       label="first token alone")
        ax.set(xlabel="training time (s)", ylabel="test accuracy", title=f"lra-{task}")
        ax.legend(loc="lower right")
        ax.grid(alpha=0.3)
    save_png(fig, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="listops,retrieval")
    parser.add_argument("--mechanisms", default=",".join(MECHANISMS))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--out", type=Path, default=Path("docs/bench/lra.json"))
    parser.add_argument("--runs", type=Path, default=Path("runs/lra"))
    parser.add_argument("--keep", action="store_true", help="reuse finished pairs in --out")
    args = parser.parse_args()
    tasks, mechanisms = args.tasks.split(","), args.mechanisms.split(",")
    results: dict = {"machine": machine(), "steps": args.steps, "tasks": {}}
    if args.keep and args.out.is_file():
        kept = json.loads(args.out.read_text())
        if kept.get("steps") != args.steps:
            raise SystemExit(f"{args.out} was trained with {kept.get('steps')} steps, not "
                             f"{args.steps}; use the same --steps or another --out")
        results["tasks"] = kept["tasks"]
    bar = tqdm(total=len(tasks) * len(mechanisms), desc="lra", unit="run")
    for task in tasks:
        kept = results["tasks"].get(task, {})
        # the table in registry order, however the pairs were split across sweeps
        runs = results["tasks"][task] = {n: kept[n] for n in MECHANISMS if n in kept}
        for name in mechanisms:
            if name in runs:
                bar.update(1)
                continue
            bar.set_postfix_str(f"{task} {name}")
            runs[name] = train_one(task, name, args.steps, args.runs / f"{task}-{name}")
            bar.update(1)
            save(results, args.out)  # partial results survive an interrupted sweep
    bar.close()
    for task, runs in results["tasks"].items():
        print(table(task, runs), end="\n\n")
    plot(results["tasks"], args.out.with_suffix(".png"))
    print(f"results: {args.out}, plot: {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
