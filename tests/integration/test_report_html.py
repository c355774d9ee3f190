"""The HTML report as a person sees it: headless Chromium opens it from file:// with the network off.

A real loopback run (Rust and Python functions on this machine, warm and cold, one target that
times out) is reported; the browser is driven over the DevTools protocol (websocket-client), so
the page's console, its requests and its canvases are checked as they are, and the value shown
on hover is compared with result.json.  A screenshot is kept in build/artefacts/ (or
$FNBENCH_ARTEFACTS).  Overlay, Markdown, size and bad-input checks run the real CLI.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
import websocket

from orchestrator.report import html as report_html
from tests.servers import need, strict
from workers import histograms
from workers.contract import Interval

ROOT = Path(__file__).resolve().parents[2]
FNBENCH = [sys.executable, "-m", "orchestrator.cli"]
ARTEFACTS = Path(os.environ.get("FNBENCH_ARTEFACTS", ROOT / "build" / "artefacts"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"

SPEC = """name: report-test
targets:
  - {name: rust-echo, runtime: rust, platform: local, workload: echo, body: {payload: {a: 1}}}
  - {name: python-echo, runtime: python, platform: local, workload: echo, body: {payload: {a: 1}}}
  - {name: rust-sleep, runtime: rust, platform: local, workload: sleep, body: {ms: 30}, timeout: 20ms}
load: {executor: constant, rps: 40, max_in_flight: 32}
duration: 4s
warmup: 1s
flush_interval: 1s
cold_start: {enabled: true, invocations: 3, rps: 3}
slos:
  - {target: "*", metric: error_rate, max: 0.01}
  - {target: rust-echo, metric: response_ms.p99, max: 500}
"""


def fnbench(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*FNBENCH, *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def only_run(results: Path) -> Path:
    (folder,) = [p for p in results.iterdir() if p.is_dir()]
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two real runs of the same spec on this machine's functions (loopback)."""
    from orchestrator.subjects import functions

    for rt in ("rust", "python"):
        try:
            functions.artifact_for(rt)
        except FileNotFoundError:
            if strict():
                raise
            functions.build(rt)
    base = tmp_path_factory.mktemp("report")
    (base / "spec.yaml").write_text(SPEC)
    folders = []
    for n in range(2):
        results = base / f"results{n}"
        r = fnbench("run", str(base / "spec.yaml"), "--results", str(results), "--metrics-port", "0", "--workers", "2")
        # rust-sleep times out: its error-rate SLO fails by design (1); a busy machine may also lose load (3).
        assert r.returncode in (1, 3), r.stderr
        folder = only_run(results)
        assert r.stderr.strip().splitlines()[-1] == f"report: {folder / 'report.html'}", r.stderr[-500:]
        folders.append(folder)
    return folders


# -- a small DevTools protocol client -----------------------------------------------------------


