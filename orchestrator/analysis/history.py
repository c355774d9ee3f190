"""Run history per spec name, trends, and regression verdicts over it.

Every finished run (scheduled or not, local or distributed) is recorded under its spec's name: run
id, start, regions, the spec's ``git describe`` when known, the per-group summary from the typed
result, and the run's interval blocks (each group's measured intervals, merged into at most
``MAX_BLOCKS`` encoded HDR histograms with their counts) so later comparisons can bootstrap over
runs whose folders and Redis records are gone.  Entries live in Redis when a broker is configured
(keys in workers/keys.py) and in each run's folder (``results/<run>/history.json``) otherwise; retention keeps the newest
``keep`` entries and drops those older than ``max_age_s``, keys and files included.

``check`` judges the newest run against its recent history: Apache Otava's change point detection
(E-divisive means with a t-test, the Hunter algorithm) finds where the earlier runs last shifted, the
runs since then (at most ``WINDOW``) are the previous stable window, and the block bootstrap of
compare.py compares the newest run's intervals with the window's.  A metric regressed when its 95 %
interval lies wholly above the noise band (worse by more than the band, with confidence).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import orjson

from orchestrator.analysis import compare
from orchestrator.errors import InputError
from orchestrator.run.result import Group, RunResult
from workers import keys

KEEP_ENV, MAX_AGE_ENV, WEBHOOK_ENV = "FNBENCH_HISTORY_KEEP", "FNBENCH_HISTORY_MAX_AGE", "FNBENCH_WEBHOOK_URL"
KEEP = 200  # entries per spec name
MAX_AGE_S = 365 * 86400.0
MAX_BLOCKS = 24  # interval blocks kept per group in an entry
WINDOW = 10  # runs in the previous stable window, at most
MIN_HISTORY = 3  # earlier runs needed before a verdict
MAX_PVALUE = 0.001  # Otava's significance for a change point
CHECK_METRICS = ("p50", "p99", "p999", "error_rate", "init_p50")
WEBHOOK_TIMEOUT_S = 5.0
ENTRY_VERSION = 1

Say = Callable[[str], None]


@dataclass(frozen=True)
class Retention:
    keep: int | None = KEEP
    max_age_s: float | None = MAX_AGE_S

    @classmethod
    def from_env(cls) -> Retention:
        keep, age = os.environ.get(KEEP_ENV), os.environ.get(MAX_AGE_ENV)
        return cls(int(keep) if keep else KEEP, parse_age(age) if age else MAX_AGE_S)


def parse_age(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not m:
        raise InputError(f"history age {text!r}: use a number with s, m, h, d or w (e.g. 90d)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}[m.group(2)]


# -- entries ------------------------------------------------------------------------------------
def git_describe(path: Path | None) -> str | None:
    """``git describe --always --dirty`` of the repository holding ``path`` (None outside one)."""
    if path is None:
        return None
    try:
        folder = path.resolve().parent
        done = subprocess.run(["git", "-C", str(folder), "describe", "--always", "--dirty", "--tags"],
                              capture_output=True, text=True, timeout=3.0, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def group_summary(g: Group) -> dict[str, Any]:
    r = g.response_ms
    return {"region": g.region, "target": g.target, "runtime": g.runtime, "phase": g.phase, "workload": g.workload,
            "achieved_rps": g.achieved_rps, "p50": r.p50, "p90": r.p90, "p99": r.p99, "p999": r.p999,
            "error_rate": g.error_rate, "cold_starts": g.cold_starts,
            "init_p50": g.init_ms.p50 if g.init_ms else None, "init_p99": g.init_ms.p99 if g.init_ms else None,
            "cost_per_million_usd": g.cost_per_million_usd, "requests": sum(g.outcomes.values()),
            "completed": g.completed, **({"status": "failed", "failure": g.failure} if g.failed else {})}


def make_entry(result: RunResult, intervals: Sequence[Any], *, name: str | None = None, git: str | None = None,
               schedule: str | None = None, exit_code: int | None = None) -> dict[str, Any]:
    """The history entry of a finished run (its summary and compact interval blocks)."""
    samples = [compare.compact(s) for s in compare.samples_from_intervals(intervals, MAX_BLOCKS)]
    starts = [iv.t0 for iv in intervals if not iv.warmup]
    start = result.start_at or (min(starts) if starts else time.time())
    return {
        "version": ENTRY_VERSION, "run_id": result.run_id, "name": name or result.name or result.run_id,
        "start": start, "recorded": time.time(), "regions": sorted({g.region for g in result.groups}),
        "git": git, "schedule": schedule, "exit_code": exit_code, "interrupted": result.interrupted,
        "broker": result.broker, "slo_failed": result.slo_failed,
        "groups": [group_summary(g) for g in result.groups],
        "samples": [{"region": s.region, "target": s.target, "runtime": s.runtime, "workload": s.workload,
                     "phase": s.phase, "blocks": [b.to_dict() for b in s.blocks], "bands": bands(s)} for s in samples],
    }


def bands(sample: compare.Sample) -> dict[str, list[float | None]]:
    """The 95 % bootstrap interval of each of the sample's own values (the trend page's bands), over its blocks."""
    metrics = compare.COLD_LEVEL_METRICS if sample.phase == "cold" else compare.LEVEL_METRICS
    return {m: list(v) for m, v in compare.levels(sample.blocks, metrics).items()}


def samples_of(entry: dict[str, Any]) -> list[compare.Sample]:
    return [compare.Sample(s["region"], s["target"], s["runtime"], s.get("workload", ""), s["phase"],
                           tuple(compare.Block.from_dict(b) for b in s["blocks"])) for s in entry.get("samples", [])]


# -- stores ---------------------------------------------------------------------------------------
class History(Protocol):
    def add(self, entry: dict[str, Any], retention: Retention) -> list[str]: ...
    def entries(self, name: str, limit: int | None = None) -> list[dict[str, Any]]: ...
    def find(self, run_id: str) -> dict[str, Any] | None: ...
    def names(self) -> list[str]: ...
    def annotate(self, name: str, run_id: str, fields: dict[str, Any]) -> bool: ...


def redis_error() -> type[Exception]:
    import redis

    return redis.ResponseError


class RedisHistory:
    """History in Redis: a sorted set of run ids per name, one JSON string per entry."""

    def __init__(self, r: Any) -> None:
        self.r = r
        self._migrate()

    def _migrate(self) -> None:
        """Move history written before layout 2 (``fnbench:history:<name>``, ``fnbench:history:runs``) to its
        own namespace once, so old entries stay readable.  Idempotent: two processes may race harmlessly.
        Entries first, sorted sets second: an old entry key may sit where a new sorted set goes."""
        if self.r.type(keys.HISTORY_LAYOUT) == b"string" and self.r.get(keys.HISTORY_LAYOUT) == b"2":
            return
        names = [(raw.decode(), keys.legacy_history(raw.decode())) for raw in self.r.smembers(keys.HISTORY_NAMES)]
        names = [(name, old) for name, old in names if self.r.type(old) == b"zset"]
        for name, old in names:
            for run_id in (r.decode() for r in self.r.zrange(old, 0, -1)):
                try:
                    self.r.renamenx(f"{old}:{run_id}", keys.history_entry(name, run_id))  # keeps its TTL
                except redis_error():
                    pass  # gone (expired, or moved meanwhile by another process)
        for name, old in names:
            self.r.zunionstore(keys.history(name), [keys.history(name), old], aggregate="MAX")
            self.r.delete(old)
        legacy = keys.LEGACY_HISTORY_RUNS
        if self.r.type(legacy) == b"hash":
            moved = self.r.hgetall(legacy)
            if moved:
                pipe = self.r.pipeline(transaction=False)
                for run_id, name in moved.items():
                    pipe.hsetnx(keys.HISTORY_RUNS, run_id, name)
                pipe.execute()
            self.r.delete(legacy)
        self.r.set(keys.HISTORY_LAYOUT, b"2")

    @classmethod
    def from_url(cls, url: str) -> RedisHistory:
        from orchestrator.run.store import Store

        return cls(Store(url).r)

    def add(self, entry: dict[str, Any], retention: Retention) -> list[str]:
        name, run_id = entry["name"], entry["run_id"]
        pipe = self.r.pipeline(transaction=True)
        pipe.sadd(keys.HISTORY_NAMES, name)
        pipe.zadd(keys.history(name), {run_id: float(entry["start"])})
        pipe.set(keys.history_entry(name, run_id), orjson.dumps(entry))
        if retention.max_age_s:  # the key goes by itself once too old, even if no run follows
            pipe.expire(keys.history_entry(name, run_id), int(retention.max_age_s) + 1)
        pipe.hset(keys.HISTORY_RUNS, run_id, name)
        pipe.execute()
        return self.trim(name, retention)

    def trim(self, name: str, retention: Retention, now: float | None = None) -> list[str]:
        """Drop the entries beyond ``keep`` and older than ``max_age_s``; returns their run ids."""
        now = time.time() if now is None else now
        drop: set[str] = set()
        if retention.keep is not None:
            drop |= {r.decode() for r in self.r.zrevrange(keys.history(name), retention.keep, -1)}
        if retention.max_age_s is not None:
            drop |= {r.decode() for r in self.r.zrangebyscore(keys.history(name), "-inf", f"({now - retention.max_age_s}")}
        if drop:
            pipe = self.r.pipeline(transaction=True)
            pipe.zrem(keys.history(name), *drop)
            pipe.delete(*[keys.history_entry(name, r) for r in drop])
            pipe.hdel(keys.HISTORY_RUNS, *drop)
            pipe.execute()
        return sorted(drop)

    def entries(self, name: str, limit: int | None = None) -> list[dict[str, Any]]:
        ids = [r.decode() for r in self.r.zrevrange(keys.history(name), 0, -1 if limit is None else limit - 1)]
        raw = self.r.mget([keys.history_entry(name, r) for r in ids]) if ids else []
        return [orjson.loads(v) for v in raw if v]

    def find(self, run_id: str) -> dict[str, Any] | None:
        name = self.r.hget(keys.HISTORY_RUNS, run_id)
        raw = self.r.get(keys.history_entry(name.decode(), run_id)) if name else None
        return orjson.loads(raw) if raw else None

    def names(self) -> list[str]:
        return sorted(n.decode() for n in self.r.smembers(keys.HISTORY_NAMES))

    def annotate(self, name: str, run_id: str, fields: dict[str, Any]) -> bool:
        """Add ``fields`` to a stored entry (e.g. its regression verdict), keeping its expiry; False if it is gone."""
        key = keys.history_entry(name, run_id)
        raw = self.r.get(key)
        if not raw:
            return False
        return bool(self.r.set(key, orjson.dumps({**orjson.loads(raw), **fields}), keepttl=True, xx=True))


class FileHistory:
    """History without a broker: one ``history.json`` in each run's folder (results/<run_id>/), so the
    results root holds nothing but run folders; retention deletes the entries, never the runs."""

    FILE = "history.json"

    def __init__(self, results_root: Path) -> None:
        self.root = results_root

    def _path(self, run_id: str) -> Path:
        return self.root / quote(run_id, safe="") / self.FILE

    def add(self, entry: dict[str, Any], retention: Retention) -> list[str]:
        path = self._path(entry["run_id"])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_bytes(orjson.dumps(entry))
        os.replace(tmp, path)
        return self.trim(entry["name"], retention)

    def trim(self, name: str, retention: Retention, now: float | None = None) -> list[str]:
        now = time.time() if now is None else now
        entries = self.entries(name)
        drop = entries[retention.keep:] if retention.keep is not None else []
        if retention.max_age_s is not None:
            drop += [e for e in entries if float(e["start"]) < now - retention.max_age_s and e not in drop]
        for e in drop:
            self._path(e["run_id"]).unlink(missing_ok=True)
        return sorted(e["run_id"] for e in drop)

    def _all(self) -> list[dict[str, Any]]:
        found = []
        for path in self.root.glob(f"*/{self.FILE}"):
            try:
                found.append(orjson.loads(path.read_bytes()))
            except (OSError, orjson.JSONDecodeError):
                continue
        return found

    def entries(self, name: str, limit: int | None = None) -> list[dict[str, Any]]:
        found = [e for e in self._all() if e.get("name") == name]
        found.sort(key=lambda e: (float(e["start"]), e["run_id"]), reverse=True)
        return found[:limit] if limit is not None else found

    def find(self, run_id: str) -> dict[str, Any] | None:
        try:
            return dict(orjson.loads(self._path(run_id).read_bytes()))
        except (OSError, orjson.JSONDecodeError):
            return None

    def names(self) -> list[str]:
        return sorted({str(e.get("name")) for e in self._all()})

    def annotate(self, name: str, run_id: str, fields: dict[str, Any]) -> bool:
        entry = self.find(run_id)
        if entry is None or entry.get("name") != name:
            return False
        path = self._path(run_id)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_bytes(orjson.dumps({**entry, **fields}))
        os.replace(tmp, path)
        return True


def open_history(broker: str | None, results_root: Path = Path("results")) -> History:
    return RedisHistory.from_url(broker) if broker else FileHistory(results_root)


def record(result: RunResult, folder: Path, *, broker: str | None, results_root: Path = Path("results"),
           spec_path: Path | None = None, git: str | None = None, schedule: str | None = None,
           exit_code: int | None = None, retention: Retention | None = None, say: Say | None = None,
           extra: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Record a finished run in its spec's history (the hook after a run is saved).  Never raises: a
    history that cannot be written is one warning; the run and its result are untouched."""
    from orchestrator.run.results import read_intervals

    try:
        intervals_file = folder / "intervals.jsonl"
        intervals = read_intervals(intervals_file) if intervals_file.exists() else []
        entry = make_entry(result, intervals, git=git if git is not None else git_describe(spec_path),
                           schedule=schedule, exit_code=exit_code)
        entry.update(extra or {})
        open_history(broker, results_root).add(entry, retention or Retention.from_env())
        return entry
    except Exception as exc:  # noqa: BLE001 - history is a by-product of the run
        if say is not None:
            say(f"warning: run {result.run_id} not recorded in its history: {exc}")
        return None


