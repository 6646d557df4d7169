"""The one small plotting module: every PNG attnlab draws (training curves, benchmark plots,
attention maps) is made and saved here, so they share a backend, a size and a resolution."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt

DPI = 110


def figure(rows: int = 1, cols: int = 1, *, figsize: tuple[float, float], squeeze: bool = True):
    """(fig, axes) of a rows x cols grid, as `plt.subplots`."""
    return plt.subplots(rows, cols, figsize=figsize, squeeze=squeeze)


def save(fig, out: Path, *, title: str = "", fontsize: float | None = None,
         rect: tuple[float, float, float, float] | None = None) -> Path:
    """Title, tighten, write `out` as PNG and free the figure; returns the path."""
    if title:
        fig.suptitle(title, fontsize=fontsize)
    fig.tight_layout(rect=rect)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return Path(out)
