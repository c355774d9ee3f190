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


def test_the_relative_table_shows_the_size_of_this_machines_build_beside_rusts(tmp_path, monkeypatch):
    """Local functions: the artefact's size (rust-wasm: its .wasm module) and its ratio to Rust's binary;
    '-' for a runtime that is not built here or is not one of fnbench's functions."""
    from orchestrator.analysis.compare import TargetRow

    sizes = {"rust": 1_000_000, "rust-wasm": 250_000}

    def fake_size(runtime: str) -> float | None:
        return sizes[runtime] / 1e6 if runtime in sizes else None

    monkeypatch.setattr(terminal, "built_size_mb", fake_size)
    x = dict.fromkeys(("p50_ms", "p99_ms", "rps", "cold_start_ms", "rss_mb"), None)
    rows = [TargetRow("r", "rust-hash", "rust", "hash", p50_ms=1.0, x=x),
            TargetRow("r", "wasm-hash", "rust-wasm", "hash", p50_ms=2.0, x=x),
            TargetRow("r", "other-hash", "other", "hash", p50_ms=3.0, x=x)]
    console = Console(file=io.StringIO(), width=250, force_terminal=False, color_system=None)
    console.print(terminal.relative_table(rows))
    text = console.file.getvalue()
    assert "artefact MB" in text
    wasm = next(line for line in text.splitlines() if "wasm-hash" in line)
    other = next(line for line in text.splitlines() if "other-hash" in line)
    assert "0.25 (0.25×)" in wasm
    assert other.rstrip().rstrip("│").rstrip().endswith("-")


def test_built_size_is_none_for_what_is_not_built_or_not_a_function():
    terminal.built_size_mb.cache_clear()
    assert terminal.built_size_mb("other") is None
