"""Conformance of the benchmark subjects (functions/) with functions/CONTRACT.md.

Builds every runtime once (session fixture), starts each HTTP server on an
ephemeral loopback port and runs every vector in functions/vectors/ against
it. A runtime is skipped only when its toolchain is missing and CI is not set;
under CI a missing toolchain fails. Requests use http.client only; no mocks.

Run:  .venv/bin/python -m pytest tests/integration/test_functions_conformance.py -v
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lambda_emulator import auth as lambda_auth
from lambda_emulator import server as lambda_local
from orchestrator.subjects import functions as fn
from tests.servers import free_port, strict
from workers import functions as functions_registry

pytestmark = pytest.mark.integration

VECTORS_DIR = fn.FUNCTIONS_DIR / "vectors"
JAVA = ("java", "java-cds")  # one jar; java-cds adds JVM flags and a CDS archive (functions/CONTRACT.md §5)
WASM = tuple(fn.WASM_MODES)  # one module and its wasmtime host; no Lambda entry point
LAMBDA = tuple(r for r in fn.RUNTIMES if r not in WASM)
ENVELOPE_KEYS = {"runtime", "workload", "cold", "instance", "init_ms", "handler_ms", "result"}


def _in_ci() -> bool:
    return strict()


def _load_vectors() -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for workload in fn.WORKLOADS:
        doc = json.loads((VECTORS_DIR / f"{workload}.json").read_text(encoding="utf-8"))
        assert doc["workload"] == workload
        out[workload] = doc["cases"]
    return out


VECTORS = _load_vectors()
STREAM_RUNTIMES = functions_registry.STREAM_RUNTIMES  # the runtimes that implement `stream` (workers/functions.py)



def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    conn: http.client.HTTPConnection | None = None,
    timeout: float = 60.0,
) -> tuple[int, Any]:
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        c.request(method, path, body=body, headers=headers)
        resp = c.getresponse()
        raw = resp.read()
        return resp.status, (json.loads(raw) if raw else None)
    finally:
        if own:
            c.close()


def case_body(case: dict[str, Any]) -> bytes:
    if "body" in case:
        return str(case["body"]).encode()
    return json.dumps(case["params"]).encode()


def same_json(a: Any, b: Any) -> bool:
    """Parsed-JSON equality that, unlike ==, keeps booleans apart from numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, fn.Artifact | str]:
    """runtime -> Artifact, or the reason it is unavailable (skip text)."""
    out_dir = tmp_path_factory.mktemp("functions-build")
    built: dict[str, fn.Artifact | str] = {}
    for runtime in fn.RUNTIMES:
        try:
            (built[runtime],) = fn.build(runtime, out_dir)
        except fn.ToolchainMissing as e:
            if _in_ci():
                raise  # CI must have every toolchain
            built[runtime] = f"toolchain missing: {e}"
    return built


def _artifact(artifacts: dict[str, fn.Artifact | str], runtime: str) -> fn.Artifact:
    a = artifacts[runtime]
    if isinstance(a, str):
        pytest.skip(a)
    return a


class Servers:
    """One long-lived server per runtime, started on first use, killed at teardown."""

    def __init__(self, artifacts: dict[str, fn.Artifact | str]) -> None:
        self.artifacts = artifacts
        self.running: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}

    def port(self, runtime: str) -> int:
        if runtime not in self.running:
            art = _artifact(self.artifacts, runtime)
            proc, port = fn.serve(art, 20.0)  # the server picks its port and reports it (CONTRACT §1)
            self.running[runtime] = (port, proc)
        return self.running[runtime][0]

    def proc(self, runtime: str) -> subprocess.Popen[bytes]:
        return self.running[runtime][1]

    def close(self) -> None:
        for _, proc in self.running.values():
            fn.stop_server(proc)


