#!/usr/bin/env python3
"""Regenerate functions/vectors/<workload>.json from the case list below.

Expected results come from the Python reference (functions/python/workloads.py);
the conformance test then proves every other runtime returns the identical
result. Hand-checkable anchors (sha256("abc"), sha256(""), etc.) are asserted
here so the reference itself cannot drift silently.

    python3 functions/vectors/generate.py
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))

import workloads as ref  # noqa: E402

HELLO_B64 = base64.b64encode(b"hello").decode()
HELLO_SHA = hashlib.sha256(b"hello").hexdigest()
BLOB = bytes(range(256)) * 3
BLOB_B64 = base64.b64encode(BLOB).decode()
BLOB_SHA = hashlib.sha256(BLOB).hexdigest()
EMPTY_SHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

RECORDS = [
    {"id": 3, "name": "widget", "price": 2.5, "qty": 4, "tags": ["a", "b"]},
    {"id": 1, "name": "Gadget-x", "price": 10, "qty": 1, "tags": []},
    {"id": 2, "name": "bolt", "price": 0.1, "qty": 3, "tags": ["hw"]},
    {"id": 7.0, "name": "nut", "price": 5, "qty": 2, "tags": ["hw"], "extra": {"ignored": True}},
    {"id": 5, "name": "zoë straße", "price": 1.25, "qty": 8, "tags": ["ü"]},
    {"id": 4, "name": "cog", "price": 0.0, "qty": 100, "tags": []},
    {"id": 6, "name": "gear", "price": 1e-3, "qty": 7, "tags": ["x", "y", "z"]},
]

OK = "ok"
BAD = "bad"

# (workload, name, kind, params-or-raw-body)
CASES: dict[str, list[tuple[str, str, object]]] = {
    "echo": [
        (
            "object",
            OK,
            {"payload": {"a": [1, 2.5, "x", None, True, False], "b": {"c": "ünïcødé ✓"}}},
        ),
        ("numbers", OK, {"payload": [0, -1, 0.1, -2.5e-3, 1e21, 12345678901234, 1.5e-300]}),
        ("string", OK, {"payload": 'line\nbreak "quoted" \\ tab\t <html> &amp;'}),
        ("null", OK, {"payload": None}),
        ("empty_object", OK, {"payload": {}}),
        ("extra_keys_ignored", OK, {"payload": [1], "other": 2}),
        ("missing_payload", BAD, {}),
        ("params_not_object", BAD, [1, 2, 3]),
        ("invalid_json", BAD, {"__raw_body__": '{"payload": [1, 2'}),
        ("trailing_garbage", BAD, {"__raw_body__": '{"payload": 1} x'}),
    ],
    "transform": [
        ("mixed", OK, {"records": RECORDS, "min_total": 0.2}),
        ("all", OK, {"records": RECORDS, "min_total": 0}),
        ("none_pass", OK, {"records": RECORDS, "min_total": 1000}),
        ("empty", OK, {"records": [], "min_total": 0}),
        (
            "ties_by_id",
            OK,
            {
                "records": [
                    {"id": 9, "name": "b", "price": 1.5, "qty": 2, "tags": []},
                    {"id": 8, "name": "a", "price": 3, "qty": 1, "tags": []},
                    {"id": 10, "name": "c", "price": 0.75, "qty": 4, "tags": []},
                ],
                "min_total": -1,
            },
        ),
        (
            "qty_negative",
            BAD,
            {
                "records": [{"id": 1, "name": "a", "price": 1, "qty": -1, "tags": []}],
                "min_total": 0,
            },
        ),
        (
            "price_string",
            BAD,
            {
                "records": [{"id": 1, "name": "a", "price": "1", "qty": 1, "tags": []}],
                "min_total": 0,
            },
        ),
        (
            "id_fractional",
            BAD,
            {
                "records": [{"id": 1.5, "name": "a", "price": 1, "qty": 1, "tags": []}],
                "min_total": 0,
            },
        ),
        (
            "tag_not_string",
            BAD,
            {
                "records": [{"id": 1, "name": "a", "price": 1, "qty": 1, "tags": [1]}],
                "min_total": 0,
            },
        ),
        (
            "missing_name",
            BAD,
            {"records": [{"id": 1, "price": 1, "qty": 1, "tags": []}], "min_total": 0},
        ),
        ("record_not_object", BAD, {"records": [1], "min_total": 0}),
        ("records_not_array", BAD, {"records": {"id": 1}, "min_total": 0}),
        ("missing_min_total", BAD, {"records": []}),
        (
            "bool_is_not_int",
            BAD,
            {
                "records": [{"id": True, "name": "a", "price": 1, "qty": 1, "tags": []}],
                "min_total": 0,
            },
        ),
    ],
    "hash": [
        ("abc_1", OK, {"data": "abc", "rounds": 1}),
        ("empty_1", OK, {"data": "", "rounds": 1}),
        ("unicode_1000", OK, {"data": "héllo ✓ 世界", "rounds": 1000}),
        ("rounds_integral_float", OK, {"data": "x", "rounds": 2.0}),
        ("fnbench_100000", OK, {"data": "fnbench", "rounds": 100000}),
        ("rounds_zero", BAD, {"data": "abc", "rounds": 0}),
        ("rounds_too_many", BAD, {"data": "abc", "rounds": 1000001}),
        ("rounds_string", BAD, {"data": "abc", "rounds": "5"}),
        ("data_not_string", BAD, {"data": 5, "rounds": 1}),
        ("missing_data", BAD, {"rounds": 1}),
    ],
    "matmul": [
        ("n1", OK, {"n": 1}),
        ("n2", OK, {"n": 2}),
        ("n7", OK, {"n": 7}),
        ("n33", OK, {"n": 33}),
        ("n64", OK, {"n": 64}),
        ("n_zero", BAD, {"n": 0}),
        ("n_too_big", BAD, {"n": 513}),
        ("n_fractional", BAD, {"n": 2.5}),
        ("missing_n", BAD, {}),
    ],
    "alloc": [
        ("1mb_64b", OK, {"mb": 1, "object_bytes": 64}),
        ("2mb_4k", OK, {"mb": 2, "object_bytes": 4096}),
        ("1mb_100000b", OK, {"mb": 1, "object_bytes": 100000}),
        ("1mb_1object", OK, {"mb": 1, "object_bytes": 1048576}),
        ("object_larger_than_total", OK, {"mb": 1, "object_bytes": 2097152}),
        ("mb_zero", BAD, {"mb": 0, "object_bytes": 64}),
        ("mb_too_big", BAD, {"mb": 2000, "object_bytes": 64}),
        ("object_bytes_zero", BAD, {"mb": 1, "object_bytes": 0}),
        ("too_many_objects", BAD, {"mb": 1024, "object_bytes": 32}),
    ],
    "sleep": [
        ("zero", OK, {"ms": 0}),
        ("short", OK, {"ms": 25}),
        ("negative", BAD, {"ms": -1}),
        ("too_long", BAD, {"ms": 60001}),
        ("string", BAD, {"ms": "10"}),
    ],
    "validate": [
        ("ok", OK, {"data_b64": HELLO_B64, "max_bytes": 10, "sha256": HELLO_SHA}),
        (
            "ok_uppercase_hex",
            OK,
            {"data_b64": HELLO_B64, "max_bytes": 5, "sha256": HELLO_SHA.upper()},
        ),
        ("ok_binary", OK, {"data_b64": BLOB_B64, "max_bytes": 1 << 20, "sha256": BLOB_SHA}),
        ("empty", OK, {"data_b64": "", "max_bytes": 0, "sha256": EMPTY_SHA}),
        ("too_large", OK, {"data_b64": HELLO_B64, "max_bytes": 4, "sha256": HELLO_SHA}),
        (
            "too_large_wins_over_checksum",
            OK,
            {"data_b64": HELLO_B64, "max_bytes": 1, "sha256": EMPTY_SHA},
        ),
        ("checksum_mismatch", OK, {"data_b64": HELLO_B64, "max_bytes": 10, "sha256": EMPTY_SHA}),
        ("bad_length", BAD, {"data_b64": "abc", "max_bytes": 10, "sha256": HELLO_SHA}),
        ("missing_padding", BAD, {"data_b64": "aGVsbG8", "max_bytes": 10, "sha256": HELLO_SHA}),
        ("bad_alphabet", BAD, {"data_b64": "aGVs*G8=", "max_bytes": 10, "sha256": HELLO_SHA}),
        ("urlsafe_alphabet", BAD, {"data_b64": "-_-_", "max_bytes": 10, "sha256": HELLO_SHA}),
        ("embedded_newline", BAD, {"data_b64": "aGVs\nbG8=", "max_bytes": 10, "sha256": HELLO_SHA}),
        ("noncanonical_bits", BAD, {"data_b64": "QR==", "max_bytes": 10, "sha256": HELLO_SHA}),
        ("sha_too_short", BAD, {"data_b64": HELLO_B64, "max_bytes": 10, "sha256": "abc"}),
        ("sha_not_hex", BAD, {"data_b64": HELLO_B64, "max_bytes": 10, "sha256": "z" * 64}),
        ("max_bytes_negative", BAD, {"data_b64": HELLO_B64, "max_bytes": -1, "sha256": HELLO_SHA}),
    ],
    # Answered buffered ({chunks, bytes, sha256}) by every runtime that has it; streamed (the bytes
    # themselves, chunk by chunk) by Node's index.streamHandler.  Only the runtimes in
    # workers/functions.py STREAM_RUNTIMES implement it.
    "stream": [
        ("three_chunks", OK, {"chunks": 3, "chunk_bytes": 2, "delay_ms": 0}),
        ("with_delay", OK, {"chunks": 4, "chunk_bytes": 1000, "delay_ms": 5}),
        ("letters_wrap", OK, {"chunks": 28, "chunk_bytes": 1, "delay_ms": 0}),
        ("fail_after_past_end", OK, {"chunks": 2, "chunk_bytes": 1, "delay_ms": 0, "fail_after": 2}),
        ("fail_after_1", BAD, {"chunks": 3, "chunk_bytes": 1, "delay_ms": 0, "fail_after": 1}),
        ("chunks_zero", BAD, {"chunks": 0, "chunk_bytes": 1, "delay_ms": 0}),
        ("too_many_bytes", BAD, {"chunks": 21, "chunk_bytes": 1048576, "delay_ms": 0}),
        ("too_much_delay", BAD, {"chunks": 11, "chunk_bytes": 1, "delay_ms": 6001}),
        ("missing_delay", BAD, {"chunks": 1, "chunk_bytes": 1}),
    ],
}

ANCHORS = {
    ("stream", "three_chunks"): {"chunks": 3, "bytes": 6,
                                 "sha256": hashlib.sha256(b"aabbcc").hexdigest()},
    ("hash", "abc_1"): "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    ("hash", "empty_1"): EMPTY_SHA,
    ("matmul", "n1"): {"n": 1, "trace": 0.0, "sum": 0.0},
    ("alloc", "1mb_1object"): {"objects": 1, "bytes": 1048576, "checksum": 0},
    ("validate", "ok"): {"valid": True, "size": 5, "reason": None},
}


def main() -> None:
    only = set(sys.argv[1:])  # workloads to write (default: all)
    for workload, cases in CASES.items():
        if only and workload not in only:
            continue
        out = []
        for name, kind, params in cases:
            case: dict[str, object] = {"name": name}
            if isinstance(params, dict) and "__raw_body__" in params:
                case["body"] = params["__raw_body__"]
            else:
                case["params"] = params
            if kind == OK:
                result = ref.run_sync(workload, params)
                if (workload, name) in ANCHORS:
                    assert result == ANCHORS[(workload, name)], (workload, name, result)
                case["status"] = 200
                case["result"] = result
            else:
                try:
                    body = params.get("__raw_body__") if isinstance(params, dict) else None
                    ref.run_sync(workload, ref.parse_json(body.encode()) if body else params)
                except ref.BadRequest:
                    pass
                else:
                    raise AssertionError(f"{workload}/{name} should be a bad request")
                case["status"] = 400
            out.append(case)
        doc = {
            "workload": workload,
            "contract": "functions/CONTRACT.md",
            "note": "HTTP: POST /<workload> with `body` (raw) or JSON `params`; Lambda: {workload, params}. "
            "`result` is compared as parsed JSON (floats exactly).",
            "cases": out,
        }
        path = HERE / f"{workload}.json"
        path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {path.relative_to(HERE.parent.parent)} ({len(out)} cases)")


if __name__ == "__main__":
    main()
