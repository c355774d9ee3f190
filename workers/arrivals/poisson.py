"""``poisson``: exponential inter-arrival times at a mean rate, reproducible from the shard seed.

    load: {executor: poisson, rps: 200}
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, Literal

from workers.arrivals.constant import Constant, ConstantLoad


@dataclass(frozen=True)
class Poisson(Constant):
    """A constant mean rate whose arrivals are random: everything but the due times is Constant's.

    Shares of a Poisson process are independent Poisson processes (superposition), so
    siblings use their own seeds and ignore ``phase``.
    """

    kind: ClassVar[str] = "poisson"

    def iter_due(self, start: float, end: float, phase: float = 0.0, seed: int = 0) -> Iterator[float]:
        rng = random.Random(seed)
        rate = float(self.rps)
        t = start + rng.expovariate(rate)
        while t < end:
            yield t
            t += rng.expovariate(rate)


class PoissonLoad(ConstantLoad):
    executor: Literal["poisson"] = "poisson"  # type: ignore[assignment]

    def schedule(self, duration: float) -> Poisson:
        return Poisson(super().schedule(duration).rps)
