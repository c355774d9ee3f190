"""Where a worker finds the benchmark subjects it was built with (see functions/CONTRACT.md).

    RUNTIMES, WORKLOADS          what exists
    artifact_for(runtime, out)   the artefact of an earlier build, without building -> Artifact
    start_function(cmd, env, cwd)  start a function's HTTP server on a port it picks -> Started
    wait_port(started, deadline)   the port it listens on, or NotListening saying what happened

A worker starts local functions only from these artefacts (its own ``functions/`` build),
never from a command named in a task.  Rust and Go are built (orchestrator.subjects.functions.build,
`fnbench functions build`) into ``<out_dir>/<runtime>/bootstrap``; Node and Python need no
build: the artefact is their source directory, run by the interpreter found on this machine.
Java is built (Maven) into ``<out_dir>/java/fnbench-java.jar``, run by the JDK's ``java``;
``java-cds`` is the same jar with the tuning a Java team would try (C1 only, and an AppCDS
archive ``fnbench-java.jsa`` written at build time), a runtime of its own so that results
compare it with Rust like any other.  ``rust-wasm`` is Rust compiled to WebAssembly, served by
fnbench's wasmtime host (``functions/wasm/``) with a fresh instance per request, as an edge
platform does; ``rust-wasm-reuse`` is the same module and host reusing warm instances.  Both are
built into ``<out_dir>/rust-wasm/`` (the host, the module, the module precompiled).  Standard
library only.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from workers.errors import SetupError

REPO_ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS_DIR = REPO_ROOT / "functions"
DEFAULT_OUT_DIR = REPO_ROOT / "build" / "functions"

RUNTIMES: tuple[str, ...] = ("rust", "go", "node", "python", "java", "java-cds", "rust-wasm", "rust-wasm-reuse")
WORKLOADS: tuple[str, ...] = ("echo", "transform", "hash", "matmul", "alloc", "sleep", "validate")
# Response streaming (functions/CONTRACT.md §3 `stream`): only these runtimes implement it (Node streams
# it under Lambda's streamifyResponse, index.streamHandler; Rust with _HANDLER=stream, its bootstrap's
# own Runtime API streaming client; Python answers it buffered); the others answer 400 unknown workload.
STREAM_WORKLOADS: tuple[str, ...] = ("stream",)
STREAM_RUNTIMES: tuple[str, ...] = ("node", "python", "rust")

MIN_NODE_MAJOR = 18
MIN_PYTHON = (3, 11)
MIN_JAVA_MAJOR = 17

JAVA_JAR = "fnbench-java.jar"  # <out_dir>/java/: the shaded jar (workloads, Jackson, AWS's runtime client)
JAVA_CDS_ARCHIVE = "fnbench-java.jsa"  # <out_dir>/java/: the java-cds class-data sharing archive
# The WebAssembly runtimes: one module, one host, the host's --mode (functions/wasm/host/src/main.rs).
WASM_MODES: dict[str, str] = {"rust-wasm": "per-request", "rust-wasm-reuse": "reuse"}
WASM_DIR = "rust-wasm"  # <out_dir>/rust-wasm/: the host, the module and the module precompiled
WASM_HOST = "fnbench-wasm-host"
WASM_MODULE = "fnbench.wasm"
WASM_PRECOMPILED = "fnbench.cwasm"
# The JVM flags of each Java runtime (functions/CONTRACT.md §5). `java` is the JVM as it comes;
# `java-cds` stops at the C1 compiler (faster to warm, slower at peak) and maps the application's
# classes from an archive dumped at build time. -Xshare:auto: a stale archive is ignored, not fatal.
JAVA_FLAGS: dict[str, tuple[str, ...]] = {
    "java": (),
    "java-cds": ("-XX:TieredStopAtLevel=1", "-Xshare:auto", "-XX:SharedArchiveFile={archive}"),
}

_INSTALL_HINTS: dict[str, str] = {
    "cargo": "install Rust with rustup: https://rustup.rs (then `source ~/.cargo/env`)",
    "go": "install Go >= 1.22: https://go.dev/doc/install (or `apt-get install golang-go`)",
    "node": f"install Node.js >= {MIN_NODE_MAJOR}: https://nodejs.org (or `apt-get install nodejs`)",
    "python3": "install Python >= 3.11 (`apt-get install python3.11`), or set FNBENCH_PYTHON",
    "java": f"install a JDK >= {MIN_JAVA_MAJOR} (`apt-get install openjdk-17-jdk-headless`), or set JAVA_HOME",
    "javac": f"install a JDK >= {MIN_JAVA_MAJOR}, not only a JRE (`apt-get install openjdk-17-jdk-headless`)",
    "mvn": "install Apache Maven >= 3.6 (`apt-get install maven`)",
    "rustc (wasm32-wasi)": "on Debian 12: `apt-get install rustc libstd-rust-dev-wasm32 lld-14` (what "
                           "`scripts/setup-system.sh demo` installs; rustup's rustc is not used for the guest), or "
                           "set FNBENCH_WASM_RUSTC to a rustc that has the wasm32-wasi standard library",
    "rust-lld": "on Debian 12: `apt-get install lld-14` (the linker rustc uses for wasm32-wasi)",
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


@dataclass(frozen=True)
class Artifact:
    """A runnable subject: what to start and how big it is."""

    runtime: str
    path: Path  # the binary (rust, go) or the source directory (node, python)
    size_bytes: int  # binary size, or the sum of the deployable source files
    command: list[str]  # argv that starts the HTTP server (PORT/HOST come from env)
    env: dict[str, str] = field(default_factory=dict)  # extra environment for `command`
    build_seconds: float = 0.0  # wall time of the build step (0 when nothing was built)

    @property
    def cwd(self) -> Path:
        """The directory the server runs in: the source directory, or the binary's."""
        return self.path if self.path.is_dir() else self.path.parent


