"""HTTP/1.1 invoker on asyncio Protocols with the httptools parser (no per-request task).

Each connection carries one request at a time (keep-alive, no pipelining).  The request
bytes are encoded once per target.  Timeouts are enforced by one sweep over the busy
connections instead of a timer per request.  Connections live in a pool per target and event
loop, shared by every shard of that target in the worker (warm-up warms the measurement),
opened ahead of the first due request with paced handshakes, resuming the pool's TLS session
(``_Pool``).  httpx is deliberately not used here: on this
machine it sustains ~134 req/s per core at 64 connections (encode/httpx#3215).
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import os
import re
import socket
import ssl
import time
from array import array
from collections import deque
from collections.abc import Sequence
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import httptools
from pydantic import BaseModel, ConfigDict, Field

from workers import limits
from workers.contract import Outcome, Target
from workers.errors import SetupError
from workers.platforms import _ENV_REF, Done, Platform, resolve_env

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


# -- which answers are successes, and how large one may be ---------------------------------------
# A target's ``expect_status`` lists the final statuses that count ``ok`` (default: any 2xx); any
# other status is its class's outcome: 3xx http_3xx (redirects are not followed), 429 throttled,
# 4xx http_4xx, 5xx http_5xx, and an unexpected 2xx (or a status beyond 599) ``other``.
DEFAULT_EXPECT_STATUS: tuple[int | str, ...] = ("2xx",)
MAX_EXPECT_ITEMS = 100
# A response's header section (interim 1xx heads included) may hold at most max_header_bytes, its
# body (as it travels: with chunked coding, its framing counted) at most max_body_bytes; beyond
# either the request is ``too_large`` and the connection is closed.  (``too_large`` and not
# ``other``: the target answered well-formed HTTP, only more of it than the spec takes, which a
# reader should tell from garbage.)  Why these defaults:
# * 64 KiB of headers is 4x what Node (16 KiB) and 8x what nginx's default buffers (4 x 8 KiB)
#   let through, so no real server's head is refused; a head is kept until complete (to find a
#   close-delimited body's end), so this bounds the memory a connection holds: 256 in flight x
#   64 KiB = 16 MiB at worst, where an endless header section grew a worker to gigabytes.
# * Bodies are parsed and dropped, never kept: the bound is about time, not memory.  16 MiB is
#   above what a function platform returns (Lambda's response limit is 6 MB, API Gateway's 10 MB)
#   and a loopback read parses it in milliseconds; an endless body is cut there instead of keeping
#   the parser busy until the target's timeout.
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_HEADER_BYTES_RANGE = (1024, 16 * 1024 * 1024)
MAX_BODY_BYTES_RANGE = (0, 1 << 30)
_STATUS_CLASS = re.compile(r"([2-5])xx", re.IGNORECASE)
_STATUS_SPAN = re.compile(r"(\d{3})-(\d{3})")


def _status_item(item: Any) -> tuple[tuple[int, int] | None, str]:
    """One ``expect_status`` entry as an inclusive range, or (None, why not)."""
    if isinstance(item, bool) or not isinstance(item, (int, str)):
        return None, f"expected a status such as 200, a class such as \"2xx\" or a range such as \"200-299\", got {item!r}"
    if isinstance(item, str):
        text = item.strip()
        if m := _STATUS_CLASS.fullmatch(text):
            lo = int(m.group(1)) * 100
            return (lo, lo + 99), ""
        if m := _STATUS_SPAN.fullmatch(text.replace(" ", "")):
            lo, hi = int(m.group(1)), int(m.group(2))
        elif text.isascii() and text.isdigit() and len(text) == 3:
            lo = hi = int(text)
        else:
            return None, (f"expected a status such as 200, a class such as \"2xx\" (2xx to 5xx) or a range "
                          f"such as \"200-299\", got {item[:40]!r}")
    else:
        lo = hi = item
    if not (200 <= lo <= hi <= 599):
        return None, (f"{item!r}: a final status is 200 to 599 (1xx answers are interim)" if lo <= hi
                      else f"{item!r}: the range's low end is above its high end")
    return (lo, hi), ""


def expect_status_problems(items: Any) -> list[tuple[str, str]]:
    """What is wrong with an ``expect_status`` value, as (field suffix, message) pairs."""
    if not isinstance(items, (list, tuple)) or not items:
        return [("", "a list of at least one status, class or range, e.g. [200, 204] or [\"2xx\", 301]")]
    if len(items) > MAX_EXPECT_ITEMS:
        return [("", f"at most {MAX_EXPECT_ITEMS} entries (use classes or ranges), got {len(items)}")]
    return [(f"[{i}]", why) for i, item in enumerate(items) if (why := _status_item(item)[1])]


def outcome_table(expect: Sequence[Any] = DEFAULT_EXPECT_STATUS) -> tuple[Outcome, ...]:
    """The outcome of every status 0-999 (what llhttp can read) given the expected ones."""
    spans = [span for span in (_status_item(item)[0] for item in expect) if span is not None]
    table = []
    for status in range(1000):
        if any(lo <= status <= hi for lo, hi in spans):
            table.append(Outcome.ok)
        elif status == 429:
            table.append(Outcome.throttled)
        elif 300 <= status < 400:
            table.append(Outcome.http_3xx)
        elif 400 <= status < 500:
            table.append(Outcome.http_4xx)
        elif 500 <= status < 600:
            table.append(Outcome.http_5xx)
        else:
            table.append(Outcome.other)
    return tuple(table)


_DEFAULT_OUTCOMES = outcome_table()


def outcome_for_status(status: int, table: Sequence[Outcome] = _DEFAULT_OUTCOMES) -> Outcome:
    """A final status's outcome (the default table: any 2xx is ok)."""
    return table[status] if 0 <= status < len(table) else Outcome.other


