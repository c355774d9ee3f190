"""Operator limits of a worker: which hosts it may load, and how hard.  Pure functions of the
shard and this process's environment; a shard outside them is refused, never run.

``FNBENCH_ALLOWED_TARGETS``  comma-separated entries, any of
    host            ``localhost``, ``api.example.com``, an IP ``10.0.0.5`` or ``::1``
    host:port       ``api.example.com:8443``, ``[::1]:8080``
    network         ``127.0.0.0/8``, ``fd00::/8`` (IP literals in the URL only; names are not resolved)
    glob            ``*.example.com``, ``10.1.*``, ``*:8080``, or a URL pattern ``https://api.example.com/v1/*``
  default: loopback only (``127.0.0.0/8,::1,localhost``).  ``*`` allows every host.
``FNBENCH_MAX_RPS``          peak request rate one worker process may be asked for (default 100000): one shard
                            on a Celery worker; the sum of the shards that run together in a local process
                            (orchestrator.run.dispatch.local), and per shard at validate time
``FNBENCH_MAX_IN_FLIGHT``    largest ``max_in_flight`` a shard may ask for (default 100000)

Which host a target loads is its platform's knowledge: each platform declares its
``refusals`` (workers.platforms.Platform), built on ``host_refusals`` here; the local platform
has no target host (the worker starts its own function processes on loopback), so only the
rate limits apply to it.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit

from workers import platforms
from workers.contract import Shard, Target
from workers.errors import SetupError

ALLOWED_ENV = "FNBENCH_ALLOWED_TARGETS"
MAX_RPS_ENV = "FNBENCH_MAX_RPS"
MAX_IN_FLIGHT_ENV = "FNBENCH_MAX_IN_FLIGHT"
DEFAULT_ALLOWED = ("127.0.0.0/8", "::1", "localhost")
DEFAULT_MAX_RPS = 100_000.0
DEFAULT_MAX_IN_FLIGHT = 100_000


def allowed_entries() -> list[str]:
    raw = os.environ.get(ALLOWED_ENV)
    if raw is None or not raw.strip():
        return list(DEFAULT_ALLOWED)
    return [e.strip() for e in raw.split(",") if e.strip()]


def _number(env: str, default: float) -> float:
    raw = os.environ.get(env, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SetupError(f"{env}={raw!r}: expected a number") from None
    if not value > 0:
        raise SetupError(f"{env}={raw!r}: must be > 0")
    return value


def max_rps() -> float:
    return _number(MAX_RPS_ENV, DEFAULT_MAX_RPS)


def max_in_flight() -> int:
    return int(_number(MAX_IN_FLIGHT_ENV, DEFAULT_MAX_IN_FLIGHT))


def check_config() -> list[str]:
    """The limits this process runs with, one line each; SetupError on a bad setting (at worker start)."""
    return [f"allowed targets: {', '.join(allowed_entries())} ({ALLOWED_ENV})",
            f"max rps per process: {max_rps():g} ({MAX_RPS_ENV})",
            f"max in flight per shard: {max_in_flight()} ({MAX_IN_FLIGHT_ENV})"]


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _entry_matches(entry: str, host: str, port: int, url: str) -> bool:
    e = entry.strip().lower()
    if "://" in e:
        return fnmatchcase(url, e)
    if "/" in e:
        try:
            net = ipaddress.ip_network(e, strict=False)
        except ValueError:
            return False
        ip = _ip(host)
        return ip is not None and ip.version == net.version and ip in net
    host_pat, port_pat = e, ""
    if e.startswith("["):
        close = e.find("]")
        host_pat, rest = e[1:close], e[close + 1:]
        port_pat = rest[1:] if rest.startswith(":") else ""
    elif e.count(":") == 1:
        host_pat, port_pat = e.split(":")
    if port_pat and not fnmatchcase(str(port), port_pat):
        return False
    want, got = _ip(host_pat), _ip(host)
    if want is not None:
        return got is not None and want == got
    return fnmatchcase(host, host_pat)


def host_allowed(url: str, entries: Iterable[str] | None = None) -> tuple[bool, str]:
    """(allowed, host shown in messages) for an http(s) URL; a URL that does not parse is not allowed."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return False, url[:80]
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        return False, url[:80]
    port = port or (443 if parts.scheme == "https" else 80)
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    # Normalized: no user info (it cannot smuggle another host past a URL pattern).
    normalized = f"{parts.scheme}://{netloc}{parts.path or '/'}" + (f"?{parts.query}" if parts.query else "")
    shown = f"{netloc}" if parts.port is not None else f"{netloc} (port {port})"
    entries = list(allowed_entries() if entries is None else entries)
    return any(_entry_matches(e, host, port, normalized) for e in entries), shown