def find_tool(tool: str, runtime: str) -> str:
    found = shutil.which(tool)
    if found:
        return found
    for candidate in _EXTRA_TOOL_PATHS.get(tool, ()):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise ToolchainMissing(tool, runtime, "not on PATH")


def _node() -> str:
    node = find_tool("node", "node")
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


def java_tool(tool: str, runtime: str = "java") -> str:
    """`java` or `javac`: $JAVA_HOME/bin first, then PATH; a JDK older than 17 is ToolchainMissing."""
    home = os.environ.get("JAVA_HOME", "")
    candidate = Path(home) / "bin" / tool if home else None
    if candidate is not None and candidate.is_file() and os.access(candidate, os.X_OK):
        found = str(candidate)
    else:
        found = find_tool(tool, runtime)
    # The JDK's `release` file names its version: no JVM start needed to check it.
    release = Path(os.path.realpath(found)).parent.parent / "release"
    try:
        text = release.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return found  # not a standard JDK layout: let the build or the start say what is wrong
    for line in text.splitlines():
        if line.startswith("JAVA_VERSION="):
            version = line.split("=", 1)[1].strip().strip('"')
            head = version.split(".")[0]
            major = int(head) if head.isdigit() else 0
            if major == 1:  # "1.8.0_392"
                major = int(version.split(".")[1])
            if major < MIN_JAVA_MAJOR:
                raise ToolchainMissing(tool, runtime, f"{found} is Java {version}; need >= {MIN_JAVA_MAJOR}")
    return found


def java_artifact(runtime: str, out_dir: Path, seconds: float = 0.0) -> Artifact:
    """The built jar (and, for java-cds, its archive) as a runnable artefact; FileNotFoundError if not built."""
    jar = Path(out_dir) / "java" / JAVA_JAR
    if not jar.is_file():
        raise FileNotFoundError(f"{runtime} is not built: {jar} missing; run build({runtime!r})")
    size = jar.stat().st_size
    archive = jar.with_name(JAVA_CDS_ARCHIVE)
    if runtime == "java-cds":
        if not archive.is_file():
            raise FileNotFoundError(f"{runtime} is not built: {archive} missing; run build({runtime!r})")
        size += archive.stat().st_size  # what would be deployed: the jar and its archive
    flags = [f.format(archive=archive) for f in JAVA_FLAGS[runtime]]
    # -Dfnbench.runtime: the name the function reports (one jar serves both runtimes).
    command = [java_tool("java", runtime), *flags, f"-Dfnbench.runtime={runtime}", "-jar", str(jar)]
    return Artifact(runtime=runtime, path=jar, size_bytes=size, command=command, env={}, build_seconds=seconds)


