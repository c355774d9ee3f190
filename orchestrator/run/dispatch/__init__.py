"""How shards reach run_shard(): the Dispatcher protocol and its two implementations.

    local.py    LocalDispatcher   a process pool on this machine (the embedded default)
    celery.py   CeleryDispatcher  one Celery queue per region, fed to `fnbench worker`s; heartbeats,
                                  re-dispatch of lost shards and the capacity check live there

The run loop (orchestrator/run/runner.py) drives either one the same way:
``parts`` → ``start(plan)`` → ``poll(on_interval)`` until False → ``stop`` (on Ctrl-C) →
``join`` → ``gaps`` / ``errors`` / ``fields`` into the result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from orchestrator.run.plan import Plan
from orchestrator.run.result import BadRecords, Gap
from orchestrator.run.rollup import Rollup
from workers.contract import Interval

OnInterval = Callable[[Interval], None]


class Dispatcher(Protocol):
    start_at: float  # epoch seconds the run's profile begins (set by start)

    @property
    def bad(self) -> BadRecords:
        """Records it received and could not read (counted in the result, never fatal)."""
        ...

    def parts(self, regions: list[str], targets: int) -> int:
        """Shards per group the rate is split over (worker processes available per target)."""
        ...

    def start(self, plan: Plan, spec_text: str) -> None:
        """Choose the common start (now + this dispatcher's lead) and hand out every shard."""
        ...

    def backlog(self) -> list[Rollup]:
        """Intervals the store holds only in compacted form (orchestrator/run/rollup.py), to be added
        before the first poll; empty for a run this dispatcher started."""
        ...

    def poll(self, on_interval: OnInterval) -> bool:
        """Deliver the intervals that arrived (waiting briefly); False once the run is over."""
        ...

    def stop(self) -> None:
        """Ask every shard to stop within about a second; poll() then returns False soon."""
        ...

    def join(self) -> None:
        """Wait for the shards to end (bounded) and record how the run ended."""
        ...

    def gaps(self) -> list[Gap]:
        """Load that was not generated, as the dispatcher saw it (lost or never-run shards)."""
        ...

    def errors(self) -> list[str]:
        """Setup errors and refusals reported by workers."""
        ...

    def fields(self) -> dict[str, Any]:
        """What the result says about the dispatch (workers, processes, skew, re-dispatches…)."""
        ...

    def describe(self) -> str:
        """One line for the console: where the shards went."""
        ...
