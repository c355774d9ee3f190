"""A compact Markdown summary of a run for a pull-request comment: verdict, one table, SLO verdicts."""

from __future__ import annotations

from collections.abc import Sequence

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
