"""The Lambda control plane, paced: configuration updates that are waited for until they land.

Used by forced cold starts (workers/platforms/aws_lambda.py: bump an environment variable) and by
memory sweeps (orchestrator/sweep.py: set MemorySize).  boto3 on the caller's thread (never the
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
            revision = updated["RevisionId"]
            while _monotonic() < deadline:
                cfg = self.configuration()
                status = cfg.get("LastUpdateStatus")
                if status == "Successful" and cfg.get("RevisionId") == revision:
                    return None
                if status == "Failed":
                    return f"{self.function}: the update failed ({cfg.get('LastUpdateStatusReason') or 'no reason given'})"
        except (BotoCoreError, ClientError) as exc:
            return f"{self.function}: {exc}"
        return f"{self.function}: the update did not land within {timeout_s:g} s"