class Browser:
    """Headless Chromium with one page; every console message, exception and request is recorded."""

    def __init__(self, width: int = 1280, height: int = 1000) -> None:
        need(Path(CHROMIUM).exists(), "chromium is not installed (apt-get install chromium)")
        self.profile = Path(tempfile.mkdtemp(prefix="fnbench-chromium-"))
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-default-apps", "--mute-audio", f"--window-size={width},{height}", "--force-device-scale-factor=1",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", f"--user-data-dir={self.profile}",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert self.proc.poll() is None, "chromium exited at start"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port in 30 s"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
            pages = [t for t in json.load(resp) if t["type"] == "page"]
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        # The network is off: any request other than the file itself fails and is seen.
        self.call("Network.emulateNetworkConditions", offline=True, latency=0, downloadThroughput=-1, uploadThroughput=-1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        mid = next(self.ids)
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mid:
                assert "error" not in msg, (method, msg["error"])
                return msg.get("result", {})
            self.events.append(msg)

    def eval(self, expression: str) -> Any:
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in r, (expression, r["result"].get("description"))
        return r["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + 30
        while not self.eval("!!(window.fnbench && window.fnbench.ready) && document.readyState === 'complete'"):
            assert time.monotonic() < deadline, "the report did not finish drawing in 30 s"
            time.sleep(0.1)
        self.call("Runtime.evaluate", expression="0")  # drain events queued so far

    def problems(self) -> list[str]:
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert", "warning"):
                out.append(f"console.{p['type']}: {[a.get('value', a.get('description')) for a in p.get('args', [])]}")
            elif m == "Runtime.exceptionThrown":
                out.append(f"exception: {p['exceptionDetails'].get('exception', {}).get('description')}")
            elif m == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
                out.append(f"log: {p['entry']['text']}")
            elif m == "Network.loadingFailed":
                out.append(f"failed request: {p.get('errorText')} {p.get('type')}")
        return out

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def hover(self, x: float, y: float) -> None:
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)

    def screenshot(self, path: Path, full: bool = True) -> None:
        params: dict[str, Any] = {"format": "png"}
        if full:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params |= {"captureBeyondViewport": True,
                       "clip": {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 16000), "scale": 1}}
        data = self.call("Page.captureScreenshot", **params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def browser():
    b = Browser()
    try:
        yield b
    finally:
        b.close()


# Pixels of each series' own colour inside the plot area: the chart drew its lines, not only axes.
DRAWN = """(() => {
  const out = {};
  for (const [id, u] of Object.entries(window.fnbench.charts)) {
    const ctx = u.ctx, b = u.bbox;
    const px = ctx.getImageData(b.left, b.top, b.width, b.height).data;
    const colours = u.series.slice(1).map(s => {
      const c = document.createElement('canvas').getContext('2d'); c.fillStyle = s._stroke || s.stroke; c.fillRect(0, 0, 1, 1);
      return Array.from(c.getImageData(0, 0, 1, 1).data.slice(0, 3)); });
    const counts = colours.map(() => 0);
    for (let i = 0; i < px.length; i += 4) {
      colours.forEach((c, k) => { if (px[i] === c[0] && px[i + 1] === c[1] && px[i + 2] === c[2] && px[i + 3] > 200) counts[k]++; });
    }
    out[id] = {labels: u.series.slice(1).map(s => s.label), counts, points: u.data[0].length,
               values: u.data.slice(1).map(d => d.filter(v => v != null).length),
               canvas: [u.ctx.canvas.width, u.ctx.canvas.height]};
  }
  return out;
})()"""


def hover_value(b: Browser, chart: str, series_label: str, x: float) -> tuple[str, str]:
    """Move the mouse over the chart at data x; returns (x shown, the series' value shown) from its legend."""
    pos = b.eval(f"""(() => {{
      const u = window.fnbench.charts[{json.dumps(chart)}];
      u.root.scrollIntoView({{block: 'center'}});
      const r = u.over.getBoundingClientRect();
      return [r.left + u.valToPos({x}, 'x'), r.top + r.height / 2];
    }})()""")
    b.hover(*pos)
    deadline = time.monotonic() + 5
    while True:
        shown = b.eval(f"""(() => {{
          const u = window.fnbench.charts[{json.dumps(chart)}];
          const i = u.series.findIndex(s => s.label === {json.dumps(series_label)});
          const rows = u.root.querySelectorAll('.u-legend .u-series');
          return [u.cursor.idx, rows[0].querySelector('.u-value').textContent, rows[i].querySelector('.u-value').textContent];
        }})()""")
        if shown[0] is not None or time.monotonic() > deadline:
            return shown[1], shown[2]
        time.sleep(0.05)


@pytest.mark.integration
def test_report_opens_offline_draws_every_chart_and_hover_shows_result_numbers(runs, browser):
    folder = runs[0]
    page = folder / "report.html"
    text = page.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), "the report links something outside itself"
    result = orjson.loads((folder / "result.json").read_bytes())

    browser.open(page.as_uri())
    assert browser.problems() == []
    assert [u for u in browser.requests() if not u.startswith(("file:", "data:", "about:"))] == []
    drawn = browser.eval(DRAWN)
    expected = {"dist-warm", "dist-cold", "time-0", "time-1", "throughput", "errors", "init", "memory"}
    assert expected <= set(drawn), sorted(drawn)
    # rust-sleep always times out: its percentiles over time are drawn from its rare ok responses, or said absent.
    assert "time-2" in drawn or "rust-sleep @local: response time per 1 s (merged histograms): nothing recorded" in text
    for cid, d in drawn.items():
        assert d["points"] > 1 and min(d["canvas"]) > 100, (cid, d)
        # A line covers hundreds of pixels of its colour; a lone point (a rare ok response) only a few.
        assert max(d["counts"]) >= (20 if max(d["values"]) >= 3 else 1), f"chart {cid} drew no series: {d}"

    # Hover: the legend shows, at p50 and p99 of the warm distribution, exactly result.json's numbers.
    warm = [g for g in result["groups"] if g["phase"] == "warm" and g["response_ms"]["p50"] is not None]
    assert {g["target"] for g in warm} >= {"rust-echo", "python-echo"}
    for g in warm:
        for stat, p in (("p50", 50.0), ("p99", 99.0), ("p999", 99.9)):
            x_shown, value = hover_value(browser, "dist-warm", g["target"], report_html.nines(p))
            assert x_shown == f"{p:g}%"
            assert float(value) == g["response_ms"][stat], (g["target"], stat, value)
    cold = next(g for g in result["groups"] if g["phase"] == "cold" and g["target"] == "python-echo")
    _, value = hover_value(browser, "dist-cold", "python-echo", report_html.nines(50.0))
    assert float(value) == cold["response_ms"]["p50"]

    verdict = browser.eval("document.getElementById('verdict').textContent")
    assert verdict.startswith("FAIL") and "rust-sleep" in verdict
    assert browser.problems() == []
    browser.screenshot(ARTEFACTS / "report.png")
    browser.screenshot(ARTEFACTS / "report-top.png", full=False)


