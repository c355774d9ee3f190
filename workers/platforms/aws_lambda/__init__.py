"""The ``aws-lambda`` platform: SigV4-signed Invoke (2015-03-31) on fnbench's async HTTP engine.

No thread per call and no SDK on the hot path: each invoke goes on a keep-alive connection of
workers.platforms.http's pool, as bytes signed with ``workers.platforms.aws_lambda.sigv4``, rebuilt
once per second (workers.platforms.aws_lambda.signing.SignsEachSecond, shared with http targets that
have ``sigv4``).  The key is derived once per date/region/service.  Credentials come from the
standard botocore chain, looked up off the event loop and refreshed on a thread, never written anywhere.

Outcomes (DESIGN.md §4.7): ``X-Amz-Function-Error`` → function_error; 429 (TooManyRequests,
its Reason in the body) → throttled; other 4xx → http_4xx; 5xx (service errors) → http_5xx;
transport failures as the HTTP engine reports them.  The error type (``x-amzn-ErrorType``) of
each failed invoke is counted (``lambda_error:<Type>``), and each throttle by the Reason in its
body (``lambda_throttle:<Reason>``: one of botocore's ThrottleReason values, else ``unknown``).

With ``LogType: Tail`` (the default), the REPORT line in ``X-Amz-Log-Result`` gives the
platform's clocks (Duration, Billed Duration — which includes Billed Restore Duration —, Init Duration) and Max
Memory Used; an invocation with Init Duration is a cold start.  A missing or truncated REPORT is
counted (``report_missing``, ``report_truncated``), never guessed.  Billing totals for cost:
``billed_ms``, ``gb_s`` (Billed × Memory Size), ``billed_requests`` and their ``_cold`` parts and,
with a ``price`` in the address (the planner's, from orchestrator/analysis/cost.py), ``cost_usd`` (AWS Lambda
Power Tuning's formula, no request fee), ``cost_usd_cold`` and ``request_usd`` (the request fees).

Target address: ``function`` (name or ARN), ``qualifier``, ``region`` (default us-east-1),
``endpoint_url`` (default https://lambda.<region>.amazonaws.com; a local Lambda on loopback in
this repository), ``log_type`` (Tail | None), ``provisioned_concurrency`` (N: the orchestrator puts it on
the qualifier before the run and restores what was there after — orchestrator/subjects/provisioned.py;
here it prices Duration: an invocation without Init Duration while at most N of the shard's invocations
are in flight is billed at the provisioned Duration price, ``billed_requests_provisioned`` counts them),
``invoke_mode`` (buffered | stream).

``invoke_mode: stream``: InvokeWithResponseStream (POST /2021-11-15/functions/{name}/
response-streaming-invocations) on the same engine; the event stream is decoded as it arrives
(workers/platforms/aws_lambda/eventstream.py), never kept: time to first byte (the first
PayloadChunk) and to last byte (InvokeComplete), both from the due time, go to the ``ttfb`` and
``ttlb`` histograms of successful invocations; ``stream_bytes`` counts the payload, and
``stream_billable_bytes`` what each invocation streamed past its first 6 MiB (priced by the
planner's ``stream_gb_usd`` into ``stream_usd``).  InvokeComplete's ``ErrorCode`` → function_error
(counted ``lambda_error:<ErrorCode>``); a stream without InvokeComplete, or malformed, → other
(``stream_incomplete``, ``stream_malformed``).  The body bound is 256 MiB unless the target sets
``max_body_bytes`` (AWS streams at most 200 MB of payload; the bytes are counted, never kept).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
import time
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import orjson
from pydantic import BaseModel, Field, StrictInt

from workers import limits
from workers.contract import Outcome, Target
from workers.errors import SetupError
from workers.platforms import Done, Invocation, Platform
from workers.platforms.aws_lambda.eventstream import Decoder, EventStreamError
from workers.platforms.aws_lambda.report import MISSING, Report, from_log_result
from workers.platforms.aws_lambda.signing import SignsEachSecond
from workers.platforms.aws_lambda.sigv4 import Credentials, Signer, canonical_query
from workers.platforms.http import HttpInvoker, _Connection

_monotonic = time.monotonic
_OK = Outcome.ok
_FUNCTION_ERROR = Outcome.function_error
_THROTTLED = Outcome.throttled
MAX_ERROR_BODY = 1024
THROTTLE_COUNTER = "lambda_throttle:"  # + the Reason: the counter of each throttle (orchestrator/run/collect.py sums them)
_REASON = re.compile(rb'"Reason"\s*:\s*"([A-Za-z]{1,64})"')
# botocore's ThrottleReason (TooManyRequestsException.Reason); anything else is counted as "unknown".
THROTTLE_REASONS = frozenset({"ConcurrentInvocationLimitExceeded", "FunctionInvocationRateLimitExceeded",
                              "ReservedFunctionConcurrentInvocationLimitExceeded",
                              "ReservedFunctionInvocationRateLimitExceeded", "CallerRateLimitExceeded",
                              "ConcurrentSnapshotCreateLimitExceeded"})
INVOKE_MODES = ("buffered", "stream")
STREAM_FREE_BYTES = 6 * 1024 * 1024  # per invocation, not charged for streaming (AWS pricing page)
STREAM_MAX_BODY_BYTES = 256 * 1024 * 1024  # AWS's 200 MB streamed payload with its framing (counted, never kept)


def endpoint_for(address: dict[str, Any]) -> str:
    region = str(address.get("region") or "us-east-1")
    return str(address.get("endpoint_url") or f"https://lambda.{region}.amazonaws.com")


class _Call:
    """One invoke in flight: what its response's headers said, then its completion."""

    __slots__ = ("done", "inv", "function_error", "log_result", "error_type", "request_id", "trace_id", "concurrency",
                 "body", "decoder", "first_byte", "last_byte", "stream_bytes", "stream_error")

    def __init__(self, done: Done, inv: LambdaInvoker, concurrency: int = 0) -> None:
        self.done = done
        self.inv = inv
        self.concurrency = concurrency  # the shard's invocations in flight when it was sent, itself included
        self.function_error = False
        self.log_result: bytes | None = None
        self.error_type: bytes | None = None
        self.request_id = b""  # x-amzn-RequestId
        self.trace_id = ""  # the X-Amzn-Trace-Id root fnbench sent (as 32 hex digits), if any
        self.body = b""  # the start of an error's body (a throttle's Reason is read from it)
        # invoke_mode stream: the event stream decoder and what it found
        self.decoder: Decoder | None = None
        self.first_byte = 0.0  # monotonic: the first PayloadChunk's payload arrived
        self.last_byte = 0.0  # monotonic: InvokeComplete arrived
        self.stream_bytes = 0
        self.stream_error = ""  # "malformed" | "exception" ("" while fine)

    def __call__(self, outcome: Outcome, due: float, sent: float, end: float, info: Invocation | None = None) -> None:
        inv = self.inv
        inv.in_flight -= 1
        if outcome == _OK:
            if inv.stream:
                outcome, info = inv._streamed(self, outcome, due)
            if self.function_error:
                outcome = _FUNCTION_ERROR
                inv.function_errors += 1
            if inv.tail and outcome != Outcome.other:
                report = inv._report(self.log_result, self.concurrency)
                if info is None:
                    info = report
                elif report is not None:
                    report.ttfb_us, report.ttlb_us = info.ttfb_us, info.ttlb_us
                    info = report
        elif self.error_type is not None:
            inv._count_error(self.error_type)
            if self.error_type == b"ResourceNotFoundException" and not inv.failure:
                # Not a measurement: the function (or its qualifier) does not exist; the shard stops.
                inv.failure = (f"target {inv.target.name!r}: Lambda function {inv.function!r} not found "
                               f"(ResourceNotFoundException from {inv.endpoint})")
            if outcome != _THROTTLED and self.error_type.startswith(b"TooManyRequests"):
                outcome = _THROTTLED
            if outcome == _THROTTLED:
                inv._count_throttle(self.body)
        if self.request_id or self.trace_id:  # read only if it turns out one of the slowest
            if info is None:
                info = Invocation()
            info.request_id = self.request_id.decode("latin-1")[:200]
            info.trace_id = self.trace_id
        self.done(outcome, due, sent, end, info)


