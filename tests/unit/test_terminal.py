"""What the terminal shows: regions told apart, columns that cannot be misread, one progress line per update."""

from __future__ import annotations

import io
import time

from rich.console import Console

from orchestrator.report import terminal
from orchestrator.run.collect import Collector
from orchestrator.run.result import SloVerdict
from orchestrator.run.watch import LiveView
from workers import histograms
from workers.contract import Interval


def _interval(region: str, seq: int) -> Interval:
    h = histograms.new_histogram()
    histograms.fill(h, [1500] * 50)
    return Interval(run_id="r", shard_id=f"{region}/synthetic/warm/p0of1/s0", attempt=0, seq=seq, region=region,
                    target="synthetic", runtime="other", phase="warm", t0=100.0 + seq, t1=101.0 + seq, intended=50,
                    sent=50, completed=50, outcomes={"ok": 50}, response_us=histograms.encode(h),
                    service_us=histograms.encode(h), send_lag_us="")


def _console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=60, force_terminal=False, color_system=None), buf


def test_two_regions_are_labelled_in_the_progress_line_and_the_slo_lines():
    c = Collector("r", {"warm": 2.0})
    c.add_all([_interval("a", 0), _interval("b", 0)])
    console, buf = _console()
    view = LiveView(c, time.time() - 30.0, 24.0, console)
    view.update()
    (line,) = buf.getvalue().splitlines()  # one line, never wrapped at the console width
    assert "a/synthetic warm: 50 done" in line and "b/synthetic warm: 50 done" in line
    assert line.startswith("[24s +") and "finishing]" in line  # past the planned length, said so
    result = c.result(slo=[SloVerdict("synthetic", r, "warm", "response_ms.p99", 100.0, None, 1.5, True)
                           for r in ("a", "b")])
    console, buf = _console()
    terminal.render(result, console)
    text = buf.getvalue()
    assert "a/synthetic warm response_ms.p99" in text and "b/synthetic warm response_ms.p99" in text


def test_result_columns_say_offered_and_ok_and_p50():
    c = Collector("r", {"warm": 2.0})
    c.add(_interval("a", 0))
    table = terminal.groups_table(c.result().groups)
    headers = [str(col.header) for col in table.columns]
    assert "offered/s" in headers and "ok/s" in headers and "req/s" not in headers
