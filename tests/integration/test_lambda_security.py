"""The local Lambda is not a remote shell (lambda_emulator/auth.py, issue 20 items 1 and 8).

Against a real local Lambda: unsigned, wrongly signed, expired, foreign-key, non-JSON, foreign-Host
and browser-origin requests are refused before anything runs — also from a page on another
localhost port in headless Chromium with ``fetch(…, {mode: 'no-cors'})``; a function process
sees Lambda's documented environment and its configured variables, never the server's secrets;
request bodies are capped by Content-Length before they are read (and never kept beyond the cap
without one), unpacked code per function and in all; ``fnbench lambda serve`` without a key
exits 2.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from lambda_emulator import auth as lambda_auth
from lambda_emulator import server as lambda_local
from workers.platforms.aws_lambda.sigv4 import Credentials

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CREDS = Credentials("AKIDLOCALLAMBDA", "local-lambda-secret-5e1f")
TASK_KEY = "task-key-the-functions-must-never-see-83c1"
ROLE = "arn:aws:iam::000000000000:role/fnbench"
# What Lambda documents for a function's process (configuration-envvars.html#configuration-envvars-runtime)
# and what the runtime itself adds (the trace id per invocation; Python's PEP 538 locale coercion
# sets LC_CTYPE where en_US.UTF-8 is not installed).
DOCUMENTED = {"_HANDLER", "_X_AMZN_TRACE_ID", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_EXECUTION_ENV",
              "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
              "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME",
              "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR", "TZ", "LANG", "PATH",
              "LD_LIBRARY_PATH", "NODE_PATH", "PYTHONPATH", "LC_CTYPE"}


def zip_of(files: dict[str, bytes], pad: int = 0) -> bytes:
    """A ZIP of ``files`` and, with ``pad``, a pad.bin of that many zero bytes (streamed: never all in memory)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
        if pad:
            info = zipfile.ZipInfo("pad.bin", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as out:
                block = bytes(1024 * 1024)
                for start in range(0, pad, len(block)):
                    out.write(block[:min(len(block), pad - start)])
    return buf.getvalue()


ENV_HANDLER = b"import os\ndef handler(event, context):\n    return dict(os.environ)\n"


def create_doc(name: str, files: dict[str, bytes], **extra) -> bytes:
    return json.dumps({"FunctionName": name, "Runtime": "python3.12", "Handler": "handler.handler", "Role": ROLE,
                       "Code": {"ZipFile": base64.b64encode(zip_of(files)).decode()}, **extra}).encode()


def client(endpoint: str, creds: Credentials = CREDS):
    return boto3.client("lambda", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=creds.access_key,
                        aws_secret_access_key=creds.secret_key,
                        config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=60))


def raw(endpoint: str, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None):
    """(status, x-amzn-ErrorType, body) of one request sent as given."""
    host, port = endpoint.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body, headers or {})
        r = conn.getresponse()
        return r.status, r.getheader("x-amzn-ErrorType"), r.read()
    finally:
        conn.close()


def signed(endpoint: str, method: str, path: str, body: bytes = b"", creds: Credentials = CREDS,
           headers: dict[str, str] | None = None, **kw) -> dict[str, str]:
    return lambda_auth.sign(method, endpoint + path, body, creds, headers=headers, **kw)


@pytest.fixture
def lam(monkeypatch):
    monkeypatch.setenv("FNBENCH_TASK_KEY", TASK_KEY)  # in the server's environment, never in a function's
    try:
        fns = lambda_local.make_functions(["rust"], reserved=2)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    with lambda_local.Background(fns, credentials=CREDS, cgroups=False) as server:
        yield server


def functions(lam) -> set[str]:
    return set(lam.call(lambda s: list(s.functions)))


CREATE = "/2015-03-31/functions"
INVOKE = "/2015-03-31/functions/rust/invocations"


