"""The embedded default: shards run in a local pool of processes, one asyncio generator (uvloop) each.

Processes are spawned and import the engine first; the common start is set only once every one
of them is ready, so a slow machine starts late as a whole instead of losing shards ("expired").
Shards are spread round-robin so those that run at the same time land on different processes.
Intervals come back as JSON over a multiprocessing queue.  Workers ignore SIGINT: the parent owns
Ctrl-C and sets the shared stop event, so every worker flushes.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import queue
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from orchestrator.errors import InputError, SetupError
from orchestrator.run.plan import Plan
from orchestrator.run.result import BadRecords, Gap
from orchestrator.run.rollup import Rollup
from workers import histograms, limits
from workers.contract import Interval, SchemaError, Shard
from workers.errors import FnbenchError
from workers.lifecycle import die_with_parent, steady_malloc

_ERROR = b"!"
_READY = b"+"
LEAD_S = 1.5  # from every process being ready to the common start: shards start invokers and instances
READY_TIMEOUT_S = 120.0  # spawning and importing, on a machine that may be very busy


def _worker_main(inbox: Any, out: Any, stop: Any, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # If the orchestrator is killed, its workers (and through them the function processes
    # they started) go too: nothing keeps sending load with nobody collecting it.
    die_with_parent(parent)
    steady_malloc()  # big buffers stay on mmap, returned when freed (workers/lifecycle.py)
    try:
        from workers.shard import run_shards

        out.put(_READY)
        shard_json = inbox.get()
        if not shard_json:
            return
        shards = [Shard.from_json(raw) for raw in shard_json]
        run_shards(shards, lambda iv: out.put(iv.to_json()), stop)
    except FnbenchError as exc:  # reported to the parent, which exits 2 with the message
        out.put(_ERROR + f"{type(exc).__name__}: {exc}".encode())
    except Exception as exc:  # a bug: the parent shows the short traceback
        out.put(_ERROR + f"{type(exc).__name__}: {traceback.format_exc(limit=3)}".encode())


def rate_refusal(batches: Sequence[Sequence[Shard]]) -> str:
    """The workers' per-process rate cap (FNBENCH_MAX_RPS) applied to local processes: a Celery worker
    process runs one shard at a time, a local one every shard it is handed, so its rate is the sum of
    the peaks of its shards that run together (those with the same start; a group's slices and the
    phase windows follow one another).  Empty: every process is under the cap."""
    cap = limits.max_rps()
    for i, batch in enumerate(batches):
        together: dict[float, float] = {}
        for shard in batch:
            together[shard.start_at] = together.get(shard.start_at, 0.0) + limits.peak_rps(shard)
        peak = max(together.values(), default=0.0)
        if peak > cap:
            return (f"local worker process {i} would send up to {peak:,.0f} req/s; one process sends at most "
                    f"{cap:g} req/s ({limits.MAX_RPS_ENV}): run with more --workers (at least "
                    f"{math.ceil(peak * len(batches) / cap)}), lower the load, or run it distributed (--broker)")
    return ""


def assign(shards: Sequence[Shard], workers: int) -> list[list[Shard]]:
    ordered = sorted(shards, key=lambda s: (s.start_at, s.shard_id))
    batches: list[list[Shard]] = [[] for _ in range(max(1, min(workers, len(ordered))))]
    for i, shard in enumerate(ordered):
        batches[i % len(batches)].append(shard)
    return batches


class LocalPool:
    """Start, feed, watch and stop the worker processes of one run."""

    def __init__(self, processes: int) -> None:
        ctx = mp.get_context("spawn")
        self.queue = ctx.Queue()
        self.stop_event = ctx.Event()
        self.inboxes = [ctx.Queue() for _ in range(processes)]
        self.procs = [
            ctx.Process(target=_worker_main, args=(inbox, self.queue, self.stop_event, os.getpid()),
                        name=f"fnbench-worker-{i}", daemon=True)
            for i, inbox in enumerate(self.inboxes)
        ]
        self.errors: list[str] = []
        self.bad = BadRecords()

    def start(self) -> None:
        for p in self.procs:
            p.start()

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until every process has imported the engine; a SetupError when one fails or never does."""
        ready, deadline = 0, time.monotonic() + timeout_s
        while ready < len(self.procs):
            try:
                raw = self.queue.get(timeout=0.2)
            except queue.Empty:
                dead = [p for p in self.procs if not p.is_alive()]
                if dead:
                    raise SetupError(f"{dead[0].name} exited with code {dead[0].exitcode} before it was ready") from None
                if time.monotonic() > deadline:
                    raise SetupError(f"{len(self.procs) - ready} worker process(es) not ready after {timeout_s:.0f}s") from None
                continue
            if raw == _READY:
                ready += 1
            elif raw.startswith(_ERROR):
                raise SetupError(raw[1:].decode())

    def hand(self, batches: list[list[Shard]]) -> None:
        for inbox, batch in zip(self.inboxes, batches, strict=True):
            inbox.put([s.to_json() for s in batch])

    def stop(self) -> None:
        self.stop_event.set()

    def alive(self) -> bool:
        return any(p.is_alive() for p in self.procs)

    def poll(self, on_interval: Callable[[Interval], None], timeout: float = 0.2) -> bool:
        """Deliver whatever arrived; False once every worker has exited and the queue is empty."""
        try:
            raw = self.queue.get(timeout=timeout)
        except queue.Empty:
            if self.alive():
                return True
            # Workers are gone: take what they left behind, then report the end.
            try:
                raw = self.queue.get(timeout=0.2)
            except queue.Empty:
                return False
        self._deliver(raw, on_interval)
        while True:
            try:
                raw = self.queue.get_nowait()
            except queue.Empty:
                return True
            self._deliver(raw, on_interval)

    def _deliver(self, raw: bytes, on_interval: Callable[[Interval], None]) -> None:
        if raw.startswith(_ERROR):
            self.errors.append(raw[1:].decode())
            self.stop_event.set()
            return
        try:
            iv = histograms.read_interval(raw)
        except SchemaError as exc:
            self.bad.add(f"from a worker process: {exc}")
            return
        on_interval(iv)

    def join(self, timeout: float = 5.0) -> None:
        for p in self.procs:
            p.join(timeout)
            if p.is_alive():
                p.kill()
        for p in self.procs:
            if p.exitcode not in (0, None) and not self.errors:
                self.errors.append(f"{p.name} exited with code {p.exitcode}")

    def kill(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.kill()


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


class LocalDispatcher:
    """The Dispatcher of the embedded default: shards in ``workers`` local processes."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or default_workers()
        self.start_at = 0.0
        self.pool: LocalPool | None = None
        self.shard_count = 0
        self.processes = 0

    @property
    def bad(self) -> BadRecords:
        return self.pool.bad if self.pool is not None else BadRecords()

    def parts(self, regions: list[str], targets: int) -> int:
        return self.workers

    def start(self, plan: Plan, spec_text: str) -> None:
        self.processes = max(1, min(self.workers, len(plan.shards)))
        refused = rate_refusal(assign(plan.shards, self.processes))
        if refused:  # before any process starts: the load is never sent
            raise InputError(refused)
        self.pool = LocalPool(self.processes)
        self.pool.start()
        try:
            self.pool.wait_ready()
        except BaseException:
            self.pool.kill()
            raise
        self.start_at = time.time() + LEAD_S
        shards = plan.at(self.start_at)
        self.shard_count = len(shards)
        self.pool.hand(assign(shards, self.processes))

    def backlog(self) -> list[Rollup]:
        return []

    def poll(self, on_interval: Callable[[Interval], None]) -> bool:
        assert self.pool is not None
        return self.pool.poll(on_interval)

    def stop(self) -> None:
        if self.pool is not None:
            self.pool.stop()

    def join(self) -> None:
        if self.pool is not None:
            self.pool.join()

    def gaps(self) -> list[Gap]:
        return []

    def errors(self) -> list[str]:
        return list(self.pool.errors) if self.pool is not None else []

    def fields(self) -> dict[str, Any]:
        return {"workers": self.workers, "shards": self.shard_count, "start_at": self.start_at}

    def describe(self) -> str:
        return f"{self.shard_count} shards on {self.processes} worker process(es)"
