"""run_shard(): the open-model loop — schedule → invoke → record → flush intervals.

Clocks: due times come from the schedule in profile time and are mapped once onto the
monotonic clock; every measurement is a difference of monotonic readings.  Interval
boundaries (t0/t1) are wall-clock epoch seconds so regions line up.

Coordinated omission: response time runs from the *due* time, service time from the actual
send.  When ``max_in_flight`` requests are outstanding, due requests wait in a bounded queue
with their clock running; past ``queue_limit`` they are counted as ``dropped``.

A generator that falls behind its schedule by more than ``Shard.late_bound_s`` (a frozen or
starved process, a shard that starts late) does not catch up: every arrival already due is
skipped and the seconds they span are reported as a gap (``gap_s``; ``stall_s`` for the part
lost mid-run), never sent as a burst.  Behind by less, due requests are sent at once with
their clock running (rule 2).  A re-dispatched attempt (attempt > 0) replays nothing that was
due before it began: that window was already lost with the attempt it replaces.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from typing import Protocol

from workers import arrivals
from workers.contract import OUTCOME_NAMES, Interval, Outcome, Shard
from workers.errors import FnbenchError
from workers.platforms import (
    LEVELS,
    CountsConnections,
    Done,
    Invocation,
    Invoker,
    Prepares,
    ReportsFailure,
    ReportsIds,
    Traces,
    counters_of,
    make_invoker,
)
from workers.recorder import ShardRecorder
from workers.timer import Waker

Sink = Callable[[Interval], None]

_monotonic = time.monotonic
_STOP_POLL_S = 0.05
_STOP_DRAIN_S = 0.15
_MAX_BURST = 16
_PREPARE_LEAD_S = 2.0  # an invoker's prepare() (connections opened ahead) runs this long before start_at
# Invoker counters with an Interval field of their own; the others go to Interval.counters.
_COUNTER_FIELDS = frozenset({"retries", "cold_starts", "connections_opened"}) & {f.name for f in dataclasses.fields(Interval)}


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class _NoInvoker:
    """Stands in for the invoker of a target that could not be set up: nothing is ever sent."""

    async def start(self) -> None:
        return None

    def invoke(self, due: float, done: Done) -> None:  # pragma: no cover - never paced
        raise AssertionError("a failed target is never invoked")

    def counters(self) -> dict[str, float]:
        return {}

    async def close(self) -> None:
        return None


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


class _Never:
    def is_set(self) -> bool:
        return False


def _recheck(stop: StopFlag) -> bool:
    """After a stall: ask the stop flag's source now whether the shard must stop (a flag with a
    ``recheck()``: the store link, which learns there whether this attempt was superseded)."""
    recheck = getattr(stop, "recheck", None)
    return bool(recheck()) if callable(recheck) else stop.is_set()


class ShardRun:
    """State of one shard while it runs; ``done`` is the invoker's completion callback.

    The invoker comes from the platform registry unless one is given.  What it learns about
    single invocations arrives with their completion (``Invocation``); what it counts is read
    through ``counters()`` at each flush (an invoker that ``Counts``) and reported as that
    interval's deltas.  Two optional capabilities (declared protocols of workers.platforms): an
    invoker that ``Prepares`` is asked to ``prepare(rate, max_in_flight, start_at, end_at)``
    during the lead time (up to ``_PREPARE_LEAD_S`` before start_at) so connections are open
    before the first due request; one that ``CountsConnections`` gives ``connect_times()``, the
    µs each new connection took (the connect_ms histogram), read at every housekeeping tick.
    """

    def __init__(self, shard: Shard, sink: Sink, invoker: Invoker | None = None) -> None:
        self.shard = shard
        self.sink = sink
        self.rec = ShardRecorder()
        # A target this worker cannot set up (not built, refused, no credentials, a function that
        # does not start…) fails its own shards, reported in a final interval with status "failed";
        # other targets' shards in the same process run on.
        self.failure = ""
        try:
            self.invoker: Invoker = invoker or make_invoker(shard.target, shard.phase, shard.max_in_flight)
        except FnbenchError as exc:
            self.failure = _reason(exc)
            self.invoker = _NoInvoker()
        # One bound method for the whole run, not one per request.
        self._done = self.done
        self._invoke = self.invoker.invoke
        self._connect_times: Callable[[], Sequence[int]] | None = (
            self.invoker.connect_times if isinstance(self.invoker, CountsConnections) else None)
        # The K slowest requests of the interval: a min-heap of K entries; a request is looked at
        # only when it is slower than the fastest of them (one comparison on the hot path).
        self.slow_k = max(0, shard.slowest)
        self.slowest: list[tuple[float, int, float, float, int, str, str, object]] = []
        self._slow_floor = -math.inf if self.slow_k else math.inf
        self._slow_n = 0
        self._ids: Callable[[float], tuple[str, str]] | None = (
            self.invoker.request_ids if isinstance(self.invoker, ReportsIds) else None)
        if shard.trace_ratio and isinstance(self.invoker, Traces):
            self.invoker.trace_ratio = shard.trace_ratio
        self.cold_starts = 0
        self.peak_memory_mb = 0.0
        self._counted: dict[str, float] = {}
        self.outcomes = [0] * len(OUTCOME_NAMES)
        self.intended = self.sent = self.completed = 0
        self.in_flight = self.peak_in_flight = 0
        self.queue: deque[float] = deque()
        self.seq = 0
        self.gap_s = 0.0
        self.stall_s = 0.0
        self.late_bound_s = shard.late_bound_s
        self.max_in_flight = shard.max_in_flight
        self.queue_limit = shard.queue_limit
        # Map profile offsets onto the monotonic clock once.
        self.origin_epoch = shard.start_at - shard.offset_s
        self.mono_minus_epoch = _monotonic() - time.time()
        self.interval_t0 = max(time.time(), shard.start_at)
        self.next_flush = self.next_poll = 0.0
        self.started = 0.0

    # -- hot path -------------------------------------------------------------------------
    def dispatch(self, due: float) -> None:
        self.intended += 1
        if self.in_flight < self.max_in_flight:
            self.in_flight += 1
            if self.in_flight > self.peak_in_flight:
                self.peak_in_flight = self.in_flight
            self.sent += 1
            self._invoke(due, self._done)
        elif len(self.queue) < self.queue_limit:
            self.queue.append(due)
        else:
            self.outcomes[Outcome.dropped] += 1

    def done(self, outcome: Outcome, due: float, sent: float, end: float, info: Invocation | None = None) -> None:
        self.completed += 1
        self.outcomes[outcome] += 1
        self.rec.send_lag.append(int((sent - due) * 1e6))
        took = end - due
        if outcome == 0:  # Outcome.ok: latency histograms hold successful responses only
            self.rec.response.append(int(took * 1e6))
            self.rec.service.append(int((end - sent) * 1e6))
        if took > self._slow_floor:
            self._keep_slow(took, outcome, due, sent, info)
        if info is not None:
            self._learned(info)
        if self.queue:
            self.sent += 1
            self._invoke(self.queue.popleft(), self._done)
        else:
            self.in_flight -= 1

    def _keep_slow(self, took: float, outcome: Outcome, due: float, sent: float, info: Invocation | None) -> None:
        """One of the interval's K slowest so far: keep it with the ids that find it elsewhere."""
        trace, rid, report = "", "", None
        if info is not None:
            trace, rid, report = info.trace_id, info.request_id, info.report
        if not (trace or rid) and self._ids is not None:
            trace, rid = self._ids(due)
        self._slow_n += 1
        entry = (took, self._slow_n, due, sent, int(outcome), trace, rid, report)
        heap = self.slowest
        if len(heap) < self.slow_k:
            heapq.heappush(heap, entry)
            if len(heap) == self.slow_k:
                self._slow_floor = heap[0][0]
        else:
            heapq.heapreplace(heap, entry)
            self._slow_floor = heap[0][0]

    def _take_slowest(self) -> list[dict[str, object]]:
        """The interval's slowest requests as records (slowest first); the heap starts again."""
        if not self.slowest:
            return []
        out: list[dict[str, object]] = []
        to_epoch = self.mono_minus_epoch
        for took, _, due, sent, outcome, trace, rid, report in sorted(self.slowest, reverse=True):
            record: dict[str, object] = {"due": round(due - to_epoch, 6), "response_ms": round(took * 1e3, 3),
                                         "service_ms": round(max(0.0, due + took - sent) * 1e3, 3),
                                         "outcome": OUTCOME_NAMES[outcome]}
            if trace:
                record["trace_id"] = trace
            if rid:
                record["request_id"] = rid[:200]
            fields = getattr(report, "slow_fields", None)
            if fields is not None:
                record["report"] = fields()
            out.append(record)
        self.slowest = []
        self._slow_floor = -math.inf if self.slow_k else math.inf
        return out

    def _take_connect_times(self) -> None:
        if self._connect_times is not None:
            taken = self._connect_times()
            if taken:
                self.rec.connect.extend(taken)

    def _learned(self, info: Invocation) -> None:
        if info.cold:
            self.cold_starts += 1
        if info.init_us >= 0:
            self.rec.init.append(info.init_us)
        if info.memory_mb > self.peak_memory_mb:
            self.peak_memory_mb = info.memory_mb
        if info.platform_us >= 0:
            self.rec.platform.append(info.platform_us)
        if info.billed_us >= 0:
            self.rec.billed.append(info.billed_us)
        if info.init_duration_us >= 0:
            self.rec.init_duration.append(info.init_duration_us)
        if info.ttfb_us >= 0:
            self.rec.ttfb.append(info.ttfb_us)
            self.rec.ttlb.append(info.ttlb_us)

    def _counter_deltas(self) -> dict[str, float]:
        """The invoker's counters since the last flush; levels (peaks) as they stand."""
        now = counters_of(self.invoker)
        deltas: dict[str, float] = {}
        for name, value in now.items():
            if name in LEVELS:
                if name == "max_memory_mb" and value > self.peak_memory_mb:
                    self.peak_memory_mb = value
                continue
            delta = value - self._counted.get(name, 0.0)
            if delta:
                deltas[name] = int(delta) if delta == int(delta) else delta
        self._counted = dict(now)
        return deltas

    # -- intervals ------------------------------------------------------------------------
    def flush(self, final: bool = False, status: str = "ok") -> None:
        t1 = time.time()
        self._take_connect_times()
        hists, out_of_range = self.rec.drain()
        counters = self._counter_deltas()
        fields = {name: int(counters.pop(name)) for name in _COUNTER_FIELDS if name in counters}
        fields["cold_starts"] = self.cold_starts + fields.get("cold_starts", 0)
        s = self.shard
        interval = Interval(
            run_id=s.run_id,
            shard_id=s.shard_id,
            attempt=s.attempt,
            seq=self.seq,
            region=s.region,
            target=s.target.name,
            runtime=s.target.runtime,
            phase=s.phase,
            t0=self.interval_t0,
            t1=t1,
            intended=self.intended,
            sent=self.sent,
            completed=self.completed,
            outcomes={name: n for name, n in zip(OUTCOME_NAMES, self.outcomes, strict=True) if n},
            response_us=hists["response"],
            service_us=hists["service"],
            send_lag_us=hists["send_lag"],
            init_us=hists["init"],
            connect_us=hists["connect"],
            platform_us=hists["platform"],
            billed_us=hists["billed"],
            init_duration_us=hists["init_duration"],
            ttfb_us=hists["ttfb"],
            ttlb_us=hists["ttlb"],
            out_of_range=out_of_range,
            peak_in_flight=self.peak_in_flight,
            warmup=s.warmup,
            final=final,
            status=status,
            failure=self.failure if status == "failed" else "",
            gap_s=round(self.gap_s, 3),
            stall_s=round(self.stall_s, 3),
            workload=s.target.workload,
            max_memory_mb=round(self.peak_memory_mb, 3),
            started=self.started,
            counters=counters,
            slowest=self._take_slowest(),
            **fields,
        )
        self.cold_starts = 0
        self.seq += 1
        self.interval_t0 = t1
        self.intended = self.sent = self.completed = 0
        self.outcomes = [0] * len(OUTCOME_NAMES)
        self.peak_in_flight = self.in_flight
        self.gap_s = self.stall_s = 0.0
        self.sink(interval)

    # -- the loop -------------------------------------------------------------------------
    async def run(self, stop: StopFlag) -> None:
        s = self.shard
        now_epoch = time.time()
        if now_epoch >= s.start_at + s.duration_s:
            # Delivered after its window: record that it expired; never run late.
            self.gap_s = s.duration_s
            self.flush(final=True, status="expired")
            return
        if self.failure:
            self.flush(final=True, status="failed")
            return
        # Connect or start instances during the lead time, so the first due requests do
        # not wait for them.
        status = "stopped"
        try:
            try:
                await self.invoker.start()
            except FnbenchError as exc:
                self.failure = _reason(exc)
                status = "failed"
                return
            if isinstance(self.invoker, Prepares):
                await self._until(s.start_at - _PREPARE_LEAD_S, stop)
                if not stop.is_set():
                    rate = float(arrivals.from_dict(s.arrival).peak_rps())
                    self.invoker.prepare(rate, s.max_in_flight, s.start_at, s.start_at + s.duration_s)
            await self._until(s.start_at, stop)
            if not stop.is_set():
                status = await self._run_window(stop)
        finally:
            await self.invoker.close()
            if status != "failed" and self._found_failure():
                status = "failed"
            # After close: platforms report what they only know at the end (peak RSS, through counters()).
            self.flush(final=True, status=status)
            self.rec.release()  # the shard has ended: its histograms go (other shards may still run)

    def _found_failure(self) -> bool:
        """An invoker may learn during the run that its target cannot work (``failure``: e.g. the
        Lambda function does not exist); the shard stops and is reported failed."""
        found = self.invoker.failure if isinstance(self.invoker, ReportsFailure) else ""
        if found and not self.failure:
            self.failure = str(found)
        return bool(found)

    @staticmethod
    async def _until(epoch: float, stop: StopFlag) -> None:
        while time.time() < epoch - _STOP_POLL_S and not stop.is_set():
            await asyncio.sleep(min(_STOP_POLL_S, epoch - time.time()))

    async def _run_window(self, stop: StopFlag) -> str:
        s = self.shard
        schedule = arrivals.from_dict(s.arrival)
        part_offset = float(Fraction(s.part_offset))
        to_mono = self.origin_epoch + self.mono_minus_epoch
        begin = s.offset_s
        # Late at the start by more than the bound (by anything, for a re-dispatched remainder): begin
        # now, and what was due before is a gap, not a burst whose send lag would pass for response time.
        late = time.time() - self.origin_epoch - begin
        if late > (self.late_bound_s if s.attempt == 0 else 0.0):
            late = min(late, s.duration_s)
            self.gap_s = late
            begin += late
        due_iter = schedule.iter_due(begin, s.offset_s + s.duration_s, part_offset, s.seed)
        self.started = time.time()
        status = await self._pace(due_iter, to_mono, stop)
        await self._drain(stop)
        if self._found_failure():
            return "failed"
        return "stopped" if stop.is_set() else status

    async def _pace(self, due_iter: Iterator[float], to_mono: float, stop: StopFlag) -> str:
        self.next_flush = _monotonic() + self.shard.flush_interval_s
        self.next_poll = 0.0
        waker = Waker()
        try:
            return await self._pace_loop(due_iter, to_mono, stop, waker)
        finally:
            waker.close()

    async def _pace_loop(self, due_iter: Iterator[float], to_mono: float, stop: StopFlag, waker: Waker) -> str:
        dispatch = self.dispatch
        sleep = asyncio.sleep
        bound = self.late_bound_s
        burst = 0
        skipped_from = 0.0  # due time of the first arrival skipped in a stall (0: none)
        for offset in due_iter:
            due = offset + to_mono
            now = _monotonic()
            if now - due > bound or (skipped_from and due < now):
                # Stalled (the process was frozen or starved): skip every arrival already due, never burst.
                if not skipped_from:
                    skipped_from = due
                continue
            if skipped_from:
                self.gap_s += due - skipped_from
                self.stall_s += due - skipped_from
                skipped_from = 0.0
                # A frozen attempt may have been superseded meanwhile: it must not send into the window
                # of the attempt that replaced it, nor wait for the control thread to notice.
                if _recheck(stop) or self._housekeeping(now, stop):
                    return "stopped"
            # Yield to responses at least every few sends, even when every request is overdue.
            if now < due or burst >= _MAX_BURST:
                burst = 0
                if now >= self.next_poll and self._housekeeping(now, stop):
                    return "stopped"
                if now >= due:
                    await sleep(0)
                while now < due:
                    await waker.until(min(due, now + _STOP_POLL_S))
                    now = _monotonic()
                    if now >= self.next_poll and self._housekeeping(now, stop):
                        return "stopped"
                if now - due > bound:  # frozen while waiting for this one
                    skipped_from = due
                    continue
            dispatch(due)
            burst += 1
        if skipped_from:  # the window ended while stalled
            lost = max(0.0, min(_monotonic(), self._end_mono(to_mono)) - skipped_from)
            self.gap_s += lost
            self.stall_s += lost
        return "ok"

    def _end_mono(self, to_mono: float) -> float:
        return self.shard.offset_s + self.shard.duration_s + to_mono

    def _housekeeping(self, now: float, stop: StopFlag) -> bool:
        """Poll the stop flag and flush when an interval is due; True when stopped."""
        if stop.is_set() or self._found_failure():
            return True
        self.next_poll = now + _STOP_POLL_S
        self._take_connect_times()
        self.rec.absorb()
        if now >= self.next_flush:
            self.flush()
            self.next_flush += self.shard.flush_interval_s
        return False

    async def _drain(self, stop: StopFlag) -> None:
        """Wait for queued and in-flight requests: up to the timeout, or briefly after a stop."""
        now = _monotonic()
        deadline = now + self.shard.target.timeout_s + 1.0
        stop_deadline = now + _STOP_DRAIN_S if stop.is_set() else None
        while (self.in_flight or self.queue) and now < deadline:
            if stop_deadline is None and stop.is_set():
                stop_deadline = now + _STOP_DRAIN_S
            if stop_deadline is not None and now >= stop_deadline:
                break
            await asyncio.sleep(0.005)
            now = _monotonic()
        # Requests still waiting for a connection never left: they are dropped, not lost.
        self.outcomes[Outcome.dropped] += len(self.queue)
        self.queue.clear()


