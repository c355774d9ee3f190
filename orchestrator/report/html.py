"""A self-contained HTML report of one run, or an overlay of several, with interactive charts.

One file, no network request when opened (uPlot and its CSS are inlined from ``vendor/``), works
from ``file://``.  Its size is bounded by the number of intervals and targets, never by the number
of requests: every chart is drawn from HDR histograms and per-interval counts, and the time axis
is cut into at most ``MAX_POINTS`` buckets (consecutive intervals' histograms merged, never
percentiles averaged).  What it shows per run: the header (spec, run, start, duration, regions,
generator health, verdict), response-time distributions on a 'nines' axis (warm and cold
apart), p50/p90/p99/max over time per target and region, intended vs achieved throughput,
errors by outcome over time, gaps and re-dispatches on the time axis, cold starts and init
times per runtime beside Rust, memory, cost, the comparison table, the SLO verdicts and the
spec as run.  Several runs overlay on the same axes, each series labelled by its run.
"""

from __future__ import annotations

import datetime as dt
import html
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from orchestrator.analysis.compare import TargetRow, relative_to
from orchestrator.errors import InputError
from orchestrator.run.collect import Collector
from orchestrator.run.result import Group, RunResult
from workers import histograms
from workers.contract import ERROR_OUTCOMES, OUTCOME_NAMES, Interval, SchemaError
from workers.histograms import MergedHistogram

VENDOR = Path(__file__).parent / "vendor"
MAX_POINTS = 2000  # per series on the time axis
NINES_MAX = 4.0  # the distribution axis ends at 99.99 %
STANDARD = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9, "p9999": 99.99}
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
           "#bcbd22", "#393b79", "#637939", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354")
STATS = ("p50", "p90", "p99", "max")


def distribution_percentiles() -> list[float]:
    """Percentiles of the distribution chart: 0 … 99.99 evenly on the nines axis, plus the standard ones exactly."""
    standard = set(STANDARD.values())
    grid = (round(100.0 * (1.0 - 10.0 ** (-k / 20.0)), 6) for k in range(int(NINES_MAX * 20) + 1))
    # Grid points next to a standard percentile would share its pixel: hovering 99 must show 99.
    points = {p for p in grid if all(abs(nines(p) - nines(s)) > 0.02 for s in standard)}
    return sorted(points | standard)


def nines(p: float) -> float:
    return round(-math.log10(1.0 - p / 100.0), 5) if p < 100.0 else NINES_MAX


# -- reading a run ---------------------------------------------------------------------------


@dataclass
class RunData:
    """One run as the report reads it: its result, its intervals, its spec, and what was damaged."""

    result: RunResult
    intervals: list[Interval] = field(default_factory=list)
    spec_text: str | None = None
    damage: list[str] = field(default_factory=list)
    folder: Path | None = None

    @property
    def label(self) -> str:
        return self.result.run_id


