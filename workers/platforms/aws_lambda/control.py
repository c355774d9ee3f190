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


# -- versions, aliases, provisioned concurrency (issue 22 part 2) ------------------------------------
def is_version(qualifier: str) -> bool:
    """A published version's number (immutable); anything else but $LATEST is an alias."""
    return qualifier.isdigit()


class Versions(ControlPlane):
    """PublishVersion, the alias's version, and provisioned concurrency on a qualifier — paced and
    bounded as every other control-plane call here."""

    def alias_version(self, alias: str) -> str:
        return str(self._paced(self.client.get_alias, Name=alias)["FunctionVersion"])

    def publish_to_alias(self, alias: str, timeout_s: float = 60.0) -> str | None:
        """Publish $LATEST as a new version and move ``alias`` to it (a forced cold start on an alias);
        None when done, else why not."""
        from botocore.exceptions import BotoCoreError, ClientError

        c = self.client
        deadline = _monotonic() + timeout_s
        try:
            while True:
                try:
                    version = self._paced(c.publish_version)["Version"]
                    break
                except c.exceptions.ResourceConflictException:  # an update still in progress
                    if _monotonic() > deadline:
                        return f"{self.function}: PublishVersion stayed in conflict for {timeout_s:g} s"
            self._paced(c.update_alias, Name=alias, FunctionVersion=version)
            return None
        except (BotoCoreError, ClientError) as exc:
            return f"{self.function}: {exc}"

    def move_alias(self, alias: str, version: str) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._paced(self.client.update_alias, Name=alias, FunctionVersion=version)
            return None
        except (BotoCoreError, ClientError) as exc:
            return f"{self.function}: moving alias {alias} back to version {version}: {exc}"

    def provisioned(self, qualifier: str) -> dict[str, Any] | None:
        """GetProvisionedConcurrencyConfig (None: there is none)."""
        c = self.client
        try:
            return dict(self._paced(c.get_provisioned_concurrency_config, Qualifier=qualifier))
        except c.exceptions.ProvisionedConcurrencyConfigNotFoundException:
            return None

    def put_provisioned(self, qualifier: str, n: int) -> dict[str, Any]:
        return dict(self._paced(self.client.put_provisioned_concurrency_config, Qualifier=qualifier,
                                ProvisionedConcurrentExecutions=n))

    def delete_provisioned(self, qualifier: str) -> None:
        import contextlib

        c = self.client
        with contextlib.suppress(c.exceptions.ProvisionedConcurrencyConfigNotFoundException):
            self._paced(c.delete_provisioned_concurrency_config, Qualifier=qualifier)

    def wait_provisioned(self, qualifier: str, timeout_s: float = 300.0,
                         progress: Callable[[dict[str, Any]], None] | None = None) -> str | None:
        """Poll until the config is READY (None), FAILED or ``timeout_s`` passed (why not);
        ``progress(cfg)`` sees each answer that differs from the one before."""
        from botocore.exceptions import BotoCoreError, ClientError

        deadline = _monotonic() + timeout_s
        last: tuple[Any, ...] = ()
        try:
            while _monotonic() < deadline:
                cfg = self.provisioned(qualifier)
                if cfg is None:
                    return f"{self.function}:{qualifier}: no provisioned concurrency config"
                seen = (cfg.get("Status"), cfg.get("AllocatedProvisionedConcurrentExecutions"))
                if progress is not None and seen != last:
                    progress(cfg)
                last = seen
                if cfg.get("Status") == "READY":
                    return None
                if cfg.get("Status") == "FAILED":
                    return f"{self.function}:{qualifier}: provisioned concurrency FAILED ({cfg.get('StatusReason') or 'no reason given'})"
        except (BotoCoreError, ClientError) as exc:
            return f"{self.function}:{qualifier}: {exc}"
        return (f"{self.function}:{qualifier}: provisioned concurrency not READY within {timeout_s:g} s "
                f"({last[1] if last else 0} allocated)")
