"""Attention rollout of a Vision Transformer as a map over the image's patches.

The rollout (`attnlab.viz.rollout`, Abnar & Zuidema 2020) of the attention recorded by
`attnlab.viz.capture` says how much each output token draws on each input token through every
layer. For a ViT the output that classifies is the class token (pooling "cls": its row of the
rollout) or the mean of the patch tokens (pooling "mean": the mean of their rows); its weights
on the patch tokens, laid out on the patch grid, are the map.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from attnlab.errors import AttnlabError
from attnlab.viz.capture import capture_attention
from attnlab.viz.plotting import figure, save
from attnlab.viz.rollout import attention_rollout


@torch.no_grad()
def vit_rollout(model, images: Tensor, *, residual: float = 0.5) -> tuple[Tensor, Tensor]:
    """(maps (B, rows, cols), logits (B, classes)) of a `ViT` on images (B, C, H, W).

    Args:
        model: a `attnlab.models.ViT` (evaluated in eval mode).
        images: a batch the model takes.
        residual: the rollout's identity weight.
    """
    c = getattr(model, "config", None)
    if not hasattr(c, "patch_size"):
        raise AttnlabError(f"image rollout needs a ViT, got {type(model).__name__}")
    was_training = model.training
    model.eval()
    try:
        with capture_attention(model) as cap:
            logits = model(images)
    finally:
        model.train(was_training)
    rollout = attention_rollout(cap.records, residual=residual)  # (B, T, T)
    rows = cols = c.image_size // c.patch_size
    # "cls": the class token's row over the patch tokens; "mean": the pooled output draws
    # equally on every token's row
    weights = rollout[:, 0, 1:] if c.pooling == "cls" else rollout.mean(dim=1)
    return weights.reshape(-1, rows, cols), logits


def plot_rollout(images: Tensor, maps: Tensor, out: Path, *, titles: list[str] | None = None,
                 title: str = "") -> Path:
    """A row per image: the image and its rollout map laid over it (upsampled to pixels).

    Args:
        images: (B, C, H, W); the first channel is shown (grey) or all three (RGB).
        maps: (B, rows, cols) from `vit_rollout`.
        out: the PNG to write.
        titles: one caption per image (e.g. "true 3 / predicted 3").
    """
    n = len(images)
    if len(maps) != n:
        raise AttnlabError(f"{n} images but {len(maps)} maps")
    fig, axes = figure(n, 2, figsize=(4.4, 2.2 * n), squeeze=False)
    for i in range(n):
        img = images[i].detach().float().cpu()
        shown = img[0].numpy() if img.shape[0] != 3 else img.permute(1, 2, 0).numpy()
        if shown.ndim == 3:
            shown = (shown - shown.min()) / max(float(shown.max() - shown.min()), 1e-12)
        m = maps[i].detach().float().cpu().numpy()
        scale = (img.shape[-2] // m.shape[0], img.shape[-1] // m.shape[1])
        upsampled = np.kron(m / max(float(m.max()), 1e-12), np.ones(scale))
        axes[i, 0].imshow(shown, cmap="gray")
        axes[i, 1].imshow(shown, cmap="gray")
        axes[i, 1].imshow(upsampled, cmap="inferno", alpha=0.6, vmin=0, vmax=1)
        axes[i, 0].set_title(titles[i] if titles else "image", fontsize=8)
        axes[i, 1].set_title("attention rollout", fontsize=8)
        for ax in axes[i]:
            ax.axis("off")
    return save(fig, out, title=title, fontsize=9)
