"""The complexity lab: structure, budgets and fits (never wall-clock assertions)."""

import json

import pytest

from attnlab.bench import attention as lab
from attnlab.cli import main
from attnlab.errors import AttnlabError


def test_slope_recovers_a_power_law_and_crossover_finds_the_switch():
    ns = [256, 512, 1024, 2048, 4096]
    assert lab.slope(ns, [3e-9 * n**2 for n in ns]) == pytest.approx(2.0)
    assert lab.slope(ns, [5e-6 * n for n in ns]) == pytest.approx(1.0)
    results = {"series": {
        "full": {"points": [{"n": n, "seconds": 1e-7 * n**2} for n in ns]},
        "fast": {"points": [{"n": n, "seconds": 1e-4 * n} for n in ns]},
    }}
    assert lab.crossover(results, "fast") == 1024  # 1e-4 n < 1e-7 n^2 from n > 1000 on


def test_points_are_measured_in_fresh_processes_and_reported():
    results = lab.run(["full", "local"], [128, 256], progress=False, time_budget=20)
    for name in ("full", "local"):
        series = results["series"][name]
        assert [p["n"] for p in series["points"]] == [128, 256] and series["stopped"] is None
        assert all(p["seconds"] > 0 and p["peak_mib"] >= 0 for p in series["points"])
        assert series["time_exponent"] is not None
    text = lab.report(results)
    assert "time (ms)" in text and "peak extra memory" in text and "local" in text


def test_a_series_stops_cleanly_at_its_memory_budget():
    # eager full attention at n = 4096 needs 8 x 4096^2 floats (512 MiB) for its scores
    results = lab.run(["full-eager"], [256, 4096, 8192], progress=False,
                      memory_budget_mib=64, time_budget=20)
    series = results["series"]["full-eager"]
    assert [p["n"] for p in series["points"]] == [256]
    assert series["stopped"] == "stopped at n=4096: over the memory budget"


def test_unknown_series_is_an_error_with_a_suggestion():
    with pytest.raises(AttnlabError, match="did you mean 'local'"):
        lab.run(["locl"], [128], progress=False)


def test_cli_writes_json_and_plot(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["bench", "attention", "--mechanisms", "full,flash", "--lengths", "128,256",
                 "--json", str(out), "--plot", str(tmp_path / "r.png"), "--no-progress"]) == 0
    data = json.loads(out.read_text())
    assert set(data["series"]) == {"full", "flash"}
    assert data["series"]["flash"]["points"][0]["backend"] == "flash"
    assert (tmp_path / "r.png").stat().st_size > 1000
    assert "fitted exponents" in capsys.readouterr().out


def test_bad_lengths_are_a_usage_error_not_a_traceback():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "attnlab", "bench", "attention", "--lengths",
                           "256,abc"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "expected an integer >= 1, got 'abc'" in done.stderr
    assert "Traceback" not in done.stderr
