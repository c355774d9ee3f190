"""SLO verdicts and target-vs-baseline comparisons over the groups of a RunResult."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from orchestrator.errors import exit_code
from orchestrator.result import Group, RunResult, SloVerdict


class Slo(Protocol):
    target: str
    metric: str
    max: float | None
    min: float | None


def slo_verdicts(slos: Iterable[Slo], groups: Sequence[Group]) -> list[SloVerdict]:
    """One verdict per SLO per matching measured group; a group with no data fails the SLO."""
    verdicts = []
    for slo in slos:
        for g in groups:
            if slo.target not in ("*", g.target):
                continue
            value = g.metric(slo.metric)
            ok = value is not None
            if value is not None and slo.max is not None:
                ok = value <= slo.max
            if ok and value is not None and slo.min is not None:
                ok = value >= slo.min
            verdicts.append(SloVerdict(target=g.target, region=g.region, phase=g.phase, metric=slo.metric,
                                       max=slo.max, min=slo.min, value=value, passed=ok))
    return verdicts


def judge(result: RunResult, slos: Iterable[Slo]) -> tuple[RunResult, int]:
    """The result with its SLO verdicts, and the exit code it earns."""
    result = replace(result, slo=tuple(slo_verdicts(slos, result.groups)))
    return result, exit_code(slo_failed=result.slo_failed, errors=bool(result.errors),
                             interrupted=result.interrupted, lost_load=result.lost_shards > 0)


RATIO_FIELDS = ("p50_ms", "p99_ms", "rps", "cold_start_ms", "rss_mb")


@dataclass(frozen=True)
class TargetRow:
    """One (region, target): warm p50/p99 and throughput, cold start, init, peak RSS; ratios to a baseline."""

    region: str
    target: str
    runtime: str
    workload: str
    p50_ms: float | None = None
    p99_ms: float | None = None
    rps: float | None = None
    cold_start_ms: float | None = None
    init_ms: float | None = None
    rss_mb: float | None = None
    x: dict[str, float | None] = field(default_factory=dict)


def by_target(groups: Sequence[Group]) -> list[TargetRow]:
    rows: dict[tuple[str, str], TargetRow] = {}
    for g in groups:
        key = (g.region, g.target)
        row = rows.get(key) or TargetRow(g.region, g.target, g.runtime, g.workload)
        if g.phase == "warm":
            row = replace(row, p50_ms=g.response_ms.p50, p99_ms=g.response_ms.p99, rps=g.achieved_rps)
        else:
            # Cold start = spawn (or invoke) → first response, the cold group's service time.
            row = replace(row, cold_start_ms=g.service_ms.p50, init_ms=g.init_ms.p50 if g.init_ms else None)
        if g.peak_rss_mb:
            row = replace(row, rss_mb=max(row.rss_mb or 0.0, g.peak_rss_mb))
        rows[key] = row
    return list(rows.values())


def relative_to(groups: Sequence[Group], baseline_runtime: str = "rust") -> list[TargetRow]:
    """Each target beside the baseline runtime's target of the same workload and region, as ratios."""
    rows = by_target(groups)
    base = {(r.region, r.workload): r for r in rows if r.runtime == baseline_runtime}
    out = []
    for r in rows:
        b = base.get((r.region, r.workload))
        if b is None:
            continue
        ratios: dict[str, float | None] = {}
        for f in RATIO_FIELDS:
            mine, theirs = getattr(r, f), getattr(b, f)
            ratios[f] = round(mine / theirs, 2) if mine and theirs else None
        out.append(replace(r, x=ratios))
    return out
