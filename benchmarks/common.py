"""Shared helpers for the benchmark scripts: interleaved timing, a matmul peak, result files.

Timings drift about +-10% run to run on a shared 2-core machine, so every script measures
attnlab and its peers in the same process, interleaved round by round, and reports medians
and ratios rather than absolute numbers alone.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "native_bf16": bool(torch.cpu._is_avx512_bf16_supported()
                                or torch.cpu._is_amx_tile_supported())}


def time_calls(fn: Callable[[], object], n: int) -> float:
    """Seconds per call over `n` calls."""
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def interleaved(candidates: dict[str, Callable[[], object]], *, rounds: int, calls: int,
                warmup: int = 2, progress=None) -> dict[str, float]:
    """Median seconds per call of each candidate, measured round-robin so that drift in the
    machine's speed hits all of them alike."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            samples[name].append(time_calls(fn, calls))
            if progress is not None:
                progress.update(1)
    return {name: statistics.median(s) for name, s in samples.items()}


def interleaved_by_threads(candidates: dict[str, Callable[[], object]], threads: str, *,
                           rounds: int, desc: str) -> dict[str, dict[str, float]]:
    """`interleaved` medians (one call per sample) for each thread count of "1,2"-style
    `threads`, keyed by the count as a string; the process's thread count is restored."""
    counts = [int(t) for t in threads.split(",")]
    bar = tqdm(total=len(counts) * len(candidates) * rounds, desc=desc)
    before = torch.get_num_threads()
    seconds = {}
    try:
        for count in counts:
            torch.set_num_threads(count)
            seconds[str(count)] = interleaved(candidates, rounds=rounds, calls=1, warmup=1,
                                              progress=bar)
    finally:
        torch.set_num_threads(before)
        bar.close()
    return seconds


def matmul_peak(dtype: torch.dtype = torch.float32, n: int = 2048) -> float:
    """GFLOP/s of a large square matmul in this process: the ceiling MFU is measured against."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    seconds = min(time_calls(lambda: a @ b, 5) for _ in range(3))
    return 2 * n**3 / seconds / 1e9


def save(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))


def save_by_threads(results: dict, metric: str, names: list[str], *, ylabel: str, title: str,
                    out: Path) -> None:
    """Write `results` as JSON to `out`, and beside it (.png) a bar per name and thread count
    of `results["runs"][threads][metric]`."""
    save(results, out)
    png = grouped_bars({f"{t} thread(s)": run[metric] for t, run in results["runs"].items()},
                       names, ylabel=ylabel, title=title, out=out.with_suffix(".png"))
    print(f"\nwrote {out} and {png}")


def grouped_bars(groups: dict[str, dict[str, float]], names: list[str], *, ylabel: str,
                 title: str, out: Path) -> Path:
    """One bar per name in each group (e.g. per precision), side by side; saved as PNG."""
    from attnlab.viz.plotting import figure
    from attnlab.viz.plotting import save as save_png

    fig, ax = figure(figsize=(7, 3.5))
    width = 0.8 / len(groups)
    for i, (label, values) in enumerate(groups.items()):
        ax.bar([j + i * width for j in range(len(names))], [values[n] for n in names], width,
               label=label)
    ax.set_xticks([j + width * (len(groups) - 1) / 2 for j in range(len(names))], names)
    ax.set(ylabel=ylabel, title=title)
    ax.legend()
    return save_png(fig, out)
