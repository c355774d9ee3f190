"""JUnit XML for CI (the Apache Ant format Jenkins, GitLab and GitHub test-report actions read).

``fnbench run --junit FILE``: one test case per SLO verdict (its value, bound and sentence); a run
without SLOs still reports each measured group as a case (failed when the group failed or measured
nothing), so the file is never empty.  ``fnbench history --check --junit FILE``: one test case per
regression verdict (metric × target × region of the newest run against its previous stable window),
a NO DATA group as a failure, and a skipped case saying why when there is no verdict yet.

Case names are stable from run to run (the bound, never the value, is in the name) so CI tools can
follow a case over time; the value, the bound and the sentence are in the failure message and in
the suite's system-out.  Written for tests/schemas/JUnit.xsd (the windyroad Ant schema): every
required element and attribute is present, the timestamp is UTC without a zone.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from orchestrator.errors import InputError
from orchestrator.run.result import RunResult, SloVerdict

SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


@dataclass
class Case:
    name: str
    classname: str
    failure: str | None = None  # the message of a failed case
    detail: str = ""  # the body of the failure element, and the case's line in system-out
    kind: str = "failure"  # failure | error | skipped


@dataclass
class Suite:
    name: str
    package: str
    timestamp: float
    properties: dict[str, str] = field(default_factory=dict)
    cases: list[Case] = field(default_factory=list)
    time_s: float = 0.0


def _num(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _clean(text: str) -> str:
    """No character XML 1.0 cannot carry (control characters from names or errors)."""
    return "".join(c if c in "\t\n\r" or ord(c) >= 0x20 and c not in "\ufffe\uffff" else "?" for c in text)


def _attr(text: str) -> str:
    return quoteattr(_clean(text), {"\n": "&#10;", "\r": "&#13;", "\t": "&#9;"})


def _token(text: str) -> str:
    """xs:token: no leading, trailing or repeated spaces, no line breaks."""
    return " ".join(_clean(text).split()) or "-"


def render(suites: Sequence[Suite]) -> str:
    out = ['<?xml version="1.0" encoding="UTF-8"?>', "<testsuites>"]
    for n, s in enumerate(suites):
        failures = sum(1 for c in s.cases if c.failure is not None and c.kind == "failure")
        errors = sum(1 for c in s.cases if c.failure is not None and c.kind == "error")
        skipped = sum(1 for c in s.cases if c.kind == "skipped")
        stamp = dt.datetime.fromtimestamp(s.timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        out.append(f"  <testsuite name={_attr(_token(s.name))} package={_attr(_token(s.package))} id=\"{n}\" "
                   f"timestamp=\"{stamp}\" hostname={_attr(_token(socket.gethostname()))} tests=\"{len(s.cases)}\" "
                   f"failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{s.time_s:.3f}\">")
        out.append("    <properties>")
        for k, v in s.properties.items():
            out.append(f"      <property name={_attr(_token(k))} value={_attr(v)}/>")
        out.append("    </properties>")
        for c in s.cases:
            head = f"    <testcase name={_attr(_token(c.name))} classname={_attr(_token(c.classname))} time=\"0\""
            if c.kind == "skipped":
                out.append(f"{head}><skipped message={_attr(c.failure or '')}/></testcase>")
            elif c.failure is not None:
                out.append(f"{head}><{c.kind} message={_attr(c.failure)} type=\"{c.kind == 'error' and 'error' or 'fnbench'}\">"
                           f"{escape(_clean(c.detail))}</{c.kind}></testcase>")
            else:
                out.append(f"{head}/>")
        lines = "\n".join(f"{'FAIL' if c.failure is not None and c.kind != 'skipped' else c.kind.upper() if c.kind == 'skipped' else 'PASS'}"
                          f" {c.name}: {c.detail}" for c in s.cases)
        out.append(f"    <system-out>{escape(_clean(lines))}</system-out>")
        out.append("    <system-err></system-err>")
        out.append("  </testsuite>")
    out.append("</testsuites>")
    return "\n".join(out) + "\n"


# -- a run ---------------------------------------------------------------------------------------
def bound_text(v: SloVerdict) -> str:
    return f"<= {v.max:g}" if v.max is not None else f">= {v.min:g}" if v.min is not None else ""


def slo_sentence(v: SloVerdict) -> str:
    where = f"{v.target} ({v.phase}) in {v.region}"
    if v.no_data:
        return f"{where}: NO DATA for {v.metric} (no completed request), want {bound_text(v)}"
    verb = "meets" if v.passed else "falls short of its plan with" if v.partial else "breaks"
    extra = f"; {v.unsent} planned request(s) never sent" if v.unsent else ""
    return f"{where}: {v.metric} = {_num(v.value)} {verb} its bound {bound_text(v)}{extra}"


def run_suite(result: RunResult) -> Suite:
    name = result.name or result.run_id
    suite = Suite(f"fnbench run {result.run_id}", name, result.start_at or 0.0,
                  {"run_id": result.run_id, "spec": name, "regions": ",".join(sorted({g.region for g in result.groups}))})
    suite.time_s = max((g.seconds for g in result.groups), default=0.0)
    cls = f"fnbench.{name}"
    for v in result.slo:
        detail = f"value {_num(v.value)}, bound {bound_text(v)}: {slo_sentence(v)}"
        suite.cases.append(Case(f"SLO {v.metric} {bound_text(v)} · {v.target} {v.phase} @{v.region}", f"{cls}.slo",
                                None if v.passed else f"{v.word}: {slo_sentence(v)}", detail))
    if not result.slo:  # no SLOs: the groups themselves, so the file says what was measured
        for g in result.groups:
            r = g.response_ms
            detail = (f"{sum(g.outcomes.values())} requests, {g.errors} failed; p50 {_num(r.p50)} ms, p99 {_num(r.p99)} ms, "
                      f"p99.9 {_num(r.p999)} ms (no SLO set)")
            bad = f"the group failed: {g.failure}" if g.failed else "NO DATA: no completed request" if not g.completed else None
            suite.cases.append(Case(f"group {g.target} {g.phase} @{g.region}", f"{cls}.group", bad, detail))
        if not result.groups:
            suite.cases.append(Case("run measured something", f"{cls}.run", "nothing was measured", "no group"))
    for n, e in enumerate(result.errors):
        suite.cases.append(Case(f"run error {n + 1}", f"{cls}.run", e, e, kind="error"))
    return suite


def from_run(result: RunResult) -> str:
    return render([run_suite(result)])


# -- a history check ---------------------------------------------------------------------------------
def check_suite(check: Any) -> Suite:
    """``check`` is a history.Check."""
    import time

    suite = Suite(f"fnbench history {check.name}", check.name, time.time(),
                  {"spec": check.name, "newest": check.newest or "", "verdict": check.verdict})
    cls = f"fnbench.{check.name}.regression"
    for f in check.findings:
        c = f.comparison
        bound = f"+{c.band * 100:g} %" if c.relative else f"+{c.band:g} pp"
        value = (f"change {c.change * (100 if c.relative else 1):+.2f}{' %' if c.relative else ' pp'} "
                 f"(95 % CI {_num(c.low)}–{_num(c.high)}), newest {_num(c.subject_value)} vs window {_num(c.reference_value)}"
                 if c.change is not None else "no data")
        detail = f"value {value}; bound: the 95 % interval's low end above {bound}; {c.sentence}" + (
            " (change point at the newest run)" if f.change_point else "")
        suite.cases.append(Case(f"no regression: {f.metric} · {f.target} @{f.region}", cls,
                                f"regression: {c.sentence}" if f.regressed else None, detail))
    for line in check.no_data:
        target = line.split(" (", 1)[0]
        suite.cases.append(Case(f"data: {target}", cls, f"NO DATA: {line}", line))
    if not suite.cases:
        suite.cases.append(Case(f"regression check of {check.name}", cls, check.reason or "no verdict",
                                check.reason or "no verdict", kind="skipped"))
    return suite


def from_check(check: Any) -> str:
    return render([check_suite(check)])


# -- files ---------------------------------------------------------------------------------------------
def write(path: Path, text: str, what: str = "") -> Path:
    """``text`` to ``path`` whole or not at all (a temporary file moved into place); InputError naming
    the path (``what``: what it is, for the message; default the --junit file)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot write {what}: {exc.strerror}" if what
                         else f"--junit {path}: cannot write: {exc.strerror}") from None
    return path


def append_step_summary(markdown: str, warn: Any = None) -> Path | None:
    """Append to the file named by GITHUB_STEP_SUMMARY (GitHub Actions shows it on the run's page)."""
    target = os.environ.get(SUMMARY_ENV)
    if not target:
        return None
    try:
        with open(target, "a", encoding="utf-8") as f:
            f.write(markdown if markdown.endswith("\n") else markdown + "\n")
    except OSError as exc:
        if warn is not None:
            warn(f"warning: {SUMMARY_ENV} ({target}): cannot append the summary: {exc.strerror}")
        return None
    return Path(target)