@pytest.fixture(scope="session")
def servers(artifacts: dict[str, fn.Artifact | str]) -> Iterator[Servers]:
    s = Servers(artifacts)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def fresh_server(artifacts: dict[str, fn.Artifact | str]) -> Iterator[Any]:
    """Factory: a new server process per call (for cold-start and SIGTERM tests)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(runtime: str) -> tuple[int, subprocess.Popen[bytes]]:
        art = _artifact(artifacts, runtime)
        proc, port = fn.serve(art, 20.0)
        procs.append(proc)
        return port, proc

    try:
        yield start
    finally:
        for p in procs:
            fn.stop_server(p)


# ------------------------------------------------------------------ tests


def test_build_artifacts(artifacts: dict[str, fn.Artifact | str]) -> None:
    for runtime in fn.RUNTIMES:
        a = artifacts[runtime]
        if isinstance(a, str):
            continue
        assert a.runtime == runtime
        assert a.path.exists()
        assert a.size_bytes > 0
        assert a.command
        if runtime in ("rust", "go"):
            assert a.path.name == "bootstrap" and os.access(a.path, os.X_OK)
            assert fn.artifact_for(runtime, a.path.parent.parent).path == a.path
        if runtime in JAVA:
            assert a.path.name == "fnbench-java.jar" and str(a.path) in a.command
            assert fn.artifact_for(runtime, a.path.parent.parent).command == a.command
        if runtime in WASM:  # the module (its size is the artefact's); the host runs it precompiled
            assert a.path.name == "fnbench.wasm" and a.path.read_bytes()[:4] == b"\0asm"
            assert a.command[1:3] == ["--mode", fn.WASM_MODES[runtime]] and a.command[-1].endswith(".cwasm")
            assert fn.artifact_for(runtime, a.path.parent.parent).command == a.command


def test_vectors_cover_every_workload_with_a_bad_case() -> None:
    for workload, cases in VECTORS.items():
        statuses = {c["status"] for c in cases}
        assert 200 in statuses and 400 in statuses, workload


@pytest.mark.parametrize("runtime", fn.RUNTIMES)
def test_envelope_cold_then_warm(runtime: str, fresh_server: Any) -> None:
    port, _ = fresh_server(runtime)
    bodies = []
    for _ in range(3):
        status, body = request(port, "POST", "/echo", json.dumps({"payload": {"k": 1}}).encode())
        assert status == 200, body
        bodies.append(body)
    first, second, third = bodies
    for b in bodies:
        assert set(b) >= ENVELOPE_KEYS, b
        assert b["runtime"] == runtime
        assert b["workload"] == "echo"
        assert same_json(b["result"], {"k": 1})
        assert isinstance(b["init_ms"], int | float) and not isinstance(b["init_ms"], bool)
        assert b["init_ms"] > 0
        assert isinstance(b["handler_ms"], int | float) and b["handler_ms"] >= 0
        assert isinstance(b["instance"], str) and b["instance"]
    assert first["cold"] is True
    assert first["instance"] == second["instance"] == third["instance"]
    if runtime == "rust-wasm":  # a fresh WebAssembly instance per request: each is a cold start
        assert second["cold"] is True and third["cold"] is True
    else:
        assert second["cold"] is False and third["cold"] is False
        assert first["init_ms"] == second["init_ms"]
    status, health = request(port, "GET", "/health")
    assert status == 200 and health["instance"] == first["instance"]


@pytest.mark.parametrize("workload", fn.WORKLOADS)
@pytest.mark.parametrize("runtime", fn.RUNTIMES)
def test_vectors(runtime: str, workload: str, servers: Servers) -> None:
    port = servers.port(runtime)
    failures = []
    instance = None
    for case in VECTORS[workload]:
        status, body = request(port, "POST", f"/{workload}", case_body(case))
        where = f"{runtime}/{workload}/{case['name']}"
        if status != case["status"]:
            failures.append(f"{where}: status {status} != {case['status']}: {body}")
            continue
        if status == 200:
            if not set(body) >= ENVELOPE_KEYS:
                failures.append(f"{where}: envelope keys missing: {sorted(body)}")
                continue
            if body["runtime"] != runtime or body["workload"] != workload:
                failures.append(
                    f"{where}: runtime/workload fields {body['runtime']}/{body['workload']}"
                )
            if not same_json(body["result"], case["result"]):
                failures.append(
                    f"{where}: result\n  got      {body['result']!r}\n  expected {case['result']!r}"
                )
            instance = instance or body["instance"]
            if body["instance"] != instance:
                failures.append(f"{where}: instance changed")
        elif not (isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"]):
            failures.append(f"{where}: 400 without an error message: {body}")
    assert servers.proc(runtime).poll() is None, f"{runtime} server died"
    assert not failures, "\n".join(failures)


STREAM_VECTORS = json.loads((VECTORS_DIR / "stream.json").read_text(encoding="utf-8"))["cases"]


def test_the_stream_vectors_have_good_and_bad_cases() -> None:
    assert {c["status"] for c in STREAM_VECTORS} == {200, 400}


@pytest.mark.parametrize("runtime", STREAM_RUNTIMES)
def test_stream_vectors_buffered_over_http(runtime: str, servers: Servers) -> None:
    """``stream`` (functions/CONTRACT.md §3) answered buffered: its size and SHA-256.  (Node's
    streamed answer is checked against the same vectors in tests/integration/test_lambda_streaming.py.)"""
    port = servers.port(runtime)
    failures = []
    for case in STREAM_VECTORS:
        status, body = request(port, "POST", "/stream", case_body(case))
        where = f"{runtime}/stream/{case['name']}"
        if status != case["status"]:
            failures.append(f"{where}: status {status} != {case['status']}: {body}")
        elif status == 200 and not same_json(body["result"], case["result"]):
            failures.append(f"{where}: result {body['result']!r} != {case['result']!r}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("runtime", fn.RUNTIMES)
def test_bad_requests_then_still_serving(runtime: str, servers: Servers) -> None:
    port = servers.port(runtime)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)  # one keep-alive connection
    try:
        bad = [
            ("/no_such_workload", b"{}"),
            ("/hash", b"{not json"),
            ("/hash", b'{"data": "x", "rounds": -5}'),
            ("/matmul", b'{"n": 100000}'),
            ("/alloc", b'{"mb": "lots", "object_bytes": 1}'),
            ("/sleep", b'{"ms": 1e9}'),
            ("/validate", b'{"data_b64": "%%%", "max_bytes": 1, "sha256": "00"}'),
            ("/echo", b"[]"),
            ("/transform", b'{"records": [{"id": "1"}], "min_total": 0}'),
        ]
        for path, body in bad:
            status, payload = request(port, "POST", path, body, conn=conn)
            assert status == 400, (path, body, payload)
            assert isinstance(payload.get("error"), str) and payload["error"], payload
        status, payload = request(port, "POST", "/hash", b'{"data":"abc","rounds":1}', conn=conn)
        assert status == 200, payload
        assert (
            payload["result"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        )
        status, _ = request(port, "GET", "/health", conn=conn)
        assert status == 200
    finally:
        conn.close()
    assert servers.proc(runtime).poll() is None


@pytest.mark.parametrize("runtime", fn.RUNTIMES)
def test_sleep_does_not_block_other_requests(runtime: str, servers: Servers) -> None:
    port = servers.port(runtime)
    slow = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        t0 = time.monotonic()
        slow.request(
            "POST", "/sleep", body=b'{"ms": 700}', headers={"Content-Type": "application/json"}
        )
        time.sleep(0.05)
        status, _ = request(port, "POST", "/echo", b'{"payload": 1}', timeout=5)
        quick = time.monotonic() - t0
        resp = slow.getresponse()
        assert resp.status == 200
        assert json.loads(resp.read())["result"] == {"slept_ms": 700}
        assert status == 200
        assert quick < 0.6, f"echo waited {quick:.3f}s behind a sleeping request"
        assert time.monotonic() - t0 >= 0.69
    finally:
        slow.close()


@pytest.mark.parametrize("runtime", fn.RUNTIMES)
def test_port_0_is_picked_by_the_server_and_reported_once_listening(runtime: str, fresh_server: Any) -> None:
    """CONTRACT §1: PORT=0 and FNBENCH_READY_FD: the server binds a port of its own and writes it to the
    descriptor once it listens (so nobody can take the port between a parent's choice and the bind)."""
    port, proc = fresh_server(runtime)
    status, body = request(port, "GET", "/health")
    assert status == 200 and body["runtime"] == runtime
    assert proc.poll() is None


@pytest.mark.parametrize("runtime", fn.RUNTIMES)
def test_a_server_that_cannot_start_says_why(runtime: str, artifacts: dict[str, fn.Artifact | str],
                                              tmp_path: Path) -> None:
    """A server whose start fails (here: a host it cannot bind) is reported with its exit code and how
    long it ran, at once, not as "did not listen within" its deadline."""
    art = _artifact(artifacts, runtime)
    with pytest.raises(fn.FunctionNotReady) as info:
        fn.serve(art, 60.0, host="no-such-host.invalid")
    message = str(info.value)
    assert "exited after" in message and "rc=" in message, message


@pytest.mark.parametrize("runtime", fn.RUNTIMES)
def test_sigterm_exits_promptly(runtime: str, fresh_server: Any) -> None:
    port, proc = fresh_server(runtime)
    assert request(port, "POST", "/echo", b'{"payload": 1}')[0] == 200
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=5)
    assert time.monotonic() - t0 < 2.0


