"""A running shard's line to the store: interval sink, heartbeats and the stop flag, on one thread.

The shard loop only appends encoded intervals to a bounded in-memory buffer (never blocks on
Redis).  A control thread, every 200 ms, XADDs what is buffered, beats once a second, and reads
the run's stop key and the shard's current attempt (a re-dispatched attempt supersedes this
one).  While Redis is unreachable the buffer holds up to ``BUFFER_MAX`` intervals (the oldest
are dropped and counted past that) and the thread retries with exponential backoff.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections import deque
from typing import Any

import orjson
import redis

from workers import keys
from workers.contract import Interval, Shard

log = logging.getLogger("fnbench.worker")

POLL_S = 0.2
BEAT_S = 1.0
BUFFER_MAX = 10_000
BACKOFF_MAX_S = 2.0
FINAL_FLUSH_S = 120.0  # how long a finished shard keeps retrying to deliver its last intervals
METRICS_SOCK_ENV = "FNBENCH_METRICS_SOCK"
REJECTIONS_KEPT = 1000  # a run's list of rejected deliveries keeps the latest this many

_clients: dict[tuple[int, str], Any] = {}


def client(url: str) -> Any:  # redis-py types replies as sync | awaitable; this client is sync
    """One Redis client per process and URL (created after fork, never inherited)."""
    key = (os.getpid(), url)
    if key not in _clients:
        _clients[key] = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0,
                                             health_check_interval=10)
    return _clients[key]


class _MetricsForward:
    """Hands each interval to the host's metrics server over a Unix datagram socket (best effort)."""

    def __init__(self) -> None:
        self.path = os.environ.get(METRICS_SOCK_ENV, "")
        self.sock: socket.socket | None = None
        if self.path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.setblocking(False)

    def send(self, raw: bytes) -> None:
        if self.sock is not None:
            # Metrics are a live view; the stream is the record: a full socket drops the datagram.
            with contextlib.suppress(OSError):
                self.sock.sendto(raw, self.path)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


class _Stop(threading.Event):
    """The shard's stop flag; ``recheck()`` asks the store now (after a stall) instead of waiting for
    the control thread's next exchange."""

    def __init__(self, link: StoreLink) -> None:
        super().__init__()
        self._link = link

    def recheck(self) -> bool:
        self._link.recheck()
        return self.is_set()


