"""The one home of fnbench's HDR histograms: layout, record, encode/decode, merge, percentiles.

Values are microseconds with 3 significant digits (``LOWEST_US`` .. ``HIGHEST_US``); the encoding is
HdrHistogram's V2 compressed one (base64), made by the ``hdrh`` package, so any HdrHistogram tool
reads it.  Every other module records, decodes, merges and summarises histograms through this one.

- Recording: ``new_histogram`` and ``fill`` (values counted in bulk, clamped to the range and the
  clamped ones counted, never dropped); ``encode``; ``reset`` to reuse a histogram.
- Decoding is bounded: an encoded histogram is decompressed to at most the size its layout allows
  (the header plus the longest varint of every count), so a corrupt or hostile record (a zlib bomb)
  costs a few hundred kilobytes, never gigabytes.  Anything that is not a histogram raises
  ``HistogramDecodeError`` (a ValueError) naming what is wrong, for callers to count.
- Merging without a histogram object per item: ``decoded`` decodes in C into one reused array,
  ``MergedHistogram`` adds many encoded histograms and reads percentiles from cumulative counts,
  ``merge_encoded`` merges into one encoded histogram, ``merge``/``decode`` give hdrh objects.
- Summaries: ``Summary`` (p50/p90/p99/p999/max/mean in ms), ``summary_ms`` of an hdrh histogram,
  ``MergedHistogram.summary``/``percentiles_ms`` — the same numbers HdrHistogram reports.
- ``buckets`` lists (highest equivalent value, count) per non-empty bucket (Prometheus re-bucketing).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import contextlib
import ctypes
import itertools
import struct
import sys
import threading
import zlib
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from ctypes import addressof
from dataclasses import dataclass
from itertools import compress
from typing import Any, NamedTuple

from hdrh.codec import PayloadHeader, payload_header_size
from hdrh.histogram import HdrHistogram, get_bucket_count
from pyhdrh import add_array
from pyhdrh import decode as _decode_varints  # the C core of the hdrhistogram package

from workers.contract import HISTOGRAMS, Interval, SchemaError

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour
SIGNIFICANT_DIGITS = 3
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}
STATS = ("p50", "p90", "p99", "p999", "max", "mean")

_LAYOUT = (LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
_EXT_HEADER = 8  # cookie + length in front of the zlib payload (HdrHistogram V2 "compressed" encoding)
_COMPRESSION_COOKIE = 0x1C849304  # V2 cookies, without their word-size bits (0xf0)
_ENCODING_COOKIE = 0x1C849303
_WORD_BYTES = 9  # the longest varint of one count (ZigZag LEB128, 64 bits)
MAX_FOREIGN_COUNTS = 1 << 20  # another layout's counts array may hold at most this many (8 MiB)


class HistogramDecodeError(SchemaError):
    """An encoded histogram that cannot be read: not base64, not HdrHistogram V2, truncated, or larger
    than its layout allows (a zlib bomb)."""


HistogramError = HistogramDecodeError  # the name readers catch


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def reset(hist: HdrHistogram) -> None:
    """Zero a histogram in place (one memset).  Reusing histograms matters: an hdrh histogram and
    its encoder refer to each other, so each one dropped is freed only by the cycle collector, which
    a generator's hot path rarely triggers (a worker grew ~60 MB/h with new ones per interval)."""
    ctypes.memset(ctypes.addressof(hist.counts), 0, ctypes.sizeof(hist.counts))
    hist.total_count = 0
    hist.min_value = sys.maxsize
    hist.max_value = 0