def report_failed(shard: Shard, sink: Sink, reason: str) -> None:
    """Report a shard that will not run (a worker's refusal) as one final interval with status
    "failed", so the result shows its target's group as failed, with the reason."""
    run = ShardRun(shard, sink, _NoInvoker())
    run.failure = reason
    run.flush(final=True, status="failed")


async def run_shards_async(shards: Sequence[Shard], sink: Sink, stop: StopFlag | None = None) -> None:
    """Run several shards concurrently on the current event loop (one generator per process)."""
    flag: StopFlag = stop or _Never()
    runs = [ShardRun(s, sink) for s in shards]
    await asyncio.gather(*(r.run(flag) for r in runs))


def run_shards(shards: Sequence[Shard], sink: Sink, stop: StopFlag | None = None) -> None:
    """Run shards on uvloop (plain asyncio where uvloop is missing); an error raised by the run
    propagates: the load is never sent a second time."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported OS
        asyncio.run(run_shards_async(shards, sink, stop))
    else:
        uvloop.run(run_shards_async(shards, sink, stop))


def run_shard(shard: Shard, sink: Sink, stop: StopFlag | None = None) -> None:
    """Run one shard to completion (or until ``stop`` is set), flushing Intervals to ``sink``."""
    run_shards([shard], sink, stop)
