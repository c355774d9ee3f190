"""A loopback implementation of AWS Lambda's Runtime API and Invoke API for one function.

Lets the real Rust and Go Lambda bootstraps (lambda_runtime, aws-lambda-go) run as custom
runtimes on this machine and be invoked through boto3 with ``endpoint_url``.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_API = "/2018-06-01/runtime"
_INVOKE = "/2015-03-31/functions/"


class LoopbackLambda:
    """One function's Lambda APIs on a loopback port.

    Runtime API (2018-06-01, what the function polls): /invocation/next,
    /invocation/{id}/response|error, /init/error.  Invoke API (2015-03-31, what boto3
    calls): POST /2015-03-31/functions/{name}/invocations, answering like Lambda — the
    handler's result as the payload, or its error with ``X-Amz-Function-Error: Unhandled``.
    The AWS Runtime Interface Emulator does the same job; it cannot be fetched here.
    """

    def __init__(self) -> None:
        self.events: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.results: dict[str, queue.Queue[tuple[str, Any]]] = {}
        self.stopping = threading.Event()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else Nagle + delayed ACK add ~40-100 ms per invoke

            def log_message(self, *args: Any) -> None:
                pass

            def _reply(
                self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # the function's long poll for its next event
                if self.path != f"{_API}/invocation/next":
                    return self._reply(404)
                while not api.stopping.is_set():
                    try:
                        req_id, body = api.events.get(timeout=0.2)
                    except queue.Empty:
                        continue
                    deadline = str(int((time.time() + 300) * 1000))
                    return self._reply(
                        200,
                        body,
                        {
                            "Lambda-Runtime-Aws-Request-Id": req_id,
                            "Lambda-Runtime-Deadline-Ms": deadline,
                            "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:us-east-1:000000000000:function:fnbench",
                            "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000",
                        },
                    )
                self.close_connection = True

            def _read_body(self) -> bytes:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    chunks: list[
                        bytes
                    ] = []  # aws-lambda-go streams responses with chunked encoding
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def do_POST(self) -> None:
                body = self._read_body()
                if self.path.startswith(_INVOKE) and self.path.endswith("/invocations"):
                    try:
                        kind, result = api.invoke(json.loads(body or b"null"))
                    except queue.Empty:
                        return self._reply(504, b'{"Type":"Service","message":"function did not answer"}')
                    headers = {"X-Amz-Executed-Version": "$LATEST", "x-amzn-RequestId": str(uuid.uuid4())}
                    if kind == "error":
                        headers["X-Amz-Function-Error"] = "Unhandled"
                    return self._reply(200, json.dumps(result).encode(), headers)
                parts = self.path.removeprefix(_API + "/").split("/")
                if (
                    len(parts) == 3
                    and parts[0] == "invocation"
                    and parts[2] in ("response", "error")
                ):
                    api.results.setdefault(parts[1], queue.Queue()).put(
                        (parts[2], json.loads(body or b"null"))
                    )
                    return self._reply(202, b'{"status":"OK"}')
                if parts[:2] == ["init", "error"]:
                    api.results.setdefault("init", queue.Queue()).put(("init_error", body.decode()))
                    return self._reply(202, b'{"status":"OK"}')
                self._reply(404)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # the function process is killed mid-poll at teardown

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def invoke(self, event: Any, timeout: float = 60.0) -> tuple[str, Any]:
        req_id = str(uuid.uuid4())
        results = self.results.setdefault(req_id, queue.Queue())
        self.events.put((req_id, json.dumps(event).encode()))
        return results.get(timeout=timeout)

    def close(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
