"""``steps``: piecewise-constant rates, each held for its duration; the last holds afterwards.

    load: {executor: steps, steps: [{duration: 1m, rps: 100}, {duration: 1m, rps: 400}]}
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from workers.arrivals.base import MAX_STEPS, Duration, Executor, Problem, Rate, Schedule, exact
from workers.contract import fraction_from, fraction_to_str


@dataclass(frozen=True)
class Steps(Schedule):
    steps: tuple[tuple[Fraction, Fraction], ...]  # (duration_s, rps)
    kind: ClassVar[str] = "steps"

    def validate(self) -> list[Problem]:
        if not self.steps:
            return [("steps", "needs at least one {duration_s, rps} step")]
        problems: list[Problem] = []
        for i, (dur, rps) in enumerate(self.steps):
            if dur <= 0:
                problems.append((f"steps[{i}].duration_s", "must be > 0"))
            if rps < 0:
                problems.append((f"steps[{i}].rps", "must be >= 0"))
        if all(r == 0 for _, r in self.steps):
            problems.append(("steps", "every step has rps 0: nothing would be sent"))
        return problems

    def scaled(self, share: Fraction) -> Steps:
        return Steps(tuple((d, r * share) for d, r in self.steps))

    def peak_rps(self) -> Fraction:
        return max(r for _, r in self.steps)

    @cached_property
    def _edges(self) -> tuple[list[float], list[float], list[float]]:
        """Start time, cumulative count at that start, and rate of each step (floats, built once)."""
        times, counts = [0.0], [0.0]
        for dur, rps in self.steps:
            times.append(times[-1] + float(dur))
            counts.append(counts[-1] + float(dur) * float(rps))
        return times, counts, [float(r) for _, r in self.steps]

    def _step_at(self, t: float) -> int:
        return max(min(bisect.bisect_right(self._edges[0], t) - 1, len(self.steps) - 1), 0)

    def rate_at(self, t: float) -> float:
        return self._edges[2][self._step_at(t)]

    def count(self, t: float) -> float:
        times, counts, rates = self._edges
        i = self._step_at(t)
        return counts[i] + (t - times[i]) * rates[i]

    def offset_fn(self) -> Callable[[float], float]:
        times, counts, rates = self._edges
        last = len(rates) - 1
        right = bisect.bisect_right

        def offset_of(c: float) -> float:
            # The step in which the count reaches c; at a boundary, the later step (so an
            # arrival never lands at the start of a zero-rate step).
            i = min(max(right(counts, c) - 1, 0), last)
            while rates[i] == 0 and i < last:
                i += 1
            return times[i] + (c - counts[i]) / rates[i] if rates[i] > 0 else math.inf

        return offset_of

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "steps": [{"duration_s": fraction_to_str(d), "rps": fraction_to_str(r)} for d, r in self.steps],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Steps:
        return cls(tuple((fraction_from(s["duration_s"]), fraction_from(s["rps"])) for s in d["steps"]))


class StepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    duration: Duration
    rps: Rate


class StepsLoad(Executor):
    executor: Literal["steps"] = "steps"
    steps: list[StepSpec] = Field(default=[], max_length=MAX_STEPS)
    required: ClassVar[tuple[str, ...]] = ("steps",)
    spec_names: ClassVar[dict[str, str]] = {"duration_s": "duration"}

    def schedule(self, duration: float) -> Steps:
        return Steps(tuple((exact(s.duration), exact(s.rps)) for s in self.steps))
