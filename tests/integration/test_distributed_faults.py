"""Distributed faults on real servers: a Redis blip between runs, a run that ends once, watch of an
ended run, retention and `fnbench gc`.  Loads go only to the loopback FaultServer.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time

import orjson
import pytest

from orchestrator.run.results import read_intervals
from tests.integration.distributed_fixtures import (
    Cluster,
    RedisServer,
    cluster_fixture,  # noqa: F401 - the `cluster` fixture
    run_json,
    write_spec,
)
from tests.servers import need, wait_for
from workers import keys
from workers.histograms import merge

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


def _most_in_window(times, window_s: float = 0.1) -> int:
    ts, most, lo = sorted(times), 0, 0
    for hi, t in enumerate(ts):
        while t - ts[lo] > window_s:
            lo += 1
        most = max(most, hi - lo + 1)
    return most


def _shard_runner(cluster, run_id: str, workers: list) -> tuple[str, object]:
    """The shard id and the worker (of ``workers``) running the run's one shard."""
    claims = cluster.redis.client().hgetall(keys.claims(run_id))
    (field, claim) = [(f.decode(), orjson.loads(v)) for f, v in claims.items()][0]
    (runner,) = [w for w in workers if claim["node"].startswith(f"fnbench-{w.region}-{w.proc.pid}@")]
    return field.rsplit("#", 1)[0], runner


def test_a_frozen_worker_sends_no_burst_when_it_wakes_and_nothing_is_counted_twice(cluster, fault_server, tmp_path):
    # Found by a probe: SIGSTOP a worker for 20 s, then SIGCONT: the superseded attempt sent its overdue
    # arrivals at once (1,003 requests in 80 ms against a 50 req/s plan), and they were counted while the
    # same window was also reported as a gap.
    rate, seconds, frozen_s = 50, 10, 4.0  # frozen past the orchestrator's 2.5 s of silence: re-dispatched
    workers = [cluster.start_worker("f"), cluster.start_worker("f")]
    route = "/timed-frozen-worker"
    try:
        cluster.wait_registered(len([w for w in cluster.workers if w.proc.poll() is None]))
        spec = write_spec(tmp_path / "spec.yaml", fault_server.url(route), regions="[f]", rps=rate,
                          duration=f"{seconds}s", extra="late_bound: 300ms\n")
        client = cluster.redis.client()
        before = set(client.zrange(keys.RUNS, 0, -1))
        proc = cluster.popen("run", str(spec), "--results", str(tmp_path / "results"), "--json", "--workers", "1")
        run_id = next(iter(wait_for(lambda: set(client.zrange(keys.RUNS, 0, -1)) - before, 30, "the run"))).decode()
        wait_for(lambda: client.xlen(keys.intervals(run_id)) >= 2, 30, "the run's first intervals")
        _, frozen = _shard_runner(cluster, run_id, workers)
        os.killpg(frozen.proc.pid, signal.SIGSTOP)  # the worker and its pool process
        time.sleep(frozen_s)
        os.killpg(frozen.proc.pid, signal.SIGCONT)
        stdout, stderr = proc.communicate(timeout=90)
    finally:
        for w in workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(w.proc.pid, signal.SIGCONT)
            w.stop()
    assert proc.returncode in (0, 3), stderr[-3000:]
    result = orjson.loads(stdout)
    # No burst: the plan is 5 per 100 ms (a hiccup within the 0.3 s bound may send ~15 at once); the
    # overdue arrivals at once would be ~200.
    assert _most_in_window(fault_server.times[route]) <= int(rate * 0.4 * 1.5), "the woken worker burst its backlog"
    assert result["redispatched"] == 1
    gaps = [g for g in result["gaps"] if g["region"] == "f"]
    # The frozen window is one gap (the dispatcher's), not also the frozen attempt's own stall.
    lost = [g for g in gaps if g["reason"].startswith("worker lost")]
    assert len(lost) == 1 and not [g for g in gaps if g["reason"].startswith("generator stalled")], gaps
    assert frozen_s * 0.5 <= lost[0]["seconds"] <= frozen_s + 2.0, gaps
    # Nothing counted twice: every request the server saw counted once, and load plus gaps is the plan.
    (g,) = result["groups"]
    assert abs(fault_server.hits[route] - g["completed"]) <= 3, (fault_server.hits[route], g)
    assert g["intended"] + sum(x["seconds"] for x in gaps) * rate == pytest.approx(seconds * rate, abs=40), gaps
    intervals = read_intervals(tmp_path / "results" / result["run_id"] / "intervals.jsonl")
    assert {iv.attempt for iv in intervals} == {0, 1}
    assert len({iv.key for iv in intervals}) == len(intervals)