def source_size(directory: Path, suffixes: tuple[str, ...]) -> int:
    return sum(
        p.stat().st_size
        for p in directory.iterdir()
        if p.is_file() and (p.suffix in suffixes or p.name == "package.json")
    )


def binary_artifact(runtime: str, path: Path, seconds: float = 0.0) -> Artifact:
    return Artifact(runtime=runtime, path=path, size_bytes=path.stat().st_size, command=[str(path)], env={},
                    build_seconds=seconds)


def node_artifact() -> Artifact:
    src = FUNCTIONS_DIR / "node"
    return Artifact(runtime="node", path=src, size_bytes=source_size(src, (".mjs", ".js")),
                    command=[_node(), str(src / "server.mjs")], env={})


def python_artifact() -> Artifact:
    src = FUNCTIONS_DIR / "python"
    # -I: isolated (no user site, no PYTHON* env), -B: no .pyc writes into the tree.
    return Artifact(runtime="python", path=src, size_bytes=source_size(src, (".py",)),
                    command=[_python(), "-I", "-B", str(src / "server.py")], env={})


def wasm_artifact(runtime: str, out_dir: Path, seconds: float = 0.0) -> Artifact:
    """The host and the module (precompiled) as a runnable artefact of `runtime` (its --mode);
    FileNotFoundError if not built.  Its size is the module's: what an edge platform is sent (the
    host is the platform's)."""
    folder = Path(out_dir) / WASM_DIR
    host, module, precompiled = folder / WASM_HOST, folder / WASM_MODULE, folder / WASM_PRECOMPILED
    for path in (host, module, precompiled):
        if not path.is_file():
            raise FileNotFoundError(f"{runtime} is not built: {path} missing; run build({runtime!r})")
    return Artifact(runtime=runtime, path=module, size_bytes=module.stat().st_size,
                    command=[str(host), "--mode", WASM_MODES[runtime], str(precompiled)], env={},
                    build_seconds=seconds)


