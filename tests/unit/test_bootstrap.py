"""Block-bootstrap comparisons, DST-safe recurrences and regression checks (no network).

The coverage tests print their figures (run with -s to see them): on synthetic runs with a known
shift the 95 % intervals cover the truth in about 95 % of repetitions, and identical distributions
are judged 'no change' in at least 95 %.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from bench.bootstrap_coverage import coverage, synthetic_run
from orchestrator.analysis import compare, history
from orchestrator.errors import InputError
from orchestrator.schedule import Recurrence

REPS = 100


@pytest.fixture(scope="module")
def shifted():
    return coverage(reps=REPS, blocks=40, per_block=8000, shift=0.73, replicates=500)


@pytest.fixture(scope="module")
def identical():
    return coverage(reps=REPS, blocks=40, per_block=8000, shift=1.0, replicates=500, seed=11)


def test_intervals_cover_a_known_shift_in_about_95_percent(shifted):
    for metric, r in shifted.items():
        print(f"bootstrap coverage, shift 0.73, {metric}: {r['coverage'] * 100:.1f} % of {REPS}")
    for metric in ("p50", "p99", "p999", "error_rate"):
        assert 0.88 <= shifted[metric]["coverage"] <= 1.0, (metric, shifted[metric])
    assert all(shifted[m]["no_change"] == 0 for m in ("p50", "p99", "p999"))  # a 27 % shift is never 'no change'


def test_identical_distributions_are_no_change_in_at_least_95_percent(identical):
    for metric, r in identical.items():
        print(f"identical distributions, {metric}: 'no change' in {r['no_change'] * 100:.1f} %, "
              f"interval covers 0 in {r['coverage'] * 100:.1f} % of {REPS}")
    for metric in ("p50", "p99", "error_rate"):
        assert identical[metric]["no_change"] >= 0.95, (metric, identical[metric])
    for metric in identical:
        assert identical[metric]["coverage"] >= 0.88, (metric, identical[metric])


def test_sentence_names_subject_reference_interval_and_region():
    rng = np.random.default_rng(3)
    go = synthetic_run(rng, 30, 3000)
    rust = synthetic_run(rng, 30, 3000, scale=0.73)
    samples = [compare.Sample("eu-west-1", "go", "go", "echo", "warm", tuple(go)),
               compare.Sample("eu-west-1", "rust", "rust", "echo", "warm", tuple(rust))]
    found = {c.metric: c for c in compare.compare_within(samples, replicates=500)}
    p99 = found["p99"]
    assert p99.verdict == "lower" and p99.subject == "rust" and p99.reference == "go"
    assert p99.low is not None and p99.high is not None and p99.low <= -0.27 <= p99.high
    assert p99.sentence.startswith("rust p99 is 2") and "% lower than go (95 % CI " in p99.sentence
    assert p99.sentence.endswith("in eu-west-1")
    assert found["init_p50"].verdict == "no data"


def test_blocks_from_intervals_merge_shards_of_one_slot():
    from workers.contract import Interval

    rng = np.random.default_rng(5)
    blocks = synthetic_run(rng, 4, 100)
    ivs = [Interval(run_id="r", shard_id=f"s{s}", attempt=1, seq=i, region="a", target="t", runtime="go", phase="warm",
                    t0=100.0 + i, t1=101.0 + i, intended=100, sent=100, completed=100, outcomes={"ok": 99, "timeout": 1},
                    response_us=blocks[i].response[0], service_us="", send_lag_us="")
           for s in range(2) for i in range(4)]
    (sample,) = compare.samples_from_intervals(ivs)
    assert len(sample.blocks) == 4 and all(len(b.response) == 2 and b.total == 200 and b.errors == 2 for b in sample.blocks)
    (two,) = compare.samples_from_intervals(ivs, max_blocks=2)
    assert len(two.blocks) == 2 and sum(b.total for b in two.blocks) == 800


# -- recurrences -----------------------------------------------------------------------------------
def _fires(rec: Recurrence, start: datetime, n: int) -> list[datetime]:
    t, out = start.timestamp(), []
    for _ in range(n):
        t = rec.next_after(t)
        out.append(datetime.fromtimestamp(t, ZoneInfo(rec.tz)))
    return out


def test_dst_spring_forward_neither_skips_nor_doubles():
    rec = Recurrence.parse("30 2 * * *", None, "America/New_York", anchor=datetime(2026, 3, 6, tzinfo=UTC).timestamp())
    fires = _fires(rec, datetime(2026, 3, 6, tzinfo=UTC), 4)
    assert [f.day for f in fires] == [6, 7, 8, 9]  # 02:30 on the 8th does not exist: it runs once, at 03:00
    assert (fires[2].hour, fires[2].minute) == (3, 0)
    hourly = Recurrence.parse("15 * * * *", None, "Europe/Berlin", anchor=datetime(2026, 3, 28, tzinfo=UTC).timestamp())
    times = [f.timestamp() for f in _fires(hourly, datetime(2026, 3, 28, 22, tzinfo=UTC), 6)]
    assert all(b - a == 3600 for a, b in zip(times, times[1:], strict=False))  # wildcard hour: real time, every hour


def test_dst_wildcard_hour_follows_real_time_in_the_repeated_hour():
    hourly = Recurrence.parse("30 * * * *", None, "America/New_York", anchor=datetime(2026, 10, 31, tzinfo=UTC).timestamp())
    times = [f.timestamp() for f in _fires(hourly, datetime(2026, 11, 1, 4, tzinfo=UTC), 5)]
    assert all(b - a == 3600 for a, b in zip(times, times[1:], strict=False))  # 01:30 EDT and 01:30 EST both run


def test_dst_fall_back_runs_the_repeated_hour_once():
    rec = Recurrence.parse("30 1 * * *", None, "America/New_York", anchor=datetime(2026, 10, 30, tzinfo=UTC).timestamp())
    fires = _fires(rec, datetime(2026, 10, 30, tzinfo=UTC), 4)
    assert [f.day for f in fires] == [30, 31, 1, 2]  # one run on Nov 1 although 01:30 happens twice
    assert fires[2].utcoffset() == fires[1].utcoffset()  # the first occurrence (still EDT)


def test_utc_cron_and_interval():
    rec = Recurrence.parse("0 */6 * * *", None, None, anchor=datetime(2026, 1, 1, 1, tzinfo=UTC).timestamp())
    assert [f.hour for f in _fires(rec, datetime(2026, 1, 1, 1, tzinfo=UTC), 4)] == [6, 12, 18, 0]
    every = Recurrence.parse(None, "6h", None, anchor=1000.0)
    assert every.next_after(1000.0) == 1000.0 + 6 * 3600 and every.next_after(1000.0 + 6 * 3600) == 1000.0 + 12 * 3600


@pytest.mark.parametrize("cron", ["61 * * * *", "* * *", "* * * * * *", "a b c d e", "0 25 * * *", "0 0 31 2 *"])
def test_bad_cron_is_an_input_error(cron):
    with pytest.raises(InputError):
        rec = Recurrence.parse(cron, None, None)
        rec.next_after(time.time())


def test_bad_every_and_zone_are_input_errors():
    for every, tz in (("0s", None), ("soon", None), ("5m", "Mars/Olympus")):
        with pytest.raises(InputError):
            Recurrence.parse(None, every, tz)
    with pytest.raises(InputError):
        Recurrence.parse("* * * * *", "5m", None)


# -- regression checks over a history ----------------------------------------------------------------
def _entry(run_id: str, start: float, blocks: list[compare.Block]) -> dict:
    sample = compare.Sample("local", "fn", "rust", "echo", "warm", tuple(blocks))
    p = compare.bootstrap_all(blocks, blocks, ("p50", "p99", "p999"), replicates=200)
    return {"run_id": run_id, "name": "svc", "start": start, "groups": [
        {"region": "local", "target": "fn", "runtime": "rust", "phase": "warm", "p50": p["p50"].base,
         "p99": p["p99"].base, "p999": p["p999"].base,
         "error_rate": sum(b.errors for b in blocks) / sum(b.total for b in blocks)}],
        "samples": [{"region": sample.region, "target": sample.target, "runtime": sample.runtime, "workload": "echo",
                     "phase": "warm", "blocks": [b.to_dict() for b in blocks]}]}


def test_planted_regression_is_flagged_and_stable_history_is_not(tmp_path: Path):
    rng = np.random.default_rng(9)
    store = history.FileHistory(tmp_path)
    keep = history.Retention(keep=50, max_age_s=None)
    for i in range(6):
        store.add(_entry(f"run-{i}", 1000.0 + i, synthetic_run(rng, 12, 2000)), keep)
    stable = history.check("svc", store.entries("svc"), replicates=500)
    assert stable.findings and not stable.regressed, stable.message()
    store.add(_entry("run-slow", 2000.0, synthetic_run(rng, 12, 2000, scale=1.3)), keep)
    slow = history.check("svc", store.entries("svc"), replicates=500)
    assert slow.regressed and slow.newest == "run-slow"
    p99 = next(f for f in slow.findings if f.metric == "p99")
    assert p99.regressed and p99.window == tuple(f"run-{i}" for i in range(6))
    assert "regressed" in slow.message() and "fn p99 in run-slow is " in slow.message()


def test_too_little_history_gives_no_verdict(tmp_path: Path):
    rng = np.random.default_rng(2)
    entries = [_entry(f"r{i}", float(i), synthetic_run(rng, 6, 500)) for i in range(2)]
    result = history.check("svc", entries)
    assert not result.regressed and result.verdict.startswith("no verdict")