def test_a_redispatched_remainder_that_starts_late_keeps_the_targets_latency(cluster, fault_server, tmp_path):
    # Found by a probe: after a worker's main process was killed, the re-dispatched remainder caught up on
    # its overdue arrivals and that send lag landed in response_ms (p99 749 ms against 15.7 ms healthy).
    # Here the spare worker is frozen until ~0.8 s after the remainder was due, so it starts late.
    rate, seconds = 100, 10
    workers = [cluster.start_worker("q"), cluster.start_worker("q")]
    route = "/timed-redispatch"
    try:
        cluster.wait_registered(len([w for w in cluster.workers if w.proc.poll() is None]))
        spec = write_spec(tmp_path / "spec.yaml", fault_server.url(route), regions="[q]", rps=rate,
                          duration=f"{seconds}s")
        client = cluster.redis.client()
        before = set(client.zrange(keys.RUNS, 0, -1))
        proc = cluster.popen("run", str(spec), "--results", str(tmp_path / "results"), "--json", "--workers", "1")
        run_id = next(iter(wait_for(lambda: set(client.zrange(keys.RUNS, 0, -1)) - before, 30, "the run"))).decode()
        wait_for(lambda: client.xlen(keys.intervals(run_id)) >= 2, 30, "the run's first intervals")
        shard_id, victim = _shard_runner(cluster, run_id, workers)
        (spare,) = [w for w in workers if w is not victim]
        os.killpg(spare.proc.pid, signal.SIGSTOP)
        try:
            victim.proc.kill()  # the main process only: its pool process follows it (PDEATHSIG)
            wait_for(lambda: client.hget(keys.attempts(run_id), shard_id) == b"1", 30, "the remainder re-dispatched",
                     every=0.02)
            time.sleep(1.3)  # due 0.5 s after the decision: ~0.8 s late
        finally:
            os.killpg(spare.proc.pid, signal.SIGCONT)
        stdout, stderr = proc.communicate(timeout=90)
    finally:
        for w in workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(w.proc.pid, signal.SIGCONT)
            w.stop()
    assert proc.returncode in (0, 3), stderr[-3000:]
    result = orjson.loads(stdout)
    intervals = read_intervals(tmp_path / "results" / result["run_id"] / "intervals.jsonl")
    healthy = merge(iv.response_us for iv in intervals if iv.attempt == 0 and iv.response_us)
    remainder = merge(iv.response_us for iv in intervals if iv.attempt == 1 and iv.response_us)
    assert remainder.total_count > rate, "the remainder ran"
    p99_healthy, p99_remainder = healthy.get_value_at_percentile(99), remainder.get_value_at_percentile(99)
    # The remainder's response time is the target's: near the healthy part's, nowhere near the lateness.
    assert p99_remainder <= 20 * p99_healthy, (p99_remainder, p99_healthy)  # replayed: ~180 times
    # The result says where the load was not generated: the loss and the late restart, one gap.
    (gap,) = [g for g in result["gaps"] if g["region"] == "q"]
    assert gap["reason"].startswith("worker lost") and gap.get("late_start_s", 0) > 0, gap
    assert p99_remainder < gap["late_start_s"] * 1e6 / 4, (p99_remainder, gap)


def _run_id_of(client, before: set) -> str:
    new = wait_for(lambda: set(client.zrange(keys.RUNS, 0, -1)) - before, 30, "the run recorded")
    return next(iter(new)).decode()


def test_a_region_left_without_workers_is_said_once_and_its_slos_are_judged_on_the_plan(cluster, fault_server,
                                                                                       tmp_path):
    # Found by a probe: re-dispatch to a region with no workers went on saying only "still queued", and the
    # region's error_rate SLO printed PASS on 298 of 2,000 planned requests.
    worker = cluster.start_worker("n")
    cluster.wait_registered(len([w for w in cluster.workers if w.proc.poll() is None]))
    slos = ("slos:\n  - {target: t, metric: error_rate, max: 0.1}\n"
            "  - {target: t, metric: response_ms.p99, max: 5000}\n")
    spec = write_spec(tmp_path / "spec.yaml", fault_server.url("/ok"), regions="[n]", rps=25, duration="12s",
                      extra=slos)
    client = cluster.redis.client()
    before = set(client.zrange(keys.RUNS, 0, -1))
    proc = cluster.popen("run", str(spec), "--results", str(tmp_path / "results"), "--json")
    run_id = _run_id_of(client, before)
    wait_for(lambda: client.xlen(keys.intervals(run_id)) >= 2, 30, "the run's first intervals")
    worker.proc.kill()  # the region's only worker
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 3, stderr[-3000:]  # load was lost
    assert stderr.count("region n has no workers") == 1, stderr[-3000:]
    result = orjson.loads(stdout)
    assert result["redispatched"] <= 2, result["gaps"]
    (g,) = result["groups"]
    unsent = sum(gap.get("unsent") or 0 for gap in result["gaps"])
    assert unsent > 0 and g["intended"] + unsent == pytest.approx(300, abs=15), result["gaps"]
    assert any(gap.get("abandoned") and "no workers" in gap["reason"] for gap in result["gaps"]), result["gaps"]
    by_metric = {v["metric"]: v for v in result["slo"]}
    # error_rate counts the planned requests never sent: a failure, not a PASS on what arrived.
    rate = by_metric["error_rate"]
    assert not rate["pass"] and rate["value"] > 0.1 and rate["unsent"] == unsent, rate
    assert rate["planned"] == g["intended"] + unsent
    # A latency SLO measured on part of the plan is PARTIAL, never a silent PASS.
    p99 = by_metric["response_ms.p99"]
    assert not p99["pass"] and p99.get("partial") and p99["unsent"] == unsent, p99
    # The terminal says it too.
    shown = cluster.fnbench("report", run_id)  # from the store
    assert shown.returncode == 3, shown.stderr[-3000:]
    assert "SLO PARTIAL t warm response_ms.p99" in shown.stdout + shown.stderr, shown.stdout[-3000:]
    assert "never sent" in shown.stdout + shown.stderr


