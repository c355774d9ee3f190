"""Terminal rendering of a RunResult (rich tables): per-group numbers, SLOs, gaps, baseline ratios."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestrator.compare import TargetRow, relative_to
from orchestrator.result import Group, RunResult


def _ms(v: float | None) -> str:
    return "-" if v is None else (f"{v:.3f}" if v < 10 else f"{v:.1f}")


def _conns(g: Group) -> str:
    """Connections the group opened: total (ready before start / TLS resumed)."""
    if not g.connections_opened:
        return "0"
    parts = [f"{g.connections_before_start} early"] if g.connections_before_start else []
    if g.tls_resumed:
        parts.append(f"{g.tls_resumed} resumed")
    return f"{g.connections_opened} ({', '.join(parts)})" if parts else str(g.connections_opened)


def groups_table(groups: Sequence[Group], title: str = "") -> Table:
    table = Table(title=title or None, header_style="bold", show_lines=False)
    # Connection columns only where a group opened connections (HTTP platforms).
    connections = any(g.connect_ms is not None or g.connections_opened for g in groups)
    columns = ["region", "target", "phase", "intended", "completed", "offered/s", "ok/s", "errors",
               "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "svc p99", "lag p99"]
    if connections:
        columns += ["conns", "connect p99"]
    failed = any(g.failed for g in groups)
    if failed:  # what was measured, and what could not be (the reasons are printed below the table)
        columns.insert(3, "status")
    for col in columns:
        table.add_column(col, justify="left" if col in ("region", "target", "phase") else "right")
    for g in groups:
        r = g.response_ms
        row = [
            g.region, g.target, g.phase, str(g.intended), str(g.completed),
            f"{g.intended_rps:.1f}", f"{g.achieved_rps:.1f}", ", ".join(f"{k}={v}" for k, v in g.error_outcomes.items()) or "0",
            _ms(r.p50), _ms(r.p90), _ms(r.p99), _ms(r.p999), _ms(r.max),
            _ms(g.service_ms.p99), _ms(g.send_lag_ms.p99),
        ]
        if connections:
            row += [_conns(g), _ms(g.connect_ms.p99 if g.connect_ms is not None else None)]
        if failed:
            row.insert(3, "[red]FAILED[/]" if g.failed else "ok")
        table.add_row(*row)
    return table


def _cell(value: Any, ratio: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    text = f"{value:.3g}{unit}" if isinstance(value, float) else f"{value}{unit}"
    return text if ratio in (None, 1.0) else f"{text} ({ratio:g}×)"


def relative_table(rows: Sequence[TargetRow]) -> Table:
    """Every target beside Rust's for the same workload: value (ratio to Rust)."""
    t = Table(title="relative to rust, same workload (value and ratio ×)", header_style="bold")
    # Lambda targets: the platform's clocks (REPORT) and cost beside the client's; else the process's.
    platform = any(r.duration_p99_ms is not None for r in rows)
    columns = ["workload", "target", "runtime", "p50 ms", "p99 ms", "ok/s", "cold start p50 ms"]
    columns += (["Duration p99 ms", "Init Duration p50 ms", "max mem MB", "$/1M"] if platform
                else ["init p50 ms", "peak RSS MB"])
    for col in columns:
        t.add_column(col, justify="left" if col in ("workload", "target", "runtime") else "right")
    for r in sorted(rows, key=lambda r: (r.workload, r.runtime != "rust", r.target)):
        x = r.x
        cells = [r.workload, r.target, r.runtime, _cell(r.p50_ms, x["p50_ms"]), _cell(r.p99_ms, x["p99_ms"]),
                 _cell(r.rps, x["rps"]), _cell(r.cold_start_ms, x["cold_start_ms"])]
        if platform:
            cells += [_cell(r.duration_p99_ms, x["duration_p99_ms"]), _cell(r.init_duration_ms, x["init_duration_ms"]),
                      _cell(r.max_memory_mb, x["max_memory_mb"]), _cell(r.per_million_usd, x["per_million_usd"])]
        else:
            cells += [_cell(r.init_ms, None), _cell(r.rss_mb, x["rss_mb"])]
        t.add_row(*cells)
    return t


def _usd(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def platform_table(groups: Sequence[Group]) -> Table | None:
    """The platform's own clocks (Lambda REPORT lines), memory and cost; None when no group has them."""
    rows = [g for g in groups if g.platform_ms is not None]
    if not rows:
        return None
    table = Table(title="platform (Lambda REPORT): Duration, Billed, Init Duration p50/p99 ms; cost at the target region's prices", header_style="bold")
    for col in ("target", "phase", "dur p50", "dur p99", "billed p50", "billed p99", "init p50", "init p99",
                "max mem MB", "GB-s", "$/1M", "$/1M +req", "REPORT missing"):
        table.add_column(col, justify="left" if col in ("target", "phase") else "right")
    for g in rows:
        p, b, i, c = g.platform_ms, g.billed_ms, g.init_duration_ms, g.cost or {}
        table.add_row(
            g.target, g.phase, _ms(p.p50 if p else None), _ms(p.p99 if p else None), _ms(b.p50 if b else None),
            _ms(b.p99 if b else None), _ms(i.p50 if i else None), _ms(i.p99 if i else None),
            "-" if g.max_memory_used_mb is None else f"{g.max_memory_used_mb:g}",
            f"{c['gb_s']:.4g}" if c else "-", _usd(c.get("per_million_usd")), _usd(c.get("per_million_with_requests_usd")),
            str(g.reports_missing + g.reports_truncated),
        )
    return table


def render(result: RunResult, console: Console | None = None) -> None:
    console = console or Console()
    if result.groups:
        console.print(groups_table(result.groups, title=f"fnbench run {result.run_id}"))
    else:
        console.print(f"fnbench run {result.run_id}: nothing was measured", highlight=False)
    platform = platform_table(result.groups)
    if platform is not None:
        console.print(platform)
    ratios = relative_to(result.groups)
    if len(ratios) > 1:
        console.print(relative_table(ratios))
    if result.sweep:
        from orchestrator import sweep

        console.print(sweep.table(result.sweep))
    for gap in result.gaps:
        console.print(f"[yellow]gap[/]: {gap.region} {gap.shard} {gap.seconds:.2f}s ({gap.reason})")
    regions = len({v.region for v in result.slo}) > 1
    for g in result.failed_groups:
        console.print(f"[red]failed[/]: {g.region}/{g.target} {g.phase}: {escape(g.failure or '')}", highlight=False)
    for v in result.slo:
        mark = "[red]NO DATA[/]" if v.no_data else "[green]PASS[/]" if v.passed else "[red]FAIL[/]"
        bound = f"<= {v.max}" if v.max is not None else f">= {v.min}"
        where = f"{v.region}/{v.target}" if regions else v.target
        console.print(f"SLO {mark} {where} {v.phase} {v.metric} = {v.value} (want {bound})")
    if result.interrupted:
        console.print("[yellow]interrupted: partial results[/]")
    if result.incomplete:
        console.print("[red]incomplete[/]: part of what was measured could not be kept (see errors)")
