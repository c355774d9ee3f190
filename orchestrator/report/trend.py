"""Trend pages over a spec's history, and a leaderboard across specs: offline HTML (uPlot inlined).

``trend_page``: one spec name's runs, oldest to newest, per target × region: p50/p99/p99.9 and error
rate (warm), cold start p50/p99 (the functions' init time, cold phase) and $/1M, each run's value
with its 95 % bootstrap interval (over that run's own interval blocks) as a band; change points
(Otava over the series) and the scheduler's regression verdicts drawn as marks with their sentence;
each run linked to its report; a first screen that says in words what moved since the last run and
since a week before it.  The page is built from the history entries alone (their summaries and
stored bands; an entry recorded before bands were stored has its bands bootstrapped from its blocks,
for the newest ``BAND_BUDGET`` such entries), never from the runs' intervals, so its size follows
runs × groups.

``leaderboard``: the newest run of several specs, one row per runtime × region (× Memory Size of a
sweep), ranked by a chosen metric, with percentiles and their intervals, error rate, cold start,
$/1M, the ratio to Rust, the newest run and a trend arrow against the run before.
"""

from __future__ import annotations

import datetime as dt
import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from orchestrator.analysis import compare
from orchestrator.analysis import history as hist
from orchestrator.errors import InputError
from orchestrator.report import junit
from orchestrator.report.html import CSS, PALETTE, _vendor, inline_json

BAND_BUDGET = 60  # entries without stored bands whose bands are bootstrapped while building a page
WEEK_S = 7 * 86400.0
WEEK_SLACK_S = 3600.0
MAX_SENTENCES = 12
MIN_SEGMENT = 3  # runs on each side of a change point drawn  # per first-screen list
RANK_METRICS = {"p50": ("warm p50", "ms"), "p99": ("warm p99", "ms"), "p999": ("warm p99.9", "ms"),
                "error_rate": ("error rate", "%"), "init_p50": ("cold start p50", "ms"),
                "init_p99": ("cold start p99", "ms"), "cost": ("$/1M", "USD")}
LABEL = {"p50": "p50", "p99": "p99", "p999": "p99.9", "error_rate": "error rate", "init_p50": "cold start p50",
         "init_p99": "cold start p99", "cost_per_million_usd": "$/1M"}
UNIT = {"error_rate": " %", "cost_per_million_usd": " USD"}
CHANGE_METRICS = ("p50", "p99", "p999", "error_rate", "init_p50", "init_p99", "cost_per_million_usd")
CP_METRICS = ("p50", "p99", "p999", "error_rate", "init_p50")
# Charts of one target × region: (chart id suffix, title, phase, metrics, y label)
CHARTS = (("lat", "warm response time", "warm", ("p50", "p99", "p999"), "ms"),
          ("cold", "cold start (function init time)", "cold", ("init_p50", "init_p99"), "ms"),
          ("err", "error rate", "warm", ("error_rate",), "%"),
          ("cost", "cost per million invocations", "warm", ("cost_per_million_usd",), "USD"))
ARROWS = {"↑": "up", "↓": "down", "→": "flat"}


def _r(v: Any, digits: int = 4) -> float | None:
    """Rounded to ``digits`` significant digits (the band's ends; values are kept as recorded)."""
    if v is None or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    if v == 0:
        return 0.0
    return round(float(v), max(0, digits - 1 - int(math.floor(math.log10(abs(v))))))


def when(t: float | None) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if t else "–"


def display(metric: str, v: float | None) -> float | None:
    """A history value as the page shows it: error rates in percent, the rest as recorded."""
    if v is None:
        return None
    return _r(v * 100.0, 6) if metric == "error_rate" else v


def fmt(metric: str, v: float | None) -> str:
    if v is None:
        return "–"
    shown = display(metric, v)
    assert shown is not None
    unit = UNIT.get(metric, " ms")
    return (f"{shown:.4g}" if abs(shown) < 1000 else f"{shown:,.0f}") + unit


