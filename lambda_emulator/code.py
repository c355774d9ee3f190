"""Deployed code for the local Lambda: CreateFunction, UpdateFunctionCode, GetFunction, DeleteFunction.

A ZIP uploaded through the Invoke API's control plane (boto3 ``create_function`` /
``update_function_code``, as ``fnbench functions deploy`` sends them) is unpacked into a folder of
its own and run as Lambda runs it, by its ``Runtime`` and ``Handler``:

    provided.al2023, provided.al2    <code>/bootstrap                   (custom runtimes: Rust, Go)
    python3.*                        python -m awslambdaric <Handler>    (cwd and LAMBDA_TASK_ROOT: <code>)
    nodejs*                          node aws-lambda-ric <Handler>
    java*                            java -jar <code>/lib/<the jar>      (the jar starts AWS's runtime client)

A new function is ``State: Pending`` for a moment and then ``Active``; invoking it before is 409
ResourceConflictException, as on AWS.  A code update retires every instance (the next
invocations are cold starts of the new code) and answers LastUpdateStatus InProgress, Successful
shortly after.  CodeSha256 is AWS's: base64 of the ZIP's SHA-256.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import shutil
import stat
import sys
import tempfile
import uuid
import zipfile
from pathlib import Path
from typing import Any

import orjson

from lambda_emulator.model import NODE_RIC, Function, error, now_iso
from workers.platforms.aws_lambda.runtimes import MAX_ZIP_BYTES, code_sha256

Reply = tuple[int, bytes, list[tuple[str, str]]]
UNZIPPED_MAX_BYTES = 250 * 1024 * 1024  # Lambda's limit for the unpacked code


def command_for(runtime: str, handler: str, code: Path) -> list[str] | str:
    """How this machine starts an instance of the code; a message when it cannot."""
    if runtime.startswith("provided"):
        return [str(code / "bootstrap")]
    if runtime.startswith("python3"):
        return [sys.executable, "-m", "awslambdaric", handler]
    if runtime.startswith("nodejs"):
        if not NODE_RIC.exists():
            return f"{NODE_RIC} missing: run `make lambda-ric` (AWS's Node.js runtime interface client)"
        return ["node", str(NODE_RIC), handler]
    if runtime.startswith("java"):
        from workers.functions import java_tool

        jars = sorted((code / "lib").glob("*.jar")) if (code / "lib").is_dir() else []
        if not jars:
            return "no lib/*.jar in the package"
        return [java_tool("java"), "-jar", str(jars[0])]
    return (f"runtime {runtime!r}: this local Lambda runs provided.al2023/provided.al2 (bootstrap), python3.*, "
            "nodejs* and java*")


def unpacked_size(zip_bytes: bytes) -> tuple[zipfile.ZipFile, int] | str:
    """The ZIP and the total size its entries declare (what unpacking writes at most); a message when it is bad."""
    if len(zip_bytes) > MAX_ZIP_BYTES:
        return f"the package is {len(zip_bytes):,} bytes; at most {MAX_ZIP_BYTES:,} in a direct upload"
    try:
        zf = zipfile.ZipFile(io.BytesIO(zip_bytes))
        infos = zf.infolist()
    except (zipfile.BadZipFile, ValueError) as exc:
        return f"Could not unzip uploaded file ({exc})"
    total = sum(i.file_size for i in infos)
    if total > UNZIPPED_MAX_BYTES:
        return f"Unzipped size must be smaller than {UNZIPPED_MAX_BYTES} bytes"
    return zf, total


def unpack(zf: zipfile.ZipFile, root: Path) -> Path | str:
    """The ZIP unpacked into a new folder under ``root`` (modes kept); a message when it is bad.

    Each entry is streamed to disk: never more of it in memory than a copy buffer, never more on
    disk than its declared size (zipfile stops there and checks the CRC)."""
    target = Path(tempfile.mkdtemp(prefix="code-", dir=root))
    try:
        for info in zf.infolist():
            parts = Path(info.filename).parts
            if info.filename.startswith("/") or ".." in parts:
                shutil.rmtree(target, ignore_errors=True)
                return f"{info.filename!r}: entries must be relative paths inside the package"
            path = target.joinpath(*parts)
            if info.is_dir():
                path.mkdir(parents=True, exist_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst, 1024 * 1024)
            mode = (info.external_attr >> 16) & 0o777
            path.chmod((mode or 0o644) | stat.S_IRUSR)
    except (zipfile.BadZipFile, ValueError, NotImplementedError, EOFError, OSError) as exc:
        shutil.rmtree(target, ignore_errors=True)
        return f"Could not unzip uploaded file ({exc})"
    return target


class CodeApi:
    """The deployment half of the control plane; mixed into LocalLambda."""

    functions: dict[str, Function]
    code_root: Path | None
    code_storage_bytes: int  # all deployed functions' unpacked code together (LocalLambda's)

    def retire_all(self, fn: Function) -> None:  # LocalLambda's
        raise NotImplementedError

    def begin_update(self, fn: Function) -> Reply:  # LocalLambda's
        raise NotImplementedError

    def _code_dir(self) -> Path:
        if getattr(self, "code_root", None) is None:
            self.code_root = Path(tempfile.mkdtemp(prefix="fnbench-lambda-code-"))
        assert self.code_root is not None
        return self.code_root

    def code_storage_used(self, besides: Function | None = None) -> int:
        """Bytes of unpacked code of every deployed function (but ``besides``)."""
        return sum(f.code_unpacked for f in self.functions.values() if f is not besides)

    def _load(self, fn: Function, doc: dict[str, Any], zipped: Any) -> Reply | None:
        """Unpack the base64 ZIP into ``fn`` (command, folder, hash); AWS's error when it cannot."""
        if not isinstance(zipped, str):
            return error(400, "InvalidParameterValueException", "ZipFile is not base64")
        try:
            raw = base64.b64decode(zipped, validate=True)
        except (binascii.Error, ValueError):
            return error(400, "InvalidParameterValueException", "ZipFile is not base64")
        sized = unpacked_size(raw)
        if isinstance(sized, str):
            return error(400, "InvalidParameterValueException", sized)
        zf, size = sized
        used = self.code_storage_used(besides=fn)  # an update replaces the function's own code
        if used + size > self.code_storage_bytes:
            return error(400, "CodeStorageExceededException",
                          f"Code storage limit exceeded: {size:,} bytes unpacked would make {used + size:,}; "
                          f"this local Lambda keeps at most {self.code_storage_bytes:,} (--code-storage-mb)")
        code = unpack(zf, self._code_dir())
        if isinstance(code, str):
            return error(400, "InvalidParameterValueException", code)
        command = command_for(fn.lambda_runtime, fn.handler, code)
        if isinstance(command, str):
            shutil.rmtree(code, ignore_errors=True)
            return error(400, "InvalidParameterValueException", command)
        old = Path(fn.cwd) if fn.code_sha256 else None
        fn.command, fn.cwd, fn.env = command, str(code), {}
        fn.code_sha256 = code_sha256(raw)
        fn.code_size = len(raw)
        fn.code_unpacked = size
        kept = {v.cwd for v in fn.versions.values()}  # a published version keeps the code it was published with
        if old is not None and self.code_root is not None and old.parent == self.code_root and str(old) not in kept:
            shutil.rmtree(old, ignore_errors=True)  # the instances of the old code are retired
        return None

    def create_function(self, body: bytes) -> Reply:
        try:
            doc = orjson.loads(body or b"{}")
            name = str(doc["FunctionName"])
            runtime, handler, zipped = str(doc["Runtime"]), str(doc.get("Handler", "")), doc["Code"]["ZipFile"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return error(400, "InvalidParameterValueException",
                          "CreateFunction needs FunctionName, Runtime, Role, Handler and Code.ZipFile (a ZIP upload)")
        if name in self.functions:
            return error(409, "ResourceConflictException", f"Function already exist: {name}")
        fn = Function(name=name, runtime=_fnbench_runtime(runtime), command=[], cwd="",
                      memory_mb=int(doc.get("MemorySize", 128)), timeout_s=float(doc.get("Timeout", 3)),
                      environment={str(k): str(v) for k, v in ((doc.get("Environment") or {}).get("Variables") or {}).items()},
                      architecture=(doc.get("Architectures") or ["x86_64"])[0],
                      reserved=getattr(self, "reserved", 10), region=getattr(self, "region", "us-east-1"))
        fn.lambda_runtime, fn.handler, fn.role = runtime, handler, str(doc.get("Role", ""))
        problem = self._load(fn, doc, zipped)
        if problem is not None:
            return problem
        fn.state = "Pending"
        fn.last_modified = now_iso()
        self.functions[name] = fn

        def activate() -> None:
            fn.state = "Active"

        asyncio.get_running_loop().call_later(0.05, activate)
        return 201, orjson.dumps(fn.configuration()), [("x-amzn-RequestId", str(uuid.uuid4()))]

    def update_function_code(self, fn: Function, body: bytes) -> Reply:

        try:
            doc = orjson.loads(body or b"{}")
            zipped = doc["ZipFile"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return error(400, "InvalidParameterValueException", "UpdateFunctionCode needs ZipFile (a ZIP upload)")
        if fn.last_update_status == "InProgress":
            return error(409, "ResourceConflictException",
                          f"The operation cannot be performed at this time. An update is in progress for resource: {fn.arn}")
        if doc.get("Architectures"):
            fn.architecture = str(doc["Architectures"][0])
        problem = self._load(fn, doc, zipped)
        if problem is not None:
            return problem
        return self.begin_update(fn)

    def get_function(self, fn: Function) -> Reply:
        doc = {"Configuration": fn.configuration(), "Code": {"RepositoryType": "S3", "Location": f"file://{fn.cwd}"},
               "Tags": {}}
        return 200, orjson.dumps(doc), [("x-amzn-RequestId", str(uuid.uuid4()))]

    def delete_function(self, fn: Function) -> Reply:
        from lambda_emulator.versions import drop

        drop(self, fn)
        self.retire_all(fn)
        self.functions.pop(fn.name, None)
        for version in fn.versions.values():
            if version.cwd != fn.cwd and self.code_root is not None and Path(version.cwd).parent == self.code_root:
                shutil.rmtree(version.cwd, ignore_errors=True)
        if fn.code_sha256 and self.code_root is not None and Path(fn.cwd).parent == self.code_root:
            shutil.rmtree(fn.cwd, ignore_errors=True)
        return 204, b"", [("x-amzn-RequestId", str(uuid.uuid4()))]

    def remove_code(self) -> None:
        if getattr(self, "code_root", None) is not None:
            shutil.rmtree(self.code_root, ignore_errors=True)  # type: ignore[arg-type]
            self.code_root = None


def _fnbench_runtime(lambda_runtime: str) -> str:
    """fnbench's runtime name for a Lambda runtime identifier (a label: billing follows the identifier itself)."""
    if lambda_runtime.startswith("python"):
        return "python"
    if lambda_runtime.startswith("nodejs"):
        return "node"
    if lambda_runtime.startswith("java"):
        return "java"
    return "provided"
