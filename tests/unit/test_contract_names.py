"""Renamed record fields: new names on the wire, old records still decode, old names still read."""

from workers.contract import Interval, Shard, Target


def _interval(**extra):
    d = dict(run_id="r", shard_id="s", attempt=0, seq=0, region="local", target="t", runtime="go", phase="warm",
             t0=0.0, t1=1.0, intended=1, sent=1, completed=1, outcomes={"ok": 1}, response_us="", service_us="",
             send_lag_us="", schema_version=1)
    d.update(extra)
    return d


def test_peak_in_flight_is_written_and_old_max_in_flight_records_decode():
    iv = Interval.from_dict(_interval(peak_in_flight=7))
    assert iv.to_dict()["peak_in_flight"] == 7 and "max_in_flight" not in iv.to_dict()
    old = Interval.from_dict(_interval(max_in_flight=5, billed_ms=12.5))  # before the rename; billed_ms retired
    assert old.peak_in_flight == 5 and old.max_in_flight == 5
    assert "billed_ms" not in old.to_dict()
    assert Interval.from_json(old.to_json()) == old


def test_counters_round_trip():
    iv = Interval.from_dict(_interval(counters={"connections_opened": 3}))
    assert Interval.from_json(iv.to_json()).counters == {"connections_opened": 3}


def test_part_offset_is_written_and_old_part_phase_shards_decode():
    target = Target(name="t", runtime="go", platform="http", url="http://127.0.0.1:1/")
    shard = Shard(run_id="r", shard_id="s", region="local", target=target, phase="warm",
                  arrival={"kind": "constant", "rps": "1"}, start_at=0.0, duration_s=1.0, part_offset="1/4")
    d = shard.to_dict()
    assert d["part_offset"] == "1/4" and "part_phase" not in d
    d["part_phase"] = d.pop("part_offset")  # a task written before the rename
    old = Shard.from_dict(d)
    assert old == shard and old.part_phase == "1/4"