def test_every_artifact_is_built_where_it_says_with_its_real_size(
    artifacts: dict[str, fn.Artifact | str]
) -> None:
    """Each runtime's artefact exists at its path, its size is what is on disk, and its command
    names it; the sizes and build times are printed (see with -s or -rA)."""
    built = {rt: a for rt, a in artifacts.items() if not isinstance(a, str)}
    assert built, f"no runtime could be built: {artifacts}"
    for runtime, a in built.items():
        path = Path(a.path)
        assert path.exists(), (runtime, path)
        if runtime in JAVA:  # the jar, run by `java`; java-cds also ships its archive
            archive = path.with_name("fnbench-java.jsa")
            extra = archive.stat().st_size if runtime == "java-cds" else 0
            assert a.size_bytes == path.stat().st_size + extra > 0
            assert str(path) in a.command and Path(a.command[0]).name == "java"
            if runtime == "java-cds":
                assert f"-XX:SharedArchiveFile={archive}" in a.command
        elif runtime in WASM:  # the module; the host (the platform's part) is command[0]
            assert a.size_bytes == path.stat().st_size > 0
            assert Path(a.command[0]).name == "fnbench-wasm-host"
        elif path.is_file():  # rust, go: the binary itself
            assert a.size_bytes == path.stat().st_size > 0
            assert a.command[0] == str(path)
        else:  # node, python: the deployable sources
            assert a.size_bytes > 0 and any(str(path) in part for part in a.command)
    # Captured: shown with -s or -rA, and beside a failure; the suite's output stays quiet otherwise.
    for runtime, a in artifacts.items():
        if isinstance(a, str):
            print(f"\n  {runtime:8s} unavailable: {a}")
        else:
            print(f"\n  {runtime:8s} {a.size_bytes:>10,d} B  build {a.build_seconds:6.1f} s  {Path(a.path)}")


