"""Answers that are not successes, and responses too large to take (issue 27 items 6 and 7).

* A 3xx (a redirect loop) is ``http_3xx``, not ``ok``, unless the target's ``expect_status``
  lists it; ``expect_status`` decides what is ok, every other status is its class's outcome.
* A head over ``max_header_bytes`` or a body over ``max_body_bytes`` is ``too_large`` and its
  connection is closed; an endless header section on one target neither grows the worker nor
  delays a healthy target's requests in the same worker.

Loopback servers only (tests/servers.py FaultServer); the worker of the two-target run is a
spawned process, as a real one, whose memory is read from its /proc/self/status.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import re
import time
from pathlib import Path
from typing import Any

import pytest
import uvloop

from orchestrator.errors import SpecError
from orchestrator.run import plan, spec
from tests.servers import FaultServer
from workers.contract import Interval, Outcome, Shard, Target
from workers.errors import SetupError
from workers.histograms import merge
from workers.platforms.http import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_REQUEST_ID_HEADERS,
    HttpInvoker,
)

WAIT_S = 5.0  # the most one request may take here before the test fails


def target(url: str, timeout_s: float = 2.0, **address: Any) -> Target:
    return Target(name="t", runtime="other", platform="http", url=url, method="GET", timeout_s=timeout_s,
                  address=address)


def requests(t: Target, n: int) -> tuple[list[Outcome], dict[str, float]]:
    """Send ``n`` requests one after another on a fresh invoker; their outcomes and its counters."""

    async def main() -> tuple[list[Outcome], dict[str, float]]:
        inv = HttpInvoker(t)
        await inv.start()
        got = []
        try:
            for _ in range(n):
                fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
                inv.invoke(time.monotonic(), lambda o, *_, f=fut: f.done() or f.set_result(o))
                got.append(await asyncio.wait_for(fut, WAIT_S))
        finally:
            await inv.close()
        return got, inv.counters()

    return uvloop.run(asyncio.wait_for(main(), 60))


# -- item 6: which answers are successes ------------------------------------------------------
@pytest.mark.integration
@pytest.mark.parametrize(
    ("path", "expect", "outcome"),
    [("/redirect", None, Outcome.http_3xx),  # default: any 2xx
     ("/redirect", ["2xx", 302], Outcome.ok),
     ("/redirect", ["200-299", "3xx"], Outcome.ok),
     ("/redirect", [200], Outcome.http_3xx),
     ("/5xx", [500], Outcome.ok),
     ("/5xx", ["2xx", 301], Outcome.http_5xx),
     ("/429", ["2xx"], Outcome.throttled),
     ("/ok", [204], Outcome.other),  # a 2xx the target does not expect
     ("/ok", None, Outcome.ok)],
)
def test_expect_status_decides_what_is_ok(fault_server, path, expect, outcome):
    address = {} if expect is None else {"expect_status": expect}
    outcomes, counters = requests(target(fault_server.url(path), **address), 5)
    assert outcomes == [outcome] * 5
    assert counters["connections_opened"] == 1  # an unexpected answer is still a complete response


def test_validate_refuses_bad_expect_status_and_bounds_with_yaml_paths():
    text = """
name: x
targets:
  - {name: a, url: "http://127.0.0.1:1/", expect_status: [200, "6xx", "299-200", "1xx", 204]}
  - {name: b, url: "http://127.0.0.1:1/", expect_status: [true], max_header_bytes: 10}
  - {name: c, url: "http://127.0.0.1:1/", expect_status: [], max_body_bytes: -1}
  - {name: d, url: "http://127.0.0.1:1/", max_header_bytes: true, max_body_bytes: 1.5}
