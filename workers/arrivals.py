"""Arrival schedules: when request i is due, as an offset in seconds from the profile origin.

Each schedule is defined by its cumulative count N(t) (requests due in [0, t)); arrival i of a
shard whose share is ``scale`` and whose place among its siblings is ``phase`` is due at
N_scaled⁻¹(i + phase).  Siblings with phases 0, 1/p, …, (p-1)/p and scale 1/p therefore
interleave into exactly the unsplit schedule.  Rates are exact fractions so shares add up.
One class per profile; each validates its own parameters and reports every problem.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

from workers.contract import fraction_from, fraction_to_str

Problem = tuple[str, str]  # (field, message)


class Schedule:
    kind: ClassVar[str]

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

    def offset_of(self, c: float) -> float:
        """N⁻¹(c): the offset at which the cumulative count reaches c."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def iter_due(self, start: float, end: float, phase: float = 0.0, seed: int = 0) -> Iterator[float]:
        """Offsets t with start <= t < end, in order, for the arrival sequence placed at ``phase``."""
        # Start a little before the first candidate so the membership test below, which is the
        # same float formula in every slice, decides each arrival's slice exactly once.
        i = max(0, math.floor(self.count(start) - phase) - 1)
        offset_of = self.offset_of
        while True:
            t = offset_of(i + phase)
            if t >= end:
                return
            if t >= start:
                yield t
            i += 1


@dataclass(frozen=True)
class Constant(Schedule):
    rps: Fraction
    kind: ClassVar[str] = "constant"

    def validate(self) -> list[Problem]:
        return [] if self.rps > 0 else [("rps", f"must be > 0, got {float(self.rps):g}")]

    def scaled(self, share: Fraction) -> Constant:
        return Constant(self.rps * share)

    def peak_rps(self) -> Fraction:
        return self.rps

    def rate_at(self, t: float) -> float:
        return float(self.rps)

    def count(self, t: float) -> float:
        return float(self.rps) * t

    def offset_of(self, c: float) -> float:
        return c / float(self.rps)

    def iter_due(self, start: float, end: float, phase: float = 0.0, seed: int = 0) -> Iterator[float]:
        inv = 1.0 / float(self.rps)
        i = max(0, math.floor(float(self.rps) * start - phase) - 1)
        while True:
            t = (i + phase) * inv
            if t >= end:
                return
            if t >= start:
                yield t
            i += 1

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "rps": fraction_to_str(self.rps)}


@dataclass(frozen=True)
class Ramp(Schedule):
    """Rate rises (or falls) linearly from ``from_rps`` to ``to_rps`` over ``over_s``, then holds."""

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

    def offset_of(self, c: float) -> float:
        a, b, d = float(self.from_rps), float(self.to_rps), float(self.over_s)
        at_end = (a + b) * d / 2
        if c > at_end:
            return d + (c - at_end) / b if b > 0 else math.inf
        k = (b - a) / (2 * d)
        # Root of k t² + a t - c = 0 in the form that stays stable when k → 0.
        disc = a * a + 4 * k * c
        return 2 * c / (a + math.sqrt(max(disc, 0.0))) if c > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "from_rps": fraction_to_str(self.from_rps),
            "to_rps": fraction_to_str(self.to_rps),
            "over_s": fraction_to_str(self.over_s),
        }


