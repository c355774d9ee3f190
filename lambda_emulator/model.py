"""The local Lambda's plain data: a function's configuration (as GetFunctionConfiguration shows it),
AWS's error shape, and where AWS's Node.js runtime interface client is built."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from workers.platforms.aws_lambda.runtimes import HANDLER, LAMBDA_RUNTIME

ACCOUNT = "000000000000"
# AWS's Node.js runtime interface client (aws-lambda-ric, native part built by `make lambda-ric`).
NODE_RIC_DIR = Path(__file__).resolve().parent / "node-ric"
NODE_RIC = NODE_RIC_DIR / "node_modules" / "aws-lambda-ric" / "bin" / "index.mjs"


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000+0000", time.gmtime())


@dataclass
class Function:
    name: str
    runtime: str
    command: list[str]
    cwd: str
    env: dict[str, str] = field(default_factory=dict)  # the runtime's own (from its build)
    memory_mb: int = 128
    timeout_s: float = 30.0
    reserved: int | None = 10  # reserved concurrency; None: none (it shares the account's unreserved concurrency)
    region: str = "us-east-1"
    architecture: str = "x86_64"
    environment: dict[str, str] = field(default_factory=dict)  # the function's configuration
    revision: str = field(default_factory=lambda: str(uuid.uuid4()))
    last_update_status: str = "Successful"
    last_modified: str = field(default_factory=now_iso)
    instances: list[Any] = field(default_factory=list)  # its server.Instance objects
    idle: list[Any] = field(default_factory=list)  # LIFO: the warmest first
    throttles: dict[str, int] = field(default_factory=dict)  # 429s by Reason (lambda_emulator/throttle.py)
    cold_starts: int = 0
    # Set for code deployed through CreateFunction/UpdateFunctionCode (lambda_emulator/code.py);
    # empty for this machine's builds, which take the runtime's defaults.
    lambda_runtime: str = ""
    handler: str = ""
    role: str = ""
    code_sha256: str = ""
    code_size: int = 0
    code_unpacked: int = 0  # bytes its unpacked code takes (deployed code only)
    state: str = "Active"  # Pending for a moment after CreateFunction
    # Versions and aliases (lambda_emulator/versions.py): "$LATEST", or a published version's number;
    # a published version is a Function of its own (its own instances), ``base`` is its $LATEST.
    version: str = "$LATEST"
    base: Any = None
    versions: dict[str, Any] = field(default_factory=dict)  # number → published Function
    aliases: dict[str, Any] = field(default_factory=dict)  # name → versions.Alias
    provisioned: dict[str, Any] = field(default_factory=dict)  # qualifier → versions.Provisioned
    published_revision: str = ""  # $LATEST's RevisionId when it was last published
    description: str = ""

    @property
    def arn(self) -> str:
        """The function's ARN; a published version's is qualified by its number (as GetFunctionConfiguration shows it)."""
        qualifier = "" if self.version == "$LATEST" else f":{self.version}"
        return f"arn:aws:lambda:{self.region}:{ACCOUNT}:function:{self.name}{qualifier}"

    @property
    def runtime_id(self) -> str:
        """Lambda's identifier of the runtime (provided.al2023, python3.12, …)."""
        return self.lambda_runtime or LAMBDA_RUNTIME.get(self.runtime, "provided.al2023")

    @property
    def handler_name(self) -> str:
        return self.handler or HANDLER.get(self.runtime, "bootstrap")

    def runtime_dir(self) -> str:
        """LAMBDA_RUNTIME_DIR: where the runtime's own code is (its runtime interface client's folder)."""
        if self.runtime_id.startswith("python"):
            import importlib.util

            spec = importlib.util.find_spec("awslambdaric")
            return str(Path(spec.origin).parent) if spec is not None and spec.origin else self.cwd
        if self.runtime_id.startswith("nodejs"):
            return str(NODE_RIC.parent.parent)
        return self.cwd

    def configuration(self) -> dict[str, Any]:
        return {
            "FunctionName": self.name, "FunctionArn": self.arn, "Runtime": self.runtime_id,
            "Role": self.role or f"arn:aws:iam::{ACCOUNT}:role/fnbench", "Handler": self.handler_name,
            "CodeSize": self.code_size, "CodeSha256": self.code_sha256,
            "Description": f"fnbench {self.runtime} (local Lambda)", "Timeout": int(self.timeout_s),
            "MemorySize": self.memory_mb, "LastModified": self.last_modified, "Version": self.version,
            "Environment": {"Variables": dict(self.environment)}, "RevisionId": self.revision,
            "State": self.state, "LastUpdateStatus": self.last_update_status, "PackageType": "Zip",
            "Architectures": [self.architecture],
        }



_REASONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 400: "Bad Request", 403: "Forbidden",
            404: "Not Found", 409: "Conflict", 412: "Precondition Failed", 413: "Request Entity Too Large",
            415: "Unsupported Media Type", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 502: "Bad Gateway"}


def error(status: int, kind: str, message: str, extra: dict[str, Any] | None = None) -> tuple[int, bytes, list[tuple[str, str]]]:
    doc = {"Type": "User" if status < 500 else "Service", "message": message, **(extra or {})}
    return status, orjson.dumps(doc), [("x-amzn-ErrorType", kind), ("x-amzn-RequestId", str(uuid.uuid4()))]


