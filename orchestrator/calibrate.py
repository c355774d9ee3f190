"""`fnbench calibrate`: run fnbench against a synthetic loopback target that knows the truth.

The target draws every response delay itself (lognormal with a given median and sigma, plus
optional periodic stalls during which no response leaves) and records the delay it actually
applied, measured on its own clock from request arrival to response write.  fnbench's
reported percentiles are then compared with the target's — both from HDR histograms.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator import runner, spec
from orchestrator.dispatch.local import LocalDispatcher
from orchestrator.errors import SetupError
from orchestrator.result import Group
from workers import recorder

Z = {"p50": 0.0, "p99": 2.3263478740, "p999": 3.0902323062}


@dataclass(frozen=True)
class SyntheticConfig:
    median_ms: float = 50.0
    sigma: float = 0.5
    stall_every_s: float = 0.0  # 0: no stalls
    stall_ms: float = 0.0
    seed: int = 7
    host: str = "127.0.0.1"


def model_quantiles_ms(cfg: SyntheticConfig) -> dict[str, float]:
    return {k: cfg.median_ms * math.exp(cfg.sigma * z) for k, z in Z.items()}


class _SyntheticProtocol(asyncio.Protocol):
    RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"

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
            self.transport.write(self.RESPONSE)
            self.server.truth.append(int((time.monotonic() - received) * 1e6))


class _SyntheticServer:
    def __init__(self, cfg: SyntheticConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.mu = math.log(cfg.median_ms / 1000.0)
        self.truth: list[int] = []
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
        hist = recorder.new_histogram()
        recorder.fill(hist, server.truth)
        conn.send((recorder.encode(hist), len(server.truth)))

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
) -> dict[str, Any]:
    target = SyntheticTarget(cfg)
    try:
        text = calibration_spec(target.url, rps, duration_s, max_in_flight)
        outcome = runner.run(spec.load_text(text, "calibrate"), text, LocalDispatcher(workers), results_root,
                             metrics_port=metrics_port)
        truth_encoded, served = target.truth()
    finally:
        target.close()
    group = outcome.result.groups[0] if outcome.result.groups else Group("", "", "", "")
    measured = group.response_ms.to_dict()
    truth = recorder.summary_ms(recorder.decode(truth_encoded))
    report: dict[str, Any] = {
        "run_id": outcome.result.run_id,
        "results": str(outcome.folder),
        "config": {**cfg.__dict__, "rps": rps, "duration_s": duration_s},
        "requests": {"intended": group.intended, "completed": group.completed,
                     "served": served, "outcomes": dict(group.outcomes)},
        "model": model_quantiles_ms(cfg) if cfg.stall_every_s == 0 else None,
        "stats": {},
    }
    for stat in ("p50", "p99", "p999"):
        m, t = measured.get(stat), truth.get(stat)
        err = None if not m or not t else round(100.0 * (m - t) / t, 3)
        report["stats"][stat] = {"measured_ms": m, "truth_ms": t, "error_pct": err}
    return report
