"""The plain records that cross process and host boundaries: Target, Shard, Interval, Outcome.

Every record is a frozen dataclass with a JSON codec (orjson) and a ``schema_version``;
Celery and the local process pool carry exactly these bytes, never pickles.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import IntEnum
from fractions import Fraction
from typing import Any

import orjson

from workers.errors import InputError

SCHEMA_VERSION = 1
SLOWEST_DEFAULT = 5  # Shard.slowest: the K slowest requests of each interval
SLOWEST_MAX = 100  # the most an interval may carry (a record from the store is checked against it)
SLOW_REPORT_FIELDS = ("duration_ms", "billed_ms", "memory_mb", "max_memory_mb", "init_ms", "restore_ms")


class SchemaError(InputError, ValueError):
    """A record could not be decoded: wrong schema_version or missing fields."""


class Outcome(IntEnum):
    """What happened to one request; exactly one per request, never raised."""

    ok = 0
    http_4xx = 1
    http_5xx = 2
    timeout = 3
    connect_error = 4
    reset = 5  # the peer closed or reset the connection before the response was complete
    throttled = 6  # HTTP 429 or the platform's throttling error
    function_error = 7
    dropped = 8  # due while max_in_flight was reached and the wait queue was full
    other = 9
    # (New outcomes go last: the values index per-process counters; the names are what is stored.)
    http_3xx = 10  # a 3xx answer (a redirect is not followed) that the target's expect_status leaves out
    too_large = 11  # the response's header section or body exceeded the target's bound; the connection is closed


OUTCOME_NAMES: tuple[str, ...] = tuple(o.name for o in Outcome)
# The histograms an Interval carries: recorder name → Interval field (µs) → result name (ms).
HISTOGRAMS: tuple[tuple[str, str, str], ...] = (
    ("response", "response_us", "response_ms"),  # from the due time (CO-correct)
    ("service", "service_us", "service_ms"),  # from the actual send
    ("send_lag", "send_lag_us", "send_lag_ms"),  # generator health
    ("init", "init_us", "init_ms"),  # cold starts: the function's own init time
    ("connect", "connect_us", "connect_ms"),  # each new connection: TCP connect + TLS handshake
    ("platform", "platform_us", "platform_ms"),  # the platform's own Duration (Lambda REPORT)
    ("billed", "billed_us", "billed_ms"),  # Billed Duration (+ Billed Restore Duration)
    ("init_duration", "init_duration_us", "init_duration_ms"),  # the platform's Init Duration (cold starts)
    # Response streaming (aws-lambda invoke_mode: stream), from the due time as response is:
    ("ttfb", "ttfb_us", "ttfb_ms"),  # to the first byte of the function's payload (first PayloadChunk)
    ("ttlb", "ttlb_us", "ttlb_ms"),  # to the end of the stream (InvokeComplete)
)
ERROR_OUTCOMES = frozenset(OUTCOME_NAMES) - {"ok"}


def fraction_to_str(value: Fraction) -> str:
    return f"{value.numerator}/{value.denominator}"


def fraction_from(value: str | int | float | Fraction) -> Fraction:
    if isinstance(value, Fraction):
        return value
    if isinstance(value, float):
        return Fraction(str(value))
    return Fraction(value)


@dataclass(frozen=True, slots=True)
class Target:
    """What to invoke and how; secrets stay as ``${env:NAME}`` references until the worker."""

    name: str
    runtime: str
    platform: str  # local | http | aws-lambda
    url: str = ""
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = ()
    body: str = ""
    timeout_s: float = 10.0
    workload: str = ""
    tls_verify: bool = True
    address: dict[str, Any] = field(default_factory=dict)  # platform-specific: function dir, Lambda name…

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["headers"] = [list(h) for h in self.headers]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Target:
        d = dict(d)
        d["headers"] = tuple((str(k), str(v)) for k, v in d.get("headers", ()))
        return cls(**d)


@dataclass(frozen=True, slots=True)
class Shard:
    """One unit of work: one target, one phase, one slice of time, one share of the rate.

    ``arrival`` is the schedule of the whole group (kind + params, rates as exact fractions)
    already scaled to this shard's share; ``part_offset`` places this shard's arrivals between
    its siblings' (arrival i is due where the scaled cumulative count reaches i + part_offset),
    so the union of a group's shards is exactly the group's schedule.  The shard owns the
    arrivals whose profile offset falls in ``[offset_s, offset_s + duration_s)``.
    """

    run_id: str
    shard_id: str
    region: str
    target: Target
    phase: str  # warm | cold
    arrival: dict[str, Any]
    start_at: float  # epoch seconds of this shard's first instant (profile origin + offset_s)
    duration_s: float
    offset_s: float = 0.0
    part_offset: str = "0/1"  # a fraction in [0, 1); "phase" is warm|cold (records before it: part_phase)
    attempt: int = 0
    max_in_flight: int = 256
    queue_limit: int = 10_000
    flush_interval_s: float = 5.0
    seed: int = 0
    late_bound_s: float = 1.0  # behind schedule by more than this, due arrivals are a gap, never a burst
    warmup: bool = False  # measurements are kept apart and excluded from results
    slowest: int = SLOWEST_DEFAULT  # the K slowest requests each interval keeps (0: none)
    trace_ratio: float = 0.0  # the share of requests sent with trace context (traceparent, X-Amzn-Trace-Id)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["target"] = self.target.to_dict()
        d["schema_version"] = SCHEMA_VERSION
        return d

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Shard:
        _check_version(d, "Shard")
        d = {k: v for k, v in d.items() if k != "schema_version"}
        if "part_phase" in d:  # the name before part_offset
            d.setdefault("part_offset", d.pop("part_phase"))
        d["target"] = Target.from_dict(d["target"])
        return cls(**d)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Shard:
        return cls.from_dict(orjson.loads(raw))

    @property
    def group(self) -> tuple[str, str, str]:
        return (self.region, self.target.name, self.phase)

    @property
    def part_phase(self) -> str:
        """The old name of ``part_offset``, still readable."""
        return self.part_offset


@dataclass(frozen=True, slots=True)
class Interval:
    """Measurements of one shard over [t0, t1): counts and encoded HDR histograms (µs).

    A run's result is exactly the set of its intervals; (shard_id, attempt, seq) is unique.
    """

    run_id: str
    shard_id: str
    attempt: int
    seq: int
    region: str
    target: str
    runtime: str
    phase: str
    t0: float
    t1: float
    intended: int
    sent: int
    completed: int
    outcomes: dict[str, int]
    response_us: str  # base64 HDR histogram, microseconds, from the due time
    service_us: str  # from the actual send
    send_lag_us: str  # send time minus due time
    init_us: str = ""  # cold starts only
    out_of_range: int = 0
    retries: int = 0  # requests resent once after a reused keep-alive connection turned out closed
    peak_in_flight: int = 0  # most requests in flight at once during the interval (records before it: max_in_flight)
    max_memory_mb: float = 0.0
    warmup: bool = False
    final: bool = False  # the shard's last interval
    status: str = "ok"  # ok | expired | stopped | failed (the target could not be set up: see failure)
    gap_s: float = 0.0  # seconds of this shard's window in which no load was generated
    stall_s: float = 0.0  # the part of gap_s lost mid-run: the generator was late beyond its bound (frozen, starved)
    cold_starts: int = 0  # processes or sandboxes started for cold invocations
    workload: str = ""
    started: float = 0.0  # epoch seconds the shard's pacing loop began (its first request is due then); 0: never ran
    counters: dict[str, float] = field(default_factory=dict)  # the invoker's other counters over the interval (connections_opened…)
    connect_us: str = ""  # connect + TLS handshake time of each connection opened in the interval
    platform_us: str = ""  # the platform's Duration of each invocation it reported (Lambda REPORT)
    billed_us: str = ""  # its Billed Duration (+ Billed Restore Duration)
    init_duration_us: str = ""  # the platform's Init Duration, cold invocations only
    ttfb_us: str = ""  # streamed responses: due time → the first payload byte
    ttlb_us: str = ""  # streamed responses: due time → the end of the stream
    failure: str = ""  # status "failed": why (a SetupError or refusal naming the target), else ""
    # The interval's K slowest requests (by response time, any outcome), slowest first: see SlowRequest.
    slowest: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["schema_version"] = SCHEMA_VERSION
        return d

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Interval:
        """The Interval of a record, every field checked (type and range); SchemaError naming the field
        otherwise.  Records cross trust boundaries (a Redis stream, a file): nothing in one may crash a
        reader.  The encoded histograms are checked by ``workers.histograms.check_interval``."""
        if not isinstance(d, dict):
            raise SchemaError(f"an Interval is a JSON object, not {type(d).__name__}")
        _check_version(d, "Interval")
        if "max_in_flight" in d and "peak_in_flight" not in d:  # the name before peak_in_flight
            d = {**d, "peak_in_flight": d["max_in_flight"]}
        # Unknown fields (and retired ones such as billed_ms) are ignored.
        fields = {k: v for k, v in d.items() if k in _INTERVAL_FIELDS}
        missing = _INTERVAL_REQUIRED - fields.keys()
        if missing:
            raise SchemaError(f"Interval without {', '.join(sorted(missing))}")
        for name, value in fields.items():
            problem = _INTERVAL_CHECKS[name](value)
            if problem:
                raise SchemaError(f"Interval.{name}: {problem}")
        return cls(**fields)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Interval:
        try:
            d = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise SchemaError(f"not JSON: {exc}") from None
        return cls.from_dict(d)

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.shard_id, self.attempt, self.seq)

    @property
    def max_in_flight(self) -> int:
        """The old name of ``peak_in_flight``, still readable."""
        return self.peak_in_flight


_INTERVAL_FIELDS = frozenset(f.name for f in dataclasses.fields(Interval))
_INTERVAL_REQUIRED = frozenset(f.name for f in dataclasses.fields(Interval)
                               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
MAX_COUNT = 2**53  # counts of one interval (exact in a float, far beyond any real interval)
MAX_EPOCH_S = 1e11  # t0, t1, started: epoch seconds (year 5138)
MAX_SECONDS = 1e9  # gap_s
MAX_COUNTER = 1e18  # an invoker counter of one interval (cost, GB-s, connections…)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and v not in (float("inf"), float("-inf"))


def _check_count(v: Any) -> str:
    return "" if _is_int(v) and 0 <= v <= MAX_COUNT else f"expected a whole number 0..2^53, got {_shown(v)}"


def _check_range(hi: float) -> Any:
    def check(v: Any) -> str:
        return "" if _is_number(v) and 0 <= v <= hi else f"expected a finite number 0..{hi:g}, got {_shown(v)}"

    return check


def _check_str(v: Any) -> str:
    return "" if isinstance(v, str) else f"expected a string, got {_shown(v)}"


def _check_bool(v: Any) -> str:
    return "" if isinstance(v, bool) else f"expected true or false, got {_shown(v)}"


def _check_outcomes(v: Any) -> str:
    if not isinstance(v, dict):
        return f"expected an object of outcome counts, got {_shown(v)}"
    for k, n in v.items():
        if k not in _OUTCOMES:
            return f"unknown outcome {_shown(k)} (one of {', '.join(OUTCOME_NAMES)})"
        if _check_count(n):
            return f"{k}: {_check_count(n)}"
    return ""


def _check_counters(v: Any) -> str:
    if not isinstance(v, dict):
        return f"expected an object of counters, got {_shown(v)}"
    for k, n in v.items():
        if not (_is_number(n) and abs(n) <= MAX_COUNTER):
            return f"{_shown(k)}: expected a finite number, got {_shown(n)}"
    return ""


def _shown(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


_OUTCOMES = frozenset(OUTCOME_NAMES)
# One of Interval.slowest: the request's due time (epoch s), its response time (from the due time) and
# service time (from the send) in ms, its outcome, and the ids that find it elsewhere: the trace id
# fnbench sent (W3C traceparent / X-Ray Root, 32 hex digits; "" when not sampled), the platform's
# request id (Lambda's x-amzn-RequestId, an HTTP target's request_id_headers) and, for Lambda, the
# numbers of its REPORT line (SLOW_REPORT_FIELDS).
_SLOW_CHECKS: dict[str, Any] = {
    "due": lambda v: _check_range(MAX_EPOCH_S)(v),
    "response_ms": lambda v: _check_range(MAX_SECONDS)(v),
    "service_ms": lambda v: _check_range(MAX_SECONDS)(v),
    "outcome": lambda v: "" if v in _OUTCOMES else f"unknown outcome {_shown(v)}",
    "trace_id": lambda v: "" if isinstance(v, str) and len(v) <= 64 else f"expected a short string, got {_shown(v)}",
    "request_id": lambda v: "" if isinstance(v, str) and len(v) <= 200 else f"expected a string of at most 200 "
                                                                             f"characters, got {_shown(v)}",
    "report": lambda v: _check_report(v),
}


def _check_report(v: Any) -> str:
    if not isinstance(v, dict):
        return f"expected an object of REPORT numbers, got {_shown(v)}"
    for k, n in v.items():
        if k not in SLOW_REPORT_FIELDS or not (_is_number(n) and 0 <= n <= MAX_SECONDS):
            return f"{_shown(k)}: expected one of {', '.join(SLOW_REPORT_FIELDS)} with a number, got {_shown(n)}"
    return ""


def _check_slowest(v: Any) -> str:
    if not isinstance(v, list) or len(v) > SLOWEST_MAX:
        return f"expected a list of at most {SLOWEST_MAX} requests, got {_shown(v)}"
    for i, item in enumerate(v):
        if not isinstance(item, dict) or not {"due", "response_ms", "outcome"} <= item.keys():
            return f"[{i}]: expected an object with due, response_ms and outcome, got {_shown(item)}"
        for k, value in item.items():
            check = _SLOW_CHECKS.get(k)
            problem = f"unknown key {_shown(k)}" if check is None else check(value)
            if problem:
                return f"[{i}].{k}: {problem}"
    return ""


_INTERVAL_CHECKS: dict[str, Any] = {
    **dict.fromkeys(("run_id", "shard_id", "region", "target", "runtime", "phase", "status", "failure", "workload",
                     *(f for _, f, _ in HISTOGRAMS)), _check_str),
    **dict.fromkeys(("attempt", "seq", "intended", "sent", "completed", "out_of_range", "retries", "peak_in_flight",
                     "cold_starts"), _check_count),
    **dict.fromkeys(("t0", "t1", "started"), _check_range(MAX_EPOCH_S)),
    **dict.fromkeys(("gap_s", "stall_s"), _check_range(MAX_SECONDS)),
    "max_memory_mb": _check_range(MAX_SECONDS),
    **dict.fromkeys(("warmup", "final"), _check_bool),
    "outcomes": _check_outcomes,
    "counters": _check_counters,
    "slowest": _check_slowest,
}
assert _INTERVAL_CHECKS.keys() == _INTERVAL_FIELDS, _INTERVAL_FIELDS ^ _INTERVAL_CHECKS.keys()


def _check_version(d: dict[str, Any], kind: str) -> None:
    version = d.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SchemaError(
            f"{kind} has schema_version {version!r}; this fnbench reads version {SCHEMA_VERSION}"
        )
