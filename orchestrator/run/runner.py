"""The one run loop: plan → dispatch → watch → collect → verdicts → save, for either dispatcher.

``run`` starts a benchmark through a Dispatcher (the local process pool, or Celery region queues)
and follows it to its end; ``attach`` follows a distributed run another orchestrator started;
``conclude`` turns collected intervals into the RunResult and its exit code (also used by
``fnbench report``).  The same ``run`` serves the interactive CLI (live view, Ctrl-C and SIGTERM
stop the run and still write the partial result) and headless callers such as scheduled runs
(``interactive=False``: no terminal, no signal handlers of its own; stop it with ``stop_event``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.markup import escape

from orchestrator.analysis import budget, compare
from orchestrator.errors import EXIT_INPUT, EXIT_INTERRUPTED, EXIT_SLO
from orchestrator.report import html as html_report
from orchestrator.report.grafana import RunAnnotations
from orchestrator.run import plan as planner
from orchestrator.run import spec as specs
from orchestrator.run.collect import Collector
from orchestrator.run.dispatch import Dispatcher
from orchestrator.run.result import Gap, RunResult
from orchestrator.run.results import RunFolder
from orchestrator.run.watch import LiveView
from workers import sinks as sink_seam
from workers.contract import Interval
from workers.metrics import IntervalMetrics, serve
from workers.sinks import Fanout


@dataclass
class RunOutcome:
    result: RunResult
    folder: Path
    exit_code: int
    report: Path | None = None  # the HTML report (report/html.py), when written


class StopEvent(Protocol):
    def is_set(self) -> bool: ...


def run(b: specs.Benchmark, spec_text: str, dispatcher: Dispatcher, results_root: Path = Path("results"), *,
        run_id: str | None = None, metrics_port: int = 0, console: Console | None = None,
        interactive: bool = True, stop_event: StopEvent | None = None, html: bool = True) -> RunOutcome:
    """Run ``b`` through ``dispatcher`` to its end (or a stop) and save the result.

    The spec is read once, by the planner; from there on everything follows the plan."""
    the_plan = planner.make(b, run_id, dispatcher.parts(list(b.regions), len(b.targets)))
    folder = RunFolder.create(results_root, the_plan.run_id, spec_text)
    with _held_interrupt(interactive) as held:  # a Ctrl-C while shards are handed out stops the run after
        dispatcher.start(the_plan, spec_text)
    return _follow(the_plan, dispatcher, folder, metrics_port, console or Console(stderr=True), interactive,
                   stop_event, html, interrupted=bool(held))


def attach(dispatcher: Any, run_id: str, results_root: Path = Path("results"), console: Console | None = None,
           interactive: bool = True, html: bool = True) -> RunOutcome:
    """Follow a distributed run from the store (after its orchestrator died, or to watch it)."""
    meta = dispatcher.attach(run_id)
    b = specs.load_text(meta["spec"], f"{run_id}/spec.yaml") if meta.get("spec") else None
    followed = planner.Plan(run_id=run_id, name=meta.get("name") or run_id, shards=(),
                            phase_seconds=meta.get("phase_seconds") or {}, total_s=meta["total_s"],
                            max_timeout_s=meta.get("max_timeout_s", 0.0), regions=(), targets=0,
                            slos=tuple(b.slos) if b else (), max_cost_usd=b.max_cost_usd if b else None,
                            max_invocations=b.max_invocations if b else None)
    # The folder is rewritten from the stream: the intervals file restarts with what is in Redis.
    folder = RunFolder.create(results_root, run_id, meta.get("spec"), fresh=True)
    return _follow(followed, dispatcher, folder, 0, console or Console(stderr=True), interactive, None, html)


def _follow(plan: planner.Plan, dispatcher: Dispatcher, folder: RunFolder, metrics_port: int, console: Console,
            interactive: bool, stop_event: StopEvent | None, html: bool = True, interrupted: bool = False) -> RunOutcome:
    collector = Collector(plan.run_id, plan.phase_seconds)  # the gate: each interval once, duplicates dropped
    slo_watch = compare.SloWatch(plan.slos)  # abort_on_fail SLOs, over their trailing window
    aborted: compare.SloAbort | None = None
    # max_cost_usd / max_invocations: the workers' cost counters and invocations, summed here.
    budget_watch = budget.BudgetWatch(plan.max_cost_usd, plan.max_invocations)
    over: budget.BudgetAbort | None = None
    sinks = Fanout([folder, slo_watch, budget_watch, *_metrics_sink(metrics_port, console), *_otlp_sink(plan.run_id, console),
                    RunAnnotations.from_env(plan.run_id, plan.name, console),  # no-op without FNBENCH_GRAFANA_URL
                    *sink_seam.configured(plan.run_id)],
                   warn=lambda message: console.print(f"[yellow]warning[/]: {escape(message)}", highlight=False))

    def on_interval(iv: Interval) -> None:
        if collector.take(iv):
            sinks.add(iv)

    for rollup in dispatcher.backlog():  # an attached run's compacted intervals come first
        if collector.add_rollup(rollup):
            folder.add(rollup.interval)
    console.print(f"run [bold]{plan.run_id}[/]: {dispatcher.describe()}, results in {folder.path}")
    for sink in sinks.sinks:
        if isinstance(sink, RunAnnotations):
            sink.started(dispatcher.start_at)
    if interrupted:
        console.print("[yellow]stopping: interrupted while the shards were handed out[/]")
        dispatcher.stop()
    with _signals(interactive), LiveView(collector, dispatcher.start_at, plan.total_s, console, live=interactive) as view:
        while True:
            try:
                if not dispatcher.poll(on_interval):
                    break
                view.update()
                if aborted is None and not interrupted and (aborted := slo_watch.check()) is not None:
                    console.print(f"[red]abort[/]: {escape(aborted.message)}", highlight=False)
                    dispatcher.stop()  # every region, within about a second
                if over is None and aborted is None and not interrupted and (over := budget_watch.check()) is not None:
                    console.print(f"[red]abort[/]: {escape(over.message)}", highlight=False)
                    dispatcher.stop()
                if stop_event is not None and stop_event.is_set() and not interrupted:
                    interrupted = True
                    dispatcher.stop()
            except KeyboardInterrupt:
                if interrupted:  # a second Ctrl-C: stop waiting for the workers
                    break
                interrupted = True
                console.print("[yellow]stopping: waiting for workers to flush (Ctrl-C again to abandon)[/]")
                dispatcher.stop()
    dispatcher.join()
    folder.close()
    fields = dispatcher.fields()
    interrupted = interrupted or (fields.get("state") == "stopped" and aborted is None and over is None)
    # One line per distinct error: every shard of a worker meets the same setup error.
    errors = tuple(dict.fromkeys([*dispatcher.errors(), *collector.problems(), *folder.errors]))
    collector.bad.extend(dispatcher.bad.count, dispatcher.bad.reasons)  # records it could not read
    if collector.bad.count:
        console.print(f"[yellow]warning[/]: {collector.bad.count} record(s) could not be read and are left out "
                      f"(bad_records in result.json); first: {escape(collector.bad.reasons[0])}", highlight=False)
    result = collector.result(gaps=dispatcher.gaps(), errors=errors, name=plan.name, interrupted=interrupted,
                              incomplete=bool(folder.errors), **fields)
    result, code = compare.judge(result, plan.slos, plan.phase_seconds)
    if aborted is not None:  # stopped by its SLO: a failed SLO (exit 1), not an interruption
        result = dataclasses.replace(result, aborted_by=aborted.to_dict(), slo=(*result.slo, aborted.verdict()))
        code = max(code, EXIT_SLO) if code != EXIT_INTERRUPTED else code
    elif over is not None:  # stopped by its budget: exit 1, as an SLO abort
        result = dataclasses.replace(result, aborted_by=over.to_dict())
        code = max(code, EXIT_SLO) if code != EXIT_INTERRUPTED else code
    sinks.conclude(result)
    sinks.close()
    return finish(result, code, folder, console, html)


def _metrics_sink(port: int, console: Console) -> list[IntervalMetrics]:
    """Prometheus on ``port`` (0: none, and the series are never built)."""
    if not port:
        return []
    metrics = IntervalMetrics()
    try:
        serve(metrics, port)
    except OSError as exc:
        console.print(f"[yellow]warning[/]: metrics not served on :{port} ({exc.strerror}); use --metrics-port")
        return []
    return [metrics]


def _otlp_sink(run_id: str, console: Console) -> list[Any]:
    """OTLP export when FNBENCH_OTLP_ENDPOINT (``--otlp-endpoint``) or an OTEL_EXPORTER_OTLP_* endpoint is set."""
    from workers import otlp

    endpoint = os.environ.get(otlp.FNBENCH_ENV, "")
    where = otlp.configured(endpoint)
    if not where:
        return []
    console.print(f"OTLP: exporting metrics and the slowest requests' spans to {escape(where)}", highlight=False)
    return [otlp.OtlpSink(run_id, endpoint or None)]


def finish(result: RunResult, code: int, folder: RunFolder, console: Console, html: bool) -> RunOutcome:
    """The end of every run and sweep: result.json saved (elsewhere, and said, when the folder cannot take
    it) and the HTML report written from the folder's intervals (not when they could not all be written)."""
    saved = folder.save(result, lambda message: console.print(f"[red]error[/]: {escape(message)}", highlight=False))
    if saved != folder.path and code != EXIT_INTERRUPTED:
        code = max(code, EXIT_INPUT)  # the result is safe, but not where it belongs
    report = _write_html(result, folder.path, console) if html and not folder.errors and saved == folder.path else None
    return RunOutcome(result, saved, code, report)