def read_intervals_tolerant(path: Path) -> tuple[list[Interval], list[str]]:
    """Every interval that can be read, and a sentence per kind of damage (a torn last line, bad lines)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: not found; the run recorded no intervals") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    lines = raw.splitlines()
    out: list[Interval] = []
    bad: list[int] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(histograms.read_interval(line))
        except SchemaError:
            bad.append(n)
    damage = []
    if bad and bad[-1] == len(lines) and not raw.endswith(b"\n"):
        damage.append(f"{path.name}: the last line ({len(lines[-1])} bytes) is cut short, as by a crash "
                      "mid-write; it is left out")
        bad.pop()
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (" …" if len(bad) > 5 else "")
        damage.append(f"{path.name}: {len(bad)} line(s) are not interval records (line {shown}); left out")
    return out, damage


def load_run(folder: Path, result: RunResult | None = None) -> RunData:
    """A run folder (results/<run_id>); ``result`` is its result when the caller already has it."""
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"{folder}: no such run folder")
    intervals, damage = read_intervals_tolerant(folder / "intervals.jsonl")
    if result is None:
        saved = folder / "result.json"
        if saved.exists():
            result = RunResult.load(saved)
        else:
            collector = Collector(intervals[0].run_id if intervals else folder.name)
            collector.add_all(intervals)
            result = collector.result(incomplete=True, errors=(f"{saved}: missing; the run did not finish",))
    if not intervals:
        damage.append("intervals.jsonl holds no interval: no chart can be drawn")
    spec_file = folder / "spec.yaml"
    try:
        spec_text = spec_file.read_text(errors="replace") if spec_file.exists() else None
    except OSError:
        spec_text = None
    return RunData(result, intervals, spec_text, damage, folder)


# -- what the charts show ----------------------------------------------------------------------


def verdict(result: RunResult) -> tuple[str, str]:
    """(PASS|FAIL|PARTIAL, one line) for the header and the Markdown summary."""
    failed = [v for v in result.slo if not v.passed]
    parts = []
    if result.slo:
        parts.append(f"{len(result.slo) - len(failed)}/{len(result.slo)} SLO verdicts passed")
    else:
        parts.append("no SLOs")
    for v in failed[:3]:
        bound = f"<= {v.max:g}" if v.max is not None else f">= {v.min:g}" if v.min is not None else ""
        parts.append(f"{v.target} {v.phase} {v.metric} = " + ("NO DATA" if v.no_data else _num(v.value))
                     + f" (want {bound})")
    if len(failed) > 3:
        parts.append(f"and {len(failed) - 3} more failed")
    errors = sum(g.errors for g in result.groups)
    requests = sum(sum(g.outcomes.values()) for g in result.groups)
    parts.append(f"{errors} of {requests} requests failed")
    if result.gaps:
        parts.append(f"{len(result.gaps)} gap(s) in load ({sum(g.seconds for g in result.gaps):g} s)")
    # Shards whose window (or its rest) no attempt covered, as RunResult counts them.
    lost = sum(1 for g in result.gaps if g.abandoned or g.reason.startswith(("expired", "never ran")))
    if lost:
        parts.append(f"{lost} shard(s) expired, abandoned or never ran: load was lost")
    if result.interrupted:
        parts.append("interrupted: partial results")
    if result.incomplete:
        parts.append("incomplete: part of what was measured could not be kept")
    if result.failed_groups:
        parts.append(f"{len(result.failed_groups)} group(s) failed: "
                     + ", ".join(f"{g.target} {g.phase}" for g in result.failed_groups[:3]))
    if result.errors:
        parts.append(f"{len(result.errors)} error(s)")
    word = "FAIL" if failed or result.errors or result.failed_groups or lost else "PARTIAL" if result.interrupted or result.incomplete else "PASS"
    if not result.groups:
        word, parts = "FAIL", ["nothing was measured", *parts[1:]]
    return word, "; ".join(parts)


def health(result: RunResult) -> dict[str, Any]:
    lags = [g.send_lag_ms.p99 for g in result.groups if g.send_lag_ms.p99 is not None]
    return {
        "send_lag_p99_ms": max(lags) if lags else None,
        "dropped": sum(g.outcomes.get("dropped", 0) for g in result.groups),
        "gaps": len(result.gaps),
        "gap_s": round(sum(g.seconds for g in result.gaps), 3),
        "redispatched": result.redispatched or 0,
    }


def run_duration(result: RunResult, intervals: Sequence[Interval]) -> float:
    measured = [iv for iv in intervals if not iv.warmup and (iv.intended or iv.completed)]
    if measured and result.start_at:
        return round(max(iv.t1 for iv in measured) - result.start_at, 1)
    if measured:
        return round(max(iv.t1 for iv in measured) - min(iv.t0 for iv in measured), 1)
    return round(max((g.seconds for g in result.groups), default=0.0), 1)


@dataclass
class Series:
    """One group's time series: bucket end (seconds since the run's start) → values."""

    p: dict[str, dict[float, float | None]] = field(default_factory=lambda: {s: {} for s in STATS})
    intended: dict[float, float] = field(default_factory=dict)
    achieved: dict[float, float] = field(default_factory=dict)
    memory: dict[float, float] = field(default_factory=dict)


@dataclass
class Analysis:
    run: RunData
    origin: float
    width: float
    hists: dict[tuple[str, str, str, str], dict[str, MergedHistogram]]
    series: dict[tuple[str, str, str, str], Series]
    errors: dict[str, dict[float, float]]  # outcome → bucket → per second
    marks: list[dict[str, Any]]


def analyse(run: RunData, max_points: int = MAX_POINTS) -> Analysis:
    """Merge the run's intervals: whole-run histograms per group, and per time bucket."""
    collector = Collector(run.result.run_id)
    collector.add_all(run.intervals)
    hists = {key: state.hists for key, state in collector.groups.items()}
    seen: set[tuple[str, int, int]] = set()
    unique = []
    for iv in run.intervals:
        if iv.key not in seen:
            seen.add(iv.key)
            unique.append(iv)
    measured = [iv for iv in unique if not iv.warmup]
    start = run.result.start_at or min((iv.t0 for iv in measured), default=0.0)
    lengths = [iv.t1 - iv.t0 for iv in measured if iv.t1 > iv.t0]
    flush = max(1.0, round(statistics.median(lengths))) if lengths else 1.0
    anchor = min((iv.t0 for iv in measured), default=start)
    span = max((iv.t1 for iv in measured), default=anchor) - anchor
    width = max(flush, math.ceil(span / max_points)) if span > 0 else flush
    buckets: dict[tuple[tuple[str, str, str, str], int], list[Interval]] = defaultdict(list)
    for iv in measured:
        buckets[((iv.region, iv.target, iv.runtime, iv.phase), round((iv.t1 - anchor) / width))].append(iv)
    series: dict[tuple[str, str, str, str], Series] = defaultdict(Series)
    errors: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for (key, b), ivs in sorted(buckets.items()):
        x = round(anchor + b * width - start, 3)
        merged = MergedHistogram()
        for iv in ivs:
            if iv.response_us:
                merged.add_encoded(iv.response_us)
        s = series[key]
        summary = merged.summary()
        for stat in STATS:
            s.p[stat][x] = summary.stat(stat)
        # Per second of the time the bucket's intervals cover (shards in parallel): a shard's short
        # final interval that shares a bucket with a full one is not read as a burst.
        per_shard: dict[str, float] = defaultdict(float)
        for iv in ivs:
            per_shard[iv.shard_id] += max(iv.t1 - iv.t0, 0.0)
        covered = max(per_shard.values()) if per_shard and max(per_shard.values()) > 0.05 * width else width
        s.intended[x] = round(sum(iv.intended for iv in ivs) / covered, 3)
        s.achieved[x] = round(sum(iv.outcomes.get("ok", 0) for iv in ivs) / covered, 3)
        memory = max(iv.max_memory_mb for iv in ivs)
        if memory:
            s.memory[x] = round(memory, 2)
        for iv in ivs:
            for outcome, n in iv.outcomes.items():
                if outcome in ERROR_OUTCOMES and n:
                    errors[outcome][x] += n / covered
    marks: list[dict[str, Any]] = []
    for iv in unique:  # the warm-up's gaps too: they are in the result's gaps
        late = round(iv.gap_s - iv.stall_s, 3)
        if late > 0 and iv.started > 0:
            marks.append({"x0": round(iv.started - late - start, 3), "x1": round(iv.started - start, 3),
                          "kind": "gap", "target": iv.target,
                          "label": f"{iv.target} {iv.shard_id} started {late:g}s late"})
        if iv.stall_s > 0:  # where it ended is known to the interval's end
            marks.append({"x0": round(iv.t1 - iv.stall_s - start, 3), "x1": round(iv.t1 - start, 3),
                          "kind": "gap", "target": iv.target,
                          "label": f"{iv.target} {iv.shard_id} stalled {iv.stall_s:g}s (due arrivals skipped)"})
    for g in run.result.gaps:
        if g.redispatched_at:
            at = g.redispatched_at - start
            x0 = g.start - start if g.start is not None else at - g.seconds
            marks.append({"x0": round(x0, 3), "x1": round(x0 + g.seconds, 3), "kind": "gap", "target": g.target,
                          "label": f"{g.target} {g.shard}: {g.seconds:g}s without load ({g.reason})"})
            marks.append({"x0": round(at, 3), "x1": round(at, 3), "kind": "redispatch", "target": g.target,
                          "label": f"{g.shard} re-dispatched"})
    rounded = {k: {x: round(v, 3) for x, v in d.items()} for k, d in errors.items()}
    return Analysis(run, start, width, hists, dict(series), rounded, marks)


