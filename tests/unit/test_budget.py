"""The budget guard's estimate (orchestrator/analysis/budget.py): invocations × expected billed ms ×
Memory Size × price, the keys that refuse a plan over it, and the running total that stops a run."""

import pytest

from orchestrator.analysis import budget, cost
from orchestrator.run import spec
from workers.contract import Interval

X86 = cost.price_for("us-east-1", "x86_64")
BASE = """
name: b
targets:
  - {name: fn, runtime: rust, platform: aws-lambda, function: rust, timeout: 3s}
load: {executor: constant, rps: 10}
duration: 2s
warmup: 1s
cold_start: {enabled: true, invocations: 2, rps: 2}
"""


def test_the_estimate_multiplies_invocations_by_the_worst_case_billed_ms_and_the_memory():
    est = budget.estimate(spec.load_text(BASE, "b.yaml"))
    # per target: 10 warm-up + 20 measured + 2 forced cold starts
    assert est.invocations == 32
    fn = next(line for line in est.lines if line.target == "fn")
    # timeout 3 s (the worst case) at 10,240 MB; the cold starts add Lambda's 10 s Init limit
    want = 30 * cost.invocation_cost(3000, 10240, X86, with_requests=True) + \
        2 * cost.invocation_cost(13000, 10240, X86, with_requests=True)
    assert fn.cost_usd == pytest.approx(want) and est.cost_usd == pytest.approx(want)
    assert "timeout, the worst case" in est.text() and "10240 MB, Lambda's largest" in est.text()
    assert "an estimate" in est.text()


def test_spec_values_replace_the_worst_case_and_a_sweep_counts_every_step():
    b = spec.load_text(BASE + "expected_billed_ms: 20\nexpected_memory_mb: 512\n", "b.yaml")
    est = budget.estimate(b)
    assert est.cost_usd == pytest.approx(32 * cost.invocation_cost(20, 512, X86, with_requests=True))
    assert "expected_billed_ms (20 ms)" in est.text() and "expected_memory_mb (512 MB)" in est.text()
    sweep = BASE.replace("timeout: 3s}", "timeout: 3s, memory_sizes: [128, 1024]}")
    est = budget.estimate(spec.load_text(sweep + "expected_billed_ms: 20\n", "s.yaml"))
    assert [line.target for line in est.lines] == ["fn@128MB", "fn@1024MB"]
    assert est.cost_usd == pytest.approx(32 * (cost.invocation_cost(20, 128, X86, with_requests=True)
                                               + cost.invocation_cost(20, 1024, X86, with_requests=True)))


def test_a_plan_over_its_budget_is_refused_naming_the_key():
    b = spec.load_text(BASE + "max_cost_usd: 0.01\nmax_invocations: 31\n", "b.yaml")
    problems = budget.problems(b)
    assert problems[0].startswith("max_invocations: the plan makes 32 invocations")
    assert problems[1].startswith("max_cost_usd: the plan's estimated cost $")
    ok = spec.load_text(BASE + "max_cost_usd: 1000\nmax_invocations: 32\n", "b.yaml")
    assert budget.problems(ok) == []
    nowhere = spec.load_text(BASE.replace("function: rust,", "function: rust, region: ap-nowhere-9,")
                             + "max_cost_usd: 1\n", "b.yaml")
    assert budget.problems(nowhere)[0].startswith("max_cost_usd: no price for fn")


def _iv(seq, cost_usd, n):
    return Interval(run_id="r", shard_id="s", attempt=0, seq=seq, region="local", target="fn", runtime="rust",
                    phase="warm", t0=float(seq), t1=seq + 1.0, intended=n, sent=n, completed=n, outcomes={"ok": n},
                    response_us="", service_us="", send_lag_us="",
                    counters={"cost_usd": cost_usd, "request_usd": n * 0.2e-6})


def test_the_watch_sums_the_workers_cost_counters_and_stops_past_the_budget():
    watch = budget.BudgetWatch(max_cost_usd=1e-5, max_invocations=None)
    watch.add(_iv(0, 4e-6, 10))
    assert watch.check() is None  # 4e-6 + 2e-6
    watch.add(_iv(1, 4e-6, 10))
    over = watch.check(now=5.0)
    assert over is not None and over.to_dict() == {"budget": "max_cost_usd", "max": 1e-5, "value": pytest.approx(1.2e-5),
                                                    "at": 5.0}
    assert "budget max_cost_usd" in over.message
    count = budget.BudgetWatch(None, 15)
    count.add(_iv(0, 0.0, 10))
    assert count.check() is None
    count.add(_iv(1, 0.0, 10))
    assert count.check().key == "max_invocations"


def test_a_sweep_step_gets_what_the_budget_leaves_after_the_steps_before_it():
    from orchestrator.analysis import sweep

    b = spec.load_text(BASE.replace("timeout: 3s}", "timeout: 3s, memory_sizes: [128, 1024]}")
                       + "max_cost_usd: 1.0\nmax_invocations: 100\nexpected_billed_ms: 1\n", "s.yaml")
    spent = budget.BudgetWatch(None, None)
    spent.add(_iv(0, 0.3, 30))
    step = sweep._within_budget(sweep.step_spec(b, 1024), b, spent)
    assert step.max_cost_usd == pytest.approx(1.0 - 0.3 - 30 * 0.2e-6) and step.max_invocations == 70