def test_tasks_rejected_by_a_worker_with_another_key_reach_the_user(cluster, fault_server, tmp_path):
    # Found by a probe: the tasks were delivered and rejected (bad-signature, counted in Redis), but the run
    # only said "nothing was measured … still queued".
    cluster.start_worker("wk", extra_env={"FNBENCH_TASK_KEY": "another-key-" + "x" * 32})
    cluster.wait_registered(len([w for w in cluster.workers if w.proc.poll() is None]))
    spec = write_spec(tmp_path / "spec.yaml", fault_server.url("/ok"), regions="[wk]", rps=20, duration="4s")
    r = cluster.fnbench("run", str(spec), "--results", str(tmp_path / "results"), "--json", timeout=90)
    line = "region wk: 1 task rejected (bad-signature): the worker's task key differs"
    assert line in r.stderr, r.stderr[-3000:]
    # Said when found (once), and again among the run's errors at its end; no "still queued" re-dispatch.
    assert r.stderr.count(line) <= 2 and "still queued" not in r.stderr, r.stderr[-3000:]
    result = orjson.loads(r.stdout)
    assert any(e.startswith(line) for e in result["errors"]), result["errors"]
    assert result["redispatched"] == 0
    assert r.returncode == 2  # a setup error: the keys differ
    assert any(gap.get("abandoned") and "bad-signature" in gap["reason"] for gap in result["gaps"]), result["gaps"]


@pytest.fixture(name="volatile")
def volatile_fixture(tmp_path_factory):
    """Its own redis-server without persistence (a restart loses every key) and one worker, region ``v``."""
    need(shutil.which("redis-server") is not None, "redis-server not installed (apt install redis-server)")
    tmp = tmp_path_factory.mktemp("volatile")
    server = RedisServer(tmp, persist=False)
    server.start()
    c = Cluster(server, tmp)
    try:
        c.start_worker("v")
        c.wait_registered(1)
        yield c
    finally:
        c.shutdown()
        server.stop()


def test_report_and_watch_of_a_run_the_store_lost_say_what_is_missing(volatile, fault_server, tmp_path):
    # Found by a probe: Redis restarted without persistence mid-run; afterwards `report RUN --json` and
    # `watch RUN` ended in KeyError: 'start_at' (exit 1): join() had re-created a partial run record.
    spec = write_spec(tmp_path / "spec.yaml", fault_server.url("/ok"), regions="[v]", rps=50, duration="6s")
    client = volatile.redis.client()
    proc = volatile.popen("run", str(spec), "--results", str(tmp_path / "results"), "--json")
    wait_for(lambda: len(client.keys(f"{keys.PREFIX}:run:*:beats")) > 0, 30, "the run's shard beats")
    run_id = next(iter(client.zrange(keys.RUNS, 0, -1))).decode()
    time.sleep(1.0)
    volatile.redis.restart(down_s=1.0)  # every key is gone
    stdout, stderr = proc.communicate(timeout=90)
    assert proc.returncode != 1 and "Traceback" not in stderr, stderr[-3000:]
    assert orjson.loads(stdout)["run_id"] == run_id
    for command in (["report", run_id, "--json"], ["watch", run_id, "--results", str(tmp_path / "w"), "--json"]):
        r = volatile.fnbench(*command, timeout=60)
        assert r.returncode in (2, 3), (command, r.returncode, r.stderr[-3000:])
        assert "Traceback" not in r.stderr and "KeyError" not in r.stderr, r.stderr[-3000:]
        assert "store lost" in r.stdout + r.stderr, (r.stdout[-2000:], r.stderr[-2000:])
    # A record that is only a part (as an older orchestrator left it) is named, not a traceback.
    client.delete(keys.run(run_id))
    client.hset(keys.run(run_id), mapping={"state": orjson.dumps("finished")})
    r = volatile.fnbench("report", run_id, "--json", timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "start_at missing" in r.stderr and "total_s missing" in r.stderr, r.stderr[-3000:]
