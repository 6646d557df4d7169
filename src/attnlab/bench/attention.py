"""The complexity lab: time and peak memory of attention mechanisms against sequence length.

Each (mechanism, length) point runs in a fresh process (`attnlab.bench.point`) so its peak
memory is its own; a series stops at the first point over the time or memory budget and says
so. Exponents are least-squares slopes of log(time) and log(memory) against log(n) over the
longer half of the measured lengths, where fixed overheads no longer dominate.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from attnlab.attention import registry
from attnlab.errors import AttnlabError, did_you_mean

#: Benchmark settings per mechanism: options as a function of the length n. "full-eager" is
#: the textbook reference that materializes the n x n weights.
SETTINGS: dict[str, tuple[str, Callable[[int], dict]]] = {
    "full": ("full", lambda n: {}),
    "full-eager": ("full", lambda n: {"impl": "eager"}),
    "flash": ("flash", lambda n: {}),
    "hard": ("hard", lambda n: {}),
    "local": ("local", lambda n: {"window": 256}),
    "longformer": ("longformer", lambda n: {"window": 256, "global_tokens": 2}),
    "bigbird": ("bigbird", lambda n: {"block_size": 64, "num_random_blocks": 3,
                                      "num_global_blocks": 2}),
    "linformer": ("linformer", lambda n: {"seq_len": n, "k": min(256, n)}),
    "performer": ("performer", lambda n: {"nb_features": 256}),
    "lsh": ("lsh", lambda n: {"n_buckets": max(2, 2 * (n // 128)), "n_hashes": 2,
                              "chunk_size": 64}),
    "luong": ("luong", lambda n: {}),
    "luong-local": ("luong-local", lambda n: {"window": 64}),
}
DEFAULT_LENGTHS = (256, 512, 1024, 2048, 4096, 8192, 16384)


def available_series() -> list[str]:
    """Series whose mechanism is registered in this build."""
    names = registry.available()
    return [s for s, (mech, _) in SETTINGS.items() if mech in names]


def measure_point(series: str, n: int, *, mode: str, causal: bool, time_budget: float,
                  memory_budget_mib: float, heads: int = 8, head_dim: int = 64) -> dict:
    mechanism, options = SETTINGS[series]
    spec = {"mechanism": mechanism, "options": options(n), "options_small": options(min(n, 128)),
            "n": n, "mode": mode,
            "causal": causal, "heads": heads, "head_dim": head_dim,
            "time_budget": time_budget, "memory_budget_mib": memory_budget_mib}
    try:
        done = subprocess.run([sys.executable, "-m", "attnlab.bench.point", json.dumps(spec)],
                              capture_output=True, text=True, timeout=time_budget * 6 + 30)
    except subprocess.TimeoutExpired:
        return {"error": "over the time budget"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["killed"])[-1]
        return {"error": f"failed: {last}"}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if "seconds" in result and result["seconds"] > time_budget:
        result["error"] = "over the time budget"
    return result


def slope(ns: list[int], values: list[float]) -> float | None:
    """Least-squares exponent p of value ~ n^p over the longer half of the points."""
    pts = [(math.log(n), math.log(max(v, 1e-9))) for n, v in zip(ns, values, strict=True)]
    pts = pts[len(pts) // 2:] if len(pts) >= 4 else pts
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    var = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / var if var else None


def run(series: list[str], lengths: list[int], *, mode: str = "fwd", causal: bool = False,
        time_budget: float = 30.0, memory_budget_mib: float = 8192,
        progress: bool = True) -> dict:
    """Measure every series at every length (stopping a series at its first failure)."""
    known = available_series()
    for s in series:
        if s not in known:
            raise AttnlabError(f"unknown attention series '{s}'{did_you_mean(s, known)}; "
                               f"available here: {', '.join(known)}")
    results: dict = {"mode": mode, "causal": causal, "lengths": lengths, "series": {}}
    bar = tqdm(total=len(series) * len(lengths), desc="attention points", disable=not progress)
    for s in series:
        points, stopped = [], None
        for n in lengths:
            if stopped:
                bar.update(1)
                continue
            r = measure_point(s, n, mode=mode, causal=causal, time_budget=time_budget,
                              memory_budget_mib=memory_budget_mib)
            bar.update(1)
            if "error" in r:
                stopped = f"stopped at n={n}: {r['error']}"
                continue
            points.append({"n": n, **r})
        ns = [p["n"] for p in points]
        results["series"][s] = {
            "points": points, "stopped": stopped,
            "time_exponent": slope(ns, [p["seconds"] for p in points]),
            "memory_exponent": slope(ns, [max(p["peak_mib"], 1e-3) for p in points]),
        }
    bar.close()
    return results


def crossover(results: dict, series: str, reference: str = "full") -> int | None:
    """The shortest measured length from which `series` is faster than `reference` on."""
    a = {p["n"]: p["seconds"] for p in results["series"][series]["points"]}
    b = {p["n"]: p["seconds"] for p in results["series"].get(reference, {"points": []})["points"]}
    common = sorted(set(a) & set(b))
    for i, n in enumerate(common):
        if all(a[m] < b[m] for m in common[i:]):
            return n
    return None


def report(results: dict) -> str:
    lines = [f"mode {results['mode']}, causal {results['causal']}, batch 1, 8 heads x 64"]
    header = f"{'series':<12}" + "".join(f"{n:>10}" for n in results["lengths"])
    for title, value in (("time (ms)", lambda p: p["seconds"] * 1e3),
                         ("peak extra memory (MiB)", lambda p: p["peak_mib"])):
        lines += [title, header]
        for s, r in results["series"].items():
            by_n = {p["n"]: p for p in r["points"]}
            lines.append(f"{s:<12}" + "".join(
                f"{value(by_n[n]):>10.1f}" if n in by_n else f"{'-':>10}"
                for n in results["lengths"]))
    lines.append("fitted exponents (time, memory); crossover vs full (SDPA); notes")
    for s, r in results["series"].items():
        te, me = r["time_exponent"], r["memory_exponent"]
        cross = crossover(results, s) if s != "full" and "full" in results["series"] else None
        fmt = lambda x: "  -  " if x is None else f"{x:5.2f}"  # noqa: E731
        lines.append(f"{s:<12} time {fmt(te)}  memory {fmt(me)}  crossover "
                     f"{cross if cross else '-':>6}  {r['stopped'] or ''}")
    return "\n".join(lines)


def plot(results: dict, out: Path) -> Path:
    from attnlab.viz.plotting import figure, save

    fig, (ax_t, ax_m) = figure(1, 2, figsize=(12, 4.2))
    for s, r in results["series"].items():
        ns = [p["n"] for p in r["points"]]
        if not ns:
            continue
        ax_t.loglog(ns, [p["seconds"] for p in r["points"]], "o-", label=s, base=2)
        ax_m.loglog(ns, [max(p["peak_mib"], 0.1) for p in r["points"]], "o-", label=s, base=2)
    ax_t.set(xlabel="sequence length n", ylabel="seconds per call", title="time")
    ax_m.set(xlabel="sequence length n", ylabel="peak extra MiB", title="memory")
    for ax in (ax_t, ax_m):
        ax.grid(alpha=0.3, which="both")
    ax_t.legend(fontsize=8)
    return save(fig, out, title=f"attention scaling ({results['mode']}, batch 1, 8 heads x 64)")