def fill(hist: HdrHistogram, values: Iterable[int]) -> int:
    """Record every value; returns how many were out of range (clamped, still counted).

    Equivalent to ``hist.record_value`` per value, but counts duplicates first (in C) and
    computes each distinct value's slot inline: ~4x faster, which matters because this runs
    on the event loop of a generator doing tens of thousands of requests per second.
    """
    counts = hist.counts
    unit, half_mag, half = hist.unit_magnitude, hist.sub_bucket_half_count_magnitude, hist.sub_bucket_half_count
    mask, top = hist.sub_bucket_mask, half_mag + 1 + unit
    out_of_range = total = 0
    lo, hi = hist.min_value, hist.max_value
    for value, n in Counter(values).items():
        if value > HIGHEST_US:
            out_of_range += n
            value = HIGHEST_US
        elif value < LOWEST_US:
            value = LOWEST_US  # sub-microsecond: below resolution, recorded as 1 µs
        bucket = (value | mask).bit_length() - top
        counts[((bucket + 1) << half_mag) + (value >> (bucket + unit)) - half] += n
        total += n
        if value < lo:
            lo = value
        if value > hi:
            hi = value
    hist.total_count += total
    hist.min_value, hist.max_value = lo, hi
    return out_of_range


def encode(hist: HdrHistogram) -> str:
    if hist.get_total_count() == 0:
        return ""
    raw = hist.encode()
    return raw.decode() if isinstance(raw, bytes) else raw


# -- decoding, bounded ----------------------------------------------------------------------------


