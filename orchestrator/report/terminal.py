"""Terminal rendering (rich tables): a RunResult — per-group numbers, SLOs, gaps, baseline ratios — and
every other table the CLI prints (shards, calibration, functions, schedules, history trends, comparisons)."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestrator.analysis import history as hist
from orchestrator.analysis.compare import METRIC_LABEL, TargetRow, relative_to
from orchestrator.run.result import Group, RunResult
from workers.errors import SetupError
from workers.functions import artifact_for


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


def throttle_table(g: Group) -> Table:
    """429s by Reason over the run of one group, window by window."""
    reasons = sorted(g.throttled_by_reason)
    total = ", ".join(f"{r} {g.throttled_by_reason[r]}" for r in reasons)
    table = Table("window s", "offered/s", "ok/s", *reasons, header_style="bold",
                  title=f"throttles {g.region}/{g.target} {g.phase}: {total}")
    for w in g.throttle_windows():
        secs = w["seconds"]
        table.add_row(f"+{w['start_s']}..{w['start_s'] + secs}", f"{w['intended'] / secs:.1f}", f"{w['ok'] / secs:.1f}",
                      *(str(w["throttled"].get(r, 0)) for r in reasons))
    return table


def _cell(value: Any, ratio: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    text = f"{value:.3g}{unit}" if isinstance(value, float) else f"{value}{unit}"
    return text if ratio in (None, 1.0) else f"{text} ({ratio:g}×)"


@functools.cache
def built_size_mb(runtime: str) -> float | None:
    """The size of this machine's build of a runtime's function (`fnbench functions build`), in MB;
    None when it is not built here (or is not one of fnbench's functions)."""
    try:
        return artifact_for(runtime).size_bytes / 1e6
    except (ValueError, OSError, SetupError):
        return None


def relative_table(rows: Sequence[TargetRow]) -> Table:
    """Every target beside Rust's for the same workload: value (ratio to Rust); for local functions
    also the size of this machine's build of each (rust-wasm: the .wasm module)."""
    t = Table(title="relative to rust, same workload (value and ratio ×)", header_style="bold")
    # Lambda targets: the platform's clocks (REPORT) and cost beside the client's; else the process's.
    platform = any(r.duration_p99_ms is not None for r in rows)
    columns = ["workload", "target", "runtime", "p50 ms", "p99 ms", "ok/s", "cold start p50 ms"]
    columns += (["Duration p99 ms", "Init Duration p50 ms", "max mem MB", "$/1M"] if platform
                else ["init p50 ms", "peak RSS MB", "artefact MB"])
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
            size, base = built_size_mb(r.runtime), built_size_mb("rust")
            cells += [_cell(r.init_ms, None), _cell(r.rss_mb, x["rss_mb"]),
                      _cell(size, round(size / base, 2) if size and base else None)]
        t.add_row(*cells)
    return t


def slowest_table(g: Group, limit: int = 0) -> Table:
    """A group's slowest requests over the run, with the ids that find them in other tools."""
    rows = g.slowest[:limit] if limit else g.slowest
    t = Table(title=f"slowest requests: {g.region} / {g.target} / {g.phase}", title_justify="left")
    for col in ("due (UTC)", "response ms", "service ms", "outcome", "trace id", "request id", "platform"):
        t.add_column(col, justify="right" if col.endswith("ms") else "left")
    for r in rows:
        report = r.get("report") or {}
        platform = ", ".join(f"{k} {v:g}" for k, v in report.items())
        due = dt.datetime.fromtimestamp(float(r["due"]), dt.UTC).strftime("%H:%M:%S.%f")[:-3]
        t.add_row(due, f"{r['response_ms']:.2f}", f"{r.get('service_ms', 0.0):.2f}", str(r["outcome"]),
                  escape(str(r.get("trace_id", ""))), escape(str(r.get("request_id", ""))), escape(platform))
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


def _bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def streaming_table(groups: Sequence[Group]) -> Table | None:
    """Response streaming (InvokeWithResponseStream): time to first and last byte, bytes, the
    streaming charge; None when no group streamed."""
    rows = [g for g in groups if g.ttfb_ms is not None]
    if not rows:
        return None
    table = Table(title="response streaming: time to first / last byte from the due time (ms), bytes streamed, "
                  "charge past 6 MB per invocation", header_style="bold")
    for col in ("target", "phase", "TTFB p50", "TTFB p99", "TTLB p50", "TTLB p99", "bytes", "bytes/inv", "stream $"):
        table.add_column(col, justify="left" if col in ("target", "phase") else "right")
    for g in rows:
        f, last = g.ttfb_ms, g.ttlb_ms
        streaming = (g.cost or {}).get("streaming") or {}
        n = g.ok + g.outcomes.get("function_error", 0)  # the invocations whose streams were counted
        table.add_row(g.target, g.phase, _ms(f.p50 if f else None), _ms(f.p99 if f else None),
                      _ms(last.p50 if last else None), _ms(last.p99 if last else None), _bytes(g.stream_bytes),
                      _bytes(g.stream_bytes / n) if n else "-", _usd(streaming.get("usd")))
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
    for g in result.groups:
        if g.throttled_by_reason:
            console.print(throttle_table(g))
    streamed = streaming_table(result.groups)
    if streamed is not None:
        console.print(streamed)
    ratios = relative_to(result.groups)
    if len(ratios) > 1:
        console.print(relative_table(ratios))
    if result.sweep:
        from orchestrator.analysis import sweep

        console.print(sweep.table(result.sweep))
    for gap in result.gaps:
        console.print(f"[yellow]gap[/]: {gap.region} {gap.shard} {gap.seconds:.2f}s ({gap.reason})")
    regions = len({v.region for v in result.slo}) > 1
    for g in result.failed_groups:
        console.print(f"[red]failed[/]: {g.region}/{g.target} {g.phase}: {escape(g.failure or '')}", highlight=False)
    for v in result.slo:
        mark = "[green]PASS[/]" if v.passed else f"[red]{v.word}[/]"
        bound = f"<= {v.max}" if v.max is not None else f">= {v.min}"
        where = f"{v.region}/{v.target}" if regions else v.target
        plan = (f"; {v.unsent} of {v.planned} planned requests never sent"
                + ("" if v.metric in ("error_rate", "achieved_rps") else ": measured on part of the plan")
                if v.unsent else "")
        console.print(f"SLO {mark} {where} {v.phase} {v.metric} = {v.value} (want {bound}{plan})")
    if result.interrupted:
        console.print("[yellow]interrupted: partial results[/]")
    if result.incomplete:
        console.print("[red]incomplete[/]: part of what was measured could not be kept (see errors)")
    if result.bad_records:
        console.print(f"[yellow]partial[/]: {result.bad_records} record(s) could not be read and are left out "
                      "(bad_records in result.json)", highlight=False)
        for reason in result.bad_record_reasons[:5]:
            console.print(f"  {reason}", highlight=False, markup=False)


# -- the other tables the CLI prints ------------------------------------------------------------
def when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else "-"


def shards_table(shards: Sequence[Any], title: str = "") -> Table:
    table = Table("shard", "start +s", "duration s", "arrival", "max in flight", title=title or None)
    for s in shards:
        arrival = ", ".join(f"{k}={v}" for k, v in s.arrival.items() if k != "kind")
        table.add_row(s.shard_id, f"{s.start_at:.1f}", f"{s.duration_s:.1f}", f"{s.arrival['kind']} {arrival}",
                      str(s.max_in_flight))
    return table


def calibration_table(rep: dict[str, Any], title: str) -> Table:
    table = Table("percentile", "measured ms", "model ms", "sampling band ms", "beyond band %", "target's record ms",
                  "error %", "verdict", title=title)
    for stat, s in rep["stats"].items():
        lo, hi = s["band_ms"]
        table.add_row(stat, str(s["measured_ms"]), f"{s['model_ms']:.3f}", f"{lo:.3f} – {hi:.3f}",
                      "-" if s["beyond_band_pct"] is None else f"{s['beyond_band_pct']:+.2f}",
                      str(s["truth_ms"]), "-" if s["error_pct"] is None else f"{s['error_pct']:+.2f}",
                      "[green]PASS[/]" if s["pass"] else "[red]FAIL[/]")
    return table


def functions_table(artifacts: Sequence[Any], title: str) -> Table:
    table = Table("runtime", "artefact", "size", "build s", "start command", title=title)
    for a in artifacts:
        table.add_row(a.runtime, str(a.path), f"{a.size_bytes / 1e6:.2f} MB" if a.size_bytes >= 1e5 else f"{a.size_bytes / 1e3:.1f} kB",
                      f"{a.build_seconds:.1f}" if a.build_seconds else "-", " ".join(Path(c).name if i == 0 else c for i, c in enumerate(a.command)))
    return table


def deployed_table(done: Sequence[Any]) -> Table:
    table = Table("function", "action", "Lambda runtime", "arch", "MB", "code", "SHA-256", "s", "ARN", title="deployed")
    for d in done:
        table.add_row(d.function, d.action, d.lambda_runtime, d.architecture, str(d.memory_mb), f"{d.code_size:,} B",
                      d.code_sha256[:12] + "…", f"{d.seconds:.1f}", d.arn)
    return table


def status_tables(st: dict[str, Any]) -> list[Table]:
    regions = Table("region", "workers", "processes", "queued tasks", title="regions")
    for name, r in st["regions"].items():
        regions.add_row(name, str(r["workers"]), str(r["processes"]), str(r["queue_depth"]))
    runs = Table("run", "state", "shards by state", title="runs")
    for r in st["runs"]:
        runs.add_row(r["run_id"], str(r["state"]), ", ".join(f"{k} {v}" for k, v in sorted(r["shards"].items())))
    return [regions, runs]


def schedules_table(rows: Sequence[dict[str, Any]]) -> Table:
    table = Table("name", "when", "spec", "next due", "last run", "verdict", "runs", title="schedules")
    for r in rows:
        table.add_row(r["name"], r["describe"] + (" (paused)" if r.get("paused") else ""), r["spec_name"],
                      when(r["next_due"]), str(r.get("last_run") or "-"), str(r.get("last_verdict") or "-"), str(r.get("runs", 0)))
    return table


def history_tables(name: str, entries: Sequence[dict[str, Any]], limit: int, band: float) -> list[Table]:
    """Per target × region, newest first, a trend glyph per column (red: worse, green: better)."""
    tables = []
    for (target, region), rows in sorted(hist.rows(entries[:limit + 1]).items()):
        table = Table("run", "start", "git", *[label for _, label in hist.COLUMNS], title=f"{name}: {target} in {region}")
        for i, row in enumerate(rows[:limit]):
            older = rows[i + 1] if i + 1 < len(rows) else None
            cells = []
            for column, _ in hist.COLUMNS:
                v = row.get(column)
                arrow = hist.glyph(v, older.get(column) if older else None, column, band)
                text = "-" if v is None else (f"{v * 100:.2f}%" if column == "error_rate" else f"{v:g}")
                bad = hist.worse(arrow, column)
                style = "red" if bad else "green" if bad is False else ""
                cells.append(f"[{style}]{text} {arrow}[/]" if style else f"{text} {arrow}".strip())
            table.add_row(row["run_id"], when(row["start"]), str(row.get("git") or "-"), *cells)
        tables.append(table)
    return tables


def comparison_table(found: Sequence[Any]) -> Table:
    table = Table("region", "subject", "vs", "metric", "vs value", "subject value", "ratio", "change (95 % CI)", "verdict")
    for c in found:
        def num(v: float | None, metric: str = c.metric) -> str:
            return "-" if v is None else f"{v * 100:.3f}%" if metric == "error_rate" else f"{v:g}"

        ci = "-" if c.low is None or c.high is None or c.change is None else (
            f"{c.change * 100:+.1f}% ({c.low * 100:+.1f}…{c.high * 100:+.1f})" if c.relative
            else f"{c.change:+.2f}pp ({c.low:+.2f}…{c.high:+.2f})")
        table.add_row(c.region, c.subject, c.reference, METRIC_LABEL.get(c.metric, c.metric), num(c.reference_value),
                      num(c.subject_value), "-" if c.ratio is None else f"{c.ratio:.3f}", ci, c.verdict)
    return table
