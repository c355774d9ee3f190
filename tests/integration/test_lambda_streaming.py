"""Response streaming on the local Lambda with the real Node function under aws-lambda-ric
(``index.streamHandler``: awslambda.streamifyResponse), read by boto3/botocore (AWS's own event
stream decoder) and by fnbench's invoker (``invoke_mode: stream``).

Timing assertions are orderings and ratios (a chunk written later arrives later; the first byte
comes well before the last when the function waits between chunks), never absolute times.
"""

import asyncio
import http.client
import json
import time
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials as BotoCredentials
from botocore.eventstream import EventStreamBuffer

from lambda_emulator import server as lambda_local
from lambda_emulator import streaming
from orchestrator.analysis import cost
from orchestrator.run.collect import Collector
from tests.servers import need
from workers.contract import Outcome, Shard, Target
from workers.histograms import decode
from workers.platforms.aws_lambda import LambdaInvoker
from workers.platforms.aws_lambda.report import Report, from_log_result
from workers.shard import run_shard

pytestmark = pytest.mark.integration
MiB = 2**20


@pytest.fixture(autouse=True)
def _credentials(lambda_credentials):
    pass


def stream_event(chunks, chunk_bytes, delay_ms, **extra):
    return {"workload": "stream", "params": {"chunks": chunks, "chunk_bytes": chunk_bytes, "delay_ms": delay_ms,
                                             **extra}}


def expected_bytes(chunks, chunk_bytes):
    return b"".join(bytes([97 + i % 26]) * chunk_bytes for i in range(chunks))


@pytest.fixture(scope="module")
def lam():
    """node (index.handler: buffered), node-stream (index.streamHandler), python (buffered),
    rust (lambda_runtime: buffered), rust-stream (the bootstrap's own streaming client, _HANDLER=stream)."""
    try:
        node, python, rust = lambda_local.make_functions(["node", "python", "rust"], reserved=4)
    except FileNotFoundError as exc:
        need(False, str(exc))
    stream = lambda_local.Function(name="node-stream", runtime="node", command=[*node.command[:-1], "index.streamHandler"],
                                   cwd=node.cwd, env=node.env, handler="index.streamHandler", reserved=4)
    rust_stream = lambda_local.Function(name="rust-stream", runtime="rust", command=rust.command, cwd=rust.cwd,
                                        env=rust.env, handler="stream", reserved=4)
    mp = pytest.MonkeyPatch()
    mp.setenv("AWS_ACCESS_KEY_ID", "fnbench")
    mp.setenv("AWS_SECRET_ACCESS_KEY", "fnbench")
    with lambda_local.Background([node, python, rust, stream, rust_stream]) as background:
        yield background
    mp.undo()


def client(endpoint):
    return boto3.client("lambda", endpoint_url=endpoint, region_name="us-east-1",
                        config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=60))


def boto3_stream(endpoint, function, event, log_type="None"):
    """[(monotonic arrival, event dict)] as boto3's EventStream yields them."""
    r = client(endpoint).invoke_with_response_stream(FunctionName=function, LogType=log_type, Payload=json.dumps(event))
    assert r["StatusCode"] == 200 and r["ExecutedVersion"] == "$LATEST"
    assert r["ResponseMetadata"]["HTTPHeaders"]["content-type"] == "application/vnd.amazon.eventstream"
    return [(time.monotonic(), ev) for ev in r["EventStream"]]


STREAMERS = ["node-stream", "rust-stream"]


