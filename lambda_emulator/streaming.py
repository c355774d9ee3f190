"""InvokeWithResponseStream on the local Lambda, and the Runtime API's streaming response mode.

Client side: ``POST /2021-11-15/functions/{name}/response-streaming-invocations`` (SigV4 as every
route) is answered ``200`` with ``Content-Type: application/vnd.amazon.eventstream``,
``X-Amz-Executed-Version`` and ``x-amzn-RequestId`` and a chunked body of event stream messages
(workers/platforms/aws_lambda/eventstream.py): the function's bytes as ``PayloadChunk`` events,
then one ``InvokeComplete`` (``ErrorCode``/``ErrorDetails`` when the invocation failed,
``LogResult`` — the 4 KB tail with the REPORT line — with ``X-Amz-Log-Type: Tail``).  A request
refused before the function runs (throttled, unknown function, a bad invocation type) is the
plain JSON error it is on the Invoke route.

Runtime side: a runtime that answers ``POST /2018-06-01/runtime/invocation/{id}/response`` with
``Lambda-Runtime-Function-Response-Mode: streaming`` (chunked; aws-lambda-ric's
``awslambda.streamifyResponse``) has each piece of its body forwarded to a streaming client as a
``PayloadChunk`` the moment it arrives, never kept; an error after the stream began comes as the
HTTP trailers ``Lambda-Runtime-Function-Error-Type`` and ``Lambda-Runtime-Function-Error-Body``
(base64 of the error document) and ends the stream with ``InvokeComplete`` ``ErrorCode`` = the
error type, ``ErrorDetails`` = the error document.  A buffered response (any runtime that does not
stream) reaches a streaming client as one ``PayloadChunk``, as AWS sends it.  The bytes are
passed on as they are: a Function-URL metadata prelude (JSON, 8 NUL bytes) a runtime writes is
payload here, as AWS hands it to InvokeWithResponseStream callers (aws/aws-lambda-web-adapter#476,
awslabs/aws-sdk-rust#1377).  A streamed response
reaching a plain Invoke is buffered (6 MB cap as always); trailers there make it an ``Unhandled``
error with the trailer's document.

Cap: a streamed response may exceed Invoke's 6 MB.  AWS documented a 20 MB soft limit until July
2025 and 200 MB since (config-rs-invoke-furls.html: "The maximum response payload size is 200 MB";
what's-new 2025/07 aws-lambda-response-streaming-200-mb-payloads).  Here it is
``MAX_STREAM_BYTES`` (200 MiB: whether AWS's MB is 10^6 or 2^20 bytes is not said): past it the invocation ends with
``InvokeComplete`` ``ErrorCode`` ``Function.ResponseSizeTooLarge`` and the runtime's request is
refused (413), as Invoke's 6 MB cap does.  Not modelled: the 2 MB/s bandwidth cap AWS applies
after the first 6 MB (loopback runs at its own speed), Function URLs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any
from urllib.parse import unquote

import orjson

from lambda_emulator import versions
from lambda_emulator.model import Function, error
from workers.platforms.aws_lambda.eventstream import encode_event

# lambda_emulator.server's LocalLambda and _HttpConn: named, not imported (server imports this module).
LocalLambda = Any
_HttpConn = Any

STREAM_PREFIX = "/2021-11-15/functions/"
STREAM_ACTION = "response-streaming-invocations"
MAX_STREAM_BYTES = 200 * 1024 * 1024
MODE_HEADER = b"lambda-runtime-function-response-mode"
ERROR_TYPE_TRAILER = b"lambda-runtime-function-error-type"
ERROR_BODY_TRAILER = b"lambda-runtime-function-error-body"
_END = b"0\r\n\r\n"
# Flow control: while more than HIGH_WATER bytes wait to go to the client, the runtime's
# connection is not read (the function's writes block, as on a slow network); reading resumes
# once they are down to LOW_WATER.  Without it a client that reads slowly would have the whole
# stream (up to MAX_STREAM_BYTES) held in the server's memory.
HIGH_WATER = 1024 * 1024
LOW_WATER = 256 * 1024


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class StreamingClient:
    """Stands for the client's connection in an ``Invocation``: what the Invoke route would
    ``reply`` becomes event stream messages; ``chunk`` forwards a piece of a streamed response."""

    __slots__ = ("conn", "started", "done", "sent_bytes", "streamed", "trailer_error", "request_id", "source",
                 "paused", "version")

    def __init__(self, conn: _HttpConn) -> None:
        self.conn = conn
        self.started = False  # the 200 head went out
        self.done = False  # InvokeComplete went out
        self.sent_bytes = 0  # payload bytes forwarded
        self.streamed = False  # the runtime answered in streaming mode
        self.trailer_error: tuple[str, bytes] | None = None  # (error type, error document) from trailers
        self.request_id = ""
        self.source: _HttpConn | None = None  # the runtime's connection the stream comes from
        self.paused = False  # reading from ``source`` paused until the client catches up
        self.version = "$LATEST"  # X-Amz-Executed-Version

    @property
    def closed(self) -> bool:
        return bool(self.conn.closed)

    def abort(self) -> None:
        self.conn.abort()

    def _start(self) -> None:
        if self.started or self.conn.closed:
            return
        self.started = True
        request_id = self.request_id
        self.conn.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.amazon.eventstream\r\nTransfer-Encoding: chunked\r\n"
            b"X-Amz-Executed-Version: " + self.version.encode("latin-1") + b"\r\nx-amzn-RequestId: "
            + request_id.encode("latin-1") + b"\r\n\r\n")

    def chunk(self, data: bytes) -> None:
        """A piece of the function's response, forwarded as it arrived."""
        if self.done or not data:
            return
        self._start()
        self.sent_bytes += len(data)
        if not self.conn.closed:
            transport = self.conn.transport
            transport.write(_chunk(encode_event("PayloadChunk", data)))
            source = self.source
            if (not self.paused and source is not None and not source.closed
                    and transport.get_write_buffer_size() > HIGH_WATER):
                self.paused = True
                source.transport.pause_reading()
                asyncio.get_running_loop().call_later(0.005, self._resume_when_drained)

    def _resume_when_drained(self) -> None:
        source = self.source
        if source is None or source.closed:
            self.paused = False
            return
        if self.done or self.conn.closed or self.conn.transport.get_write_buffer_size() <= LOW_WATER:
            self.paused = False
            source.transport.resume_reading()
        else:
            asyncio.get_running_loop().call_later(0.005, self._resume_when_drained)

    def reply(self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None) -> None:
        """What the Invoke route would answer: an error before the stream is that error; a 200
        (the invocation's end) is the rest of the payload, if any, then InvokeComplete."""
        if self.done:
            return
        hdrs = dict(headers or ())
        if status != 200 and not self.started:
            self.done = True
            self.conn.reply(status, body, headers)
            return
        self.request_id = self.request_id or hdrs.get("x-amzn-RequestId", "")
        if not self.started:
            self.version = hdrs.get("X-Amz-Executed-Version", self.version)
        self._start()
        failed = "X-Amz-Function-Error" in hdrs
        complete: dict[str, str] = {}
        if self.trailer_error is not None:
            complete["ErrorCode"], details = self.trailer_error
            complete["ErrorDetails"] = details.decode("utf-8", "replace")
        elif failed:
            complete["ErrorCode"], complete["ErrorDetails"] = _error_code(body), body.decode("utf-8", "replace")
        elif body and not self.streamed:  # a buffered response: one PayloadChunk
            self.chunk(body)
        if "X-Amz-Log-Result" in hdrs:
            complete["LogResult"] = hdrs["X-Amz-Log-Result"]
        self.done = True
        if not self.conn.closed:
            self.conn.transport.write(_chunk(encode_event("InvokeComplete", orjson.dumps(complete), "application/json"))
                                      + _END)


