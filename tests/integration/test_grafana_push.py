"""`fnbench grafana push` and run annotations: the payloads fnbench builds, and Grafana failing.

No Grafana runs here.  A small loopback HTTP server stands in for it: it records what fnbench
sends (checked against Grafana's own API types) or answers 401; a closed port is "unreachable".
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema
import pytest
from rich.console import Console

from orchestrator.report import grafana

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "glsa_test-token-never-printed"
# Grafana's PostAnnotationsCmd (pkg/api/dtos/annotations.go; swagger: text required).
POST_ANNOTATIONS_CMD = {
    "type": "object", "required": ["text"], "additionalProperties": False,
    "properties": {"dashboardId": {"type": "integer"}, "dashboardUID": {"type": "string"}, "panelId": {"type": "integer"},
                   "time": {"type": "integer"}, "timeEnd": {"type": "integer"}, "text": {"type": "string", "minLength": 1},
                   "tags": {"type": "array", "items": {"type": "string"}}, "data": {"type": "object"}},
}
# Grafana's SaveDashboardCommand (POST /api/dashboards/db).
SAVE_DASHBOARD_CMD = {
    "type": "object", "required": ["dashboard"], "additionalProperties": False,
    "properties": {"dashboard": {"type": "object", "required": ["uid", "title", "panels"]}, "folderUid": {"type": "string"},
                   "folderId": {"type": "integer"}, "message": {"type": "string"}, "overwrite": {"type": "boolean"},
                   "isFolder": {"type": "boolean"}},
}


class FakeGrafana(ThreadingHTTPServer):
    """Answers every request with ``status``; keeps (path, headers, JSON body) of each."""

    def __init__(self, status: int) -> None:
        self.status, self.requests = status, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                outer.requests.append((self.path, dict(self.headers), json.loads(body or b"null")))
                reply = b'{"id": 1, "uid": "fnbench-main", "url": "/d/fnbench-main/fnbench", "status": "success"}'
                if outer.status == 401:
                    reply = b'{"message": "invalid API key"}'
                self.send_response(outer.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> FakeGrafana:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def fnbench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60, env={**os.environ, "FNBENCH_GRAFANA_URL": "", "FNBENCH_GRAFANA_TOKEN": "", **(env or {})})


@pytest.mark.integration
def test_push_to_unreachable_grafana_exits_2_with_a_clear_message():
    url = closed_port_url()
    r = fnbench("grafana", "push", "--url", url)
    assert r.returncode == 2
    assert "cannot reach Grafana" in r.stderr and url in r.stderr.replace("\n", "") and "Traceback" not in r.stderr


@pytest.mark.integration
def test_push_refused_with_401_exits_2_names_the_token_and_never_prints_it():
    with FakeGrafana(401) as g:
        r = fnbench("grafana", "push", "--url", g.url, env={"FNBENCH_GRAFANA_TOKEN": TOKEN})
    assert r.returncode == 2
    flat = " ".join(r.stderr.split())
    assert "401 Unauthorized" in flat and "token was refused" in flat and TOKEN not in r.stderr + r.stdout


@pytest.mark.integration
def test_push_sends_each_board_as_a_save_dashboard_command_with_the_token():
    from grafana_foundation_sdk.cog import plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard

    plugins.register_default_plugins()
    with FakeGrafana(200) as g:
        r = fnbench("grafana", "push", "--url", g.url, "--folder-uid", "perf", env={"FNBENCH_GRAFANA_URL": g.url,
                                                                                     "FNBENCH_GRAFANA_TOKEN": TOKEN})
    assert r.returncode == 0, r.stderr
    boards = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
    assert [p for p, _, _ in g.requests] == ["/api/dashboards/db"] * len(boards)
    for (_, headers, body), path in zip(g.requests, boards, strict=True):
        jsonschema.validate(body, SAVE_DASHBOARD_CMD)
        assert headers["Authorization"] == f"Bearer {TOKEN}"
        assert body["overwrite"] is True and body["folderUid"] == "perf" and body["dashboard"]["id"] is None
        committed = json.loads(path.read_text())
        assert {k: v for k, v in body["dashboard"].items() if k != "id"} == committed
        assert Dashboard.from_json(body["dashboard"]).uid == committed["uid"]
    assert "1 board(s) pushed" in r.stderr


@pytest.mark.integration
def test_run_annotations_are_post_annotations_commands_tagged_with_the_run():
    console = Console(file=open(os.devnull, "w"))  # noqa: SIM115 - closed with the console
    with FakeGrafana(200) as g:
        notes = grafana.RunAnnotations("demo-20250101-000000-abcd", "demo", console, g.url, TOKEN)
        notes.started(1_700_000_000.25)
        notes.stopped(1_700_000_030.5, "interrupted")
    assert [p for p, _, _ in g.requests] == ["/api/annotations", "/api/annotations"]
    bodies = [b for _, _, b in g.requests]
    for body in bodies:
        jsonschema.validate(body, POST_ANNOTATIONS_CMD)
    assert [b["time"] for b in bodies] == [1_700_000_000_250, 1_700_000_030_500]
    assert [b["tags"] for b in bodies] == [["fnbench", "demo-20250101-000000-abcd", e] for e in ("start", "stop")]
    assert "interrupted" in bodies[1]["text"]
    console.file.close()


def write_spec(tmp_path: Path, url: str) -> Path:
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: annotated\ntargets:\n  - {{name: t, runtime: rust, url: '{url}', method: GET, timeout: 2s}}\n"
                    "load: {executor: constant, rps: 50}\nduration: 2s\nflush_interval: 1s\n")
    return spec


@pytest.mark.integration
@pytest.mark.parametrize("grafana_kind", ["unreachable", "401"])
def test_run_completes_and_writes_its_result_when_grafana_fails(tmp_path, fault_server, grafana_kind):
    spec = write_spec(tmp_path, f"http://127.0.0.1:{fault_server.port}/ok")
    with FakeGrafana(401) as g:
        url = closed_port_url() if grafana_kind == "unreachable" else g.url
        r = fnbench("run", str(spec), "--results", str(tmp_path / "results"), "--metrics-port", "0", "--json",
                    env={"FNBENCH_GRAFANA_URL": url, "FNBENCH_GRAFANA_TOKEN": TOKEN})
    assert r.returncode == 0, r.stderr
    (folder,) = (tmp_path / "results").iterdir()
    result = json.loads((folder / "result.json").read_text())
    assert result["run_id"] == folder.name and json.loads(r.stdout)["run_id"] == folder.name
    flat = " ".join(r.stderr.split())
    assert flat.count("Grafana annotation not added") == 2, r.stderr
    assert ("cannot reach Grafana" if grafana_kind == "unreachable" else "401 Unauthorized") in flat
    assert TOKEN not in r.stderr
    if grafana_kind == "401":
        assert [p for p, _, _ in g.requests] == ["/api/annotations", "/api/annotations"]
