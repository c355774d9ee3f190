"""Distributed mode against real servers: redis-server (AOF on), `fnbench worker` processes, Prometheus.

One module-scoped cluster (workers in regions a and b) keeps the suite short; the tests that
kill things start their own workers.  Loads go only to the loopback FaultServer.
"""

from __future__ import annotations

import subprocess
import time

import orjson
import pytest

from orchestrator.run.results import read_intervals
from tests.integration.distributed_fixtures import (
    cluster_fixture,  # noqa: F401 - the `cluster` fixture
    run_json,
    write_spec,
)
from tests.servers import Prometheus, wait_for
from workers import keys

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def start_run(cluster, *args: str) -> tuple[subprocess.Popen, str]:
    """Start `fnbench run` in the background; returns it and the id of the run it recorded."""
    client = cluster.redis.client()
    before = set(client.zrange(keys.RUNS, 0, -1))
    proc = cluster.popen("run", *args)
    new = wait_for(lambda: set(client.zrange(keys.RUNS, 0, -1)) - before, 30, "run recorded in the store")
    return proc, next(iter(new)).decode()


def wait_for_load(cluster, run_id: str, intervals: int = 1) -> None:
    client = cluster.redis.client()
    wait_for(lambda: client.xlen(keys.intervals(run_id)) >= intervals, 30, "first intervals")


def finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, dict, str]:
    stdout, stderr = proc.communicate(timeout=timeout)
    assert proc.returncode in (0, 130), stderr[-4000:]
    return proc.returncode, orjson.loads(stdout), stderr


