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
from fractions import Fraction
from pathlib import Path

import orjson
import pytest
from celery import Celery

from orchestrator.run.store import Store
from tests.integration.distributed_fixtures import (
    cluster_fixture,  # noqa: F401 - the `cluster` fixture
    write_spec,
)
from tests.servers import wait_for
from workers import auth, keys
from workers.contract import Interval, Shard, Target

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


def test_a_signed_shard_reading_the_workers_own_variables_is_refused(cluster, fault_server):
    """A correctly signed shard whose URL or headers name ${env:FNBENCH_TASK_KEY} / ${env:FNBENCH_BROKER}:
    the worker (the trust boundary) refuses it; the secret never reaches the target."""
    key = cluster.task_key.encode()
    store = Store(cluster.broker)
    store.create_run("envleak-1", {"name": "envleak", "state": "running"}, [])
    app = forger(cluster)
    url = http_target(fault_server.url("/envleak-${env:FNBENCH_TASK_KEY}"))
    header = Target(name="t", runtime="rust", platform="http", url=fault_server.url("/envleak-header"), method="GET",
                    timeout_s=1.0, headers=(("Authorization", "${env:FNBENCH_BROKER}"),))
    try:
        push(app, auth.sign(shard("envleak-1", url), key))
        second = shard("envleak-1", header)
        second["shard_id"] = "s1"
        push(app, auth.sign(second, key))
    finally:
        app.close()
    client = cluster.redis.client()

    def settled() -> dict | None:
        claims = {k.decode(): orjson.loads(v) for k, v in client.hgetall(keys.claims("envleak-1")).items()}
        return claims if len(claims) == 2 and all(c["state"] in ("refused", "failed", "done") for c in claims.values()) else None

    claims = wait_for(settled, 30, "both shards settled")
    time.sleep(1.5)  # past both windows
    assert all(c["state"] in ("refused", "failed") and "never resolved" in c.get("error", "") for c in claims.values()), claims
    assert not any(path.startswith("/envleak") for path in fault_server.hits), fault_server.hits
    # A refused shard reports itself as one failed interval (the target's failure), with nothing sent.
    sent = [Interval.from_json(fields[b"iv"]) for _, fields in client.xrange(keys.intervals("envleak-1"))]
    assert all(iv.status == "failed" and "never resolved" in iv.failure and iv.sent == 0 for iv in sent), sent
    log = cluster.workers[0].log.read_text()
    assert cluster.task_key not in log and cluster.broker not in str(claims)


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


# -- the orchestrator signs only what it planned (issue 20 item 2) ----------------------------------------
def _evil(stored: bytes, url: str) -> bytes:
    """The stored shard rewritten as an attacker would: another URL, 8x the rate, its start in the past."""
    obj = orjson.loads(stored)
    d = dict(obj.get("shard", obj))
    d["target"] = {**d["target"], "url": url}
    d["arrival"] = {**d["arrival"], "rps": str(Fraction(d["arrival"]["rps"]) * 8)}
    d["start_at"] = d["start_at"] - 5.0
    return orjson.dumps(d)  # the form stored before seals: accepted as-is by an orchestrator that trusts Redis


def _start(cluster, region: str, spec, results) -> tuple:
    for _ in range(2):
        cluster.start_worker(region)
    cluster.wait_registered(len([w for w in cluster.workers if w.proc.poll() is None]))
    client = cluster.redis.client()
    before = set(client.zrange(keys.RUNS, 0, -1))
    proc = cluster.popen("run", str(spec), "--results", str(results), "--json", "--workers", "1")
    new = wait_for(lambda: set(client.zrange(keys.RUNS, 0, -1)) - before, 30, "the run recorded")
    run_id = next(iter(new)).decode()
    wait_for(lambda: client.xlen(keys.intervals(run_id)) >= 2, 30, "the run's first intervals")
    return proc, run_id


def _kill_claimant(cluster, run_id: str, region: str) -> None:
    claims = cluster.redis.client().hgetall(keys.claims(run_id))
    (claim,) = [orjson.loads(v) for v in claims.values()]
    (victim,) = [w for w in cluster.workers if w.region == region and w.proc.poll() is None
                 and claim["node"].startswith(f"fnbench-{region}-{w.proc.pid}@")]
    victim.kill()


