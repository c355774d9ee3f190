"""Lambda cost arithmetic against AWS Lambda Power Tuning's formula, and its way into results and metrics."""

import datetime
import json
import math

import pytest

from orchestrator.analysis import cost
from orchestrator.run.collect import Collector
from workers.contract import Interval
from workers.metrics import IntervalMetrics
from workers.platforms.aws_lambda import runtimes
from workers.platforms.aws_lambda.report import parse_text

X86 = cost.price_for("us-east-1", "x86_64")
ARM = cost.price_for("us-east-1", "arm64")


def power_tuning(billed_ms, memory_mb, base_cost_per_ms_128mb):
    # aws-lambda-power-tuning lambda/utils.js computePrice(minCost, minRAM, value, duration):
    # Math.ceil(duration) * minCost * (value / minRAM), minRAM = 128.
    return math.ceil(billed_ms) * base_cost_per_ms_128mb * (memory_mb / 128)


def test_reference_prices():
    assert (X86.gb_s_usd, ARM.gb_s_usd) == (0.0000166667, 0.0000133334)
    assert X86.request_usd == ARM.request_usd == pytest.approx(0.20 / 1e6)
    # Power Tuning's published base costs for 1 ms at 128 MB in us-east-1 (2.1e-9 x86, 1.7e-9 arm64) are these, rounded.
    assert X86.per_ms_128mb == pytest.approx(2.0833375e-9) and round(X86.per_ms_128mb, 10) == 2.1e-9
    assert round(ARM.per_ms_128mb, 10) == 1.7e-9


def test_tiers():
    assert cost.price_for("us-east-1", "x86_64", tier_offset_gb_s=7e9).gb_s_usd == 0.0000150000
    assert cost.price_for("us-east-1", "x86_64", tier_offset_gb_s=16e9).gb_s_usd == 0.0000133334
    assert cost.price_for("us-east-1", "arm64", tier_offset_gb_s=7e9).gb_s_usd == 0.0000133334
    assert cost.price_for("us-east-1", "arm64", tier_offset_gb_s=8e9).gb_s_usd == 0.0000120001
    assert cost.price_for("ap-nowhere-9", "x86_64") is None  # no guessed price


@pytest.mark.parametrize("line", [
    "REPORT RequestId: a\tDuration: 469.40 ms\tBilled Duration: 500 ms\tMemory Size: 1024 MB\tMax Memory Used: 21 MB\tInit Duration: 100.99 ms",
    "REPORT RequestId: b\tDuration: 1.21 ms\tBilled Duration: 2 ms\tMemory Size: 128 MB\tMax Memory Used: 18 MB\t",
    "REPORT RequestId: c\tDuration: 15.54 ms\tBilled Duration: 346 ms\tMemory Size: 3008 MB\tMax Memory Used: 157 MB\tRestore Duration: 516.24 ms\tBilled Restore Duration: 330 ms",
])
@pytest.mark.parametrize("price", [X86, ARM])
def test_invocation_cost_is_power_tunings_formula(line, price):
    r = parse_text(line)
    billed = r.billed_total_ms  # Billed Duration (it includes Billed Restore Duration)
    expected = power_tuning(billed, r.memory_mb, price.per_ms_128mb)
    assert cost.invocation_cost(billed, r.memory_mb, price) == pytest.approx(expected, rel=1e-12)
    assert cost.invocation_cost(billed, r.memory_mb, price, with_requests=True) == pytest.approx(expected + 0.2e-6, rel=1e-12)
    # the same as GB-s x price per GB-s
    assert cost.gb_seconds(billed, r.memory_mb) * price.gb_s_usd == pytest.approx(expected, rel=1e-12)


def test_worked_example():
    # 500 ms at 1024 MB on x86_64: 0.5 GB-s x $0.0000166667 = $0.00000833335; + $0.0000002 per request.
    assert cost.invocation_cost(500, 1024, X86) == pytest.approx(8.33335e-6)
    assert cost.invocation_cost(500, 1024, X86, with_requests=True) == pytest.approx(8.53335e-6)


def test_pricing_page_example_1():
    # aws.amazon.com/lambda/pricing (the page's "Example 1" in its 100 ms-billing edition): 512 MB, 3M
    # invocations of 1 s, $0.00001667 per GB-s, free tier 400,000 GB-s and 1M requests:
    # compute (1,500,000 - 400,000) GB-s x $0.00001667 = $18.34; requests 2M x $0.2/M = $0.40; total $18.74.
    page = cost.Price("us-east-1", "x86_64", 0.00001667, 0.20 / 1e6, "page")
    bill = cost.monthly_charges(3_000_000, 1000, 512, page, free_gb_s=400_000, free_requests=1_000_000)
    assert bill["gb_s"] == 1_500_000
    assert round(bill["compute_usd"], 2) == 18.34 and round(bill["request_usd"], 2) == 0.40
    assert round(bill["total_usd"], 2) == 18.74
    # Without the free tier it is the per-invocation formula times the count.
    plain = cost.monthly_charges(3_000_000, 1000, 512, page)
    assert plain["compute_usd"] == pytest.approx(3_000_000 * cost.invocation_cost(1000, 512, page))