class _LambdaConnection(_Connection):
    """A pool connection that sends the invoker's current signed request and reads Lambda's
    response headers into the request's ``_Call``."""

    __slots__ = ()

    def send(self, due: float, done: Done, payload: bytes, user: Any) -> None:
        if isinstance(done, _Call):  # a resend after a closed keep-alive connection
            user.in_flight -= 1
            done = done.done
        user.in_flight += 1
        call = _Call(done, user, user.in_flight)
        super().send(due, call, user.signed(), user)
        call.trace_id = self.trace

    def on_header(self, name: bytes, value: bytes) -> None:
        call = self.done
        if not isinstance(call, _Call) or len(name) < 13:
            return
        lname = name.lower()
        if lname == b"x-amz-log-result":
            call.log_result = value
        elif lname == b"x-amz-function-error":
            call.function_error = True
        elif lname == b"x-amzn-errortype":
            call.error_type = value.split(b":", 1)[0]
        elif lname == b"x-amzn-requestid":
            call.request_id = value

    def on_body(self, body: bytes) -> None:
        call = self.done
        # Only an error's body is looked at (a throttle's Reason); a function's response is not kept.
        if isinstance(call, _Call) and call.error_type is not None and len(call.body) < MAX_ERROR_BODY:
            call.body += body[:MAX_ERROR_BODY]