def _align(series: Sequence[dict[float, Any]]) -> tuple[list[float], list[list[Any]]]:
    xs = sorted(set().union(*series)) if series else []
    return xs, [[s.get(x) for x in xs] for s in series]


def _key_label(key: tuple[str, str, str, str], regions: int) -> str:
    region, target, _runtime, phase = key
    return f"{target}" + (f" @{region}" if regions > 1 else "")


# -- charts (plain data for the page's script) ---------------------------------------------------


class Charts:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, cid: str, title: str, kind: str, series: list[tuple[str, dict[float, Any], dict[str, Any]]],
            ylabel: str, ylog: bool = False, marks: Sequence[dict[str, Any]] = (), note: str = "",
            categories: Sequence[str] = ()) -> str:
        """A chart from (label, {x: y}, style) series; returns its placeholder element."""
        series = [s for s in series if any(v is not None for v in s[1].values())]
        if not series:
            return f'<p class="empty">{html.escape(title)}: nothing recorded{html.escape(note)}</p>'
        xs, values = _align([s[1] for s in series])
        self.items.append({
            "id": cid, "title": title, "kind": kind, "x": xs, "ylabel": ylabel, "ylog": ylog,
            "marks": list(marks), "categories": list(categories),
            "series": [{"label": label, "values": v, **_labels_at(style, xs)}
                       for (label, _, style), v in zip(series, values, strict=True)],
        })
        return f'<div class="chart" id="chart-{cid}"></div>'


def _labels_at(style: dict[str, Any], xs: Sequence[float]) -> dict[str, Any]:
    """A series' point labels ({x: text}, e.g. the Memory Size of each point) aligned to the chart's x."""
    if "labels" not in style:
        return style
    labels = style["labels"]
    return {**style, "labels": [labels.get(x) for x in xs]}


DASHES: tuple[list[int], ...] = ([], [8, 4], [2, 3], [10, 3, 2, 3])


def _dash(key: tuple[str, str, str, str], regions: Sequence[str]) -> list[int]:
    """Regions of one target share its colour and differ by dash."""
    return DASHES[regions.index(key[0]) % len(DASHES)] if key[0] in regions else []


def _style(i: int, **extra: Any) -> dict[str, Any]:
    return {"color": PALETTE[i % len(PALETTE)], **extra}


def _dist(hists: MergedHistogram | None) -> dict[float, float | None]:
    if hists is None or not hists.total:
        return {}
    ps = distribution_percentiles()
    return dict(zip([nines(p) for p in ps], hists.percentiles_ms(ps), strict=True))


# -- HTML ----------------------------------------------------------------------------------------


def _num(v: Any, unit: str = "") -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        text = f"{v:,.3f}".rstrip("0").rstrip(".")
    else:
        text = f"{v:,}" if isinstance(v, int) else str(v)
    return text + unit


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, Markup) else html.escape(_num(c))}</td>" for c in r)
                   + "</tr>" for r in rows)
    return f'<div class="scroll"><table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table></div>'


class Markup(str):
    """Already-escaped HTML for a table cell."""


def _ratio(value: Any, x: float | None) -> Markup:
    text = html.escape(_num(value))
    if x is not None and x != 1.0:
        text += f' <span class="ratio">({x:g}×)</span>'
    return Markup(text)


def _groups_table(groups: Sequence[Group]) -> str:
    rows = []
    for g in groups:
        r = g.response_ms
        errs = ", ".join(f"{k} {n}" for k, n in g.error_outcomes.items()) or "0"
        if g.failed:  # the target could not be set up: what was measured stays, the reason is shown
            errs = f"FAILED: {g.failure}" + ("" if errs == "0" else f"; {errs}")
        rows.append((g.region, g.target, g.runtime, g.phase, g.intended, g.completed, g.intended_rps, g.achieved_rps,
                     errs, r.p50, r.p90, r.p99, r.p999, r.max, g.service_ms.p99, g.send_lag_ms.p99))
    return _table(("region", "target", "runtime", "phase", "intended", "completed", "intended req/s", "achieved req/s",
                   "errors", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "service p99 ms", "send lag p99 ms"),
                  rows, "groups")