def response_rules(target: Target) -> tuple[tuple[Outcome, ...], int, int]:
    """(outcome table, max header bytes, max body bytes) from the task's address; a value the spec
    could not have produced is a SetupError naming the target and key."""
    address = target.address
    where = f"target {target.name!r}"
    expect = address.get("expect_status", DEFAULT_EXPECT_STATUS)
    problems = [f"{where}.expect_status{field}: {why}" for field, why in expect_status_problems(expect)]
    sizes = []
    for key, default, (lo, hi) in (("max_header_bytes", DEFAULT_MAX_HEADER_BYTES, MAX_HEADER_BYTES_RANGE),
                                   ("max_body_bytes", DEFAULT_MAX_BODY_BYTES, MAX_BODY_BYTES_RANGE)):
        value = address.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            problems.append(f"{where}.{key}: expected a whole number of bytes {lo}..{hi}, got {value!r}")
        sizes.append(value)
    if problems:
        raise SetupError("; ".join(problems))
    return (_DEFAULT_OUTCOMES if tuple(expect) == DEFAULT_EXPECT_STATUS else outcome_table(expect)), sizes[0], sizes[1]


def _head_length(raw: bytes | bytearray) -> int:
    """Bytes up to the end of the final (non-1xx) head in ``raw``; all of it if that head is not complete."""
    pos = 0
    while m := _HEAD_END.search(raw, pos):
        status = raw[pos:m.start()].split(None, 2)
        pos = m.end()
        if not (len(status) > 1 and status[1].startswith(b"1")):
            return pos
    return len(raw)


_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LINE = re.compile(rb"\r?\n")


def _ends_at_close(raw: bytes | bytearray) -> bool:
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


DEFAULT_REQUEST_ID_HEADERS = ("x-request-id", "x-amzn-requestid", "x-cloud-trace-context", "x-correlation-id")
MAX_ID_HEADERS = 16


def new_trace_id() -> str:
    """32 hex digits: a W3C trace id that is also an X-Ray trace id (8 digits of epoch seconds first)."""
    return f"{int(time.time()) & 0xFFFFFFFF:08x}{os.urandom(12).hex()}"


def header_value(head: bytes | bytearray, names: Sequence[bytes]) -> str:
    """The value of the first of ``names`` (lower case) that the response head carries, else ""."""
    if not names or not head:
        return ""
    end = head.find(b"\r\n\r\n")
    found: dict[bytes, bytes] = {}
    for line in bytes(head[: end if end >= 0 else len(head)]).split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            found.setdefault(name.strip().lower(), value.strip())
    for name in names:
        if name in found:
            return found[name].decode("latin-1")[:200]
    return ""