def report_link(run_id: str, results: Path | None, page_dir: Path | None) -> str | None:
    """The run's report (or its folder) relative to the page, when the run's folder is under ``results``."""
    if results is None:
        return None
    folder = results / quote(run_id, safe="")
    if not folder.is_dir():
        return None
    target = folder / "report.html" if (folder / "report.html").exists() else folder / "result.json"
    if not target.exists():
        target = folder
    try:
        import os

        return quote(os.path.relpath(target, page_dir or Path.cwd()).replace(os.sep, "/"), safe="/.-_~")
    except ValueError:
        return target.resolve().as_uri()


# -- the series ---------------------------------------------------------------------------------------
@dataclass
class Series:
    """One target × region × phase over the runs (index = run, oldest first)."""

    target: str
    region: str
    phase: str
    runtime: str = ""
    workload: str = ""
    values: dict[str, list[float | None]] = field(default_factory=dict)
    bands: dict[str, list[list[float | None] | None]] = field(default_factory=dict)


@dataclass
class Trend:
    name: str
    runs: list[dict[str, Any]]  # oldest first
    series: dict[tuple[str, str, str], Series]
    computed_bands: int = 0  # entries whose bands were bootstrapped from blocks here
    missing_bands: int = 0  # entries without bands past the budget


PHASE_METRICS = {"warm": ("p50", "p99", "p999", "error_rate", "cost_per_million_usd"), "cold": ("init_p50", "init_p99")}


