"""Merge Interval records into a RunResult: totals, percentiles (merged HDR), time series, gaps.

A run's result is exactly the set of its intervals; duplicates (same shard, attempt, seq)
are dropped, so at-least-once delivery never double counts.  Percentiles are never averaged:
they are read from the merged histograms.

Speed matters here: the live view and soak runs merge every interval of every shard, and the
live view asks for the result on every refresh.  Encoded histograms are added in C into one
``workers.histograms.MergedHistogram`` per group and histogram (no histogram object per
interval), and a group's record (percentiles included) is rebuilt only after it changed.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import heapq
from collections.abc import Iterable, Sequence
from typing import Any

from hdrh.histogram import HdrHistogram

from orchestrator.run.result import BadRecords, Gap, Group, RunResult, SloVerdict
from orchestrator.run.rollup import Rollup
from workers import histograms
from workers.contract import ERROR_OUTCOMES, HISTOGRAMS, OUTCOME_NAMES, Interval, SchemaError
from workers.histograms import MergedHistogram
from workers.platforms.aws_lambda import THROTTLE_COUNTER

GroupKey = tuple[str, str, str, str]  # region, target, runtime, phase
HISTS = tuple((result, field) for _, field, result in HISTOGRAMS)  # result name, Interval field


class GroupState:
    """Running totals of one group; the Group record is rebuilt only after it changed."""

    __slots__ = ("intended", "sent", "completed", "outcomes", "hists", "out_of_range", "t0", "t1",
                 "peak_in_flight", "cold_starts", "peak_rss_mb", "retries", "connections", "workload", "series", "_seconds",
                 "lambda_counters", "report_memory_mb", "failure", "slow", "throttles",
                 "_sealed", "_sealed_upto", "_cached")

    def __init__(self) -> None:
        self.intended = self.sent = self.completed = 0
        self.outcomes = [0] * len(OUTCOME_NAMES)
        self.hists = {name: MergedHistogram() for name, _ in HISTS}
        self.out_of_range = 0
        self.t0 = float("inf")
        self.t1 = 0.0
        self.peak_in_flight = 0
        self.cold_starts = 0
        self.peak_rss_mb = 0.0
        self.retries = 0
        self.connections = dict.fromkeys(CONNECTION_COUNTERS, 0)  # Interval.counters summed
        self.lambda_counters: dict[str, float] = {}  # the aws-lambda invoker's billing counters, summed
        self.report_memory_mb = 0.0  # Max Memory Used, highest REPORT
        self.workload = ""
        self.failure = ""  # the first reason a shard of this group failed (Interval.status "failed")
        self.series: dict[int, list[int]] = {}  # second of t1 → [intended, completed, errors]
        self.slow = Slowest()
        self.throttles: dict[int, dict[str, int]] = {}  # second of t1 → {Reason: 429s} (the aws-lambda invoker's)
        self._seconds: list[int] = []  # the keys of series, in order
        # Rows more than SEAL_S older than the newest second rarely change: kept as a built tuple.
        self._sealed: tuple[tuple[int, int, int, int], ...] = ()
        self._sealed_upto = 0  # seconds below this are in _sealed
        self._cached: tuple[float, Group] | None = None

    def add(self, iv: Interval, series: dict[int, list[int]] | None = None) -> None:
        """Add an interval; a rollup (many intervals folded) brings its own coarse ``series``.  Its
        histograms are decoded first, each into its own scratch slot: one that cannot be decoded
        (histograms.HistogramError) leaves the group as it was."""
        with contextlib.ExitStack() as stack:
            ready: list[tuple[str, histograms.Decoded | HdrHistogram]] = []
            for slot, (name, attr) in enumerate(HISTS):
                encoded = getattr(iv, attr)
                if encoded:
                    d = stack.enter_context(histograms.decoded(encoded, slot))
                    ready.append((name, d if d is not None else histograms.decode_foreign(encoded)))
            self._add(iv, series)
            for name, h in ready:
                if isinstance(h, histograms.Decoded):
                    self.hists[name].add_decoded(h)
                else:
                    self.hists[name].add_foreign(h)

    def _add(self, iv: Interval, series: dict[int, list[int]] | None) -> None:
        self._cached = None
        self.intended += iv.intended
        self.sent += iv.sent
        self.completed += iv.completed
        errors = 0
        for k, n in iv.outcomes.items():
            self.outcomes[OUTCOME_INDEX[k]] += n
            if k in ERROR_OUTCOMES:
                errors += n
        self.out_of_range += iv.out_of_range
        if iv.intended or iv.completed:
            self.t0 = min(self.t0, iv.t0)
            self.t1 = max(self.t1, iv.t1)
        self.peak_in_flight = max(self.peak_in_flight, _peak_in_flight(iv))
        self.cold_starts += iv.cold_starts
        self.retries += getattr(iv, "retries", 0)
        if iv.counters:
            for name in CONNECTION_COUNTERS:
                self.connections[name] += int(iv.counters.get(name, 0))
            for name in LAMBDA_COUNTERS:
                if name in iv.counters:
                    self.lambda_counters[name] = self.lambda_counters.get(name, 0.0) + iv.counters[name]
            for name, count in iv.counters.items():
                if name.startswith(THROTTLE_COUNTER) and count > 0:
                    at = self.throttles.setdefault(int(iv.t1), {})
                    reason = name[len(THROTTLE_COUNTER):]
                    at[reason] = at.get(reason, 0) + int(count)
            if iv.platform_us and iv.max_memory_mb > self.report_memory_mb:
                self.report_memory_mb = iv.max_memory_mb
        self.workload = iv.workload
        self.peak_rss_mb = max(self.peak_rss_mb, iv.max_memory_mb)
        if iv.slowest:
            self.slow.add(iv.slowest)
        if series is not None:
            for second, (intended, completed, errs) in series.items():
                self._add_to_series(second, intended, completed, errs)
            return
        self._add_to_series(int(iv.t1), iv.intended, iv.completed, errors)

    def _add_to_series(self, second: int, intended: int, completed: int, errors: int) -> None:
        bucket = self.series.get(second)
        if bucket is None:
            bucket = self.series[second] = [0, 0, 0]
            if not self._seconds or second > self._seconds[-1]:
                self._seconds.append(second)
            else:
                bisect.insort(self._seconds, second)
        if second < self._sealed_upto:  # a late interval changed a sealed row: rebuild them
            self._sealed, self._sealed_upto = (), 0
        bucket[0] += intended
        bucket[1] += completed
        bucket[2] += errors

    def row(self, key: GroupKey, planned_s: float) -> Group:
        if self._cached is not None and self._cached[0] == planned_s:
            return self._cached[1]
        region, target, runtime, phase = key
        # The planned window, or the span actually covered when the run was cut short.
        span = max(self.t1 - self.t0, 0.0)
        seconds = min(planned_s, span) if planned_s and span else (planned_s or span)
        outcomes = {name: n for name, n in zip(OUTCOME_NAMES, self.outcomes, strict=True) if n}
        total = sum(self.outcomes)
        ok = outcomes.get("ok", 0)
        init = self.hists["init_ms"]
        connect = self.hists["connect_ms"]
        group = Group(
            region=region, target=target, runtime=runtime, phase=phase, workload=self.workload,
            intended=self.intended, sent=self.sent, completed=self.completed,
            # Throughput is what the target served: successful responses, not errors.
            achieved_rps=round(ok / seconds, 3) if seconds > 0 else 0.0,
            intended_rps=round(self.intended / seconds, 3) if seconds > 0 else 0.0,
            error_rate=round((total - ok) / total, 6) if total else 0.0,
            outcomes=outcomes, out_of_range=self.out_of_range, peak_in_flight=self.peak_in_flight,
            seconds=round(seconds, 3),
            response_ms=self.hists["response_ms"].summary(), service_ms=self.hists["service_ms"].summary(),
            send_lag_ms=self.hists["send_lag_ms"].summary(),
            init_ms=init.summary() if init.total else None,
            cold_starts=self.cold_starts, peak_rss_mb=round(self.peak_rss_mb, 2) if self.peak_rss_mb else None,
            retries=self.retries,
            connect_ms=connect.summary() if connect.total else None,
            connections_opened=self.connections["connections_opened"],
            connections_before_start=self.connections["connections_before_start"],
            tls_resumed=self.connections["tls_resumed"],
            series=self._series(),
            status="failed" if self.failure else "ok",
            failure=self.failure or None,
            slowest=self.slow.run(),
            slowest_by_minute=self.slow.minutes(),
            throttled_by_reason=self._throttled_by_reason(),
            throttle_series=tuple((t, dict(self.throttles[t])) for t in sorted(self.throttles)),
            **self._platform_fields(),
        )
        self._cached = (planned_s, group)
        return group


    def _throttled_by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for counts in self.throttles.values():
            for reason, n in counts.items():
                out[reason] = out.get(reason, 0) + n
        return out

    def _platform_fields(self) -> dict[str, Any]:
        """The platform's clocks (Lambda REPORT), memory and cost; nothing for platforms without them."""
        out: dict[str, Any] = {}
        for name in ("platform_ms", "billed_ms", "init_duration_ms", "ttfb_ms", "ttlb_ms"):
            if self.hists[name].total:
                out[name] = self.hists[name].summary()
        if self.report_memory_mb:
            out["max_memory_used_mb"] = self.report_memory_mb
        counters = self.lambda_counters
        if counters:
            from orchestrator.analysis.cost import group_cost

            cost = group_cost(counters)
            if cost is not None:
                out["cost"] = cost
                out["cost_per_million_usd"] = cost["per_million_usd"]
            if counters.get("stream_bytes"):
                out["stream_bytes"] = int(counters["stream_bytes"])
            out["reports_missing"] = int(counters.get("report_missing", 0))
            out["reports_truncated"] = int(counters.get("report_truncated", 0))
        return out

    def _series(self) -> tuple[tuple[int, int, int, int], ...]:
        if not self._seconds:
            return ()
        seconds, series = self._seconds, self.series
        upto = seconds[-1] - SEAL_S
        if upto > self._sealed_upto:
            lo, hi = bisect.bisect_left(seconds, self._sealed_upto), bisect.bisect_left(seconds, upto)
            self._sealed += tuple((t, *series[t]) for t in seconds[lo:hi])  # type: ignore[misc]
            self._sealed_upto = upto
        tail = seconds[bisect.bisect_left(seconds, self._sealed_upto):]
        return self._sealed + tuple((t, *series[t]) for t in tail)  # type: ignore[misc]