class _Connection(asyncio.Protocol):
    """One connection, one request at a time.

    Where a response ends (RFC 7230 §3.3.3): llhttp ends 1xx, 204 and 304 responses at their
    headers and Content-Length and chunked bodies by their framing; a response to HEAD ends at
    its headers (``_HeadConnection``); a body with neither length nor chunking ends when the
    server closes the connection (``connection_lost``).

    Bounds: the head's bytes are kept until it is complete (a close-delimited body needs them),
    appended in place (never the whole buffer copied per read), at most the pool's
    ``max_head`` of them; the body's bytes as they travel (chunk framing counted) are counted,
    never kept, up to ``max_body``.  Beyond either the request is ``too_large`` and the connection
    is closed.
    """

    __slots__ = (
        "pool", "transport", "parser", "due", "sent", "done", "complete", "closed", "status", "keep_alive",
        "raw", "headed", "uses", "user", "ready", "body", "max_head", "max_body", "small", "outcomes", "trace",
    )

    def __init__(self, pool: _Pool) -> None:
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
        self.raw: bytes | bytearray = b""  # the current response's bytes, up to the read that ends its final head
        self.headed = False  # the current response's final headers are complete
        self.body = 0  # bytes of the current response's body so far
        self.max_head = pool.max_head
        self.max_body = pool.max_body
        self.small = min(self.max_head, self.max_body)  # a response read whole in no more is within both
        self.outcomes = pool.outcomes  # status -> Outcome
        self.uses = 0  # requests sent on this connection
        self.user: HttpInvoker | None = None  # the invoker whose request it carries (or carried last)
        self.ready = 0.0  # when it became usable: TCP connected and, over TLS, the handshake done
        self.trace = ""  # the trace id the current request carries ("" when it carries none)

    # asyncio.Protocol
    def connection_made(self, transport: Any) -> None:
        self.ready = _monotonic()
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.done is None:
            # Nothing was asked (a 408 before an idle close, a body sent after a HEAD response):
            # never let it pass for the next request's response.
            self._close()
            return
        headed = self.headed
        if headed:
            self.body += len(data)  # (as it travels: chunk framing counted)
        else:
            raw = self.raw
            if not raw:
                self.raw = data  # the usual case, a head in one read: kept as it is, no copy
            else:
                if raw.__class__ is bytes:
                    raw = self.raw = bytearray(raw)
                raw += data  # in place: a head in many reads costs its length, not its length squared
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
        if headed:
            over = self.body > self.max_body
        elif not self.headed:
            over = len(self.raw) > self.max_head
        else:  # the head ended in this read: measure it and the body after it, unless the whole
            # response came in one read within both bounds (the usual case)
            over = (not self.complete or len(self.raw) > self.small) and self._measure()
        if over:
            self._finish(Outcome.too_large)
            self._close()
            self.raw = b""
            return
        if self.complete:
            self.complete = False
            self.headed = False
            user = self.user
            if user is not None:  # what the slowest requests' ids are read from (request_ids)
                user.last_due = self.due
                user.last_head = self.raw
                user.last_trace = self.trace
            self.raw = b""
            self.body = 0
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
                done(self.outcomes[self.status], due, sent, end)

    def _measure(self) -> bool:
        """The response's head ended in the last read: is it, or the body begun after it, over
        its bound?  (The body bytes are let go; the head is kept for ``connection_lost``.)"""
        raw = self.raw
        n = _head_length(raw)
        self.body = len(raw) - n
        self.raw = raw[:n]
        return n > self.max_head or self.body > self.max_body

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._lost(self)
        if self.done is None:
            return
        if self.headed:
            if exc is None and _ends_at_close(self.raw):
                # A close-delimited body (an HTTP/1.0 server's habit) is complete now.
                self._finish(self.outcomes[self.parser.get_status_code()])
                return
        elif not self.raw and self.uses > 1:
            # A reused keep-alive connection the server had closed: no byte of a response
            # came, so the server never answered this request.  Resend it once, on a fresh
            # connection (which, being fresh, is never retried again).
            done, self.done = self.done, None
            assert self.user is not None  # set with done
            self.pool._retry(self.due, self.sent, done, self.user)
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
    def send(self, due: float, done: Done, payload: bytes, user: HttpInvoker) -> None:
        self.due = due
        self.done = done
        self.user = user
        self.uses += 1
        if user.trace_ratio:
            payload = user.traced(self, payload)
        self.sent = _monotonic()
        self.transport.write(payload)

    def _finish(self, outcome: Outcome) -> None:
        done = self.done
        if done is not None:
            self.done = None
            user = self.user
            if user is not None:
                user.last_due = self.due
                user.last_head = b""
                user.last_trace = self.trace
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


