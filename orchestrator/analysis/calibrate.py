"""`fnbench calibrate`: run fnbench against a synthetic loopback target that knows the truth.

The target draws every response delay itself (lognormal with a given median and sigma, plus
optional periodic stalls during which no response leaves) and records the delay it actually
applied, measured on its own clock from request arrival to response write.

Every percentile is judged against the injected distribution's closed-form quantile (the
lognormal's, or with stalls the lognormal convolved with the stall's uniform wait), widened only
by the sampling band of a sample of that size (order statistics: the p-quantile of n draws lies
between Q(p ∓ z·√(p(1-p)/n)) with z for 99.9 %), so a bug in fnbench's own histogram code cannot
hide behind a truth that the same code summarised.  The target's own measurements are compared
too, as a second view.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import random
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import yaml

from orchestrator import session
from orchestrator.errors import InputError, SetupError
from orchestrator.run.result import Group
from workers import histograms

PERCENTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99, "p999": 0.999}
BAND_Z = 3.2905  # two-sided 99.9 %: a correct generator leaves the band once in a thousand checks
_NORMAL = NormalDist()


@dataclass(frozen=True)
class SyntheticConfig:
    median_ms: float = 50.0
    sigma: float = 0.5
    stall_every_s: float = 0.0  # 0: no stalls
    stall_ms: float = 0.0
    seed: int = 7
    host: str = "127.0.0.1"

    def problems(self) -> list[str]:
        """What is wrong with these settings, in the words of `fnbench calibrate`'s options."""
        return [m for ok, m in (
            (self.median_ms > 0, "--median-ms must be > 0"), (self.sigma >= 0, "--sigma must be >= 0"),
            (self.stall_every_s >= 0 and self.stall_ms >= 0, "--stall-every and --stall-ms must be >= 0"),
            (self.stall_every_s == 0 or self.stall_ms < self.stall_every_s * 1000,
             "--stall-ms must be shorter than --stall-every"),
        ) if not ok]


def _lognormal_cdf(cfg: SyntheticConfig, x_ms: float) -> float:
    if x_ms <= 0:
        return 0.0
    if cfg.sigma == 0:
        return 1.0 if x_ms >= cfg.median_ms else 0.0
    return _NORMAL.cdf(math.log(x_ms / cfg.median_ms) / cfg.sigma)


def model_cdf(cfg: SyntheticConfig, x_ms: float) -> float:
    """P(response ≤ x) for the injected distribution.

    A response that would leave inside a stall window [k·every, k·every + stall) leaves at its end;
    with the leave phase uniform over the period, the added wait is 0 with probability
    1 − stall/every and uniform on (0, stall] otherwise, independent of the delay:
    F(x) = (1 − s/E)·G(x) + (1/E)·∫₀ˢ G(x − u) du.
    """
    g = _lognormal_cdf(cfg, x_ms)
    if cfg.stall_every_s <= 0 or cfg.stall_ms <= 0:
        return g
    every_ms, s = cfg.stall_every_s * 1000.0, cfg.stall_ms
    steps = 400  # midpoint rule; G is smooth except at sigma 0, where 400 steps are 0.25 % of a stall
    h = s / steps
    integral = h * sum(_lognormal_cdf(cfg, x_ms - (i + 0.5) * h) for i in range(steps))
    return (1.0 - s / every_ms) * g + integral / every_ms


def model_quantile_ms(cfg: SyntheticConfig, p: float) -> float:
    """The injected distribution's p-quantile, closed form without stalls, else by bisection on model_cdf."""
    if (cfg.stall_every_s <= 0 or cfg.stall_ms <= 0) and cfg.sigma > 0:
        return cfg.median_ms * math.exp(cfg.sigma * _NORMAL.inv_cdf(p))
    lo, hi = 0.0, cfg.median_ms * math.exp(cfg.sigma * 9.0) + cfg.stall_ms + 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if model_cdf(cfg, mid) < p else (lo, mid)
    return hi


