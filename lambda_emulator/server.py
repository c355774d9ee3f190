"""A local AWS Lambda on loopback: the functions of functions/ hosted as Lambda hosts them.

``fnbench lambda serve`` runs it.  Clients (boto3, fnbench's aws-lambda invoker) speak the
Invoke API 2015-03-31 to one port; every instance (a sandbox: one process of the function's
runtime) polls its own Runtime API 2018-06-01 port, so it sees exactly the API a Lambda
sandbox sees (``AWS_LAMBDA_RUNTIME_API``).  Rust and Go run their ``bootstrap`` as custom
runtimes, Python under awslambdaric, Node under aws-lambda-ric, Java under
aws-lambda-java-runtime-interface-client (started by the jar).

As Lambda does, per function:

* one request at a time per instance; an invoke with no idle instance starts a new one and
  waits for its init.  It is answered 429 ``TooManyRequestsException`` instead when the
  function's reserved concurrency, the account's unreserved concurrency or the function's
  scaling rate (1,000 new instances per 10 s) is spent, with AWS's Reason for each
  (lambda_emulator/throttle.py);
* idle instances are reaped after ``idle_s``;
* ``LogType: Tail`` answers ``X-Amz-Log-Result``: base64 of the last 4 KB of the invocation's
  log — START, what the function wrote, END and a REPORT line in AWS's text format: Duration
  (event handed to the instance → its response), Billed Duration (per 1 ms; on a cold start
  Init Duration is billed too, as for custom runtimes, and since 1 Aug 2025 for managed ones),
  Memory Size, Max Memory Used (the sandbox's cgroup peak; without cgroups the process's peak
  RSS, /proc VmHWM) and, on an instance's first invocation, Init Duration (spawn → its first
  /invocation/next);
* where cgroups can be used (lambda_emulator/sandbox.py: v2, else v1), each instance runs in its own
  cgroup, joined before the runtime's first instruction: memory capped at Memory Size (no swap)
  and CPU at Memory Size / 1,769 MB of one CPU per 100 ms (more than one above 1,769 MB, at most
  6 and at most this machine's).  An instance the OOM killer ends answers its invocation as
  Lambda does: ``Unhandled``, ``Runtime.OutOfMemory`` "Runtime exited with error: signal:
  killed", REPORT ``Status: error`` ``Error Type: Runtime.OutOfMemory``, and is replaced.  Where
  they cannot (or ``FNBENCH_LAMBDA_CGROUPS=off``, ``cgroups=False``) instances run uncapped and
  ``LocalLambda.sandbox.describe()`` (said once by ``fnbench lambda serve``) tells why;
* a handler error is 200 with ``X-Amz-Function-Error: Unhandled`` and the runtime's error
  document; a crash or init failure is ``Runtime.ExitError``; a timeout ends the instance;
* GetFunctionConfiguration and UpdateFunctionConfiguration (Environment, MemorySize, Timeout):
  an update answers LastUpdateStatus InProgress with a new RevisionId, retires every instance
  (idle ones at once, busy ones after their invocation) and becomes Successful shortly after;
  an update while one is in progress is 409 ResourceConflictException.  Put/Get/DeleteFunctionConcurrency
  set, show and remove ``reserved``; GetAccountSettings shows the account's concurrency.
* InvokeWithResponseStream (an event stream of PayloadChunk events as the runtime's streamed
  response arrives, then InvokeComplete) and the Runtime API's streaming response mode:
  lambda_emulator/streaming.py.

Not modelled: any CPU beyond the memory share that Lambda may allow the init phase (init runs
at the instance's share here), network and disk limits, Event (async) invocations, weighted aliases
(RoutingConfig), SnapStart.  Versions, aliases and provisioned concurrency: lambda_emulator/versions.py.

It runs uploaded code, so it is not open to whoever reaches loopback (lambda_emulator/auth.py):
every Invoke API request must be SigV4-signed with the access key it was started with, JSON
only, with its own address as Host and no Origin; bodies are capped as AWS caps them (6 MB
Invoke, 70,167,211 bytes for a 50 MB ZIP upload) before they are read; unpacked code is capped
at 250 MB a function and ``code_storage_bytes`` in all; function processes get Lambda's documented
environment and their configured variables, nothing of the server's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import httptools
import orjson

from lambda_emulator import streaming, throttle, versions
from lambda_emulator.auth import Verifier, browser_check, content_type_check, own_hosts
from lambda_emulator.code import CodeApi, command_for
from lambda_emulator.model import _REASONS, ACCOUNT, NODE_RIC, Function, error, now_iso
from lambda_emulator.sandbox import Cell, Sandbox, peak_mb
from lambda_emulator.throttle import Limits
from workers.functions import FUNCTIONS_DIR, artifact_for
from workers.platforms.aws_lambda.runtimes import HANDLER, init_billed
from workers.platforms.aws_lambda.sigv4 import Credentials

_monotonic = time.monotonic
RUNTIME_API = b"/2018-06-01/runtime/"
INVOKE_PREFIX = "/2015-03-31/functions/"
CONCURRENCY_PREFIX = "/2017-10-31/functions/"  # Put/DeleteFunctionConcurrency
CONCURRENCY_GET_PREFIX = "/2019-09-30/functions/"  # GetFunctionConcurrency
ACCOUNT_SETTINGS = "/2016-08-19/account-settings"
TAIL_BYTES = 4096
UPDATE_SETTLE_S = 0.05  # InProgress → Successful after an update (the instances are retired by then)
# Request bodies, as AWS caps them: an Invoke payload (and a function's response) 6 MB; a
# CreateFunction/UpdateFunctionCode request 70,167,211 bytes (a 50 MB ZIP, base64 in JSON);
# any other control-plane request 1 MiB.  Refused by Content-Length before the body is read;
# never more than the cap is kept.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
MAX_UPLOAD_BYTES = 70_167_211
MAX_CONTROL_BYTES = 1024 * 1024
MAX_HEAD_BYTES = 64 * 1024
DISCARD_MAX_BYTES = 2 * MAX_UPLOAD_BYTES  # of a refused request's body, read and dropped, then the connection is cut
CODE_STORAGE_BYTES = 1024 * 1024 * 1024  # all deployed functions' unpacked code (`--code-storage-mb`)
Reply = tuple[int, bytes, list[tuple[str, str]]]


def body_cap(method: bytes, url: bytes) -> int:
    path = url.split(b"?", 1)[0].rstrip(b"/")
    if method == b"POST" and path.endswith((b"/invocations", b"/response-streaming-invocations")):
        return MAX_PAYLOAD_BYTES
    if (method == b"POST" and path == INVOKE_PREFIX.rstrip("/").encode()) or (method == b"PUT" and path.endswith(b"/code")):
        return MAX_UPLOAD_BYTES
    return MAX_CONTROL_BYTES


def runtime_command(runtime: str) -> tuple[list[str], str, dict[str, str]]:
    """How this machine starts one instance of the runtime: (argv, cwd, extra env).

    Raises FileNotFoundError when the runtime's build or runtime interface client is missing."""
    if runtime == "python":
        return [sys.executable, "-m", "awslambdaric", HANDLER["python"]], str(FUNCTIONS_DIR / "python"), {}
    if runtime == "node":
        ric = Path(os.environ.get("FNBENCH_NODE_RIC", NODE_RIC))
        if not ric.exists():
            raise FileNotFoundError(f"{ric} missing: run `make lambda-ric` (AWS's Node.js runtime interface client)")
        return ["node", str(ric), HANDLER["node"]], str(FUNCTIONS_DIR / "node"), {}
    artifact = artifact_for(runtime)
    return list(artifact.command), str(artifact.cwd or FUNCTIONS_DIR / runtime), dict(artifact.env)


