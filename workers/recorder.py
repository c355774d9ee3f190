"""HDR histograms per (target, phase) per interval: record, encode, decode, merge, summarise.

Values are microseconds with 3 significant digits.  The hot path only appends integers to
arrays; histograms are filled once per flush (counting duplicates first), which keeps the
per-request cost to a few list appends.  Values above the trackable range are clamped to
the maximum and counted in ``out_of_range``, never dropped.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable
from typing import Any

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour
SIGNIFICANT_DIGITS = 3
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def fill(hist: HdrHistogram, values: Iterable[int]) -> int:
    """Record every value; returns how many were out of range (clamped, still counted)."""
    out_of_range = 0
    for value, n in Counter(values).items():
        if value > HIGHEST_US:
            out_of_range += n
            value = HIGHEST_US
        elif value < LOWEST_US:
            value = LOWEST_US  # sub-microsecond: below resolution, recorded as 1 µs
        hist.record_value(value, n)
    return out_of_range


def encode(hist: HdrHistogram) -> str:
    if hist.get_total_count() == 0:
        return ""
    raw = hist.encode()
    return raw.decode() if isinstance(raw, bytes) else raw


def decode(encoded: str) -> HdrHistogram:
    hist = new_histogram()
    if encoded:
        hist.add(HdrHistogram.decode(encoded))
    return hist


def merge(encoded: Iterable[str]) -> HdrHistogram:
    total = new_histogram()
    for item in encoded:
        if item:
            total.add(HdrHistogram.decode(item))
    return total


def summary_ms(hist: HdrHistogram) -> dict[str, float | None]:
    """p50/p90/p99/p999/max/mean in milliseconds (None when empty)."""
    if hist.get_total_count() == 0:
        return {**dict.fromkeys(PERCENTILES), "max": None, "mean": None}
    out: dict[str, Any] = {
        name: hist.get_value_at_percentile(p) / 1000.0 for name, p in PERCENTILES.items()
    }
    out["max"] = hist.get_max_value() / 1000.0
    out["mean"] = round(hist.get_mean_value() / 1000.0, 3)
    return out


class ShardRecorder:
    """Raw samples of the current interval for one shard (one target, one phase)."""

    HISTOGRAMS = ("response", "service", "send_lag", "init")
    __slots__ = (*HISTOGRAMS, "cold_starts", "peak_rss_mb")

    def __init__(self) -> None:
        self.response = array("q")
        self.service = array("q")
        self.send_lag = array("q")
        self.init = array("q")
        self.cold_starts = 0  # processes spawned for cold invocations
        self.peak_rss_mb = 0.0  # of the function processes, where the platform can see them

    def drain(self) -> tuple[dict[str, str], int]:
        """Encode the histograms and reset them; returns ({name: encoded}, out_of_range)."""
        encoded: dict[str, str] = {}
        out_of_range = 0
        for name in self.HISTOGRAMS:
            values: array[int] = getattr(self, name)
            hist = new_histogram()
            out_of_range += fill(hist, values)
            encoded[name] = encode(hist)
            setattr(self, name, array("q"))
        return encoded, out_of_range
