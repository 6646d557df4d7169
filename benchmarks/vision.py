"""Vision Transformer: `attnlab train vit-digits` / `vit-fashion`, test accuracy beside the
majority class, and an attention-rollout map of a few test images.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.vision --recipe vit-digits \
        [--run runs/vit-digits-bench] [--out docs/bench/vit_digits.json]

Trains the recipe into --run first when that directory does not exist (the recipe's own CPU
budget: `train.max_minutes`), then evaluates the best checkpoint (lowest validation loss) on
the test split, which training never saw. Writes the JSON, the rollout PNG beside it
(`*_rollout.png`) and prints a markdown row.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from attnlab.data.images import load_images
from attnlab.tasks.config import load_run_config
from attnlab.tasks.run import TASKS, load_run, train_run
from attnlab.tasks.vision import ImageClassification
from attnlab.viz.image_rollout import plot_rollout, vit_rollout
from benchmarks.common import machine, save


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="vit-digits")
    parser.add_argument("--run", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--images", type=int, default=4, help="test images in the rollout PNG")
    args = parser.parse_args()
    run = args.run or Path(f"runs/{args.recipe}-bench")
    out = args.out or Path(f"docs/bench/{args.recipe.replace('-', '_')}.json")
    if not run.exists():
        train_run(load_run_config(args.recipe), run, resume=False)
    model, _, cfg = load_run(run)
    metrics = TASKS[cfg.task].evaluate(model, None, cfg)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    trained = max((r for r in rows if "elapsed_s" in r), key=lambda r: r["step"])
    task = ImageClassification(model, load_images(cfg.data.source))
    images = task.images["test"][:args.images]
    labels = task.labels["test"][:args.images].tolist()
    maps, logits = vit_rollout(model, images)
    names = task.data.classes
    titles = [f"true {names[y]} / predicted {names[p]}"
              for y, p in zip(labels, logits.argmax(-1).tolist(), strict=True)]
    png = plot_rollout(images, maps, out.with_name(out.stem + "_rollout.png"), titles=titles,
                       title=f"{args.recipe}: attention rollout of the "
                       f"{'class token' if cfg.model.pooling == 'cls' else 'mean-pooled output'}")
    result = {"machine": machine(), "recipe": args.recipe, "run": str(run),
              "config": cfg.to_dict(), "parameters": model.num_parameters(),
              "steps": trained["step"], "train_minutes": trained["elapsed_s"] / 60,
              "max_minutes": cfg.train.max_minutes, **metrics, "rollout_png": str(png)}
    save(result, out)
    print("| recipe | parameters | steps | train minutes | val accuracy | test accuracy | "
          "majority class (test) |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.recipe} | {model.num_parameters():,} | {trained['step']} | "
          f"{trained['elapsed_s'] / 60:.1f} | {metrics['val_accuracy']:.4f} | "
          f"{metrics['test_accuracy']:.4f} | {metrics['test_majority_accuracy']:.4f} |")
    print(f"wrote {out} and {png}")


if __name__ == "__main__":
    main()
