"""The task queue is a trust boundary (DESIGN.md §7): real redis-server, real `fnbench worker`s.

Tasks are pushed straight onto ``fnbench.<region>`` the way anyone with Redis access could (a
client Celery app, JSON, by task name): unsigned, badly signed, replayed, stale, for another
region.  None may run: the command file is never created, the loopback listener never sees a
request, and each rejection is counted per reason and logged without key or signature.  A
correctly signed shard for a host outside the workers' allow-list is refused and the reason
reaches `fnbench run --json`'s ``errors``.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import orjson
import pytest
from celery import Celery

from orchestrator.store import Store
from tests.integration.distributed_fixtures import (
    cluster_fixture,  # noqa: F401 - the `cluster` fixture
    write_spec,
)
from tests.servers import wait_for
from workers import auth, keys
from workers.contract import Shard, Target

pytestmark = [pytest.mark.integration]

TASK = keys.TASK


def forger(cluster) -> Celery:
    app = Celery("forger", broker=cluster.broker)
    app.conf.update(task_serializer="json", accept_content=["json"], task_ignore_result=True)
    return app


def push(app: Celery, payload: object, region: str = "a") -> None:
    app.send_task(TASK, kwargs={"payload": payload}, queue=keys.queue(region), routing_key=keys.queue(region))


def counters(cluster) -> dict[str, int]:
    client = cluster.redis.client()
    return {r: int(client.get(keys.rejected(r)) or 0) for r in auth.REASONS}


def wait_counted(cluster, before: dict[str, int], expected: dict[str, int]) -> dict[str, int]:
    def reached() -> dict[str, int] | None:
        now = counters(cluster)
        return now if all(now[r] - before[r] >= n for r, n in expected.items()) else None

    return wait_for(reached, 30, f"rejections counted {expected}")


def shard(run_id: str, target: Target, region: str = "a", start_in: float = 1.0, duration: float = 1.0,
          rps: str = "20") -> dict:
    return Shard(run_id=run_id, shard_id="s0", region=region, target=target, phase="warm",
                 arrival={"kind": "constant", "rps": rps}, start_at=time.time() + start_in, duration_s=duration,
                 flush_interval_s=0.5).to_dict()


def shell_target(marker: Path) -> Target:
    return Target(name="t", runtime="python", platform="local", workload="echo",
                  address={"command": ["/bin/sh", "-c", f"touch {marker}"], "instances": 1})


def http_target(url: str) -> Target:
    return Target(name="t", runtime="rust", platform="http", url=url, method="GET", timeout_s=1.0)


def test_unsigned_and_badly_signed_tasks_never_run(cluster, fault_server, tmp_path):
    marker = tmp_path / "pwned"
    route = "/forged"
    before = counters(cluster)
    app = forger(cluster)
    try:
        wrong_key = b"not-the-task-key-" * 3
        bad = auth.sign(shard("forged-2", http_target(fault_server.url(route))), wrong_key)
        tasks = [
            {"shard": shard("forged-1", shell_target(marker))},  # unsigned
            {"shard": shard("forged-1", http_target(fault_server.url(route)))},
            auth.sign(shard("forged-2", shell_target(marker)), wrong_key),  # another key
            bad,
            # Signed properly, then altered: the URL and the command are what an attacker changes.
            {**auth.sign(shard("forged-3", http_target(fault_server.url("/signed"))), cluster.task_key.encode()),
             "shard": shard("forged-3", shell_target(marker))},
            {"auth": {"v": 1, "iat": time.time(), "sig": "00"}},  # no shard
        ]
        for payload in tasks:
            push(app, payload)
        push(app, "not even a mapping")
    finally:
        app.close()
    wait_counted(cluster, before, {auth.UNSIGNED: 2, auth.BAD_SIGNATURE: 3, auth.MALFORMED: 2})
    time.sleep(3.0)  # past the forged shards' windows: had one started, it would have acted by now
    assert not marker.exists()
    assert fault_server.hits[route] == 0 and fault_server.hits["/signed"] == 0
    client = cluster.redis.client()
    for run in ("forged-1", "forged-2", "forged-3"):
        assert not client.keys(f"{keys.run(run)}*"), "an unauthenticated task wrote keys of its run"
    log = cluster.workers[0].log.read_text()
    assert "rejected task (unsigned)" in log and "rejected task (bad-signature)" in log
    assert cluster.task_key not in log
    assert bad["auth"]["sig"] not in log and wrong_key.decode() not in log


def test_replayed_stale_and_misrouted_signed_tasks_are_rejected(cluster, fault_server):
    key = cluster.task_key.encode()
    before = counters(cluster)
    app = forger(cluster)
    client = cluster.redis.client()
    try:
        # A genuine task runs once; the same task pushed again (a captured copy) is a replay.
        Store(cluster.broker).create_run("replay-1", {"name": "replay", "state": "running"}, [])
        genuine = auth.sign(shard("replay-1", http_target(fault_server.url("/genuine"))), key)
        push(app, genuine)
        field = keys.attempt_field("s0", 0)

        def done() -> bool:
            raw = client.hget(keys.claims("replay-1"), field)
            return raw is not None and orjson.loads(raw)["state"] == "done"

        wait_for(done, 30, "the genuine task ran")
        hits = fault_server.hits["/genuine"]
        assert hits > 0
        push(app, genuine)
        # Signed long ago for a window long gone (its run's keys may have been cleaned up since).
        old_start = time.time() - 3 * auth.STALE_AFTER_S
        old = Shard.from_dict(shard("stale-1", http_target(fault_server.url("/stale")))).to_dict()
        old.update(start_at=old_start)
        push(app, auth.sign(old, key, now=old_start - 1))
        # Signed for region b, pushed onto a's queue.
        push(app, auth.sign(shard("misrouted-1", http_target(fault_server.url("/misrouted")), region="b"), key),
             region="a")
    finally:
        app.close()
    wait_counted(cluster, before, {auth.REPLAYED: 1, auth.STALE: 1, auth.WRONG_REGION: 1})
    time.sleep(2.5)
    assert fault_server.hits["/genuine"] == hits
    assert fault_server.hits["/stale"] == 0 and fault_server.hits["/misrouted"] == 0
    log = cluster.workers[0].log.read_text()
    for reason in (auth.REPLAYED, auth.STALE, auth.WRONG_REGION):
        assert f"rejected task ({reason})" in log


def test_a_signed_shard_for_a_host_outside_the_allow_list_is_refused_and_reported(cluster, tmp_path):
    # 10.255.255.1 is never contacted: the workers (default allow-list: loopback) refuse it.  This
    # orchestrator allows it, so the refusal is the workers' own.
    spec = write_spec(tmp_path / "spec.yaml", "http://10.255.255.1/", rps=5, duration="1s")
    spec.write_text(spec.read_text().replace("timeout: 2s", "timeout: 1s"))
    before = counters(cluster)
    env = {"FNBENCH_ALLOWED_TARGETS": "10.255.255.1"}
    r = cluster.fnbench("run", str(spec), "--results", str(tmp_path / "results"), "--json", extra_env=env)
    assert r.returncode == 2, r.stderr[-4000:]
    result = orjson.loads(r.stdout)
    assert result["errors"], result
    assert all("refused" in e and "10.255.255.1" in e and "FNBENCH_ALLOWED_TARGETS" in e for e in result["errors"])
    run_id = result["run_id"]
    client = cluster.redis.client()
    claims = {k.decode(): orjson.loads(v) for k, v in client.hgetall(keys.claims(run_id)).items()}
    assert claims and all(c["state"] == "refused" for c in claims.values())
    # Nothing was measured, nothing was sent: each refusal is one failed interval, so the result shows
    # the target's groups failed with the reason (issue 26).
    ivs = [orjson.loads(fields[b"iv"]) for _, fields in client.xrange(keys.intervals(run_id))]
    assert len(ivs) == len(claims) and all(iv["status"] == "failed" and iv["sent"] == 0 for iv in ivs)
    assert result["groups"] and all(g["status"] == "failed" and "refused" in g["failure"] and g["completed"] == 0
                                    for g in result["groups"])
    assert counters(cluster)[auth.REFUSED] - before[auth.REFUSED] == len(claims)


def test_worker_and_broker_run_without_a_task_key_exit_2_saying_how_to_make_one(cluster, tmp_path):
    env = {"FNBENCH_TASK_KEY": "", "FNBENCH_TASK_KEY_FILE": str(tmp_path / "absent.key")}
    r = cluster.fnbench("worker", "--region", "a", "--metrics-port", "0", extra_env=env, timeout=60)
    assert r.returncode == 2
    assert "fnbench keygen" in r.stderr and "FNBENCH_TASK_KEY" in r.stderr
    client = cluster.redis.client()
    runs = client.zcard(keys.RUNS)
    spec = write_spec(tmp_path / "spec.yaml", "http://127.0.0.1:9/", rps=5, duration="1s")
    r = cluster.fnbench("run", str(spec), "--results", str(tmp_path / "results"), extra_env=env)
    assert r.returncode == 2 and "fnbench keygen" in r.stderr
    assert client.zcard(keys.RUNS) == runs  # nothing was recorded or dispatched


def test_keygen_writes_a_private_key_and_says_how_to_share_it(cluster, tmp_path):
    path = tmp_path / "cfg" / "task.key"
    r = cluster.fnbench("keygen", "--file", str(path))
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_text().strip()
    assert len(key) >= auth.MIN_KEY_CHARS
    assert key not in r.stdout + r.stderr
    assert "every" in r.stderr and "FNBENCH_TASK_KEY" in r.stderr
    assert cluster.fnbench("keygen", "--file", str(path)).returncode == 2  # never overwritten silently
    assert path.read_text().strip() == key


def test_the_broker_url_can_come_from_a_file_and_is_not_printed(cluster, tmp_path):
    secret_file = tmp_path / "broker"
    secret_file.write_text(cluster.broker + "\n")
    os.chmod(secret_file, 0o600)
    r = cluster.fnbench("status", "--json", "--broker-file", str(secret_file), extra_env={"FNBENCH_BROKER": ""})
    assert r.returncode == 0, r.stderr
    assert "a" in orjson.loads(r.stdout)["regions"]
    assert cluster.broker not in r.stdout + r.stderr
    assert "--broker-file" in cluster.fnbench("worker", "--help").stdout


def test_a_signed_task_of_a_run_that_ended_or_that_the_store_does_not_know_is_not_run(cluster, fault_server):
    """A run ends once: a late redelivery adds neither load nor data; nor does a task of an unknown run."""
    key = cluster.task_key.encode()
    store = Store(cluster.broker)
    store.create_run("ended-1", {"name": "ended", "state": "finished"}, [])
    app = forger(cluster)
    try:
        push(app, auth.sign(shard("ended-1", http_target(fault_server.url("/ended"))), key))
        push(app, auth.sign(shard("unknown-1", http_target(fault_server.url("/unknown"))), key))
    finally:
        app.close()
    wait_for(lambda: cluster.workers[0].log.read_text().count("has ended or is not in the store") >= 2, 30,
             "both deliveries refused")
    time.sleep(1.5)  # past both windows
    assert fault_server.hits["/ended"] == 0 and fault_server.hits["/unknown"] == 0
    client = cluster.redis.client()
    assert client.xlen(keys.intervals("ended-1")) == 0 and not client.exists(keys.claims("unknown-1"))