def test_provisioned_concurrency_prices():
    # us-east-1 (aws.amazon.com/lambda/pricing, Price List usage types Lambda-Provisioned-Concurrency[-ARM]
    # and Lambda-Provisioned-GB-Second[-ARM]).
    assert (X86.provisioned_gb_s_usd, X86.provisioned_duration_gb_s_usd) == (0.0000041667, 0.0000097222)
    assert (ARM.provisioned_gb_s_usd, ARM.provisioned_duration_gb_s_usd) == (0.0000033334, 0.0000077778)
    assert X86.to_address()["provisioned_duration_gb_s_usd"] == 0.0000097222
    # Billed from enabled to disabled, rounded up to the nearest five minutes.
    assert [cost.provisioned_seconds(s) for s in (0, 1, 300, 301, 7200)] == [0, 300, 300, 600, 7200]


def test_pricing_page_provisioned_concurrency_example():
    # aws.amazon.com/lambda/pricing, "Provisioned Concurrency Pricing", example 1: 1,024 MB, provisioned
    # concurrency 1,000 enabled for two hours, 1.2M invocations of 1 s in those hours:
    # 1,000 GB x 7,200 s = 7.2M GB-s x $0.0000041667 = $30.00; 1.2M GB-s x $0.0000097222 = $11.67;
    # 1.2M requests x $0.20/M = $0.24; total $41.91.
    bill = cost.provisioned_charges(1000, 1024, 7200, 1_200_000, 1000, X86)
    assert bill["provisioned_gb_s"] == 7_200_000 and bill["gb_s"] == 1_200_000
    assert round(bill["provisioned_usd"], 2) == 30.00 and round(bill["compute_usd"], 2) == 11.67
    assert round(bill["request_usd"], 2) == 0.24 and round(bill["total_usd"], 2) == 41.91


def test_init_billing_rule():
    before, after = datetime.date(2025, 7, 31), datetime.date(2025, 8, 1)
    assert runtimes.init_billed("provided.al2023", before) and runtimes.init_billed("provided.al2023", after)
    assert not runtimes.init_billed("python3.12", before) and runtimes.init_billed("python3.12", after)
    assert runtimes.init_billed("nodejs20.x", before, package_type="Image")


def test_pricing_file_overrides(tmp_path, monkeypatch):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"eu-west-1": {"x86_64": {"valid_from": "2024-01-01", "request_usd": 2e-7,
                                                      "gb_s_tiers": [[None, 0.00002]]}}}))
    monkeypatch.setenv(cost.PRICING_ENV, str(f))
    table = cost.load_pricing()
    assert cost.price_for("eu-west-1", "x86_64", table=table).gb_s_usd == 0.00002
    assert cost.price_for("us-east-1", "arm64", table=table) == ARM


def _interval(seq, counters, phase="warm"):
    return Interval(run_id="r", shard_id="s", attempt=0, seq=seq, region="local", target="t", runtime="rust",
                    phase=phase, t0=100.0 + seq, t1=101.0 + seq, intended=2, sent=2, completed=2,
                    outcomes={"ok": 2}, response_us="", service_us="", send_lag_us="", counters=counters)


def test_group_cost_from_intervals_and_prometheus():
    # Two invocations per interval at 1024 MB: one cold (Billed 500 ms), then warm ones (Billed 2 ms).
    per = {b: cost.invocation_cost(b, 1024, X86) for b in (500, 2)}
    ivs = [_interval(0, {"billed_requests": 2, "billed_requests_cold": 1, "gb_s": 0.502, "gb_s_cold": 0.5,
                         "cost_usd": per[500] + per[2], "cost_usd_cold": per[500], "request_usd": 0.4e-6}),
           _interval(1, {"billed_requests": 2, "gb_s": 0.004, "cost_usd": 2 * per[2], "request_usd": 0.4e-6,
                         "report_missing": 1})]
    collector = Collector("r")
    collector.add_all(ivs)
    (g,) = collector.group_rows()
    total = per[500] + 3 * per[2]
    assert g.cost["invocations"] == 4 and g.cost["gb_s"] == pytest.approx(0.506)
    assert g.cost["cost_usd"] == pytest.approx(total) and g.cost["cost_with_requests_usd"] == pytest.approx(total + 0.8e-6)
    assert g.cost_per_million_usd == pytest.approx(total / 4 * 1e6)
    assert g.cost["cold"]["per_million_usd"] == pytest.approx(per[500] * 1e6)
    assert g.cost["warm"]["per_million_usd"] == pytest.approx(per[2] * 1e6)
    assert g.reports_missing == 1
    assert g.to_dict()["cost"] == g.cost
    m = IntervalMetrics(clock=lambda: 10_000.0)
    for iv in ivs:
        m.add(iv)
    samples = {s.name: s.value for fam in m.collect() for s in fam.samples}
    assert samples["fnbench_lambda_gb_seconds_total"] == pytest.approx(0.506)
    assert samples["fnbench_lambda_cost_usd_total"] == pytest.approx(total)
