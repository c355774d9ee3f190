"""Operator limits of a worker: which hosts it may load, and how hard.  Pure functions of the
shard and this process's environment; a shard outside them is refused, never run.

``FNBENCH_ALLOWED_TARGETS``  comma-separated entries, any of
    host            ``localhost``, ``api.example.com``, an IP ``10.0.0.5`` or ``::1``
    host:port       ``api.example.com:8443``, ``[::1]:8080``
    network         ``127.0.0.0/8``, ``fd00::/8`` (IP literals in the URL only; names are not resolved)
    glob            ``*.example.com``, ``10.1.*``, ``*:8080``, or a URL pattern ``https://api.example.com/v1/*``
  default: loopback only (``127.0.0.0/8,::1,localhost``).  ``*`` allows every host.
``FNBENCH_MAX_RPS``          peak request rate one worker process (one shard) may be asked for (default 100000)
``FNBENCH_MAX_IN_FLIGHT``    largest ``max_in_flight`` a shard may ask for (default 100000)

The local platform has no target host (the worker starts its own function processes on
loopback), so only the rate limits apply to it.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit

from workers.contract import Shard
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


def target_refusals(url: str, platform: str, address: dict[str, Any] | None = None) -> list[str]:
    """Why a target may not be loaded from this worker (empty: allowed)."""
    entries = allowed_entries()
    if platform == "local":
        return []  # the worker starts its own function processes on 127.0.0.1
    if platform == "http":
        from workers.platforms import resolve_env

        try:
            url = resolve_env(url, "url")
        except SetupError as exc:
            return [str(exc)]
        ok, shown = host_allowed(url, entries)
        return [] if ok else [_not_allowed(shown, entries)]
    if platform == "aws-lambda":
        address = address or {}
        endpoint = str(address.get("endpoint_url") or f"https://lambda.{address.get('region') or 'us-east-1'}.amazonaws.com/")
        ok, shown = host_allowed(endpoint, entries)
        return [] if ok else [_not_allowed(shown, entries)]
    return [f"platform {platform!r} is not one this worker runs"]


def refusals(shard: Shard) -> list[str]:
    """Every reason this worker will not run ``shard`` (empty: it runs)."""
    from workers import arrivals

    t = shard.target
    out = target_refusals(t.url, t.platform, t.address)
    try:
        peak = float(arrivals.from_dict(shard.arrival).peak_rps())
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
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
    """The allow-list applied to a spec's targets (objects with ``platform``, ``url``, ``function``),
    each problem with its YAML path; URLs with ``${env:…}`` this machine cannot resolve are left to the worker."""
    problems: list[str] = []
    for i, t in enumerate(targets):
        if t.platform == "aws-lambda":
            address = {"region": getattr(t, "region", ""), "endpoint_url": getattr(t, "endpoint_url", "")}
            field = "endpoint_url" if address["endpoint_url"] else "region"
            problems += [f"targets[{i}].{field}: {m}" for m in target_refusals("", "aws-lambda", address)]
            continue
        if t.platform != "http":
            continue
        from workers.platforms import resolve_env

        try:
            url = resolve_env(t.url, "url")
        except SetupError:
            continue  # resolved on the worker, checked there
        problems += [f"targets[{i}].url: {m}" for m in target_refusals(url, "http")]
    return problems
