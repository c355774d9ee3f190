"""Loopback servers the tests drive load at and read from: real sockets, no mocks.

Also the shared plumbing of the integration tests: ``need`` (skip locally, fail under ``make test``
and CI), ``strict``,
``free_port``, ``wait_for``, ``GroupLeader`` (stop or kill a process and its children) and a real
``Prometheus`` scraping loopback targets.

FaultServer answers by path: /ok, /5xx, /429, /reset (RST before any response), /timeout
(never answers), /chunked (chunked 200), /close (200 then closes), /slow?ms=N,
/redirect (302 to itself: a redirect loop), /head?bytes=N (200 whose head is exactly N bytes),
/body?bytes=N (200 with an N-byte body, sent in 64 KiB writes), /endless-headers (a 200 status
line, then header lines as fast as the client reads them: up to ENDLESS_BYTES per connection,
for at most ENDLESS_S); any other path is a 200, and /timed* paths also record when each request
arrived (``times``).
It runs its own asyncio loop in a thread and counts requests per path.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

ENDLESS_BYTES = 512 * 1024 * 1024  # what /endless-headers sends on one connection at most
ENDLESS_S = 20.0  # … and for how long
_CHUNK = 64 * 1024
_HEADER_LINES = b"".join(b"x-pad-%05d: %s\r\n" % (i, b"a" * 100) for i in range(_CHUNK // 116))


def _head_of(size: int) -> bytes:
    """A 200 head (status line to the blank line) of exactly ``size`` bytes, and no body."""
    start, end = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n", b"\r\n"
    pad = size - len(start) - len(end) - len(b"x-pad: \r\n")
    return start + b"x-pad: " + b"a" * max(pad, 0) + b"\r\n" + end


class _FaultProtocol(asyncio.Protocol):
    def __init__(self, server: FaultServer) -> None:
        self.server = server
        self.buffer = b""
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.server.connections += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, rest = self.buffer.split(b"\r\n\r\n", 1)
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            path = head.split(b" ", 2)[1].decode()
            self.handle(path)

    def handle(self, path: str) -> None:
        route, _, query = path.partition("?")
        self.server.hits[route] += 1
        if route.startswith("/timed"):  # arrival times (monotonic) of the /timed* routes: bursts are visible
            self.server.times[route].append(time.monotonic())
        t = self.transport
        if route == "/5xx":
            t.write(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\nfail")
        elif route == "/429":
            t.write(b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\n\r\n")
        elif route == "/reset":
            sock = t.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            t.abort()
        elif route == "/timeout":
            pass
        elif route == "/chunked":
            t.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n3\r\n!!!\r\n0\r\n\r\n")
        elif route == "/close":
            t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            t.close()
        elif route == "/redirect":
            t.write(b"HTTP/1.1 302 Found\r\nlocation: /redirect\r\ncontent-length: 0\r\n\r\n")
        elif route == "/head":
            t.write(_head_of(int(query.partition("bytes=")[2])))
        elif route == "/body":
            size = int(query.partition("bytes=")[2])
            t.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
            self._stream(b"b" * _CHUNK, size, time.monotonic() + ENDLESS_S)
        elif route == "/endless-headers":
            t.write(b"HTTP/1.1 200 OK\r\n")
            self._stream(_HEADER_LINES, ENDLESS_BYTES, time.monotonic() + ENDLESS_S)
        elif route == "/slow":
            ms = float(query.partition("ms=")[2] or 10)
            asyncio.get_running_loop().call_later(
                ms / 1000, lambda: t.is_closing() or t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            )
        else:
            t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")


    def _stream(self, chunk: bytes, left: int, until: float) -> None:
        """Write ``left`` bytes of ``chunk`` repeated, as fast as the client takes them (the write
        buffer kept under 1 MiB), until ``until`` or the connection closes."""
        t = self.transport
        while left > 0 and not t.is_closing() and time.monotonic() < until and t.get_write_buffer_size() < 1 << 20:
            piece = chunk[:left]
            t.write(piece)
            left -= len(piece)
        if left > 0 and not t.is_closing() and time.monotonic() < until:
            asyncio.get_running_loop().call_later(0.001, self._stream, chunk, left, until)


class FaultServer:
    def __init__(self, host: str = "127.0.0.1", ssl_context: Any = None) -> None:
        self.host = host
        self.ssl_context = ssl_context
        self.hits: Counter[str] = Counter()
        self.times: defaultdict[str, deque[float]] = defaultdict(lambda: deque(maxlen=200_000))
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True, name="fault-server")

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            self.server = await self.loop.create_server(
                lambda: _FaultProtocol(self), self.host, 0, backlog=1024, ssl=self.ssl_context
            )
            self.port = self.server.sockets[0].getsockname()[1]
            self._ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def __enter__(self) -> FaultServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    def url(self, path: str) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.host}:{self.port}{path}"


def closed_port() -> int:
    """A loopback port with nothing listening (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def strict() -> bool:
    """True under `make test` (FNBENCH_TEST_STRICT, set once it has installed and built everything) and CI."""
    return any(os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")
               for name in ("FNBENCH_TEST_STRICT", "CI"))


def need(ok: bool, why: str) -> None:
    """Skip a bare `pytest` run when a tool is missing; under `make test` or CI a missing tool is a failure."""
    if not ok:
        if strict():
            pytest.fail(f"{why} (required under make test: it installs and builds everything)")
        pytest.skip(why)


def free_port() -> int:
    """A free loopback port for a server that must be told its port in advance.

    Drawn below the kernel's ephemeral range, so no bind(0) and no outgoing connection can be
    handed the same number between now and the moment the server binds it.
    """
    low = _ephemeral_low()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12_000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free loopback port below the ephemeral range")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


class GroupLeader:
    """A subprocess started with ``start_new_session=True`` (``self.proc``): ``stop`` and ``kill``
    reach its whole process group (a Celery worker's or scheduler's pool processes too)."""

    proc: subprocess.Popen
    stop_timeout_s = 10.0

    def kill(self) -> None:
        """SIGKILL the group at once (a host dying)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM the group; SIGKILL it if it has not exited within ``stop_timeout_s``."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_for(check: Callable[[], Any], timeout_s: float, what: str, every: float = 0.1) -> Any:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout_s}s")


class Prometheus:
    """Debian's prometheus on a free loopback port, scraping ``targets`` every second."""

    def __init__(self, directory: Path, targets: list[str]) -> None:
        need(shutil.which("prometheus") is not None, "prometheus not installed (apt install prometheus)")
        taken = {int(t.rsplit(":", 1)[1]) for t in targets}
        self.port = free_port()
        while self.port in taken:  # a just-released port can come back from the kernel
            self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = directory / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"scrape_configs:\n  - job_name: fnbench\n    static_configs: [{{targets: {targets!r}}}]\n"
        )
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn",
             "--enable-feature=exemplar-storage"],  # the slowest requests' ids on the latency buckets
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def __enter__(self) -> Prometheus:
        try:
            wait_for(self._ready, 30, "prometheus ready")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        """An instant query; asserts that Prometheus accepted it."""
        r = httpx.post(f"{self.url}/api/v1/query", data={"query": expr, "time": f"{at:.3f}"}, timeout=10)
        assert r.status_code == 200, (expr, r.text)
        return r.json()["data"]["result"]

    def exemplars(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        """/api/v1/query_exemplars: [{seriesLabels, exemplars: [{labels, value, timestamp}]}]."""
        r = httpx.post(f"{self.url}/api/v1/query_exemplars", timeout=10,
                       data={"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}"})
        assert r.status_code == 200, (expr, r.text)
        return r.json()["data"] or []

    def query_range(self, expr: str, start: float, end: float, step: float = 0.5) -> list[float]:
        """The values of a single-series range query (empty when there is no data)."""
        r = httpx.post(f"{self.url}/api/v1/query_range", timeout=10, data={
            "query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": str(step)})
        assert r.status_code == 200, (expr, r.text)
        result = r.json()["data"]["result"]
        return [float(v) for _, v in result[0]["values"]] if result else []

