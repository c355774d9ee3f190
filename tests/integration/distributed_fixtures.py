"""Real servers for the distributed tests: redis-server (AOF on), `fnbench worker` processes, Prometheus.

Nothing is mocked.  Without redis-server the tests skip locally and fail under CI.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
import redis

from tests.servers import GroupLeader, free_port, need, wait_for
from workers import keys

ROOT = Path(__file__).resolve().parents[2]
FNBENCH = [sys.executable, "-m", "orchestrator.cli"]








class RedisServer:
    """redis-server on a free loopback port with persistence on; ``restart()`` keeps port and data.
    With ``persist=False`` (no AOF, no snapshots) a restart keeps the port and loses every key."""

    def __init__(self, directory: Path, persist: bool = True) -> None:
        self.dir = directory
        self.persist = persist
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             *(["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"]),
             "--save", "", "--protected-mode", "yes",
             "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_for(up, 10, "redis-server ready")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # SHUTDOWN: the AOF is fsynced
            self.proc.wait(10)
            self.proc = None

    def restart(self, down_s: float = 0.5) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


@dataclass
class Worker(GroupLeader):
    region: str
    proc: subprocess.Popen
    metrics_port: int = 0
    log: Path | None = None


@dataclass
class Cluster:
    redis: RedisServer
    tmp: Path
    workers: list[Worker] = field(default_factory=list)
    # The shared task key (workers/auth.py): orchestrator and workers of this cluster sign/verify with it.
    task_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @property
    def broker(self) -> str:
        return self.redis.url

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**os.environ, "FNBENCH_BROKER": self.broker, "FNBENCH_GRAFANA_URL": "",
                "FNBENCH_TASK_KEY": self.task_key,
                # The workers' record of executed tasks (workers/once.py): this cluster's own.
                "FNBENCH_STATE_DIR": str(self.tmp / "state"), **(extra or {})}

    def start_worker(self, region: str, concurrency: int = 1, metrics_port: int = 0,
                     extra_env: dict[str, str] | None = None) -> Worker:
        log = self.tmp / f"worker-{region}-{len(self.workers)}.log"
        proc = subprocess.Popen(
            [*FNBENCH, "worker", "--region", region, "--concurrency", str(concurrency),
             "--metrics-port", str(metrics_port), "--loglevel", "INFO"],
            cwd=ROOT, env=self.env(extra_env), stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        w = Worker(region, proc, metrics_port, log)
        self.workers.append(w)
        return w

    def wait_registered(self, nodes: int, timeout_s: float = 30) -> None:
        client = self.redis.client()

        def registered() -> bool:
            now = time.time()
            seen = [orjson.loads(v) for v in client.hgetall(keys.WORKERS).values()]
            pids = {w.proc.pid for w in self.workers if w.proc.poll() is None}
            return sum(1 for s in seen if s["pid"] in pids and now - s["seen"] < 5) >= nodes

        wait_for(registered, timeout_s, f"{nodes} worker(s) registered")

    def fnbench(self, *args: str, timeout: float = 90,
                extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([*FNBENCH, *args], capture_output=True, text=True, cwd=ROOT, env=self.env(extra_env),
                              timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([*FNBENCH, *args], cwd=ROOT, env=self.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def shutdown(self) -> None:
        for w in self.workers:
            w.stop()


@pytest.fixture(scope="module", name="cluster")
def cluster_fixture(tmp_path_factory) -> Iterator[Cluster]:
    """A Redis server and two one-process workers, regions ``a`` and ``b`` (``a`` serves /metrics)."""
    need(shutil.which("redis-server") is not None, "redis-server not installed (apt install redis-server)")
    tmp = tmp_path_factory.mktemp("distributed")
    server = RedisServer(tmp)
    server.start()
    c = Cluster(server, tmp)
    try:
        c.start_worker("a", metrics_port=free_port())
        c.start_worker("b")
        c.wait_registered(2)
        yield c
    finally:
        c.shutdown()
        server.stop()


def write_spec(path: Path, url: str, regions: str = "[a, b]", rps: int = 100, duration: str = "4s",
               flush: str = "1s", name: str = "dist", extra: str = "") -> Path:
    path.write_text(
        f"name: {name}\nregions: {regions}\n"
        f"targets:\n  - {{name: t, runtime: rust, url: '{url}', method: GET, timeout: 2s}}\n"
        f"load: {{executor: constant, rps: {rps}}}\nduration: {duration}\nflush_interval: {flush}\n{extra}"
    )
    return path


def run_json(r: subprocess.CompletedProcess) -> dict:
    assert r.returncode == 0, r.stderr[-4000:]
    return orjson.loads(r.stdout)

