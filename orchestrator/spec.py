"""YAML → validated Benchmark.  Every problem is collected and reported with its YAML path.

Durations accept seconds (``30``) or suffixed strings (``250ms``, ``30s``, ``5m``, ``1h``).
Unknown keys are errors: a typo in a soak-test spec should not silently fall back to a default.
"""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from orchestrator.errors import SpecError
from workers import arrivals

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 5m or 250ms")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
    raise ValueError(f"expected a duration like 30s, 5m or 250ms, got {value!r}")


Duration = Annotated[float, BeforeValidator(parse_duration)]
Runtime = Literal["rust", "go", "node", "python", "java", "other"]
Platform = Literal["http", "local", "aws-lambda"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TargetSpec(_Model):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    runtime: Runtime = "other"
    platform: Platform = "http"
    url: str = ""
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "POST"
    headers: dict[str, str] = {}
    body: Any = None  # a mapping/list is sent as JSON; a string as is
    timeout: Duration = 10.0
    workload: str = ""
    tls_verify: bool = True
    function: str = ""  # aws-lambda: function name
    qualifier: str = ""
    instances: int = Field(default=1, ge=1, le=256)  # local: warm processes to spread requests over

    def body_text(self) -> str:
        if self.body is None:
            return ""
        if isinstance(self.body, str):
            return self.body
        return orjson.dumps(self.body).decode()


class StepSpec(_Model):
    duration: Duration
    rps: float = Field(ge=0)


class LoadSpec(_Model):
    executor: Literal["constant", "ramp", "steps", "poisson"] = "constant"
    rps: float | None = None
    from_rps: float | None = None
    to_rps: float | None = None
    over: Duration | None = None
    steps: list[StepSpec] = []
    max_in_flight: int = Field(default=256, ge=1, le=100_000)
    queue_limit: int = Field(default=10_000, ge=0, le=10_000_000)


class ColdStartSpec(_Model):
    enabled: bool = False
    invocations: int = Field(default=20, ge=1)
    rps: float = Field(default=2.0, gt=0)


class SloSpec(_Model):
    target: str = "*"
    metric: str
    max: float | None = None
    min: float | None = None


class ShardingSpec(_Model):
    max_rps_per_shard: float = Field(default=5000, gt=0)
    slice: Duration = 300.0


class Benchmark(_Model):
    name: str = Field(min_length=1)
    regions: list[str] = ["local"]
    targets: list[TargetSpec] = Field(min_length=1)
    load: LoadSpec = LoadSpec()
    duration: Duration = 30.0
    warmup: Duration = 0.0
    cold_start: ColdStartSpec = ColdStartSpec()
    slos: list[SloSpec] = []
    sharding: ShardingSpec = ShardingSpec()
    flush_interval: Duration = 5.0
    seed: int = 1

    def schedule(self) -> arrivals.Schedule:
        """The per-target, per-region arrival schedule of the measured phase."""
        return arrivals.from_dict(_schedule_dict(self.load, self.duration))


SLO_METRICS = {
    f"{kind}.{stat}"
    for kind in ("response_ms", "service_ms", "send_lag_ms")
    for stat in ("p50", "p90", "p99", "p999", "max", "mean")
} | {"error_rate", "achieved_rps"}


def _schedule_dict(load: LoadSpec, duration: float) -> dict[str, Any]:
    f = lambda x: Fraction(str(x))  # noqa: E731 - exact decimal → fraction
    if load.executor in ("constant", "poisson"):
        return {"kind": load.executor, "rps": f(load.rps or 0)}
    if load.executor == "ramp":
        return {
            "kind": "ramp",
            "from_rps": f(load.from_rps or 0),
            "to_rps": f(load.to_rps or 0),
            "over_s": f(load.over if load.over is not None else duration),
        }
    return {"kind": "steps", "steps": [{"duration_s": f(s.duration), "rps": f(s.rps)} for s in load.steps]}


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _semantic_problems(b: Benchmark) -> list[str]:
    problems: list[str] = []
    if b.duration <= 0:
        problems.append(f"duration: must be > 0, got {b.duration:g}")
    if b.warmup < 0:
        problems.append("warmup: must be >= 0")
    if b.flush_interval < 0.1:
        problems.append("flush_interval: must be at least 100ms")
    if b.sharding.slice < 1:
        problems.append("sharding.slice: must be at least 1s")
    seen: dict[str, int] = {}
    for i, t in enumerate(b.targets):
        if t.name in seen:
            problems.append(f"targets[{i}].name: {t.name!r} is already used by targets[{seen[t.name]}]")
        seen.setdefault(t.name, i)
        if t.platform == "http":
            # The encoder's own rules (no CR/LF in headers, no spaces in the URL, …).
            from workers.platforms.http import request_problems

            for field, msg in request_problems(t.url, t.method, list(t.headers.items())):
                problems.append(f"targets[{i}].{field}: {msg}")
        if t.platform == "local":
            from orchestrator.functions import RUNTIMES, WORKLOADS

            if t.runtime not in RUNTIMES:
                problems.append(f"targets[{i}].runtime: the local platform runs {', '.join(RUNTIMES)}, not {t.runtime!r}")
            if t.workload not in WORKLOADS:
                problems.append(f"targets[{i}].workload: one of {', '.join(WORKLOADS)} (functions/CONTRACT.md), got {t.workload!r}")
        if t.platform == "aws-lambda" and not t.function:
            problems.append(f"targets[{i}].function: the aws-lambda platform needs a function name")
        if t.timeout <= 0:
            problems.append(f"targets[{i}].timeout: must be > 0")
        if b.cold_start.enabled and t.platform == "http":
            problems.append(
                f"targets[{i}].platform: cold_start needs a platform that can make cold starts "
                "(local or aws-lambda); plain http endpoints cannot be made cold"
            )
    if len(set(b.regions)) != len(b.regions):
        problems.append("regions: duplicate region names")
    for i, r in enumerate(b.regions):
        if not re.match(r"^[a-z0-9-]+$", r):
            problems.append(f"regions[{i}]: {r!r} must be lower-case letters, digits and dashes")
    load = b.load
    needs = {"constant": ["rps"], "poisson": ["rps"], "ramp": ["from_rps", "to_rps"], "steps": ["steps"]}
    missing = [k for k in needs[load.executor] if getattr(load, k) in (None, [])]
    for k in missing:
        problems.append(f"load.{k}: required by executor {load.executor!r}")
    if not missing:
        for field, msg in b.schedule().validate():
            problems.append(f"load.{field}: {msg}")
    names = {t.name for t in b.targets}
    for i, slo in enumerate(b.slos):
        if slo.target != "*" and slo.target not in names:
            problems.append(f"slos[{i}].target: no target named {slo.target!r}")
        if slo.metric not in SLO_METRICS:
            problems.append(f"slos[{i}].metric: unknown metric {slo.metric!r}; one of {', '.join(sorted(SLO_METRICS))}")
        if slo.max is None and slo.min is None:
            problems.append(f"slos[{i}]: give max or min")
    return problems


def load_text(text: str, source: str = "<spec>") -> Benchmark:
    """Parse and validate; raises SpecError listing every problem with its path."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(source, [f"not valid YAML: {exc}"]) from exc
    if not isinstance(data, dict):
        raise SpecError(source, ["(top level): expected a mapping with name, targets, load, …"])
    try:
        bench = Benchmark.model_validate(data)
    except ValidationError as exc:
        problems = [f"{_path(e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise SpecError(source, problems) from None
    problems = _semantic_problems(bench)
    if problems:
        raise SpecError(source, problems)
    return bench


def load(path: str | Path) -> Benchmark:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise SpecError(str(p), [f"cannot read the spec: {exc.strerror}"]) from exc
    return load_text(text, str(p))


def allow_list_problems(b: Benchmark) -> list[str]:
    """The workers' allow-list (FNBENCH_ALLOWED_TARGETS, default loopback) applied here, so a spec whose
    targets a worker would refuse says so before any load.  Not part of load(): `report` of an old
    run must still read its spec.  Each problem has its YAML path, like _semantic_problems."""
    from workers.limits import spec_problems

    return spec_problems(b.targets)
