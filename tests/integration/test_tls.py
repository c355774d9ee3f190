"""HTTPS targets: keep-alive over TLS, certificate verification on by default, and the pool:
connections open before start_at, warm-up connections carried into the measured phase, TLS
session resumption, connect times recorded (connect_ms)."""

import asyncio
import shutil
import ssl
import subprocess
import time
from collections import Counter
from typing import Any

import pytest

from orchestrator.run.collect import Collector
from tests.integration.test_outcomes import drive
from tests.servers import FaultServer, _FaultProtocol
from workers.contract import Interval, Shard, Target
from workers.histograms import merge
from workers.shard import run_shards


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.fail("openssl is needed to make the test certificate (apt-get install openssl)")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")], check=True, capture_output=True)
    return d / "cert.pem", d / "key.pem"


def server_context(cert) -> ssl.SSLContext:
    """A fresh server context: its session_stats() count this test's handshakes only."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*cert)
    return ctx


@pytest.fixture(scope="module")
def tls_server(cert):
    with FaultServer(ssl_context=server_context(cert)) as server:
        yield server


class _Tracking(_FaultProtocol):
    """Remembers which connection served each request, and when (epoch seconds)."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.id = self.server.connections
        self.server.accepted.append(time.time())

    def handle(self, path: str) -> None:
        self.server.served.append((time.time(), self.id))
        super().handle(path)


class TrackingServer(FaultServer):
    """The fault server over TLS, recording accepted connections and the connection of every
    request (its own loop in a thread, like FaultServer)."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        super().__init__(ssl_context=ctx)
        self.accepted: list[float] = []
        self.served: list[tuple[float, int]] = []

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            self.server = await self.loop.create_server(
                lambda: _Tracking(self), self.host, 0, backlog=1024, ssl=self.ssl_context)
            self.port = self.server.sockets[0].getsockname()[1]
            self._ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()


def shard(url: str, shard_id: str, start_at: float, seconds: float, rate: int = 200, warmup: bool = False,
          max_in_flight: int = 64) -> Shard:
    target = Target(name="tls", runtime="other", platform="http", url=url, method="GET", timeout_s=5.0,
                    tls_verify=False)
    return Shard(run_id="r", shard_id=shard_id, region="local", target=target, phase="warm",
                 arrival={"kind": "constant", "rps": str(rate)}, start_at=start_at, duration_s=seconds,
                 flush_interval_s=0.5, max_in_flight=max_in_flight, warmup=warmup)


def counted(intervals: list[Interval], name: str) -> int:
    return sum(int(iv.counters.get(name, 0)) for iv in intervals)


@pytest.mark.integration
def test_untrusted_certificate_is_refused_by_default(tls_server):
    _, totals = drive(tls_server.url("/ok"), rate=50, seconds=1.0)
    assert totals == {"connect_error": 50}


@pytest.mark.integration
def test_https_chunked_responses_over_reused_connections(tls_server):
    before = tls_server.connections
    _, totals = drive(tls_server.url("/chunked"), rate=100, seconds=1.0, tls_verify=False)
    assert totals == {"ok": 100}
    assert tls_server.connections - before < 50  # keep-alive: far fewer handshakes than requests


@pytest.mark.integration
def test_the_pool_is_open_before_start_at_and_resumes_the_first_session(cert):
    ctx = server_context(cert)
    with TrackingServer(ctx) as server:
        start_at = time.time() + 1.5
        intervals: list[Interval] = []
        run_shards([shard(server.url("/ok"), "s", start_at, 1.0)], intervals.append)
    outcomes = Counter[str]()
    for iv in intervals:
        outcomes.update(iv.outcomes)
    assert outcomes == {"ok": 200}
    # Connections were accepted before start_at, and no request came before it.
    assert sum(1 for t in server.accepted if t < start_at) >= 4
    assert min(t for t, _ in server.served) >= start_at - 0.01
    assert counted(intervals, "connections_before_start") >= 4
    # Every connection after the first resumed the TLS session (the server counts the hits).  (A
    # connect still in progress when the run ends is accepted by the server, never counted here.)
    opened = counted(intervals, "connections_opened")
    assert opened <= server.connections
    assert ctx.session_stats()["hits"] == server.connections - 1
    assert counted(intervals, "tls_resumed") == opened - 1
    # Connect + handshake time: one sample per connection, in the Interval and in the result.
    connect = merge(iv.connect_us for iv in intervals)
    assert connect.get_total_count() == opened
    assert connect.get_min_value() > 0
    collector = Collector("r", {"warm": 1.0})
    collector.add_all(intervals)
    (group,) = collector.result().groups
    assert group.connect_ms is not None and group.connect_ms.p50 is not None and group.connect_ms.p50 > 0
    assert group.connections_opened == opened and group.connections_before_start >= 4
    assert group.tls_resumed == opened - 1


@pytest.mark.integration
def test_warmup_connections_carry_the_measured_phase(cert):
    # max_in_flight 4 = the pool's floor: each phase wants exactly 4 connections.
    ctx = server_context(cert)
    with TrackingServer(ctx) as server:
        url = server.url("/ok")
        t0 = time.time() + 1.0
        boundary = t0 + 1.0
        intervals: list[Interval] = []
        run_shards([shard(url, "warm", t0, 1.0, warmup=True, max_in_flight=4),
                    shard(url, "main", boundary, 1.0, max_in_flight=4)], intervals.append)
    measured = [iv for iv in intervals if not iv.warmup]
    warm = [iv for iv in intervals if iv.warmup]
    assert sum(iv.outcomes.get("ok", 0) for iv in measured) == 200
    assert sum(iv.outcomes.get("ok", 0) for iv in warm) == 200
    # One pool for both phases, opened once in the lead time (two pools: 8 before t0, 4 of them
    # the measured shard's own): the measured phase starts on the warm-up's connections.
    assert sum(1 for t in server.accepted if t < t0) == 4
    assert counted(warm, "connections_before_start") == 4
    assert counted(measured, "connections_before_start") == 0
    # On a quiet machine that is all (4 connections); a loaded one may still be answering the
    # warm-up when the measured phase begins: the two then hold up to 8 in flight.
    assert server.connections <= 8
    assert ctx.session_stats()["hits"] == server.connections - 1