def test_two_regions_merge_to_the_union_of_their_intervals_and_start_together(cluster, fault_server, tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", fault_server.url("/ok"), rps=100, duration="4s")
    result = run_json(cluster.fnbench("run", str(spec), "--results", str(tmp_path / "results"), "--json"))
    groups = {g["region"]: g for g in result["groups"]}
    assert set(groups) == {"a", "b"}
    for g in groups.values():
        assert g["intended"] == g["sent"] == g["completed"] == 400
        assert g["outcomes"] == {"ok": 400}
    assert result["gaps"] == [] and result["errors"] == [] and result["duplicates_dropped"] == 0

    # The merged result is exactly the union of what each region's worker recorded.
    intervals = read_intervals(tmp_path / "results" / result["run_id"] / "intervals.jsonl")
    assert len({iv.key for iv in intervals}) == len(intervals)
    for region, g in groups.items():
        mine = [iv for iv in intervals if iv.region == region]
        assert sum(iv.completed for iv in mine) == g["completed"]
        assert sum(iv.intended for iv in mine) == g["intended"]

    # Each region ran on its own worker process (one queue each).
    claims = cluster.redis.client().hgetall(keys.claims(result["run_id"]))
    nodes = {k.decode().split("/")[0]: orjson.loads(v)["node"] for k, v in claims.items()}
    assert nodes["a"].startswith("fnbench-a-") and nodes["b"].startswith("fnbench-b-")

    assert set(result["regions"]) == {"a", "b"}
    assert 0 <= result["start_skew_s"] < 0.25, result["regions"]

    again = run_json(cluster.fnbench("report", result["run_id"], "--json"))
    assert again["groups"] == result["groups"]
    assert again["gaps"] == result["gaps"]


@pytest.mark.parametrize(("flush", "seconds"), [("1s", 8), ("5s", 20)])
def test_prometheus_scraping_a_worker_agrees_with_the_merged_result(cluster, fault_server, tmp_path, flush, seconds):
    metrics_port = cluster.workers[0].metrics_port
    with Prometheus(tmp_path, [f"127.0.0.1:{metrics_port}"]) as prom:
        spec = write_spec(tmp_path / "spec.yaml", fault_server.url("/slow?ms=5"), regions="[a]", rps=200,
                          duration=f"{seconds}s", flush=flush, name=f"prom-{flush}")
        result = run_json(cluster.fnbench("run", str(spec), "--results", str(tmp_path / "results"), "--json"))
        run_id = result["run_id"]
        (g,) = result["groups"]
        assert g["completed"] == g["outcomes"]["ok"] == 200 * seconds
        sel = f'{{run="{run_id}"}}'
        # The worker host keeps serving: its counters reach the exact totals about one flush
        # span after the last interval (they are exported on the intervals' time line).
        total = wait_for(lambda: [float(v["value"][1]) for v in prom.query(f"sum(fnbench_requests_total{sel})",
                                                                            time.time())] == [g["completed"]],
                         30, "Prometheus has the run's exact total")
        assert total
        now = time.time()

        # rate() over every window of 4 or more scrapes inside the run, every half second, is
        # within 5 % of what the shard recorded there and of the achieved rate.
        intervals = [iv for iv in read_intervals(tmp_path / "results" / run_id / "intervals.jsonl") if not iv.warmup]
        begin = max([result["start_at"], *(iv.started for iv in intervals if iv.started)])
        end = result["start_at"] + seconds

        def recorded(a: float, b: float) -> float:
            n = 0.0
            for iv in intervals:
                t0 = max(iv.t0, iv.started) if iv.seq == 0 and iv.started else iv.t0
                overlap = min(b, iv.t1) - max(a, t0)
                if overlap > 0:
                    n += iv.outcomes.get("ok", 0) * (overlap / (iv.t1 - t0) if iv.t1 > t0 else 1.0)
            return n / (b - a)

        achieved = g["achieved_rps"]
        assert recorded(begin, end) == pytest.approx(achieved, rel=0.02)
        for w in (4, 8):
            rates = prom.query_range(f'sum(rate(fnbench_requests_total{{run="{run_id}", outcome="ok"}}[{w}s]))',
                                     begin + w, end, step=0.5)
            assert len(rates) >= 2 * (end - begin - w), (w, rates)
            off = []
            for k, v in enumerate(rates):
                at = begin + w + 0.5 * k
                truth = recorded(at - w, at)
                steady = abs(truth / achieved - 1) <= 0.02
                if abs(v - truth) > 0.05 * achieved or (steady and abs(v / achieved - 1) > 0.05):
                    off.append((round(at - result["start_at"], 1), round(v, 1), round(truth, 1)))
            assert not off, (w, achieved, off)

        # p99 from summed Prometheus buckets agrees with the merged HDR p99 within one bucket (2^¼).
        q = prom.query(f"histogram_quantile(0.99, sum by (le, target) (fnbench_response_time_seconds_bucket{sel}))", now)
        p99_prom_ms = float(q[0]["value"][1]) * 1000
        ratio = 2 ** 0.25
        assert g["response_ms"]["p99"] / ratio <= p99_prom_ms <= g["response_ms"]["p99"] * ratio, (p99_prom_ms, g)
        mid = (begin + end) / 2
        qr = prom.query(
            f"histogram_quantile(0.99, sum by (le, target) (rate(fnbench_response_time_seconds_bucket{sel}[4s])))", mid)
        assert g["response_ms"]["p50"] <= float(qr[0]["value"][1]) * 1000 <= g["response_ms"]["max"] * ratio


def test_stop_ends_the_load_in_every_region_within_a_second(cluster, fault_server, tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", fault_server.url("/stopme"), rps=200, duration="30s")
    proc, run_id = start_run(cluster, str(spec), "--results", str(tmp_path / "results"), "--json")
    try:
        wait_for_load(cluster, run_id, intervals=2)
        stop = cluster.fnbench("stop", run_id)
        assert stop.returncode == 0, stop.stderr
        stopped_at = time.monotonic()
        time.sleep(1.0)
        after_one_second = fault_server.hits["/stopme"]
        time.sleep(1.0)
        assert fault_server.hits["/stopme"] == after_one_second, "load went on more than 1 s after `fnbench stop`"
        code, result, _ = finish(proc, timeout=30)
        assert time.monotonic() - stopped_at < 10
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 130 and result["interrupted"] is True
    groups = {g["region"]: g for g in result["groups"]}
    assert set(groups) == {"a", "b"}
    for g in groups.values():  # partial results are kept
        assert 0 < g["completed"] < 30 * 200
    assert sum(g["completed"] for g in groups.values()) == after_one_second


def test_the_run_survives_its_orchestrator_and_report_gives_the_planned_totals(cluster, fault_server, tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", fault_server.url("/ok"), rps=100, duration="5s")
    proc, run_id = start_run(cluster, str(spec), "--results", str(tmp_path / "results"), "--json")
    wait_for_load(cluster, run_id)
    proc.kill()
    proc.communicate(timeout=10)

    def all_done():
        st = orjson.loads(cluster.fnbench("status", run_id, "--json").stdout)
        return st["runs"][0]["shards"] == {"done": 2}

    wait_for(all_done, 30, "shards finished without their orchestrator", every=0.5)
    result = run_json(cluster.fnbench("report", run_id, "--json"))
    assert {g["region"]: (g["intended"], g["completed"]) for g in result["groups"]} == {"a": (500, 500), "b": (500, 500)}
    assert result["gaps"] == []


def test_a_killed_worker_is_replaced_and_its_gap_reported_without_double_counting(cluster, fault_server, tmp_path):
    workers = [cluster.start_worker("k"), cluster.start_worker("k")]
    cluster.wait_registered(4)
    spec = write_spec(tmp_path / "spec.yaml", fault_server.url("/ok"), regions="[k]", rps=100, duration="9s")
    # One shard on two workers: the idle one takes the remainder when the busy one dies.
    proc, run_id = start_run(cluster, str(spec), "--results", str(tmp_path / "results"), "--json", "--workers", "1")
    try:
        wait_for_load(cluster, run_id, intervals=2)
        claims = cluster.redis.client().hgetall(keys.claims(run_id))
        (claim,) = [orjson.loads(v) for v in claims.values()]
        (victim,) = [w for w in workers if claim["node"].startswith(f"fnbench-k-{w.proc.pid}@")]
        victim.kill()
        _, result, _ = finish(proc, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    (gap,) = result["gaps"]
    assert gap["region"] == "k" and gap["reason"].startswith("worker lost")
    flush_s = 1.0
    assert 0 < gap["seconds"] <= flush_s + gap["redispatch_delay_s"] + 0.5, gap
    assert gap["redispatch_delay_s"] < 5.0, gap
    assert result["redispatched"] == 1

    # No interval counted twice: keys are unique, and what was measured plus the gap is the plan.
    intervals = read_intervals(tmp_path / "results" / result["run_id"] / "intervals.jsonl")
    assert len({iv.key for iv in intervals}) == len(intervals)
    assert {iv.attempt for iv in intervals} == {0, 1}
    (g,) = result["groups"]
    assert g["intended"] <= 900
    assert g["intended"] + gap["seconds"] * 100 == pytest.approx(900, abs=25)
    # Requests in flight when the worker died have no outcome; they are inside the reported gap.
    assert g["intended"] - 5 <= g["completed"] <= g["intended"]


def test_redis_restart_mid_run_loses_no_interval(cluster, fault_server, tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", fault_server.url("/ok"), rps=100, duration="8s")
    proc, run_id = start_run(cluster, str(spec), "--results", str(tmp_path / "results"), "--json")
    try:
        wait_for_load(cluster, run_id, intervals=4)
        cluster.redis.restart(down_s=1.0)
        _, result, stderr = finish(proc, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert {g["region"]: (g["intended"], g["completed"]) for g in result["groups"]} == {"a": (800, 800), "b": (800, 800)}
    assert result["gaps"] == [], result["gaps"]
    report = run_json(cluster.fnbench("report", run_id, "--json"))
    assert report["groups"] == result["groups"]
