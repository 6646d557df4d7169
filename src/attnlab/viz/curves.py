"""Training curves from a run's metrics.jsonl: loss (train and validation), learning rate and
throughput, one PNG."""

from __future__ import annotations

import json
from pathlib import Path

from attnlab.errors import AttnlabError
from attnlab.viz.plotting import figure, save


def read_metrics(path: Path) -> list[dict]:
    """Rows of a metrics.jsonl, each a JSON object with a numeric `step`. A torn last line (a
    run killed mid-write) is ignored; anything else malformed is a damaged file."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise AttnlabError(f"{path} is not UTF-8 text; the file is damaged") from None
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                continue
            raise AttnlabError(f"{path}: line {number} is not JSON; the file is damaged") from None
        step = row.get("step") if isinstance(row, dict) else None
        if isinstance(step, bool) or not isinstance(step, (int, float)):
            raise AttnlabError(f"{path}: line {number} has no numeric step; the file is damaged")
        rows.append(row)
    return rows


def plot_training(metrics_path: Path, out: Path, *, title: str = "") -> Path:
    """Draw loss (train, validation), learning rate and tokens/s against the step, and the
    validation accuracy of a classifier beside its chance and majority-class baselines."""
    rows = read_metrics(metrics_path)
    if not rows:
        raise AttnlabError(f"{metrics_path} holds no metrics yet; nothing to plot")
    train = [r for r in rows if "loss" in r]
    if any("lr" not in r for r in train):
        raise AttnlabError(f"{metrics_path}: a training row has no lr; the file is damaged")
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
