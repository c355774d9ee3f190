"""Schedules, history and regression verdicts on real Redis with real `fnbench scheduler` processes.

Nothing is mocked: redis-server on loopback, `fnbench synthetic` as the target, schedulers as
subprocesses (Celery beat with RedBeat + a thread-pool worker), a loopback webhook server.
Timing assertions are bounds relative to the schedule's period, never absolute latencies.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import orjson
import pytest

from bench.bootstrap_coverage import synthetic_run
from orchestrator.analysis import compare, history
from orchestrator.schedule import Recurrence, _firing_sig, scheduler_app
from tests.integration.distributed_fixtures import Cluster, RedisServer
from tests.servers import GroupLeader, closed_port, free_port, need, wait_for
from workers import keys

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
FNBENCH = [sys.executable, "-m", "orchestrator.cli"]
PERIOD_S = 6.0


class Webhook:
    """A loopback HTTP server that keeps every JSON body POSTed to it."""

    def __init__(self, status: int = 200) -> None:
        received: list[dict] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append(json.loads(body))
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def redis_server(tmp_path):
    import shutil

    need(shutil.which("redis-server") is not None, "redis-server is not installed")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def env(redis_server, tmp_path):
    return {**os.environ, "FNBENCH_BROKER": redis_server.url, "FNBENCH_TASK_KEY": secrets.token_urlsafe(32),
            "FNBENCH_GRAFANA_URL": "", "PYTHONPATH": str(ROOT)}


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


def fnbench(env: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*FNBENCH, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def _spec(tmp_path: Path, port: int, name: str = "sched-int", rps: int = 40) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"""name: {name}
regions: [local]
targets:
  - {{name: synthetic, runtime: other, platform: http, url: "http://127.0.0.1:{port}/echo", method: POST,
      body: {{payload: {{a: 1}}}}, timeout: 5s}}
