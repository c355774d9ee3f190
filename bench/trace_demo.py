#!/usr/bin/env python3
"""From a p99 spike to the request behind it, end to end on loopback (issue 21's demonstration).

Starts the synthetic target with a 200 ms stall every 5 s, a real Prometheus with exemplar storage
scraping fnbench's /metrics, and fnbench's OpenTelemetry Collector build (tools/otelcol); runs
``fnbench run --metrics-port P --otlp-endpoint URL`` with ``tracing: {slowest: 5, sample: 0.2}``; then
prints, for the slowest exemplar Prometheus stored: the board's p99 query around it (the spike), the
exemplar, the same request in report.html's slowest table, in result.json and among the spans the
collector received.

    .venv/bin/python bench/trace_demo.py [--seconds 20] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "grafana"))

from build import quantile  # noqa: E402  (grafana/build.py: the board's own query)
from tests.servers import OtelCollector, Prometheus, free_port, wait_for  # noqa: E402

SPEC = """name: trace-demo
targets:
  - {{name: syn, url: "http://127.0.0.1:{port}/", method: GET}}
load: {{rps: 200}}
duration: {seconds}s
flush_interval: 1s
tracing: {{slowest: 5, sample: 0.2}}
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--keep", type=Path, help="keep the run folder, report and collector output here")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="fnbench-trace-demo-"))
    fnbench = [sys.executable, "-m", "orchestrator.cli"]
    target = subprocess.Popen([*fnbench, "synthetic", "--port", "0", "--median-ms", "2", "--sigma", "0.3",
                               "--stall-every", "5", "--stall-ms", "200"], cwd=REPO, stderr=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, text=True)
    try:
        assert target.stderr is not None
        port = int(re.search(r"127\.0\.0\.1:(\d+)/", target.stderr.readline()).group(1))  # type: ignore[union-attr]
        metrics_port = free_port()
        (tmp / "prom").mkdir()
        with Prometheus(tmp / "prom", [f"127.0.0.1:{metrics_port}"]) as prom, \
                OtelCollector(tmp / "otelcol") as collector:
            (tmp / "spec.yaml").write_text(SPEC.format(port=port, seconds=args.seconds))
            cmd = [*fnbench, "run", str(tmp / "spec.yaml"), "--results", str(tmp / "results"), "--metrics-port",
                   str(metrics_port), "--otlp-endpoint", collector.http_endpoint, "--json"]
            print("$ fnbench " + " ".join(cmd[3:]), flush=True)
            started = time.time()
            r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=args.seconds + 120,
                               env={**os.environ, "FNBENCH_GRAFANA_URL": ""})
            result = orjson.loads(r.stdout)
            run_id = result["run_id"]
            (group,) = result["groups"]
            print(f"run {run_id}: exit {r.returncode}, p50 {group['response_ms']['p50']} ms, "
                  f"p99 {group['response_ms']['p99']} ms, max {group['response_ms']['max']} ms")
            sel = f'fnbench_response_time_seconds_bucket{{run="{run_id}"}}'
            found = wait_for(lambda: [e for s in prom.exemplars(sel, started - 5, time.time() + 5)
                                      for e in s["exemplars"]], 20, "exemplars")
            top = max(found, key=lambda e: float(e["value"]))
            ident = top["labels"].get("trace_id") or top["labels"].get("request_id")
            at = float(top["timestamp"])
            print(f"\nslowest exemplar in Prometheus: {top['labels']} value {float(top['value']) * 1e3:.1f} ms "
                  f"at {time.strftime('%H:%M:%S', time.gmtime(at))}")
            board = quantile("0.99", "fnbench_response_time_seconds", "target", 'phase="warm"')
            board = board.replace('run=~"$run", region=~"$region", target=~"$target"', f'run="{run_id}"')
            board = board.replace("$__rate_interval", "3s")
            series = prom.query_range(board, at - 4, at + 4, step=1)
            print(f"the board's p99 query ({board}) from 4 s before to 4 s after it, each second (ms):")
            print("  " + "  ".join(f"{v * 1e3:.1f}" for v in series))
            report = (tmp / "results" / run_id / "report.html").read_text()
            print(f"in report.html's slowest table: {'yes' if ident and ident in report else 'no'}")
            rec = [s for s in group["slowest"] if ident in (s.get("trace_id"), s.get("request_id"))]
            rec += [s for m in group["slowest_by_minute"] for s in m["requests"]
                    if ident in (s.get("trace_id"), s.get("request_id"))]
            print(f"in result.json: {orjson.dumps(rec[0]).decode() if rec else 'no'}")
            data = collector.wait_for(lambda d: d.spans_named("fnbench.request"), 20, "spans")
            spans = [s for s in data.spans_named("fnbench.request")
                     if ident in (s.trace_id, s.attributes.get("fnbench.request_id"))]
            print("in the collector: " + (f"span {spans[0].span_id} of trace {spans[0].trace_id}, "
                                          f"{(spans[0].end_ns - spans[0].start_ns) / 1e6:.1f} ms, attributes "
                                          f"{spans[0].attributes}" if spans else "no"))
            if args.keep:
                shutil.copytree(tmp, args.keep, dirs_exist_ok=True)
                print(f"\nkept in {args.keep}")
    finally:
        target.terminate()
        target.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
