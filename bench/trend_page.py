"""The trend page's size and render time for a long schedule: 365 daily runs × 8 targets × 3 regions.

    .venv/bin/python bench/trend_page.py                    # 365 days × 8 targets × 3 regions
    .venv/bin/python bench/trend_page.py --days 30 --json   # smaller, JSON on stdout

Builds synthetic history entries shaped as `fnbench run` records them (per-group summaries, stored 95 %
bands, interval blocks: a shared pool of real encoded HDR histograms, so memory stays small), writes the
page with `orchestrator.report.trend`, and opens it in headless Chromium from file:// with the network
off (the tests' DevTools client).  Reports the file size, the build time and the time from navigation
start until every chart is drawn (``window.fnbench.drawn_ms``), the median of ``--repeat`` loads.
The issue's goal: ≤ 3 MB and ≤ 2 s.  Absolute times belong here, never in a test assertion.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RUNTIMES = ("rust", "go", "node", "python", "java", "rust", "go", "node")
BASE_MS = {"rust": 4.0, "go": 5.0, "node": 9.0, "python": 12.0, "java": 8.0}
INIT_MS = {"rust": 25.0, "go": 60.0, "node": 150.0, "python": 180.0, "java": 600.0}


def _pool(n: int = 16) -> list[str]:
    from workers import histograms

    rng = random.Random(5)
    out = []
    for _ in range(n):
        h = histograms.new_histogram()
        histograms.fill(h, [int(rng.lognormvariate(8.5, 0.5)) for _ in range(500)])
        out.append(histograms.encode(h))
    return out


def synthetic_history(name: str = "daily", days: int = 365, targets: int = 8, regions: int = 3,
                      start: float = 1_735_689_600.0, step_day: int | None = None, seed: int = 11) -> list[dict[str, Any]]:
    """Daily entries (newest first, as a store returns them).  target-1's p99 in region-0 steps up 40 % at
    ``step_day`` (default: 30 days before the end), and that run carries a regression verdict."""
    rng = random.Random(seed)
    pool = _pool()
    step_day = days - 30 if step_day is None else step_day
    entries = []
    for d in range(days):
        groups, samples = [], []
        for t in range(targets):
            runtime = RUNTIMES[t % len(RUNTIMES)]
            target = f"{runtime}-{t}"
            for r in range(regions):
                region = f"region-{r}"
                level = BASE_MS[runtime] * (1 + 0.1 * r) * math.exp(rng.gauss(0, 0.02))
                slow = 1.4 if (t == 1 and r == 0 and d >= step_day) else 1.0
                p50, p99, p999 = level, level * 3 * slow, level * 5 * slow
                err = max(0.0, rng.gauss(0.002, 0.0005))
                init = INIT_MS[runtime] * math.exp(rng.gauss(0, 0.03))
                cost = round(0.2 + 0.0021 * level * 10, 4)
                groups.append({"region": region, "target": target, "runtime": runtime, "phase": "warm", "workload": "echo",
                               "achieved_rps": 100.0, "p50": round(p50, 3), "p90": round(p99 * 0.6, 3), "p99": round(p99, 3),
                               "p999": round(p999, 3), "error_rate": round(err, 6), "cold_starts": 0, "init_p50": None,
                               "init_p99": None, "cost_per_million_usd": cost, "requests": 6000, "completed": 6000})
                groups.append({"region": region, "target": target, "runtime": runtime, "phase": "cold", "workload": "echo",
                               "achieved_rps": 3.0, "p50": round(init * 1.1, 3), "p90": None, "p99": round(init * 1.6, 3),
                               "p999": None, "error_rate": 0.0, "cold_starts": 10, "init_p50": round(init, 3),
                               "init_p99": round(init * 1.5, 3), "cost_per_million_usd": None, "requests": 10, "completed": 10})
                w = 0.02
                samples.append({"region": region, "target": target, "runtime": runtime, "workload": "echo", "phase": "warm",
                                "blocks": [{"response": [pool[(d + t + r + k) % len(pool)]], "init": [], "total": 250,
                                            "errors": 0} for k in range(2)],
                                "bands": {"p50": [p50 * (1 - w), p50 * (1 + w)], "p99": [p99 * (1 - 2 * w), p99 * (1 + 2 * w)],
                                          "p999": [p999 * (1 - 4 * w), p999 * (1 + 4 * w)],
                                          "error_rate": [err * 0.7, err * 1.3]}})
                samples.append({"region": region, "target": target, "runtime": runtime, "workload": "echo", "phase": "cold",
                                "blocks": [], "bands": {"init_p50": [init * 0.95, init * 1.05],
                                                        "init_p99": [init * 1.4, init * 1.6]}})
        run_id = f"{name}-{d:03d}"
        entry: dict[str, Any] = {"version": 1, "run_id": run_id, "name": name, "start": start + d * 86400.0,
                                 "recorded": start + d * 86400.0 + 300, "regions": [f"region-{r}" for r in range(regions)],
                                 "git": f"v1.{d // 30}", "schedule": "nightly", "exit_code": 0, "groups": groups,
                                 "samples": samples}
        if d == step_day:
            entry["check"] = {"name": name, "newest": run_id, "verdict": "regression", "regressed": True, "no_data": [],
                              "reason": "", "message": f"fnbench {name}: run {run_id} regressed",
                              "findings": [{"target": "go-1", "region": "region-0", "metric": "p99", "regressed": True,
                                            "change_point": True,
                                            "sentence": f"go-1 p99 in {run_id} is 40 % higher than in the previous 10 "
                                                        "run(s) (95 % CI 35–45 %) in region-0"}]}
        entries.append(entry)
    return entries[::-1]


def measure(days: int, targets: int, regions: int, repeat: int) -> dict[str, Any]:
    from orchestrator.report import trend
    from tests.integration.test_report_html import Browser

    entries = synthetic_history(days=days, targets=targets, regions=regions)
    folder = Path(tempfile.mkdtemp(prefix="fnbench-trend-"))
    page = folder / "trend.html"
    t0 = time.perf_counter()
    trend.write_trend("daily", entries, page)
    build_s = time.perf_counter() - t0
    times, charts = [], 0
    for _ in range(repeat):
        b = Browser()
        try:
            b.open(page.as_uri())
            times.append(float(b.eval("window.fnbench.drawn_ms")))
            charts = int(b.eval("Object.keys(window.fnbench.charts).length"))
            problems = b.problems()
        finally:
            b.close()
    return {"runs": days, "targets": targets, "regions": regions, "bytes": page.stat().st_size,
            "build_s": round(build_s, 2), "charts": charts, "drawn_ms_median": round(statistics.median(times)),
            "drawn_ms": [round(t) for t in times], "console_problems": problems, "page": str(page)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--targets", type=int, default=8)
    ap.add_argument("--regions", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    r = measure(a.days, a.targets, a.regions, a.repeat)
    if a.json:
        print(json.dumps(r))
        return
    print(f"{r['runs']} runs × {r['targets']} targets × {r['regions']} regions: {r['bytes'] / 1e6:.2f} MB "
          f"(goal ≤ 3 MB), built in {r['build_s']} s, {r['charts']} charts drawn in {r['drawn_ms_median']} ms "
          f"(median of {len(r['drawn_ms'])}: {r['drawn_ms']}; goal ≤ 2000 ms) — {r['page']}")
    if r["console_problems"]:
        print("console:", r["console_problems"])


if __name__ == "__main__":
    main()
