"""HTTP/1.1 invoker on asyncio Protocols with the httptools parser (no per-request task).

Each connection carries one request at a time (keep-alive, no pipelining).  The request
bytes are encoded once per target.  Timeouts are enforced by one sweep over the busy
connections instead of a timer per request.  httpx is deliberately not used here: on this
machine it sustains ~134 req/s per core at 64 connections (encode/httpx#3215).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
import time
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import httptools

from workers.contract import Outcome, Target
from workers.errors import SetupError
from workers.platforms import _ENV_REF, Done, resolve_env

_monotonic = time.monotonic

# RFC 7230 §3.2.6 token (header names, methods); what may not appear in a field value (every
# control character but HTAB: CR/LF would start a new header, NUL ends strings in C servers);
# what may not appear anywhere in a URL (space and controls; Python's urlsplit silently drops
# tabs and newlines, so the raw string is checked before it is split).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_BAD_URL = re.compile(r"[\x00-\x20\x7f]")
_REG_NAME = re.compile(r"[a-z0-9._-]+")  # urlsplit lower-cases the host; IDNA names in xn-- form
_FRAMING = frozenset({"content-length", "transfer-encoding"})  # the encoder frames the body itself
_PRINTABLE_ASCII = "".join(map(chr, range(0x21, 0x7F)))  # quote() with these safe: only non-ASCII changes


def _describe(ch: str) -> str:
    return "a space" if ch == " " else f"the control character {ch!r}"


def request_problems(
    url: str, method: str, headers: Sequence[tuple[str, str]], *, references: bool = True
) -> list[tuple[str, str]]:
    """Every reason ``encode_request`` would refuse this request, as (field, message) pairs.

    Fields are ``url``, ``method`` and ``headers.<Name>``.  Header names must be RFC 7230
    tokens; values may not hold CR, LF, NUL or other control characters (HTAB excepted) and
    must be latin-1 encodable.  The URL must be ``http(s)://host[:port]/path`` with a port in
    1–65535 and no spaces or control characters anywhere; non-ASCII characters in the path and
    query are allowed and are percent-encoded (UTF-8) by the encoder.  Content-Length and
    Transfer-Encoding are the encoder's to set.

    With ``references`` (validate time, before the worker resolves them), each ``${env:NAME}``
    counts as a harmless placeholder, so only the literal parts are checked, and messages may
    quote the spec's text.  The encoder calls it again on the resolved values with
    ``references=False``; then no value is quoted back, as it may hold a secret.
    """
    problems: list[tuple[str, str]] = []
    sub = (lambda v: _ENV_REF.sub("1", v)) if references else (lambda v: v)
    problems.extend(("url", m) for m in _url_problems(sub(url), url if references else ""))
    if not _TOKEN.fullmatch(method):
        problems.append(("method", "must be an HTTP token such as GET or POST"))
    for name, value in headers:
        token = bool(_TOKEN.fullmatch(name))
        field = f"headers.{name}" if token else f"headers.{name!r}"
        if not token:
            problems.append((field, "a header name must be an RFC 7230 token: letters, digits and !#$%&'*+-.^_`|~"))
        elif name.lower() in _FRAMING:
            problems.append((field, "is set by fnbench from the body; remove it"))
        v = sub(value)
        bad = _BAD_VALUE.search(v)
        if bad:
            problems.append((field, f"must not contain {_describe(bad.group())} (CR/LF would inject headers)"))
        try:
            v.encode("latin-1")
        except UnicodeEncodeError:
            problems.append((field, "is not latin-1 encodable; percent-encode it (e.g. %E2%82%AC) or use ASCII"))
    return problems


def _url_problems(url: str, shown: str) -> list[str]:
    got = f", got {shown!r}" if shown else ""
    bad = _BAD_URL.search(url)
    if bad:
        return [f"contains {_describe(bad.group())} at position {bad.start()}; percent-encode it (a space is %20)"]
    try:
        parts = urlsplit(url)
    except ValueError:  # unbalanced brackets
        return [f"an IPv6 host is written [address]:port{got}"]
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return [f"expected http(s)://host[:port]/path{got}"]
    problems: list[str] = []
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if at:
        problems.append("credentials in the URL are not sent; use an Authorization header with ${env:NAME}")
    if hostport.startswith("["):
        host, close, port = hostport[1:].partition("]")
        if not close or (port and not port.startswith(":")):
            return problems + [f"an IPv6 host is written [address]:port{got}"]
        port = port[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            problems.append(f"{host!r} is not an IPv6 address" if shown else "the host is not an IPv6 address")
    else:
        host, _, port = hostport.partition(":")
        if not _REG_NAME.fullmatch(host.lower()):
            problems.append(
                "the host must be a name of letters, digits, '.', '-' (IDNA names in their xn-- form) "
                f"or an IP address{got}"
            )
    if ":" in hostport.rpartition("]")[2] and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        problems.append(f"the port must be a number from 1 to 65535{got}")
    return problems


def encode_request(target: Target) -> tuple[bytes, str, int, bool, str]:
    """Pre-encode the request; returns (bytes, host, port, tls, server_name).

    Refuses (SetupError naming the target and field) anything ``request_problems`` finds in
    the resolved URL, method and headers, so nothing from a spec or the environment can add a
    header or split the request line.
    """
    where = f"target {target.name!r}"
    url = resolve_env(target.url, f"{where}.url")
    resolved = [(name, resolve_env(value, f"{where}.headers.{name}")) for name, value in target.headers]
    problems = request_problems(url, target.method, resolved, references=False)
    if problems:
        raise SetupError("; ".join(f"{where}.{field}: {message}" for field, message in problems))
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    assert parts.hostname is not None  # request_problems found a host
    port = parts.port or (443 if tls else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if not path.isascii():
        path = quote(path, safe=_PRINTABLE_ASCII)
    host_header = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    if ":" in parts.hostname and parts.port is not None:
        host_header = f"[{parts.hostname}]:{parts.port}"
    body = resolve_env(target.body, f"{where}.body").encode()
    headers = {"host": host_header, "user-agent": "fnbench/0.1", "accept": "*/*"}
    if body or target.method.upper() in ("POST", "PUT", "PATCH"):
        headers["content-length"] = str(len(body))
        headers["content-type"] = "application/json"
    for name, value in resolved:
        headers[name.lower()] = value
    head = f"{target.method.upper()} {path} HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()
    )
    return head.encode("latin-1") + b"\r\n" + body, parts.hostname, port, tls, parts.hostname


def outcome_for_status(status: int) -> Outcome:
    if status < 400:
        return Outcome.ok
    if status == 429:
        return Outcome.throttled
    if status < 500:
        return Outcome.http_4xx
    return Outcome.http_5xx


_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LINE = re.compile(rb"\r?\n")


def _ends_at_close(raw: bytes) -> bool:
    """Whether the final response head in ``raw`` leaves its body to end at connection close:
    neither Content-Length nor chunked as the final transfer coding (RFC 7230 §3.3.3, 4 and 7).
    ``raw`` may start with interim (1xx) heads, which are skipped."""
    pos = 0
    while m := _HEAD_END.search(raw, pos):
        lines = _LINE.split(raw[pos:m.start()])
        status = lines[0].split(None, 2)
        pos = m.end()
        if len(status) > 1 and status[1].startswith(b"1"):
            continue
        coding: bytes | None = None
        length = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"transfer-encoding":
                coding = value.strip().lower()
            elif name == b"content-length":
                length = True
        if coding is not None:
            return not coding.endswith(b"chunked")
        return not length
    return False


class _Connection(asyncio.Protocol):
    """One connection, one request at a time.

    Where a response ends (RFC 7230 §3.3.3): llhttp ends 1xx, 204 and 304 responses at their
    headers and Content-Length and chunked bodies by their framing; a response to HEAD ends at
    its headers (``_HeadConnection``); a body with neither length nor chunking ends when the
    server closes the connection (``connection_lost``).
    """

    __slots__ = (
        "pool", "transport", "parser", "due", "sent", "done", "complete", "closed", "status", "keep_alive",
        "raw", "headed", "uses",
    )

    def __init__(self, pool: HttpInvoker) -> None:
        self.pool = pool
        self.transport: Any = None
        self.parser = httptools.HttpResponseParser(self)
        self.done: Done | None = None
        self.due = 0.0
        self.sent = 0.0
        self.complete = False
        self.closed = False
        self.status = 0
        self.keep_alive = False
        self.raw = b""  # the current response's bytes, up to the chunk that ends its final headers
        self.headed = False  # the current response's final headers are complete
        self.uses = 0  # requests sent on this connection

    # asyncio.Protocol
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.done is None:
            # Nothing was asked (a 408 before an idle close, a body sent after a HEAD response):
            # never let it pass for the next request's response.
            self._close()
            return
        if not self.headed:
            self.raw += data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if not self.complete:  # (a HEAD response stops its parser at the headers: complete)
                self._finish(Outcome.other)
                self._close()
                return
        except httptools.HttpParserUpgrade:  # 101 to a request that asked for no upgrade
            self._finish(Outcome.other)
            self._close()
            return
        if self.complete:
            self.complete = False
            self.headed = False
            self.raw = b""
            end = _monotonic()
            done, due, sent = self.done, self.due, self.sent
            self.done = None
            # Hand the connection back before reporting, so a request the report releases
            # from the wait queue reuses it instead of opening another one.
            if self.keep_alive and not self.closed:
                self.pool._released(self)
            else:
                self._close()
            if done is not None:
                done(outcome_for_status(self.status), due, sent, end)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._lost(self)
        if self.done is None:
            return
        if self.headed:
            if exc is None and _ends_at_close(self.raw):
                # A close-delimited body (an HTTP/1.0 server's habit) is complete now.
                self._finish(outcome_for_status(self.parser.get_status_code()))
                return
        elif not self.raw and self.uses > 1:
            # A reused keep-alive connection the server had closed: no byte of a response
            # came, so the server never answered this request.  Resend it once, on a fresh
            # connection (which, being fresh, is never retried again).
            done, self.done = self.done, None
            self.pool._retry(self.due, self.sent, done)
            return
        self._finish(Outcome.reset)

    # httptools callbacks
    def on_headers_complete(self) -> None:
        self.headed = True

    def on_message_complete(self) -> None:
        # Status and keep-alive must be read here: the parser resets after the callback.
        status = self.parser.get_status_code()
        if status < 200:  # an interim response (103 Early Hints): the final one follows
            self.headed = False
            return
        self.complete = True
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()

    # pool side
    def send(self, due: float, done: Done, payload: bytes) -> None:
        self.due = due
        self.done = done
        self.uses += 1
        self.sent = _monotonic()
        self.transport.write(payload)

    def _finish(self, outcome: Outcome) -> None:
        done = self.done
        if done is not None:
            self.done = None
            done(outcome, self.due, self.sent, _monotonic())

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool._lost(self)
            self.transport.abort()


class _HeadersEnd(Exception):
    """Raised from a parser callback to stop that parser (its message is complete)."""


class _HeadConnection(_Connection):
    """For ``method: HEAD``: the response ends at its headers, whatever Content-Length says.

    httptools cannot tell llhttp to skip the body, so the message is completed here and the
    parser, which still waits for that body, is stopped and replaced by a fresh one.
    """

    __slots__ = ()

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # interim: on_message_complete follows at once
            return
        self.headed = True
        self.complete = True
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        self.parser = httptools.HttpResponseParser(self)
        raise _HeadersEnd


class HttpInvoker:
    """A keep-alive connection pool to one target: one connection per request in flight (the
    shard loop bounds how many are in flight)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.payload, self.host, self.port, tls, self.server_name = encode_request(target)
        self.timeout = float(target.timeout_s)
        self.ssl: ssl.SSLContext | None = None
        if tls:
            self.ssl = ssl.create_default_context()
            if not target.tls_verify:
                self.ssl.check_hostname = False
                self.ssl.verify_mode = ssl.CERT_NONE
        self.idle: list[_Connection] = []
        self.conns: set[_Connection] = set()
        self.waiting: deque[tuple[float, float, Done]] = deque()  # (due, handed, done) awaiting a connection
        self.conn_class = _HeadConnection if target.method.upper() == "HEAD" else _Connection
        self.retrying: dict[int, tuple[float, float, Done]] = {}  # (due, sent, done) awaiting a fresh connection
        self.retries = 0
        self.opened = 0
        self.closing = False
        self._sweeper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._sweeper = self._loop.create_task(self._sweep())

    async def close(self) -> None:
        """The shard's drain is over: whatever has not been answered by now timed out."""
        self.closing = True
        if self._sweeper:
            self._sweeper.cancel()
        for conn in list(self.conns):
            conn._finish(Outcome.timeout)
            conn._close()
        while self.waiting:
            due, handed, done = self.waiting.popleft()
            done(Outcome.timeout, due, handed, _monotonic())
        for key in list(self.retrying):
            due, sent, done = self.retrying.pop(key)
            done(Outcome.timeout, due, sent, _monotonic())

    def counters(self) -> dict[str, float]:
        """Cumulative: requests resent after a stale keep-alive connection, connections opened."""
        return {"retries": self.retries, "connections_opened": self.opened}

    def invoke(self, due: float, done: Done) -> None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.send(due, done, self.payload)
                return
        self.waiting.append((due, _monotonic(), done))
        assert self._loop is not None
        self._loop.create_task(self._connect())

    async def _connect(self, retry: int = 0) -> None:
        """Open a connection for the wait queue, or, with ``retry``, for that resent request."""
        assert self._loop is not None
        timeout = self.timeout
        if retry:  # the resent request keeps the time it has left
            if retry not in self.retrying:  # close() came first and has reported it
                return
            timeout = max(timeout - (_monotonic() - self.retrying[retry][1]), 0.001)
        try:
            _, conn = await asyncio.wait_for(
                self._loop.create_connection(
                    lambda: self.conn_class(self),
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.server_name if self.ssl else None,
                ),
                timeout=timeout,
            )
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            entry = self.retrying.pop(retry, None) if retry else (self.waiting.popleft() if self.waiting else None)
            if entry is not None:
                due, handed, done = entry
                kind = Outcome.timeout if isinstance(exc, asyncio.TimeoutError) else Outcome.connect_error
                done(kind, due, handed, _monotonic())
            return
        self.opened += 1
        if self.closing:  # close() has already reported what this connection was for
            conn._close()
            return
        sock = conn.transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conns.add(conn)
        if retry:
            due, sent, done = self.retrying.pop(retry)
            conn.send(due, done, self.payload)
            conn.sent = sent  # service time and the timeout still run from the first send
        else:
            self._released(conn)

    def _retry(self, due: float, sent: float, done: Done) -> None:
        self.retries += 1
        if self.closing:
            done(Outcome.reset, due, sent, _monotonic())
            return
        key = self.retries
        self.retrying[key] = (due, sent, done)
        assert self._loop is not None
        self._loop.create_task(self._connect(key))

    def _released(self, conn: _Connection) -> None:
        if self.waiting:
            due, _, done = self.waiting.popleft()
            conn.send(due, done, self.payload)
        else:
            self.idle.append(conn)

    def _lost(self, conn: _Connection) -> None:
        self.conns.discard(conn)

    async def _sweep(self) -> None:
        """Time out requests in flight longer than the target's timeout (one pass per tick)."""
        tick = min(max(self.timeout / 20, 0.005), 0.05)
        while True:
            await asyncio.sleep(tick)
            deadline = _monotonic() - self.timeout
            for conn in list(self.conns):
                if conn.done is not None and conn.sent < deadline:
                    conn._finish(Outcome.timeout)
                    conn._close()


def make_invoker(target: Target, phase: str, max_in_flight: int) -> HttpInvoker:
    """The ``http`` platform's factory (workers.platforms.PLATFORMS)."""
    return HttpInvoker(target)
