"""Distributed runs (`--broker`): plan → Redis run record → region queues → supervise → collect.

The run's state lives in Redis, so any orchestrator can supervise it: `fnbench run` starts it,
`fnbench watch RUN` picks it up again after the first one died, `fnbench report RUN` reads it.
Supervising means: read the interval stream into a Collector, and re-dispatch the remainder
of a shard whose heartbeat went silent (attempt + 1, from now to the end of its window),
recording the uncovered seconds as a gap.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import redis
from rich.console import Console

from orchestrator import plan, runner, spec
from orchestrator.collect import Collector
from orchestrator.dispatch.celery import CeleryDispatcher
from orchestrator.errors import SetupError
from orchestrator.results import RunFolder, new_run_id
from orchestrator.store import Store
from orchestrator.watch import LiveView
from workers import keys
from workers.contract import Interval, Shard

LEAD_S = 2.0  # from dispatch to the common start: workers receive, connect, start instances
LEAD_PER_SHARD_S = 0.001  # publishing cost per shard, so big plans still start together
SILENT_S = 2.5  # a shard whose heartbeat (every 1 s) is older than this is lost
REDISPATCH_LEAD_S = 0.5  # a re-dispatched remainder starts this long after the decision
MIN_REMAINDER_S = 0.5  # less than this left of a lost shard's window: record the gap only
CHECK_S = 0.5
STOP_WAIT_S = 5.0
END_GRACE_S = 10.0  # after the planned end (+ target timeout), unfinished shards are given up


@dataclasses.dataclass
class Progress:
    collector: Collector
    folder: RunFolder | None
    last_t1: dict[str, float] = dataclasses.field(default_factory=dict)
    finished: set[str] = dataclasses.field(default_factory=set)


def concurrent_shards(shards: list[Shard]) -> dict[str, int]:
    """Most shards of each region that run at the same moment."""
    out: dict[str, int] = {}
    by_region: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for s in shards:
        by_region[s.region] += [(s.start_at, 1), (s.start_at + s.duration_s, -1)]
    for region, events in by_region.items():
        level = peak = 0
        for _, delta in sorted(events):
            level += delta
            peak = max(peak, level)
        out[region] = peak
    return out


class Supervisor:
    """Follows one run in the store: collects its intervals, re-dispatches lost shards."""

    def __init__(self, store: Store, dispatcher: CeleryDispatcher, run_id: str, progress: Progress) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.run_id = run_id
        self.p = progress
        self.shards = store.shards(run_id)
        meta = store.meta(run_id)
        self.end = meta["start_at"] + meta["total_s"] + meta.get("max_timeout_s", 10.0) + END_GRACE_S
        self.after = "0-0"
        self.next_check = 0.0
        self.redispatched = 0
        self.stop_requested_at: float | None = None
        self.outage_since: float | None = None
        self.quiet_until = 0.0
        for gap in store.gaps(run_id):
            progress.collector.gaps.append(gap)
            if gap.get("reason", "").startswith("never ran") or gap.get("abandoned"):
                progress.finished.add(gap["shard"])

    def done(self) -> bool:
        return len(self.p.finished) >= len(self.shards)

    def poll(self, block_ms: int = 200) -> None:
        intervals, self.after = self.store.read_intervals(self.run_id, self.after, block_ms=block_ms)
        for iv in intervals:
            self._take(iv)
        now = time.time()
        if now >= self.next_check:
            self.next_check = now + CHECK_S
            self._check(now)

    def _take(self, iv: Interval) -> None:
        if self.p.collector.add(iv) and self.p.folder is not None:
            self.p.folder.append(iv)
        self.p.last_t1[iv.shard_id] = max(self.p.last_t1.get(iv.shard_id, 0.0), iv.t1)
        current = self.shards.get(iv.shard_id)
        if iv.final and current is not None and iv.attempt >= current.attempt:
            self.p.finished.add(iv.shard_id)

    def store_unreachable(self, exc: Exception, console: Console) -> None:
        """Redis is down: wait, and judge no heartbeat until workers have had time to beat again."""
        if self.outage_since is None:
            self.outage_since = time.time()
            console.print(f"[yellow]store unreachable ({exc}); waiting[/]")
        time.sleep(0.5)
        self.quiet_until = time.time() + SILENT_S + 1.0

    def _check(self, now: float) -> None:
        self.outage_since = None
        if now < self.quiet_until:
            return
        if self.stop_requested_at is None and self.store.stopped(self.run_id):
            self.stop_requested_at = now
        if self.stop_requested_at is not None:
            return  # stopping: nothing is re-dispatched
        beats = self.store.beats(self.run_id)
        claims = self.store.claims(self.run_id)
        for sid, shard in list(self.shards.items()):
            if sid in self.p.finished:
                continue
            field = keys.attempt_field(sid, shard.attempt)
            if field in beats:
                last = beats[field]
            elif field in claims and claims[field]["state"] == "running":
                last = claims[field]["at"]  # claimed, never beat: lost before its first beat
            else:
                continue  # queued (no worker has taken it yet) or finishing
            if now - last > SILENT_S:
                self._lost(shard, now, last)

    def _lost(self, shard: Shard, now: float, last_beat: float) -> None:
        window_end = shard.start_at + shard.duration_s
        covered = max(self.p.last_t1.get(shard.shard_id, 0.0), shard.start_at)
        new_start = now + REDISPATCH_LEAD_S
        gap: dict[str, Any] = {"region": shard.region, "shard": shard.shard_id, "target": shard.target.name,
                               "attempt": shard.attempt, "reason": f"worker lost (silent {now - last_beat:.1f}s)"}
        if new_start >= window_end - MIN_REMAINDER_S:
            gap.update(seconds=round(max(0.0, window_end - covered), 3), abandoned=True)
            self.p.finished.add(shard.shard_id)
            nxt = dataclasses.replace(shard, attempt=shard.attempt + 1)
        elif new_start <= shard.start_at:
            nxt = dataclasses.replace(shard, attempt=shard.attempt + 1)  # lost before its window: all of it again
            gap = {}
        else:
            cut = new_start - shard.start_at
            nxt = dataclasses.replace(shard, attempt=shard.attempt + 1, start_at=new_start,
                                      offset_s=shard.offset_s + cut, duration_s=shard.duration_s - cut)
            gap.update(seconds=round(new_start - covered, 3), redispatched_at=round(new_start, 3),
                       redispatch_delay_s=round(new_start - last_beat, 3))
        # Supersede first: should the old attempt still be alive, it stops itself before the new one starts.
        self.store.supersede(nxt)
        self.shards[shard.shard_id] = nxt
        if not gap.get("abandoned"):
            self.dispatcher.send([nxt])
            self.redispatched += 1
        if gap:
            self.store.add_gap(self.run_id, gap)
            self.p.collector.gaps.append(gap)

    def give_up_unfinished(self, reason: str) -> None:
        for sid, shard in self.shards.items():
            if sid in self.p.finished:
                continue
            covered = max(self.p.last_t1.get(sid, 0.0), shard.start_at)
            seconds = max(0.0, shard.start_at + shard.duration_s - covered)
            gap = {"region": shard.region, "shard": sid, "target": shard.target.name, "attempt": shard.attempt,
                   "seconds": round(seconds, 3), "reason": reason, "abandoned": True}
            self.store.add_gap(self.run_id, gap)
            self.p.collector.gaps.append(gap)
            self.p.finished.add(sid)

    def past_end(self) -> bool:
        return time.time() > self.end


def region_starts(collector_intervals: dict[str, float]) -> dict[str, Any]:
    """Per region the first moment load began, and the skew between regions."""
    if not collector_intervals:
        return {"regions": {}, "start_skew_s": None}
    first = min(collector_intervals.values())
    return {
        "regions": {r: {"started": round(t, 4), "after_first_s": round(t - first, 4)}
                    for r, t in sorted(collector_intervals.items())},
        "start_skew_s": round(max(collector_intervals.values()) - first, 4),
    }


def _first_starts(intervals: list[Interval]) -> dict[str, float]:
    out: dict[str, float] = {}
    for iv in intervals:
        if iv.started > 0 and iv.attempt == 0:
            out[iv.region] = min(out.get(iv.region, iv.started), iv.started)
    return out


def run(b: spec.Benchmark, spec_text: str, broker: str, results_root: Path = Path("results"),
        console: Console | None = None, run_id: str | None = None, wait_workers_s: float = 0.0,
        processes: int | None = None) -> runner.RunOutcome:
    """Start a run on the workers of its regions and supervise it.  Each group's rate is split
    over ``processes`` shards per region (default: every process online in the smallest region,
    shared among the targets); fewer leaves spare processes that take re-dispatched shards."""
    console = console or Console(stderr=True)
    invoked = time.time()
    store = Store(broker)
    procs = _processes_online(store, b.regions, wait_workers_s)
    run_id = run_id or new_run_id(b.name)
    min_parts = max(1, (processes or min(procs[r] for r in b.regions)) // max(1, len(b.targets)))
    n = len(plan.split(b, run_id, 0.0, min_parts=min_parts))
    start_at = time.time() + LEAD_S + n * LEAD_PER_SHARD_S
    shards = sorted(runner.with_local_functions(plan.split(b, run_id, start_at, min_parts=min_parts), b),
                    key=lambda s: (s.start_at, s.shard_id))
    for region, peak in concurrent_shards(shards).items():
        if peak > procs[region]:
            console.print(f"[yellow]warning[/]: region {region}: {peak} shards run at once but {procs[region]} "
                          f"worker process(es) are online; the rest wait and start late (reported as gaps). "
                          f"Start more: `fnbench worker --region {region} --concurrency N`")
    meta = {"name": b.name, "spec": spec_text, "start_at": start_at, "total_s": plan.total_length(b),
            "phase_seconds": runner.phase_seconds(b), "shards": len(shards), "state": "running",
            "max_timeout_s": max(t.timeout for t in b.targets), "invoked_at": invoked,
            "processes": procs}
    store.create_run(run_id, meta, shards)
    dispatcher = CeleryDispatcher(broker)
    t0 = time.perf_counter()
    dispatcher.send(shards)
    dispatch_s = time.perf_counter() - t0
    folder = RunFolder(results_root, run_id)
    folder.write_spec(spec_text)
    console.print(f"run [bold]{run_id}[/]: {len(shards)} shards to {', '.join(keys.queue(r) for r in b.regions)} "
                  f"(dispatched in {dispatch_s:.3f}s; {sum(procs[r] for r in b.regions)} worker process(es)), "
                  f"results in {folder.path}")
    return supervise(store, dispatcher, run_id, b, folder, console, extra={"dispatch_s": round(dispatch_s, 4)})


def _processes_online(store: Store, regions: list[str], wait_s: float) -> dict[str, int]:
    deadline = time.time() + wait_s
    while True:
        procs = store.processes_by_region()
        missing = [r for r in regions if not procs.get(r)]
        if not missing:
            return {r: procs[r] for r in regions}
        if time.time() >= deadline:
            raise SetupError(
                "no worker online for region(s) " + ", ".join(missing) + "; start one per region with "
                "`fnbench worker --region R --broker URL`")
        time.sleep(0.2)


def supervise(store: Store, dispatcher: CeleryDispatcher, run_id: str, b: spec.Benchmark | None,
              folder: RunFolder | None, console: Console, extra: dict[str, Any] | None = None) -> runner.RunOutcome:
    """Follow the run to its end (or a stop), write result.json, and mark the run finished."""
    meta = store.meta(run_id)
    collector = Collector(run_id, meta.get("phase_seconds"))
    sup = Supervisor(store, dispatcher, run_id, Progress(collector, folder))
    interrupted = False
    previous = signal.signal(signal.SIGTERM, runner._raise_interrupt)
    try:
        with LiveView(collector, meta["start_at"], meta["total_s"], console) as view:
            while not sup.done():
                try:
                    try:
                        sup.poll()
                    except (redis.ConnectionError, redis.TimeoutError) as exc:
                        sup.store_unreachable(exc, console)
                        continue
                    view.update()
                    if sup.stop_requested_at is not None and time.time() - sup.stop_requested_at > STOP_WAIT_S:
                        break
                    if sup.past_end():
                        sup.poll(block_ms=0)
                        sup.give_up_unfinished("never ran: no worker took it before the run's end")
                except KeyboardInterrupt:
                    if interrupted:
                        break
                    interrupted = True
                    console.print("[yellow]stopping every worker (Ctrl-C again to stop waiting)[/]")
                    store.stop(run_id)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if folder is not None:
            folder.close()
    stopped = sup.stop_requested_at is not None or store.stopped(run_id)
    store.set_meta(run_id, state="stopped" if stopped else "finished", redispatched=sup.redispatched)
    result, code = result_of(store, run_id, collector, b, meta, interrupted=interrupted or stopped,
                             redispatched=sup.redispatched, **(extra or {}))
    if folder is not None:
        folder.write_result(result)
    if result["errors"]:
        code = runner.EXIT_INPUT
    elif interrupted or stopped:
        code = runner.EXIT_INTERRUPTED
    return runner.RunOutcome(result, folder.path if folder else Path("."), code)


def result_of(store: Store, run_id: str, collector: Collector, b: spec.Benchmark | None, meta: dict[str, Any],
              **extra: Any) -> tuple[dict[str, Any], int]:
    intervals = list(store.all_intervals(run_id))
    collector.gaps.sort(key=lambda g: (g["shard"], g.get("attempt", 0), g["reason"]))
    errors = sorted({f"{field}: {c['error']}" for field, c in store.claims(run_id).items() if c.get("error")})
    common = {"broker": True, "shards": meta["shards"], "start_at": meta["start_at"], "errors": errors,
              "processes": meta.get("processes", {}), **region_starts(_first_starts(intervals)), **extra}
    if b is not None:
        return runner.finish(b, collector, **common)
    return collector.result(**common), runner.EXIT_OK


def collector_from_store(store: Store, run_id: str) -> tuple[Collector, dict[str, Any], spec.Benchmark | None]:
    meta = store.meta(run_id)
    collector = Collector(run_id, meta.get("phase_seconds"))
    collector.add_all(store.all_intervals(run_id))
    collector.gaps.extend(store.gaps(run_id))
    b = spec.load_text(meta["spec"], f"{run_id}/spec.yaml") if meta.get("spec") else None
    return collector, meta, b


def report(broker: str, run_id: str) -> tuple[dict[str, Any], int]:
    """The result of a run from the store alone: same intervals, same gaps, same result."""
    store = Store(broker)
    collector, meta, b = collector_from_store(store, run_id)
    return result_of(store, run_id, collector, b, meta, state=meta.get("state"),
                     redispatched=meta.get("redispatched", 0))


def watch(broker: str, run_id: str, results_root: Path, console: Console) -> runner.RunOutcome:
    """Attach to a run (e.g. after its orchestrator died) and supervise it to the end."""
    store = Store(broker)
    meta = store.meta(run_id)
    b = spec.load_text(meta["spec"], f"{run_id}/spec.yaml") if meta.get("spec") else None
    folder = RunFolder(results_root, run_id)
    if meta.get("spec"):
        folder.write_spec(meta["spec"])
    # The folder is rewritten from the stream: the intervals file restarts with what is in Redis.
    (folder.path / "intervals.jsonl").unlink(missing_ok=True)
    return supervise(store, CeleryDispatcher(broker), run_id, b, folder, console)


def stop(broker: str, run_id: str) -> None:
    store = Store(broker)
    store.meta(run_id)
    store.stop(run_id)


def status(broker: str, run_id: str | None) -> dict[str, Any]:
    store = Store(broker)
    workers = store.workers()
    regions: dict[str, dict[str, Any]] = defaultdict(lambda: {"workers": 0, "processes": 0})
    for rec in workers.values():
        regions[rec["region"]]["workers"] += 1
        regions[rec["region"]]["processes"] += int(rec.get("concurrency", 1))
    runs = [run_id] if run_id else store.runs()
    out: dict[str, Any] = {"regions": {}, "runs": []}
    for rid in runs:
        meta = store.meta(rid)
        shards = store.shards(rid)
        claims = store.claims(rid)
        states: dict[str, int] = defaultdict(int)
        for sid, shard in shards.items():
            claim = claims.get(keys.attempt_field(sid, shard.attempt))
            states[claim["state"] if claim else "queued"] += 1
            regions[shard.region]  # noqa: B018 - list the run's regions even with no worker
        out["runs"].append({"run_id": rid, "name": meta.get("name"), "state": meta.get("state"),
                            "start_at": meta.get("start_at"), "shards": dict(states)})
    for region, rec in sorted(regions.items()):
        out["regions"][region] = {**rec, "queue_depth": store.queue_depth(region)}
    return out
