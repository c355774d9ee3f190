"""Recurring runs: schedules in Redis with celery-redbeat, fired by `fnbench scheduler`.

A schedule is a name, the spec's text (stored, so a later edit of the file changes nothing until
`fnbench schedule update`), a recurrence (a 5-field cron expression or an interval; UTC unless a
timezone is given) and how to run (on the region workers through the broker, or on the scheduler's
own machine with ``--local``).  The record is signed with the task key: a schedule written into Redis
by anyone without the key is refused, as forged shards are.

`fnbench scheduler` is one process: a Celery worker (thread pool) consuming the queue
``fnbench.scheduled`` and, in a thread, Celery beat with the RedBeat scheduler.  Several may run;
RedBeat's Redis lock lets one beat at a time, the others stand by, blocking on the lock, and take over
once it expires (``lock_timeout`` after the holder died, or at once when it stopped cleanly).  Every
scheduler's worker takes headless runs from the queue; each firing is claimed with SET NX, so a
firing is run once even if two beats ever sent it.  A run is the one run loop (runner.run,
interactive=False); afterwards it is recorded in the history, checked for a regression
(history.check) and, on one, announced (history.notify).

RedBeat pitfalls handled here: a lock timeout shorter than a few loop intervals makes beats lose the
lock between ticks (refused at start); Redis with an ``allkeys-*`` eviction policy drops schedule keys
silently (refused at start and at ``add``); DST: recurrences are computed here, not by celery's
crontab: a wall-clock time skipped by a DST change fires once at the end of the gap, a repeated one
fires at its first occurrence only, so no run is skipped or doubled.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from rich.console import Console

from orchestrator import session
from orchestrator.analysis import history
from orchestrator.analysis.history import git_describe
from orchestrator.errors import InputError, SetupError
from orchestrator.run import spec
from orchestrator.run.store import Store
from workers import keys

log = logging.getLogger("fnbench.scheduler")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
LOOP_INTERVAL_S = 1.0  # beat's longest sleep; also how often a standby retries the lock
LOCK_TIMEOUT_S = 5.0  # a dead scheduler's lock is free after this long
MIN_LOCK_LOOPS = 3  # lock timeout / loop interval at least this (or beats lose the lock between ticks)
FIRE_CLAIM_TTL_S = 7 * 86400
EXPIRES_S = 3600.0  # a firing nobody took within this long is dropped, not run late
_DOMAIN = b"fnbench-schedule-v1\n"


# -- recurrences -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recurrence:
    """When a schedule fires: ``cron`` (5 fields, in ``tz``) or ``every`` seconds from ``anchor``."""

    cron: str | None = None
    every_s: float | None = None
    tz: str = "UTC"
    anchor: float = 0.0

    @classmethod
    def parse(cls, cron: str | None, every: str | None, tz: str | None, anchor: float | None = None) -> Recurrence:
        if bool(cron) == bool(every):
            raise InputError("give exactly one of --cron \"MIN HOUR DOM MON DOW\" or --every DURATION")
        zone = tz or "UTC"
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InputError(f"--tz {zone!r}: not a known IANA time zone (e.g. UTC, Europe/Berlin)") from None
        if cron:
            rec = cls(cron=" ".join(cron.split()), tz=zone, anchor=anchor or time.time())
            rec.fields()  # validates
            return rec
        return cls(every_s=parse_every(every or ""), tz=zone, anchor=round(anchor or time.time(), 3))

    def fields(self) -> tuple[set[int], set[int], set[int], set[int], set[int], bool, bool, bool]:
        """minutes, hours, days of month, months, days of week (0 = Sunday), dom restricted, dow restricted,
        and whether the hour field is a wildcard (``*``, ``*/6``)."""
        from celery.schedules import crontab

        parts = (self.cron or "").split()
        if len(parts) != 5:
            raise InputError(f"--cron {self.cron!r}: needs 5 fields (minute hour day-of-month month day-of-week)")
        try:
            c = crontab(minute=parts[0], hour=parts[1], day_of_month=parts[2], month_of_year=parts[3],
                        day_of_week=parts[4])
            sets = (set(c.minute), set(c.hour), set(c.day_of_month), set(c.month_of_year), set(c.day_of_week))
        except Exception as exc:  # celery raises ValueError or its ParseException
            raise InputError(f"--cron {self.cron!r}: {exc}") from None
        if not all(sets):
            raise InputError(f"--cron {self.cron!r}: a field matches nothing")
        return (*sets, parts[2] != "*", parts[4] != "*", parts[1].startswith("*"))

    def next_after(self, t: float) -> float:
        """The first firing strictly after epoch second ``t``.

        Across DST changes cron's own rule holds: a schedule with a fixed hour runs once per wall-clock
        time (a time skipped by the change runs at the end of the gap, a repeated one at its first
        occurrence); a schedule whose hour is a wildcard (``*``, ``*/2``) follows real time (it runs in
        both occurrences of a repeated hour and has nothing to make up in a skipped one)."""
        if self.every_s:
            if t < self.anchor:
                return self.anchor + self.every_s if t >= self.anchor - self.every_s else self.anchor
            return self.anchor + (int((t - self.anchor) // self.every_s) + 1) * self.every_s
        tz = ZoneInfo(self.tz)
        fields = self.fields()
        day = datetime.fromtimestamp(t, tz).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
        for _ in range(366 * 8):  # every valid cron expression matches within a few years
            # This day's and the next day's firings: a DST change at midnight can reorder the two.
            found = [u for d in (day, day + timedelta(days=1)) for u in self._instants(d, tz, fields) if u > t]
            if found:
                return min(found)
            day += timedelta(days=1)
        raise InputError(f"--cron {self.cron!r}: never fires")

    @staticmethod
    def _instants(day: datetime, tz: ZoneInfo, fields: tuple[Any, ...]) -> list[float]:
        minutes, hours, doms, months, dows, dom_set, dow_set, hour_star = fields
        cron_dow = (day.weekday() + 1) % 7
        if day.month not in months:
            return []
        if dom_set and dow_set:
            match = day.day in doms or cron_dow in dows  # cron: either restricted field matches
        else:
            match = day.day in doms and cron_dow in dows
        if not match:
            return []
        out: list[float] = []
        for h in sorted(hours):
            for m in sorted(minutes):
                wall = day.replace(hour=h, minute=m)
                out += every_instant(wall, tz) if hour_star else [first_instant(wall, tz)]
        return out

    def describe(self) -> str:
        if self.every_s:
            return f"every {format_seconds(self.every_s)}"
        return f"cron '{self.cron}'" + ("" if self.tz == "UTC" else f" ({self.tz})") + (" UTC" if self.tz == "UTC" else "")

    def to_dict(self) -> dict[str, Any]:
        return {"cron": self.cron, "every_s": self.every_s, "tz": self.tz, "anchor": self.anchor}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recurrence:
        return cls(d.get("cron"), d.get("every_s"), d.get("tz") or "UTC", float(d.get("anchor") or 0.0))


def every_instant(wall: datetime, tz: ZoneInfo) -> list[float]:
    """Every epoch second at which the wall clock of ``tz`` reads ``wall`` (two in a repeated hour,
    none in a skipped one)."""
    out = set()
    for fold in (0, 1):
        u = wall.replace(tzinfo=tz, fold=fold).timestamp()
        if datetime.fromtimestamp(u, tz).replace(tzinfo=None) == wall:
            out.add(u)
    return sorted(out)


def first_instant(wall: datetime, tz: ZoneInfo) -> float:
    """The first epoch second at which the wall clock of ``tz`` reads ``wall`` or later: ``wall`` itself
    when it exists once, its first occurrence when a DST change repeats it, and the end of the gap
    when a DST change skips it."""
    found = []
    candidates = []
    for fold in (0, 1):
        u = wall.replace(tzinfo=tz, fold=fold).timestamp()
        candidates.append(u)
        if datetime.fromtimestamp(u, tz).replace(tzinfo=None) == wall:
            found.append(u)
    if found:
        return min(found)
    lo, hi = int(min(candidates)), int(max(candidates)) + 1  # lo reads before wall, hi after it
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, tz).replace(tzinfo=None) >= wall:
            hi = mid
        else:
            lo = mid
    return float(hi)


def parse_every(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*", text)
    if not m:
        raise InputError(f"--every {text!r}: use a duration like 30s, 15m, 6h or 1d")
    seconds = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}[m.group(2)]
    if not 1 <= seconds <= 366 * 86400:
        raise InputError(f"--every {text!r}: between 1 second and a year")
    return seconds


def format_seconds(s: float) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n and s % n == 0:
            return f"{s / n:g}{unit}"
    return f"{s:g}s"


# -- the Celery schedule, entry and scheduler RedBeat runs -------------------------------------------
def _celery_schedule_class() -> type:
    from celery.schedules import BaseSchedule, schedstate

    class FnbenchSchedule(BaseSchedule):
        """A Recurrence as a celery schedule (RedBeat asks it is_due / remaining_estimate)."""

        def __init__(self, recurrence: Recurrence, app: Any = None) -> None:
            super().__init__(app=app)
            self.recurrence = recurrence

        @staticmethod
        def _ts(last_run_at: datetime | None) -> float:
            if last_run_at is None:
                return 0.0
            if last_run_at.tzinfo is None:
                last_run_at = last_run_at.replace(tzinfo=UTC)
            return last_run_at.timestamp()

        def _last(self, last_run_at: datetime | None) -> float:
            return max(self._ts(last_run_at), self.recurrence.anchor)

        def remaining_estimate(self, last_run_at: datetime) -> timedelta:
            return timedelta(seconds=self.recurrence.next_after(self._last(last_run_at)) - time.time())

        def is_due(self, last_run_at: datetime) -> Any:
            now = time.time()
            due = self.recurrence.next_after(self._last(last_run_at))
            if due <= now:
                return schedstate(True, max(0.05, self.recurrence.next_after(now) - now))
            return schedstate(False, due - now)

        def __reduce__(self) -> Any:
            return (self.__class__, (self.recurrence,))

        def __repr__(self) -> str:
            return f"<fnbench {self.recurrence.describe()}>"

    return FnbenchSchedule


_classes: dict[str, Any] = {}


def celery_classes() -> dict[str, Any]:
    """FnbenchSchedule, Entry and Scheduler (built on first use: celery-redbeat is imported lazily)."""
    if _classes:
        return _classes
    import json

    from redbeat.decoder import RedBeatJSONDecoder, RedBeatJSONEncoder
    from redbeat.schedulers import RedBeatScheduler, RedBeatSchedulerEntry, get_redis

    schedule_cls: Any = _celery_schedule_class()

    class Encoder(RedBeatJSONEncoder):
        def default(self, obj: Any) -> Any:
            if isinstance(obj, schedule_cls):
                return {"__type__": "fnbench", **obj.recurrence.to_dict()}
            return super().default(obj)

    class Decoder(RedBeatJSONDecoder):
        def dict_to_object(self, d: dict[str, Any]) -> Any:
            if d.get("__type__") == "fnbench":
                return schedule_cls(Recurrence.from_dict(d))
            return super().dict_to_object(d)

    class FnbenchEntry(RedBeatSchedulerEntry):
        @staticmethod
        def decode_definition(definition: Any) -> Any:
            return json.loads(definition, cls=Decoder)

        def save(self) -> Any:
            definition = {"name": self.name, "task": self.task, "args": self.args, "kwargs": self.kwargs,
                          "options": self.options, "schedule": self.schedule, "enabled": self.enabled}
            meta = {"last_run_at": self.last_run_at}
            with get_redis(self.app).pipeline() as pipe:
                pipe.hset(self.key, "definition", json.dumps(definition, cls=Encoder))
                pipe.hsetnx(self.key, "meta", json.dumps(meta, cls=RedBeatJSONEncoder))
                pipe.zadd(self.app.redbeat_conf.schedule_key, {self.key: self.score})
                pipe.execute()
            return self

    class Scheduler(RedBeatScheduler):
        """RedBeat, with each firing named by its due time (the claim that makes it run once)."""

        Entry = FnbenchEntry

        def apply_async(self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any) -> Any:
            slot = entry.schedule.recurrence.next_after(entry.schedule._last(entry.last_run_at)) \
                if isinstance(entry.schedule, schedule_cls) else time.time()
            entry = self.reserve(entry) if advance else entry
            body = {**(entry.kwargs or {}), "fire": f"{slot:.3f}", "due": slot}
            return self.send_task(entry.task, (), body, producer=producer, **(entry.options or {}))

    _classes.update(schedule=schedule_cls, entry=FnbenchEntry, scheduler=Scheduler)
    return _classes


def scheduler_app(broker: str, loop_interval_s: float = LOOP_INTERVAL_S, lock_timeout_s: float = LOCK_TIMEOUT_S) -> Any:
    """The Celery app of schedules: RedBeat on the broker's Redis under fnbench's prefix."""
    from celery import Celery

    app = Celery("fnbench-scheduler", broker=broker)
    app.conf.update(
        task_serializer="json", accept_content=["json"], result_serializer="json", task_ignore_result=True,
        enable_utc=True, timezone="UTC", worker_prefetch_multiplier=1, worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True, worker_send_task_events=False,
        task_routes={keys.SCHEDULED_TASK: {"queue": keys.SCHEDULED_QUEUE}},
        task_default_queue=keys.SCHEDULED_QUEUE,
        redbeat_redis_url=broker, redbeat_key_prefix=keys.REDBEAT_PREFIX, redbeat_lock_timeout=int(lock_timeout_s),
        redbeat_redis_options={"retry_period": 30}, beat_max_loop_interval=loop_interval_s,
        beat_scheduler="orchestrator.schedule:LazyScheduler",
    )
    return app


# -- the store of schedule records ----------------------------------------------------------------
def check_redis(r: Any) -> None:
    """Refuse a Redis that evicts any key under memory pressure: schedules would vanish silently."""
    try:
        policy = str(r.info("memory").get("maxmemory_policy", ""))
    except Exception as exc:  # noqa: BLE001
        raise SetupError(f"cannot read Redis's maxmemory-policy: {exc}") from None
    if policy.startswith("allkeys-"):
        raise SetupError(f"Redis maxmemory-policy is {policy}: it may evict schedule entries silently; "
                         "set `maxmemory-policy noeviction` (or a volatile-* policy) on this Redis")


# A run's outcome, written by the scheduler after each firing: kept apart from the signed record (its own
# hash field), never used to decide whether or what to run.
BOOKKEEPING = ("runs", "last_run", "last_started", "last_exit", "last_verdict", "last_due")


def _canonical(rec: dict[str, Any]) -> bytes:
    # The whole record (paused and version included) but its signature and bookkeeping: a field added
    # later is signed without anyone remembering to.
    signed = {k: v for k, v in rec.items() if k != "sig" and k not in BOOKKEEPING}
    return orjson.dumps(signed, option=orjson.OPT_SORT_KEYS)


def sign(rec: dict[str, Any], key: bytes) -> str:
    return hmac.new(key, _DOMAIN + _canonical(rec), hashlib.sha256).hexdigest()


def verified(rec: dict[str, Any], key: bytes) -> bool:
    return isinstance(rec.get("version"), int) and \
        hmac.compare_digest(sign(rec, key).encode(), str(rec.get("sig", "")).encode("utf-8", "replace"))


def _firing_sig(name: str, fire: str, due: float, key: bytes) -> str:
    body = orjson.dumps({"name": name, "fire": fire, "due": due}, option=orjson.OPT_SORT_KEYS)
    return hmac.new(key, b"fnbench-firing-v1\n" + body, hashlib.sha256).hexdigest()


def _next_version(*previous: int) -> int:
    """Above every earlier version, and never below the clock (milliseconds): a schedule made again after
    its Redis was reset is newer than anything a scheduler remembers of the old one."""
    return max(max(previous, default=0) + 1, int(time.time() * 1000))


def versions_file(broker: str) -> Path:
    """Where `fnbench scheduler` keeps the versions it has seen: private, one file per Redis database."""
    from urllib.parse import urlsplit

    from workers import once

    u = urlsplit(broker)
    where = f"{u.hostname}:{u.port}{u.path}"  # never the password
    return once.prepare().parent / f"schedule-versions-{hashlib.sha256(where.encode()).hexdigest()[:16]}.json"


class Versions:
    """The newest version of each schedule this scheduler has verified, and the removals it has seen:
    in memory and in a private file on its host (``FNBENCH_STATE_DIR``), so an older signed record
    written back into Redis (a paused schedule resumed, a removed one revived) is refused."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.seen: dict[str, int] = {}
        self.lock = threading.Lock()
        if path is not None:
            try:
                data = orjson.loads(path.read_bytes())
                self.seen = {str(k): int(v) for k, v in data.items() if isinstance(v, int)}
            except (OSError, orjson.JSONDecodeError, AttributeError, ValueError):
                self.seen = {}

    def observe(self, name: str, version: int) -> bool:
        """Note ``version`` of ``name``; False when a newer one was seen (a rollback)."""
        with self.lock:
            known = self.seen.get(name, 0)
            if version < known:
                return False
            if version > known:
                self.seen[name] = version
                self._save()
            return True

    def _save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(orjson.dumps(self.seen))
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("cannot save the schedule versions seen to %s: %s", self.path, exc)


