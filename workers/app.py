"""The Celery app and the thin ``fnbench.run_shard`` task; ``start_worker`` is `fnbench worker`.

The task decodes the Shard, claims it, and calls ``run_shard`` with a sink and stop flag from
``StoreLink``.  Settings follow DESIGN.md §5: JSON only, acks late, requeue on a lost worker
process, prefetch 1 (a process holds one shard at a time).

Metrics: every pool process forwards its intervals (not requests) over a Unix datagram socket
to the worker's main process, which feeds its IntervalSinks (workers/sinks.py): ``IntervalMetrics``,
serving ``/metrics`` for the whole host, and those named by FNBENCH_SINKS; the hot path never sees
Prometheus.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
import threading
import time
from typing import Any

import orjson
from celery import Celery, signals

from workers import auth, keys, limits, memtrace, once
from workers import sinks as sink_seam
from workers.contract import Interval, Shard
from workers.errors import SetupError
from workers.lifecycle import release_memory
from workers.link import METRICS_SOCK_ENV, StoreLink, client
from workers.shard import report_failed, run_shard

log = logging.getLogger("fnbench.worker")
REGISTRY_PERIOD_S = 2.0
_TASK_KEY: bytes | None = None  # loaded at worker start, inherited by the pool processes
_REGION = ""  # the region this worker serves (set by start_worker)
_EXECUTED: once.Executed | None = None  # the tasks this host executed (workers/once.py)

CONFIG: dict[str, Any] = {
    "task_serializer": "json",
    "accept_content": ["json"],
    "result_serializer": "json",
    "task_ignore_result": True,
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    # After a broker reconnect Celery lowers the prefetch by the tasks then running and restores it only
    # as their acks succeed; with one long shard per process that left a process idle while a shard
    # waited in the queue until it expired (half the next run's load lost).  Each process takes one.
    "worker_enable_prefetch_count_reduction": False,
    "broker_connection_retry_on_startup": True,
    "broker_connection_max_retries": None,  # ride out a Redis restart
    "worker_hijack_root_logger": False,
    "worker_send_task_events": False,
    # Unacked shards come back after this long if their worker vanished; the orchestrator
    # re-dispatches lost shards itself well before, and a late redelivery is ignored (claimed).
    "broker_transport_options": {"visibility_timeout": 3600},
}

app = Celery("fnbench", broker=os.environ.get(keys.BROKER_ENV, "redis://127.0.0.1:6379/0"))
app.conf.update(CONFIG)


@app.task(name=keys.TASK)
def run_shard_task(payload: Any = None, **_: Any) -> str:
    # Nothing of the task is trusted before its signature is checked: no key is written for it.
    try:
        shard_dict = auth.verify(payload, _task_key())
        shard = Shard.from_dict(shard_dict)
        if _REGION and shard.region != _REGION:
            raise auth.TaskRejected(auth.WRONG_REGION, f"the shard is for region {shard.region!r}, this worker "
                                    f"serves {_REGION!r}")
    except auth.TaskRejected as exc:
        return _reject(exc.reason, str(exc), payload)
    except Exception as exc:  # a signed shard of another schema_version or shape
        return _reject(auth.MALFORMED, f"{type(exc).__name__}: {str(exc)[:200]}", payload)
    try:
        first = _executed().first_use(shard)  # remembered on this host: Redis alone cannot undo it
    except (OSError, SetupError) as exc:
        return _reject(auth.REFUSED, f"cannot record the task's execution on this host: {exc}", payload)
    link = StoreLink(app.conf.broker_url, shard, node=_node_name())
    if not link.claim(executed=not first):
        if link.ended:
            log.warning("shard %s#%d of run %s: the run has ended or is not in the store; refusing this "
                        "delivery", shard.shard_id, shard.attempt, shard.run_id)
            return "ignored: the run has ended"
        if link.superseded:
            log.info("shard %s#%d was superseded by a newer attempt; ignoring this delivery", shard.shard_id,
                     shard.attempt)
            return "ignored"
        if link.replayed:
            message = ("this run, shard and attempt was already executed on this worker host, though the store "
                       "has no claim of it (a replay)")
            link.report_rejection(auth.REPLAYED, message)
            return _reject(auth.REPLAYED, message, payload)
        return _reject(auth.REPLAYED, "this run, shard and attempt was already claimed (a redelivery or a replay)",
                       payload)
    refused = limits.refusals(shard)
    if refused:
        error = "refused: " + "; ".join(refused)
        _count(auth.REFUSED)
        log.warning("shard %s#%d of run %s refused: %s", shard.shard_id, shard.attempt, shard.run_id, error)
        # The refusal is also an interval: the result marks the target's group failed, with the reason.
        link.start()
        report_failed(shard, link.sink, f"RefusedError: target {shard.target.name!r}: {error}")
        link.finish("refused", error)
        return "refused"
    link.start()
    state, error = "failed", ""
    try:
        run_shard(shard, link.sink, link.stop)
        state = "superseded" if link.superseded else ("stopped" if link.stop.is_set() else "done")
    except Exception as exc:  # reported in the run's result (errors[]); the shard is not retried
        error = f"{type(exc).__name__}: {exc}"
        log.error("shard %s#%d failed: %s", shard.shard_id, shard.attempt, error)
    finally:
        link.finish(state, error)
        release_memory()  # a pool process runs shard after shard for days (workers/lifecycle.py)
    return state


def _executed() -> once.Executed:
    global _EXECUTED
    if _EXECUTED is None:
        _EXECUTED = once.Executed(once.prepare())
    return _EXECUTED


def _task_key() -> bytes:
    global _TASK_KEY
    if _TASK_KEY is None:
        _TASK_KEY = auth.load_key()
    return _TASK_KEY


def _shown(value: Any) -> str:
    """A value of an unverified task, safe for one log line (bounded, no control characters)."""
    return repr(value)[:80] if isinstance(value, (str, int)) else type(value).__name__


def _count(reason: str, message: str = "", run: Any = None) -> None:
    """Count a rejected task (per reason) and, under this worker's own region, record it with its reason,
    time and the run id it claimed (unverified: data for that run's orchestrator, never a key)."""
    try:
        r = client(app.conf.broker_url)
        pipe = r.pipeline(transaction=False)
        pipe.incr(keys.rejected(reason))
        if _REGION:
            name = keys.region_rejections(_REGION)
            record = {"reason": reason, "message": message[:300], "node": _node_name()[:200], "at": time.time(),
                      "run": run[:80] if isinstance(run, str) else None}
            pipe.rpush(name, orjson.dumps(record))
            pipe.ltrim(name, -keys.REGION_REJECTIONS_KEPT, -1)
            pipe.expire(name, keys.ORPHAN_TTL_S)
        pipe.execute()
    except Exception as exc:  # counting must not turn a rejection into a retry
        log.warning("could not count a rejected task: %s", exc)


def _reject(reason: str, message: str, payload: Any) -> str:
    """Count and log a task that is not run; never shows the key or the signature."""
    shard = payload.get("shard") if isinstance(payload, dict) else None
    shard = shard if isinstance(shard, dict) else {}
    _count(reason, message, shard.get("run_id"))
    log.warning("rejected task (%s): %s; run %s shard %s attempt %s", reason, message, _shown(shard.get("run_id")),
                _shown(shard.get("shard_id")), _shown(shard.get("attempt")))
    return f"rejected: {reason}"


def _node_name() -> str:
    return os.environ.get("FNBENCH_NODE", socket.gethostname())


@signals.worker_process_init.connect
def _pool_process_init(**_: Any) -> None:
    # A pool process must not keep sending load after its worker is gone.
    from workers.lifecycle import die_with_parent, steady_malloc

    die_with_parent()
    steady_malloc()
    memtrace.start("pool")


def _feed_sinks(port: int, sock_path: str) -> None:
    """The main process's IntervalSinks — /metrics when ``port``, plus the configured ones
    (FNBENCH_SINKS) — fed with the intervals every pool process forwards over ``sock_path``."""
    from workers.metrics import IntervalMetrics, serve

    owned: list[sink_seam.IntervalSink] = []
    if port:
        metrics = IntervalMetrics()
        serve(metrics, port, addr=os.environ.get("FNBENCH_METRICS_ADDR", "127.0.0.1"))
        owned.append(metrics)
    sinks = sink_seam.Fanout([*owned, *sink_seam.configured("")], warn=log.warning)
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    receiver.bind(sock_path)

    def receive() -> None:
        while True:
            raw = receiver.recv(1 << 20)
            try:
                interval = Interval.from_json(raw)
            except Exception as exc:  # a bad datagram must not end the metrics of the host
                log.warning("metrics: ignored a record: %s", exc)
                continue
            sinks.add(interval)

    threading.Thread(target=receive, name="fnbench-sinks", daemon=True).start()


def _register(broker: str, registry_key: str, node: str, record: dict[str, Any]) -> None:
    def beat() -> None:
        while True:
            try:
                client(broker).hset(registry_key, node, orjson.dumps({**record, "seen": time.time()}))
            except Exception as exc:
                log.warning("registry: %s", exc)
            time.sleep(REGISTRY_PERIOD_S)

    threading.Thread(target=beat, name="fnbench-registry", daemon=True).start()


def start_worker(region: str, queue: str, broker: str, concurrency: int, metrics_port: int,
                 registry_key: str, loglevel: str = "WARNING") -> None:
    """Run a Celery worker for one region in the foreground (prefork, ``concurrency`` processes).

    SetupError before anything starts when there is no task key or a limit is badly set."""
    global _TASK_KEY, _REGION
    _TASK_KEY = auth.load_key()
    os.environ[once.STATE_DIR_ENV] = str(once.prepare())  # SetupError now, not at the first task
    for line in limits.check_config():
        print(f"fnbench worker {region}: {line}", file=sys.stderr)
    _REGION = region
    memtrace.start("main")
    node = f"fnbench-{region}-{os.getpid()}@{socket.gethostname()}"
    os.environ["FNBENCH_NODE"] = node
    app.conf.broker_url = broker
    if metrics_port or os.environ.get(sink_seam.SINKS_ENV):
        sock_dir = tempfile.mkdtemp(prefix="fnbench-metrics-")
        sock_path = os.path.join(sock_dir, "intervals.sock")
        try:
            _feed_sinks(metrics_port, sock_path)
        except OSError as exc:
            raise SetupError(f"--metrics-port {metrics_port}: cannot serve /metrics ({exc.strerror}); "
                             "choose another port or 0 for none") from None
        os.environ[METRICS_SOCK_ENV] = sock_path  # inherited by the pool processes
    _register(broker, registry_key, node,
              {"region": region, "concurrency": concurrency, "metrics_port": metrics_port, "pid": os.getpid()})
    app.worker_main([
        "worker", "--pool", "prefork", "--concurrency", str(concurrency), "--queues", queue,
        "--hostname", node, "--loglevel", loglevel, "--without-gossip", "--without-mingle", "--without-heartbeat",
    ])