@pytest.mark.integration
def test_overlay_of_two_runs_draws_both_on_the_same_axes(runs, browser, tmp_path):
    out = tmp_path / "overlay.html"
    r = fnbench("report", str(runs[0]), str(runs[1]), "--html", str(out))
    assert r.returncode in (1, 3), r.stderr  # the runs' own verdict (an SLO failed)
    assert r.stderr.strip().endswith(f"report: {out}")
    browser.open(out.as_uri())
    assert browser.problems() == []
    drawn = browser.eval(DRAWN)
    ids = [runs[0].name, runs[1].name]
    for chart in ("dist-warm", "time-0"):
        d = drawn[chart]
        for run_id in ids:
            mine = [c for label, c in zip(d["labels"], d["counts"], strict=True) if label.startswith(run_id)]
            assert mine and max(mine) > 20, (chart, run_id, d)
    results = [orjson.loads((f / "result.json").read_bytes()) for f in runs]
    for run_id, res in zip(ids, results, strict=True):
        g = next(g for g in res["groups"] if g["target"] == "rust-echo" and g["phase"] == "warm")
        _, value = hover_value(browser, "dist-warm", f"{run_id} · rust-echo", report_html.nines(99.0))
        assert float(value) == g["response_ms"]["p99"]
    browser.screenshot(ARTEFACTS / "overlay.png", full=False)


def parse_tables(md: str) -> list[list[dict[str, str]]]:
    tables, rows = [], []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
        elif rows:
            head, sep, *body = rows
            assert all(re.fullmatch(r":?-+:?", c) for c in sep) and len(sep) == len(head)
            assert all(len(r) == len(head) for r in body)
            tables.append([dict(zip(head, r, strict=True)) for r in body])
            rows = []
    return tables


@pytest.mark.integration
def test_markdown_summary_is_a_table_with_the_results_numbers(runs):
    folder = runs[0]
    r = fnbench("report", str(folder), "--markdown")
    assert r.returncode in (1, 3), r.stderr
    result = orjson.loads((folder / "result.json").read_bytes())
    assert f"`{result['run_id']}`" in r.stdout and "**FAIL**" in r.stdout
    groups, slos = parse_tables(r.stdout)
    assert len(groups) == len(result["groups"])
    for row, g in zip(groups, result["groups"], strict=True):
        assert (row["target"], row["phase"], row["runtime"]) == (g["target"], g["phase"], g["runtime"])
        for col, stat in (("p50 ms", "p50"), ("p99 ms", "p99"), ("max ms", "max")):
            want = g["response_ms"][stat]
            assert (row[col] == "–") if want is None else float(row[col]) == pytest.approx(want, abs=5e-4), (row, g)
        assert int(row["errors"]) == sum(n for k, n in g["outcomes"].items() if k != "ok")
    assert [(s["SLO"], s["target"], s["phase"]) for s in slos] == [
        ("PASS" if v["pass"] else "FAIL", v["target"], v["phase"]) for v in result["slo"]]


@pytest.mark.integration
def test_bad_input_is_a_clear_message_or_a_report_that_states_the_damage(runs, tmp_path):
    r = fnbench("report", str(tmp_path / "no-such-run"), "--html")
    assert r.returncode == 2 and "no-such-run" in r.stderr and "Traceback" not in r.stderr
    empty = tmp_path / "empty-run"
    empty.mkdir()
    (empty / "result.json").write_bytes((runs[0] / "result.json").read_bytes())
    r = fnbench("report", str(empty), "--html")
    assert r.returncode == 2 and "intervals.jsonl" in r.stderr and "Traceback" not in r.stderr

    torn = tmp_path / "torn"
    torn.mkdir()
    for name in ("spec.yaml", "result.json"):
        (torn / name).write_bytes((runs[0] / name).read_bytes())
    data = (runs[0] / "intervals.jsonl").read_bytes()
    (torn / "intervals.jsonl").write_bytes(data[: data.rindex(b"\n", 0, len(data) - 1) + 40])  # crash mid-write
    r = fnbench("report", str(torn), "--html")
    assert r.returncode in (1, 2) and "Traceback" not in r.stderr, r.stderr
    page = (torn / "report.html").read_text()
    assert "cut short" in page
    r = fnbench("report", str(torn), "--markdown")
    assert "cut short" in r.stdout and "Traceback" not in r.stderr

    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "intervals.jsonl").write_bytes(b"{not json\n" + data)
    r = fnbench("report", str(garbage), "--html")
    assert r.returncode == 2 and "intervals.jsonl:1" in r.stderr and "Traceback" not in r.stderr