class Schedules:
    """Schedule records (keys.schedule) and their RedBeat entries on one Redis."""

    def __init__(self, broker: str, key: bytes | None = None) -> None:

        self.broker = broker
        self.r: Any = Store(broker).r
        self.app = scheduler_app(broker)
        self._key = key

    @property
    def key(self) -> bytes:
        if self._key is None:
            from workers import auth

            self._key = auth.load_key()
        return self._key

    def _entry(self, name: str, rec: Recurrence, enabled: bool = True) -> Any:
        c = celery_classes()
        return c["entry"](name=name, task=keys.SCHEDULED_TASK, schedule=c["schedule"](rec), args=(),
                          kwargs={"name": name}, enabled=enabled,
                          options={"queue": keys.SCHEDULED_QUEUE, "expires": min(EXPIRES_S, max(30.0, _period(rec)))}, app=self.app)

    def _redbeat_key(self, name: str) -> str:
        return f"{keys.REDBEAT_PREFIX}{name}"

    def get(self, name: str) -> dict[str, Any]:
        """The record as stored (signed fields) with its bookkeeping; InputError when there is none."""
        raw, last = self.r.hmget(keys.schedule(name), ["record", "last"])
        if not raw:
            raise InputError(f"no schedule named {name!r} (see `fnbench schedule list`)")
        try:
            rec = orjson.loads(raw)
            extra = orjson.loads(last) if last else {}
        except orjson.JSONDecodeError:
            raise InputError(f"schedule {name!r}: its record in Redis is not JSON") from None
        if not isinstance(rec, dict):
            raise InputError(f"schedule {name!r}: its record in Redis is not a record")
        out: dict[str, Any] = {"runs": 0, "last_run": None, "last_verdict": None}
        for source in (rec, extra if isinstance(extra, dict) else {}):  # a record of the form before held them
            out.update({k: v for k, v in source.items() if k in BOOKKEEPING})
        return {**{k: v for k, v in rec.items() if k not in BOOKKEEPING}, **out}

    def signed_record(self, name: str) -> dict[str, Any]:
        """The signed fields of the record (what its signature covers, and the signature)."""
        return {k: v for k, v in self.get(name).items() if k not in BOOKKEEPING}

    def tombstone(self, name: str) -> dict[str, Any] | None:
        """The verified record of the schedule's removal, or None."""
        raw = self.r.hget(keys.SCHEDULES_REMOVED, name)
        try:
            stone = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            return None
        if isinstance(stone, dict) and stone.get("removed") is True and stone.get("name") == name \
                and verified(stone, self.key):
            return stone
        return None

    def _put(self, rec: dict[str, Any]) -> None:
        """Store the record signed, with a version above every one of this name (removals included)."""
        rec = {k: v for k, v in rec.items() if k not in BOOKKEEPING and k != "sig"}
        stone = self.tombstone(rec["name"])
        rec["version"] = _next_version(int(rec.get("version") or 0), int(stone["version"]) if stone else 0)
        rec["sig"] = sign(rec, self.key)
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(keys.schedule(rec["name"]), "record", orjson.dumps(rec))
        pipe.sadd(keys.SCHEDULES, rec["name"])
        pipe.hdel(keys.SCHEDULES_REMOVED, rec["name"])
        pipe.execute()

    def add(self, name: str, spec_path: Path, cron: str | None = None, every: str | None = None,
            tz: str | None = None, local: bool = False, workers: int | None = None,
            retention_s: float | None = None) -> dict[str, Any]:

        if not NAME_RE.fullmatch(name):
            raise InputError(f"schedule name {name!r}: use 1-100 letters, digits, '.', '_' or '-'")
        text = spec.read_text(spec_path)
        b = session.runnable(text, str(spec_path))
        recurrence = Recurrence.parse(cron, every, tz)
        check_redis(self.r)
        _ = self.key  # a schedule cannot be signed without it
        if self.r.hexists(keys.schedule(name), "record"):
            raise InputError(f"a schedule named {name!r} exists; `fnbench schedule update {name}` changes it")
        rec = {"name": name, "spec": text, "spec_path": str(spec_path.resolve()), "spec_name": b.name,
               "git": git_describe(spec_path), "recurrence": recurrence.to_dict(), "local": local,
               "workers": workers, "retention_s": retention_s, "created": time.time(), "paused": False}
        self._put(rec)
        entry = self._entry(name, recurrence)
        entry.last_run_at = datetime.fromtimestamp(recurrence.anchor, UTC)
        entry.save()
        return rec

    def update(self, name: str, spec_path: Path | None = None, cron: str | None = None, every: str | None = None,
               tz: str | None = None) -> dict[str, Any]:
        """Re-read the spec file (its text is stored again) and/or change the recurrence."""

        rec = self.signed_record(name)
        path = spec_path or Path(rec["spec_path"])
        text = spec.read_text(path)
        b = session.runnable(text, str(path))
        rec.update(spec=text, spec_path=str(path.resolve()), spec_name=b.name, git=git_describe(path),
                   updated=time.time())
        if cron or every:
            recurrence = Recurrence.parse(cron, every, tz or rec["recurrence"].get("tz"))
            rec["recurrence"] = recurrence.to_dict()
            entry = self._entry(name, recurrence, enabled=not rec.get("paused"))
            entry.save()
            entry.reschedule(datetime.now(UTC))
        self._put(rec)
        return rec

    def names(self) -> list[str]:
        return sorted(n.decode() for n in self.r.smembers(keys.SCHEDULES))

    def last_run_at(self, name: str) -> float | None:
        from redbeat.schedulers import RedBeatSchedulerEntry

        meta = self.r.hget(self._redbeat_key(name), "meta")
        last = RedBeatSchedulerEntry.decode_meta(meta).get("last_run_at") if meta else None
        return last.timestamp() if isinstance(last, datetime) else None

    def status(self, name: str) -> dict[str, Any]:
        """The record with its next due time (None when paused) and beat's last firing."""
        rec = self.get(name)
        recurrence = Recurrence.from_dict(rec["recurrence"])
        last = self.last_run_at(name)
        due = None if rec.get("paused") else recurrence.next_after(max(last or 0.0, recurrence.anchor))
        stone = self.tombstone(name)
        ok = verified(rec, self.key) and (stone is None or int(stone["version"]) < int(rec["version"]))
        return {**rec, "next_due": due, "last_fired": last, "describe": recurrence.describe(), "verified": ok}

    def set_paused(self, name: str, paused: bool) -> dict[str, Any]:
        rec = self.signed_record(name)
        recurrence = Recurrence.from_dict(rec["recurrence"])
        rec["paused"] = paused
        self._put(rec)
        entry = self._entry(name, recurrence, enabled=not paused)
        entry.save()
        if not paused:  # the next firing after now, not a catch-up of the paused time
            entry.reschedule(datetime.now(UTC))
        return rec

    def remove(self, name: str) -> None:
        """Delete the schedule, leaving a signed tombstone whose version is above every record of it: a
        record written back later is refused by the schedulers (removal is final)."""
        rec = self.signed_record(name)
        version = int(rec.get("version") or 0) if verified(rec, self.key) else 0
        stone = self.tombstone(name)
        stone_rec: dict[str, Any] = {"name": name, "removed": True, "at": time.time(),
                                     "version": _next_version(version, int(stone["version"]) if stone else 0)}
        stone_rec["sig"] = sign(stone_rec, self.key)
        self._entry(name, Recurrence.from_dict(rec["recurrence"])).delete()
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(keys.SCHEDULES_REMOVED, name, orjson.dumps(stone_rec))
        pipe.delete(keys.schedule(name))
        pipe.srem(keys.SCHEDULES, name)
        pipe.execute()

    def run_now(self, name: str) -> str:
        """Queue one firing now; it is signed (only a holder of the task key can fire a schedule by hand)
        and, like every firing, refused while the schedule is paused."""
        rec = self.get(name)
        if rec.get("paused"):
            raise InputError(f"schedule {name!r} is paused; `fnbench schedule resume {name}` first")
        fire, due = f"manual-{uuid.uuid4().hex[:12]}", round(time.time(), 3)
        self.app.send_task(keys.SCHEDULED_TASK, (), {"name": name, "fire": fire, "due": due,
                                                     "sig": _firing_sig(name, fire, due, self.key)},
                           queue=keys.SCHEDULED_QUEUE, expires=EXPIRES_S)
        return fire

    def note(self, name: str, **fields: Any) -> None:
        """Record a run's outcome (last run, verdict, count) in its own field, apart from the signed record."""
        raw = self.r.hget(keys.schedule(name), "last")
        try:
            last = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            last = {}
        last = {k: v for k, v in (last if isinstance(last, dict) else {}).items() if k in BOOKKEEPING}
        last.update({k: v for k, v in fields.items() if k in BOOKKEEPING})
        last["runs"] = int(last.get("runs") or 0) + (1 if "last_run" in fields else 0)
        if self.r.exists(keys.schedule(name)):
            self.r.hset(keys.schedule(name), "last", orjson.dumps(last))


