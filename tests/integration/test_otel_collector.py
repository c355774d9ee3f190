"""The OTLP test receiver end to end: the real OpenTelemetry Python SDK sends over OTLP/HTTP to
fnbench's OpenTelemetry Collector build (tools/otelcol, `make otelcol`), whose file exporter writes
what arrived; ``OtelCollector.read`` gives it back as ``OtlpData``. The exporter tests of issue 21
stand on this: what they read here is what a collector received, not what the SDK meant to send."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.servers import OtlpData, read_otlp_file

pytestmark = pytest.mark.integration

LATENCIES_MS = [0.8, 1.7, 3.1, 3.3, 12.6, 47.5, 99.9, 250.3, 1030.0]  # no exact powers of two
MAX_SCALE, MAX_SIZE = 20, 160


def bucket_index(value: float, scale: int) -> int:
    """OTLP exponential bucket of a positive value: (base**i, base**(i+1)], base = 2**2**-scale."""
    return math.ceil(math.log2(value) * 2**scale) - 1


def expected_scale(values: list[float]) -> int:
    """The finest scale ≤ MAX_SCALE at which the values span at most MAX_SIZE buckets (what the
    SDK's exponential histogram settles on)."""
    for scale in range(MAX_SCALE, -11, -1):
        if bucket_index(max(values), scale) - bucket_index(min(values), scale) < MAX_SIZE:
            return scale
    raise AssertionError("no scale fits")


def test_sdk_metrics_and_spans_arrive_at_the_collector(otel_collector):
    resource = Resource.create({"service.name": "fnbench-otel-test"})
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{otel_collector.http_endpoint}/v1/metrics", timeout=10),
        export_interval_millis=600_000)  # exports only when flushed
    meters = MeterProvider(resource=resource, metric_readers=[reader], views=[View(
        instrument_name="fnbench_test_latency_ms",
        aggregation=ExponentialBucketHistogramAggregation(max_size=MAX_SIZE, max_scale=MAX_SCALE))])
    tracers = TracerProvider(resource=resource)
    tracers.add_span_processor(SimpleSpanProcessor(
        OTLPSpanExporter(endpoint=f"{otel_collector.http_endpoint}/v1/traces", timeout=10)))
    try:
        meter, tracer = meters.get_meter("fnbench.test"), tracers.get_tracer("fnbench.test")
        latency = meter.create_histogram("fnbench_test_latency_ms", unit="ms")
        requests = meter.create_counter("fnbench_test_requests_total")
        with tracer.start_as_current_span("run", attributes={"fnbench.group": "rust"}) as root, \
                tracer.start_as_current_span("slow request", attributes={"fnbench.response_ms": 1030.0,
                                                                         "aws.request_id": "r-1"}) as child:
            latency.record(LATENCIES_MS[-1], {"group": "rust"})  # inside a sampled span: an exemplar
        for ms in LATENCIES_MS[:-1]:
            latency.record(ms, {"group": "rust"})
        requests.add(7, {"group": "rust", "outcome": "ok"})
        requests.add(2, {"group": "rust", "outcome": "error"})
        assert meters.force_flush(10_000)
    finally:
        meters.shutdown()
        tracers.shutdown()

    data = otel_collector.wait_for(
        lambda d: d.last("fnbench_test_latency_ms") and d.last("fnbench_test_requests_total") and len(d.spans) >= 2,
        what="the histogram, the counter and two spans at the collector")

    hist = data.last("fnbench_test_latency_ms")
    assert (hist.type, hist.unit, hist.temporality, hist.scope) == ("exponential_histogram", "ms", "cumulative",
                                                                    "fnbench.test")
    assert hist.resource["service.name"] == "fnbench-otel-test"
    [point] = hist.points
    assert point.attributes == {"group": "rust"}
    assert point.count == len(LATENCIES_MS)
    assert point.sum == pytest.approx(sum(LATENCIES_MS))
    assert (point.min, point.max) == (min(LATENCIES_MS), max(LATENCIES_MS))
    assert point.scale == expected_scale(LATENCIES_MS)
    assert point.zero_count == 0 and sum(point.negative.counts) == 0
    received = {point.positive.offset + i: c for i, c in enumerate(point.positive.counts) if c}
    assert received == dict(Counter(bucket_index(v, point.scale) for v in LATENCIES_MS))
    assert point.start_ns <= point.time_ns

    counter = data.last("fnbench_test_requests_total")
    assert (counter.type, counter.monotonic, counter.temporality) == ("sum", True, "cumulative")
    assert {p.attributes["outcome"]: p.value for p in counter.points} == {"ok": 7, "error": 2}
    assert data.points("fnbench_test_requests_total", outcome="ok")[0].value == 7

    trace_id = f"{root.get_span_context().trace_id:032x}"
    got = {s.span_id: s for s in data.spans}
    assert set(got) == {f"{root.get_span_context().span_id:016x}", f"{child.get_span_context().span_id:016x}"}
    sent_root, sent_child = got[f"{root.get_span_context().span_id:016x}"], data.spans_named("slow request")[0]
    assert {s.trace_id for s in data.spans} == {trace_id}
    assert sent_root.parent_span_id == "" and sent_child.parent_span_id == sent_root.span_id
    assert sent_child.attributes == {"fnbench.response_ms": 1030.0, "aws.request_id": "r-1"}
    assert sent_root.attributes == {"fnbench.group": "rust"}
    assert (sent_child.start_ns, sent_child.end_ns) == (child.start_time, child.end_time)
    assert (sent_root.start_ns, sent_root.end_ns) == (root.start_time, root.end_time)
    assert sent_child.resource["service.name"] == "fnbench-otel-test"

    # The value recorded inside the sampled span carries it as an exemplar (the SDK's default filter).
    exemplars = [e for p in hist.points for e in p.exemplars]
    assert any(e.span_id == sent_child.span_id and e.trace_id == trace_id and e.value == LATENCIES_MS[-1]
               for e in exemplars), exemplars


def test_reader_leaves_a_line_still_being_written(tmp_path):
    """The collector appends whole lines; a read in the middle of a write must not fail on the tail."""
    path = tmp_path / "otlp.jsonl"
    line = ('{"resourceMetrics":[{"resource":{},"scopeMetrics":[{"scope":{"name":"s"},"metrics":[{"name":"m",'
            '"gauge":{"dataPoints":[{"timeUnixNano":"5","asDouble":1.5}]}}]}]}]}')
    path.write_text(line + "\n" + line[:40])
    data: OtlpData = read_otlp_file(path)
    assert data.lines == 1 and [(m.name, m.type, m.points[0].value, m.points[0].time_ns) for m in data.metrics] == [
        ("m", "gauge", 1.5, 5)]
