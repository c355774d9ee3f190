"""Build and start the benchmark subjects in functions/ (see functions/CONTRACT.md).

    RUNTIMES, WORKLOADS          what exists
    build(runtime, out_dir)      compile (rust: cargo, go: go build) -> list[Artifact]
    artifact_for(runtime, out)   the artefact of an earlier build, without building
    start_server(artifact, port) start its HTTP server on 127.0.0.1:port -> Popen
    wait_ready(port, timeout)    poll GET /health until 200
    stop_server(proc)            SIGTERM, then SIGKILL after a grace period

Rust and Go build into `<out_dir>/<runtime>/bootstrap` (the file name AWS Lambda's
custom runtimes expect). Node and Python need no build: the artefact is their
source directory. Standard library only.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import SetupError

REPO_ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS_DIR = REPO_ROOT / "functions"
DEFAULT_OUT_DIR = REPO_ROOT / "build" / "functions"

RUNTIMES: tuple[str, ...] = ("rust", "go", "node", "python")
WORKLOADS: tuple[str, ...] = ("echo", "transform", "hash", "matmul", "alloc", "sleep", "validate")

MIN_NODE_MAJOR = 18
MIN_PYTHON = (3, 11)

_INSTALL_HINTS: dict[str, str] = {
    "cargo": "install Rust with rustup: https://rustup.rs (then `source ~/.cargo/env`)",
    "go": "install Go >= 1.22: https://go.dev/doc/install (or `apt-get install golang-go`)",
    "node": f"install Node.js >= {MIN_NODE_MAJOR}: https://nodejs.org (or `apt-get install nodejs`)",
    "python3": "install Python >= 3.11 (`apt-get install python3.11`), or set FNBENCH_PYTHON",
}

# Well-known install locations that are often missing from a non-login PATH.
_EXTRA_TOOL_PATHS: dict[str, tuple[Path, ...]] = {
    "cargo": (Path.home() / ".cargo" / "bin" / "cargo",),
    "go": (Path("/usr/local/go/bin/go"), Path.home() / "go" / "bin" / "go"),
}


class ToolchainMissing(SetupError, RuntimeError):
    """A runtime's toolchain is not installed; names the tool and how to install it."""

    def __init__(self, tool: str, runtime: str, detail: str = "") -> None:
        self.tool = tool
        self.runtime = runtime
        self.hint = _INSTALL_HINTS.get(tool, "")
        msg = f"{runtime}: required tool '{tool}' not found"
        if detail:
            msg += f" ({detail})"
        if self.hint:
            msg += f"; {self.hint}"
        super().__init__(msg)


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


@dataclass(frozen=True)
class Artifact:
    """A runnable subject: what to start and how big it is."""

    runtime: str
    path: Path  # the binary (rust, go) or the source directory (node, python)
    size_bytes: int  # binary size, or the sum of the deployable source files
    command: list[str]  # argv that starts the HTTP server (PORT/HOST come from env)
    env: dict[str, str] = field(default_factory=dict)  # extra environment for `command`
    build_seconds: float = 0.0  # wall time of the build step (0 when nothing was built)


# ------------------------------------------------------------------ toolchains


def _find_tool(tool: str, runtime: str) -> str:
    found = shutil.which(tool)
    if found:
        return found
    for candidate in _EXTRA_TOOL_PATHS.get(tool, ()):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise ToolchainMissing(tool, runtime, "not on PATH")


