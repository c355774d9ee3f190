"""The typed result of a run: frozen dataclasses with one JSON codec and a ``schema_version``.

``collect`` builds a RunResult; ``compare``, the terminal report, the live view, SLO evaluation
and ``fnbench report`` read its fields.  ``result.json`` is ``RunResult.to_dict()``; the keys are
those fnbench has always written (version 1 files had no ``schema_version`` and load as such).
Fields that platforms fill beyond latency (billed and platform duration, max memory used, cost)
are there and stay ``None`` until a platform reports them; ``None`` optional fields are left
out of the JSON.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from workers.contract import ERROR_OUTCOMES
from workers.errors import InputError
from workers.histograms import Summary

RESULT_SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
EMPTY = Summary()
MAX_THROTTLE_ROWS = 12  # windows Group.throttle_windows splits a run into


@dataclass(frozen=True, slots=True)
class Group:
    """One measured group: region × target × phase (warm or cold)."""

    region: str
    target: str
    runtime: str
    phase: str
    workload: str = ""
    intended: int = 0
    sent: int = 0
    completed: int = 0
    achieved_rps: float = 0.0  # successful responses per second of the window
    intended_rps: float = 0.0
    error_rate: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    out_of_range: int = 0
    peak_in_flight: int = 0
    seconds: float = 0.0
    response_ms: Summary = EMPTY
    service_ms: Summary = EMPTY
    send_lag_ms: Summary = EMPTY
    init_ms: Summary | None = None  # the function's own init time, cold starts only
    cold_starts: int = 0
    peak_rss_mb: float | None = None
    retries: int = 0  # keep-alive connections found closed and resent once
    connect_ms: Summary | None = None  # TCP connect + TLS handshake of each new connection
    connections_opened: int = 0  # by the measured shards (warm-up connections carried over are not counted again)
    connections_before_start: int = 0  # of those, ready before the shard's first due request
    tls_resumed: int = 0  # of those, TLS connections that resumed a session (no full handshake)
    series: tuple[tuple[int, int, int, int], ...] = ()  # (second, intended, completed, errors)
    # Filled by platforms that report them (AWS Lambda REPORT lines, pricing); None until then.
    platform_ms: Summary | None = None  # the platform's Duration
    billed_ms: Summary | None = None
    init_duration_ms: Summary | None = None  # the platform's Init Duration
    # Response streaming (aws-lambda invoke_mode: stream): due time → first payload byte, → end of
    # the stream, and the payload bytes streamed.
    ttfb_ms: Summary | None = None
    ttlb_ms: Summary | None = None
    stream_bytes: int = 0
    max_memory_used_mb: float | None = None
    cost_per_million_usd: float | None = None
    cost: dict[str, Any] | None = None  # orchestrator/analysis/cost.py group_cost: GB-s, run cost, per million, cold vs warm
    reports_missing: int = 0  # invocations whose REPORT was missing from the log tail (counted, never guessed)
    reports_truncated: int = 0  # … cut by the 4 KB tail or lacking a field
    # "failed": the target could not be set up on a worker (a function that does not start, a Lambda
    # function that does not exist, a refusal); ``failure`` says why.  What was measured is kept.
    status: str = "ok"
    failure: str | None = None
    # The K slowest requests over the run (workers.contract.Interval.slowest records, slowest first),
    # and those of each minute: ({"minute": epoch of its start, "requests": [...]}, ...) in time order.
    slowest: tuple[dict[str, Any], ...] = ()
    slowest_by_minute: tuple[dict[str, Any], ...] = ()
    # 429s by the platform's Reason (AWS Lambda's TooManyRequestsException), over the run and per
    # second of the run: ((epoch second, {Reason: count}), ...) for the seconds that had any.
    throttled_by_reason: dict[str, int] = field(default_factory=dict)
    throttle_series: tuple[tuple[int, dict[str, int]], ...] = ()

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    @property
    def ok(self) -> int:
        return self.outcomes.get("ok", 0)

    @property
    def errors(self) -> int:
        return sum(n for k, n in self.outcomes.items() if k in ERROR_OUTCOMES)

    @property
    def error_outcomes(self) -> dict[str, int]:
        return {k: n for k, n in self.outcomes.items() if k in ERROR_OUTCOMES}

    def throttle_windows(self, rows: int = MAX_THROTTLE_ROWS) -> list[dict[str, Any]]:
        """The group's run in at most ``rows`` equal windows of whole seconds: offered and ok per second
        and the 429s by Reason in each (how a ramp meets reserved concurrency, the account's limit or the
        scaling rate)."""
        if not self.series:
            return []
        first, last = self.series[0][0], self.series[-1][0]
        width = max(1, -(-(last - first + 1) // rows))
        windows: dict[int, dict[str, Any]] = {}

        def window(second: int) -> dict[str, Any]:
            start = first + (second - first) // width * width
            return windows.setdefault(start, {"start_s": start - first, "seconds": width, "intended": 0, "ok": 0,
                                              "throttled": {}})

        for second, intended, completed, errors in self.series:
            w = window(second)
            w["intended"] += intended
            w["ok"] += completed - errors
        for second, counts in self.throttle_series:
            w = window(max(first, min(second, last)))
            for reason, n in counts.items():
                w["throttled"][reason] = w["throttled"].get(reason, 0) + n
        return [windows[k] for k in sorted(windows)]

    def metric(self, name: str) -> float | None:
        """An SLO metric: ``error_rate``, ``achieved_rps``, ``cost_per_million_usd`` or
        ``<histogram>.<stat>`` (response_ms.p99, platform_ms.p99); None where the group has none."""
        if name in ("error_rate", "achieved_rps"):
            return float(getattr(self, name))
        if name == "cost_per_million_usd":
            return self.cost_per_million_usd
        kind, _, stat = name.partition(".")
        summary = getattr(self, kind, None)
        if not isinstance(summary, Summary):
            return None
        return summary.stat(stat)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "region": self.region, "target": self.target, "runtime": self.runtime, "phase": self.phase,
            "workload": self.workload, "intended": self.intended, "sent": self.sent, "completed": self.completed,
            "achieved_rps": self.achieved_rps, "intended_rps": self.intended_rps, "error_rate": self.error_rate,
            "outcomes": dict(self.outcomes), "out_of_range": self.out_of_range,
            "peak_in_flight": self.peak_in_flight, "seconds": self.seconds,
            "response_ms": self.response_ms.to_dict(), "service_ms": self.service_ms.to_dict(),
            "send_lag_ms": self.send_lag_ms.to_dict(),
        }
        if self.init_ms is not None:
            d["init_ms"] = self.init_ms.to_dict()
        if self.cold_starts:
            d["cold_starts"] = self.cold_starts
        if self.peak_rss_mb:
            d["peak_rss_mb"] = self.peak_rss_mb
        if self.retries:
            d["retries"] = self.retries
        if self.connect_ms is not None:
            d["connect_ms"] = self.connect_ms.to_dict()
        for name in ("connections_opened", "connections_before_start", "tls_resumed"):
            if getattr(self, name):
                d[name] = getattr(self, name)
        for name in ("platform_ms", "billed_ms", "init_duration_ms", "ttfb_ms", "ttlb_ms"):
            value = getattr(self, name)
            if value is not None:
                d[name] = value.to_dict()
        if self.stream_bytes:
            d["stream_bytes"] = self.stream_bytes
        for name in ("max_memory_used_mb", "cost_per_million_usd", "cost"):
            if getattr(self, name) is not None:
                d[name] = getattr(self, name)
        for name in ("reports_missing", "reports_truncated"):
            if getattr(self, name):
                d[name] = getattr(self, name)
        if self.failed:
            d["status"] = self.status
            d["failure"] = self.failure or ""
        if self.throttled_by_reason:
            d["throttled_by_reason"] = dict(self.throttled_by_reason)
            d["throttle_series"] = [[t, dict(c)] for t, c in self.throttle_series]
        if self.slowest:
            d["slowest"] = list(self.slowest)
            d["slowest_by_minute"] = list(self.slowest_by_minute)
        d["series"] = [list(s) for s in self.series]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Group:
        values: dict[str, Any] = {f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d}
        for name in ("response_ms", "service_ms", "send_lag_ms"):
            values[name] = Summary.from_dict(d.get(name))
        for name in ("init_ms", "connect_ms", "platform_ms", "billed_ms", "init_duration_ms", "ttfb_ms", "ttlb_ms"):
            values[name] = Summary.from_dict(d[name]) if d.get(name) is not None else None
        values["series"] = tuple((int(s[0]), int(s[1]), int(s[2]), int(s[3])) for s in d.get("series", []))
        values["slowest"] = tuple(r for r in d.get("slowest", ()) if isinstance(r, dict))
        values["throttled_by_reason"] = {str(k): int(v) for k, v in (d.get("throttled_by_reason") or {}).items()}
        values["throttle_series"] = tuple((int(t), {str(k): int(v) for k, v in c.items()})
                                          for t, c in d.get("throttle_series") or () if isinstance(c, dict))
        values["slowest_by_minute"] = tuple(m for m in d.get("slowest_by_minute", ()) if isinstance(m, dict))
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Gap:
    """Seconds of a shard's window in which no load was generated, and why."""

    region: str
    shard: str
    target: str
    seconds: float
    reason: str
    attempt: int | None = None
    abandoned: bool = False
    redispatched_at: float | None = None
    redispatch_delay_s: float | None = None
    start: float | None = None  # epoch seconds the gap began (the end of what was measured), where known
    late_start_s: float | None = None  # of ``seconds``: how late the re-dispatched remainder began after redispatched_at
    # The shard's phase and the planned requests of the gap that no attempt sent (the plan's expected
    # count over the gap); SLOs of the group count them (compare.slo_verdicts).  None: not known.
    phase: str | None = None
    unsent: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: v for k, v in d.items() if v is not None and not (k == "abandoned" and not v)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Gap:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True, slots=True)
