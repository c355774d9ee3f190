"""What every command module of the CLI shares: the two consoles, the broker options, JSON output."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console

from orchestrator.errors import InputError
from orchestrator.report import terminal
from orchestrator.run.result import RunResult
from workers import keys
from workers.auth import broker_from

BROKER_ENV = keys.BROKER_ENV
BROKER_HELP = ("redis://… broker: run the shards on `fnbench worker`s, one queue per region; a password here "
               f"shows in `ps`: prefer {BROKER_ENV} or --broker-file")
BROKER_FILE_ENV = "FNBENCH_BROKER_FILE"
BrokerFileOpt = Annotated[Path | None, typer.Option(
    "--broker-file", envvar=BROKER_FILE_ENV,
    help="read the redis://… URL (with its password) from this file, so it is not visible in `ps`; never printed")]
BrokerOpt = Annotated[str | None, typer.Option(envvar=BROKER_ENV, help="redis://… broker and store")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]

# Pipes and CI get a wide console so result tables are not folded to 80 columns.
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
out = Console(width=None if sys.stdout.isatty() else 160)


def broker_url(broker: str | None, broker_file: Path | None, required: bool = False) -> str | None:
    """The broker URL from the option, its environment variable or a file; checked, never printed."""
    url = broker_from(broker, broker_file)
    if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
        scheme = url.split("://", 1)[0] if "://" in url else "(none)"
        raise InputError(f"--broker: the URL scheme must be redis://, rediss:// (TLS) or unix://, got {scheme}")
    if required and not url:
        raise InputError(f"give --broker redis://HOST:PORT/DB (or set {BROKER_ENV}, or put the URL in a file "
                         f"named by --broker-file/{BROKER_FILE_ENV})")
    return url


def require_broker(broker: str | None, broker_file: Path | None) -> str:
    url = broker_url(broker, broker_file, required=True)
    assert url is not None
    return url


def dump(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def show(result: RunResult, json_out: bool) -> None:
    if json_out:
        sys.stdout.write(result.to_json().decode() + "\n")
    else:
        terminal.render(result, out)


def warn(message: str) -> None:
    err.print(f"[yellow]{message}[/]", highlight=False)


def say(line: str) -> None:
    err.print(line, highlight=False)