def _write_html(result: RunResult, folder: Path, console: Console) -> Path | None:
    """results/<run>/report.html; a report that cannot be written never costs the run its result."""
    try:
        return html_report.write_run(result, folder)
    except Exception as exc:  # noqa: BLE001 - the result is saved; say why the report is not
        console.print(f"[yellow]warning[/]: no HTML report: {escape(str(exc) or repr(exc))}", highlight=False)
        return None


def conclude(slos: Any, collector: Collector, gaps: list[Gap], errors: list[str], **fields: Any) -> tuple[RunResult, int]:
    """The RunResult of intervals collected outside a run (``fnbench report``), judged."""
    result = collector.result(gaps=gaps, errors=tuple(dict.fromkeys([*errors, *collector.problems()])), **fields)
    return compare.judge(result, slos, collector.phase_seconds)


@contextlib.contextmanager
def _held_interrupt(interactive: bool) -> Iterator[list[int]]:
    """Ctrl-C (SIGINT) noted instead of raised while the dispatcher starts, so that a half-started run is
    stopped and its result still written."""
    held: list[int] = []
    if not interactive or threading.current_thread() is not threading.main_thread():
        yield held
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield held
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _signals(interactive: bool) -> Iterator[None]:
    """SIGTERM stops an interactive run like Ctrl-C; headless callers keep their own handlers."""
    if not interactive or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
