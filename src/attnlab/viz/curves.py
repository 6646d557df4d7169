"""Training curves from a run's metrics.jsonl: loss (train and validation), learning rate and
throughput, one PNG."""

from __future__ import annotations

import json
from pathlib import Path

from attnlab.viz.plotting import figure, save


def read_metrics(path: Path) -> list[dict]:
    """Rows of a metrics.jsonl; a torn last line (a killed run) is ignored."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def plot_training(metrics_path: Path, out: Path, *, title: str = "") -> Path:
    """Draw loss (train, validation), learning rate and tokens/s against the step, and the
    validation accuracy of a classifier beside its chance and majority-class baselines."""
    rows = read_metrics(metrics_path)
    train = [r for r in rows if "loss" in r]
    val = [r for r in rows if "val_loss" in r]
    accuracy = [r for r in val if "val_accuracy" in r]
    fig, axes = figure(1, 4 if accuracy else 3, figsize=(17 if accuracy else 13, 3.6))
    ax = axes[0]
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1, label="train")
    if val:
        ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="validation")
    baseline = next((r["unigram_loss"] for r in rows if "unigram_loss" in r), None)
    if baseline is not None:
        ax.axhline(baseline, color="gray", ls="--", lw=1, label="unigram baseline")
    ax.set(xlabel="step", ylabel="loss (nats/token)", title="loss")
    ax.legend()
    axes[1].plot([r["step"] for r in train], [r["lr"] for r in train])
    axes[1].set(xlabel="step", title="learning rate")
    axes[2].plot([r["step"] for r in train], [r.get("tokens_per_s", 0) for r in train])
    axes[2].set(xlabel="step", title="tokens / s")
    if accuracy:
        ax = axes[3]
        ax.plot([r["step"] for r in accuracy], [r["val_accuracy"] for r in accuracy], "o-",
                label="validation")
        for key, style, label in (("chance_accuracy", ":", "chance"),
                                  ("majority_accuracy", "--", "majority"),
                                  ("first_token_accuracy", "-.", "first token alone")):
            level = next((r[key] for r in rows if key in r), None)
            if level is not None:
                ax.axhline(level, color="gray", ls=style, lw=1, label=label)
        ax.set(xlabel="step", ylabel="accuracy", title="accuracy")
        ax.legend()
    for a in axes:
        a.grid(alpha=0.3)
    return save(fig, out, title=title)
