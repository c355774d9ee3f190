"""The Lambda control plane, paced: configuration updates that are waited for until they land.

Used by forced cold starts (workers/platforms/aws_lambda/__init__.py: bump an environment variable) and by
memory sweeps (orchestrator/analysis/sweep.py: set MemorySize).  boto3 on the caller's thread (never the
event loop), retries in botocore's standard mode; calls are at least ``pace_s`` apart (default
0.2 s: 5/s, well under the account's 15/s for GetFunctionConfiguration and
UpdateFunctionConfiguration) and every wait is bounded.

An update has landed when GetFunctionConfiguration shows LastUpdateStatus ``Successful`` with
the RevisionId the update answered: from then on new invocations get new instances (execution
environments) with the new configuration.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

_monotonic = time.monotonic


def client(region: str, endpoint_url: str | None) -> Any:
    """A boto3 Lambda client from the standard credential chain (imported here: off the hot path)."""
    import boto3
    from botocore.config import Config

    return boto3.client("lambda", region_name=region, endpoint_url=endpoint_url or None,
                        config=Config(retries={"total_max_attempts": 3, "mode": "standard"},
                                      connect_timeout=5, read_timeout=30))


class ControlPlane:
    """One function's control plane: paced calls and updates waited for (blocking; run on a thread)."""

    def __init__(self, lambda_client: Any, function: str, *, pace_s: float = 0.2) -> None:
        self.client = lambda_client
        self.function = function
        self.pace_s = pace_s
        self.last = 0.0
        self.calls = 0

    def _paced(self, call: Any, **kwargs: Any) -> Any:
        wait = self.last + self.pace_s - _monotonic()
        if wait > 0:
            time.sleep(wait)
        self.last = _monotonic()
        self.calls += 1
        return call(FunctionName=self.function, **kwargs)

    def configuration(self) -> dict[str, Any]:
        return dict(self._paced(self.client.get_function_configuration))

    def wait(self, landed: Callable[[dict[str, Any]], str | bool], timeout_s: float = 60.0) -> str | None:
        """Poll GetFunctionConfiguration (paced) until ``landed(cfg)`` is True (None) or a reason why
        not (that reason), at most ``timeout_s``."""
        deadline = _monotonic() + timeout_s
        while _monotonic() < deadline:
            verdict = landed(self.configuration())
            if verdict is True:
                return None
            if isinstance(verdict, str):
                return f"{self.function}: {verdict}"
        return f"{self.function}: not ready within {timeout_s:g} s"

    def update(self, changes: Callable[[dict[str, Any]], dict[str, Any]], timeout_s: float = 60.0) -> str | None:
        """UpdateFunctionConfiguration with ``changes(current configuration)`` and wait until it has
        landed; None when it has, else why not (bounded by ``timeout_s``)."""
        from botocore.exceptions import BotoCoreError, ClientError

        c = self.client
        deadline = _monotonic() + timeout_s
        try:
            kwargs = changes(self.configuration())
            while True:
                try:
                    updated = self._paced(c.update_function_configuration, **kwargs)
                    break
                except c.exceptions.ResourceConflictException:  # another update in progress: wait for it
                    if _monotonic() > deadline:
                        return f"{self.function}: an update stayed in progress for {timeout_s:g} s"
            return self.wait(updated_to(updated["RevisionId"]), max(0.0, deadline - _monotonic()))
        except (BotoCoreError, ClientError) as exc:
            return f"{self.function}: {exc}"


def updated_to(revision: str) -> Callable[[dict[str, Any]], str | bool]:
    """An update has landed: LastUpdateStatus Successful with the RevisionId it answered."""

    def landed(cfg: dict[str, Any]) -> str | bool:
        status = cfg.get("LastUpdateStatus")
        if status == "Failed":
            return f"the update failed ({cfg.get('LastUpdateStatusReason') or 'no reason given'})"
        return status == "Successful" and cfg.get("RevisionId") == revision

    return landed


def active(cfg: dict[str, Any]) -> str | bool:
    """A new function is ready to invoke: State Active (Pending while Lambda creates it)."""
    if cfg.get("State") == "Failed":
        return f"creation failed ({cfg.get('StateReason') or 'no reason given'})"
    return cfg.get("State") == "Active" and cfg.get("LastUpdateStatus", "Successful") == "Successful"
