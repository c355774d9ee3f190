from prometheus_client import CollectorRegistry, generate_latest

from workers import recorder
from workers.contract import Interval
from workers.metrics import BUCKETS_S, IntervalMetrics


def interval(seq: int, values_us: list[int], outcomes: dict[str, int], warmup: bool = False) -> Interval:
    h = recorder.new_histogram()
    recorder.fill(h, values_us)
    enc = recorder.encode(h)
    return Interval(run_id="r1", shard_id="s", attempt=0, seq=seq, region="eu-west-1", target="fn", runtime="go",
                    phase="warm", t0=100.0 + seq, t1=101.0 + seq, intended=sum(outcomes.values()),
                    sent=sum(outcomes.values()), completed=sum(outcomes.values()), outcomes=outcomes,
                    response_us=enc, service_us=enc, send_lag_us=enc, warmup=warmup, peak_in_flight=7)


def scrape(m: IntervalMetrics) -> dict[str, float]:
    """Exposition text → {'name{sorted labels}': value}, so lookups do not depend on label order."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(m)
    out = {}
    for line in generate_latest(reg).decode().splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            name, _, labels = series.partition("{")
            out[key(name, labels.rstrip("}"))] = float(value)
    return out


def key(name: str, labels: str) -> str:
    return name + "{" + ",".join(sorted(labels.split(","))) + "}"


LABELS = 'run="r1",region="eu-west-1",target="fn",runtime="go",phase="warm"'


def test_counters_and_histograms_carry_the_interval_values():
    m = IntervalMetrics()
    m.observe(interval(0, [1_000] * 90 + [100_000] * 10, {"ok": 100}))
    m.observe(interval(1, [2_000] * 50, {"ok": 50, "http_5xx": 3}))
    m.observe(interval(2, [9_000_000] * 1000, {"ok": 1000}, warmup=True))  # warm-up is not exported
    got = scrape(m)
    assert got[key('fnbench_requests_total', f'{LABELS},outcome="ok"')] == 150
    assert got[key('fnbench_requests_total', f'{LABELS},outcome="http_5xx"')] == 3
    assert got[key("fnbench_intended_requests_total", LABELS)] == 153
    assert got[key("fnbench_response_time_seconds_count", LABELS)] == 150
    assert abs(got[key("fnbench_response_time_seconds_sum", LABELS)] - (90 * 0.001 + 10 * 0.1 + 50 * 0.002)) < 0.01
    # Cumulative buckets: everything at or below 1.2 ms is the 90 one-millisecond values.
    le = min(b for b in BUCKETS_S if b >= 0.0012)
    assert got[key('fnbench_response_time_seconds_bucket', f'{LABELS},le="{le!r}"')] == 90
    assert got[key('fnbench_response_time_seconds_bucket', f'{LABELS},le="+Inf"')] == 150


def test_buckets_are_fine_enough_for_histogram_quantile():
    ratios = [b / a for a, b in zip(BUCKETS_S, BUCKETS_S[1:], strict=False)]
    assert max(ratios) < 1.2 and BUCKETS_S[0] <= 0.0001 and BUCKETS_S[-1] >= 60
