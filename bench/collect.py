#!/usr/bin/env python3
"""How fast the orchestrator merges intervals, beside the raw cost of the histogram library.

Intervals are realistic: each carries response, service and send-lag histograms of a few
thousand lognormal samples (~3.5 KB encoded each, as a 1 s interval at a few hundred req/s
gives).  Three numbers, each measured in this one run on this machine:

* peer      ``HdrHistogram.decode`` + ``add`` per interval (what merging costs with the library's API);
* add       ``Collector.add`` per interval (fnbench's merge: decode into a scratch array, add in C);
* result    ``Collector.result()`` after a one-hour run of 8 targets × 2 regions at 1 s flushes
            (16 groups × 3600 intervals): on the first call, after one more second of every group
            (what a live-view refresh meets), and after one more interval of one group;

and the process's peak RSS after 15, 30 and 60 minutes of intervals, to show memory grows with
the number of intervals (a key per interval, a time-series bucket per second), not with requests.

Usage:  .venv/bin/python bench/collect.py [--minutes 60] [--json]
Goals (issue "one run loop"): add >= 5,000 intervals/s per core; result() <= 50 ms.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hdrh.histogram import HdrHistogram  # noqa: E402

from orchestrator.run.collect import Collector  # noqa: E402
from workers import histograms  # noqa: E402
from workers.contract import Interval  # noqa: E402

TARGETS, REGIONS = 8, 2
SAMPLES = 20000  # per histogram per interval (a 1 s interval at 20k req/s)


def encoded_histograms(n: int, seed: int = 7) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        hists = []
        for median_us, sigma in ((2000, 1.0), (1500, 0.9), (50, 1.5)):
            h = histograms.new_histogram()
            histograms.fill(h, (int(rng.lognormvariate(0, sigma) * median_us) + 1 for _ in range(SAMPLES)))
            hists.append(histograms.encode(h))
        out.append((hists[0], hists[1], hists[2]))
    return out


def interval(i: int, group: int, hists: tuple[str, str, str], t0: float) -> Interval:
    region, target = f"r{group % REGIONS}", f"t{group // REGIONS}"
    return Interval(run_id="bench", shard_id=f"{region}/{target}/warm/p0of1/s0", attempt=0, seq=i, region=region,
                    target=target, runtime="rust", phase="warm", t0=t0 + i, t1=t0 + i + 1, intended=SAMPLES,
                    sent=SAMPLES, completed=SAMPLES, outcomes={"ok": SAMPLES}, response_us=hists[0],
                    service_us=hists[1], send_lag_us=hists[2], workload="echo")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=int, default=60, help="length of the simulated run")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    pool = encoded_histograms(64)
    size = sum(len(h) for h in pool[0]) / 3
    t0 = 1_700_000_000.0

    # Peer: the library's own decode + add, per interval (three histograms).
    total = histograms.new_histogram()
    n_peer = 600
    start = time.process_time()
    for i in range(n_peer):
        for enc in pool[i % len(pool)]:
            total.add(HdrHistogram.decode(enc))
    peer_rate = n_peer / (time.process_time() - start)

    # fnbench: Collector.add over a whole run, with memory checkpoints.
    seconds = args.minutes * 60
    collector = Collector("bench", {"warm": float(seconds)})
    checkpoints = {m: 0.0 for m in (15, 30, 60) if m <= args.minutes}
    gc.collect()
    add_cpu = 0.0
    added = 0
    for second in range(seconds):
        batch = [interval(second, g, pool[(second * 16 + g) % len(pool)], t0) for g in range(TARGETS * REGIONS)]
        start = time.process_time()
        for iv in batch:
            collector.add(iv)
        add_cpu += time.process_time() - start
        added += len(batch)
        minute = (second + 1) / 60
        if minute in checkpoints:
            checkpoints[minute] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    add_rate = added / add_cpu

    start = time.perf_counter()
    collector.result()
    result_cold_ms = (time.perf_counter() - start) * 1000
    # The live view refreshes while intervals arrive: one more second of every group, then result().
    for g in range(TARGETS * REGIONS):
        collector.add(interval(seconds, g, pool[g % len(pool)], t0))
    start = time.perf_counter()
    collector.result()
    result_all_ms = (time.perf_counter() - start) * 1000
    collector.add(interval(seconds + 1, 0, pool[0], t0))  # one group changed since the last refresh
    start = time.perf_counter()
    result = collector.result()
    result_live_ms = (time.perf_counter() - start) * 1000
    assert result.groups[0].completed == SAMPLES * (seconds + 2)

    report = {
        "histogram_bytes": round(size), "intervals": added,
        "peer_decode_add_per_s": round(peer_rate), "collector_add_per_s": round(add_rate),
        "speedup_x": round(add_rate / peer_rate, 2),
        "result_ms_first_call": round(result_cold_ms, 1), "result_ms_all_groups_changed": round(result_all_ms, 1),
        "result_ms_one_group_changed": round(result_live_ms, 1),
        "memory_mb_at_minute": {str(k): round(v, 1) for k, v in checkpoints.items()},
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"histograms {report['histogram_bytes']} B encoded; {added} intervals "
              f"({TARGETS} targets × {REGIONS} regions × {seconds} s)")
        print(f"peer   HdrHistogram.decode+add : {report['peer_decode_add_per_s']:>8} intervals/s per core")
        print(f"fnbench Collector.add          : {report['collector_add_per_s']:>8} intervals/s per core "
              f"({report['speedup_x']}× the peer; goal >= 5000)")
        print(f"Collector.result()             : {report['result_ms_all_groups_changed']} ms after every group changed, "
              f"{report['result_ms_one_group_changed']} ms after one, {report['result_ms_first_call']} ms on the "
              f"first call (goal <= 50)")
        print("peak RSS (MB) at minute " + ", ".join(f"{k}: {v}" for k, v in report["memory_mb_at_minute"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