def check_runtime(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")


def artifact_for(runtime: str, out_dir: Path = DEFAULT_OUT_DIR) -> Artifact:
    """The artefact of an earlier build() (no compiling); FileNotFoundError if not built.

    ValueError for a runtime outside RUNTIMES; ToolchainMissing (a SetupError) when the
    interpreter of node or python, or the JDK of java, is missing.
    """
    check_runtime(runtime)
    if runtime in ("rust", "go"):
        path = Path(out_dir) / runtime / "bootstrap"
        if not path.is_file():
            raise FileNotFoundError(f"{runtime} is not built: {path} missing; run build({runtime!r})")
        return binary_artifact(runtime, path)
    if runtime in ("java", "java-cds"):
        return java_artifact(runtime, out_dir)
    if runtime in WASM_MODES:
        return wasm_artifact(runtime, out_dir)
    return node_artifact() if runtime == "node" else python_artifact()


# ------------------------------------------------------------------ starting a function's server
#
# The server binds PORT=0 (the kernel picks a free port) and, once listening, writes the port and a
# newline to the descriptor named by FNBENCH_READY_FD (functions/CONTRACT.md §1).  No port is
# chosen by us and released before the child binds it, so no other socket can take it in between;
# and the report means "listening", so no connect() polling is needed.  The server's stdout and
# stderr go to an unnamed temporary file, whose tail explains a server that never got ready.

READY_FD_ENV = "FNBENCH_READY_FD"
_TAIL_BYTES = 2000


@dataclass
class Started:
    """A started function server: the process, the read end of its ready pipe, its output file."""

    proc: subprocess.Popen[bytes]
    ready_fd: int
    output: IO[bytes]
    started_at: float  # time.monotonic() just before the spawn

    def close(self) -> None:
        """Close our ends (the ready pipe and the output file); the process is left alone."""
        if self.ready_fd >= 0:
            os.close(self.ready_fd)
            self.ready_fd = -1
        self.output.close()

    def output_tail(self) -> str:
        """The last lines the server wrote to stdout/stderr, or '' ."""
        try:
            size = os.fstat(self.output.fileno()).st_size
            data = os.pread(self.output.fileno(), _TAIL_BYTES, max(0, size - _TAIL_BYTES))
        except (OSError, ValueError):
            return ""
        text = data.decode("utf-8", "replace").strip()
        return ("…" + text) if size > _TAIL_BYTES else text


class NotListening(SetupError):
    """A started function server exited, or stayed alive without listening, before its deadline."""

    def __init__(self, message: str, *, exited: bool) -> None:
        super().__init__(message)
        self.exited = exited


def start_function(command: list[str], env: dict[str, str], cwd: str | Path,
                   output: IO[bytes] | None = None) -> Started:
    """Start a function's HTTP server in its own session on a port it picks (PORT=0), with a pipe
    to report the port on.  No preexec_fn: CPython vforks and releases the GIL while the child execs.
    OSError when the command cannot be executed."""
    out = output if output is not None else tempfile.TemporaryFile(prefix="fnbench-function-")  # noqa: SIM115
    r, w = os.pipe()
    env = {**env, "PORT": "0", READY_FD_ENV: str(w)}
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(
            command, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            pass_fds=(w,), start_new_session=True,
        )
    except BaseException:
        os.close(r)
        out.close()
        raise
    finally:
        os.close(w)  # the child holds the only write end: EOF here once it exits
    return Started(proc, r, out, t0)


def _how_it_ended(rc: int, seconds: float) -> str:
    if rc < 0:
        with_name = signal.Signals(-rc).name if -rc in signal.valid_signals() else str(-rc)
        return f"was killed by signal {with_name} after {seconds:.3f} s"
    return f"exited after {seconds:.3f} s with rc={rc}"


def wait_port(started: Started, deadline: float, closing: threading.Event | None = None,
              name: str = "the function") -> int:
    """Block until the server reports its port (then close the ready pipe and return the port).

    Raises NotListening, saying what happened: it exited after X s with rc=N (and its output's
    tail), or it was alive and not listening when the deadline passed or ``closing`` was set."""
    proc, fd = started.proc, started.ready_fd
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    buf = b""
    eof = False
    while not eof:
        if closing is not None and closing.is_set():
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        if not poller.poll(max(1, min(int(remaining * 1000) + 1, 50))):
            continue
        chunk = os.read(fd, 64)
        if not chunk:
            eof = True
        buf += chunk
        if b"\n" in buf:
            line = buf.split(b"\n", 1)[0].strip()
            if line.isdigit() and 0 < int(line) < 65536:
                os.close(fd)
                started.ready_fd = -1
                return int(line)
            eof = True  # not a port: treat it like a server that never reports one
    # Not listening: if the pipe reached EOF the process is exiting (or closed the pipe); wait a little.
    rc: int | None
    try:
        rc = proc.wait(timeout=1.0) if eof else proc.poll()
    except subprocess.TimeoutExpired:
        rc = None
    seconds = time.monotonic() - started.started_at
    tail = started.output_tail()
    said = f"; its output ended: {tail!r}" if tail else "; it wrote nothing to stdout or stderr"
    if rc is not None:
        raise NotListening(f"{name} {_how_it_ended(rc, seconds)}, before it listened{said}", exited=True)
    why = "when the run stopped waiting" if closing is not None and closing.is_set() else "when its deadline passed"
    reported = f"it reported {buf[:40]!r} instead of a port on ${READY_FD_ENV}" if buf else \
        f"it reported no port on ${READY_FD_ENV} (a build older than functions/CONTRACT.md §1? " \
        "rebuild it with `fnbench functions build`)"
    raise NotListening(f"{name} was alive and not listening after {seconds:.1f} s, {why}: "
                       f"{reported}{said}", exited=False)