@pytest.mark.parametrize("streamer", STREAMERS)
def test_chunks_arrive_as_the_function_writes_them(lam, streamer):
    boto3_stream(lam.endpoint, streamer, stream_event(1, 1, 0))  # warm: no Init in the timings
    t0 = time.monotonic()
    events = boto3_stream(lam.endpoint, streamer, stream_event(5, 1000, 150))
    chunks = [(t, ev["PayloadChunk"]["Payload"]) for t, ev in events if "PayloadChunk" in ev]
    (t_end, complete), = [(t, ev["InvokeComplete"]) for t, ev in events if "InvokeComplete" in ev]
    assert "ErrorCode" not in complete
    assert [p for _, p in chunks] == [bytes([97 + i]) * 1000 for i in range(5)]  # one event per write, in order
    times = [t for t, _ in chunks]
    assert times == sorted(times) and t_end >= times[-1]
    # Four waits separate five writes: the first byte comes well before the last.
    ttfb, ttlb = times[0] - t0, t_end - t0
    assert ttfb < 0.25 * ttlb, (ttfb, ttlb)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) > 0.25 * (ttlb - ttfb) / 4, gaps  # each chunk separately, not bunched at the end


def signed_raw(endpoint, function, event, log_type="Tail"):
    """The local Lambda's response bytes (de-chunked by http.client), signed as boto3 signs."""
    url = f"{endpoint}/2021-11-15/functions/{function}/response-streaming-invocations"
    req = AWSRequest(method="POST", url=url, data=json.dumps(event).encode(),
                     headers={"Content-Type": "application/json", "X-Amz-Log-Type": log_type})
    SigV4Auth(BotoCredentials("fnbench", "fnbench"), "lambda", "us-east-1").add_auth(req)
    parts = urlsplit(endpoint)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("POST", urlsplit(url).path, body=req.body, headers=dict(req.headers.items()))
    r = conn.getresponse()
    raw = r.read()
    conn.close()
    return r, raw


def test_botocore_decoder_accepts_the_local_lambdas_bytes(lam):
    r, raw = signed_raw(lam.endpoint, "node-stream", stream_event(3, 4, 0))
    assert r.status == 200 and r.getheader("Transfer-Encoding") == "chunked"
    assert r.getheader("x-amzn-RequestId") and r.getheader("X-Amz-Executed-Version") == "$LATEST"
    buf = EventStreamBuffer()
    buf.add_data(raw)
    messages = list(buf)  # checks both CRCs of every message
    assert [m.headers[":event-type"] for m in messages] == ["PayloadChunk"] * 3 + ["InvokeComplete"]
    assert all(m.headers[":message-type"] == "event" for m in messages)
    assert b"".join(m.payload for m in messages[:3]) == expected_bytes(3, 4)
    complete = json.loads(messages[-1].payload)
    assert set(complete) == {"LogResult"} and messages[-1].headers[":content-type"] == "application/json"
    report = from_log_result(complete["LogResult"].encode())
    assert isinstance(report, Report) and report.request_id == r.getheader("x-amzn-RequestId")


@pytest.mark.parametrize("streamer", STREAMERS)
def test_an_error_mid_stream_ends_it_with_the_error_code(lam, streamer):
    events = boto3_stream(lam.endpoint, streamer, stream_event(4, 10, 0, fail_after=2), log_type="Tail")
    payload = [ev["PayloadChunk"]["Payload"] for _, ev in events if "PayloadChunk" in ev]
    (complete,) = [ev["InvokeComplete"] for _, ev in events if "InvokeComplete" in ev]
    assert payload == [b"a" * 10, b"b" * 10]  # what was written before the error still came
    assert complete["ErrorCode"] == "BadRequest"
    assert json.loads(complete["ErrorDetails"])["errorMessage"] == "stream failed after 2 chunks (fail_after)"
    assert isinstance(from_log_result(complete["LogResult"].encode()), Report)
    # The instance serves on.
    events = boto3_stream(lam.endpoint, streamer, stream_event(1, 3, 0))
    assert [ev for _, ev in events][0] == {"PayloadChunk": {"Payload": b"aaa"}}