def _period(rec: Recurrence) -> float:
    if rec.every_s:
        return rec.every_s
    first = rec.next_after(time.time())
    return max(60.0, rec.next_after(first) - first)


def LazyScheduler(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 - celery imports it by name
    return celery_classes()["scheduler"](*args, **kwargs)


# -- running a firing ---------------------------------------------------------------------------------
@dataclass
class SchedulerConfig:
    broker: str
    results_root: Path = Path("results")
    concurrency: int = 1
    loop_interval_s: float = LOOP_INTERVAL_S
    lock_timeout_s: float = LOCK_TIMEOUT_S
    loglevel: str = "WARNING"
    html: bool = False


_config: SchedulerConfig | None = None


_versions: Versions | None = None
# Set when the scheduler shuts down (SIGTERM, SIGINT): every scheduled run in flight stops (recorded as
# interrupted) and no new firing starts, so the worker's warm shutdown ends within seconds.
_shutdown = threading.Event()
SHUTDOWN_JOIN_S = 1.0  # how long the shutdown waits for beat to let go of its lock (Redis may be away)
_fired: dict[tuple[str, str], float] = {}  # firings this process claimed → when (bounded by EXPIRES_S)
_fired_lock = threading.Lock()


def _firing_refused(schedules: Schedules, name: str, fire: str, due: float | None,
                    sig: str | None) -> tuple[str, str] | None:
    """(state, why) when this firing must not run; None to run it.  Every firing is checked the same way,
    by hand or by beat: a signed, current record that is not paused, not removed and not rolled back;
    a beat firing only at a due time of that record's recurrence, a manual one only signed by a holder
    of the task key; each within its expiry and once."""
    now = time.time()
    if not isinstance(due, (int, float)) or isinstance(due, bool) or not now - EXPIRES_S <= due <= now + 60.0:
        return "refused", "the firing's due time is missing or outside its hour"
    if fire.startswith("manual-") and (not isinstance(sig, str) or not hmac.compare_digest(
            _firing_sig(name, fire, due, schedules.key).encode(), sig.encode("utf-8", "replace"))):
        return "refused", "a manual firing not signed with the task key"
    versions = _versions or Versions(None)
    stone = schedules.tombstone(name)
    if stone is not None:
        versions.observe(name, int(stone["version"]))
    try:
        rec = schedules.signed_record(name)
    except InputError:
        return "gone", "the schedule was removed"
    if not verified(rec, schedules.key):
        return "refused", "the record's signature does not match the task key (altered, or written before records were versioned: `fnbench schedule update` signs it again)"
    if stone is not None and int(stone["version"]) > rec["version"]:
        return "refused", "the schedule was removed; its record was written back"
    if not versions.observe(name, rec["version"]):
        return "refused", "an older version of the record was written back (rolled back)"
    if rec.get("paused"):
        return "paused", "the schedule is paused"
    if not fire.startswith("manual-"):
        slot = Recurrence.from_dict(rec["recurrence"]).next_after(due - 0.001)
        if abs(slot - due) > 0.002 or fire != f"{due:.3f}":
            return "refused", "not a due time of the schedule's recurrence"
    with _fired_lock:  # the claim below is Redis's; this one is the process's own
        for k in [k for k, t in _fired.items() if t < now - 2 * EXPIRES_S]:
            del _fired[k]
        if (name, fire) in _fired:
            return "duplicate", "this firing already ran here"
        _fired[(name, fire)] = now
    claim = orjson.dumps({"host": socket.gethostname(), "pid": os.getpid(), "at": now, "due": due})
    if not schedules.r.set(keys.schedule_fire(name, fire), claim, nx=True, ex=FIRE_CLAIM_TTL_S):
        return "duplicate", "the firing was already claimed; not running it twice"
    return None


def run_firing(name: str, fire: str, due: float | None = None, sig: str | None = None) -> dict[str, Any]:
    """Run one firing of a schedule headless, once: claim it, verify the record, run, record, check."""
    assert _config is not None, "run_firing runs inside `fnbench scheduler`"
    cfg = _config
    if _shutdown.is_set():
        log.warning("schedule %s: firing %s not run: the scheduler is shutting down", name, fire)
        return {"state": "shutdown", "reason": "the scheduler is shutting down"}
    schedules = Schedules(cfg.broker)
    refused = _firing_refused(schedules, name, fire, due, sig)
    if refused:
        state, why = refused
        (log.warning if state in ("paused", "gone") else log.error)("schedule %s: firing %s not run: %s", name,
                                                                    fire, why)
        if state == "refused":
            schedules.note(name, last_verdict=f"refused: {why}")
        return {"state": state, "reason": why}
    rec = schedules.get(name)
    b = session.runnable(rec["spec"], f"schedule {name}")  # the same check as `fnbench run` and `validate`
    console = Console(stderr=True, quiet=cfg.loglevel.upper() not in ("INFO", "DEBUG"))
    where = session.Placement(None if rec.get("local") else cfg.broker, rec.get("workers") or (1 if rec.get("local") else 0),
                              rec.get("retention_s") or session.DEFAULT_RETENTION_S)
    started = time.time()

    def say(message: str) -> None:
        log.warning("%s", message)

    outcome = session.run(b, rec["spec"], where, results=cfg.results_root, console=console, interactive=False,
                          html=cfg.html, warn=say, stop_event=_shutdown,
                          recording=session.Recording(git=rec.get("git") or "", schedule=name,
                                                      extra={"fire": fire, "due": due}, history_broker=cfg.broker))
    verdict = "not checked"
    store = history.RedisHistory(schedules.r)
    try:
        entries = store.entries(rec["spec_name"], limit=history.WINDOW * 4)
        result = history.check(rec["spec_name"], entries)
        verdict = result.verdict
        if result.newest == outcome.result.run_id:  # kept with the run: the trend page marks it
            store.annotate(rec["spec_name"], outcome.result.run_id, {"check": result.to_dict()})
        if result.failed:
            log.warning("%s", result.message())
            history.notify(result, say)
    except Exception as exc:  # noqa: BLE001 - the run is recorded; say why it was not judged
        log.warning("schedule %s: regression check failed: %s", name, exc)
    refresh_trend(store, rec["spec_name"], cfg.results_root)
    schedules.note(name, last_run=outcome.result.run_id, last_started=started, last_exit=outcome.exit_code,
                   last_verdict=verdict, last_due=due)
    return {"state": "done", "run_id": outcome.result.run_id, "exit_code": outcome.exit_code, "verdict": verdict}


def refresh_trend(store: history.History, spec_name: str, results_root: Path) -> Path | None:
    """Write the spec's trend page (RESULTS/trend-NAME.html) again after a firing, so it can be served
    statically; a page that cannot be written is a warning."""
    from orchestrator.report import trend

    try:
        entries = store.entries(spec_name)
        if not entries:
            return None
        return trend.write_trend(spec_name, entries, trend.default_trend_path(results_root, spec_name), results_root)
    except Exception as exc:  # noqa: BLE001 - the run and its verdict stand without the page
        log.warning("schedule: trend page of %s not refreshed: %s", spec_name, exc)
        return None


def _register_task(app: Any) -> None:
    @app.task(name=keys.SCHEDULED_TASK)
    def scheduled_run(name: str = "", fire: str = "", due: float | None = None, sig: str | None = None,
                      **_: Any) -> dict[str, Any]:
        try:
            return run_firing(str(name), str(fire), due, sig)
        except Exception as exc:  # logged; the next firing runs as planned
            log.exception("schedule %s: firing %s failed: %s", name, fire, exc)
            return {"state": "failed", "error": str(exc)[:300]}


def serve(cfg: SchedulerConfig) -> None:
    """`fnbench scheduler`: beat (RedBeat; one active, the others standing by) and a worker for runs."""
    from celery import beat, signals

    from workers import auth

    global _config
    if cfg.lock_timeout_s < MIN_LOCK_LOOPS * cfg.loop_interval_s:
        raise InputError(f"--lock-timeout {cfg.lock_timeout_s:g}s must be at least {MIN_LOCK_LOOPS} x the loop "
                         f"interval ({cfg.loop_interval_s:g}s), or beat loses its lock between ticks")

    check_redis(Store(cfg.broker).r)
    auth.load_key()  # records are verified and shards signed with it
    global _versions
    _versions = Versions(versions_file(cfg.broker))
    _config = cfg
    logging.basicConfig(level=getattr(logging, cfg.loglevel.upper(), logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = scheduler_app(cfg.broker, cfg.loop_interval_s, cfg.lock_timeout_s)
    _register_task(app)
    stopping = threading.Event()
    current: list[Any] = []
    _shutdown.clear()

    def shutting_down(**_: Any) -> None:
        # Celery's warm shutdown waits for the running tasks: stop them (they see _shutdown within a poll).
        _shutdown.set()
        stopping.set()

    signals.worker_shutting_down.connect(shutting_down, weak=False)

    def beat_main() -> None:
        # RedBeat's tick raises LockNotOwnedError when its lock expired under it (sibson/redbeat#230): a
        # beat that dies must not leave this scheduler running as a worker only.  A fresh beat takes
        # the lock again (or stands by while another scheduler holds it).
        while not stopping.is_set():
            service = beat.Service(app, max_interval=cfg.loop_interval_s, scheduler_cls=celery_classes()["scheduler"])
            current[:] = [service]
            try:
                service.start()  # beat_init → RedBeat takes the lock (a standby blocks here until it can)
            except Exception:  # noqa: BLE001
                log.exception("beat stopped; starting it again")
            stopping.wait(cfg.loop_interval_s)

    def watch_versions() -> None:
        # Learn each new version (a pause, a removal) as it is written, not only at the next firing: a
        # record rolled back later is then refused.
        schedules = Schedules(cfg.broker)
        while not stopping.wait(cfg.loop_interval_s):
            try:
                for name in {*schedules.names(), *(n.decode() for n in schedules.r.hkeys(keys.SCHEDULES_REMOVED))}:
                    stone = schedules.tombstone(name)
                    if stone is not None:
                        _versions.observe(name, int(stone["version"]))
                    with contextlib.suppress(InputError):
                        rec = schedules.signed_record(name)
                        if verified(rec, schedules.key):
                            _versions.observe(name, rec["version"])
            except Exception as exc:  # noqa: BLE001 - Redis away: the firings check again
                log.debug("schedule versions: %s", exc)

    thread = threading.Thread(target=beat_main, name="fnbench-beat", daemon=True)
    thread.start()
    threading.Thread(target=watch_versions, name="fnbench-schedule-versions", daemon=True).start()
    worker = app.Worker(queues=[keys.SCHEDULED_QUEUE], pool="threads", concurrency=max(1, cfg.concurrency),
                        loglevel=cfg.loglevel.upper(), hostname=f"fnbench-scheduler-{os.getpid()}@{socket.gethostname()}",
                        without_mingle=True, without_gossip=True, without_heartbeat=True, quiet=True)
    try:
        worker.start()
    finally:
        _shutdown.set()
        stopping.set()

        def let_go() -> None:
            for service in current:
                service.stop()  # releases the lock: a standby takes over at once

        # Bounded: with Redis away, RedBeat retries each call for its retry period; the beat thread is a
        # daemon and goes with the process.
        releasing = threading.Thread(target=let_go, name="fnbench-beat-stop", daemon=True)
        releasing.start()
        releasing.join(SHUTDOWN_JOIN_S)
        thread.join(SHUTDOWN_JOIN_S)
