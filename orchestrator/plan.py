"""Benchmark → list[Shard]: pure, deterministic arithmetic.

Groups are region × target × phase.  A group's rate is split into ``p`` parts with exact
fractions (each part has share 1/p and phase j/p, so the parts interleave into exactly the
group's schedule) and its time into slices (default 5 min) so a lost worker costs at most a
slice.  Timeline from the origin ``start_at``: warm-up, measured warm phase, cold phase.
"""

from __future__ import annotations

import math
import zlib
from fractions import Fraction

from orchestrator.spec import Benchmark, TargetSpec
from workers import arrivals
from workers.contract import Shard, Target, fraction_to_str


def to_target(t: TargetSpec) -> Target:
    address = {k: v for k, v in (("function", t.function), ("qualifier", t.qualifier)) if v}
    return Target(
        name=t.name,
        runtime=t.runtime,
        platform=t.platform,
        url=t.url,
        method=t.method,
        headers=tuple(t.headers.items()),
        body=t.body_text(),
        timeout_s=t.timeout,
        workload=t.workload,
        tls_verify=t.tls_verify,
        address=address,
    )


def parts_for(schedule: arrivals.Schedule, max_rps_per_shard: float, min_parts: int) -> int:
    return max(min_parts, math.ceil(float(schedule.peak_rps()) / max_rps_per_shard), 1)


def phase_windows(b: Benchmark) -> list[tuple[str, bool, float, float, arrivals.Schedule]]:
    """(phase, warmup, begin, length, schedule) in profile time, in order."""
    main = b.schedule()
    windows: list[tuple[str, bool, float, float, arrivals.Schedule]] = []
    t = 0.0
    if b.warmup > 0:
        first_rate = Fraction(str(main.rate_at(0.0))) or main.peak_rps()
        windows.append(("warm", True, t, b.warmup, arrivals.Constant(first_rate)))
        t += b.warmup
    windows.append(("warm", False, t, b.duration, main))
    t += b.duration
    if b.cold_start.enabled:
        cold = b.cold_start
        length = cold.invocations / cold.rps
        windows.append(("cold", False, t, length, arrivals.Constant(Fraction(str(cold.rps)))))
    return windows


def total_length(b: Benchmark) -> float:
    return sum(w[3] for w in phase_windows(b))


def split(b: Benchmark, run_id: str, start_at: float, min_parts: int = 1) -> list[Shard]:
    """Every shard of the run.  Shards within a phase window start at its begin + k·slice."""
    shards: list[Shard] = []
    for phase, warmup, begin, length, schedule in phase_windows(b):
        # Cold phases are serial by nature: one part, so invocations stay evenly spaced.
        parts = 1 if phase == "cold" else parts_for(schedule, b.sharding.max_rps_per_shard, min_parts)
        slices = max(1, math.ceil(length / b.sharding.slice - 1e-9))
        for region in b.regions:
            for index, spec in enumerate(b.targets):
                target = to_target(spec)
                # Targets are staggered by a fraction of one arrival gap: same rate, but their
                # requests (and cold starts) never leave at the same instant and contend with
                # each other on the generator or the machine.
                stagger = Fraction(index, len(b.targets))
                for j in range(parts):
                    part = schedule.scaled(Fraction(1, parts))
                    for k in range(slices):
                        lo = k * b.sharding.slice
                        hi = min(length, (k + 1) * b.sharding.slice)
                        tag = "warmup" if warmup else phase
                        shard_id = f"{region}/{spec.name}/{tag}/p{j}of{parts}/s{k}"
                        shards.append(
                            Shard(
                                run_id=run_id,
                                shard_id=shard_id,
                                region=region,
                                target=target,
                                phase=phase,
                                # The schedule is relative to its window; offsets are window time.
                                arrival=part.to_dict(),
                                start_at=start_at + begin + lo,
                                duration_s=hi - lo,
                                offset_s=lo,
                                part_phase=fraction_to_str((j + stagger) / parts),
                                max_in_flight=max(1, math.ceil(b.load.max_in_flight / parts)),
                                queue_limit=math.ceil(b.load.queue_limit / parts),
                                flush_interval_s=b.flush_interval,
                                seed=zlib.crc32(f"{b.seed}:{shard_id}".encode()),
                                warmup=warmup,
                            )
                        )
    return shards
