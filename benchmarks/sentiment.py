"""Sentiment with one added layer: frozen MiniLM, fine-tuned MiniLM, a small encoder from
scratch, and TF-IDF + logistic regression, on the same fixed split of the VADER movie-review
sentences (`attnlab data prepare vader-movies`: 8,033 train / 1,004 val / 1,004 test).

Each attnlab variant is trained with its recipe (`attnlab train sentiment-frozen`,
`sentiment-finetune`, `sentiment-scratch`; the recipe's budget, unchanged) in a fresh process
and scored with `attnlab eval --json`. The baseline is measured in this process: word 1-2 gram
TF-IDF (sublinear tf) and L2 logistic regression from scikit-learn, its C chosen on the
validation split, scored once on the test split.

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python -m benchmarks.sentiment
        [--variants frozen,finetune,scratch] [--out docs/bench/sentiment.json]
        [--runs runs/sentiment] [--keep]

`--keep` reuses the variants already in --out and trains only the missing ones.
Prints a markdown table and saves the results as JSON and a bar plot (PNG beside the JSON).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import machine, save

VARIANTS = {
    "frozen": ("sentiment-frozen", "frozen all-MiniLM-L6-v2 + linear head"),
    "finetune": ("sentiment-finetune", "all-MiniLM-L6-v2 fine-tuned + linear head"),
    "scratch": ("sentiment-scratch", "2-layer encoder from scratch (BPE) + linear head"),
}


def train_one(recipe: str, run_dir: Path) -> dict:
    """Train a recipe in a child process; then its validation and test metrics."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "attnlab", "train", recipe, "--out",
                           str(run_dir), "--no-progress"], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{recipe} failed:\n{proc.stdout}\n{proc.stderr}")
    metrics = json.loads(subprocess.run(
        [sys.executable, "-m", "attnlab", "eval", str(run_dir), "--json"],
        check=True, capture_output=True, text=True).stdout)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    config = json.loads((run_dir / "config.json").read_text())
    return {"test_accuracy": metrics["test_accuracy"], "val_accuracy": metrics["val_accuracy"],
            "majority_accuracy": metrics["majority_accuracy"],
            "steps": config["train"]["max_steps"], "batch_size": config["train"]["batch_size"],
            "train_s": max(r.get("elapsed_s", 0.0) for r in rows), "wall_s": wall,
            "recipe": recipe}


def tfidf_baseline(data) -> dict:
    """Word 1-2 gram TF-IDF + logistic regression; C picked on val, scored on test."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    start = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    x_train = vectorizer.fit_transform(data.texts["train"])
    x_val, x_test = (vectorizer.transform(data.texts[s]) for s in ("val", "test"))
    best = None
    for c in (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0):
        clf = LogisticRegression(C=c, max_iter=2000).fit(x_train, data.labels["train"])
        val = float((clf.predict(x_val) == data.labels["val"]).mean())
        if best is None or val > best[0]:
            best = (val, c, clf)
    val, c, clf = best
    test = float((clf.predict(x_test) == data.labels["test"]).mean())
    return {"test_accuracy": test, "val_accuracy": val, "C": c,
            "train_s": time.perf_counter() - start}


def table(results: dict) -> str:
    lines = ["| model | trained | test accuracy | val accuracy | train time (s) |",
             "|---|---|---|---|---|"]
    for name, r in results["variants"].items():
        what = VARIANTS[name][1]
        lines.append(f"| {what} | {r['steps']} steps x {r['batch_size']} | "
                     f"{r['test_accuracy']:.3f} | {r['val_accuracy']:.3f} | {r['train_s']:.0f} |")
    b = results["tfidf"]
    lines.append(f"| TF-IDF (1-2 grams) + logistic regression, C={b['C']:g} | closed form | "
                 f"{b['test_accuracy']:.3f} | {b['val_accuracy']:.3f} | {b['train_s']:.0f} |")
    lines.append(f"| majority class | - | {results['majority_test']:.3f} | - | - |")
    return "\n".join(lines)


def plot(results: dict, out: Path) -> Path:
    from attnlab.viz.plotting import figure
    from attnlab.viz.plotting import save as save_png

    names = [*results["variants"], "tfidf"]
    accs = [results["variants"][n]["test_accuracy"] for n in results["variants"]]
    accs.append(results["tfidf"]["test_accuracy"])
    labels = {"frozen": "MiniLM frozen\n+ linear", "finetune": "MiniLM\nfine-tuned",
              "scratch": "encoder from\nscratch", "tfidf": "TF-IDF +\nlogistic reg."}
    fig, ax = figure(figsize=(6.5, 3.8))
    colors = ["tab:blue" if n != "tfidf" else "tab:gray" for n in names]
    bars = ax.bar([labels[n] for n in names], accs, color=colors)
    for bar, acc in zip(bars, accs, strict=True):
        ax.annotate(f"{acc:.3f}", (bar.get_x() + bar.get_width() / 2, acc), ha="center",
                    va="bottom", fontsize=9)
    ax.axhline(results["majority_test"], color="gray", ls="--", lw=1, label="majority class")
    ax.set(ylabel="test accuracy", ylim=(0.4, 1.0),
           title="VADER movie-review sentences, binary (1,004 test sentences)")
    ax.legend(loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    return save_png(fig, out)


def main() -> None:
    from attnlab.data.sentiment import load_sentiment

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", type=Path, default=Path("docs/bench/sentiment.json"))
    parser.add_argument("--runs", type=Path, default=Path("runs/sentiment"))
    parser.add_argument("--keep", action="store_true", help="reuse finished variants in --out")
    args = parser.parse_args()
    data = load_sentiment("vader-movies")
    results: dict = {"machine": machine(), "data": data.meta["sizes"], "variants": {},
                     "majority_test": data.majority_accuracy("test")}
    if args.keep and args.out.is_file():
        results["variants"] = json.loads(args.out.read_text())["variants"]
    results["tfidf"] = tfidf_baseline(data)
    for name in args.variants.split(","):
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name}; choose from {', '.join(VARIANTS)}")
        if name in results["variants"]:
            continue
        print(f"training {name} ({VARIANTS[name][0]}) ...", file=sys.stderr, flush=True)
        results["variants"][name] = train_one(VARIANTS[name][0], args.runs / name)
        save(results, args.out)  # partial results survive an interrupted run
    results["variants"] = {n: results["variants"][n] for n in VARIANTS
                           if n in results["variants"]}
    save(results, args.out)
    print(table(results))
    print(f"results: {args.out}, plot: {plot(results, args.out.with_suffix('.png'))}")


if __name__ == "__main__":
    main()
