"""SLO verdicts (and, later, target-vs-baseline statistics) over a collected result."""

from __future__ import annotations

from typing import Any

from orchestrator.spec import Benchmark


def metric_value(row: dict[str, Any], metric: str) -> float | None:
    if metric in ("error_rate", "achieved_rps"):
        return float(row[metric])
    kind, _, stat = metric.partition(".")
    value = (row.get(kind) or {}).get(stat)
    return None if value is None else float(value)


def slo_verdicts(b: Benchmark, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One verdict per SLO per matching measured group; a group with no data fails the SLO."""
    verdicts = []
    for slo in b.slos:
        for row in groups:
            if slo.target not in ("*", row["target"]):
                continue
            value = metric_value(row, slo.metric)
            ok = value is not None
            if ok and slo.max is not None:
                ok = value <= slo.max  # type: ignore[operator]
            if ok and slo.min is not None:
                ok = value >= slo.min  # type: ignore[operator]
            verdicts.append(
                {
                    "target": row["target"],
                    "region": row["region"],
                    "phase": row["phase"],
                    "metric": slo.metric,
                    "max": slo.max,
                    "min": slo.min,
                    "value": value,
                    "pass": ok,
                }
            )
    return verdicts


def by_target(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (region, target): warm p50/p99 and throughput, cold start, peak RSS."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for g in groups:
        row = rows.setdefault((g["region"], g["target"]), {
            "region": g["region"], "target": g["target"], "runtime": g["runtime"], "workload": g.get("workload", ""),
            "p50_ms": None, "p99_ms": None, "rps": None, "cold_start_ms": None, "init_ms": None, "rss_mb": None})
        if g["phase"] == "warm":
            r = g.get("response_ms") or {}
            row.update(p50_ms=r.get("p50"), p99_ms=r.get("p99"), rps=g["achieved_rps"])
        else:
            # Cold start = spawn (or invoke) → first response, the cold group's service time.
            row.update(cold_start_ms=(g.get("service_ms") or {}).get("p50"), init_ms=(g.get("init_ms") or {}).get("p50"))
        if g.get("peak_rss_mb"):
            row["rss_mb"] = max(row["rss_mb"] or 0.0, g["peak_rss_mb"])
    return list(rows.values())


RATIO_FIELDS = ("p50_ms", "p99_ms", "rps", "cold_start_ms", "rss_mb")


def relative_to(groups: list[dict[str, Any]], baseline_runtime: str = "rust") -> list[dict[str, Any]]:
    """Each target beside the baseline runtime's target of the same workload and region, as ratios."""
    rows = by_target(groups)
    base = {(r["region"], r["workload"]): r for r in rows if r["runtime"] == baseline_runtime}
    out = []
    for r in rows:
        b = base.get((r["region"], r["workload"]))
        if b is None:
            continue
        ratios = {f: (round(r[f] / b[f], 2) if r[f] and b[f] else None) for f in RATIO_FIELDS}
        out.append({**r, "x": ratios})
    return out