# What a function process gets from this machine's environment: where its runtime's programs
# and libraries are (Lambda sets both too).  Nothing else of the server's environment reaches
# uploaded code (the server's credentials, FNBENCH_TASK_KEY, brokers' passwords...).
PASSED_THROUGH = ("PATH", "LD_LIBRARY_PATH")


def function_environment(fn: Function, port: int, init_type: str = "on-demand") -> dict[str, str]:
    """A function process's environment, as Lambda documents it (configuration-envvars.html#configuration-envvars-runtime):
    the reserved variables, LANG and TZ, PATH and LD_LIBRARY_PATH, the runtime's own (from its build) and the
    function's configured Environment.Variables; no AWS credentials (no execution role here)."""
    env = {k: os.environ[k] for k in PASSED_THROUGH if os.environ.get(k)}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update({"LANG": "en_US.UTF-8"})
    env.update(fn.env)
    env.update(fn.environment)
    env.update({  # reserved: a configured variable cannot change them
        "_HANDLER": fn.handler_name, "AWS_REGION": fn.region, "AWS_DEFAULT_REGION": fn.region,
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}", "AWS_LAMBDA_FUNCTION_NAME": fn.name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_mb), "AWS_LAMBDA_FUNCTION_VERSION": fn.version,
        "AWS_LAMBDA_INITIALIZATION_TYPE": init_type, "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{fn.name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": time.strftime("%Y/%m/%d/[") + fn.version + "]" + uuid.uuid4().hex,
        "LAMBDA_TASK_ROOT": fn.cwd, "LAMBDA_RUNTIME_DIR": fn.runtime_dir(), "TZ": ":UTC",
    })
    if not fn.runtime_id.startswith("provided"):  # custom runtimes have none
        env["AWS_EXECUTION_ENV"] = f"AWS_Lambda_{fn.runtime_id}"
    return env


_TRACE_ROOT = re.compile(rb"(?:^|;)\s*Root=(1-[0-9a-f]{8}-[0-9a-f]{24})(?:;|$)")


def _trace_root(header: bytes) -> str:
    """The Root of an X-Amzn-Trace-Id header ("" when absent or malformed: never echoed as it came)."""
    m = _TRACE_ROOT.search(header[:256])
    return m.group(1).decode() if m else ""


class Invocation:
    __slots__ = ("request_id", "payload", "client", "tail", "delivered", "instance", "cold", "logs", "trace")

    def __init__(self, payload: bytes, client: _HttpConn, tail: bool, trace: str = "") -> None:
        self.request_id = str(uuid.uuid4())
        self.trace = trace  # the caller's X-Amzn-Trace-Id Root ("1-xxxxxxxx-yyyy…"), passed on to the function
        self.payload = payload
        self.client = client
        self.tail = tail
        self.delivered = 0.0  # when the event went to the instance (monotonic); 0: not yet
        self.instance: Instance | None = None
        self.cold = False
        self.logs: list[bytes] = []