class StoreLink:
    def __init__(self, url: str, shard: Shard, node: str = "") -> None:
        self.redis = client(url)
        # Every key comes from keys.py and the run id, never from the task.
        run = shard.run_id
        self.keys = {"claims": keys.claims(run), "attempts": keys.attempts(run), "stop": keys.stop(run),
                     "beats": keys.beats(run), "intervals": keys.intervals(run), "run": keys.run(run),
                     "rejections": keys.rejections(run)}
        self.shard = shard
        self.field = keys.attempt_field(shard.shard_id, shard.attempt)
        self.node = node or socket.gethostname()
        self.buffer: deque[bytes] = deque()
        self.dropped = 0
        self.stop = _Stop(self)
        self.superseded = False
        self.ended = False  # the run was over (finished or stopped) when this delivery came
        self.replayed = False  # executed on this host before, and the store has no claim of it
        self._expiry_set = False
        self._done = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fnbench-link", daemon=True)
        self._metrics = _MetricsForward()

    # -- called by the task ----------------------------------------------------------------
    def claim(self, executed: bool = False) -> bool:
        """Claim this (shard, attempt); False when a delivery of it was already claimed or superseded, or
        when this host already ``executed`` it (``replayed``: whatever the store says)."""
        state = self.redis.hget(self.keys["run"], "state")
        if state is None or orjson.loads(state) != "running":
            # A run ends once: a delivery after its end (a stale redelivery), or for a run the store does
            # not know (expired, removed by `fnbench gc`), must not add load or data.
            self.ended = True
            return False
        value = orjson.dumps({"state": "running", "node": self.node, "pid": os.getpid(), "at": time.time()})
        pipe = self.redis.pipeline(transaction=False)
        if executed:
            pipe.hexists(self.keys["claims"], self.field)  # claims nothing: it only tells a redelivery
        else:
            pipe.hsetnx(self.keys["claims"], self.field, value)
        pipe.hget(self.keys["attempts"], self.shard.shard_id)
        pipe.exists(self.keys["stop"])
        pipe.expire(self.keys["claims"], keys.ORPHAN_TTL_S, nx=True)
        claimed, current, stopped, _ = pipe.execute()
        if current is not None and int(current) != self.shard.attempt:
            self.superseded = True  # an older attempt: not a replay, just too late
            return False
        if executed:
            # Run here before.  With its claim in the store this is a redelivery (or a replay of one);
            # without it, the claim was removed: a replay.  Neither runs again.
            self.replayed = not claimed
            return False
        if not claimed:
            return False  # this (run, shard, attempt) was seen before: a redelivery or a replay
        if stopped:
            self.stop.set()
        self.redis.hset(self.keys["beats"], self.field, time.time())
        return True

    def report_rejection(self, reason: str, message: str) -> None:
        """Tell the run's orchestrator that a delivery of this (verified) task was not run."""
        record = orjson.dumps({"field": self.field, "reason": reason, "message": message, "node": self.node,
                               "at": time.time()})
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.rpush(self.keys["rejections"], record)
            pipe.ltrim(self.keys["rejections"], -REJECTIONS_KEPT, -1)
            pipe.expire(self.keys["rejections"], keys.ORPHAN_TTL_S, nx=True)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("shard %s: could not report a rejected delivery: %s", self.field, exc)

    def start(self) -> None:
        self._thread.start()

    def recheck(self) -> None:
        """Read the stop key and the shard's current attempt now (one round trip, the client's timeouts):
        a shard that was frozen asks before it sends again.  Unreachable: it runs on (the control thread
        keeps asking)."""
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.exists(self.keys["stop"])
            pipe.hget(self.keys["attempts"], self.shard.shard_id)
            stopped, current = pipe.execute()
        except redis.RedisError as exc:
            log.warning("shard %s: could not check whether it was superseded: %s", self.field, exc)
            return
        self._learn(stopped, current)

    def refuse(self, error: str) -> None:
        """Record that this worker refused the claimed shard (operator limits); it is not run."""
        record = {"state": "refused", "node": self.node, "pid": os.getpid(), "at": time.time(), "error": error}
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(self.keys["claims"], self.field, orjson.dumps(record))
        pipe.hdel(self.keys["beats"], self.field)
        pipe.execute()
        self._metrics.close()

    def sink(self, iv: Interval) -> None:
        raw = iv.to_json()
        if len(self.buffer) >= BUFFER_MAX:
            self.buffer.popleft()
            self.dropped += 1
        self.buffer.append(raw)
        self._metrics.send(raw)
        self._wake.set()

    def finish(self, state: str, error: str = "") -> None:
        """Deliver what is buffered (bounded wait), then record the shard's end state."""
        self._done.set()
        self._wake.set()
        self._thread.join(FINAL_FLUSH_S + 5)
        if self.buffer or self.dropped:
            log.error("shard %s: %d interval(s) undelivered, %d dropped while Redis was unreachable",
                      self.field, len(self.buffer), self.dropped)
        try:
            record = {"state": state, "node": self.node, "pid": os.getpid(), "at": time.time()}
            if error:
                record["error"] = error
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(self.keys["claims"], self.field, orjson.dumps(record))
            pipe.hdel(self.keys["beats"], self.field)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("shard %s: could not record its end state: %s", self.field, exc)
        self._metrics.close()

    # -- the control thread ------------------------------------------------------------------
    def _loop(self) -> None:
        backoff = POLL_S
        next_beat = 0.0
        deadline: float | None = None
        while True:
            done = self._done.is_set()
            if done and deadline is None:
                deadline = time.monotonic() + FINAL_FLUSH_S
            try:
                now = time.monotonic()
                self._exchange(beat=now >= next_beat and not done)
                if now >= next_beat:
                    next_beat = now + BEAT_S
                backoff = POLL_S
                if done and not self.buffer:
                    return
                wait = POLL_S
            except redis.RedisError as exc:
                if backoff == POLL_S:
                    log.warning("shard %s: Redis unreachable (%s); buffering %d interval(s)", self.field, exc,
                                len(self.buffer))
                wait, backoff = backoff, min(backoff * 2, BACKOFF_MAX_S)
            if deadline is not None and time.monotonic() >= deadline:
                return
            self._wake.wait(wait)
            self._wake.clear()

    def _exchange(self, beat: bool) -> None:
        batch = list(self.buffer)
        pipe = self.redis.pipeline(transaction=False)
        for raw in batch:
            pipe.xadd(self.keys["intervals"], {"iv": raw})
        if beat:
            pipe.hset(self.keys["beats"], self.field, time.time())
        if batch and not self._expiry_set:
            # Keys this worker creates never live forever, even if no orchestrator renews them.
            pipe.expire(self.keys["intervals"], keys.ORPHAN_TTL_S, nx=True)
            pipe.expire(self.keys["beats"], keys.ORPHAN_TTL_S, nx=True)
        pipe.exists(self.keys["stop"])
        pipe.hget(self.keys["attempts"], self.shard.shard_id)
        replies: list[Any] = pipe.execute()
        self._expiry_set = self._expiry_set or bool(batch)
        # Delivered: drop exactly what was sent (the shard loop may have appended meanwhile).
        for _ in batch:
            self.buffer.popleft()
        self._learn(replies[-2], replies[-1])

    def _learn(self, stopped: Any, current: Any) -> None:
        if current is not None and int(current) > self.shard.attempt:
            self.superseded = True
            self.stop.set()
        if stopped:
            self.stop.set()
