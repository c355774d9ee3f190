"""Distributed faults on real servers: a Redis blip between runs, a run that ends once, watch of an
ended run, retention and `fnbench gc`.  Loads go only to the loopback FaultServer.
"""

from __future__ import annotations

import time

import orjson
import pytest

from tests.integration.distributed_fixtures import (
    cluster_fixture,  # noqa: F401 - the `cluster` fixture
    run_json,
    write_spec,
)
from tests.servers import wait_for
from workers import keys

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_run_after_a_redis_restart_gets_all_of_its_load(cluster, fault_server, tmp_path):
    # Found by a probe: after a restart during a run, the next run had one shard per region "expired
    # before it could start" and lost half of its load while exiting 0.  (Celery lowers a worker's
    # prefetch after a broker reconnect by the tasks then running and restores it only as acks succeed.)
    cluster.start_worker("r", concurrency=2)
    cluster.wait_registered(3)
    spec = write_spec(tmp_path / "spec.yaml", fault_server.url("/ok"), regions="[r]", rps=100, duration="6s")
    first = cluster.popen("run", str(spec), "--results", str(tmp_path / "first"), "--json", "--workers", "2")
    client = cluster.redis.client()
    wait_for(lambda: len(client.keys(f"{keys.PREFIX}:run:*:beats")) > 0, 30, "the first run's shards beat")
    time.sleep(1.0)
    cluster.redis.restart(down_s=1.0)
    first.communicate(timeout=90)
    cluster.wait_registered(3)
    spec = write_spec(tmp_path / "spec2.yaml", fault_server.url("/ok"), regions="[r]", rps=100, duration="4s")
    r = cluster.fnbench("run", str(spec), "--results", str(tmp_path / "results"), "--json", "--workers", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    result = orjson.loads(r.stdout)
    (group,) = result["groups"]
    assert (group["intended"], group["outcomes"].get("ok", 0)) == (400, 400), result["gaps"]
    assert result["gaps"] == [] and result["redispatched"] == 0


def test_a_run_ends_once_and_watch_of_an_ended_run_prints_its_result(cluster, fault_server, tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", fault_server.url("/ok"), rps=50, duration="2s")
    result = run_json(cluster.fnbench("run", str(spec), "--results", str(tmp_path / "results"), "--json"))
    run_id = result["run_id"]
    client = cluster.redis.client()
    assert orjson.loads(client.hget(keys.run(run_id), "state")) == "finished"
    # `watch` of a finished run does not wait for anything: it prints the result and exits 0.
    started = time.monotonic()
    watched = cluster.fnbench("watch", run_id, "--results", str(tmp_path / "watched"), "--json", timeout=30)
    assert watched.returncode == 0, watched.stderr[-3000:]
    assert time.monotonic() - started < 20
    again = orjson.loads(watched.stdout)
    assert [g["intended"] for g in again["groups"]] == [g["intended"] for g in result["groups"]]
    assert (tmp_path / "watched" / run_id / "result.json").exists()
    # The store keeps a run for its retention, no longer: every key of it expires.
    for key in keys.all_of_run(run_id):
        if client.exists(key):
            assert 0 < client.ttl(key) <= keys.RETENTION_S + 3600, key


def test_gc_removes_runs_whose_records_expired(cluster, fault_server, tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", fault_server.url("/ok"), rps=20, duration="1s")
    run_id = run_json(cluster.fnbench("run", str(spec), "--results", str(tmp_path / "r"), "--json",
                                      "--retention", "1s"))["run_id"]
    client = cluster.redis.client()
    wait_for(lambda: not client.exists(keys.run(run_id)), 90, "the run's record expired", every=0.5)
    listed = orjson.loads(cluster.fnbench("gc", "--dry-run", "--json").stdout)
    assert run_id in listed["runs"] and client.zscore(keys.RUNS, run_id) is not None
    removed = orjson.loads(cluster.fnbench("gc", "--json").stdout)
    assert run_id in removed["runs"]
    assert client.zscore(keys.RUNS, run_id) is None
    assert not any(client.exists(k) for k in keys.all_of_run(run_id))
    bad = cluster.fnbench("gc", "--older-than", "soon")
    assert bad.returncode == 2 and "--older-than" in bad.stderr


def test_a_run_whose_only_worker_dies_ends_once_with_its_result_and_the_lost_window(cluster, fault_server, tmp_path):
    # Found by a probe: with a worker's main process killed, `fnbench run` crashed at the end (a blocking
    # read without a timeout), left no result.json and the run "running".
    worker = cluster.start_worker("z")
    cluster.wait_registered(len([w for w in cluster.workers if w.proc.poll() is None]))
    spec = write_spec(tmp_path / "spec.yaml", fault_server.url("/ok"), regions="[z]", rps=50, duration="6s")
    client = cluster.redis.client()
    before = set(client.zrange(keys.RUNS, 0, -1))
    proc = cluster.popen("run", str(spec), "--results", str(tmp_path / "results"), "--json")
    new = wait_for(lambda: set(client.zrange(keys.RUNS, 0, -1)) - before, 30, "the run recorded")
    run_id = next(iter(new)).decode()
    wait_for(lambda: client.xlen(keys.intervals(run_id)) >= 2, 30, "the run's first intervals")
    worker.proc.kill()  # the main process only: its pool process follows it (PDEATHSIG)
    stdout, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 3, stderr[-3000:]  # load was lost: not a clean 0
    result = orjson.loads(stdout)
    gaps = [g for g in result["gaps"] if g["region"] == "z"]
    # Lost, re-dispatched, and (no other worker in the region) given up: the window is accounted for.
    assert gaps[0]["reason"].startswith("worker lost") and gaps[-1].get("abandoned"), gaps
    (g,) = result["groups"]
    assert g["intended"] + sum(x["seconds"] for x in gaps) * 50 == pytest.approx(300, abs=30)
    assert (tmp_path / "results" / result["run_id"] / "result.json").exists()
    assert orjson.loads(client.hget(keys.run(result["run_id"]), "state")) == "finished"
