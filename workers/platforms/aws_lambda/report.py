"""Lambda's REPORT record, read by field name from either log format; never guessed.

Text format (one line, tab-separated ``Name: value unit`` fields after the request id)::

    REPORT RequestId: <id>\tDuration: 469.40 ms\tBilled Duration: 500 ms\tMemory Size: 1024 MB\t
    Max Memory Used: 21 MB\tInit Duration: 100.99 ms

with optional ``Init Duration`` (a cold start), ``Restore Duration`` / ``Billed Restore
Duration`` (SnapStart), ``Status`` / ``Error Type`` (an instance that failed or timed out) and, with
active tracing, ``XRAY TraceId: … SegmentId: … Sampled: …`` (ignored).  Fields are found by name
after any whitespace, not only a tab: lines copied out of the console or a web page carry spaces
(tests/fixtures/lambda_reports.jsonl holds 26 real records, with their sources).

What AWS bills is the line's Billed Duration, nothing added: on a SnapStart line it already
includes Billed Restore Duration (Billed = ceil(Duration + Billed Restore Duration) on every real
SnapStart line in the fixtures), and since 1 Aug 2025 it includes Init Duration for managed runtimes
too (ceil(Duration + Init Duration) on the real lines after that date; before it, ceil(Duration)).
JSON format: ``{"type": "platform.report", "record": {"requestId", "status", "metrics":
{"durationMs", "billedDurationMs", "memorySizeMB", "maxMemoryUsedMB", "initDurationMs"?,
"restoreDurationMs"?, "billedRestoreDurationMs"?}}}``.

``find_report(log)`` reads the last REPORT in a log tail (LogType: Tail, the last 4 KB):
a ``Report``, ``MISSING`` (no REPORT at all) or ``TRUNCATED`` (a REPORT cut by the 4 KB
window or lacking a required field).  Both are counted by the invoker, never filled in.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any, Final

import orjson

REQUIRED = ("duration_ms", "billed_ms", "memory_mb", "max_memory_mb")
# Text field name → Report attribute.
_TEXT_FIELDS: Final = {
    "Duration": "duration_ms",
    "Billed Duration": "billed_ms",
    "Memory Size": "memory_mb",
    "Max Memory Used": "max_memory_mb",
    "Init Duration": "init_ms",
    "Restore Duration": "restore_ms",
    "Billed Restore Duration": "billed_restore_ms",
}
_JSON_FIELDS: Final = {
    "durationMs": "duration_ms",
    "billedDurationMs": "billed_ms",
    "memorySizeMB": "memory_mb",
    "maxMemoryUsedMB": "max_memory_mb",
    "initDurationMs": "init_ms",
    "restoreDurationMs": "restore_ms",
    "billedRestoreDurationMs": "billed_restore_ms",
}


@dataclass(frozen=True, slots=True)
class Report:
    request_id: str
    duration_ms: float
    billed_ms: float
    memory_mb: float
    max_memory_mb: float
    init_ms: float | None = None  # present on an instance's first invocation (cold start)
    restore_ms: float | None = None  # SnapStart
    billed_restore_ms: float | None = None
    status: str = "success"  # success | error | timeout (the text form's Status field, when present)
    error_type: str = ""

    @property
    def cold(self) -> bool:
        return self.init_ms is not None or self.restore_ms is not None

    @property
    def billed_total_ms(self) -> float:
        """What AWS bills for compute: the Billed Duration, which on a SnapStart line already
        includes the Billed Restore Duration (and Init Duration where Init is billed)."""
        return self.billed_ms

    def slow_fields(self) -> dict[str, float]:
        """The numbers a slow request carries (workers.contract.SLOW_REPORT_FIELDS); billed_ms is the total."""
        out = {"duration_ms": self.duration_ms, "billed_ms": self.billed_total_ms, "memory_mb": self.memory_mb,
               "max_memory_mb": self.max_memory_mb}
        if self.init_ms is not None:
            out["init_ms"] = self.init_ms
        if self.restore_ms is not None:
            out["restore_ms"] = self.restore_ms
        return out


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


MISSING: Final = _Marker("MISSING")
TRUNCATED: Final = _Marker("TRUNCATED")
Found = Report | _Marker


# A field name where a field starts (after the head or whitespace); the longer names first so that
# "Billed Duration" is never read as "Duration".  XRAY's fields end the numbers that precede them.
_LABEL = re.compile(r"(?:(?<=\s)|^)(Billed Restore Duration|Restore Duration|Billed Duration|Init Duration|"
                    r"Max Memory Used|Memory Size|Duration|Status|Error Type|XRAY TraceId|SegmentId|Sampled): ")
_NUMBER = re.compile(r"([0-9]+(?:\.[0-9]+)?) (ms|MB)\s*$")


def parse_text(line: str) -> Found:
    """One text-format REPORT line (from ``REPORT RequestId:``)."""
    line = line.rstrip("\r\n")
    if not line.startswith("REPORT RequestId: "):
        return TRUNCATED
    labels = list(_LABEL.finditer(line))
    head_end = labels[0].start() if labels else len(line)
    values: dict[str, Any] = {"request_id": line[len("REPORT RequestId: "):head_end].strip()}
    for i, m in enumerate(labels):
        name = m.group(1)
        rest = line[m.end():labels[i + 1].start() if i + 1 < len(labels) else len(line)].strip()
        attr = _TEXT_FIELDS.get(name)
        if attr is not None:
            number = _NUMBER.match(rest)
            if number is None:  # cut inside the value
                return TRUNCATED
            values[attr] = float(number.group(1))
        elif name == "Status":
            values["status"] = rest
        elif name == "Error Type":
            values["error_type"] = rest
    if any(k not in values for k in REQUIRED):
        return TRUNCATED
    return Report(**values)


def parse_json(record: dict[str, Any]) -> Found:
    """One JSON-format log record of type platform.report."""
    body = record.get("record")
    if not isinstance(body, dict) or not isinstance(body.get("metrics"), dict):
        return TRUNCATED
    values: dict[str, Any] = {"request_id": str(body.get("requestId", ""))}
    for key, value in body["metrics"].items():
        attr = _JSON_FIELDS.get(key)
        if attr is not None and isinstance(value, int | float) and not isinstance(value, bool):
            values[attr] = float(value)
    if isinstance(body.get("status"), str):
        values["status"] = body["status"]
    if isinstance(body.get("errorType"), str):
        values["error_type"] = body["errorType"]
    if any(k not in values for k in REQUIRED):
        return TRUNCATED
    return Report(**values)


def find_report(log: str) -> Found:
    """The last REPORT record in a log (text or JSON lines), MISSING or TRUNCATED."""
    at = log.rfind("REPORT RequestId: ")
    jat = log.rfind('"platform.report"')
    if at < 0 and jat < 0:
        # A tail that starts inside a REPORT line still shows its later fields.
        return TRUNCATED if ("Billed Duration: " in log or "billedDurationMs" in log) else MISSING
    if at > jat:
        end = log.find("\n", at)
        return parse_text(log[at:] if end < 0 else log[at:end])
    start = log.rfind("\n", 0, jat) + 1
    end = log.find("\n", jat)
    try:
        record = orjson.loads(log[start:] if end < 0 else log[start:end])
    except orjson.JSONDecodeError:
        return TRUNCATED
    return parse_json(record) if isinstance(record, dict) and record.get("type") == "platform.report" else TRUNCATED


def from_log_result(header: bytes | str) -> Found:
    """``X-Amz-Log-Result`` (base64 of the log tail) → the REPORT in it."""
    try:
        text = base64.b64decode(header, validate=False).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return TRUNCATED
    return find_report(text)
