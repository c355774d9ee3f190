"""AWS Lambda pricing as data, and the cost of invocations from their REPORT lines.

Prices (``PRICING``, overridable by a JSON file: ``--pricing`` / ``FNBENCH_LAMBDA_PRICING``) are
per region and architecture: price per GB-second in monthly tiers, price per request, and the
date they are valid from.  Built in: us-east-1 (AWS's public price list), the reference every
published comparison uses; other regions come from the file (an unknown one has no cost, never a
guessed one).

The cost of one invocation is AWS Lambda Power Tuning's formula (computePrice)::

    ceil(billed ms) × price per ms at 128 MB × memory / 128        (no request fee)

with billed ms = the REPORT line's Billed Duration (on a SnapStart line it already includes Billed
Restore Duration: tests/fixtures/lambda_reports.jsonl holds real lines that show it);
``with_requests`` adds the request fee.  Billed ms are already whole milliseconds (1 ms billing
since Dec 2020), so summing GB-s × price gives the same total.  Tiers are per account per
month: a run is priced at the first tier unless ``tier_offset_gb_s`` says how much of the month
the account has already used.

Response streaming (InvokeWithResponseStream): each invocation's first 6 MB streamed are free, the
rest is charged per GB (``stream_gb_usd``, us-east-1 $0.008; ``streaming_cost``).  The invoker
counts the bytes past 6 MiB per invocation (``stream_billable_bytes``) and prices them with the
planner's ``stream_gb_usd`` (``stream_usd``); ``group_cost`` shows it and adds it to the
with-requests totals.  GB is taken as 2^30 bytes and 6 MB as 6 MiB (the Invoke payload limit's
6,291,456 bytes): the pricing page does not say which.

INIT billing: Billed Duration includes the Init phase for custom runtimes (provided.*) and
container images, and since 1 Aug 2025 for on-demand ZIP functions on managed runtimes too;
``init_billed`` (workers/platforms/aws_lambda/runtimes.py) is that rule (the local Lambda writes its REPORT by it).

Provisioned concurrency (https://aws.amazon.com/lambda/pricing/, "Provisioned Concurrency Pricing"): a
charge per GB-s *configured* (concurrency × memory, from the time it is enabled until it is disabled,
rounded up to the nearest five minutes; no free tier) and, for invocations that run on provisioned
instances, a lower Duration price per GB-s; requests at the usual price.  ``provisioned_charges`` is
the page's worked example; the invoker prices an invocation at the provisioned Duration price when its
target has ``provisioned_concurrency: N``, its REPORT has no Init Duration and no more than N of the
shard's invocations were in flight (an approximation: AWS sends nothing that says which instance served).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import SetupError
from workers.platforms.aws_lambda import STREAM_FREE_BYTES

PRICING_ENV = "FNBENCH_LAMBDA_PRICING"

# region → architecture → entry.  Tiers: (GB-s per month up to which the price applies, price per GB-s).
PRICING: dict[str, dict[str, dict[str, Any]]] = {
    "us-east-1": {
        # Provisioned concurrency (the same page; AWS's Price List usage types Lambda-Provisioned-Concurrency
        # and Lambda-Provisioned-GB-Second, -ARM for arm64): provisioned_gb_s_usd per GB-s configured,
        # provisioned_duration_gb_s_usd per GB-s of Duration on provisioned instances (not tiered).
        "x86_64": {"valid_from": "2020-12-01", "request_usd": 0.20 / 1e6, "stream_gb_usd": 0.008,
                   "gb_s_tiers": [[6e9, 0.0000166667], [15e9, 0.0000150000], [None, 0.0000133334]],
                   "provisioned_gb_s_usd": 0.0000041667, "provisioned_duration_gb_s_usd": 0.0000097222},
        "arm64": {"valid_from": "2021-09-29", "request_usd": 0.20 / 1e6, "stream_gb_usd": 0.008,
                  "gb_s_tiers": [[7.5e9, 0.0000133334], [18.75e9, 0.0000120001], [None, 0.0000106667]],
                  "provisioned_gb_s_usd": 0.0000033334, "provisioned_duration_gb_s_usd": 0.0000077778},
    },
}


@dataclass(frozen=True)
class Price:
    region: str
    architecture: str
    gb_s_usd: float  # the tier that applies
    request_usd: float
    valid_from: str
    provisioned_gb_s_usd: float = 0.0  # per GB-s of provisioned concurrency configured (0: not known)
    provisioned_duration_gb_s_usd: float = 0.0  # Duration on provisioned instances, per GB-s
    stream_gb_usd: float = 0.0  # response streaming, per GB past each invocation's first 6 MB

    @property
    def per_ms_128mb(self) -> float:
        """Power Tuning's base cost: one millisecond at 128 MB."""
        return self.gb_s_usd * 128 / 1024 / 1000

    def to_address(self) -> dict[str, Any]:
        """What a worker needs to count cost (rides in the target's address)."""
        out: dict[str, Any] = {"gb_s_usd": self.gb_s_usd, "request_usd": self.request_usd,
                               "source": f"{self.region} {self.architecture} from {self.valid_from}"}
        if self.provisioned_duration_gb_s_usd:
            out["provisioned_duration_gb_s_usd"] = self.provisioned_duration_gb_s_usd
        if self.stream_gb_usd:
            out["stream_gb_usd"] = self.stream_gb_usd
        return out


