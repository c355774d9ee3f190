"""What the WebAssembly host costs: rust-wasm (a fresh instance per request) and rust-wasm-reuse (a
warm instance) beside native Rust, on the same workloads, side by side, as ratios.

    .venv/bin/python bench/wasm_overhead.py                 # 3000 requests per runtime and workload
    .venv/bin/python bench/wasm_overhead.py --requests 600  # quicker
    .venv/bin/python bench/wasm_overhead.py --json          # the numbers as JSON on stdout

The three servers run at once (the built artefacts of `fnbench functions build`, built here if
missing) on loopback; one keep-alive client sends one request at a time, in rounds that take turns
between the runtimes, so drift on a shared machine falls on all three alike. Printed per runtime
and workload: the client's latency p50/p99 (µs) and its ratio to native Rust, the function's own
handler time p50 (µs, the envelope's handler_ms: wasm code vs native code) and its ratio, and for
rust-wasm the instantiation time p50/p99 (µs, the envelope's init_ms: a Store and an instance per
request, what an edge host pays on every request). Load goes only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.subjects import functions  # noqa: E402

RUNTIMES = ("rust", "rust-wasm", "rust-wasm-reuse")
WORKLOADS: dict[str, bytes] = {
    "echo": json.dumps({"payload": {"user": 42, "tags": ["a", "b", "c"], "items": [1, 2, 3, 4, 5, 6, 7, 8]}}).encode(),
    "hash": json.dumps({"data": "fnbench", "rounds": 1000}).encode(),
    "matmul": json.dumps({"n": 64}).encode(),
    "transform": json.dumps({"records": [{"id": i, "name": f"item {i}", "price": 1.5 * i, "qty": i % 7, "tags": ["x"]}
                                         for i in range(50)], "min_total": 10}).encode(),
}


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))] if s else float("nan")


def artifact(runtime: str) -> functions.Artifact:
    try:
        return functions.artifact_for(runtime)
    except FileNotFoundError:
        print(f"building {runtime} …", file=sys.stderr)
        return functions.build(runtime)[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=3000, help="per runtime and workload (default 3000)")
    ap.add_argument("--rounds", type=int, default=10, help="turns between the runtimes (default 10)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated, of {', '.join(WORKLOADS)}")
    ap.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = ap.parse_args()
    workloads = [w for w in args.workloads.split(",") if w]
    bad = [w for w in workloads if w not in WORKLOADS]
    if bad or args.requests < args.rounds or args.rounds < 1:
        print(f"wasm_overhead: bad --workloads {bad} or --requests/--rounds", file=sys.stderr)
        return 2
    arts = {r: artifact(r) for r in RUNTIMES}
    servers = {r: functions.serve(a, 60.0) for r, a in arts.items()}
    conns = {r: http.client.HTTPConnection("127.0.0.1", port, timeout=60) for r, (_, port) in servers.items()}
    latency: dict[tuple[str, str], list[float]] = {}
    handler: dict[tuple[str, str], list[float]] = {}
    init: dict[tuple[str, str], list[float]] = {}
    host_init: dict[str, float] = {}

    def send(runtime: str, workload: str) -> dict:
        conn = conns[runtime]
        t0 = time.perf_counter()
        conn.request("POST", f"/{workload}", body=WORKLOADS[workload], headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
        us = (time.perf_counter() - t0) * 1e6
        if resp.status != 200:
            raise SystemExit(f"wasm_overhead: {runtime} {workload}: HTTP {resp.status}: {raw[:200]!r}")
        env = json.loads(raw)
        key = (runtime, workload)
        latency.setdefault(key, []).append(us)
        handler.setdefault(key, []).append(env["handler_ms"] * 1000)
        init.setdefault(key, []).append(env["init_ms"] * 1000)
        host_init[runtime] = env.get("host_init_ms", env["init_ms"])
        return env

    try:
        for runtime in RUNTIMES:  # warm-up: connections, caches, the reuse instance
            for workload in workloads:
                for _ in range(50):
                    send(runtime, workload)
        latency.clear(), handler.clear(), init.clear()
        per_round = args.requests // args.rounds
        for _ in range(args.rounds):
            for runtime in RUNTIMES:
                for workload in workloads:
                    for _ in range(per_round):
                        send(runtime, workload)
    finally:
        for c in conns.values():
            c.close()
        for proc, _ in servers.values():
            functions.stop_server(proc)

    rows = []
    for workload in workloads:
        base = ("rust", workload)
        for runtime in RUNTIMES:
            key = (runtime, workload)
            row = {
                "runtime": runtime, "workload": workload, "n": len(latency[key]),
                "p50_us": round(pct(latency[key], 50), 1), "p99_us": round(pct(latency[key], 99), 1),
                "handler_p50_us": round(pct(handler[key], 50), 2),
                "x_p50": round(pct(latency[key], 50) / pct(latency[base], 50), 2),
                "x_p99": round(pct(latency[key], 99) / pct(latency[base], 99), 2),
                "x_handler_p50": round(pct(handler[key], 50) / max(pct(handler[base], 50), 1e-3), 2),
            }
            if runtime == "rust-wasm":
                row["instantiation_p50_us"] = round(pct(init[key], 50), 1)
                row["instantiation_p99_us"] = round(pct(init[key], 99), 1)
            rows.append(row)
    sizes = {r: a.size_bytes for r, a in arts.items()}
    if args.json:
        json.dump({"rows": rows, "artefact_bytes": sizes, "host_init_ms": host_init}, sys.stdout, indent=1)
        print()
        return 0
    print(f"{'workload':10} {'runtime':16} {'p50 µs':>9} {'p99 µs':>9} {'×p50':>6} {'×p99':>6} "
          f"{'handler µs':>11} {'×handler':>8} {'instantiate p50/p99 µs':>24}")
    for r in rows:
        inst = f"{r['instantiation_p50_us']:.1f} / {r['instantiation_p99_us']:.1f}" if "instantiation_p50_us" in r else "-"
        print(f"{r['workload']:10} {r['runtime']:16} {r['p50_us']:9.1f} {r['p99_us']:9.1f} {r['x_p50']:6.2f} "
              f"{r['x_p99']:6.2f} {r['handler_p50_us']:11.2f} {r['x_handler_p50']:8.2f} {inst:>24}")
    print("artefact: " + ", ".join(f"{r} {s / 1e3:.0f} kB" for r, s in sizes.items())
          + " (rust: the binary; rust-wasm: the .wasm module)")
    print("start → listening ms: " + ", ".join(f"{r} {v:.2f}" for r, v in host_init.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
