#!/usr/bin/env python3
"""Lambda Invoke throughput per core: fnbench's async invoker vs boto3 in a thread pool.

Both clients invoke the SAME local Lambda (``fnbench lambda serve``, a separate process, the
Rust function's ``echo`` workload as a custom runtime) in the same run, one after the other,
each with LogType Tail and the REPORT line parsed:

* async  — ``workers.platforms.aws_lambda.LambdaInvoker`` (SigV4 on the HTTP engine's pool)
           driven through ``workers.shard.ShardRun`` with full recording: every request is
           dispatched at once into the shard's bounded queue (closed loop at ``--concurrency``
           in flight), outcomes counted, response/service/send-lag/platform/billed histograms
           filled and encoded (one ``flush``).
* boto3  — ``boto3.client('lambda')`` (retries off: total_max_attempts=1, pool sized to the
           concurrency) in a ThreadPoolExecutor of ``--concurrency`` threads; each call reads
           the payload and parses the REPORT the same way, and records its latency.

"per core" = completed invocations / the client process's CPU seconds (``time.process_time``
around the run; the server's CPU is in its own process and not counted).  The machine may be
shared and noisy: wall-clock rates are printed but only the ratio is the result.

Usage: .venv/bin/python bench/lambda_invoke.py [--seconds 5] [--concurrency 16] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BODY = '{"workload":"echo","params":{"payload":{"n":1}}}'


def start_lambda(concurrency: int) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-c", "from orchestrator.cli import main; main()", "lambda", "serve", "--functions", "rust",
           "--port", "0", "--reserved", str(concurrency), "--idle", "10m",
           "--no-cgroups"]  # the client is measured: the function's instances must not be its bottleneck
    # The server takes the credentials the clients sign with (the standard chain's, set in main()).
    env = {**os.environ, "FNBENCH_LAMBDA_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
           "FNBENCH_LAMBDA_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"]}
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            start_new_session=True, env=env)
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        m = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
        if m:
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep the pipe drained
            return proc, m.group(1)
    proc.kill()
    raise SystemExit("fnbench lambda serve did not start (is the Rust function built? `fnbench functions build rust`)")


def run_async(endpoint: str, seconds: float, concurrency: int) -> dict[str, Any]:
    from workers.contract import Shard, Target
    from workers.platforms.aws_lambda import LambdaInvoker
    from workers.shard import ShardRun

    target = Target(name="rust", runtime="rust", platform="aws-lambda", body=BODY, timeout_s=30,
                    address={"function": "rust", "endpoint_url": endpoint})
    intervals: list[Any] = []

    async def main() -> dict[str, Any]:
        inv = LambdaInvoker(target)
        shard = Shard(run_id="bench", shard_id="s0", region="local", target=target, phase="warm",
                      arrival={"kind": "constant", "rps": "1/1"}, start_at=time.time(), duration_s=seconds,
                      max_in_flight=concurrency, queue_limit=10_000_000)
        run = ShardRun(shard, intervals.append, invoker=inv)
        await inv.start()
        # Warm: one instance per connection.
        await _closed_loop(run, concurrency * 4, concurrency)
        run.flush()
        intervals.clear()
        c0, t0 = time.process_time(), time.monotonic()
        done = 0
        batch = max(concurrency * 200, 2000)
        while time.monotonic() - t0 < seconds:
            done += await _closed_loop(run, batch, concurrency)
            run.rec.absorb()
        run.flush()
        cpu, wall = time.process_time() - c0, time.monotonic() - t0
        await inv.close()
        iv = intervals[-1]
        return {"completed": done, "cpu_s": cpu, "wall_s": wall, "outcomes": iv.outcomes,
                "counters": {k: v for k, v in inv.counters().items() if not k.startswith("billed_ms")},
                "platform_histogram": bool(iv.platform_us), "billed_histogram": bool(iv.billed_us)}

    import uvloop

    return uvloop.run(main())


async def _closed_loop(run: Any, n: int, concurrency: int) -> int:
    """Dispatch n requests due now (the shard keeps ``concurrency`` in flight, queues the rest)."""
    start = run.completed
    now = time.monotonic()
    for _ in range(n):
        run.dispatch(now)
    while run.in_flight or run.queue:
        await asyncio.sleep(0.002)
    return run.completed - start


def run_boto3(endpoint: str, seconds: float, concurrency: int) -> dict[str, Any]:
    import boto3
    from botocore.config import Config

    from workers.platforms.aws_lambda.report import Report, from_log_result

    client = boto3.client("lambda", endpoint_url=endpoint, region_name="us-east-1",
                          config=Config(retries={"total_max_attempts": 1}, max_pool_connections=concurrency,
                                        connect_timeout=5, read_timeout=30))
    lock = threading.Lock()
    latencies: list[int] = []
    outcomes: dict[str, int] = {}
    stop_at = [0.0]

    def worker() -> int:
        n = 0
        while time.monotonic() < stop_at[0]:
            t = time.monotonic()
            try:
                r = client.invoke(FunctionName="rust", LogType="Tail", Payload=BODY)
                r["Payload"].read()
                kind = "function_error" if "FunctionError" in r else "ok"
                report = from_log_result(r.get("LogResult", ""))
                if not isinstance(report, Report):
                    kind = "report_missing"
            except client.exceptions.TooManyRequestsException:
                kind = "throttled"
            except Exception as exc:  # noqa: BLE001 - a failed request is an outcome
                kind = type(exc).__name__
            us = int((time.monotonic() - t) * 1e6)
            with lock:
                latencies.append(us)
                outcomes[kind] = outcomes.get(kind, 0) + 1
            n += 1
        return n

    with ThreadPoolExecutor(concurrency) as pool:
        stop_at[0] = time.monotonic() + 1.0  # warm: connections, instances
        list(pool.map(lambda _: worker(), range(concurrency)))
        latencies.clear()
        outcomes.clear()
        c0, t0 = time.process_time(), time.monotonic()
        stop_at[0] = t0 + seconds
        done = sum(pool.map(lambda _: worker(), range(concurrency)))
        cpu, wall = time.process_time() - c0, time.monotonic() - t0
    return {"completed": done, "cpu_s": cpu, "wall_s": wall, "outcomes": outcomes}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):  # both clients and the server: this one key
        os.environ.pop(name, None)
    os.environ["AWS_ACCESS_KEY_ID"] = "fnbench-local"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "fnbench-local"
    proc, endpoint = start_lambda(args.concurrency)
    try:
        results = {"async": run_async(endpoint, args.seconds, args.concurrency),
                   "boto3": run_boto3(endpoint, args.seconds, args.concurrency)}
    finally:
        proc.terminate()
        proc.wait(10)
    for r in results.values():
        r["per_core"] = round(r["completed"] / r["cpu_s"], 1) if r["cpu_s"] > 0 else None
        r["wall_rps"] = round(r["completed"] / r["wall_s"], 1)
    ratio = (results["async"]["per_core"] or 0) / (results["boto3"]["per_core"] or 1)
    results["ratio_per_core"] = round(ratio, 2)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"local Lambda {endpoint}, rust echo, LogType Tail, concurrency {args.concurrency}, {args.seconds:g} s each")
    print(f"{'client':8} {'completed':>10} {'cpu s':>7} {'wall s':>7} {'per core/s':>11} {'wall/s':>8}  outcomes")
    for name in ("async", "boto3"):
        r = results[name]
        print(f"{name:8} {r['completed']:>10} {r['cpu_s']:>7.2f} {r['wall_s']:>7.2f} {r['per_core']:>11} "
              f"{r['wall_rps']:>8}  {r['outcomes']}")
    print(f"ratio (async / boto3, invocations per client CPU second): {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