load: {{executor: constant, rps: {rps}}}
duration: 1s
flush_interval: 250ms
""")
    return path


def _planted(name: str, run_id: str, start: float, blocks: list[compare.Block], target: str = "synthetic",
             runtime: str = "other") -> dict:
    """A history entry made of synthetic interval blocks (what `fnbench run` records, minus the run)."""
    point = compare.bootstrap_all(blocks, blocks, ("p50", "p99", "p999"), replicates=200)
    total, errors = sum(b.total for b in blocks), sum(b.errors for b in blocks)
    return {"version": 1, "run_id": run_id, "name": name, "start": start, "recorded": start, "regions": ["local"],
            "git": "planted", "schedule": None, "exit_code": 0,
            "groups": [{"region": "local", "target": target, "runtime": runtime, "phase": "warm", "workload": "echo",
                        "p50": point["p50"].base, "p90": None, "p99": point["p99"].base, "p999": point["p999"].base,
                        "error_rate": errors / total, "achieved_rps": 100.0, "cold_starts": 0}],
            "samples": [{"region": "local", "target": target, "runtime": runtime, "workload": "echo", "phase": "warm",
                         "blocks": [b.to_dict() for b in blocks]}]}


class Scheduler(GroupLeader):
    stop_timeout_s = 15.0

    def __init__(self, env: dict, tmp_path: Path, label: str) -> None:
        self.log = tmp_path / f"scheduler-{label}.log"
        self.proc = subprocess.Popen(
            [*FNBENCH, "scheduler", "--results", str(tmp_path / "results"), "--lock-timeout", "3",
             "--loop-interval", "1", "--concurrency", "2", "--loglevel", "INFO"],
            cwd=ROOT, env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture
def synthetic_target(tmp_path):
    port = free_port()
    proc = subprocess.Popen([*FNBENCH, "synthetic", "--port", str(port), "--median-ms", "5", "--sigma", "0.2"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    wait_for(up, 15, "synthetic target")
    yield port
    proc.terminate()
    proc.wait(10)


def _scheduled(r, name: str) -> list[dict]:
    return [e for e in history.RedisHistory(r).entries(name) if e.get("schedule")]


def test_schedule_fires_on_time_and_a_standby_takes_over_after_sigkill(env, redis_server, tmp_path, webhook,
                                                                         synthetic_target):
    r = redis_server.client()
    env = {**env, "FNBENCH_WEBHOOK_URL": webhook.url}
    # A fast planted past: the first scheduled run (5 ms median) is a regression against it.
    rng = np.random.default_rng(1)
    store = history.RedisHistory(r)
    for i in range(4):
        store.add(_planted("sched-int", f"planted-{i}", time.time() - 600 + 60 * i,
                           synthetic_run(rng, 8, 400, median_ms=0.5)), history.Retention())
    spec = _spec(tmp_path, synthetic_target)
    added = fnbench(env, "schedule", "add", "every6", str(spec), "--every", f"{PERIOD_S:g}s", "--local", "--workers", "1")
    assert added.returncode == 0, added.stderr
    first = Scheduler(env, tmp_path, "a")
    second = None
    try:
        wait_for(lambda: len(_scheduled(r, "sched-int")) >= 2, 8 * PERIOD_S + 30, "two scheduled runs")
        runs = sorted(_scheduled(r, "sched-int"), key=lambda e: e["due"])[:2]
        assert runs[1]["due"] - runs[0]["due"] == pytest.approx(PERIOD_S)
        for e in runs:  # fired on time: claimed within half a period of its due time
            claim = orjson.loads(r.get(keys.schedule_fire("every6", e["fire"])))
            assert 0 <= claim["at"] - e["due"] < PERIOD_S / 2, (claim, e["due"])
        # The first scheduled run regressed against the planted past: the webhook heard of it.
        wait_for(lambda: webhook.received, 10, "regression webhook")
        assert "regressed" in webhook.received[0]["text"] and webhook.received[0]["fnbench"]["regressed"]

        second = Scheduler(env, tmp_path, "b")  # stands by: the lock is held by the first
        before = len(_scheduled(r, "sched-int"))
        wait_for(lambda: len(_scheduled(r, "sched-int")) > before, 3 * PERIOD_S + 30, "another run")
        first.kill()  # SIGKILL between firings: the lock expires, the standby's beat takes it
        killed_at = time.time()
        count = len(_scheduled(r, "sched-int"))
        wait_for(lambda: len(_scheduled(r, "sched-int")) >= count + 3, 6 * PERIOD_S + 40, "runs after the kill")
        assert second.proc.poll() is None
        runs = sorted(_scheduled(r, "sched-int"), key=lambda e: e["due"])
        dues = [e["due"] for e in runs]
        assert len(set(dues)) == len(dues), "a firing ran twice"
        gaps = [b - a for a, b in zip(dues, dues[1:], strict=False)]
        assert all(g == pytest.approx(PERIOD_S) for g in gaps), f"a firing was skipped: {gaps}"
        assert any(d > killed_at for d in dues)
        # Every claimed firing runs and is recorded once; the newest may still be running: wait for it.
        def recorded_as_fired() -> bool:
            fired = list(r.scan_iter(match=keys.schedule_fire("every6", "*").encode()))
            return len(fired) == len(_scheduled(r, "sched-int"))

        wait_for(recorded_as_fired, 2 * PERIOD_S + 60, "every claimed firing recorded")
        runs = sorted(_scheduled(r, "sched-int"), key=lambda e: e["due"])
        assert len({e["due"] for e in runs}) == len(runs), "a firing ran twice"
        def listed_row() -> dict | None:  # the schedule's own count follows the history by a moment
            listed = fnbench(env, "schedule", "list", "--json")
            assert listed.returncode == 0, listed.stderr
            (row,) = json.loads(listed.stdout)
            return row if row["runs"] >= len(runs) else None

        row = wait_for(listed_row, 30, "the schedule's run count", every=0.5)
        assert row["last_run"] and row["last_verdict"] and row["next_due"] > time.time() - 1
    finally:
        first.kill()
        if second is not None:
            second.stop()


def test_add_rejects_bad_spec_cron_and_evicting_redis(env, redis_server, tmp_path):
    good = _spec(tmp_path, 18999)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ntargets: []\nduration: -1s\n")
    outside = tmp_path / "outside.yaml"
    outside.write_text(good.read_text().replace("127.0.0.1", "example.com"))
    for args in ((str(bad), "--every", "1h"), (str(outside), "--every", "1h"), (str(good), "--cron", "61 * * * *"),
                 (str(good), "--cron", "* * *"), (str(good), "--every", "0s"), (str(good),),
                 (str(good), "--cron", "0 * * * *", "--tz", "Nowhere/Land")):
        done = fnbench(env, "schedule", "add", "s1", *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
    assert not redis_server.client().exists(keys.schedule("s1"))

    assert fnbench(env, "schedule", "add", "s1", str(good), "--cron", "0 */6 * * *").returncode == 0
    assert fnbench(env, "schedule", "add", "s1", str(good), "--cron", "0 */6 * * *").returncode == 2  # exists
    good.write_text(good.read_text().replace("rps: 40", "rps: 41"))  # a later edit changes nothing silently
    shown = json.loads(fnbench(env, "schedule", "show", "s1", "--json").stdout)
    assert "rps: 40" in shown["spec"] and shown["verified"] and shown["describe"] == "cron '0 */6 * * *' UTC"
    assert fnbench(env, "schedule", "update", "s1").returncode == 0
    assert "rps: 41" in json.loads(fnbench(env, "schedule", "show", "s1", "--json").stdout)["spec"]
    assert fnbench(env, "schedule", "pause", "s1").returncode == 0
    assert json.loads(fnbench(env, "schedule", "list", "--json").stdout)[0]["next_due"] is None
    assert fnbench(env, "schedule", "resume", "s1").returncode == 0
    due = json.loads(fnbench(env, "schedule", "list", "--json").stdout)[0]["next_due"]
    assert due > time.time() and int(due) % (6 * 3600) == 0
    assert fnbench(env, "schedule", "remove", "s1").returncode == 0
    r = redis_server.client()
    assert not r.exists(keys.schedule("s1")) and not r.exists(f"{keys.REDBEAT_PREFIX}s1")

    r.config_set("maxmemory-policy", "allkeys-lru")  # RedBeat's entries would be evicted silently
    done = fnbench(env, "schedule", "add", "s2", str(good), "--every", "1h")
    assert done.returncode == 2 and "maxmemory-policy" in done.stderr
    started = subprocess.run([*FNBENCH, "scheduler"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert started.returncode == 2 and "allkeys-lru" in started.stderr


def test_scheduler_refuses_a_lock_timeout_below_three_loops(env, redis_server, tmp_path):
    done = subprocess.run([*FNBENCH, "scheduler", "--lock-timeout", "2", "--loop-interval", "1"], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=60)
    assert done.returncode == 2 and "lock-timeout" in done.stderr


def test_history_retention_removes_old_entries_and_keys(redis_server, tmp_path):
    r = redis_server.client()
    store = history.RedisHistory(r)
    rng = np.random.default_rng(4)
    now = time.time()
    keep = history.Retention(keep=3, max_age_s=7 * 86400)
    removed = []
    for i in range(5):
        removed += store.add(_planted("ret", f"run-{i}", now - 100 + i, synthetic_run(rng, 2, 50)), keep)
    assert removed == ["run-0", "run-1"]
    assert [e["run_id"] for e in store.entries("ret")] == ["run-4", "run-3", "run-2"]
    for gone in ("run-0", "run-1"):
        assert not r.exists(keys.history_entry("ret", gone)) and not r.hexists(keys.HISTORY_RUNS, gone)
    assert store.find("run-3")["run_id"] == "run-3"
    assert 0 < r.ttl(keys.history_entry("ret", "run-4")) <= 7 * 86400 + 1
    old = store.add(_planted("ret", "ancient", now - 8 * 86400, synthetic_run(rng, 2, 50)), keep)
    assert old == ["ancient"] and not r.exists(keys.history_entry("ret", "ancient"))
    assert r.zcard(keys.history("ret")) == 3

    files = history.FileHistory(tmp_path / "results")
    for i in range(4):
        files.add(_planted("ret", f"f-{i}", now - 10 + i, synthetic_run(rng, 2, 50)), history.Retention(keep=2))
    kept = sorted(p.parent.name for p in (tmp_path / "results").glob("*/history.json"))
    assert kept == ["f-2", "f-3"] and (tmp_path / "results" / "f-0").is_dir()  # the entry goes, never the run


@pytest.mark.parametrize("name", ["runs", "index", "name", "layout"])
def test_a_spec_named_like_an_index_key_records_history(env, redis_server, name):
    """User names live in their own key namespace: a spec named ``runs`` once hit the run index's hash
    (WRONGTYPE, a traceback in `fnbench history runs`)."""
    r = redis_server.client()
    store = history.RedisHistory(r)
    rng = np.random.default_rng(8)
    now = time.time()
    for i in range(2):
        store.add(_planted(name, f"{name}-{i}", now - 60 + i, synthetic_run(rng, 2, 50)), history.Retention())
    store.add(_planted("other", "other-0", now, synthetic_run(rng, 2, 50)), history.Retention())
    shown = fnbench(env, "history", name, "--json")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert [run["run_id"] for run in json.loads(shown.stdout)["runs"]] == [f"{name}-1", f"{name}-0"]
    assert fnbench(env, "history", "other", "--json").returncode == 0
    assert store.find(f"{name}-0")["name"] == name and store.find("other-0")["name"] == "other"
    assert r.type(keys.HISTORY_RUNS) == b"hash" and r.type(keys.history(name)) == b"zset"


def test_history_of_the_earlier_key_layout_stays_readable(env, redis_server):
    """Entries recorded before layout 2 (fnbench:history:<name>, fnbench:history:runs) are moved once, TTLs kept."""
    r = redis_server.client()
    rng = np.random.default_rng(9)
    now = time.time()
    for i in range(3):
        entry = _planted("legacy", f"legacy-{i}", now - 60 + i, synthetic_run(rng, 2, 50))
        r.sadd(keys.HISTORY_NAMES, "legacy")
        r.zadd("fnbench:history:legacy", {entry["run_id"]: entry["start"]})
        r.set(f"fnbench:history:legacy:{entry['run_id']}", orjson.dumps(entry), ex=3600)
        r.hset("fnbench:history:runs", entry["run_id"], "legacy")
    shown = fnbench(env, "history", "legacy", "--json")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert [run["run_id"] for run in json.loads(shown.stdout)["runs"]] == ["legacy-2", "legacy-1", "legacy-0"]
    store = history.RedisHistory(r)
    assert store.find("legacy-1")["run_id"] == "legacy-1"
    assert 0 < r.ttl(keys.history_entry("legacy", "legacy-0")) <= 3600
    assert not r.exists("fnbench:history:legacy", "fnbench:history:runs", "fnbench:history:legacy:legacy-0")


def test_planted_regression_fails_check_and_reaches_the_webhook(env, redis_server, webhook):
    r = redis_server.client()
    store = history.RedisHistory(r)
    rng = np.random.default_rng(6)
    now = time.time()
    for i in range(6):
        store.add(_planted("svc", f"ok-{i}", now - 600 + 60 * i, synthetic_run(rng, 12, 1500)), history.Retention())
    calm = fnbench(env, "history", "svc", "--check")
    assert calm.returncode == 0, calm.stdout + calm.stderr
    assert "synthetic in local" in calm.stdout and "→" in calm.stdout
    store.add(_planted("svc", "slow-1", now, synthetic_run(rng, 12, 1500, scale=1.4)), history.Retention())
    flagged = fnbench({**env, "FNBENCH_WEBHOOK_URL": webhook.url}, "history", "svc", "--check", "--notify", "--json")
    assert flagged.returncode == 1, flagged.stdout + flagged.stderr
    doc = json.loads(flagged.stdout)
    assert doc["check"]["regressed"] and doc["check"]["newest"] == "slow-1" and doc["runs"][0]["run_id"] == "slow-1"
    (message,) = webhook.received
    assert message["text"].startswith("fnbench svc: run slow-1 regressed") and "p99 in slow-1 is" in message["text"]
    # A webhook that fails is a warning; the verdict stands.
    broken = fnbench({**env, "FNBENCH_WEBHOOK_URL": f"http://127.0.0.1:{closed_port()}/"}, "history", "svc",
                     "--check", "--notify")
    assert broken.returncode == 1 and "warning: regression webhook failed" in broken.stderr
    compared = fnbench(env, "compare", "ok-5", "slow-1", "--json")
    assert compared.returncode == 0, compared.stderr
    p99 = next(c for c in json.loads(compared.stdout) if c["metric"] == "p99")
    assert p99["verdict"] == "higher" and 0.2 < p99["ci_low"] < 0.4 < p99["ci_high"] < 0.7


def test_a_failing_webhook_is_reported_without_its_token(env, redis_server):
    """The webhook URL's path and query hold its token (Slack, Teams): a failure names only scheme://host:port/…"""
    r = redis_server.client()
    store = history.RedisHistory(r)
    rng = np.random.default_rng(7)
    now = time.time()
    for i in range(6):
        store.add(_planted("svc2", f"ok-{i}", now - 600 + 60 * i, synthetic_run(rng, 12, 1500)), history.Retention())
    store.add(_planted("svc2", "slow-1", now, synthetic_run(rng, 12, 1500, scale=1.4)), history.Retention())
    token = "T0KEN-" + secrets.token_hex(8)
    failing = Webhook(status=500)
    try:
        port = failing.server.server_address[1]
        for url, host in ((f"http://127.0.0.1:{port}/services/{token}?key={token}q", f"http://127.0.0.1:{port}/…"),
                          (f"http://u:{token}@127.0.0.1:{closed_port()}/hooks/{token}", "http://127.0.0.1:")):
            out = fnbench({**env, "FNBENCH_WEBHOOK_URL": url}, "history", "svc2", "--check", "--notify")
            assert out.returncode == 1, out.stdout + out.stderr
            assert "warning: regression webhook failed" in out.stderr and host in out.stderr, out.stderr
            assert token not in out.stdout + out.stderr, out.stderr
        assert failing.received  # the 500 server was reached: its failure is the one reported
    finally:
        failing.close()
    assert history.redact_url("https://hooks.slack.com/services/T/B/x?y=1") == "https://hooks.slack.com/…"
    assert history.redact_url("https://[::1]:8443/a/b") == "https://[::1]:8443/…"