# -- trends -------------------------------------------------------------------------------------
COLUMNS = (("p50", "p50 ms"), ("p90", "p90 ms"), ("p99", "p99 ms"), ("p999", "p99.9 ms"),
           ("error_rate", "errors"), ("achieved_rps", "ok/s"), ("cold_starts", "cold"),
           ("init_p50", "init p50 ms"), ("init_p99", "init p99 ms"), ("cost_per_million_usd", "$/M"))
HIGHER_IS_BETTER = {"achieved_rps"}


def rows(entries: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Per (target, region), newest first: run id, start, and the warm group's values (cold starts and
    init times from the cold group)."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for e in entries:
        merged: dict[tuple[str, str], dict[str, Any]] = {}
        for g in e.get("groups", []):
            row = merged.setdefault((g["target"], g["region"]), {"run_id": e["run_id"], "start": e["start"],
                                                                 "git": e.get("git")})
            if g["phase"] == "warm":
                row.update({k: g.get(k) for k in ("p50", "p90", "p99", "p999", "error_rate", "achieved_rps",
                                                   "cost_per_million_usd")})
            else:
                row.update({"cold_starts": g.get("cold_starts"), "init_p50": g.get("init_p50"),
                            "init_p99": g.get("init_p99")})
        for key, row in merged.items():
            out.setdefault(key, []).append(row)
    return out


