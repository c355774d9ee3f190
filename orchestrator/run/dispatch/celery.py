"""The Dispatcher of distributed runs: one Celery queue per region (``fnbench.<region>``), JSON only.

The run's state lives in Redis, so any orchestrator can follow it: ``start`` records the run and
publishes its shards; ``attach`` picks up a run another orchestrator started.  Following means:
read the interval stream, and re-dispatch the remainder of a shard whose heartbeat went silent,
or that is still queued when it is due (attempt + 1, from now to the end of its window),
recording the seconds no load was generated as a gap.  A run ends once: when every shard has
finished, been given up, or the run was stopped, its state is set and later deliveries of its
tasks are refused by the workers.

The orchestrator never imports the worker's app: a client-only Celery app with the same
serialization settings sends the ``fnbench.run_shard`` task with the shard, signed with the task
key (workers/auth.py; workers run only signed tasks); the worker derives every key from its run id.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import redis
from celery import Celery

from orchestrator.errors import SetupError
from orchestrator.run.plan import Plan
from orchestrator.run.result import BadRecords, Gap, RegionStart
from orchestrator.run.rollup import Rollup, fold
from orchestrator.run.store import Store, parse_shard_record
from workers import arrivals, auth, keys
from workers.contract import Interval, Shard

LEAD_S = 2.0  # from dispatch to the common start: workers receive, connect, start instances
LEAD_PER_SHARD_S = 0.001  # publishing cost per shard, so big plans still start together
SILENT_S = 2.5  # a shard whose heartbeat (every 1 s) is older than this is lost
QUEUED_S = 2.0  # a shard nobody claimed this long after it was due is re-dispatched
REDISPATCH_LEAD_S = 0.5  # a re-dispatched remainder starts this long after the decision
MIN_REMAINDER_S = 0.5  # less than this left of a lost shard's window: record the gap only
CHECK_S = 0.5
RENEW_S = 60.0  # the run's retention is set again on every key this often (workers create some)
COMPACT_S = 30.0  # how often read intervals are folded into rollups and trimmed from the stream
KEEP_S = 120.0  # intervals younger than this stay in the stream as they are (late readers, duplicates)
COMPACT_MAX = 20_000  # entries folded per compaction
POLL_BLOCK_MS = 200
STOP_WAIT_S = 5.0
END_GRACE_S = 10.0  # after the planned end (+ target timeout), unfinished shards are given up
STORED_MISMATCH = "stored shard does not match its signature"
# A store that stays away is waited for until the run's end (+ timeout and grace) has passed by this much;
# then, or at once after a stop, the run ends with what it has (nothing more can arrive without Redis).
OUTAGE_AFTER_END_S = 60.0
STORE_DOWN = (redis.ConnectionError, redis.TimeoutError)


class Publisher:
    """A client-only Celery app that publishes signed shards to their region queues."""

    def __init__(self, broker: str, key: bytes | None = None) -> None:
        # Loaded at the first send: reading a run (report, status) needs no signing key.  Commands
        # that will send call workers.auth.load_key() before they write anything.
        self.key = key
        self.app = Celery("fnbench-orchestrator", broker=broker)
        self.app.conf.update(task_serializer="json", accept_content=["json"], task_ignore_result=True,
                             broker_connection_retry_on_startup=True)

    def send(self, shards: Iterable[Shard]) -> int:
        """Publish every shard on one connection; returns how many were sent."""
        if self.key is None:
            self.key = auth.load_key()  # SetupError (exit 2) saying how to make and share one
        n = 0
        with self.app.producer_or_acquire() as producer:
            for shard in shards:
                self.app.send_task(
                    keys.TASK,
                    kwargs={"payload": auth.sign(shard.to_dict(), self.key)},
                    queue=keys.queue(shard.region),
                    routing_key=keys.queue(shard.region),
                    producer=producer,
                )
                n += 1
        return n

    def close(self) -> None:
        self.app.close()


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


def region_starts(first: dict[str, float]) -> tuple[dict[str, RegionStart], float | None]:
    """Per region the first moment load began (first attempts), and the skew between regions."""
    if not first:
        return {}, None
    earliest = min(first.values())
    starts = {r: RegionStart(round(t, 4), round(t - earliest, 4)) for r, t in sorted(first.items())}
    return starts, round(max(first.values()) - earliest, 4)


def unsent(shard: Shard, since: float, until: float) -> int | None:
    """Planned requests of ``shard`` due in [since, until) (epoch seconds): the plan's expected count
    over that part of its window; None for a warm-up shard (not measured) or an unreadable schedule."""
    if shard.warmup:
        return None
    try:
        schedule = arrivals.from_dict(shard.arrival)
    except Exception:  # noqa: BLE001 - a stored shard may hold anything; the gap's seconds still stand
        return None
    origin = shard.start_at - shard.offset_s
    a = max(since, shard.start_at) - origin
    b = min(until, shard.start_at + shard.duration_s) - origin
    return max(0, round(schedule.count(b) - schedule.count(a))) if b > a else 0


def _gap(shard: Shard, since: float, seconds: float, reason: str, **extra: Any) -> Gap:
    seconds = max(0.0, seconds)
    return Gap(region=shard.region, shard=shard.shard_id, target=shard.target.name, attempt=shard.attempt,
               seconds=round(seconds, 3), reason=reason, phase=shard.phase,
               unsent=unsent(shard, since, since + seconds), **extra)


# What a region's rejections (workers.auth reasons) mean for the user.
REJECTION_ADVICE = {
    auth.BAD_SIGNATURE: "the worker's task key differs (give the orchestrator and every worker the same key)",
    auth.UNSIGNED: "the task reached the worker without a signature",
    auth.STALE: "the worker's clock differs from this host's by more than the allowed skew",
    auth.MALFORMED: "the worker cannot read this orchestrator's tasks (another fnbench version?)",
    auth.WRONG_REGION: "a worker of another region reads this region's queue",
}


def rejection_lines(region: str, records: list[dict[str, Any]]) -> list[str]:
    """"region R: 4 tasks rejected (bad-signature): the worker's task key differs", one per reason."""
    by_reason: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in records:
        by_reason[str(rec.get("reason"))[:40]].append(rec)
    out = []
    for reason, recs in sorted(by_reason.items()):
        n = len(recs)
        why = REJECTION_ADVICE.get(reason) or str(recs[-1].get("message") or "")[:200]
        out.append(f"region {region}: {n} task{'s' if n != 1 else ''} rejected ({reason}): {why}")
    return out


class CeleryDispatcher:
    """Region queues on a Redis broker; heartbeats, re-dispatch and the capacity check."""

    def __init__(self, broker: str, processes: int | None = None, wait_workers_s: float = 0.0,
                 warn: Any = print, retention_s: float = keys.RETENTION_S) -> None:
        self.retention_s = retention_s
        self.broker = broker
        self.store = Store(broker)
        self.publisher = Publisher(broker)
        self.want_processes = processes
        self.wait_workers_s = wait_workers_s
        self.warn = warn
        self.run_id = ""
        self.start_at = 0.0
        self.shards: dict[str, Shard] = {}
        self.procs: dict[str, int] = {}
        self.dispatch_s = 0.0
        self.after = "0-0"
        self.last_t1: dict[str, float] = {}
        self.finished: set[str] = set()
        self.first_starts: dict[str, float] = {}  # region → earliest start of a first attempt
        self._gaps: list[Gap] = []
        self.redispatched = 0
        self.next_check = 0.0
        self.next_renew = 0.0
        self.next_compact = time.time() + COMPACT_S
        self.rollups: dict[tuple[str, int], Rollup] = {}
        self.held: list[Interval] = []  # read at attach, delivered by the first poll
        self.trimmed = 0
        self.end = 0.0
        self.stop_requested_at: float | None = None
        self.outage_since: float | None = None
        self.store_errors: list[str] = []
        self.quiet_until = 0.0
        self.state = "running"
        self.trusted: set[str] = set()  # shards whose current attempt this orchestrator planned or verified
        self.stored: dict[str, tuple[dict[str, Any], str | None]] = {}  # attached: stored shard dict and seal
        self.refused: dict[str, str] = {}  # shard_id → why it was not re-dispatched (never signed)
        self.altered: set[str] = set()  # shards whose stored record differed from the plan in memory
        self.meta: dict[str, Any] = {}  # the run's record as started or attached (restored if the store loses it)
        self.invoked_at = 0.0
        self.no_workers: set[str] = set()  # regions found without a worker: nothing more is sent there
        self.rejected_said: dict[str, int] = {}  # region → rejections of this run already said
        self.store_lost_at: float | None = None  # when the store was found to have lost the run's record
        self._online: dict[str, int] | None = None  # worker processes per region, read once per check

    # -- start or attach -------------------------------------------------------------------
    def parts(self, regions: list[str], targets: int) -> int:
        """Each group's rate is split over this many shards per region: every process online in the
        smallest region (or ``processes``), shared among the targets; fewer leaves spare processes
        that take re-dispatched shards."""
        self.procs = self._processes_online(regions)
        return max(1, (self.want_processes or min(self.procs.values())) // max(1, targets))

    def start(self, plan: Plan, spec_text: str) -> None:
        invoked = time.time()
        if not self.procs:
            self.procs = self._processes_online(list(plan.regions))
        self.run_id = plan.run_id
        self.start_at = time.time() + LEAD_S + len(plan.shards) * LEAD_PER_SHARD_S
        shards = sorted(plan.at(self.start_at), key=lambda s: (s.start_at, s.shard_id))
        for region, peak in concurrent_shards(shards).items():
            if peak > self.procs.get(region, 0):
                self.warn(f"warning: region {region}: {peak} shards run at once but {self.procs.get(region, 0)} "
                          f"worker process(es) are online; the rest wait and start late (reported as gaps). "
                          f"Start more: `fnbench worker --region {region} --concurrency N`")
        meta = {"name": plan.name, "spec": spec_text, "start_at": self.start_at, "total_s": plan.total_s,
                "phase_seconds": plan.phase_seconds, "shards": len(shards), "state": "running",
                "max_timeout_s": plan.max_timeout_s, "invoked_at": invoked, "processes": self.procs}
        self.meta, self.invoked_at = meta, invoked
        self.store.create_run(self.run_id, meta, shards, self.retention_s, key=self._key())
        t0 = time.perf_counter()
        self.publisher.send(shards)
        self.dispatch_s = time.perf_counter() - t0
        # Followed from the plan in memory: what is in Redis is never signed by this orchestrator.
        self._follow(meta, {s.shard_id: s for s in shards})

    def attach(self, run_id: str) -> dict[str, Any]:
        """Follow a run started elsewhere; returns its record (spec text, timings)."""
        meta = self.store.meta(run_id)  # InputError naming what is missing when the record is not whole
        self.run_id = run_id
        self.meta = meta
        self.invoked_at = float(meta.get("invoked_at") or meta["start_at"] - LEAD_S)
        self.store_lost_at = meta.get("store_lost_at")
        self.start_at = meta["start_at"]
        self.procs = meta.get("processes", {})
        self._follow(meta)
        # The stream first, the rollups second: a compaction in between can only make a rollup cover
        # entries already held, which the collector then drops (it never loses any).
        self.held, self.after = self.store.read_all_now(run_id)
        self.rollups = self.store.rollups(run_id)
        for r in self.rollups.values():
            self._seen(r.interval)
        return meta

    @property
    def bad(self) -> BadRecords:
        """Stream entries and rollups of the run that were not readable records."""
        return self.store.bad

    def backlog(self) -> list[Rollup]:
        """The run's compacted intervals: for the collector before the first poll."""
        return list(self.rollups.values())

    def _key(self) -> bytes:
        if self.publisher.key is None:
            self.publisher.key = auth.load_key()  # SetupError (exit 2) saying how to make and share one
        return self.publisher.key

    def _follow(self, meta: dict[str, Any], planned: dict[str, Shard] | None = None) -> None:
        if planned is not None:
            self.shards = planned
            self.trusted = set(planned)
        else:
            # Attached: the stored shards are followed, but one is re-dispatched (signed) only after its
            # seal is verified (_trust); a record that is not a shard is not followed at all.
            self.shards, self.stored = {}, {}
            for sid, raw in self.store.shard_records(self.run_id).items():
                shard, d, sig = parse_shard_record(raw)
                if shard is None or d is None:
                    self.refused[sid] = "stored record is not a shard"
                    continue
                self.shards[sid] = shard
                self.stored[sid] = (d, sig)
        self.end = meta["start_at"] + meta["total_s"] + meta.get("max_timeout_s", 10.0) + END_GRACE_S
        self.state = meta.get("state", "running")
        for d in self.store.gaps(self.run_id):
            gap = Gap.from_dict(d)
            self._gaps.append(gap)
            if gap.reason.startswith("never ran") or gap.abandoned:
                self.finished.add(gap.shard)

    def _processes_online(self, regions: list[str]) -> dict[str, int]:
        deadline = time.time() + self.wait_workers_s
        while True:
            procs = self.store.processes_by_region()
            missing = [r for r in regions if not procs.get(r)]
            if not missing:
                return {r: procs[r] for r in regions}
            if time.time() >= deadline:
                raise SetupError(
                    "no worker online for region(s) " + ", ".join(missing) + "; start one per region with "
                    "`fnbench worker --region R --broker URL`")
            time.sleep(0.2)

    # -- following ---------------------------------------------------------------------------
    def snapshot(self, on_interval: Any) -> None:
        """Deliver every interval recorded so far, without waiting (a report of the store)."""
        self._deliver_held(on_interval)
        self._read(on_interval, None)

    def _deliver_held(self, on_interval: Any) -> None:
        held, self.held = self.held, []
        for iv in held:
            self._take(iv, on_interval)

    def poll(self, on_interval: Any) -> bool:
        self._deliver_held(on_interval)
        if self.state != "running":
            self._read(on_interval, None)  # attached to a run that had already ended: its record
            return False
        try:
            self._read(on_interval, POLL_BLOCK_MS)
            now = time.time()
            if now >= self.next_check:
                self.next_check = now + CHECK_S
                self._check(now)
            self.outage_since = None
        except STORE_DOWN as exc:
            self._unreachable(exc)
            if self.stop_requested_at is not None:  # stopped (Ctrl-C, SIGTERM): never wait for a store that is away
                self._end_without_store("stopped while the store was unreachable")
                return False
            if time.time() > self.end + OUTAGE_AFTER_END_S:
                self._end_without_store(f"the store was unreachable past the run's end (since "
                                        f"{time.strftime('%H:%M:%S', time.localtime(self.outage_since or 0))})")
                return False
            return True
        if self.stop_requested_at is not None and time.time() - self.stop_requested_at > STOP_WAIT_S:
            return False
        if time.time() > self.end and self._pending():
            try:
                self._read(on_interval, None)  # what is already in the stream, without blocking
                self._give_up("never ran: no worker took it before the run's end")
            except STORE_DOWN as exc:
                self._unreachable(exc)  # the next poll waits for it, within its bounds
        return bool(self._pending())

    def _pending(self) -> list[str]:
        return [sid for sid in self.shards if sid not in self.finished]

    def _read(self, on_interval: Any, block_ms: int | None) -> None:
        while True:
            intervals, self.after = self.store.read_intervals(self.run_id, self.after, block_ms=block_ms)
            for iv in intervals:
                self._take(iv, on_interval)
            if len(intervals) < 1000:
                return
            block_ms = None  # more is waiting: read on without blocking

    def _take(self, iv: Interval, on_interval: Any) -> None:
        on_interval(iv)
        self._seen(iv)

    def _seen(self, iv: Interval) -> None:
        if iv.started > 0 and iv.attempt == 0:  # only the earliest per region is kept (not the intervals)
            self.first_starts[iv.region] = min(self.first_starts.get(iv.region, iv.started), iv.started)
        self.last_t1[iv.shard_id] = max(self.last_t1.get(iv.shard_id, 0.0), iv.t1)
        current = self.shards.get(iv.shard_id)
        if iv.final and current is not None and iv.attempt >= current.attempt:
            self.finished.add(iv.shard_id)

    def _unreachable(self, exc: Exception) -> None:
        """Redis is down: wait, and judge no heartbeat until workers have had time to beat again."""
        if self.outage_since is None:
            self.outage_since = time.time()
            self.warn(f"store unreachable ({exc}); waiting")
        time.sleep(0.5)
        self.quiet_until = time.time() + SILENT_S + 1.0

    def _check(self, now: float) -> None:
        if now < self.quiet_until:
            return
        self._keep_record(now)
        if now >= self.next_renew:
            self.next_renew = now + RENEW_S
            self.store.renew(self.run_id)
        if now >= self.next_compact:
            self.next_compact = now + COMPACT_S
            self.compact()
        if self.stop_requested_at is None and self.store.stopped(self.run_id):
            self.stop_requested_at = now
        if self.stop_requested_at is not None:
            return  # stopping: nothing is re-dispatched
        beats = self.store.beats(self.run_id)
        claims = self.store.claims(self.run_id)
        self._online = None
        rejected: dict[str, list[str]] | None = None  # read once per check, when a shard stays unclaimed
        claimed_regions = {self.shards[f.rpartition("#")[0]].region for f in claims
                           if f.rpartition("#")[0] in self.shards}
        for sid, shard in list(self.shards.items()):
            if sid in self.finished:
                continue
            field = keys.attempt_field(sid, shard.attempt)
            claim = claims.get(field)
            if claim is not None and claim.get("state") in ("refused", "failed"):
                self.finished.add(sid)  # reported in errors[]; nothing ran or will run
                continue
            if field in beats:
                last = beats[field]
            elif claim is not None and claim["state"] == "running":
                last = claim["at"]  # claimed, never beat: lost before its first beat
            elif claim is None:
                # Still queued: a worker that lost its broker connection may hold it unacked.
                if now - shard.start_at > QUEUED_S:
                    if rejected is None:
                        rejected = self._rejections()
                    if rejected.get(shard.region) and shard.region not in claimed_regions:
                        # Delivered and rejected unverified by every worker that took one (none claimed any):
                        # another attempt would be rejected the same way.
                        self._abandon(shard, "; ".join(rejected[shard.region]))
                        continue
                    self._lost(shard, now, shard.start_at, f"still queued {now - shard.start_at:.1f}s after it was due")
                continue
            else:
                continue  # finishing
            if now - last > SILENT_S:
                self._lost(shard, now, last, f"worker lost (silent {now - last:.1f}s)")

    def _trust(self, shard: Shard) -> str:
        """Why ``shard`` must not be signed ("" when it may): this orchestrator signs only what it planned,
        or a stored shard whose seal (workers/auth.py) verifies under the task key, of this run and id."""
        sid = shard.shard_id
        if sid in self.trusted:
            record = self.store.shard_record(self.run_id, sid)
            if record is None or parse_shard_record(record)[1] != shard.to_dict():
                self.altered.add(sid)  # reported; the plan in memory is what is re-dispatched
            return ""
        d, sig = self.stored.get(sid, (None, None))
        if d is None or not auth.sealed(d, sig, self._key()):
            return STORED_MISMATCH
        if d.get("run_id") != self.run_id or d.get("shard_id") != sid:
            return "stored shard belongs to another run or shard"
        self.trusted.add(sid)
        return ""

    def _refuse(self, shard: Shard, why: str) -> None:
        """Do not re-dispatch ``shard``: record why, and the rest of its window as a gap (bounded by the
        run's planned end, since the stored window itself is not to be believed)."""
        self.refused[shard.shard_id] = why
        self.finished.add(shard.shard_id)
        covered = max(self.last_t1.get(shard.shard_id, 0.0), shard.start_at)
        end = min(shard.start_at + shard.duration_s, self.end)
        gap = _gap(shard, covered, end - covered, f"refused: {why}", abandoned=True, start=round(covered, 3))
        self.store.add_gap(self.run_id, gap.to_dict())
        self._gaps.append(gap)
        self.warn(f"shard {shard.shard_id}: not re-dispatched: {why}")

    def _rejections(self) -> dict[str, list[str]]:
        """Per region of the run, what its workers rejected of this run's tasks (counted under the worker's
        own region: a rejected task's run id is only a claim, used here to pick this run's); said once
        per region (again when the count grows)."""
        out: dict[str, list[str]] = {}
        for region in sorted({s.region for s in self.shards.values()}):
            records = [r for r in self.store.region_rejections(region)
                       if r.get("run") == self.run_id and isinstance(r.get("at"), (int, float))
                       and r["at"] >= self.invoked_at - auth.MAX_SKEW_S]
            if not records:
                continue
            out[region] = rejection_lines(region, records)
            if self.rejected_said.get(region, 0) < len(records):
                self.rejected_said[region] = len(records)
                for line in out[region]:
                    self.warn(f"error: {line}")
        return out

    def _region_online(self, region: str) -> bool:
        """Whether ``region`` has a worker (the registry, read once per check); a region found without one
        is said once and stays given up: nothing is re-dispatched there again."""
        if region in self.no_workers:
            return False
        if self._online is None:
            self._online = self.store.processes_by_region()
        if self._online.get(region):
            return True
        self.no_workers.add(region)
        pending = [s for s in self.shards.values() if s.region == region and s.shard_id not in self.finished]
        self.warn(f"error: region {region} has no workers: its {len(pending)} unfinished shard(s) are not "
                  f"re-dispatched; their planned load is reported as lost (start one with "
                  f"`fnbench worker --region {region}`)")
        return False

    def _abandon(self, shard: Shard, reason: str) -> None:
        """Give ``shard`` up: the rest of its window is a gap no attempt covers (lost load)."""
        covered = max(self.last_t1.get(shard.shard_id, 0.0), shard.start_at)
        gap = _gap(shard, covered, shard.start_at + shard.duration_s - covered, reason, abandoned=True,
                       start=round(covered, 3))
        self.finished.add(shard.shard_id)
        self.store.add_gap(self.run_id, gap.to_dict())
        self._gaps.append(gap)

    def _keep_record(self, now: float) -> None:
        """A store that lost the run's record (Redis restarted without persistence) gets it back whole, from
        this orchestrator's memory, marked with when it was found lost: workers go on claiming its shards,
        and a later `fnbench report` reads what the store still has and says what it lost."""
        if not self.meta or self.store.has_record(self.run_id):
            return
        if self.store_lost_at is None:
            self.store_lost_at = round(now, 3)
            self.warn(f"warning: the store lost run {self.run_id}'s record (Redis restarted without persistence?); "
                      "restored it from this orchestrator: intervals written before are kept here, not in the store")
        meta = {**self.meta, "store_lost_at": self.store_lost_at, "state": self.state}
        self.store.create_run(self.run_id, meta, list(self.shards.values()), float(meta.get("retention_s")
                              or self.retention_s), key=self.publisher.key if self.publisher.key else None)

    def _lost(self, shard: Shard, now: float, since: float, reason: str) -> None:
        why = self._trust(shard)
        if why:
            self._refuse(shard, why)
            return
        if not self._region_online(shard.region):
            self._abandon(shard, f"{reason}; region {shard.region} has no workers: not re-dispatched")
            return
        window_end = shard.start_at + shard.duration_s
        covered = max(self.last_t1.get(shard.shard_id, 0.0), shard.start_at)
        new_start = now + REDISPATCH_LEAD_S
        gap: Gap | None
        if new_start >= window_end - MIN_REMAINDER_S:
            gap = _gap(shard, covered, window_end - covered, reason, abandoned=True,
                       start=round(covered, 3))
            self.finished.add(shard.shard_id)
            nxt = dataclasses.replace(shard, attempt=shard.attempt + 1)
        elif new_start <= shard.start_at:
            nxt = dataclasses.replace(shard, attempt=shard.attempt + 1)  # lost before its window: all of it again
            gap = None
        else:
            cut = new_start - shard.start_at
            nxt = dataclasses.replace(shard, attempt=shard.attempt + 1, start_at=new_start,
                                      offset_s=shard.offset_s + cut, duration_s=shard.duration_s - cut)
            gap = _gap(shard, covered, new_start - covered, reason, redispatched_at=round(new_start, 3), start=round(covered, 3),
                       redispatch_delay_s=round(new_start - since, 3))
        # Supersede first: should the old attempt still be alive, it stops itself before the new one starts.
        self.store.supersede(nxt, self._key())
        self.shards[shard.shard_id] = nxt  # derived here from a planned or verified shard: trusted
        if gap is None or not gap.abandoned:
            self.publisher.send([nxt])
            self.redispatched += 1
        if gap is not None:
            self.store.add_gap(self.run_id, gap.to_dict())
            self._gaps.append(gap)

    def _end_without_store(self, reason: str) -> None:
        """End without the store: what never arrived is a gap (kept here; the store cannot take it)."""
        self.store_errors.append(f"store unreachable: {reason}; intervals not read by then are missing")
        for sid in self._pending():
            shard = self.shards[sid]
            covered = max(self.last_t1.get(sid, 0.0), shard.start_at)
            self._gaps.append(_gap(shard, covered, shard.start_at + shard.duration_s - covered, reason,
                                   abandoned=True, start=round(covered, 3)))
            self.finished.add(sid)

    def _give_up(self, reason: str) -> None:
        for sid in self._pending():
            shard = self.shards[sid]
            covered = max(self.last_t1.get(sid, 0.0), shard.start_at)
            gap = _gap(shard, covered, shard.start_at + shard.duration_s - covered, reason, abandoned=True,
                       start=round(covered, 3))
            self.store.add_gap(self.run_id, gap.to_dict())
            self._gaps.append(gap)
            self.finished.add(sid)

    def compact(self, keep_s: float = KEEP_S) -> int:
        """Fold what this orchestrator has read and is older than ``keep_s`` into rollups, and trim it
        from the stream; returns the number of entries trimmed."""
        read_ms, read_seq = (int(x) for x in self.after.split("-"))
        cutoff_ms = self.store.server_time_ms() - int(keep_s * 1000)
        # Below the first id this orchestrator has not read, and below the cutoff.
        before = f"{read_ms}-{read_seq + 1}" if cutoff_ms > read_ms else f"{cutoff_ms}-0"
        if cutoff_ms <= 0 or before == "0-1":
            return 0
        entries = self.store.stream_before(self.run_id, before, COMPACT_MAX)
        if not entries:
            return 0
        changed = fold(self.rollups, [iv for _, iv in entries])
        # Trim exactly what was folded: below the last folded id when the batch was cut at COMPACT_MAX.
        last_ms, last_seq = entries[-1][0].split("-")
        trim_before = before if len(entries) < COMPACT_MAX else f"{last_ms}-{int(last_seq) + 1}"
        trimmed = self.store.compact(self.run_id, [self.rollups[k] for k in changed], trim_before)
        gc.collect()  # merging made hdrh histograms (reference cycles): free them now, not at some later collection
        self.trimmed += trimmed
        return trimmed

    # -- ending ----------------------------------------------------------------------------
    def stop(self) -> None:
        if self.stop_requested_at is None:
            self.stop_requested_at = time.time()
        try:
            self.store.stop(self.run_id)
        except STORE_DOWN as exc:  # the next poll ends the run: nothing more can arrive
            self._unreachable(exc)

    def join(self) -> None:
        """Mark the run ended, once: workers refuse its tasks from now on."""
        try:
            stopped = self.stop_requested_at is not None or self.store.stopped(self.run_id)
            self.state = "stopped" if stopped else "finished"
            self._keep_record(time.time())  # never a partial record: hset alone would create one
            self.store.set_meta(self.run_id, state=self.state, redispatched=self.redispatched, ended_at=time.time())
            self.store.renew(self.run_id)
        except STORE_DOWN as exc:
            self.state = "stopped" if self.stop_requested_at is not None else "finished"
            self.store_errors.append(f"store unreachable at the run's end ({exc}): its end is not recorded there")
        self.publisher.close()

    def gaps(self) -> list[Gap]:
        return list(self._gaps)

    def errors(self) -> list[str]:
        out = list(dict.fromkeys(self.store_errors))
        regions = sorted({s.region for s in self.shards.values()})
        try:
            claims, rejections = self.store.claims(self.run_id), self.store.rejections(self.run_id)
            by_region = {region: self.store.region_rejections(region) for region in regions}
        except STORE_DOWN as exc:
            claims, rejections, by_region = {}, [], {}
            out.append(f"store unreachable ({exc}): workers' errors and rejections are not known")
        out += sorted({f"{field}: {c['error']}" for field, c in claims.items()
                       if isinstance(c, dict) and c.get("error")})
        refused: dict[str, list[str]] = defaultdict(list)
        for sid, why in self.refused.items():
            refused[why].append(sid)
        for gap in self._gaps:  # recorded by another orchestrator of this run
            why = gap.reason.removeprefix("refused: ")
            if gap.reason.startswith("refused: ") and gap.shard not in refused[why]:
                refused[why].append(gap.shard)
        for why, sids in sorted(refused.items()):
            if sids:
                out.append(f"{len(sids)} shard(s) refused: {why} (not re-dispatched: {', '.join(sorted(sids)[:10])})")
        rejected: dict[tuple[str, str], list[str]] = defaultdict(list)
        for rec in rejections:
            rejected[(str(rec.get("reason"))[:40], str(rec.get("message"))[:300])].append(str(rec.get("field"))[:100])
        for (reason, message), fields in sorted(rejected.items()):
            out.append(f"{len(fields)} delivery(ies) rejected ({reason}): {message} "
                       f"({', '.join(sorted(set(fields))[:10])})")
        for region, found in by_region.items():
            records = [r for r in found
                       if r.get("run") == self.run_id and isinstance(r.get("at"), (int, float))
                       and r["at"] >= self.invoked_at - auth.MAX_SKEW_S]
            out.extend(rejection_lines(region, records))
        if self.meta.get("store_lost_at") is not None:  # attached (report, watch) to a run the store lost in part
            out.append(f"the store lost this run's records at {self.meta['store_lost_at']:.0f} (Redis restarted without "
                       "persistence?): what it holds of the run is partial; the orchestrator that ran it saved the "
                       "whole result in its run folder")
        if self.altered:
            out.append(f"{len(self.altered)} shard record(s) altered in the store: "
                       f"{', '.join(sorted(self.altered)[:10])} (ignored: the planned shard was re-dispatched)")
        return out

    def fields(self) -> dict[str, Any]:
        starts, skew = region_starts(self.first_starts)
        return {"broker": True, "shards": len(self.shards), "start_at": self.start_at, "processes": self.procs,
                "regions": starts, "start_skew_s": skew, "dispatch_s": round(self.dispatch_s, 4),
                "redispatched": self.redispatched, "state": self.state}

    def describe(self) -> str:
        return (f"{len(self.shards)} shards to {', '.join(sorted({keys.queue(s.region) for s in self.shards.values()}))} "
                f"(dispatched in {self.dispatch_s:.3f}s; {sum(self.procs.values())} worker process(es))")