def _entry_bands(entry: dict[str, Any], budget: list[int]) -> tuple[dict[tuple[str, str, str], dict[str, Any]], str]:
    """(region, target, phase) → {metric: [low, high]} of an entry: stored, or bootstrapped from its blocks."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    how = "stored"
    for s in entry.get("samples", []):
        key = (s["region"], s["target"], s["phase"])
        if isinstance(s.get("bands"), dict):
            out[key] = s["bands"]
            continue
        if budget[0] <= 0:
            how = "missing"
            continue
        how = "computed"
        sample = compare.Sample(s["region"], s["target"], s["runtime"], s.get("workload", ""), s["phase"],
                                tuple(compare.Block.from_dict(b) for b in s.get("blocks", [])))
        out[key] = hist.bands(sample)
    if how == "computed":
        budget[0] -= 1
    return out, how


def build(name: str, entries: Sequence[dict[str, Any]], results: Path | None = None,
          page_dir: Path | None = None) -> Trend:
    ordered = sorted(entries, key=lambda e: (float(e["start"]), e["run_id"]))
    n = len(ordered)
    series: dict[tuple[str, str, str], Series] = {}
    runs = []
    budget = [BAND_BUDGET]
    computed = missing = 0
    # The newest entries get the bootstrap budget first.
    band_of: dict[int, dict[tuple[str, str, str], dict[str, Any]]] = {}
    for i in range(n - 1, -1, -1):
        band_of[i], how = _entry_bands(ordered[i], budget)
        computed += how == "computed"
        missing += how == "missing"
    for i, e in enumerate(ordered):
        check = e.get("check") or {}
        runs.append({"run_id": e["run_id"], "start": float(e["start"]), "git": e.get("git"), "exit": e.get("exit_code"),
                     "slo_failed": e.get("slo_failed"), "verdict": check.get("verdict"),
                     "link": report_link(e["run_id"], results, page_dir)})
        for g in e.get("groups", []):
            key = (g["target"], g["region"], g["phase"])
            s = series.get(key)
            if s is None:
                s = series[key] = Series(g["target"], g["region"], g["phase"])
                for m in PHASE_METRICS.get(g["phase"], ()):
                    s.values[m] = [None] * n
                    s.bands[m] = [None] * n
            s.runtime, s.workload = g.get("runtime") or s.runtime, g.get("workload") or s.workload
            b = band_of[i].get((g["region"], g["target"], g["phase"]), {})
            for m in s.values:
                v = g.get(m)
                s.values[m][i] = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
                band = b.get(m)
                if band and band[0] is not None and band[1] is not None:
                    s.bands[m][i] = [band[0], band[1]]
    return Trend(name, runs, series, computed, missing)


# -- change points and verdicts -------------------------------------------------------------------------
def change_points(t: Trend, s: Series, metric: str) -> list[dict[str, Any]]:
    """Otava's change points of one series, each with its sentence (the median level before and after); only
    shifts beyond the noise band between levels that held for ``MIN_SEGMENT`` runs or more."""
    idx = [i for i, v in enumerate(s.values.get(metric, [])) if v is not None]
    if len(idx) < 6:
        return []
    from otava.analysis import compute_change_points

    vals = [float(s.values[metric][i] or 0.0) for i in idx]
    cps, _ = compute_change_points(vals, window_len=30, max_pvalue=hist.MAX_PVALUE)
    cuts = sorted({int(c.index) for c in cps if 0 < int(c.index) < len(vals)})
    out = []
    edges = [0, *cuts, len(vals)]
    for k, cut in enumerate(cuts):
        before = sorted(vals[edges[k]:cut])
        after = sorted(vals[cut:edges[k + 2]])
        b, a = before[len(before) // 2], after[len(after) // 2]
        if min(len(before), len(after)) < MIN_SEGMENT or (
                abs(a - b) * 100 <= compare.ERROR_BAND_PP if metric == "error_rate" else not b or abs(a / b - 1) <= compare.BAND):
            continue  # a level that held for a run or two, or a shift inside the noise band: not drawn
        run = t.runs[idx[cut]]
        change = f" ({(a / b - 1) * 100:+.0f} %)" if b else ""
        out.append({"i": idx[cut], "kind": "change", "metric": metric,
                    "label": f"change point: {LABEL[metric]} of {s.target} in {s.region} shifted from "
                             f"{fmt(metric, b)} to {fmt(metric, a)}{change} at run {run['run_id']} ({when(run['start'])})"})
    return out


def verdict_marks(t: Trend, entries: Sequence[dict[str, Any]], s: Series) -> list[dict[str, Any]]:
    """The regression verdicts stored with the runs (by the scheduler's check) for this target × region."""
    at = {r["run_id"]: i for i, r in enumerate(t.runs)}
    out = []
    for e in entries:
        for f in (e.get("check") or {}).get("findings", []):
            if f.get("target") == s.target and f.get("region") == s.region and f.get("regressed"):
                out.append({"i": at[e["run_id"]], "kind": "regression", "metric": f.get("metric"),
                            "label": f"regression verdict at run {e['run_id']}: {f.get('sentence')}"})
    return out


# -- what changed, in words -----------------------------------------------------------------------------
def _moved(s: Series, metric: str, old: int, new: int) -> tuple[float, str] | None:
    """(|relative change|, sentence) when the two runs' 95 % intervals do not overlap and the values differ by
    more than the noise band; None otherwise."""
    a, b = s.values[metric][old], s.values[metric][new]
    ba, bb = s.bands[metric][old], s.bands[metric][new]
    if a is None or b is None or ba is None or bb is None or None in ba or None in bb:
        return None
    if metric == "error_rate":
        if abs(b - a) * 100 <= compare.ERROR_BAND_PP:
            return None
    elif not a or abs(b / a - 1) <= compare.BAND:
        return None
    lo_a, hi_a = ba
    lo_b, hi_b = bb
    assert lo_a is not None and hi_a is not None and lo_b is not None and hi_b is not None
    if lo_b <= hi_a and lo_a <= hi_b:
        return None
    word = "rose" if b > a else "fell"
    rel = (b / a - 1) if a else 1.0
    size = f"{abs(b - a) * 100:.2f} pp" if metric == "error_rate" else f"{abs(rel) * 100:.0f} %"
    text = (f"{LABEL[metric]} of {s.target} in {s.region} {word} {size}: {fmt(metric, a)} → {fmt(metric, b)} "
            f"(95 % intervals {fmt(metric, lo_a)}–{fmt(metric, hi_a)} and {fmt(metric, lo_b)}–{fmt(metric, hi_b)} "
            "do not overlap)")
    return abs(rel), text


def changes(t: Trend, old: int, new: int) -> list[str]:
    found = []
    for s in t.series.values():
        for m in CHANGE_METRICS:
            if m in s.values:
                moved = _moved(s, m, old, new)
                if moved:
                    found.append(moved)
    found.sort(key=lambda x: -x[0])
    return [text for _, text in found]


def week_before(t: Trend) -> int | None:
    """The newest run about a week (or more) older than the newest run: a daily schedule's run of the same
    time a week ago counts although it started seconds later in its day."""
    if not t.runs:
        return None
    newest = t.runs[-1]["start"]
    older = [i for i, r in enumerate(t.runs) if r["start"] <= newest - WEEK_S + WEEK_SLACK_S]
    return older[-1] if older else None


def first_screen(t: Trend, entries_by_id: dict[str, dict[str, Any]]) -> str:
    n = len(t.runs)
    newest = t.runs[-1]
    parts = [f"<p>{n} run(s) from {when(t.runs[0]['start'])} to {when(newest['start'])}; newest "
             f"{_run_link(newest)}.</p>"]
    check = (entries_by_id.get(newest["run_id"]) or {}).get("check")
    if check:
        cls = "fail" if check.get("regressed") or check.get("verdict") == "NO DATA" else "pass"
        parts.append(f'<p class="verdict {cls}" id="newest-verdict"><b>{html.escape(str(check.get("verdict")))}</b> — '
                     f"{html.escape(str(check.get('message') or ''))}</p>")

    def block(title: str, sid: str, old: int | None) -> str:
        if old is None:
            return f'<div id="{sid}"><h3>{html.escape(title)}</h3><p class="note">no such earlier run recorded</p></div>'
        moved = changes(t, old, n - 1)
        head = f"{title}: {t.runs[old]['run_id']} ({when(t.runs[old]['start'])}) → {newest['run_id']}"
        if not moved:
            body = ("<p>Nothing moved beyond its 95 % interval and the noise band "
                    f"(±{compare.BAND * 100:g} %, ±{compare.ERROR_BAND_PP:g} pp for error rates).</p>")
        else:
            more = f"<li>and {len(moved) - MAX_SENTENCES} more</li>" if len(moved) > MAX_SENTENCES else ""
            body = "<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in moved[:MAX_SENTENCES]) + more + "</ul>"
        return f'<div id="{sid}"><h3>{html.escape(head)}</h3>{body}</div>'

    parts.append(block("Since the last run", "since-last", n - 2 if n >= 2 else None))
    parts.append(block("Since a week before", "since-week", week_before(t)))
    if t.missing_bands or t.computed_bands:
        parts.append(f'<p class="note">{t.computed_bands} run(s) recorded without stored intervals had them '
                     f"bootstrapped from their blocks for this page; {t.missing_bands} older one(s) are drawn "
                     "without a band.</p>")
    return "".join(parts)


def _run_link(run: dict[str, Any]) -> str:
    name = html.escape(run["run_id"])
    return f'<a href="{html.escape(run["link"])}">{name}</a>' if run.get("link") else name


# -- the page ---------------------------------------------------------------------------------------------
def _series_id(n: int, suffix: str) -> str:
    return f"s{n}-{suffix}"


def trend_page(name: str, entries: Sequence[dict[str, Any]], results: Path | None = None,
               page_dir: Path | None = None) -> str:
    if not entries:
        raise InputError(f"no runs recorded for {name!r}")
    t = build(name, entries, results, page_dir)
    by_id = {e["run_id"]: e for e in entries}
    charts: list[dict[str, Any]] = []
    cards = []
    keys = sorted({(k[0], k[1]) for k in t.series})
    colours = {target: i for i, target in enumerate(sorted({k[0] for k in keys}))}
    for n, (target, region) in enumerate(keys):
        warm, cold = t.series.get((target, region, "warm")), t.series.get((target, region, "cold"))
        some = warm or cold
        assert some is not None
        sentences: list[dict[str, Any]] = []
        blocks = []
        for suffix, title, phase, metrics, ylabel in CHARTS:
            s = warm if phase == "warm" else cold
            if s is None or not any(v is not None for m in metrics for v in s.values.get(m, [])):
                continue
            marks = [m for m in [*verdict_marks(t, entries, s),
                                 *(cp for metric in metrics if metric in CP_METRICS for cp in change_points(t, s, metric))]
                     if m["metric"] in metrics]
            sentences += marks
            cid = _series_id(n, suffix)
            charts.append({
                "id": cid, "title": f"{target} @{region}: {title}", "ylabel": ylabel,
                "series": [{"label": LABEL[m], "metric": m, "color": PALETTE[(colours[target] + j) % len(PALETTE)],
                            "values": [display(m, v) for v in s.values[m]],
                            "low": [display(m, _r(b[0])) if b else None for b in s.bands[m]],
                            "high": [display(m, _r(b[1])) if b else None for b in s.bands[m]]}
                           for j, m in enumerate(metrics) if any(v is not None for v in s.values[m])],
                "marks": [{"i": m["i"], "kind": m["kind"], "label": m["label"]} for m in marks],
            })
            blocks.append(f'<div class="chart" id="chart-{cid}"></div>')
        notes = "".join(f'<li class="{m["kind"]}">{html.escape(m["label"])}</li>'
                        for m in sorted(sentences, key=lambda m: m["i"]))
        cards.append(f'<section class="card" id="card-{n}"><h2>{html.escape(target)} @ {html.escape(region)} '
                     f'<small>{html.escape(some.runtime)} · {html.escape(some.workload)}</small></h2>{"".join(blocks)}'
                     + (f'<ul class="marks">{notes}</ul>' if notes else "") + "</section>")
    rows = "".join(
        f"<tr><td>{when(r['start'])}</td><td>{_run_link(r)}</td><td>{html.escape(str(r.get('git') or '–'))}</td>"
        f"<td>{'–' if r.get('exit') is None else r['exit']}</td><td>{html.escape(str(r.get('verdict') or '–'))}</td></tr>"
        for r in reversed(t.runs))
    runs_table = ('<section id="runs"><h2>Runs (newest first; click a point on a chart to open its run)</h2>'
                  '<div class="scroll"><table><thead><tr><th>start</th><th>run</th><th>git</th><th>exit</th>'
                  f"<th>regression verdict</th></tr></thead><tbody>{rows}</tbody></table></div></section>")
    data = {"kind": "trend", "name": name, "x": [r["start"] for r in t.runs], "runs": [r["run_id"] for r in t.runs],
            "links": [r["link"] for r in t.runs], "charts": charts}
    body = (f'<header><h1>{html.escape(name)} <small>trend over {len(t.runs)} run(s)</small></h1>'
            f'<section id="changed"><h2>What changed</h2>{first_screen(t, by_id)}</section></header>'
            + "".join(cards) + runs_table)
    legend = ('<p class="note">Lines: each run\'s value; shaded: its 95 % bootstrap interval (over the run\'s own '
              "interval blocks; $/1M has none: it is priced from billed durations). Dashed grey: a change point (Otava); "
              "red: a regression verdict. Hover for values, "
              "drag to zoom, double-click to reset, click to open the run.</p>")
    return _page(f"fnbench trend — {name}", body.replace("</header>", legend + "</header>", 1), data)


def _page(title: str, body: str, data: dict[str, Any]) -> str:
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title>"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
        f"<style>{_vendor('uPlot.min.css')}\n{CSS}\n{TREND_CSS}</style></head><body><main>{body}</main>"
        f'<script type="application/json" id="fnbench-data">{inline_json(data)}</script>'
        f"<script>{_vendor('uPlot.iife.min.js')}</script><script>{SCRIPT}</script></body></html>\n"
    )