def test_java_cds_archive_maps_with_its_jar(artifacts: dict[str, fn.Artifact | str]) -> None:
    """The archive dumped at build time is valid for the jar beside it: with -Xshare:on (instead
    of the artefact's -Xshare:auto, which would quietly run without it) the JVM refuses to start
    on an unusable archive, so serving /health proves the classes come from it."""
    a = _artifact(artifacts, "java-cds")
    assert "-Xshare:auto" in a.command
    strict = dataclasses.replace(a, command=["-Xshare:on" if c == "-Xshare:auto" else c for c in a.command])
    port = free_port()
    proc = fn.start_server(strict, port)
    try:
        fn.wait_ready(port, 30.0, proc=proc)
        status, body = request(port, "POST", "/echo", b'{"payload": "cds"}')
        assert status == 200 and body["runtime"] == "java-cds" and body["result"] == "cds"
    finally:
        fn.stop_server(proc)


def test_java_without_maven_or_java_is_toolchain_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`fnbench functions build java` without mvn, or a built jar without java, names the tool."""
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    for runtime in JAVA:
        with pytest.raises(fn.ToolchainMissing, match="'mvn'"):
            fn.build(runtime, tmp_path / "out")
    jar = tmp_path / "out" / "java" / "fnbench-java.jar"
    jar.parent.mkdir(parents=True)
    jar.write_bytes(b"PK")
    with pytest.raises(fn.ToolchainMissing, match="'java'"):
        fn.artifact_for("java", tmp_path / "out")


# ------------------------------------------------------------------ Lambda entry points
#
# Rust and Go run their real Lambda mode (lambda_runtime / aws-lambda-go), and Java its
# handler under AWS's aws-lambda-java-runtime-interface-client, hosted by fnbench's local
# Lambda (lambda_emulator/server.py: the Runtime API 2018-06-01 to the function). Node and
# Python call their exported `handler` through a tiny driver process, exactly
# as the Lambda runtime would.


_NODE_DRIVER = """
import { createInterface } from 'node:readline';
const { handler } = await import(process.argv[1]);
for await (const line of createInterface({ input: process.stdin })) {
  let out;
  try { out = { kind: 'response', body: await handler(JSON.parse(line), {}) }; }
  catch (e) { out = { kind: 'error', body: { errorType: e.name, errorMessage: e.message } }; }
  process.stdout.write(JSON.stringify(out) + '\\n');
}
"""

_PYTHON_DRIVER = """
import json, sys
sys.path.insert(0, sys.argv[1])
import handler
for line in sys.stdin:
    try:
        out = {"kind": "response", "body": handler.handler(json.loads(line), None)}
    except Exception as e:
        out = {"kind": "error", "body": {"errorType": type(e).__name__, "errorMessage": str(e)}}
    sys.stdout.write(json.dumps(out) + "\\n")
    sys.stdout.flush()
