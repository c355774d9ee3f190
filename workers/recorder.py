"""The recorder of one shard: per-request samples appended to arrays, histograms per interval.

The hot path only appends integers to arrays; histograms (``workers.histograms``: µs, 3
significant digits) are filled in bulk every ~50 ms and encoded once per interval.  Values above
the trackable range are clamped to the maximum and counted in ``out_of_range``, never dropped.

Memory: one histogram is a dense counts array (``HISTOGRAM_BYTES``, ~184 KiB for the one-hour
layout), and a shard has ten kinds.  A histogram is made when its kind first has a value and freed
by ``release()`` when the shard ends, so a shard that has not started (a later time slice) holds
none and a running HTTP shard holds the three or four it fills (response, service, send lag,
connect), not eight: 10,000 concurrent shards held 1.5 MB each before.  The plan's memory bound
(orchestrator.run.plan) counts with these numbers.
"""

from __future__ import annotations

from array import array

from hdrh.histogram import HdrHistogram

from workers.contract import HISTOGRAMS
from workers.histograms import encode, fill, histogram_bytes, new_histogram, reset

HISTOGRAM_BYTES = histogram_bytes()


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
        self.ttfb = array("q")
        self.ttlb = array("q")
        self._hists: dict[str, HdrHistogram] = {}  # made at a kind's first value (see the module's text)
        self._out_of_range = 0

    def absorb(self) -> None:
        for name in self.HISTOGRAMS:
            values: array[int] = getattr(self, name)
            if values:
                setattr(self, name, array("q"))
                hist = self._hists.get(name)
                if hist is None:
                    hist = self._hists[name] = new_histogram()
                self._out_of_range += fill(hist, values)

    def histograms(self) -> int:
        """How many histograms this recorder holds now."""
        return len(self._hists)

    def release(self) -> None:
        """Free the histograms (the shard has ended; a later drain makes them again if needed)."""
        self._hists = {}

    def drain(self) -> tuple[dict[str, str], int]:
        """Encode the histograms and reset them; returns ({name: encoded}, out_of_range)."""
        self.absorb()
        encoded = {name: encode(self._hists[name]) if name in self._hists else "" for name in self.HISTOGRAMS}
        out_of_range, self._out_of_range = self._out_of_range, 0
        for h in self._hists.values():  # the same histograms serve the next interval (see reset())
            if h.total_count:
                reset(h)
        return encoded, out_of_range