def write(path: Path, text: str) -> Path:
    return junit.write(path, text, "the page")


def default_trend_path(results: Path, name: str) -> Path:
    return results / f"trend-{quote(name, safe='')}.html"


def write_trend(name: str, entries: Sequence[dict[str, Any]], path: Path, results: Path | None = None) -> Path:
    return write(path, trend_page(name, entries, results, path.parent))


# -- the leaderboard ----------------------------------------------------------------------------------------
SIZE = re.compile(r"^(?P<base>.+)@(?P<mb>\d+)MB$")


def _metric_of(row: dict[str, Any], metric: str) -> float | None:
    v = row.get("cost_per_million_usd" if metric == "cost" else metric)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def leaderboard_rows(named: Mapping[str, Sequence[dict[str, Any]]], rank_by: str = "p99",
                     results: Path | None = None, page_dir: Path | None = None) -> list[dict[str, Any]]:
    """One row per spec × target × region (× Memory Size) from each spec's newest run, ranked by ``rank_by``
    (lower is better; rows without the metric last)."""
    if rank_by not in RANK_METRICS:
        raise InputError(f"--rank-by {rank_by!r}: use one of {', '.join(RANK_METRICS)}")
    rows: list[dict[str, Any]] = []
    for name, entries in named.items():
        ordered = sorted(entries, key=lambda e: (float(e["start"]), e["run_id"]), reverse=True)
        if not ordered:
            continue
        newest, previous = ordered[0], ordered[1] if len(ordered) > 1 else None
        prev_rows = hist.rows([previous]) if previous else {}
        bands = {(s["region"], s["target"], s["phase"]): s.get("bands") or {} for s in newest.get("samples", [])}
        for (target, region), (row,) in hist.rows([newest]).items():
            m = SIZE.match(target)
            warm_b = bands.get((region, target, "warm"), {})
            cold_b = bands.get((region, target, "cold"), {})
            runtime = next((g.get("runtime") for g in newest.get("groups", []) if g["target"] == target), "")
            workload = next((g.get("workload") for g in newest.get("groups", []) if g["target"] == target), "")
            earlier = prev_rows.get((target, region))
            before = earlier[0] if earlier else None
            metric_key = "cost_per_million_usd" if rank_by == "cost" else rank_by
            arrow = hist.glyph(_metric_of(row, rank_by), _metric_of(before, rank_by) if before else None, metric_key)
            rows.append({"spec": name, "target": target, "base": m.group("base") if m else target,
                         "memory_mb": int(m.group("mb")) if m else None, "region": region, "runtime": runtime or "",
                         "workload": workload or "", **{k: row.get(k) for k in (
                             "p50", "p99", "p999", "error_rate", "init_p50", "init_p99", "cost_per_million_usd")},
                         "bands": {**{k: warm_b.get(k) for k in compare.LEVEL_METRICS},
                                   **{k: cold_b.get(k) for k in compare.COLD_LEVEL_METRICS}},
                         "run_id": newest["run_id"], "start": float(newest["start"]), "arrow": arrow,
                         "worse": hist.worse(arrow, metric_key),
                         "link": report_link(newest["run_id"], results, page_dir)})
    for r in rows:  # the ratio to Rust of the same spec, region, workload and Memory Size
        rust = next((o for o in rows if o["runtime"] == "rust" and o["spec"] == r["spec"] and o["region"] == r["region"]
                     and o["workload"] == r["workload"] and o["memory_mb"] == r["memory_mb"]), None)
        mine, theirs = _metric_of(r, rank_by), _metric_of(rust, rank_by) if rust else None
        r["x_rust"] = round(mine / theirs, 3) if mine is not None and theirs else None
    rows.sort(key=lambda r: (_metric_of(r, rank_by) is None, _metric_of(r, rank_by) or 0.0, r["spec"], r["target"],
                             r["region"]))
    for n, r in enumerate(rows, 1):
        r["rank"] = n
    return rows


