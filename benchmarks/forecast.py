"""Time-series forecasting: `attnlab train forecast-co2` (a Transformer encoder over the past
36 months of Mauna Loa CO2, forecasting the next 12) beside seasonal-naive and least-squares
linear autoregression on the same test windows.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.forecast [--run runs/forecast-co2-bench]
        [--out docs/bench/forecast_co2.json]

Trains the recipe into --run first when that directory does not exist, then evaluates the best
checkpoint (lowest validation loss) on the test windows (targets in the last 20% of the months,
which neither training nor checkpoint selection saw). Writes the JSON, a PNG beside it (the
test period with non-overlapping 12-month forecasts of each method, and MAE by step ahead) and
prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from attnlab.tasks.config import load_run_config
from attnlab.tasks.forecast import ForecastRun, errors
from attnlab.tasks.run import load_run, train_run
from attnlab.viz.plotting import figure
from attnlab.viz.plotting import save as save_png
from benchmarks.common import machine, save

LABELS = {"model": "Transformer", "seasonal_naive": "seasonal naive",
          "linear_ar": "linear AR (least squares)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="forecast-co2")
    parser.add_argument("--run", type=Path, default=Path("runs/forecast-co2-bench"))
    parser.add_argument("--out", type=Path, default=Path("docs/bench/forecast_co2.json"))
    args = parser.parse_args()
    if not args.run.exists():
        train_run(load_run_config(args.recipe), args.run, resume=False)
    model, _, cfg = load_run(args.run)
    task = ForecastRun._task(model, cfg)
    past, truth = task.windows["test"]
    preds = {"model": task.predict(model, "test"), **task.baseline_forecasts("test")}
    table = {name: errors(p, truth) for name, p in preds.items()}
    by_step = {name: np.abs(p - truth).mean(0).tolist() for name, p in preds.items()}
    rows = [json.loads(line) for line in (args.run / "metrics.jsonl").read_text().splitlines()]
    trained = max((r for r in rows if "elapsed_s" in r), key=lambda r: r["step"])

    s = task.series
    test_start = task.bounds["test"][0]
    first = max(test_start, task.context)
    fig, axes = figure(1, 2, figsize=(13, 3.8))
    ax = axes[0]
    t = np.arange(len(s.values))
    shown = t >= test_start - 2 * task.context
    ax.plot(t[shown], s.values[shown], color="black", lw=1.2, label="observed")
    for name, style in (("model", "-"), ("seasonal_naive", ":"), ("linear_ar", "--")):
        for j, w in enumerate(range(0, len(past), task.horizon)):  # non-overlapping windows
            steps = first + w + np.arange(task.horizon)
            ax.plot(steps, preds[name][w], style, lw=1.2, color=f"C{list(LABELS).index(name)}",
                    label=LABELS[name] if j == 0 else None)
    ax.axvline(test_start, color="gray", lw=0.8)
    ax.set(xlabel=f"months since {s.start}", ylabel=f"{s.name} ({s.unit})",
           title="test period: 12-month forecasts from each window start")
    ax.legend(fontsize=8)
    ax = axes[1]
    for name, values in by_step.items():
        ax.plot(range(1, task.horizon + 1), values, "o-", label=LABELS[name])
    ax.set(xlabel="months ahead", ylabel=f"MAE ({s.unit})", title="test MAE by step ahead")
    ax.legend(fontsize=8)
    for a in axes:
        a.grid(alpha=0.3)
    png = save_png(fig, args.out.with_suffix(".png"),
                   title=f"{args.recipe}: {len(past)} test windows")
    result = {"machine": machine(), "recipe": args.recipe, "run": str(args.run),
              "config": cfg.to_dict(), "parameters": model.num_parameters(),
              "steps": trained["step"], "train_seconds": trained["elapsed_s"],
              "series": s.name, "steps_in_series": len(s.values), "test_windows": len(past),
              "test": table, "mae_by_step": by_step, "png": str(png)}
    save(result, args.out)
    print(f"{s.name}: {len(past)} test windows, {task.context} months in, {task.horizon} out "
          f"({s.unit})\n")
    print("| method | test MAE | test RMSE |")
    print("|---|---|---|")
    for name, e in table.items():
        print(f"| {LABELS[name]} | {e['mae']:.3f} | {e['rmse']:.3f} |")
    print(f"\nwrote {args.out} and {png}")


if __name__ == "__main__":
    main()
