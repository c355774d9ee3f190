"""Run this spec: the one module that owns a run from the spec's text to what is left of it.

It decides whether a spec can run here (``runnable``: one check, used by `fnbench run`, `validate`,
`schedule add` and the scheduler's firings), where the shards go (``Placement`` → the local pool or
the Celery region queues), whether it is one run or a memory sweep, and what follows: result.json,
the HTML report and the history entry.  It also rebuilds a finished run's result from its folder or
from the store (``result_of``).  The CLI only parses arguments and prints; the scheduler, `calibrate`
and the CLI all come through here.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from orchestrator.analysis import budget, history, sweep
from orchestrator.errors import InputError, SpecError
from orchestrator.report.html import RunData, load_run
from orchestrator.run import plan as planner
from orchestrator.run import runner, spec
from orchestrator.run.collect import Collector
from orchestrator.run.dispatch import Dispatcher
from orchestrator.run.dispatch.local import LocalDispatcher
from orchestrator.run.result import BadRecords, RunResult
from orchestrator.run.results import read_intervals
from orchestrator.run.spec import Benchmark
from orchestrator.subjects import provisioned
from workers import auth

Say = Callable[[str], None]
DEFAULT_RETENTION_S = 3 * 86400.0


# -- is this spec runnable here ------------------------------------------------------------------
def runnable(text: str, source: str) -> Benchmark:
    """The spec, valid and runnable by this fnbench's workers: every target inside
    FNBENCH_ALLOWED_TARGETS and the plan within its limits (run length, shards).  A SpecError lists
    every problem with its YAML path otherwise."""
    b = spec.load_text(text, source)
    problems = (spec.run_problems(b) + spec.allow_list_problems(b)
                + planner.limit_problems(b, steps=max(1, len(spec.sizes(b)))) + budget.problems(b))
    if problems:
        raise SpecError(source, problems)
    return b


def read_runnable(path: Path) -> tuple[Benchmark, str]:
    text = spec.read_text(path)  # bounded size, UTF-8, or a SpecError naming the file
    return runnable(text, str(path)), text


# -- where the shards go ------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a run's shards go: this machine's process pool, or region queues on ``broker``."""

    broker: str | None = None
    workers: int = 0  # local processes, or processes per region the rate is split over; 0: the default
    retention_s: float = DEFAULT_RETENTION_S  # with a broker: how long the run's records stay in Redis
    metrics_port: int = 0  # local runs serve /metrics here (with a broker, the workers serve theirs)


def dispatchers(where: Placement, warn: Say) -> Callable[[], Dispatcher]:
    """A maker of dispatchers for ``where`` (a sweep makes one per step)."""
    if where.broker:
        from orchestrator.run.dispatch.celery import CeleryDispatcher

        broker = where.broker
        auth.load_key()  # before anything is written: workers run only tasks signed with it
        return lambda: CeleryDispatcher(broker, processes=where.workers or None, warn=warn,
                                        retention_s=where.retention_s)
    return lambda: LocalDispatcher(where.workers or None)


# -- run it -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Recording:
    """What the history entry of a run says about where it came from."""

    spec_path: Path | None = None  # its git description is looked up when ``git`` is None
    schedule: str | None = None
    git: str | None = None
    extra: dict[str, Any] | None = None
    history_broker: str | None = None  # where the entry goes (default: the run's broker; a scheduler's local runs: its Redis)


def run(b: Benchmark, text: str, where: Placement, *, results: Path = Path("results"), run_id: str | None = None,
        html: bool = True, console: Console | None = None, interactive: bool = True, stop_event: Any = None,
        warn: Say | None = None, recording: Recording | None = Recording(), apply: bool = False) -> runner.RunOutcome:
    """Run ``b`` (one run, or a memory sweep's runs) to its end, save it, and record its history entry
    (``recording=None``: none, as for a calibration)."""
    console = console or Console(stderr=True)
    say = warn or (lambda message: console.print(f"[yellow]{message}[/]", highlight=False))
    make = dispatchers(where, say)
    first = make()  # a broker that cannot be reached says so before anything is written
    metrics_port = 0 if where.broker else where.metrics_port
    # Provisioned concurrency (and an alias that forced cold starts move): set before, restored after.
    with provisioned.around(b, lambda line: console.print(line, highlight=False, markup=False)) as provisioning:
        if spec.sizes(b):
            outcome = sweep.run(b, text, make, results, run_id=run_id, metrics_port=metrics_port, console=console,
                                interactive=interactive, stop_event=stop_event, html=html, first=first, apply=apply)
        else:
            outcome = runner.run(b, text, first, results, run_id=run_id, metrics_port=metrics_port, console=console,
                                 interactive=interactive, stop_event=stop_event, html=html)
    _provisioned_summary(provisioning, outcome, console)
    if recording is not None:
        history.record(outcome.result, outcome.folder, broker=recording.history_broker or where.broker, results_root=results,
                       spec_path=recording.spec_path, git=recording.git, schedule=recording.schedule,
                       exit_code=outcome.exit_code, say=say, extra=recording.extra)
    return outcome