def glyph(newer: float | None, older: float | None, column: str, band: float = compare.BAND) -> str:
    """↑ / ↓ against the run before (beyond the noise band), → within it; '' without both values."""
    if newer is None or older is None:
        return ""
    if older == 0:
        return "→" if newer == 0 else "↑"
    change = newer / older - 1.0
    return "→" if abs(change) <= band else ("↑" if change > 0 else "↓")


def worse(arrow: str, column: str) -> bool | None:
    if arrow in ("", "→"):
        return None
    return (arrow == "↓") if column in HIGHER_IS_BETTER else (arrow == "↑")


# -- regression verdicts ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    target: str
    region: str
    metric: str
    comparison: compare.Comparison
    window: tuple[str, ...]  # run ids of the previous stable window
    change_point: bool  # Otava puts a change point at the newest run
    regressed: bool

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "region": self.region, "metric": self.metric, "window": list(self.window),
                "change_point": self.change_point, "regressed": self.regressed, **self.comparison.to_dict()}


@dataclass(frozen=True)
class Check:
    name: str
    newest: str | None
    findings: tuple[Finding, ...] = ()
    reason: str = ""  # why there is no verdict
    no_data: tuple[str, ...] = ()  # groups of the newest run with no completed request ("target (region): why")

    @property
    def regressed(self) -> bool:
        return any(f.regressed for f in self.findings)

    @property
    def failed(self) -> bool:
        """A regression, or NO DATA: the newest run measured nothing for a group (never an "ok")."""
        return self.regressed or bool(self.no_data)

    @property
    def verdict(self) -> str:
        if self.regressed:
            return "regression"
        if self.no_data:
            return "NO DATA"
        return "ok" if self.findings else f"no verdict ({self.reason})" if self.reason else "no verdict"

    def message(self) -> str:
        bad = [f for f in self.findings if f.regressed]
        if not bad and self.no_data:
            return (f"fnbench {self.name}: run {self.newest}: NO DATA for " + "; ".join(self.no_data))
        if not bad:
            return f"fnbench {self.name}: run {self.newest}: {self.verdict}"
        lines = [f"fnbench {self.name}: run {self.newest} regressed against its previous {len(bad[0].window)} run(s):"]
        lines += [f"• {f.comparison.sentence}" + (" (change point)" if f.change_point else "") for f in bad]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "newest": self.newest, "verdict": self.verdict, "regressed": self.regressed,
                "no_data": list(self.no_data), "reason": self.reason, "findings": [f.to_dict() for f in self.findings], "message": self.message()}


