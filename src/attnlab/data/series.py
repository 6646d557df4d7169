"""Real-valued time series for forecasting: a named series shipped with statsmodels, or a
user's file of numbers.

`co2`: the Mauna Loa atmospheric CO2 record that statsmodels ships (`statsmodels.datasets.co2`,
weekly ppm, 1958-2001, public domain, from NOAA / Scripps). Why this one: it has both a trend
and a 12-month season, so seasonal-naive and linear autoregression are each meaningful and
neither is trivially best; statsmodels' other series are short (sunspots: 309 yearly values) or
have no season. Weekly readings have gaps (59 missing weeks), so it is used as monthly means,
and from May 1964 on: every month from then has readings (Jun and Oct 1958 and Feb-Apr 1964
have none). Nothing is interpolated. 452 months, 1964-05 to 2001-12.

A file: one number per line (a CSV's last column), an optional non-numeric header line. A gap
(an empty, NaN or NA value) or a value that is not a number is refused with its line number:
gaps must be filled or cut out by the user, knowingly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attnlab.errors import AttnlabError, did_you_mean

_MISSING = {"", "nan", "na", "n/a", "null", "none", "?", "-"}


@dataclass
class Series:
    """One univariate series.

    Attributes:
        name: its name.
        values: (N,) float64, finite.
        season: the seasonal period in steps (12 for monthly data), for seasonal-naive.
        start: the first step's date or index, for plots.
        unit: the values' unit, for plots.
    """

    name: str
    values: np.ndarray
    season: int
    start: str
    unit: str = ""


def load_co2() -> Series:
    """Monthly mean Mauna Loa CO2 (ppm), May 1964 - December 2001 (see the module doc)."""
    from statsmodels.datasets import co2

    weekly = co2.load_pandas().data["co2"]
    monthly = weekly.resample("MS").mean()
    monthly = monthly[monthly.index >= "1964-05-01"]
    if monthly.isna().any():  # the statsmodels copy changed: say so rather than fill
        raise AttnlabError("statsmodels' co2 series has months without readings after 1964-05; "
                           "this statsmodels version ships other data")
    return Series("co2", monthly.to_numpy(dtype=np.float64), 12, "1964-05", "ppm")


def read_series(path: str | Path, *, season: int) -> Series:
    """A series from a text / CSV / TSV file: one value per line (the last comma- or
    tab-separated field: the separator is the file's suffix's, a comma for .csv and .txt).

    Args:
        path: the file.
        season: its seasonal period in steps.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise AttnlabError(f"cannot read series file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise AttnlabError(f"{path} is not UTF-8 text") from None
    while lines and not lines[-1].strip():
        lines.pop()  # trailing blank lines are not gaps
    sep = "\t" if path.suffix == ".tsv" else ","
    values: list[float] = []
    for i, line in enumerate(lines, 1):
        field = line.rsplit(sep, 1)[-1].strip().strip('"')
        if field.lower() in _MISSING:
            raise AttnlabError(f"{path} line {i}: missing value (a gap in the series); fill or "
                               f"remove gaps before forecasting")
        try:
            value = float(field)
        except ValueError:
            if i == 1:  # a header
                continue
            raise AttnlabError(f"{path} line {i}: '{field[:40]}' is not a number") from None
        if not math.isfinite(value):
            raise AttnlabError(f"{path} line {i}: value {field} is not finite")
        values.append(value)
    if not values:
        raise AttnlabError(f"{path} holds no numbers")
    return Series(path.stem, np.asarray(values, dtype=np.float64), season, "0")


SERIES = {"co2": load_co2}


def load_series(source: str, *, season: int = 12) -> Series:
    """A named series (`SERIES`) or a file path (.csv / .tsv / .txt) with seasonal period
    `season`."""
    if source in SERIES:
        return SERIES[source]()
    path = Path(source)
    if path.suffix in (".csv", ".txt", ".tsv") or path.exists():
        return read_series(path, season=season)
    raise AttnlabError(f"unknown series '{source}'{did_you_mean(source, SERIES)}; choose from: "
                       f"{', '.join(SERIES)} (or give a .csv / .txt file)")


def split_points(n: int, val_fraction: float, test_fraction: float = 0.2) -> tuple[int, int]:
    """(val_start, test_start): chronological split of n steps into train / val / test."""
    test_start = n - round(n * test_fraction)
    val_start = test_start - round(n * val_fraction)
    return val_start, test_start


def windows(values: np.ndarray, context: int, horizon: int, first_target: int,
            end: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (past, future) pair whose future lies in values[first_target:end]: past (W, context),
    future (W, horizon), stride 1. The past may reach back before `first_target`."""
    starts = range(max(first_target, context), end - horizon + 1)
    past = np.stack([values[t - context:t] for t in starts]) if starts else \
        np.zeros((0, context))
    future = np.stack([values[t:t + horizon] for t in starts]) if starts else \
        np.zeros((0, horizon))
    return past, future