load: {rps: 1}
"""
    with pytest.raises(SpecError) as info:
        spec.load_text(text)
    problems = info.value.problems
    for path in ("targets[0].expect_status[1]", "targets[0].expect_status[2]", "targets[0].expect_status[3]",
                 "targets[1].expect_status", "targets[1].max_header_bytes", "targets[2].expect_status",
                 "targets[2].max_body_bytes", "targets[3].max_header_bytes", "targets[3].max_body_bytes"):
        assert any(p.startswith(path) for p in problems), (path, problems)
    assert not any(p.startswith(("targets[0].expect_status[0]", "targets[0].expect_status[4]")) for p in problems)


def test_a_valid_spec_carries_expect_status_and_bounds_to_the_worker():
    b = spec.load_text("""
name: x
targets:
  - {name: a, url: "http://127.0.0.1:1/", expect_status: ["2xx", 301, "400-404"], max_header_bytes: 8192,
     max_body_bytes: 0}
  - {name: b, url: "http://127.0.0.1:1/"}
load: {rps: 1}
duration: 1s
""")
    addresses = {s.target.name: s.target.address for s in plan.split(b, "r", 0.0)}
    ids = list(DEFAULT_REQUEST_ID_HEADERS)  # (the slowest requests' ids: issue 21)
    assert addresses["a"] == {"expect_status": ["2xx", 301, "400-404"], "max_header_bytes": 8192, "max_body_bytes": 0,
                              "request_id_headers": ids}
    assert addresses["b"] == {"expect_status": ["2xx"], "max_header_bytes": DEFAULT_MAX_HEADER_BYTES,
                              "max_body_bytes": DEFAULT_MAX_BODY_BYTES, "request_id_headers": ids}
    table = HttpInvoker(Target(name="a", runtime="other", platform="http", url="http://127.0.0.1:1/",
                               address=addresses["a"])).outcomes
    assert [table[s] for s in (200, 299, 301, 302, 400, 404, 405, 429, 503)] == [
        Outcome.ok, Outcome.ok, Outcome.ok, Outcome.http_3xx, Outcome.ok, Outcome.ok, Outcome.http_4xx,
        Outcome.throttled, Outcome.http_5xx]


def test_the_worker_refuses_an_address_the_spec_could_not_make():
    for address, key in (({"expect_status": ["7xx"]}, "expect_status[0]"), ({"max_header_bytes": "64k"}, "max_header_bytes"),
                         ({"max_body_bytes": True}, "max_body_bytes"), ({"expect_status": []}, "expect_status")):
        with pytest.raises(SetupError, match=re.escape(f"target 't'.{key}: ")):
            HttpInvoker(target("http://127.0.0.1:1/", **address))


# -- item 7: responses over the bounds --------------------------------------------------------
@pytest.mark.integration
def test_the_head_and_body_bounds_are_exact_and_a_response_over_them_closes_its_connection(fault_server):
    over = target(fault_server.url("/head?bytes=4097"), max_header_bytes=4096)
    assert requests(over, 3) == ([Outcome.too_large] * 3, {"retries": 0, "connections_opened": 3})
    at = target(fault_server.url("/head?bytes=4096"), max_header_bytes=4096)
    assert requests(at, 3) == ([Outcome.ok] * 3, {"retries": 0, "connections_opened": 1})
    over = target(fault_server.url("/body?bytes=300001"), max_body_bytes=300_000)
    assert requests(over, 3) == ([Outcome.too_large] * 3, {"retries": 0, "connections_opened": 3})
    at = target(fault_server.url("/body?bytes=300000"), max_body_bytes=300_000)
    assert requests(at, 3) == ([Outcome.ok] * 3, {"retries": 0, "connections_opened": 1})
    # The defaults take a real-sized head and a large body.
    assert requests(target(fault_server.url("/head?bytes=16384")), 2)[0] == [Outcome.ok] * 2
    assert requests(target(fault_server.url(f"/body?bytes={4 << 20}")), 2)[0] == [Outcome.ok] * 2


@pytest.mark.integration
def test_an_endless_header_section_is_cut_at_the_bound(fault_server):
    outcomes, counters = requests(target(fault_server.url("/endless-headers"), timeout_s=10.0), 5)
    assert outcomes == [Outcome.too_large] * 5 and counters["connections_opened"] == 5


HEALTHY_RPS, BAD_RPS, SECONDS = 200, 50, 3.0


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


def _worker(shards: list[bytes], out: Any) -> None:
    """A worker's main: run the shards on one event loop; report memory and the intervals."""
    from workers.shard import run_shards

    parsed = [Shard.from_json(raw) for raw in shards]
    before = _status_kb("VmRSS")
    intervals: list[bytes] = []
    run_shards(parsed, lambda iv: intervals.append(iv.to_json()))
    out.put((before, _status_kb("VmHWM"), intervals))


