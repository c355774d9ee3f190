"""Platform invokers behind one seam: ``invoke(due, done)`` sends one request now.

The shard loop owns the open-model rules (due times, max_in_flight, the wait queue); an
invoker only sends what it is handed and reports exactly one Outcome per request through
``done(outcome, due, sent, end)`` (monotonic seconds).  Failures are outcomes, never raised.

What an invoker learns about one invocation beyond its timings (a cold start, the
function's init time, its memory) rides along in that same call as a fifth argument,
an ``Invocation`` record; the plain-HTTP hot path passes nothing and pays nothing for it.
What an invoker counts over its life (retries, connections opened, …) it exposes through
``counters()``: cumulative values the shard turns into per-interval deltas at each flush,
except the levels in ``LEVELS`` (a peak so far), which are reported as they are
(``counters_of`` also reads an invoker that has no ``counters`` as counting nothing).

A platform is one module under workers/platforms/ with a factory
``(target, phase, max_in_flight) -> Invoker`` and one line in ``PLATFORMS``.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Protocol

from workers.contract import Outcome, Target
from workers.errors import SetupError

_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")

LEVELS = frozenset({"max_memory_mb"})  # counters() values that are peaks, not running totals


class Invocation:
    """What an invoker learned about one invocation besides its timings (the rare cases)."""

    __slots__ = ("cold", "init_us", "memory_mb", "platform_us", "billed_us", "init_duration_us")

    def __init__(self, cold: bool = False, init_us: int = -1, memory_mb: float = 0.0, platform_us: int = -1,
                 billed_us: int = -1, init_duration_us: int = -1) -> None:
        self.cold = cold  # this invocation started a new instance (process, sandbox)
        self.init_us = init_us  # the function's own initialisation time; -1: unknown
        self.memory_mb = memory_mb  # peak memory of the instance that served it; 0: unknown
        # The platform's clocks (Lambda REPORT: Duration, Billed Duration (+ Billed Restore
        # Duration), Init Duration); -1: not reported.
        self.platform_us = platform_us
        self.billed_us = billed_us
        self.init_duration_us = init_duration_us

    def __repr__(self) -> str:
        return (f"Invocation(cold={self.cold}, init_us={self.init_us}, memory_mb={self.memory_mb}, "
                f"platform_us={self.platform_us}, billed_us={self.billed_us}, init_duration_us={self.init_duration_us})")


class Done(Protocol):
    """The completion callback: exactly one call per ``invoke``."""

    def __call__(self, outcome: Outcome, due: float, sent: float, end: float,
                 info: Invocation | None = None, /) -> None: ...


class Invoker(Protocol):
    def invoke(self, due: float, done: Done) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def counters(self) -> dict[str, float]:
        """Cumulative counters since the invoker was made (see the module docstring)."""
        ...


Factory = Callable[[Target, str, int], Invoker]


def _lazy(module: str, name: str = "make_invoker") -> Factory:
    """A factory that imports its platform module on first use (each pulls its own deps)."""

    def factory(target: Target, phase: str, max_in_flight: int) -> Invoker:
        made: Invoker = getattr(importlib.import_module(module), name)(target, phase, max_in_flight)
        return made

    factory.__qualname__ = f"{module}.{name}"
    return factory


PLATFORMS: dict[str, Factory] = {
    "aws-lambda": _lazy("workers.platforms.aws_lambda"),
    "http": _lazy("workers.platforms.http"),
    "local": _lazy("workers.platforms.local"),
}


def counters_of(invoker: object) -> dict[str, float]:
    """``invoker.counters()``, or nothing for an invoker that counts nothing."""
    counters = getattr(invoker, "counters", None)
    return counters() if counters is not None else {}


ALLOWED_ENV_NAMES = "FNBENCH_ALLOWED_ENV"  # comma-separated fnmatch patterns of names a spec may read
DEFAULT_ALLOWED_ENV_NAMES = ("FNBENCH_SECRET_*",)
# Never resolvable, whatever FNBENCH_ALLOWED_ENV says: fnbench's own settings (the task key, the broker
# URL with its password, …) and every AWS_* variable (the worker's AWS credentials and their sources).
NEVER_RESOLVED = ("FNBENCH_*", "AWS_*")
NEVER_EXCEPT = ("FNBENCH_SECRET_*",)  # the documented prefix for secrets meant for specs


def allowed_env_patterns() -> list[str]:
    """The operator's FNBENCH_ALLOWED_ENV patterns (default: ``FNBENCH_SECRET_*``)."""
    raw = os.environ.get(ALLOWED_ENV_NAMES)
    if raw is None or not raw.strip():
        return list(DEFAULT_ALLOWED_ENV_NAMES)
    return [p.strip() for p in raw.split(",") if p.strip()]


def env_refusal(name: str, patterns: list[str] | None = None) -> str | None:
    """Why ``${env:NAME}`` may not be resolved on this machine (None: it may)."""
    if any(fnmatchcase(name, p) for p in NEVER_RESOLVED) and not any(fnmatchcase(name, p) for p in NEVER_EXCEPT):
        return (f"${{env:{name}}} is never resolved: fnbench's own (FNBENCH_*) and AWS_* variables stay on the "
                "worker; put the secret in a FNBENCH_SECRET_* variable instead")
    patterns = allowed_env_patterns() if patterns is None else patterns
    if not any(fnmatchcase(name, p) for p in patterns):
        return (f"${{env:{name}}} is not allowed: {ALLOWED_ENV_NAMES} is {','.join(patterns)}; name the secret "
                f"FNBENCH_SECRET_…, or add {name} to {ALLOWED_ENV_NAMES} on every worker (and where you validate the spec)")
    return None


def env_references(value: str) -> list[str]:
    """The NAMEs of every ``${env:NAME}`` in ``value``."""
    return _ENV_REF.findall(value)


def resolve_env(value: str, where: str) -> str:
    """Replace ``${env:NAME}`` with the worker's environment: only names FNBENCH_ALLOWED_ENV allows
    (never fnbench's own or AWS's); a refused or missing name is a SetupError."""
    patterns = allowed_env_patterns()

    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        refusal = env_refusal(name, patterns)
        if refusal is not None:
            raise SetupError(f"{where}: {refusal}")
        if name not in os.environ:
            raise SetupError(f"{where}: environment variable {name} is not set on this worker")
        return os.environ[name]

    return _ENV_REF.sub(repl, value)


def make_invoker(target: Target, phase: str, max_in_flight: int) -> Invoker:
    """The invoker for a target's platform, from ``PLATFORMS``; an unknown one is a SetupError."""
    factory = PLATFORMS.get(target.platform)
    if factory is None:
        raise SetupError(f"target {target.name!r}: platform {target.platform!r} is not supported by this worker "
                         f"(supported: {', '.join(sorted(PLATFORMS))})")
    return factory(target, phase, max_in_flight)