@pytest.mark.parametrize("function", ["node", "python", "rust"])
def test_a_buffered_function_through_the_streaming_route_is_one_chunk(lam, function):
    events = [ev for _, ev in boto3_stream(lam.endpoint, function, stream_event(3, 2, 0))]
    assert len(events) == 2 and "InvokeComplete" in events[1] and "ErrorCode" not in events[1]["InvokeComplete"]
    body = json.loads(events[0]["PayloadChunk"]["Payload"])
    assert body["runtime"] == function and body["result"]["bytes"] == 6
    # A handler error of a buffered function: InvokeComplete carries it, no payload.
    events = [ev for _, ev in boto3_stream(lam.endpoint, function, {"workload": "nope"})]
    assert len(events) == 1 and events[0]["InvokeComplete"]["ErrorCode"] == "BadRequest"


@pytest.mark.parametrize("streamer", STREAMERS)
def test_a_streamed_response_reaches_plain_invoke_buffered(lam, streamer):
    c = client(lam.endpoint)
    r = c.invoke(FunctionName=streamer, Payload=json.dumps(stream_event(3, 5, 0)))
    assert "FunctionError" not in r and r["Payload"].read() == expected_bytes(3, 5)
    r = c.invoke(FunctionName=streamer, Payload=json.dumps(stream_event(3, 5, 0, fail_after=1)))
    assert r["FunctionError"] == "Unhandled" and json.loads(r["Payload"].read())["errorType"] == "BadRequest"


def test_refusals_before_the_stream_are_plain_errors(lam):
    c = client(lam.endpoint)
    with pytest.raises(c.exceptions.ResourceNotFoundException):
        c.invoke_with_response_stream(FunctionName="nope", Payload=b"{}")


def test_a_stream_past_the_cap_ends_with_response_size_too_large(lam, monkeypatch):
    monkeypatch.setattr(streaming, "MAX_STREAM_BYTES", 2500)
    events = [ev for _, ev in boto3_stream(lam.endpoint, "node-stream", stream_event(4, 1000, 0))]
    payload = b"".join(ev["PayloadChunk"]["Payload"] for ev in events if "PayloadChunk" in ev)
    assert payload == expected_bytes(2, 1000)  # no more than the cap went out
    assert events[-1]["InvokeComplete"]["ErrorCode"] == "Function.ResponseSizeTooLarge"


def invoke_ours(endpoint, function, event, **address):
    async def main():
        inv = LambdaInvoker(Target(name="t", runtime="node", platform="aws-lambda", body=json.dumps(event),
                                   timeout_s=60, address={"function": function, "endpoint_url": endpoint,
                                                          "invoke_mode": "stream", **address}))
        await inv.start()
        fut = asyncio.get_running_loop().create_future()
        inv.invoke(time.monotonic(), lambda outcome, due, sent, end, info=None: fut.set_result((outcome, info)))
        result = await fut
        await inv.close()
        return result, inv.counters()

    return asyncio.run(main())


def test_our_invoker_reads_outcomes_bytes_and_times(lam):
    (outcome, info), counts = invoke_ours(lam.endpoint, "node-stream", stream_event(3, 100, 100))
    assert outcome == Outcome.ok and 0 < info.ttfb_us < info.ttlb_us and info.platform_us > 0
    assert counts["stream_bytes"] == 300 and "stream_billable_bytes" not in counts
    (outcome, info), counts = invoke_ours(lam.endpoint, "node-stream", stream_event(3, 100, 0, fail_after=1))
    assert outcome == Outcome.function_error and counts["lambda_error:BadRequest"] == 1
    assert counts["stream_bytes"] == 100 and counts["function_errors"] == 1
    (outcome, _), counts = invoke_ours(lam.endpoint, "node", stream_event(2, 1, 0))  # buffered function
    assert outcome == Outcome.ok and counts["stream_bytes"] > 0