def _provisioned_summary(provisioning: provisioned.Provisioning, outcome: runner.RunOutcome, console: Console) -> None:
    """What provisioned concurrency the run had and what AWS charges for it (provisioned.json in the run folder)."""
    summary = provisioning.summary()
    if not summary and not provisioning.errors:
        return
    import json

    for entry in summary:
        if "provisioned_usd" in entry:
            console.print(f"provisioned concurrency {entry['function']}:{entry['qualifier']}: "
                          f"{entry['provisioned_concurrency']} x {entry['memory_mb']} MB for {entry['configured_s']:.0f} s, "
                          f"billed as {entry['billed_s']} s: ${entry['provisioned_usd']:.6f} "
                          f"(${entry['provisioned_usd_per_hour']:.4f} per hour configured)", highlight=False)
    with contextlib.suppress(OSError):
        (outcome.folder / "provisioned.json").write_text(
            json.dumps({"configs": summary, "restore_errors": provisioning.errors}, indent=1) + "\n")


def attach(broker: str, run_id: str, results: Path, console: Console, warn: Say) -> runner.RunOutcome:
    """Supervise a distributed run another orchestrator started, to its end."""
    from orchestrator.run.dispatch.celery import CeleryDispatcher

    auth.load_key()  # a re-dispatch must be signed: say now, not at the first lost shard
    return runner.attach(CeleryDispatcher(broker, warn=warn), run_id, results, console)


# -- a finished run's result, again ---------------------------------------------------------------
_SAVED_FIELDS = ("name", "start_at", "shards", "workers", "broker", "processes", "regions", "start_skew_s",
                 "dispatch_s", "redispatched", "state", "interrupted", "incomplete")


def locate(ref: Path, broker: str | None, results: Path = Path("results")) -> Path:
    """A run folder given as a path, or as a run id under ``results``."""
    return ref if broker or ref.exists() or not (results / ref).is_dir() else results / ref


def result_of(ref: Path, broker: str | None) -> tuple[RunResult, int]:
    """The result (and exit code) of a finished run, rebuilt from its recorded intervals: from the
    store with a broker, else from its folder."""
    return _result_from_store(broker, str(ref)) if broker else _result_from_folder(ref)


def run_data(ref: Path, result: RunResult, broker: str | None) -> RunData:
    """What the HTML and Markdown reports draw: the result, its intervals and its spec."""
    if not broker:
        return load_run(ref, result)
    from orchestrator.run.dispatch.celery import CeleryDispatcher

    dispatcher = CeleryDispatcher(broker)
    meta = dispatcher.attach(result.run_id)
    intervals: list[Any] = []
    dispatcher.snapshot(intervals.append)
    return RunData(result, intervals, meta.get("spec"), [], Path("results") / result.run_id)


def _result_from_folder(path: Path) -> tuple[RunResult, int]:
    """The result from the recorded intervals; what only the run knew (its start, workers, errors,
    gaps the dispatcher saw) comes from its result.json, so both are the same document."""
    folder = path.parent if path.is_file() else path
    intervals_file = path if path.is_file() else path / "intervals.jsonl"
    if not intervals_file.exists():
        raise InputError(f"{intervals_file}: not found; give a results/<run_id> folder or an intervals.jsonl")
    bad = BadRecords()  # lines that are not interval records: counted and left out (exit 3), never fatal
    intervals = read_intervals(intervals_file, bad)
    spec_file = folder / "spec.yaml"
    b = spec.load(spec_file) if spec_file.exists() else None
    saved_file = folder / "result.json"
    saved = RunResult.load(saved_file) if saved_file.exists() else None
    if saved is not None:  # records the run itself could not read (they never reached the file)
        bad.extend(saved.bad_records, saved.bad_record_reasons)
    if b is not None and spec.sizes(b):  # a memory sweep: every step's intervals, one result
        return sweep.conclude(b, folder.name, intervals, saved.gaps if saved else (),
                              list(saved.errors) if saved else [f"{folder}/result.json: missing; the sweep did not finish"],
                              name=b.name, interrupted=saved.interrupted if saved else False,
                              incomplete=saved is None or saved.incomplete, start_at=saved.start_at if saved else None)
    collector = Collector(intervals[0].run_id if intervals else folder.name, planner.phase_seconds(b) if b else None)
    collector.bad = bad
    collector.add_all(intervals)
    if saved is None:
        # A run cut short (killed orchestrator, full disk) never wrote its result: say so.
        return runner.conclude(b.slos if b else [], collector, [], [
            f"{saved_file}: missing; the run did not finish (these are the intervals it recorded)"],
            name=b.name if b else None, incomplete=True)
    fields = {name: getattr(saved, name) for name in _SAVED_FIELDS}
    seen = {(g.shard, g.attempt, g.reason) for g in collector.interval_gaps}
    gaps = [g for g in saved.gaps if (g.shard, g.attempt, g.reason) not in seen]
    return runner.conclude(b.slos if b else [], collector, gaps, list(saved.errors), **fields)


def _result_from_store(broker: str, run_id: str) -> tuple[RunResult, int]:
    """The result of a distributed run from the store alone: same intervals, same gaps, same result."""
    from orchestrator.run.dispatch.celery import CeleryDispatcher

    dispatcher = CeleryDispatcher(broker)
    meta = dispatcher.attach(run_id)
    b = spec.load_text(meta["spec"], f"{run_id}/spec.yaml") if meta.get("spec") else None
    collector = Collector(run_id, meta.get("phase_seconds"))
    for rollup in dispatcher.backlog():  # compacted intervals first, then what is still in the stream
        collector.add_rollup(rollup)
    dispatcher.snapshot(collector.add)
    collector.bad.extend(dispatcher.bad.count, dispatcher.bad.reasons)
    return runner.conclude(b.slos if b else [], collector, dispatcher.gaps(), dispatcher.errors(),
                           name=meta.get("name"), interrupted=meta.get("state") == "stopped", **dispatcher.fields())
