"""Every Prometheus metric fnbench exports, with its labels and buckets.

Metrics are fed from Interval records (aggregated state), never per request: the hot path
stays free of Prometheus calls.  HDR histograms are re-bucketed into classic Prometheus
histograms with fine log buckets (ratio 2^(1/4), ~19 % wide) from 50 µs to 120 s, so
``histogram_quantile`` over summed buckets is accurate to about one bucket.

Counters and histograms are exported on the intervals' own time line, so that ``rate()`` over
any window of a few scrapes reads the rate the run achieved.  An Interval covers [t0, t1) and
arrives after t1.  Exporting its counts when it arrives made counters step once per flush at
times unrelated to the scrapes (Prometheus' extrapolation at the window edges turns such steps
into rates 20-40 % off, and a series that starts at its first step loses that step), and the
old re-bucketing (hdrh's recorded iterator, ~35 ms a histogram) kept observe() seconds behind
the run under load, so the counters trailed the load further and further.  Now:

- Each label set is exported as it stood at a time ``tau`` that lags the scrape by about 1.25
  flush spans plus ``LAG_MARGIN_S`` (so every interval covering ``tau`` has normally arrived),
  with each interval's counts spread evenly over its span, and every sample carries ``tau`` as
  its timestamp: a scrape each second gives a sample each second of exact counts.  The board
  ends that lag before "now", and shows the truth up to there.
- ``tau`` sits on a one-second grid phase-locked to the scrapes that arrive on time, so a
  scrape that reaches a busy process late still gets an evenly spaced timestamp; a lag grown by
  a late flush is taken up 0.1 s a tick.  ``tau`` never moves back: counters never decrease,
  and a second scrape in the same tick repeats the same samples (Prometheus drops duplicates).
  An interval that arrives after ``tau`` passed its t0 is added at once (a step, not a loss).
- A shard's final interval also spans the drain of in-flight requests and the invoker's close;
  its counts are spread at the shard's previous pace from t0 (within [t0, t1]).  Finished label
  sets keep their pace to their last t1; at exit ``serve`` waits briefly for a scrape of their
  totals (``wait_scraped``), jumping to them if time runs short.
- Samples with client timestamps are not marked stale by Prometheus: after a run its counters
  keep their last value for the lookback window (5 min), and rate() over them is empty.
- Gauges (intended rate and in-flight of the last interval) are levels as of now: no timestamp.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar

from workers import histograms
from workers.contract import Interval

LABELS = ("run", "region", "target", "runtime", "phase")
BUCKETS_S: tuple[float, ...] = tuple(round(50e-6 * 2 ** (k / 4), 9) for k in range(0, 4 * 22))
_LE = (*(repr(b) for b in BUCKETS_S), "+Inf")
HISTOGRAMS = {
    "fnbench_response_time_seconds": ("response_us", "Response time from the due time (includes queueing; CO-correct)."),
    "fnbench_service_time_seconds": ("service_us", "Service time from the actual send to the response."),
    "fnbench_send_lag_seconds": ("send_lag_us", "Generator health: actual send time minus due time."),
    "fnbench_init_time_seconds": ("init_us", "Cold start: spawn or init to ready."),
    "fnbench_connect_time_seconds": ("connect_us", "TCP connect and TLS handshake of each new connection."),
    "fnbench_platform_duration_seconds": ("platform_us", "The platform's own Duration per invocation (Lambda REPORT)."),
    "fnbench_billed_duration_seconds": ("billed_us", "Billed Duration per invocation (Lambda REPORT, + Billed Restore Duration)."),
    "fnbench_platform_init_duration_seconds": ("init_duration_us", "The platform's Init Duration (Lambda REPORT, cold starts)."),
    "fnbench_time_to_first_byte_seconds": ("ttfb_us", "Streamed responses: due time to the first payload byte."),
    "fnbench_time_to_last_byte_seconds": ("ttlb_us", "Streamed responses: due time to the end of the stream."),
}
EXEMPLAR_HISTOGRAM = "fnbench_response_time_seconds"  # its buckets carry the slowest requests' ids
# Invoker counters (Interval.counters) exported as Prometheus counters: Lambda billing.
PLATFORM_COUNTERS = {
    "gb_s": ("fnbench_lambda_gb_seconds", "GB-seconds billed (Billed Duration x Memory Size, from REPORT lines)."),
    "cost_usd": ("fnbench_lambda_cost_usd", "Compute cost in USD (AWS Lambda Power Tuning's formula, no request fee)."),
    "request_usd": ("fnbench_lambda_request_cost_usd", "Request fees in USD for the invocations billed."),
    "billed_requests": ("fnbench_lambda_billed_requests", "Invocations billed (those with a REPORT line): the denominator of cost per invocation."),
}
# Beyond one flush span, how long an interval may take from its end (t1) to observe(): the
# flush itself running late on a busy event loop, the sink, the local queue or the datagram.
LAG_MARGIN_S = 1.0  # at least; 1.5 times the slowest arrival seen, up to _MARGIN_MAX_S
_MARGIN_MAX_S = 10.0
# Scrapes reach collect() late by a varying delay (a busy process); exported times sit on a grid
# of whole seconds phase-locked to the earliest recent scrapes, so samples stay evenly spaced
# (rate() extrapolates badly from unevenly spaced samples at its window edges).
_ARRIVALS_KEPT = 16
_LAG_STEP_S = 0.1  # a grown lag is taken up a tenth of a second a tick: no gap between samples
_GRID_GUARD_S = 0.02
LINGER_MAX_S = 10.0  # at exit, the longest wait for Prometheus to scrape a run's final values
# Without scrapes (nobody reads /metrics) nothing moves tau, so the intervals' parts would pile up:
# parts this far behind any tau a later scrape could show are folded into the matured counts as
# they arrive (a scrape would have done the same), which bounds a series to ~a minute of parts.
_FOLD_BEHIND_S = 60.0
# A finished label set (every shard final) is dropped this long after its last interval ended:
# well past Prometheus' 5-minute lookback, so a worker that serves runs for weeks stays bounded.
SERIES_KEPT_S = 900.0


# HDR bucket's highest value (µs) → Prometheus bucket, every bucket of fnbench's layout filled at the
# first use (a cache that grew with each new latency made a long-lived process's memory creep).
_BUCKET_OF: dict[int, int] = {}


def _bucket_of() -> dict[int, int]:
    if not _BUCKET_OF:
        _BUCKET_OF.update((v, bisect.bisect_left(BUCKETS_S, v / 1e6)) for v in histograms.layout().highest)
    return _BUCKET_OF


class _Hist:
    __slots__ = ("buckets", "sum_s", "count")

    def __init__(self) -> None:
        self.buckets = [0.0] * (len(BUCKETS_S) + 1)
        self.sum_s = 0.0
        self.count = 0.0

    def add_encoded(self, encoded: str) -> None:
        """Re-bucket an encoded HDR histogram (µs).  ``histograms.buckets`` scans the counts at C
        speed and each HDR bucket is mapped once (hdrh's recorded iterator took ~35 ms a histogram,
        which kept the metrics seconds behind the run under load)."""
        buckets = self.buckets
        bucket_of = _BUCKET_OF or _bucket_of()
        for value_us, n in histograms.buckets(encoded):
            i = bucket_of.get(value_us)
            if i is None:  # another layout's value (a foreign histogram)
                i = bisect.bisect_left(BUCKETS_S, value_us / 1e6)
            buckets[i] += n
            self.sum_s += value_us / 1e6 * n
            self.count += n

    def add(self, other: _Hist, share: float = 1.0) -> None:
        buckets = self.buckets
        for i, n in enumerate(other.buckets):
            if n:
                buckets[i] += n * share
        self.sum_s += other.sum_s * share
        self.count += other.count * share

    def copy(self) -> _Hist:
        h = _Hist()
        h.add(self)
        return h

    def cumulative(self) -> list[tuple[str, float]]:
        out, total = [], 0.0
        for le, n in zip(_LE, self.buckets, strict=True):
            total += n
            out.append((le, total))
        return out


@dataclass
class _Counts:
    """What one interval (or a sum of them) adds to a label set's counters and histograms."""

    requests: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    intended: float = 0.0
    out_of_range: float = 0.0
    hists: dict[str, _Hist] = field(default_factory=dict)
    platform: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # PLATFORM_COUNTERS

    def add(self, other: _Counts, share: float = 1.0) -> None:
        for outcome, n in other.requests.items():
            self.requests[outcome] += n * share
        for name, v in other.platform.items():
            self.platform[name] += v * share
        self.intended += other.intended * share
        self.out_of_range += other.out_of_range * share
        for name, h in other.hists.items():
            self.hists.setdefault(name, _Hist()).add(h, share)

    def copy(self) -> _Counts:
        c = _Counts()
        c.add(self)
        return c


