"""The seven workloads of functions/CONTRACT.md (standard library only).

Shared by server.py (HTTP) and handler.py (AWS Lambda). Every workload returns
the contract's `result` or raises BadRequest; nothing here may crash the process
on user input.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
import time
from typing import Any

RUNTIME = "python"
MAX_SAFE_INT = 2**53
MAX_BODY_BYTES = 8 * 1024 * 1024


class BadRequest(Exception):
    """Bad params or unknown workload: HTTP 400 / Lambda FunctionError."""


# ------------------------------------------------------------------ process facts

INSTANCE = os.urandom(8).hex()
_COLD = [True]


def take_cold() -> bool:
    """True exactly once per process: on the first invocation."""
    cold = _COLD[0]
    _COLD[0] = False
    return cold


def proc_age_lower_bound_ms() -> float:
    """Lower bound of the time since this process was created, from /proc.

    /proc/self/stat `starttime` is in clock ticks (usually 10 ms) since boot;
    rounding it *up* to the next tick makes the age a lower bound. Returns 0.0
    where /proc is unavailable.
    """
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            stat = f.read()
        fields = stat[stat.rfind(")") + 2 :].split()
        start_ticks = int(fields[19])  # field 22 of proc(5); fields[0] is field 3
        hz = os.sysconf("SC_CLK_TCK")
        now = time.clock_gettime(time.CLOCK_BOOTTIME)
        return max(0.0, (now - (start_ticks + 1) / hz) * 1000.0)
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


def init_ms_since(t0_perf: float) -> float:
    """init_ms: the larger of two lower bounds of process start -> ready."""
    in_process = (time.perf_counter() - t0_perf) * 1000.0
    return max(in_process, proc_age_lower_bound_ms())


def envelope(workload: str, cold: bool, init_ms: float, handler_ms: float, result: Any) -> dict:
    return {
        "runtime": RUNTIME,
        "workload": workload,
        "cold": cold,
        "instance": INSTANCE,
        "init_ms": init_ms,
        "handler_ms": handler_ms,
        "result": result,
    }


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def parse_json(body: bytes) -> Any:
    """Strict JSON (NaN/Infinity literals rejected); empty body means {}."""
    if not body.strip():
        return {}
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise BadRequest(f"body is not valid JSON: {e}") from None


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode()


# ------------------------------------------------------------------ param helpers


def _as_int(v: Any) -> int | None:
    """CONTRACT "integer": a number (not bool) with integral value, |v| <= 2^53."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v if abs(v) <= MAX_SAFE_INT else None
    if isinstance(v, float) and math.isfinite(v) and v.is_integer() and abs(v) <= MAX_SAFE_INT:
        return int(v)
    return None


def _as_num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _get(p: dict, key: str) -> Any:
    if key not in p:
        raise BadRequest(f"missing param {key!r}")
    return p[key]


def _int_param(p: dict, key: str, lo: int, hi: int) -> int:
    i = _as_int(_get(p, key))
    if i is None:
        raise BadRequest(f"param {key!r} must be an integer")
    if not lo <= i <= hi:
        raise BadRequest(f"param {key!r} must be in [{lo}, {hi}]")
    return i


def _str_param(p: dict, key: str) -> str:
    v = _get(p, key)
    if not isinstance(v, str):
        raise BadRequest(f"param {key!r} must be a string")
    return v


# ------------------------------------------------------------------ workloads

_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def echo(p: dict) -> Any:
    return _get(p, "payload")


def transform(p: dict) -> Any:
    records = _get(p, "records")
    if not isinstance(records, list):
        raise BadRequest("param 'records' must be an array")
    min_total = _as_num(_get(p, "min_total"))
    if min_total is None:
        raise BadRequest("param 'min_total' must be a number")
    out: list[tuple[int, str, float]] = []
    for idx, r in enumerate(records):
        if not isinstance(r, dict):
            raise BadRequest(f"records[{idx}] must be an object")
        rid = _as_int(r.get("id"))
        if rid is None:
            raise BadRequest(f"records[{idx}].id must be an integer")
        name = r.get("name")
        if not isinstance(name, str):
            raise BadRequest(f"records[{idx}].name must be a string")
        price = _as_num(r.get("price"))
        if price is None or price < 0:
            raise BadRequest(f"records[{idx}].price must be a number >= 0")
        qty = _as_int(r.get("qty"))
        if qty is None or qty < 0:
            raise BadRequest(f"records[{idx}].qty must be an integer >= 0")
        tags = r.get("tags")
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise BadRequest(f"records[{idx}].tags must be an array of strings")
        total = price * float(qty)
        if not math.isfinite(total):
            raise BadRequest(f"records[{idx}].price*qty is not finite")
        if total >= min_total:
            out.append((rid, name.translate(_ASCII_UPPER), total))
    out.sort(key=lambda t: (-t[2], t[0]))  # total desc, id asc; stable
    recs = [{"id": i, "name_upper": n, "total": t} for i, n, t in out]
    return {"count": len(recs), "records": recs}


def hash_(p: dict) -> Any:
    data = _str_param(p, "data")
    rounds = _int_param(p, "rounds", 1, 1_000_000)
    try:
        raw = data.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("param 'data' is not valid Unicode") from None
    sha = hashlib.sha256
    h = sha(raw).digest()
    for _ in range(rounds - 1):
        h = sha(h).digest()
    return h.hex()


