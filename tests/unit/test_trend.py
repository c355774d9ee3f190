"""Trend pages, leaderboards and JUnit files from history entries (issue 23), without a browser: what the
pages say and embed, and JUnit files validated against the Apache Ant schema CI tools read."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import xmlschema

from bench.bootstrap_coverage import synthetic_run
from bench.trend_page import synthetic_history
from orchestrator.analysis import compare, history
from orchestrator.errors import InputError
from orchestrator.report import junit, trend
from orchestrator.run.result import Group, RunResult, SloVerdict, Summary

SCHEMA = xmlschema.XMLSchema(Path(__file__).resolve().parents[1] / "schemas" / "JUnit.xsd")


def embedded(page: str) -> dict:
    raw = page.split('<script type="application/json" id="fnbench-data">', 1)[1].split("</script>", 1)[0]
    return json.loads(raw)


def test_levels_bracket_the_runs_own_value_and_are_stored_with_each_entry():
    rng = np.random.default_rng(3)
    blocks = synthetic_run(rng, 16, 800, median_ms=20.0)
    sample = compare.Sample("local", "t", "rust", "echo", "warm", tuple(blocks))
    whole = compare.bootstrap_all(blocks, blocks, ("p50", "p99"), replicates=200)
    got = compare.levels(blocks, compare.LEVEL_METRICS)
    for m in ("p50", "p99"):
        low, high = got[m]
        assert low is not None and high is not None and low <= whole[m].base <= high, (m, got[m], whole[m].base)
    lo, hi = got["error_rate"]
    rate = sum(b.errors for b in blocks) / sum(b.total for b in blocks)
    assert lo is not None and hi is not None and lo <= rate <= hi
    assert compare.levels(blocks[:1], ("p50",)) == {"p50": (None, None)}  # one block: no interval
    assert history.bands(sample)["p99"] == list(got["p99"])


def test_trend_embeds_the_history_values_and_bands_and_says_what_changed():
    entries = synthetic_history(days=40, targets=2, regions=1, step_day=30)
    page = trend.trend_page("daily", entries)
    data = embedded(page)
    ordered = entries[::-1]
    assert data["runs"] == [e["run_id"] for e in ordered] and data["x"] == [e["start"] for e in ordered]
    lat = next(c for c in data["charts"] if c["title"] == "go-1 @region-0: warm response time")
    p99 = next(s for s in lat["series"] if s["label"] == "p99")
    want = [next(g["p99"] for g in e["groups"] if g["target"] == "go-1" and g["phase"] == "warm") for e in ordered]
    assert p99["values"] == want
    band = [next(s["bands"]["p99"] for s in e["samples"] if s["target"] == "go-1" and s["phase"] == "warm") for e in ordered]
    assert p99["high"] == [trend._r(b[1]) for b in band] and p99["low"] == [trend._r(b[0]) for b in band]
    err = next(c for c in data["charts"] if c["title"] == "go-1 @region-0: error rate")["series"][0]
    go = next(g for g in ordered[0]["groups"] if g["target"] == "go-1" and g["phase"] == "warm")
    assert err["values"][0] == pytest.approx(go["error_rate"] * 100)
    # The step at day 30: a change point and the stored regression verdict, each with its sentence, on the chart.
    kinds = {m["kind"] for m in lat["marks"] if m["i"] == 30}
    assert kinds == {"change", "regression"}, lat["marks"]
    assert "change point: p99 of go-1 in region-0 shifted from" in page
    assert "regression verdict at run daily-030: go-1 p99 in daily-030 is 40 % higher" in page
    # The first screen: the newest run against the one before and against a week before, in words.
    assert re.search(r'id="since-last"><h3>Since the last run: daily-038 \(.*\) → daily-039', page)
    assert re.search(r'id="since-week"><h3>Since a week before: daily-032 ', page)


def test_the_week_view_names_the_step_when_it_is_inside_the_week():
    entries = synthetic_history(days=40, targets=2, regions=1, step_day=36)
    page = trend.trend_page("daily", entries)
    week = page.split('id="since-week">', 1)[1].split("</div>", 1)[0]
    assert re.search(r"p99 of go-1 in region-0 rose [3-4][0-9] %", week), week
    last = page.split('id="since-last">', 1)[1].split("</div>", 1)[0]
    assert "go-1 in region-0 rose" not in last


def test_entries_without_stored_bands_get_them_from_their_blocks():
    rng = np.random.default_rng(4)
    entries = []
    for i in range(3):
        blocks = synthetic_run(rng, 8, 300)
        e = synthetic_history(days=1, targets=1, regions=1, start=1_700_000_000.0 + 86400 * i)[0]
        e["run_id"] = f"old-{i}"
        for s in e["samples"]:
            s.pop("bands")
            if s["phase"] == "warm":
                s["blocks"] = [b.to_dict() for b in blocks]
        entries.append(e)
    t = trend.build("x", entries)
    s = t.series[("rust-0", "region-0", "warm")]
    assert all(b is not None for b in s.bands["p99"]) and t.computed_bands == 3
    assert s.bands["p99"][0] == list(compare.levels(blocks_of(entries[0]), ("p99",))["p99"])


def blocks_of(entry: dict) -> list[compare.Block]:
    s = next(s for s in entry["samples"] if s["phase"] == "warm")
    return [compare.Block.from_dict(b) for b in s["blocks"]]


def test_leaderboard_ranks_rows_with_ratio_to_rust_and_trend_arrows():
    a = synthetic_history("a", days=3, targets=4, regions=2)
    b = synthetic_history("b", days=2, targets=2, regions=1)
    for g in a[0]["groups"]:  # the newest run of spec a: python-3 got slower than the run before
        if g["target"] == "python-3":
            g["p99"] *= 2
    rows = trend.leaderboard_rows({"a": a[:2], "b": b[:2]}, rank_by="p99")
    assert len(rows) == 4 * 2 + 2 and [r["rank"] for r in rows] == list(range(1, 11))
    assert [r["p99"] for r in rows] == sorted(r["p99"] for r in rows)
    rust = next(r for r in rows if r["spec"] == "a" and r["target"] == "rust-0" and r["region"] == "region-0")
    py = next(r for r in rows if r["spec"] == "a" and r["target"] == "python-3" and r["region"] == "region-0")
    assert rust["x_rust"] == 1.0 and py["x_rust"] == round(py["p99"] / rust["p99"], 3)
    assert py["arrow"] == "↑" and py["worse"] is True and rust["arrow"] in ("→", "↑", "↓")
    assert py["bands"]["p99"] == next(s["bands"]["p99"] for s in a[0]["samples"]
                                      if s["target"] == "python-3" and s["region"] == "region-0" and s["phase"] == "warm")
    page = trend.leaderboard_page({"a": a[:2], "b": b[:2]}, rank_by="p99")
    assert embedded(page)["charts"][0]["series"][0]["values"] == [r["p99"] for r in rows]
    with pytest.raises(InputError, match="--rank-by 'p42'"):
        trend.leaderboard_rows({"a": a}, rank_by="p42")


def test_leaderboard_of_a_memory_sweep_has_a_row_per_size():
    e = synthetic_history("sweep", days=1, targets=2, regions=1)
    for g in e[0]["groups"] + e[0]["samples"]:
        g["target"] = g["target"] + ("@512MB" if g["region"] == "region-0" else "")
    extra = json.loads(json.dumps(e[0]))
    for g in extra["groups"] + extra["samples"]:
        g["target"] = g["target"].replace("@512MB", "@1024MB")
    e[0]["groups"] += extra["groups"]
    e[0]["samples"] += extra["samples"]
    rows = trend.leaderboard_rows({"sweep": e}, rank_by="p50")
    assert sorted((r["base"], r["memory_mb"]) for r in rows) == [("go-1", 512), ("go-1", 1024), ("rust-0", 512),
                                                                  ("rust-0", 1024)]
    go = next(r for r in rows if r["base"] == "go-1" and r["memory_mb"] == 512)
    assert go["x_rust"] is not None
    assert "<th>MB</th>" in trend.leaderboard_page({"sweep": e}, rank_by="p50")


# -- JUnit -----------------------------------------------------------------------------------------------
FAST = Summary(p50=1.5, p90=2, p99=3, p999=4, max=5, mean=1.5)


def group(target: str, **kw) -> Group:
    return Group(region="local", target=target, runtime="rust", phase="warm", intended=10, sent=10, completed=10,
                 outcomes={"ok": 10}, response_ms=FAST, achieved_rps=5.0, **kw)


def test_junit_of_a_run_has_a_case_per_slo_verdict_with_value_bound_and_sentence():
    slo = (SloVerdict("a", "local", "warm", "response_ms.p99", 2.0, None, 3.0, False),
           SloVerdict("a", "local", "warm", "error_rate", 0.01, None, 0.0, True))
    text = junit.from_run(RunResult(run_id="r1", name="svc", groups=(group("a"),), slo=slo, start_at=1.7e9))
    SCHEMA.validate(text)
    doc = SCHEMA.to_dict(text)
    suite = doc["testsuite"][0]
    assert (suite["@tests"], suite["@failures"]) == (2, 1)
    failed = next(c for c in suite["testcase"] if "failure" in c)
    assert failed["@name"] == "SLO response_ms.p99 <= 2 · a warm @local"
    assert "response_ms.p99 = 3 breaks its bound <= 2" in failed["failure"]["@message"]
    assert "value 3, bound <= 2" in failed["failure"]["$"]


def test_junit_of_a_run_without_slos_reports_its_groups_never_an_empty_file():
    bad = Group(region="local", target="b", runtime="go", phase="warm", status="failed", failure="exited")
    text = junit.from_run(RunResult(run_id="r2", groups=(group("a"), bad), errors=("worker <lost> & gone",)))
    SCHEMA.validate(text)
    cases = SCHEMA.to_dict(text)["testsuite"][0]["testcase"]
    assert [c["@name"] for c in cases] == ["group a warm @local", "group b warm @local", "run error 1"]
    assert "failure" not in cases[0] and "failure" in cases[1] and cases[2]["error"]["@message"] == "worker <lost> & gone"
    SCHEMA.validate(junit.from_run(RunResult(run_id="r3")))  # nothing measured: still one (failed) case


def test_junit_of_a_history_check_has_a_case_per_regression_verdict():
    rng = np.random.default_rng(6)
    entries = []
    for i in range(5):
        blocks = synthetic_run(rng, 12, 1500, scale=1.4 if i == 4 else 1.0)
        entries.append(planted("svc", f"run-{i}", 1000.0 + i, blocks))
    check = history.check("svc", entries, replicates=300)
    assert check.regressed
    text = junit.from_check(check)
    SCHEMA.validate(text)
    suite = SCHEMA.to_dict(text)["testsuite"][0]
    names = [c["@name"] for c in suite["testcase"]]
    assert names == [f"no regression: {f.metric} · synthetic @local" for f in check.findings]
    p99 = next(c for c in suite["testcase"] if c["@name"] == "no regression: p99 · synthetic @local")
    assert p99["failure"]["@message"].startswith("regression: synthetic p99 in run-4 is")
    assert "bound: the 95 % interval's low end above +3 %" in p99["failure"]["$"]
    early = history.check("svc", entries[:2])
    SCHEMA.validate(junit.from_check(early))
    assert "skipped" in SCHEMA.to_dict(junit.from_check(early))["testsuite"][0]["testcase"][0]


def planted(name: str, run_id: str, start: float, blocks: list[compare.Block]) -> dict:
    point = compare.bootstrap_all(blocks, blocks, ("p50", "p99", "p999"), replicates=100)
    total, errors = sum(b.total for b in blocks), sum(b.errors for b in blocks)
    return {"version": 1, "run_id": run_id, "name": name, "start": start, "groups": [
        {"region": "local", "target": "synthetic", "runtime": "other", "phase": "warm", "workload": "echo",
         "p50": point["p50"].base, "p99": point["p99"].base, "p999": point["p999"].base, "error_rate": errors / total,
         "completed": total}],
        "samples": [{"region": "local", "target": "synthetic", "runtime": "other", "workload": "echo", "phase": "warm",
                     "blocks": [b.to_dict() for b in blocks]}]}


def test_step_summary_is_appended_only_when_github_sets_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(junit.SUMMARY_ENV, raising=False)
    assert junit.append_step_summary("# x") is None
    target = tmp_path / "summary.md"
    target.write_text("earlier step\n")
    monkeypatch.setenv(junit.SUMMARY_ENV, str(target))
    assert junit.append_step_summary("### fnbench") == target
    assert target.read_text() == "earlier step\n### fnbench\n"