class _StreamConnection(_LambdaConnection):
    """invoke_mode stream: the 200 response's body is an event stream, decoded piece by piece."""

    __slots__ = ()

    def on_body(self, body: bytes) -> None:
        call = self.done
        if self.parser.get_status_code() != 200:  # an error's JSON (a throttle's Reason)
            super().on_body(body)
            return
        if not isinstance(call, _Call) or call.stream_error:
            return
        decoder = call.decoder
        if decoder is None:
            decoder = call.decoder = Decoder()
        try:
            messages = decoder.feed(body)
        except EventStreamError:
            call.stream_error = "malformed"
            return
        for headers, payload in messages:
            if headers.get(":message-type") != "event":  # an exception or error message
                call.stream_error = "exception"
                call.error_type = str(headers.get(":exception-type") or headers.get(":error-code") or "").encode()
                return
            kind = headers.get(":event-type")
            if kind == "PayloadChunk":
                if not call.first_byte and payload:
                    call.first_byte = _monotonic()
                call.stream_bytes += len(payload)
            elif kind == "InvokeComplete":
                call.last_byte = _monotonic()
                try:
                    doc = orjson.loads(payload or b"{}")
                except orjson.JSONDecodeError:
                    call.stream_error = "malformed"
                    return
                if not isinstance(doc, dict):
                    call.stream_error = "malformed"
                    return
                if doc.get("ErrorCode"):
                    call.function_error = True
                    call.error_type = str(doc["ErrorCode"]).encode()[:200]
                if doc.get("LogResult"):
                    call.log_result = str(doc["LogResult"]).encode()


