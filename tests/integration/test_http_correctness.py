"""HTTP correctness of the request engine: what goes on the wire, and where a response ends.

Loopback servers written here (asyncio streams) answer in the ways a probe found wrong:
header injection, HEAD/204/304/1xx responses, HTTP/1.0 close-delimited bodies, keep-alive
connections the server has closed, requests still in flight at the end of a drain.  The
invoker is driven directly on a uvloop loop (one request at a time, so the connection it
uses is known), or through ``run_shard``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import uvloop

from orchestrator.errors import SpecError
from orchestrator.run import spec
from workers.contract import Outcome, Shard, Target
from workers.errors import SetupError
from workers.platforms.http import HttpInvoker, encode_request, make_invoker, request_problems
from workers.shard import run_shard

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
WAIT_S = 5.0  # the most any one request may take in these tests before the test fails


# -- helpers ----------------------------------------------------------------------------------
def target(url: str, method: str = "GET", timeout_s: float = 2.0, headers: tuple[tuple[str, str], ...] = ()) -> Target:
    return Target(name="t", runtime="other", platform="http", url=url, method=method, timeout_s=timeout_s,
                  headers=headers)


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One request's bytes (head and body), or None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head + await reader.readexactly(length)


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[int]:
    """A loopback server on this loop; yields its port."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@contextlib.asynccontextmanager
async def invoker(t: Target) -> AsyncIterator[HttpInvoker]:
    inv = make_invoker(t, "warm", 64)
    await inv.start()
    try:
        yield inv
    finally:
        await inv.close()


async def one(inv: HttpInvoker) -> Outcome:
    """Send one request and wait (bounded) for its outcome."""
    fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()

    def done(outcome: Outcome, due: float, sent: float, end: float, info: Any = None) -> None:
        assert not fut.done(), "two outcomes for one request"
        fut.set_result(outcome)

    inv.invoke(time.monotonic(), done)
    return await asyncio.wait_for(fut, WAIT_S)


def run(coro: Awaitable[Any]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, 30)

    return uvloop.run(bounded())