def test_more_than_6_mb_streamed_is_charged(lam):
    price = cost.price_for("us-east-1", "x86_64")
    (outcome, info), counts = invoke_ours(lam.endpoint, "node-stream", stream_event(7, MiB, 0),
                                          price=price.to_address())
    assert outcome == Outcome.ok
    assert counts["stream_bytes"] == 7 * MiB and counts["stream_billable_bytes"] == MiB
    assert counts["stream_usd"] == pytest.approx(cost.streaming_cost(7 * MiB, price))


def test_a_run_records_ttfb_and_ttlb_histograms(lam):
    boto3_stream(lam.endpoint, "node-stream", stream_event(1, 1, 0))
    target = Target(name="node-stream", runtime="node", platform="aws-lambda", timeout_s=30,
                    body=json.dumps(stream_event(4, 2000, 60)), workload="stream",
                    address={"function": "node-stream", "endpoint_url": lam.endpoint, "invoke_mode": "stream",
                             "price": cost.price_for("us-east-1", "x86_64").to_address()})
    shard = Shard(run_id="r", shard_id="s", region="local", target=target, phase="warm",
                  arrival={"kind": "constant", "rps": "4"}, start_at=time.time() + 0.3, duration_s=2.0,
                  max_in_flight=4, flush_interval_s=5.0)
    intervals = []
    run_shard(shard, intervals.append)
    ok = sum(iv.outcomes.get("ok", 0) for iv in intervals)
    assert ok >= 4 and set().union(*(iv.outcomes for iv in intervals)) == {"ok"}
    assert sum(decode(iv.ttfb_us).get_total_count() for iv in intervals) == ok
    assert sum(decode(iv.ttlb_us).get_total_count() for iv in intervals) == ok
    collector = Collector("r")
    collector.add_all(intervals)
    (g,) = collector.group_rows()
    assert g.stream_bytes == ok * 8000
    # Three 60 ms waits between four writes: TTFB well below TTLB, TTLB within the response time.
    assert g.ttfb_ms.p50 < 0.5 * g.ttlb_ms.p50 and g.ttlb_ms.p50 <= g.response_ms.p50
    assert g.cost["streaming"]["bytes"] == ok * 8000 and g.cost["streaming"]["usd"] == 0.0
    d = g.to_dict()
    assert d["ttfb_ms"]["p99"] is not None and d["stream_bytes"] == ok * 8000
    assert type(g).from_dict(d) == g
    print(f"\nTTFB p50 {g.ttfb_ms.p50:.1f} ms p99 {g.ttfb_ms.p99:.1f} ms; TTLB p50 {g.ttlb_ms.p50:.1f} ms "
          f"p99 {g.ttlb_ms.p99:.1f} ms; response p50 {g.response_ms.p50:.1f} ms; {ok} invocations, "
          f"{g.stream_bytes} bytes")


@pytest.mark.parametrize("streamer", STREAMERS)
def test_the_stream_vectors_streamed(lam, streamer):
    """functions/vectors/stream.json through InvokeWithResponseStream: the streamed bytes are the
    ones whose size and SHA-256 the buffered runtimes return; a bad case ends with BadRequest."""
    import hashlib
    from pathlib import Path

    cases = json.loads((Path(__file__).resolve().parents[2] / "functions/vectors/stream.json").read_text())["cases"]
    failures = []
    for case in cases:
        events = [ev for _, ev in boto3_stream(lam.endpoint, streamer, {"workload": "stream",
                                                                          "params": case["params"]})]
        payload = b"".join(ev["PayloadChunk"]["Payload"] for ev in events if "PayloadChunk" in ev)
        complete = events[-1]["InvokeComplete"]
        if case["status"] == 200:
            got = {"chunks": case["params"]["chunks"], "bytes": len(payload),
                   "sha256": hashlib.sha256(payload).hexdigest()}
            if "ErrorCode" in complete or got != case["result"]:
                failures.append(f"{case['name']}: {got} {complete} != {case['result']}")
            delayed = case["params"]["delay_ms"] > 0  # (without a wait, writes may share an event)
            if delayed and sum("PayloadChunk" in ev for ev in events) != case["params"]["chunks"]:
                failures.append(f"{case['name']}: not one event per chunk")
        elif complete.get("ErrorCode") != "BadRequest":
            failures.append(f"{case['name']}: expected BadRequest, got {complete}")
    assert not failures, "\n".join(failures)


