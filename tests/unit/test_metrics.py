import threading
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from workers import histograms
from workers.contract import Interval
from workers.metrics import _GRID_GUARD_S as GUARD
from workers.metrics import BUCKETS_S, IntervalMetrics


def interval(seq: int, values_us: list[int], outcomes: dict[str, int], warmup: bool = False, *, t0: float | None = None,
             span: float = 1.0, final: bool = False, shard: str = "s") -> Interval:
    h = histograms.new_histogram()
    histograms.fill(h, values_us)
    enc = histograms.encode(h)
    t0 = 100.0 + seq if t0 is None else t0
    return Interval(run_id="r1", shard_id=shard, attempt=0, seq=seq, region="eu-west-1", target="fn", runtime="go",
                    phase="warm", t0=t0, t1=t0 + span, intended=sum(outcomes.values()),
                    sent=sum(outcomes.values()), completed=sum(outcomes.values()), outcomes=outcomes,
                    response_us=enc, service_us=enc, send_lag_us=enc, warmup=warmup, peak_in_flight=7, final=final)


def scrape_ts(m: IntervalMetrics) -> dict[str, tuple[float, float | None]]:
    """Exposition text → {'name{sorted labels}': (value, timestamp s or None)}, independent of label order."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(m)
    out = {}
    for line in generate_latest(reg).decode().splitlines():
        if line and not line.startswith("#"):
            series, _, rest = line.rpartition("}")
            if not series:
                series, _, rest = line.partition(" ")
            value, _, ts = rest.strip().partition(" ")
            name, _, labels = series.partition("{")
            out[key(name, labels)] = (float(value), int(ts) / 1000 if ts else None)
    return out


def scrape(m: IntervalMetrics) -> dict[str, float]:
    return {k: v for k, (v, _) in scrape_ts(m).items()}


def key(name: str, labels: str) -> str:
    return name + "{" + ",".join(sorted(labels.split(","))) + "}"


LAG_1S = 2.5  # the lag of 1 s flushes: 1.25 spans + the margin, rounded up to half a second
LABELS = 'run="r1",region="eu-west-1",target="fn",runtime="go",phase="warm"'
OK = key("fnbench_requests_total", f'{LABELS},outcome="ok"')
INF = key("fnbench_response_time_seconds_bucket", f'{LABELS},le="+Inf"')
COUNT = key("fnbench_response_time_seconds_count", LABELS)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def feed(m: IntervalMetrics, clock: Clock, iv: Interval) -> None:
    """observe() as the interval arrives, 10 ms after its end (the arrival delay sets the lag)."""
    now, clock.now = clock.now, iv.t1 + 0.01
    m.add(iv)
    clock.now = now


def test_counters_and_histograms_carry_the_interval_values():
    m = IntervalMetrics()
    m.add(interval(0, [1_000] * 90 + [100_000] * 10, {"ok": 100}))
    m.add(interval(1, [2_000] * 50, {"ok": 50, "http_5xx": 3}))
    m.add(interval(2, [9_000_000] * 1000, {"ok": 1000}, warmup=True))  # warm-up is not exported
    got = scrape(m)
    assert got[OK] == 150
    assert got[key('fnbench_requests_total', f'{LABELS},outcome="http_5xx"')] == 3
    assert got[key("fnbench_intended_requests_total", LABELS)] == 153
    assert got[COUNT] == 150
    assert abs(got[key("fnbench_response_time_seconds_sum", LABELS)] - (90 * 0.001 + 10 * 0.1 + 50 * 0.002)) < 0.01
    # Cumulative buckets: everything at or below 1.2 ms is the 90 one-millisecond values.
    le = min(b for b in BUCKETS_S if b >= 0.0012)
    assert got[key('fnbench_response_time_seconds_bucket', f'{LABELS},le="{le!r}"')] == 90
    assert got[INF] == 150


def test_buckets_are_fine_enough_for_histogram_quantile():
    ratios = [b / a for a, b in zip(BUCKETS_S, BUCKETS_S[1:], strict=False)]
    assert max(ratios) < 1.2 and BUCKETS_S[0] <= 0.0001 and BUCKETS_S[-1] >= 60


def test_samples_lag_by_one_span_and_spread_each_interval_over_it():
    """Exported times trail the scrapes by one flush span plus the margin, and counts there are
    the share of the interval covering them, not a once-per-flush step."""
    lag = LAG_1S
    clock = Clock(103.5)
    m = IntervalMetrics(clock)
    for seq in range(4):
        feed(m, clock, interval(seq, [1_000] * 100, {"ok": 100}, t0=100.0 + seq, span=1.0))
    seen = []
    for now in (103.5, 104.5, 105.5):
        clock.now = now
        got = scrape_ts(m)
        value, ts = got[OK]
        tau = now - GUARD - lag
        assert ts == pytest.approx(tau, abs=1e-3)
        assert value == pytest.approx(100 * (tau - 100.0), abs=1e-3)
        # The histogram moves with the counter: same share, same timestamp, +Inf == count.
        assert got[INF] == got[COUNT] and got[COUNT][0] == pytest.approx(value)
        assert got[INF][1] == ts
        seen.append(ts)
    # A scrape that reaches the process late is exported on the same one-second grid.
    clock.now = 106.5 + 0.4
    assert scrape_ts(m)[OK][1] == pytest.approx(106.5 - GUARD - lag, abs=1e-3)


def test_time_never_moves_back_and_a_scrape_in_the_same_tick_repeats_its_samples():
    clock = Clock(104.0)
    m = IntervalMetrics(clock)
    for seq in range(4):
        feed(m, clock, interval(seq, [1_000] * 10, {"ok": 10}, t0=100.0 + seq, span=1.0))
    first = scrape_ts(m)
    assert first[OK] == (pytest.approx(15.0 - 10 * GUARD), pytest.approx(104.0 - GUARD - LAG_1S))
    # A late interval for the time before tau arrives; a second scrape within the same tick
    # repeats the samples exactly (a new value at an old timestamp would be rejected).
    feed(m, clock, interval(0, [1_000] * 10, {"ok": 10}, t0=100.5, span=1.0, shard="late"))
    clock.now = 104.3
    timed = {k: v for k, v in scrape_ts(m).items() if v[1] is not None}  # the gauges are levels of now
    assert timed == {k: v for k, v in first.items() if v[1] is not None}
    # A much longer flush raises the lag from 2.5 to 4.5 s; it is taken up 0.1 s a tick, so the
    # samples stay evenly spaced (0.9 s) instead of stalling; the late counts are in: a step up.
    feed(m, clock, interval(4, [1_000] * 26, {"ok": 26}, t0=104.0, span=2.6))
    values, stamps = [], []
    for k in range(1, 6):
        clock.now = 104.0 + k
        value, ts = scrape_ts(m)[OK]
        values.append(value)
        stamps.append(ts)
    assert [round(b - a, 3) for a, b in zip(stamps, stamps[1:], strict=False)] == [0.9] * 4
    assert values[0] == pytest.approx(10 * (stamps[0] - 100.0) + 10.0)
    assert values == sorted(values)


def test_finished_shards_keep_their_pace_to_the_end_then_stay_at_their_exact_totals():
    clock = Clock(103.0)
    m = IntervalMetrics(clock)
    for seq in range(2):
        feed(m, clock, interval(seq, [1_000] * 40, {"ok": 40}, t0=100.0 + seq, span=1.0))
    # The final interval: 10 responses at the pace of 40/s, then a drain and a slow close.
    feed(m, clock, interval(2, [1_000] * 10, {"ok": 10}, t0=102.0, span=0.9, final=True))
    assert scrape_ts(m)[OK][1] == pytest.approx(103.0 - GUARD - LAG_1S)  # no jump: rate() stays right
    clock.now = 106.0
    assert scrape_ts(m)[OK] == (90, pytest.approx(106.0 - GUARD - LAG_1S))
    assert scrape_ts(m)[INF][0] == 90


def test_the_final_interval_is_spread_at_the_pace_not_over_the_close():
    clock = Clock(102.0)
    m = IntervalMetrics(clock)
    feed(m, clock, interval(0, [1_000] * 40, {"ok": 40}, t0=100.0, span=1.0))
    feed(m, clock, interval(0, [1_000] * 40, {"ok": 40}, t0=100.0, span=1.0, shard="other"))  # still running
    feed(m, clock, interval(1, [1_000] * 10, {"ok": 10}, t0=101.0, span=0.9, final=True))
    clock.now = 101.1 + GUARD + LAG_1S  # tau = 101.1: within the final's 0.25 s of pacing
    value, ts = scrape_ts(m)[OK]
    assert ts == pytest.approx(101.1)
    assert value == pytest.approx(80 + 4.0)


def test_wait_scraped_returns_once_the_final_values_were_exported():
    m = IntervalMetrics()
    assert m.wait_scraped(1.0) is False  # never scraped: nothing to wait for
    now = time.time()
    m.add(interval(0, [1_000] * 5, {"ok": 5}, t0=now - 1.0, span=0.5))
    scrape(m)
    m.add(interval(1, [1_000] * 5, {"ok": 5}, t0=now - 0.5, span=0.5, final=True))
    assert m.wait_scraped(0.2) is False
    def scraper() -> None:  # two scrapes (the first may not have reached Prometheus in time)
        for _ in range(2):
            time.sleep(0.3)
            scrape(m)

    thread = threading.Thread(target=scraper)
    thread.start()
    # Its pace would reach the end only in ~1.5 s: the scrapes before the deadline jump.
    assert m.wait_scraped(1.5) is True
    assert scrape(m)[OK] == 10
    thread.join()


def test_scrapes_before_the_final_interval_do_not_count_as_having_exported_it():
    # Scrapes while nothing has finished export no final values; a final interval arriving after
    # them must still be waited for (it was not: the last seconds of a run never reached Prometheus).
    m = IntervalMetrics()
    now = time.time()
    m.add(interval(0, [1_000] * 5, {"ok": 5}, t0=now - 1.0, span=0.5))
    for _ in range(3):
        scrape(m)
    m.add(interval(1, [1_000] * 5, {"ok": 5}, t0=now - 0.5, span=0.5, final=True))
    assert m.wait_scraped(0.2) is False  # no scrape since: not exported


def test_intervals_that_arrive_late_raise_the_lag():
    clock = Clock(103.0)  # the interval ended at 101.0: it arrived 2 s late
    m = IntervalMetrics(clock)
    m.add(interval(0, [1_000] * 10, {"ok": 10}, t0=100.0, span=1.0))
    assert scrape_ts(m)[OK][1] == pytest.approx(103.0 - GUARD - 4.5)  # 1.25 spans + 1.5 x the delay


def test_unscraped_metrics_stay_bounded_and_keep_every_count():
    """Nobody scrapes /metrics (a soak without Prometheus): the intervals must not pile up (issue 27
    item 9: the worker's main process grew ~5 MB/h this way), and the first scrape still shows all."""
    from workers.metrics import _FOLD_BEHIND_S, _MARGIN_MAX_S

    clock = Clock(0.0)
    m = IntervalMetrics(clock)
    n = 2_000
    for seq in range(n):  # 2,000 five-second intervals: ~2.8 hours
        feed(m, clock, interval(seq, [1_000] * 10, {"ok": 10}, t0=100.0 + 5 * seq, span=5.0))
    (series,) = m._series.values()
    span_kept = 2 * series.lag + _MARGIN_MAX_S + _FOLD_BEHIND_S
    assert len(series.pending) <= span_kept / 5 + 2, len(series.pending)
    clock.now = 100.0 + 5 * n + 60
    got = scrape(m)
    assert got[OK] == 10 * n and got[COUNT] == 10 * n


def test_a_finished_label_set_is_dropped_after_it_was_kept_for_a_while():
    from workers.metrics import SERIES_KEPT_S

    clock = Clock(0.0)
    m = IntervalMetrics(clock)
    feed(m, clock, interval(0, [1_000] * 10, {"ok": 10}, t0=100.0))
    feed(m, clock, interval(1, [1_000] * 10, {"ok": 10}, t0=101.0, final=True))
    clock.now = 110.0
    assert scrape(m)[OK] == 20
    clock.now = 102.0 + SERIES_KEPT_S - 5
    assert OK in scrape(m)  # kept well past Prometheus' lookback
    clock.now = 102.0 + SERIES_KEPT_S + 5
    got = scrape(m)
    assert OK not in got and not m._series and not m._in_flight and not m._intended_rps