def test_unsigned_and_badly_signed_requests_are_403_and_run_nothing(lam, tmp_path):
    marker = tmp_path / "ran"
    doc = create_doc("evil", {"handler.py": f"open({str(marker)!r}, 'w').close()\ndef handler(e, c):\n    return 1\n".encode()})
    json_ct = {"content-type": "application/json"}
    # Unsigned: CreateFunction, Invoke, GetFunction, DeleteFunction, UpdateFunctionConfiguration.
    assert raw(lam.endpoint, "POST", CREATE, doc, json_ct)[:2] == (403, "MissingAuthenticationTokenException")
    assert raw(lam.endpoint, "POST", INVOKE, b"{}")[:2] == (403, "MissingAuthenticationTokenException")
    assert raw(lam.endpoint, "GET", "/2015-03-31/functions/rust")[:2] == (403, "MissingAuthenticationTokenException")
    assert raw(lam.endpoint, "DELETE", "/2015-03-31/functions/rust")[:2] == (403, "MissingAuthenticationTokenException")
    assert raw(lam.endpoint, "PUT", "/2015-03-31/functions/rust/configuration", b'{"MemorySize": 512}',
               json_ct)[:2] == (403, "MissingAuthenticationTokenException")
    # Wrong secret, unknown key id (boto3 as any client would sign).
    with pytest.raises(ClientError) as e:
        client(lam.endpoint, Credentials(CREDS.access_key, "not-the-secret")).create_function(
            FunctionName="evil", Runtime="python3.12", Handler="handler.handler", Role=ROLE,
            Code={"ZipFile": zip_of({"handler.py": b"def handler(e, c):\n    return 1\n"})})
    assert e.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as e:
        client(lam.endpoint, Credentials("AKIDSOMEONEELSE", CREDS.secret_key)).invoke(FunctionName="rust", Payload=b"{}")
    assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"
    # A valid signature of another body; a signature 20 minutes old; a malformed Authorization.
    headers = signed(lam.endpoint, "POST", CREATE, b'{"FunctionName": "x"}', headers=json_ct)
    assert raw(lam.endpoint, "POST", CREATE, doc, headers)[:2] == (403, "InvalidSignatureException")
    old = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - 20 * 60))
    status, kind, body = raw(lam.endpoint, "POST", CREATE, doc, signed(lam.endpoint, "POST", CREATE, doc,
                                                                       headers=json_ct, amz_date=old))
    assert (status, kind) == (403, "InvalidSignatureException") and b"Signature expired" in body
    assert raw(lam.endpoint, "POST", INVOKE, b"{}", {"authorization": "Basic Zm9vOmJhcg=="})[:2] == (
        403, "IncompleteSignatureException")
    # Another region's scope (signed right, for elsewhere).
    other = lambda_auth.sign("POST", lam.endpoint + INVOKE, b"{}", CREDS, region="eu-west-1")
    assert raw(lam.endpoint, "POST", INVOKE, b"{}", other)[:2] == (403, "InvalidSignatureException")
    assert functions(lam) == {"rust"} and not marker.exists()
    assert lam.call(lambda s: sum(len(f.instances) for f in s.functions.values())) == 0  # nothing was invoked
    # The same requests signed with the server's key work.
    c = client(lam.endpoint)
    r = c.invoke(FunctionName="rust", Payload=json.dumps({"workload": "echo", "params": {"payload": 1}}))
    assert r["StatusCode"] == 200 and "FunctionError" not in r


def test_non_json_foreign_host_and_origin_are_refused_even_when_signed(lam):
    body = b'{"workload": "echo", "params": {"payload": 1}}'
    for ctype in ("text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data"):
        headers = signed(lam.endpoint, "POST", INVOKE, body, headers={"content-type": ctype})
        assert raw(lam.endpoint, "POST", INVOKE, body, headers)[:2] == (415, "UnsupportedMediaTypeException"), ctype
    # Host: another name for 127.0.0.1 (DNS rebinding), or another port.
    port = lam.endpoint.rsplit(":", 1)[1]
    for host in (f"rebind.example:{port}", f"127.0.0.1:{int(port) + 1}", "127.0.0.1"):
        headers = lambda_auth.sign("POST", f"http://{host}{INVOKE}", body, CREDS)
        status, kind, text = raw(lam.endpoint, "POST", INVOKE, body, headers)
        assert (status, kind) == (403, "AccessDeniedException") and b"is not this server's address" in text, host
    headers = signed(lam.endpoint, "POST", INVOKE, body, headers={"origin": "http://127.0.0.1:8000"})
    assert raw(lam.endpoint, "POST", INVOKE, body, headers)[:2] == (403, "AccessDeniedException")
    assert lam.call(lambda s: len(s.functions["rust"].instances)) == 0
    # What boto3 sends for Invoke (no Content-Type) and fnbench's invoker (application/json) pass.
    for extra in ({}, {"content-type": "application/json"}):
        headers = signed(lam.endpoint, "POST", INVOKE, body, headers=extra)
        assert raw(lam.endpoint, "POST", INVOKE, body, headers)[0] == 200


