"""The lab's fitted exponents use the longer half of the lengths, the
crossover is where `series` stays faster from on, and the report prints milliseconds and MiB
of the right series at the right length."""

import pytest

from attnlab.bench import attention as lab


def test_slope_fits_only_the_longer_half_where_overheads_no_longer_dominate():
    ns = [256, 512, 1024, 2048, 4096, 8192]
    # a fixed 1 s overhead swamps the short lengths; the long ones grow as n^2
    values = [1.0, 1.0, 1.0, 1e-6 * 2048**2, 1e-6 * 4096**2, 1e-6 * 8192**2]
    assert lab.slope(ns, values) == pytest.approx(2.0)
    assert lab.slope([256, 512], [1.0, 2.0]) == pytest.approx(1.0)  # few points: all of them
    assert lab.slope([256], [1.0]) is None


def test_crossover_needs_the_series_faster_at_every_longer_length():
    ns = [256, 512, 1024, 2048]
    results = {"series": {
        "full": {"points": [{"n": n, "seconds": 1.0} for n in ns]},
        # faster at 256, slower at 512, faster from 1024 on
        "x": {"points": [{"n": n, "seconds": s}
                         for n, s in zip(ns, [0.5, 2.0, 0.5, 0.5], strict=True)]},
        "never": {"points": [{"n": n, "seconds": 2.0} for n in ns]},
    }}
    assert lab.crossover(results, "x") == 1024
    assert lab.crossover(results, "never") is None


def test_report_prints_milliseconds_and_mib_per_series_and_length():
    results = {"mode": "fwd", "causal": True, "lengths": [128, 256], "series": {
        "full": {"points": [{"n": 128, "seconds": 0.0123, "peak_mib": 4.5},
                            {"n": 256, "seconds": 0.0456, "peak_mib": 17.25}],
                 "stopped": None, "time_exponent": 1.9, "memory_exponent": 2.0},
        "local": {"points": [{"n": 128, "seconds": 0.002, "peak_mib": 1.0}],
                  "stopped": "stopped at n=256: over the time budget",
                  "time_exponent": None, "memory_exponent": None},
    }}
    lines = lab.report(results).splitlines()
    assert lines[0].startswith("mode fwd, causal True")
    t = lines.index("time (ms)")
    assert lines[t + 2].split() == ["full", "12.3", "45.6"]
    assert lines[t + 3].split() == ["local", "2.0", "-"]
    m = lines.index("peak extra memory (MiB)")
    assert lines[m + 2].split() == ["full", "4.5", "17.2"]
    assert lines[m + 3].split() == ["local", "1.0", "-"]
    full = next(line for line in lines if line.startswith("full ") and "time " in line)
    assert "1.90" in full and "2.00" in full
    local = next(line for line in lines if line.startswith("local ") and "time " in line)
    assert local.endswith("stopped at n=256: over the time budget")


def test_run_fits_time_and_memory_from_their_own_measurements(monkeypatch):
    asked = []

    def point(series, n, **kw):
        asked.append((series, n))
        if series == "local" and n >= 1024:
            return {"error": "over the memory budget"}
        return {"seconds": 1e-6 * n, "peak_mib": 1e-4 * n * n}

    monkeypatch.setattr(lab, "measure_point", point)
    ns = [128, 256, 512, 1024, 2048]
    results = lab.run(["full", "local"], ns, progress=False)
    full = results["series"]["full"]
    assert full["time_exponent"] == pytest.approx(1.0)
    assert full["memory_exponent"] == pytest.approx(2.0)
    local = results["series"]["local"]
    assert [p["n"] for p in local["points"]] == [128, 256, 512]
    assert local["stopped"] == "stopped at n=1024: over the memory budget"
    assert ("local", 2048) not in asked  # a stopped series measures nothing more