def _comparison(rows: Sequence[TargetRow]) -> str:
    if not rows:
        return '<p class="empty">no Rust target of the same workload and region to compare with</p>'
    out = []
    for r in sorted(rows, key=lambda r: (r.region, r.workload, r.runtime != "rust", r.target)):
        x = r.x
        out.append((r.region, r.workload, r.target, r.runtime, _ratio(r.p50_ms, x.get("p50_ms")),
                    _ratio(r.p99_ms, x.get("p99_ms")), _ratio(r.rps, x.get("rps")),
                    _ratio(r.cold_start_ms, x.get("cold_start_ms")), r.init_ms, _ratio(r.rss_mb, x.get("rss_mb"))))
    return _table(("region", "workload", "target", "runtime", "warm p50 ms", "warm p99 ms", "req/s", "cold start ms",
                   "init ms", "peak RSS MB"), out, "comparison")


def _slo_table(result: RunResult) -> str:
    if not result.slo:
        return '<p class="empty">the spec sets no SLOs</p>'
    rows = []
    for v in result.slo:
        bound = f"<= {v.max:g}" if v.max is not None else f">= {v.min:g}" if v.min is not None else ""
        mark = Markup('<b class="pass">PASS</b>' if v.passed else f'<b class="fail">{v.word}</b>')
        rows.append((mark, v.target, v.region, v.phase, v.metric, v.value, bound))
    return _table(("verdict", "target", "region", "phase", "metric", "value", "want"), rows, "slo")


def _header(run: RunData) -> str:
    r = run.result
    word, line = verdict(r)
    h = health(r)
    measured = [iv.t0 for iv in run.intervals if not iv.warmup]
    at = r.start_at or (min(measured) if measured else None)
    start = dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if at else "–"
    if at and not r.start_at:
        start += " (first interval)"
    regions = sorted({g.region for g in r.groups}) or sorted(r.regions or {})
    facts = [
        ("spec", r.name or "–"), ("run", r.run_id), ("start", start), ("duration", f"{run_duration(r, run.intervals):g} s"),
        ("regions", ", ".join(regions) or "–"), ("mode", "distributed" if r.broker else f"local, {r.workers} worker(s)" if r.workers else "local"),
        ("send-lag p99", _num(h["send_lag_p99_ms"], " ms")), ("dropped", _num(h["dropped"])),
        ("gaps", f"{h['gaps']} ({h['gap_s']:g} s)"), ("re-dispatched", _num(h["redispatched"])),
    ]
    dl = "".join(f"<div><dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd></div>" for k, v in facts)
    trouble = [*run.damage, *r.errors]
    damage = ("<ul class='damage'>" + "".join(f"<li>{html.escape(d)}</li>" for d in trouble) + "</ul>") if trouble else ""
    return (f'<header><h1>{html.escape(r.name or r.run_id)} <small>{html.escape(r.run_id)}</small></h1>'
            f'<p class="verdict {word.lower()}" id="verdict"><b>{word}</b> — {html.escape(line)}</p>'
            f"<dl>{dl}</dl>{damage}</header>")


def _section(title: str, body: str, sid: str = "") -> str:
    return f'<section id="{sid}"><h2>{html.escape(title)}</h2>{body}</section>'


def _run_sections(a: Analysis, charts: Charts) -> list[str]:
    r = a.run.result
    region_names = sorted({k[0] for k in a.hists})
    regions = len(region_names)
    keys = sorted(a.hists)
    colour = {t: i for i, t in enumerate(sorted({k[1] for k in keys}))}
    out = [_header(a.run)]
    series: list[tuple[str, dict[float, Any], dict[str, Any]]]
    dist = []
    for phase in ("warm", "cold"):
        series = [(_key_label(k, regions), _dist(a.hists[k]["response_ms"]), _style(colour[k[1]], dash=_dash(k, region_names)))
                  for k in keys if k[3] == phase]
        if series:
            dist.append(charts.add(f"dist-{phase}", f"{phase} response time by percentile", "dist", series, "ms", ylog=True))
    out.append(_section("Response time distribution (from the due time, coordinated-omission corrected)",
                        "".join(dist) or '<p class="empty">nothing measured</p>', "distribution"))
    over = []
    chart_of: dict[tuple[str, str, str, str], str] = {}
    for n, k in enumerate(k for k in keys if k[3] == "warm"):
        s = a.series.get(k)
        if s is None:
            continue
        region, target = k[0], k[1]
        chart_of[k] = f"chart-time-{n}"
        over.append(charts.add(f"time-{n}", f"{target} @{region}: response time per {a.width:g} s (merged histograms)",
                               "time", [(stat, s.p[stat], _style(i)) for i, stat in enumerate(STATS)], "ms",
                               marks=[m for m in a.marks if m["target"] == target]))
    out.append(_section("Percentiles over time", "".join(over) or '<p class="empty">no warm intervals</p>', "over-time"))
    out.append(_section("Slowest requests (with the ids that find them in the platform's logs and traces)",
                        _slowest(r.groups, a.origin, chart_of), "slowest"))
    thr = []
    series = []
    for k in (k for k in keys if k[3] == "warm"):
        s = a.series.get(k)
        if s is None:
            continue
        label = _key_label(k, regions)
        series.append((f"{label} intended", s.intended, _style(colour[k[1]], dash=[6, 4])))
        series.append((f"{label} achieved", s.achieved, _style(colour[k[1]])))
    thr.append(charts.add("throughput", "intended vs achieved (ok responses) req/s", "time", series, "req/s", marks=a.marks))
    errs = [(name, a.errors[name], _style(i + 1)) for i, name in enumerate(OUTCOME_NAMES) if name in a.errors]
    thr.append(charts.add("errors", "errors by outcome, per second", "time", errs, "errors/s", marks=a.marks,
                          note=": no request failed"))
    out.append(_section("Throughput and errors", "".join(thr) + _throttles(r.groups) + _gaps_table(a), "throughput"))
    out.append(_section("Cold starts", _cold(a, charts, keys, region_names, colour), "cold"))
    out.append(_section("Memory", _memory(a, charts, keys, regions), "memory"))
    out.append(_section("Cost", _cost(r), "cost"))
    if any(g.ttfb_ms is not None for g in r.groups):
        out.append(_section("Response streaming (time to first / last byte from the due time)", _streaming(r), "streaming"))
    if r.sweep:
        out.append(_section(f"Memory sweep (the same load at each Memory Size; * chosen by strategy "
                            f"{r.sweep.get('strategy', 'cost')}; C cost, S speed, B balanced)",
                            _frontier(r.sweep, charts) + _sweep(r.sweep), "sweep"))
    out.append(_section("Compared with Rust (same workload and region; ratio ×)", _comparison(relative_to(r.groups)),
                        "comparison"))
    out.append(_section("All groups", _groups_table(r.groups), "groups"))
    out.append(_section("SLO verdicts", _slo_table(r), "slo"))
    spec = a.run.spec_text
    out.append(_section("The spec as run", f"<pre>{html.escape(spec)}</pre>" if spec else '<p class="empty">spec.yaml not found</p>',
                        "spec"))
    return out


