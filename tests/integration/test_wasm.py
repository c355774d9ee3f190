"""rust-wasm: the wasmtime host (functions/wasm/host) and its guest, beyond the conformance vectors
(test_functions_conformance.py runs those for rust-wasm and rust-wasm-reuse like every runtime).

A module that traps, loops forever or grows its memory past the host's limit is a 500 (fnbench's
``function_error``), never a hung or dead host; the local platform runs rust-wasm cold and warm.
Real processes and loopback HTTP only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from orchestrator.subjects import functions
from tests.servers import strict
from workers.contract import Outcome, Target
from workers.platforms.local import LocalColdInvoker, LocalWarmInvoker

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BAD_MODULE = ROOT / "tests" / "fixtures" / "wasm_bad_module.wat"
MODES = {"rust-wasm": "per-request", "rust-wasm-reuse": "reuse"}


def built(runtime: str) -> functions.Artifact:
    try:
        return functions.artifact_for(runtime)
    except FileNotFoundError:
        if strict():
            raise
        try:
            return functions.build(runtime)[0]
        except functions.ToolchainMissing as e:
            pytest.skip(str(e))


def with_module(art: functions.Artifact, module: Path, *flags: str) -> functions.Artifact:
    """The same host and mode, serving another module, with extra host flags."""
    host, _mode_flag, mode, _module = art.command
    return dataclasses.replace(art, path=module, command=[host, "--mode", mode, *flags, str(module)])


def post(port: int, workload: str, body: bytes = b"{}", timeout: float = 30.0) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", f"/{workload}", body=body, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


@pytest.mark.parametrize("runtime", list(MODES))
def test_a_trap_a_loop_and_a_memory_hog_are_500s_and_the_host_serves_on(runtime: str) -> None:
    art = with_module(built(runtime), BAD_MODULE, "--timeout-ms", "300", "--max-memory-mb", "64")
    proc, port = functions.serve(art, 30.0)
    try:
        assert post(port, "echo")[0] == 200
        for workload, says in (("hash", "unreachable"), ("matmul", "deadline exceeded"), ("alloc", "memory")):
            t0 = time.monotonic()
            status, body = post(port, workload)
            assert status == 500, (workload, body)
            assert says in body["error"] and body["runtime"] == runtime, (workload, body)
            assert time.monotonic() - t0 < 20, f"{workload}: the host took too long to give up"
            status, body = post(port, "echo")  # the next request is served as before
            assert status == 200 and body["result"] == 1, body
        assert proc.poll() is None
    finally:
        functions.stop_server(proc)


@pytest.mark.parametrize("runtime", list(MODES))
def test_the_real_guest_out_of_memory_is_a_500_and_the_next_request_is_served(runtime: str) -> None:
    art = built(runtime)
    art = dataclasses.replace(art, command=[*art.command[:3], "--max-memory-mb", "64", art.command[-1]])
    proc, port = functions.serve(art, 30.0)
    try:
        status, body = post(port, "alloc", b'{"mb": 128, "object_bytes": 65536}')
        assert status == 500 and "memory" in body["error"], body
        status, body = post(port, "alloc", b'{"mb": 8, "object_bytes": 65536}')
        assert status == 200 and body["result"]["objects"] == 128, body
        status, body = post(port, "hash", b'{"data": "abc", "rounds": 1}')
        assert status == 200 and body["result"].startswith("ba7816bf"), body
    finally:
        functions.stop_server(proc)


def test_per_request_instances_are_cold_every_time_and_reuse_is_warm() -> None:
    """rust-wasm: every response is cold with its own instantiation time; rust-wasm-reuse: the first."""
    for runtime in MODES:
        proc, port = functions.serve(built(runtime), 30.0)
        try:
            bodies = [post(port, "echo", b'{"payload": 1}')[1] for _ in range(4)]
        finally:
            functions.stop_server(proc)
        assert all(b["init_ms"] > 0 and b["host_init_ms"] > 0 for b in bodies), bodies
        if runtime == "rust-wasm":
            assert all(b["cold"] is True for b in bodies), bodies
        else:
            assert [b["cold"] for b in bodies] == [True, False, False, False], bodies
            assert len({b["init_ms"] for b in bodies}) == 1, bodies


def _invoke_all(invoker: Any, n: int) -> list[Outcome]:
    async def go() -> list[Outcome]:
        outcomes: list[Outcome] = []
        finished = asyncio.Event()

        def done(outcome: Outcome, due: float, sent: float, end: float, *_: Any) -> None:
            outcomes.append(outcome)
            if len(outcomes) == n:
                finished.set()

        await invoker.start()
        try:
            for _ in range(n):
                invoker.invoke(time.monotonic(), done)
            await asyncio.wait_for(finished.wait(), 60)
        finally:
            await invoker.close()
        return outcomes

    return asyncio.run(go())


@pytest.mark.parametrize("runtime", list(MODES))
def test_the_local_platform_counts_a_trapping_module_as_function_error(runtime: str) -> None:
    art = with_module(built(runtime), BAD_MODULE, "--timeout-ms", "300")
    trap = Target(name=f"trap-{runtime}", runtime=runtime, platform="local", workload="hash", body="{}",
                  timeout_s=30.0)
    assert _invoke_all(LocalWarmInvoker(trap, art, 1), 5) == [Outcome.function_error] * 5
    assert _invoke_all(LocalColdInvoker(trap, art), 2) == [Outcome.function_error] * 2
    ok = dataclasses.replace(trap, name=f"ok-{runtime}", workload="echo")
    assert _invoke_all(LocalWarmInvoker(ok, art, 1), 3) == [Outcome.ok] * 3


def test_the_local_platform_runs_rust_wasm_warm_and_cold(tmp_path: Path) -> None:
    for runtime in MODES:
        built(runtime)
    spec = tmp_path / "wasm.yaml"
    spec.write_text(
        "name: local-wasm\n"
        "targets:\n"
        + "".join(f"  - {{name: {r}, runtime: {r}, platform: local, workload: hash, body: {{data: abc, rounds: 10}}}}\n"
                  for r in MODES)
        + "load: {executor: constant, rps: 40}\nduration: 2s\nflush_interval: 1s\n"
        "cold_start: {enabled: true, invocations: 3, rps: 3}\n"
    )
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(spec), "--results", str(tmp_path / "r"),
                        "--metrics-port", "0", "--json"], capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert r.returncode == 0, r.stderr
    groups = {(g["target"], g["phase"]): g for g in orjson.loads(r.stdout)["groups"]}
    for runtime in MODES:
        warm, cold = groups[(runtime, "warm")], groups[(runtime, "cold")]
        assert warm["outcomes"] == {"ok": 80} and warm["peak_rss_mb"] > 0, warm
        assert cold["outcomes"] == {"ok": 3} and cold["cold_starts"] == 3, cold
        # A fresh host process: spawn → first response includes the instantiation the envelope reports.
        assert cold["service_ms"]["p50"] >= cold["init_ms"]["p50"] > 0


def test_building_without_a_wasm32_rustc_names_what_is_missing(tmp_path: Path) -> None:
    """FNBENCH_WASM_RUSTC names the only rustc to use: one without the wasm32-wasi std is ToolchainMissing
    (the message says what to install) and `fnbench functions build rust-wasm` exits 2."""
    fake = tmp_path / "rustc"
    fake.write_text(f"#!/bin/sh\necho {tmp_path}\n")
    fake.chmod(0o755)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FNBENCH_WASM_RUSTC", str(fake))
        with pytest.raises(functions.ToolchainMissing, match="wasm32-wasi.*libstd-rust-dev-wasm32"):
            functions.build("rust-wasm", tmp_path / "out")
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "functions", "build", "rust-wasm", "-q"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60,
                       env={**os.environ, "FNBENCH_WASM_RUSTC": str(fake)})
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "wasm32-wasi" in r.stderr and "apt-get install" in r.stderr, r.stderr
    with pytest.raises(FileNotFoundError, match="rust-wasm is not built"):
        functions.artifact_for("rust-wasm", tmp_path / "nothing")
