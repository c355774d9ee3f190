"""The local platform: benchmark functions run as processes on this machine.

Warm: N instances start on loopback ports they pick themselves and report once they listen
(``workers.functions.start_function``: no port is chosen here and released for a child to
bind, so none can be taken in between), and requests
are spread round-robin over one HTTP invoker per instance.  Cold: every invocation spawns a
fresh process and measures spawn → first response (service time) next to the function's own
``init_ms`` (init histogram).  Cold starts counted = processes spawned.

What runs is this worker's own build of the function (``workers.functions.artifact_for``
of the target's runtime); a task names a runtime and a workload, never a command.  A runtime
outside RUNTIMES or a workload outside WORKLOADS is refused before anything starts, and of
the task's ``address`` only ``instances`` is read (capped); ``command``/``env``/``cwd`` there
are ignored.

A function that exits or does not listen in time is a SetupError (warm) or an outcome (cold:
``function_error`` or ``timeout``) whose message says which: its exit code after how long and the
tail of its output, or alive and not listening.  The WebAssembly host (rust-wasm, rust-wasm-reuse)
answers 500 exactly when its module failed (a trap, its deadline, its memory limit) and serves
on: that is a ``function_error`` too, as a crashed process would be.

Spawning, waiting until the process listens, and reaping (fork/exec, connect polls, kill,
wait, /proc reads) run on a pool of threads, never on the event loop that other shards'
targets share, so a cold start does not delay another target's due requests; the loop only
sends the one request.  Functions are spawned without a ``preexec_fn``, so CPython uses
vfork() and releases the GIL while the child execs (a preexec_fn forces fork() with the GIL
held: the loop would stall for the page-table copy of the whole worker).

No orphans: each function runs in its own session, and a guardian process (one per worker
process) is told every session it starts; when the worker dies, however it dies (SIGKILL
included), the guardian's stdin reaches EOF and it kills those sessions.  ``close()`` kills
whatever is still running in the ordinary case.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httptools
import orjson
from pydantic import BaseModel, Field

from workers.contract import Outcome, Target
from workers.errors import RefusedError, SetupError
from workers.functions import (
    RUNTIMES,
    WASM_MODES,
    WORKLOADS,
    Artifact,
    NotListening,
    Started,
    artifact_for,
    start_function,
    wait_port,
)
from workers.platforms import Done, Invocation, Platform, counters_of
from workers.platforms.http import HttpInvoker, encode_request, outcome_for_status, outcome_table

log = logging.getLogger("fnbench.local")

_READY_TIMEOUT_S = 30.0
MAX_INSTANCES = 256  # warm processes one target may ask for (TargetFields below allows the same)
ADDRESS_KEYS = frozenset({"instances"})  # all a task may say about a local function
_SPAWN_THREADS = 16  # each holds one cold start from spawn until it listens
_monotonic = time.monotonic


# ------------------------------------------------------------------ the function to run


@functools.cache
def _artifact(runtime: str) -> Artifact:
    return artifact_for(runtime)


def function_for(target: Target) -> Artifact:
    """This worker's build of the target's function; RefusedError for what it does not build,
    SetupError when it is not built here."""
    where = f"target {target.name!r}"
    if target.runtime not in RUNTIMES:
        raise RefusedError(f"{where}: the local platform runs {', '.join(RUNTIMES)}, not {target.runtime!r}")
    if target.workload not in WORKLOADS:
        raise RefusedError(f"{where}: the local functions serve {', '.join(WORKLOADS)}, not {target.workload!r}")
    ignored = sorted(set(target.address) - ADDRESS_KEYS)
    if ignored:
        log.warning("%s: address %s ignored: a worker runs its own build of the function", where, ", ".join(ignored))
    try:
        return _artifact(target.runtime)
    except FileNotFoundError as exc:
        raise SetupError(f"{where}: {exc} on this worker; build it with `fnbench functions build`") from None


def instance_count(target: Target) -> int:
    raw = target.address.get("instances", 1)
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise RefusedError(f"target {target.name!r}: address.instances must be a whole number, got {raw!r}")
    try:
        count = int(raw)
    except ValueError:
        raise RefusedError(f"target {target.name!r}: address.instances must be a whole number, got {raw!r}") from None
    return min(max(1, count), MAX_INSTANCES)


# ------------------------------------------------------------------ processes (off the loop)

_spawner: ThreadPoolExecutor | None = None
_spawner_lock = threading.Lock()


def spawner() -> ThreadPoolExecutor:
    """Threads that spawn, kill and reap function processes for this worker process."""
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = ThreadPoolExecutor(_SPAWN_THREADS, thread_name_prefix="fnbench-spawn")
        return _spawner


# Reads "+pgid"/"-pgid" lines; at EOF (the worker is gone) kills every session still listed.
_GUARDIAN = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
groups = set()
for line in sys.stdin.buffer:
    n = int(line)
    if n > 0:
        groups.add(n)
    else:
        groups.discard(-n)
for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
"""