def test_runtime_api_refuses_foreign_host_and_origin(lam):
    c = client(lam.endpoint)
    assert c.invoke(FunctionName="rust", Payload=b'{"workload": "echo", "params": {"payload": 1}}')["StatusCode"] == 200
    port = lam.call(lambda s: s.functions["rust"].instances[0].port)
    api = f"http://127.0.0.1:{port}"
    for headers in ({"host": f"rebind.example:{port}"}, {"origin": "http://127.0.0.1:8000"}):
        status, kind, _ = raw(api, "GET", "/2018-06-01/runtime/invocation/next", b"", headers)
        assert (status, kind) == (403, "AccessDeniedException"), headers
    # The instance still serves (its own poll was not disturbed).
    r = c.invoke(FunctionName="rust", Payload=b'{"workload": "echo", "params": {"payload": 2}}')
    assert json.loads(r["Payload"].read())["result"] == 2


def test_a_function_sees_lambdas_environment_not_the_servers(lam, monkeypatch):
    c = client(lam.endpoint)
    c.create_function(FunctionName="env", Runtime="python3.12", Handler="handler.handler", Role=ROLE,
                      Code={"ZipFile": zip_of({"handler.py": ENV_HANDLER})},
                      Environment={"Variables": {"MY_SETTING": "on", "AWS_REGION": "xx-nowhere-1"}})
    c.get_waiter("function_active_v2").wait(FunctionName="env", WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    r = c.invoke(FunctionName="env", Payload=b"{}")
    env = json.loads(r["Payload"].read())
    assert "FunctionError" not in r, env
    assert "FNBENCH_TASK_KEY" not in env and TASK_KEY not in json.dumps(env)
    assert CREDS.secret_key not in json.dumps(env) and "AWS_SECRET_ACCESS_KEY" not in env
    assert env["MY_SETTING"] == "on" and env["AWS_REGION"] == "us-east-1"  # configured; reserved kept
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "env" and env["_HANDLER"] == "handler.handler"
    assert env["AWS_EXECUTION_ENV"] == "AWS_Lambda_python3.12" and env["TZ"] == ":UTC"
    assert set(env) - DOCUMENTED == {"MY_SETTING"}, sorted(set(env) - DOCUMENTED)


class _Page(BaseHTTPRequestHandler):
    page = b""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(self.page)))
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, *args) -> None:
        pass


def test_a_page_in_chromium_cannot_create_or_invoke_a_function(lam, tmp_path):
    from tests.integration.test_report_html import Browser

    marker = tmp_path / "ran-from-the-browser"
    doc = create_doc("evil", {"handler.py": f"open({str(marker)!r}, 'w').close()\ndef handler(e, c):\n    return 1\n".encode()})
    page = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    _Page.page = b"<!doctype html><title>elsewhere</title>"
    threading.Thread(target=page.serve_forever, daemon=True).start()
    b = Browser()
    try:
        b.call("Network.emulateNetworkConditions", offline=False, latency=0, downloadThroughput=-1, uploadThroughput=-1)
        b.call("Page.navigate", url=f"http://127.0.0.1:{page.server_address[1]}/")
        deadline = time.monotonic() + 30
        while b.eval("document.readyState") != "complete" or b.eval("document.title") != "elsewhere":
            assert time.monotonic() < deadline, "the page did not load"
            time.sleep(0.1)
        script = """(async () => {
          const out = [];
          const send = async (path, body, type) => {
            const init = {mode: 'no-cors', method: 'POST', body};
            if (type) init.headers = {'Content-Type': type};
            try { const r = await fetch(ENDPOINT + path, init); out.push(r.type); }
            catch (e) { out.push('error: ' + e); }
          };
          await send('/2015-03-31/functions', DOC, 'text/plain');
          await send('/2015-03-31/functions', new Blob([DOC]), null);
          await send('/2015-03-31/functions/evil/invocations', '{}', 'text/plain');
          await send('/2015-03-31/functions/rust/invocations', new Blob(['{}']), null);
          return out;
        })()""".replace("ENDPOINT", json.dumps(lam.endpoint)).replace("DOC", json.dumps(doc.decode()))
        outcomes = b.eval(script)
    finally:
        b.close()
        page.shutdown()
    assert len(outcomes) == 4, outcomes
    refused = lam.call(lambda s: dict(s.refused))
    assert sum(refused.values()) >= 4, refused  # the requests did arrive, and were refused
    assert set(refused) <= {"AccessDeniedException", "UnsupportedMediaTypeException",
                            "MissingAuthenticationTokenException"}, refused
    assert functions(lam) == {"rust"} and not marker.exists()
    assert lam.call(lambda s: len(s.functions["rust"].instances)) == 0


