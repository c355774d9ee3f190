"""Exemplars: the latency buckets carry the slowest requests' ids, read back from a real Prometheus with
exemplar storage (issue 21 item 3).  The synthetic target stalls every 2 s for 150 ms and numbers its
responses (x-request-id: syn-N); fnbench sends traceparent on half the requests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import orjson

from tests.servers import Prometheus, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]

SPEC = """
name: exemplars
targets:
  - name: syn
    url: http://127.0.0.1:{port}/
    method: GET
load: {{rps: 200}}
duration: 8s
flush_interval: 1s
tracing: {{slowest: 5, sample: 0.5}}
"""


def start_synthetic() -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "synthetic", "--port", "0", "--median-ms", "2",
                             "--sigma", "0.3", "--stall-every", "2", "--stall-ms", "150"],
                            cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    m = re.search(r"127\.0\.0\.1:(\d+)/", line)
    assert m, line
    return proc, int(m.group(1))


def test_the_exemplars_prometheus_stored_are_slow_requests_of_the_result(tmp_path: Path):
    target, port = start_synthetic()
    metrics_port = free_port()
    try:
        with Prometheus(tmp_path, [f"127.0.0.1:{metrics_port}"]) as prom:
            (tmp_path / "spec.yaml").write_text(SPEC.format(port=port))
            started = time.time()
            r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(tmp_path / "spec.yaml"),
                                "--results", str(tmp_path / "results"), "--metrics-port", str(metrics_port), "--json"],
                               capture_output=True, text=True, cwd=ROOT, timeout=90,
                               env={**os.environ, "FNBENCH_GRAFANA_URL": ""})
            assert r.returncode in (0, 1, 3), r.stderr[-3000:]
            result = orjson.loads(r.stdout)
            (group,) = result["groups"]
            kept = {rec.get("trace_id") or rec.get("request_id") for rec in group["slowest"]}
            kept |= {rec.get("trace_id") or rec.get("request_id")
                     for minute in group["slowest_by_minute"] for rec in minute["requests"]}
            every_interval = {s.get("trace_id") or s.get("request_id")
                              for line in (tmp_path / "results" / result["run_id"] / "intervals.jsonl").read_bytes().splitlines()
                              for s in orjson.loads(line).get("slowest", [])}
            query = f'fnbench_response_time_seconds_bucket{{run="{result["run_id"]}"}}'

            def stored() -> list[dict]:
                found = prom.exemplars(query, started - 5, time.time() + 5)
                return [e for series in found for e in series["exemplars"]]

            exemplars = wait_for(stored, 20, "exemplars in Prometheus")
    finally:
        target.terminate()
        target.wait(10)
    ids = [e["labels"].get("trace_id") or e["labels"].get("request_id") for e in exemplars]
    assert ids and all(ids)
    # Every exemplar is one of the slowest requests an interval kept (with its value), and the run's
    # slowest (the stalls: over 100 ms) are among them.
    assert set(ids) <= every_interval, set(ids) - every_interval
    slowest_value = max(float(e["value"]) for e in exemplars)
    assert slowest_value >= 0.1
    assert set(ids) & kept