# Pool sizing and pacing.  A TLS handshake costs the event loop a few hundred µs of CPU; a
# bounded number in progress at once keeps them from stalling due requests together.
_TLS_HANDSHAKES = 8  # TLS connects (TCP + handshake) in progress at once, per pool, before the start
_TLS_HANDSHAKES_RUNNING = 2  # … once requests are due (growth, replacements)
_TCP_CONNECTS = 32  # plain TCP connects in progress at once, per pool
_POOL_FLOOR = 4  # a prepared pool opens at least this many
_HEADROOM = 8  # … and this many beyond rate × latency × 3 (bursts after a stall)
_LATENCY_FLOOR_S = 0.001  # the least latency the estimate assumes: loop batching keeps requests in flight too
_SESSION_POLL_S = 0.005  # a TLS 1.3 session ticket arrives just after the handshake: looked for this often
_SESSION_WAIT_S = 0.2  # … for this long, or twice the handshake if longer (a slow server), per connection
_ABUT_S = 0.01  # windows that overlap by less than this are back to back, not concurrent


class _ResumingContext(ssl.SSLContext):
    """A client context that offers ``resume`` (the pool's latest TLS session) to every new
    connection.  asyncio and uvloop make each connection's SSLObject through ``wrap_bio`` and
    pass it no session, so this is where resumption is asked for."""

    resume: ssl.SSLSession | None = None

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return super().wrap_bio(incoming, outgoing, server_side, server_hostname,
                                session if session is not None else self.resume)


def _client_context(verify: bool) -> _ResumingContext:
    ctx = _ResumingContext(ssl.PROTOCOL_TLS_CLIENT)  # hostname checked, certificate required
    if verify:
        ctx.load_default_certs()
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


Entry = tuple[float, float, Done, "HttpInvoker"]  # (due, handed or sent, done, the invoker it came from)


