"""Grafana: push the boards in grafana/dashboards/ and annotate runs, through grafana-client.

The payloads are plain dicts built here (Grafana's SaveDashboardCommand and PostAnnotationsCmd)
so tests can check them without a Grafana.  Every Grafana failure becomes a GrafanaError with a
message a person can act on; annotations turn it into a warning and never touch the run.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
from rich.console import Console
from rich.markup import escape

from orchestrator.errors import SetupError

URL_ENV, TOKEN_ENV = "FNBENCH_GRAFANA_URL", "FNBENCH_GRAFANA_TOKEN"
DASHBOARDS = Path(__file__).resolve().parents[2] / "grafana" / "dashboards"
TIMEOUT_S = 3.0  # connect and read: a slow Grafana must not hold a run back
TAG = "fnbench"


class GrafanaError(SetupError):
    """Grafana was unreachable or refused a request (exit 2 for `fnbench grafana push`)."""


def safe_url(url: str) -> str:
    """The URL without user:password, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def dashboard_payload(board: dict[str, Any], folder_uid: str | None = None, message: str = "fnbench grafana push") -> dict[str, Any]:
    """POST /api/dashboards/db body: overwrite by uid, never by numeric id (ids differ per Grafana)."""
    body: dict[str, Any] = {"dashboard": {**board, "id": None}, "overwrite": True, "message": message}
    if folder_uid:
        body["folderUid"] = folder_uid
    return body


def annotation_body(run_id: str, when_s: float, event: str, text: str) -> dict[str, Any]:
    """POST /api/annotations body: an organisation annotation the boards find by its tags."""
    return {"time": int(when_s * 1000), "tags": [TAG, run_id, event], "text": text}


def load_dashboards(folder: Path = DASHBOARDS) -> list[dict[str, Any]]:
    files = sorted(folder.glob("*.json"))
    if not files:
        raise GrafanaError(f"no dashboards in {folder}; run `python grafana/build.py`")
    return [orjson.loads(f.read_bytes()) for f in files]


def _api(url: str, token: str | None) -> Any:
    from grafana_client import GrafanaApi

    if not urlsplit(url).scheme.startswith("http") or not urlsplit(url).hostname:
        raise GrafanaError(f"Grafana URL must look like http(s)://host:port, got {safe_url(url)!r}")
    return GrafanaApi.from_url(url, credential=token or None, timeout=TIMEOUT_S)


def _call(url: str, token: str | None, send: Any) -> Any:
    """Run ``send(api)``; translate every transport or HTTP failure into one GrafanaError."""
    import requests
    from grafana_client.client import (
        GrafanaClientError,
        GrafanaServerError,
        GrafanaUnauthorizedError,
    )

    where = safe_url(url)
    try:
        return send(_api(url, token))
    except GrafanaUnauthorizedError:
        hint = "the token was refused" if token else f"no token given: set {TOKEN_ENV}"
        raise GrafanaError(f"Grafana at {where} answered 401 Unauthorized ({hint}; it needs dashboard/annotation write)") from None
    except GrafanaClientError as exc:
        raise GrafanaError(f"Grafana at {where} refused the request: HTTP {exc.status_code} {exc.message}") from None
    except GrafanaServerError as exc:
        raise GrafanaError(f"Grafana at {where} failed: HTTP {exc.status_code} {exc.message}") from None
    except requests.Timeout:
        raise GrafanaError(f"Grafana at {where} did not answer within {TIMEOUT_S:g} s") from None
    except requests.ConnectionError:
        raise GrafanaError(f"cannot reach Grafana at {where} (connection refused or no route)") from None
    except requests.RequestException as exc:
        raise GrafanaError(f"Grafana at {where}: {type(exc).__name__}") from None


def push(url: str, token: str | None, boards: list[dict[str, Any]], folder_uid: str | None = None) -> list[str]:
    """Upload every board (overwrite by uid); returns the URLs Grafana reports."""
    urls = []
    for board in boards:
        reply = _call(url, token, lambda api, b=board: api.dashboard.update_dashboard(dashboard_payload(b, folder_uid)))
        urls.append(str(reply.get("url", board.get("uid", ""))) if isinstance(reply, dict) else board.get("uid", ""))
    return urls


def annotate(url: str, token: str | None, body: dict[str, Any]) -> None:
    _call(url, token, lambda api: api.client.POST("/annotations", json=body))


class RunAnnotations:
    """Start/stop annotations for one run when FNBENCH_GRAFANA_URL is set; otherwise does nothing.

    Neither method raises: a Grafana problem is one warning on the console.  The start
    annotation is posted from a thread so a slow Grafana never delays the common start time.
    """

    def __init__(self, run_id: str, name: str, console: Console, url: str | None, token: str | None) -> None:
        self.run_id, self.name, self.console = run_id, name, console
        self.url, self.token = url, token
        self._start: threading.Thread | None = None
        self._summary = ""

    @classmethod
    def from_env(cls, run_id: str, name: str, console: Console) -> RunAnnotations:
        return cls(run_id, name, console, os.environ.get(URL_ENV) or None, os.environ.get(TOKEN_ENV))

    # As an IntervalSink: intervals add nothing; the run's result says how it stopped; close posts it.
    def add(self, iv: Any) -> None:
        pass

    def conclude(self, result: Any) -> None:
        errors = len(result.errors)
        self._summary = "interrupted" if result.interrupted else f"{errors} error(s)" if errors else ""

    def close(self) -> None:
        self.stopped(time.time(), self._summary)

    def started(self, at_s: float) -> None:
        if self.url:
            body = annotation_body(self.run_id, at_s, "start", f"fnbench run {self.run_id} ({self.name}) started")
            self._start = threading.Thread(target=self._post, args=(body,), daemon=True, name="grafana-annotation")
            self._start.start()

    def stopped(self, at_s: float, summary: str = "") -> None:
        if not self.url:
            return
        if self._start is not None:
            self._start.join(TIMEOUT_S * 2)
        text = f"fnbench run {self.run_id} ({self.name}) stopped" + (f": {summary}" if summary else "")
        self._post(annotation_body(self.run_id, at_s, "stop", text))

    def _post(self, body: dict[str, Any]) -> None:
        try:
            annotate(self.url or "", self.token, body)
        except Exception as exc:  # noqa: BLE001 - an annotation must never harm the run
            self.console.print(f"[yellow]warning[/]: Grafana annotation not added: {escape(str(exc))}", highlight=False)
