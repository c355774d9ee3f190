"""OTLP export: an IntervalSink that sends a run's measurements to an OpenTelemetry receiver.

Metrics (cumulative, one data point per label set and export): the counters of
``workers.metrics`` under the same names and bounded labels (run, region, target, runtime,
phase; outcome on requests), and each latency histogram as an OTLP *exponential* histogram in
seconds, merged exactly from the intervals' HDR data: every HDR bucket's count goes whole into
the exponential bucket that holds the HDR bucket's median value.  At ``SCALE`` 8 an exponential
bucket spans a factor 2^(1/256) (0.27 %), so a quantile read from it is within ±0.14 % of the
bucket's midpoint, on top of HDR's own 0.1 %: well inside 1 % of the HDR percentiles.  A label set
whose values span more than ``MAX_BUCKETS`` buckets is exported at a lower scale (pairs merged,
exactly, as the OTel SDK downscales).

Spans: the slowest requests of each interval (``Interval.slowest``) as CLIENT spans named
``fnbench.request``, from the due time to the response, with the trace id fnbench sent on the
wire (traceparent / X-Amzn-Trace-Id) when the request was sampled, else a new one, and as
attributes the platform's request id, the outcome, the service time and the Lambda REPORT numbers.

Where to: ``endpoint`` (``fnbench run --otlp-endpoint URL``: the base, /v1/metrics and /v1/traces
are added) or the standard ``OTEL_EXPORTER_OTLP_*`` variables (endpoint, headers, timeout, ...), read
by the OpenTelemetry SDK's OTLP/HTTP exporters (protobuf).  Exports run on a background thread every
``export_every_s``; a receiver that is down costs warnings, never the run's measurements.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import defaultdict
from typing import Any

from workers import histograms
from workers.contract import HISTOGRAMS, Interval
from workers.metrics import HISTOGRAMS as PROM_HISTOGRAMS
from workers.metrics import LABELS, PLATFORM_COUNTERS

log = logging.getLogger("fnbench.otlp")

SCALE = 8  # 2^(1/256) per bucket: ±0.14 % around a bucket's midpoint
MAX_BUCKETS = 4096  # beyond this span a label set's histogram is exported at a lower scale
FNBENCH_ENV = "FNBENCH_OTLP_ENDPOINT"  # what `fnbench run --otlp-endpoint` sets
ENDPOINT_ENVS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                 "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# Interval field (µs) → the metric's name (the Prometheus histogram's name) and description.
_FIELD_METRIC = {field: (name, doc) for name, (field, doc) in PROM_HISTOGRAMS.items()}
_KINDS = tuple(field for _, field, _ in HISTOGRAMS)


def configured(endpoint: str | None = None) -> str:
    """The endpoint export goes to: ``endpoint`` or the OTEL_* variable that names one ("" none)."""
    if endpoint:
        return endpoint
    return next((os.environ[v] for v in ENDPOINT_ENVS if os.environ.get(v)), "")


def index_of(value_s: float, scale: int = SCALE) -> int:
    """The exponential bucket (base 2^(2^-scale)) holding ``value_s``: (base^i, base^(i+1)]."""
    return math.ceil(math.log2(value_s) * (1 << scale)) - 1


def bucket_bounds(index: int, scale: int = SCALE) -> tuple[float, float]:
    base = 2.0 ** (2.0 ** -scale)
    return base ** index, base ** (index + 1)


class ExpHistogram:
    """A cumulative exponential histogram at SCALE, fed with HDR buckets (values in seconds)."""

    __slots__ = ("counts", "count", "sum", "zero", "min", "max")

    def __init__(self) -> None:
        self.counts: dict[int, int] = defaultdict(int)
        self.count = 0
        self.sum = 0.0
        self.zero = 0
        self.min = math.inf
        self.max = 0.0

    def add_encoded(self, encoded: str) -> None:
        for value_us, n in histograms.medians(encoded):
            self.add(value_us / 1e6, n)

    def add(self, value_s: float, n: int) -> None:
        if value_s <= 0:
            self.zero += n
        else:
            self.counts[index_of(value_s)] += n
        self.count += n
        self.sum += value_s * n
        self.min = min(self.min, value_s)
        self.max = max(self.max, value_s)

    def buckets(self) -> tuple[int, int, list[int]]:
        """(scale, offset, dense bucket counts), downscaled until the span fits MAX_BUCKETS."""
        if not self.counts:
            return SCALE, 0, []
        counts: dict[int, int] = dict(self.counts)
        scale = SCALE
        while max(counts) - min(counts) + 1 > MAX_BUCKETS:
            merged: dict[int, int] = defaultdict(int)
            for i, n in counts.items():
                merged[i >> 1] += n
            counts, scale = merged, scale - 1
        lo, hi = min(counts), max(counts)
        dense = [0] * (hi - lo + 1)
        for i, n in counts.items():
            dense[i - lo] = n
        return scale, lo, dense


class _Series:
    __slots__ = ("start", "requests", "intended", "platform", "hists")

    def __init__(self, start: float) -> None:
        self.start = start
        self.requests: dict[str, int] = defaultdict(int)
        self.intended = 0
        self.platform: dict[str, float] = defaultdict(float)
        self.hists: dict[str, ExpHistogram] = {}


class OtlpSink:
    """IntervalSink (and ``Concludes``): OTLP metrics and slowest-request spans of a run."""

    def __init__(self, run_id: str = "", endpoint: str | None = None, export_every_s: float = 5.0,
                 headers: dict[str, str] | None = None, timeout_s: float = 10.0) -> None:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        base = endpoint.rstrip("/") if endpoint else ""
        self.endpoint = base or configured()
        self.metrics = OTLPMetricExporter(endpoint=f"{base}/v1/metrics" if base else None, headers=headers,
                                          timeout=timeout_s)
        self.traces = OTLPSpanExporter(endpoint=f"{base}/v1/traces" if base else None, headers=headers,
                                       timeout=timeout_s)
        self.resource = Resource.create({"service.name": "fnbench", **({"fnbench.run": run_id} if run_id else {})})
        self.scope = InstrumentationScope("fnbench", "1")
        self.every = export_every_s
        self._lock = threading.Lock()
        self._series: dict[tuple[str, ...], _Series] = {}
        self._spans: list[Any] = []
        self._changed = False
        self._stop = threading.Event()
        self._failures = 0
        self.exported_metrics = 0  # exports that succeeded
        self.exported_spans = 0
        self._thread = threading.Thread(target=self._loop, name="fnbench-otlp", daemon=True)
        self._thread.start()

    # -- IntervalSink --------------------------------------------------------------------------
    def add(self, iv: Interval) -> None:
        if iv.warmup:
            return
        labels = (iv.run_id, iv.region, iv.target, iv.runtime, iv.phase)
        spans = [self._span(iv, rec) for rec in iv.slowest]
        with self._lock:
            s = self._series.get(labels)
            if s is None:
                s = self._series[labels] = _Series(iv.t0)
            for outcome, n in iv.outcomes.items():
                s.requests[outcome] += n
            s.intended += iv.intended
            for name in PLATFORM_COUNTERS:
                if name in iv.counters:
                    s.platform[name] += iv.counters[name]
            for kind in _KINDS:
                encoded = getattr(iv, kind)
                if encoded:
                    h = s.hists.get(kind)
                    if h is None:
                        h = s.hists[kind] = ExpHistogram()
                    h.add_encoded(encoded)
            self._spans.extend(spans)
            self._changed = True

    def conclude(self, result: Any) -> None:
        """The run is over: export what is left now (close follows)."""
        self.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(self.every + 15)
        self.flush()
        self.metrics.shutdown()
        self.traces.shutdown()

    # -- export --------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.flush()

    def flush(self) -> bool:
        """Export the metrics (when they changed) and the spans gathered since the last export."""
        from opentelemetry.sdk.metrics.export import MetricExportResult
        from opentelemetry.sdk.trace.export import SpanExportResult

        with self._lock:
            data = self._metrics_data() if self._changed else None
            spans, self._spans = self._spans, []
            self._changed = False
        ok = True
        if data is not None:
            if self.metrics.export(data) == MetricExportResult.SUCCESS:
                self.exported_metrics += 1
            else:
                ok = False
                with self._lock:
                    self._changed = True  # cumulative: the next export carries it all
        if spans:
            if self.traces.export(spans) == SpanExportResult.SUCCESS:
                self.exported_spans += len(spans)
            else:
                ok = False
        if not ok:
            self._failures += 1
            if self._failures in (1, 10, 100):
                log.warning("OTLP export to %s failed (%d time(s)); the run's measurements are kept",
                            self.endpoint or "the OTEL_* endpoint", self._failures)
        return ok

    def _metrics_data(self) -> Any:
        from opentelemetry.sdk.metrics.export import (
            AggregationTemporality,
            Buckets,
            ExponentialHistogram,
            ExponentialHistogramDataPoint,
            Metric,
            MetricsData,
            NumberDataPoint,
            ResourceMetrics,
            ScopeMetrics,
            Sum,
        )

        now = time.time_ns()
        cumulative = AggregationTemporality.CUMULATIVE
        requests, intended = [], []
        platform: dict[str, list[Any]] = defaultdict(list)
        hists: dict[str, list[Any]] = defaultdict(list)
        for labels, s in self._series.items():
            attrs = dict(zip(LABELS, labels, strict=True))
            start = int(s.start * 1e9)
            for outcome, n in s.requests.items():
                requests.append(NumberDataPoint({**attrs, "outcome": outcome}, start, now, n))
            intended.append(NumberDataPoint(attrs, start, now, s.intended))
            for name, v in s.platform.items():
                platform[name].append(NumberDataPoint(attrs, start, now, v))
            for kind, h in s.hists.items():
                scale, offset, dense = h.buckets()
                hists[kind].append(ExponentialHistogramDataPoint(
                    attributes=attrs, start_time_unix_nano=start, time_unix_nano=now, count=h.count, sum=h.sum,
                    scale=scale, zero_count=h.zero, positive=Buckets(offset, dense), negative=Buckets(0, []),
                    flags=0, min=h.min if h.count else 0.0, max=h.max))
        metrics = [
            Metric("fnbench_requests", "Requests by outcome (one outcome per request).", "1",
                   Sum(requests, cumulative, True)),
            Metric("fnbench_intended_requests", "Requests due by the schedule.", "1", Sum(intended, cumulative, True)),
        ]
        for key, points in platform.items():
            name, doc = PLATFORM_COUNTERS[key]
            metrics.append(Metric(name, doc, "1", Sum(points, cumulative, True)))
        for kind, points in hists.items():
            name, doc = _FIELD_METRIC[kind]
            metrics.append(Metric(name, doc, "s", ExponentialHistogram(points, cumulative)))
        return MetricsData([ResourceMetrics(self.resource, [ScopeMetrics(self.scope, metrics, "")], "")])

    def _span(self, iv: Interval, rec: dict[str, Any]) -> Any:
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

        trace = str(rec.get("trace_id") or "")
        trace_id = int(trace, 16) if len(trace) == 32 else int.from_bytes(os.urandom(16), "big") or 1
        span_id = int.from_bytes(os.urandom(8), "big") or 1
        context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
        start = float(rec["due"])
        attrs: dict[str, Any] = {"fnbench.run": iv.run_id, "fnbench.region": iv.region, "fnbench.target": iv.target,
                                 "fnbench.runtime": iv.runtime, "fnbench.phase": iv.phase,
                                 "fnbench.outcome": str(rec["outcome"]),
                                 "fnbench.response_ms": float(rec["response_ms"]),
                                 "fnbench.service_ms": float(rec.get("service_ms", 0.0)),
                                 "fnbench.trace_sent": bool(trace)}
        if rec.get("request_id"):
            attrs["fnbench.request_id"] = str(rec["request_id"])
        for k, v in (rec.get("report") or {}).items():
            attrs[f"aws.lambda.report.{k}"] = float(v)
        ok = rec["outcome"] == "ok"
        return ReadableSpan(
            name="fnbench.request", context=context, resource=self.resource, attributes=attrs, kind=SpanKind.CLIENT,
            status=Status(StatusCode.UNSET if ok else StatusCode.ERROR, None if ok else str(rec["outcome"])),
            start_time=int(start * 1e9), end_time=int((start + float(rec["response_ms"]) / 1e3) * 1e9),
            instrumentation_scope=self.scope)
