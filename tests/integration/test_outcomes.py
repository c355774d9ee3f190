"""Every failure mode is counted as its own outcome while the open-model rate holds."""

import time

import pytest

from tests.servers import closed_port
from workers.contract import Shard, Target
from workers.histograms import merge
from workers.shard import run_shard

RATE, SECONDS = 100, 2.0


def drive(url: str, timeout_s: float = 2.0, rate: int = RATE, seconds: float = SECONDS, max_in_flight: int = 64,
          tls_verify: bool = True, queue_limit: int = 10_000):
    """Run one shard at ``url``; returns (intervals, outcome totals)."""
    target = Target(name="t", runtime="other", platform="http", url=url, method="GET", timeout_s=timeout_s,
                    tls_verify=tls_verify)
    shard = Shard(run_id="r", shard_id="s", region="local", target=target, phase="warm",
                  arrival={"kind": "constant", "rps": str(rate)}, start_at=time.time() + 0.2,
                  duration_s=seconds, flush_interval_s=0.5, max_in_flight=max_in_flight, queue_limit=queue_limit)
    intervals = []
    run_shard(shard, intervals.append)
    totals: dict[str, int] = {}
    for iv in intervals:
        for k, n in iv.outcomes.items():
            totals[k] = totals.get(k, 0) + n
    return intervals, totals


@pytest.mark.integration
@pytest.mark.parametrize(
    ("path", "outcome"),
    [("/5xx", "http_5xx"), ("/429", "throttled"), ("/reset", "reset"), ("/ok", "ok"),
     ("/chunked", "ok"), ("/close", "ok"), ("/redirect", "http_3xx")],
)
def test_each_response_kind_is_its_outcome_and_the_rate_holds(fault_server, path, outcome):
    intervals, totals = drive(fault_server.url(path))
    intended = sum(iv.intended for iv in intervals)
    assert intended == RATE * SECONDS
    assert sum(iv.sent for iv in intervals) == intended  # failures never slow the schedule
    assert totals == {outcome: intended}
    assert intervals[-1].final and [iv.seq for iv in intervals] == list(range(len(intervals)))


@pytest.mark.integration
def test_refused_connections_are_connect_errors_at_full_rate():
    intervals, totals = drive(f"http://127.0.0.1:{closed_port()}/")
    assert totals == {"connect_error": RATE * SECONDS}
    assert sum(iv.sent for iv in intervals) == RATE * SECONDS


@pytest.mark.integration
def test_unanswered_requests_time_out_and_later_requests_still_go_out(fault_server):
    intervals, totals = drive(fault_server.url("/timeout"), timeout_s=0.3, max_in_flight=200)
    assert totals == {"timeout": RATE * SECONDS}
    lag = merge(iv.send_lag_us for iv in intervals)
    assert lag.get_value_at_percentile(99) < 0.3e6 / 10  # sent on time, not after the previous timed out


@pytest.mark.integration
def test_saturated_generator_counts_dropped_requests(fault_server):
    # One connection, a 50 ms server, 100 req/s: at most ~20 req/s complete; the queue
    # is bounded at 5, so the rest must be counted as dropped — never silently skipped.
    intervals, totals = drive(fault_server.url("/slow?ms=50"), max_in_flight=1, queue_limit=5)
    assert sum(totals.values()) == 200  # exactly one outcome per due request
    assert totals["dropped"] > 100 and totals["ok"] > 20
    resp = merge(iv.response_us for iv in intervals)
    svc = merge(iv.service_us for iv in intervals)
    # Queueing shows in response time (from the due time), not in service time.
    assert resp.get_value_at_percentile(50) > 2 * svc.get_value_at_percentile(50)


@pytest.mark.integration
def test_stop_ends_the_loop_quickly_and_flushes(fault_server):
    import threading

    stop = threading.Event()
    target = Target(name="t", runtime="other", platform="http", url=fault_server.url("/ok"), method="GET")
    shard = Shard(run_id="r", shard_id="s", region="local", target=target, phase="warm",
                  arrival={"kind": "constant", "rps": "200"}, start_at=time.time() + 0.1, duration_s=30.0)
    intervals = []
    threading.Timer(1.0, stop.set).start()
    t0 = time.monotonic()
    run_shard(shard, intervals.append, stop)
    assert time.monotonic() - t0 < 1.0 + 1.0  # 30 s shard ends right after the stop (bound is generous)
    assert intervals[-1].final and intervals[-1].status == "stopped"
    assert sum(iv.completed for iv in intervals) > 100
