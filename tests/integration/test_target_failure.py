"""Issue 26: a function's start cannot flake on its port, a failed start says what happened, and a
target that fails is that target's failure (its groups ``failed`` with the reason, exit 2) while the
other targets are measured — in local mode and through Redis + a Celery worker.

The broken function is the real local platform's python runtime started through FNBENCH_PYTHON,
pointed at an interpreter that answers the version probe and otherwise writes to stderr and exits 3.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from tests.servers import GroupLeader, need, wait_for
from workers.functions import NotListening, artifact_for, start_function, wait_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
FNBENCH = [sys.executable, "-m", "orchestrator.cli"]
BROKEN_SAYS = "fake python: the interpreter is broken"


@pytest.fixture
def broken_python(tmp_path: Path) -> Path:
    """An 'interpreter' that passes fnbench's version probe, then fails at once with rc=3."""
    script = tmp_path / "broken-python"
    script.write_text(f'#!/bin/sh\nif [ "$1" = "-c" ]; then echo "3 12 $0"; exit 0; fi\necho "{BROKEN_SAYS}" >&2\nexit 3\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


# -- starting a function -----------------------------------------------------------------------------
def test_a_function_that_exits_at_once_says_rc_and_output_at_once(broken_python):
    started = start_function([str(broken_python), "server.py"], dict(os.environ), "/")
    t0 = time.monotonic()
    with pytest.raises(NotListening) as info:
        wait_port(started, t0 + 30.0, name="the python function")
    waited = time.monotonic() - t0
    started.close()
    message = str(info.value)
    assert info.value.exited and "exited after" in message and "rc=3" in message and BROKEN_SAYS in message
    assert "30" not in message  # not "did not listen within 30s"
    assert waited < 15.0  # well before its 30 s deadline: the exit is seen, not timed out


def test_a_function_alive_but_not_listening_says_so():
    started = start_function(["sleep", "30"], dict(os.environ), "/")
    try:
        with pytest.raises(NotListening) as info:
            wait_port(started, time.monotonic() + 0.3, name="sleeper")
        assert not info.value.exited and "alive and not listening" in str(info.value)
    finally:
        started.proc.kill()
        started.proc.wait()
        started.close()


def test_no_port_can_be_taken_between_choosing_and_binding_it():
    """Many starts while another thread grabs every ephemeral port it can: each function listens on the
    port it reports, because it bound that port itself (no port is chosen for it and released)."""
    art = artifact_for("python")
    env = {**os.environ, "HOST": "127.0.0.1"}
    held: list[socket.socket] = []
    stop = threading.Event()

    def thief() -> None:
        while not stop.is_set() and len(held) < 3000:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            held.append(s)
            time.sleep(0.0005)

    grabber = threading.Thread(target=thief, daemon=True)
    grabber.start()
    try:
        for _ in range(12):
            started = start_function(art.command, env, art.cwd)
            try:
                port = wait_port(started, time.monotonic() + 30.0, name="python")
                with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                    c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    reply = b""
                    while chunk := c.recv(4096):
                        reply += chunk
                assert reply.startswith(b"HTTP/1.1 200") and b'"runtime":"python"' in reply.replace(b" ", b"")
            finally:
                started.proc.kill()
                started.proc.wait()
                started.close()
    finally:
        stop.set()
        grabber.join(5)
        for s in held:
            s.close()
    assert held  # the thief did take ports meanwhile


@dataclass
class _Worker(GroupLeader):
    proc: subprocess.Popen


# -- one target fails, the others run -------------------------------------------------------------------
def two_targets(tmp_path: Path, slo: bool = True) -> Path:
    p = tmp_path / "two.yaml"
    p.write_text(
        "name: two\n"
        "targets:\n"
        "  - {name: good, runtime: node, platform: local, workload: echo, body: {payload: 1}}\n"
        "  - {name: bad, runtime: python, platform: local, workload: echo, body: {payload: 1}}\n"
        "load: {executor: constant, rps: 20}\nduration: 2s\nflush_interval: 1s\n"
        + ("slos:\n  - {target: '*', metric: error_rate, max: 0.01}\n" if slo else ""))
    return p


def check_one_failed(r: subprocess.CompletedProcess, results: Path) -> None:
    assert r.returncode == 2, r.stderr[-3000:]
    (folder,) = [d for d in results.iterdir() if d.is_dir()]
    result = json.loads((folder / "result.json").read_text())
    assert result["schema_version"] == 2
    groups = {g["target"]: g for g in result["groups"]}
    good, bad = groups["good"], groups["bad"]
    assert good["outcomes"].get("ok", 0) >= 30 and "status" not in good
    assert bad["status"] == "failed" and "rc=3" in bad["failure"] and BROKEN_SAYS in bad["failure"]
    assert bad["completed"] == 0
    slos = {v["target"]: v for v in result["slo"]}
    assert slos["good"]["pass"] and not slos["bad"]["pass"] and slos["bad"]["no_data"]
    assert "FAILED" in r.stdout + r.stderr and "NO DATA" in r.stdout + r.stderr


def test_local_run_one_target_fails_the_other_is_measured(tmp_path, broken_python):
    results = tmp_path / "r"
    r = subprocess.run([*FNBENCH, "run", str(two_targets(tmp_path)), "--results", str(results),
                        "--metrics-port", "0", "--no-html"], capture_output=True, text=True, cwd=ROOT, timeout=180,
                       env={**os.environ, "FNBENCH_PYTHON": str(broken_python), "COLUMNS": "250"})
    check_one_failed(r, results)


def test_distributed_run_one_target_fails_the_other_is_measured(tmp_path, broken_python):
    from tests.integration.distributed_fixtures import RedisServer

    need(shutil.which("redis-server") is not None, "redis-server not installed (apt install redis-server)")
    server = RedisServer(tmp_path)
    server.start()
    env = {**os.environ, "FNBENCH_BROKER": server.url, "FNBENCH_GRAFANA_URL": "", "FNBENCH_TASK_KEY": secrets.token_urlsafe(32),
           "FNBENCH_PYTHON": str(broken_python), "COLUMNS": "250"}
    log = tmp_path / "worker.log"
    worker = _Worker(subprocess.Popen([*FNBENCH, "worker", "--region", "local", "--concurrency", "2",
                                           "--metrics-port", "0", "--loglevel", "INFO"], cwd=ROOT, env=env,
                                          stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True))
    try:
        client = server.client()
        wait_for(lambda: any(orjson.loads(v)["pid"] == worker.proc.pid
                             for v in client.hgetall("fnbench:workers").values()), 30, "worker registered")
        results = tmp_path / "r"
        r = subprocess.run([*FNBENCH, "run", str(two_targets(tmp_path)), "--broker", server.url, "--results",
                            str(results), "--no-html"], capture_output=True, text=True, cwd=ROOT, timeout=180, env=env)
        check_one_failed(r, results)
    finally:
        worker.stop()
        server.stop()


def test_a_lambda_function_that_does_not_exist_fails_its_target_and_stops(lambda_credentials):
    from lambda_emulator import server as lambda_local
    from workers.contract import Shard, Target
    from workers.shard import run_shards

    try:
        fns = lambda_local.make_functions(["python"], reserved=2)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    with lambda_local.Background(fns) as lam:
        def shard(name: str, function: str) -> Shard:
            target = Target(name=name, runtime="python", platform="aws-lambda", timeout_s=10,
                            body=json.dumps({"workload": "echo", "params": {"payload": 1}}),
                            address={"function": function, "endpoint_url": lam.endpoint})
            return Shard(run_id="r", shard_id=name, region="local", target=target, phase="warm",
                         arrival={"kind": "constant", "rps": "20"}, start_at=time.time() + 0.5, duration_s=3.0,
                         max_in_flight=4, flush_interval_s=1.0)

        intervals: list = []
        run_shards([shard("here", "python"), shard("gone", "no-such-function")], intervals.append)
    final = {iv.shard_id: iv for iv in intervals if iv.final}
    assert final["gone"].status == "failed" and "not found" in final["gone"].failure
    assert final["here"].status == "ok"
    assert sum(iv.outcomes.get("ok", 0) for iv in intervals if iv.shard_id == "here") >= 40
    # The missing function's shard stopped at once instead of sending its 60 requests.
    assert sum(iv.intended for iv in intervals if iv.shard_id == "gone") < 30


def test_a_local_cold_start_that_fails_is_a_function_error_with_its_reason_logged(broken_python, monkeypatch, caplog):
    from workers.contract import Outcome, Target
    from workers.platforms import local

    monkeypatch.setenv("FNBENCH_PYTHON", str(broken_python))
    monkeypatch.setattr(local, "_artifact", lambda runtime: artifact_for(runtime))
    target = Target(name="cold", runtime="python", platform="local", workload="echo", timeout_s=30)
    invoker = local.make_invoker(target, "cold", 4)
    got: list = []

    async def main() -> None:
        await invoker.start()
        finished = asyncio.Event()
        invoker.invoke(time.monotonic(), lambda outcome, *a: (got.append(outcome), finished.set()))
        await asyncio.wait_for(finished.wait(), 25)
        await invoker.close()

    asyncio.run(main())
    assert got == [Outcome.function_error]
    assert any("rc=3" in r.getMessage() and BROKEN_SAYS in r.getMessage() for r in caplog.records)