# -- SLOs with abort_on_fail (evaluated centrally, during the run) ----------------------------------------
def test_abort_on_fail_slo_stops_every_region_and_says_which(tmp_path, synthetic_target):
    spec = tmp_path / "abort.yaml"
    spec.write_text(f"""name: abort
regions: [a, b]
targets:
  - {{name: synthetic, runtime: other, platform: http, url: "http://127.0.0.1:{synthetic_target}/echo", method: POST,
      body: {{payload: {{a: 1}}}}, timeout: 5s}}
load: {{executor: constant, rps: 40}}
duration: 60s
flush_interval: 250ms
slos:
  - {{target: synthetic, metric: response_ms.p50, max: 1, abort_on_fail: true, after: 1s}}   # the target's median is 5 ms
  - {{target: "*", metric: error_rate, max: 0.5}}
""")
    started = time.time()
    done = subprocess.run([*FNBENCH, "run", str(spec), "--workers", "2", "--metrics-port", "0", "--no-html",
                           "--results", str(tmp_path / "results"), "--json"], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "FNBENCH_GRAFANA_URL": ""}, timeout=120)
    assert done.returncode == 1, done.stderr  # a failed SLO, not an interruption
    result = json.loads(done.stdout)
    abort = result["aborted_by"]
    assert abort["metric"] == "response_ms.p50" and abort["target"] == "synthetic" and abort["window_s"] == 1.0
    assert abort["value"] > 1 and started < abort["at"] < time.time()
    assert not result["interrupted"] and "SLO response_ms.p50 <= 1 failed" in done.stderr
    assert any(v["metric"] == "response_ms.p50" and not v["pass"] for v in result["slo"])
    # Every region stopped soon after the abort: no region measured on for more than about a second.
    from orchestrator.run.results import read_intervals

    folder = tmp_path / "results" / result["run_id"]
    ivs = read_intervals(folder / "intervals.jsonl")
    assert {iv.region for iv in ivs} == {"a", "b"}
    for region in ("a", "b"):
        last = max(iv.t1 for iv in ivs if iv.region == region)
        assert last - abort["at"] < 1.5, (region, last - abort["at"])
    assert max(g["seconds"] for g in result["groups"]) < 30  # far short of the planned 60 s


