"""In-context linear regression from scratch: a small GPT trained on prompts of (x, w.x) pairs
(`attnlab train icl-linear`) against least squares, 3-nearest-neighbours and averaging, at every
number k of in-context examples (Garg et al., 2022, Figure 2 at CPU scale).

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.icl_regression [--run runs/icl-linear-bench]
        [--prompts 2048] [--out docs/bench/icl_regression.json]

Trains the recipe into --run first when that directory does not exist (about 7 minutes on an
idle CPU thread). Evaluates on fresh test prompts (their own seed, not the validation prompts
that picked the best checkpoint). Error = squared error / d, so predicting 0 scores about 1.
Prints a markdown table; writes the JSON and a PNG beside it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from attnlab.data.functions import sample_linear_regression
from attnlab.tasks.config import load_run_config
from attnlab.tasks.regression_baselines import BASELINES, normalized_errors
from attnlab.tasks.run import load_run, train_run
from benchmarks.common import machine, save

TEST_SEED = 7_000_001
TABLE_K = (0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 39)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/icl-linear-bench"))
    parser.add_argument("--prompts", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=Path("docs/bench/icl_regression.json"))
    args = parser.parse_args()
    if not args.run.exists():
        train_run(load_run_config("icl-linear"), args.run, resume=False)
    model, _, cfg = load_run(args.run)
    c = cfg.model
    xs, ys = sample_linear_regression(args.prompts, c.n_points, c.n_dims,
                                      torch.Generator().manual_seed(TEST_SEED))
    with torch.no_grad():
        preds = torch.cat([model(xs[i:i + 256], ys[i:i + 256])
                           for i in range(0, args.prompts, 256)])
    errors = {"model": normalized_errors(preds, ys, c.n_dims).tolist()}
    errors.update({name: normalized_errors(f(xs, ys), ys, c.n_dims).tolist()
                   for name, f in BASELINES.items()})
    errors["zero"] = normalized_errors(torch.zeros_like(ys), ys, c.n_dims).tolist()
    rows = [json.loads(line) for line in (args.run / "metrics.jsonl").read_text().splitlines()]
    trained = max((r for r in rows if "elapsed_s" in r), key=lambda r: r["step"])
    seconds, last = 0.0, 0.0  # elapsed_s restarts at 0 in each resumed segment
    for r in (r for r in rows if "elapsed_s" in r):
        if r["elapsed_s"] < last:
            seconds += last
        last = r["elapsed_s"]
    trained["elapsed_s"] = seconds + last
    result = {"machine": machine(), "run": str(args.run), "config": cfg.to_dict(),
              "parameters": model.num_parameters(), "steps": trained["step"],
              "train_seconds": trained["elapsed_s"], "prompts": args.prompts,
              "test_seed": TEST_SEED, "k": list(range(c.n_points)), "errors": errors}
    save(result, args.out)
    names = list(errors)
    print(f"squared error / d at k in-context examples, d={c.n_dims}, {args.prompts} test "
          f"prompts; model: {model.num_parameters():,} parameters, {trained['step']} steps, "
          f"{trained['elapsed_s'] / 60:.1f} min\n")
    print("| k | " + " | ".join(names) + " |")
    print("|---:|" + "---:|" * len(names))
    for k in TABLE_K:
        if k < c.n_points:
            print(f"| {k} | " + " | ".join(f"{errors[n][k]:.3f}" for n in names) + " |")
    from attnlab.viz.plotting import figure
    from attnlab.viz.plotting import save as save_png

    fig, ax = figure(figsize=(6.5, 4))
    for name in names:
        style = {"model": "o-", "zero": ":"}.get(name, "-")
        ax.plot(result["k"], errors[name], style, ms=3, label=name.replace("_", " "))
    ax.axvline(c.n_dims, color="gray", lw=0.8, ls="--")
    ax.set(xlabel="k (in-context examples)", ylabel="squared error / d", ylim=(0, 1.6),
           title=f"in-context linear regression, d={c.n_dims} (dashed: k = d)")
    ax.grid(alpha=0.3)
    ax.legend()
    png = save_png(fig, args.out.with_suffix(".png"))
    print(f"\nwrote {args.out} and {png}")


if __name__ == "__main__":
    main()
