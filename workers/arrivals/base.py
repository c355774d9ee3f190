"""What every load profile shares: the schedule base class (with the one due-time loop), the
executor base model (the ``load:`` section of a spec), units and numeric limits.

An executor is one module in this package holding a ``Schedule`` subclass (the arrival times,
exact fractions, plain-data codec) and an ``Executor`` subclass (its spec fields, defaults and
validation).  Both register themselves here when their module is imported; the package imports
every module in it, so a new profile is one new file.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterator
from fractions import Fraction
from itertools import count
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from workers.contract import fraction_from, fraction_to_str

Problem = tuple[str, str]  # (field, message)

# Numeric limits of a spec.  Past these a run is a typo, not a test: a rate no fleet of
# generators sends, a window longer than any soak test.  They keep validate and plan bounded.
MAX_RPS = 10_000_000  # requests per second, per target and region
MIN_RPS = 1e-6  # a positive rate below this sends nothing in MAX_DURATION_S
MAX_DURATION_S = 31 * 86_400  # any duration in a spec (and the whole run), 31 days
MAX_STEPS = 10_000

SCHEDULES: dict[str, type[Schedule]] = {}
EXECUTORS: dict[str, type[Executor]] = {}


# ---------------------------------------------------------------- units


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_DURATION_HELP = "expected a duration like 30s, 5m or 250ms"


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_duration(value: Any) -> float:
    """Seconds from ``30``, ``2.5`` or ``250ms``/``30s``/``5m``/``1h``; finite, |d| <= 31 days."""
    if isinstance(value, bool):
        raise ValueError(_DURATION_HELP)
    if isinstance(value, int):
        seconds = float(value) if abs(value) <= MAX_DURATION_S else math.inf
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"must be a finite duration, got {value}")
        seconds = value
    else:
        m = _DURATION.match(value) if isinstance(value, str) and len(value) <= 64 else None
        if not m:
            raise ValueError(f"{_DURATION_HELP}, got {_short(value)}")
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if not abs(seconds) <= MAX_DURATION_S:
        raise ValueError(f"at most {MAX_DURATION_S // 86_400} days ({MAX_DURATION_S}s), got {_short(value)}")
    return seconds


def _rate(value: float) -> float:
    if 0 < value < MIN_RPS:
        raise ValueError(f"a positive rate must be at least {MIN_RPS:g} req/s, got {value:g}")
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]
# Requests per second: finite, 0 or in [MIN_RPS, MAX_RPS].  Which profiles accept 0 is theirs to say.
def not_bool(value: Any) -> Any:
    """YAML's ``true``/``false`` is not a number: pydantic's lax mode reads ``rps: true`` as 1.  (Strict
    mode would also refuse ``1e7``, which YAML 1.1 reads as a string.)"""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {str(value).lower()}")
    return value


NotBool = BeforeValidator(not_bool)
Rate = Annotated[float, Field(ge=0, le=MAX_RPS, allow_inf_nan=False), NotBool, AfterValidator(_rate)]


def exact(x: float) -> Fraction:
    """The decimal the user wrote, as an exact fraction (0.1 → 1/10, not the binary float)."""
    return Fraction(str(x))


# ---------------------------------------------------------------- schedules


class Schedule:
    """Arrival times of one profile, defined by its cumulative count N(t) and its inverse.

    Subclasses are frozen dataclasses of Fraction fields (or override ``to_dict``/``from_dict``)
    with a class-level ``kind``; they register themselves by that kind.
    """

    kind: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            SCHEDULES[cls.kind] = cls

    def validate(self) -> list[Problem]:
        raise NotImplementedError

    def scaled(self, share: Fraction) -> Schedule:
        raise NotImplementedError

    def peak_rps(self) -> Fraction:
        raise NotImplementedError

    def rate_at(self, t: float) -> float:
        raise NotImplementedError

    def count(self, t: float) -> float:
        """N(t): the expected number of arrivals due in [0, t)."""
        raise NotImplementedError

    def offset_fn(self) -> Callable[[float], float] | float:
        """N⁻¹ for the due-time loop, built once (floats precomputed, tables cached): a callable
        c ↦ the offset where the count reaches c, or a float ``gap`` when arrivals are evenly
        spaced (offset = c · gap), which the loop inlines.  ``offset_of`` is this same formula."""
        raise NotImplementedError

    def offset_of(self, c: float) -> float:
        """N⁻¹(c): the offset at which the cumulative count reaches c."""
        f = self.offset_fn()
        return c * f if isinstance(f, float) else f(c)

    def iter_due(self, start: float, end: float, phase: float = 0.0, seed: int = 0) -> Iterator[float]:
        """Offsets t with start <= t < end, in order, for the arrival sequence placed at ``phase``.

        The one due-time loop of every deterministic profile: arrival i is due at
        N⁻¹(i + phase).  It starts a little before the first candidate, so the membership test,
        the same float formula in every slice, decides each arrival's slice exactly once, and it
        stops at the first offset at or past ``end``.  Evenly spaced schedules (a float ``gap``)
        get the multiply inlined: a function call per arrival costs ~20% of this hot path.
        """
        f = self.offset_fn()
        first = max(0, math.floor(self.count(start) - phase) - 1)
        if isinstance(f, float):  # the same loop with N⁻¹(c) = c · gap written in
            for i in count(first):
                t = (i + phase) * f
                if t >= end:
                    return
                if t >= start:
                    yield t
        else:
            for i in count(first):
                t = f(i + phase)
                if t >= end:
                    return
                if t >= start:
                    yield t

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            out[f.name] = fraction_to_str(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Schedule:
        return cls(**{f.name: fraction_from(d[f.name]) for f in dataclasses.fields(cls)})  # type: ignore[arg-type]


# ---------------------------------------------------------------- executors (the spec's `load:`)


class Executor(BaseModel):
    """The ``load:`` section for one executor: its own fields, defaults and validation.

    ``required`` fields are optional to pydantic so that a missing one is reported together with
    every other problem of the spec; ``problems`` reports them.  ``spec_names`` maps the
    schedule's field names (``over_s``) to the spec's (``over``) in problem paths.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    executor: str
    max_in_flight: Annotated[int, NotBool] = Field(default=256, ge=1, le=100_000)
    queue_limit: Annotated[int, NotBool] = Field(default=10_000, ge=0, le=10_000_000)

    required: ClassVar[tuple[str, ...]] = ()
    spec_names: ClassVar[dict[str, str]] = {}

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        name = cls.model_fields["executor"].default
        if isinstance(name, str) and name:
            EXECUTORS[name] = cls

    def schedule(self, duration: float) -> Schedule:
        """The per-target, per-region schedule of the measured phase of a ``duration``-second run."""
        raise NotImplementedError

    def problems(self, duration: float) -> list[Problem]:
        missing = [k for k in self.required if getattr(self, k) in (None, [], ())]
        if missing:
            return [(k, f"required by executor {self.executor!r}") for k in missing]
        found = []
        for field, msg in self.schedule(duration).validate():
            for old, new in self.spec_names.items():
                field = field.replace(old, new)
            found.append((field, msg))
        return found