def test_a_beat_that_loses_its_lock_takes_it_again_and_keeps_firing(env, redis_server, tmp_path, synthetic_target):
    """RedBeat's tick raises LockNotOwnedError when the lock vanished under it (sibson/redbeat#230); the
    scheduler starts a fresh beat, which takes the lock again, instead of running on as a worker only."""
    r = redis_server.client()
    spec = _spec(tmp_path, synthetic_target, name="relock")
    assert fnbench(env, "schedule", "add", "relock", str(spec), "--every", "4s", "--local").returncode == 0
    scheduler = Scheduler(env, tmp_path, "relock")
    lock = f"{keys.REDBEAT_PREFIX}:lock"
    try:
        wait_for(lambda: r.exists(lock), 30, "the beat lock")
        wait_for(lambda: len(_scheduled(r, "relock")) >= 1, 40, "a first run")
        r.delete(lock)  # as if it expired under a stalled beat
        count = len(_scheduled(r, "relock"))
        wait_for(lambda: len(_scheduled(r, "relock")) >= count + 2, 60, "runs after the lock was lost")
        assert r.exists(lock) and scheduler.proc.poll() is None
        assert "beat stopped; starting it again" in scheduler.log.read_text()
        dues = sorted(e["due"] for e in _scheduled(r, "relock"))
        assert len(set(dues)) == len(dues)
    finally:
        scheduler.stop()


