"""HDR histograms per (target, phase) per interval: record, encode, decode, merge, summarise.

Values are microseconds with 3 significant digits.  The hot path only appends integers to
arrays; histograms are filled once per flush (counting duplicates first), which keeps the
per-request cost to a few list appends.  Values above the trackable range are clamped to
the maximum and counted in ``out_of_range``, never dropped.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ctypes
import sys
import threading
import zlib
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from hdrh.codec import PayloadHeader, payload_header_size
from hdrh.histogram import HdrHistogram
from pyhdrh import add_array as _add_array
from pyhdrh import decode as _decode_varints  # the C core of the hdrhistogram package

from workers.contract import HISTOGRAMS, Interval, SchemaError

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour
SIGNIFICANT_DIGITS = 3
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}


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


class Decoded(NamedTuple):
    counts: Any  # a ctypes array of fnbench's layout, zero outside [lo, hi]
    lo: int  # lowest and highest non-zero index
    hi: int
    total: int


_LAYOUT = (LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
_scratch = threading.local()
_EXT_HEADER = 8  # cookie + length in front of the zlib payload (HdrHistogram V2 "compressed" encoding)
_COOKIE_V2 = 0x1C849303  # the payload's cookie (V2 encoding; bits 4-7 hold the word size, ignored)
_VARINT_MAX = 9  # bytes of one count in the V2 payload (LEB128 of a zig-zag 64-bit value)
MAX_FOREIGN_COUNTS = 1 << 18  # another layout's counts array, at most (a 2 MB histogram when decoded)


class HistogramError(SchemaError):
    """An encoded histogram that cannot be decoded within bounds: not base64 or zlib, too large
    (a zlib bomb), a counts index outside its layout, a truncated payload."""


def counts_len_of(lowest: int, highest: int, digits: int) -> int:
    """The counts array length of an HDR layout, by hdrh's arithmetic, without allocating it."""
    largest_single_unit = 2 * 10**digits
    half_magnitude = max((largest_single_unit - 1).bit_length(), 1) - 1
    sub_bucket_count = 1 << (half_magnitude + 1)
    unit_magnitude = lowest.bit_length() - 1
    smallest_untrackable = sub_bucket_count << unit_magnitude
    buckets = 1
    while smallest_untrackable <= highest:
        if smallest_untrackable > sys.maxsize // 2:
            buckets += 1
            break
        smallest_untrackable <<= 1
        buckets += 1
    return (buckets + 1) * (sub_bucket_count // 2)


_COUNTS_LEN = counts_len_of(*_LAYOUT)
_MAX_PAYLOAD = payload_header_size + _VARINT_MAX * MAX_FOREIGN_COUNTS
# base64 of the compressed payload: zlib's worst case is the input plus 0.1 % and a few bytes.
MAX_ENCODED_CHARS = 4 * ((_EXT_HEADER + _MAX_PAYLOAD + _MAX_PAYLOAD // 1000 + 64) // 3 + 1)


def _inflate(encoded: str) -> tuple[bytes, PayloadHeader]:
    """The decompressed payload of an encoded histogram and its header, within the bound its layout
    allows (decompression stops there: a zlib bomb costs at most that much memory)."""
    if not isinstance(encoded, str):
        raise HistogramError(f"expected a base64 string, got {type(encoded).__name__}")
    if len(encoded) > MAX_ENCODED_CHARS:
        raise HistogramError(f"{len(encoded):,} characters, more than any histogram of {MAX_FOREIGN_COUNTS:,} counts")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise HistogramError("not base64") from None
    if len(raw) <= _EXT_HEADER:
        raise HistogramError("shorter than its header")
    inflater = zlib.decompressobj()
    try:
        head = inflater.decompress(raw[_EXT_HEADER:], payload_header_size)
        if len(head) < payload_header_size:
            raise HistogramError("shorter than its header")
        header = PayloadHeader.from_buffer_copy(head)
        lowest, highest, digits = header.lowest_trackable_value, header.highest_trackable_value, header.significant_figures
        if header.cookie & ~0xF0 != _COOKIE_V2:
            raise HistogramError(f"not an HdrHistogram V2 payload (cookie {header.cookie:#x})")
        if (lowest, highest, digits) == _LAYOUT:
            counts = _COUNTS_LEN
        elif 1 <= digits <= 5 and lowest >= 1 and 2 * lowest <= highest <= 2**62:
            counts = counts_len_of(lowest, highest, digits)
            if counts > MAX_FOREIGN_COUNTS:
                raise HistogramError(f"a layout of {counts:,} counts (lowest {lowest}, highest {highest}, "
                                     f"{digits} digits); at most {MAX_FOREIGN_COUNTS:,}")
        else:
            raise HistogramError(f"an impossible layout (lowest {lowest}, highest {highest}, {digits} digits)")
        limit = _VARINT_MAX * counts
        if not 0 <= header.payload_len <= limit:
            raise HistogramError(f"a payload of {header.payload_len:,} bytes; its layout allows {limit:,}")
        body = inflater.decompress(inflater.unconsumed_tail, limit + 1)
    except zlib.error as exc:
        raise HistogramError(f"not zlib data ({exc})") from None
    if len(body) > limit or inflater.unconsumed_tail:
        raise HistogramError(f"decompresses to more than the {limit:,} bytes its layout allows (a zlib bomb?)")
    if not inflater.eof:
        raise HistogramError("the zlib data is cut short")
    if len(body) != header.payload_len:
        raise HistogramError(f"a payload of {len(body):,} bytes where its header says {header.payload_len:,}")
    return head + body, header


def _slot_counts(slot: int) -> Any:
    arrays = getattr(_scratch, "slots", None)
    if arrays is None:
        arrays = _scratch.slots = {}
    counts = arrays.get(slot)
    if counts is None:
        counts = arrays[slot] = (ctypes.c_ulonglong * _COUNTS_LEN)()
    return counts


def _layout_of(header: PayloadHeader) -> tuple[int, int, int]:
    return header.lowest_trackable_value, header.highest_trackable_value, header.significant_figures


def _decode_payload(data: bytes, header: PayloadHeader, slot: int) -> Decoded | None:
    """The counts of a payload of fnbench's layout in the slot's scratch array (None: empty); the
    caller zeroes [lo, hi] after use."""
    if header.normalizing_index_offset:
        raise HistogramError("a normalizing index offset (fnbench never writes one)")
    counts = _slot_counts(slot)
    try:
        res = _decode_varints(data, payload_header_size, ctypes.addressof(counts), len(counts), 8)
    except (IndexError, ValueError) as exc:
        ctypes.memset(ctypes.addressof(counts), 0, ctypes.sizeof(counts))  # it may have written part of it
        raise HistogramError(f"bad counts: {exc}") from None
    lo, hi, total = res["min_nonzero_index"], res["max_nonzero_index"], res["total"]
    if not total or hi < 0:
        if hi >= 0:
            ctypes.memset(ctypes.addressof(counts) + 8 * lo, 0, 8 * (hi + 1 - lo))
        return None
    return Decoded(counts, lo, hi, total)


@contextlib.contextmanager
def decoded(encoded: str, slot: int = 0) -> Iterator[Decoded | None]:
    """An encoded histogram of fnbench's layout decoded in C into one reused array (per thread and
    ``slot``: histograms decoded at once take different slots), zeroed again on exit; None for an
    empty histogram or another layout (``decode_foreign`` it instead).  No histogram object is made, so
    nothing is left for the cycle collector.  HistogramError (before anything is yielded) for one that
    cannot be decoded within its layout's bounds."""
    data, header = _inflate(encoded)
    d = _decode_payload(data, header, slot) if _layout_of(header) == _LAYOUT else None
    if d is None:
        yield None
        return
    try:
        yield d
    finally:
        ctypes.memset(ctypes.addressof(d.counts) + 8 * d.lo, 0, 8 * (d.hi + 1 - d.lo))


def decode_foreign(encoded: str) -> HdrHistogram:
    """A histogram of another layout (another fnbench version), checked within bounds first."""
    _inflate(encoded)
    try:
        return HdrHistogram.decode(encoded)
    except Exception as exc:  # noqa: BLE001 - hdrh raises many kinds on malformed payloads
        raise HistogramError(f"cannot decode: {type(exc).__name__}: {exc}") from None


def check_interval(iv: Interval) -> Interval:
    """``iv`` when every encoded histogram in it decodes within bounds; HistogramError naming the field."""
    for _, field, _ in HISTOGRAMS:
        encoded = getattr(iv, field)
        if not encoded:
            continue
        try:
            data, header = _inflate(encoded)
            if _layout_of(header) == _LAYOUT:
                d = _decode_payload(data, header, 0)
                if d is not None:
                    ctypes.memset(ctypes.addressof(d.counts) + 8 * d.lo, 0, 8 * (d.hi + 1 - d.lo))
            else:
                decode_foreign(encoded)
        except HistogramError as exc:
            raise HistogramError(f"Interval.{field}: {exc}") from None
    return iv


def read_interval(raw: bytes | str) -> Interval:
    """An Interval from its JSON record, fields and histograms checked (SchemaError otherwise): the one
    way records from outside this process (a Redis stream, intervals.jsonl, a worker) are read."""
    return check_interval(Interval.from_json(raw))


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


def decode(encoded: str) -> HdrHistogram:
    hist = new_histogram()
    if encoded:
        hist.add(decode_foreign(encoded))
    return hist


def merge_encoded(encoded: Iterable[str]) -> str:
    """The histograms merged and encoded again, with no histogram object per item: each is decoded
    in C (``decoded``) and added into one histogram per thread, reused (``reset``)."""
    total = getattr(_scratch, "merge", None)
    if total is None:
        total = _scratch.merge = new_histogram()
    reset(total)
    for item in encoded:
        if not item:
            continue
        with decoded(item) as d:
            if d is None:  # empty, or another layout (another fnbench version): the slow way
                total.add(decode_foreign(item))
                continue
            _add_array(ctypes.addressof(total.counts) + 8 * d.lo, ctypes.addressof(d.counts) + 8 * d.lo,
                       d.hi + 1 - d.lo, 8)
            total.total_count += d.total
            # The encoder reads max_value (the last index it writes); min_value as hdrh keeps it.
            total.min_value = min(total.min_value, total.get_value_from_index(d.lo))
            total.max_value = max(total.max_value, total.get_value_from_index(d.hi))
    return encode(total)


def merge(encoded: Iterable[str]) -> HdrHistogram:
    total = new_histogram()
    for item in encoded:
        if item:
            total.add(decode_foreign(item))
    return total


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


class ShardRecorder:
    """Samples of the current interval for one shard (one target, one phase).

    The hot path appends integers to arrays; ``absorb()`` (called every ~50 ms by the shard
    loop) moves them into the interval's histograms in small slices, so no single flush
    blocks the event loop; ``drain()`` encodes and resets at each interval boundary.
    """

    HISTOGRAMS = tuple(name for name, _, _ in HISTOGRAMS)
    __slots__ = (*HISTOGRAMS, "_hists", "_out_of_range")

    def __init__(self) -> None:
        self.response = array("q")
        self.service = array("q")
        self.send_lag = array("q")
        self.init = array("q")
        self.connect = array("q")
        self.platform = array("q")
        self.billed = array("q")
        self.init_duration = array("q")
        self._hists = {name: new_histogram() for name in self.HISTOGRAMS}
        self._out_of_range = 0

    def absorb(self) -> None:
        for name in self.HISTOGRAMS:
            values: array[int] = getattr(self, name)
            if values:
                setattr(self, name, array("q"))
                self._out_of_range += fill(self._hists[name], values)

    def drain(self) -> tuple[dict[str, str], int]:
        """Encode the histograms and reset them; returns ({name: encoded}, out_of_range)."""
        self.absorb()
        encoded = {name: encode(h) for name, h in self._hists.items()}
        out_of_range, self._out_of_range = self._out_of_range, 0
        for h in self._hists.values():  # the same histograms serve the next interval (see reset())
            if h.total_count:
                reset(h)
        return encoded, out_of_range
