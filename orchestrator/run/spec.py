"""YAML → validated Benchmark.  Every problem is collected and reported with its YAML path.

Durations accept seconds (``30``) or suffixed strings (``250ms``, ``30s``, ``5m``, ``1h``).
Unknown keys are errors: a typo in a soak-test spec should not silently fall back to a default;
so are duplicate keys.  ``load:`` is the chosen executor's own model (workers/arrivals/).

Bad input never crashes or hangs: the YAML is read with limits (size, nesting, aliases and what
they expand to), every number is finite and bounded (rates, durations: workers.arrivals.base;
shards per run: orchestrator.run.plan), and at most MAX_PROBLEMS problems are listed.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import orjson
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    create_model,
    field_validator,
)

from orchestrator.errors import InputError, SetupError, SpecError
from workers import arrivals, platforms
from workers.arrivals import MAX_RPS, MIN_RPS, Duration
from workers.arrivals import parse_duration as parse_duration  # re-exported: it lived here
from workers.arrivals.base import NotBool
from workers.contract import SLOWEST_DEFAULT, SLOWEST_MAX

# Limits of the YAML itself.  A spec is a page of settings: these are far above any real one and
# far below what takes a machine down (a 600-byte alias bomb expands to gigabytes).
MAX_SPEC_BYTES = 1 << 20  # 1 MiB
MAX_DEPTH = 64  # nesting of mappings and sequences, aliases expanded
MAX_ALIASES = 100  # *name references
MAX_NODES = 200_000  # values in the document, aliases expanded
MAX_PROBLEMS = 50  # problems listed; the rest are counted
MAX_PROBLEM_CHARS = 300  # one problem's text (a 1 MiB key is shown cut)
MAX_INT_DIGITS = 1000  # an integer longer than this is past every bound of a spec (Python refuses 4,300)
Runtime = Literal["rust", "go", "node", "python", "java", "java-cds", "rust-wasm", "rust-wasm-reuse", "other"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TargetCommon(_Model):
    """The keys every target has; each platform adds its own (workers.platforms.Platform.fields)."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.@-]+$")
    runtime: Runtime = "other"
    platform: str = "http"  # one of the registry's platforms (TargetSpec narrows it)
    url: str = ""
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "POST"
    headers: dict[str, str] = {}
    body: Any = None  # a mapping/list is sent as JSON; a string as is
    timeout: Duration = 10.0
    workload: str = ""
    tls_verify: bool = True
    # A memory sweep (orchestrator/analysis/sweep.py) runs the load at each Memory Size in turn (aws-lambda)
    memory_sizes: list[Annotated[int, Field(ge=128, le=10240), NotBool]] = Field(default=[], max_length=64)

    @field_validator("body")
    @classmethod
    def _body_is_json(cls, v: Any) -> Any:
        if v is not None and not isinstance(v, str):
            try:
                orjson.dumps(v)
            except TypeError as exc:  # a YAML set, binary, non-string key, NaN…
                raise ValueError(f"a mapping or list is sent as JSON and this one cannot be: {exc}") from None
        return v

    def body_text(self) -> str:
        if self.body is None:
            return ""
        if isinstance(self.body, str):
            return self.body
        return orjson.dumps(self.body).decode()


def _registry() -> tuple[dict[str, platforms.Platform], SetupError | None]:
    """The platforms this process knows; a broken FNBENCH_PLATFORMS leaves the built-ins and its error
    (raised when a spec is loaded, so that importing this module never fails)."""
    try:
        return dict(platforms.registry()), None
    except SetupError as exc:
        return {k: v for k, v in platforms.PLATFORMS.items()}, exc


PLATFORMS, _PLATFORM_ERROR = _registry()


