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
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console

from orchestrator import plan as planner
from orchestrator import spec as specs
from orchestrator.collect import Collector
from orchestrator.compare import slo_verdicts
from orchestrator.dispatch import Dispatcher
from orchestrator.errors import exit_code
from orchestrator.grafana import RunAnnotations
from orchestrator.result import Gap, RunResult
from orchestrator.results import RunFolder
from orchestrator.watch import LiveView
from workers.contract import Interval
from workers.metrics import IntervalMetrics, serve


@dataclass
class RunOutcome:
    result: RunResult
    folder: Path
    exit_code: int


class StopEvent(Protocol):
    def is_set(self) -> bool: ...


def run(b: specs.Benchmark, spec_text: str, dispatcher: Dispatcher, results_root: Path = Path("results"), *,
        run_id: str | None = None, metrics_port: int = 0, console: Console | None = None,
        interactive: bool = True, stop_event: StopEvent | None = None) -> RunOutcome:
    """Run ``b`` through ``dispatcher`` to its end (or a stop) and save the result."""
    console = console or Console(stderr=True)
    the_plan = planner.make(b, run_id, dispatcher.parts(list(b.regions), len(b.targets)))
    folder = RunFolder.create(results_root, the_plan.run_id, spec_text)
    dispatcher.start(the_plan, spec_text)
    return _follow(b.slos, b.name, dispatcher, folder, the_plan.phase_seconds, the_plan.total_s, metrics_port,
                   console, interactive, stop_event)


def attach(dispatcher: Any, run_id: str, results_root: Path = Path("results"), console: Console | None = None,
           interactive: bool = True) -> RunOutcome:
    """Follow a distributed run from the store (after its orchestrator died, or to watch it)."""
    console = console or Console(stderr=True)
    meta = dispatcher.attach(run_id)
    b = specs.load_text(meta["spec"], f"{run_id}/spec.yaml") if meta.get("spec") else None
    # The folder is rewritten from the stream: the intervals file restarts with what is in Redis.
    folder = RunFolder.create(results_root, run_id, meta.get("spec"), fresh=True)
    return _follow(b.slos if b else [], meta.get("name"), dispatcher, folder, meta.get("phase_seconds") or {},
                   meta["total_s"], 0, console, interactive, None)


def _follow(slos: Any, name: str | None, dispatcher: Dispatcher, folder: RunFolder, phase_seconds: dict[str, float],
            total_s: float, metrics_port: int, console: Console, interactive: bool,
            stop_event: StopEvent | None) -> RunOutcome:
    collector = Collector(folder.run_id, phase_seconds)
    metrics = IntervalMetrics()
    if metrics_port:
        try:
            serve(metrics, metrics_port)
        except OSError as exc:
            console.print(f"[yellow]warning[/]: metrics not served on :{metrics_port} ({exc.strerror}); use --metrics-port")

    def on_interval(iv: Interval) -> None:
        if collector.add(iv):
            folder.append(iv)
            metrics.observe(iv)

    console.print(f"run [bold]{folder.run_id}[/]: {dispatcher.describe()}, results in {folder.path}")
    annotations = RunAnnotations.from_env(folder.run_id, name or folder.run_id, console)  # no-op without FNBENCH_GRAFANA_URL
    annotations.started(dispatcher.start_at)
    interrupted = False
    with _signals(interactive), LiveView(collector, dispatcher.start_at, total_s, console, live=interactive) as view:
        while True:
            try:
                if not dispatcher.poll(on_interval):
                    break
                view.update()
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
    interrupted = interrupted or fields.get("state") == "stopped"
    result, code = conclude(slos, collector, dispatcher.gaps(), [*dispatcher.errors(), *folder.errors],
                            name=name, interrupted=interrupted, incomplete=bool(folder.errors), **fields)
    saved = _save(folder, result, console)
    errors = len(result.errors)
    annotations.stopped(time.time(), "interrupted" if interrupted else f"{errors} error(s)" if errors else "")
    return RunOutcome(result, saved, code)


def conclude(slos: Any, collector: Collector, gaps: list[Gap], errors: list[str], **fields: Any) -> tuple[RunResult, int]:
    """The RunResult of what was collected, with its SLO verdicts, and the exit code it earns."""
    # One line per distinct error: every shard of a worker meets the same setup error.
    result = collector.result(gaps=gaps, errors=tuple(dict.fromkeys(errors)), **fields)
    result = dataclasses.replace(result, slo=tuple(slo_verdicts(slos, result.groups)))
    return result, exit_code(slo_failed=result.slo_failed, errors=bool(result.errors),
                             interrupted=result.interrupted, lost_load=result.expired_shards > 0)


def _save(folder: RunFolder, result: RunResult, console: Console) -> Path:
    """Write result.json; on a full or broken disk, write it elsewhere and say where (never lose it)."""
    try:
        folder.write_result(result)
        return folder.path
    except OSError as exc:
        fallback = Path(tempfile.gettempdir()) / f"fnbench-{folder.run_id}"
        marked = dataclasses.replace(result, incomplete=True,
                                     errors=(*result.errors, f"{folder.path}/result.json: {exc.strerror or exc}"))
        try:
            fallback.mkdir(parents=True, exist_ok=True)
            (fallback / "result.json").write_bytes(marked.to_json())
            console.print(f"[red]error[/]: cannot write {folder.path}/result.json ({exc.strerror or exc}); "
                          f"the result went to {fallback}/result.json")
            return fallback
        except OSError:
            console.print(f"[red]error[/]: cannot write the result anywhere ({exc.strerror or exc}); it follows:")
            console.out(marked.to_json().decode(), highlight=False)
            return folder.path


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
