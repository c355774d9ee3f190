"""A compact Markdown summary of a run for a pull-request comment: verdict, one table, SLO verdicts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from orchestrator.analysis.compare import relative_to
from orchestrator.report.html import RunData, health, verdict
from orchestrator.run.result import RunResult


def _n(v: float | int | None) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}".rstrip("0").rstrip(".")  # ms to the µs, as in result.json
    return str(v)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def summary(result: RunResult, damage: Sequence[str] = ()) -> str:
    word, line = verdict(result)
    h = health(result)
    ratios = {(r.region, r.target): r.x for r in relative_to(result.groups)}
    out = [
        f"### fnbench `{result.run_id}`{f' ({_cell(result.name)})' if result.name else ''}: **{word}**",
        "",
        _cell(line),
        "",
        f"generator: send-lag p99 {_n(h['send_lag_p99_ms'])} ms · dropped {h['dropped']} · "
        f"gaps {h['gaps']} ({h['gap_s']:g} s)",
        "",
        "| region | target | runtime | phase | req/s | errors | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | p99 × rust |",
        "|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for g in result.groups:
        r = g.response_ms
        x = ratios.get((g.region, g.target), {}).get("p99_ms") if g.phase == "warm" else None
        out.append("| " + " | ".join(_cell(c) for c in (
            g.region, g.target, g.runtime, g.phase, _n(g.achieved_rps), str(g.errors), _n(r.p50), _n(r.p90), _n(r.p99),
            _n(r.p999), _n(r.max), _n(x))) + " |")
    if result.slo:
        out += ["", "| SLO | target | region | phase | metric | value | want |", "|---|---|---|---|---|--:|---|"]
        for v in result.slo:
            want = f"<= {v.max:g}" if v.max is not None else f">= {v.min:g}" if v.min is not None else ""
            out.append("| " + " | ".join(_cell(c) for c in (
                v.word, v.target, v.region, v.phase, v.metric, _n(v.value), want)) + " |")
    for e in [*damage, *result.errors]:
        out.append(f"\n> error: {_cell(e)}")
    return "\n".join(out) + "\n"


def render(runs: Sequence[RunData]) -> str:
    return "\n".join(summary(r.result, r.damage) for r in runs)


def check_summary(check: Any) -> str:
    """A history check (history.Check) as Markdown: the verdict and one row per regression verdict."""
    out = [f"### fnbench history `{_cell(check.name)}`: **{check.verdict}** (newest run `{check.newest or '–'}`)", ""]
    if check.findings:
        out += ["| verdict | target | region | metric | newest | window | change (95 % CI) | sentence |",
                "|---|---|---|---|--:|--:|---|---|"]
        for f in check.findings:
            c = f.comparison
            scale, unit = (100, " %") if c.relative else (1, " pp")
            change = (f"{c.change * scale:+.1f}{unit} ({c.low * scale:+.1f} to {c.high * scale:+.1f})"
                      if c.change is not None and c.low is not None and c.high is not None else "–")
            out.append("| " + " | ".join(_cell(x) for x in (
                "REGRESSION" if f.regressed else c.verdict, f.target, f.region, f.metric, _n(c.subject_value),
                _n(c.reference_value), change, c.sentence)) + " |")
    for line in check.no_data:
        out.append(f"\n> NO DATA: {_cell(line)}")
    if not check.findings and check.reason:
        out.append(f"no verdict: {_cell(check.reason)}")
    return "\n".join(out) + "\n"
