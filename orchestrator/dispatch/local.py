"""Run shards in a local pool of processes, one asyncio generator (uvloop) per process.

Shards are spread round-robin so those that run at the same time land on different
processes.  Intervals come back as JSON over a multiprocessing queue.  Workers ignore
SIGINT: the parent owns Ctrl-C and sets the shared stop event, so every worker flushes.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from workers.contract import Interval, Shard
from workers.errors import FnbenchError
from workers.lifecycle import die_with_parent

_ERROR = b"!"


def _worker_main(shard_json: list[bytes], out: Any, stop: Any, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # If the orchestrator is killed, its workers (and through them the function processes
    # they started) go too: nothing keeps sending load with nobody collecting it.
    die_with_parent(parent)
    try:
        from workers.shard import run_shards

        shards = [Shard.from_json(raw) for raw in shard_json]
        run_shards(shards, lambda iv: out.put(iv.to_json()), stop)
    except Exception as exc:  # reported to the parent, which exits 2 with the message
        # fnbench's own errors carry a message for the user; anything else is a bug: a short traceback.
        detail = str(exc) if isinstance(exc, FnbenchError) else traceback.format_exc(limit=3)
        out.put(_ERROR + f"{type(exc).__name__}: {detail}".encode())


def assign(shards: Sequence[Shard], workers: int) -> list[list[Shard]]:
    ordered = sorted(shards, key=lambda s: (s.start_at, s.shard_id))
    batches: list[list[Shard]] = [[] for _ in range(max(1, min(workers, len(ordered))))]
    for i, shard in enumerate(ordered):
        batches[i % len(batches)].append(shard)
    return batches


class LocalPool:
    """Start, watch and stop the worker processes of one run."""

    def __init__(self, shards: Sequence[Shard], workers: int) -> None:
        ctx = mp.get_context("spawn")
        self.queue = ctx.Queue()
        self.stop_event = ctx.Event()
        self.procs = [
            ctx.Process(
                target=_worker_main,
                args=([s.to_json() for s in batch], self.queue, self.stop_event, os.getpid()),
                name=f"fnbench-worker-{i}",
                daemon=True,
            )
            for i, batch in enumerate(assign(shards, workers))
        ]
        self.errors: list[str] = []

    def start(self) -> None:
        for p in self.procs:
            p.start()

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
        on_interval(Interval.from_json(raw))

    def join(self, timeout: float = 5.0) -> None:
        for p in self.procs:
            p.join(timeout)
            if p.is_alive():
                p.kill()
        for p in self.procs:
            if p.exitcode not in (0, None) and not self.errors:
                self.errors.append(f"{p.name} exited with code {p.exitcode}")