def _target_model(known: dict[str, platforms.Platform]) -> type[TargetCommon]:
    """The target model: the common keys, ``platform`` one of the registry's, and every platform's own
    keys beside them (a flat mapping in YAML, as before; each platform validates and reads its own)."""
    names: Any = tuple(known)
    fields: dict[str, Any] = {"platform": (Literal[names], "http")}
    owner: dict[str, str] = {}
    for p in known.values():
        for name, info in (p.fields.model_fields if p.fields is not None else {}).items():
            if name in TargetCommon.model_fields or (name in fields and fields[name][0] != info.annotation):
                raise SetupError(f"platform {p.name!r}: target key {name!r} is already "
                                 f"{'a common key' if name in TargetCommon.model_fields else 'declared by ' + repr(owner[name])}")
            fields.setdefault(name, (info.annotation, info))
            owner.setdefault(name, p.name)
    return create_model("TargetSpec", __base__=TargetCommon, **fields)


if TYPE_CHECKING:
    class TargetSpec(TargetCommon):
        def __getattr__(self, name: str) -> Any: ...  # a platform's own keys
else:
    TargetSpec = _target_model(PLATFORMS)


def _executor_of(value: Any) -> str:
    """The tag of a ``load:`` mapping: its executor (default constant).  A non-mapping goes to
    constant, whose model then says it wants a mapping."""
    if isinstance(value, dict):
        name = value.get("executor", "constant")
        return name if isinstance(name, str) and name in arrivals.EXECUTORS else ""
    return getattr(value, "executor", "constant")


if TYPE_CHECKING:
    LoadSpec = arrivals.Executor
else:
    # A discriminated union of every registered executor's own model.
    LoadSpec = Annotated[
        Union[tuple(Annotated[m, Tag(n)] for n, m in arrivals.EXECUTORS.items())],  # noqa: UP007
        Discriminator(
            _executor_of,
            custom_error_type="executor",
            custom_error_message=f"executor: one of {', '.join(arrivals.EXECUTORS)}",
        ),
    ]


# YAML's ``true`` is not 1 (pydantic's lax mode would read it so): numbers refuse booleans.
PositiveRate = Annotated[float, Field(ge=MIN_RPS, le=MAX_RPS, allow_inf_nan=False), NotBool]


class ColdStartSpec(_Model):
    enabled: bool = False
    invocations: Annotated[int, NotBool] = Field(default=20, ge=1, le=1_000_000)
    rps: PositiveRate = 2.0


class SloSpec(_Model):
    target: str = "*"
    phase: Literal["*", "warm", "cold"] = "*"  # which groups: the warm (measured) phase, the cold one, or both
    metric: str
    max: Annotated[float | None, NotBool] = Field(default=None, allow_inf_nan=False)
    min: Annotated[float | None, NotBool] = Field(default=None, allow_inf_nan=False)
    abort_on_fail: bool = False  # stop every region once the SLO fails over the trailing `after` window
    after: Duration = 30.0  # the window an abort_on_fail SLO is evaluated over, during the run


class TracingSpec(_Model):
    """The slowest requests each interval keeps, and trace context on the wire."""

    # The K slowest requests of each interval and group (workers.contract.Interval.slowest): 0 = none.
    slowest: Annotated[int, NotBool] = Field(default=SLOWEST_DEFAULT, ge=0, le=SLOWEST_MAX)
    # The share of requests sent with trace context: W3C traceparent on http targets, X-Amzn-Trace-Id
    # on aws-lambda (0 = none: the bytes on the wire stay as they were; 1 = every request).
    sample: Annotated[float, NotBool] = Field(default=0.0, ge=0.0, le=1.0, allow_inf_nan=False)


class SweepSpec(_Model):
    """How a memory sweep chooses a size (orchestrator/analysis/sweep.py): AWS Lambda Power Tuning's
    strategies.  balanced_weight: 0 = fastest, 1 = cheapest (Power Tuning's balancedWeight)."""

    strategy: Literal["cost", "speed", "balanced"] = "cost"
    balanced_weight: Annotated[float, NotBool] = Field(default=0.5, ge=0.0, le=1.0, allow_inf_nan=False)


