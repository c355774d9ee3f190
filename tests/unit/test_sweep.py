"""Memory sweep arithmetic (orchestrator/analysis/sweep.py): steps, renamed targets and SLOs, the cheapest size."""

import pytest

from orchestrator.analysis import sweep
from orchestrator.errors import SpecError
from orchestrator.run import spec
from orchestrator.run.result import Group, RunResult, Summary

SPEC = """
name: sw
targets:
  - {name: r, runtime: rust, platform: aws-lambda, function: rust, workload: hash, memory_sizes: [1024, 128, 512]}
  - {name: g, runtime: go, platform: aws-lambda, function: go, memory_sizes: [512, 128]}
load: {executor: constant, rps: 10}
duration: 2s
slos:
  - {target: r, metric: response_ms.p99, max: 50}
  - {target: '*', metric: error_rate, max: 0.01}
"""


def bench() -> spec.Benchmark:
    return spec.load_text(SPEC, "sw.yaml")


def test_steps_are_the_sizes_ascending_and_each_holds_the_targets_that_list_it():
    b = bench()
    assert sweep.sizes(b) == [128, 512, 1024]
    step = sweep.step_spec(b, 1024)
    assert [t.name for t in step.targets] == ["r@1024MB"] and step.targets[0].workload == "hash@1024MB"
    assert [(s.target, s.metric) for s in step.slos] == [("r@1024MB", "response_ms.p99"), ("*", "error_rate")]
    assert not sweep.sizes(step)  # a step is a plain run
    assert [t.workload for t in sweep.step_spec(b, 128).targets] == ["hash@128MB", "invoke@128MB"]
    # A step's spec text loads back as the same benchmark (a distributed run stores and re-reads it).
    assert spec.load_text(sweep.spec_text(step), "step.yaml") == step


def test_an_slo_on_a_swept_target_applies_at_every_size():
    got = [(s.target, s.metric) for s in sweep.expanded_slos(bench())]
    assert got == [("r@128MB", "response_ms.p99"), ("r@512MB", "response_ms.p99"), ("r@1024MB", "response_ms.p99"),
                   ("*", "error_rate")]


def _group(target: str, per_million: float, p99: float) -> Group:
    return Group(region="local", target=target, runtime="rust", phase="warm", completed=10, outcomes={"ok": 10},
                 response_ms=Summary(p50=1, p90=1, p99=p99, p999=p99, max=p99, mean=1),
                 cost={"invocations": 10, "gb_s": 1.0, "per_million_usd": per_million}, cost_per_million_usd=per_million)


def test_the_cheapest_size_is_the_cheapest_that_meets_every_slo():
    b = bench()
    groups = (_group("r@128MB", 1.0, 80.0), _group("r@512MB", 2.0, 20.0), _group("r@1024MB", 3.0, 10.0),
              _group("g@128MB", 1.5, 5.0), _group("g@512MB", 1.0, 5.0))
    result = RunResult(run_id="sw", groups=groups)
    from orchestrator.analysis import compare

    judged, code = compare.judge(result, sweep.expanded_slos(b))
    assert code == 1  # r at 128 MB fails its p99
    s = sweep.summary(b, judged)
    assert sweep.conclude(b, "sw", [], [], [])[1] == 1  # nothing measured: no size meets the SLOs
    r = s["targets"]["r"]
    assert r["curve"]["128"]["slo_passed"] is False and r["curve"]["512"]["slo_passed"] is True
    assert r["cheapest_mb"] == 512  # 128 MB is cheaper but misses the SLO
    assert s["targets"]["g"]["cheapest_mb"] == 512
    assert "512 * C" in _text(sweep.table(s))
    assert s["strategy"] == "cost" and r["chosen_mb"] == 512 and set(r["choices"]) == {"cost", "speed", "balanced"}