def _cell(metric: str, value: Any, band: Any) -> str:
    text = html.escape(fmt(metric, value))
    if band and band[0] is not None and band[1] is not None:
        text += (f' <span class="ci">[{html.escape(fmt(metric, band[0]).split(" ")[0])}–'
                 f"{html.escape(fmt(metric, band[1]).split(' ')[0])}]</span>")
    return text


def leaderboard_page(named: Mapping[str, Sequence[dict[str, Any]]], rank_by: str = "p99", results: Path | None = None,
                     page_dir: Path | None = None) -> str:
    rows = leaderboard_rows(named, rank_by, results, page_dir)
    if not rows:
        raise InputError("no runs recorded for " + ", ".join(repr(n) for n in named) if named else "no spec names")
    sized = any(r["memory_mb"] is not None for r in rows)
    label, unit = RANK_METRICS[rank_by]
    head = ["rank", "runtime", "target", "region", *(["MB"] if sized else []), "p50 ms [95 % CI]", "p99 ms [95 % CI]",
            "p99.9 ms", "errors", "cold start p50 ms", "$/1M", f"{label} × Rust", "newest run", "trend"]
    body = []
    for r in rows:
        b = r["bands"]
        arrow = r["arrow"] or "·"
        cls = "worse" if r["worse"] else "better" if r["worse"] is False else ""
        link = (f'<a href="{html.escape(r["link"])}">{html.escape(r["run_id"])}</a>' if r["link"]
                else html.escape(r["run_id"]))
        cells = [str(r["rank"]), html.escape(r["runtime"]), html.escape(f"{r['base']} ({r['spec']})"),
                 html.escape(r["region"]), *([html.escape(str(r["memory_mb"] or "–"))] if sized else []),
                 _cell("p50", r["p50"], b.get("p50")), _cell("p99", r["p99"], b.get("p99")),
                 _cell("p999", r["p999"], b.get("p999")), _cell("error_rate", r["error_rate"], b.get("error_rate")),
                 _cell("init_p50", r["init_p50"], b.get("init_p50")),
                 html.escape(fmt("cost_per_million_usd", r["cost_per_million_usd"])),
                 "–" if r["x_rust"] is None else f"{r['x_rust']:g}×",
                 f"{link}<br><small>{when(r['start'])}</small>", f'<span class="arrow {cls}">{arrow}</span>']
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    table = ('<div class="scroll"><table id="leaderboard"><thead><tr>' + "".join(f"<th>{html.escape(h)}</th>" for h in head)
             + "</tr></thead><tbody>" + "".join(body) + "</tbody></table></div>")
    metric_key = "cost_per_million_usd" if rank_by == "cost" else rank_by
    ranked = [r for r in rows if _metric_of(r, rank_by) is not None]
    bands = [r["bands"].get(rank_by) if rank_by != "cost" else None for r in ranked]
    chart = {"id": "rank", "title": f"{label} by runtime × region (newest run of each spec; dark dots: the ends of its 95 % interval)",
             "ylabel": unit, "bars": True,
             "categories": [f"{r['runtime']} {r['base']}{'@' + str(r['memory_mb']) + 'MB' if r['memory_mb'] else ''} "
                            f"@{r['region']}" for r in ranked],
             "series": [{"label": label, "metric": metric_key, "color": PALETTE[0],
                         "values": [display(metric_key, _metric_of(r, rank_by)) for r in ranked],
                         "low": [display(metric_key, _r(b[0])) if b and b[0] is not None else None for b in bands],
                         "high": [display(metric_key, _r(b[1])) if b and b[1] is not None else None for b in bands]}],
             "marks": []}
    data = {"kind": "leaderboard", "x": list(range(len(ranked))), "runs": [r["run_id"] for r in ranked],
            "links": [r["link"] for r in ranked], "charts": [chart] if ranked else []}
    names = ", ".join(sorted(named))
    intro = (f"<header><h1>Leaderboard <small>{html.escape(names)}</small></h1><p>Ranked by <b>{html.escape(label)}</b> "
             "(lower is better) over each spec's newest run; [brackets]: the 95 % bootstrap interval of that run's value; "
             "× Rust: the ranked metric against the Rust target of the same spec, region, workload and Memory Size; "
             "trend: the newest run against the one before (↑ higher, ↓ lower beyond the noise band, → within it; red is "
             "worse).</p></header>")
    return _page(f"fnbench leaderboard — {names}", intro + (
        '<div class="chart" id="chart-rank"></div>' if ranked else "") + table, data)