class Instance:
    """One sandbox: a process of the runtime and the Runtime API port it polls."""

    def __init__(self, fn: Function, server: LocalLambda) -> None:
        self.fn = fn
        self.lam = server
        self.revision = fn.revision
        self.spawned = _monotonic()
        self.init_ms: float | None = None  # spawn → first /invocation/next
        self.invocations = 0
        self.proc: asyncio.subprocess.Process | None = None
        self.api: asyncio.Server | None = None
        self.port = 0
        self.hosts: frozenset[bytes] = frozenset()  # the Host values its runtime may send (its port's)
        self.poll: _HttpConn | None = None  # the /invocation/next waiting for an event
        self.current: Invocation | None = None
        self.last_used = _monotonic()
        self.dead = False
        self.retiring = False
        self.output: deque[bytes] = deque(maxlen=256)  # lines written outside an invocation
        self.cell: Cell | None = None  # its cgroup(s), when the sandbox has a backend
        self.provisioned = False  # started by a provisioned-concurrency config (lambda_emulator/versions.py)

    async def start(self, first: Invocation | None) -> None:
        """Spawn the runtime; ``first`` waits for its Init (None: a provisioned instance, idle after Init)."""
        loop = asyncio.get_running_loop()
        self.api = await loop.create_server(lambda: _HttpConn(self.lam, self), "127.0.0.1", 0)
        self.port = self.api.sockets[0].getsockname()[1]
        self.hosts = own_hosts(self.port)
        fn = self.fn
        env = function_environment(fn, self.port, "provisioned-concurrency" if self.provisioned else "on-demand")
        self.cell = self.lam.sandbox.cell(f"{fn.name}-{uuid.uuid4().hex[:12]}", fn.memory_mb)
        self.spawned = _monotonic()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *fn.command, cwd=fn.cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
                preexec_fn=self.cell.preexec if self.cell is not None else None)
        except (OSError, subprocess.SubprocessError) as exc:
            if first is None:
                self.lam._retire(self)
            else:
                self.lam.exiterror(self, first, f"Runtime.InvalidEntrypoint: {exc}")
            self.lam.discard_cell(self)
            return
        loop.create_task(self._read_output())

    async def _read_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        stdout = self.proc.stdout
        while True:
            try:
                line = await stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):  # a line over 64 KiB
                line = b"[line too long]\n"
            if not line:
                break
            inv = self.current
            if inv is not None and inv.delivered:
                if len(inv.logs) < 1024:
                    inv.logs.append(line)
            else:
                self.output.append(line)
        code = await self.proc.wait()
        self.lam.instance_exited(self, code)

    def max_memory_mb(self) -> int:
        """Max Memory Used: the cgroup's peak where there is one, else the process's VmHWM."""
        if self.cell is not None:
            peak = self.cell.peak_bytes()
            if peak is not None:
                return peak_mb(peak)
        return self.peak_rss_mb()

    def peak_rss_mb(self) -> int:
        """VmHWM of the instance's process (its peak resident set), MiB rounded up; 0 if gone."""
        if self.proc is None:
            return 0
        try:
            with open(f"/proc/{self.proc.pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"VmHWM:"):
                        return math.ceil(int(line.split()[1]) / 1024)
        except OSError:
            pass
        return 0

    def kill(self) -> None:
        self.dead = True
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self.cell is not None:
            self.cell.kill()
        if self.api is not None:
            self.api.close()
        if self.poll is not None:
            self.poll.abort()
            self.poll = None


class _HttpConn(asyncio.Protocol):
    """One HTTP/1.1 connection (client or instance side), one request at a time.

    The request line and headers are checked before any of the body is read (``admit``): a
    refused request is answered at once and its body, if the client sends it anyway, counted and
    dropped, never kept; a body is kept only up to the route's cap (413 beyond)."""

    __slots__ = ("lam", "instance", "transport", "parser", "url", "headers", "body", "closed", "busy", "head_bytes",
                 "in_head", "cap", "size", "rejected", "dropped", "forward")

    def __init__(self, lam: LocalLambda, instance: Instance | None) -> None:
        self.lam = lam
        self.instance = instance
        self.transport: Any = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []
        self.closed = False
        self.head_bytes = 0  # of the request line and headers so far
        self.in_head = True
        self.cap = 0  # most body bytes this request may have
        self.size = 0
        self.rejected = False  # answered already: the rest of the request is dropped, then the connection closed
        self.dropped = 0
        self.forward: streaming.StreamingClient | None = None  # a streamed response's client (lambda_emulator/streaming.py)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        inst = self.instance
        if inst is not None and inst.poll is self:
            inst.poll = None

    def data_received(self, data: bytes) -> None:
        if self.rejected:
            self.dropped += len(data)
            if self.dropped > DISCARD_MAX_BYTES:
                self.abort()
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.reply(400, b'{"message":"bad request"}', [("Connection", "close")])
            self.abort()
            return
        if self.in_head and not self.rejected:  # headers not complete yet: how much of them is kept
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD_BYTES:
                self.reply(431, b'{"message":"request line and headers over 64 KiB"}', [("Connection", "close")])
                self.abort()

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = {}
        self.body = []
        self.in_head = True
        self.head_bytes = 0
        self.size = 0
        self.forward = None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        old = self.headers.get(name)
        self.headers[name] = value if old is None else old + b"," + value

    def on_headers_complete(self) -> None:
        self.in_head = False
        method = self.parser.get_method()
        if self.instance is not None:
            refusal, self.cap = self.lam.admit_runtime(self.instance, method, self.url, self.headers)
            if refusal is None:
                self.forward = streaming.runtime_response(self)
        else:
            refusal, self.cap = self.lam.admit(method, self.url, self.headers)
        if refusal is None:
            length = self.headers.get(b"content-length")
            if length is not None and length.strip().isdigit() and int(length) > self.cap:
                refusal = self.lam.too_large(self.instance, method, self.url, self.cap)
        if refusal is not None:
            self.refuse(refusal)

    def refuse(self, refusal: tuple[int, bytes, list[tuple[str, str]]]) -> None:
        status, body, headers = refusal
        kind = next((v for k, v in headers if k == "x-amzn-ErrorType"), str(status))
        self.lam.refused[kind] = self.lam.refused.get(kind, 0) + 1
        self.rejected = True
        self.body = []
        self.reply(status, body, [*headers, ("Connection", "close")])

    def on_body(self, body: bytes) -> None:
        if self.rejected:
            return
        self.size += len(body)
        if self.size > self.cap:  # no (or a false) Content-Length: stop keeping it at the cap
            self.refuse(self.lam.too_large(self.instance, self.parser.get_method(), self.url, self.cap))
            return
        if self.forward is not None:  # a streamed response: passed on as it comes, never kept
            self.forward.chunk(body)
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.rejected:
            if not self.closed:
                self.closed = True
                self.transport.close()
            return
        method = self.parser.get_method()
        body = b"".join(self.body)
        self.body = []
        if self.instance is not None:
            url, body = streaming.finish_runtime_response(self, self.forward, self.url, body)
            self.lam.runtime_api(self, self.instance, method, url, body)
            return
        refusal = self.lam.verifier.verify(method, self.url, self.headers, body)
        if refusal is not None:
            self.refuse(refusal)
            self.closed = True
            self.transport.close()
            return
        self.lam.invoke_api(self, method, self.url, self.headers, body)

    def reply(self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None) -> None:
        if self.closed:
            return
        head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n".encode(),
                b"Content-Type: application/json\r\n", f"Content-Length: {len(body)}\r\n".encode()]
        for k, v in headers or ():
            head.append(f"{k}: {v}\r\n".encode("latin-1"))
        head.append(b"\r\n")
        head.append(body)
        self.transport.write(b"".join(head))

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.abort()


