"""The recorder of one shard: per-request samples appended to arrays, histograms per interval.

The hot path only appends integers to arrays; histograms (``workers.histograms``: µs, 3
significant digits) are filled in bulk every ~50 ms and encoded once per interval.  Values above
the trackable range are clamped to the maximum and counted in ``out_of_range``, never dropped.
"""

from __future__ import annotations

from array import array

from workers.contract import HISTOGRAMS
from workers.histograms import encode, fill, new_histogram, reset


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