class ShardingSpec(_Model):
    max_rps_per_shard: PositiveRate = 5000
    slice: Duration = 300.0


class Benchmark(_Model):
    name: str = Field(min_length=1)
    regions: list[str] = Field(default=["local"], min_length=1)
    targets: list[TargetSpec] = Field(min_length=1)
    load: LoadSpec = arrivals.ConstantLoad()
    duration: Duration = 30.0
    warmup: Duration = 0.0
    cold_start: ColdStartSpec = ColdStartSpec()
    slos: list[SloSpec] = []
    sharding: ShardingSpec = ShardingSpec()
    tracing: TracingSpec = TracingSpec()
    flush_interval: Duration = 5.0
    # A generator behind its schedule by more than this skips what is due (a gap), never bursts it out.
    late_bound: Duration = 1.0
    seed: Annotated[int, NotBool] = Field(default=1, ge=-(2**63), lt=2**63)
    sweep: SweepSpec = SweepSpec()
    # A budget guard (orchestrator/analysis/budget.py): plan, validate and run refuse a plan whose
    # estimate exceeds it; a run stops once the cost its workers counted passes it.
    max_cost_usd: Annotated[float | None, NotBool] = Field(default=None, gt=0, allow_inf_nan=False)
    max_invocations: Annotated[int | None, NotBool] = Field(default=None, ge=1)
    # The billed ms per invocation the estimate assumes; unset: each target's timeout (the worst case).
    expected_billed_ms: Annotated[float | None, NotBool] = Field(default=None, gt=0, allow_inf_nan=False)
    # The Memory Size the estimate assumes where no sweep step gives one; unset: 10,240 MB (the worst case).
    expected_memory_mb: Annotated[int | None, NotBool] = Field(default=None, ge=128, le=10240)

    def schedule(self) -> arrivals.Schedule:
        """The per-target, per-region arrival schedule of the measured phase."""
        return self.load.schedule(self.duration)


SLO_METRICS = {
    f"{kind}.{stat}"
    for kind in ("response_ms", "service_ms", "send_lag_ms")
    for stat in ("p50", "p90", "p99", "p999", "max", "mean")
} | {
    f"{kind}.{stat}"  # the platform's clocks (AWS Lambda REPORT lines)
    for kind in ("platform_ms", "billed_ms", "init_duration_ms", "ttfb_ms", "ttlb_ms")  # (+ streamed responses)
    for stat in ("p50", "p90", "p99", "p999", "max", "mean")
} | {"error_rate", "achieved_rps", "cost_per_million_usd"}