def _slowest(groups: Sequence[Group], origin: float, chart_of: dict[tuple[str, str, str, str], str]) -> str:
    """A table per group: its slowest requests of the run; the time links to the group's chart."""
    parts = []
    for g in groups:
        if not g.slowest:
            continue
        chart = chart_of.get((g.region, g.target, g.runtime, g.phase))
        rows = []
        for rec in g.slowest:
            at = float(rec["due"]) - origin
            when = html.escape(f"{at:.3f}")
            report = rec.get("report") or {}
            rows.append((Markup(f'<a href="#{chart}">{when}</a>' if chart else when), float(rec["response_ms"]),
                         float(rec.get("service_ms", 0.0)), rec["outcome"], rec.get("trace_id", ""),
                         rec.get("request_id", ""), ", ".join(f"{k} {v:g}" for k, v in report.items())))
        parts.append(f"<h3>{html.escape(f'{g.target} @{g.region} ({g.phase})')}</h3>" + _table(
            ("at s (due)", "response ms", "service ms", "outcome", "trace id", "request id", "platform REPORT"), rows,
            "slowest"))
    if not parts:
        return '<p class="empty">no slowest requests recorded (tracing.slowest: 0, or a run made before fnbench kept them)</p>'
    return ('<p class="note">The K slowest requests of each group over the run (the spec\'s tracing.slowest per '
            'interval); the time is seconds from the run\'s start, linked to the group\'s percentiles over time.</p>'
            + "".join(parts))


def _throttles(groups: Sequence[Group]) -> str:
    """Per group that was throttled: its 429s by Reason, window by window beside offered and ok req/s."""
    parts = []
    for g in groups:
        if not g.throttled_by_reason:
            continue
        reasons = sorted(g.throttled_by_reason)
        rows = [(f"+{w['start_s']}..{w['start_s'] + w['seconds']}", round(w["intended"] / w["seconds"], 1),
                 round(w["ok"] / w["seconds"], 1), *(w["throttled"].get(r, 0) for r in reasons))
                for w in g.throttle_windows()]
        total = ", ".join(f"{r} {g.throttled_by_reason[r]}" for r in reasons)
        parts.append(f"<h3>{html.escape(f'throttles {g.target} @{g.region} ({g.phase}): {total}')}</h3>"
                     + _table(("window s", "offered/s", "ok/s", *reasons), rows, "throttles"))
    return "".join(parts)


def _gaps_table(a: Analysis) -> str:
    gaps = a.run.result.gaps
    if not gaps:
        return '<p class="note">no gaps in load; no re-dispatch</p>'
    rows = [(g.region, g.target, g.shard, g.attempt, g.seconds, g.reason,
             round(g.redispatched_at - a.origin, 1) if g.redispatched_at else None, "yes" if g.abandoned else "")
            for g in gaps]
    return "<h3>Gaps (shaded on the time axis where their time is known)</h3>" + _table(
        ("region", "target", "shard", "attempt", "seconds", "reason", "re-dispatched at s", "abandoned"), rows)


def _cold(a: Analysis, charts: Charts, keys: Sequence[tuple[str, str, str, str]], region_names: Sequence[str],
          colour: dict[str, int]) -> str:
    cold = [k for k in keys if k[3] == "cold"]
    if not cold:
        return '<p class="empty">no cold phase in this run</p>'
    regions = len(region_names)
    init = [(_key_label(k, regions) + f" ({k[2]})", _dist(a.hists[k]["init_ms"]),
             _style(colour[k[1]], dash=_dash(k, region_names))) for k in cold]
    chart = charts.add("init", "function init time by percentile (cold starts)", "dist", init, "ms", ylog=True,
                       note=" (the functions reported no init time)")
    rows = []
    rust = {(g.region, g.workload): g for g in a.run.result.groups if g.phase == "cold" and g.runtime == "rust"}
    cold_groups = [g for g in a.run.result.groups if g.phase == "cold"]
    for g in sorted(cold_groups, key=lambda g: (g.region, g.workload, g.runtime != "rust", g.runtime, g.target)):
        base = rust.get((g.region, g.workload))
        mine, theirs = g.service_ms.p50, base.service_ms.p50 if base else None
        x = round(mine / theirs, 2) if mine and theirs else None
        init_x = (round(g.init_ms.p50 / base.init_ms.p50, 2) if g.init_ms and g.init_ms.p50 and base and base.init_ms
                  and base.init_ms.p50 else None)
        rows.append((g.region, g.workload, g.runtime, g.target, g.cold_starts or g.completed, g.error_outcomes and
                     ", ".join(f"{k} {n}" for k, n in g.error_outcomes.items()) or "0",
                     _ratio(g.init_ms.p50 if g.init_ms else None, init_x), g.init_ms.max if g.init_ms else None,
                     _ratio(mine, x), g.service_ms.max))
    return chart + _table(("region", "workload", "runtime", "target", "cold starts", "errors", "init p50 ms (× Rust)",
                           "init max ms", "spawn → first response p50 ms (× Rust)", "max ms"), rows, "cold")


