"""Records from outside the process (a Redis stream, intervals.jsonl) are checked field by field and
histogram by histogram; a bad one is a SchemaError naming what is wrong, never a crash, and a
histogram decompresses only as far as its layout allows (issue 20, item 6)."""

from __future__ import annotations

import base64
import ctypes
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import orjson
import pytest
from hdrh.codec import PayloadHeader, payload_header_size

from orchestrator.run.collect import Collector
from workers import histograms
from workers.contract import SchemaError

ROOT = Path(__file__).resolve().parents[2]


def histogram(values=(100, 200, 300)) -> str:
    h = histograms.new_histogram()
    histograms.fill(h, list(values))
    return histograms.encode(h)


def record(**changes) -> dict:
    enc = histogram()
    d = {"schema_version": 1, "run_id": "r", "shard_id": "s0", "attempt": 0, "seq": 0, "region": "local",
         "target": "t", "runtime": "rust", "phase": "warm", "t0": 1_700_000_000.0, "t1": 1_700_000_001.0,
         "intended": 3, "sent": 3, "completed": 3, "outcomes": {"ok": 3}, "response_us": enc, "service_us": enc,
         "send_lag_us": enc}
    d.update(changes)
    return d


def _leb(n: int) -> bytes:
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def _zz(n: int) -> int:
    return (n << 1) ^ (n >> 63)


def crafted_histogram(payload: bytes, payload_len: int | None = None, layout=(1, 3_600_000_000, 3)) -> str:
    """An encoded histogram (V2, compressed) with any payload after a header of ``layout``."""
    header = PayloadHeader(0x1C849313, len(payload) if payload_len is None else payload_len, 0, layout[2],
                           layout[0], layout[1], 1.0)
    body = zlib.compress(bytes(header) + payload)
    return base64.b64encode(struct.pack(">ii", 0x1C849314, len(body)) + body).decode()


COUNTS = histograms.new_histogram().counts_len
CRAFTED = {
    "not an interval": {"not": "an interval"},
    "not an object": [1, 2, 3],
    "missing fields": {"schema_version": 1, "run_id": "r"},
    "unknown outcome": record(outcomes={"ok": 1, "pwned": 5}),
    "negative count": record(outcomes={"ok": -5}),
    "wrong type (string count)": record(intended="3"),
    "wrong type (list histogram)": record(response_us=[1, 2]),
    "bool as number": record(seq=True),
    "t0 = -1e308": record(t0=-1e308),
    "t1 = 1e308": record(t1=1e308),
    "huge count": record(completed=2**60),
    "counters not numbers": record(counters={"connections_opened": "many"}),
    "bad base64": record(service_us="!!!not base64!!!"),
    "not zlib": record(service_us=base64.b64encode(b"\x1c\x84\x93\x14\x00\x00\x00\x10" + b"x" * 40).decode()),
    "index out of range": record(response_us=crafted_histogram(_leb(_zz(-(COUNTS + 5))) + _leb(_zz(3)))),
    "index at the end": record(response_us=crafted_histogram(_leb(_zz(-(COUNTS - 1))) + _leb(_zz(3)) + _leb(_zz(3)))),
    "truncated varint": record(response_us=crafted_histogram(b"\x80\x80")),
    "payload longer than its header says": record(response_us=crafted_histogram(_leb(_zz(3)) * 50, payload_len=4)),
    "impossible layout": record(response_us=crafted_histogram(_leb(_zz(3)), layout=(0, 0, 9))),
    "huge foreign layout": record(response_us=crafted_histogram(_leb(_zz(3)), layout=(1, 2**62, 5))),
}


@pytest.mark.parametrize("name", list(CRAFTED))
def test_each_crafted_record_is_a_schema_error_and_leaves_decoding_intact(name):
    raw = orjson.dumps(CRAFTED[name])
    with pytest.raises(SchemaError):
        histograms.read_interval(raw)
    # A failed decode leaves no counts behind in the reused scratch arrays.
    for slot in (0, 1, 2):
        counts = histograms._slot_counts(slot)
        assert not any(counts), name
    good = histograms.read_interval(orjson.dumps(record()))
    c = Collector("r")
    assert c.take(good)
    assert c.result().groups[0].response_ms.max == 0.3


def test_the_collector_counts_an_undecodable_interval_and_keeps_the_rest():
    from workers.contract import Interval

    c = Collector("r")
    assert c.take(Interval.from_dict(record(seq=0)))
    bad = Interval.from_dict(record(seq=1, service_us=crafted_histogram(_leb(_zz(-(COUNTS + 5))) + _leb(_zz(3)))))
    assert not c.take(bad)  # the group is left as it was: nothing of it is counted
    assert c.take(Interval.from_dict(record(seq=2)))
    result = c.result()
    assert result.bad_records == 1 and "Interval" not in result.bad_record_reasons[0] or "seq 1" in result.bad_record_reasons[0]
    g = result.groups[0]
    assert g.completed == 6 and g.service_ms.max == 0.3 and g.response_ms.max == 0.3


BOMB_CHECK = r"""
import resource, sys
from workers import histograms
from workers.contract import SchemaError
encoded = open(sys.argv[1]).read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for _ in range(3):
    try:
        with histograms.decoded(encoded):
            pass
    except SchemaError as exc:
        message = str(exc)
    else:
        raise SystemExit("the bomb decoded")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(after - before, message)
"""


def test_a_zlib_bomb_is_refused_within_the_layouts_bound(tmp_path):
    """400 MB of zeros behind a valid header, ~400 KB compressed: decompression stops at the layout's
    bound (9 bytes per count), so peak memory grows by kilobytes, not by the bomb's size."""
    header = PayloadHeader(0x1C849313, 100, 0, 3, 1, 3_600_000_000, 1.0)
    z = zlib.compressobj(9)
    parts = [z.compress(bytes(header))]
    chunk = b"\0" * (1 << 20)
    parts += [z.compress(chunk) for _ in range(400)]
    parts.append(z.flush())
    body = b"".join(parts)
    bomb = base64.b64encode(struct.pack(">ii", 0x1C849314, len(body)) + body).decode()
    assert len(bomb) < histograms.MAX_ENCODED_CHARS  # small enough to pass the size check: the bound is what stops it
    path = tmp_path / "bomb.b64"
    path.write_text(bomb)
    out = subprocess.run([sys.executable, "-c", BOMB_CHECK, str(path)], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    growth_kb, message = out.stdout.split(" ", 1)
    assert "zlib bomb" in message or "payload" in message, message
    assert int(growth_kb) < 20_000, f"peak RSS grew by {growth_kb} KB decoding a 400 MB bomb"
    # The same bomb in an interval line: one bad record.
    with pytest.raises(SchemaError, match="Interval.response_us"):
        histograms.read_interval(orjson.dumps(record(response_us=bomb)))


def test_scratch_arrays_are_per_slot():
    a, b = histogram([100]), histogram([5000])
    with histograms.decoded(a, 0) as da, histograms.decoded(b, 1) as db:
        assert da is not None and db is not None and da.lo != db.lo
        assert ctypes.addressof(da.counts) != ctypes.addressof(db.counts)
    assert payload_header_size == 40