def _error_code(doc: bytes) -> str:
    """The error document's errorType (``Unhandled`` where it has none, e.g. a timeout's)."""
    try:
        kind = orjson.loads(doc).get("errorType")
    except (orjson.JSONDecodeError, AttributeError):
        kind = None
    return str(kind) if kind else "Unhandled"


def is_stream_route(path: str) -> bool:
    return path.startswith(STREAM_PREFIX)


def invoke(lam: LocalLambda, conn: _HttpConn, method: bytes, path: str, headers: dict[bytes, bytes], body: bytes,
           query: dict[str, str] | None = None) -> None:
    """The InvokeWithResponseStream route (called from ``LocalLambda.invoke_api``); a Qualifier
    (``?Qualifier=``, ``name:qualifier``) runs that version or alias, as Invoke does."""
    name, _, action = path[len(STREAM_PREFIX):].partition("/")
    fn: Function | None = lam._function(unquote(name))
    if action.rstrip("/") != STREAM_ACTION or method != b"POST":
        conn.reply(*error(404, "UnknownOperationException", f"{method.decode()} {path}"))
        return
    if fn is None:
        conn.reply(*error(404, "ResourceNotFoundException", f"Function not found: {lam._arn(unquote(name))}"))
        return
    qualifier, problem = versions.qualifier_of(unquote(name), query or {})
    target = versions.resolve(fn, qualifier)
    if problem is not None:
        conn.reply(*error(400, "InvalidParameterValueException", problem))
    elif target is None:
        conn.reply(*error(404, "ResourceNotFoundException", f"Function not found: {fn.arn}:{qualifier}"))
    else:
        client = StreamingClient(conn)
        client.version = target.version
        lam._invoke(client, target, headers, body)


