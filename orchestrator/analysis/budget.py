"""A budget guard: ``max_cost_usd`` and ``max_invocations`` on a spec.

Before a run (``fnbench validate``, ``plan``, ``run``, every scheduled firing: session.runnable) the
plan's cost is estimated and a plan whose estimate exceeds the budget is refused (exit 2, the key
named).  The estimate, stated as one, is

    invocations × expected billed ms × Memory Size × the price per GB-s, + the request fee

per target, region and phase window (warm-up included: it is billed too; a memory sweep counts every
step at its size):

- invocations: the arrival schedule's count over each window (orchestrator/run/plan.py phase_windows);
- expected billed ms: ``expected_billed_ms`` when the spec gives it, else the target's ``timeout`` — the
  worst case, as Lambda stops and bills an invocation at its timeout — plus, on the forced cold starts,
  Lambda's 10 s limit on the Init phase (billed for managed runtimes too since 1 Aug 2025);
- Memory Size: the sweep step's size, else ``expected_memory_mb``, else 10,240 MB (Lambda's largest:
  the worst case, as the planner does not ask the control plane);
- price: orchestrator/analysis/cost.py for the target's region and architecture; only platforms that
  bill (aws-lambda) cost anything.  A billed target in a region without a price cannot be estimated,
  so a ``max_cost_usd`` on it is refused rather than guessed.

During the run the workers' cost counters (``cost_usd`` + ``request_usd`` of each Interval, the
REPORT lines' Billed Duration priced by the invoker) and their invocations are summed centrally as the
deduplicated intervals arrive (``BudgetWatch``, an IntervalSink beside compare.SloWatch), and the run
stops like an SLO abort once either passes its budget: ``aborted_by`` says which, exit 1.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from orchestrator.analysis.cost import invocation_cost, load_pricing, price_for
from orchestrator.run import plan as planner
from orchestrator.run.spec import PLATFORMS, Benchmark, sizes, step_name
from workers.contract import Interval

MAX_MEMORY_MB = 10240  # Lambda's largest Memory Size
INIT_LIMIT_MS = 10_000.0  # Lambda's limit on the Init phase of an on-demand instance


@dataclass
class Line:
    target: str
    invocations: int
    expected_ms: float
    memory_mb: int
    cost_usd: float | None  # None: a billed target whose region has no price
    billed: bool


@dataclass
class Estimate:
    invocations: int = 0
    cost_usd: float | None = 0.0
    lines: list[Line] = field(default_factory=list)
    ms_from: str = ""
    memory_from: str = ""
    unpriced: list[str] = field(default_factory=list)

    def text(self) -> str:
        """The estimate in words: what it multiplies and where each number comes from."""
        billed = [ln for ln in self.lines if ln.billed]
        head = f"budget estimate (an estimate, not a bill): {self.invocations:,} invocations"
        if not billed:
            return head + "; no target bills (cost 0)"
        cost = "unknown (no price for " + ", ".join(self.unpriced) + ")" if self.cost_usd is None else f"${self.cost_usd:.6g}"
        parts = [f"{ln.target}: {ln.invocations:,} × {ln.expected_ms:g} ms × {ln.memory_mb} MB"
                 + ("" if ln.cost_usd is None else f" = ${ln.cost_usd:.6g}") for ln in billed]
        return (f"{head}, cost {cost} with request fees\n  " + "\n  ".join(parts)
                + f"\n  expected billed ms: {self.ms_from}\n  Memory Size: {self.memory_from}")


def _windows(b: Benchmark) -> list[tuple[str, int]]:
    """(phase, invocations) of each phase window of one target and region."""
    return [(phase, math.ceil(float(schedule.count(length)) - 1e-9))
            for phase, _warmup, _begin, length, schedule in planner.phase_windows(b)]


def estimate(b: Benchmark) -> Estimate:
    est = Estimate()
    if b.expected_billed_ms is not None:
        est.ms_from = f"expected_billed_ms ({b.expected_billed_ms:g} ms)"
    else:
        est.ms_from = ("each target's timeout, the worst case (Lambda bills at most the timeout), "
                       f"+ {INIT_LIMIT_MS:g} ms of Init on forced cold starts")
    steps: list[int | None] = list(sizes(b)) or [None]
    if steps != [None]:
        est.memory_from = "each memory sweep step's size"
    elif b.expected_memory_mb is not None:
        est.memory_from = f"expected_memory_mb ({b.expected_memory_mb} MB)"
    else:
        est.memory_from = f"{MAX_MEMORY_MB} MB, Lambda's largest (the worst case; set expected_memory_mb)"
    table = load_pricing()
    windows = _windows(b)
    for size in steps:
        for t in b.targets:
            if size is not None and size not in t.memory_sizes:
                continue
            platform = PLATFORMS[t.platform]
            memory = size or b.expected_memory_mb or MAX_MEMORY_MB
            price = None
            if platform.billed:
                address = platform.address(t)
                price = price_for(str(address.get("region") or "us-east-1"),
                                  str(address.get("architecture") or "x86_64"), table=table)
            n = 0
            cost: float | None = 0.0
            ms_shown = 0.0
            for phase, count in windows:
                count *= len(b.regions)
                ms = b.expected_billed_ms if b.expected_billed_ms is not None else \
                    t.timeout * 1000 + (INIT_LIMIT_MS if phase == "cold" else 0.0)
                ms_shown = max(ms_shown, ms)
                n += count
                if platform.billed and price is not None and cost is not None:
                    cost += count * invocation_cost(ms, memory, price, with_requests=True)
            if platform.billed and price is None:
                cost = None
                est.unpriced.append(t.name)
            name = step_name(t.name, size) if size is not None else t.name
            est.lines.append(Line(name, n, ms_shown, int(memory), cost if platform.billed else 0.0, platform.billed))
            est.invocations += n
            if est.cost_usd is not None:
                est.cost_usd = None if cost is None else est.cost_usd + (cost if platform.billed else 0.0)
    return est


def problems(b: Benchmark) -> list[str]:
    """A plan over its budget, each problem naming the key (checked with the plan's other limits)."""
    if b.max_cost_usd is None and b.max_invocations is None:
        return []
    est = estimate(b)
    out = []
    if b.max_invocations is not None and est.invocations > b.max_invocations:
        out.append(f"max_invocations: the plan makes {est.invocations:,} invocations (warm-up, load and cold starts, "
                   f"every region{' and sweep step' if sizes(b) else ''}), more than max_invocations "
                   f"{b.max_invocations:,}")
    if b.max_cost_usd is not None:
        if est.cost_usd is None:
            out.append(f"max_cost_usd: no price for {', '.join(est.unpriced)} (its region has none in the pricing "
                       "table; give one with --pricing / FNBENCH_LAMBDA_PRICING), so the plan's cost cannot be estimated")
        elif est.cost_usd > b.max_cost_usd:
            out.append(f"max_cost_usd: the plan's estimated cost ${est.cost_usd:.6g} exceeds max_cost_usd "
                       f"${b.max_cost_usd:g} ({est.invocations:,} invocations × expected billed ms from "
                       f"{est.ms_from} × Memory Size from {est.memory_from}); lower the load, or set "
                       "expected_billed_ms / expected_memory_mb to what the function really takes")
    return out


@dataclass(frozen=True)
class BudgetAbort:
    """The budget that stopped a run: the key, its limit and the running total when it passed."""

    key: str  # max_cost_usd | max_invocations
    limit: float
    value: float
    at: float  # epoch seconds the orchestrator saw it pass (and stopped every region)

    @property
    def message(self) -> str:
        shown = (lambda v: f"${v:.6g}") if self.key == "max_cost_usd" else (lambda v: f"{v:,.0f}")
        what = "cost counted by the workers" if self.key == "max_cost_usd" else "invocations"
        return f"budget {self.key} {shown(self.limit)} passed: {what} {shown(self.value)}; every region stopped"

    def to_dict(self) -> dict[str, Any]:
        return {"budget": self.key, "max": self.limit, "value": self.value, "at": self.at}


class BudgetWatch:
    """IntervalSink: the run's cost (the invokers' cost_usd + request_usd counters) and invocations,
    summed over the deduplicated intervals as they arrive; ``check()`` says when one passes its budget."""

    def __init__(self, max_cost_usd: float | None, max_invocations: int | None, spent_usd: float = 0.0,
                 invoked: int = 0) -> None:
        self.max_cost_usd = max_cost_usd
        self.max_invocations = max_invocations
        self.cost_usd = spent_usd  # a sweep's earlier steps
        self.invocations = invoked

    def add(self, iv: Interval) -> None:
        self.cost_usd += float(iv.counters.get("cost_usd", 0.0)) + float(iv.counters.get("request_usd", 0.0))
        self.invocations += sum(iv.outcomes.values())

    def close(self) -> None:
        """IntervalSink: nothing to release."""

    def check(self, now: float | None = None) -> BudgetAbort | None:
        at = time.time() if now is None else now
        if self.max_cost_usd is not None and self.cost_usd > self.max_cost_usd:
            return BudgetAbort("max_cost_usd", self.max_cost_usd, self.cost_usd, at)
        if self.max_invocations is not None and self.invocations > self.max_invocations:
            return BudgetAbort("max_invocations", float(self.max_invocations), float(self.invocations), at)
        return None
