"""Platform invokers: one method, ``invoke(due, done)``, sends one request now.

The shard loop owns the open-model rules (due times, max_in_flight, the wait queue); an
invoker only sends what it is handed and reports exactly one Outcome per request through
``done(outcome, due, sent, end)`` (monotonic seconds).  Failures are outcomes, never raised.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Protocol

from workers.contract import Outcome, Target
from workers.errors import SetupError
from workers.recorder import ShardRecorder

Done = Callable[[Outcome, float, float, float], None]

_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


class Invoker(Protocol):
    def invoke(self, due: float, done: Done) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def resolve_env(value: str, where: str) -> str:
    """Replace ``${env:NAME}`` with the worker's environment; a missing name is a SetupError."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in os.environ:
            raise SetupError(f"{where}: environment variable {name} is not set on this worker")
        return os.environ[name]

    return _ENV_REF.sub(repl, value)


def make_invoker(target: Target, phase: str, max_in_flight: int, recorder: ShardRecorder) -> Invoker:
    """The invoker for a target's platform; platforms that see more than timings (cold starts,
    init time, memory) record those into ``recorder``."""
    if target.platform == "http":
        from workers.platforms.http import HttpInvoker

        return HttpInvoker(target, max_in_flight)
    if target.platform == "local":
        from workers.platforms.local import make_local_invoker

        return make_local_invoker(target, phase, max_in_flight, recorder)
    raise SetupError(f"target {target.name!r}: platform {target.platform!r} is not supported by this worker")