def matmul(p: dict) -> Any:
    n = _int_param(p, "n", 1, 512)
    a = [[((i * n + j) % 13) / 13.0 for j in range(n)] for i in range(n)]
    # B stored by column (bt[j][k] == B[k][j]); values and summation order unchanged.
    bt = [[((k + 2 * j) % 7) / 7.0 for k in range(n)] for j in range(n)]
    c = []
    for i in range(n):
        ai = a[i]
        row = []
        for j in range(n):
            s = 0.0
            # explicit left-to-right loop: sum() would be compensated on 3.12+
            for x, y in zip(ai, bt[j], strict=False):
                s += x * y
            row.append(s)
        c.append(row)
    trace = 0.0
    for i in range(n):
        trace += c[i][i]
    total = 0.0
    for row in c:
        for v in row:
            total += v
    return {"n": n, "trace": trace, "sum": total}


def alloc(p: dict) -> Any:
    mb = _int_param(p, "mb", 1, 1024)
    b = _int_param(p, "object_bytes", 1, 16 * 1024 * 1024)
    count = mb * 1024 * 1024 // b
    if count > 16 * 1024 * 1024:
        raise BadRequest("too many objects (mb*2^20/object_bytes must be <= 2^24)")
    objs: list[bytearray] = []
    append = objs.append
    for i in range(count):
        o = bytearray(b)
        mark = i % 251
        for off in range(0, b, 4096):
            o[off] = mark
        append(o)
    checksum = 0
    for o in objs:
        checksum += o[0]
    del objs
    return {"objects": count, "bytes": count * b, "checksum": checksum}


def sleep_ms(p: dict) -> int:
    return _int_param(p, "ms", 0, 60_000)


def sleep_blocking(p: dict) -> Any:
    ms = sleep_ms(p)
    time.sleep(ms / 1000.0)
    return {"slept_ms": ms}


def validate(p: dict) -> Any:
    data_b64 = _str_param(p, "data_b64")
    max_bytes = _int_param(p, "max_bytes", 0, MAX_SAFE_INT)
    want = _str_param(p, "sha256")
    if len(want) != 64 or any(c not in "0123456789abcdefABCDEF" for c in want):
        raise BadRequest("param 'sha256' must be 64 hex digits")
    try:
        data = base64.b64decode(data_b64.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise BadRequest("param 'data_b64' is not canonical base64") from None
    if base64.b64encode(data).decode("ascii") != data_b64:
        raise BadRequest("param 'data_b64' is not canonical base64")
    size = len(data)
    if size > max_bytes:
        return {"valid": False, "size": size, "reason": "too_large"}
    if hashlib.sha256(data).hexdigest() != want.lower():
        return {"valid": False, "size": size, "reason": "checksum_mismatch"}
    return {"valid": True, "size": size, "reason": None}


# `stream` (CONTRACT.md §3): `chunks` chunks of `chunk_bytes` bytes, chunk i all the ASCII letter
# chr(97 + i % 26), `delay_ms` between chunks.  Python answers it buffered: it waits the delays and
# returns the stream's size and SHA-256 (a streaming runtime sends the bytes themselves).
MAX_STREAM_BYTES = 20 * 1024 * 1024
MAX_STREAM_DELAY_MS = 60_000


def stream_params(p: dict) -> tuple[int, int, int]:
    chunks = _int_param(p, "chunks", 1, 10_000)
    chunk_bytes = _int_param(p, "chunk_bytes", 1, 1024 * 1024)
    delay_ms = _int_param(p, "delay_ms", 0, 10_000)
    if chunks * chunk_bytes > MAX_STREAM_BYTES:
        raise BadRequest(f"chunks * chunk_bytes must be <= {MAX_STREAM_BYTES}")
    if (chunks - 1) * delay_ms > MAX_STREAM_DELAY_MS:
        raise BadRequest(f"(chunks - 1) * delay_ms must be <= {MAX_STREAM_DELAY_MS}")
    return chunks, chunk_bytes, delay_ms


def stream_chunk(i: int, chunk_bytes: int) -> bytes:
    return bytes((97 + i % 26,)) * chunk_bytes


def stream_buffered(p: dict) -> Any:
    chunks, chunk_bytes, delay_ms = stream_params(p)
    fail_after = _int_param(p, "fail_after", 0, 10_000) if "fail_after" in p else -1
    h = hashlib.sha256()
    for i in range(chunks):
        if i and delay_ms:
            time.sleep(delay_ms / 1000.0)
        if i == fail_after:
            raise BadRequest(f"stream failed after {i} chunks (fail_after)")
        h.update(stream_chunk(i, chunk_bytes))
    return {"chunks": chunks, "bytes": chunks * chunk_bytes, "sha256": h.hexdigest()}


SYNC_WORKLOADS = {
    "echo": echo,
    "transform": transform,
    "hash": hash_,
    "matmul": matmul,
    "alloc": alloc,
    "sleep": sleep_blocking,
    "validate": validate,
    "stream": stream_buffered,
}


def check_params(params: Any) -> dict:
    if not isinstance(params, dict):
        raise BadRequest("params must be a JSON object")
    return params


def run_sync(workload: str, params: Any) -> Any:
    fn = SYNC_WORKLOADS.get(workload)
    if fn is None:
        raise BadRequest(f"unknown workload: {workload!r}")
    return fn(check_params(params))
