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


def relative_to(groups: list[dict[str, Any]], baseline_runtime: str = "rust") -> list[dict[str, Any]]:
    """Each group's p50/p99/achieved rate as a ratio to the baseline runtime's group (same region, phase)."""
    base = {(g["region"], g["phase"]): g for g in groups if g["runtime"] == baseline_runtime}
    out = []
    for g in groups:
        b = base.get((g["region"], g["phase"]))
        if not b:
            continue
        ratio: dict[str, Any] = {"target": g["target"], "runtime": g["runtime"], "region": g["region"], "phase": g["phase"]}
        for stat in ("p50", "p99"):
            x, y = (g.get("response_ms") or {}).get(stat), (b.get("response_ms") or {}).get(stat)
            ratio[f"{stat}_x"] = round(x / y, 2) if x and y else None
        ratio["rps_x"] = round(g["achieved_rps"] / b["achieved_rps"], 2) if b["achieved_rps"] else None
        out.append(ratio)
    return out
