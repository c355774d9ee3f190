"""OTLP export to a real OpenTelemetry Collector (fnbench's build of the core OTLP receiver and the
contrib file exporter, tools/otelcol): what arrived equals result.json (issue 21 item 4).

One run against the synthetic target with a stall every 2 s: the counters arrive with the same
totals, the latency histogram as an exponential histogram whose count is the result's and whose p99
lies in the bucket of the HDR p99, and every slowest request of the run's intervals arrives as a
span with the trace id fnbench sent on the wire."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.integration.test_exemplars import ROOT, start_synthetic
from workers import otlp

SPEC = """
name: otlp
targets:
  - name: syn
    url: http://127.0.0.1:{port}/
    method: GET
load: {{rps: 200}}
duration: 6s
flush_interval: 1s
tracing: {{slowest: 3, sample: 0.5}}
"""


def quantile_bucket(point, q: float) -> tuple[float, float]:
    """The bounds of the exponential bucket holding the q-quantile (rank ceil(q * count))."""
    rank = max(1, -(-int(q * point.count * 1000) // 1000))
    seen = point.zero_count or 0
    if seen >= rank:
        return 0.0, 0.0
    for i, n in enumerate(point.positive.counts):
        seen += n
        if seen >= rank:
            return otlp.bucket_bounds(point.positive.offset + i, point.scale)
    raise AssertionError("rank beyond the buckets")


def test_what_the_collector_received_equals_the_result(tmp_path: Path, otel_collector):
    target, port = start_synthetic()
    try:
        (tmp_path / "spec.yaml").write_text(SPEC.format(port=port))
        r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(tmp_path / "spec.yaml"),
                            "--results", str(tmp_path / "results"), "--metrics-port", "0", "--json",
                            "--otlp-endpoint", otel_collector.http_endpoint],
                           capture_output=True, text=True, cwd=ROOT, timeout=90,
                           env={**os.environ, "FNBENCH_GRAFANA_URL": ""})
    finally:
        target.terminate()
        target.wait(10)
    assert r.returncode in (0, 1, 3), r.stderr[-3000:]
    assert "OTLP: exporting" in r.stderr
    result = orjson.loads(r.stdout)
    (group,) = result["groups"]
    run_id = result["run_id"]
    intervals = [orjson.loads(line) for line in
                 (tmp_path / "results" / run_id / "intervals.jsonl").read_bytes().splitlines()]
    slow = [s for iv in intervals if not iv.get("warmup") for s in iv.get("slowest", [])]

    def complete(data) -> bool:
        points = data.points("fnbench_requests", outcome="ok")
        return (points and max(p.value for p in points) == group["outcomes"]["ok"]
                and len(data.spans_named("fnbench.request")) >= len(slow))

    data = otel_collector.wait_for(complete, 30, "the run's final export")
    # Counters: the same totals (cumulative: the last point is the run's total).
    assert max(p.value for p in data.points("fnbench_intended_requests")) == group["intended"]
    # The latency histogram: exponential, its count the result's, its p50/p99/p99.9 in the bucket of the HDR value.
    hist = data.last("fnbench_response_time_seconds")
    assert hist is not None and hist.type == "exponential_histogram" and hist.temporality == "cumulative"
    (point,) = hist.points
    assert point.attributes["run"] == run_id and point.attributes["target"] == "syn"
    assert point.count == group["outcomes"]["ok"]
    for stat, q in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999)):
        lo, hi = quantile_bucket(point, q)
        hdr_s = group["response_ms"][stat] / 1e3
        assert lo * 0.998 <= hdr_s <= hi * 1.002, (stat, lo, hi, hdr_s)
        mid = (lo + hi) / 2
        assert abs(mid - hdr_s) / hdr_s < 0.01, (stat, mid, hdr_s)
    # Spans: every slowest request of every interval, with the trace id sent on the wire when sampled.
    spans = data.spans_named("fnbench.request")
    assert len(spans) == len(slow)
    by_trace = {s.trace_id: s for s in spans}
    sampled = [s for s in slow if s.get("trace_id")]
    assert sampled, "no sampled request among the slowest"
    for s in sampled:
        span = by_trace[s["trace_id"]]
        assert span.attributes["fnbench.response_ms"] == pytest.approx(s["response_ms"])
        assert span.kind == 3 and (span.end_ns - span.start_ns) / 1e6 == pytest.approx(s["response_ms"], abs=0.01)
    request_ids = {s.attributes.get("fnbench.request_id") for s in spans}
    assert {s["request_id"] for s in group["slowest"]} <= request_ids


def test_a_bad_otlp_endpoint_is_refused_before_anything_runs(tmp_path: Path):
    (tmp_path / "spec.yaml").write_text(SPEC.format(port=9))
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(tmp_path / "spec.yaml"),
                        "--otlp-endpoint", "localhost:4318"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "--otlp-endpoint" in r.stderr and "http://" in r.stderr