@dataclass
class _Part:
    t0: float
    t1: float  # the end of the span the counts are spread over
    counts: _Counts

    def share(self, tau: float) -> float:
        if self.t1 <= self.t0:
            return 1.0 if tau >= self.t1 else 0.0
        return min(1.0, max(0.0, (tau - self.t0) / (self.t1 - self.t0)))


@dataclass
class _Shard:
    final: bool = False
    pace: float = 0.0  # responses per second over its last regular interval


class _Series:
    """One label set: counts up to ``tau`` (matured + shares of the pending intervals)."""

    def __init__(self) -> None:
        self.matured = _Counts()
        self.pending: list[_Part] = []
        self.shards: dict[tuple[str, int], _Shard] = {}
        self.last_t1 = -math.inf
        self.lag = 0.0  # seconds tau stays behind the scrape grid; only grows, in half seconds
        self.lag_now = 0.0  # the lag in use: follows a grown lag by _LAG_STEP_S a tick
        self.tick = -math.inf
        self.tau = -math.inf
        self.shown: tuple[float, _Counts] | None = None  # what the last scrape exported

    def add(self, iv: Interval, counts: _Counts, delay: float = 0.0) -> None:
        """``delay``: how long after its t1 the interval reached observe()."""
        shard = self.shards.setdefault((iv.shard_id, iv.attempt), _Shard())
        t0 = max(iv.t0, iv.started) if iv.seq == 0 and iv.started else iv.t0
        t1 = max(iv.t1, t0)
        n = sum(iv.outcomes.values())
        if iv.final:
            shard.final = True
            if shard.pace > 0:  # the tail of the pacing, then drain and close: spread at the pace
                t1 = min(t1, t0 + n / shard.pace)
        if not iv.final or not self.lag:
            # A constant lag keeps the samples as evenly spaced as the scrapes: it grows only
            # in half seconds,
            # when a flush ran a quarter later than any before, or an interval took longer to arrive.
            margin = min(max(LAG_MARGIN_S, 1.5 * delay), _MARGIN_MAX_S)
            self.lag = max(self.lag, math.ceil((1.25 * (t1 - t0) + margin) * 2) / 2)
            if not iv.final and t1 > t0:
                shard.pace = n / (t1 - t0)
        self.last_t1 = max(self.last_t1, iv.t1)
        self.pending.append(_Part(t0, t1, counts))
        self.fold(iv.t1 + delay)

    def fold(self, now: float) -> None:
        """Fold the parts that every later scrape's tau has passed into the matured counts.  A
        scrape at ``now`` or later shows tau >= now - 1 - lag (tau never moves back), and the lag
        grows by at most its margin; parts older than that by a minute more are matured already."""
        horizon = now - 2 * self.lag - _MARGIN_MAX_S - _FOLD_BEHIND_S
        if self.pending and self.pending[0].t1 <= horizon:
            keep = []
            for part in self.pending:
                if part.t1 <= horizon:
                    self.matured.add(part.counts)
                else:
                    keep.append(part)
            self.pending = keep
            self.shown = None

    def at(self, tick: float, now: float, finishing: bool = False) -> tuple[float, _Counts]:
        """(tau, counts as of tau) for a scrape at ``now`` (``tick``: its point on the scrape grid);
        tau never moves back.  ``finishing``: the process is about to exit, so a finished label set
        jumps to its totals."""
        if tick > self.tick:
            self.tick = tick
            self.lag_now = self.lag if not self.lag_now else min(self.lag, self.lag_now + _LAG_STEP_S)
        target = tick - self.lag_now
        if finishing and self.complete_pending():
            target = max(target, self.last_t1)
        tau = max(self.tau, min(target, now))
        if self.shown is not None and tau == self.tau:
            return self.shown
        self.tau = tau
        keep = []
        for part in self.pending:
            if part.t1 <= tau:
                self.matured.add(part.counts)
            else:
                keep.append(part)
        self.pending = keep
        counts = self.matured.copy()
        for part in keep:
            share = part.share(tau)
            if share > 0:
                counts.add(part.counts, share)
        for outcome in {o for p in keep for o in p.counts.requests}:
            counts.requests[outcome] += 0.0  # an outcome's series exists from its first interval on
        for name in {h for p in keep for h in p.counts.hists}:
            counts.hists.setdefault(name, _Hist())
        self.shown = (tau, counts)
        return self.shown

    def complete_pending(self) -> bool:
        return bool(self.shards) and all(s.final for s in self.shards.values())

    def complete_shown(self) -> bool:
        return self.complete_pending() and self.shown is not None and self.shown[0] >= self.last_t1


