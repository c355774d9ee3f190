"""Compaction of a run's interval stream on a real Redis: the store stays small and the result is
exactly the result of every interval (orchestrator/run/rollup.py)."""

from __future__ import annotations

import random
import shutil
import time

import orjson
import pytest

from orchestrator.run.collect import Collector
from orchestrator.run.dispatch.celery import CeleryDispatcher
from orchestrator.run.store import Store
from tests.integration.distributed_fixtures import RedisServer
from tests.servers import need
from workers import histograms, keys
from workers.contract import Interval, Shard, Target

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module", name="redis_url")
def redis_url_fixture(tmp_path_factory):
    need(shutil.which("redis-server") is not None, "redis-server not installed (apt install redis-server)")
    server = RedisServer(tmp_path_factory.mktemp("compaction"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def _interval(run_id: str, shard: str, seq: int, rng: random.Random, final: bool = False) -> Interval:
    values = [int(rng.lognormvariate(0, 1) * 2000) + 1 for _ in range(300)]
    h = histograms.new_histogram()
    histograms.fill(h, values)
    errors = rng.randint(0, 3)
    return Interval(run_id=run_id, shard_id=shard, attempt=0, seq=seq, region="a", target=shard.split("/")[1],
                    runtime="go", phase="warm", t0=1000.0 + seq, t1=1001.0 + seq, intended=300 + errors, sent=300 + errors,
                    completed=300 + errors, outcomes={"ok": 300, **({"timeout": errors} if errors else {})},
                    response_us=histograms.encode(h), service_us=histograms.encode(h), send_lag_us="", final=final,
                    started=1000.0 if seq == 0 else 0.0)


def test_a_compacted_stream_gives_the_same_result_in_a_fraction_of_the_memory(redis_url):
    run_id = "compaction-1"
    store = Store(redis_url)
    shards = [f"a/t{i}/warm/p0of1/s0" for i in range(3)]
    target = Target(name="t", runtime="go", platform="http", url="http://127.0.0.1:9/")
    store.create_run(run_id, {"name": "c", "state": "finished", "start_at": 1000.0, "total_s": 200.0,
                              "phase_seconds": {"warm": 200.0}},
                     [Shard(run_id=run_id, shard_id=sid, region="a", target=target, phase="warm",
                            arrival={"kind": "constant", "rps": "300"}, start_at=1000.0, duration_s=200.0)
                      for sid in shards])
    rng = random.Random(5)
    intervals = [_interval(run_id, s, seq, rng, final=seq == 199) for seq in range(200) for s in shards]
    client = store.r
    for iv in intervals:
        client.xadd(keys.intervals(run_id), {"iv": iv.to_json()})
    before = client.memory_usage(keys.intervals(run_id))

    everything = Collector(run_id, {"warm": 200.0})
    everything.add_all(intervals)
    expected = everything.result()

    follower = CeleryDispatcher(redis_url)
    follower.attach(run_id)
    follower.snapshot(lambda iv: None)  # as the orchestrator that follows the run has read it all
    trimmed = follower.compact(keep_s=0)
    assert trimmed == len(intervals) and client.xlen(keys.intervals(run_id)) == 0
    after = (client.memory_usage(keys.intervals(run_id)) or 0) + client.memory_usage(keys.rollups(run_id))
    assert after < before / 20, (before, after)

    # A later worker interval (a duplicate delivery of one already folded) and one new one.
    client.xadd(keys.intervals(run_id), {"iv": intervals[-1].to_json()})
    late = _interval(run_id, shards[0], 200, rng)
    client.xadd(keys.intervals(run_id), {"iv": late.to_json()})
    everything.add(late)
    expected = everything.result()

    reader = CeleryDispatcher(redis_url)
    reader.attach(run_id)
    collector = Collector(run_id, {"warm": 200.0})
    for rollup in reader.backlog():
        collector.add_rollup(rollup)
    reader.snapshot(collector.add)
    got = collector.result()
    assert collector.duplicates == 1
    for g, e in zip(got.groups, expected.groups, strict=True):
        assert (g.intended, g.completed, g.outcomes) == (e.intended, e.completed, e.outcomes)
        assert g.response_ms == e.response_ms and g.service_ms == e.service_ms  # merged, never averaged
        assert sum(s[1] for s in g.series) == g.intended  # the series is coarser, never short
    assert reader.finished == set(shards)  # final intervals inside rollups still end their shards
    assert orjson.loads(client.hget(keys.run(run_id), "state")) == "finished"


def test_compaction_never_trims_what_the_follower_has_not_read(redis_url):
    run_id = "compaction-2"
    store = Store(redis_url)
    store.create_run(run_id, {"name": "c", "state": "running", "start_at": time.time(), "total_s": 60.0}, [])
    rng = random.Random(6)
    client = store.r
    for seq in range(10):
        client.xadd(keys.intervals(run_id), {"iv": _interval(run_id, "a/t0/warm/p0of1/s0", seq, rng).to_json()})
    follower = CeleryDispatcher(redis_url)
    follower.attach(run_id)  # has read all 10 (held)
    for seq in range(10, 15):
        client.xadd(keys.intervals(run_id), {"iv": _interval(run_id, "a/t0/warm/p0of1/s0", seq, rng).to_json()})
    follower.compact(keep_s=0)
    assert client.xlen(keys.intervals(run_id)) == 5  # the five it has not read yet stay
    (rollup,) = store.rollups(run_id).values()
    assert rollup.upto == 9
