from fractions import Fraction

import pytest

from orchestrator.run import plan, spec
from workers import arrivals


def bench(load: str, duration: str = "12s", extra: str = "") -> spec.Benchmark:
    return spec.load_text(
        f"name: p\nregions: [us-east-1, eu-west-1]\n"
        f"targets: [{{name: a, url: 'http://127.0.0.1:1/'}}, {{name: b, url: 'http://127.0.0.1:2/'}}]\n"
        f"load: {load}\nduration: {duration}\nsharding: {{max_rps_per_shard: 300, slice: 5s}}\n{extra}"
    )


def test_shard_rates_add_up_exactly_to_the_requested_rate():
    b = bench("{executor: constant, rps: 1000}")
    shards = plan.split(b, "r", 1000.0, min_parts=1)
    groups: dict[tuple, set] = {}
    for s in shards:
        groups.setdefault(s.group, set()).add((s.part_phase, s.arrival["rps"]))
    assert len(groups) == 4  # 2 regions × 2 targets × warm
    for parts in groups.values():
        assert len(parts) == 4  # ceil(1000 / 300)
        assert sum(Fraction(rps) for _, rps in parts) == 1000  # exact, not approximately


def test_split_schedules_interleave_into_exactly_the_unsplit_schedule():
    for load in ("{executor: constant, rps: 997}", "{executor: ramp, from_rps: 50, to_rps: 950}",
                 "{executor: steps, steps: [{duration: 4s, rps: 333}, {duration: 8s, rps: 777}]}"):
        b = bench(load)
        whole = list(b.schedule().iter_due(0, b.duration))
        shards = [s for s in plan.split(b, "r", 0.0, min_parts=3) if s.group == ("us-east-1", "a", "warm")]
        got = []
        for s in shards:
            sched = arrivals.from_dict(s.arrival)
            got += list(sched.iter_due(s.offset_s, s.offset_s + s.duration_s, float(Fraction(s.part_phase))))
        assert len(got) == len(whole), load
        assert sorted(got) == pytest.approx(whole, abs=1e-9), load


def test_long_runs_are_cut_into_slices_with_absolute_start_times():
    b = bench("{executor: constant, rps: 10}", duration="12s")
    shards = [s for s in plan.split(b, "r", 1000.0) if s.group == ("us-east-1", "a", "warm")]
    assert [(s.start_at, s.duration_s, s.offset_s) for s in shards] == [
        (1000.0, 5.0, 0.0), (1005.0, 5.0, 5.0), (1010.0, 2.0, 10.0)]


def test_plan_is_deterministic_and_warmup_comes_first():
    b = bench("{executor: constant, rps: 10}", extra="warmup: 3s\n")
    a1, a2 = plan.split(b, "r", 5.0), plan.split(b, "r", 5.0)
    assert a1 == a2
    warm = [s for s in a1 if s.warmup]
    assert warm and all(s.start_at == 5.0 for s in warm)
    assert min(s.start_at for s in a1 if not s.warmup) == 8.0
    assert len({s.seed for s in a1}) == len(a1)


def test_max_in_flight_is_split_with_the_rate():
    b = bench("{executor: constant, rps: 1000, max_in_flight: 100}")
    s = plan.split(b, "r", 0.0)[0]
    assert s.max_in_flight == 25


def test_targets_get_the_same_rate_but_never_the_same_instants():
    b = bench("{executor: constant, rps: 1000}")
    shards = plan.split(b, "r", 0.0, min_parts=2)

    def offsets(target: str) -> list[float]:
        out = []
        for s in shards:
            if s.group == ("us-east-1", target, "warm"):
                sched = arrivals.from_dict(s.arrival)
                out += sched.iter_due(s.offset_s, s.offset_s + s.duration_s, float(Fraction(s.part_phase)))
        return sorted(out)

    a, c = offsets("a"), offsets("b")
    assert len(a) == len(c) == 12_000
    assert set(a).isdisjoint(c)
    # b's grid is a's shifted by half an arrival gap (two targets → stagger 1/2).
    assert c[:3] == pytest.approx([0.0005, 0.0015, 0.0025])


def test_a_local_target_carries_its_instance_count_and_nothing_to_execute():
    b = spec.load_text("name: x\ntargets: [{name: f, runtime: go, platform: local, workload: echo, instances: 3}]\n"
                       "load: {executor: constant, rps: 10}\nduration: 2s\n")
    (shard,) = plan.split(b, "r", 0.0)
    assert shard.target.address == {"instances": 3}