def _send_head(endpoint: str, head: str) -> socket.socket:
    host, port = endpoint.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(head.encode("latin-1"))
    return sock


def _status(sock: socket.socket) -> tuple[int, str]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    kind = next((line.split(":", 1)[1].strip() for line in head if line.lower().startswith("x-amzn-errortype:")), "")
    return int(head[0].split()[1]), kind


def _signed_head(endpoint: str, method: str, path: str, length: int, chunked: bool = False) -> str:
    headers = signed(endpoint, method, path, b"", headers={"content-type": "application/json"})
    framing = "transfer-encoding: chunked" if chunked else f"content-length: {length}"
    return f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + framing + "\r\n\r\n"


def test_bodies_over_awss_caps_are_413_before_they_are_read(lam):
    # Content-Length over the cap: answered from the headers alone (no byte of the body sent).
    for method, path, length, kind in (
            ("POST", INVOKE, lambda_local.MAX_PAYLOAD_BYTES + 1, "RequestTooLargeException"),
            ("POST", CREATE, lambda_local.MAX_UPLOAD_BYTES + 1, "RequestEntityTooLargeException"),
            ("PUT", "/2015-03-31/functions/rust/code", 300 * 1024 * 1024, "RequestEntityTooLargeException"),
            ("PUT", "/2015-03-31/functions/rust/configuration", 50 * 1024 * 1024, "RequestEntityTooLargeException")):
        sock = _send_head(lam.endpoint, _signed_head(lam.endpoint, method, path, length))
        try:
            assert _status(sock) == (413, kind), (method, path)
        finally:
            sock.close()
    # No Content-Length (chunked): refused once the cap is crossed, not at the end of the body.
    sock = _send_head(lam.endpoint, _signed_head(lam.endpoint, "POST", INVOKE, 0, chunked=True))
    chunk = b"%x\r\n%s\r\n" % (1024 * 1024, b" " * 1024 * 1024)
    sent = 0
    sock.settimeout(0.05)
    got = b""
    try:
        for _ in range(64):  # at most 64 MB; the cap is 6 MB
            try:
                sock.sendall(chunk)
            except OSError:
                break
            sent += 1
            try:
                got += sock.recv(65536)
            except TimeoutError:
                continue
            if got:
                break
        sock.settimeout(10)
        if b"\r\n\r\n" not in got:
            got += sock.recv(65536)
    finally:
        sock.close()
    assert got.startswith(b"HTTP/1.1 413") and b"RequestTooLargeException" in got, got[:200]
    assert sent < 16, sent  # refused near 6 MB, not after the 64 MB the client would send
    # boto3 sending a whole 7 MB payload reads AWS's error (the server drops the rest of the body).
    with pytest.raises(ClientError) as e:
        client(lam.endpoint).invoke(FunctionName="rust", Payload=b'"' + b"x" * (7 * 1024 * 1024) + b'"')
    assert e.value.response["Error"]["Code"] == "RequestTooLargeException"
    # Under the cap it is invoked.
    r = client(lam.endpoint).invoke(FunctionName="rust", Payload=json.dumps(
        {"workload": "echo", "params": {"payload": "x" * (5 * 1024 * 1024)}}))
    assert r["StatusCode"] == 200 and "FunctionError" not in r