class Guardian:
    """The process that kills this worker's function sessions when the worker dies."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc: subprocess.Popen[bytes] | None = None
        self.owner = 0

    def start(self) -> None:
        """Start the guardian ahead of the first spawn (so no cold start waits for it)."""
        with self.lock:
            self._running()

    def watch(self, pgid: int) -> None:
        with self.lock:
            self._write(self._running(), pgid)

    def forget(self, pgid: int) -> None:
        with self.lock:
            if self.proc is not None and self.owner == os.getpid():
                self._write(self.proc, -pgid)

    def _running(self) -> subprocess.Popen[bytes]:
        if self.proc is None or self.owner != os.getpid() or self.proc.poll() is not None:
            self.owner = os.getpid()
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _GUARDIAN, "fnbench-guardian"], stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )
        return self.proc

    @staticmethod
    def _write(proc: subprocess.Popen[bytes], n: int) -> None:
        assert proc.stdin is not None
        with contextlib.suppress(OSError):
            proc.stdin.write(b"%d\n" % n)
            proc.stdin.flush()


guardian = Guardian()


_LAUNCH: dict[tuple[str, str], tuple[dict[str, str], str]] = {}


def _launch(artifact: Artifact) -> tuple[dict[str, str], str]:
    """The environment and directory of the artefact's processes, worked out once: each spawn
    holds the GIL as briefly as it can."""
    key = (artifact.runtime, str(artifact.path))
    if key not in _LAUNCH:
        env = {k: v for k, v in os.environ.items() if k != "AWS_LAMBDA_RUNTIME_API"}
        env.update(artifact.env)
        env["HOST"] = "127.0.0.1"
        _LAUNCH[key] = (env, str(artifact.cwd))
    return _LAUNCH[key]


def spawn(artifact: Artifact) -> Started:
    """Start the built function's HTTP server on 127.0.0.1 in its own session, on a port it picks
    and reports (workers.functions.start_function), watched by the guardian (blocking: call it
    off the loop)."""
    base, cwd = _launch(artifact)
    started = start_function(artifact.command, base, cwd)
    guardian.watch(started.proc.pid)  # its session id is its pid
    return started


def _name(artifact: Artifact) -> str:
    return f"the {artifact.runtime} function ({artifact.command[0]})"


def listen(artifact: Artifact, deadline: float, closing: threading.Event,
           procs: Callable[[subprocess.Popen[bytes]], object]) -> tuple[subprocess.Popen[bytes], int]:
    """Spawn the function and wait until it listens; ``procs`` records the process the moment it
    exists (so close() finds it even after a cancel).  Returns it and its port; NotListening says
    what happened otherwise (blocking: off the loop)."""
    started = spawn(artifact)
    procs(started.proc)
    try:
        return started.proc, wait_port(started, deadline, closing, _name(artifact))
    finally:
        started.close()


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
    guardian.forget(proc.pid)


def peak_of(procs: list[subprocess.Popen[bytes]]) -> float:
    return max((peak_rss_mb(p.pid) for p in procs), default=0.0)


def reap(procs: list[subprocess.Popen[bytes]]) -> float:
    """Kill and wait for processes; returns their largest peak RSS in MiB (blocking)."""
    peak = peak_of(procs)
    for proc in procs:
        kill(proc)
    return peak


async def off_loop(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking process call on the spawner threads; it completes even if the awaiting
    task is cancelled (a spawned process is always recorded, a reap always finishes)."""
    return await asyncio.shield(asyncio.get_running_loop().run_in_executor(spawner(), fn, *args))


