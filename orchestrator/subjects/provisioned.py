"""Provisioned concurrency and aliases around a run (issue 22 part 2).

Before the run, for every aws-lambda target with ``provisioned_concurrency: N`` (on its ``qualifier``, a
published version or an alias): the config that was there is read (GetProvisionedConcurrencyConfig),
N is put (PutProvisionedConcurrencyConfig) and the run waits until it is READY — every provisioned
instance initialised — printing its progress, at most ``READY_TIMEOUT_S``.  For a target with forced
cold starts or a memory sweep on an alias, the alias's version is read too (each forcing or step moves it).

After the run — finished, failed, aborted or interrupted — what was there is put back: the alias on
its version, then the previous config (put again) or none (DeleteProvisionedConcurrencyConfig).  The
time N was configured is priced as AWS prices it (orchestrator/analysis/cost.py ``provisioned_charges``:
rounded up to five minutes) and said; ``Provisioning.summary()`` is what the run folder keeps
(``provisioned.json``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

from orchestrator.errors import SetupError

READY_TIMEOUT_S = 600.0
Say = Callable[[str], None]
Key = tuple[str, str, str, str]  # function, region, endpoint_url, qualifier


@dataclasses.dataclass
class _Slot:
    key: Key
    control: Any  # workers.platforms.aws_lambda.control.Versions
    requested: int = 0
    architecture: str = "x86_64"
    previous: dict[str, Any] | None = None  # the config that was there (None: none)
    alias_version: str = ""  # the alias's version before the run ("" : not recorded)
    memory_mb: int = 0
    put_at: float = 0.0
    removed_at: float = 0.0


@dataclasses.dataclass
class Provisioning:
    slots: list[_Slot] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> list[dict[str, Any]]:
        from orchestrator.analysis import cost

        out = []
        for s in self.slots:
            if not s.requested or not s.put_at:
                continue
            function, region, _, qualifier = s.key
            seconds = (s.removed_at or time.monotonic()) - s.put_at
            entry: dict[str, Any] = {"function": function, "qualifier": qualifier, "provisioned_concurrency": s.requested,
                                     "memory_mb": s.memory_mb, "configured_s": round(seconds, 3),
                                     "billed_s": cost.provisioned_seconds(seconds)}
            price = cost.price_for(region, s.architecture)
            if price is not None and price.provisioned_gb_s_usd and s.memory_mb:
                bill = cost.provisioned_charges(s.requested, s.memory_mb, seconds, 0, 0, price)
                entry.update(provisioned_gb_s=bill["provisioned_gb_s"], provisioned_usd=bill["provisioned_usd"],
                             provisioned_usd_per_hour=s.requested * s.memory_mb / 1024 * 3600 * price.provisioned_gb_s_usd)
            out.append(entry)
        return out


def _slots(b: Any) -> list[_Slot]:
    from workers.platforms.aws_lambda import control as lambda_control

    slots: dict[Key, _Slot] = {}
    cold = bool(b.cold_start.enabled) or any(t.memory_sizes for t in b.targets)  # both move an alias
    for t in b.targets:
        if t.platform != "aws-lambda":
            continue
        pc = getattr(t, "provisioned_concurrency", None) or 0
        alias = t.qualifier not in ("", "$LATEST") and not lambda_control.is_version(t.qualifier)
        if not pc and not (cold and alias):
            continue
        key = (t.function, t.region or "us-east-1", t.endpoint_url, t.qualifier)
        slot = slots.get(key)
        if slot is None:
            client = lambda_control.client(key[1], t.endpoint_url or None)
            slot = slots[key] = _Slot(key, lambda_control.Versions(client, t.function), architecture=t.architecture)
        slot.requested = max(slot.requested, pc)
        if cold and alias:
            slot.alias_version = "?"  # to be read
    return list(slots.values())


@contextlib.contextmanager
def around(b: Any, say: Say, ready_timeout_s: float = READY_TIMEOUT_S) -> Iterator[Provisioning]:
    """Set provisioned concurrency (waited for until READY) before the body, restore after it."""
    from botocore.exceptions import BotoCoreError, ClientError

    state = Provisioning(_slots(b))
    try:
        for s in state.slots:
            function, _, _, qualifier = s.key
            where = f"{function}:{qualifier}"
            try:
                if s.alias_version:
                    s.alias_version = s.control.alias_version(qualifier)
                if not s.requested:
                    continue
                s.previous = s.control.provisioned(qualifier)
                cfg = s.control.client.get_function_configuration(FunctionName=function, Qualifier=qualifier)
                s.memory_mb = int(cfg.get("MemorySize") or 0)
                was = f"was {s.previous['RequestedProvisionedConcurrentExecutions']}" if s.previous else "was none"
                say(f"provisioned concurrency {where}: putting {s.requested} ({was}; control plane, not load)")
                s.control.put_provisioned(qualifier, s.requested)
                s.put_at = time.monotonic()
            except (BotoCoreError, ClientError) as exc:
                raise SetupError(f"provisioned concurrency {where}: {exc}") from None
            began = time.monotonic()

            def progress(cfg: dict[str, Any], where: str = where, began: float = began) -> None:
                say(f"  {where}: {cfg.get('Status')}, {cfg.get('AllocatedProvisionedConcurrentExecutions', 0)}/"
                    f"{cfg.get('RequestedProvisionedConcurrentExecutions', '?')} allocated after {time.monotonic() - began:.1f} s")

            problem = s.control.wait_provisioned(qualifier, ready_timeout_s, progress)
            if problem is not None:
                raise SetupError(f"provisioned concurrency: {problem}; the run does not start")
        yield state
    finally:
        state.errors += restore(state, say)


def restore(state: Provisioning, say: Say) -> list[str]:
    """Put back what was there (each step tried even if one before it failed); the problems."""
    from botocore.exceptions import BotoCoreError, ClientError

    problems = []
    for s in state.slots:
        function, _, _, qualifier = s.key
        where = f"{function}:{qualifier}"
        try:
            if s.alias_version and s.alias_version != "?" and s.control.alias_version(qualifier) != s.alias_version:
                problem = s.control.move_alias(qualifier, s.alias_version)
                if problem is not None:
                    problems.append(problem)
                else:
                    say(f"alias {where}: back on version {s.alias_version}")
            if not s.put_at:
                continue
            if s.previous is None:
                s.control.delete_provisioned(qualifier)
                say(f"provisioned concurrency {where}: removed (there was none before the run)")
            else:
                n = int(s.previous["RequestedProvisionedConcurrentExecutions"])
                s.control.put_provisioned(qualifier, n)
                say(f"provisioned concurrency {where}: put back to {n}")
            s.removed_at = time.monotonic()
        except (BotoCoreError, ClientError) as exc:
            problems.append(f"provisioned concurrency {where}: not restored: {exc}")
    for p in problems:
        say(f"error: {p}")
    return problems