class SloVerdict:
    target: str
    region: str
    phase: str
    metric: str
    max: float | None
    min: float | None
    value: float | None
    passed: bool
    no_data: bool = False  # the group completed no request (or has no value of the metric): NO DATA, a failure
    # Planned requests of the group that were never sent (gaps with no attempt: a lost region, a worker
    # with the wrong key) and the group's plan (intended + unsent).  error_rate and achieved_rps are
    # judged on the plan; any other metric of a group with unsent load is PARTIAL, not a pass.
    unsent: int = 0
    planned: int | None = None

    @property
    def partial(self) -> bool:
        """Judged on part of the plan: the measured value met its bound, but planned load was never sent."""
        return self.unsent > 0 and not self.passed and not self.no_data and self.value is not None and \
            (self.max is None or self.value <= self.max) and (self.min is None or self.value >= self.min)

    @property
    def word(self) -> str:
        return "NO DATA" if self.no_data else "PASS" if self.passed else "PARTIAL" if self.partial else "FAIL"

    def to_dict(self) -> dict[str, Any]:
        d = {"target": self.target, "region": self.region, "phase": self.phase, "metric": self.metric,
             "max": self.max, "min": self.min, "value": self.value, "pass": self.passed}
        if self.no_data:
            d["no_data"] = True
        if self.unsent:
            d["unsent"] = self.unsent
            d["planned"] = self.planned
            if self.partial:
                d["partial"] = True
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SloVerdict:
        return cls(d["target"], d["region"], d["phase"], d["metric"], d.get("max"), d.get("min"), d.get("value"),
                   bool(d["pass"]), bool(d.get("no_data", False)), int(d.get("unsent") or 0), d.get("planned"))


