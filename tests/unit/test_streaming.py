"""Response streaming without a server: the event stream codec against botocore's decoder (the
independent one AWS's SDK uses), the invoke_mode option, and the streaming charge past 6 MB."""

from __future__ import annotations

import subprocess
import sys
import zlib
from pathlib import Path

import orjson
import pytest
from botocore.eventstream import EventStreamBuffer

from orchestrator import session
from orchestrator.analysis import cost
from orchestrator.errors import SpecError
from workers.contract import Target
from workers.errors import SetupError
from workers.platforms.aws_lambda import LambdaInvoker
from workers.platforms.aws_lambda.eventstream import (
    Decoder,
    EventStreamError,
    encode_event,
    encode_message,
)


def botocore_messages(raw: bytes) -> list[tuple[dict[str, object], bytes]]:
    buf = EventStreamBuffer()
    buf.add_data(raw)
    return [(m.headers, m.payload) for m in buf]


def test_botocore_decodes_what_we_encode() -> None:
    raw = encode_event("PayloadChunk", b"hello") + encode_event("InvokeComplete", b'{"ErrorCode":"X"}', "application/json")
    (h1, p1), (h2, p2) = botocore_messages(raw)
    assert h1 == {":event-type": "PayloadChunk", ":content-type": "application/octet-stream", ":message-type": "event"}
    assert p1 == b"hello"
    assert h2[":event-type"] == "InvokeComplete" and orjson.loads(p2) == {"ErrorCode": "X"}


def test_the_decoder_reads_any_split_of_the_bytes() -> None:
    msgs = [encode_event("PayloadChunk", bytes([i]) * (i * 7)) for i in range(1, 6)]
    msgs.append(encode_message([(":event-type", "InvokeComplete"), (":message-type", "event")], b"{}"))
    raw = b"".join(msgs)
    expected = botocore_messages(raw)
    for cut in range(0, len(raw), 3):
        d = Decoder()
        got = d.feed(raw[:cut]) + d.feed(raw[cut:])
        assert got == expected and d.pending == 0


@pytest.mark.parametrize("where", ["prelude", "message"])
def test_a_corrupt_message_is_an_error(where: str) -> None:
    raw = bytearray(encode_event("PayloadChunk", b"abc"))
    raw[10 if where == "prelude" else 30] ^= 0xFF
    with pytest.raises(EventStreamError):
        Decoder().feed(bytes(raw))


def test_a_length_past_the_bounds_is_refused_before_it_is_buffered() -> None:
    prelude = (64 * 2**20).to_bytes(4, "big") + (0).to_bytes(4, "big")
    prelude += zlib.crc32(prelude).to_bytes(4, "big")
    with pytest.raises(EventStreamError, match="out of bounds"):
        Decoder().feed(prelude)


def _target(**address: object) -> Target:
    return Target(name="t", runtime="node", platform="aws-lambda", address={"function": "f", **address})


def test_invoke_mode_picks_the_route() -> None:
    assert LambdaInvoker(_target()).path == "/2015-03-31/functions/f/invocations"
    streamed = LambdaInvoker(_target(invoke_mode="stream"))
    assert streamed.path == "/2021-11-15/functions/f/response-streaming-invocations"
    assert streamed.max_body >= 20 * 1024 * 1024


def test_a_bad_invoke_mode_is_refused_on_the_worker_and_in_the_spec(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match="invoke_mode"):
        LambdaInvoker(_target(invoke_mode="streaming"))
    text = ("name: x\nload: {rps: 1}\ntargets: [{name: a, platform: aws-lambda, function: f, "
            "endpoint_url: 'http://127.0.0.1:9/', invoke_mode: streaming}]\n")
    with pytest.raises(SpecError) as info:
        session.runnable(text, "<spec>")
    assert any(p.startswith("targets[0].invoke_mode") for p in info.value.problems), info.value.problems
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "validate", str(spec)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "invoke_mode" in r.stderr and "Traceback" not in r.stderr, r.stderr
    ok = spec.with_name("ok.yaml")
    ok.write_text(text.replace("streaming", "stream"))
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "validate", str(ok)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_streaming_cost_is_charged_past_6_mb_per_invocation() -> None:
    price = cost.price_for("us-east-1", "x86_64")
    assert price is not None and price.stream_gb_usd == 0.008
    assert cost.streaming_cost(6 * 2**20, price) == 0.0
    assert cost.streaming_cost(5 * 2**20, price) == 0.0
    assert cost.streaming_cost(6 * 2**20 + 2**30, price) == pytest.approx(0.008)
    # 1,000 invocations streaming 10 MiB each: 4 MiB charged each, 1000 * 4 MiB = 3.90625 GiB.
    assert 1000 * cost.streaming_cost(10 * 2**20, price) == pytest.approx(1000 * 4 / 1024 * 0.008)
    assert price.to_address()["stream_gb_usd"] == 0.008