def _node() -> str:
    node = _find_tool("node", "node")
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout
        major = int(out.strip().lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        raise ToolchainMissing("node", "node", f"could not run `{node} --version`: {e}") from e
    if major < MIN_NODE_MAJOR:
        raise ToolchainMissing("node", "node", f"found {out.strip()}, need >= {MIN_NODE_MAJOR}")
    return node


def _python() -> str:
    """The real interpreter (not a pyenv/asdf shim, which adds ~100 ms to start-up)."""
    candidates = [os.environ.get("FNBENCH_PYTHON", ""), "python3.11", "python3"]
    probe = "import sys; print(sys.version_info[0], sys.version_info[1], sys.executable)"
    seen_versions: list[str] = []
    for name in filter(None, candidates):
        exe = shutil.which(name)
        if not exe:
            continue
        try:
            out = subprocess.run([exe, "-c", probe], capture_output=True, text=True, timeout=30)
            major, minor, real = out.stdout.strip().split(" ", 2)
        except (OSError, ValueError, subprocess.SubprocessError):
            continue
        seen_versions.append(f"{name}={major}.{minor}")
        if (int(major), int(minor)) >= MIN_PYTHON:
            return real or exe
    detail = "found " + ", ".join(seen_versions) if seen_versions else "not on PATH"
    raise ToolchainMissing("python3", "python", f"{detail}; need >= 3.11")


def _run_build(runtime: str, cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    except FileNotFoundError as e:
        raise ToolchainMissing(Path(cmd[0]).name, runtime, str(e)) from e
    if proc.returncode != 0:
        raise BuildFailed(runtime, cmd, proc.returncode, proc.stdout)
    return time.monotonic() - t0


def _jobs() -> str:
    return os.environ.get("FNBENCH_BUILD_JOBS") or str(os.cpu_count() or 1)


def _source_size(directory: Path, suffixes: tuple[str, ...]) -> int:
    return sum(
        p.stat().st_size
        for p in directory.iterdir()
        if p.is_file() and (p.suffix in suffixes or p.name == "package.json")
    )


# ------------------------------------------------------------------ build


def _build_rust(out_dir: Path) -> Artifact:
    cargo = _find_tool("cargo", "rust")
    src = FUNCTIONS_DIR / "rust"
    env = dict(os.environ)
    env["PATH"] = f"{Path(cargo).parent}{os.pathsep}{env.get('PATH', '')}"  # rustc next to cargo
    cmd = [cargo, "build", "--release", "--locked", "-j", _jobs()]
    seconds = _run_build("rust", cmd, src, env)
    target = Path(env.get("CARGO_TARGET_DIR") or src / "target")
    built = target / "release" / "bootstrap"
    dest = out_dir / "rust" / "bootstrap"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(built, dest)
    return _binary_artifact("rust", dest, seconds)


def _build_go(out_dir: Path) -> Artifact:
    go = _find_tool("go", "go")
    src = FUNCTIONS_DIR / "go"
    dest = out_dir / "go" / "bootstrap"
    dest.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update({"CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly", "GOTOOLCHAIN": "local"})
    cmd = [go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(dest), "."]
    seconds = _run_build("go", cmd, src, env)
    return _binary_artifact("go", dest, seconds)


def _binary_artifact(runtime: str, path: Path, seconds: float = 0.0) -> Artifact:
    return Artifact(
        runtime=runtime,
        path=path,
        size_bytes=path.stat().st_size,
        command=[str(path)],
        env={},
        build_seconds=seconds,
    )


def _node_artifact() -> Artifact:
    src = FUNCTIONS_DIR / "node"
    return Artifact(
        runtime="node",
        path=src,
        size_bytes=_source_size(src, (".mjs", ".js")),
        command=[_node(), str(src / "server.mjs")],
        env={},
    )


def _python_artifact() -> Artifact:
    src = FUNCTIONS_DIR / "python"
    return Artifact(
        runtime="python",
        path=src,
        size_bytes=_source_size(src, (".py",)),
        # -I: isolated (no user site, no PYTHON* env), -B: no .pyc writes into the tree.
        command=[_python(), "-I", "-B", str(src / "server.py")],
        env={},
    )


def _check_runtime(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")


def build(runtime: str | None = None, out_dir: Path = DEFAULT_OUT_DIR) -> list[Artifact]:
    """Build one runtime (or all when None) and return its artefacts.

    Raises ToolchainMissing when a needed tool is absent and BuildFailed when a
    build command fails; with runtime=None the first such error stops the build.
    """
    runtimes = RUNTIMES if runtime is None else (runtime,)
    for r in runtimes:
        _check_runtime(r)
    out_dir = Path(out_dir)
    artifacts: list[Artifact] = []
    for r in runtimes:
        if r == "rust":
            artifacts.append(_build_rust(out_dir))
        elif r == "go":
            artifacts.append(_build_go(out_dir))
        elif r == "node":
            artifacts.append(_node_artifact())
        else:
            artifacts.append(_python_artifact())
    return artifacts


def artifact_for(runtime: str, out_dir: Path = DEFAULT_OUT_DIR) -> Artifact:
    """The artefact of an earlier build() (no compiling); FileNotFoundError if not built."""
    _check_runtime(runtime)
    if runtime in ("rust", "go"):
        path = Path(out_dir) / runtime / "bootstrap"
        if not path.is_file():
            raise FileNotFoundError(
                f"{runtime} is not built: {path} missing; run build({runtime!r})"
            )
        return _binary_artifact(runtime, path)
    return _node_artifact() if runtime == "node" else _python_artifact()


# ------------------------------------------------------------------ run


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
    env = {k: v for k, v in os.environ.items() if k != "AWS_LAMBDA_RUNTIME_API"}
    env.update(artifact.env)
    env.update({"PORT": str(port), "HOST": host})
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            artifact.command,
            env=env,
            cwd=artifact.path if artifact.path.is_dir() else artifact.path.parent,
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

    Raises TimeoutError after `timeout` seconds, or RuntimeError at once if
    `proc` is given and exits first.
    """
    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before it was ready")
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
            raise TimeoutError(f"no healthy server on {host}:{port} after {timeout:.1f} s")
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