def synthetic_hour(folder: Path, targets: int = 8, regions: int = 2, flush_s: float = 5.0) -> None:
    """One hour of 8 targets × 2 regions, two shards each, with errors of every kind in every interval."""
    rng = random.Random(7)
    start = 1_700_000_000.0
    folder.mkdir(parents=True)
    kinds = ["ok", "http_5xx", "timeout", "reset", "throttled", "dropped", "connect_error"]
    hists = []
    for _ in range(16):
        h = histograms.new_histogram()
        histograms.fill(h, [int(rng.lognormvariate(8.5, 0.6)) for _ in range(2000)])
        hists.append(histograms.encode(h))
    with open(folder / "intervals.jsonl", "wb") as f:
        for region, t, shard in itertools.product(range(regions), range(targets), range(2)):
            for seq in range(int(3600 / flush_s)):
                h = rng.choice(hists)
                outcomes = {k: rng.randint(50, 500) for k in kinds}
                n = sum(outcomes.values())
                iv = Interval(run_id="hour", shard_id=f"r{region}-t{t}-s{shard}", attempt=0, seq=seq,
                              region=f"region-{region}", target=f"target-{t}", runtime=["rust", "go", "node", "python"][t % 4],
                              phase="warm", t0=start + seq * flush_s, t1=start + (seq + 1) * flush_s, intended=n, sent=n,
                              completed=n, outcomes=outcomes, response_us=h, service_us=h, send_lag_us=h, max_memory_mb=20.0 + t, workload="echo")
                f.write(iv.to_json() + b"\n")


@pytest.mark.integration
@pytest.mark.slow
def test_one_hour_of_16_groups_with_many_errors_stays_under_2_mb(tmp_path):
    folder = tmp_path / "hour"
    synthetic_hour(folder)
    r = fnbench("report", str(folder), "--html", timeout=300)
    assert r.returncode in (0, 1, 2) and "Traceback" not in r.stderr, r.stderr
    page = folder / "report.html"
    size = page.stat().st_size
    assert size <= 2_000_000, f"{size} bytes"
    # Many more requests (and errors) do not make it bigger: the size follows intervals and targets only.
    assert "errors by outcome" in page.read_text()


HOSTILE = "x<!--<script>y</script>z\u2028&amp;"


@pytest.mark.integration
def test_markup_in_names_and_errors_from_the_intervals_leaves_every_chart_drawn(browser, tmp_path):
    """``<!--<script>`` in a string of the inline JSON once put the parser in a script-data state that
    swallowed the rest of the page: no chart was drawn.  Names from the intervals and error texts now
    carry no ``<``, ``>``, ``&`` or U+2028 into the script element (issue 20, item 9)."""
    from orchestrator.run.collect import Collector

    folder = tmp_path / "hostile"
    folder.mkdir()
    rng = random.Random(3)
    h = histograms.new_histogram()
    histograms.fill(h, [int(rng.lognormvariate(8.5, 0.5)) for _ in range(500)])
    enc = histograms.encode(h)
    collector = Collector("hostile")
    with open(folder / "intervals.jsonl", "wb") as f:
        for t, name in enumerate(("plain", HOSTILE)):
            for seq in range(6):
                iv = Interval(run_id="hostile", shard_id=f"s{t}", attempt=0, seq=seq, region="local", target=name,
                              runtime="rust", phase="warm", t0=1_700_000_000.0 + seq, t1=1_700_000_001.0 + seq,
                              intended=100, sent=100, completed=100, outcomes={"ok": 95, "http_5xx": 5},
                              response_us=enc, service_us=enc, send_lag_us=enc, workload="echo")
                f.write(iv.to_json() + b"\n")
                collector.add(iv)
    result = collector.result(errors=(f"worker says {HOSTILE}",), name=f"run {HOSTILE}")
    (folder / "result.json").write_bytes(result.to_json())
    out = tmp_path / "hostile.html"
    r = fnbench("report", str(folder), "--html", str(out))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr  # its errors[] makes exit 2
    text = out.read_text()
    data = text.split('<script type="application/json" id="fnbench-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in data and ">" not in data and "&" not in data and "\u2028" not in data
    browser.open(out.as_uri())
    assert browser.problems() == []
    drawn = browser.eval(DRAWN)
    assert {"dist-warm", "time-0", "time-1", "throughput", "errors"} <= set(drawn), sorted(drawn)
    for cid, d in drawn.items():
        assert d["points"] > 1 and max(d["counts"]) > 0, (cid, d)
    labels = {label for d in drawn.values() for label in d["labels"]}
    assert any(HOSTILE in label for label in labels), labels  # the name is shown as it is, not mangled
    assert browser.eval("document.querySelectorAll('script').length") == 3  # no element was injected
