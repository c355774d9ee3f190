"""Benchmark → list[Shard]: pure, deterministic arithmetic.

Groups are region × target × phase.  A group's rate is split into ``p`` parts with exact
fractions (each part has share 1/p and phase j/p, so the parts interleave into exactly the
group's schedule) and its time into slices (default 5 min) so a lost worker costs at most a
slice.  Timeline from the origin ``start_at``: warm-up, measured warm phase, cold phase.
"""

from __future__ import annotations

import dataclasses
import math
import os
import secrets
import time
import zlib
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from orchestrator.analysis.cost import load_pricing, price_for
from orchestrator.errors import InputError
from orchestrator.run.spec import PLATFORMS, Benchmark, TargetSpec
from workers import arrivals, limits
from workers.contract import Shard, Target, fraction_to_str
from workers.recorder import HISTOGRAM_BYTES


def to_target(t: TargetSpec) -> Target:
    """The task's target: the common fields, and the address its platform builds from its own keys."""
    platform = PLATFORMS[t.platform]
    address = platform.address(t)
    if platform.billed:
        price = price_for(str(address.get("region") or "us-east-1"), str(address.get("architecture") or "x86_64"),
                          table=load_pricing())
        if price is not None:  # a region without a price has GB-s and no cost, never a guessed one
            address["price"] = price.to_address()
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


# Shards of one run.  A local worker process holds all of its shards at once; 20,000 is a 31-day soak
# of two groups at 5-minute slices, and longer slices (sharding.slice: 1h) cover any longer plan.
MAX_SHARDS = 20_000

# Memory of the shards, the other bound (a run of 10,000 targets at 0.01 req/s grew a worker to 15 GB).
# A shard waiting for its start holds little (IDLE_SHARD_BYTES); a running one holds its invoker and
# connections (RUNNING_SHARD_BYTES) and one dense HDR histogram (workers.recorder.HISTOGRAM_BYTES,
# ~184 KiB) for each kind it records: response, service, send lag and connect on every platform, and
# init, platform, billed and init duration on those with cold starts or bills.  Measured on an HTTP
# target: ~1.3 KB per waiting shard, ~840 KB per running one (4 histograms).  The bound is what the
# run's shards may hold at once, all worker processes together (FNBENCH_MAX_PLAN_MEMORY_MB overrides).
IDLE_SHARD_BYTES = 4 * 1024
RUNNING_SHARD_BYTES = 128 * 1024
MAX_PLAN_MEMORY_ENV = "FNBENCH_MAX_PLAN_MEMORY_MB"
DEFAULT_MAX_PLAN_MEMORY_MB = 4096


def max_plan_memory() -> int:
    """The bound on a plan's estimated shard memory, in bytes (FNBENCH_MAX_PLAN_MEMORY_MB, default 4 GiB)."""
    raw = os.environ.get(MAX_PLAN_MEMORY_ENV, "").strip()
    try:
        mb = float(raw) if raw else DEFAULT_MAX_PLAN_MEMORY_MB
    except ValueError:
        raise InputError(f"{MAX_PLAN_MEMORY_ENV}={raw!r}: expected a number of MB") from None
    if not 0 < mb < 2**40:
        raise InputError(f"{MAX_PLAN_MEMORY_ENV}={raw!r}: must be a positive number of MB")
    return int(mb * 2**20)


def shard_bytes(t: TargetSpec) -> int:
    """The estimated memory of one running shard of target ``t``."""
    platform = PLATFORMS[t.platform]
    kinds = 8 if platform.cold_starts or platform.billed else 4
    return RUNNING_SHARD_BYTES + kinds * HISTOGRAM_BYTES


def memory_estimate(b: Benchmark, min_parts: int = 1) -> tuple[int, int]:
    """(bytes, shards running at once): the estimated memory of the run's shards at its busiest,
    every worker process together.  Phase windows run one after the other, and so do a group's time
    slices; the parts of every group of a window run together."""
    per_target = sum(shard_bytes(t) for t in b.targets) * len(b.regions)
    busiest = running = 0
    for phase, _, _, length, schedule in phase_windows(b):
        parts, _ = _parts_and_slices(b, phase, length, schedule, min_parts)
        if parts * per_target > busiest:
            busiest, running = parts * per_target, parts * len(b.targets) * len(b.regions)
    return busiest + shard_count(b, min_parts) * IDLE_SHARD_BYTES, running