def test_unpacked_code_is_capped_per_function_and_in_all(monkeypatch):
    small = b"def handler(e, c):\n    return 1\n"
    with lambda_local.Background([], credentials=CREDS, cgroups=False, code_storage_bytes=3 * 1024 * 1024) as lam:
        c = client(lam.endpoint)

        def create(name: str, pad: int) -> None:
            c.create_function(FunctionName=name, Runtime="python3.12", Handler="handler.handler", Role=ROLE,
                              Code={"ZipFile": zip_of({"handler.py": small}, pad)})

        # 250 MB unzipped per function, as AWS (a 251 MB file of zeros zips to ~250 kB).
        with pytest.raises(ClientError) as e:
            create("huge", 251 * 1024 * 1024)
        assert e.value.response["Error"]["Code"] == "InvalidParameterValueException"
        assert "Unzipped size must be smaller than 262144000 bytes" in e.value.response["Error"]["Message"]
        # The total: 2 MB + 2 MB > 3 MB.
        create("a", 2 * 1024 * 1024)
        with pytest.raises(ClientError) as e:
            create("b", 2 * 1024 * 1024)
        assert e.value.response["Error"]["Code"] == "CodeStorageExceededException"
        # An update replaces the function's own code: 2.5 MB in place of 2 MB fits.
        c.get_waiter("function_active_v2").wait(FunctionName="a", WaiterConfig={"Delay": 1, "MaxAttempts": 10})
        c.update_function_code(FunctionName="a", ZipFile=zip_of({"handler.py": small}, 5 * 512 * 1024))
        # Deleting frees its share.
        c.get_waiter("function_updated_v2").wait(FunctionName="a", WaiterConfig={"Delay": 1, "MaxAttempts": 10})
        c.delete_function(FunctionName="a")
        create("b", 2 * 1024 * 1024)
        assert set(lam.call(lambda s: list(s.functions))) == {"b"}
        root = lam.call(lambda s: s.code_root)
        on_disk = sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())
        assert on_disk <= 3 * 1024 * 1024


def test_lambda_serve_without_a_key_exits_2():
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FNBENCH_LAMBDA_"))}
    cmd = [sys.executable, "-m", "orchestrator.cli", "lambda", "serve", "--functions", "none", "--port", "0"]
    for extra, says in (({}, "FNBENCH_LAMBDA_ACCESS_KEY_ID"),
                        ({"FNBENCH_LAMBDA_ACCESS_KEY_ID": "k"}, "FNBENCH_LAMBDA_SECRET_ACCESS_KEY is not set")):
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60, env={**base, **extra})
        assert r.returncode == 2, r.stderr
        assert says in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_every_api_boto3_signs_is_verified_and_served(lam):
    """The verifier recomputes what boto3 signed for each call it makes here: ARNs and qualifiers in
    the path and query, GET/PUT/DELETE without a body, uploads."""
    c = client(lam.endpoint)
    arn = "arn:aws:lambda:us-east-1:000000000000:function:rust"
    r = c.invoke(FunctionName=arn, Qualifier="$LATEST", LogType="Tail", Payload=b'{"workload": "echo", "params": {"payload": 3}}')
    assert json.loads(r["Payload"].read())["result"] == 3
    assert c.get_function_configuration(FunctionName=arn)["FunctionName"] == "rust"
    assert [f["FunctionName"] for f in c.list_functions()["Functions"]] == ["rust"]
    c.put_function_concurrency(FunctionName="rust", ReservedConcurrentExecutions=3)
    c.update_function_configuration(FunctionName="rust", MemorySize=256)
    c.get_waiter("function_updated_v2").wait(FunctionName="rust", WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    c.create_function(FunctionName="py", Runtime="python3.12", Handler="handler.handler", Role=ROLE,
                      Code={"ZipFile": zip_of({"handler.py": b"def handler(e, c):\n    return {'n': e['n'] + 1}\n"})})
    c.get_waiter("function_active_v2").wait(FunctionName="py", WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    c.update_function_code(FunctionName="py", ZipFile=zip_of({"handler.py": b"def handler(e, c):\n    return {'n': e['n'] + 2}\n"}))
    c.get_waiter("function_updated_v2").wait(FunctionName="py", WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    assert json.loads(c.invoke(FunctionName="py", Payload=b'{"n": 1}')["Payload"].read()) == {"n": 3}
    assert c.get_function(FunctionName="py")["Configuration"]["Runtime"] == "python3.12"
    c.delete_function(FunctionName="py")
    assert functions(lam) == {"rust"} and lam.call(lambda s: dict(s.refused)) == {}
