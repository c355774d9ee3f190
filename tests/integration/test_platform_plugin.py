"""A platform is a plug-in: a toy platform in a module of its own (written here, outside the
repository), named in FNBENCH_PLATFORMS and nowhere else, is validated with its own keys and
checks, planned with the address it builds, and run end to end by `fnbench run`'s workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

FNBENCH = [sys.executable, "-m", "orchestrator.cli"]
ROOT = Path(__file__).resolve().parents[2]
RPS, SECONDS = 50, 2

# The whole platform: one module declaring one workers.platforms.Platform.
TOY = '''
import asyncio
import time

from pydantic import BaseModel, Field

from workers.contract import Outcome, Target
from workers.platforms import Platform


class ToyFields(BaseModel):
    toy_delay_ms: float = Field(default=2.0, ge=0, le=1000)  # how long the toy "function" takes
    toy_answer: str = "ok"


class ToyInvoker:
    """Answers every request with the target's outcome after a fixed delay; no network."""

    def __init__(self, target: Target) -> None:
        self.delay = float(target.address["delay_ms"]) / 1000
        self.outcome = Outcome[target.address["answer"]]
        self.invoked = 0
        self.prepared = 0

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()

    async def close(self) -> None:
        pass

    def invoke(self, due, done):
        sent = time.monotonic()
        self.invoked += 1
        self.loop.call_later(self.delay, lambda: done(self.outcome, due, sent, time.monotonic()))

    # Optional capabilities (workers.platforms.Counts, Prepares): declared by having them.
    def counters(self):
        return {"toy_invoked": self.invoked, "toy_prepared": self.prepared}

    def prepare(self, rate, max_in_flight, start_at, end_at):
        self.prepared += 1


def problems(t, cold_start):
    if t.toy_answer not in ("ok", "function_error"):
        yield ("toy_answer", f"ok or function_error, got {t.toy_answer!r}")


PLATFORM = Platform(
    "toy",
    lambda target, phase, max_in_flight: ToyInvoker(target),
    fields=ToyFields,
    problems=problems,
    address=lambda t: {"delay_ms": t.toy_delay_ms, "answer": t.toy_answer},
)
'''


def _env(tmp_path: Path, plugins: str | None) -> dict[str, str]:
    (tmp_path / "plugins").mkdir(exist_ok=True)
    (tmp_path / "plugins" / "fnbench_toy_platform.py").write_text(TOY)
    env = {k: v for k, v in os.environ.items() if k != "FNBENCH_PLATFORMS"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp_path / "plugins"), env.get("PYTHONPATH", "")) if p)
    if plugins is not None:
        env["FNBENCH_PLATFORMS"] = plugins
    return env


def _spec(tmp_path: Path, target: str) -> Path:
    p = tmp_path / "toy.yaml"
    p.write_text(f"name: toy\ntargets:\n  - {{name: t, platform: toy, {target}}}\n"
                 f"load: {{executor: constant, rps: {RPS}}}\nduration: {SECONDS}s\nflush_interval: 500ms\n")
    return p


def fnbench(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FNBENCH, *args], capture_output=True, text=True, cwd=ROOT, timeout=120, env=env)


@pytest.mark.integration
def test_a_toy_platform_from_a_plugin_module_runs_end_to_end(tmp_path):
    env = _env(tmp_path, "fnbench_toy_platform:PLATFORM")
    results = tmp_path / "results"
    r = fnbench(env, "run", str(_spec(tmp_path, "toy_delay_ms: 3")), "--results", str(results), "--workers", "1",
                "--metrics-port", "0")
    assert r.returncode == 0, r.stderr
    (folder,) = results.iterdir()
    result = orjson.loads((folder / "result.json").read_bytes())
    (g,) = result["groups"]
    assert (g["target"], g["phase"]) == ("t", "warm")
    assert g["intended"] == g["sent"] == g["completed"] == RPS * SECONDS
    assert g["outcomes"] == {"ok": RPS * SECONDS}
    assert g["response_ms"]["p50"] >= 2.5  # the toy's fixed delay, measured from the due time
    # The task carried the address the toy built, and its declared capabilities were used:
    # counters() as per-interval deltas, prepare() once before the window.
    intervals = [orjson.loads(line) for line in (folder / "intervals.jsonl").read_bytes().splitlines() if line]
    assert sum(iv["counters"].get("toy_invoked", 0) for iv in intervals) == RPS * SECONDS
    assert sum(iv["counters"].get("toy_prepared", 0) for iv in intervals) == 1


@pytest.mark.integration
def test_a_plugin_platform_validates_its_own_keys_and_is_unknown_without_the_plugin(tmp_path):
    bad = _spec(tmp_path, "toy_answer: maybe, toy_delay_ms: -1")
    r = fnbench(_env(tmp_path, "fnbench_toy_platform:PLATFORM"), "validate", str(bad))
    assert r.returncode == 2
    assert "targets[0].toy_delay_ms: Input should be greater than or equal to 0" in r.stderr, r.stderr
    assert "targets[0].toy_answer: ok or function_error, got 'maybe'" in r.stderr, r.stderr
    # Not registered: the platform and its keys are unknown, as any typo is.
    r = fnbench(_env(tmp_path, None), "validate", str(_spec(tmp_path, "toy_delay_ms: 1")))
    assert r.returncode == 2
    assert "targets[0].platform: Input should be 'http', 'local' or 'aws-lambda'" in r.stderr, r.stderr
    assert "targets[0].toy_delay_ms: Extra inputs are not permitted" in r.stderr, r.stderr
    # A plug-in that cannot be loaded is a clear setup error, exit 2, no traceback.
    r = fnbench(_env(tmp_path, "fnbench_no_such_module:PLATFORM"), "validate", str(_spec(tmp_path, "toy_delay_ms: 1")))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "FNBENCH_PLATFORMS: cannot import 'fnbench_no_such_module'" in r.stderr, r.stderr