class _Pool:
    """Keep-alive connections to one target, shared by every ``HttpInvoker`` of that target on
    one event loop (as the local platform shares its warm instances): the warm-up shard's
    connections carry the measured shard, which starts on warm connections.

    Sizing: each invoker ``prepare``s its window (peak rate, max_in_flight); the pool wants
    ``rate × latency × 3 + 8`` connections for the heaviest overlap of windows (latency: the
    first connection's connect time, halved over TLS, at least 1 ms), never more than the sum of their
    max_in_flight.  It opens them in the background, at most ``limit`` connects at once (one
    at a time until a TLS session can be resumed), grows by one whenever the last idle
    connection is taken, replaces connections the server closed after use, and opens one for
    any request left waiting with none on its way.  An unprepared pool (no ``prepare``) opens
    connections only for waiting requests, as before.
    """

    def __init__(self, key: tuple[Any, ...], inv: HttpInvoker, loop: asyncio.AbstractEventLoop) -> None:
        self.key = key
        self.loop = loop
        self.host, self.port, self.server_name = inv.host, inv.port, inv.server_name
        self.payload = inv.payload
        self.timeout = inv.timeout
        self.conn_class = inv.conn_class
        self.outcomes, self.max_head, self.max_body = inv.outcomes, inv.max_head, inv.max_body
        self.ssl = _client_context(inv.target.tls_verify) if inv.tls else None
        self.idle: list[_Connection] = []
        self.conns: set[_Connection] = set()
        self.waiting: deque[Entry] = deque()  # requests awaiting a connection
        self.retrying: dict[int, Entry] = {}  # resent requests awaiting a fresh connection
        self.retry_keys = 0
        self.users: list[HttpInvoker] = []
        self.connecting = 0  # connects in progress (resends not counted)
        self.want = 0  # connections the pool keeps open; 0: unprepared
        self.cap = 0  # most it opens for its own sake (sum of overlapping max_in_flight)
        self.limit = _TLS_HANDSHAKES if self.ssl is not None else _TCP_CONNECTS
        self.session_pending = self.ssl is not None  # no TLS session yet: one connect at a time
        self.latency_s = 0.0  # a request's expected latency, from the first connection's connect time
        self.closed = False
        self.sweeper = loop.create_task(self._sweep())

    # -- users --------------------------------------------------------------------------------
    def release(self, user: HttpInvoker) -> None:
        if user in self.users:
            self.users.remove(user)
        if self.users:
            self._size()
            return
        self.closed = True
        if _POOLS.get(self.key) is self:
            del _POOLS[self.key]
        self.sweeper.cancel()
        for conn in list(self.conns):
            conn._finish(Outcome.timeout)
            conn._close()
        self.idle.clear()
        while self.waiting:
            due, handed, done, _ = self.waiting.popleft()
            done(Outcome.timeout, due, handed, _monotonic())
        for key in list(self.retrying):
            due, sent, done, _ = self.retrying.pop(key)
            done(Outcome.timeout, due, sent, _monotonic())

    def _owner(self, user: HttpInvoker) -> HttpInvoker:
        """Who a connection counts for: ``user``, or another user once that one has closed."""
        return user if user.active or not self.users else self.users[0]

    def _size(self) -> None:
        """``want`` and ``cap`` from the prepared users' windows: the heaviest overlap."""
        plans = [u.plan for u in self.users if u.plan is not None]
        if not plans:
            return
        latency = max(self.latency_s, _LATENCY_FLOOR_S)
        want = cap = 0
        for _, _, begin, end in plans:
            # (Back-to-back windows, a warm-up and its measured phase, do not overlap.)
            over = [p for p in plans if p[2] < end - _ABUT_S and begin < p[3] - _ABUT_S]
            rate = sum(p[0] for p in over)
            most = sum(p[1] for p in over)
            cap = max(cap, most)
            want = max(want, min(most, max(_POOL_FLOOR, math.ceil(rate * latency * 3) + _HEADROOM)))
        self.cap = cap
        self.want = max(self.want, want)

    # -- opening ------------------------------------------------------------------------------
    def _fill(self, user: HttpInvoker) -> None:
        """Start connects while a waiting request has none on its way or the pool is below the
        size it wants, at most ``limit`` at once; over TLS, the first alone, and the next ones
        once its session has come (or is known not to come)."""
        if self.closed:
            return
        # Until the first TLS session can be resumed: one connect, then none while it is awaited.
        # Once a user's requests are due, handshakes compete with them: fewer at once.
        if self.session_pending:
            limit = 0 if self.conns else 1
        elif self.ssl is not None and any(u.start_mono <= _monotonic() for u in self.users):
            limit = _TLS_HANDSHAKES_RUNNING
        else:
            limit = self.limit
        while self.connecting < limit and (
            self.connecting < len(self.waiting) or len(self.conns) + self.connecting < self.want
        ):
            self.connecting += 1
            self.loop.create_task(self._connect(user))

    def _ahead(self, user: HttpInvoker) -> None:
        """The last idle connection was just taken: open one more, off the critical path."""
        if self.want and not self.connecting and len(self.conns) < self.cap:
            self.want = max(self.want, len(self.conns) + 1)
            self._fill(user)

    def _wait(self, due: float, done: Done, user: HttpInvoker) -> None:
        self.waiting.append((due, _monotonic(), done, user))
        self._fill(user)

    async def _connect(self, user: HttpInvoker, retry: int = 0) -> None:
        """Open a connection for the pool (and so the wait queue), or, with ``retry``, for that
        resent request."""
        timeout = self.timeout
        if retry:  # the resent request keeps the time it has left
            entry = self.retrying.get(retry)
            if entry is None:  # its invoker closed first and has reported it
                return
            timeout = max(timeout - (_monotonic() - entry[1]), 0.001)
        began = _monotonic()
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: self.conn_class(self),
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.server_name if self.ssl else None,
                ),
                timeout=timeout,
            )
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            if not retry:
                self.connecting -= 1
            self._failed(user, retry, Outcome.timeout if isinstance(exc, TimeoutError) else Outcome.connect_error)
            return
        if not retry:
            self.connecting -= 1
        user = self._owner(user)
        user.opened += 1
        ready = conn.ready or _monotonic()
        user.connect_us.append(int((ready - began) * 1e6))
        if ready < user.start_mono:
            user.before_start += 1
        if self.closed:  # every invoker has closed and reported what this connection was for
            conn._close()
            return
        sock = conn.transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conns.add(conn)
        if self.ssl is not None:
            ssl_object = conn.transport.get_extra_info("ssl_object")
            if ssl_object is not None and ssl_object.session_reused:
                user.resumed += 1
            self._capture(conn, ready + max(_SESSION_WAIT_S, 2 * (ready - began)))
        if not self.latency_s:
            # A request takes about one round trip; a TCP connect one, a full TLS 1.3 handshake two.
            self.latency_s = (ready - began) / (2 if self.ssl is not None else 1)
            self._size()
        entry = self.retrying.pop(retry, None) if retry else None
        if entry is not None:
            due, sent, done, owner = entry
            conn.send(due, done, self.payload, owner)
            conn.sent = sent  # service time and the timeout still run from the first send
        else:
            self._released(conn)
        self._fill(user)

    def _failed(self, user: HttpInvoker, retry: int, kind: Outcome) -> None:
        """A connect failed: the resent request, or else the oldest waiting one, gets ``kind``;
        with none waiting the pool stops trying to reach its size (no retry loop)."""
        if retry:
            entry = self.retrying.pop(retry, None)
            if entry is not None:
                due, sent, done, _ = entry
                done(kind, due, sent, _monotonic())
            return
        if self.waiting:
            due, handed, done, _ = self.waiting.popleft()
            done(kind, due, handed, _monotonic())
        else:
            self._owner(user).connect_failures += 1
            self.want = min(self.want, len(self.conns) + self.connecting)
        self._fill(user)

    def _capture(self, conn: _Connection, until: float) -> None:
        """Keep the connection's TLS session for the next connections to resume (TLS 1.3: once
        its ticket has come, just after the handshake)."""
        if self.closed or self.ssl is None:
            return
        ssl_object = None if conn.closed else conn.transport.get_extra_info("ssl_object")
        session = ssl_object.session if ssl_object is not None else None
        if session is not None and ssl_object is not None and (
            session.has_ticket or ssl_object.version() != "TLSv1.3"
        ):
            self.ssl.resume = session
        elif ssl_object is not None and _monotonic() < until:
            self.loop.call_later(_SESSION_POLL_S, self._capture, conn, until)
            return
        if self.session_pending:  # a session to resume, or none coming: connect in parallel now
            self.session_pending = False
            if self.users:
                self._fill(self.users[0])

    def _retry(self, due: float, sent: float, done: Done, user: HttpInvoker) -> None:
        user.retries += 1
        if self.closed or not user.active:
            done(Outcome.reset, due, sent, _monotonic())
            return
        self.retry_keys += 1
        key = self.retry_keys
        self.retrying[key] = (due, sent, done, user)
        self.loop.create_task(self._connect(user, key))

    # -- connections --------------------------------------------------------------------------
    def _released(self, conn: _Connection) -> None:
        if self.waiting:
            due, _, done, user = self.waiting.popleft()
            conn.send(due, done, self.payload, user)
        else:
            self.idle.append(conn)

    def _lost(self, conn: _Connection) -> None:
        if conn not in self.conns:  # (reported twice: by _close, then by connection_lost)
            return
        self.conns.discard(conn)
        if not self.want or self.closed:
            return
        if conn.uses and conn.user is not None:
            self._fill(conn.user)  # closed by the server after use: replaced off the critical path
        elif self.want > len(self.conns) + self.connecting:
            self.want -= 1  # dropped unused (an idle timeout): the pool needed fewer

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