def _path(loc: tuple[Any, ...]) -> str:
    if len(loc) > 1 and loc[0] == "load" and loc[1] in arrivals.EXECUTORS:
        loc = loc[:1] + loc[2:]  # the union's tag is not a YAML key
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
    if not 0.01 <= b.late_bound <= 60:
        problems.append(f"late_bound: must be between 10ms and 60s, got {b.late_bound:g}s")
    if b.sharding.slice < 1:
        problems.append("sharding.slice: must be at least 1s")
    seen: dict[str, int] = {}
    for i, t in enumerate(b.targets):
        if t.name in seen:
            problems.append(f"targets[{i}].name: {t.name!r} is already used by targets[{seen[t.name]}]")
        seen.setdefault(t.name, i)
        platform = PLATFORMS[t.platform]
        problems += [f"targets[{i}].{field}: {msg}" for field, msg in platform.problems(t, b.cold_start.enabled)]
        if t.timeout <= 0:
            problems.append(f"targets[{i}].timeout: must be > 0")
        if t.memory_sizes:
            problems += [f"targets[{i}].{field}: {msg}" for field, msg in sweep_problems(b, t)]
        if b.cold_start.enabled and not platform.cold_starts:
            able = " or ".join(n for n, p in PLATFORMS.items() if p.cold_starts)
            problems.append(
                f"targets[{i}].platform: cold_start needs a platform that can make cold starts "
                f"({able}); plain {t.platform} endpoints cannot be made cold"
            )
    if len(set(b.regions)) != len(b.regions):
        problems.append("regions: duplicate region names")
    for i, r in enumerate(b.regions):
        if not re.match(r"^[a-z0-9-]+$", r):
            problems.append(f"regions[{i}]: {r!r} must be lower-case letters, digits and dashes")
    for field, msg in b.load.problems(b.duration):
        problems.append(f"load.{field}: {msg}")
    names = {t.name for t in b.targets}
    for i, slo in enumerate(b.slos):
        if slo.target != "*" and slo.target not in names:
            problems.append(f"slos[{i}].target: no target named {slo.target!r}")
        if slo.metric not in SLO_METRICS:
            problems.append(f"slos[{i}].metric: unknown metric {slo.metric!r}; one of {', '.join(sorted(SLO_METRICS))}")
        if slo.max is None and slo.min is None:
            problems.append(f"slos[{i}]: give max or min")
        if slo.abort_on_fail and slo.after < max(b.flush_interval, 0.1):
            problems.append(f"slos[{i}].after: must be at least the flush_interval ({b.flush_interval:g}s): "
                            "the SLO is evaluated over whole intervals")
    return problems


def slo_problems(b: Benchmark) -> list[str]:
    """SLOs that cannot give a verdict, or no value can meet, with their YAML paths.  Checked before a run
    (validate, run, schedule), not when an old run's spec is read again for its report."""
    problems: list[str] = []
    for i, slo in enumerate(b.slos):
        if slo.max is not None and slo.min is not None and slo.min > slo.max:
            problems.append(f"slos[{i}]: min ({slo.min:g}) is above max ({slo.max:g}); no value passes")
        for bound in ("max", "min"):
            value = getattr(slo, bound)
            if value is not None and value < 0:
                problems.append(f"slos[{i}].{bound}: {slo.metric} is never negative, so {bound}: {value:g} "
                                f"{'always fails' if bound == 'max' else 'always passes'}; give a bound of 0 or more")
            elif value is not None and slo.metric == "error_rate" and value > 1:
                problems.append(f"slos[{i}].{bound}: error_rate is a fraction from 0 to 1, got {value:g}")
        if slo.phase == "cold" and not b.cold_start.enabled:
            problems.append(f"slos[{i}].phase: the spec has no cold phase (cold_start.enabled is false); "
                            "this SLO would never be judged — enable cold_start or use phase: warm")
    return problems


# -- memory sweeps (orchestrator/analysis/sweep.py runs them): what a spec may ask for ----------
def sizes(b: Benchmark) -> list[int]:
    """The sweep's memory sizes, ascending (empty: not a sweep)."""
    return sorted({m for t in b.targets for m in t.memory_sizes})


def step_name(name: str, size: int) -> str:
    return f"{name}@{size}MB"


def sweep_problems(b: Benchmark, t: TargetSpec) -> list[tuple[str, str]]:
    """(field, message) for one target with memory_sizes (spec validation)."""
    out = []
    if t.platform != "aws-lambda":
        out.append(("memory_sizes", f"a memory sweep sets a Lambda function's Memory Size; platform {t.platform!r} has none"))
    if len(set(t.memory_sizes)) != len(t.memory_sizes):
        out.append(("memory_sizes", "each size once"))
    if t.qualifier.isdigit():
        out.append(("qualifier", f"a memory sweep sets $LATEST's Memory Size; version {t.qualifier} is immutable and "
                                 "would not change (name an alias: each step is published and the alias moved to it)"))
    names = {x.name for x in b.targets}
    for m in t.memory_sizes:
        if step_name(t.name, m) in names:
            out.append(("name", f"{step_name(t.name, m)!r} is the name this target takes at {m} MB; another target has it"))
    if "@" in t.name:
        out.append(("name", "'@' is reserved for the sizes of a memory sweep"))
    others = [i for i, x in enumerate(b.targets) if not x.memory_sizes]
    if others and t is next(x for x in b.targets if x.memory_sizes):
        out.append(("memory_sizes", f"a memory sweep runs every target at each size: targets{others} have no "
                                    "memory_sizes (give them the same list, or run them in a spec of their own)"))
    return out




