"""The local platform: benchmark functions run as processes on this machine.

Warm: N instances start on ephemeral loopback ports, readiness is awaited, and requests
are spread round-robin over one HTTP invoker per instance.  Cold: every invocation spawns a
fresh process and measures spawn → first response (service time) next to the function's own
``init_ms`` (init histogram).  Cold starts counted = processes spawned.

No orphans: every function process gets PR_SET_PDEATHSIG=SIGKILL (it dies with the worker
even when the worker is SIGKILLed), and ``close()`` kills whatever is still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import time
from typing import Any

import httptools
import orjson

from workers.contract import Outcome, Target
from workers.errors import SetupError
from workers.lifecycle import die_with_parent
from workers.platforms import Done
from workers.platforms.http import HttpInvoker, encode_request, outcome_for_status
from workers.recorder import ShardRecorder
from workers.timer import Waker

_READY_TIMEOUT_S = 30.0
_monotonic = time.monotonic


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(target: Target, port: int) -> subprocess.Popen[bytes]:
    command = target.address.get("command")
    if not command:
        raise SetupError(f"target {target.name!r}: the local platform needs a built function (fnbench functions build)")
    env = {k: v for k, v in os.environ.items() if k != "AWS_LAMBDA_RUNTIME_API"}
    env.update(target.address.get("env") or {})
    env.update({"PORT": str(port), "HOST": "127.0.0.1"})
    return subprocess.Popen(
        command, env=env, cwd=target.address.get("cwd") or None, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent, start_new_session=True,
    )


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a live process, in MiB; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _url(target: Target, port: int) -> str:
    return f"http://127.0.0.1:{port}/{target.workload}"


async def _wait_accepting(port: int, proc: subprocess.Popen[bytes], deadline: float, waker: Waker) -> bool:
    """Poll connect() every ~200 µs until the process listens; False if it exits or times out."""
    while _monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await waker.until(_monotonic() + 0.0002)
            continue
        writer.close()
        return True
    return False


class _Instances:
    """Warm processes of one function, shared by every shard of that target in this worker
    process (so the warm-up shard warms the very processes the measured shards use)."""

    def __init__(self, target: Target, count: int) -> None:
        self.target = target
        self.count = count
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []
        self.users = 0
        self.ready: asyncio.Future[None] | None = None

    async def acquire(self) -> list[int]:
        self.users += 1
        if self.ready is None:
            self.ready = asyncio.get_running_loop().create_future()
            try:
                await self._start()
                self.ready.set_result(None)
            except BaseException as exc:
                self.ready.set_exception(exc)
                self.ready.exception()  # retrieved here; raised below and in later waiters
                raise
        await asyncio.shield(self.ready)
        return self.ports

    async def _start(self) -> None:
        waker = Waker()
        try:
            for _ in range(self.count):
                port = free_port()
                proc = spawn(self.target, port)
                self.procs.append(proc)
                if not await _wait_accepting(port, proc, _monotonic() + _READY_TIMEOUT_S, waker):
                    raise SetupError(f"target {self.target.name!r}: {self.target.address['command'][0]} "
                                     f"did not listen on 127.0.0.1:{port} within {_READY_TIMEOUT_S:.0f}s")
                self.ports.append(port)
        finally:
            waker.close()

    def release(self) -> float:
        """Drop one user; the last one stops the processes.  Returns their peak RSS in MiB."""
        self.users -= 1
        peak = max((peak_rss_mb(p.pid) for p in self.procs), default=0.0)
        if self.users <= 0:
            for proc in self.procs:
                kill(proc)
            _INSTANCES.pop(self.target.name, None)
        return peak


_INSTANCES: dict[str, _Instances] = {}


class LocalWarmInvoker:
    """Requests go round-robin over the connection pools of the target's warm instances."""

    def __init__(self, target: Target, max_in_flight: int, recorder: ShardRecorder) -> None:
        self.target = target
        self.max_in_flight = max_in_flight
        self.recorder = recorder
        count = max(1, int(target.address.get("instances", 1)))
        self.instances = _INSTANCES.setdefault(target.name, _Instances(target, count))
        self.pools: list[HttpInvoker] = []
        self.next = 0

    async def start(self) -> None:
        ports = await self.instances.acquire()
        for port in ports:
            http_target = dataclasses.replace(self.target, platform="http", url=_url(self.target, port))
            pool = HttpInvoker(http_target, max(1, self.max_in_flight // len(ports)))
            await pool.start()
            self.pools.append(pool)

    def invoke(self, due: float, done: Done) -> None:
        pools = self.pools
        self.next = (self.next + 1) % len(pools)
        pools[self.next].invoke(due, done)

    async def close(self) -> None:
        for pool in self.pools:
            await pool.close()
        self.recorder.peak_rss_mb = max(self.recorder.peak_rss_mb, self.instances.release())


class _OneShot(asyncio.Protocol):
    """One request on one connection: collects status and body."""

    def __init__(self, finished: asyncio.Future[tuple[int, bytes]]) -> None:
        self.finished = finished
        self.parser = httptools.HttpResponseParser(self)
        self.body = bytearray()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if not self.finished.done():
                self.finished.set_exception(exc)

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        if not self.finished.done():
            self.finished.set_result((self.parser.get_status_code(), bytes(self.body)))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished.done():
            self.finished.set_exception(ConnectionResetError("closed before the response"))


class LocalColdInvoker:
    """Every invocation is a cold start: spawn, wait until it listens, send, record, kill."""

    def __init__(self, target: Target, recorder: ShardRecorder) -> None:
        self.target = target
        self.recorder = recorder
        self.tasks: set[asyncio.Task[None]] = set()
        self.procs: set[subprocess.Popen[bytes]] = set()
        self.waker: Waker | None = None

    async def start(self) -> None:
        self.waker = Waker()

    def invoke(self, due: float, done: Done) -> None:
        task = asyncio.get_running_loop().create_task(self._cold(due, done))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _cold(self, due: float, done: Done) -> None:
        assert self.waker is not None
        port = free_port()
        sent = _monotonic()
        proc = spawn(self.target, port)
        self.procs.add(proc)
        self.recorder.cold_starts += 1
        outcome = Outcome.other
        try:
            deadline = sent + self.target.timeout_s
            if not await _wait_accepting(port, proc, deadline, self.waker):
                outcome = Outcome.timeout if proc.poll() is None else Outcome.function_error
                return
            payload, *_ = encode_request(dataclasses.replace(self.target, url=_url(self.target, port)))
            loop = asyncio.get_running_loop()
            finished: asyncio.Future[tuple[int, bytes]] = loop.create_future()
            transport, _ = await loop.create_connection(lambda: _OneShot(finished), "127.0.0.1", port)
            transport.write(payload)
            try:
                status, body = await asyncio.wait_for(finished, max(deadline - _monotonic(), 0.001))
            except TimeoutError:
                outcome = Outcome.timeout
                return
            finally:
                transport.abort()
            outcome = outcome_for_status(status)
            if outcome == Outcome.ok:
                self._record_init(body)
        except OSError:
            outcome = Outcome.connect_error
        finally:
            end = _monotonic()
            self.recorder.peak_rss_mb = max(self.recorder.peak_rss_mb, peak_rss_mb(proc.pid))
            kill(proc)
            self.procs.discard(proc)
            done(outcome, due, sent, end)

    def _record_init(self, body: bytes) -> None:
        try:
            envelope: Any = orjson.loads(body)
            init_ms = float(envelope["init_ms"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return
        self.recorder.init.append(int(init_ms * 1000))

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        for proc in list(self.procs):
            kill(proc)
        self.procs.clear()
        if self.waker is not None:
            self.waker.close()


def make_local_invoker(target: Target, phase: str, max_in_flight: int, recorder: ShardRecorder) -> LocalWarmInvoker | LocalColdInvoker:
    if phase == "cold":
        return LocalColdInvoker(target, recorder)
    return LocalWarmInvoker(target, max_in_flight, recorder)
