#!/usr/bin/env python3
"""Soak: N minutes at a fixed rate, sampling the memory of every fnbench process (and Redis).

Modes (``--mode``):

* ``local``        ``fnbench run SPEC --metrics-port 0 --json`` (the embedded default): the
                   orchestrator process and its spawned worker processes (fnbench-worker-N).
* ``distributed``  a redis-server on a free loopback port (no persistence), one
                   ``fnbench worker --region a --concurrency C`` (its main process and every prefork
                   pool process) and ``fnbench run SPEC --broker URL``; Redis RSS and ``INFO memory``
                   ``used_memory`` are sampled too, with the length of the run's interval stream.
* ``both``         local, then distributed.
* ``engine``       no orchestrator: ``workers.shard.run_shard`` in one child under tracemalloc (the
                   worker's hot loop and its sink's encoding), with a snapshot after the warm-up and
                   one at the end (each after ``gc.collect()``); prints the allocation sites that grew
                   (live growth) and what the cycle collector found at the end (garbage RSS carries
                   until a collection reaches it).  Use it to find *what* grows when a worker does.

Every ``--sample`` seconds VmRSS is read from /proc/<pid>/status.  The slope in MB per hour is the
least-squares fit over the samples after ``--warmup`` minutes; ``tail`` is the same fit over the
last half of those samples (is it still growing at the end?).  A process passes when both are
below ``--goal`` MB/h.

The target is a loopback nginx (bench/nginx.conf.template, ``return 200``) or, without nginx,
``fnbench synthetic --median-ms 0.2 --sigma 0``.  Load goes only to 127.0.0.1.

    .venv/bin/python bench/soak.py --minutes 30 --rps 2000 --mode both
    .venv/bin/python bench/soak.py --minutes 4 --rps 2000 --mode local --warmup 1 --json
    .venv/bin/python bench/soak.py --minutes 3 --mode engine
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from throughput import Nginx, children, cpu_ticks, free_port  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
FNBENCH = [sys.executable, "-m", "orchestrator.cli"]
GRACE_S = 240.0  # past the run's length: start-up, the last drain, the report; then the soak gives up


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- /proc -----------------------------------------------------------------------------------
def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None  # a zombie has no VmRSS


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    for _ in range(10_000):  # bounded walk
        if not todo:
            break
        for child in children(todo.pop()):
            out.append(child)
            todo.append(child)
    return out


# -- samples and slopes ----------------------------------------------------------------------
def slope_mb_h(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MB) in MB per hour; None with fewer than 3 points."""
    if len(points) < 3:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var <= 0:
        return None
    cov = sum((t - mt) * (v - mv) for t, v in points)
    return cov / var * 3600.0