def _not_allowed(shown: str, entries: list[str]) -> str:
    return (f"host {shown} is not in {ALLOWED_ENV} ({','.join(entries)}); to allow it, set on every worker "
            f"(and where you validate/run the spec) {ALLOWED_ENV}={','.join(entries)},{shown.split(' ')[0]} "
            "— comma-separated hosts, host:port, CIDR networks or glob patterns")


def host_refusals(url: str) -> list[str]:
    """Why this worker may not load ``url`` (empty: FNBENCH_ALLOWED_TARGETS allows its host)."""
    entries = allowed_entries()
    ok, shown = host_allowed(url, entries)
    return [] if ok else [_not_allowed(shown, entries)]


def platform_refusals(target: Target) -> list[str]:
    """Why a target may not be loaded from this worker (empty: allowed): its platform's refusals."""
    try:
        platform = platforms.get(target.platform)
        if platform is None:
            return [f"platform {target.platform!r} is not one this worker runs"]
        return [message for _, message in platform.refusals(target)]
    except SetupError as exc:  # what only this worker's environment can tell (an unset ${env:NAME})
        return [str(exc)]


def target_refusals(url: str, platform: str, address: dict[str, Any] | None = None) -> list[str]:
    """``platform_refusals`` of a target given by its parts."""
    return platform_refusals(Target(name="", runtime="other", platform=platform, url=url, address=dict(address or {})))


def env_refusals(target: Target) -> list[str]:
    """Every ``${env:NAME}`` in the target's URL, headers or body that this worker will not resolve
    (FNBENCH_ALLOWED_ENV; never fnbench's own or AWS's variables): refused before anything runs."""
    patterns = platforms.allowed_env_patterns()
    fields = [("url", target.url), *((f"headers.{k}", v) for k, v in target.headers), ("body", target.body or "")]
    return [f"{field}: {why}" for field, value in fields for name in dict.fromkeys(platforms.env_references(value))
            if (why := platforms.env_refusal(name, patterns)) is not None]


def peak_rps(shard: Shard) -> float:
    """The peak rate a shard asks for; ValueError when its arrival does not decode."""
    from workers import arrivals

    try:
        return float(arrivals.from_dict(shard.arrival).peak_rps())
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise ValueError(str(exc)) from None


def refusals(shard: Shard) -> list[str]:
    """Every reason this worker will not run ``shard`` (empty: it runs)."""
    out = env_refusals(shard.target) + platform_refusals(shard.target)
    try:
        peak = peak_rps(shard)
    except ValueError as exc:
        out.append(f"arrival: {exc}")
        peak = 0.0
    cap = max_rps()
    if peak > cap:
        out.append(f"peak rate {peak:g}/s is over this worker's cap of {cap:g}/s per process ({MAX_RPS_ENV}); "
                   "raise it on the worker, or lower sharding.max_rps_per_shard so the plan uses more shards")
    cap_mif = max_in_flight()
    if shard.max_in_flight > cap_mif:
        out.append(f"max_in_flight {shard.max_in_flight} is over this worker's cap of {cap_mif} ({MAX_IN_FLIGHT_ENV})")
    return out


def spec_problems(targets: Iterable[Any]) -> list[str]:
    """The allow-list applied to a spec's targets (objects with ``name``, ``runtime``, ``platform``,
    ``url`` and their platform's fields), each problem with its YAML path; what only a worker can
    tell (URLs with ``${env:…}`` this machine cannot resolve) is left to the worker."""
    problems: list[str] = []
    for i, t in enumerate(targets):
        platform = platforms.get(t.platform)
        if platform is None:
            continue  # the spec's own validation names it
        target = Target(name=t.name, runtime=t.runtime, platform=t.platform, url=t.url, address=platform.address(t))
        try:
            problems += [f"targets[{i}].{field}: {m}" for field, m in platform.refusals(target)]
        except SetupError:
            continue  # resolved on the worker, checked there
    return problems
