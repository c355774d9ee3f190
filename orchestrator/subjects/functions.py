"""Build and start the benchmark subjects in functions/ (see functions/CONTRACT.md).

    RUNTIMES, WORKLOADS          what exists                          (from workers.functions)
    build(runtime, out_dir)      compile (rust: cargo, go: go build, java: mvn) -> list[Artifact]
    artifact_for(runtime, out)   the artefact of an earlier build     (from workers.functions)
    serve(artifact, timeout)     start its HTTP server on a port it picks; wait until it listens -> (Popen, port)
    start_server(artifact, port) start its HTTP server on 127.0.0.1:port -> Popen
    wait_ready(port, timeout)    poll GET /health until 200
    stop_server(proc)            SIGTERM, then SIGKILL after a grace period

Rust and Go build into `<out_dir>/<runtime>/bootstrap` (the file name AWS Lambda's
custom runtimes expect). Node and Python need no build: the artefact is their
source directory. Java builds one jar with Maven into `<out_dir>/java/fnbench-java.jar`;
`java-cds` adds a class-data sharing archive dumped by a training run of that jar. `rust-wasm` and
`rust-wasm-reuse` build `<out_dir>/rust-wasm/`: the guest (functions/wasm/guest, compiled by a rustc
with the wasm32-wasi standard library: Debian's 1.63), the host (functions/wasm/host, cargo on the
wasmtime crate) and the module precompiled by that host. Finding a built artefact lives in workers.functions, because a worker
starts local functions from its own build; this module only adds building. Standard library only.
"""

from __future__ import annotations

import contextlib
import filecmp
import http.client
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator.errors import SetupError
from workers.functions import (
    DEFAULT_OUT_DIR,
    FUNCTIONS_DIR,
    JAVA_CDS_ARCHIVE,
    JAVA_JAR,
    MIN_NODE_MAJOR,
    MIN_PYTHON,
    REPO_ROOT,
    RUNTIMES,
    WASM_DIR,
    WASM_HOST,
    WASM_MODES,
    WASM_MODULE,
    WASM_PRECOMPILED,
    WORKLOADS,
    Artifact,
    NotListening,
    ToolchainMissing,
    artifact_for,
    binary_artifact,
    check_runtime,
    find_tool,
    java_artifact,
    java_tool,
    node_artifact,
    python_artifact,
    start_function,
    wait_port,
    wasm_artifact,
)

__all__ = [
    "DEFAULT_OUT_DIR", "FUNCTIONS_DIR", "MIN_NODE_MAJOR", "MIN_PYTHON", "REPO_ROOT", "RUNTIMES", "WASM_MODES", "WORKLOADS",
    "Artifact", "BuildFailed", "ToolchainMissing", "artifact_for", "build", "serve", "start_server",
    "stop_server", "wait_ready", "wasm_rustc",
]


class BuildFailed(SetupError, RuntimeError):
    """The toolchain exists but the build command failed; carries its output tail."""

    def __init__(self, runtime: str, command: list[str], returncode: int, output: str) -> None:
        self.runtime = runtime
        self.command = command
        self.returncode = returncode
        self.output = output
        tail = "\n".join(output.strip().splitlines()[-30:])
        super().__init__(
            f"{runtime}: build failed (exit {returncode}): {' '.join(command)}\n{tail}"
        )


# ------------------------------------------------------------------ build


# Where build tools' own progress lines go (runtime, line): `fnbench functions build` shows them;
# tests and library callers keep them quiet (they are in BuildFailed's output when a build fails).
build_progress: Callable[[str, str], None] | None = None