def _value(entry: dict[str, Any], target: str, region: str, metric: str) -> float | None:
    phase = "cold" if metric.startswith("init") else "warm"
    for g in entry.get("groups", []):
        if g["target"] == target and g["region"] == region and g["phase"] == phase:
            v = g.get(metric)
            return float(v) if v is not None else None
    return None


def _stable_start(series: Sequence[float]) -> tuple[int, bool]:
    """Index where the earlier runs last shifted (Otava), and whether the newest run is a change point."""
    from otava.analysis import compute_change_points

    prior = list(series[:-1])
    start = 0
    if len(prior) >= 3:
        cps, _ = compute_change_points(prior, window_len=30, max_pvalue=MAX_PVALUE)
        start = max((int(c.index) for c in cps), default=0)
    at_newest = False
    if len(series) >= 4:
        cps, _ = compute_change_points(list(series), window_len=30, max_pvalue=MAX_PVALUE)
        at_newest = any(int(c.index) == len(series) - 1 for c in cps)
    return start, at_newest


def check(name: str, entries: Sequence[dict[str, Any]], *, band: float = compare.BAND,
          error_band_pp: float = compare.ERROR_BAND_PP, window: int = WINDOW, min_history: int = MIN_HISTORY,
          metrics: Sequence[str] = CHECK_METRICS, replicates: int = compare.REPLICATES) -> Check:
    """Is the newest entry (``entries`` newest first) a regression against its previous stable window?"""
    if not entries:
        return Check(name, None, reason="no runs recorded")
    ordered = sorted(entries, key=lambda e: (float(e["start"]), e["run_id"]))  # oldest first
    newest = ordered[-1]
    if len(ordered) - 1 < min_history:
        return Check(name, newest["run_id"], reason=f"{len(ordered) - 1} earlier run(s), {min_history} needed")
    samples = [{(s.region, s.target, s.phase): s for s in samples_of(e)} for e in ordered]
    findings = []
    no_data = []
    for g in newest.get("groups", []):
        if g["phase"] != "warm":
            continue
        target, region = g["target"], g["region"]
        if g.get("completed", g.get("requests")) == 0 or g.get("status") == "failed":
            # No verdict without data: its error_rate of 0.0 would otherwise compare as "no change".
            no_data.append(f"{target} ({region}): " + (g.get("failure") or "no completed request"))
            continue
        for metric in metrics:
            phase = "cold" if metric.startswith("init") else "warm"
            have = [i for i, e in enumerate(ordered) if _value(e, target, region, metric) is not None
                    and (region, target, phase) in samples[i]]
            if len(have) - 1 < min_history or have[-1] != len(ordered) - 1:
                continue
            series = [float(_value(ordered[i], target, region, metric) or 0.0) for i in have]
            start, at_newest = _stable_start(series)
            stable = have[start:-1][-window:]
            if len(stable) < 1:
                continue
            base = tuple(b for i in stable for b in samples[i][(region, target, phase)].blocks)
            other = samples[-1][(region, target, phase)].blocks
            iv = compare.bootstrap_all(base, other, (metric,), replicates)[metric]
            width = band if iv.relative else error_band_pp
            verdict = compare.verdict_of(iv, band, error_band_pp)
            window_ids = tuple(ordered[i]["run_id"] for i in stable)
            c = compare.Comparison(region, metric, target, f"the previous {len(stable)} run(s)", iv.base, iv.other,
                                   iv.other / iv.base if iv.base and iv.other is not None else None,
                                   iv.change, iv.low, iv.high, iv.relative, verdict, width, newest["run_id"])
            regressed = iv.low is not None and iv.low > width
            findings.append(Finding(target, region, metric, c, window_ids, at_newest, regressed))
    return Check(name, newest["run_id"], tuple(findings),
                 reason="" if findings else "no metric with enough history", no_data=tuple(no_data))


