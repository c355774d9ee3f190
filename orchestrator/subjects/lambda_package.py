"""Deployment packages for AWS Lambda: ``fnbench functions package --lambda``.

One reproducible ZIP per runtime (fixed timestamps, sorted entries, ``bootstrap`` executable),
each with what ``aws lambda create-function`` needs to know beside it (``<runtime>.json``):

    rust, go   bootstrap (this machine's build)      provided.al2023, handler bootstrap
    python     handler.py + workloads.py             python3.12, handler.handler
    node       index.mjs + workloads.mjs + package.json   nodejs20.x, index.handler
    java       fnbench-java.jar's classes (the jar)  java21, Handler::handleRequest

The architecture is this machine's (x86_64 or arm64): Rust and Go binaries run only there.
Deploying, IAM roles and regions are the user's business; nothing here calls AWS.
"""

from __future__ import annotations

import hashlib
import json
import platform
import stat
import zipfile
from pathlib import Path
from typing import Any

from workers.functions import FUNCTIONS_DIR, artifact_for
from workers.platforms.aws_lambda.runtimes import HANDLER, LAMBDA_RUNTIME, MAX_ZIP_BYTES

DEFAULT_PACKAGE_DIR = FUNCTIONS_DIR.parent / "build" / "lambda"
_EPOCH = (1980, 1, 1, 0, 0, 0)
RUNTIMES = ("rust", "go", "python", "node", "java")  # packaged (java-cds is the same jar, tuned at start)


def _files(runtime: str) -> list[tuple[str, Path, bool]]:
    """(name in the zip, source file, executable)."""
    if runtime in ("rust", "go"):
        return [("bootstrap", artifact_for(runtime).path, True)]
    if runtime == "python":
        return [(n, FUNCTIONS_DIR / "python" / n, False) for n in ("handler.py", "workloads.py")]
    if runtime == "node":
        return [(n, FUNCTIONS_DIR / "node" / n, False) for n in ("index.mjs", "workloads.mjs", "package.json")]
    if runtime == "java":
        return [("lib/fnbench-java.jar", artifact_for("java").path, False)]
    raise ValueError(f"no Lambda package for {runtime!r} (one of {', '.join(RUNTIMES)})")


def architecture() -> str:
    return "arm64" if platform.machine().lower() in ("aarch64", "arm64") else "x86_64"


# What Lambda needs in each package: the file its runtime starts (and whether it must be executable).
_ENTRY = {"rust": ("bootstrap", True), "go": ("bootstrap", True), "python": ("handler.py", False),
          "node": ("index.mjs", False), "java": ("lib/fnbench-java.jar", False)}


def layout_problems(path: Path, runtime: str) -> list[str]:
    """What is wrong with a package's layout for ``runtime`` (empty: nothing)."""
    problems = []
    if path.stat().st_size > MAX_ZIP_BYTES:
        problems.append(f"{path.stat().st_size:,} bytes: Lambda takes at most {MAX_ZIP_BYTES:,} in a direct upload")
    with zipfile.ZipFile(path) as zf:
        infos = {i.filename: i for i in zf.infolist()}
    for name in infos:
        if name.startswith("/") or ".." in name.split("/"):
            problems.append(f"{name!r}: entries must be relative paths inside the package")
    entry, executable = _ENTRY[runtime]
    info = infos.get(entry)
    if info is None:
        problems.append(f"no {entry} at the top of the package (Lambda's {LAMBDA_RUNTIME[runtime]} runtime starts it)")
    elif executable and not (info.external_attr >> 16) & 0o111:
        problems.append(f"{entry} is not executable (mode {(info.external_attr >> 16) & 0o777:o})")
    if runtime == "python" and "workloads.py" not in infos:
        problems.append("no workloads.py beside handler.py")
    if runtime == "node" and "workloads.mjs" not in infos:
        problems.append("no workloads.mjs beside index.mjs")
    return problems


def package(runtime: str, out_dir: Path = DEFAULT_PACKAGE_DIR) -> dict[str, Any]:
    """Write ``<out_dir>/<runtime>.zip`` and its manifest; returns the manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{runtime}.zip"
    tmp = path.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, source, executable in sorted(_files(runtime)):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.external_attr = (stat.S_IFREG | (0o755 if executable else 0o644)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, source.read_bytes())
    problems = layout_problems(tmp, runtime)
    if problems:
        tmp.unlink()
        raise ValueError(f"{path}: " + "; ".join(problems))
    tmp.replace(path)
    lambda_runtime, handler = LAMBDA_RUNTIME[runtime], HANDLER[runtime]
    manifest = {"runtime": runtime, "zip": str(path), "size_bytes": path.stat().st_size,
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "lambda_runtime": lambda_runtime,
                "handler": handler, "architectures": [architecture()], "package_type": "Zip"}
    (out_dir / f"{runtime}.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