def test_every_firing_refreshes_the_trend_page_and_keeps_its_verdict_with_the_run(env, redis_server, tmp_path,
                                                                                   synthetic_target):
    """After each firing the scheduler writes RESULTS/trend-NAME.html again (to be served statically) and
    stores the regression check with the run it judged, where the page marks it (issue 23)."""
    r = redis_server.client()
    spec = _spec(tmp_path, synthetic_target, name="trended")
    assert fnbench(env, "schedule", "add", "trend4", str(spec), "--every", "4s", "--local").returncode == 0
    scheduler = Scheduler(env, tmp_path, "trend")
    page = tmp_path / "results" / "trend-trended.html"
    shown: list[dict] = []
    try:
        def shows_every_run() -> bool:
            runs = _scheduled(r, "trended")
            ok = len(runs) >= 2 and page.exists() and all(f'"{e["run_id"]}"' in page.read_text() for e in runs)
            shown[:] = runs if ok else []
            return ok

        wait_for(shows_every_run, 60, "a trend page showing two scheduled runs")
        text = page.read_text()
    finally:
        scheduler.stop()
    runs = shown  # (a firing the stop interrupted may be recorded after: it is not on this page)
    assert all(e["run_id"] in text for e in runs)
    for e in runs:  # each run carries the verdict its firing reached (too few earlier runs yet)
        assert e["check"]["newest"] == e["run_id"] and e["check"]["verdict"].startswith("no verdict"), e.get("check")
    assert "What changed" in text and "Since the last run" in text
    for e in runs:  # each run's own report, written by the scheduler, is linked from the page
        assert (tmp_path / "results" / e["run_id"] / "report.html").exists()
        assert f'href="{e["run_id"]}/report.html"' in text
    # Every run's bands were stored when it was recorded (its own 95 % intervals).
    warm = next(s for s in runs[0]["samples"] if s["phase"] == "warm")
    low, high = warm["bands"]["p50"]
    p50 = next(g["p50"] for g in runs[0]["groups"] if g["phase"] == "warm")
    assert low <= p50 <= high


