from fractions import Fraction

import pytest

from workers import arrivals


def test_constant_is_evenly_spaced():
    s = arrivals.Constant(Fraction(4))
    assert list(s.iter_due(0, 1)) == [0.0, 0.25, 0.5, 0.75]


def test_ramp_count_is_the_integral_of_the_rate():
    s = arrivals.Ramp(Fraction(10), Fraction(110), Fraction(10))
    due = list(s.iter_due(0, 10))
    assert len(due) == pytest.approx(600, abs=1)
    # The rate rises: the last second holds ~10x the arrivals of the first.
    first = sum(1 for t in due if t < 1)
    last = sum(1 for t in due if t >= 9)
    assert first == pytest.approx(15, abs=1) and last == pytest.approx(105, abs=1)


def test_ramp_down_and_hold_after_ramp():
    s = arrivals.Ramp(Fraction(100), Fraction(0), Fraction(2))
    assert len(list(s.iter_due(0, 5))) == pytest.approx(100, abs=1)
    up = arrivals.Ramp(Fraction(0), Fraction(10), Fraction(2))
    assert len(list(up.iter_due(2, 4))) == 20  # holds to_rps after the ramp


def test_steps_follow_each_rate_and_skip_zero_steps():
    s = arrivals.Steps(((Fraction(1), Fraction(10)), (Fraction(1), Fraction(0)), (Fraction(1), Fraction(20))))
    due = list(s.iter_due(0, 3))
    assert sum(1 for t in due if t < 1) == 10
    assert sum(1 for t in due if 1 <= t < 2) == 0
    assert sum(1 for t in due if t >= 2) == 20


def test_poisson_is_reproducible_from_its_seed_and_has_the_mean_rate():
    s = arrivals.Poisson(Fraction(1000))
    a = list(s.iter_due(0, 10, seed=42))
    assert a == list(s.iter_due(0, 10, seed=42))
    assert a != list(s.iter_due(0, 10, seed=43))
    assert len(a) == pytest.approx(10_000, rel=0.05)


def test_each_schedule_validates_its_own_parameters():
    assert arrivals.Constant(Fraction(0)).validate() == [("rps", "must be > 0, got 0")]
    assert {f for f, _ in arrivals.Ramp(Fraction(-1), Fraction(0), Fraction(0)).validate()} == {"from_rps", "over_s"}
    assert arrivals.Steps(()).validate()[0][0] == "steps"
    assert arrivals.Steps(((Fraction(0), Fraction(-1)),)).validate() == [
        ("steps[0].duration_s", "must be > 0"),
        ("steps[0].rps", "must be >= 0"),
    ]


@pytest.mark.parametrize("kind", ["constant", "ramp", "steps", "poisson"])
def test_schedules_round_trip_through_plain_data(kind):
    d = {
        "constant": {"kind": "constant", "rps": "10/3"},
        "poisson": {"kind": "poisson", "rps": "5"},
        "ramp": {"kind": "ramp", "from_rps": "1", "to_rps": "7/2", "over_s": "10"},
        "steps": {"kind": "steps", "steps": [{"duration_s": "2", "rps": "1/3"}]},
    }[kind]
    s = arrivals.from_dict(d)
    assert arrivals.from_dict(s.to_dict()) == s


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown arrival kind"):
        arrivals.from_dict({"kind": "zigzag"})


def test_every_module_is_one_registered_executor_and_the_loop_is_written_once():
    import pkgutil

    modules = {m.name for m in pkgutil.iter_modules(arrivals.__path__)} - {"base"}
    assert set(arrivals.EXECUTORS) == set(arrivals.SCHEDULES) == modules  # one file per profile
    for kind, cls in arrivals.SCHEDULES.items():
        assert cls.kind == kind and arrivals.EXECUTORS[kind]().executor == kind
    # One due-time loop; Poisson (random times) is the only other one and inherits the rest.
    for cls in (arrivals.Constant, arrivals.Ramp, arrivals.Steps):
        assert cls.iter_due is arrivals.Schedule.iter_due
    assert issubclass(arrivals.Poisson, arrivals.Constant)
    assert {"rate_at", "count", "offset_fn", "peak_rps", "scaled", "validate"}.isdisjoint(vars(arrivals.Poisson))
    assert arrivals.Poisson(Fraction(6)).scaled(Fraction(1, 3)) == arrivals.Poisson(Fraction(2))


def test_offset_of_is_the_loop_formula():
    for s in (arrivals.Constant(Fraction(7)), arrivals.Ramp(Fraction(3), Fraction(11), Fraction(5)),
              arrivals.Steps(((Fraction(2), Fraction(4)), (Fraction(1), Fraction(0)), (Fraction(3), Fraction(9))))):
        due = list(s.iter_due(0, 6, 0.25))
        assert due == [s.offset_of(i + 0.25) for i in range(len(due))]


def test_slices_share_each_arrival_exactly_once():
    s = arrivals.Ramp(Fraction(1, 3), Fraction(997, 7), Fraction(9))
    whole = list(s.iter_due(0, 12, 0.5))
    cuts = [0, 0.1, 1.7, 3.3333, 5, 9, 11.99, 12]
    parts = [t for lo, hi in zip(cuts, cuts[1:], strict=False) for t in s.iter_due(lo, hi, 0.5)]
    assert parts == whole


def test_constant_hot_path_stays_inline():
    # The evenly spaced case hands the loop a float gap, not a function called per arrival.
    assert isinstance(arrivals.Constant(Fraction(5)).offset_fn(), float)
    assert len(list(arrivals.Constant(Fraction(100_000)).iter_due(0, 10))) == 1_000_000
