"""SLOs are judged on what was planned, not on what arrived (issue 27 item 3): planned requests that no
attempt sent (gaps with ``unsent``) fail error_rate, lower achieved_rps, make other verdicts PARTIAL,
and a run with such a verdict exits 3 (lost load)."""

import dataclasses
from types import SimpleNamespace

from rich.console import Console

from orchestrator.analysis import compare
from orchestrator.report import terminal
from orchestrator.run.dispatch.celery import rejection_lines, unsent
from orchestrator.run.result import Gap, Group, RunResult, SloVerdict, Summary
from workers.arrivals import Constant
from workers.contract import Shard, Target

FAST = Summary(p50=1, p90=1, p99=2, p999=2, max=2, mean=1)


def slo(metric: str, high: float | None = None, low: float | None = None):
    return SimpleNamespace(target="*", metric=metric, max=high, min=low, phase="*")


def arrived(region: str = "n", n: int = 298) -> Group:
    return Group(region=region, target="t", runtime="rust", phase="warm", intended=n, sent=n, completed=n,
                 outcomes={"ok": n}, response_ms=FAST, achieved_rps=n / 5.96, seconds=5.96)


def lost(region: str = "n", n: int = 1702) -> Gap:
    return Gap(region=region, shard="s0", target="t", seconds=34.04, reason="region n has no workers",
               abandoned=True, phase="warm", unsent=n)


def test_error_rate_counts_the_planned_requests_that_were_never_sent():
    result = RunResult(run_id="r", groups=(arrived(),), gaps=(lost(),))
    judged, code = compare.judge(result, [slo("error_rate", 0.01)], {"warm": 40.0})
    (v,) = judged.slo
    assert not v.passed and v.word == "FAIL" and v.value == round(1702 / 2000, 6)
    assert (v.unsent, v.planned) == (1702, 2000)
    assert code == 3  # lost load, whatever the verdict
    # Without the gap (what arrived only), the same group passes: the probe's PASS on 298 of 2,000.
    assert compare.judge(RunResult(run_id="r", groups=(arrived(),)), [slo("error_rate", 0.01)])[0].slo[0].passed


def test_achieved_rps_is_over_the_planned_window_and_latency_is_partial():
    result = RunResult(run_id="r", groups=(arrived(),), gaps=(lost(),))
    judged, code = compare.judge(result, [slo("achieved_rps", low=40.0), slo("response_ms.p99", 100.0)],
                                 {"warm": 40.0})
    rps, p99 = judged.slo
    assert rps.value == round(298 / 40.0, 3) and not rps.passed and rps.word == "FAIL"
    assert not p99.passed and p99.partial and p99.word == "PARTIAL" and p99.value == 2
    assert code == 3
    d = p99.to_dict()
    assert d["partial"] and d["unsent"] == 1702 and d["planned"] == 2000 and d["pass"] is False
    assert SloVerdict.from_dict(d) == p99
    out = Console(record=True, width=200)
    terminal.render(judged, out)
    text = out.export_text()
    assert "SLO PARTIAL n/t warm response_ms.p99" in text or "SLO PARTIAL t warm response_ms.p99" in text
    assert "1702 of 2000 planned requests never sent" in text


def test_a_small_loss_within_the_bound_passes_on_the_plan_and_still_exits_3():
    result = RunResult(run_id="r", groups=(arrived(n=1990),), gaps=(lost(n=10),))
    judged, code = compare.judge(result, [slo("error_rate", 0.01)], {"warm": 40.0})
    (v,) = judged.slo
    assert v.passed and v.value == 0.005 and v.unsent == 10 and v.to_dict()["unsent"] == 10
    assert code == 3


def test_a_group_that_never_arrived_at_all_is_judged_on_its_plan():
    result = RunResult(run_id="r", groups=(arrived(region="a", n=100),), gaps=(lost(region="n", n=100),))
    judged, _ = compare.judge(result, [slo("error_rate", 0.01), slo("response_ms.p99", 100.0)], {"warm": 10.0})
    by = {(v.region, v.metric): v for v in judged.slo}
    assert by[("a", "error_rate")].passed
    assert by[("n", "error_rate")].value == 1.0 and not by[("n", "error_rate")].passed
    assert by[("n", "response_ms.p99")].no_data and not by[("n", "response_ms.p99")].passed


def test_unsent_is_the_plans_count_over_the_gap():
    target = Target(name="t", runtime="rust", platform="http", url="http://127.0.0.1:1/")
    shard = Shard(run_id="r", shard_id="s0", region="n", target=target, phase="warm",
                  arrival=Constant.from_dict({"kind": "constant", "rps": "50"}).to_dict(), start_at=1000.0,
                  duration_s=40.0)
    assert unsent(shard, 1000.0, 1040.0) == 2000
    assert unsent(shard, 1034.04, 1100.0) == 298  # clipped to the window
    assert unsent(shard, 900.0, 950.0) == 0
    assert unsent(shard, 1000.0, 1001.0) == 50
    assert unsent(dataclasses.replace(shard, warmup=True), 1000.0, 1040.0) is None  # warm-up is not measured


def test_rejections_are_said_per_region_and_reason():
    records = [{"reason": "bad-signature", "message": "x"}] * 4 + [{"reason": "wrong-region", "message": "m"}]
    lines = rejection_lines("eu", records)
    assert lines[0].startswith("region eu: 4 tasks rejected (bad-signature): the worker's task key differs")
    assert lines[1].startswith("region eu: 1 task rejected (wrong-region):")