# -- schedules cannot be fired or revived through Redis (issue 20 item 5) ---------------------------------
# The whole record is signed (paused and a version included); every firing, by beat or by hand, is checked
# against it; a removal leaves a signed tombstone and the scheduler remembers the newest version it has
# seen, so an older signed record written back is refused.


def _fire(env: dict, name: str, fire: str, due: float, sig: str | None = None) -> None:
    """Push a firing onto the scheduled queue, as anyone with Redis access can."""
    app = scheduler_app(env["FNBENCH_BROKER"])
    body = {"name": name, "fire": fire, "due": due, **({"sig": sig} if sig else {})}
    try:
        app.send_task(keys.SCHEDULED_TASK, (), body, queue=keys.SCHEDULED_QUEUE)
    finally:
        app.close()


def _hourly() -> str:
    """A cron expression that last fired a minute or two ago and next fires in about an hour: beat does
    not fire it during the test, and its last due time is one a forged firing can name."""
    return f"{(time.gmtime().tm_min + 59) % 60} * * * *"


def _slot(r, name: str) -> float:
    """The due time of the schedule's recurrence that passed within the hour (what beat would have sent)."""
    rec = orjson.loads(r.hget(keys.schedule(name), "record"))
    return Recurrence.from_dict(rec["recurrence"]).next_after(time.time() - 3600)