@dataclass
class Series:
    label: str
    pid: int
    points: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MB)
    cpu0: int | None = None
    cpu1: int | None = None
    t_cpu0: float = 0.0
    t_cpu1: float = 0.0

    def add(self, t: float, mb: float, ticks: int | None) -> None:
        self.points.append((t, mb))
        if ticks is not None:
            if self.cpu0 is None:
                self.cpu0, self.t_cpu0 = ticks, t
            self.cpu1, self.t_cpu1 = ticks, t

    def summary(self, warmup_s: float, goal: float) -> dict[str, Any]:
        after = [(t, v) for t, v in self.points if t >= warmup_s]
        half = after[len(after) // 2 :]
        at_warmup = after[0][1] if after else None
        s = slope_mb_h(after)
        tail = slope_mb_h(half)
        cpu = None
        if self.cpu0 is not None and self.cpu1 is not None and self.t_cpu1 > self.t_cpu0:
            cpu = (self.cpu1 - self.cpu0) / CLK_TCK / (self.t_cpu1 - self.t_cpu0)
        return {
            "process": self.label, "pid": self.pid, "samples": len(self.points),
            "first_mb": self.points[0][1] if self.points else None, "at_warmup_mb": at_warmup,
            "last_mb": self.points[-1][1] if self.points else None,
            "max_mb": max((v for _, v in self.points), default=None),
            "slope_mb_h": s, "tail_slope_mb_h": tail, "cpu_cores": cpu,
            # A sawtooth (memory freed at a slice boundary) can hide growth from the whole fit: the tail must pass too.
            "ok": None if s is None else (s < goal and (tail is None or tail < goal)),
        }


class Sampler:
    """Samples labelled processes (re-discovered each time) and, optionally, one Redis."""

    def __init__(self, discover: Any, redis_url: str | None = None, stream_pattern: str = "") -> None:
        self.discover = discover  # () -> {pid: label}
        self.series: dict[int, Series] = {}
        self.redis_points: list[dict[str, float]] = []
        self.redis: Any = None  # redis-py types replies as sync | awaitable; this client is sync
        self.stream_pattern = stream_pattern
        if redis_url:
            import redis

            self.redis = redis.Redis.from_url(redis_url, socket_timeout=2.0)
        self.t0 = time.monotonic()

    def sample(self) -> None:
        t = time.monotonic() - self.t0
        for pid, label in self.discover().items():
            mb = rss_mb(pid)
            if mb is None:
                continue
            s = self.series.setdefault(pid, Series(label, pid))
            s.add(t, mb, cpu_ticks(pid))
        if self.redis is not None:
            try:
                info = self.redis.info("memory")
                stream = 0
                for key in self.redis.scan_iter(match=self.stream_pattern, count=1000):
                    stream += int(self.redis.xlen(key))
                self.redis_points.append({"t": t, "used_memory_mb": info["used_memory"] / 2**20,
                                          "used_memory_rss_mb": info["used_memory_rss"] / 2**20,
                                          "stream_entries": stream, "keys": int(self.redis.dbsize())})
            except Exception as exc:  # noqa: BLE001 - a missed sample is not a failed soak
                log(f"redis sample failed: {exc}")

    def summaries(self, warmup_s: float, goal: float) -> list[dict[str, Any]]:
        rows = [s.summary(warmup_s, goal) for s in sorted(self.series.values(), key=lambda s: (s.label, s.pid))]
        if self.redis_points:
            used = [(p["t"], p["used_memory_mb"]) for p in self.redis_points]
            after = [(t, v) for t, v in used if t >= warmup_s]
            streams = [p["stream_entries"] for p in self.redis_points]
            s = slope_mb_h(after)
            rows.append({
                "process": "redis used_memory", "pid": None, "samples": len(used), "first_mb": used[0][1],
                "at_warmup_mb": after[0][1] if after else None, "last_mb": used[-1][1],
                "max_mb": max(v for _, v in used), "slope_mb_h": s, "tail_slope_mb_h": slope_mb_h(after[len(after) // 2:]),
                "cpu_cores": None, "ok": None,  # grows with the run's stream by design: see stream_entries_per_h
                # The run's interval stream: it grows with the run unless the orchestrator compacts it.
                "stream_entries_max": max(streams), "stream_entries_last": streams[-1],
            })
        return rows


def watch(proc: subprocess.Popen[bytes], sampler: Sampler, every_s: float, limit_s: float) -> None:
    """Sample until ``proc`` exits (or ``limit_s`` passes: then it is stopped)."""
    deadline = time.monotonic() + limit_s
    next_at = time.monotonic()
    last_note = time.monotonic()
    while proc.poll() is None:
        now = time.monotonic()
        if now > deadline:
            log("the run did not end in time; stopping it")
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            break
        if now >= next_at:
            sampler.sample()
            next_at += every_s
            if now - last_note >= 60:
                last_note = now
                shown = ", ".join(f"{s.label} {s.points[-1][1]:.1f}" for s in sampler.series.values() if s.points)
                red = sampler.redis_points[-1]["used_memory_mb"] if sampler.redis_points else None
                log(f"  t={now - sampler.t0:5.0f}s  RSS MB: {shown}" + (f"; redis used {red:.2f}" if red else ""))
        time.sleep(min(0.5, max(0.0, next_at - time.monotonic())))


# -- the target --------------------------------------------------------------------------------
class Target:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.nginx: Nginx | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> str:
        binary = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)
        if self.kind in ("auto", "nginx") and binary:
            self.nginx = Nginx(binary, None)
            self.nginx.start()
            self.port = self.nginx.port
            self.kind = "nginx"
        else:
            self.port = free_port()
            self.proc = subprocess.Popen([*FNBENCH, "synthetic", "--port", str(self.port), "--median-ms", "0.2",
                                          "--sigma", "0"], cwd=REPO, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            wait_port(self.port, 20)
            self.kind = "synthetic"
        return f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        if self.nginx:
            self.nginx.stop()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def wait_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s:.0f}s")


def write_spec(path: Path, url: str, args: argparse.Namespace, region: str) -> Path:
    path.write_text(textwrap.dedent(f"""\
        name: soak
        regions: [{region}]
        targets:
          - {{name: soak, runtime: other, platform: http, url: '{url}', method: GET, timeout: 2s}}
        load: {{executor: constant, rps: {args.rps}, max_in_flight: 64}}
        duration: {int(args.minutes * 60)}s
        flush_interval: {args.flush_interval}s
        sharding: {{slice: {args.slice}s}}
        """))
    return path


def run_summary(stdout: bytes, rc: int | None) -> dict[str, Any]:
    """What the run itself reported: did the load happen at the asked rate?"""
    out: dict[str, Any] = {"exit_code": rc}
    try:
        res = json.loads(stdout)
    except ValueError:
        out["stdout_tail"] = stdout[-500:].decode(errors="replace")
        return out
    groups = res.get("groups") or []
    out["run_id"] = res.get("run_id")
    out["achieved_rps"] = sum(g.get("achieved_rps", 0.0) for g in groups)
    out["intended_rps"] = sum(g.get("intended_rps", 0.0) for g in groups)
    outcomes: dict[str, int] = {}
    for g in groups:
        for k, v in (g.get("outcomes") or {}).items():
            outcomes[k] = outcomes.get(k, 0) + v
    out["outcomes"] = outcomes
    out["gaps"] = len(res.get("gaps") or [])
    out["errors"] = res.get("errors") or []
    return out


# -- local ----------------------------------------------------------------------------------------
def soak_local(args: argparse.Namespace, url: str, tmp: Path) -> dict[str, Any]:
    spec = write_spec(tmp / "local.yaml", url, args, "local")
    cmd = [*FNBENCH, "run", str(spec), "--metrics-port", "0", "--json", "--workers", str(args.workers),
           "--results", str(tmp / "results")]
    log(f"local: {' '.join(cmd[2:])}")
    stdout_f = (tmp / "local.out").open("wb")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=stdout_f, stderr=(tmp / "local.err").open("wb"),
                            env={**os.environ, "FNBENCH_GRAFANA_URL": ""})

    def discover() -> dict[int, str]:
        found = {proc.pid: "orchestrator"}
        workers = sorted(p for p in descendants(proc.pid) if "spawn_main" in cmdline(p))
        for i, p in enumerate(workers):
            found[p] = f"worker-{i}"
        return found

    sampler = Sampler(discover)
    watch(proc, sampler, args.sample, args.minutes * 60 + GRACE_S)
    stdout_f.close()
    return {"mode": "local", "command": " ".join(["fnbench", *cmd[3:]]),
            "run": run_summary((tmp / "local.out").read_bytes(), proc.returncode),
            "processes": sampler.summaries(args.warmup * 60, args.goal),
            "samples": {f"{s.label}[{s.pid}]": s.points for s in sampler.series.values()}}


# -- distributed ---------------------------------------------------------------------------------
def soak_distributed(args: argparse.Namespace, url: str, tmp: Path) -> dict[str, Any]:
    import redis

    from workers import keys

    if not shutil.which("redis-server"):
        return {"mode": "distributed", "skipped": "redis-server not installed (apt-get install redis-server)"}
    port = free_port()
    broker = f"redis://127.0.0.1:{port}/0"
    rds = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no", "--dir", str(tmp), "--logfile", str(tmp / "redis.log")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker: subprocess.Popen[bytes] | None = None
    try:
        wait_port(port, 10)
        key_file = tmp / "task.key"
        env = {**os.environ, "FNBENCH_TASK_KEY_FILE": str(key_file), "FNBENCH_GRAFANA_URL": ""}
        env.pop("FNBENCH_TASK_KEY", None)
        if args.memtrace:
            env["FNBENCH_MEMTRACE"] = f"{tmp / 'memtrace'}:{args.memtrace}"
        subprocess.run([*FNBENCH, "keygen", "--file", str(key_file)], cwd=REPO, env=env, check=True,
                       capture_output=True)
        metrics_port = free_port() if args.worker_metrics_port < 0 else args.worker_metrics_port
        worker = subprocess.Popen([*FNBENCH, "worker", "--region", "a", "--broker", broker, "--concurrency",
                                   str(args.concurrency), "--metrics-port", str(metrics_port)], cwd=REPO, env=env,
                                  stdout=(tmp / "worker.log").open("wb"), stderr=subprocess.STDOUT,
                                  start_new_session=True)
        client: Any = redis.Redis.from_url(broker)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            seen = [json.loads(v) for v in client.hgetall(keys.WORKERS).values()]
            if any(s.get("pid") == worker.pid for s in seen):
                break
            if worker.poll() is not None:
                raise RuntimeError(f"fnbench worker exited with {worker.returncode}: see {tmp / 'worker.log'}")
            time.sleep(0.3)
        else:
            raise RuntimeError("the fnbench worker did not register within 60 s")
        time.sleep(2)  # the prefork pool is up once the worker registered and consumed
        spec = write_spec(tmp / "distributed.yaml", url, args, "a")
        cmd = [*FNBENCH, "run", str(spec), "--broker", broker, "--json", "--metrics-port", "0",
               "--results", str(tmp / "results"), "--retention", args.retention]
        log(f"distributed: {' '.join(cmd[2:])}  (worker: --region a --concurrency {args.concurrency} "
            f"--metrics-port {metrics_port})")
        stdout_f = (tmp / "distributed.out").open("wb")
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=stdout_f,
                                stderr=(tmp / "distributed.err").open("wb"))
        wpid = worker.pid

        def discover() -> dict[int, str]:
            found = {proc.pid: "orchestrator", wpid: "worker-main", rds.pid: "redis-server"}
            for i, p in enumerate(sorted(children(wpid))):
                found[p] = f"pool-{i}"
            return found

        sampler = Sampler(discover, broker, f"{keys.PREFIX}:run:*:intervals")
        watch(proc, sampler, args.sample, args.minutes * 60 + GRACE_S)
        stdout_f.close()
        for _ in range(3):  # after the end: what stays in Redis
            time.sleep(args.sample)
            sampler.sample()
        run = run_summary((tmp / "distributed.out").read_bytes(), proc.returncode)
        ttls = {}
        if run.get("run_id"):
            for k in keys.all_of_run(run["run_id"]):
                if client.exists(k):
                    ttls[k.rsplit(":", 1)[-1] if k != keys.run(run["run_id"]) else "run"] = client.ttl(k)
        info = client.info("memory")
        return {"mode": "distributed", "command": " ".join(["fnbench", *cmd[3:]]), "run": run,
                "worker_command": f"fnbench worker --region a --broker {broker} --concurrency {args.concurrency} "
                                  f"--metrics-port {metrics_port}",
                "processes": sampler.summaries(args.warmup * 60, args.goal),
                "memtrace": memtrace_growth(tmp / "memtrace", args) if args.memtrace else None,
                "redis": {"samples": sampler.redis_points, "after_end_used_memory_mb": info["used_memory"] / 2**20,
                          "key_ttls_s": ttls, "retention": args.retention},
                "samples": {f"{s.label}[{s.pid}]": s.points for s in sampler.series.values()}}
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(10)
        rds.terminate()
        rds.wait(10)


