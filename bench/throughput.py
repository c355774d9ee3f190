#!/usr/bin/env python3
"""Side-by-side loopback throughput: wrk vs Locust (FastHttpUser) vs fnbench's open-model engine.

All three hit the SAME nginx (``return 200 "ok"``, 1 worker, pinned to core 0) in one run; every
load generator is pinned to core 1 and runs alone.  The machine may be shared and noisy, so
absolute numbers matter less than the ratios printed at the end.

* wrk     — closed model, ``wrk -t1 -c64``: the ceiling of a C generator on one core.
* Locust  — closed model, one process, 64 FastHttpUsers with ``wait_time = constant(0)``.
* fnbench — open model with full recording (HDR response/service/send-lag histograms), driven
            through ``workers.shard.run_shard``; a ladder of constant rates, stopping at the
            first rate that does not hold.  A rate HOLDS when
              ok (and therefore completed) >= 99 % of intended,  dropped == 0,
              and send-lag p99 < 10 ms.

CPU: for wrk and Locust the generator's CPU use is sampled from /proc/<pid>/stat over the steady
middle of the run (so start-up and shutdown are excluded); for fnbench the child measures
``time.process_time()`` around ``run_shard``.  "req/s per core" = requests / CPU-seconds, i.e. what
the tool would do with one fully used core.

Usage:  .venv/bin/python bench/throughput.py [--seconds 5] [--quick] [--json] [--rates 5000,10000]
Exit status is 0 when a peer is missing (it is skipped with a hint); nginx missing skips all.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TEMPLATE = HERE / "nginx.conf.template"
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

DEFAULT_LADDER = [5000, 10000, 15000, 20000, 25000, 30000, 40000, 50000, 60000, 80000]
QUICK_LADDER = [5000, 10000, 20000, 30000]
CONNECTIONS = 64
LEAD_S = 1.5  # fnbench: from READY to start_at (orchestrator/run/dispatch/local.py LEAD_S): connections open in it
HOLD_COMPLETED = 0.99
HOLD_LAG_P99_MS = 10.0
CRITERION = (
    f"a rate holds when ok (hence completed) >= {HOLD_COMPLETED:.0%} of intended, "
    f"dropped == 0 and send-lag p99 < {HOLD_LAG_P99_MS:g} ms"
)
INSTALL_HINT = "apt-get install -y nginx-light wrk"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- helpers -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of a process (all its threads), in clock ticks; None when gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def core_busy(core: int | None) -> int | None:
    """user+nice+system ticks of one CPU from /proc/stat (irq/softirq/idle excluded)."""
    if core is None:
        return None
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith(f"cpu{core} "):
                f = line.split()
                return int(f[1]) + int(f[2]) + int(f[3])
    except OSError:
        pass
    return None


class CpuWindow:
    """CPU used by some pids between mark_start() and mark_end(), as a fraction of one core.

    With ``core`` it also measures what *other* processes used on that core in the window
    (busy ticks of the core minus the pids' ticks): the sign of a disturbed measurement.
    """

    def __init__(self, pids: list[int], core: int | None = None) -> None:
        self.pids = pids
        self.core = core
        self.t0 = self.t1 = 0.0
        self.c0: list[int | None] = []
        self.c1: list[int | None] = []
        self.b0: int | None = None
        self.b1: int | None = None

    def mark_start(self) -> None:
        self.t0, self.c0, self.b0 = (
            time.monotonic(),
            [cpu_ticks(p) for p in self.pids],
            core_busy(self.core),
        )

    def mark_end(self) -> None:
        self.t1, self.c1, self.b1 = (
            time.monotonic(),
            [cpu_ticks(p) for p in self.pids],
            core_busy(self.core),
        )

    def foreign(self) -> float | None:
        """Fraction of the core used by other processes during the window (approximate)."""
        own = self.util()
        if own is None or self.b0 is None or self.b1 is None:
            return None
        return max(0.0, (self.b1 - self.b0) / CLK_TCK / (self.t1 - self.t0) - own)

    def util(self) -> float | None:
        if not self.c0 or not self.c1 or self.t1 <= self.t0:
            return None
        used = 0
        for a, b in zip(self.c0, self.c1, strict=True):
            if a is None or b is None:
                return None
            used += b - a
        return used / CLK_TCK / (self.t1 - self.t0)


def pin(core: int | None) -> list[str]:
    if core is None or not shutil.which("taskset"):
        return []
    return ["taskset", "-c", str(core)]


def sleep_until(t: float) -> None:
    d = t - time.monotonic()
    if d > 0:
        time.sleep(d)


# -- nginx ---------------------------------------------------------------------------------
# With --tls: the same server over TLS (a throw-away RSA-2048 certificate, TLS 1.2/1.3, session
# tickets on as nginx has them by default, plus a session cache for TLS 1.2 ids).
TLS_LISTEN = """listen 127.0.0.1:@PORT@ ssl backlog=4096;
        ssl_certificate @PREFIX@/cert.pem;
        ssl_certificate_key @PREFIX@/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:fnbench:1m;
        ssl_session_tickets on;"""


class Nginx:
    def __init__(self, binary: str, core: int | None, tls: bool = False) -> None:
        self.binary = binary
        self.core = core
        self.tls = tls
        self.prefix = Path(tempfile.mkdtemp(prefix="fnbench-nginx-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/"

    def start(self) -> None:
        template = TEMPLATE.read_text()
        if self.tls:
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                 "-keyout", str(self.prefix / "key.pem"), "-out", str(self.prefix / "cert.pem")],
                check=True, capture_output=True, timeout=60,
            )
            template = template.replace("listen 127.0.0.1:@PORT@ backlog=4096;", TLS_LISTEN)
        conf = template.replace("@PREFIX@", str(self.prefix)).replace("@PORT@", str(self.port))
        (self.prefix / "nginx.conf").write_text(conf)
        (self.prefix / "logs").mkdir(exist_ok=True)  # nginx probes <prefix>/logs/error.log at start
        cmd = [
            *pin(self.core),
            self.binary,
            "-p",
            str(self.prefix),
            "-e",
            str(self.prefix / "error.log"),
            "-c",
            str(self.prefix / "nginx.conf"),
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"nginx exited with {self.proc.returncode}: {err.strip()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nginx did not accept connections within 10 s")

    def worker_pids(self) -> list[int]:
        return children(self.proc.pid) if self.proc else []

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: fast shutdown of master and workers
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        shutil.rmtree(self.prefix, ignore_errors=True)


# -- wrk -----------------------------------------------------------------------------------
def measure_steady(t_start: float, secs: int, *windows: CpuWindow) -> None:
    """Sample CPU over the steady middle of a measurement: skip the first quarter and the tail."""
    sleep_until(t_start + max(0.5, 0.25 * secs))
    for w in windows:
        w.mark_start()
    sleep_until(t_start + secs - 0.3)
    for w in windows:
        w.mark_end()


def run_wrk(wrk: str, url: str, secs: int, core: int | None, nginx: Nginx) -> dict[str, Any]:
    cmd = [*pin(core), wrk, "-t1", f"-c{CONNECTIONS}", f"-d{secs}s", url]
    log(f"wrk: {' '.join(cmd)}")
    t_start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    gen = CpuWindow([proc.pid], core)
    tgt = CpuWindow(nginx.worker_pids())
    measure_steady(t_start, secs, gen, tgt)
    try:
        out, _ = proc.communicate(timeout=secs + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        return {"error": "wrk did not finish in time"}
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if proc.returncode != 0 or not m:
        return {"error": f"wrk rc={proc.returncode}: {out.strip()[-400:]}"}
    rps = float(m.group(1))
    util = gen.util()
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    errs = re.search(r"Socket errors:(.*)", out)
    return {
        "rps": rps,
        "cpu_util": util,
        "rps_per_core": rps / util if util else None,
        "target_cpu_util": tgt.util(),
        "foreign_cpu": gen.foreign(),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errs.group(1).strip() if errs else "",
    }


# -- Locust --------------------------------------------------------------------------------
LOCUSTFILE = """\
from locust import FastHttpUser, constant, task


class Hammer(FastHttpUser):
    wait_time = constant(0)

    @task
    def root(self):
        self.client.get("/")
"""


def find_locust() -> str | None:
    beside = Path(sys.executable).parent / "locust"
    if beside.exists():
        return str(beside)
    return shutil.which("locust")


def run_locust(locust: str, url: str, secs: int, core: int | None, nginx: Nginx) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fnbench-locust-") as tmp:
        lf = Path(tmp) / "locustfile.py"
        lf.write_text(LOCUSTFILE)
        prefix = str(Path(tmp) / "out")
        cmd = [
            *pin(core),
            locust,
            "-f",
            str(lf),
            "--host",
            url.rstrip("/"),
            "--headless",
            "--only-summary",
            "-u",
            str(CONNECTIONS),
            "-r",
            str(CONNECTIONS),
            "--run-time",
            f"{secs}s",
            "--csv",
            prefix,
            "--exit-code-on-error",
            "0",
        ]
        log(f"locust: {' '.join(cmd)}")
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp
        )
        gen = CpuWindow([proc.pid], core)
        tgt = CpuWindow(nginx.worker_pids())
        # Locust writes <prefix>_stats_history.csv about once a second once the test runs;
        # its first appearance marks the start of load (imports and start-up excluded).
        history = Path(prefix + "_stats_history.csv")
        deadline = time.monotonic() + 60
        t_load = None
        while time.monotonic() < deadline and proc.poll() is None:
            if history.exists():
                t_load = time.monotonic()
                break
            time.sleep(0.05)
        if t_load is not None:
            sleep_until(t_load + max(0.5, 0.25 * secs))
            gen.mark_start()
            tgt.mark_start()
            sleep_until(t_load + secs - 1.0)  # the first history row comes up to ~1 s after start
            gen.mark_end()
            tgt.mark_end()
        try:
            out, _ = proc.communicate(timeout=secs + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            return {"error": "locust did not finish in time"}
        stats = Path(prefix + "_stats.csv")
        if not stats.exists():
            return {"error": f"locust rc={proc.returncode}, no stats CSV: {out.strip()[-400:]}"}
        with stats.open() as f:
            rows = [r for r in csv.DictReader(f) if r.get("Name") == "Aggregated"]
        if not rows:
            return {"error": "locust stats CSV has no Aggregated row"}
        row = rows[0]
        rps = float(row["Requests/s"])
        util = gen.util()
        return {
            "rps": rps,
            "requests": int(row["Request Count"]),
            "failures": int(row["Failure Count"]),
            "p50_ms": _num(row.get("50%")),
            "p99_ms": _num(row.get("99%")),
            "cpu_util": util,
            "rps_per_core": rps / util if util else None,
            "target_cpu_util": tgt.util(),
            "foreign_cpu": gen.foreign(),
        }


def _num(v: str | None) -> float | None:
    try:
        return float(v) if v not in (None, "", "N/A") else None
    except ValueError:
        return None


# -- fnbench -------------------------------------------------------------------------------
# Runs in a child pinned to one core.  argv: a JSON config (port, rate, secs, flush, tls, warmup,
# profile).  With warmup > 0 a warm-up shard of that many seconds at the same rate runs first on
# the same target (as a spec's warmup: does); only the measured shard's intervals are reported.
FNBENCH_CHILD = r"""
import json, sys, time
cfg = json.loads(sys.argv[1])
from workers.contract import Shard, Target
from workers.shard import run_shards
from workers.histograms import merge, summary_ms
scheme = "https" if cfg["tls"] else "http"
t = Target(name="nginx", runtime="other", platform="http", url=f"{scheme}://127.0.0.1:{cfg['port']}/",
           method="GET", timeout_s=5, tls_verify=False)
rate, secs, flush, warm = cfg["rate"], cfg["secs"], cfg["flush"], cfg["warmup"]
print("READY", flush=True)
begin = time.time() + cfg["lead"]  # the lead time before start_at, as the local dispatcher gives
def shard(sid, start_at, duration, warmup):
    return Shard(run_id="bench", shard_id=sid, region="local", target=t, phase="warm",
                 arrival={"kind": "constant", "rps": str(rate)}, start_at=start_at, duration_s=duration,
                 flush_interval_s=flush, max_in_flight=64, queue_limit=100000, warmup=warmup)
shards = ([shard("w0", begin, warm, True)] if warm else []) + [shard("s0", begin + warm, secs, False)]
out = []
c0, w0 = time.process_time(), time.monotonic()
if cfg["profile"]:
    import cProfile
    cProfile.run("run_shards(shards, out.append)", cfg["profile"])
else:
    run_shards(shards, out.append)
cpu, wall = time.process_time() - c0, time.monotonic() - w0
warmed = [i for i in out if i.warmup]
out = [i for i in out if not i.warmup]
first = [i for i in out if i.seq == 0]  # the measured phase's first interval: its first flush_interval_s
outcomes, counters = {}, {}
for i in out:
    for k, v in i.outcomes.items():
        outcomes[k] = outcomes.get(k, 0) + v
    for k, v in i.counters.items():
        counters[k] = counters.get(k, 0) + v
print(json.dumps({
    "intended": sum(i.intended for i in out),
    "sent": sum(i.sent for i in out),
    "completed": sum(i.completed for i in out),
    "ok": outcomes.get("ok", 0),
    "dropped": outcomes.get("dropped", 0),
    "outcomes": outcomes,
    "gap_s": sum(i.gap_s for i in out),
    "peak_in_flight": max((i.max_in_flight for i in out), default=0),
    "send_lag_ms": summary_ms(merge(i.send_lag_us for i in out)),
    "response_ms": summary_ms(merge(i.response_us for i in out)),
    "service_ms": summary_ms(merge(i.service_us for i in out)),
    "connect_ms": summary_ms(merge(getattr(i, "connect_us", "") for i in out + warmed)),  # (older engines: none)
    "first_s_send_lag_ms": summary_ms(merge(i.send_lag_us for i in first)),
    "first_s_span_s": round(first[0].t1 - first[0].started, 3) if first and first[0].started else None,
    "counters": counters,
    "warmup_connections_opened": sum(i.counters.get("connections_opened", 0) for i in warmed),
    "cpu_s": cpu, "wall_s": wall, "intervals": len(out),
}), flush=True)
"""


def run_fnbench_step(
    port: int,
    rate: int,
    secs: int,
    core: int | None,
    nginx: Nginx,
    flush: float = 1.0,
    profile: str = "",
    tls: bool = False,
    warmup: float = 0.0,
) -> dict[str, Any]:
    config = {"port": port, "rate": rate, "secs": secs, "flush": flush, "tls": tls, "warmup": warmup,
              "profile": profile, "lead": LEAD_S}
    cmd = [*pin(core), sys.executable, "-c", FNBENCH_CHILD, json.dumps(config)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO
    )
    tgt = CpuWindow(nginx.worker_pids())
    gen = CpuWindow([proc.pid], core)
    assert proc.stdout is not None
    ready = proc.stdout.readline()  # blocks until imports are done (bounded by the child's life)
    if ready.strip() == "READY":
        t_run = time.monotonic() + LEAD_S + warmup
        measure_steady(t_run, secs, gen, tgt)
    try:
        rest, err = proc.communicate(timeout=secs + warmup + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"rate": rate, "error": "fnbench step did not finish in time", "holds": False}
    lines = [ln for ln in rest.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {
            "rate": rate,
            "error": f"rc={proc.returncode}: {err.strip()[-600:]}",
            "holds": False,
        }
    r = json.loads(lines[-1])
    r["rate"] = rate
    r["tls"] = tls
    r["warmup_s"] = warmup
    expected = max(r["intended"], int(rate * secs))
    r["expected"] = expected
    r["achieved_rps"] = r["completed"] / secs
    # CPU over the child's life (a warm-up included): per-core figures only mean much without one.
    r["rps_per_core"] = r["completed"] / r["cpu_s"] if r["cpu_s"] > 0 and not warmup else None
    r["cpu_util"] = (
        r["cpu_s"] / (secs + warmup)
    )  # CPU over the load window (start-up wait and drain add a little)
    r["target_cpu_util"] = tgt.util()
    r["foreign_cpu"] = gen.foreign()
    lag99 = r["send_lag_ms"]["p99"]
    reasons = []
    if r["ok"] < HOLD_COMPLETED * expected:
        reasons.append(f"ok {r['ok']} < {HOLD_COMPLETED:.0%} of {expected}")
    if r["dropped"]:
        reasons.append(f"dropped {r['dropped']}")
    if lag99 is None or lag99 >= HOLD_LAG_P99_MS:
        reasons.append(f"send-lag p99 {lag99} ms")
    r["holds"] = not reasons
    r["why_not"] = "; ".join(reasons)
    return r


def run_startup(
    port: int, rates: list[int], secs: int, core: int | None, nginx: Nginx, flush: float, tls: bool,
    warmup: float,
) -> list[dict[str, Any]]:
    """At each rate, without and with a warm-up: send-lag p99 over the whole measured phase and
    over its first second (the first interval, flush_interval_s long)."""
    rows = []
    for rate in rates:
        for warm in (0.0, warmup):
            r = run_fnbench_step(port, rate, secs, core, nginx, flush, tls=tls, warmup=warm)
            rows.append(r)
            if "error" in r:
                log(f"start-up {rate:>6}/s warm-up {warm:g}s: ERROR {r['error']}")
                continue
            log(
                f"start-up {rate:>6}/s warm-up {warm:g}s: lag p99 {r['send_lag_ms']['p99']} ms, first second "
                f"{r['first_s_send_lag_ms']['p99']} ms; resp p99 {r['response_ms']['p99']} ms; "
                f"connections {r['counters'].get('connections_opened', 0)} "
                f"({r['counters'].get('connections_before_start', 0)} before start, "
                f"{r['counters'].get('tls_resumed', 0)} resumed; warm-up opened {r['warmup_connections_opened']}); "
                f"{'HOLDS' if r['holds'] else 'FAILS: ' + r['why_not']}"
            )
    return rows


def run_ladder(
    port: int, ladder: list[int], secs: int, core: int | None, nginx: Nginx, flush: float, tls: bool = False
) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    for rate in ladder:
        r = run_fnbench_step(port, rate, secs, core, nginx, flush, tls=tls)
        steps.append(r)
        if "error" in r:
            log(f"fnbench {rate:>6}/s: ERROR {r['error']}")
            break
        log(
            f"fnbench {rate:>6}/s: completed {r['completed']}/{r['expected']} ok {r['ok']} dropped {r['dropped']} "
            f"lag p99 {r['send_lag_ms']['p99']} ms resp p99 {r['response_ms']['p99']} ms "
            f"cpu {r['cpu_util']:.2f} core (others on core {_fmt(r['foreign_cpu'], '.2f')}) -> {'HOLDS' if r['holds'] else 'FAILS: ' + r['why_not']}"
        )
        if not r["holds"]:
            break
        best = r
    return {"criterion": CRITERION, "flush_interval_s": flush, "steps": steps, "best": best}


# -- report --------------------------------------------------------------------------------
def _fmt(v: float | None, spec: str = ",.0f") -> str:
    return "-" if v is None else format(v, spec)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def build_report(res: dict[str, Any]) -> list[dict[str, Any]]:
    wrk, loc, fnb = (
        res.get("wrk") or {},
        res.get("locust") or {},
        (res.get("fnbench") or {}).get("best") or {},
    )
    rows = []
    if "rps" in wrk:
        rows.append(
            {
                "tool": "wrk -t1 -c64",
                "model": "closed",
                "rps": wrk["rps"],
                "per_core": wrk.get("rps_per_core"),
            }
        )
    if "rps" in loc:
        rows.append(
            {
                "tool": "Locust FastHttpUser",
                "model": "closed",
                "rps": loc["rps"],
                "per_core": loc.get("rps_per_core"),
            }
        )
    if fnb:
        rows.append(
            {
                "tool": "fnbench run_shard",
                "model": "open",
                "rps": fnb["achieved_rps"],
                "per_core": fnb.get("rps_per_core"),
            }
        )
    for row in rows:
        row["vs_wrk"] = _ratio(row["rps"], wrk.get("rps"))
        row["per_core_vs_wrk"] = _ratio(row["per_core"], wrk.get("rps_per_core"))
    return rows


def print_table(res: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    print()
    print(
        f"target: nginx return 200 on {res['url']}{' (TLS)' if res.get('tls') else ''} (1 worker, core {res['cores']['target']}); "
        f"generators on core {res['cores']['generator']}; {res['seconds']} s per measurement"
    )
    hdr = f"{'tool':<22}{'model':<8}{'req/s':>10}{'req/s/core':>12}{'vs wrk':>8}{'per-core vs wrk':>17}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(
            f"{r['tool']:<22}{r['model']:<8}{_fmt(r['rps']):>10}{_fmt(r['per_core']):>12}"
            f"{_fmt(r['vs_wrk'], '.2f'):>8}{_fmt(r['per_core_vs_wrk'], '.2f'):>17}"
        )
    ratios = res["ratios"]
    print()
    print(
        f"fnbench / Locust: req/s {_fmt(ratios['fnbench_vs_locust_rps'], '.2f')}x, "
        f"req/s per core {_fmt(ratios['fnbench_vs_locust_per_core'], '.2f')}x"
    )
    fn = res.get("fnbench")
    if fn:
        print(f"fnbench criterion: {fn['criterion']} (flush_interval_s={fn['flush_interval_s']:g})")
        print(
            "  cpu = fnbench CPU-seconds per second of load; others = CPU other processes took on the generator core"
        )
        print(
            f"{'rate':>8}{'completed':>11}{'dropped':>9}{'lag p99':>9}{'resp p99':>10}{'cpu':>6}{'others':>7}{'req/s/core':>12}  verdict"
        )
        for s in fn["steps"]:
            if "error" in s:
                print(f"{s['rate']:>8}  error: {s['error']}")
                continue
            print(
                f"{s['rate']:>8}{s['completed']:>11}{s['dropped']:>9}{_fmt(s['send_lag_ms']['p99'], '.2f'):>9}"
                f"{_fmt(s['response_ms']['p99'], '.2f'):>10}{_fmt(s['cpu_util'], '.2f'):>6}{_fmt(s.get('foreign_cpu'), '.2f'):>7}"
                f"{_fmt(s['rps_per_core']):>12}  {'holds' if s['holds'] else 'fails: ' + s['why_not']}"
            )
        best = fn.get("best")
        print(f"fnbench max sustained open-model rate: {best['rate'] if best else 'none'} req/s")
    startup = res.get("startup")
    if startup:
        print()
        print(
            "start-up: send-lag p99 over the whole measured phase and over its first interval "
            "(first s = the first flush_interval_s); conns = opened by the measured shard "
            "(before its start / TLS resumed) + by the warm-up"
        )
        print(f"{'rate':>8}{'warm-up':>9}{'lag p99':>9}{'first s':>9}{'resp p99':>10}{'connect p99':>13}  conns")
        for r in startup:
            if "error" in r:
                print(f"{r['rate']:>8}{r['warmup_s']:>8g}s  error: {r['error']}")
                continue
            c = r["counters"]
            conns = (f"{c.get('connections_opened', 0)} ({c.get('connections_before_start', 0)} before, "
                     f"{c.get('tls_resumed', 0)} resumed) + {r['warmup_connections_opened']}")
            print(
                f"{r['rate']:>8}{r['warmup_s']:>8g}s{_fmt(r['send_lag_ms']['p99'], '.2f'):>9}"
                f"{_fmt(r['first_s_send_lag_ms']['p99'], '.2f'):>9}{_fmt(r['response_ms']['p99'], '.2f'):>10}"
                f"{_fmt(r['connect_ms']['p99'], '.2f'):>13}  {conns}"
            )
    for name in ("wrk", "locust"):
        if res.get(name) and "rps" in res[name]:
            d = res[name]
            each = ", ".join(_fmt(r.get("rps")) for r in d.get("runs", []))
            print(
                f"{name}: runs {each} req/s (best kept); in the kept run generator cpu "
                f"{_fmt(d.get('cpu_util'), '.2f')} core, others on its core {_fmt(d.get('foreign_cpu'), '.2f')}, "
                f"nginx cpu {_fmt(d.get('target_cpu_util'), '.2f')} core"
            )
    for note in res["notes"]:
        print(f"note: {note}")


# -- main ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--seconds",
        type=int,
        default=None,
        help="seconds per measurement / ladder step (default 5)",
    )
    ap.add_argument("--quick", action="store_true", help="2 s steps and a short ladder (CI smoke)")
    ap.add_argument("--rates", help="comma-separated fnbench ladder, e.g. 5000,10000,20000")
    ap.add_argument(
        "--json", action="store_true", help="print the results as JSON instead of a table"
    )
    ap.add_argument("--skip", default="", help="comma-separated peers to skip: wrk,locust,fnbench")
    ap.add_argument(
        "--flush-interval",
        type=float,
        default=1.0,
        help="fnbench Shard.flush_interval_s (default 1.0; histograms are built on the loop at each flush)",
    )
    ap.add_argument(
        "--profile",
        metavar="RATE",
        type=int,
        help="only run fnbench once at RATE under cProfile and print the top functions",
    )
    ap.add_argument(
        "--tls",
        action="store_true",
        help="nginx over TLS: the same ladder beside wrk over TLS (Locust left out), plus the start-up figures",
    )
    ap.add_argument(
        "--startup",
        action="store_true",
        help="also measure start-up (implied by --tls): send-lag p99 overall and over the first second",
    )
    ap.add_argument(
        "--startup-rates", default="5000,20000", help="rates of the start-up figures (default 5000,20000)"
    )
    ap.add_argument(
        "--warmup", type=float, default=2.0, help="warm-up seconds of the start-up figures' second run (default 2)"
    )
    args = ap.parse_args(argv)

    secs = args.seconds or (2 if args.quick else 5)
    ladder = (
        [int(x) for x in args.rates.split(",")]
        if args.rates
        else (QUICK_LADDER if args.quick else DEFAULT_LADDER)
    )
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    notes: list[str] = []
    if args.tls:
        skip.add("locust")
        notes.append("--tls: Locust left out (wrk is the TLS peer)")
        if not shutil.which("openssl"):
            print("openssl not found: it makes the throw-away certificate (apt-get install openssl); skipping")
            return 0

    ncpu = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )
    if not shutil.which("taskset"):
        target_core = gen_core = None
        notes.append("taskset not found: processes are not pinned")
    elif ncpu < 2:
        target_core = gen_core = None
        notes.append("fewer than 2 usable cores: target and generator share the CPU, not pinned")
    else:
        cores = sorted(os.sched_getaffinity(0))
        target_core, gen_core = cores[0], cores[1]

    nginx_bin = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None
    )
    if not nginx_bin:
        msg = f"nginx not found: nothing to benchmark against; install it with `{INSTALL_HINT}`"
        if args.json:
            print(json.dumps({"skipped": "nginx missing", "hint": INSTALL_HINT}))
        else:
            print(msg)
        return 0

    nginx = Nginx(nginx_bin, target_core, tls=args.tls)
    try:
        nginx.start()
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        nginx.stop()
        print(f"could not start nginx ({exc}); skipping the benchmark")
        return 0
    url = nginx.url
    res: dict[str, Any] = {
        "url": url,
        "tls": args.tls,
        "seconds": secs,
        "cores": {"target": target_core, "generator": gen_core},
        "connections": CONNECTIONS,
        "loadavg_start": _loadavg(),
        "notes": notes,
    }
    try:
        if args.profile:
            prof = tempfile.mktemp(prefix="fnbench-", suffix=".prof")
            r = run_fnbench_step(
                nginx.port, args.profile, secs, gen_core, nginx, args.flush_interval, profile=prof,
                tls=args.tls,
            )
            print(json.dumps({k: v for k, v in r.items()}, indent=1, default=str))
            if os.path.exists(prof):
                import pstats

                pstats.Stats(prof).sort_stats("tottime").print_stats(25)
                pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
                os.unlink(prof)
            return 0

        wrk = shutil.which("wrk")
        locust = find_locust()
        peers: dict[str, Any] = {}
        if "wrk" not in skip:
            if wrk:
                peers["wrk"] = lambda: run_wrk(wrk, url, secs, gen_core, nginx)
            else:
                notes.append(f"wrk not found, skipped (install with `{INSTALL_HINT}`)")
                log(notes[-1])
        if "locust" not in skip:
            if locust:
                peers["locust"] = lambda: run_locust(locust, url, secs, gen_core, nginx)
            else:
                notes.append("locust not found, skipped (pip install locust)")
                log(notes[-1])
        # The closed-model peers run before and after the fnbench ladder; the better run is
        # kept (on a shared machine the worse one is the one another process disturbed).
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in peers}
        passes = 1 if args.quick else 2
        for name, fn in peers.items():
            runs[name].append(fn())
        if "fnbench" not in skip:
            res["fnbench"] = run_ladder(
                nginx.port, ladder, secs, gen_core, nginx, args.flush_interval, args.tls
            )
            best = res["fnbench"]["best"]
            if best and best is res["fnbench"]["steps"][-1]:
                notes.append(
                    "fnbench held at the top of the ladder: the real maximum may be higher (--rates)"
                )
            if args.tls or args.startup:
                rates = [int(x) for x in args.startup_rates.split(",") if x.strip()]
                res["startup"] = run_startup(
                    nginx.port, rates, secs, gen_core, nginx, args.flush_interval, args.tls, args.warmup
                )
        if passes > 1:
            for name, fn in peers.items():
                runs[name].append(fn())
        for name, rs in runs.items():
            good = [r for r in rs if "rps" in r]
            res[name] = max(good, key=lambda r: r["rps"]) if good else rs[-1]
            res[name]["runs"] = [{k: v for k, v in r.items() if k != "runs"} for r in rs]
    finally:
        nginx.stop()

    for name in ("wrk", "locust"):
        if res.get(name, {}).get("error"):
            notes.append(f"{name} failed: {res[name]['error']}")
    res["loadavg_end"] = _loadavg()
    rows = build_report(res)
    loc = res.get("locust") or {}
    fnb = (res.get("fnbench") or {}).get("best") or {}
    res["table"] = rows
    res["ratios"] = {
        "fnbench_vs_locust_rps": _ratio(fnb.get("achieved_rps"), loc.get("rps")),
        "fnbench_vs_locust_per_core": _ratio(fnb.get("rps_per_core"), loc.get("rps_per_core")),
        "fnbench_vs_wrk_rps": _ratio(fnb.get("achieved_rps"), (res.get("wrk") or {}).get("rps")),
        "locust_vs_wrk_rps": _ratio(loc.get("rps"), (res.get("wrk") or {}).get("rps")),
    }
    if args.json:
        print(json.dumps(res, indent=1, default=str))
    else:
        print_table(res, rows)
    return 0


def _loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return ""


if __name__ == "__main__":
    sys.exit(main())
