"""Arrival schedules: when request i is due, as an offset in seconds from the profile origin.

Each schedule is defined by its cumulative count N(t) (requests due in [0, t)); arrival i of a
shard whose share is ``scale`` and whose place among its siblings is ``phase`` is due at
N_scaled⁻¹(i + phase).  Siblings with phases 0, 1/p, …, (p-1)/p and scale 1/p therefore
interleave into exactly the unsplit schedule.  Rates are exact fractions so shares add up.

One module per executor (constant, ramp, steps, poisson, …), each holding its schedule and its
spec model (``load:`` fields, defaults, validation); ``base`` holds what they share, the
due-time loop included.  Every module here is imported below, so a new profile is one new file:
its classes register themselves in ``SCHEDULES`` (plain-data kinds) and ``EXECUTORS`` (spec).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from workers.arrivals.base import (
    EXECUTORS,
    MAX_DURATION_S,
    MAX_RPS,
    MIN_RPS,
    SCHEDULES,
    Duration,
    Executor,
    Problem,
    Rate,
    Schedule,
    exact,
    parse_duration,
)
from workers.arrivals.constant import Constant, ConstantLoad
from workers.arrivals.poisson import Poisson, PoissonLoad
from workers.arrivals.ramp import Ramp, RampLoad
from workers.arrivals.steps import Steps, StepsLoad

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base" and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

KINDS = SCHEDULES  # the name before the package

__all__ = [
    "EXECUTORS", "KINDS", "MAX_DURATION_S", "MAX_RPS", "MIN_RPS", "SCHEDULES", "Constant", "ConstantLoad",
    "Duration", "Executor", "Poisson", "PoissonLoad", "Problem", "Ramp", "RampLoad", "Rate", "Schedule",
    "Steps", "StepsLoad", "exact", "from_dict", "parse_duration",
]


def from_dict(d: dict[str, Any]) -> Schedule:
    """Build a schedule from plain data (a shard's ``arrival``); raises ValueError on unknown kinds."""
    cls = SCHEDULES.get(d.get("kind"))  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown arrival kind {d.get('kind')!r}; expected one of {', '.join(SCHEDULES)}")
    return cls.from_dict(d)
