"""IntervalSink: the one shape of everything that consumes Interval records.

The run folder, the collector, Prometheus (``workers.metrics.IntervalMetrics``), the SLO watch,
Grafana annotations and any exporter are sinks: ``add(interval)`` for each interval, exactly once,
then ``close()``.  What only some sinks can do is a separate protocol (k6's outputs do the same):
``Concludes`` is told the run's result before ``close``.  The orchestrator's session and the
worker's main process each feed a ``Fanout`` of the sinks they own plus the configured ones.

Configured sinks are plug-ins: ``FNBENCH_SINKS=module:factory[,module:factory…]`` names factories
``factory(run_id: str) -> IntervalSink`` (the worker's main process passes ``""``: it serves many
runs); ``register(name, factory)`` adds one in code.  A sink that raises is reported once and
dropped; it never costs the run its measurements.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

from workers.contract import Interval
from workers.errors import SetupError

SINKS_ENV = "FNBENCH_SINKS"
log = logging.getLogger("fnbench.sinks")


@runtime_checkable
class IntervalSink(Protocol):
    def add(self, interval: Interval) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Concludes(Protocol):
    """A sink that wants the run's result (a RunResult) before it is closed."""

    def conclude(self, result: Any) -> None: ...


SinkFactory = Callable[[str], IntervalSink]
_registered: dict[str, SinkFactory] = {}


def register(name: str, factory: SinkFactory) -> None:
    """Add a sink factory for every run of this process (an exporter's one line of wiring)."""
    _registered[name] = factory


def _load(ref: str) -> SinkFactory:
    module, _, attr = ref.partition(":")
    if not module or not attr:
        raise SetupError(f"{SINKS_ENV}: {ref!r} is not module:factory")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise SetupError(f"{SINKS_ENV}: cannot load {ref!r}: {exc}") from None
    if not callable(factory):
        raise SetupError(f"{SINKS_ENV}: {ref!r} is not callable")
    return factory


def configured(run_id: str) -> list[IntervalSink]:
    """The registered sinks and those named by FNBENCH_SINKS, made for one run."""
    refs = [r.strip() for r in os.environ.get(SINKS_ENV, "").split(",") if r.strip()]
    factories = [*_registered.values(), *(_load(r) for r in refs)]
    sinks = []
    for factory in factories:
        sink = factory(run_id)
        if not isinstance(sink, IntervalSink):
            raise SetupError(f"{SINKS_ENV}: {factory!r} made {type(sink).__name__}, which has no add(interval) and close()")
        sinks.append(sink)
    return sinks


class Fanout:
    """Feeds every interval to each sink in order; a sink that raises is warned about once and dropped."""

    def __init__(self, sinks: Iterable[IntervalSink], warn: Callable[[str], None] | None = None) -> None:
        self.sinks = list(sinks)
        self._warn = warn or log.warning

    def _drop(self, sink: IntervalSink, exc: BaseException) -> None:
        self._warn(f"interval sink {type(sink).__name__} failed and is dropped: {exc!r}")
        self.sinks.remove(sink)

    def add(self, interval: Interval) -> None:
        for sink in list(self.sinks):
            try:
                sink.add(interval)
            except Exception as exc:  # noqa: BLE001 - one sink never costs the others their intervals
                self._drop(sink, exc)

    def conclude(self, result: Any) -> None:
        for sink in list(self.sinks):
            if isinstance(sink, Concludes):
                try:
                    sink.conclude(result)
                except Exception as exc:  # noqa: BLE001
                    self._drop(sink, exc)

    def close(self) -> None:
        for sink in list(self.sinks):
            try:
                sink.close()
            except Exception as exc:  # noqa: BLE001
                self._warn(f"interval sink {type(sink).__name__} did not close cleanly: {exc!r}")