def test_group_cost_adds_the_streaming_charge() -> None:
    counters = {"billed_requests": 2, "cost_usd": 1e-6, "request_usd": 4e-7, "stream_bytes": 2 * 7 * 2**20,
                "stream_billable_bytes": 2 * 2**20, "stream_usd": 2 * 2**20 / 2**30 * 0.008}
    c = cost.group_cost(counters)
    assert c is not None
    assert c["streaming"] == {"bytes": 14 * 2**20, "billable_bytes": 2 * 2**20, "usd": counters["stream_usd"],
                              "per_million_usd": counters["stream_usd"] / 2 * 1e6}
    assert c["cost_with_requests_usd"] == pytest.approx(1e-6 + 4e-7 + counters["stream_usd"])
    assert c["per_million_usd"] == pytest.approx(1e-6 / 2 * 1e6)  # compute only, as before


def test_the_reports_show_ttfb_ttlb_and_bytes(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from orchestrator.report import html, terminal
    from orchestrator.run.collect import Collector
    from orchestrator.run.result import RunResult
    from workers import histograms
    from workers.contract import Interval

    def hist(value_us: int) -> str:
        h = histograms.new_histogram()
        histograms.fill(h, [value_us] * 10)
        return histograms.encode(h)

    iv = Interval(run_id="r", shard_id="local/s/warm/p0of1/s0", attempt=0, seq=0, region="local", target="s",
                  runtime="node", phase="warm", t0=100.0, t1=101.0, intended=10, sent=10, completed=10,
                  outcomes={"ok": 10}, response_us=hist(200_000), service_us=hist(200_000), send_lag_us="",
                  platform_us=hist(190_000), billed_us=hist(190_000), ttfb_us=hist(3_000), ttlb_us=hist(199_000),
                  counters={"billed_requests": 10, "cost_usd": 1e-5, "stream_bytes": 10 * 7 * 2**20,
                            "stream_billable_bytes": 10 * 2**20, "stream_usd": 10 * 2**20 / 2**30 * 0.008})
    c = Collector("r", {"warm": 1.0})
    c.add(iv)
    result = c.result()
    (g,) = result.groups
    assert g.ttfb_ms is not None and g.ttlb_ms is not None and g.ttfb_ms.p50 < g.ttlb_ms.p50
    assert g.stream_bytes == 70 * 2**20 and g.cost is not None and g.cost["streaming"]["billable_bytes"] == 10 * 2**20
    d = RunResult.from_dict(orjson.loads(orjson.dumps(result.to_dict()))).groups[0]  # result.json round trip
    assert d.ttfb_ms == g.ttfb_ms and d.stream_bytes == g.stream_bytes
    buf = io.StringIO()
    terminal.render(result, Console(file=buf, width=200, force_terminal=False, color_system=None))
    text = buf.getvalue()
    assert "TTFB p50" in text and "70 MiB" in text and "7 MiB" in text
    (tmp_path / "intervals.jsonl").write_bytes(iv.to_json() + b"\n")
    page = html.render([html.load_run(tmp_path, result)])
    assert "Response streaming" in page and "TTFB p99 ms" in page


def test_ttfb_and_ttlb_are_slo_metrics() -> None:
    text = ("name: x\nload: {rps: 1}\ntargets: [{name: a, platform: aws-lambda, function: f, "
            "endpoint_url: 'http://127.0.0.1:9/', invoke_mode: stream}]\n"
            "slos: [{metric: ttfb_ms.p99, max: 100}, {metric: ttlb_ms.p50, max: 1000}]\n")
    session.runnable(text, "<spec>")  # no problem