def counts_len(lowest: int, highest: int, significant_digits: int) -> int:
    """Length of the counts array of a layout, by hdrh's arithmetic (without allocating it)."""
    if not 1 <= significant_digits <= 5 or lowest < 1 or highest < 2 * lowest or highest > sys.maxsize:
        raise HistogramDecodeError(f"not a valid HDR layout: lowest {lowest}, highest {highest}, "
                                   f"{significant_digits} significant digits")
    unit = lowest.bit_length() - 1
    half_mag = max((2 * 10 ** significant_digits - 1).bit_length() - 1, 0)
    sub_bucket_count = 1 << (half_mag + 1)
    return (get_bucket_count(highest, sub_bucket_count, unit) + 1) * (sub_bucket_count // 2)


_COUNTS_LEN = counts_len(*_LAYOUT)


def histogram_bytes() -> int:
    """The memory one recording histogram holds: its dense counts array (8-byte counts)."""
    return _COUNTS_LEN * 8
MAX_PAYLOAD_BYTES = payload_header_size + _WORD_BYTES * _COUNTS_LEN  # fnbench's layout, decompressed
_MAX_ANY_PAYLOAD = payload_header_size + _WORD_BYTES * MAX_FOREIGN_COUNTS
# base64 of the compressed payload: zlib's worst case is its input plus 0.1 % and a few bytes.
MAX_ENCODED_CHARS = 4 * ((_EXT_HEADER + _MAX_ANY_PAYLOAD + _MAX_ANY_PAYLOAD // 1000 + 64) // 3 + 1)


def _payload(encoded: str) -> tuple[PayloadHeader, bytes]:
    """The decompressed payload (header and varint counts) of an encoded histogram, decompressed to
    at most the size its layout allows.  Raises ``HistogramDecodeError`` for anything else."""
    if len(encoded) > MAX_ENCODED_CHARS:
        raise HistogramDecodeError(f"{len(encoded):,} characters, more than any histogram of "
                                   f"{MAX_FOREIGN_COUNTS:,} counts")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise HistogramDecodeError(f"histogram is not base64: {exc}") from None
    if len(raw) < _EXT_HEADER:
        raise HistogramDecodeError(f"histogram too short ({len(raw)} bytes)")
    cookie, length = struct.unpack_from(">II", raw)
    if cookie & ~0xF0 != _COMPRESSION_COOKIE:
        raise HistogramDecodeError(f"not an HdrHistogram V2 compressed histogram (cookie {cookie:#x})")
    if length != len(raw) - _EXT_HEADER:
        raise HistogramDecodeError(f"histogram length {length} does not match its {len(raw) - _EXT_HEADER} bytes")
    inflate = zlib.decompressobj()
    try:
        head = inflate.decompress(raw[_EXT_HEADER:], payload_header_size)
        if len(head) < payload_header_size:
            raise HistogramDecodeError("histogram truncated (no complete payload header)")
        header = PayloadHeader.from_buffer_copy(head)
        if header.cookie & ~0xF0 != _ENCODING_COOKIE:
            raise HistogramDecodeError(f"not an HdrHistogram V2 payload (cookie {header.cookie:#x})")
        layout = (header.lowest_trackable_value, header.highest_trackable_value, header.significant_figures)
        n = _COUNTS_LEN if layout == _LAYOUT else counts_len(*layout)
        if n > MAX_FOREIGN_COUNTS:
            raise HistogramDecodeError(f"histogram layout {layout} has {n} counts, more than {MAX_FOREIGN_COUNTS}")
        limit = _WORD_BYTES * n
        body = inflate.decompress(inflate.unconsumed_tail, limit + 1)
    except zlib.error as exc:
        raise HistogramDecodeError(f"histogram is not zlib data: {exc}") from None
    if len(body) > limit:
        raise HistogramDecodeError(f"histogram expands beyond {payload_header_size + limit} bytes, "
                                   f"the most its layout {layout} can hold (a zlib bomb?)")
    if not inflate.eof:
        raise HistogramDecodeError("histogram truncated (zlib stream incomplete)")
    if header.payload_len != len(body):
        raise HistogramDecodeError(f"histogram payload is {len(body)} bytes, its header says {header.payload_len}")
    return header, head + body


class Decoded(NamedTuple):
    counts: Any  # a ctypes array of fnbench's layout, zero outside [lo, hi]
    lo: int  # lowest and highest non-zero index
    hi: int
    total: int


_scratch = threading.local()


def _slot_counts(slot: int) -> Any:
    arrays = getattr(_scratch, "slots", None)
    if arrays is None:
        arrays = _scratch.slots = {}
    counts = arrays.get(slot)
    if counts is None:
        counts = arrays[slot] = (ctypes.c_ulonglong * _COUNTS_LEN)()
    return counts


@contextlib.contextmanager
def decoded(encoded: str, slot: int = 0) -> Iterator[Decoded | None]:
    """An encoded histogram of fnbench's layout decoded in C into one reused array (per thread and
    ``slot``: histograms decoded at once take different slots), zeroed again on exit; None for an
    empty histogram or another layout (``decode_foreign`` it instead).  No histogram object is made,
    so nothing is left for the cycle collector.  HistogramDecodeError, before anything is yielded,
    for one that cannot be decoded within its layout's bounds."""
    if not isinstance(encoded, str):
        raise HistogramDecodeError(f"expected a base64 string, got {type(encoded).__name__}")
    header, data = _payload(encoded)
    if (header.lowest_trackable_value, header.highest_trackable_value, header.significant_figures) != _LAYOUT:
        yield None
        return
    if header.normalizing_index_offset:
        raise HistogramDecodeError("a normalizing index offset (fnbench never writes one)")
    counts = _slot_counts(slot)
    try:
        res = _decode_varints(data, payload_header_size, ctypes.addressof(counts), len(counts), 8)
    except (IndexError, ValueError) as exc:
        ctypes.memset(ctypes.addressof(counts), 0, ctypes.sizeof(counts))  # it may have written part of it
        raise HistogramDecodeError(f"bad counts: {exc}") from None
    lo, hi, total = res["min_nonzero_index"], res["max_nonzero_index"], res["total"]
    if not total or hi < 0:
        if hi >= 0:
            ctypes.memset(ctypes.addressof(counts) + 8 * lo, 0, 8 * (hi + 1 - lo))
        yield None
        return
    try:
        yield Decoded(counts, lo, hi, total)
    finally:
        ctypes.memset(ctypes.addressof(counts) + 8 * lo, 0, 8 * (hi + 1 - lo))


def decode_foreign(encoded: str) -> HdrHistogram:
    """A histogram of any layout (another fnbench version), checked within bounds, then decoded by hdrh."""
    _payload(encoded)
    try:
        return HdrHistogram.decode(encoded)
    except Exception as exc:  # noqa: BLE001 - hdrh raises many kinds on malformed payloads
        raise HistogramDecodeError(f"cannot decode: {type(exc).__name__}: {exc}") from None


def check_interval(iv: Interval) -> Interval:
    """``iv`` when every encoded histogram in it decodes within bounds; HistogramDecodeError naming the field."""
    for _, field, _ in HISTOGRAMS:
        encoded = getattr(iv, field)
        if not encoded:
            continue
        try:
            with decoded(encoded) as d:
                if d is None:
                    decode_foreign(encoded)
        except HistogramDecodeError as exc:
            raise HistogramDecodeError(f"Interval.{field}: {exc}") from None
    return iv


def read_interval(raw: bytes | str) -> Interval:
    """An Interval from its JSON whose fields and histograms are all valid (SchemaError otherwise)."""
    return check_interval(Interval.from_json(raw))


def decode(encoded: str) -> HdrHistogram:
    hist = new_histogram()
    if encoded:
        hist.add(decode_foreign(encoded))
    return hist


def merge(encoded: Iterable[str]) -> HdrHistogram:
    total = new_histogram()
    for item in encoded:
        if item:
            total.add(decode_foreign(item))
    return total


def merge_encoded(encoded: Iterable[str]) -> str:
    """The histograms merged and encoded again (one alone is returned as it is), with no histogram
    object per item: each is decoded in C (``decoded``) and added into one histogram per thread,
    reused (``reset``)."""
    items = [item for item in encoded if item]
    if len(items) <= 1:
        return items[0] if items else ""
    total = getattr(_scratch, "merge", None)
    if total is None:
        total = _scratch.merge = new_histogram()
    reset(total)
    for item in items:
        with decoded(item) as d:
            if d is None:  # another layout (another fnbench version): the slow way
                total.add(HdrHistogram.decode(item))  # bounded: decoded() checked it
                continue
            add_array(ctypes.addressof(total.counts) + 8 * d.lo, ctypes.addressof(d.counts) + 8 * d.lo,
                      d.hi + 1 - d.lo, 8)
            total.total_count += d.total
            # The encoder reads max_value (the last index it writes); min_value as hdrh keeps it.
            total.min_value = min(total.min_value, total.get_value_from_index(d.lo))
            total.max_value = max(total.max_value, total.get_value_from_index(d.hi))
    return encode(total)


def _counts_of(hist: HdrHistogram) -> Sequence[int]:
    view = memoryview(hist.counts)
    if view.itemsize != 8:
        return list(hist.counts)
    counts = array("Q")
    counts.frombytes(view.cast("B"))
    return counts


def buckets(encoded: str, median: bool = False) -> Iterator[tuple[int, int]]:
    """(highest equivalent value in µs, count) of each non-empty bucket, in value order; scanned in C
    for fnbench's layout (hdrh's recorded iterator takes ~35 ms a histogram).  ``median``: each
    bucket's median equivalent value instead."""
    if not encoded:
        return iter(())
    with decoded(encoded) as d:
        if d is not None:
            counts = d.counts[d.lo:d.hi + 1]  # a copy: the scratch array is zeroed on exit
            table = layout().median if median else layout().highest
            values = map(table.__getitem__, compress(range(d.lo, d.hi + 1), counts))
            return zip(values, compress(counts, counts), strict=True)
    hist = HdrHistogram.decode(encoded)  # empty, or another layout (rare); bounded: decoded() checked it
    counts = _counts_of(hist)
    value_at = hist.get_median_equivalent_value if median else hist.get_highest_equivalent_value
    return ((value_at(hist.get_value_from_index(i)), counts[i]) for i in compress(range(len(counts)), counts))


def medians(encoded: str) -> Iterator[tuple[int, int]]:
    """(median equivalent value in µs, count) of each non-empty bucket, in value order: the value a
    bucket's count stands for when it is re-bucketed into another layout (OTLP exponential buckets)."""
    return buckets(encoded, median=True)


# -- summaries ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Summary:
    """Percentiles of one merged HDR histogram, in milliseconds (None when it is empty)."""

    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    p999: float | None = None
    max: float | None = None
    mean: float | None = None

    def stat(self, name: str) -> float | None:
        if name not in STATS:
            raise KeyError(name)
        value: float | None = getattr(self, name)
        return value

    @property
    def empty(self) -> bool:
        return self.max is None

    def to_dict(self) -> dict[str, float | None]:
        return {s: getattr(self, s) for s in STATS}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Summary:
        return cls(**{s: d.get(s) for s in STATS}) if d else cls()


def summary_ms(hist: HdrHistogram) -> dict[str, float | None]:
    """p50/p90/p99/p999/max/mean in milliseconds (None when empty)."""
    if hist.get_total_count() == 0:
        return {**dict.fromkeys(PERCENTILES), "max": None, "mean": None}
    out: dict[str, Any] = {
        name: hist.get_value_at_percentile(p) / 1000.0 for name, p in PERCENTILES.items()
    }
    out["max"] = hist.get_max_value() / 1000.0
    out["mean"] = round(hist.get_mean_value() / 1000.0, 3)
    return out


class Layout:
    """Index → value tables of fnbench's histogram layout, computed once (``layout()``).

    Within each run of 1024 counts (one HDR bucket half) the median-equivalent value of an index
    is linear in the index, so the mean of a histogram is a few sums over its cumulative counts
    (``MergedHistogram.summary``) instead of a product per count.
    """

    CHUNK = 1024

    def __init__(self) -> None:
        h = new_histogram()
        self.template = h
        self.counts_len = h.counts_len
        # Index → lowest value and bucket width, by the layout's arithmetic (hdrh's own per-value
        # methods take ~0.3 s for the 23k indices; checked against them on a sample below).
        half, unit = h.sub_bucket_half_count_magnitude, h.unit_magnitude
        lowest, width = [], []
        for i in range(h.counts_len):
            bucket, sub = (i >> half) - 1, (i & (h.sub_bucket_half_count - 1)) + h.sub_bucket_half_count
            if bucket < 0:
                bucket, sub = 0, sub - h.sub_bucket_half_count
            lowest.append(sub << (bucket + unit))
            width.append(1 << (bucket + unit))
        self.highest = [lo + w - 1 for lo, w in zip(lowest, width, strict=True)]
        median = [lo + (w >> 1) for lo, w in zip(lowest, width, strict=True)]
        for i in (*range(0, h.counts_len, 97), h.counts_len - 1):
            v = h.get_value_from_index(i)
            if (lowest[i], self.highest[i], median[i]) != (
                    v, h.get_highest_equivalent_value(v), h.get_lowest_equivalent_value(v) + (h._hdr_size_of_equiv_value_range(v) >> 1)):
                raise AssertionError(f"HDR layout changed at index {i}")
        self.median = median
        # (offset, slope) of the median value in each chunk of CHUNK indices, checked to be linear.
        self.lines: list[tuple[int, int]] = []
        for a in range(0, h.counts_len, self.CHUNK):
            b = min(a + self.CHUNK, h.counts_len) - 1
            slope = median[a + 1] - median[a] if b > a else 0
            if any(median[i] != median[a] + slope * (i - a) for i in range(a, b + 1)):
                raise AssertionError(f"HDR layout changed: median values of indices {a}..{b} are not linear")
            self.lines.append((median[a], slope))

    def index_of(self, value_us: int) -> int:
        """The index of a value (clamped to the layout's range)."""
        index: int = self.template._counts_index_for(min(value_us, HIGHEST_US))
        return index


_layout: Layout | None = None


def layout() -> Layout:
    global _layout
    if _layout is None:
        _layout = Layout()
    return _layout


class MergedHistogram:
    """Counts of many encoded HDR histograms of fnbench's layout, added in C."""

    __slots__ = ("counts", "total", "lo", "hi")

    def __init__(self) -> None:
        self.counts = (ctypes.c_ulonglong * layout().counts_len)()
        self.total = 0
        self.lo = -1  # lowest and highest non-zero index
        self.hi = -1

    def add_encoded(self, encoded: str) -> None:
        """Add an encoded histogram (HistogramDecodeError, nothing added, when it cannot be decoded)."""
        with decoded(encoded) as d:
            if d is None:  # empty, or another layout (another fnbench version): value by value
                self.add_foreign(decode_foreign(encoded))
                return
            self.add_decoded(d)

    def add_decoded(self, d: Decoded) -> None:
        width = d.hi + 1 - d.lo
        # Add only the populated span (decoded() zeroes it again for the next decode).
        add_array(addressof(self.counts) + 8 * d.lo, addressof(d.counts) + 8 * d.lo, width, 8)
        self.total += d.total
        self.lo = d.lo if self.lo < 0 else min(self.lo, d.lo)
        self.hi = max(self.hi, d.hi)

    def add_foreign(self, other: HdrHistogram) -> None:
        """A histogram of another layout (another fnbench version): value by value, slowly."""
        t = layout()
        for item in other.get_recorded_iterator():
            index = t.index_of(item.value_iterated_to)
            self.counts[index] += item.count_at_value_iterated_to
            self.total += item.count_at_value_iterated_to
            self.lo = index if self.lo < 0 else min(self.lo, index)
            self.hi = max(self.hi, index)

    def clear(self) -> None:
        """Back to empty (zeroes only the populated span)."""
        if self.total:
            ctypes.memset(addressof(self.counts) + 8 * self.lo, 0, 8 * (self.hi + 1 - self.lo))
        self.total, self.lo, self.hi = 0, -1, -1

    def _cumulative(self) -> list[int]:
        counts = array("Q")
        counts.frombytes(ctypes.string_at(addressof(self.counts) + 8 * self.lo, 8 * (self.hi + 1 - self.lo)))
        return list(itertools.accumulate(counts))  # cumulative[i - lo] = counts lo..i

    def _at(self, cumulative: list[int], ps: Iterable[float]) -> list[float]:
        """Values (ms) at percentiles ``ps``, exactly as HdrHistogram's get_value_at_percentile."""
        highest = layout().highest
        out = []
        for p in ps:
            target = max(int(p * self.total / 100 + 0.5), 1)
            out.append(highest[self.lo + bisect.bisect_left(cumulative, target)] / 1000.0)
        return out

    def percentiles_ms(self, ps: Sequence[float]) -> list[float | None]:
        """Values at percentiles ``ps`` exactly as ``summary`` computes them (ms)."""
        if not self.total:
            return [None] * len(ps)
        return list(self._at(self._cumulative(), ps))

    def summary(self) -> Summary:
        """p50/p90/p99/p999/max/mean in ms, exactly as HdrHistogram reports them."""
        if not self.total:
            return Summary()
        t = layout()
        lo, hi = self.lo, self.hi
        cumulative = self._cumulative()
        out: dict[str, float] = dict(zip(PERCENTILES, self._at(cumulative, PERCENTILES.values()), strict=True))
        out["max"] = t.highest[hi] / 1000.0
        # Σ count·median, chunk by chunk: median = offset + slope·(i − a) inside a chunk starting at a,
        # and Σ (i − a)·count_i = (b − a)·C_b − Σ_{i=a}^{b-1} C_i with C the cumulative count from a.
        weighted = 0
        size = Layout.CHUNK
        for k in range(lo // size, hi // size + 1):
            a, b = max(k * size, lo), min(k * size + size - 1, hi)
            before = cumulative[a - lo - 1] if a > lo else 0
            n = cumulative[b - lo] - before
            if not n:
                continue
            offset, slope = t.lines[k]
            first = offset + slope * (a - k * size)
            moments = (b - a) * n - (sum(cumulative[a - lo:b - lo]) - before * (b - a))
            weighted += first * n + slope * moments
        return Summary(**out, mean=round(weighted / self.total / 1000.0, 3))