def test_watch_after_a_restart_refuses_a_stored_shard_that_does_not_match_its_signature(cluster, fault_server, tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", fault_server.url("/planned"), regions="[w]", rps=20, duration="10s",
                      flush="0.5s")
    proc, run_id = _start(cluster, "w", spec, tmp_path / "results")
    proc.kill()  # the orchestrator dies; `watch` picks the run up
    proc.communicate(timeout=10)
    client = cluster.redis.client()
    (sid,) = [k.decode() for k in client.hkeys(keys.shards(run_id))]
    client.hset(keys.shards(run_id), sid, _evil(client.hget(keys.shards(run_id), sid), fault_server.url("/evil")))
    _kill_claimant(cluster, run_id, "w")  # its heartbeats stop: the watcher re-dispatches the shard
    r = cluster.fnbench("watch", run_id, "--results", str(tmp_path / "watched"), "--json", timeout=90)
    result = orjson.loads(r.stdout)
    assert fault_server.hits["/evil"] == 0
    assert any("1 shard(s) refused: stored shard does not match its signature" in e for e in result["errors"]), result
    assert any(g["reason"].startswith("refused: stored shard does not match") for g in result["gaps"]), result["gaps"]
    assert r.returncode == 2, r.stderr[-3000:]  # not a clean run
    time.sleep(1.0)  # nothing was queued for the evil shard: still nothing
    assert fault_server.hits["/evil"] == 0


def test_a_live_orchestrator_re_dispatches_its_plan_not_what_the_store_says(cluster, fault_server, tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", fault_server.url("/planned2"), regions="[v]", rps=20, duration="9s",
                      flush="0.5s")
    proc, run_id = _start(cluster, "v", spec, tmp_path / "results")
    client = cluster.redis.client()
    (sid,) = [k.decode() for k in client.hkeys(keys.shards(run_id))]
    client.hset(keys.shards(run_id), sid, _evil(client.hget(keys.shards(run_id), sid), fault_server.url("/evil2")))
    _kill_claimant(cluster, run_id, "v")
    stdout, stderr = proc.communicate(timeout=90)
    result = orjson.loads(stdout)
    assert fault_server.hits["/evil2"] == 0
    assert result["redispatched"] == 1
    assert any("altered in the store" in e for e in result["errors"]), result["errors"]
    (g,) = result["groups"]
    assert g["outcomes"].get("ok", 0) > 0 and g["intended"] <= 180  # the planned rate, not 8x
    attempts = {orjson.loads(v)["state"] for v in client.hvals(keys.claims(run_id))}
    assert "done" in attempts  # the planned remainder ran


# -- a task is used once, whatever Redis says (issue 20 item 4) -------------------------------------------
def test_a_replayed_task_whose_claim_was_deleted_does_not_run_twice_and_is_reported(cluster, fault_server):
    key = cluster.task_key.encode()
    start = time.time() + 1.0
    Store(cluster.broker).create_run("replay-2", {"name": "replay2", "state": "running", "start_at": start,
                                                  "total_s": 1.0, "max_timeout_s": 1.0}, [])
    genuine = shard("replay-2", http_target(fault_server.url("/once")), start_in=1.0, duration=1.0)
    genuine["start_at"] = start
    app = forger(cluster)
    client = cluster.redis.client()
    field = keys.attempt_field("s0", 0)
    before = counters(cluster)
    try:
        push(app, auth.sign(genuine, key))

        def done() -> bool:
            raw = client.hget(keys.claims("replay-2"), field)
            return raw is not None and orjson.loads(raw)["state"] == "done"

        wait_for(done, 30, "the genuine task ran")
        hits = fault_server.hits["/once"]
        assert hits > 0
        client.hdel(keys.claims("replay-2"), field)  # what an attacker with Redis access can undo
        push(app, auth.sign(genuine, key))  # the same task again (as captured from the queue)
    finally:
        app.close()
    wait_counted(cluster, before, {auth.REPLAYED: 1})
    time.sleep(1.0)
    assert fault_server.hits["/once"] == hits  # not run twice
    (rec,) = [orjson.loads(v) for v in client.lrange(keys.rejections("replay-2"), 0, -1)]
    assert rec["reason"] == auth.REPLAYED and rec["field"] == field and "already executed" in rec["message"]
    report = cluster.fnbench("report", "replay-2", "--json")
    errors = orjson.loads(report.stdout)["errors"]
    assert any("rejected (replayed)" in e and "already executed on this worker host" in e for e in errors), errors