def test_a_slow_reader_holds_the_function_back_not_the_servers_memory(lam, monkeypatch):
    """Flow control: past HIGH_WATER bytes queued for the client, the runtime's connection is not
    read until the client catches up; every byte still arrives, in order, decodable."""
    import socket

    pauses = []
    original = streaming.StreamingClient._resume_when_drained

    def watched(self):
        pauses.append(self.conn.transport.get_write_buffer_size())
        original(self)

    monkeypatch.setattr(streaming.StreamingClient, "_resume_when_drained", watched)
    event = stream_event(8, MiB, 0)
    url = f"{lam.endpoint}/2021-11-15/functions/node-stream/response-streaming-invocations"
    req = AWSRequest(method="POST", url=url, data=json.dumps(event).encode(), headers={"Content-Type": "application/json"})
    SigV4Auth(BotoCredentials("fnbench", "fnbench"), "lambda", "us-east-1").add_auth(req)
    parts = urlsplit(lam.endpoint)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # a small window: the client is the bottleneck
    sock.settimeout(60)
    sock.connect((parts.hostname, parts.port))
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    conn.sock = sock
    conn.request("POST", urlsplit(url).path, body=req.body, headers=dict(req.headers.items()))
    r = conn.getresponse()
    buf = EventStreamBuffer()
    for _ in range(10_000):  # bounded: 8 MiB in 64 KiB reads
        piece = r.read(64 * 1024)
        if not piece:
            break
        buf.add_data(piece)
        time.sleep(0.003)
    conn.close()
    messages = list(buf)
    assert messages[-1].headers[":event-type"] == "InvokeComplete" and "ErrorCode" not in json.loads(messages[-1].payload)
    assert b"".join(m.payload for m in messages[:-1]) == expected_bytes(8, MiB)
    assert pauses, "the runtime's connection was never paused"
    assert max(pauses) < streaming.HIGH_WATER + 2 * MiB  # at most the high-water mark and a chunk or so queued


def test_a_qualified_stream_runs_that_version_and_a_throttle_keeps_its_reason(lam):
    """InvokeWithResponseStream honours a Qualifier as Invoke does (the version's own instances,
    X-Amz-Executed-Version its number); a throttled streamed invoke is counted by its Reason."""
    c = client(lam.endpoint)
    version = c.publish_version(FunctionName="node-stream")["Version"]
    c.create_alias(FunctionName="node-stream", Name="live", FunctionVersion=version)
    for qualifier in (version, "live"):
        r = c.invoke_with_response_stream(FunctionName="node-stream", Qualifier=qualifier,
                                          Payload=json.dumps(stream_event(2, 10, 0)))
        assert r["ExecutedVersion"] == version
        assert b"".join(ev["PayloadChunk"]["Payload"] for ev in r["EventStream"] if "PayloadChunk" in ev) == \
            expected_bytes(2, 10)
    with pytest.raises(c.exceptions.ResourceNotFoundException):
        c.invoke_with_response_stream(FunctionName="node-stream", Qualifier="nope", Payload=b"{}")
    c.put_function_concurrency(FunctionName="node-stream", ReservedConcurrentExecutions=0)
    try:
        (outcome, _), counts = invoke_ours(lam.endpoint, "node-stream", stream_event(1, 1, 0), qualifier="live")
    finally:
        c.put_function_concurrency(FunctionName="node-stream", ReservedConcurrentExecutions=4)
    # Reserved concurrency 0 throttles every invocation, the version's warm instance notwithstanding.
    assert outcome == Outcome.throttled
    assert counts["lambda_throttle:ReservedFunctionConcurrentInvocationLimitExceeded"] == 1