def test_with_no_size_meeting_the_slos_there_is_no_cheapest():
    curve = {"128": {"measured": True, "slo_passed": False, "per_million_usd": 1.0, "mean_ms": 5.0}}
    assert sweep.choose(curve, with_slos=True) is None
    assert sweep.choose(curve, with_slos=False) == 128
    unpriced = {"128": {"measured": True, "slo_passed": None, "per_million_usd": None, "gb_s_per_invocation": 2.0,
                        "mean_ms": 5.0},
                "256": {"measured": True, "slo_passed": None, "per_million_usd": None, "gb_s_per_invocation": 1.0,
                        "mean_ms": 5.0}}
    assert sweep.choose(unpriced, with_slos=False) == 256  # no price in the region: GB-s per invocation


# AWS Lambda Power Tuning's own analyzer cases (test/unit/test-lambda.js, "analyzer" describe block, at
# alexcasalboni/aws-lambda-power-tuning 262ecc2): (strategy, weight, [(power, averagePrice,
# averageDuration)], the power it returns).
POWER_TUNING_CASES = [
    ("cost", 0.5, [(128, 100, 100), (256, 200, 300), (512, 30, 200)], 512),
    ("cost", 0.5, [(128, 100, 100), (256, 100, 90), (512, 300, 200)], 256),  # same cost: the fastest
    ("speed", 0.5, [(128, 100, 300), (256, 200, 200), (512, 300, 100)], 512),
    ("speed", 0.5, [(128, 100, 200), (256, 90, 200), (512, 300, 400)], 256),  # same duration: the cheapest
    ("balanced", 1.0, [(128, 100, 100), (256, 200, 300), (512, 30, 200)], 512),
    ("balanced", 0.0, [(128, 100, 300), (256, 200, 200), (512, 300, 100)], 512),
    ("balanced", 0.5, [(128, 101, 300), (256, 200, 200), (512, 300, 101)], 256),
    ("balanced", 0.3, [(128, 100, 300), (256, 200, 200), (512, 300, 100), (1024, 1000, 50)], 512),
]


@pytest.mark.parametrize(("strategy", "weight", "stats", "power"), POWER_TUNING_CASES)
def test_strategies_choose_as_power_tuning_does(strategy, weight, stats, power):
    # Power Tuning's averagePrice is USD per invocation; a curve holds USD per million.
    curve = {str(m): {"measured": True, "slo_passed": None, "per_million_usd": price * 1e6, "duration_mean_ms": d}
             for m, price, d in stats}
    assert sweep.choose(curve, False, strategy, weight) == power


def test_a_full_tie_goes_to_the_smaller_size_and_slos_still_filter():
    same = {str(m): {"measured": True, "slo_passed": m != 128, "per_million_usd": 1.0, "duration_mean_ms": 10.0}
            for m in (128, 256, 512)}
    for strategy in ("cost", "speed", "balanced"):
        assert sweep.choose(same, False, strategy) == 128
        assert sweep.choose(same, True, strategy) == 256  # 128 MB misses an SLO


def test_the_spec_names_the_strategy_and_a_weight_between_0_and_1():
    b = spec.load_text(SPEC + "sweep: {strategy: balanced, balanced_weight: 0.3}\n", "sw.yaml")
    assert (b.sweep.strategy, b.sweep.balanced_weight) == ("balanced", 0.3)
    for bad, where in (("{strategy: cheapest}", "sweep.strategy"), ("{balanced_weight: 1.5}", "sweep.balanced_weight")):
        with pytest.raises(SpecError) as e:
            spec.load_text(SPEC + f"sweep: {bad}\n", "sw.yaml")
        assert where in str(e.value)


def _text(table) -> str:
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


def test_an_slo_can_be_scoped_to_a_phase():
    from orchestrator.analysis import compare

    b = spec.load_text(SPEC.replace("{target: r, metric: response_ms.p99, max: 50}",
                                    "{target: r, phase: warm, metric: response_ms.p99, max: 50}"), "sw.yaml")
    cold = Group(region="local", target="r@128MB", runtime="rust", phase="cold", completed=2,
                 response_ms=Summary(p50=300, p90=300, p99=300, p999=300, max=300, mean=300))
    verdicts = compare.slo_verdicts(sweep.expanded_slos(b)[:1], (_group("r@128MB", 1.0, 20.0), cold))
    assert [(v.phase, v.passed) for v in verdicts] == [("warm", True)]  # the slow cold start is not judged by it
