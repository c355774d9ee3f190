"""The platform seam: the registry picks the invoker, counters become per-interval deltas, a
run is never restarted, and a worker's error reaches the parent by kind, not by class name."""

from __future__ import annotations

import time

import pytest

from orchestrator.run.dispatch.local import LocalPool
from workers.contract import Interval, Shard, Target
from workers.errors import SetupError
from workers.platforms import PLATFORMS, Platform, make_invoker, registry
from workers.platforms.http import HttpInvoker
from workers.shard import ShardRun, run_shard, run_shards

RATE, SECONDS = 100, 1.5


def shard_for(url: str, platform: str = "http", **target: object) -> Shard:
    t = Target(name="t", runtime="other", platform=platform, url=url, method="GET", **target)  # type: ignore[arg-type]
    return Shard(run_id="r", shard_id="s", region="local", target=t, phase="warm",
                 arrival={"kind": "constant", "rps": str(RATE)}, start_at=time.time() + 0.2, duration_s=SECONDS,
                 flush_interval_s=0.5, max_in_flight=16)


def counted(intervals: list[Interval], name: str) -> int:
    return sum(int(iv.counters.get(name, 0)) + int(getattr(iv, name, 0) or 0) for iv in intervals)


@pytest.mark.integration
def test_counters_are_reported_as_deltas_per_interval(fault_server):
    # /close answers and closes: every request takes its own connection (plus the few the pool
    # opened before the start; each one closed after use is replaced ahead of the next request).
    intervals: list[Interval] = []
    run_shard(shard_for(fault_server.url("/close")), intervals.append)
    sent = sum(iv.sent for iv in intervals)
    assert sent == RATE * SECONDS
    assert sent <= counted(intervals, "connections_opened") <= sent + 16
    assert sum(1 for iv in intervals if counted([iv], "connections_opened")) >= 2  # spread over intervals
    # Keep-alive: a handful of connections serve every request.
    intervals = []
    run_shard(shard_for(fault_server.url("/ok")), intervals.append)
    assert 1 <= counted(intervals, "connections_opened") <= 16
    assert all(iv.peak_in_flight <= 16 for iv in intervals)


@pytest.mark.integration
def test_a_platform_is_one_registry_entry(fault_server, monkeypatch):
    made: list[str] = []

    def factory(target: Target, phase: str, max_in_flight: int) -> HttpInvoker:
        made.append(target.name)
        return HttpInvoker(target)

    registry()
    monkeypatch.setitem(PLATFORMS, "loopback-http", Platform("loopback-http", factory))
    intervals: list[Interval] = []
    run_shard(shard_for(fault_server.url("/ok"), platform="loopback-http"), intervals.append)
    assert made == ["t"]
    assert sum(iv.outcomes.get("ok", 0) for iv in intervals) == RATE * SECONDS
    with pytest.raises(SetupError, match="not supported by this worker"):
        make_invoker(Target(name="t", runtime="go", platform="nowhere"), "warm", 1)


@pytest.mark.integration
def test_the_completion_callback_is_one_object_for_the_whole_run(fault_server):
    run = ShardRun(shard_for(fault_server.url("/ok")), lambda iv: None)
    assert run._done is run._done and run._invoke == run.invoker.invoke
    seen = []
    real = run.invoker.invoke

    def recording(due, done):
        seen.append(done)
        real(due, done)

    run._invoke = recording
    import uvloop

    from workers.shard import _Never

    uvloop.run(run.run(_Never()))
    assert len(seen) == RATE * SECONDS and all(d is seen[0] for d in seen)


@pytest.mark.integration
def test_an_import_error_during_a_run_propagates_and_never_sends_the_load_twice(monkeypatch):
    starts: list[float] = []

    def factory(target: Target, phase: str, max_in_flight: int) -> HttpInvoker:
        starts.append(time.time())
        raise ImportError("a platform's optional dependency is missing")

    registry()
    monkeypatch.setitem(PLATFORMS, "needs-a-module", Platform("needs-a-module", factory))
    with pytest.raises(ImportError, match="optional dependency"):
        run_shards([shard_for("http://127.0.0.1:1/", platform="needs-a-module")], lambda iv: None)
    assert len(starts) == 1


def _pool_errors(shard: Shard, intervals: list | None = None) -> list[str]:
    pool = LocalPool(1)
    pool.start()
    pool.wait_ready()
    pool.hand([[shard]])
    deadline = time.monotonic() + 60
    while pool.poll((intervals if intervals is not None else []).append) and time.monotonic() < deadline:
        pass
    pool.join()
    return pool.errors


@pytest.mark.integration
def test_a_worker_reports_fnbench_errors_by_message_and_others_with_a_traceback():
    # A SetupError (an unknown platform) fails that target's shard: its message, no traceback, and
    # the worker goes on (issue 26: one failed target is not the run's failure).
    intervals: list = []
    assert _pool_errors(shard_for("http://127.0.0.1:1/", platform="nowhere"), intervals) == []
    (failed,) = intervals
    assert failed.status == "failed"
    assert failed.failure.startswith("SetupError: target 't': platform 'nowhere' is not supported")
    assert "Traceback" not in failed.failure
    # Anything else is a bug: a short traceback says where.
    [bug] = _pool_errors(shard_for("http://127.0.0.1:1/", timeout_s="soon"))
    assert bug.startswith("ValueError: Traceback") and "could not convert" in bug