_POOLS: dict[tuple[Any, ...], _Pool] = {}


class HttpInvoker:
    """One shard's (or one caller's) view of the keep-alive pool to its target: requests go on
    the pool's idle connections, one per request in flight (the shard loop bounds how many are
    in flight).  Invokers of the same target on the same event loop share one ``_Pool``; each
    keeps its own counters and connect times and, at ``close``, times out only its own
    requests.  Counters: retries, connections_opened and, when not zero,
    connections_before_start (ready before the ``start_at`` given to ``prepare``),
    tls_resumed (connections that resumed a TLS session) and connect_failures (connects that
    failed with no request waiting for them)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.payload, self.host, self.port, self.tls, self.server_name = encode_request(target)
        self.timeout = float(target.timeout_s)
        self.conn_class = _HeadConnection if target.method.upper() == "HEAD" else _Connection
        self.outcomes, self.max_head, self.max_body = response_rules(target)
        self.pool: _Pool | None = None
        self.idle: list[_Connection] = []  # the pool's, once started
        self.active = False
        self.plan: tuple[float, int, float, float] | None = None  # rate, max_in_flight, start_at, end_at (epoch)
        self.start_mono = -math.inf  # no start given: nothing counts as opened before it
        self.retries = 0
        self.opened = 0
        self.before_start = 0
        self.resumed = 0
        self.connect_failures = 0
        self.connect_us: array[int] = array("q")
        # Trace context (workers.platforms.Traces) and the ids of the request being completed
        # (ReportsIds: read only for the slowest requests).
        self.trace_ratio = 0.0
        self._trace_due = 0.0
        self.last_due = -1.0
        self.last_head: bytes | bytearray = b""
        self.last_trace = ""
        self.id_headers = tuple(str(h).lower().encode("latin-1")
                                for h in target.address.get("request_id_headers", DEFAULT_REQUEST_ID_HEADERS))

    @property
    def key(self) -> tuple[Any, ...]:
        t = self.target
        return (t.name, self.payload, self.host, self.port, self.tls, t.tls_verify, self.timeout, self.conn_class,
                self.outcomes, self.max_head, self.max_body)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        key = (id(loop), *self.key)
        pool = _POOLS.get(key)
        if pool is None or pool.closed or pool.loop is not loop:
            pool = _POOLS[key] = _Pool(key, self, loop)
        pool.users.append(self)
        self.pool = pool
        self.idle = pool.idle
        self.active = True

    def prepare(self, rate: float, max_in_flight: int, start_at: float, end_at: float) -> None:
        """Open, in the background and paced, the connections this invoker will need from epoch
        ``start_at`` to ``end_at`` at up to ``rate`` requests per second (see ``_Pool``)."""
        assert self.pool is not None, "start() first"
        now_epoch, now = time.time(), _monotonic()
        self.start_mono = now + (start_at - now_epoch)
        self.plan = (float(rate), max(1, int(max_in_flight)), float(start_at), float(end_at))
        self.pool._size()
        self.pool._fill(self)

    async def close(self) -> None:
        """This invoker's drain is over: whatever of its requests is unanswered timed out."""
        pool = self.pool
        if pool is None or not self.active:
            return
        self.active = False
        for conn in list(pool.conns):
            if conn.user is self and conn.done is not None:
                conn._finish(Outcome.timeout)
                conn._close()
        mine = [entry for entry in pool.waiting if entry[3] is self]
        if mine:
            keep = [entry for entry in pool.waiting if entry[3] is not self]
            pool.waiting.clear()
            pool.waiting.extend(keep)
            for due, handed, done, _ in mine:
                done(Outcome.timeout, due, handed, _monotonic())
        for key in [k for k, entry in pool.retrying.items() if entry[3] is self]:
            due, sent, done, _ = pool.retrying.pop(key)
            done(Outcome.timeout, due, sent, _monotonic())
        pool.release(self)

    def counters(self) -> dict[str, float]:
        """Cumulative (see the class docstring)."""
        counts: dict[str, float] = {"retries": self.retries, "connections_opened": self.opened}
        if self.before_start:
            counts["connections_before_start"] = self.before_start
        if self.resumed:
            counts["tls_resumed"] = self.resumed
        if self.connect_failures:
            counts["connect_failures"] = self.connect_failures
        return counts

    def connect_times(self) -> array[int]:
        """µs from starting a connect to the connection being usable (TCP connect and, over TLS,
        the handshake), one per connection opened for this invoker since the last call."""
        taken = self.connect_us
        if taken:
            self.connect_us = array("q")
        return taken

    def traced(self, conn: _Connection, payload: bytes) -> bytes:
        """The request with trace context when its turn comes (every 1/trace_ratio-th request)."""
        self._trace_due += self.trace_ratio
        if self._trace_due < 1.0:
            conn.trace = ""
            return payload
        self._trace_due -= 1.0
        trace = conn.trace = new_trace_id()
        line = payload.find(b"\r\n") + 2  # after the request line
        return payload[:line] + self.trace_header(trace) + payload[line:]

    def trace_header(self, trace: str) -> bytes:
        return b"traceparent: 00-%s-%s-01\r\n" % (trace.encode(), os.urandom(8).hex().encode())

    def request_ids(self, due: float) -> tuple[str, str]:
        """(trace id, request id) of the request due at ``due`` being completed now (ReportsIds)."""
        if due != self.last_due:
            return "", ""
        return self.last_trace, header_value(self.last_head, self.id_headers)

    def invoke(self, due: float, done: Done) -> None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.send(due, done, self.payload, self)
                if not idle:
                    assert self.pool is not None
                    self.pool._ahead(self)
                return
        assert self.pool is not None
        self.pool._wait(due, done, self)