"""


LAMBDA_CREDENTIALS = lambda_auth.Credentials("fnbench", "fnbench")  # the local Lambda takes only signed requests


class LambdaInvoker:
    """invoke(event) -> ("response", envelope) | ("error", {errorType, errorMessage})."""

    def __init__(self, artifact: fn.Artifact) -> None:
        self.lam: lambda_local.Background | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        env = dict(os.environ)
        if artifact.runtime in ("rust", "go", *JAVA):
            source = "java" if artifact.runtime in JAVA else artifact.runtime
            self.lam = lambda_local.Background([lambda_local.Function(
                name="fnbench", runtime=artifact.runtime, command=list(artifact.command),
                cwd=str(artifact.cwd or fn.FUNCTIONS_DIR / source), env=dict(artifact.env), memory_mb=512)],
                credentials=LAMBDA_CREDENTIALS)
            self.lam.__enter__()
            return
        if artifact.runtime == "node":
            cmd = [artifact.command[0], "--input-type=module", "-e", _NODE_DRIVER, str(artifact.path / "index.mjs")]
        else:
            cmd = [artifact.command[0], "-I", "-B", "-c", _PYTHON_DRIVER, str(artifact.path)]
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def invoke(self, event: Any) -> tuple[str, Any]:
        if self.lam is not None:
            host, port = self.lam.endpoint.removeprefix("http://").split(":")
            conn = http.client.HTTPConnection(host, int(port), timeout=60)
            try:
                path, body = "/2015-03-31/functions/fnbench/invocations", json.dumps(event).encode()
                headers = lambda_auth.sign("POST", self.lam.endpoint + path, body, LAMBDA_CREDENTIALS,
                                           headers={"content-type": "application/json"})
                conn.request("POST", path, body, headers)
                r = conn.getresponse()
                body = json.loads(r.read())
                assert r.status == 200, body
                return ("error" if r.getheader("X-Amz-Function-Error") else "response"), body
            finally:
                conn.close()
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(event).encode() + b"\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"lambda driver exited with {self.proc.poll()}"
        out = json.loads(line)
        return out["kind"], out["body"]

    def close(self) -> None:
        if self.lam is not None:
            self.lam.__exit__(None, None, None)
            return
        assert self.proc is not None
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        fn.stop_server(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.mark.parametrize("runtime", LAMBDA)
def test_lambda_entry_point(runtime: str, artifacts: dict[str, fn.Artifact | str]) -> None:
    inv = LambdaInvoker(_artifact(artifacts, runtime))
    try:
        failures: list[str] = []
        instance = None
        first = True
        for workload in fn.WORKLOADS:
            for case in VECTORS[workload]:
                if "body" in case:
                    continue  # raw-body cases are HTTP-only; Lambda events are already JSON
                kind, body = inv.invoke({"workload": workload, "params": case["params"]})
                where = f"{runtime}/lambda/{workload}/{case['name']}"
                if case["status"] == 200:
                    if kind != "response":
                        failures.append(f"{where}: expected a response, got {kind}: {body}")
                        continue
                    if not same_json(body["result"], case["result"]):
                        failures.append(f"{where}: result {body['result']!r} != {case['result']!r}")
                    if body["cold"] is not first:
                        failures.append(f"{where}: cold={body['cold']} (first invocation: {first})")
                    instance = instance or body["instance"]
                    if (
                        body["instance"] != instance
                        or body["runtime"] != runtime
                        or body["init_ms"] <= 0
                    ):
                        failures.append(f"{where}: bad envelope {body}")
                elif kind != "error" or body.get("errorType") != "BadRequest":
                    failures.append(f"{where}: expected a BadRequest error, got {kind}: {body}")
                first = False
        kind, body = inv.invoke({"workload": "no_such_workload"})
        assert kind == "error" and body.get("errorType") == "BadRequest", body
        kind, body = inv.invoke({"workload": "echo", "params": {"payload": "still alive"}})
        assert kind == "response" and body["result"] == "still alive", body
        assert not failures, "\n".join(failures)
    finally:
        inv.close()
