"""When the local Lambda answers 429, and with which Reason: concurrency and scaling as AWS documents them.

An invoke that finds an idle instance is never throttled here.  One that needs a new instance is
refused, in this order, when

* the function has reserved concurrency and that many instances exist (busy or starting):
  ``ReservedFunctionConcurrentInvocationLimitExceeded``;
* the function has none, and the functions without reservations together already hold the
  account's unreserved concurrency (the account limit, 1,000 by default, less every reservation):
  ``ConcurrentInvocationLimitExceeded``;
* the function's concurrency scaling rate is spent: "for each function, your concurrency scaling
  rate is 1,000 execution environment instances every 10 seconds", refilled continuously ("Lambda
  makes a best attempt to refill your concurrency scaling rate continuously over time") and never
  above 1,000 ("Lambda doesn't accumulate unused portions of your concurrency scaling rate")
  (docs.aws.amazon.com/lambda/latest/dg/scaling-behavior.html).  A token bucket per function:
  capacity ``scaling_per_10s``, refilled at ``scaling_per_10s / 10`` per second, one token per new
  instance.  The Reason AWS gives for this case is not documented; ``FunctionInvocationRateLimitExceeded``
  (botocore's ThrottleReason enum's per-function rate limit) is this emulator's assumption.

The body is AWS's: ``{"Reason": …, "Type": "User", "message": "Rate Exceeded."}`` with
``x-amzn-ErrorType: TooManyRequestsException`` (as real accounts printed it, e.g. lithops'
``{"Reason":"CallerRateLimitExceeded","Type":"User","message":"Rate exceeded"}``).

PutFunctionConcurrency refuses a reservation that would leave less than the account's minimum
unreserved concurrency (100 on AWS, a tenth of its default limit; here at most a tenth of the
account limit, so that a small test account can still reserve): "You can reserve concurrency for as many functions as you like, as long as you
leave at least 100 simultaneous executions unreserved" (API reference, PutFunctionConcurrency).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

RESERVED = "ReservedFunctionConcurrentInvocationLimitExceeded"
ACCOUNT = "ConcurrentInvocationLimitExceeded"
SCALING = "FunctionInvocationRateLimitExceeded"  # assumed: AWS does not document this case's Reason
REASONS = (RESERVED, ACCOUNT, SCALING)
ACCOUNT_CONCURRENCY = 1000  # AWS's default account concurrency limit per Region
SCALING_PER_10S = 1000  # new execution environments per function per 10 s
UNRESERVED_MIN = 100  # the account concurrency PutFunctionConcurrency must leave unreserved


def _held(fn: Any) -> int:
    """Instances of the function and of every published version of it (lambda_emulator/versions.py)."""
    return len(fn.instances) + sum(len(v.instances) for v in getattr(fn, "versions", {}).values())


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class Limits:
    """The account's concurrency and each function's scaling rate (``fnbench lambda serve
    --account-concurrency --scaling-rate``)."""

    account_concurrency: int = ACCOUNT_CONCURRENCY
    scaling_per_10s: int = SCALING_PER_10S
    unreserved_min: int = UNRESERVED_MIN
    buckets: dict[str, _Bucket] = field(default_factory=dict)
    clock: Any = time.monotonic

    def __post_init__(self) -> None:
        for name in ("account_concurrency", "scaling_per_10s"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        self.unreserved_min = max(0, min(self.unreserved_min, self.account_concurrency // 10))

    def refuse_new_instance(self, fn: Any, functions: Iterable[Any]) -> str | None:
        """The Reason an invoke of ``fn`` that needs a new instance is throttled, or None (and a
        scaling token is taken)."""
        base = fn.base if getattr(fn, "base", None) is not None else fn  # a published version counts as its function
        if base.reserved is not None:
            if _held(base) >= base.reserved:
                return RESERVED
        else:
            reserved = used = 0
            for f in functions:
                if f.reserved is not None:
                    reserved += f.reserved
                else:
                    used += _held(f)
            if used >= self.account_concurrency - reserved:
                return ACCOUNT
        return None if self._take(base.name) else SCALING

    def _take(self, name: str) -> bool:
        now = self.clock()
        cap = float(self.scaling_per_10s)
        bucket = self.buckets.get(name)
        if bucket is None:
            bucket = self.buckets[name] = _Bucket(cap, now)
        else:
            bucket.tokens = min(cap, bucket.tokens + (now - bucket.at) * cap / 10.0)
            bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False

    def unreserved(self, functions: Iterable[Any], leaving_out: Any = None) -> int:
        """The account concurrency no function has reserved (``leaving_out``'s reservation not counted)."""
        return self.account_concurrency - sum(f.reserved for f in functions if f.reserved is not None and f is not leaving_out)

    def reservation_problem(self, fn: Any, n: int, functions: Iterable[Any]) -> str | None:
        """Why PutFunctionConcurrency cannot reserve ``n`` for ``fn`` (AWS's message), or None."""
        if n < 0:
            return "ReservedConcurrentExecutions must be at least 0"
        left = self.unreserved(functions, leaving_out=fn) - n
        if left < self.unreserved_min:
            return ("Specified ReservedConcurrentExecutions for function decreases account's "
                    f"UnreservedConcurrentExecution below its minimum value of [{self.unreserved_min}].")
        return None

    def account_settings(self, functions: Iterable[Any]) -> dict[str, Any]:
        """GetAccountSettings' AccountLimit (the concurrency part) and AccountUsage."""
        functions = list(functions)
        return {"AccountLimit": {"ConcurrentExecutions": self.account_concurrency,
                                 "UnreservedConcurrentExecutions": self.unreserved(functions),
                                 "TotalCodeSize": 80530636800, "CodeSizeUnzipped": 262144000,
                                 "CodeSizeZipped": 52428800},
                "AccountUsage": {"FunctionCount": len(functions), "TotalCodeSize": sum(f.code_size for f in functions)}}

    def describe(self) -> str:
        return (f"account concurrency {self.account_concurrency}, scaling rate {self.scaling_per_10s} new instances "
                "per function per 10 s")