def memtrace_growth(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Per worker process (FNBENCH_MEMTRACE snapshots): the allocation sites that grew between the
    first snapshot after the warm-up and the last one, live memory only (each after gc.collect())."""
    import tracemalloc

    by_proc: dict[str, list[Path]] = {}
    for f in sorted(folder.glob("*.snap")):
        role, pid, _n = f.stem.rsplit("-", 2)
        by_proc.setdefault(f"{role}-{pid}", []).append(f)
    out: dict[str, Any] = {}
    skip = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>")]
    for proc, files in by_proc.items():
        first = min(len(files) - 1, max(0, int(args.warmup * 60 // args.memtrace) - 1))
        if first >= len(files) - 1:
            out[proc] = {"snapshots": len(files), "top": [], "note": "fewer than two snapshots after the warm-up"}
            continue
        a = tracemalloc.Snapshot.load(str(files[first])).filter_traces(skip)
        b = tracemalloc.Snapshot.load(str(files[-1])).filter_traces(skip)
        minutes = (len(files) - 1 - first) * args.memtrace / 60
        traced = (sum(s.size for s in b.statistics("filename")) - sum(s.size for s in a.statistics("filename"))) / 2**20
        top = [{"size_diff_kb": round(st.size_diff / 1024, 1), "count_diff": st.count_diff,
                "traceback": st.traceback.format()[-12:]}
               for st in b.compare_to(a, "traceback")[:12] if st.size_diff > 0]
        out[proc] = {"snapshots": len(files), "minutes": minutes, "traced_growth_mb": round(traced, 3),
                     "traced_mb_h": round(traced * 60 / minutes, 2) if minutes else None, "top": top}
    return out


# -- engine (tracemalloc) ---------------------------------------------------------------------------
ENGINE_CHILD = r"""
import gc, json, sys, threading, time, tracemalloc
url, rate, secs, flush, warmup, every = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
from workers.contract import Shard, Target
from workers.shard import run_shard
t = Target(name="soak", runtime="other", platform="http", url=url, method="GET", timeout_s=2)
sh = Shard(run_id="soak", shard_id="s0", region="local", target=t, phase="warm",
           arrival={"kind": "constant", "rps": str(rate)}, start_at=time.time() + 0.5, duration_s=secs,
           flush_interval_s=flush, max_in_flight=64, queue_limit=10000)
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
snaps, points, sent = [], [], [0]
def sink(iv):
    iv.to_json()  # what a worker's sink does with every interval
    sent[0] += iv.sent
def sampler():
    t0 = time.monotonic()
    while time.monotonic() - t0 < secs - 2:
        time.sleep(every)
        el = time.monotonic() - t0
        points.append((el, rss(), tracemalloc.get_traced_memory()[0] / 2**20))
        if not snaps and el >= warmup:
            gc.collect(); snaps.append(tracemalloc.take_snapshot())
    # What the cycle collector finds at the end: garbage that RSS carries until a collection reaches it.
    before = tracemalloc.get_traced_memory()[0]
    gc.set_debug(gc.DEBUG_SAVEALL); gc.collect(); gc.set_debug(0)
    kinds = {}
    for o in gc.garbage:
        kinds[type(o).__qualname__] = kinds.get(type(o).__qualname__, 0) + 1
    garbage.update(objects=len(gc.garbage), types=sorted(kinds.items(), key=lambda kv: -kv[1])[:8])
    gc.garbage.clear(); gc.collect()
    garbage["mb"] = (before - tracemalloc.get_traced_memory()[0]) / 2**20
    snaps.append(tracemalloc.take_snapshot())
garbage = {}
th = threading.Thread(target=sampler, daemon=True); th.start()
run_shard(sh, sink)
th.join(60)
top = []
if len(snaps) == 2:
    flt = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>")]
    for st in snaps[1].filter_traces(flt).compare_to(snaps[0].filter_traces(flt), "traceback")[:10]:
        top.append({"size_diff_kb": st.size_diff / 1024, "count_diff": st.count_diff,
                    "traceback": st.traceback.format()[-12:]})
print(json.dumps({"points": points, "top": top, "sent": sent[0], "garbage": garbage}))
"""


def soak_engine(args: argparse.Namespace, url: str) -> dict[str, Any]:
    secs = args.minutes * 60
    cmd = [sys.executable, "-X", "tracemalloc=12", "-c", ENGINE_CHILD, url, str(args.rps), str(secs),
           str(args.flush_interval), str(args.warmup * 60), str(args.sample)]
    log(f"engine: run_shard under tracemalloc, {args.rps} req/s for {secs:.0f}s")
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=secs + GRACE_S)
    if r.returncode != 0:
        return {"mode": "engine", "error": r.stderr.decode(errors="replace")[-2000:]}
    res = json.loads(r.stdout)
    # RSS here carries tracemalloc's own tables and snapshots, so only traced memory is fitted.
    traced = Series("engine traced memory", 0)
    for t, _rss, tm in res["points"]:
        traced.add(t, tm, None)
    return {"mode": "engine", "sent": res["sent"], "top_growth": res["top"], "cycle_garbage": res["garbage"],
            "processes": [traced.summary(args.warmup * 60, args.goal)]}


# -- output ----------------------------------------------------------------------------------------
def _f(v: Any, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def print_report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"soak: {args.minutes:g} min at {args.rps} req/s, flush {args.flush_interval}s, "
          f"slope = least squares over samples after {args.warmup:g} min, goal < {args.goal:g} MB/h")
    for res in results:
        print(f"\n== {res['mode']}" + (f": {res['command']}" if res.get("command") else ""))
        if res.get("worker_command"):
            print(f"   worker: {res['worker_command']}")
        if res.get("skipped") or res.get("error"):
            print(f"   {res.get('skipped') or res.get('error')}")
            continue
        run = res.get("run")
        if run:
            print(f"   run {run.get('run_id')}: exit {run.get('exit_code')}, achieved {_f(run.get('achieved_rps'), ',.0f')} "
                  f"of {_f(run.get('intended_rps'), ',.0f')} req/s, outcomes {run.get('outcomes')}, "
                  f"gaps {run.get('gaps')}, errors {run.get('errors')}")
        print(f"   {'process':<24}{'pid':>8}{'first':>8}{'@warmup':>9}{'last':>8}{'max':>8}"
              f"{'MB/h':>9}{'tail MB/h':>11}{'cpu':>6}  verdict")
        for p in res["processes"]:
            verdict = {True: "ok", False: "GROWS", None: ""}[p["ok"]]
            print(f"   {p['process']:<24}{_f(p['pid'], 'd') if p['pid'] else '-':>8}{_f(p['first_mb']):>8}"
                  f"{_f(p['at_warmup_mb']):>9}{_f(p['last_mb']):>8}{_f(p['max_mb']):>8}"
                  f"{_f(p['slope_mb_h'], '+.1f'):>9}{_f(p['tail_slope_mb_h'], '+.1f'):>11}"
                  f"{_f(p['cpu_cores'], '.2f'):>6}  {verdict}")
            if "stream_entries_max" in p:
                print(f"   {'':<24}interval stream: at most {p['stream_entries_max']} entries, "
                      f"{p['stream_entries_last']} at the end")
        if res.get("redis"):
            r = res["redis"]
            print(f"   redis after the end: used_memory {r['after_end_used_memory_mb']:.2f} MB; "
                  f"TTL (s) of the run's keys: {r['key_ttls_s']} (retention {r['retention']})")
            pts = r["samples"]
            step = max(1, len(pts) // 8)
            print("   redis used_memory over time: " + ", ".join(
                f"{p['t']:.0f}s {p['used_memory_mb']:.2f} MB/{p['stream_entries']} iv" for p in pts[::step]))
        g = res.get("cycle_garbage")
        if g:
            print(f"   cycle garbage at the end (gc.DEBUG_SAVEALL): {g.get('objects')} objects, "
                  f"{_f(g.get('mb'), '.2f')} MB; most: {g.get('types')}")
            print("   live growth between the snapshots (each after gc.collect):")
        for proc, mt in (res.get("memtrace") or {}).items():
            print(f"   {proc}: traced memory {_f(mt.get('traced_growth_mb'), '+.3f')} MB over "
                  f"{_f(mt.get('minutes'), '.0f')} min after the warm-up ({_f(mt.get('traced_mb_h'), '+.2f')} MB/h); "
                  f"{mt.get('note', 'sites that grew:')}")
            for top in mt["top"][:8]:
                print(f"     {top['size_diff_kb']:+.1f} KiB ({top['count_diff']:+d} blocks)")
                for line in top["traceback"][-6:]:
                    print(f"        {line}")
        for top in res.get("top_growth", []):
            print(f"   {top['size_diff_kb']:+.1f} KiB ({top['count_diff']:+d} blocks)")
            for line in top["traceback"][-6:]:
                print(f"      {line}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0, help="length of each run (default 30)")
    ap.add_argument("--rps", type=int, default=2000, help="constant request rate (default 2000)")
    ap.add_argument("--mode", choices=["local", "distributed", "both", "engine"], default="both")
    ap.add_argument("--flush-interval", type=float, default=5.0, help="spec flush_interval in seconds (default 5)")
    ap.add_argument("--warmup", type=float, default=2.0, help="minutes left out of the slope (default 2)")
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between samples (default 5)")
    ap.add_argument("--goal", type=float, default=5.0, help="MB/h a process may grow by (default 5)")
    ap.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    ap.add_argument("--concurrency", type=int, default=1, help="distributed: pool processes of the worker (default 1)")
    ap.add_argument("--worker-metrics-port", type=int, default=-1,
                    help="distributed: the worker's --metrics-port (default: a free port, as a worker serves "
                         "/metrics by default; 0 = off)")
    ap.add_argument("--memtrace", type=float, default=0.0, metavar="PERIOD_S",
                    help="distributed: trace the worker's processes (FNBENCH_MEMTRACE) with a snapshot every "
                         "PERIOD_S s and print the allocation sites that grew after the warm-up (RSS then "
                         "includes tracemalloc's own memory; a diagnosis, not the goal figure)")
    ap.add_argument("--slice", type=float, default=300.0,
                    help="the spec's sharding.slice in seconds (default 300, the default): shorter slices show "
                         "what a worker keeps from one shard to the next sooner")
    ap.add_argument("--retention", default="1h", help="distributed: --retention of the run (default 1h)")
    ap.add_argument("--target", choices=["auto", "nginx", "synthetic"], default="auto")
    ap.add_argument("--json", action="store_true", help="JSON on stdout (progress on stderr)")
    args = ap.parse_args(argv)
    if args.minutes * 60 <= args.warmup * 60 + 3 * args.sample:
        ap.error("--minutes must leave at least three samples after --warmup")

    target = Target(args.target)
    tmp = Path(tempfile.mkdtemp(prefix="fnbench-soak-"))
    results: list[dict[str, Any]] = []
    try:
        url = target.start()
        log(f"target: {target.kind} at {url}; work dir {tmp}")
        modes = ["local", "distributed"] if args.mode == "both" else [args.mode]
        for mode in modes:
            if mode == "local":
                results.append(soak_local(args, url, tmp))
            elif mode == "distributed":
                results.append(soak_distributed(args, url, tmp))
            else:
                results.append(soak_engine(args, url))
    finally:
        target.stop()
    if args.json:
        print(json.dumps({"minutes": args.minutes, "rps": args.rps, "flush_interval_s": args.flush_interval,
                          "warmup_min": args.warmup, "goal_mb_h": args.goal, "target": target.kind,
                          "results": results}, indent=1))
    else:
        print_report(results, args)
    shutil.rmtree(tmp, ignore_errors=True)
    grows = [p for r in results for p in r.get("processes", []) if p.get("ok") is False]
    return 1 if grows else 0


if __name__ == "__main__":
    sys.exit(main())
