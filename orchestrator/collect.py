"""Merge Interval records into a RunResult: totals, percentiles (merged HDR), time series, gaps.

A run's result is exactly the set of its intervals; duplicates (same shard, attempt, seq)
are dropped, so at-least-once delivery never double counts.  Percentiles are never averaged:
they are read from the merged histograms.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from workers import recorder
from workers.contract import OUTCOME_NAMES, Interval

GroupKey = tuple[str, str, str, str]  # region, target, runtime, phase
HISTS = (("response_ms", "response_us"), ("service_ms", "service_us"), ("send_lag_ms", "send_lag_us"), ("init_ms", "init_us"))


@dataclass
class GroupState:
    intended: int = 0
    sent: int = 0
    completed: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    hists: dict[str, HdrHistogram] = field(default_factory=lambda: {n: recorder.new_histogram() for n, _ in HISTS})
    out_of_range: int = 0
    t0: float = float("inf")
    t1: float = 0.0
    peak_in_flight: int = 0
    cold_starts: int = 0
    peak_rss_mb: float = 0.0
    workload: str = ""
    series: dict[int, list[int]] = field(default_factory=dict)  # second → [intended, completed, errors]

    def add(self, iv: Interval) -> None:
        self.intended += iv.intended
        self.sent += iv.sent
        self.completed += iv.completed
        for k, n in iv.outcomes.items():
            self.outcomes[k] += n
        for name, attr in HISTS:
            encoded = getattr(iv, attr)
            if encoded:
                self.hists[name].add(HdrHistogram.decode(encoded))
        self.out_of_range += iv.out_of_range
        if iv.intended or iv.completed:
            self.t0 = min(self.t0, iv.t0)
            self.t1 = max(self.t1, iv.t1)
        self.peak_in_flight = max(self.peak_in_flight, iv.max_in_flight)
        self.cold_starts += iv.cold_starts
        self.workload = iv.workload
        self.peak_rss_mb = max(self.peak_rss_mb, iv.max_memory_mb)
        bucket = self.series.setdefault(int(iv.t1), [0, 0, 0])
        bucket[0] += iv.intended
        bucket[1] += iv.completed
        bucket[2] += sum(n for k, n in iv.outcomes.items() if k != "ok")


class Collector:
    """Accumulates intervals of one run; ``result()`` can be called at any time (live view)."""

    def __init__(self, run_id: str, phase_seconds: dict[str, float] | None = None) -> None:
        self.run_id = run_id
        self.phase_seconds = phase_seconds or {}
        self.seen: set[tuple[str, int, int]] = set()
        self.groups: dict[GroupKey, GroupState] = {}
        self.warmup = GroupState()
        self.gaps: list[dict[str, Any]] = []
        self.duplicates = 0
        self.finished_shards: set[str] = set()

    def add(self, iv: Interval) -> bool:
        """Add one interval; False when it is a duplicate of one already counted."""
        if iv.key in self.seen:
            self.duplicates += 1
            return False
        self.seen.add(iv.key)
        if iv.final:
            self.finished_shards.add(iv.shard_id)
        if iv.gap_s > 0:
            self.gaps.append(
                {"region": iv.region, "shard": iv.shard_id, "target": iv.target, "seconds": iv.gap_s,
                 "reason": "expired before it could start" if iv.status == "expired" else "started late"}
            )
        if iv.warmup:
            self.warmup.add(iv)
            return True
        key = (iv.region, iv.target, iv.runtime, iv.phase)
        self.groups.setdefault(key, GroupState()).add(iv)
        return True

    def add_all(self, intervals: Iterable[Interval]) -> None:
        for iv in intervals:
            self.add(iv)

    def group_rows(self) -> list[dict[str, Any]]:
        rows = []
        for (region, target, runtime, phase), g in sorted(self.groups.items()):
            # The planned window, or the span actually covered when the run was cut short.
            span = max(g.t1 - g.t0, 0.0)
            planned = self.phase_seconds.get(phase, 0.0)
            seconds = min(planned, span) if planned and span else (planned or span)
            total = sum(g.outcomes.values())
            errors = total - g.outcomes.get("ok", 0)
            row: dict[str, Any] = {
                "region": region,
                "target": target,
                "runtime": runtime,
                "phase": phase,
                "workload": g.workload,
                "intended": g.intended,
                "sent": g.sent,
                "completed": g.completed,
                "achieved_rps": round(g.completed / seconds, 3) if seconds > 0 else 0.0,
                "intended_rps": round(g.intended / seconds, 3) if seconds > 0 else 0.0,
                "error_rate": round(errors / total, 6) if total else 0.0,
                "outcomes": {k: g.outcomes[k] for k in OUTCOME_NAMES if g.outcomes.get(k)},
                "out_of_range": g.out_of_range,
                "peak_in_flight": g.peak_in_flight,
                "seconds": round(seconds, 3),
            }
            for name, _ in HISTS:
                if name == "init_ms" and g.hists[name].get_total_count() == 0:
                    continue
                row[name] = recorder.summary_ms(g.hists[name])
            if g.cold_starts:
                row["cold_starts"] = g.cold_starts
            if g.peak_rss_mb:
                row["peak_rss_mb"] = round(g.peak_rss_mb, 2)
            row["series"] = [[t, *v] for t, v in sorted(g.series.items())]
            rows.append(row)
        return rows

    def result(self, slo: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "groups": self.group_rows(),
            "warmup": {"intended": self.warmup.intended, "completed": self.warmup.completed},
            "gaps": self.gaps,
            "slo": slo or [],
            "duplicates_dropped": self.duplicates,
            **extra,
        }