def _refusals(scheduler: Scheduler) -> str:
    return scheduler.log.read_text()


def test_a_paused_schedule_is_not_fired_by_hand_by_a_flipped_flag_or_by_a_rolled_back_record(
        env, redis_server, tmp_path, synthetic_target):
    r = redis_server.client()
    key = env["FNBENCH_TASK_KEY"].encode()
    spec = _spec(tmp_path, synthetic_target, name="paused-int")
    assert fnbench(env, "schedule", "add", "p1", str(spec), "--cron", _hourly(), "--local").returncode == 0
    scheduler = Scheduler(env, tmp_path, "paused")
    try:
        # A signed manual firing of the running schedule runs (the control).
        assert fnbench(env, "schedule", "run-now", "p1").returncode == 0
        wait_for(lambda: len(_scheduled(r, "paused-int")) >= 1, 60, "the manual run")
        unpaused = r.hget(keys.schedule("p1"), "record")
        assert fnbench(env, "schedule", "pause", "p1").returncode == 0
        time.sleep(2.5)  # the scheduler learns the paused version (it polls every loop interval)
        refused = fnbench(env, "schedule", "run-now", "p1")
        assert refused.returncode == 2 and "paused" in refused.stderr
        # By hand, signed: refused because paused (a manual firing used to skip the check).
        due = round(time.time(), 3)
        _fire(env, "p1", "manual-signed", due, _firing_sig("p1", "manual-signed", due, key))
        # By hand, unsigned: refused.
        _fire(env, "p1", "manual-forged", round(time.time(), 3))
        wait_for(lambda: _refusals(scheduler).count("not run") >= 2, 30, "two manual firings refused")
        # The paused flag flipped in the stored record: its signature no longer matches.
        flipped = orjson.loads(r.hget(keys.schedule("p1"), "record"))
        flipped["paused"] = False
        r.hset(keys.schedule("p1"), "record", orjson.dumps(flipped))
        slot = _slot(r, "p1")
        _fire(env, "p1", f"{slot:.3f}", slot)
        wait_for(lambda: "signature does not match" in _refusals(scheduler), 30, "the flipped record refused")
        # The record from before the pause written back (validly signed, older version): rolled back.
        r.hset(keys.schedule("p1"), "record", unpaused)
        _fire(env, "p1", f"{slot:.3f}", slot)
        wait_for(lambda: "rolled back" in _refusals(scheduler), 30, "the rolled back record refused")
        time.sleep(1.0)
        assert len(_scheduled(r, "paused-int")) == 1  # only the control ran
        log = _refusals(scheduler)
        assert "the schedule is paused" in log and "not signed with the task key" in log
    finally:
        scheduler.stop()