def memory_problems(b: Benchmark, min_parts: int = 1) -> list[str]:
    """The plan's memory bound, with its YAML path and how to come under it."""
    estimate, running = memory_estimate(b, min_parts)
    bound = max_plan_memory()
    if estimate <= bound:
        return []
    workers = f" with the rate split over {min_parts} worker process(es)" if min_parts > 1 else ""
    return [f"targets: this run holds about {estimate / 2**20:,.0f} MB of shard state at once{workers} "
            f"({running:,} shards running together, ~{shard_bytes(b.targets[0]) / 2**10:,.0f} KB each, mostly "
            f"latency histograms); at most {bound / 2**20:,.0f} MB ({MAX_PLAN_MEMORY_ENV}): split the targets "
            f"({len(b.targets):,}) or regions ({len(b.regions)}) over several specs, raise "
            f"sharding.max_rps_per_shard (fewer parts per target){', use fewer --workers' if min_parts > 1 else ''}, "
            f"or raise {MAX_PLAN_MEMORY_ENV} where the machine has the memory"]


# A target's timeout is how long the run may wait, after its load, for requests still in flight (the
# drain).  It may not exceed the run's own length or this, whichever is longer: a 1h timeout on a 2s
# run turned it into minutes against a stalled target.  A limit of running (not of reading a spec: an
# old run's report still loads its spec).
MIN_DRAIN_CAP_S = 30.0


def drain_problems(b: Benchmark) -> list[str]:
    total = total_length(b)
    longest = max(MIN_DRAIN_CAP_S, total)
    return [f"targets[{i}].timeout: {t.timeout:g}s is longer than the whole run ({total:g}s) and {MIN_DRAIN_CAP_S:g}s; "
            f"a request still waiting at the end holds the run for its timeout (the drain): at most "
            f"max({MIN_DRAIN_CAP_S:g}s, the run's length), here {longest:g}s"
            for i, t in enumerate(b.targets) if t.timeout > longest]


def rate_problems(b: Benchmark) -> list[str]:
    """The workers' per-process rate cap (FNBENCH_MAX_RPS, checked by every worker before a shard runs)
    applied to the plan: no shard may be asked for more."""
    cap = limits.max_rps()
    peak = max(float(w[4].peak_rps()) / _parts_and_slices(b, w[0], w[3], w[4], 1)[0] for w in phase_windows(b))
    if peak <= cap:
        return []
    return [f"sharding.max_rps_per_shard: a shard would be asked for {peak:g} req/s; one worker process sends at "
            f"most {cap:g} req/s ({limits.MAX_RPS_ENV}): set sharding.max_rps_per_shard to {cap:g} or less "
            f"(now {b.sharding.max_rps_per_shard:g}), or raise {limits.MAX_RPS_ENV} on every worker and here"]


def parts_for(schedule: arrivals.Schedule, max_rps_per_shard: float, min_parts: int) -> int:
    return max(min_parts, math.ceil(float(schedule.peak_rps()) / max_rps_per_shard), 1)


def _parts_and_slices(b: Benchmark, phase: str, length: float, schedule: arrivals.Schedule,
                      min_parts: int) -> tuple[int, int]:
    # Cold phases are serial by nature: one part, so invocations stay evenly spaced.
    parts = 1 if phase == "cold" else parts_for(schedule, b.sharding.max_rps_per_shard, min_parts)
    return parts, max(1, math.ceil(length / b.sharding.slice - 1e-9))


def shard_count(b: Benchmark, min_parts: int = 1) -> int:
    """How many shards ``split`` makes, by arithmetic alone (no shard is built)."""
    per_group = sum(p * s for p, s in (_parts_and_slices(b, w[0], w[3], w[4], min_parts) for w in phase_windows(b)))
    return per_group * len(b.regions) * len(b.targets)