@dataclass(frozen=True, slots=True)
class RegionStart:
    started: float
    after_first_s: float


MAX_BAD_REASONS = 20  # reasons kept for records left out; the count is exact


@dataclass
class BadRecords:
    """Records left out because they could not be read (not an Interval, a histogram that does not
    decode within bounds, …): counted, with the first reasons, never fatal (DESIGN.md §4.6)."""

    count: int = 0
    reasons: list[str] = field(default_factory=list)

    def add(self, reason: str) -> None:
        self.count += 1
        if len(self.reasons) < MAX_BAD_REASONS:
            self.reasons.append(reason if len(reason) <= 300 else reason[:297] + "...")

    def extend(self, count: int, reasons: Any) -> None:
        self.count += count
        room = MAX_BAD_REASONS - len(self.reasons)
        self.reasons.extend(list(reasons)[:max(room, 0)])


@dataclass(frozen=True, slots=True)
class RunResult:
    run_id: str
    groups: tuple[Group, ...] = ()
    warmup_intended: int = 0
    warmup_completed: int = 0
    gaps: tuple[Gap, ...] = ()
    slo: tuple[SloVerdict, ...] = ()
    duplicates_dropped: int = 0
    errors: tuple[str, ...] = ()
    name: str | None = None
    interrupted: bool = False
    incomplete: bool = False  # something measured could not be kept (see errors)
    start_at: float | None = None
    shards: int | None = None
    workers: int | None = None  # local worker processes
    broker: bool = False  # distributed: shards ran on `fnbench worker`s
    processes: dict[str, int] | None = None  # distributed: worker processes per region at the start
    regions: dict[str, RegionStart] | None = None  # distributed: first load per region
    start_skew_s: float | None = None
    dispatch_s: float | None = None
    redispatched: int | None = None
    state: str | None = None
    aborted_by: dict[str, Any] | None = None  # the abort_on_fail SLO that stopped the run, and when (compare.SloAbort)
    sweep: dict[str, Any] | None = None  # a memory sweep's curves and cheapest sizes (orchestrator/analysis/sweep.py)
    bad_records: int = 0  # records left out as unreadable (BadRecords); the result is partial (exit 3)
    bad_record_reasons: tuple[str, ...] = ()
    schema_version: int = RESULT_SCHEMA_VERSION

    @property
    def slo_failed(self) -> bool:
        return any(not v.passed for v in self.slo)

    @property
    def failed_groups(self) -> tuple[Group, ...]:
        return tuple(g for g in self.groups if g.failed)

    @property
    def expired_shards(self) -> int:
        return sum(1 for g in self.gaps if g.reason.startswith("expired"))

    @property
    def lost_shards(self) -> int:
        """Shards whose window (or its rest) no attempt covered: expired, abandoned or never run.
        A re-dispatched remainder's short gap is reported but does not count here."""
        return sum(1 for g in self.gaps if g.abandoned or g.reason.startswith(("expired", "never ran")))

    def group(self, target: str, phase: str = "warm", region: str | None = None) -> Group:
        for g in self.groups:
            if g.target == target and g.phase == phase and (region is None or g.region == region):
                return g
        raise KeyError((target, phase, region))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "schema_version": self.schema_version,
            "run_id": self.run_id,
            "groups": [g.to_dict() for g in self.groups],
            "warmup": {"intended": self.warmup_intended, "completed": self.warmup_completed},
            "gaps": [g.to_dict() for g in self.gaps],
            "slo": [v.to_dict() for v in self.slo],
            "duplicates_dropped": self.duplicates_dropped,
            "errors": list(self.errors),
            "interrupted": self.interrupted,
        }
        if self.incomplete:
            d["incomplete"] = True
        if self.bad_records:
            d["bad_records"] = {"count": self.bad_records, "reasons": list(self.bad_record_reasons)}
        if self.aborted_by is not None:
            d["aborted_by"] = dict(self.aborted_by)
        if self.sweep is not None:
            d["sweep"] = self.sweep
        for name in ("name", "start_at", "shards", "workers", "processes", "start_skew_s", "dispatch_s",
                     "redispatched", "state"):
            value = getattr(self, name)
            if value is not None:
                d[name] = value
        if self.broker:
            d["broker"] = True
            d["regions"] = {r: {"started": s.started, "after_first_s": s.after_first_s}
                            for r, s in (self.regions or {}).items()}
            d.setdefault("start_skew_s", None)
        return d

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "result") -> RunResult:
        version = d.get("schema_version", 1)
        if version not in READABLE_VERSIONS:
            raise InputError(f"{source}: result schema_version {version!r}; this fnbench reads versions "
                             f"{', '.join(map(str, READABLE_VERSIONS))}")
        try:
            warmup = d.get("warmup") or {}
            regions = d.get("regions")
            return cls(
                run_id=d["run_id"],
                groups=tuple(Group.from_dict(g) for g in d.get("groups", [])),
                warmup_intended=int(warmup.get("intended", 0)),
                warmup_completed=int(warmup.get("completed", 0)),
                gaps=tuple(Gap.from_dict(g) for g in d.get("gaps", [])),
                slo=tuple(SloVerdict.from_dict(v) for v in d.get("slo", [])),
                duplicates_dropped=int(d.get("duplicates_dropped", 0)),
                errors=tuple(d.get("errors", [])),
                name=d.get("name"),
                interrupted=bool(d.get("interrupted", False)),
                incomplete=bool(d.get("incomplete", False)),
                start_at=d.get("start_at"),
                shards=d.get("shards"),
                workers=d.get("workers"),
                broker=bool(d.get("broker", False)),
                processes=d.get("processes"),
                regions={r: RegionStart(v["started"], v["after_first_s"]) for r, v in regions.items()} if regions else None,
                start_skew_s=d.get("start_skew_s"),
                dispatch_s=d.get("dispatch_s"),
                redispatched=d.get("redispatched"),
                state=d.get("state"),
                aborted_by=d.get("aborted_by"),
                sweep=d.get("sweep"),
                bad_records=int((d.get("bad_records") or {}).get("count", 0)),
                bad_record_reasons=tuple(str(r) for r in (d.get("bad_records") or {}).get("reasons", [])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{source}: not a result of schema_version {version}: {exc!r}") from None

    @classmethod
    def load(cls, path: Path) -> RunResult:
        try:
            data = orjson.loads(path.read_bytes())
        except OSError as exc:
            raise InputError(f"{path}: cannot read: {exc.strerror}") from None
        except orjson.JSONDecodeError as exc:
            raise InputError(f"{path}: not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise InputError(f"{path}: not a result (expected a JSON object)")
        return cls.from_dict(data, str(path))