class IntervalMetrics(Collector):
    """A Prometheus collector fed with Interval records (an IntervalSink); thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock  # epoch seconds, the clock of the intervals' t0/t1
        self._lock = threading.Lock()
        self._series: dict[tuple[str, ...], _Series] = {}
        # The response-time buckets' exemplars: per label set, per bucket, the latest slow request
        # with an id (workers.contract.Interval.slowest), shown in OpenMetrics expositions.
        self._exemplars: dict[tuple[str, ...], dict[int, Exemplar]] = {}
        self._intended_rps: dict[tuple[str, ...], float] = {}
        self._in_flight: dict[tuple[str, ...], int] = {}
        self._scrapes: deque[float] = deque(maxlen=_ARRIVALS_KEPT)
        self._finishing = False
        self._final_scrapes = 0  # consecutive scrapes that exported every finished label set's totals

    def close(self) -> None:
        """IntervalSink: the series stay exported until the process ends (Prometheus scrapes the last values)."""

    def add(self, iv: Interval) -> None:
        """IntervalSink: one interval into the exported series (warm-up is not exported)."""
        if iv.warmup:
            return
        labels = (iv.run_id, iv.region, iv.target, iv.runtime, iv.phase)
        counts = _Counts(intended=iv.intended, out_of_range=iv.out_of_range)
        for outcome, n in iv.outcomes.items():
            counts.requests[outcome] += n
        for name, (attr, _) in HISTOGRAMS.items():
            encoded = getattr(iv, attr)
            if encoded:
                counts.hists.setdefault(name, _Hist()).add_encoded(encoded)
        if iv.counters:
            for name in PLATFORM_COUNTERS:
                if name in iv.counters:
                    counts.platform[name] += iv.counters[name]
        with self._lock:
            if iv.final:  # totals change: only scrapes from now on can have exported them
                self._final_scrapes = 0
            now = self._clock()
            self._series.setdefault(labels, _Series()).add(iv, counts, now - iv.t1)
            if iv.slowest:
                self._keep_exemplars(labels, iv.slowest)
            self._forget_finished(now)
            span = iv.t1 - iv.t0
            if span > 0:
                self._intended_rps[(*labels, iv.shard_id)] = 0.0 if iv.final else iv.intended / span
            self._in_flight[(*labels, iv.shard_id)] = 0 if iv.final else iv.peak_in_flight

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        with self._lock:
            now = self._clock()
            self._forget_finished(now)
            self._scrapes.append(now)
            tick = self._tick(now)
            shown = {labels: s.at(tick, now, self._finishing) for labels, s in self._series.items()}
            self._final_scrapes = self._final_scrapes + 1 if self._all_final_shown() else 0
            requests = CounterMetricFamily(
                "fnbench_requests", "Requests by outcome (one outcome per request).", labels=[*LABELS, "outcome"]
            )
            intended = CounterMetricFamily("fnbench_intended_requests", "Requests due by the schedule.", labels=list(LABELS))
            oor = CounterMetricFamily(
                "fnbench_out_of_range_values", "Latency values above the histogram range (clamped, counted).", labels=list(LABELS)
            )
            hists = {name: HistogramMetricFamily(name, doc, labels=list(LABELS)) for name, (_, doc) in HISTOGRAMS.items()}
            platform = {key: CounterMetricFamily(name, doc, labels=list(LABELS)) for key, (name, doc) in PLATFORM_COUNTERS.items()}
            for labels, (tau, c) in shown.items():
                for outcome, n in c.requests.items():
                    requests.add_metric([*labels, outcome], n, timestamp=tau)
                intended.add_metric(list(labels), c.intended, timestamp=tau)
                oor.add_metric(list(labels), c.out_of_range, timestamp=tau)
                for name, h in c.hists.items():
                    buckets: list[Any] = h.cumulative()
                    if name == EXEMPLAR_HISTOGRAM and labels in self._exemplars:
                        for i, ex in self._exemplars[labels].items():
                            buckets[i] = (*buckets[i], ex)
                    hists[name].add_metric(list(labels), buckets, h.sum_s, timestamp=tau)
                for name, v in c.platform.items():
                    platform[name].add_metric(list(labels), v, timestamp=tau)
            yield requests
            yield from (family for name, family in platform.items() if any(name in c.platform for _, c in shown.values()))
            yield intended
            yield oor
            yield from hists.values()
            yield from self._gauges()

    def _keep_exemplars(self, labels: tuple[str, ...], slowest: list[dict[str, object]]) -> None:
        """A newer interval's request replaces a bucket's exemplar; within one interval the slowest
        (the list comes slowest first) wins."""
        kept = self._exemplars.setdefault(labels, {})
        taken: set[int] = set()
        for rec in slowest:
            if rec.get("outcome") != "ok":  # the response histogram holds successful responses only
                continue
            trace, rid = str(rec.get("trace_id", "")), str(rec.get("request_id", ""))
            if not (trace or rid):
                continue
            # OpenMetrics allows 128 characters of exemplar labels.
            ids = {"trace_id": trace} if trace else {"request_id": rid[:100]}
            value = float(rec["response_ms"]) / 1e3  # type: ignore[arg-type]
            bucket = bisect.bisect_left(BUCKETS_S, value)
            if bucket in taken:
                continue
            taken.add(bucket)
            kept[bucket] = Exemplar(ids, value, round(float(rec["due"]) + value, 3))  # type: ignore[arg-type]

    def _forget_finished(self, now: float) -> None:
        """Drop the label sets whose shards all ended more than SERIES_KEPT_S ago (and their gauges)."""
        gone = [labels for labels, s in self._series.items()
                if s.complete_pending() and s.last_t1 < now - SERIES_KEPT_S]
        for labels in gone:
            del self._series[labels]
            self._exemplars.pop(labels, None)
        if gone:
            dropped = set(gone)
            for src in (self._intended_rps, self._in_flight):
                for key in [k for k in src if k[:-1] in dropped]:
                    del src[key]

    def _all_final_shown(self) -> bool:
        finished = [s for s in self._series.values() if s.complete_pending()]
        return bool(finished) and all(s.complete_shown() for s in finished)

    def _tick(self, now: float) -> float:
        """The latest point <= now of a one-second grid that starts just before the earliest of
        the recent scrapes (those that came on time): late scrapes map to the same points."""
        fractions = sorted(t % 1.0 for t in self._scrapes)
        if len(fractions) == 1:
            start = fractions[0]
        else:  # the on-time scrapes follow the widest empty stretch of the circle
            gaps = [(b - a) % 1.0 for a, b in zip(fractions, [*fractions[1:], fractions[0]], strict=True)]
            start = fractions[(gaps.index(max(gaps)) + 1) % len(fractions)]
        phase = start - _GRID_GUARD_S
        return phase + math.floor(now - phase)

    def _gauges(self) -> Iterator[GaugeMetricFamily]:
        rate = GaugeMetricFamily("fnbench_intended_rps", "Intended request rate over the last interval.", labels=list(LABELS))
        flight = GaugeMetricFamily("fnbench_in_flight", "Peak requests in flight over the last interval.", labels=list(LABELS))
        for src, fam in ((self._intended_rps, rate), (self._in_flight, flight)):
            summed: dict[tuple[str, ...], float] = defaultdict(float)
            for key, v in src.items():
                summed[key[:-1]] += v
            for key, v in summed.items():
                fam.add_metric(list(key), v)
            yield fam

    def wait_scraped(self, timeout_s: float | None = None) -> bool:
        """Wait until a scrape has exported the final values of every finished label set.

        Finished label sets keep their regular pace to the end (so rate() stays right up to the
        last t1) while time allows; two and a half scrape periods before the deadline they jump to
        their totals.  Two consecutive scrapes must export them.  Without a timeout the deadline
        is when the pace reaches the end plus three scrape periods, at most LINGER_MAX_S; nothing
        is awaited when nothing ever scraped this collector.  True when the final values were
        exported."""
        start = time.monotonic()
        with self._lock:
            scrapes = list(self._scrapes)
            if not scrapes:
                return False
            recent = scrapes[-4:]
            gaps = [b - a for a, b in zip(recent, recent[1:], strict=False)]
            period = max(gaps) if gaps else 1.0
            if timeout_s is None:
                now = self._clock()
                reach = max((s.last_t1 + s.lag_now + 1.0 - now for s in self._series.values() if s.complete_pending()),
                            default=0.0)
                timeout_s = min(LINGER_MAX_S, max(0.0, reach) + 3 * period + 0.5)
        jump_at = start + timeout_s - 2.5 * period - 0.25
        try:
            while True:
                now_m = time.monotonic()
                with self._lock:
                    if now_m >= jump_at:
                        self._finishing = True
                    # Twice: the first such scrape may have run past Prometheus' scrape timeout.
                    done = self._final_scrapes >= 2
                if done or now_m >= start + timeout_s:
                    return done
                time.sleep(0.05)
        finally:
            with self._lock:
                self._finishing = False


def serve(metrics: IntervalMetrics, port: int, addr: str = "127.0.0.1") -> CollectorRegistry:
    """Serve ``metrics`` on http://addr:port/metrics; raises OSError when the port is taken.

    At exit the process waits (briefly, see ``wait_scraped``) for Prometheus to scrape the final
    values of the runs it served, so a short run's last flush still reaches the board."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    start_http_server(port, addr=addr, registry=registry)

    def linger() -> None:  # not atexit: by then the server can no longer start request threads
        threading.main_thread().join()
        metrics.wait_scraped()

    threading.Thread(target=linger, name="fnbench-metrics-linger").start()
    return registry
