"""Where a worker finds the benchmark subjects it was built with (see functions/CONTRACT.md).

    RUNTIMES, WORKLOADS          what exists
    artifact_for(runtime, out)   the artefact of an earlier build, without building -> Artifact

A worker starts local functions only from these artefacts (its own ``functions/`` build),
never from a command named in a task.  Rust and Go are built (orchestrator.subjects.functions.build,
`fnbench functions build`) into ``<out_dir>/<runtime>/bootstrap``; Node and Python need no
build: the artefact is their source directory, run by the interpreter found on this machine.
Java is built (Maven) into ``<out_dir>/java/fnbench-java.jar``, run by the JDK's ``java``;
``java-cds`` is the same jar with the tuning a Java team would try (C1 only, and an AppCDS
archive ``fnbench-java.jsa`` written at build time), a runtime of its own so that results
compare it with Rust like any other.  Standard library only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from workers.errors import SetupError

REPO_ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS_DIR = REPO_ROOT / "functions"
DEFAULT_OUT_DIR = REPO_ROOT / "build" / "functions"

RUNTIMES: tuple[str, ...] = ("rust", "go", "node", "python", "java", "java-cds")
WORKLOADS: tuple[str, ...] = ("echo", "transform", "hash", "matmul", "alloc", "sleep", "validate")

MIN_NODE_MAJOR = 18
MIN_PYTHON = (3, 11)
MIN_JAVA_MAJOR = 17

JAVA_JAR = "fnbench-java.jar"  # <out_dir>/java/: the shaded jar (workloads, Jackson, AWS's runtime client)
JAVA_CDS_ARCHIVE = "fnbench-java.jsa"  # <out_dir>/java/: the java-cds class-data sharing archive
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
    return node_artifact() if runtime == "node" else python_artifact()
