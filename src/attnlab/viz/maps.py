"""Attention maps as PNG: a (layers x heads) grid of heatmaps with the mechanism's sparsity
pattern beside each layer, and one head enlarged with its token labels."""

from __future__ import annotations

from pathlib import Path

import torch

from attnlab.viz.capture import AttentionRecord
from attnlab.viz.plotting import figure, save

LABEL_LIMIT = 48  # token labels on the axes up to this many tokens; beyond, positions only


def record_labels(rec: AttentionRecord, tokens: list[str],
                  target: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(query labels, key labels) of a record: `tokens` for a single sequence; in an
    encoder-decoder, `tokens` is the source and `target` the decoder's input."""
    if target is None or rec.name.startswith("encoder"):
        return tokens, tokens
    return (target, tokens) if rec.kind == "cross" else (target, target)


def _show(ax, matrix, *, signed: bool):
    matrix = matrix.float().numpy()
    if signed:  # linformer's W F: diverging colours centred on 0
        lim = float(abs(matrix).max()) or 1.0
        return ax.imshow(matrix, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    return ax.imshow(matrix, cmap="viridis", vmin=0, interpolation="nearest")


def _ticks(ax, q_labels, k_labels, limit, fontsize=6):
    if len(q_labels) <= limit and len(k_labels) <= limit:
        ax.set_yticks(range(len(q_labels)), q_labels, fontsize=fontsize)
        ax.set_xticks(range(len(k_labels)), k_labels, fontsize=fontsize, rotation=90)
    else:
        ax.tick_params(labelsize=fontsize)


def plot_attention_grid(records: list[AttentionRecord], out: Path, *, tokens: list[str],
                        target: list[str] | None = None, batch: int = 0, title: str = "",
                        label_limit: int = 24) -> Path:
    """Heatmaps of every layer (rows) and head (columns), then the layer's pattern: the share
    of heads that can attend each (query, key) pair under the mechanism's layout.

    Args:
        records: from `capture_attention`.
        out: PNG path.
        tokens: labels of the tokens (the source, in an encoder-decoder).
        target: the decoder's tokens of an encoder-decoder.
        batch: which row of the batch.
        label_limit: token labels on the first column and last row up to this many tokens.
    """
    H = max(r.n_heads for r in records)
    L = len(records)
    size = 2.1
    fig, axes = figure(L, H + 1, figsize=(size * (H + 1) + 0.6, size * L + 0.8),
                       squeeze=False)
    for row, rec in enumerate(records):
        q_labels, k_labels = record_labels(rec, tokens, target)
        signed = bool((rec.weights < 0).any())
        for h in range(H + 1):
            ax = axes[row, h]
            if h < rec.n_heads:
                _show(ax, rec.weights[batch, h], signed=signed)
                ax.set_title(f"L{row} H{h}", fontsize=8)
            elif h == H:
                pattern = rec.pattern[min(batch, rec.pattern.shape[0] - 1)].float().mean(0).numpy()
                ax.imshow(pattern, cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
                ax.set_title(f"{rec.mechanism} pattern", fontsize=8)
            else:
                ax.axis("off")
                continue
            ax.tick_params(labelsize=5)
            if h == 0 or (h == H and row == L - 1):
                _ticks(ax, q_labels if h == 0 else [], k_labels if row == L - 1 else [],
                       label_limit, fontsize=5)
            if h != 0:
                ax.set_yticks([])
            if row != L - 1:
                ax.set_xticks([])
        axes[row, 0].set_ylabel(f"{rec.name}\n({rec.kind})", fontsize=6)
    return save(fig, out, title=title or "attention (rows: layers, columns: heads; right: "
                                         "where the mechanism can attend)", fontsize=9)


def plot_head(rec: AttentionRecord, head: int, out: Path, *, tokens: list[str],
              target: list[str] | None = None, batch: int = 0, title: str = "",
              label_limit: int = LABEL_LIMIT) -> Path:
    """One head enlarged with its token labels, its mechanism's pattern beside it."""
    q_labels, k_labels = record_labels(rec, tokens, target)
    fig, (ax, axp) = figure(1, 2, figsize=(12, 6.2))
    weights = rec.weights[batch, head]
    im = _show(ax, weights, signed=bool((weights < 0).any()))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set(title=title or f"{rec.name} head {head}", xlabel="key (attended to)",
           ylabel="query (attending)")
    _ticks(ax, q_labels, k_labels, label_limit)
    pattern = rec.pattern[min(batch, rec.pattern.shape[0] - 1)]
    pattern = pattern[min(head, pattern.shape[0] - 1)]
    axp.imshow(pattern.float().numpy(), cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
    density = float(pattern.float().mean())
    axp.set(title=f"{rec.mechanism}: where it can attend ({density:.0%} of pairs)",
            xlabel="key", ylabel="query")
    _ticks(axp, q_labels, k_labels, label_limit)
    fig.text(0.01, 0.01, rec.note, fontsize=8)
    return save(fig, out, rect=(0, 0.03, 1, 1))


def heads_table(scores: torch.Tensor) -> str:
    """A markdown table of a (layers, heads) score tensor."""
    L, H = scores.shape
    lines = ["| layer | " + " | ".join(f"head {h}" for h in range(H)) + " |",
             "|---|" + "---|" * H]
    lines += [f"| {i} | " + " | ".join(f"{float(scores[i, h]):.2f}" for h in range(H)) + " |"
              for i in range(L)]
    return "\n".join(lines)
