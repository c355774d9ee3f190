"""Trend page, leaderboard and CI outputs as people and CI tools see them (issue 23).

History lives in a real redis-server; pages are written by the real CLI and opened in headless Chromium
from file:// with the network off (the report tests' DevTools client): no console error, every chart
drawn, the values shown on hover equal to the history's.  JUnit files from `fnbench history --check` and
a real `fnbench run` (loopback synthetic target) validate against the Apache Ant JUnit schema; the
Markdown summary is appended to $GITHUB_STEP_SUMMARY.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xmlschema

from bench.bootstrap_coverage import synthetic_run
from bench.trend_page import synthetic_history
from orchestrator.analysis import history
from orchestrator.report import trend
from tests.integration.distributed_fixtures import RedisServer
from tests.integration.test_report_html import ARTEFACTS, DRAWN, Browser, hover_value
from tests.servers import free_port, need, wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
FNBENCH = [sys.executable, "-m", "orchestrator.cli"]
SCHEMA = xmlschema.XMLSchema(ROOT / "tests" / "schemas" / "JUnit.xsd")


@pytest.fixture
def redis_server(tmp_path):
    need(shutil.which("redis-server") is not None, "redis-server is not installed")
    server = RedisServer(tmp_path, persist=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def env(redis_server):
    return {**os.environ, "FNBENCH_BROKER": redis_server.url, "FNBENCH_GRAFANA_URL": "", "FNBENCH_WEBHOOK_URL": "",
            "PYTHONPATH": str(ROOT), "GITHUB_STEP_SUMMARY": ""}


@pytest.fixture
def browser():
    b = Browser()
    try:
        yield b
    finally:
        b.close()


def fnbench(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*FNBENCH, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def store_all(redis_server: RedisServer, entries: list[dict]) -> history.RedisHistory:
    store = history.RedisHistory(redis_server.client())
    for e in entries:
        e = {**e, "start": time.time() - 86400 * 60 + (e["start"] - 1_735_689_600.0)}  # inside the retention
        store.add(e, history.Retention(keep=None, max_age_s=None))
    return store


def test_trend_page_opens_offline_draws_every_chart_and_hover_shows_the_history(env, redis_server, tmp_path, browser):
    store = store_all(redis_server, synthetic_history("nightly", days=45, targets=3, regions=2, step_day=35))
    entries = store.entries("nightly")
    newest = entries[0]
    results = tmp_path / "results"
    (results / newest["run_id"]).mkdir(parents=True)
    (results / newest["run_id"] / "report.html").write_text("<!doctype html><title>its report</title><p>report</p>")
    r = fnbench(env, "history", "nightly", "--html", "--results", str(results))
    assert r.returncode == 0, r.stderr
    page = results / "trend-nightly.html"
    assert r.stderr.strip().endswith(f"trend page: {page}")
    text = page.read_text()

    browser.open(page.as_uri())
    assert browser.problems() == []
    assert [u for u in browser.requests() if not u.startswith(("file:", "data:", "about:"))] == []
    drawn = browser.eval(DRAWN)
    assert len(drawn) == 3 * 2 * 4, sorted(drawn)  # target × region × (latency, cold start, errors, cost)
    for cid, d in drawn.items():
        assert d["points"] == 45 and max(d["counts"]) > 20, (cid, d)

    # Hover: at a run's start, the legend shows that run and exactly its history values and band ends.
    spec = browser.eval("Object.values(window.fnbench.specs).find(c => c.title === 'go-1 @region-0: warm response time')")
    ordered = entries[::-1]
    for i in (0, 35, 44):
        e = ordered[i]
        g = next(g for g in e["groups"] if g["target"] == "go-1" and g["region"] == "region-0" and g["phase"] == "warm")
        band = next(s["bands"] for s in e["samples"]
                    if s["target"] == "go-1" and s["region"] == "region-0" and s["phase"] == "warm")
        for label, want in (("p99", g["p99"]), ("p50", g["p50"]), ("p99 95% high", trend._r(band["p99"][1])),
                            ("p99 95% low", trend._r(band["p99"][0]))):
            at = e["start"] - (3 * 3600 if i == 44 else 0)  # a pixel inside the plot's right edge; snaps to the run
            x_shown, value = hover_value(browser, spec["id"], label, at)
            assert x_shown.endswith(e["run_id"]), x_shown
            assert float(value) == want, (i, label, value, want)
    # The step: its change point and its regression verdict are marked, with their sentences on the page.
    assert {m["kind"] for m in spec["marks"] if m["i"] == 35} == {"change", "regression"}
    assert "regression verdict at run nightly-035: go-1 p99 in nightly-035 is 40 % higher" in text
    since = browser.eval("document.getElementById('since-last').textContent")
    assert since.startswith(f"Since the last run: {ordered[-2]['run_id']}")
    week = browser.eval("document.getElementById('since-week').textContent")
    assert week.startswith(f"Since a week before: {ordered[-8]['run_id']}")
    browser.screenshot(ARTEFACTS / "trend-top.png", full=False)
    browser.screenshot(ARTEFACTS / "trend.png")

    # Each run links to its own report: a click on the newest point opens it.
    link = browser.eval("document.querySelector('#runs a[href$=\"report.html\"]').getAttribute('href')")
    assert link == f"{newest['run_id']}/report.html"
    pos = browser.eval(f"""(() => {{
      const u = window.fnbench.charts[{json.dumps(spec['id'])}];
      u.root.scrollIntoView({{block: 'center'}});
      const r = u.over.getBoundingClientRect();
      return [r.left + u.valToPos({newest['start']}, 'x') - 2, r.top + r.height / 2];
    }})()""")
    browser.hover(*pos)
    time.sleep(0.2)
    for kind in ("mousePressed", "mouseReleased"):
        browser.call("Input.dispatchMouseEvent", type=kind, x=pos[0], y=pos[1], button="left", clickCount=1)
    wait_for(lambda: browser.eval("location.href").endswith("report.html"), 10, "the run's report opened")
    assert browser.eval("document.title") == "its report"


def test_leaderboard_ranks_runtimes_and_regions_and_draws_its_chart(env, redis_server, tmp_path, browser):
    store_all(redis_server, synthetic_history("alpha", days=3, targets=4, regions=2))
    store_all(redis_server, synthetic_history("beta", days=2, targets=2, regions=1))
    out = tmp_path / "board.html"
    r = fnbench(env, "history", "alpha", "beta", "--html", str(out), "--rank-by", "p50")
    assert r.returncode == 0 and r.stderr.strip().endswith(f"leaderboard: {out}"), r.stderr
    browser.open(out.as_uri())
    assert browser.problems() == []
    drawn = browser.eval(DRAWN)
    assert set(drawn) == {"rank"} and drawn["rank"]["points"] == 10 and max(drawn["rank"]["counts"]) > 20
    rows = browser.eval("""Array.from(document.querySelectorAll('#leaderboard tbody tr')).map(
      tr => Array.from(tr.cells).map(td => td.textContent))""")
    p50s = [float(row[4].split(" ")[0]) for row in rows]
    assert p50s == sorted(p50s) and [int(row[0]) for row in rows] == list(range(1, 11))
    store = history.RedisHistory(redis_server.client())
    newest = store.entries("alpha", limit=1)[0]
    g = next(g for g in newest["groups"] if g["target"] == "node-2" and g["region"] == "region-1" and g["phase"] == "warm")
    rust = next(g for g in newest["groups"] if g["target"] == "rust-0" and g["region"] == "region-1" and g["phase"] == "warm")
    row = next(r for r in rows if r[2] == "node-2 (alpha)" and r[3] == "region-1")
    assert float(row[4].split(" ")[0]) == pytest.approx(g["p50"], rel=1e-3)
    assert row[10] == f"{round(g['p50'] / rust['p50'], 3):g}×" and row[11].startswith(newest["run_id"])
    i = next(n for n, r in enumerate(rows) if r is row)
    _, shown = hover_value(browser, "rank", "warm p50", i)
    assert float(shown) == g["p50"]
    browser.screenshot(ARTEFACTS / "leaderboard.png", full=False)
    every = fnbench(env, "history", "--all", "--html", str(tmp_path / "all.html"))
    assert every.returncode == 0 and (tmp_path / "all.html").exists(), every.stderr


def test_history_check_writes_valid_junit_and_the_step_summary(env, redis_server, tmp_path):
    store = history.RedisHistory(redis_server.client())
    rng = np.random.default_rng(6)
    now = time.time()
    from tests.integration.test_schedule import _planted

    for i in range(5):
        store.add(_planted("svc", f"ok-{i}", now - 600 + 60 * i, synthetic_run(rng, 12, 1500)), history.Retention())
    store.add(_planted("svc", "slow-1", now, synthetic_run(rng, 12, 1500, scale=1.4)), history.Retention())
    summary = tmp_path / "step-summary.md"
    summary.write_text("### an earlier step\n")
    xml = tmp_path / "junit.xml"
    r = fnbench({**env, "GITHUB_STEP_SUMMARY": str(summary)}, "history", "svc", "--check", "--junit", str(xml))
    assert r.returncode == 1, r.stdout + r.stderr
    SCHEMA.validate(str(xml))
    suite = SCHEMA.to_dict(str(xml))["testsuite"][0]
    failed = [c for c in suite["testcase"] if "failure" in c]
    assert suite["@failures"] == len(failed) >= 1 and suite["@tests"] == len(suite["testcase"]) >= 3
    assert any(c["@name"] == "no regression: p99 · synthetic @local" for c in failed)
    kept = store.find("slow-1")["check"]  # the verdict stays with the run, for its trend page
    assert kept["regressed"] and kept["newest"] == "slow-1"
    md = summary.read_text()
    assert md.startswith("### an earlier step\n### fnbench history `svc`: **regression**")
    assert "| REGRESSION | synthetic | local | p99 |" in md

    for args, words in ((("history", "svc", "--junit", str(xml)), "--junit needs --check"),
                        (("history", "svc", "ok"), "give one NAME, or add --html"),
                        (("history", "svc", "--html", "--rank-by", "p42"), "--rank-by 'p42'"),
                        (("history", "--all"), "--all needs --html"),
                        (("history", "nope", "--html"), "no runs recorded for 'nope'")):
        bad = fnbench(env, *args)
        assert bad.returncode == 2 and words in bad.stderr and "Traceback" not in bad.stderr, (args, bad.stderr)


@pytest.fixture
def synthetic_target():
    port = free_port()
    proc = subprocess.Popen([*FNBENCH, "synthetic", "--port", str(port), "--median-ms", "2", "--sigma", "0.2"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    wait_for(up, 15, "synthetic target")
    yield port
    proc.terminate()
    proc.wait(10)


SPEC = """name: ci-{n}
targets:
  - {{name: synthetic, runtime: other, platform: http, url: "http://127.0.0.1:{port}/echo", method: POST,
      body: {{payload: {{a: 1}}}}, timeout: 5s}}