def model_quantiles_ms(cfg: SyntheticConfig) -> dict[str, float]:
    return {k: model_quantile_ms(cfg, p) for k, p in PERCENTILES.items()}


def sampling_band_ms(cfg: SyntheticConfig, p: float, n: int) -> tuple[float, float]:
    """Where the p-quantile of n draws from the model lies with 99.9 % confidence."""
    if n <= 0:
        return (0.0, math.inf)
    half = BAND_Z * math.sqrt(p * (1.0 - p) / n)
    return (model_quantile_ms(cfg, max(p - half, 1e-9)), model_quantile_ms(cfg, min(p + half, 1.0 - 1e-9)))


def judge(cfg: SyntheticConfig, measured: dict[str, float | None], truth: dict[str, float | None], completed: int,
          tolerance_pct: float) -> dict[str, Any]:
    """Per percentile: the model quantile, its sampling band, fnbench's error against the model outside
    the band and against the target's own record; ``pass`` only when every percentile has a value and
    both errors are within the tolerance."""
    stats: dict[str, Any] = {}
    ok = True
    for stat, p in PERCENTILES.items():
        m, t = measured.get(stat), truth.get(stat)
        model = model_quantile_ms(cfg, p)
        lo, hi = sampling_band_ms(cfg, p, completed)
        beyond = None
        if m:
            beyond = 0.0 if lo <= m <= hi else round(100.0 * ((m - hi) / hi if m > hi else (m - lo) / lo), 3)
        err = None if not m or not t else round(100.0 * (m - t) / t, 3)
        passed = beyond is not None and abs(beyond) <= tolerance_pct and err is not None and abs(err) <= tolerance_pct
        ok = ok and passed
        stats[stat] = {"measured_ms": m, "model_ms": round(model, 4), "band_ms": [round(lo, 4), round(hi, 4)],
                       "beyond_band_pct": beyond, "truth_ms": t, "error_pct": err, "pass": passed}
    return {"stats": stats, "pass": ok}


class _SyntheticProtocol(asyncio.Protocol):
    # Each response carries its own request id (the target's number of it), as platforms do: the
    # slowest requests fnbench keeps can be found in the target's record.
    RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\nx-request-id: syn-%d\r\n\r\nok"

    def __init__(self, server: _SyntheticServer) -> None:
        self.server = server
        self.transport: Any = None
        self.buffer = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        # Requests are bodiless GETs from fnbench (no pipelining): one per header terminator.
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            _, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self.server.schedule(self)

    def respond(self, received: float) -> None:
        if not self.transport.is_closing():
            self.server.answered += 1
            self.transport.write(self.RESPONSE % self.server.answered)
            self.server.truth.append(int((time.monotonic() - received) * 1e6))


