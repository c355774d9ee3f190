"""Every Prometheus metric fnbench exports, with its labels and buckets.

Metrics are fed from Interval records (aggregated state), never per request: the hot path
stays free of Prometheus calls.  HDR histograms are re-bucketed into classic Prometheus
histograms with fine log buckets (ratio 2^(1/4), ~19 % wide) from 50 µs to 120 s, so
``histogram_quantile`` over summed buckets is accurate to about one bucket.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from collections.abc import Iterator

from hdrh.histogram import HdrHistogram
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from workers.contract import Interval

LABELS = ("run", "region", "target", "runtime", "phase")
BUCKETS_S: tuple[float, ...] = tuple(round(50e-6 * 2 ** (k / 4), 9) for k in range(0, 4 * 22))
HISTOGRAMS = {
    "fnbench_response_time_seconds": ("response_us", "Response time from the due time (includes queueing; CO-correct)."),
    "fnbench_service_time_seconds": ("service_us", "Service time from the actual send to the response."),
    "fnbench_send_lag_seconds": ("send_lag_us", "Generator health: actual send time minus due time."),
    "fnbench_init_time_seconds": ("init_us", "Cold start: spawn or init to ready."),
}


class _Hist:
    __slots__ = ("buckets", "sum_s", "count")

    def __init__(self) -> None:
        self.buckets = [0] * (len(BUCKETS_S) + 1)
        self.sum_s = 0.0
        self.count = 0

    def add_encoded(self, encoded: str) -> None:
        hist = HdrHistogram.decode(encoded)
        for item in hist.get_recorded_iterator():
            seconds = hist.get_highest_equivalent_value(item.value_iterated_to) / 1e6
            n = item.count_at_value_iterated_to
            self.buckets[bisect.bisect_left(BUCKETS_S, seconds)] += n
            self.sum_s += seconds * n
            self.count += n


class IntervalMetrics(Collector):
    """A Prometheus collector fed with Interval records; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, ...], int] = defaultdict(int)
        self._intended: dict[tuple[str, ...], int] = defaultdict(int)
        self._hists: dict[str, dict[tuple[str, ...], _Hist]] = {name: {} for name in HISTOGRAMS}
        self._intended_rps: dict[tuple[str, ...], float] = {}
        self._in_flight: dict[tuple[str, ...], int] = {}
        self._out_of_range: dict[tuple[str, ...], int] = defaultdict(int)

    def observe(self, iv: Interval) -> None:
        if iv.warmup:
            return
        labels = (iv.run_id, iv.region, iv.target, iv.runtime, iv.phase)
        with self._lock:
            for outcome, n in iv.outcomes.items():
                self._requests[(*labels, outcome)] += n
            self._intended[labels] += iv.intended
            self._out_of_range[labels] += iv.out_of_range
            for name, (attr, _) in HISTOGRAMS.items():
                encoded = getattr(iv, attr)
                if encoded:
                    self._hists[name].setdefault(labels, _Hist()).add_encoded(encoded)
            span = iv.t1 - iv.t0
            if span > 0:
                self._intended_rps[(*labels, iv.shard_id)] = 0.0 if iv.final else iv.intended / span
            self._in_flight[(*labels, iv.shard_id)] = 0 if iv.final else iv.peak_in_flight

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        with self._lock:
            requests = CounterMetricFamily(
                "fnbench_requests", "Requests by outcome (one outcome per request).", labels=[*LABELS, "outcome"]
            )
            for key, n in self._requests.items():
                requests.add_metric(list(key), n)
            yield requests
            intended = CounterMetricFamily("fnbench_intended_requests", "Requests due by the schedule.", labels=list(LABELS))
            for key, n in self._intended.items():
                intended.add_metric(list(key), n)
            yield intended
            oor = CounterMetricFamily(
                "fnbench_out_of_range_values", "Latency values above the histogram range (clamped, counted).", labels=list(LABELS)
            )
            for key, n in self._out_of_range.items():
                oor.add_metric(list(key), n)
            yield oor
            for name, (_, doc) in HISTOGRAMS.items():
                fam = HistogramMetricFamily(name, doc, labels=list(LABELS))
                for key, h in self._hists[name].items():
                    cumulative, buckets = 0, []
                    for bound, n in zip((*BUCKETS_S, float("inf")), h.buckets, strict=True):
                        cumulative += n
                        buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
                    fam.add_metric(list(key), buckets, h.sum_s)
                yield fam
            yield from self._gauges()

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


def serve(metrics: IntervalMetrics, port: int, addr: str = "127.0.0.1") -> CollectorRegistry:
    """Serve ``metrics`` on http://addr:port/metrics; raises OSError when the port is taken."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    start_http_server(port, addr=addr, registry=registry)
    return registry