load: {{executor: constant, rps: 30}}
duration: 1s
flush_interval: 250ms
{slos}"""


def test_run_writes_valid_junit_with_or_without_slos_and_the_step_summary(tmp_path, synthetic_target):
    env = {k: v for k, v in os.environ.items() if k not in ("FNBENCH_BROKER", "FNBENCH_BROKER_FILE")}
    summary = tmp_path / "summary.md"
    slos = "slos:\n  - {target: synthetic, metric: response_ms.p99, max: 0.001}\n  - {target: '*', metric: error_rate, max: 0.5}\n"
    for n, text in enumerate(("", slos)):
        spec = tmp_path / f"ci-{n}.yaml"
        spec.write_text(SPEC.format(n=n, port=synthetic_target, slos=text))
        xml = tmp_path / f"run-{n}.xml"
        r = fnbench({**env, "GITHUB_STEP_SUMMARY": str(summary)}, "run", str(spec), "--results", str(tmp_path / "results"),
                    "--metrics-port", "0", "--workers", "1", "--no-html", "--junit", str(xml))
        assert r.returncode == (0 if n == 0 else 1), r.stderr  # the second: p99 ≤ 1 µs fails by design
        assert f"junit: {xml}" in r.stderr
        SCHEMA.validate(str(xml))
        cases = SCHEMA.to_dict(str(xml))["testsuite"][0]["testcase"]
        if n == 0:  # no SLOs: the group, passed, never an empty file
            assert [c["@name"] for c in cases] == ["group synthetic warm @local"] and "failure" not in cases[0]
        else:
            assert [c["@name"] for c in cases] == ["SLO response_ms.p99 <= 0.001 · synthetic warm @local",
                                                   "SLO error_rate <= 0.5 · synthetic warm @local"]
            assert "failure" in cases[0] and "failure" not in cases[1]
            assert "breaks its bound <= 0.001" in cases[0]["failure"]["@message"]
    md = summary.read_text()
    assert md.count("### fnbench `ci-") == 2 and "**PASS**" in md and "**FAIL**" in md


HOSTILE = "x<!--<script>y</script>z\u2028&amp;"


def test_without_a_broker_the_page_reads_the_run_folders_and_keeps_hostile_names_inert(tmp_path, browser):
    """No broker: entries are RESULTS/RUN/history.json; each run's folder is linked.  A target name with
    markup is shown as text and leaves every chart drawn."""
    env = {k: v for k, v in os.environ.items() if k not in ("FNBENCH_BROKER", "FNBENCH_BROKER_FILE")}
    results = tmp_path / "results"
    store = history.FileHistory(results)
    for e in synthetic_history("local", days=8, targets=2, regions=1):
        for g in e["groups"] + e["samples"]:
            g["target"] = g["target"].replace("go-1", HOSTILE)
        store.add(e, history.Retention(keep=None, max_age_s=None))
        (results / e["run_id"] / "report.html").write_text("<!doctype html><title>r</title>")
    r = fnbench(env, "history", "local", "--html", "--results", str(results))
    assert r.returncode == 0, r.stderr
    page = results / "trend-local.html"
    text = page.read_text()
    assert text.count("<script") == 3 and HOSTILE not in text  # escaped everywhere, never raw markup
    browser.open(page.as_uri())
    assert browser.problems() == []
    drawn = browser.eval(DRAWN)
    assert len(drawn) == 2 * 4 and all(max(d["counts"]) > 20 for d in drawn.values()), drawn
    assert any(HOSTILE in t for t in browser.eval("Object.values(window.fnbench.specs).map(c => c.title)"))
    links = browser.eval("Array.from(document.querySelectorAll('#runs a')).map(a => a.getAttribute('href'))")
    assert links == [f"local-{d:03d}/report.html" for d in range(7, -1, -1)]
    assert browser.eval("document.querySelectorAll('script').length") == 3
