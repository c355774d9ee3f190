"""The results folder of a run: spec.yaml, intervals.jsonl (appended as they arrive), result.json."""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from orchestrator.errors import InputError
from orchestrator.run.result import BadRecords, RunResult
from workers import histograms
from workers.contract import Interval, SchemaError


class RunFolder:
    """Where a run's records go.  A write that fails (a full disk) never stops the run: the
    interval is still in the collector, the failure is listed in ``errors`` and the run is
    marked incomplete."""

    def __init__(self, root: Path, run_id: str) -> None:
        self.run_id = run_id
        self.path = root / run_id
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise InputError(f"--results {root}: not a directory (a file is in the way)") from None
        except OSError as exc:
            raise InputError(f"--results {root}: cannot create {self.path}: {exc.strerror}") from None
        self._intervals: BinaryIO | None = None
        self.errors: list[str] = []
        self.unwritten = 0

    @classmethod
    def create(cls, root: Path, run_id: str, spec_text: str | None, fresh: bool = False) -> RunFolder:
        folder = cls(root, run_id)
        if fresh:
            (folder.path / "intervals.jsonl").unlink(missing_ok=True)
        if spec_text:
            try:
                (folder.path / "spec.yaml").write_text(spec_text)
            except OSError as exc:
                raise InputError(f"--results {root}: cannot write {folder.path}/spec.yaml: {exc.strerror}") from None
        return folder

    def write_spec(self, text: str) -> None:
        (self.path / "spec.yaml").write_text(text)

    def add(self, iv: Interval) -> None:
        """IntervalSink: one line of intervals.jsonl."""
        # Flushed per record: a crash of the orchestrator loses nothing already measured.
        try:
            if self._intervals is None:
                self._intervals = open(self.path / "intervals.jsonl", "ab")  # noqa: SIM115 - kept open for the run
            self._intervals.write(iv.to_json() + b"\n")
            self._intervals.flush()
        except OSError as exc:
            self.unwritten += 1
            if not self.errors:
                self.errors.append(f"{self.path}/intervals.jsonl: {exc.strerror or exc}; intervals from then on "
                                   "are in the result only")

    def write_result(self, result: RunResult) -> Path:
        out = self.path / "result.json"
        tmp = out.with_suffix(".json.tmp")
        try:
            tmp.write_bytes(result.to_json())
            os.replace(tmp, out)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        return out

    def save(self, result: RunResult, say: Callable[[str], None]) -> Path:
        """Write result.json; on a full or broken disk write it elsewhere and say where (never lose it).
        Returns the folder that holds it."""
        try:
            self.write_result(result)
            return self.path
        except OSError as exc:
            reason = exc.strerror or str(exc)
            marked = dataclasses.replace(result, incomplete=True,
                                         errors=(*result.errors, f"{self.path}/result.json: {reason}"))
            fallback = Path(tempfile.gettempdir()) / f"fnbench-{self.run_id}"
            try:
                fallback.mkdir(parents=True, exist_ok=True)
                (fallback / "result.json").write_bytes(marked.to_json())
            except OSError:
                say(f"cannot write {self.path}/result.json ({reason}) nor {fallback}; the result follows on stdout")
                sys.stdout.write(marked.to_json().decode() + "\n")
                return self.path
            say(f"cannot write {self.path}/result.json ({reason}); the result went to {fallback}/result.json")
            return fallback

    def close(self) -> None:
        if self._intervals is not None:
            try:
                self._intervals.close()
            except OSError as exc:
                if not self.errors:
                    self.errors.append(f"{self.path}/intervals.jsonl: {exc.strerror or exc}")
            self._intervals = None


def read_intervals(path: Path, bad: BadRecords | None = None) -> list[Interval]:
    """Read intervals.jsonl, each record checked (histograms.read_interval); a torn last line (crash
    mid-write) is skipped.  Any other bad line is counted in ``bad`` and left out, or, without ``bad``,
    an InputError naming the line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    lines = raw.splitlines()
    out: list[Interval] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(histograms.read_interval(line))
        except SchemaError as exc:
            if n == len(lines) and not raw.endswith(b"\n"):
                break  # cut short by a crash mid-write
            if bad is None:
                raise InputError(f"{path}:{n}: not an interval record: {exc}") from None
            bad.add(f"{path.name}:{n}: {exc}")
    return out
