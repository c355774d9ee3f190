"""Compaction of a distributed run's interval stream: Redis memory that does not grow with run length.

Every few seconds each shard adds an interval (~2 KB) to the run's stream, which a day-long soak
turns into gigabytes.  The orchestrator that follows a run folds every interval it has read and
that is older than a few minutes into one *rollup* per (shard, attempt) — sums, merged HDR
histograms and a per-minute series — and trims those entries from the stream.  Sums and merged
histograms are associative, so a result built from rollups plus the remaining stream is the
result built from all intervals (the orchestrator's own ``intervals.jsonl`` keeps every one).
A reader takes the stream first and the rollups second, and drops stream entries a rollup
already covers (``upto``): a compaction between the two reads cannot count anything twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from workers import histograms
from workers.contract import (
    ERROR_OUTCOMES,
    HISTOGRAMS,
    MAX_COUNT,
    MAX_EPOCH_S,
    Interval,
    SchemaError,
)

SERIES_S = 60  # the time series of compacted intervals keeps one bucket per minute


@dataclass
class Rollup:
    """Intervals 0..upto of one (shard, attempt), folded into one."""

    interval: Interval
    upto: int  # highest seq folded in (a shard's intervals reach the stream in seq order)
    series: dict[int, list[int]] = field(default_factory=dict)  # minute start → [intended, completed, errors]

    @property
    def key(self) -> tuple[str, int]:
        return (self.interval.shard_id, self.interval.attempt)

    def to_json(self) -> bytes:
        return orjson.dumps({"iv": self.interval.to_dict(), "upto": self.upto,
                             "series": [[t, *v] for t, v in sorted(self.series.items())]})

    @classmethod
    def from_json(cls, raw: bytes) -> Rollup:
        """The rollup of a stored record; SchemaError when it is not one."""
        try:
            d = orjson.loads(raw)
            iv = Interval.from_dict(d["iv"])
            series = {int(s[0]): [int(x) for x in s[1:4]] for s in d["series"]}
            upto = d["upto"]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as exc:
            raise SchemaError(f"not a rollup: {exc!r}"[:200]) from None
        if not (isinstance(upto, int) and 0 <= upto <= MAX_COUNT) or any(
                len(v) != 3 or min(v) < 0 or max(v) > MAX_COUNT or not 0 <= t <= MAX_EPOCH_S for t, v in series.items()):
            raise SchemaError("not a rollup: upto or series out of range")
        return cls(iv, upto, series)


def _merge_encoded(a: str, b: str) -> str:
    if not a or not b:
        return a or b
    return histograms.merge_encoded((a, b))


def merge(a: Interval, b: Interval) -> Interval:
    """Two intervals of the same shard and attempt as one (b later than a)."""
    outcomes = dict(a.outcomes)
    for k, n in b.outcomes.items():
        outcomes[k] = outcomes.get(k, 0) + n
    counters = dict(a.counters)
    for k, v in b.counters.items():
        counters[k] = counters.get(k, 0) + v
    hists: dict[str, Any] = {f: _merge_encoded(getattr(a, f), getattr(b, f)) for _, f, _ in HISTOGRAMS}
    return dataclasses.replace(
        a, seq=max(a.seq, b.seq), t0=min(a.t0, b.t0), t1=max(a.t1, b.t1), intended=a.intended + b.intended,
        sent=a.sent + b.sent, completed=a.completed + b.completed, outcomes=outcomes,
        out_of_range=a.out_of_range + b.out_of_range, retries=a.retries + b.retries,
        peak_in_flight=max(a.peak_in_flight, b.peak_in_flight), max_memory_mb=max(a.max_memory_mb, b.max_memory_mb),
        final=a.final or b.final, status=b.status if b.final else a.status, gap_s=round(a.gap_s + b.gap_s, 3),
        stall_s=round(a.stall_s + b.stall_s, 3),
        cold_starts=a.cold_starts + b.cold_starts, started=min(s for s in (a.started, b.started) if s) if a.started or b.started else 0.0,
        counters=counters, slowest=slowest_of(a.slowest, b.slowest), **hists)


def slowest_of(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The slowest requests of two intervals as one list of the larger one's length (a rollup keeps the
    run's K slowest of its shard; the per-minute lists of what it folded are not kept)."""
    if not a or not b:
        return list(a or b)
    return sorted((*a, *b), key=lambda r: r["response_ms"], reverse=True)[:max(len(a), len(b))]


def _bucket(series: dict[int, list[int]], iv: Interval) -> None:
    minute = int(iv.t1) // SERIES_S * SERIES_S
    row = series.setdefault(minute, [0, 0, 0])
    row[0] += iv.intended
    row[1] += iv.completed
    row[2] += sum(n for k, n in iv.outcomes.items() if k in ERROR_OUTCOMES)


def fold(rollups: dict[tuple[str, int], Rollup], intervals: Iterable[Interval]) -> set[tuple[str, int]]:
    """Fold ``intervals`` (in stream order) into ``rollups``; returns the keys that changed."""
    changed: set[tuple[str, int]] = set()
    for iv in intervals:
        key = (iv.shard_id, iv.attempt)
        current = rollups.get(key)
        if current is not None and iv.seq <= current.upto:
            continue  # a duplicate delivery of an interval already folded
        if current is None:
            current = rollups[key] = Rollup(iv, iv.seq)
        else:
            current.interval = merge(current.interval, iv)
            current.upto = iv.seq
        _bucket(current.series, iv)
        changed.add(key)
    return changed


def as_dict(rollups: Iterable[Rollup]) -> dict[str, Any]:
    return {f"{r.key[0]}#{r.key[1]}": r.to_json() for r in rollups}
