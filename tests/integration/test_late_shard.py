"""A shard that is behind its schedule (it started late, or its process was frozen) never bursts out
what was due: past ``late_bound_s`` the due arrivals are a gap with its length (issue 27 items 1-2).

The shard loop runs against the loopback FaultServer, which records when each request arrived;
bounds are ratios of the plan's rate, generous for a loaded two-core machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest

from tests.servers import wait_for
from workers.contract import Interval, Shard, Target
from workers.histograms import merge
from workers.shard import run_shard

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RATE = 50  # req/s: 5 per 100 ms


def burst_limit(bound_s: float) -> int:
    """The most requests any 100 ms may see: a hiccup within the bound is sent at once (rule 2), so
    the plan's share of bound + window, with room; a replayed backlog is several times this."""
    return int(RATE * (bound_s + 0.1) * 1.5)


def most_in_window(times: Sequence[float], window_s: float = 0.1) -> int:
    """The most requests that arrived within any ``window_s``."""
    ts = sorted(times)
    most, lo = 0, 0
    for hi, t in enumerate(ts):
        while t - ts[lo] > window_s:
            lo += 1
        most = max(most, hi - lo + 1)
    return most


def shard(url: str, start_at: float, duration_s: float, attempt: int = 0, bound_s: float = 1.0) -> Shard:
    target = Target(name="t", runtime="other", platform="http", url=url, method="GET", timeout_s=2.0)
    return Shard(run_id="r", shard_id="s", region="local", target=target, phase="warm",
                 arrival={"kind": "constant", "rps": str(RATE)}, start_at=start_at, duration_s=duration_s,
                 flush_interval_s=0.5, attempt=attempt, late_bound_s=bound_s)


def test_a_shard_that_starts_late_beyond_its_bound_skips_what_was_due_and_never_bursts(fault_server):
    # Before: the last second of the backlog (the old fixed grace) went out at once: 50 requests in ~1 ms.
    route = "/timed-late-start"
    late_s, seconds = 3.0, 5.0
    intervals: list[Interval] = []
    run_shard(shard(fault_server.url(route), time.time() - late_s, seconds, bound_s=0.2), intervals.append)
    # The plan is 5 per 100 ms; the backlog at once would be 50 to 150.
    assert most_in_window(fault_server.times[route]) <= burst_limit(0.2), "a late start burst its backlog"
    sent = sum(iv.sent for iv in intervals)
    gap = sum(iv.gap_s for iv in intervals)
    assert late_s * 0.9 <= gap <= late_s + 1.5, gap  # the whole lateness, not what exceeds the bound
    assert sent == sum(iv.intended for iv in intervals) and sent + gap * RATE == pytest.approx(seconds * RATE, abs=8)
    assert fault_server.hits[route] == sent


def test_a_redispatched_remainder_replays_nothing_that_was_due_before_it_began(fault_server):
    # Late by less than the bound: a first attempt sends that with its clock running (rule 2), but a
    # re-dispatched remainder replays nothing: its catch-up would pass for the target's response time.
    route = "/timed-redispatched"
    late_s = 0.6
    intervals: list[Interval] = []
    run_shard(shard(fault_server.url(route), time.time() - late_s, 3.0, attempt=1, bound_s=1.0), intervals.append)
    assert most_in_window(fault_server.times[route]) <= 20, "the remainder replayed its backlog"  # replayed: ~35
    gap = sum(iv.gap_s for iv in intervals)
    assert late_s * 0.9 <= gap <= late_s + 1.0, gap
    assert sum(iv.stall_s for iv in intervals) == 0
    # Nothing was sent late: the worst send lag is a small part of the lateness a replay would add.
    lag = merge(iv.send_lag_us for iv in intervals if iv.send_lag_us)
    assert lag.total_count > 0 and lag.get_max_value() < late_s * 1e6 / 4, lag.get_max_value()


_CHILD = """
import sys, time, orjson
from workers.contract import Shard
from workers.shard import run_shard
shard = Shard.from_json(sys.argv[1])
out = []
run_shard(shard, out.append)
sys.stdout.buffer.write(orjson.dumps([iv.to_dict() for iv in out]))
"""


def test_a_frozen_shard_skips_its_overdue_arrivals_when_it_wakes_and_reports_the_stall(fault_server):
    # Found by a probe: a worker SIGSTOPped for 20 s sent its 1,003 overdue requests within 80 ms of SIGCONT.
    route = "/timed-frozen"
    frozen_s, seconds, bound_s = 2.0, 6.0, 0.3
    s = shard(fault_server.url(route), time.time() + 1.5, seconds, bound_s=bound_s)
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, s.to_json().decode()], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: fault_server.hits[route] >= RATE, 30, "the shard's first second of load")
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(frozen_s)
        os.kill(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()[-3000:]
    intervals = [Interval.from_dict(d) for d in orjson.loads(out)]
    # After SIGCONT nothing overdue went out at once: 5 per 100 ms planned; a burst would be ~100.
    assert most_in_window(fault_server.times[route]) <= burst_limit(bound_s), "the overdue arrivals went out at once"
    stall = sum(iv.stall_s for iv in intervals)
    assert frozen_s - bound_s - 0.5 <= stall <= frozen_s + 1.5, stall
    assert sum(iv.gap_s for iv in intervals) == pytest.approx(stall, abs=1.0)  # it did not start late
    sent = sum(iv.sent for iv in intervals)
    assert fault_server.hits[route] == sent
    assert sent + stall * RATE == pytest.approx(seconds * RATE, abs=RATE * bound_s + 10)
