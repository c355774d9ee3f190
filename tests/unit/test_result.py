"""The typed result: merged percentiles equal HdrHistogram's, the JSON codec round-trips, old files load."""

from __future__ import annotations

import dataclasses
import random

import orjson
import pytest

from orchestrator.errors import InputError
from orchestrator.run.collect import Collector
from orchestrator.run.result import RunResult
from workers import histograms
from workers.contract import Interval
from workers.histograms import MergedHistogram


def test_merged_histogram_summary_is_exactly_hdrhistograms():
    rng = random.Random(3)
    for _ in range(30):
        reference, merged = histograms.new_histogram(), MergedHistogram()
        for _ in range(3):
            part = histograms.new_histogram()
            scale = rng.choice([1, 50, 3000, 10**6])
            sigma = rng.choice([0.1, 1.0, 2.0])
            histograms.fill(part, [int(rng.lognormvariate(0, sigma) * scale) + 1 for _ in range(rng.randint(1, 3000))])
            reference.add(part)
            merged.add_encoded(histograms.encode(part))
        assert merged.summary().to_dict() == histograms.summary_ms(reference)


def _interval(seq: int, ok: int = 10, errors: int = 0) -> Interval:
    h = histograms.new_histogram()
    histograms.fill(h, [1000] * ok)
    outcomes = {"ok": ok, **({"connect_error": errors} if errors else {})}
    return Interval(run_id="r", shard_id="a/t/warm/p0of1/s0", attempt=0, seq=seq, region="a", target="t",
                    runtime="go", phase="warm", t0=100.0 + seq, t1=101.0 + seq, intended=ok + errors,
                    sent=ok + errors, completed=ok + errors, outcomes=outcomes, response_us=histograms.encode(h),
                    service_us=histograms.encode(h), send_lag_us="")


def test_result_round_trips_through_its_json():
    c = Collector("r", {"warm": 2.0})
    c.add_all([_interval(0), _interval(1, errors=5)])
    result = c.result(name="n", errors=("a: boom",), start_at=99.0, workers=2)
    again = RunResult.from_dict(orjson.loads(result.to_json()))
    assert again == result
    assert result.to_dict()["groups"][0]["outcomes"] == {"ok": 20, "connect_error": 5}


def test_achieved_rps_counts_successful_responses_only():
    c = Collector("r", {"warm": 2.0})
    c.add_all([_interval(0, ok=0, errors=100), _interval(1, ok=0, errors=100)])
    g = c.result().groups[0]
    assert g.completed == 200 and g.achieved_rps == 0.0 and g.error_rate == 1.0


def test_a_version_1_result_without_schema_version_still_loads(tmp_path):
    old = {"run_id": "x", "groups": [{"region": "local", "target": "t", "runtime": "go", "phase": "warm",
                                      "intended": 5, "completed": 5, "achieved_rps": 2.5, "outcomes": {"ok": 5},
                                      "response_ms": {"p50": 1.0, "p99": 2.0}, "series": [[1, 5, 5, 0]]}],
           "warmup": {"intended": 0, "completed": 0}, "gaps": [], "slo": [], "duplicates_dropped": 0}
    path = tmp_path / "result.json"
    path.write_bytes(orjson.dumps(old))
    result = RunResult.load(path)
    assert result.groups[0].response_ms.p99 == 2.0 and result.schema_version == 2


def test_a_result_of_an_unknown_version_names_the_version(tmp_path):
    path = tmp_path / "result.json"
    path.write_bytes(orjson.dumps({"schema_version": 99, "run_id": "x"}))
    with pytest.raises(InputError, match="schema_version 99"):
        RunResult.load(path)


def test_a_second_execution_of_one_shard_attempt_is_dropped_and_reported():
    """A replayed task run on another host: same (shard, attempt, seq), another start (issue 20 item 4)."""
    first = [dataclasses.replace(_interval(seq), started=1000.0) for seq in range(3)]
    second = [dataclasses.replace(_interval(seq, ok=7), started=1000.25) for seq in range(4)]
    c = Collector("r")
    for a, b in zip(first, second, strict=False):
        c.add(a)
        c.add(b)
    c.add(second[3])  # a seq the first execution never sent is still the second execution's
    (group,) = c.result().groups
    assert group.completed == 30
    assert c.duplicates == 4
    (problem,) = c.problems()
    assert "a/t/warm/p0of1/s0#0" in problem and "more than once" in problem and "4 interval(s)" in problem
    # An interval delivered twice (at least once delivery) is a duplicate, not a second execution.
    c2 = Collector("r")
    c2.add(first[0])
    c2.add(first[0])
    assert c2.duplicates == 1 and c2.problems() == []


def test_a_lost_window_is_reported_once_and_again_the_same_from_the_saved_result():
    # Issue 27: a frozen attempt's own stall lies inside the window the dispatcher reported lost, and a
    # re-dispatched remainder's late start continues that gap; each is one gap, also when a report is
    # rebuilt from the saved result (the dispatcher's gaps as saved, the intervals' recomputed).
    from orchestrator.run.collect import LATE_REDISPATCH, STALLED
    from orchestrator.run.result import Gap

    sid = "a/t/warm/p0of1/s0"
    ran = dataclasses.replace(_interval(0), t0=100.0, t1=101.0)
    # Frozen at ~101.5, judged lost at 104 (re-dispatched from 104.5), woke at 106: skipped 4.5 s.
    woke = dataclasses.replace(_interval(1, ok=25), t0=101.0, t1=106.0, gap_s=4.5, stall_s=4.5, final=True)
    late = dataclasses.replace(_interval(0, ok=50), attempt=1, t0=104.8, t1=106.0, gap_s=0.3)
    lost = Gap(region="a", shard=sid, target="t", seconds=3.5, reason="worker lost (silent 2.9s)", attempt=0,
               redispatched_at=104.5, redispatch_delay_s=3.5, start=101.0)
    c = Collector("r")
    c.add_all([ran, woke, late])
    assert {g.reason for g in c.interval_gaps} == {STALLED, LATE_REDISPATCH}
    (gap,) = c.result(gaps=[lost]).gaps
    # Load ran until the stall began (106 - 4.5); the remainder began 0.3 s after it was due.
    assert (gap.start, gap.seconds, gap.late_start_s) == (101.5, 3.3, 0.3)
    again = Collector("r")
    again.add_all([ran, woke, late])
    assert again.result(gaps=[gap]).gaps == (gap,)
    # A stall of an attempt nobody judged lost is its own gap, with its length.
    alone = Collector("r")
    alone.add_all([ran, woke])
    assert [(g.reason, g.seconds) for g in alone.result().gaps] == [(STALLED, 4.5)]
