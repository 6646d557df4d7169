"""One measurement point, run in a fresh process so its peak memory is its own:

    python -m attnlab.bench.point '{"mechanism": "local", "options": {...}, "n": 4096, ...}'

Prints one JSON line: seconds per call (median), peak extra resident memory in MiB, and an
error if any. Memory: a warm-up call at a tiny length first pays the one-time costs (thread
pools, kernel set-up); then the kernel's peak-RSS mark is reset (/proc/self/clear_refs) and
the peak during one call at length n, minus the RSS just before it, is the mechanism's.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def vm_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[0])
    return pages * resource.getpagesize() / 2**20


def peak_rss_mib() -> float:
    """VmHWM: the peak RSS since the last reset."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def measure(spec: dict) -> dict:
    import torch

    from attnlab.attention import build

    torch.manual_seed(0)
    torch.set_num_threads(spec.get("threads", torch.get_num_threads()))
    B, H, Dh, n = spec.get("batch", 1), spec.get("heads", 8), spec.get("head_dim", 64), spec["n"]
    attn = build(spec["mechanism"], **spec.get("options", {}))
    backward = spec.get("mode", "fwd") == "fwd+bwd"
    causal = spec.get("causal", False)

    def inputs(length):
        return [torch.randn(B, H, length, Dh, requires_grad=backward) for _ in range(3)]

    q, k, v = inputs(min(n, 128))

    def call():
        if backward:
            out, _ = attn(q, k, v, causal=causal)
            out.sum().backward()
            for t in (q, k, v):
                t.grad = None
        else:
            with torch.no_grad():
                attn(q, k, v, causal=causal)

    if "options_small" in spec:  # e.g. linformer's projections are sized for n
        attn_full = attn
        attn = build(spec["mechanism"], **spec["options_small"])
    call()  # warm-up at a tiny length: one-time costs stay out of the measurement
    if "options_small" in spec:
        attn = attn_full
    q, k, v = inputs(n)
    reset_peak()
    before = rss_mib()
    call()
    peak = peak_rss_mib() - before
    times = []
    deadline = time.perf_counter() + spec.get("time_budget", 60.0)
    for _ in range(spec.get("repeats", 3)):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
        if time.perf_counter() > deadline:
            break
    return {"seconds": statistics.median(times), "peak_mib": max(peak, 0.0),
            "backend": getattr(attn, "backend", None)}


def main() -> None:
    spec = json.loads(sys.argv[1])
    if "memory_budget_mib" in spec:  # a point that needs more fails fast instead of swapping
        limit = int((vm_mib() + 512 + spec["memory_budget_mib"]) * 2**20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        result = measure(spec)
    except MemoryError:
        result = {"error": "over the memory budget"}
    except RuntimeError as e:  # torch reports failed allocations as RuntimeError
        text = str(e)
        over = "memory" in text.lower() or "allocate" in text.lower()
        result = {"error": "over the memory budget" if over else text.splitlines()[0]}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