def runtime_response(conn: _HttpConn) -> StreamingClient | None:
    """At a Runtime API request's headers: the streaming client its body goes to, piece by piece
    (and the body cap raised to MAX_STREAM_BYTES), when it is the current invocation's response
    in streaming mode and the invocation came by InvokeWithResponseStream; else None."""
    inst = conn.instance
    if inst is None or conn.headers.get(MODE_HEADER, b"").lower() != b"streaming":
        return None
    inv = inst.current
    if inv is None or not conn.url.endswith(b"/response") or inv.request_id.encode() not in conn.url:
        return None
    client = inv.client
    if not isinstance(client, StreamingClient):
        return None
    client.streamed = True
    client.request_id = inv.request_id
    client.version = inst.fn.version  # X-Amz-Executed-Version: the version whose instance runs it
    client.source = conn
    conn.cap = MAX_STREAM_BYTES
    return client


def trailer_error(headers: dict[bytes, bytes]) -> tuple[str, bytes] | None:
    """The streaming response's error trailers: (error type, error document), or None."""
    kind = headers.get(ERROR_TYPE_TRAILER)
    if not kind:
        return None
    raw = headers.get(ERROR_BODY_TRAILER, b"")
    try:
        doc = base64.b64decode(raw, validate=True) if raw else b""
    except (binascii.Error, ValueError):
        doc = raw
    if not doc:
        doc = orjson.dumps({"errorType": kind.decode("latin-1"), "errorMessage": ""})
    return kind.decode("latin-1"), doc


def finish_runtime_response(conn: _HttpConn, forward: StreamingClient | None, url: bytes, body: bytes) -> tuple[bytes, bytes]:
    """At the end of a Runtime API request: where trailers say the streamed response failed, the
    streaming client learns it, and a buffered one is answered as an error (its url becomes
    ``…/error`` and its body the error document).  Returns (url, body) for ``runtime_api``."""
    if conn.headers.get(MODE_HEADER, b"").lower() != b"streaming" or not url.endswith(b"/response"):
        return url, body
    failed = trailer_error(conn.headers)
    if failed is None:
        return url, body
    if forward is not None:
        forward.trailer_error = failed
        return url, body
    return url[:-len(b"response")] + b"error", failed[1]

