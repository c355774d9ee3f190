"""The one HDR module: bounded decoding (a zlib bomb is refused with little memory), the layout's
arithmetic, merges byte-identical to the hdrh library's, histograms of another layout still read."""

from __future__ import annotations

import base64
import random
import struct
import tracemalloc
import zlib

import pytest
from hdrh.codec import PayloadHeader
from hdrh.histogram import HdrHistogram

from workers import histograms
from workers.histograms import HistogramDecodeError, MergedHistogram

MB = 1 << 20


def _zero_stream(prefix: bytes, megabytes: int) -> bytes:
    """A valid zlib stream of ``prefix`` and ``megabytes`` MiB of zeros, built in a fraction of a second:
    once the window is all zeros, each further MiB compresses (sync-flushed) to the same bytes."""
    zeros = bytes(MB)
    c = zlib.compressobj(9)
    first = c.compress(prefix + zeros) + c.flush(zlib.Z_SYNC_FLUSH)
    mid = c.compress(zeros) + c.flush(zlib.Z_SYNC_FLUSH)
    assert mid == c.compress(zeros) + c.flush(zlib.Z_SYNC_FLUSH)
    a = zlib.adler32(prefix)
    low = a & 0xFFFF
    high = ((a >> 16) + megabytes * MB * low) % 65521  # adler32: a zero adds nothing to A, and A to B
    return first + mid * (megabytes - 1) + b"\x03\x00" + struct.pack(">I", (high << 16) | low)  # empty final block


def _encoded(stream: bytes) -> str:
    return base64.b64encode(struct.pack(">II", 0x1C849314, len(stream)) + stream).decode()


def _header(lowest: int = histograms.LOWEST_US, highest: int = histograms.HIGHEST_US,
            digits: int = histograms.SIGNIFICANT_DIGITS, payload_len: int = 0) -> bytes:
    h = PayloadHeader()
    h.cookie, h.payload_len, h.significant_figures = 0x1C849313, payload_len, digits
    h.lowest_trackable_value, h.highest_trackable_value, h.conversion_ratio_bits = lowest, highest, 1.0
    return bytes(h)


def test_zero_stream_is_what_it_claims():
    assert zlib.decompress(_zero_stream(b"head", 3)) == b"head" + bytes(3 * MB)


@pytest.mark.parametrize("header", [_header(), _header(1, 2**62, 2)], ids=["fnbench layout", "another layout"])
def test_a_zlib_bomb_is_refused_with_little_memory(header):
    bomb = _encoded(_zero_stream(header, 1400))  # 1.4 MB that would expand to 1.4 GB
    assert len(bomb) < 2 * MB
    readers = [histograms.decode, lambda e: histograms.merge([e]), lambda e: histograms.merge_encoded([e, e]),
               MergedHistogram().add_encoded, histograms.buckets]
    tracemalloc.start()
    try:
        for read in readers:
            with pytest.raises(HistogramDecodeError, match="expands beyond"):
                read(bomb)
        with pytest.raises(HistogramDecodeError), histograms.decoded(bomb):
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MB  # the input and a copy or two of it, never the expansion


def test_the_bound_is_the_layouts_largest_payload():
    assert histograms.counts_len(*histograms._LAYOUT) == histograms.new_histogram().counts_len
    for layout in ((1, 2**62, 2), (1000, 10**12, 4), (3, 7, 1), (1, 2**40, 5)):
        assert histograms.counts_len(*layout) == HdrHistogram(*layout).counts_len
    # Just inside the bound it is read (the varints are zeros: counts of zero), just beyond it is refused.
    n = histograms.new_histogram().counts_len
    inside = zlib.compress(_header(payload_len=n) + bytes(n))
    assert histograms.decode(_encoded(inside)).get_total_count() == 0
    beyond = zlib.compress(_header(payload_len=9 * n + 1) + bytes(9 * n + 1))
    with pytest.raises(HistogramDecodeError, match=f"expands beyond {histograms.MAX_PAYLOAD_BYTES} bytes"):
        histograms.decode(_encoded(beyond))


@pytest.mark.parametrize("encoded, problem", [
    ("not base64!", "not base64|not an HdrHistogram"),
    (base64.b64encode(b"abc").decode(), "too short"),
    (base64.b64encode(struct.pack(">II", 0x12345678, 3) + b"abc").decode(), "cookie"),
    (base64.b64encode(struct.pack(">II", 0x1C849314, 9) + b"abc").decode(), "length"),
    (_encoded(b"not zlib at all"), "not zlib"),
    (_encoded(zlib.compress(_header(payload_len=400) + random.Random(0).randbytes(400))[:-30]), "truncated"),
    (_encoded(zlib.compress(b"\x00" * 40)), "cookie"),
    (_encoded(zlib.compress(_header(digits=9))), "not a valid HDR layout"),
    (_encoded(zlib.compress(_header(1, 2**62, 5))), "more than"),
    (_encoded(zlib.compress(_header(payload_len=7) + bytes(3))), "header says 7"),
])
def test_what_is_not_a_histogram_raises_a_value_error_naming_it(encoded, problem):
    with pytest.raises(HistogramDecodeError, match=problem) as caught:
        histograms.MergedHistogram().add_encoded(encoded)
    assert isinstance(caught.value, ValueError)


def _random_encoded(rng: random.Random, n: int) -> list[str]:
    out = []
    for _ in range(n):
        h = histograms.new_histogram()
        histograms.fill(h, [int(rng.lognormvariate(8, 2)) + 1 for _ in range(rng.randint(1, 2000))])
        out.append(histograms.encode(h))
    return out


def test_merge_encoded_is_byte_identical_to_the_hdrh_librarys_merge():
    rng = random.Random(5)
    for n in (1, 2, 5):
        encoded = _random_encoded(rng, n)
        h = HdrHistogram.decode(encoded[0])
        for e in encoded[1:]:
            h.decode_and_add(e)
        assert histograms.merge_encoded(encoded) == h.encode().decode()


def test_buckets_are_the_layouts_highest_equivalent_values():
    rng = random.Random(6)
    (enc,) = _random_encoded(rng, 1)
    h = histograms.decode(enc)
    want = [(h.get_highest_equivalent_value(h.get_value_from_index(i)), c) for i, c in enumerate(h.counts) if c]
    assert list(histograms.buckets(enc)) == want and list(histograms.buckets("")) == []


def test_a_histogram_of_another_layout_is_still_read():
    other = HdrHistogram(1, 10**7, 2)
    for v in (5, 700, 123_456, 9_000_000):
        other.record_value(v)
    encoded = other.encode().decode()
    merged = MergedHistogram()
    merged.add_encoded(encoded)
    assert merged.total == 4
    assert histograms.decode(encoded).get_total_count() == 4
    assert [c for _, c in histograms.buckets(encoded)] == [1, 1, 1, 1]
    mine = histograms.new_histogram()
    histograms.fill(mine, [1000])
    assert histograms.decode(histograms.merge_encoded([encoded, histograms.encode(mine)])).get_total_count() == 5
