"""No verdict without data (issue 26): SLOs, regression checks and sweep choices on groups that
completed no request are NO DATA, which fails; never PASS, "ok" or "cheapest"."""

from types import SimpleNamespace

from rich.console import Console

from orchestrator.analysis import compare, history, sweep
from orchestrator.report import terminal
from orchestrator.run import spec
from orchestrator.run.result import Group, RunResult, Summary

FAST = Summary(p50=1, p90=1, p99=2, p999=2, max=2, mean=1)


def slo(metric: str = "error_rate", target: str = "*", phase: str = "*", high: float | None = 0.01):
    return SimpleNamespace(target=target, metric=metric, max=high, min=None, phase=phase)


def measured(target: str) -> Group:
    return Group(region="local", target=target, runtime="rust", phase="warm", intended=10, sent=10, completed=10,
                 outcomes={"ok": 10}, response_ms=FAST, achieved_rps=5.0)


def nothing(target: str, failure: str | None = None) -> Group:
    return Group(region="local", target=target, runtime="go", phase="warm",
                 status="failed" if failure else "ok", failure=failure)


def test_an_slo_on_a_group_with_no_completed_request_is_no_data_and_fails():
    result = RunResult(run_id="r", groups=(measured("a"), nothing("b")))
    judged, code = compare.judge(result, [slo()])
    by_target = {v.target: v for v in judged.slo}
    assert by_target["a"].passed and not by_target["a"].no_data
    b = by_target["b"]
    assert not b.passed and b.no_data and b.value is None and b.word == "NO DATA"  # error_rate 0.0 would have passed
    assert code == 1
    out = Console(record=True, width=200)
    terminal.render(judged, out)
    assert "SLO NO DATA b warm error_rate" in out.export_text()
    assert judged.to_dict()["slo"][1]["no_data"] is True
    assert RunResult.from_dict(judged.to_dict()).slo == judged.slo


def test_an_slo_that_matches_no_group_is_no_data():
    judged, code = compare.judge(RunResult(run_id="r", groups=(measured("a"),)), [slo(target="gone")])
    (v,) = judged.slo
    assert v.no_data and not v.passed and code == 1


def test_a_failed_group_makes_the_run_exit_2_and_shows_why():
    result = RunResult(run_id="r", groups=(measured("a"), nothing("b", "SetupError: target 'b': exited after 0.001 s with rc=3")))
    judged, code = compare.judge(result, [])
    assert code == 2
    d = judged.to_dict()["groups"]
    assert "status" not in d[0] and d[1]["status"] == "failed" and "rc=3" in d[1]["failure"]
    assert RunResult.from_dict(judged.to_dict()).groups == judged.groups
    out = Console(record=True, width=250)
    terminal.render(judged, out)
    text = out.export_text()
    assert "FAILED" in text and "failed: local/b warm: SetupError" in text


def _entry(run_id: str, start: float, completed: int) -> dict:
    block = {"response": [], "init": [], "total": completed, "errors": 0}
    return {"run_id": run_id, "name": "svc", "start": start, "groups": [
        {"region": "local", "target": "fn", "runtime": "rust", "phase": "warm", "p50": None, "p99": None,
         "p999": None, "error_rate": 0.0, "requests": completed, "completed": completed}],
        "samples": [{"region": "local", "target": "fn", "runtime": "rust", "workload": "echo", "phase": "warm",
                     "blocks": [block] if completed else []}]}


def test_a_regression_check_of_a_run_with_no_data_is_no_data_and_fails():
    entries = [_entry(f"r{i}", float(i), 100) for i in range(4)] + [_entry("empty", 10.0, 0)]
    check = history.check("svc", entries, replicates=200)
    assert check.verdict == "NO DATA" and check.failed and not check.regressed
    assert "NO DATA for fn (local)" in check.message()
    assert check.to_dict()["no_data"] == ["fn (local): no completed request"]


SWEEP = """
name: sw
targets:
  - {name: r, runtime: rust, platform: aws-lambda, function: rust, workload: hash, memory_sizes: [128, 512]}
load: {executor: constant, rps: 10}
duration: 2s
"""


def test_a_size_with_no_data_is_never_the_cheapest():
    b = spec.load_text(SWEEP, "sw.yaml")
    cheap_but_empty = Group(region="local", target="r@128MB", runtime="rust", phase="warm", completed=10,
                            outcomes={"function_error": 10}, cost_per_million_usd=0.5,
                            cost={"invocations": 10, "gb_s": 1.0, "per_million_usd": 0.5})
    dear = Group(region="local", target="r@512MB", runtime="rust", phase="warm", completed=10, outcomes={"ok": 10},
                 response_ms=FAST, cost_per_million_usd=2.0, cost={"invocations": 10, "gb_s": 1.0, "per_million_usd": 2.0})
    s = sweep.summary(b, RunResult(run_id="sw", groups=(cheap_but_empty, dear)))
    r = s["targets"]["r"]
    assert r["curve"]["128"]["no_data"] and not r["curve"]["128"]["measured"]
    assert r["cheapest_mb"] == 512  # the spec has no SLOs: before, the cheaper size with no successful request won
    failed = Group(region="local", target="r@512MB", runtime="rust", phase="warm", status="failed", failure="x")
    s = sweep.summary(b, RunResult(run_id="sw", groups=(cheap_but_empty, failed)))
    assert s["targets"]["r"]["cheapest_mb"] is None
    out = Console(record=True, width=200)
    out.print(sweep.table(s))
    assert "NO DATA" in out.export_text()