class LambdaInvoker(SignsEachSecond, HttpInvoker):
    def __init__(self, target: Target) -> None:
        address = dict(target.address)
        function = str(address.get("function") or "")
        if not function:
            raise SetupError(f"target {target.name!r}: the aws-lambda platform needs address.function")
        self.region = str(address.get("region") or "us-east-1")
        endpoint = endpoint_for(address).rstrip("/")
        self.function = function + (f":{address['qualifier']}" if address.get("qualifier") else "")
        self.endpoint = endpoint
        self.failure = ""  # set when Lambda says the function does not exist (workers.shard stops the shard)
        mode = address.get("invoke_mode", "buffered")
        if mode not in INVOKE_MODES:
            raise SetupError(f"target {target.name!r}: invoke_mode is buffered or stream, got {mode!r}")
        self.stream = mode == "stream"
        if self.stream:  # InvokeWithResponseStream
            self.path = f"/2021-11-15/functions/{quote(function, safe='')}/response-streaming-invocations"
        else:
            self.path = f"/2015-03-31/functions/{quote(function, safe='')}/invocations"
        params = [("Qualifier", str(address["qualifier"]))] if address.get("qualifier") else []
        self.query = canonical_query(params)
        url = endpoint + self.path + (f"?{self.query}" if self.query else "")
        log_type = str(address.get("log_type") or "Tail")
        if log_type not in ("Tail", "None"):
            raise SetupError(f"target {target.name!r}: log_type is Tail or None, got {log_type!r}")
        self.tail = log_type == "Tail"
        # The HTTP engine's view: where to connect, the timeout, the pool key.
        http_target = dataclasses.replace(target, url=url, method="POST", headers=(), body=target.body or "{}")
        super().__init__(http_target)
        self.conn_class = _StreamConnection if self.stream else _LambdaConnection
        if self.stream and "max_body_bytes" not in address:
            self.max_body = STREAM_MAX_BODY_BYTES
        parts = urlsplit(url)
        self.host_header = parts.netloc
        self.body = (target.body or "{}").encode()
        self.payload_hash = hashlib.sha256(self.body).hexdigest()
        self.signer = Signer(self.region, "lambda")
        self.init_signing()
        self.function_errors = 0
        self.report_missing = 0
        self.report_truncated = 0
        self.cold = 0
        self.billed_ms = self.billed_ms_cold = 0.0
        self.gb_s = self.gb_s_cold = 0.0
        self.billed_requests = 0
        self.errors: dict[bytes, int] = {}
        self.throttles: dict[str, int] = {}  # 429s by Reason
        self.peak_memory_mb = 0.0
        # Prices the planner attached (orchestrator/analysis/cost.py); none: GB-s only.
        price = address.get("price") or {}
        self.per_ms_128 = float(price.get("gb_s_usd", 0.0)) * 128 / 1024 / 1000
        self.request_usd = float(price.get("request_usd", 0.0))
        self.priced = bool(price)
        self.cost_usd = self.cost_usd_cold = 0.0
        self.billed_requests_cold = 0
        # Provisioned concurrency: Duration on provisioned instances at its own price (no price: the on-demand one).
        self.provisioned_n = int(address.get("provisioned_concurrency") or 0)
        self.pc_per_ms_128 = float(price.get("provisioned_duration_gb_s_usd", 0.0)) * 128 / 1024 / 1000 or self.per_ms_128
        self.in_flight = 0
        self.billed_requests_provisioned = 0
        self.gb_s_provisioned = 0.0
        self.stream_gb_usd = float(price.get("stream_gb_usd", 0.0))
        self.stream_bytes = self.stream_billable_bytes = 0
        self.stream_incomplete = self.stream_malformed = 0

    @property
    def key(self) -> tuple[Any, ...]:
        return ("aws-lambda", *super().key)

    async def start(self) -> None:
        await self.start_signing()
        await super().start()

    def trace_header(self, trace: str) -> bytes:
        """X-Ray's header (Lambda passes it to the function as _X_AMZN_TRACE_ID); not signed."""
        return b"x-amzn-trace-id: Root=1-%s-%s;Parent=%s;Sampled=1\r\n" % (
            trace[:8].encode(), trace[8:].encode(), os.urandom(8).hex().encode())

    # -- signing (SignsEachSecond: once per second, credentials from the standard chain) ------
    def request_headers(self, amz_date: str, creds: Credentials) -> dict[str, str]:
        """The signed headers (and Authorization) of one Invoke at ``amz_date``."""
        headers = {
            "host": self.host_header,
            "content-type": "application/json",
            "x-amz-date": amz_date,
            "x-amz-invocation-type": "RequestResponse",
            "x-amz-log-type": "Tail" if self.tail else "None",
        }
        if creds.token:
            headers["x-amz-security-token"] = creds.token
        headers["authorization"] = self.signer.authorization("POST", self.path, self.query, headers,
                                                             self.payload_hash, amz_date, creds)
        return headers

    def request_bytes(self, amz_date: str, creds: Credentials) -> bytes:
        headers = self.request_headers(amz_date, creds)
        target = self.path + (f"?{self.query}" if self.query else "")
        head = f"POST {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head += f"user-agent: fnbench/0.1\r\naccept: */*\r\ncontent-length: {len(self.body)}\r\n\r\n"
        return head.encode("latin-1") + self.body

    # -- responses ------------------------------------------------------------------------------
    def _streamed(self, call: _Call, outcome: Outcome, due: float) -> tuple[Outcome, Invocation | None]:
        """A 200 to InvokeWithResponseStream: its outcome and times from what the stream held."""
        if call.stream_error or not call.last_byte:
            if call.stream_error == "exception":
                self._count_error(call.error_type or b"exception")
            elif call.stream_error:
                self.stream_malformed += 1
            else:
                self.stream_incomplete += 1
            return Outcome.other, None
        n = call.stream_bytes
        self.stream_bytes += n
        self.stream_billable_bytes += max(0, n - STREAM_FREE_BYTES)
        if call.function_error:
            self._count_error(call.error_type or b"Unhandled")
            return outcome, None
        info = Invocation()
        first = call.first_byte or call.last_byte  # an empty stream: its first byte is its end
        info.ttfb_us = int((first - due) * 1e6)
        info.ttlb_us = int((call.last_byte - due) * 1e6)
        return outcome, info

    def _count_error(self, kind: bytes) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def _count_throttle(self, body: bytes) -> None:
        m = _REASON.search(body)
        reason = m.group(1).decode() if m else ""
        reason = reason if reason in THROTTLE_REASONS else "unknown"
        self.throttles[reason] = self.throttles.get(reason, 0) + 1

    def _report(self, log_result: bytes | None, concurrency: int = 0) -> Invocation | None:
        if log_result is None:
            self.report_missing += 1
            return None
        found = from_log_result(log_result)
        if not isinstance(found, Report):
            if found is MISSING:
                self.report_missing += 1
            else:
                self.report_truncated += 1
            return None
        billed = found.billed_total_ms
        gb_s = billed / 1000.0 * found.memory_mb / 1024.0
        init = found.init_ms if found.init_ms is not None else found.restore_ms
        per_ms_128 = self.per_ms_128
        if self.provisioned_n and init is None and concurrency <= self.provisioned_n:  # served by a provisioned instance
            per_ms_128 = self.pc_per_ms_128
            self.billed_requests_provisioned += 1
            self.gb_s_provisioned += gb_s
        # AWS Lambda Power Tuning: ceil(billed ms) x price per ms at 128 MB x memory / 128.
        cost = math.ceil(billed) * per_ms_128 * found.memory_mb / 128
        self.billed_ms += billed
        self.gb_s += gb_s
        self.cost_usd += cost
        self.billed_requests += 1
        if found.max_memory_mb > self.peak_memory_mb:
            self.peak_memory_mb = found.max_memory_mb
        info = Invocation(memory_mb=found.max_memory_mb, platform_us=int(found.duration_ms * 1000),
                          billed_us=int(billed * 1000), report=found)
        if init is not None:
            self.cold += 1
            self.billed_ms_cold += billed
            self.gb_s_cold += gb_s
            self.cost_usd_cold += cost
            self.billed_requests_cold += 1
            info.cold = True
            info.init_duration_us = int(init * 1000)
        return info

    def counters(self) -> dict[str, float]:
        counts = super().counters()
        for name in ("function_errors", "report_missing", "report_truncated", "billed_requests",
                     "credential_refresh_failures", "billed_requests_provisioned"):
            value = getattr(self, name)
            if value:
                counts[name] = value
        if self.billed_requests:
            counts["billed_ms"] = round(self.billed_ms, 3)
            counts["gb_s"] = self.gb_s
            if self.billed_requests_provisioned:
                counts["gb_s_provisioned"] = self.gb_s_provisioned
            if self.priced:
                counts["cost_usd"] = self.cost_usd
                counts["request_usd"] = self.billed_requests * self.request_usd
            if self.cold:
                counts["billed_requests_cold"] = self.billed_requests_cold
                counts["billed_ms_cold"] = round(self.billed_ms_cold, 3)
                counts["gb_s_cold"] = self.gb_s_cold
                if self.priced:
                    counts["cost_usd_cold"] = self.cost_usd_cold
        if self.stream:
            for name in ("stream_bytes", "stream_billable_bytes", "stream_incomplete", "stream_malformed"):
                value = getattr(self, name)
                if value:
                    counts[name] = value
            if self.stream_billable_bytes and self.priced:
                counts["stream_usd"] = self.stream_billable_bytes / 2**30 * self.stream_gb_usd
        for kind, n in self.errors.items():
            counts[f"lambda_error:{kind.decode('latin-1')}"] = n
        for reason, n in self.throttles.items():
            counts[THROTTLE_COUNTER + reason] = n
        if self.peak_memory_mb:
            counts["max_memory_mb"] = self.peak_memory_mb
        return counts




class LambdaColdInvoker(LambdaInvoker):
    """Forced cold starts, the lambda-perf / SeBS way: before each invocation, bump an environment
    variable (``FNBENCH_COLD_START``) with UpdateFunctionConfiguration, wait until the function's
    LastUpdateStatus is Successful with the new RevisionId (every instance is then retired), and
    invoke.  The sample is accepted only if its REPORT has Init Duration (or Restore Duration);
    otherwise the function is forced again, at most ``max_forces`` times (``cold_reforced``), and a
    sample never made cold is ``other`` (``cold_not_forced``).  A failed invoke (throttled, 5xx,
    timeout) is accepted as the outcome it is.

    On an alias (``qualifier``), a forcing is: the same update of $LATEST, then PublishVersion and
    UpdateAlias to the new version (a published version is immutable, so a numbered qualifier cannot be
    forced).  With ``provisioned_concurrency`` on the alias, Lambda re-provisions the alias on the new
    version: the forcing waits until it is READY again, and the sample — the first invocation on a freshly
    provisioned instance, which has no Init Duration — is accepted as it is (what a client meets right
    after a deployment when provisioned concurrency is configured).

    The control plane (boto3, the standard credential chain, on a thread) is paced — at least
    ``control_plane_interval_s`` (default 0.2 s) between calls — bounded (``update_timeout_s``,
    default 60 s, per force) and never counted as load: forcings run one at a time, and the time
    spent forcing moves the invocation's due time (response time is measured from when the
    function was ready to be invoked cold, send lag from there too).
    """

    def __init__(self, target: Target) -> None:
        super().__init__(target)
        address = target.address
        qualifier = str(address.get("qualifier") or "")
        if qualifier.isdigit():
            raise SetupError(f"target {target.name!r}: forced cold starts cannot work on version {qualifier}: "
                             "a published version is immutable (name an alias instead)")
        self.alias = "" if qualifier in ("", "$LATEST") else qualifier
        self.function = str(address["function"])
        self.endpoint_url = str(address.get("endpoint_url") or "") or None
        self.pace_s = float(address.get("control_plane_interval_s", 0.2))
        self.max_forces = max(1, int(address.get("max_forces", 3)))
        self.update_timeout_s = float(address.get("update_timeout_s", 60.0))
        self.control: Any = None  # workers.platforms.aws_lambda.control.ControlPlane
        self.lock: Any = None
        self.tasks: set[Any] = set()
        self.forced = self.reforced = self.not_forced = self.force_failed = 0

    async def start(self) -> None:
        import asyncio

        await super().start()
        self.lock = asyncio.Lock()
        if self.control is None:
            self.control = await asyncio.get_running_loop().run_in_executor(None, self._client)

    def _client(self) -> Any:
        from workers.platforms.aws_lambda import control as lambda_control

        return lambda_control.Versions(lambda_control.client(self.region, self.endpoint_url), self.function,
                                       pace_s=self.pace_s)

    def invoke(self, due: float, done: Done) -> None:
        import asyncio

        task = asyncio.get_running_loop().create_task(self._cold(due, done))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _cold(self, due: float, done: Done) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        reported = False
        queued = _monotonic()
        try:
            async with self.lock:
                # Waiting for the previous sample's forcing is preparation too: it is not load.
                prep = max(0.0, _monotonic() - max(queued, due))
                for attempt in range(self.max_forces):
                    began = _monotonic()
                    forced = await loop.run_in_executor(None, self._force)
                    prep += _monotonic() - began
                    if not forced:
                        self.force_failed += 1
                        now = _monotonic()
                        reported = True
                        done(Outcome.other, due + prep, now, now)
                        return
                    self.forced += 1
                    fut: asyncio.Future[tuple[Any, ...]] = loop.create_future()
                    LambdaInvoker.invoke(self, due + prep, _resolver(fut))
                    outcome, d, sent, end, *rest = await fut
                    info = rest[0] if rest else None
                    if outcome not in (_OK, _FUNCTION_ERROR) or (info is not None and info.cold) or self.provisioned_n:
                        reported = True
                        done(outcome, d, sent, end, info)
                        return
                    if attempt + 1 < self.max_forces:
                        self.reforced += 1
                        prep += end - sent  # the rejected warm invocation is preparation too
                self.not_forced += 1
                reported = True
                done(Outcome.other, d, sent, end)
        except asyncio.CancelledError:
            if not reported:
                now = _monotonic()
                done(Outcome.other, due, now, now)
            raise

    def _force(self) -> bool:
        """Bump FNBENCH_COLD_START and wait for the update to land (on a thread; bounded)."""

        def bump(cfg: dict[str, Any]) -> dict[str, Any]:
            variables = dict((cfg.get("Environment") or {}).get("Variables") or {})
            variables["FNBENCH_COLD_START"] = str(time.time_ns())
            return {"Environment": {"Variables": variables}}

        deadline = _monotonic() + self.update_timeout_s
        if self.control.update(bump, self.update_timeout_s) is not None:
            return False
        if not self.alias:
            return True
        if self.control.publish_to_alias(self.alias, max(1.0, deadline - _monotonic())) is not None:
            return False
        if self.provisioned_n:  # re-provisioned on the new version: first invocation once READY
            return self.control.wait_provisioned(self.alias, max(1.0, deadline - _monotonic())) is None
        return True

    async def close(self) -> None:
        import asyncio

        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        await super().close()

    def counters(self) -> dict[str, float]:
        counts = super().counters()
        for name, value in (("cold_forced", self.forced), ("cold_reforced", self.reforced),
                            ("cold_not_forced", self.not_forced), ("cold_force_failed", self.force_failed),
                            ("control_plane_calls", self.control.calls if self.control else 0)):
            if value:
                counts[name] = value
        return counts


def _resolver(fut: Any) -> Done:
    def done(outcome: Outcome, due: float, sent: float, end: float, info: Invocation | None = None) -> None:
        if not fut.done():
            fut.set_result((outcome, due, sent, end, info))

    return done


def make_invoker(target: Target, phase: str, max_in_flight: int) -> LambdaInvoker:
    """The ``aws-lambda`` platform's factory: forced cold starts in the cold phase."""
    return LambdaColdInvoker(target) if phase == "cold" else LambdaInvoker(target)


# ------------------------------------------------------------------ the platform's declaration


class TargetFields(BaseModel):
    """What a spec's target says about a Lambda function (the task's address)."""

    function: str = ""  # the function's name or ARN
    qualifier: str = ""
    region: str = Field(default="", pattern=r"^([a-z]{2}(-[a-z]+)+-\d+)?$")  # the AWS region (us-east-1)
    endpoint_url: str = ""  # another Lambda endpoint (the local one: http://127.0.0.1:9001)
    log_type: Literal["Tail", "None"] = "Tail"  # Tail returns the REPORT line (platform clocks)
    # buffered: Invoke; stream: InvokeWithResponseStream (time to first/last byte, bytes streamed)
    invoke_mode: Literal["buffered", "stream"] = "buffered"
    architecture: Literal["x86_64", "arm64"] = "x86_64"  # which price applies
    # Provisioned concurrency on ``qualifier`` (a version or alias) for the run: put before, restored after.
    provisioned_concurrency: StrictInt | None = None


def target_problems(t: Any, cold_start: bool) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if not t.function:
        problems.append(("function", "the aws-lambda platform needs a function name"))
    if cold_start and t.qualifier.isdigit():
        problems.append(("qualifier", f"forced cold starts cannot work on version {t.qualifier}: a published "
                         "version is immutable and its instances stay warm; name an alias (each forced cold start "
                         "publishes a new version and moves the alias), leave qualifier empty, or turn cold_start off"))
    pc = t.provisioned_concurrency
    if pc is not None:
        if isinstance(pc, bool) or not isinstance(pc, int) or pc < 1:
            problems.append(("provisioned_concurrency", f"a whole number of 1 or more, got {pc!r}"))
        elif t.qualifier in ("", "$LATEST"):
            problems.append(("provisioned_concurrency", "needs a qualifier that is a published version or an alias: "
                             "AWS refuses provisioned concurrency on $LATEST (set qualifier)"))
    return problems


def target_address(t: Any) -> dict[str, Any]:
    address: dict[str, Any] = {k: v for k, v in (("function", t.function), ("qualifier", t.qualifier)) if v}
    address.update({"region": t.region or "us-east-1", "log_type": t.log_type, "architecture": t.architecture})
    if t.endpoint_url:
        address["endpoint_url"] = t.endpoint_url
    if t.provisioned_concurrency:
        address["provisioned_concurrency"] = t.provisioned_concurrency
    if t.invoke_mode != "buffered":
        address["invoke_mode"] = t.invoke_mode
    return address


def target_refusals(target: Target) -> list[tuple[str, str]]:
    """FNBENCH_ALLOWED_TARGETS on the Lambda endpoint's host (blamed on endpoint_url, else region)."""
    address = target.address
    field = "endpoint_url" if address.get("endpoint_url") else "region"
    endpoint = str(address.get("endpoint_url") or f"https://lambda.{address.get('region') or 'us-east-1'}.amazonaws.com/")
    return [(field, m) for m in limits.host_refusals(endpoint)]


PLATFORM = Platform("aws-lambda", make_invoker, fields=TargetFields, problems=target_problems, address=target_address,
                    refusals=target_refusals, cold_starts=True, billed=True)
