"""``constant``: a fixed rate, evenly spaced (k6's constant-arrival-rate).

    load: {executor: constant, rps: 200}
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar, Literal

from workers.arrivals.base import Executor, Problem, Rate, Schedule, exact


@dataclass(frozen=True)
class Constant(Schedule):
    rps: Fraction
    kind: ClassVar[str] = "constant"

    def validate(self) -> list[Problem]:
        return [] if self.rps > 0 else [("rps", f"must be > 0, got {float(self.rps):g}")]

    def scaled(self, share: Fraction) -> Constant:
        return dataclasses.replace(self, rps=self.rps * share)

    def peak_rps(self) -> Fraction:
        return self.rps

    def rate_at(self, t: float) -> float:
        return float(self.rps)

    def count(self, t: float) -> float:
        return float(self.rps) * t

    def offset_fn(self) -> float:
        return 1.0 / float(self.rps)  # evenly spaced: the loop inlines c · gap


class ConstantLoad(Executor):
    executor: Literal["constant"] = "constant"
    rps: Rate | None = None
    required: ClassVar[tuple[str, ...]] = ("rps",)

    def schedule(self, duration: float) -> Constant:
        return Constant(exact(self.rps or 0))
