import random

import pytest

from orchestrator.run.collect import Collector
from workers import histograms
from workers.contract import SCHEMA_VERSION, Interval, SchemaError, Shard, Target


def test_merge_of_parts_equals_recording_everything_at_once():
    rng = random.Random(1)
    values = [int(rng.lognormvariate(8, 1.2)) for _ in range(20_000)]
    whole = histograms.new_histogram()
    histograms.fill(whole, values)
    parts = []
    for chunk in (values[:7000], values[7000:15000], values[15000:]):
        h = histograms.new_histogram()
        histograms.fill(h, chunk)
        parts.append(histograms.encode(h))
    merged = histograms.merge(parts)
    assert merged.get_total_count() == whole.get_total_count() == 20_000
    for p in (50, 90, 99, 99.9, 100):
        assert merged.get_value_at_percentile(p) == whole.get_value_at_percentile(p)


def test_fast_fill_equals_record_value_one_by_one():
    rng = random.Random(2)
    values = [int(rng.lognormvariate(9, 2)) for _ in range(50_000)] + [1, 2047, 2048, 2049, 10**9]
    slow = histograms.new_histogram()
    for v in values:
        slow.record_value(v)
    fast = histograms.new_histogram()
    histograms.fill(fast, values[:20_000])
    histograms.fill(fast, values[20_000:])
    assert histograms.encode(fast) == histograms.encode(slow)
    assert (fast.get_min_value(), fast.get_max_value()) == (slow.get_min_value(), slow.get_max_value())


def test_values_out_of_range_are_counted_not_dropped():
    h = histograms.new_histogram()
    oor = histograms.fill(h, [5, histograms.HIGHEST_US * 10, histograms.HIGHEST_US * 2])
    assert oor == 2
    assert h.get_total_count() == 3


def test_three_significant_digits():
    h = histograms.new_histogram()
    histograms.fill(h, [123_456])
    assert h.get_value_at_percentile(50) == pytest.approx(123_456, rel=1e-3)


def _interval(seq: int, attempt: int = 0, value: int = 1000) -> Interval:
    h = histograms.new_histogram()
    histograms.fill(h, [value] * 10)
    enc = histograms.encode(h)
    return Interval(run_id="r", shard_id="s", attempt=attempt, seq=seq, region="local", target="t",
                    runtime="rust", phase="warm", t0=0.0, t1=1.0, intended=10, sent=10, completed=10,
                    outcomes={"ok": 10}, response_us=enc, service_us=enc, send_lag_us=enc)


def test_codec_round_trip_carries_schema_version():
    iv = _interval(3)
    raw = iv.to_json()
    assert b'"schema_version":%d' % SCHEMA_VERSION in raw
    assert Interval.from_json(raw) == iv
    shard = Shard(run_id="r", shard_id="s", region="x", target=Target(name="t", runtime="go", platform="http",
                  url="http://127.0.0.1:1/", headers=(("a", "b"),)), phase="warm",
                  arrival={"kind": "constant", "rps": "1/3"}, start_at=1.5, duration_s=2.0)
    assert Shard.from_json(shard.to_json()) == shard


def test_a_record_of_another_schema_version_is_refused():
    d = _interval(0).to_dict()
    d["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(SchemaError, match="schema_version"):
        Interval.from_dict(d)


def test_collector_drops_duplicates_by_shard_attempt_seq():
    c = Collector("r", {"warm": 2.0})
    assert c.take(_interval(0)) and c.take(_interval(1)) and c.take(_interval(0, attempt=1))
    assert not c.take(_interval(1))  # redelivered
    row = c.group_rows()[0]
    assert row.completed == 30 and c.duplicates == 1
    assert row.response_ms.p99 == pytest.approx(1.0, rel=1e-3)


def test_merge_encoded_equals_merge_and_makes_no_histogram_per_item(monkeypatch):
    from hdrh.histogram import HdrHistogram

    rng = random.Random(7)
    encoded = []
    for _ in range(5):
        h = histograms.new_histogram()
        histograms.fill(h, [rng.randint(1, 5_000_000) for _ in range(500)])
        encoded.append(histograms.encode(h))
    want = histograms.decode(histograms.encode(histograms.merge(encoded)))

    def no_decode(*a, **kw):
        raise AssertionError("a histogram object per merged item")

    monkeypatch.setattr(HdrHistogram, "decode", staticmethod(no_decode))
    got_text = histograms.merge_encoded([*encoded, ""])
    monkeypatch.undo()
    got = histograms.decode(got_text)
    assert list(got.counts) == list(want.counts) and got.get_total_count() == 2500
    assert (got.get_min_value(), got.get_max_value()) == (want.get_min_value(), want.get_max_value())
    assert histograms.merge_encoded(["", ""]) == ""
