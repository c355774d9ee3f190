"""``ramp``: the rate rises (or falls) linearly from ``from_rps`` to ``to_rps`` over ``over``
(default: the run's duration), then holds (k6's ramping-arrival-rate with one stage).

    load: {executor: ramp, from_rps: 10, to_rps: 500, over: 2m}
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar, Literal

from workers.arrivals.base import Duration, Executor, Problem, Rate, Schedule, exact


@dataclass(frozen=True)
class Ramp(Schedule):
    from_rps: Fraction
    to_rps: Fraction
    over_s: Fraction
    kind: ClassVar[str] = "ramp"

    def validate(self) -> list[Problem]:
        problems: list[Problem] = []
        if self.from_rps < 0:
            problems.append(("from_rps", "must be >= 0"))
        if self.to_rps < 0:
            problems.append(("to_rps", "must be >= 0"))
        if self.from_rps == 0 and self.to_rps == 0:
            problems.append(("to_rps", "from_rps and to_rps cannot both be 0"))
        if self.over_s <= 0:
            problems.append(("over_s", "must be > 0 (defaults to the run's duration)"))
        return problems

    def scaled(self, share: Fraction) -> Ramp:
        return Ramp(self.from_rps * share, self.to_rps * share, self.over_s)

    def peak_rps(self) -> Fraction:
        return max(self.from_rps, self.to_rps)

    def rate_at(self, t: float) -> float:
        if t >= self.over_s:
            return float(self.to_rps)
        a, b = float(self.from_rps), float(self.to_rps)
        return a + (b - a) * t / float(self.over_s)

    def count(self, t: float) -> float:
        a, b, d = float(self.from_rps), float(self.to_rps), float(self.over_s)
        if t <= d:
            return a * t + (b - a) * t * t / (2 * d)
        return (a + b) * d / 2 + b * (t - d)

    def offset_fn(self) -> Callable[[float], float]:
        a, b, d = float(self.from_rps), float(self.to_rps), float(self.over_s)
        at_end = (a + b) * d / 2
        k4 = 4 * (b - a) / (2 * d)
        sqrt = math.sqrt

        def offset_of(c: float) -> float:
            if c > at_end:
                return d + (c - at_end) / b if b > 0 else math.inf
            # Root of k t² + a t - c = 0 in the form that stays stable when k → 0.
            return 2 * c / (a + sqrt(max(a * a + k4 * c, 0.0))) if c > 0 else 0.0

        return offset_of


class RampLoad(Executor):
    executor: Literal["ramp"] = "ramp"
    from_rps: Rate | None = None
    to_rps: Rate | None = None
    over: Duration | None = None
    required: ClassVar[tuple[str, ...]] = ("from_rps", "to_rps")
    spec_names: ClassVar[dict[str, str]] = {"over_s": "over"}

    def schedule(self, duration: float) -> Ramp:
        over = self.over if self.over is not None else duration
        return Ramp(exact(self.from_rps or 0), exact(self.to_rps or 0), exact(over))