def load_pricing(path: str | Path | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """The built-in table, with a file's regions/architectures laid over it."""
    table = {r: dict(a) for r, a in PRICING.items()}
    path = path or os.environ.get(PRICING_ENV)
    if path:
        try:
            extra = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise SetupError(f"Lambda pricing file {path}: {exc}") from None
        if not isinstance(extra, dict):
            raise SetupError(f"Lambda pricing file {path}: expected {{region: {{architecture: entry}}}}")
        for region, archs in extra.items():
            table.setdefault(region, {}).update(archs)
    return table


def price_for(region: str, architecture: str = "x86_64", *, tier_offset_gb_s: float = 0.0,
              table: dict[str, dict[str, dict[str, Any]]] | None = None) -> Price | None:
    entry = (table or PRICING).get(region or "us-east-1", {}).get(architecture)
    if entry is None:
        return None
    price = entry["gb_s_tiers"][-1][1]
    for limit, tier_price in entry["gb_s_tiers"]:
        if limit is None or tier_offset_gb_s < limit:
            price = tier_price
            break
    return Price(region or "us-east-1", architecture, float(price), float(entry["request_usd"]), str(entry["valid_from"]),
                 provisioned_gb_s_usd=float(entry.get("provisioned_gb_s_usd", 0.0)),
                 provisioned_duration_gb_s_usd=float(entry.get("provisioned_duration_gb_s_usd", 0.0)),
                 stream_gb_usd=float(entry.get("stream_gb_usd", 0.0)))




def streaming_cost(streamed_bytes: int, price: Price) -> float:
    """One invocation's streaming charge: the bytes past its first 6 MB at the price per GB."""
    return max(0, streamed_bytes - STREAM_FREE_BYTES) / 2**30 * price.stream_gb_usd


def invocation_cost(billed_ms: float, memory_mb: float, price: Price, *, with_requests: bool = False) -> float:
    """Power Tuning: ceil(billed ms) × price per ms at 128 MB × memory / 128 (+ the request fee)."""
    cost = math.ceil(billed_ms) * price.per_ms_128mb * memory_mb / 128
    return cost + price.request_usd if with_requests else cost


def monthly_charges(invocations: int, billed_ms: float, memory_mb: float, price: Price, *,
                    free_gb_s: float = 0.0, free_requests: int = 0) -> dict[str, float]:
    """A month's bill the way AWS's pricing page works its examples: total GB-s less the free tier
    times the GB-s price, plus the requests beyond the free ones at the request price."""
    gb_s = invocations * gb_seconds(billed_ms, memory_mb)
    compute = max(0.0, gb_s - free_gb_s) * price.gb_s_usd
    requests = max(0, invocations - free_requests) * price.request_usd
    return {"gb_s": gb_s, "compute_usd": compute, "request_usd": requests, "total_usd": compute + requests}


PROVISIONED_BILLING_S = 300  # provisioned concurrency is billed in periods rounded up to five minutes


def provisioned_seconds(seconds: float) -> int:
    """How long a provisioned-concurrency configuration is billed: rounded up to five minutes."""
    return math.ceil(max(0.0, seconds) / PROVISIONED_BILLING_S) * PROVISIONED_BILLING_S


def provisioned_charges(concurrency: int, memory_mb: float, seconds: float, invocations: int, billed_ms: float,
                        price: Price) -> dict[str, float]:
    """The pricing page's provisioned-concurrency arithmetic: concurrency × memory (GB) × the time it
    was configured (rounded up to five minutes) × the provisioned price, plus every invocation's
    billed GB-s at the provisioned Duration price, plus requests (no free tier with it)."""
    configured_gb_s = concurrency * memory_mb / 1024 * provisioned_seconds(seconds)
    duration_gb_s = invocations * gb_seconds(billed_ms, memory_mb)
    pc = configured_gb_s * price.provisioned_gb_s_usd
    compute = duration_gb_s * price.provisioned_duration_gb_s_usd
    requests = invocations * price.request_usd
    return {"provisioned_gb_s": configured_gb_s, "provisioned_usd": pc, "gb_s": duration_gb_s, "compute_usd": compute,
            "request_usd": requests, "total_usd": pc + compute + requests}


def gb_seconds(billed_ms: float, memory_mb: float) -> float:
    return math.ceil(billed_ms) / 1000 * memory_mb / 1024


def group_cost(counters: dict[str, float]) -> dict[str, Any] | None:
    """A group's cost from its summed invoker counters (workers/platforms/aws_lambda/__init__.py):
    GB-s, the run's cost with and without the request fee, per invocation, per million, cold vs warm."""
    n = counters.get("billed_requests", 0)
    if not n or "cost_usd" not in counters:
        return None
    compute = counters["cost_usd"]
    requests = counters.get("request_usd", 0.0)
    cold_n = counters.get("billed_requests_cold", 0)
    out: dict[str, Any] = {
        "invocations": int(n), "gb_s": round(counters.get("gb_s", 0.0), 6),
        "cost_usd": compute, "cost_with_requests_usd": compute + requests,
        "per_invocation_usd": compute / n, "per_million_usd": compute / n * 1e6,
        "per_million_with_requests_usd": (compute + requests) / n * 1e6,
    }
    provisioned_n = counters.get("billed_requests_provisioned", 0)
    if provisioned_n:  # priced at the provisioned Duration price (the invoker's approximation, see above)
        out["provisioned"] = {"invocations": int(provisioned_n), "gb_s": round(counters.get("gb_s_provisioned", 0.0), 6)}
    if counters.get("stream_bytes"):  # InvokeWithResponseStream: bytes and the streaming charge
        streaming = counters.get("stream_usd", 0.0)
        out["streaming"] = {"bytes": int(counters["stream_bytes"]),
                            "billable_bytes": int(counters.get("stream_billable_bytes", 0)),
                            "usd": streaming, "per_million_usd": streaming / n * 1e6}
        out["cost_with_requests_usd"] = compute + requests + streaming
        out["per_million_with_requests_usd"] = (compute + requests + streaming) / n * 1e6
    if cold_n:
        cold = counters.get("cost_usd_cold", 0.0)
        out["cold"] = {"invocations": int(cold_n), "gb_s": round(counters.get("gb_s_cold", 0.0), 6),
                       "per_million_usd": cold / cold_n * 1e6}
        warm_n = n - cold_n
        if warm_n:
            out["warm"] = {"invocations": int(warm_n), "gb_s": round(counters.get("gb_s", 0.0) - counters.get("gb_s_cold", 0.0), 6),
                           "per_million_usd": (compute - cold) / warm_n * 1e6}
    return out