def make_invoker(target: Target, phase: str, max_in_flight: int) -> HttpInvoker:
    """The plain HTTP factory (the registered ``http`` platform, workers.platforms.signed_http, also
    signs targets with ``sigv4``)."""
    return HttpInvoker(target)


# ------------------------------------------------------------------ the platform's declaration


class SigV4Fields(BaseModel):
    """``sigv4: {service: lambda, region: us-east-1}``: sign each request with AWS SigV4 (a Function URL
    with AuthType AWS_IAM signs for service lambda); credentials from the standard chain."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    service: str = Field(default="lambda", pattern=r"^[a-z0-9-]{1,64}$")
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$")


class TargetFields(BaseModel):
    """What a spec's http target says about the answers it takes (the task's address)."""

    sigv4: SigV4Fields | None = None

    # The final statuses that count ok: codes (200), classes ("2xx") and ranges ("200-299").
    expect_status: list[Any] = Field(default=list(DEFAULT_EXPECT_STATUS), max_length=MAX_EXPECT_ITEMS)
    max_header_bytes: int = Field(default=DEFAULT_MAX_HEADER_BYTES, strict=True,
                                  ge=MAX_HEADER_BYTES_RANGE[0], le=MAX_HEADER_BYTES_RANGE[1])
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, strict=True,
                                ge=MAX_BODY_BYTES_RANGE[0], le=MAX_BODY_BYTES_RANGE[1])
    # Response headers whose value is the platform's request id, kept with the slowest requests
    # (the first one present wins).
    request_id_headers: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")]] = Field(
        default=list(DEFAULT_REQUEST_ID_HEADERS), max_length=MAX_ID_HEADERS)


def target_problems(t: Any, cold_start: bool) -> list[tuple[str, str]]:
    """The encoder's own rules (no CR/LF in headers, no spaces in the URL, …) on a spec's target,
    and its expect_status entries."""
    problems = request_problems(t.url, t.method, list(t.headers.items()))
    problems.extend((f"expect_status{field}", why) for field, why in expect_status_problems(t.expect_status))
    if getattr(t, "sigv4", None) is not None:
        for name in t.headers:
            if name.lower() in ("authorization", "x-amz-date", "x-amz-security-token"):
                problems.append((f"headers.{name}", "sigv4 signs the request and sets this header itself"))
    return problems


def target_address(t: Any) -> dict[str, Any]:
    """What the worker reads (``response_rules``): the expected statuses and the response bounds."""
    address = {"expect_status": list(t.expect_status), "max_header_bytes": t.max_header_bytes,
               "max_body_bytes": t.max_body_bytes, "request_id_headers": list(t.request_id_headers)}
    if getattr(t, "sigv4", None) is not None:
        address["sigv4"] = {"service": t.sigv4.service, "region": t.sigv4.region}
    return address


def target_refusals(target: Target) -> list[tuple[str, str]]:
    """FNBENCH_ALLOWED_TARGETS on the URL's host (an unset ``${env:NAME}`` in it: SetupError)."""
    return [("url", m) for m in limits.host_refusals(resolve_env(target.url, "url"))]


# Plain HTTP(S) endpoints: the common target fields (url, method, headers, body), and which answers
# count ok and how large one may be (TargetFields).
PLATFORM = Platform("http", make_invoker, fields=TargetFields, problems=target_problems, address=target_address,
                    refusals=target_refusals)