def _run_build(runtime: str, cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace")
    except FileNotFoundError as e:
        raise ToolchainMissing(Path(cmd[0]).name, runtime, str(e)) from e
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if build_progress is not None and line.strip():
            build_progress(runtime, line.rstrip())
    if proc.wait() != 0:
        raise BuildFailed(runtime, cmd, proc.returncode, "".join(lines))
    return time.monotonic() - t0


def _jobs() -> str:
    return os.environ.get("FNBENCH_BUILD_JOBS") or str(os.cpu_count() or 1)


def _build_rust(out_dir: Path) -> Artifact:
    cargo = find_tool("cargo", "rust")
    src = FUNCTIONS_DIR / "rust"
    env = dict(os.environ)
    env["PATH"] = f"{Path(cargo).parent}{os.pathsep}{env.get('PATH', '')}"  # rustc next to cargo
    cmd = [cargo, "build", "--release", "--locked", "-j", _jobs()]
    seconds = _run_build("rust", cmd, src, env)
    target = Path(env.get("CARGO_TARGET_DIR") or src / "target")
    built = target / "release" / "bootstrap"
    dest = out_dir / "rust" / "bootstrap"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")  # copy then rename: a running bootstrap is "text file busy"
    shutil.copy2(built, tmp)
    os.replace(tmp, dest)
    return binary_artifact("rust", dest, seconds)


def _build_go(out_dir: Path) -> Artifact:
    go = find_tool("go", "go")
    src = FUNCTIONS_DIR / "go"
    dest = out_dir / "go" / "bootstrap"
    dest.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update({"CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly", "GOTOOLCHAIN": "local"})
    cmd = [go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(dest), "."]
    seconds = _run_build("go", cmd, src, env)
    return binary_artifact("go", dest, seconds)


WASM_SRC = FUNCTIONS_DIR / "wasm"
WASM_TARGET = "wasm32-wasi"
# The guest's rustc flags: the release profile of functions/rust (CONTRACT.md §5), for wasm32-wasi.
WASM_RUSTC_FLAGS = ("--edition", "2021", "--crate-type", "cdylib", "--crate-name", "fnbench_wasm",
                    "--target", WASM_TARGET, "-C", "opt-level=3", "-C", "lto=fat", "-C", "codegen-units=1",
                    "-C", "panic=abort", "-C", "strip=symbols")


def wasm_rustc() -> str:
    """A rustc that has the wasm32-wasi standard library: $FNBENCH_WASM_RUSTC (then only that one),
    else Debian's /usr/bin/rustc (libstd-rust-dev-wasm32), else rustc on PATH; ToolchainMissing
    otherwise.  The guest has no dependencies, so any rustc >= 1.63 with that target builds it."""
    chosen = os.environ.get("FNBENCH_WASM_RUSTC", "")
    candidates = [chosen] if chosen else ["/usr/bin/rustc", shutil.which("rustc") or ""]
    seen: list[str] = []
    for rustc in dict.fromkeys(filter(None, candidates)):
        if not (Path(rustc).is_file() and os.access(rustc, os.X_OK)):
            if rustc == chosen:
                seen.append(f"{rustc} (FNBENCH_WASM_RUSTC) is not an executable file")
            continue
        try:
            sysroot = subprocess.run([rustc, "--print", "sysroot"], capture_output=True, text=True,
                                     timeout=60).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        if sysroot and (Path(sysroot) / "lib" / "rustlib" / WASM_TARGET / "lib").is_dir():
            return rustc
        seen.append(rustc)
    detail = f"{', '.join(seen)}: no {WASM_TARGET} standard library" if seen else "no rustc found"
    raise ToolchainMissing("rustc (wasm32-wasi)", "rust-wasm", detail)


def _newer(out: Path, sources: list[Path]) -> bool:
    return out.is_file() and all(out.stat().st_mtime >= p.stat().st_mtime for p in sources)


def _build_wasm(runtime: str, out_dir: Path) -> Artifact:
    """The guest module, the host, and the module precompiled by that host (each only when its
    sources changed), into <out_dir>/rust-wasm/."""
    rustc = wasm_rustc()
    lld = shutil.which("rust-lld", path=f"{Path(rustc).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if lld is None:
        raise ToolchainMissing("rust-lld", runtime, "not on PATH")
    cargo = find_tool("cargo", runtime)
    folder = Path(out_dir) / WASM_DIR
    folder.mkdir(parents=True, exist_ok=True)
    seconds = 0.0
    guest = WASM_SRC / "guest"
    module = folder / WASM_MODULE
    if not _newer(module, sorted((guest / "src").glob("*.rs"))):
        tmp = module.with_suffix(".wasm.tmp")
        env = dict(os.environ)
        env["PATH"] = f"{Path(lld).parent}{os.pathsep}{env.get('PATH', '')}"
        seconds += _run_build(runtime, [rustc, *WASM_RUSTC_FLAGS, "src/lib.rs", "-o", str(tmp)], guest, env)
        os.replace(tmp, module)
    host_src = WASM_SRC / "host"
    env = dict(os.environ)
    env["PATH"] = f"{Path(cargo).parent}{os.pathsep}{env.get('PATH', '')}"  # rustup's rustc next to cargo
    env.pop("RUSTC", None)
    seconds += _run_build(runtime, [cargo, "build", "--release", "--locked", "-j", _jobs()], host_src, env)
    target = Path(env.get("CARGO_TARGET_DIR") or host_src / "target")
    host = folder / WASM_HOST
    built = target / "release" / WASM_HOST
    if not (host.is_file() and filecmp.cmp(built, host, shallow=False)):
        tmp = host.with_suffix(".tmp")  # copy then rename: a running host is "text file busy"
        shutil.copy2(built, tmp)
        os.replace(tmp, host)
    precompiled = folder / WASM_PRECOMPILED
    if not _newer(precompiled, [module, host]):
        seconds += _run_build(runtime, [str(host), "--compile", str(module), str(precompiled)], folder, env)
    return wasm_artifact(runtime, out_dir, seconds)


JAVA_SRC = FUNCTIONS_DIR / "java"


def _java_stale(built: Path) -> bool:
    """True when Maven's jar is missing or older than pom.xml or any source file."""
    if not built.is_file():
        return True
    newest = max(p.stat().st_mtime for p in [JAVA_SRC / "pom.xml", *(JAVA_SRC / "src").rglob("*")] if p.is_file())
    return built.stat().st_mtime < newest


def _build_java_jar(out_dir: Path) -> tuple[Path, float]:
    """`mvn package` when the sources changed; the jar is copied into out_dir only when its bytes
    differ, so an unchanged build keeps the jar's mtime and the CDS archive dumped against it."""
    mvn = find_tool("mvn", "java")
    java_tool("javac", "java")  # Maven compiles with the JDK it runs on: a JRE alone cannot
    env = dict(os.environ)
    java_home = Path(os.path.realpath(java_tool("java", "java"))).parent.parent
    env.setdefault("JAVA_HOME", str(java_home))  # mvn runs on the same JDK the functions run on
    built = JAVA_SRC / "target" / JAVA_JAR
    seconds = 0.0
    if _java_stale(built):
        # -B: no colours or prompts; -q: errors only (BuildFailed keeps them). Offline once
        # ~/.m2 holds the pinned set: `mvn -o package` (FNBENCH_MAVEN_ARGS="-o").
        cmd = [mvn, "-B", "-q", *os.environ.get("FNBENCH_MAVEN_ARGS", "").split(), "package"]
        seconds = _run_build("java", cmd, JAVA_SRC, env)
    dest = out_dir / "java" / JAVA_JAR
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not (dest.is_file() and filecmp.cmp(built, dest, shallow=False)):
        tmp = dest.with_suffix(".tmp")
        shutil.copy2(built, tmp)
        os.replace(tmp, dest)
    return dest, seconds


# One request per workload (and the error paths): the training run's classes are what the
# java-cds archive holds.
_TRAINING: list[tuple[str, object]] = [
    ("echo", {"payload": {"user": 42, "tags": ["a", "b"], "items": [1, 2.5, None, True]}}),
    ("transform", {"records": [{"id": 1, "name": "zoë", "price": 2.5, "qty": 3, "tags": ["x"]},
                               {"id": 2, "name": "b", "price": 1, "qty": 1, "tags": []}], "min_total": 0}),
    ("hash", {"data": "fnbench", "rounds": 1000}),
    ("matmul", {"n": 16}),
    ("alloc", {"mb": 1, "object_bytes": 4096}),
    ("sleep", {"ms": 1}),
    ("validate", {"data_b64": "YWJj", "max_bytes": 10,
                  "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}),
    ("no_such_workload", {}),
    ("hash", "{not json"),
]


def _train_cds(jar: Path, out_dir: Path) -> float:
    """Dump <out_dir>/java/fnbench-java.jsa: run the jar's HTTP server with the java-cds flags and
    -XX:ArchiveClassesAtExit, send it every workload, SIGTERM it (the dump is written at exit)."""
    archive = jar.with_name(JAVA_CDS_ARCHIVE)
    if archive.is_file() and archive.stat().st_mtime >= jar.stat().st_mtime:
        return 0.0  # dumped against this very jar
    tmp = archive.with_suffix(".jsa.tmp")
    tmp.unlink(missing_ok=True)
    java = java_tool("java", "java-cds")
    cmd = [java, "-XX:TieredStopAtLevel=1", f"-XX:ArchiveClassesAtExit={tmp}", "-Dfnbench.runtime=java-cds",
           "-jar", str(jar)]
    log = out_dir / "java" / "cds-training.log"
    t0 = time.monotonic()
    proc, port = serve(Artifact(runtime="java-cds", path=jar, size_bytes=0, command=cmd), 60.0, log_path=log)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            for workload, params in _TRAINING:
                body = params if isinstance(params, str) else json.dumps(params)
                conn.request("POST", f"/{workload}", body=body.encode(), headers={"Content-Type": "application/json"})
                conn.getresponse().read()
            conn.request("GET", "/health")
            conn.getresponse().read()
        finally:
            conn.close()
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=120)  # the dump takes a few seconds
    except (OSError, http.client.HTTPException, subprocess.TimeoutExpired, SetupError) as e:
        output = log.read_text(errors="replace") if log.is_file() else ""
        raise BuildFailed("java-cds", cmd, -1, f"CDS training run failed: {e}\n{output}") from e
    finally:
        stop_server(proc)
    if not tmp.is_file():
        output = log.read_text(errors="replace") if log.is_file() else ""
        raise BuildFailed("java-cds", cmd, proc.returncode or -1, f"no archive written\n{output}")
    os.replace(tmp, archive)
    return time.monotonic() - t0


def _build_java(runtime: str, out_dir: Path) -> Artifact:
    jar, seconds = _build_java_jar(out_dir)
    if runtime == "java-cds":
        seconds += _train_cds(jar, out_dir)
    return java_artifact(runtime, out_dir, seconds)


def build(runtime: str | None = None, out_dir: Path = DEFAULT_OUT_DIR) -> list[Artifact]:
    """Build one runtime (or all when None) and return its artefacts.

    Raises ToolchainMissing when a needed tool is absent and BuildFailed when a
    build command fails; with runtime=None the first such error stops the build.
    """
    runtimes = RUNTIMES if runtime is None else (runtime,)
    for r in runtimes:
        check_runtime(r)
    out_dir = Path(out_dir)
    artifacts: list[Artifact] = []
    for r in runtimes:
        if r == "rust":
            artifacts.append(_build_rust(out_dir))
        elif r == "go":
            artifacts.append(_build_go(out_dir))
        elif r in ("java", "java-cds"):
            artifacts.append(_build_java(r, out_dir))
        elif r in WASM_MODES:
            artifacts.append(_build_wasm(r, out_dir))
        elif r == "node":
            artifacts.append(node_artifact())
        else:
            artifacts.append(python_artifact())
    return artifacts


# ------------------------------------------------------------------ run


class FunctionNotReady(SetupError):
    """A started function server exited or never answered /health."""


def _server_env(artifact: Artifact, host: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "AWS_LAMBDA_RUNTIME_API"}
    env.update(artifact.env)
    env["HOST"] = host
    return env


def serve(artifact: Artifact, timeout: float, *, host: str = "127.0.0.1",
          log_path: Path | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """Start the artefact's HTTP server on a port it picks and reports once it listens (its own
    process group; no port is chosen here for it to lose before it binds); returns it and its port.

    Raises FunctionNotReady (a SetupError) saying what happened: it exited (after how long, its
    exit code and the tail of its output) or was alive and not listening after `timeout` seconds.
    Output goes to log_path (appended), or to a temporary file kept only to explain a failure.
    """
    out = open(log_path, "ab") if log_path else None  # noqa: SIM115
    try:
        started = start_function(artifact.command, _server_env(artifact, host), artifact.cwd, output=out)
    except OSError as e:
        if out is not None:
            out.close()
        raise FunctionNotReady(f"could not start {artifact.command[0]}: {e}") from e
    try:
        port = wait_port(started, time.monotonic() + timeout, name=f"the {artifact.runtime} function server")
    except NotListening as e:
        stop_server(started.proc, grace=1.0)
        raise FunctionNotReady(str(e)) from None
    finally:
        started.close()
    return started.proc, port


def start_server(
    artifact: Artifact,
    port: int,
    *,
    host: str = "127.0.0.1",
    log_path: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start the artefact's HTTP server on host:port (its own process group).

    AWS_LAMBDA_RUNTIME_API is removed from the environment so the Rust and Go
    binaries never switch to Lambda mode by accident. Output goes to log_path,
    or is discarded.
    """
    env = _server_env(artifact, host)
    env["PORT"] = str(port)
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            artifact.command,
            env=env,
            cwd=artifact.cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        if log_path:
            out.close()  # type: ignore[union-attr]


def wait_ready(
    port: int,
    timeout: float = 10.0,
    *,
    host: str = "127.0.0.1",
    proc: subprocess.Popen[bytes] | None = None,
) -> float:
    """Poll GET /health until 200; returns seconds waited.

    Raises FunctionNotReady (a SetupError) after `timeout` seconds, or at once if
    `proc` is given and exits first.
    """
    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise FunctionNotReady(f"the function server exited with code {proc.returncode} before it was ready")
        conn = http.client.HTTPConnection(host, port, timeout=1.0)
        try:
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return time.monotonic() - t0
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        if time.monotonic() >= deadline:
            raise FunctionNotReady(f"no healthy function server on {host}:{port} after {timeout:.1f} s")
        time.sleep(0.01)


def stop_server(proc: subprocess.Popen[bytes], grace: float = 3.0) -> int:
    """SIGTERM the server's process group; SIGKILL after `grace` seconds. Returns exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            return proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait()
