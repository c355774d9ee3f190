"""The slowest requests of each interval, with the ids that find them elsewhere (issue 21 items 1, 2).

A loopback server (asyncio streams, in a thread) answers every request with its own
``x-request-id`` and records the ``traceparent`` each request carried; every 10th request
waits before it answers, so the slowest requests are known.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from typing import Any

from workers.contract import Interval, Shard, Target
from workers.shard import run_shard

from .test_http_correctness import ThreadServer, read_request

TRACEPARENT = re.compile(rb"\r\ntraceparent: 00-([0-9a-f]{32})-([0-9a-f]{16})-01\r\n", re.I)


class Recorder:
    def __init__(self, slow_every: int = 10, slow_s: float = 0.05) -> None:
        self.n = 0
        self.traces: dict[str, str] = {}  # request id -> trace id it carried ("" none)
        self.raw: list[bytes] = []
        self.slow_every = slow_every
        self.slow_s = slow_s
        self.lock = threading.Lock()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            req = await read_request(reader)
            if req is None:
                break
            with self.lock:
                self.n += 1
                n = self.n
                m = TRACEPARENT.search(req)
                rid = f"req-{n}"
                self.traces[rid] = m.group(1).decode() if m else ""
                self.raw.append(req)
            if n % self.slow_every == 0:
                await asyncio.sleep(self.slow_s)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Request-Id: %s\r\n\r\nok" % rid.encode())
            await writer.drain()
        writer.close()


def drive(url: str, slowest: int = 3, trace_ratio: float = 0.0, rate: int = 100, seconds: float = 1.0,
          address: dict[str, Any] | None = None) -> list[Interval]:
    t = Target(name="t", runtime="other", platform="http", url=url, method="GET", timeout_s=2.0,
               address=address or {})
    shard = Shard(run_id="r", shard_id="s", region="local", target=t, phase="warm",
                  arrival={"kind": "constant", "rps": str(rate)}, start_at=time.time() + 0.2, duration_s=seconds,
                  flush_interval_s=0.5, slowest=slowest, trace_ratio=trace_ratio)
    intervals: list[Interval] = []
    run_shard(shard, intervals.append, threading.Event())
    return intervals


def test_each_interval_keeps_its_k_slowest_with_the_request_ids():
    rec = Recorder()
    with ThreadServer(rec) as srv:
        intervals = drive(f"http://127.0.0.1:{srv.port}/", slowest=8)
    total = sum(iv.completed for iv in intervals)
    assert total >= 90
    seen = 0
    for iv in intervals:
        assert len(iv.slowest) <= 8
        times = [s["response_ms"] for s in iv.slowest]
        assert times == sorted(times, reverse=True)
        for s in iv.slowest:
            assert s["outcome"] == "ok" and iv.t0 - 1 <= s["due"] <= iv.t1
            assert s["request_id"] in rec.traces  # the id this server gave that very response
            assert s["service_ms"] <= s["response_ms"] + 1e-3
            seen += 1
            if int(s["request_id"].split("-")[1]) % 10 == 0:
                assert s["response_ms"] >= 40  # the server waited 50 ms
    # The requests the server held are the slowest: every held one that was measured is in its interval's list.
    slow_ids = {s["request_id"] for iv in intervals for s in iv.slowest}
    held = {f"req-{n}" for n in range(10, total + 1, 10)}
    assert held <= slow_ids, (held, slow_ids)  # 50 requests an interval, 5 of them held: all 5 kept
    assert seen > 0
    # Default: no trace context on the wire.
    assert not any(b"traceparent" in r.lower() for r in rec.raw)


def test_traceparent_is_sent_at_the_ratio_and_the_slowest_carry_its_trace_id():
    rec = Recorder(slow_every=5)
    with ThreadServer(rec) as srv:
        intervals = drive(f"http://127.0.0.1:{srv.port}/", slowest=5, trace_ratio=0.5)
    traced = [t for t in rec.traces.values() if t]
    assert abs(len(traced) - len(rec.traces) / 2) <= 2, (len(traced), len(rec.traces))
    assert len(set(traced)) == len(traced)  # a new trace per request
    checked = 0
    for iv in intervals:
        for s in iv.slowest:
            assert s.get("trace_id", "") == rec.traces[s["request_id"]]
            checked += bool(s.get("trace_id"))
    assert checked > 0


def test_no_slowest_when_k_is_zero_and_a_configured_header_list_is_read():
    rec = Recorder()
    with ThreadServer(rec) as srv:
        none = drive(f"http://127.0.0.1:{srv.port}/", slowest=0, seconds=0.5)
        other = drive(f"http://127.0.0.1:{srv.port}/", seconds=0.5, address={"request_id_headers": ["x-other"]})
    assert all(iv.slowest == [] for iv in none)
    kept = [s for iv in other for s in iv.slowest]
    assert kept and all("request_id" not in s for s in kept)  # x-other is not in the response


def test_a_record_with_bad_slowest_entries_is_refused_naming_the_field():
    import pytest

    from workers.contract import SchemaError

    good = drive_nothing()
    d = good.to_dict()
    for bad, words in (([{"due": 1.0}], "due, response_ms and outcome"),
                       ([{"due": 1.0, "response_ms": 2.0, "outcome": "ok", "x": 1}], "unknown key"),
                       ([{"due": 1.0, "response_ms": -2.0, "outcome": "ok"}], "response_ms"),
                       ([{"due": 1.0, "response_ms": 2.0, "outcome": "ok", "request_id": "x" * 300}], "request_id"),
                       ([{"due": 1.0, "response_ms": 2.0, "outcome": "ok"}] * 101, "at most 100")):
        with pytest.raises(SchemaError, match="slowest") as err:
            Interval.from_dict({**d, "slowest": bad})
        assert words in str(err.value)


def drive_nothing() -> Interval:
    return Interval(run_id="r", shard_id="s", attempt=0, seq=0, region="local", target="t", runtime="go",
                    phase="warm", t0=1.0, t1=2.0, intended=0, sent=0, completed=0, outcomes={}, response_us="",
                    service_us="", send_lag_us="")