def write_leaderboard(named: Mapping[str, Sequence[dict[str, Any]]], path: Path, rank_by: str = "p99",
                      results: Path | None = None) -> Path:
    return write(path, leaderboard_page(named, rank_by, results, path.parent))


TREND_CSS = """
main{max-width:1250px}.card{border-top:1px solid #ddd;margin-top:14px}.card h2{border:0}
.card h2 small{font-size:12px;color:#666;font-weight:normal}
ul.marks{font-size:12px;color:#444;margin:2px 0 8px}ul.marks li.regression{color:#c5221f}
#changed h3{font-size:14px;margin:10px 0 4px}.ci{color:#777;font-size:11px}
.arrow{font-size:15px}.arrow.worse{color:#c5221f}.arrow.better{color:#137333}
.chart{display:inline-block;vertical-align:top;margin:4px 8px 8px 0}
"""

# One uPlot per chart, all sharing the runs' start times as x; each metric a line with its 95 % band
# (two invisible series filled between), marks as vertical lines; a click opens the run under the cursor.
SCRIPT = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("fnbench-data").textContent);
  var charts = {};
  window.fnbench = {charts: charts, specs: {}, ready: false};
  function show(v) { return v == null ? "\u2013" : String(v); }
  function pad(n) { return n < 10 ? "0" + n : "" + n; }
  function date(t) {
    var d = new Date(t * 1000);
    return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " +
      pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes());
  }
  function alpha(hex, a) {
    var n = parseInt(hex.slice(1), 16);
    return "rgba(" + (n >> 16) + "," + ((n >> 8) & 255) + "," + (n & 255) + "," + a + ")";
  }
  function marks(c, xs) {
    return {hooks: {draw: [function (u) {
      var ctx = u.ctx, top = u.bbox.top, h = u.bbox.height;
      ctx.save();
      c.marks.forEach(function (m) {
        var x = u.valToPos(xs[m.i], "x", true);
        ctx.fillStyle = m.kind === "regression" ? "rgba(200,0,0,0.85)" : "rgba(90,90,90,0.6)";
        if (m.kind === "regression") { ctx.fillRect(x - 1, top, 2, h); }
        else { for (var y = top; y < top + h; y += 8) ctx.fillRect(x - 0.5, y, 1, 4); }
      });
      ctx.restore();
    }]}};
  }
  function build(c) {
    var el = document.getElementById("chart-" + c.id);
    var bars = !!c.bars;
    var xs = bars ? data.x : data.x;
    var cols = [xs], series = [{label: bars ? "row" : "run", value: function (u, v, si, i) {
      if (i == null) return "\u2013";
      return bars ? (c.categories[i] || "") : date(xs[i]) + " " + data.runs[i];
    }}], bands = [];
    c.series.forEach(function (s) {
      // Lines: the band's two ends first (uPlot fills a band when it draws them, so the value's line goes on
      // top); bars: the bar first, so both ends' dots stay visible.
      var o = {label: s.label, stroke: s.color, width: 2, spanGaps: true,
               points: {show: xs.length < 60, size: 5, fill: s.color}, value: function (u, v) { return show(v); }};
      if (bars) { o.fill = s.color; o.paths = uPlot.paths.bars({size: [0.6, 60]}); o.points = {show: false}; }
      if (bars) { cols.push(s.values); series.push(o); }
      if (s.low && s.low.some(function (v) { return v != null; })) {
        var base = cols.length;
        cols.push(s.high); cols.push(s.low);
        var band = {stroke: alpha(s.color, bars ? 0.9 : 0), width: 0, spanGaps: true, value: function (u, v) { return show(v); },
                    points: bars ? {show: true, size: 8, fill: "#222", stroke: "#222"} : {show: false}};
        if (bars) band.paths = function () { return null; };
        series.push(Object.assign({label: s.label + " 95% high"}, band));
        series.push(Object.assign({label: s.label + " 95% low"}, band));
        if (!bars) bands.push({series: [base, base + 1], fill: alpha(s.color, 0.18)});
      }
      if (!bars) { cols.push(s.values); series.push(o); }
    });
    var width = bars ? Math.max(600, Math.min(70 * xs.length + 200, 1200)) : 560;
    var opts = {
      title: c.title, width: width, height: bars ? 320 : 240, bands: bands,
      scales: {x: bars ? {time: false, range: [-0.5, xs.length - 0.5]} : {time: true},
               y: bars ? {range: function (u, lo, hi) { return [0, hi * 1.1]; }} : {}},
      axes: [bars ? {splits: function () { return xs; }, rotate: -30, size: 90,
                     values: function (u, vals) { return vals.map(function (v) { return c.categories[v] || ""; }); }}
                  : {}, {label: c.ylabel, size: 60}],
      cursor: {drag: {x: true, y: false}, points: {size: 7}},
      legend: {live: true},
      series: series,
      plugins: c.marks && c.marks.length ? [marks(c, xs)] : []
    };
    var u = new uPlot(opts, cols, el);
    u.over.addEventListener("click", function () {
      var i = u.cursor.idx;
      if (i != null && data.links[i]) window.location.href = data.links[i];
    });
    charts[c.id] = u;
    window.fnbench.specs[c.id] = c;
  }
  data.charts.forEach(build);
  window.fnbench.drawn_ms = performance.now();  // from navigation start: parse, script, every chart
  window.fnbench.ready = true;
})();
"""
