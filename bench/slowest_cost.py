#!/usr/bin/env python3
"""What keeping the slowest requests (and sending trace context) costs the open-model engine.

One run, one loopback nginx (``return 200``): ``workers.shard.run_shard`` at a fixed rate with
``Shard.slowest`` 0 (nothing kept, the engine before issue 21) and 5 (the default), alternated
``--rounds`` times so machine noise hits both alike, each in a fresh child process.  The figure is
CPU per request (``time.process_time`` around run_shard, divided by the requests completed): the
inverse of "req/s per core" in bench/throughput.py.  With ``--trace`` a third arm sends traceparent
on every request (``tracing.sample: 1``).

    .venv/bin/python bench/slowest_cost.py                     # 20,000 req/s, 4 s, 4 rounds
    .venv/bin/python bench/slowest_cost.py --rate 30000 --rounds 6 --trace --json

Goal (issue 21): keeping the slowest requests and exemplars costs <= 5 % of the per-core maximum.
The exemplars cost nothing here: they are made in the process that serves /metrics, per interval.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from throughput import Nginx  # noqa: E402

CHILD = r"""
import json, sys, threading, time
from workers.contract import Shard, Target
from workers.shard import run_shard
url, rate, secs, k, ratio = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
t = Target(name="b", runtime="other", platform="http", url=url, method="GET", timeout_s=5)
sh = Shard(run_id="b", shard_id="s", region="local", target=t, phase="warm", arrival={"kind": "constant", "rps": str(rate)},
           start_at=time.time() + 1.5, duration_s=secs, max_in_flight=512, slowest=k, trace_ratio=ratio)
ivs = []
c0 = time.process_time()
run_shard(sh, ivs.append, threading.Event())
cpu = time.process_time() - c0
done = sum(iv.completed for iv in ivs)
ok = sum(iv.outcomes.get("ok", 0) for iv in ivs)
print(json.dumps({"cpu_s": cpu, "completed": done, "ok": ok, "intended": sum(iv.intended for iv in ivs),
                  "kept": sum(len(iv.slowest) for iv in ivs)}))
"""


def arm(url: str, rate: int, secs: float, k: int, ratio: float) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, url, str(rate), str(secs), str(k), str(ratio)], cwd=HERE.parent,
                       capture_output=True, text=True, timeout=secs + 60)
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])
    out = json.loads(r.stdout)
    out["us_per_request"] = out["cpu_s"] / max(1, out["completed"]) * 1e6
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=20000)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--trace", action="store_true", help="a third arm: traceparent on every request")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        print("nginx not installed (apt-get install -y nginx-light)", file=sys.stderr)
        return 0
    nginx = Nginx(binary, None)
    nginx.start()
    arms = {"slowest 0": (0, 0.0), "slowest 5": (5, 0.0)}
    if args.trace:
        arms["slowest 5 + traceparent on all"] = (5, 1.0)
    runs: dict[str, list[dict]] = {name: [] for name in arms}
    try:
        for n in range(args.rounds):
            for name, (k, ratio) in (arms.items() if n % 2 == 0 else reversed(arms.items())):
                runs[name].append(arm(nginx.url, args.rate, args.seconds, k, ratio))
                r = runs[name][-1]
                print(f"round {n + 1} {name}: {r['us_per_request']:.2f} µs CPU/request, {r['ok']}/{r['intended']} ok, "
                      f"{r['kept']} kept", file=sys.stderr, flush=True)
    finally:
        nginx.stop()
    base = statistics.median(r["us_per_request"] for r in runs["slowest 0"])
    summary = {name: {"us_per_request_median": statistics.median(r["us_per_request"] for r in rs),
                      "ratio_to_slowest_0": statistics.median(r["us_per_request"] for r in rs) / base,
                      "runs": rs} for name, rs in runs.items()}
    if args.json:
        print(json.dumps({"rate": args.rate, "seconds": args.seconds, "rounds": args.rounds, "arms": summary}, indent=1))
    else:
        print(f"run_shard at {args.rate:,} req/s for {args.seconds:g} s, {args.rounds} alternated rounds (median):")
        for name, s in summary.items():
            print(f"  {name:<32} {s['us_per_request_median']:7.2f} µs CPU/request   x{s['ratio_to_slowest_0']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
