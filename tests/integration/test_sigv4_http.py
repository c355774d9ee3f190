"""An ``http`` target with ``sigv4`` (a Lambda Function URL behind AuthType AWS_IAM) through `fnbench run`,
against a loopback server that checks every request's signature with the local Lambda's own SigV4
Verifier (lambda_emulator/auth.py: service lambda, its region, its key) and answers 403 as AWS does
when it does not match.  Credentials come from the standard chain (here the environment)."""

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest

from lambda_emulator.auth import Verifier
from workers.platforms.aws_lambda.sigv4 import Credentials

pytestmark = pytest.mark.integration

FNBENCH = [sys.executable, "-m", "orchestrator.cli"]
ROOT = Path(__file__).resolve().parents[2]
KEY = Credentials("AKIDFNBENCHURL", "url-secret")


class IamFunctionUrl:
    """A Function URL stand-in on 127.0.0.1: 200 for a request signed by KEY for lambda in us-east-1,
    AWS's 403 otherwise; it keeps what it saw."""

    def __init__(self) -> None:
        self.verifier = Verifier(KEY, "us-east-1", "lambda")
        self.lock = threading.Lock()
        self.ok = 0
        self.refused: list[str] = []
        self.dates: set[str] = set()
        self.signed_headers: set[str] = set()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower().encode("latin-1"): v.encode("latin-1") for k, v in self.headers.items()}
                problem = owner.verifier.verify(b"POST", self.path.encode("latin-1"), headers, body)
                with owner.lock:
                    owner.dates.add(self.headers.get("x-amz-date", ""))
                    auth = self.headers.get("authorization", "")
                    if "SignedHeaders=" in auth:
                        owner.signed_headers.update(auth.split("SignedHeaders=")[1].split(",")[0].split(";"))
                    if problem is None:
                        owner.ok += 1
                    else:
                        owner.refused.append(problem[1].decode() if isinstance(problem[1], bytes) else str(problem[1]))
                status, out = (200, json.dumps({"echo": json.loads(body or b"{}")}).encode()) if problem is None else \
                    (problem[0], problem[1] if isinstance(problem[1], bytes) else str(problem[1]).encode())
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("x-amzn-RequestId", "11111111-2222-3333-4444-555555555555")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "IamFunctionUrl":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/orders?b=2&a=1"


def fnbench(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    clean.update(env, AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    return subprocess.run([*FNBENCH, *args], capture_output=True, text=True, cwd=ROOT, timeout=120, env=clean)


def spec_for(tmp_path: Path, url: str) -> Path:
    p = tmp_path / "url.yaml"
    p.write_text("name: fnurl\ntargets:\n"
                 f"  - {{name: orders-url, runtime: rust, url: '{url}', method: POST, body: {{order: 7}}, "
                 "headers: {x-tenant: blue}, sigv4: {service: lambda, region: us-east-1}}\n"
                 "load: {executor: constant, rps: 20, max_in_flight: 4}\nduration: 3s\nflush_interval: 1s\n"
                 "tracing: {sample: 0.5}\n")
    return p


def test_every_request_is_signed_and_re_signed_each_second(tmp_path):
    with IamFunctionUrl() as srv:
        env = {"AWS_ACCESS_KEY_ID": KEY.access_key, "AWS_SECRET_ACCESS_KEY": KEY.secret_key,
               "AWS_SESSION_TOKEN": "session-token-from-sts"}
        r = fnbench(env, "run", str(spec_for(tmp_path, srv.url)), "--results", str(tmp_path / "results"),
                    "--metrics-port", "0", "--workers", "1", "--run-id", "u", "--no-html")
    assert r.returncode == 0, r.stderr[-3000:]
    result = orjson.loads((tmp_path / "results" / "u" / "result.json").read_bytes())
    g = next(g for g in result["groups"] if g["target"] == "orders-url")
    assert g["outcomes"] == {"ok": g["completed"]} and g["completed"] >= 40
    assert srv.refused == [] and srv.ok == g["completed"]
    # X-Amz-Date has one-second resolution: a 3 s run is signed again each second.
    assert len(srv.dates) >= 3
    # What botocore signs: host, the body's type and length, the spec's header, the date and the token;
    # never user-agent or the trace context (half the requests carry traceparent, unsigned).
    assert {"host", "content-type", "content-length", "x-tenant", "x-amz-date", "x-amz-security-token"} <= srv.signed_headers
    assert not {"user-agent", "traceparent"} & srv.signed_headers


def test_a_wrong_secret_is_refused_as_aws_refuses_it(tmp_path):
    with IamFunctionUrl() as srv:
        env = {"AWS_ACCESS_KEY_ID": KEY.access_key, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
        r = fnbench(env, "run", str(spec_for(tmp_path, srv.url)), "--results", str(tmp_path / "results"),
                    "--metrics-port", "0", "--workers", "1", "--run-id", "w", "--no-html")
    result = orjson.loads((tmp_path / "results" / "w" / "result.json").read_bytes())
    g = next(g for g in result["groups"] if g["target"] == "orders-url")
    assert g["outcomes"] == {"http_4xx": g["completed"]} and g["completed"] > 0, r.stderr[-2000:]
    assert srv.ok == 0 and len(srv.refused) == g["completed"]
    assert all("signature" in m.lower() for m in srv.refused)


def test_no_credentials_in_the_chain_is_a_setup_error(tmp_path):
    with IamFunctionUrl() as srv:
        r = fnbench({}, "run", str(spec_for(tmp_path, srv.url)), "--results", str(tmp_path / "results"),
                    "--metrics-port", "0", "--workers", "1", "--run-id", "n", "--no-html")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "no AWS credentials in the standard chain" in r.stderr
    assert srv.ok == 0 and srv.refused == []


def test_sigv4_and_a_hand_made_authorization_header_is_bad_input(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: bad\ntargets:\n  - {name: u, url: 'http://127.0.0.1:1/', "
                 "sigv4: {service: lambda, region: eu-north}}\nload: {rps: 1}\n")
    r = fnbench({}, "validate", str(p))
    assert r.returncode == 2 and "targets[0].sigv4.region" in r.stderr
    p.write_text("name: bad\ntargets:\n  - {name: u, url: 'http://127.0.0.1:1/', headers: {Authorization: x}, "
                 "sigv4: {service: lambda, region: eu-north-1}}\nload: {rps: 1}\n")
    r = fnbench({}, "validate", str(p))
    assert r.returncode == 2
    assert "targets[0].headers.Authorization: sigv4 signs the request and sets this header itself" in r.stderr