# -- notifications ----------------------------------------------------------------------------------
def notify(result: Check, say: Say | None = None, webhook: str | None = None) -> dict[str, bool]:
    """On a regression: a Grafana annotation (FNBENCH_GRAFANA_URL) and a Slack-compatible JSON POST to
    FNBENCH_WEBHOOK_URL.  A failure of either is a warning; returns what was sent."""
    sent = {"grafana": False, "webhook": False}
    if not result.regressed:
        return sent
    text = result.message()
    from orchestrator.report import grafana

    url = os.environ.get(grafana.URL_ENV)
    if url:
        try:
            grafana.annotate(url, os.environ.get(grafana.TOKEN_ENV),
                             {**grafana.annotation_body(result.newest or "", time.time(), "regression", text),
                              "tags": [grafana.TAG, result.newest or "", "regression", result.name]})
            sent["grafana"] = True
        except Exception as exc:  # noqa: BLE001 - a notification must never fail the check
            if say:
                say(f"warning: Grafana regression annotation not added: {exc}")
    hook = webhook or os.environ.get(WEBHOOK_ENV)
    if hook:
        import httpx

        try:
            reply = httpx.post(hook, json={"text": text, "fnbench": result.to_dict()}, timeout=WEBHOOK_TIMEOUT_S)
            if reply.is_error:
                raise RuntimeError(f"HTTP {reply.status_code} {reply.reason_phrase}")
            sent["webhook"] = True
        except Exception as exc:  # noqa: BLE001
            if say:  # a webhook URL carries its token in the path or query: never printed
                say(f"warning: regression webhook failed ({redact_url(hook)}): {type(exc).__name__}: "
                    f"{scrub_url(str(exc), hook)[:200]}")
    return sent


def redact_url(url: str) -> str:
    """``scheme://host[:port]/…``: no credentials, path or query (where webhook tokens live)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "(a malformed URL)"
    if not parts.scheme or not host:
        return "(a malformed URL)"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}/…"


def scrub_url(message: str, url: str) -> str:
    """``message`` with ``url`` (and its path, query and credentials, alone) replaced by its redacted form."""
    from urllib.parse import urlsplit

    shown = redact_url(url)
    message = message.replace(url, shown)
    try:
        parts = urlsplit(url)
    except ValueError:
        return message
    for secret in (parts.path + (f"?{parts.query}" if parts.query else ""), parts.query, parts.path,
                   parts.username or "", parts.password or ""):
        if len(secret) > 1:
            message = message.replace(secret, "…")
    return message
