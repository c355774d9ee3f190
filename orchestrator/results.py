"""The results folder of a run: spec.yaml, intervals.jsonl (appended as they arrive), result.json."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from orchestrator.errors import InputError
from workers.contract import Interval, SchemaError


def new_run_id(name: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:40]
    return f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


class RunFolder:
    def __init__(self, root: Path, run_id: str) -> None:
        self.path = root / run_id
        self.path.mkdir(parents=True, exist_ok=True)
        self._intervals: BinaryIO | None = None

    def write_spec(self, text: str) -> None:
        (self.path / "spec.yaml").write_text(text)

    def append(self, iv: Interval) -> None:
        # Flushed per record: a crash of the orchestrator loses nothing already measured.
        if self._intervals is None:
            self._intervals = open(self.path / "intervals.jsonl", "ab")  # noqa: SIM115 - kept open for the run
        self._intervals.write(iv.to_json() + b"\n")
        self._intervals.flush()

    def write_result(self, result: dict[str, Any]) -> Path:
        out = self.path / "result.json"
        tmp = out.with_suffix(".json.tmp")
        tmp.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        os.replace(tmp, out)
        return out

    def close(self) -> None:
        if self._intervals is not None:
            self._intervals.close()
            self._intervals = None


def read_intervals(path: Path) -> list[Interval]:
    """Read intervals.jsonl; a torn last line (crash mid-write) is skipped, any other bad line is an error."""
    lines = path.read_bytes().splitlines()
    out: list[Interval] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(Interval.from_json(line))
        except (orjson.JSONDecodeError, SchemaError, TypeError) as exc:
            if n == len(lines):
                break
            raise InputError(f"{path}:{n}: not an interval record: {exc}") from exc
    return out