class _LimitError(yaml.YAMLError):
    """A YAML-level problem found while composing, with the YAML path where it is."""

    def __init__(self, path: str, message: str, mark: Any = None) -> None:
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        super().__init__(f"{path}: {message}{where}")


class _SpecLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys and bounds nesting, aliases and what they expand to
    (a billion-laughs bomb is a few hundred bytes), so loading takes bounded time and memory."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._where: list[Any] = []  # YAML path of the node being composed
        self._open: set[str] = set()  # anchors of the collections being composed
        self._sizes: dict[int, tuple[int, int]] = {}  # id(node) → (values, depth), aliases expanded
        self._aliases = 0

    def _path(self, extra: Any = None) -> str:
        return _path(tuple(self._where) + ((extra,) if extra is not None else ()))

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        pushed = parent is not None  # the root has no path component
        if pushed:  # index: a mapping value's key node, a sequence item's position, None for a key
            self._where.append(index.value if isinstance(index, yaml.ScalarNode)
                               else index if isinstance(index, int) else "(key)")
        if isinstance(event, yaml.AliasEvent):
            try:
                self._aliases += 1
                if self._aliases > MAX_ALIASES:
                    raise _LimitError(self._path(), f"more than {MAX_ALIASES} aliases (*name)", event.start_mark)
                if event.anchor in self._open:
                    raise _LimitError(self._path(), f"alias *{event.anchor} refers to a value that contains it",
                                      event.start_mark)
                return super().compose_node(parent, index)  # undefined aliases are the parser's error
            finally:
                if pushed:
                    self._where.pop()
        try:
            if len(self._where) > MAX_DEPTH:
                raise _LimitError(self._path(), f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
            anchor = getattr(event, "anchor", None)
            if anchor is not None:
                self._open.add(anchor)
            node = super().compose_node(parent, index)
            self._open.discard(anchor)
            self._measure(node)
            return node
        finally:
            if pushed:
                self._where.pop()

    def _measure(self, node: Any) -> None:
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            if node.tag == "tag:yaml.org,2002:int" and len(node.value) > MAX_INT_DIGITS:
                raise _LimitError(self._path(), f"an integer of {len(node.value):,} characters; no setting of a "
                                  f"spec takes a number that long (at most {MAX_INT_DIGITS:,} digits)", node.start_mark)
            self._sizes[id(node)] = (1, 0)
            return
        sizes = [self._sizes.get(id(c), (1, 0)) for c in children]
        count = 1 + sum(n for n, _ in sizes)
        depth = 1 + max((d for _, d in sizes), default=0)
        if count > MAX_NODES:
            raise _LimitError(self._path(), f"expands to more than {MAX_NODES:,} values (aliases included)",
                              node.start_mark)
        if depth + len(self._where) > MAX_DEPTH:
            raise _LimitError(self._path(), f"nested more than {MAX_DEPTH} levels deep (aliases expanded)",
                              node.start_mark)
        self._sizes[id(node)] = (count, depth)

    def compose_mapping_node(self, anchor: Any) -> Any:
        node = super().compose_mapping_node(anchor)
        first: dict[tuple[str, str], Any] = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue
            seen = first.setdefault((key.tag, key.value), key)
            if seen is not key:
                raise _LimitError(self._path(key.value), f"duplicate key {key.value!r} (the first is on line "
                                  f"{seen.start_mark.line + 1}); give each key once", key.start_mark)
        return node


def _printable(problem: str) -> str:
    text = problem if problem.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in problem)
    return text if len(text) <= MAX_PROBLEM_CHARS else text[: MAX_PROBLEM_CHARS - 1] + "…"


