"""Platform invokers behind one seam: ``invoke(due, done)`` sends one request now.

The shard loop owns the open-model rules (due times, max_in_flight, the wait queue); an
invoker only sends what it is handed and reports exactly one Outcome per request through
``done(outcome, due, sent, end)`` (monotonic seconds).  Failures are outcomes, never raised.

What an invoker learns about one invocation beyond its timings (a cold start, the
function's init time, its memory) rides along in that same call as a fifth argument,
an ``Invocation`` record; the plain-HTTP hot path passes nothing and pays nothing for it.
What an invoker counts over its life (retries, connections opened, …) it exposes through
``counters()``: cumulative values the shard turns into per-interval deltas at each flush,
except the levels in ``LEVELS`` (a peak so far), which are reported as they are.

Optional invoker capabilities are declared protocols, asked with ``isinstance``:
``Counts`` (``counters()``; an invoker without it counts nothing), ``Prepares``
(``prepare(rate, max_in_flight, start_at, end_at)``, called during the lead time) and
``CountsConnections`` (``connect_times()``, the µs each new connection took).

A platform is a plug-in: one module that declares one ``Platform`` (its name, the target
fields it adds to a spec with their checks, the task address it builds from them, its
operator refusals, its invoker factory and its capabilities).  The registry holds the
built-in ones (``BUILTIN``) and those named in ``FNBENCH_PLATFORMS`` (``module:attribute``,
comma-separated, importable on every machine that validates, plans or runs the spec);
``register`` adds one in this process only.  The spec's target model, the plan's task
address, the workers' allow-list and the invoker all come from it.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel

from workers.contract import Outcome, Target
from workers.errors import SetupError

_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")

LEVELS = frozenset({"max_memory_mb"})  # counters() values that are peaks, not running totals


class Invocation:
    """What an invoker learned about one invocation besides its timings (the rare cases)."""

    __slots__ = ("cold", "init_us", "memory_mb", "platform_us", "billed_us", "init_duration_us", "request_id",
                 "trace_id", "report", "ttfb_us", "ttlb_us")

    def __init__(self, cold: bool = False, init_us: int = -1, memory_mb: float = 0.0, platform_us: int = -1,
                 billed_us: int = -1, init_duration_us: int = -1, request_id: str = "", trace_id: str = "",
                 report: Any = None) -> None:
        self.cold = cold  # this invocation started a new instance (process, sandbox)
        self.init_us = init_us  # the function's own initialisation time; -1: unknown
        self.memory_mb = memory_mb  # peak memory of the instance that served it; 0: unknown
        # The platform's clocks (Lambda REPORT: Duration, Billed Duration (+ Billed Restore
        # Duration), Init Duration); -1: not reported.
        self.platform_us = platform_us
        self.billed_us = billed_us
        self.init_duration_us = init_duration_us
        # The ids that find it elsewhere (read only when it is one of the slowest): the platform's
        # request id, the trace id fnbench sent, and an object whose ``slow_fields()`` gives the
        # numbers of the platform's own record (Lambda's REPORT line).
        self.request_id = request_id
        self.trace_id = trace_id
        self.report = report
        # A streamed response (aws-lambda invoke_mode: stream): due time → first payload byte, → end
        # of the stream; -1: not streamed.
        self.ttfb_us = -1
        self.ttlb_us = -1

    def __repr__(self) -> str:
        return (f"Invocation(cold={self.cold}, init_us={self.init_us}, memory_mb={self.memory_mb}, "
                f"platform_us={self.platform_us}, billed_us={self.billed_us}, init_duration_us={self.init_duration_us})")


class Done(Protocol):
    """The completion callback: exactly one call per ``invoke``."""

    def __call__(self, outcome: Outcome, due: float, sent: float, end: float,
                 info: Invocation | None = None, /) -> None: ...


class Invoker(Protocol):
    """What every invoker does; optional capabilities are the protocols below."""

    def invoke(self, due: float, done: Done) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class Counts(Protocol):
    """An invoker that counts over its life (retries, connections opened, billing, peaks)."""

    def counters(self) -> dict[str, float]:
        """Cumulative counters since the invoker was made (see the module docstring)."""
        ...


@runtime_checkable
class Prepares(Protocol):
    """An invoker that gets ready for its window (opens connections) before the first due request."""

    def prepare(self, rate: float, max_in_flight: int, start_at: float, end_at: float) -> None: ...


@runtime_checkable
class CountsConnections(Protocol):
    """An invoker that times each new connection (connect + TLS handshake, µs): the connect histogram."""

    def connect_times(self) -> Sequence[int]: ...


@runtime_checkable
class ReportsIds(Protocol):
    """An invoker that can say, during the ``done`` call of the request due at ``due``, which ids it
    carried: (the trace id fnbench sent or "", the platform's request id or "").  Asked only for the
    slowest requests, so it may parse what it kept of the response; ("", "") when it kept nothing of
    that request."""

    def request_ids(self, due: float) -> tuple[str, str]: ...


@runtime_checkable
class Traces(Protocol):
    """An invoker that sends trace context (W3C traceparent, X-Amzn-Trace-Id) on this share of its
    requests (0: none, the default: the bytes on the wire stay as they were)."""

    trace_ratio: float


@runtime_checkable
class ReportsFailure(Protocol):
    """An invoker that can learn during a run that its target cannot work at all (the Lambda function
    does not exist): ``failure`` says why (empty while all is well); the shard then stops and is failed."""

    failure: str


Factory = Callable[[Target, str, int], Invoker]
Problems = Iterable[tuple[str, str]]  # (field of the target, message): the spec prefixes targets[i].


def _no_problems(target: Any, cold_start: bool) -> Problems:
    return ()


def _no_address(target: Any) -> dict[str, Any]:
    return {}


def _no_refusals(target: Target) -> Problems:
    return ()


@dataclass(frozen=True)
class Platform:
    """One platform, declared by its module; the registry, spec, plan and workers read only this.

    ``fields``       a pydantic model of the target keys this platform adds to a spec (flat, beside
                     the common ones: name, runtime, platform, url, method, headers, body, timeout,
                     workload, tls_verify); its own defaults and bounds.  Every target accepts
                     every platform's keys (as before); only this platform reads them.
    ``problems``     ``(target spec, cold_start enabled) -> (field, message)…``: the checks of a
                     valid-typed target of this platform (validate time, no network).
    ``address``      ``target spec -> dict``: the task's ``Target.address`` (plain JSON values).
    ``refusals``     ``Target -> (field, message)…``: the operator's limits (FNBENCH_ALLOWED_TARGETS,
                     workers.limits.host_refusals) for this target; raise SetupError when only the
                     worker can tell (an unresolved ``${env:NAME}``).  The worker refuses a shard
                     with any; ``fnbench validate``/``run`` show them at targets[i].<field>.
    ``make_invoker`` ``(target, phase, max_in_flight) -> Invoker``; an invoker's optional
                     capabilities are the protocols ``Counts``, ``Prepares``, ``CountsConnections``.
    ``cold_starts``  it can force cold starts (the spec's ``cold_start`` phase).
    ``billed``       its invocations are billed per GB-s: the planner puts a ``price`` (from
                     orchestrator/analysis/cost.py, by the address's region and architecture) in
                     the address.
    """

    name: str
    make_invoker: Factory
    fields: type[BaseModel] | None = None
    problems: Callable[[Any, bool], Problems] = _no_problems
    address: Callable[[Any], dict[str, Any]] = _no_address
    refusals: Callable[[Target], Problems] = _no_refusals
    cold_starts: bool = False
    billed: bool = False


BUILTIN: tuple[str, ...] = (
    "workers.platforms.signed_http:PLATFORM",  # workers.platforms.http's, signing targets with sigv4
    "workers.platforms.local:PLATFORM",
    "workers.platforms.aws_lambda:PLATFORM",
)
PLUGINS_ENV = "FNBENCH_PLATFORMS"
# name → Platform, filled on first use (built-ins, then FNBENCH_PLATFORMS, then register()).
PLATFORMS: dict[str, Platform] = {}
_loaded: list[str] = []  # the FNBENCH_PLATFORMS value the registry was loaded with


def _load(ref: str, where: str) -> Platform:
    module, _, attr = ref.strip().partition(":")
    if not module or not attr:
        raise SetupError(f"{where}: {ref!r} is not module:attribute (e.g. mypkg.myplatform:PLATFORM)")
    try:
        found = getattr(importlib.import_module(module), attr)
    except ImportError as exc:
        raise SetupError(f"{where}: cannot import {module!r}: {exc}") from None
    except AttributeError:
        raise SetupError(f"{where}: module {module!r} has no {attr!r}") from None
    if not isinstance(found, Platform):
        raise SetupError(f"{where}: {ref!r} is a {type(found).__name__}, not a workers.platforms.Platform")
    return found


def register(platform: Platform) -> Platform:
    """Add a platform to this process's registry (worker processes started from here do not see
    it: name its module in FNBENCH_PLATFORMS for those).  A name already taken is a SetupError."""
    known = registry()
    if platform.name in known and known[platform.name] is not platform:
        raise SetupError(f"platform {platform.name!r} is already registered")
    known[platform.name] = platform
    return platform


def registry() -> dict[str, Platform]:
    """Every platform this process knows, built-ins first; a bad FNBENCH_PLATFORMS is a SetupError."""
    plugins = os.environ.get(PLUGINS_ENV, "")
    if _loaded == [plugins]:
        return PLATFORMS
    for ref in BUILTIN:
        p = _load(ref, "built-in platform")
        PLATFORMS.setdefault(p.name, p)
    for ref in (r for r in plugins.split(",") if r.strip()):
        p = _load(ref, PLUGINS_ENV)
        if PLATFORMS.get(p.name, p) is not p:
            raise SetupError(f"{PLUGINS_ENV}: {ref.strip()!r} declares platform {p.name!r}, which is already registered")
        PLATFORMS[p.name] = p
    _loaded[:] = [plugins]
    return PLATFORMS


def get(name: str) -> Platform | None:
    return registry().get(name)


def counters_of(invoker: object) -> dict[str, float]:
    """``invoker.counters()``, or nothing for an invoker that counts nothing."""
    return invoker.counters() if isinstance(invoker, Counts) else {}


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
    """The invoker for a target's platform, from the registry; an unknown one is a SetupError."""
    known = registry()
    platform = known.get(target.platform)
    if platform is None:
        raise SetupError(f"target {target.name!r}: platform {target.platform!r} is not supported by this worker "
                         f"(supported: {', '.join(sorted(known))})")
    return platform.make_invoker(target, phase, max_in_flight)
