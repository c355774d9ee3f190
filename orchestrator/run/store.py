"""Run records, shards, heartbeats and intervals of distributed runs in Redis (keys in keys.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import redis

from orchestrator.errors import InputError, SetupError
from orchestrator.run.result import BadRecords
from orchestrator.run.rollup import Rollup
from workers import auth, histograms, keys
from workers.contract import Interval, SchemaError, Shard

WORKER_STALE_S = 6.0  # a registered worker not seen for this long is offline
RUN_FIELDS = ("start_at", "total_s")  # a run record without these is not whole (Store.meta)


def _redacted(url: str) -> str:
    """The URL without its password (never printed)."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://…@{rest.rsplit('@', 1)[1]}"


def shard_record(shard: Shard, key: bytes | None) -> bytes:
    """A shard as stored in its run: ``{"shard": {...}, "sig": seal}`` (``sig`` null without a key)."""
    d = shard.to_dict()
    return orjson.dumps({"shard": d, "sig": auth.seal(d, key) if key is not None else None})


def parse_shard_record(raw: bytes) -> tuple[Shard | None, dict[str, Any] | None, str | None]:
    """(Shard, the stored shard dict, its seal) of a stored record; (None, None, None) when it is not one.
    A record of the form before seals (a bare shard) has no seal."""
    try:
        obj = orjson.loads(raw)
        if isinstance(obj, dict) and isinstance(obj.get("shard"), dict):
            d, sig = obj["shard"], obj.get("sig")
        else:
            d, sig = obj, None
        return Shard.from_dict(d), d, (sig if isinstance(sig, str) else None)
    except Exception:  # noqa: BLE001 - anything in Redis may be written by anyone
        return None, None, None


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.bad = BadRecords()  # stream entries and rollups that were not readable records
        # redis-py types every reply as sync | awaitable; this client is sync.
        self.r: Any = redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=3.0)
        try:
            self.r.ping()
        except redis.RedisError as exc:
            raise SetupError(f"cannot reach the broker at {_redacted(url)}: {exc}") from None

    # -- runs ----------------------------------------------------------------------------------
    def create_run(self, run_id: str, meta: dict[str, Any], shards: list[Shard],
                   retention_s: float = keys.RETENTION_S, key: bytes | None = None) -> None:
        """Record a run; every key of it expires ``retention_s`` after the run's planned end.  Each shard is
        stored with its seal under the task ``key`` (workers/auth.py): only a sealed shard is re-dispatched
        by an orchestrator that attaches later (`fnbench watch`)."""
        meta = {**meta, "retention_s": retention_s}
        pipe = self.r.pipeline(transaction=True)
        pipe.zadd(keys.RUNS, {run_id: time.time()})
        pipe.hset(keys.run(run_id), mapping={k: orjson.dumps(v) for k, v in meta.items()})
        if shards:
            pipe.hset(keys.shards(run_id), mapping={s.shard_id: shard_record(s, key) for s in shards})
            pipe.hset(keys.attempts(run_id), mapping={s.shard_id: s.attempt for s in shards})
        for name in keys.all_of_run(run_id):
            pipe.expire(name, self._ttl(meta))
        pipe.execute()

    @staticmethod
    def _ttl(meta: dict[str, Any]) -> int:
        until_end = max(0.0, float(meta.get("start_at", time.time())) + float(meta.get("total_s", 0.0)) - time.time())
        retention = float(meta.get("retention_s", keys.RETENTION_S))
        return int(until_end + retention + min(60.0, retention)) + 1

    def renew(self, run_id: str) -> None:
        """Set the run's retention on every key it has now (workers create some during the run)."""
        ttl = self._ttl(self.meta(run_id))
        pipe = self.r.pipeline(transaction=False)
        for key in keys.all_of_run(run_id):
            pipe.expire(key, ttl)
        pipe.execute()

    def gc(self, older_than_s: float | None = None, dry_run: bool = False) -> dict[str, Any]:
        """Forget runs whose record expired (their leftover keys and their entry in the run index),
        and with ``older_than_s`` every run created longer ago than that.  Returns what it removed."""
        now = time.time()
        removed: list[str] = []
        deleted = 0
        before = int(self.r.info("memory").get("used_memory", 0))
        for raw, created in self.r.zrange(keys.RUNS, 0, -1, withscores=True):
            run_id = raw.decode()
            expired = not self.r.exists(keys.run(run_id))
            too_old = older_than_s is not None and now - created > older_than_s
            if not (expired or too_old):
                continue
            removed.append(run_id)
            if not dry_run:
                pipe = self.r.pipeline(transaction=True)
                pipe.delete(*keys.all_of_run(run_id))
                pipe.zrem(keys.RUNS, run_id)
                deleted += int(pipe.execute()[0])
        after = int(self.r.info("memory").get("used_memory", 0))
        return {"runs": removed, "keys_deleted": deleted, "dry_run": dry_run,
                "used_memory_before": before, "used_memory_after": after}

    def meta(self, run_id: str) -> dict[str, Any]:
        """The run's record; InputError (exit 2) when it is not there, or not whole (what is missing is
        named: a Redis restarted without persistence loses the record, and a later write re-creates a part)."""
        raw = self.r.hgetall(keys.run(run_id))
        if not raw:
            raise InputError(f"run {run_id!r} is not in the store (see `fnbench status`)")
        meta: dict[str, Any] = {}
        unreadable = []
        for k, v in raw.items():
            try:
                meta[k.decode(errors="replace")] = orjson.loads(v)
            except orjson.JSONDecodeError:
                unreadable.append(k.decode(errors="replace")[:40])
        missing = [f for f in RUN_FIELDS if not isinstance(meta.get(f), (int, float)) or isinstance(meta.get(f), bool)]
        if missing or unreadable:
            what = ", ".join([*(f"{f} missing" for f in missing), *(f"{f} unreadable" for f in unreadable)])
            raise InputError(
                f"run {run_id!r}: the store holds only part of its record ({what}; it has "
                f"{', '.join(sorted(meta)[:12]) or 'nothing else'}): the store lost the run, e.g. Redis restarted "
                "without persistence. Its result is in the run folder (results/<run_id>) of the orchestrator "
                "that ran it: `fnbench report results/<run_id>`")
        return meta

    def has_record(self, run_id: str) -> bool:
        """Whether the run's record is whole in the store (its start is there)."""
        return bool(self.r.hexists(keys.run(run_id), "start_at"))

    def set_meta(self, run_id: str, **fields: Any) -> None:
        self.r.hset(keys.run(run_id), mapping={k: orjson.dumps(v) for k, v in fields.items()})

    def runs(self, limit: int = 20) -> list[str]:
        return [r.decode() for r in self.r.zrevrange(keys.RUNS, 0, limit - 1)]

    def shards(self, run_id: str) -> dict[str, Shard]:
        """The current attempt of each shard as stored (unverified: for status and following, never for
        signing; records that are not shards are left out)."""
        out = {}
        for k, v in self.r.hgetall(keys.shards(run_id)).items():
            shard = parse_shard_record(v)[0]
            if shard is not None:
                out[k.decode()] = shard
        return out

    def shard_records(self, run_id: str) -> dict[str, bytes]:
        """shard_id → the stored record as it is (see parse_shard_record)."""
        return {k.decode(): v for k, v in self.r.hgetall(keys.shards(run_id)).items()}

    def shard_record(self, run_id: str, shard_id: str) -> bytes | None:
        raw = self.r.hget(keys.shards(run_id), shard_id)
        return bytes(raw) if raw is not None else None

    def supersede(self, shard: Shard, key: bytes | None = None) -> None:
        """Make ``shard`` (a new attempt) the current one; the old attempt's worker stops itself."""
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(keys.shards(shard.run_id), shard.shard_id, shard_record(shard, key))
        pipe.hset(keys.attempts(shard.run_id), shard.shard_id, shard.attempt)
        pipe.execute()

    # -- liveness ------------------------------------------------------------------------------
    def beats(self, run_id: str) -> dict[str, float]:
        return {k.decode(): float(v) for k, v in self.r.hgetall(keys.beats(run_id)).items()}

    def claims(self, run_id: str) -> dict[str, dict[str, Any]]:
        return {k.decode(): orjson.loads(v) for k, v in self.r.hgetall(keys.claims(run_id)).items()}

    def rejections(self, run_id: str) -> list[dict[str, Any]]:
        """Deliveries of the run's (verified) tasks that workers did not run (keys.rejections)."""
        return self._records(keys.rejections(run_id))

    def region_rejections(self, region: str) -> list[dict[str, Any]]:
        """Tasks the workers of ``region`` rejected unverified (keys.region_rejections), oldest first."""
        return self._records(keys.region_rejections(region))

    def _records(self, key: str) -> list[dict[str, Any]]:
        """The JSON objects of a Redis list written by workers; anything else in it is skipped."""
        out = []
        for raw in self.r.lrange(key, 0, -1):
            try:
                rec = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def stop(self, run_id: str) -> None:
        self.r.set(keys.stop(run_id), b"1", ex=7 * 86400)

    def stopped(self, run_id: str) -> bool:
        return bool(self.r.exists(keys.stop(run_id)))

    def workers(self) -> dict[str, dict[str, Any]]:
        """Worker nodes seen recently: node → {region, concurrency, metrics_port, seen}."""
        now = time.time()
        online = {}
        for node, raw in self.r.hgetall(keys.WORKERS).items():
            rec = orjson.loads(raw)
            if now - rec.get("seen", 0) <= WORKER_STALE_S:
                online[node.decode()] = rec
        return online

    def processes_by_region(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for rec in self.workers().values():
            out[rec["region"]] = out.get(rec["region"], 0) + int(rec.get("concurrency", 1))
        return out

    def queue_depth(self, region: str) -> int:
        return int(self.r.llen(keys.queue(region)))

    # -- intervals and gaps --------------------------------------------------------------------
    def read_intervals(self, run_id: str, after: str = "0-0", block_ms: int | None = None,
                       count: int = 1000) -> tuple[list[Interval], str]:
        """Intervals after stream id ``after`` (blocking up to ``block_ms``); returns them and the last id."""
        reply = self.r.xread({keys.intervals(run_id): after}, count=count, block=block_ms)
        out: list[Interval] = []
        for _, entries in reply or []:
            for entry_id, fields in entries:
                after = entry_id.decode()
                iv = self._interval(after, fields, count_bad=True)
                if iv is not None:
                    out.append(iv)
        return out, after

    def _interval(self, entry_id: str, fields: dict[bytes, bytes], count_bad: bool) -> Interval | None:
        """The entry's interval, checked (histograms.read_interval); None, counted in ``bad``, when it is
        not one: anyone who can write the stream could have put anything there."""
        try:
            raw = fields[b"iv"]
        except (KeyError, TypeError):
            if count_bad:
                self.bad.add(f"stream entry {entry_id}: no 'iv' field")
            return None
        try:
            return histograms.read_interval(raw)
        except SchemaError as exc:
            if count_bad:
                self.bad.add(f"stream entry {entry_id}: {exc}")
            return None

    def all_intervals(self, run_id: str) -> Iterator[Interval]:
        after = "0-0"
        while True:
            batch, after = self.read_intervals(run_id, after)
            if not batch:
                return
            yield from batch

    def read_all_now(self, run_id: str) -> tuple[list[Interval], str]:
        """Every interval in the stream now, without waiting, and the id to read on from."""
        out: list[Interval] = []
        after = "0-0"
        while True:
            batch, after = self.read_intervals(run_id, after, count=5000)
            if not batch:
                return out, after
            out.extend(batch)

    def server_time_ms(self) -> int:
        seconds, micros = self.r.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def stream_before(self, run_id: str, before_id: str, count: int) -> list[tuple[str, Interval]]:
        """Stream entries with ids below ``before_id`` (oldest first, at most ``count``)."""
        entries = self.r.xrange(keys.intervals(run_id), "-", f"({before_id}", count=count)
        out = []
        for entry_id, fields in entries:  # the follower read (and counted) these before: bad ones are skipped
            iv = self._interval(entry_id.decode(), fields, count_bad=False)
            if iv is not None:
                out.append((entry_id.decode(), iv))
        return out

    def rollups(self, run_id: str) -> dict[tuple[str, int], Rollup]:
        out = {}
        for field, raw in self.r.hgetall(keys.rollups(run_id)).items():
            try:
                r = Rollup.from_json(raw)
                histograms.check_interval(r.interval)
            except SchemaError as exc:
                self.bad.add(f"rollup {field.decode(errors='replace')}: {exc}")
                continue
            out[r.key] = r
        return out

    def compact(self, run_id: str, changed: list[Rollup], trim_before: str) -> int:
        """Store the rollups and trim the stream below ``trim_before`` in one transaction; returns the
        number of entries trimmed."""
        pipe = self.r.pipeline(transaction=True)
        if changed:
            pipe.hset(keys.rollups(run_id), mapping={f"{r.key[0]}#{r.key[1]}": r.to_json() for r in changed})
        pipe.xtrim(keys.intervals(run_id), minid=trim_before, approximate=False)
        return int(pipe.execute()[-1])

    def add_gap(self, run_id: str, gap: dict[str, Any]) -> None:
        self.r.rpush(keys.gaps(run_id), orjson.dumps(gap))

    def gaps(self, run_id: str) -> list[dict[str, Any]]:
        return [orjson.loads(g) for g in self.r.lrange(keys.gaps(run_id), 0, -1)]

    # -- overview ------------------------------------------------------------------------------
    def status(self, run_id: str | None = None) -> dict[str, Any]:
        """Runs and their shards by state, workers and processes per region, queue depths."""
        regions: dict[str, dict[str, Any]] = {}

        def region(name: str) -> dict[str, Any]:
            return regions.setdefault(name, {"workers": 0, "processes": 0})

        for rec in self.workers().values():
            r = region(rec["region"])
            r["workers"] += 1
            r["processes"] += int(rec.get("concurrency", 1))
        out: dict[str, Any] = {"regions": {}, "runs": []}
        for rid in [run_id] if run_id else self.runs():
            try:
                meta = self.meta(rid)
            except InputError as exc:
                if run_id:
                    raise
                out["runs"].append({"run_id": rid, "state": "lost", "shards": {}, "error": str(exc)})  # listed
                continue
            claims = self.claims(rid)
            states: dict[str, int] = {}
            for sid, shard in self.shards(rid).items():
                claim = claims.get(keys.attempt_field(sid, shard.attempt))
                state = claim["state"] if claim else "queued"
                states[state] = states.get(state, 0) + 1
                region(shard.region)  # list the run's regions even with no worker
            out["runs"].append({"run_id": rid, "name": meta.get("name"), "state": meta.get("state"),
                                "start_at": meta.get("start_at"), "shards": states})
        for name, rec in sorted(regions.items()):
            out["regions"][name] = {**rec, "queue_depth": self.queue_depth(name)}
        return out
