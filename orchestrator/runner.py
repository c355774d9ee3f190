"""Run a validated Benchmark on this machine: plan, dispatch to the local pool, watch, collect, save.

This is the one function `fnbench run` and `fnbench calibrate` call.  Ctrl-C or SIGTERM sets
the workers' stop flag; they flush within ~250 ms and the partial result is still written.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from orchestrator import plan
from orchestrator.collect import Collector
from orchestrator.compare import slo_verdicts
from orchestrator.dispatch.local import LocalPool
from orchestrator.errors import SetupError
from orchestrator.grafana import RunAnnotations
from orchestrator.results import RunFolder, new_run_id
from orchestrator.spec import Benchmark
from orchestrator.watch import LiveView
from workers.contract import Interval, Shard
from workers.metrics import IntervalMetrics, serve

EXIT_OK, EXIT_SLO, EXIT_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
_LEAD_S = 1.5  # time for spawned workers to import and connect before the common start


@dataclass
class RunOutcome:
    result: dict[str, Any]
    folder: Path
    exit_code: int


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def with_local_functions(shards: list[Shard], b: Benchmark) -> list[Shard]:
    """Give local-platform targets the command of their built function (fnbench functions build)."""
    local = {t.name: t for t in b.targets if t.platform == "local"}
    if not local:
        return shards
    from orchestrator import functions

    addresses: dict[str, dict[str, Any]] = {}
    for name, t in local.items():
        try:
            art = functions.artifact_for(t.runtime)
        except FileNotFoundError as exc:
            raise SetupError(f"target {name!r}: {exc}; build with `fnbench functions build`") from None
        cwd = art.path if art.path.is_dir() else art.path.parent
        addresses[name] = {"command": art.command, "env": art.env, "cwd": str(cwd), "instances": t.instances}
    return [
        dataclasses.replace(s, target=dataclasses.replace(s.target, address=addresses[s.target.name]))
        if s.target.name in addresses else s
        for s in shards
    ]


def phase_seconds(b: Benchmark) -> dict[str, float]:
    out: dict[str, float] = {}
    for phase, warmup, _, length, _ in plan.phase_windows(b):
        if not warmup:
            out[phase] = out.get(phase, 0.0) + length
    return out


def finish(b: Benchmark, collector: Collector, **extra: Any) -> tuple[dict[str, Any], int]:
    groups = collector.group_rows()
    verdicts = slo_verdicts(b, groups)
    result = collector.result(slo=verdicts, name=b.name, **extra)
    code = EXIT_SLO if any(not v["pass"] for v in verdicts) else EXIT_OK
    return result, code


def run(
    b: Benchmark,
    spec_text: str,
    results_root: Path = Path("results"),
    workers: int | None = None,
    metrics_port: int = 9464,
    console: Console | None = None,
    run_id: str | None = None,
) -> RunOutcome:
    console = console or Console(stderr=True)
    run_id = run_id or new_run_id(b.name)
    workers = workers or default_workers()
    start_at = time.time() + _LEAD_S
    shards = with_local_functions(plan.split(b, run_id, start_at, min_parts=workers), b)
    folder = RunFolder(results_root, run_id)
    folder.write_spec(spec_text)
    collector = Collector(run_id, phase_seconds(b))
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

    console.print(f"run [bold]{run_id}[/]: {len(shards)} shards on {workers} worker process(es), results in {folder.path}")
    pool = LocalPool(shards, workers)
    annotations = RunAnnotations.from_env(run_id, b.name, console)  # no-op unless FNBENCH_GRAFANA_URL
    annotations.started(start_at)
    interrupted = False
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        pool.start()
        with LiveView(collector, start_at, plan.total_length(b), console) as view:
            while True:
                try:
                    if not pool.poll(on_interval):
                        break
                    view.update()
                except KeyboardInterrupt:
                    if interrupted:  # a second Ctrl-C: stop waiting for the workers
                        break
                    interrupted = True
                    console.print("[yellow]stopping: waiting for workers to flush (Ctrl-C again to abandon)[/]")
                    pool.stop()
        pool.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
        folder.close()
    result, code = finish(b, collector, interrupted=interrupted, workers=workers, shards=len(shards), start_at=start_at)
    result["errors"] = pool.errors
    folder.write_result(result)
    annotations.stopped(time.time(), "interrupted" if interrupted else f"{len(pool.errors)} worker error(s)" if pool.errors else "")
    if pool.errors:
        code = EXIT_INPUT
    elif interrupted:
        code = EXIT_INTERRUPTED
    return RunOutcome(result, folder.path, code)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