def limit_problems(b: Benchmark, steps: int = 1) -> list[str]:
    """The plan's limits on a spec that is otherwise valid, each with its YAML path (``steps``: a
    memory sweep runs the plan once per memory size)."""
    total = total_length(b) * steps
    if total > arrivals.MAX_DURATION_S:
        each = f" at each of {steps} memory sizes" if steps > 1 else ""
        return [f"duration: the whole run (warmup + duration + cold_start{each}) lasts {total:,.0f}s; "
                f"at most {arrivals.MAX_DURATION_S:,}s (31 days)"]
    n = shard_count(b)
    if n > MAX_SHARDS:
        return [f"sharding: this run needs {n:,} shards ({len(b.regions)} region(s) × {len(b.targets)} target(s) × "
                f"rate parts × time slices); at most {MAX_SHARDS:,}: raise sharding.max_rps_per_shard "
                f"(now {b.sharding.max_rps_per_shard:g}) or sharding.slice (now {b.sharding.slice:g}s), or lower the load"]
    return drain_problems(b) + rate_problems(b) + memory_problems(b)


def phase_windows(b: Benchmark) -> list[tuple[str, bool, float, float, arrivals.Schedule]]:
    """(phase, warmup, begin, length, schedule) in profile time, in order."""
    main = b.load.schedule(b.duration)
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
    n = shard_count(b, min_parts)
    if n > MAX_SHARDS:  # checked before any shard is built
        raise InputError(f"this run would need {n:,} shards with the rate split over {min_parts} worker(s); "
                         f"at most {MAX_SHARDS:,}: use fewer workers or raise sharding.max_rps_per_shard")
    memory = memory_problems(b, min_parts)
    if memory:
        raise InputError(memory[0])
    shards: list[Shard] = []
    for phase, warmup, begin, length, schedule in phase_windows(b):
        parts, slices = _parts_and_slices(b, phase, length, schedule, min_parts)
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
                                part_offset=fraction_to_str((j + stagger) / parts),
                                max_in_flight=max(1, math.ceil(b.load.max_in_flight / parts)),
                                queue_limit=math.ceil(b.load.queue_limit / parts),
                                flush_interval_s=b.flush_interval,
                                late_bound_s=b.late_bound,
                                slowest=b.tracing.slowest,
                                trace_ratio=b.tracing.sample,
                                seed=zlib.crc32(f"{b.seed}:{shard_id}".encode()),
                                warmup=warmup,
                            )
                        )
    return shards


def phase_seconds(b: Benchmark) -> dict[str, float]:
    """Measured seconds of each phase (warm, cold): the denominators of achieved and intended rates."""
    out: dict[str, float] = {}
    for phase, warmup, _, length, _ in phase_windows(b):
        if not warmup:
            out[phase] = out.get(phase, 0.0) + length
    return out


@dataclass(frozen=True)
class Plan:
    """Everything a run needs from the spec, made once: the shards (profile time, origin 0) and the
    numbers the collector, the live view and the dispatchers use."""

    run_id: str
    name: str
    shards: tuple[Shard, ...]
    phase_seconds: dict[str, float]
    total_s: float
    max_timeout_s: float
    regions: tuple[str, ...]
    targets: int
    slos: tuple[Any, ...] = ()  # the spec's SLOs, judged on the result
    # The budget (orchestrator/analysis/budget.py): the run stops once the workers' cost or invocations pass it.
    max_cost_usd: float | None = None
    max_invocations: int | None = None

    def at(self, start_at: float) -> list[Shard]:
        """The shards with absolute start times, the run beginning at epoch ``start_at``."""
        return [dataclasses.replace(s, start_at=start_at + s.start_at) for s in self.shards]


def new_run_id(name: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:40]
    return f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def make(b: Benchmark, run_id: str | None = None, min_parts: int = 1) -> Plan:
    """The run's plan, made once; the run id is new unless given."""
    run_id = run_id or new_run_id(b.name)
    return Plan(
        run_id=run_id,
        name=b.name,
        shards=tuple(split(b, run_id, 0.0, min_parts=min_parts)),
        phase_seconds=phase_seconds(b),
        total_s=total_length(b),
        max_timeout_s=max(t.timeout for t in b.targets),
        regions=tuple(b.regions),
        targets=len(b.targets),
        slos=tuple(b.slos),
        max_cost_usd=b.max_cost_usd,
        max_invocations=b.max_invocations,
    )