def reset_close(writer: asyncio.StreamWriter) -> None:
    """Close with an RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class ThreadServer:
    """An asyncio streams server on its own loop in a thread (for run_shard, which owns its loop)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.port = 0
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            server = await asyncio.start_server(self.handler, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            self.ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()
        tasks = asyncio.all_tasks(self.loop)
        for task in tasks:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self.loop.close()

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        assert self.ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def drive_shard(url: str, rate: int = 40, seconds: float = 1.0, timeout_s: float = 2.0,
                stop_after: float | None = None, intervals: list[Any] | None = None) -> dict[str, int]:
    shard = Shard(run_id="r", shard_id="s", region="local", target=target(url, timeout_s=timeout_s), phase="warm",
                  arrival={"kind": "constant", "rps": str(rate)}, start_at=time.time() + 0.2, duration_s=seconds,
                  flush_interval_s=0.5)
    intervals = [] if intervals is None else intervals
    stop = threading.Event()
    if stop_after is not None:
        threading.Timer(stop_after, stop.set).start()
    run_shard(shard, intervals.append, stop)
    totals: dict[str, int] = {}
    for iv in intervals:
        for k, n in iv.outcomes.items():
            totals[k] = totals.get(k, 0) + n
    assert sum(totals.values()) == sum(iv.intended for iv in intervals)  # one outcome per request
    return totals


# -- 1. what goes on the wire -----------------------------------------------------------------
def test_request_problems_accepts_a_clean_request_and_env_references():
    assert request_problems("http://127.0.0.1:8080/echo?x=1", "POST", [("Authorization", "Bearer ${env:TOKEN}")]) == []
    assert request_problems("https://[::1]:65535/", "GET", []) == []
    assert request_problems("http://${env:HOST}:${env:PORT}/${env:PATH}", "GET", [("X-Key", "${env:KEY}")]) == []
    assert request_problems("http://example.com/caf\u00e9", "GET", [("X-Latin", "caf\u00e9")]) == []  # encoded later


@pytest.mark.parametrize(
    ("url", "method", "headers", "field", "words"),
    [
        ("http://h/", "GET", [("X-Foo", "a\r\nX-Injected: 1")], "headers.X-Foo", "CR/LF"),
        ("http://h/", "GET", [("X-Foo", "a\nb")], "headers.X-Foo", "'\\n'"),
        ("http://h/", "GET", [("X-Foo", "a\x00b")], "headers.X-Foo", "'\\x00'"),
        ("http://h/", "GET", [("X-Foo", "${env:A}\r\n${env:B}")], "headers.X-Foo", "CR/LF"),  # literal parts
        ("http://h/", "GET", [("X-Foo", "\u20ac")], "headers.X-Foo", "percent-encode"),
        ("http://h/", "GET", [("X Foo", "a")], "headers.'X Foo'", "token"),
        ("http://h/", "GET", [("X-Foo\r\nX-Injected", "a")], "headers.'X-Foo\\r\\nX-Injected'", "token"),
        ("http://h/", "GET", [("Content-Length", "5")], "headers.Content-Length", "remove it"),
        ("http://h/a b", "GET", [], "url", "a space at position 10"),
        ("http://h/a\tb", "GET", [], "url", "'\\t'"),  # urlsplit would silently drop it
        ("http://h/a\r\nX-Injected: 1", "GET", [], "url", "'\\r'"),
        ("ftp://h/", "GET", [], "url", "http(s)://"),
        ("http:///path", "GET", [], "url", "http(s)://"),
        ("http://h:0/", "GET", [], "url", "1 to 65535"),
        ("http://h:65536/", "GET", [], "url", "1 to 65535"),
        ("http://h:8o/", "GET", [], "url", "1 to 65535"),
        ("http://[::1/", "GET", [], "url", "IPv6"),
        ("http://[::g]:80/", "GET", [], "url", "IPv6"),
        ("http://h\u00e9/", "GET", [], "url", "xn--"),
        ("http://user:pw@h/", "GET", [], "url", "Authorization"),
        ("http://h/", "GE T", [], "method", "token"),
    ],
)
def test_request_problems_names_the_field(url, method, headers, field, words):
    found = request_problems(url, method, headers)
    assert [f for f, _ in found] == [field], found
    assert words in found[0][1]


def test_validate_rejects_an_injected_header_with_its_yaml_path():
    text = """
name: x
targets:
  - {name: a, url: "http://127.0.0.1:1/ok", headers: {X-Foo: "a\\r\\nX-Injected: 1", X-Ok: "${env:TOKEN}"}}
  - {name: b, url: "http://127.0.0.1:1/a b"}
load: {rps: 1}
"""
    with pytest.raises(SpecError) as info:
        spec.load_text(text)
    problems = info.value.problems
    assert any(p.startswith("targets[0].headers.X-Foo: ") for p in problems), problems
    assert any(p.startswith("targets[1].url: ") for p in problems), problems
    assert not any("X-Ok" in p for p in problems)
    spec.load_text(text.replace("a\\r\\nX-Injected: 1", "a").replace("/a b", "/a%20b"))  # and the fixed spec passes


def test_encoder_refuses_what_validation_refuses_and_resolved_secrets(monkeypatch):
    with pytest.raises(SetupError, match=r"target 't'\.headers\.X-Foo: "):
        encode_request(target("http://127.0.0.1:1/", headers=(("X-Foo", "a\r\nX-Injected: 1"),)))
    with pytest.raises(SetupError, match=r"target 't'\.url: "):
        encode_request(target("http://127.0.0.1:1/a b"))
    # A reference passes validation; what it resolves to on the worker is checked again, and
    # the error does not print the secret.
    monkeypatch.setenv("FNBENCH_SECRET_TEST", "s3cret\r\nX-Injected: 1")
    with pytest.raises(SetupError, match=r"target 't'\.headers\.X-Secret: ") as info:
        encode_request(target("http://127.0.0.1:1/", headers=(("X-Secret", "${env:FNBENCH_SECRET_TEST}"),)))
    assert "s3cret" not in str(info.value)
    monkeypatch.setenv("FNBENCH_SECRET_TEST_PORT", "99999")
    with pytest.raises(SetupError, match=r"target 't'\.url: the port"):
        encode_request(target("http://127.0.0.1:${env:FNBENCH_SECRET_TEST_PORT}/"))


@pytest.mark.integration
def test_the_server_receives_exactly_the_request_asked_for(monkeypatch):
    monkeypatch.setenv("FNBENCH_SECRET_TEST", "Bearer s3cret")
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (req := await read_request(reader)) is not None:
            seen.append(req)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    async def main() -> None:
        async with serving(handler) as port:
            t = target(f"http://127.0.0.1:{port}/caf\u00e9?q=\u00fc", headers=(
                ("X-Foo", "a\tb"), ("Authorization", "${env:FNBENCH_SECRET_TEST}")))
            async with invoker(t) as inv:
                assert await one(inv) == Outcome.ok

    run(main())
    [raw] = seen
    head = raw.decode("latin-1").split("\r\n")
    assert head[0] == "GET /caf%C3%A9?q=%C3%BC HTTP/1.1"  # non-ASCII is percent-encoded (UTF-8)
    names = sorted(line.split(":")[0] for line in head[1:] if line)
    assert names == ["accept", "authorization", "host", "user-agent", "x-foo"]
    assert "authorization: Bearer s3cret" in head and "x-foo: a\tb" in head


# -- 2. responses without a body --------------------------------------------------------------
@pytest.mark.integration
def test_head_responses_end_at_their_headers_and_keep_the_connection():
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (req := await read_request(reader)) is not None:
            assert req.startswith(b"HEAD ")
            # What nginx sends: the GET response's Content-Length, no body.
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 1234\r\n\r\n")

    async def main() -> tuple[list[Outcome], dict[str, float]]:
        async with serving(handler) as port, invoker(target(f"http://127.0.0.1:{port}/", method="HEAD")) as inv:
            return [await one(inv) for _ in range(20)], inv.counters()

    outcomes, counters = run(main())
    assert outcomes == [Outcome.ok] * 20
    assert counters["connections_opened"] == 1 and counters["retries"] == 0


@pytest.mark.integration
def test_204_304_and_interim_responses_have_no_body():
    answers = {
        b"/204": [b"HTTP/1.1 204 No Content\r\n\r\n"],
        b"/304": [b"HTTP/1.1 304 Not Modified\r\ncontent-length: 50\r\netag: \"x\"\r\n\r\n"],
        # 103 Early Hints, then (a moment later) the real response: that is the outcome.
        b"/early": [b"HTTP/1.1 103 Early Hints\r\nlink: </s.css>; rel=preload\r\n\r\n",
                    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy"],
    }

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (req := await read_request(reader)) is not None:
            for i, part in enumerate(answers[req.split(b" ")[1]]):
                if i:
                    await writer.drain()
                    await asyncio.sleep(0.02)
                writer.write(part)

    async def main() -> dict[bytes, tuple[list[Outcome], float]]:
        got = {}
        async with serving(handler) as port:
            for path in answers:
                t = target(f"http://127.0.0.1:{port}{path.decode()}")
                async with invoker(t) as inv:
                    got[path] = [await one(inv) for _ in range(5)], inv.counters()["connections_opened"]
            # A 304 is not a success unless the target says it expects one (conditional requests).
            t = dataclasses.replace(t, url=f"http://127.0.0.1:{port}/304", address={"expect_status": ["2xx", 304]})
            async with invoker(t) as inv:
                got[b"expected 304"] = [await one(inv) for _ in range(5)], inv.counters()["connections_opened"]
        return got

    got = run(main())
    assert got[b"/204"] == ([Outcome.ok] * 5, 1)
    assert got[b"/304"] == ([Outcome.http_3xx] * 5, 1)
    assert got[b"expected 304"] == ([Outcome.ok] * 5, 1)
    assert got[b"/early"] == ([Outcome.http_5xx] * 5, 1)


# -- 3. bodies that end at connection close ---------------------------------------------------
async def http10_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    if await read_request(reader) is None:
        return
    writer.write(b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nhello, ")
    await writer.drain()
    await asyncio.sleep(0.01)
    writer.write(b"world")  # the body spans two segments; its end is the close
    await writer.drain()
    writer.close()


@pytest.mark.integration
def test_close_delimited_http10_bodies_are_ok():
    async def main() -> tuple[list[Outcome], dict[str, float]]:
        async with serving(http10_handler) as port, invoker(target(f"http://127.0.0.1:{port}/")) as inv:
            return [await one(inv) for _ in range(10)], inv.counters()

    outcomes, counters = run(main())
    assert outcomes == [Outcome.ok] * 10
    assert counters == {"retries": 0, "connections_opened": 10}


@pytest.mark.integration
def test_close_delimited_bodies_through_a_shard():
    with ThreadServer(http10_handler) as server:
        assert drive_shard(f"http://127.0.0.1:{server.port}/") == {"ok": 40}


@pytest.mark.integration
@pytest.mark.parametrize(
    "answer",
    [b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort",
     b"HTTP/1.0 200 OK\r\ncontent-length: 100\r\n\r\nshort",
     b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
     b"HTTP/1.1 200 OK\r\ncontent-len"],
    ids=["content-length", "http10-content-length", "chunked", "in-headers"],
)
def test_bodies_cut_short_by_a_close_are_still_resets(answer):
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await read_request(reader) is not None:
            writer.write(answer)
            await writer.drain()
            writer.close()

    async def main() -> list[Outcome]:
        async with serving(handler) as port, invoker(target(f"http://127.0.0.1:{port}/")) as inv:
            return [await one(inv) for _ in range(3)]

    assert run(main()) == [Outcome.reset] * 3


# -- 4. keep-alive connections the server has closed ------------------------------------------
def closes_on_second_request(rst: bool, only_first_connection_answers: bool = False,
                             second: bytes = b"") -> Handler:
    """Answers a connection's first request, then closes it on reading the next one (the race of
    a server closing an idle keep-alive connection just as the client reuses it)."""
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        if await read_request(reader) is None:
            return
        if only_first_connection_answers and connections > 1:
            writer.close()
            return
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        if await read_request(reader) is None:
            return
        if second:
            writer.write(second)
            await writer.drain()
        reset_close(writer) if rst else writer.close()

    return handler


@pytest.mark.integration
@pytest.mark.parametrize("rst", [False, True], ids=["fin", "rst"])
def test_a_stale_keepalive_connection_is_resent_once_on_a_fresh_one(rst):
    async def main() -> tuple[list[Outcome], dict[str, float]]:
        async with serving(closes_on_second_request(rst)) as port, \
                invoker(target(f"http://127.0.0.1:{port}/")) as inv:
            return [await one(inv) for _ in range(10)], inv.counters()

    outcomes, counters = run(main())
    assert outcomes == [Outcome.ok] * 10
    # Requests 2..10 each went out on the connection the previous one used and came back on a
    # fresh one.
    assert counters == {"retries": 9, "connections_opened": 10}


@pytest.mark.integration
def test_a_retry_is_made_once_and_a_fresh_connection_that_fails_is_a_reset():
    async def main() -> tuple[list[Outcome], dict[str, float]]:
        handler = closes_on_second_request(rst=False, only_first_connection_answers=True)
        async with serving(handler) as port, invoker(target(f"http://127.0.0.1:{port}/")) as inv:
            return [await one(inv) for _ in range(2)], inv.counters()

    outcomes, counters = run(main())
    assert outcomes == [Outcome.ok, Outcome.reset]
    assert counters == {"retries": 1, "connections_opened": 2}


@pytest.mark.integration
def test_a_reused_connection_that_sent_part_of_a_response_is_not_retried():
    async def main() -> tuple[list[Outcome], dict[str, float]]:
        handler = closes_on_second_request(rst=False, second=b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nok")
        async with serving(handler) as port, invoker(target(f"http://127.0.0.1:{port}/")) as inv:
            return [await one(inv) for _ in range(2)], inv.counters()

    outcomes, counters = run(main())
    assert outcomes == [Outcome.ok, Outcome.reset]
    assert counters == {"retries": 0, "connections_opened": 1}


# -- 5. requests in flight when the drain ends ------------------------------------------------
@pytest.mark.integration
def test_requests_in_flight_at_close_are_timeouts():
    received = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        if await read_request(reader) is not None:
            received += 1
            await reader.read()  # never answers

    async def main() -> list[Outcome]:
        got: list[Outcome] = []
        async with serving(handler) as port:
            inv = make_invoker(target(f"http://127.0.0.1:{port}/", timeout_s=30), "warm", 64)
            await inv.start()
            for _ in range(3):
                inv.invoke(time.monotonic(), lambda outcome, *_: got.append(outcome))
            for _ in range(500):  # bounded: until the server has all three
                if received == 3:
                    break
                await asyncio.sleep(0.01)
            await inv.close()
        return got

    assert run(main()) == [Outcome.timeout] * 3


@pytest.mark.integration
def test_a_stopped_shard_counts_unanswered_requests_as_timeouts(fault_server):
    totals = drive_shard(fault_server.url("/timeout"), rate=50, seconds=30, timeout_s=30, stop_after=0.8)
    assert set(totals) == {"timeout"} and totals["timeout"] > 10



@pytest.mark.integration
def test_a_shard_reports_its_retries_per_interval_and_every_request_is_ok():
    intervals: list[Any] = []
    with ThreadServer(closes_on_second_request(rst=False)) as server:
        assert drive_shard(f"http://127.0.0.1:{server.port}/", intervals=intervals) == {"ok": 40}
    assert sum(iv.retries for iv in intervals) > 0  # reused connections were each closed by the server
