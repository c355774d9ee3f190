"""Memory sweep arithmetic (orchestrator/analysis/sweep.py): steps, renamed targets and SLOs, the cheapest size."""

from orchestrator.analysis import sweep
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
    assert "512 *" in _text(sweep.table(s))


def test_with_no_size_meeting_the_slos_there_is_no_cheapest():
    curve = {"128": {"measured": True, "slo_passed": False, "per_million_usd": 1.0}}
    assert sweep._cheapest(curve, with_slos=True) is None
    assert sweep._cheapest(curve, with_slos=False) == 128
    unpriced = {"128": {"measured": True, "slo_passed": None, "per_million_usd": None, "gb_s_per_invocation": 2.0},
                "256": {"measured": True, "slo_passed": None, "per_million_usd": None, "gb_s_per_invocation": 1.0}}
    assert sweep._cheapest(unpriced, with_slos=False) == 256  # no price in the region: GB-s per invocation


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