# The wasm host's 500: its module trapped, ran past its deadline or out of memory (a function error).
_WASM_OUTCOMES = tuple(Outcome.function_error if status == 500 else o for status, o in enumerate(outcome_table()))


def outcomes_of(runtime: str) -> tuple[Outcome, ...] | None:
    """The status → outcome table of a runtime whose statuses mean more than HTTP's (None: HTTP's)."""
    return _WASM_OUTCOMES if runtime in WASM_MODES else None


def _url(target: Target, port: int) -> str:
    return f"http://127.0.0.1:{port}/{target.workload}"


# ------------------------------------------------------------------ warm


class _Instances:
    """Warm processes of one function, shared by every shard of that target in this worker
    process (so the warm-up shard warms the very processes the measured shards use)."""

    def __init__(self, key: tuple[str, str], target: Target, artifact: Artifact, count: int) -> None:
        self.key = key
        self.target = target
        self.artifact = artifact
        self.count = count
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []
        self.users = 0
        self.ready: asyncio.Future[None] | None = None
        self.closing = threading.Event()

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

    def _spawn_listening(self) -> int:
        _, port = listen(self.artifact, _monotonic() + _READY_TIMEOUT_S, self.closing, self.procs.append)
        return port

    async def _start(self) -> None:
        await off_loop(guardian.start)
        for _ in range(self.count):
            try:
                port = await off_loop(self._spawn_listening)
            except NotListening as exc:
                raise SetupError(f"target {self.target.name!r}: {exc}") from None
            except OSError as exc:
                raise SetupError(f"target {self.target.name!r}: could not start {self.artifact.command[0]}: {exc}") from None
            self.ports.append(port)

    async def release(self) -> float:
        """Drop one user; the last one stops the processes.  Returns their peak RSS in MiB."""
        self.users -= 1
        procs = list(self.procs)
        if self.users > 0:
            return float(await off_loop(peak_of, procs))
        _INSTANCES.pop(self.key, None)
        self.closing.set()
        return float(await off_loop(reap, procs))


_INSTANCES: dict[tuple[str, str], _Instances] = {}