def _run_worker(shards: list[Shard]) -> tuple[int, list[Interval]]:
    """Run ``shards`` in one spawned worker process; (its peak RSS growth in KiB, the intervals)."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_worker, args=([s.to_json() for s in shards], out), daemon=True)
    proc.start()
    try:
        before, peak, raw = out.get(timeout=SECONDS + 60)
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    return peak - before, [Interval.from_json(r) for r in raw]


def _shard(name: str, url: str, rps: int, start_at: float, max_in_flight: int) -> Shard:
    t = Target(name=name, runtime="other", platform="http", url=url, method="GET", timeout_s=2.0)
    return Shard(run_id="r", shard_id=name, region="local", target=t, phase="warm",
                 arrival={"kind": "constant", "rps": str(rps)}, start_at=start_at, duration_s=SECONDS,
                 flush_interval_s=0.5, max_in_flight=max_in_flight)


@pytest.mark.integration
def test_an_endless_header_section_does_not_starve_a_healthy_target_in_the_same_worker():
    with FaultServer() as healthy, FaultServer() as bad:
        def run(with_bad: bool) -> tuple[int, dict[str, list[Interval]]]:
            start = time.time() + 4.0  # the spawned worker imports the engine first
            shards = [_shard("healthy", healthy.url("/ok"), HEALTHY_RPS, start, 256)]
            if with_bad:
                shards.append(_shard("bad", bad.url("/endless-headers"), BAD_RPS, start, 256))
            grown_kb, intervals = _run_worker(shards)
            by: dict[str, list[Interval]] = {}
            for iv in intervals:
                by.setdefault(iv.target, []).append(iv)
            return grown_kb, by

        alone_kb, alone = run(False)
        both_kb, both = run(True)

    def lag_p99_us(ivs: list[Interval]) -> int:
        return merge(iv.send_lag_us for iv in ivs).get_value_at_percentile(99)

    def totals(ivs: list[Interval]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for iv in ivs:
            for k, n in iv.outcomes.items():
                counts[k] = counts.get(k, 0) + n
        return counts

    intended = int(HEALTHY_RPS * SECONDS)
    assert totals(alone["healthy"]) == {"ok": intended}
    # Every request to the bad target is cut at the header bound: none hangs until its timeout.
    assert totals(both["bad"]) == {"too_large": int(BAD_RPS * SECONDS)}
    # The healthy target in the same worker: all its requests, sent as on time as without the bad one
    # (within 10x its p99 alone, or within one interval between its arrivals).
    completed = sum(iv.completed for iv in both["healthy"])
    assert completed >= 0.99 * sum(iv.completed for iv in alone["healthy"]), totals(both["healthy"])
    assert totals(both["healthy"]) == {"ok": intended}
    alone_lag, both_lag = lag_p99_us(alone["healthy"]), lag_p99_us(both["healthy"])
    assert both_lag <= max(10 * alone_lag, 1e6 / HEALTHY_RPS), (alone_lag, both_lag)
    # The worker's memory: the bad target's connections hold at most a bounded head each
    # (256 x 64 KiB = 16 MiB at worst), not the gigabytes an unbounded parser kept.
    assert both_kb - alone_kb < 48 * 1024, (alone_kb, both_kb)