class LocalLambda(CodeApi):
    """The service: functions by name, the Invoke API port, the reaper."""

    def __init__(self, functions: list[Function], *, credentials: Credentials, idle_s: float = 300.0,
                 host: str = "127.0.0.1", port: int = 0, cgroups: bool = True, reserved: int | None = 10,
                 region: str = "us-east-1", code_storage_bytes: int = CODE_STORAGE_BYTES,
                 limits: Limits | None = None) -> None:
        self.functions = {f.name: f for f in functions}
        self.limits = limits if limits is not None else Limits()  # when a new instance is throttled, and why
        self.verifier = Verifier(credentials, region)  # every Invoke API request is signed with these
        self.hosts: frozenset[bytes] = frozenset()  # the Host values of this server's address (start())
        self.code_storage_bytes = code_storage_bytes  # all deployed functions' unpacked code together
        self.refused: dict[str, int] = {}  # requests refused before they ran, by x-amzn-ErrorType
        self.reserved, self.region = reserved, region  # of functions made by CreateFunction
        self.code_root: Path | None = None  # deployed packages, unpacked (lambda_code.py)
        self.cgroups = cgroups
        # Detected (and its parent cgroup made) by start(); removed by close().
        self.sandbox = Sandbox("none", "not started")
        self.idle_s = idle_s
        self.host, self.port = host, port
        self.server: asyncio.Server | None = None
        self.reaper: asyncio.Task[None] | None = None
        self.sweeper: asyncio.Task[None] | None = None
        self.closing = False

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.sandbox = Sandbox.detect(self.cgroups)
        self.server = await loop.create_server(lambda: _HttpConn(self, None), self.host, self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        self.hosts = own_hosts(self.port)
        self.reaper = loop.create_task(self._reap())
        self.sweeper = loop.create_task(self._timeouts())

    async def close(self) -> None:
        for task in (self.reaper, self.sweeper):
            if task is not None:
                task.cancel()
        if self.server is not None:
            self.server.close()
        self.closing = True  # provisioned instances are not replaced any more
        procs = []
        for fn in versions.every_function(self.functions.values()):
            for inst in list(fn.instances):
                if inst.proc is not None:
                    procs.append(inst.proc)
                self._retire(inst)
        for proc in procs:  # killed: reap them while the loop still runs
            with contextlib.suppress(TimeoutError, ProcessLookupError):
                await asyncio.wait_for(proc.wait(), 5.0)
        await asyncio.sleep(0)
        await self.sandbox.close()  # every cell left, then the parent(s)
        self.remove_code()

    def make_instance(self, fn: Function) -> Instance:
        """A new (not yet started) instance of ``fn`` (lambda_emulator/versions.py starts provisioned ones)."""
        return Instance(fn, self)

    # -- who may call ---------------------------------------------------------------------------
    def admit(self, method: bytes, url: bytes, headers: dict[bytes, bytes]) -> tuple[Reply | None, int]:
        """Before the body: (a refusal or None, the most body bytes the route takes)."""
        refusal = (browser_check(headers, self.hosts) or content_type_check(headers)
                   or self.verifier.precheck(headers))
        return refusal, body_cap(method, url)

    def admit_runtime(self, inst: Instance, method: bytes, url: bytes,
                      headers: dict[bytes, bytes]) -> tuple[Reply | None, int]:
        """An instance's Runtime API: only its own address (no browser, no rebound name)."""
        return browser_check(headers, inst.hosts), MAX_PAYLOAD_BYTES

    def too_large(self, inst: Instance | None, method: bytes, url: bytes, cap: int) -> Reply:
        if inst is not None:  # a response over 6 MB: the invocation fails as on AWS
            inv = inst.current
            if inv is not None and inv.delivered and url.endswith((b"/response", b"/error")):
                doc = {"errorMessage": f"Response payload size exceeded maximum allowed payload size ({cap} bytes).",
                       "errorType": "Function.ResponseSizeTooLarge"}
                self._finish(inst, inv, orjson.dumps(doc), error=True)
            return error(413, "RequestEntityTooLargeException", f"Request must be smaller than {cap} bytes")
        if cap == MAX_PAYLOAD_BYTES and url.split(b"?", 1)[0].endswith((b"/invocations", b"/response-streaming-invocations")):
            return error(413, "RequestTooLargeException",
                          f"Request must be smaller than {cap} bytes for the InvokeFunction operation")
        if cap == MAX_UPLOAD_BYTES:
            operation = "CreateFunction" if method == b"POST" else "UpdateFunctionCode"
            return error(413, "RequestEntityTooLargeException",
                          f"Request must be smaller than {cap} bytes for the {operation} operation")
        return error(413, "RequestEntityTooLargeException", f"Request must be smaller than {cap} bytes")

    # -- Invoke API (clients) -------------------------------------------------------------------
    def invoke_api(self, conn: _HttpConn, method: bytes, url: bytes, headers: dict[bytes, bytes], body: bytes) -> None:
        parts = urlsplit(url.decode("latin-1"))
        path = parts.path
        if streaming.is_stream_route(path):  # InvokeWithResponseStream
            streaming.invoke(self, conn, method, path, headers, body, dict(parse_qsl(parts.query)))
        elif path.startswith(INVOKE_PREFIX):
            rest = path[len(INVOKE_PREFIX):]
            name, _, action = rest.partition("/")
            fn = self._function(unquote(name))
            query = dict(parse_qsl(parts.query))
            qualifier, problem = versions.qualifier_of(unquote(name), query)
            target = versions.resolve(fn, qualifier) if fn is not None else None
            if fn is None:
                conn.reply(*error(404, "ResourceNotFoundException", f"Function not found: {self._arn(unquote(name))}"))
            elif problem is not None:
                conn.reply(*error(400, "InvalidParameterValueException", problem))
            elif versions.handles(action):
                conn.reply(*versions.api(self, fn, method, action, body))
            elif target is None and action in ("invocations", "configuration"):
                conn.reply(*error(404, "ResourceNotFoundException", f"Function not found: {fn.arn}:{qualifier}"))
            elif action == "" and method == b"GET":
                conn.reply(*self.get_function(fn))
            elif action == "" and method == b"DELETE":
                conn.reply(*self.delete_function(fn))
            elif action == "code" and method == b"PUT":
                conn.reply(*self.update_function_code(fn, body))
            elif action == "invocations" and method == b"POST":
                self._invoke(conn, target or fn, headers, body)
            elif action == "configuration" and method == b"GET":
                conn.reply(200, orjson.dumps((target or fn).configuration()))
            elif action == "configuration" and method == b"PUT":
                conn.reply(*self._update(fn, body))
            else:
                conn.reply(*error(404, "UnknownOperationException", f"{method.decode()} {path}"))
        elif path.rstrip("/") == INVOKE_PREFIX.rstrip("/") and method == b"POST":  # CreateFunction
            conn.reply(*self.create_function(body))
        elif path.rstrip("/") == INVOKE_PREFIX.rstrip("/") and method == b"GET":
            conn.reply(200, orjson.dumps({"Functions": [f.configuration() for f in self.functions.values()]}))
        elif path.startswith(versions.PC_PREFIX) and path.endswith("/provisioned-concurrency"):
            fn = self._function(unquote(path[len(versions.PC_PREFIX):].partition("/")[0]))
            if fn is None:
                conn.reply(*error(404, "ResourceNotFoundException", "Function not found"))
            else:
                conn.reply(*versions.provisioned_api(self, fn, method, dict(parse_qsl(parts.query)), body))
        elif path.endswith("/concurrency") and path.startswith((CONCURRENCY_PREFIX, CONCURRENCY_GET_PREFIX)):
            conn.reply(*self._concurrency(method, path, body))
        elif path.rstrip("/") == ACCOUNT_SETTINGS and method == b"GET":
            conn.reply(200, orjson.dumps(self.limits.account_settings(self.functions.values())))
        else:
            conn.reply(*error(404, "UnknownOperationException", f"{method.decode()} {path}"))

    def _concurrency(self, method: bytes, path: str, body: bytes) -> Reply:
        """Put/Get/DeleteFunctionConcurrency (a reservation is checked against the account's unreserved minimum)."""
        prefix = CONCURRENCY_PREFIX if path.startswith(CONCURRENCY_PREFIX) else CONCURRENCY_GET_PREFIX
        fn = self._function(unquote(path[len(prefix):].partition("/")[0]))
        if fn is None:
            return error(404, "ResourceNotFoundException", "Function not found")
        if method == b"GET" and prefix == CONCURRENCY_GET_PREFIX:
            return 200, orjson.dumps({} if fn.reserved is None else {"ReservedConcurrentExecutions": fn.reserved}), []
        if method == b"DELETE" and prefix == CONCURRENCY_PREFIX:
            fn.reserved = None
            return 204, b"", [("x-amzn-RequestId", str(uuid.uuid4()))]
        if method != b"PUT" or prefix != CONCURRENCY_PREFIX:
            return error(404, "UnknownOperationException", f"{method.decode()} {path}")
        try:
            n = orjson.loads(body)["ReservedConcurrentExecutions"]
            if not isinstance(n, int) or isinstance(n, bool):
                raise TypeError
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return error(400, "InvalidParameterValueException", "ReservedConcurrentExecutions: an integer is required")
        problem = self.limits.reservation_problem(fn, n, self.functions.values())
        if problem is not None:
            return error(400, "InvalidParameterValueException", problem)
        fn.reserved = n
        return 200, orjson.dumps({"ReservedConcurrentExecutions": n}), []

    def _arn(self, name: str) -> str:
        return name if name.startswith("arn:") else f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{name}"

    def _function(self, name: str) -> Function | None:
        if name.startswith("arn:"):  # arn:aws:lambda:region:account:function:name[:qualifier]
            bits = name.split(":")
            name = bits[6] if len(bits) > 6 else ""
        elif ":" in name:  # name:qualifier or account:function:name
            bits = name.split(":")
            name = bits[2] if len(bits) >= 3 and bits[1] == "function" else bits[0]
        return self.functions.get(name)

    def _invoke(self, conn: _HttpConn, fn: Function, headers: dict[bytes, bytes], body: bytes) -> None:
        kind = headers.get(b"x-amz-invocation-type", b"RequestResponse")
        if kind == b"DryRun":
            conn.reply(204, b"", [("x-amzn-RequestId", str(uuid.uuid4()))])
            return
        if kind != b"RequestResponse":
            conn.reply(*error(400, "InvalidParameterValueException",
                               "this local Lambda serves RequestResponse and DryRun invocations only"))
            return
        if fn.state != "Active":
            conn.reply(*error(409, "ResourceConflictException", "The operation cannot be performed at this time. "
                               f"The function is currently in the following state: {fn.state}"))
            return
        inv = Invocation(body or b"{}", conn, headers.get(b"x-amz-log-type", b"None") == b"Tail",
                         _trace_root(headers.get(b"x-amzn-trace-id", b"")))
        # Reserved concurrency 0 stops every invocation, warm instances or not (AWS: "throttle the function").
        reason = throttle.RESERVED if versions.root(fn).reserved == 0 else None
        idle = fn.idle
        while idle and reason is None:
            inst = idle.pop()
            if not inst.dead and not inst.retiring:
                self._assign(inst, inv)
                return
        reason = reason or self.limits.refuse_new_instance(fn, self.functions.values())
        if reason is not None:
            base = versions.root(fn)
            base.throttles[reason] = base.throttles.get(reason, 0) + 1
            conn.reply(*error(429, "TooManyRequestsException", "Rate Exceeded.", {"Reason": reason}))
            return
        inst = Instance(fn, self)
        fn.instances.append(inst)
        fn.cold_starts += 1
        inv.cold = True
        inst.current = inv
        inv.instance = inst
        asyncio.get_running_loop().create_task(inst.start(inv))

    def _assign(self, inst: Instance, inv: Invocation) -> None:
        inst.current = inv
        inv.instance = inst
        poll = inst.poll
        if poll is not None and not poll.closed:
            inst.poll = None
            self._deliver(inst, poll, inv)

    def _deliver(self, inst: Instance, poll: _HttpConn, inv: Invocation) -> None:
        fn = inst.fn
        inv.delivered = _monotonic()
        deadline = int((time.time() + fn.timeout_s) * 1000)
        poll.reply(200, inv.payload, [
            ("Lambda-Runtime-Aws-Request-Id", inv.request_id), ("Lambda-Runtime-Deadline-Ms", str(deadline)),
            ("Lambda-Runtime-Invoked-Function-Arn", fn.arn),
            # As Lambda does: the caller's X-Amzn-Trace-Id Root reaches the function (sampled), else a new one.
            ("Lambda-Runtime-Trace-Id",
             f"Root={inv.trace};Parent={uuid.uuid4().hex[:16]};Sampled=1" if inv.trace
             else f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0"),
        ])

    # -- Runtime API (instances) ----------------------------------------------------------------
    def runtime_api(self, conn: _HttpConn, inst: Instance, method: bytes, url: bytes, body: bytes) -> None:
        if not url.startswith(RUNTIME_API):
            conn.reply(404, b'{"errorMessage":"unknown path"}')
            return
        parts = url[len(RUNTIME_API):].split(b"/")
        if parts == [b"invocation", b"next"] and method == b"GET":
            now = _monotonic()
            first_poll = inst.init_ms is None
            if first_poll:
                inst.init_ms = (now - inst.spawned) * 1000.0
                if inst.cell is not None:  # Init is over: the invocations get their Memory Size's CPU share
                    try:
                        inst.cell.throttle()
                    except OSError as exc:
                        self.sandbox.last_failure = f"CPU quota not applied: {exc}"
            inv = inst.current
            if inv is not None and not inv.delivered:
                self._deliver(inst, conn, inv)
            else:
                inst.poll = conn
                if first_poll and inst.provisioned:  # provisioned: initialised, waiting (the config may be READY)
                    versions.initialised(inst)
            return
        if len(parts) == 3 and parts[0] == b"invocation" and method == b"POST":
            inv = inst.current
            if inv is None or inv.request_id.encode() != parts[1] or parts[2] not in (b"response", b"error"):
                conn.reply(400, b'{"errorMessage":"no such invocation","errorType":"InvalidRequestID"}')
                return
            conn.reply(202, b'{"status":"OK"}')
            self._finish(inst, inv, body, error=parts[2] == b"error")
            return
        if parts == [b"init", b"error"] and method == b"POST":
            conn.reply(202, b'{"status":"OK"}')
            inv = inst.current
            if inv is not None:
                self._finish(inst, inv, body or b'{"errorType":"Runtime.InitError"}', error=True, status="error")
            self._retire(inst)
            return
        conn.reply(404, b'{"errorMessage":"unknown path"}')

    def _finish(self, inst: Instance, inv: Invocation, body: bytes, *, error: bool, status: str = "",
                error_type: str = "") -> None:
        """Answer the client and free (or retire) the instance."""
        now = _monotonic()
        fn = inst.fn
        inst.current = None
        inst.last_used = now
        inst.invocations += 1
        duration = (now - inv.delivered) * 1000.0 if inv.delivered else 0.0
        headers = [("X-Amz-Executed-Version", fn.version), ("x-amzn-RequestId", inv.request_id),
                   ("x-amzn-Remapped-Content-Length", "0")]
        if error:
            headers.append(("X-Amz-Function-Error", "Unhandled"))
        if inv.tail:
            headers.append(("X-Amz-Log-Result", self._tail(inst, inv, duration, status, error_type)))
        inv.client.reply(200, body, headers)
        if inst.dead:
            return
        if inst.retiring or inst.revision != fn.revision or status:
            self._retire(inst)
        else:
            versions.park(fn, inst)

    def _tail(self, inst: Instance, inv: Invocation, duration: float, status: str, error_type: str) -> str:
        fn = inst.fn
        init = inst.init_ms if inv.cold else None
        billed_init = init if init is not None and init_billed(fn.runtime_id) else 0.0
        billed = math.ceil(duration + billed_init) or 1  # per 1 ms (orchestrator/analysis/cost.py: when INIT is billed)
        report = (f"REPORT RequestId: {inv.request_id}\tDuration: {duration:.2f} ms\tBilled Duration: {billed} ms\t"
                  f"Memory Size: {fn.memory_mb} MB\tMax Memory Used: {inst.max_memory_mb()} MB\t")
        if init is not None:
            report += f"Init Duration: {init:.2f} ms\t"
        if status:
            report += f"Status: {status}\t"
            if error_type:
                report += f"Error Type: {error_type}\t"
        log = b"".join([f"START RequestId: {inv.request_id} Version: {fn.version}\n".encode(), *inv.logs,
                        f"END RequestId: {inv.request_id}\n".encode(), report.encode(), b"\n"])
        return base64.b64encode(log[-TAIL_BYTES:]).decode()

    def exiterror(self, inst: Instance, inv: Invocation, message: str, status: str = "error",
                   error_type: str = "Runtime.ExitError") -> None:
        doc = {"errorType": error_type, "errorMessage": f"RequestId: {inv.request_id} Error: {message}"}
        self._finish(inst, inv, orjson.dumps(doc), error=True, status=status, error_type=error_type)
        self._retire(inst)

    def instance_exited(self, inst: Instance, code: int) -> None:
        inv = inst.current
        if inv is not None and not inst.dead:
            inst.dead = True
            if inst.cell is not None and inst.cell.out_of_memory(code):
                self.exiterror(inst, inv, "Runtime exited with error: signal: killed", error_type="Runtime.OutOfMemory")
            else:
                self.exiterror(inst, inv, f"Runtime exited with error: exit status {code}")
        self._retire(inst)
        self.discard_cell(inst)

    def discard_cell(self, inst: Instance) -> None:
        """The instance's process is gone: remove its cgroup(s) (retried while the kernel is busy)."""
        cell, inst.cell = inst.cell, None
        if cell is not None:
            asyncio.get_running_loop().create_task(self.sandbox.remove(cell))

    def _retire(self, inst: Instance) -> None:
        fn = inst.fn
        inst.kill()
        if inst in fn.instances:
            fn.instances.remove(inst)
        if inst in fn.idle:
            fn.idle.remove(inst)
        versions.retired(self, inst)

    # -- control plane --------------------------------------------------------------------------
    def _update(self, fn: Function, body: bytes) -> tuple[int, bytes, list[tuple[str, str]]]:
        try:
            doc = orjson.loads(body or b"{}")
            assert isinstance(doc, dict)
        except (orjson.JSONDecodeError, AssertionError):
            return error(400, "InvalidParameterValueException", "the body is not a JSON object")
        if fn.last_update_status == "InProgress":
            return error(409, "ResourceConflictException",
                          f"The operation cannot be performed at this time. An update is in progress for resource: {fn.arn}")
        if "RevisionId" in doc and doc["RevisionId"] != fn.revision:
            return error(412, "PreconditionFailedException", "The Revision Id provided does not match the latest Revision Id.")
        if "Environment" in doc:
            variables = (doc["Environment"] or {}).get("Variables") or {}
            fn.environment = {str(k): str(v) for k, v in variables.items()}
        if "MemorySize" in doc:
            fn.memory_mb = int(doc["MemorySize"])
        if "Timeout" in doc:
            fn.timeout_s = float(doc["Timeout"])
        if "Role" in doc:
            fn.role = str(doc["Role"])
        if ("Runtime" in doc or "Handler" in doc) and fn.code_sha256:  # deployed code: start it the new way
            runtime, handler = str(doc.get("Runtime", fn.runtime_id)), str(doc.get("Handler", fn.handler_name))
            command = command_for(runtime, handler, Path(fn.cwd))
            if isinstance(command, str):
                return error(400, "InvalidParameterValueException", command)
            fn.lambda_runtime, fn.handler, fn.command = runtime, handler, command
        return self.begin_update(fn)

    def begin_update(self, fn: Function) -> tuple[int, bytes, list[tuple[str, str]]]:
        """A new revision: LastUpdateStatus InProgress and every instance retired now, Successful
        shortly after; the answer to the update."""
        fn.revision = str(uuid.uuid4())
        fn.last_modified = now_iso()
        fn.last_update_status = "InProgress"
        self.retire_all(fn)

        def settle() -> None:
            fn.last_update_status = "Successful"

        asyncio.get_running_loop().call_later(UPDATE_SETTLE_S, settle)
        return 200, orjson.dumps(fn.configuration()), [("x-amzn-RequestId", str(uuid.uuid4()))]

    def retire_all(self, fn: Function) -> None:
        """Every instance of ``fn`` retired: idle ones now, busy ones after their invocation."""
        for inst in list(fn.instances):
            if inst.current is None:
                self._retire(inst)
            else:
                inst.retiring = True
        fn.idle.clear()

    # -- housekeeping ---------------------------------------------------------------------------
    async def _reap(self) -> None:
        tick = min(max(self.idle_s / 4, 0.05), 1.0)
        while True:
            await asyncio.sleep(tick)
            cutoff = _monotonic() - self.idle_s
            for fn in versions.every_function(self.functions.values()):
                for inst in [i for i in fn.idle if i.last_used < cutoff and not i.provisioned]:
                    self._retire(inst)

    async def _timeouts(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            now = _monotonic()
            for fn in versions.every_function(self.functions.values()):
                for inst in list(fn.instances):
                    inv = inst.current
                    if inv is None:
                        continue
                    if inv.delivered and now - inv.delivered > fn.timeout_s:
                        inst.dead = True
                        doc = {"errorMessage": f"RequestId: {inv.request_id} Error: Task timed out after {fn.timeout_s:.2f} seconds"}
                        self._finish(inst, inv, orjson.dumps(doc), error=True, status="timeout")
                        self._retire(inst)
                    elif not inv.delivered and inst.init_ms is None and now - inst.spawned > max(fn.timeout_s, 10.0):
                        inst.dead = True
                        self.exiterror(inst, inv, "Runtime init timed out", status="timeout")


def make_functions(runtimes: list[str], *, memory_mb: int = 128, timeout_s: float = 30.0, reserved: int | None = 10,
                   region: str = "us-east-1") -> list[Function]:
    """One function per runtime, named after it (``rust``, ``go``, …), from this machine's builds."""
    out = []
    for r in runtimes:
        command, cwd, env = runtime_command(r)
        out.append(Function(name=r, runtime=r, command=command, cwd=cwd, env=env, memory_mb=memory_mb,
                            timeout_s=timeout_s, reserved=reserved, region=region))
    return out


async def serve(functions: list[Function], *, credentials: Credentials, port: int, idle_s: float, ready: Any = None,
                stop: asyncio.Event | None = None, cgroups: bool = True, reserved: int | None = 10,
                region: str = "us-east-1", code_storage_bytes: int = CODE_STORAGE_BYTES,
                limits: Limits | None = None) -> None:
    lam = LocalLambda(functions, credentials=credentials, idle_s=idle_s, port=port, cgroups=cgroups, reserved=reserved,
                      region=region, code_storage_bytes=code_storage_bytes, limits=limits)
    await lam.start()
    if ready is not None:
        ready(lam)
    try:
        if stop is None:
            await asyncio.Event().wait()
        else:
            await stop.wait()
    finally:
        await lam.close()


class Background:
    """The local Lambda on its own event loop in a daemon thread (tests, benches, demos).

    ``credentials``: the access key its clients must sign with; by default the environment's
    (``lambda_auth.server_credentials``: FNBENCH_LAMBDA_*, else AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)."""

    def __init__(self, functions: list[Function], *, idle_s: float = 300.0, port: int = 0,
                 cgroups: bool = True, credentials: Credentials | None = None,
                 code_storage_bytes: int = CODE_STORAGE_BYTES, limits: Limits | None = None) -> None:
        import threading

        from lambda_emulator.auth import server_credentials

        self.credentials = credentials if credentials is not None else server_credentials()
        self.code_storage_bytes = code_storage_bytes
        self.limits = limits
        self.functions = functions
        self.cgroups = cgroups
        self.idle_s = idle_s
        self.port = port
        self.lam: LocalLambda | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="local-lambda", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()

            def ready(lam: LocalLambda) -> None:
                self.lam = lam
                self._ready.set()

            await serve(self.functions, credentials=self.credentials, port=self.port, idle_s=self.idle_s, ready=ready,
                        stop=self._stop, cgroups=self.cgroups, code_storage_bytes=self.code_storage_bytes,
                        limits=self.limits)

        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - reported by __enter__
            self._error = exc
            self._ready.set()

    def __enter__(self) -> Background:
        self.thread.start()
        self._ready.wait(30)
        if self._error is not None or self.lam is None:
            raise RuntimeError(f"the local Lambda did not start: {self._error!r}")
        return self

    @property
    def endpoint(self) -> str:
        assert self.lam is not None
        return self.lam.endpoint

    @property
    def sandbox(self) -> Sandbox:
        """How instances are capped here (``describe()`` says it in words)."""
        assert self.lam is not None
        return self.lam.sandbox

    def call(self, fn: Any) -> Any:
        """Run ``fn(lam)`` on the service's loop and return its result."""
        assert self.loop is not None and self.lam is not None
        lam = self.lam

        async def run() -> Any:
            return fn(lam)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def __exit__(self, *exc: object) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)


def run_cli(runtimes: list[str], *, credentials: Credentials, port: int, idle_s: float, memory_mb: int,
            timeout_s: float, reserved: int | None, region: str, announce: Any, cgroups: bool = True,
            code_storage_bytes: int = CODE_STORAGE_BYTES, limits: Limits | None = None) -> None:
    """``fnbench lambda serve``: serve until interrupted; ``announce(line)`` says where, whose
    signatures it takes and how instances are sandboxed (cgroups, or why not)."""
    functions = make_functions(runtimes, memory_mb=memory_mb, timeout_s=timeout_s, reserved=reserved, region=region)

    def ready(lam: LocalLambda) -> None:
        announce(f"local Lambda on {lam.endpoint} (Invoke API 2015-03-31): functions "
                 f"{', '.join(lam.functions) or 'none yet (fnbench functions deploy --endpoint-url ' + lam.endpoint + ')'}; "
                 f"reserved concurrency {'none' if reserved is None else reserved}, {lam.limits.describe()}, "
                 f"idle instances reaped after {idle_s:g} s; "
                 f"requests must be SigV4-signed (service lambda, region {region}) with its access key; "
                 f"instances: {lam.sandbox.describe()}")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(functions, credentials=credentials, port=port, idle_s=idle_s, ready=ready, stop=stop,
                    cgroups=cgroups, reserved=reserved, region=region, code_storage_bytes=code_storage_bytes,
                    limits=limits)

    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(main())
    else:
        uvloop.run(main())