def _memory(a: Analysis, charts: Charts, keys: Sequence[tuple[str, str, str, str]], regions: int) -> str:
    """Peak memory per group as bars; over time too where the platform reports it per interval."""
    r = a.run.result
    peaks = [(f"{g.target} {g.phase}" + (f" @{g.region}" if regions > 1 else ""), g.max_memory_used_mb or g.peak_rss_mb)
             for g in r.groups if g.max_memory_used_mb or g.peak_rss_mb]
    out = charts.add("memory", "peak memory (RSS, or the platform's max memory used), MB", "bars",
                     [("peak MB", {float(i): v for i, (_, v) in enumerate(peaks)}, _style(0))], "MB",
                     categories=[name for name, _ in peaks], note=" (no platform in this run reports memory)")
    over = [(_key_label(k, regions), a.series[k].memory, _style(i)) for i, k in enumerate(keys)
            if k in a.series and k[3] == "warm" and len(a.series[k].memory) >= 3]
    if over:
        out += charts.add("memory-time", "memory per interval, MB", "time", over, "MB", marks=a.marks)
    rss = [(g.region, g.target, g.runtime, g.phase, g.peak_rss_mb, g.max_memory_used_mb) for g in r.groups]
    return out + _table(("region", "target", "runtime", "phase", "peak RSS MB", "platform max memory MB"), rss)


def _cost(r: RunResult) -> str:
    billed = [g for g in r.groups if g.cost_per_million_usd is not None]
    if not billed:
        return '<p class="empty">no platform in this run bills (local and plain HTTP targets have no price)</p>'
    rows = [(g.region, g.target, g.runtime, g.phase, g.cost_per_million_usd, g.billed_ms.p50 if g.billed_ms else None)
            for g in billed]
    return _table(("region", "target", "runtime", "phase", "USD per million", "billed p50 ms"), rows, "cost")


def _streaming(r: RunResult) -> str:
    rows = [(g.region, g.target, g.phase, g.ttfb_ms.p50 if g.ttfb_ms else None, g.ttfb_ms.p99 if g.ttfb_ms else None,
             g.ttlb_ms.p50 if g.ttlb_ms else None, g.ttlb_ms.p99 if g.ttlb_ms else None, g.stream_bytes,
             ((g.cost or {}).get("streaming") or {}).get("usd"))
            for g in r.groups if g.ttfb_ms is not None]
    return _table(("region", "target", "phase", "TTFB p50 ms", "TTFB p99 ms", "TTLB p50 ms", "TTLB p99 ms",
                   "bytes streamed", "streaming USD"), rows, "streaming")


def _frontier(sweep: dict[str, Any], charts: Charts) -> str:
    """The price-performance frontier: USD per million against warm p99, one line per target and
    runtime through its sizes (each point labelled with its Memory Size)."""
    series: list[tuple[str, dict[float, Any], dict[str, Any]]] = []
    unpriced = False
    for i, (name, entry) in enumerate(sweep.get("targets", {}).items()):
        points: dict[float, Any] = {}
        labels: dict[float, str] = {}
        for mb, p in sorted(entry["curve"].items(), key=lambda kv: int(kv[0])):
            cost = p.get("per_million_usd")
            if cost is None and p.get("gb_s_per_invocation") is not None:
                cost, unpriced = p["gb_s_per_invocation"] * 1e6, True
            if p.get("measured") and p.get("p99_ms") is not None and cost is not None:
                points[float(p["p99_ms"])] = cost
                labels[float(p["p99_ms"])] = f"{mb} MB" + (" *" if entry.get("chosen_mb") == int(mb) else "")
        series.append((f"{name} ({entry['runtime']})", points, _style(i, labels=labels)))
    unit = "GB-s per million (unpriced region)" if unpriced else "USD per million"
    return charts.add("frontier", f"price-performance frontier: {unit} against warm p99 ms, every size and runtime",
                      "frontier", series, unit, note=" (no size was measured)")


def _marks(entry: dict[str, Any], mb: int) -> str:
    """`` *`` on the size the sweep's strategy chose, and which strategies choose it (C, S, B)."""
    choices = entry.get("choices") or {"cost": entry.get("cheapest_mb")}
    letters = "".join(s[0].upper() for s in ("cost", "speed", "balanced") if choices.get(s) == mb)
    return (" *" if entry.get("chosen_mb", entry.get("cheapest_mb")) == mb else "") + (f" {letters}" if letters else "")


def _sweep(sweep: dict[str, Any]) -> str:
    rows = []
    for name, entry in sweep.get("targets", {}).items():
        for mb, p in entry["curve"].items():
            mark = _marks(entry, int(mb))
            rows.append((name, entry["runtime"], f"{mb}{mark}", p.get("p50_ms"), p.get("p99_ms"), p.get("duration_p99_ms"),
                         p.get("init_duration_p50_ms"), p.get("max_memory_used_mb"), p.get("per_million_usd"),
                         "NO DATA" if p.get("no_data") else {True: "pass", False: "FAIL", None: "-"}[p.get("slo_passed")]))
    return _table(("target", "runtime", "MB", "warm p50 ms", "warm p99 ms", "Duration p99 ms", "Init Duration p50 ms",
                   "max memory MB", "USD per million", "SLOs"), rows, "sweep")