class _SyntheticServer:
    def __init__(self, cfg: SyntheticConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.mu = math.log(cfg.median_ms / 1000.0)
        self.truth: list[int] = []
        self.answered = 0
        self.loop = asyncio.get_running_loop()

    def schedule(self, proto: _SyntheticProtocol) -> None:
        received = time.monotonic()
        delay = self.rng.lognormvariate(self.mu, self.cfg.sigma) if self.cfg.sigma > 0 else math.exp(self.mu)
        if self.cfg.stall_every_s > 0:
            # Stall windows sit on the wall clock, [k·every, k·every + stall): a response that
            # would leave inside one leaves at its end.
            leave = time.time() + delay
            into = leave % self.cfg.stall_every_s
            if into < self.cfg.stall_ms / 1000.0:
                delay += self.cfg.stall_ms / 1000.0 - into
        self.loop.call_at(self.loop.time() + delay, proto.respond, received)


def serve_forever(cfg: SyntheticConfig, port: int, on_ready: Any = None) -> None:
    """Serve the synthetic target in the foreground (``fnbench synthetic``) until interrupted."""
    import uvloop

    async def main() -> None:
        server = _SyntheticServer(cfg)
        srv = await server.loop.create_server(lambda: _SyntheticProtocol(server), cfg.host, port)
        if on_ready:
            on_ready(srv.sockets[0].getsockname()[1])
        await srv.serve_forever()

    uvloop.run(main())


def _serve(cfg: SyntheticConfig, conn: Any) -> None:
    import signal

    import uvloop

    signal.signal(signal.SIGINT, signal.SIG_IGN)

    async def main() -> None:
        server = _SyntheticServer(cfg)
        srv = await server.loop.create_server(lambda: _SyntheticProtocol(server), cfg.host, 0)
        conn.send(srv.sockets[0].getsockname()[1])
        await server.loop.run_in_executor(None, conn.recv)  # any message: stop and report
        srv.close()
        hist = histograms.new_histogram()
        histograms.fill(hist, server.truth)
        conn.send((histograms.encode(hist), len(server.truth)))

    uvloop.run(main())


class SyntheticTarget:
    """The synthetic target in a child process; ``truth()`` stops it and returns its histogram."""

    def __init__(self, cfg: SyntheticConfig) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(cfg, child), daemon=True, name="fnbench-synthetic")
        self.proc.start()
        if not self._conn.poll(20):
            self.proc.kill()
            raise SetupError("the synthetic target did not start within 20 s (is the machine overloaded?)")
        self.port: int = self._conn.recv()
        self.url = f"http://{cfg.host}:{self.port}/"

    def truth(self) -> tuple[str, int]:
        self._conn.send("stop")
        encoded, n = self._conn.recv()
        self.proc.join(5)
        return encoded, n

    def close(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


def calibration_spec(url: str, rps: float, duration_s: float, max_in_flight: int) -> str:
    return yaml.safe_dump(
        {
            "name": "calibrate",
            "targets": [{"name": "synthetic", "runtime": "other", "platform": "http", "url": url,
                         "method": "GET", "timeout": "30s"}],
            "load": {"executor": "constant", "rps": rps, "max_in_flight": max_in_flight},
            "duration": duration_s,
            "flush_interval": 2,
        },
        sort_keys=False,
    )


def calibrate(
    cfg: SyntheticConfig,
    rps: float = 400.0,
    duration_s: float = 15.0,
    max_in_flight: int = 1024,
    workers: int = 1,
    results_root: Path = Path("results"),
    metrics_port: int = 0,
    tolerance_pct: float = 3.0,
) -> dict[str, Any]:
    problems = cfg.problems() + [m for ok, m in ((rps > 0, "--rps must be > 0"),
                                                  (duration_s > 0, "--duration must be > 0")) if not ok]
    if problems:
        raise InputError("; ".join(problems))
    target = SyntheticTarget(cfg)
    try:
        text = calibration_spec(target.url, rps, duration_s, max_in_flight)
        outcome = session.run(session.runnable(text, "calibrate"), text,
                              session.Placement(workers=workers, metrics_port=metrics_port), results=results_root,
                              recording=None)  # a calibration is not a benchmark's history
        truth_encoded, served = target.truth()
    finally:
        target.close()
    group = outcome.result.groups[0] if outcome.result.groups else Group("", "", "", "")
    measured = group.response_ms.to_dict()
    truth = histograms.summary_ms(histograms.decode(truth_encoded))
    report: dict[str, Any] = {
        "run_id": outcome.result.run_id,
        "results": str(outcome.folder),
        "config": {**cfg.__dict__, "rps": rps, "duration_s": duration_s},
        "requests": {"intended": group.intended, "completed": group.completed,
                     "served": served, "outcomes": dict(group.outcomes)},
        "model": model_quantiles_ms(cfg),
        "tolerance_pct": tolerance_pct,
        **judge(cfg, measured, truth, group.completed, tolerance_pct),
    }
    return report
