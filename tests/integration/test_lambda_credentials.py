"""AWS credentials never leave the process that uses them: a distributed aws-lambda run (real
Redis, a real `fnbench worker`, the local Lambda; warm invocations and forced cold starts through
the control plane) with a unique access key, secret and session token, then a grep of everything
it wrote — the orchestrator's output, the worker's log, every file of the results folder and every
value in Redis (Celery's base64 task bodies decoded)."""

import base64
import contextlib
import os
import shutil
from pathlib import Path

import orjson
import pytest

from lambda_emulator import server as lambda_local
from tests.integration.distributed_fixtures import Cluster, RedisServer
from tests.servers import need
from workers.platforms.aws_lambda.sigv4 import Credentials

pytestmark = pytest.mark.integration

KEY_ID = "AKIAFNBENCHKEYID7Q2Z"
SECRET = "fnbench/secret+never-written-9d41c0"
TOKEN = "fnbench-session-token-never-written-51b7"


def _redis_values(client) -> list[bytes]:
    """Every key and value in Redis, whatever its type; base64 message bodies decoded too."""
    out: list[bytes] = []
    for key in client.scan_iter(count=1000):
        out.append(key)
        kind = client.type(key).decode()
        if kind == "string":
            out.append(client.get(key) or b"")
        elif kind == "hash":
            for k, v in client.hgetall(key).items():
                out += [k, v]
        elif kind == "list":
            out += client.lrange(key, 0, -1)
        elif kind == "set":
            out += list(client.smembers(key))
        elif kind == "zset":
            out += [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            for _, fields in client.xrange(key):
                for k, v in fields.items():
                    out += [k, v]
    decoded = []
    for value in out:
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("body"), str):
            with contextlib.suppress(ValueError):
                decoded.append(base64.b64decode(doc["body"]))
    return out + decoded


def test_credentials_appear_nowhere(tmp_path, monkeypatch):
    need(shutil.which("redis-server") is not None, "redis-server not installed (apt install redis-server)")
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", TOKEN)
    try:
        fns = lambda_local.make_functions(["rust"], reserved=4)
    except FileNotFoundError as exc:
        need(False, str(exc))
    server = RedisServer(tmp_path)
    server.start()
    cluster = Cluster(server, tmp_path)
    try:
        with lambda_local.Background(fns, credentials=Credentials(KEY_ID, SECRET)) as lam:
            worker = cluster.start_worker("a")
            cluster.wait_registered(1)
            spec = tmp_path / "spec.yaml"
            spec.write_text(
                "name: creds\nregions: [a]\n"
                f"targets:\n  - {{name: fn, runtime: rust, platform: aws-lambda, function: rust, "
                f"endpoint_url: '{lam.endpoint}', body: {{workload: echo, params: {{payload: 1}}}}}}\n"
                "load: {executor: constant, rps: 20}\nduration: 2s\nflush_interval: 1s\n"
                "cold_start: {enabled: true, invocations: 2, rps: 2}\n")
            results = tmp_path / "results"
            r = cluster.fnbench("run", str(spec), "--results", str(results), "--json", "--no-html", timeout=120)
            assert r.returncode == 0, r.stderr[-3000:]
            result = orjson.loads(r.stdout)
            cold = next(g for g in result["groups"] if g["phase"] == "cold")
            assert cold["cold_starts"] == 2  # the control plane (UpdateFunctionConfiguration) was used
            assert next(g for g in result["groups"] if g["phase"] == "warm")["outcomes"] == {"ok": 40}
            worker.stop()
            written: list[tuple[str, bytes]] = [("orchestrator stdout", r.stdout.encode()),
                                                ("orchestrator stderr", r.stderr.encode()),
                                                ("worker log", worker.log.read_bytes())]
            written += [(str(p), p.read_bytes()) for p in Path(results).rglob("*") if p.is_file()]
            written += [("redis", v) for v in _redis_values(server.client())]
    finally:
        cluster.shutdown()
        server.stop()
    assert any(name.endswith("intervals.jsonl") for name, _ in written) and any(n == "redis" for n, _ in written)
    for secret in (KEY_ID, SECRET, TOKEN):
        leaks = [name for name, data in written if secret.encode() in data]
        assert not leaks, (secret, leaks)
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == SECRET  # (the chain had them all along)