def _overlay_sections(analyses: Sequence[Analysis], charts: Charts) -> list[str]:
    series: list[tuple[str, dict[float, Any], dict[str, Any]]]
    out = ["<header><h1>Overlay of " + str(len(analyses)) + " runs</h1></header>"]
    rows = []
    for i, a in enumerate(analyses):
        r = a.run.result
        word, line = verdict(r)
        h = health(r)
        rows.append((Markup(f'<span class="swatch" style="background:{PALETTE[i % len(PALETTE)]}"></span>'
                            + html.escape(r.run_id)), r.name, run_duration(r, a.run.intervals), h["send_lag_p99_ms"],
                     h["dropped"], h["gaps"], Markup(f'<b class="{word.lower()}">{word}</b> {html.escape(line)}')))
    out.append(_section("Runs", _table(("run", "spec", "duration s", "send-lag p99 ms", "dropped", "gaps", "verdict"),
                                       rows), "runs"))
    keys = sorted({k for a in analyses for k in a.hists})
    regions = len({k[0] for k in keys})
    dist = []
    for phase in ("warm", "cold"):
        series = []
        for i, a in enumerate(analyses):
            for j, k in enumerate(k for k in keys if k[3] == phase and k in a.hists):
                series.append((f"{a.run.label} · {_key_label(k, regions)}", _dist(a.hists[k]["response_ms"]),
                               _style(i, dash=[] if j == 0 else [2 + 2 * j, 3])))
        if series:
            dist.append(charts.add(f"dist-{phase}", f"{phase} response time by percentile, by run", "dist", series,
                                   "ms", ylog=True))
    out.append(_section("Response time distribution", "".join(dist), "distribution"))
    over = []
    for n, k in enumerate(k for k in keys if k[3] == "warm"):
        series = []
        for i, a in enumerate(analyses):
            s = a.series.get(k)
            if s is not None:
                series.append((f"{a.run.label} p50", s.p["p50"], _style(i, dash=[6, 4])))
                series.append((f"{a.run.label} p99", s.p["p99"], _style(i)))
        over.append(charts.add(f"time-{n}", f"{k[1]} @{k[0]}: p50 and p99 by run (seconds since each run's start)",
                               "time", series, "ms"))
        thr = [(f"{a.run.label} achieved", a.series[k].achieved, _style(i)) for i, a in enumerate(analyses) if k in a.series]
        over.append(charts.add(f"thr-{n}", f"{k[1]} @{k[0]}: achieved req/s by run", "time", thr, "req/s"))
    out.append(_section("Over time", "".join(over), "over-time"))
    for a in analyses:
        out.append(_section(f"Compared with Rust — {a.run.label}", _comparison(relative_to(a.run.result.groups))))
        out.append(_section(f"SLO verdicts — {a.run.label}", _slo_table(a.run.result)))
    return out


def _vendor(name: str) -> str:
    try:
        return (VENDOR / name).read_text()
    except OSError as exc:
        raise InputError(f"{VENDOR / name}: the vendored chart library is missing ({exc.strerror})") from None


_INLINE_ESCAPES = ((b"&", b"\\u0026"), (b"<", b"\\u003c"), (b">", b"\\u003e"),
                   ("\u2028".encode(), b"\\u2028"), ("\u2029".encode(), b"\\u2029"))


def inline_json(value: Any) -> str:
    """JSON safe inside a ``<script>`` element: no ``<``, ``>`` or ``&`` (nothing can close the script or
    open a comment or ``<script`` in it, e.g. ``<!--<script>`` from a name in the intervals), and no
    U+2028/U+2029.  Only inside strings can they occur, where the \\u escapes mean the same text."""
    raw = orjson.dumps(value)
    for char, escaped in _INLINE_ESCAPES:
        raw = raw.replace(char, escaped)
    return raw.decode()


def render(runs: Sequence[RunData], max_points: int = MAX_POINTS) -> str:
    """The report of one run, or the overlay of several, as one HTML document."""
    if not runs:
        raise InputError("no run to report")
    analyses = [analyse(r, max_points) for r in runs]
    charts = Charts()
    body = _run_sections(analyses[0], charts) if len(analyses) == 1 else _overlay_sections(analyses, charts)
    title = runs[0].result.run_id if len(runs) == 1 else " + ".join(r.label for r in runs)
    data = inline_json({"charts": charts.items})
    page = "".join(body)
    nav = "".join(f'<a href="#{sid}">{name}</a>' for sid, name in (
        ("runs", "runs"), ("distribution", "distribution"), ("over-time", "over time"), ("throughput", "throughput"),
        ("cold", "cold starts"), ("memory", "memory"), ("cost", "cost"), ("comparison", "vs Rust"), ("slo", "SLOs"),
        ("spec", "spec")) if f'<section id="{sid}">' in page)
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>fnbench — {html.escape(title)}</title>"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        # Everything is inline: the page may fetch nothing (file://, offline, no CDN).
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
        f"<style>{_vendor('uPlot.min.css')}\n{CSS}</style></head><body>"
        f"<nav>{nav}</nav><main>{page}</main>"
        f'<script type="application/json" id="fnbench-data">{data}</script>'
        f"<script>{_vendor('uPlot.iife.min.js')}</script><script>{SCRIPT}</script></body></html>\n"
    )


def default_path(run: RunData) -> Path:
    base = run.folder if run.folder is not None else Path("results") / run.result.run_id
    return base / "report.html"


def write(runs: Sequence[RunData], out: Path | None = None) -> Path:
    path = out or default_path(runs[0])
    text = render(runs)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot write the report: {exc.strerror}") from None
    return path


def write_run(result: RunResult, folder: Path) -> Path:
    """The report at the end of ``fnbench run``: results/<run>/report.html beside result.json."""
    return write([load_run(folder, result)])


CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fff}
nav{position:sticky;top:0;background:#f4f4f4;border-bottom:1px solid #ddd;padding:6px 16px;z-index:5}
nav a{margin-right:14px;color:#1f4f99;text-decoration:none}
main{padding:8px 16px 40px;max-width:1200px}
h1{font-size:22px;margin:10px 0 4px}h1 small{font-size:13px;color:#666;font-weight:normal}
h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #e4e4e4;padding-bottom:3px}h3{font-size:14px}
dl{display:flex;flex-wrap:wrap;gap:4px 22px;margin:6px 0}dl div{min-width:90px}dt{color:#666;font-size:12px}dd{margin:0;font-weight:600}
.verdict{font-size:15px;padding:6px 10px;border-radius:4px;margin:6px 0}
.verdict.pass{background:#e6f4ea}.verdict.fail{background:#fce8e6}.verdict.partial{background:#fef7e0}
b.pass{color:#137333}b.fail{color:#c5221f}b.partial{color:#b06000}
.damage li{color:#c5221f}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f6f6f6}td:first-child,th:first-child{text-align:left}
.ratio{color:#666}.empty,.note{color:#777;font-style:italic}
.chart{margin:10px 0 18px}.scroll{overflow-x:auto}.swatch{display:inline-block;width:10px;height:10px;margin-right:5px}
pre{background:#f7f7f7;padding:10px;overflow:auto;font-size:12px}
.u-legend{font-size:12px;text-align:left}.u-legend .u-value{font-variant-numeric:tabular-nums}
"""

# The page's script: one uPlot per chart; hover shows values in the legend, drag zooms the
# x axis (double-click resets), gaps are shaded and re-dispatches drawn as red lines.
SCRIPT = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("fnbench-data").textContent);
  var charts = {};
  window.fnbench = {charts: charts, specs: {}, ready: false};
  function pct(x) { return +(100 * (1 - Math.pow(10, -x))).toFixed(4); }
  function show(v) { return v == null ? "\u2013" : String(v); }
  function marks(list) {
    return {hooks: {draw: [function (u) {
      var ctx = u.ctx, top = u.bbox.top, h = u.bbox.height;
      ctx.save();
      list.forEach(function (m) {
        var x0 = u.valToPos(m.x0, "x", true), x1 = u.valToPos(m.x1, "x", true);
        if (m.kind === "redispatch") { ctx.fillStyle = "rgba(200,0,0,0.85)"; ctx.fillRect(x0 - 1, top, 2, h); }
        else { ctx.fillStyle = "rgba(255,165,0,0.22)"; ctx.fillRect(x0, top, Math.max(x1 - x0, 2), h); }
      });
      ctx.restore();
    }]}};
  }
  function build(c) {
    var el = document.getElementById("chart-" + c.id);
    var dist = c.kind === "dist";
    var width = Math.max(480, Math.min((el.parentNode.clientWidth || 1000) - 10, 1150));
    var bars = c.kind === "bars";
    var xy = c.kind === "frontier";
    var xaxis = xy ? {label: "warm p99 ms"} : dist
      ? {label: "percentile", splits: function () { return [0, 1, 2, 3, 4]; },
         values: function (u, vals) { return vals.map(function (v) { return pct(v) + "%"; }); }}
      : bars
      ? {splits: function () { return c.x; }, values: function (u, vals) { return vals.map(function (v) { return c.categories[v] || ""; }); }}
      : {label: "seconds since the run's start"};
    function xval(u, v) {
      if (v == null) return "\u2013";
      return dist ? pct(v) + "%" : bars ? (c.categories[v] || "") : xy ? v + " ms" : v + " s";
    }
    function few(values) { return values.filter(function (v) { return v != null; }).length < 100; }
    var opts = {
      title: c.title, width: width, height: 280,
      scales: {x: bars ? {time: false, range: [-0.5, c.x.length - 0.5]} : {time: false},
               y: c.ylog ? {distr: 3} : bars ? {range: function (u, lo, hi) { return [0, hi * 1.1]; }} : {}},
      axes: [xaxis, {label: c.ylabel, size: 60}],
      cursor: {drag: {x: true, y: false}, points: {size: 7}},
      legend: {live: true},
      series: [{label: dist ? "percentile" : bars ? "group" : xy ? "p99" : "s", value: xval}]
        .concat(c.series.map(function (s) {
          var o = {label: s.label, stroke: s.color, width: 2, dash: s.dash || [], spanGaps: xy,
                   points: {show: !dist && few(s.values), size: 6, fill: s.color},
                   value: function (u, v, si, i) { return show(v) + (s.labels && i != null && s.labels[i] ? " @ " + s.labels[i] : ""); }};
          if (bars) { o.fill = s.color; o.paths = uPlot.paths.bars({size: [0.6, 80]}); o.points = {show: false}; }
          return o;
        })),
      plugins: c.marks && c.marks.length ? [marks(c.marks)] : []
    };
    var u = new uPlot(opts, [c.x].concat(c.series.map(function (s) { return s.values; })), el);
    if (c.marks && c.marks.length && c.x.length) {  // gaps before the first or after the last point stay in view
      var lo = Math.min.apply(null, [c.x[0]].concat(c.marks.map(function (m) { return m.x0; })));
      var hi = Math.max.apply(null, [c.x[c.x.length - 1]].concat(c.marks.map(function (m) { return m.x1; })));
      if (lo < c.x[0] || hi > c.x[c.x.length - 1]) u.setScale("x", {min: lo, max: hi});
    }
    charts[c.id] = u;
    window.fnbench.specs[c.id] = c;
  }
  data.charts.forEach(build);
  window.fnbench.ready = true;
})();
"""