def _spec_error(source: str, problems: list[str]) -> SpecError:
    shown = [_printable(p) for p in problems[:MAX_PROBLEMS]]
    if len(problems) > MAX_PROBLEMS:
        shown.append(f"… and {len(problems) - MAX_PROBLEMS:,} more problem(s)")
    return SpecError(source, shown)


def parse_yaml(text: str, source: str = "<spec>") -> Any:
    """The YAML document as plain data, within the limits above; SpecError otherwise."""
    size = len(text.encode("utf-8", "surrogatepass")) if len(text) <= MAX_SPEC_BYTES else len(text)
    if size > MAX_SPEC_BYTES:
        raise _spec_error(source, [f"(top level): the spec is {size:,} bytes; at most {MAX_SPEC_BYTES:,}"])
    loader: _SpecLoader | None = None
    try:
        loader = _SpecLoader(text)  # the reader already rejects control characters
        return loader.get_single_data()
    except _LimitError as exc:
        raise _spec_error(source, [str(exc)]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "(top level)"
        what = " ".join(str(x) for x in (exc.context, exc.problem) if x)
        raise _spec_error(source, [f"{where}: not valid YAML: {what}"]) from None
    except yaml.YAMLError as exc:
        raise _spec_error(source, [f"not valid YAML: {exc}"]) from None
    except (ValueError, OverflowError, RecursionError) as exc:  # e.g. an integer of 5000 digits
        raise _spec_error(source, [f"not valid YAML: {exc}"]) from None
    finally:
        if loader is not None:
            loader.dispose()


def load_text(text: str, source: str = "<spec>") -> Benchmark:
    """Parse and validate; raises SpecError listing every problem with its path."""
    if _PLATFORM_ERROR is not None:
        raise _PLATFORM_ERROR
    data = parse_yaml(text, source)
    if not isinstance(data, dict):
        raise SpecError(source, ["(top level): expected a mapping with name, targets, load, …"])
    try:
        bench = Benchmark.model_validate(data)
    except ValidationError as exc:
        problems = [f"{_path(e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()]
        # Every problem in one pass: the semantic checks run on the spec without the broken fields
        # (defaults in their place), and report what is wrong elsewhere.
        raise _spec_error(source, problems + _semantic_problems_despite(data, exc)) from None
    problems = _semantic_problems(bench)
    if problems:
        raise _spec_error(source, problems)
    return bench


def _semantic_problems_despite(data: dict[str, Any], exc: ValidationError, rounds: int = 5) -> list[str]:
    """The semantic problems of ``data`` once the fields pydantic refused are removed (bounded
    rounds); none that sit at or below a refused path, which is already reported."""
    import copy

    try:
        repaired = copy.deepcopy(data)
    except RecursionError:
        return []
    broken: list[tuple[Any, ...]] = []
    for _ in range(rounds):
        locs = [tuple(e["loc"]) for e in exc.errors()]
        broken += locs
        for loc in locs:
            if not _drop(repaired, loc):
                return []  # a required top-level part is unusable: nothing more to check reliably
        try:
            bench = Benchmark.model_validate(repaired)
        except ValidationError as again:
            exc = again
            continue
        except Exception:
            return []
        shown = {_path(loc) for loc in broken}
        return [p for p in _semantic_problems(bench)
                if not any(p.startswith(b + ":") or p.startswith(b + ".") or p.startswith(b + "[") for b in shown)]
    return []


def _drop(data: Any, loc: tuple[Any, ...]) -> bool:
    """Remove the value at ``loc`` (a pydantic error location); False when that leaves nothing usable."""
    node = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, dict) and part not in node and not last and loc[i + 1] in node:
            continue  # a discriminated union's tag (load.constant.rps): the field sits on the mapping
        if isinstance(node, dict) and part in node:
            if last or not isinstance(node[part], (dict, list)):
                if i == 0 and part in ("targets", "name"):
                    return False
                del node[part]
                return True
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            if last or not isinstance(node[part], (dict, list)):
                return False
            node = node[part]
        else:
            # A discriminated union's tag or a missing field: drop the enclosing mapping's key instead.
            return i > 0 and _drop(data, loc[:i])
    return True


def read_text(path: str | Path) -> str:
    """A spec file's text: at most MAX_SPEC_BYTES of UTF-8; SpecError (naming the file) otherwise."""
    p = Path(path)
    try:
        # A FIFO, a device or a socket would block the read (or never end): only regular files, checked
        # before opening and again on what was opened (O_NONBLOCK: opening a FIFO does not wait).
        if not stat.S_ISREG(p.stat().st_mode):
            raise SpecError(str(p), [f"cannot read the spec: it is {_kind(p.stat().st_mode)}, not a regular file; "
                                     "give the path of a YAML file"])
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise SpecError(str(p), ["cannot read the spec: not a regular file; give the path of a YAML file"])
            raw = f.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError(str(p), [f"cannot read the spec: {exc.strerror or exc}"]) from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(str(p), [f"(top level): the spec is larger than {MAX_SPEC_BYTES:,} bytes"])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(str(p), [f"(top level): not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                                 "a spec is a YAML file"]) from None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a file"


def load(path: str | Path) -> Benchmark:
    return load_text(read_text(path), str(path))


def run_problems(b: Benchmark) -> list[str]:
    """What a valid spec may not ask of a run (the SLOs here; the allow-list and the plan's limits are the
    runnable check's other parts, orchestrator.session.runnable)."""
    return slo_problems(b)


def allow_list_problems(b: Benchmark) -> list[str]:
    """The workers' allow-list (FNBENCH_ALLOWED_TARGETS, default loopback) applied here, so a spec whose
    targets a worker would refuse says so before any load.  Not part of load(): `report` of an old
    run must still read its spec.  Each problem has its YAML path, like _semantic_problems."""
    from workers.limits import spec_problems

    return env_problems(b) + spec_problems(b.targets)


def env_problems(b: Benchmark) -> list[str]:
    """Every ``${env:NAME}`` of a target's url, headers or body that the workers will refuse to resolve
    (FNBENCH_ALLOWED_ENV here, default FNBENCH_SECRET_*; never fnbench's own or AWS's), with its YAML path.
    The worker checks again with its own setting: it is the trust boundary."""
    patterns = platforms.allowed_env_patterns()
    problems: list[str] = []
    for i, t in enumerate(b.targets):
        fields = [("url", t.url), *((f"headers.{k}", v) for k, v in t.headers.items()), ("body", t.body_text())]
        for field, value in fields:
            for name in dict.fromkeys(platforms.env_references(value)):
                refusal = platforms.env_refusal(name, patterns)
                if refusal is not None:
                    problems.append(f"targets[{i}].{field}: {refusal}")
    return problems


def parse_span(text: str, option: str) -> float:
    """A retention-like span of an option (``--retention 3d``): the spec's duration forms (30s, 5m, 12h)
    and days (3d), more than 0 and less than a year; InputError naming the option otherwise."""
    days = text.strip().removesuffix("d")
    try:
        if days != text.strip() and days.replace(".", "", 1).isdigit():
            seconds = float(days) * 86400
        else:
            seconds = parse_duration(text)
    except ValueError as exc:
        raise InputError(f"{option}: {exc} (or days, like 3d)") from None
    if not 0 < seconds < 366 * 86400:
        raise InputError(f"{option}: must be more than 0 and less than a year, got {text!r}")
    return seconds