def test_a_removed_schedule_written_back_is_not_fired_and_not_shown_verified(env, redis_server, tmp_path,
                                                                              synthetic_target):
    r = redis_server.client()
    spec = _spec(tmp_path, synthetic_target, name="removed-int")
    assert fnbench(env, "schedule", "add", "gone1", str(spec), "--cron", _hourly(), "--local").returncode == 0
    scheduler = Scheduler(env, tmp_path, "removed")
    try:
        record = r.hget(keys.schedule("gone1"), "record")
        definition = r.hget(f"{keys.REDBEAT_PREFIX}gone1", "definition")
        assert fnbench(env, "schedule", "remove", "gone1").returncode == 0
        time.sleep(2.5)  # the scheduler sees the tombstone
        # Written back: the record, its name in the index and beat's entry.
        r.hset(keys.schedule("gone1"), "record", record)
        r.sadd(keys.SCHEDULES, "gone1")
        r.hset(f"{keys.REDBEAT_PREFIX}gone1", "definition", definition)
        shown = orjson.loads(fnbench(env, "schedule", "show", "gone1", "--json").stdout)
        assert shown["verified"] is False
        slot = _slot(r, "gone1")
        _fire(env, "gone1", f"{slot:.3f}", slot)
        wait_for(lambda: "was removed; its record was written back" in _refusals(scheduler), 30, "refused (tombstone)")
        # The tombstone deleted as well: the scheduler remembers the removal's version.
        r.hdel(keys.SCHEDULES_REMOVED, "gone1")
        _fire(env, "gone1", f"{slot + 3600:.3f}", slot + 3600)  # not a due time of the past hour: refused too
        _fire(env, "gone1", f"{slot:.3f}-again", slot)
        wait_for(lambda: _refusals(scheduler).count("not run") >= 3, 30, "both refused")
        r.delete(keys.schedule_fire("gone1", f"{slot:.3f}"))
        _fire(env, "gone1", f"{slot:.3f}", slot)
        wait_for(lambda: "rolled back" in _refusals(scheduler), 30, "refused (remembered removal)")
        time.sleep(1.0)
        assert _scheduled(r, "removed-int") == []
    finally:
        scheduler.stop()


def test_sigterm_stops_a_scheduler_whose_redis_went_away_mid_run(env, redis_server, tmp_path, synthetic_target):
    # Issue 27 item 10: with a scheduled run in flight when its Redis went away, SIGTERM was ignored for
    # over an hour (the run waited for the store, beat retried RedBeat's setup, Celery joined the pool).
    spec = _spec(tmp_path, synthetic_target, name="sched-term")
    spec.write_text(spec.read_text().replace("duration: 1s", "duration: 60s"))  # still running when Redis goes
    cluster = Cluster(redis_server, tmp_path, task_key=env["FNBENCH_TASK_KEY"])
    cluster.start_worker("local")
    cluster.wait_registered(1)
    added = fnbench(env, "schedule", "add", "term", str(spec), "--every", f"{PERIOD_S:g}s")  # distributed
    assert added.returncode == 0, added.stderr
    scheduler = Scheduler(cluster.env({"PYTHONPATH": str(ROOT)}), tmp_path, "term")
    results = tmp_path / "results"
    try:
        folder = wait_for(lambda: next(iter(results.glob("sched-term-*")), None), 4 * PERIOD_S + 30,
                          "a scheduled run in flight")
        time.sleep(1.0)
        assert redis_server.proc is not None
        redis_server.proc.kill()  # Redis goes away for good, mid-run
        redis_server.proc.wait(10)
        redis_server.proc = None
        time.sleep(3.0)  # the run now waits for the store, beat retries its Redis
        assert scheduler.proc.poll() is None
        os.killpg(scheduler.proc.pid, signal.SIGTERM)
        t0 = time.monotonic()
        try:
            scheduler.proc.wait(15)  # generous on a loaded machine: it takes about a second
        except subprocess.TimeoutExpired:
            pytest.fail(f"the scheduler ignored SIGTERM:\n{scheduler.log.read_text()[-3000:]}")
        assert time.monotonic() - t0 < 15
        # The run in flight was stopped and is recorded, in its folder, as interrupted.
        saved = orjson.loads((folder / "result.json").read_bytes())
        assert saved["interrupted"] is True, saved
    finally:
        scheduler.kill()
        for worker in cluster.workers:
            worker.kill()