class LocalWarmInvoker:
    """Requests go round-robin over the connection pools of the target's warm instances."""

    def __init__(self, target: Target, artifact: Artifact, count: int) -> None:
        self.target = target
        key = (target.name, target.runtime)
        self.instances = _INSTANCES.setdefault(key, _Instances(key, target, artifact, count))
        self.pools: list[HttpInvoker] = []
        self.next = 0
        self.peak_memory_mb = 0.0

    async def start(self) -> None:
        ports = await self.instances.acquire()
        for port in ports:
            http_target = dataclasses.replace(self.target, platform="http", url=_url(self.target, port), address={})
            pool = HttpInvoker(http_target)
            table = outcomes_of(self.target.runtime)
            if table is not None:
                pool.outcomes = table  # before start(): its connections copy it
            await pool.start()
            self.pools.append(pool)

    def invoke(self, due: float, done: Done) -> None:
        pools = self.pools
        self.next = (self.next + 1) % len(pools)
        pools[self.next].invoke(due, done)

    def counters(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for pool in self.pools:
            for name, value in counters_of(pool).items():
                total[name] = total.get(name, 0.0) + value
        if self.peak_memory_mb:
            total["max_memory_mb"] = self.peak_memory_mb  # known once closed
        return total

    async def close(self) -> None:
        for pool in self.pools:
            await pool.close()
        self.peak_memory_mb = max(self.peak_memory_mb, await self.instances.release())


# ------------------------------------------------------------------ cold


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


def _init_us(body: bytes) -> int:
    """The function's own ``init_ms`` in µs; -1 when the response does not carry it."""
    try:
        envelope: Any = orjson.loads(body)
        return int(float(envelope["init_ms"]) * 1000)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return -1


class LocalColdInvoker:
    """Every invocation is a cold start: spawn, wait until it listens, send, record, kill."""

    def __init__(self, target: Target, artifact: Artifact) -> None:
        self.target = target
        self.artifact = artifact
        self.tasks: set[asyncio.Task[None]] = set()
        self.procs: set[subprocess.Popen[bytes]] = set()
        self.spawning: set[asyncio.Future[Any]] = set()
        self.closing = threading.Event()
        self.told = False  # the first start that failed is logged with its reason

    async def start(self) -> None:
        await off_loop(guardian.start)

    def invoke(self, due: float, done: Done) -> None:
        task = asyncio.get_running_loop().create_task(self._cold(due, done))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def counters(self) -> dict[str, float]:
        return {}

    def _spawn_listening(self, deadline: float) -> tuple[subprocess.Popen[bytes], int | NotListening]:
        proc: list[subprocess.Popen[bytes]] = []

        def record(p: subprocess.Popen[bytes]) -> None:
            proc.append(p)
            self.procs.add(p)

        try:
            return listen(self.artifact, deadline, self.closing, record)
        except NotListening as exc:
            return proc[0], exc

    async def _cold(self, due: float, done: Done) -> None:
        loop = asyncio.get_running_loop()
        sent = _monotonic()
        deadline = sent + self.target.timeout_s
        spawning = loop.run_in_executor(spawner(), self._spawn_listening, deadline)
        self.spawning.add(spawning)
        spawning.add_done_callback(self.spawning.discard)
        try:
            proc, port = await asyncio.shield(spawning)
        except OSError:  # the build on this worker cannot be executed
            done(Outcome.function_error, due, sent, _monotonic())
            return
        except asyncio.CancelledError:  # closing: the process, once spawned, is killed by close()
            done(Outcome.other, due, sent, _monotonic(), Invocation(cold=True))
            raise
        outcome = Outcome.other
        init_us = -1
        try:
            if isinstance(port, NotListening):
                outcome = Outcome.function_error if port.exited else Outcome.timeout
                if not self.told and not self.closing.is_set():
                    self.told = True
                    log.warning("target %r: a cold start failed: %s", self.target.name, port)
                return
            payload, *_ = encode_request(dataclasses.replace(self.target, url=_url(self.target, port)))
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
            table = outcomes_of(self.target.runtime)
            outcome = outcome_for_status(status, table) if table else outcome_for_status(status)
            if outcome == Outcome.ok:
                init_us = _init_us(body)
        except OSError:
            outcome = Outcome.connect_error
        finally:
            end = _monotonic()
            memory_mb = 0.0
            try:
                memory_mb = await off_loop(reap, [proc])
            finally:
                self.procs.discard(proc)
                done(outcome, due, sent, end, Invocation(cold=True, init_us=init_us, memory_mb=memory_mb))

    async def close(self) -> None:
        self.closing.set()  # readiness waits on the spawner threads give up
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.spawning:  # spawns already handed to a thread finish, and are killed below
            await asyncio.gather(*self.spawning, return_exceptions=True)
        if self.procs:
            await off_loop(reap, list(self.procs))
        self.procs.clear()


def make_invoker(target: Target, phase: str, max_in_flight: int) -> LocalWarmInvoker | LocalColdInvoker:
    """The ``local`` platform's factory; refuses before anything starts."""
    artifact = function_for(target)
    if phase == "cold":
        return LocalColdInvoker(target, artifact)
    return LocalWarmInvoker(target, artifact, instance_count(target))


# ------------------------------------------------------------------ the platform's declaration


class TargetFields(BaseModel):
    """What a spec's target says about a local function beyond its runtime and workload."""

    instances: int = Field(default=1, ge=1, le=MAX_INSTANCES)  # warm processes to spread requests over


def target_problems(t: Any, cold_start: bool) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if t.runtime not in RUNTIMES:
        problems.append(("runtime", f"the local platform runs {', '.join(RUNTIMES)}, not {t.runtime!r}"))
    if t.workload not in WORKLOADS:
        problems.append(("workload", f"one of {', '.join(WORKLOADS)} (functions/CONTRACT.md), got {t.workload!r}"))
    return problems


def target_address(t: Any) -> dict[str, Any]:
    return {"instances": t.instances}  # the only thing a task says about a local function


# No refusals: the worker starts its own function processes on 127.0.0.1 (only the rate limits apply).
PLATFORM = Platform("local", make_invoker, fields=TargetFields, problems=target_problems, address=target_address,
                    cold_starts=True)