@dataclass(frozen=True)
class Steps(Schedule):
    """Piecewise constant: ``steps`` of (duration_s, rps); the last rate holds afterwards."""

    steps: tuple[tuple[Fraction, Fraction], ...]
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
        if self.steps[-1][1] == 0 and all(r == 0 for _, r in self.steps):
            problems.append(("steps", "every step has rps 0: nothing would be sent"))
        return problems

    def scaled(self, share: Fraction) -> Steps:
        return Steps(tuple((d, r * share) for d, r in self.steps))

    def peak_rps(self) -> Fraction:
        return max(r for _, r in self.steps)

    def _edges(self) -> tuple[list[float], list[float]]:
        times, counts = [0.0], [0.0]
        for dur, rps in self.steps:
            times.append(times[-1] + float(dur))
            counts.append(counts[-1] + float(dur) * float(rps))
        return times, counts

    def rate_at(self, t: float) -> float:
        times, _ = self._edges()
        i = min(bisect.bisect_right(times, t) - 1, len(self.steps) - 1)
        return float(self.steps[max(i, 0)][1])

    def count(self, t: float) -> float:
        times, counts = self._edges()
        i = min(bisect.bisect_right(times, t) - 1, len(self.steps) - 1)
        return counts[i] + (t - times[i]) * float(self.steps[i][1])

    def offset_of(self, c: float) -> float:
        times, counts = self._edges()
        # The step in which the count reaches c; at a boundary, the later step (so an arrival
        # never lands at the start of a zero-rate step).
        i = bisect.bisect_right(counts, c) - 1
        i = min(max(i, 0), len(self.steps) - 1)
        rate = float(self.steps[i][1])
        while rate == 0 and i + 1 < len(self.steps):
            i += 1
            rate = float(self.steps[i][1])
        return times[i] + (c - counts[i]) / rate if rate > 0 else math.inf

    def iter_due(self, start: float, end: float, phase: float = 0.0, seed: int = 0) -> Iterator[float]:
        # offset_of rebuilds the edges each call; cache them once for the loop.
        times, counts = self._edges()
        rates = [float(r) for _, r in self.steps]
        last = len(rates) - 1

        def offset_of(c: float) -> float:
            i = min(max(bisect.bisect_right(counts, c) - 1, 0), last)
            while rates[i] == 0 and i < last:
                i += 1
            return times[i] + (c - counts[i]) / rates[i] if rates[i] > 0 else math.inf

        i = max(0, math.floor(self.count(start) - phase) - 1)
        while True:
            t = offset_of(i + phase)
            if t >= end:
                return
            if t >= start:
                yield t
            i += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "steps": [
                {"duration_s": fraction_to_str(d), "rps": fraction_to_str(r)} for d, r in self.steps
            ],
        }


@dataclass(frozen=True)
class Poisson(Schedule):
    """Exponential inter-arrival times at mean rate ``rps``, reproducible from the shard seed.

    Shares of a Poisson process are independent Poisson processes (superposition), so
    siblings use their own seeds and ignore ``phase``.
    """

    rps: Fraction
    kind: ClassVar[str] = "poisson"

    def validate(self) -> list[Problem]:
        return [] if self.rps > 0 else [("rps", f"must be > 0, got {float(self.rps):g}")]

    def scaled(self, share: Fraction) -> Poisson:
        return Poisson(self.rps * share)

    def peak_rps(self) -> Fraction:
        return self.rps

    def rate_at(self, t: float) -> float:
        return float(self.rps)

    def count(self, t: float) -> float:
        return float(self.rps) * t

    def offset_of(self, c: float) -> float:
        return c / float(self.rps)

    def iter_due(self, start: float, end: float, phase: float = 0.0, seed: int = 0) -> Iterator[float]:
        rng = random.Random(seed)
        rate = float(self.rps)
        t = start + rng.expovariate(rate)
        while t < end:
            yield t
            t += rng.expovariate(rate)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "rps": fraction_to_str(self.rps)}


KINDS: dict[str, type[Schedule]] = {c.kind: c for c in (Constant, Ramp, Steps, Poisson)}


def from_dict(d: dict[str, Any]) -> Schedule:
    """Build a schedule from plain data (spec or shard); raises ValueError on unknown kinds."""
    kind = d.get("kind")
    if kind == "constant":
        return Constant(fraction_from(d["rps"]))
    if kind == "poisson":
        return Poisson(fraction_from(d["rps"]))
    if kind == "ramp":
        return Ramp(fraction_from(d["from_rps"]), fraction_from(d["to_rps"]), fraction_from(d["over_s"]))
    if kind == "steps":
        return Steps(
            tuple((fraction_from(s["duration_s"]), fraction_from(s["rps"])) for s in d["steps"])
        )
    raise ValueError(f"unknown arrival kind {kind!r}; expected one of {', '.join(KINDS)}")