class Slowest:
    """The K slowest requests of a group over the run and in each minute (K: the most any interval
    brought); a heap of K per list, so memory is K per minute of the run."""

    __slots__ = ("k", "n", "all", "by_minute")

    def __init__(self) -> None:
        self.k = 0
        self.n = 0  # tie-breaker: records never compare
        self.all: list[tuple[float, int, dict[str, Any]]] = []
        self.by_minute: dict[int, list[tuple[float, int, dict[str, Any]]]] = {}

    def add(self, records: Sequence[dict[str, Any]]) -> None:
        self.k = max(self.k, len(records))
        for record in records:
            self.n += 1
            entry = (float(record["response_ms"]), self.n, record)
            self._push(self.all, entry)
            self._push(self.by_minute.setdefault(int(record["due"]) // 60 * 60, []), entry)

    def _push(self, heap: list[tuple[float, int, dict[str, Any]]], entry: tuple[float, int, dict[str, Any]]) -> None:
        if len(heap) < self.k:
            heapq.heappush(heap, entry)
        elif entry[0] > heap[0][0]:
            heapq.heapreplace(heap, entry)

    def run(self) -> tuple[dict[str, Any], ...]:
        return tuple(r for _, _, r in sorted(self.all, reverse=True))

    def minutes(self) -> tuple[dict[str, Any], ...]:
        return tuple({"minute": m, "requests": [r for _, _, r in sorted(self.by_minute[m], reverse=True)]}
                     for m in sorted(self.by_minute))


SEAL_S = 10
STALLED = "generator stalled: behind its schedule past late_bound, the due arrivals were skipped, not sent"
LATE_REDISPATCH = "re-dispatched remainder started late: what was due before it began was not replayed"
CONNECTION_COUNTERS = ("connections_opened", "connections_before_start", "tls_resumed")  # Group fields
# The aws-lambda invoker's counters a group sums for its cost and REPORT accounting.
LAMBDA_COUNTERS = ("billed_requests", "billed_requests_cold", "gb_s", "gb_s_cold", "cost_usd", "cost_usd_cold",
                   "request_usd", "report_missing", "report_truncated", "billed_requests_provisioned", "gb_s_provisioned",
                   "stream_bytes", "stream_billable_bytes", "stream_usd")
OUTCOME_INDEX = {name: i for i, name in enumerate(OUTCOME_NAMES)}


def _peak_in_flight(iv: Interval) -> int:
    peak = getattr(iv, "peak_in_flight", None)
    return int(peak if peak is not None else getattr(iv, "max_in_flight", 0))


class Collector:
    """Accumulates intervals of one run; ``result()`` can be called at any time (live view)."""

    def __init__(self, run_id: str, phase_seconds: dict[str, float] | None = None) -> None:
        self.run_id = run_id
        self.phase_seconds = phase_seconds or {}
        self.seen: set[tuple[str, int, int]] = set()
        self.groups: dict[GroupKey, GroupState] = {}
        self.warmup_intended = 0
        self.warmup_completed = 0
        self.interval_gaps: list[Gap] = []
        self._gap_spans: list[tuple[float, float]] = []  # (t0, t1) of the interval of each of interval_gaps
        self.duplicates = 0
        self.covered: dict[tuple[str, int], int] = {}  # (shard, attempt) → highest seq a rollup brought
        self.bad = BadRecords()  # records left out as unreadable (here, and as readers report them)

        # One attempt is one execution: (shard, attempt) → when its pacing loop began, and the intervals
        # dropped because another execution of the same attempt (a replayed task) sent them.
        self.started: dict[tuple[str, int], float] = {}
        self.reruns: dict[tuple[str, int], int] = {}


    def add(self, iv: Interval) -> None:
        """IntervalSink: count one interval (a duplicate or an unreadable one is not counted)."""
        self.take(iv)

    def close(self) -> None:
        """IntervalSink: the collector keeps its groups; ``result()`` reads them."""

    def take(self, iv: Interval) -> bool:
        """Add one interval; False when it is a duplicate of one already counted, comes from a second
        execution of the same shard attempt (counted in ``reruns`` and reported by ``problems()``), or is
        unreadable (a histogram that does not decode: counted in ``bad``, the rest of the run unharmed).
        The session's gate: only what the collector takes reaches the other sinks."""
        if iv.started > 0:
            first = self.started.setdefault((iv.shard_id, iv.attempt), iv.started)
            if first != iv.started:
                self.reruns[(iv.shard_id, iv.attempt)] = self.reruns.get((iv.shard_id, iv.attempt), 0) + 1
                self.duplicates += 1
                return False
        if iv.key in self.seen or iv.seq <= self.covered.get((iv.shard_id, iv.attempt), -1):
            self.duplicates += 1
            return False
        try:
            added = self._add(iv, None)
        except SchemaError as exc:
            self.bad.add(f"interval {iv.shard_id}#{iv.attempt} seq {iv.seq}: {exc}")
            return False
        self.seen.add(iv.key)
        return added

    def add_rollup(self, rollup: Rollup) -> bool:
        """Add the intervals 0..upto of one shard attempt, compacted in the store (orchestrator/run/rollup.py).
        Rollups are taken before any interval of their attempt, so nothing is counted twice."""
        if rollup.key in self.covered:
            return False
        try:
            added = self._add(rollup.interval, rollup.series)
        except SchemaError as exc:
            self.bad.add(f"rollup {rollup.key[0]}#{rollup.key[1]}: {exc}")
            return False
        self.covered[rollup.key] = rollup.upto
        if rollup.interval.started > 0:
            self.started.setdefault(rollup.key, rollup.interval.started)
        return added

    def _add(self, iv: Interval, series: dict[int, list[int]] | None) -> bool:
        key = (iv.region, iv.target, iv.runtime, iv.phase)
        if iv.warmup:
            self.warmup_intended += iv.intended
            self.warmup_completed += iv.completed
        else:
            state = self.groups.get(key)
            if state is None:
                state = GroupState()
            state.add(iv, series)  # all or nothing (a histogram that does not decode: SchemaError)
            self.groups.setdefault(key, state)
        if iv.gap_s > 0:
            self._interval_gaps(iv)
        if iv.status == "failed":  # the target's group is failed, warm-up shard or measured
            failed = self._state(key)
            if not failed.failure:
                failed.failure = iv.failure or "failed"
                failed.workload = failed.workload or iv.workload
                failed._cached = None
        return True

    def _interval_gaps(self, iv: Interval) -> None:
        """The gaps an interval reports: a late start (a re-dispatched remainder's replays nothing) and a
        stall mid-run (``stall_s``: the generator was behind its schedule past its bound and skipped what
        was due).  Each keeps the interval's span, to be reconciled with the dispatcher's gaps."""
        def add(seconds: float, reason: str) -> None:
            self.interval_gaps.append(Gap(region=iv.region, shard=iv.shard_id, target=iv.target,
                                          seconds=round(seconds, 3), attempt=iv.attempt, reason=reason))
            self._gap_spans.append((iv.t0, iv.t1))

        if iv.status == "expired":
            add(iv.gap_s, "expired before it could start")
            return
        late = iv.gap_s - iv.stall_s
        if late > 0.0005:
            add(late, LATE_REDISPATCH if iv.attempt else "started late")
        if iv.stall_s > 0:
            add(iv.stall_s, STALLED)

    def _reconciled(self, theirs: Sequence[Gap]) -> tuple[list[Gap], list[Gap]]:
        """Each lost window reported once.  The dispatcher reports an attempt it judged lost (``start``:
        the end of what it had read).  A stall of that attempt inside that window is the same loss: it is
        dropped, and where the attempt's interval shows load until the stall began, the dispatcher's gap
        begins there.  A re-dispatched remainder's late start continues the gap of the attempt it
        replaces: added to it (``late_start_s``), once."""
        out = list(theirs)
        index = {(g.shard, g.attempt): i for i, g in enumerate(out) if g.start is not None}
        ours: list[Gap] = []
        for g, (_, t1) in zip(self.interval_gaps, self._gap_spans, strict=True):
            if g.reason == STALLED and (g.shard, g.attempt) in index:
                i = index[(g.shard, g.attempt)]
                d = out[i]
                assert d.start is not None
                end, began = d.start + d.seconds, t1 - g.seconds
                if began < end and t1 > d.start:
                    if began > d.start:
                        out[i] = dataclasses.replace(d, seconds=round(end - began, 3), start=round(began, 3))
                    continue
            elif g.reason == LATE_REDISPATCH and g.attempt and (g.shard, g.attempt - 1) in index:
                i = index[(g.shard, g.attempt - 1)]
                d = out[i]
                if d.redispatched_at is not None:
                    if d.late_start_s is None:
                        out[i] = dataclasses.replace(d, seconds=round(d.seconds + g.seconds, 3),
                                                     late_start_s=g.seconds)
                    continue
            ours.append(g)
        return ours, out

    def _state(self, key: GroupKey) -> GroupState:
        state = self.groups.get(key)
        if state is None:
            state = self.groups[key] = GroupState()
        return state

    def failures(self) -> list[str]:
        """One line per failed group (what the run's ``errors`` list adds)."""
        return [f"{target} ({phase}, {region}): {state.failure}" for (region, target, _, phase), state
                in sorted(self.groups.items()) if state.failure]

    def problems(self) -> list[str]:
        """What the intervals say went wrong outside the measurements (for the result's errors)."""
        return [f"shard {sid}#{attempt} was executed more than once (a replayed task?): {n} interval(s) of "
                f"the other execution dropped, not counted" for (sid, attempt), n in sorted(self.reruns.items())]

    def add_all(self, intervals: Iterable[Interval]) -> None:
        for iv in intervals:
            self.add(iv)

    def group_rows(self) -> list[Group]:
        return [state.row(key, self.phase_seconds.get(key[3], 0.0)) for key, state in sorted(self.groups.items())]

    def result(self, gaps: Sequence[Gap] = (), slo: Sequence[SloVerdict] = (), **extra: Any) -> RunResult:
        """The run's result: groups from the intervals, gaps from them and from the dispatcher."""
        ours, theirs = self._reconciled(gaps)
        all_gaps = sorted([*ours, *theirs], key=lambda g: (g.shard, g.attempt or 0, g.reason))
        failures = self.failures()
        if failures:  # a failed target is an error of the run (exit 2), beside what the others measured
            extra["errors"] = tuple(dict.fromkeys([*extra.get("errors", ()), *failures]))
        return RunResult(
            run_id=self.run_id,
            groups=tuple(self.group_rows()),
            warmup_intended=self.warmup_intended,
            warmup_completed=self.warmup_completed,
            gaps=tuple(all_gaps),
            slo=tuple(slo),
            duplicates_dropped=self.duplicates,
            bad_records=self.bad.count,
            bad_record_reasons=tuple(self.bad.reasons),
            **extra,
        )
