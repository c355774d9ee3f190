"""The aws-lambda platform against the local Lambda (lambda_emulator.server), with AWS's real
runtime clients: Rust/Go bootstraps as custom runtimes, awslambdaric, aws-lambda-ric.

Outcomes of fnbench's SigV4 invoker are checked against boto3's (retries off) for the same
requests; the local Lambda's instance model (scale-out to reserved concurrency, 429 beyond,
reaping, UpdateFunctionConfiguration retiring instances) and its REPORT lines are checked too.
"""

import asyncio
import json
import time

import boto3
import pytest
from botocore.config import Config

from lambda_emulator import server as lambda_local
from orchestrator.analysis import cost
from orchestrator.run.collect import Collector
from tests.servers import need
from workers.contract import Outcome, Shard, Target
from workers.platforms.aws_lambda import LambdaInvoker
from workers.platforms.aws_lambda.report import Report, from_log_result
from workers.shard import run_shard

pytestmark = pytest.mark.integration

HASH = {"workload": "hash", "params": {"data": "abc", "rounds": 1}}
SLEEP = {"workload": "sleep", "params": {"ms": 300}}


@pytest.fixture(autouse=True)
def _credentials(lambda_credentials):
    pass


def client(endpoint):
    return boto3.client("lambda", endpoint_url=endpoint, region_name="us-east-1",
                        config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=30,
                                      max_pool_connections=8))


def functions(runtimes, **kw):
    try:
        return lambda_local.make_functions(runtimes, **kw)
    except FileNotFoundError as exc:
        need(False, str(exc))


def ours(endpoint, function, bodies, concurrent=False):
    """(outcome, Invocation) per body through LambdaInvoker, in order; all at once when concurrent."""

    async def main():
        invokers = {}
        results = [None] * len(bodies)
        pending = []
        for i, body in enumerate(bodies):
            key = json.dumps(body)
            inv = invokers.get(key)
            if inv is None:
                inv = invokers[key] = LambdaInvoker(Target(
                    name=f"t{len(invokers)}", runtime="other", platform="aws-lambda", body=key, timeout_s=30,
                    address={"function": function, "endpoint_url": endpoint}))
                await inv.start()
            fut = asyncio.get_running_loop().create_future()

            def done(outcome, due, sent, end, info=None, i=i, fut=fut):
                results[i] = (outcome, info)
                fut.set_result(None)

            inv.invoke(time.monotonic(), done)
            if concurrent:
                pending.append(fut)
            else:
                await fut
        await asyncio.gather(*pending)
        for inv in invokers.values():
            await inv.close()
        return results, {k: v.counters() for k, v in invokers.items()}

    return asyncio.run(main())


def boto3_outcome(c, function, body):
    try:
        r = c.invoke(FunctionName=function, LogType="Tail", Payload=json.dumps(body))
    except c.exceptions.TooManyRequestsException:
        return Outcome.throttled, None
    except c.exceptions.ResourceNotFoundException:
        return Outcome.http_4xx, None
    r["Payload"].read()
    return (Outcome.function_error if "FunctionError" in r else Outcome.ok), from_log_result(r["LogResult"])


@pytest.mark.parametrize("runtime", ["rust", "go", "python", "node"])
def test_outcomes_and_reports_match_boto3(runtime):
    with lambda_local.Background(functions([runtime], reserved=4)) as lam:
        c = client(lam.endpoint)
        bodies = [HASH, HASH, {"workload": "nope"}, HASH]
        got, counters = ours(lam.endpoint, runtime, bodies)
        want = [boto3_outcome(c, runtime, b) for b in bodies]
        assert [o for o, _ in got] == [o for o, _ in want] == [Outcome.ok, Outcome.ok, Outcome.function_error, Outcome.ok]
        # Ours ran first: its first invocation was the cold start; boto3's found the instance warm.
        first = got[0][1]
        assert first.cold and first.init_duration_us > 0 and first.billed_us >= first.platform_us + first.init_duration_us - 1000
        assert first.memory_mb > 0
        assert all(not info.cold and info.init_duration_us == -1 and info.platform_us >= 0 for _, info in got[1:])
        assert all(isinstance(r, Report) and r.init_ms is None for _, r in want)
        assert sum(n.get("report_missing", 0) + n.get("report_truncated", 0) for n in counters.values()) == 0
        missing = ours(lam.endpoint, "no-such-function", [HASH])[0]
        assert missing[0][0] == boto3_outcome(c, "no-such-function", HASH)[0] == Outcome.http_4xx


def test_scale_out_to_reserved_concurrency_then_429():
    with lambda_local.Background(functions(["rust"], reserved=2)) as lam:
        got, counters = ours(lam.endpoint, "rust", [SLEEP] * 3, concurrent=True)
        outcomes = sorted(o for o, _ in got)
        assert outcomes == [Outcome.ok, Outcome.ok, Outcome.throttled]
        assert sum(1 for o, info in got if o == Outcome.ok and info.cold) == 2  # two instances started
        assert counters[json.dumps(SLEEP)]["lambda_error:TooManyRequestsException"] == 1
        # boto3 sees the same: 2 busy instances, a third concurrent invoke is throttled.
        c = client(lam.endpoint)
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(3) as pool:
            theirs = sorted(o for o, _ in pool.map(lambda _: boto3_outcome(c, "rust", SLEEP), range(3)))
        assert theirs == outcomes


def test_idle_instances_are_reaped():
    with lambda_local.Background(functions(["rust"]), idle_s=0.3) as lam:
        first = ours(lam.endpoint, "rust", [HASH, HASH])[0]
        assert [info.cold for _, info in first] == [True, False]
        for _ in range(40):  # bounded: the reaper ticks every ~75 ms here
            if not lam.call(lambda s: len(s.functions["rust"].instances)):
                break
            time.sleep(0.05)
        assert lam.call(lambda s: len(s.functions["rust"].instances)) == 0
        again = ours(lam.endpoint, "rust", [HASH])[0]
        assert again[0][1].cold


def test_update_function_configuration_retires_instances():
    with lambda_local.Background(functions(["python"])) as lam:
        c = client(lam.endpoint)
        assert boto3_outcome(c, "python", HASH)[1].cold
        assert not boto3_outcome(c, "python", HASH)[1].cold
        before = c.get_function_configuration(FunctionName="python")
        assert before["LastUpdateStatus"] == "Successful"
        after = c.update_function_configuration(FunctionName="python", Environment={"Variables": {"FNBENCH_COLD": "1"}})
        assert after["LastUpdateStatus"] == "InProgress" and after["RevisionId"] != before["RevisionId"]
        c.get_waiter("function_updated").wait(FunctionName="python", WaiterConfig={"Delay": 1, "MaxAttempts": 10})
        now = c.get_function_configuration(FunctionName="python")
        assert now["Environment"]["Variables"] == {"FNBENCH_COLD": "1"} and now["RevisionId"] == after["RevisionId"]
        assert boto3_outcome(c, "python", HASH)[1].cold  # a new instance, with the new environment


def test_run_shard_records_the_three_clocks():
    from workers.histograms import decode
    with lambda_local.Background(functions(["go"], reserved=4)) as lam:
        target = Target(name="go", runtime="go", platform="aws-lambda", body=json.dumps(HASH), timeout_s=10,
                        address={"function": "go", "endpoint_url": lam.endpoint,
                                 "price": cost.price_for("us-east-1", "arm64").to_address()})
        shard = Shard(run_id="r", shard_id="s", region="local", target=target, phase="warm",
                      arrival={"kind": "constant", "rps": "40"}, start_at=time.time() + 0.3, duration_s=1.0,
                      max_in_flight=4, flush_interval_s=5.0)
        intervals = []
        run_shard(shard, intervals.append)
        ok = sum(iv.outcomes.get("ok", 0) for iv in intervals)
        assert ok >= 30 and set().union(*(iv.outcomes for iv in intervals)) == {"ok"}
        platform = sum(decode(iv.platform_us).get_total_count() for iv in intervals)
        billed = sum(decode(iv.billed_us).get_total_count() for iv in intervals)
        init = sum(decode(iv.init_duration_us).get_total_count() for iv in intervals)
        cold = sum(iv.cold_starts for iv in intervals)
        assert platform == billed == ok and init == cold >= 1
        assert max(iv.max_memory_mb for iv in intervals) > 0
        assert sum(iv.counters.get("billed_requests", 0) for iv in intervals) == ok
        collector = Collector("r")
        collector.add_all(intervals)
        (g,) = collector.group_rows()
        assert g.platform_ms.p50 is not None and g.billed_ms.p50 >= 1 and g.init_duration_ms.p50 > 0
        assert g.cost["invocations"] == ok and g.cost["cold"]["invocations"] == cold
        # Power Tuning's formula over the billed ms the group recorded (every REPORT: 128 MB).
        billed_total = sum(iv.counters.get("billed_ms", 0) for iv in intervals)
        price = cost.price_for("us-east-1", "arm64")
        assert g.cost["cost_usd"] == pytest.approx(cost.invocation_cost(billed_total, 128, price), rel=1e-9)
        assert g.reports_missing == g.reports_truncated == 0


@pytest.mark.parametrize("runtime", ["rust", "go", "python", "node"])
def test_forced_cold_starts_every_sample_has_init_duration(runtime):
    from workers.histograms import decode
    with lambda_local.Background(functions([runtime], reserved=2)) as lam:
        c = client(lam.endpoint)
        c.update_function_configuration(FunctionName=runtime, Environment={"Variables": {"KEEP": "me"}})
        target = Target(name="fn", runtime=runtime, platform="aws-lambda", body=json.dumps(HASH), timeout_s=10,
                        address={"function": runtime, "endpoint_url": lam.endpoint, "control_plane_interval_s": 0.02})
        shard = Shard(run_id="r", shard_id="c", region="local", target=target, phase="cold",
                      arrival={"kind": "constant", "rps": "4"}, start_at=time.time() + 0.3, duration_s=0.75,
                      max_in_flight=3, flush_interval_s=5.0)
        intervals = []
        run_shard(shard, intervals.append)
        ok = sum(iv.outcomes.get("ok", 0) for iv in intervals)
        counters = {k: sum(iv.counters.get(k, 0) for iv in intervals) for k in ("cold_forced", "cold_reforced", "control_plane_calls")}
        assert ok == 3 and set().union(*(iv.outcomes for iv in intervals)) == {"ok"}
        assert sum(iv.cold_starts for iv in intervals) == 3 == counters["cold_forced"]
        assert sum(decode(iv.init_duration_us).get_total_count() for iv in intervals) == 3
        assert counters["cold_reforced"] == 0 and counters["control_plane_calls"] >= 9  # get, update, get per force
        # fnbench's cold count is the number of instances the local Lambda started.
        assert lam.call(lambda s: s.functions[runtime].cold_starts) == 3
        env = c.get_function_configuration(FunctionName=runtime)["Environment"]["Variables"]
        assert env["KEEP"] == "me" and "FNBENCH_COLD_START" in env  # the function's own variables are kept


def test_a_warm_sample_is_reforced_then_not_accepted():
    from workers.platforms.aws_lambda import LambdaColdInvoker

    class NoOpForce(LambdaColdInvoker):  # a "force" that changes nothing: the instance stays warm
        def _force(self):
            return True

    with lambda_local.Background(functions(["rust"])) as lam:
        ours(lam.endpoint, "rust", [HASH])  # an instance, warm now
        target = Target(name="r", runtime="rust", platform="aws-lambda", body=json.dumps(HASH), timeout_s=10,
                        address={"function": "rust", "endpoint_url": lam.endpoint, "max_forces": 3})

        async def main():
            inv = NoOpForce(target)
            await inv.start()
            fut = asyncio.get_running_loop().create_future()
            inv.invoke(time.monotonic(), lambda *a: fut.set_result(a))
            got = await fut
            await inv.close()
            return got, inv.counters()

        (outcome, *_), counters = asyncio.run(main())
        assert outcome == Outcome.other
        assert counters["cold_reforced"] == 2 and counters["cold_not_forced"] == 1 and counters["cold_forced"] == 3


def test_function_timeout_ends_the_instance():
    with lambda_local.Background(functions(["rust"], timeout_s=0.3)) as lam:
        c = client(lam.endpoint)
        assert boto3_outcome(c, "rust", HASH)[0] == Outcome.ok
        r = c.invoke(FunctionName="rust", LogType="Tail", Payload=json.dumps({"workload": "sleep", "params": {"ms": 2000}}))
        assert r["FunctionError"] == "Unhandled" and "Task timed out after 0.30 seconds" in r["Payload"].read().decode()
        report = from_log_result(r["LogResult"])
        assert isinstance(report, Report) and report.status == "timeout" and report.duration_ms >= 300
        got = ours(lam.endpoint, "rust", [HASH])[0]
        assert got[0][0] == Outcome.ok and got[0][1].cold  # the timed-out sandbox was replaced


def test_the_slowest_invocations_carry_the_request_id_report_and_trace_id():
    """Issue 21: a slow Lambda invocation is found by its x-amzn-RequestId (the REPORT's RequestId), with the
    REPORT's numbers, and by the X-Amzn-Trace-Id root fnbench sent (tracing.sample: 1)."""
    with lambda_local.Background(functions(["go"], reserved=4)) as lam:
        target = Target(name="go", runtime="go", platform="aws-lambda", body=json.dumps(HASH), timeout_s=10,
                        address={"function": "go", "endpoint_url": lam.endpoint})
        shard = Shard(run_id="r", shard_id="s", region="local", target=target, phase="warm",
                      arrival={"kind": "constant", "rps": "40"}, start_at=time.time() + 0.3, duration_s=1.0,
                      max_in_flight=4, flush_interval_s=5.0, slowest=3, trace_ratio=1.0)
        intervals = []
        run_shard(shard, intervals.append)
    slow = [s for iv in intervals for s in iv.slowest]
    assert slow and len(slow) <= 3 * len(intervals)
    for s in slow:
        assert len(s["request_id"]) == 36 and s["request_id"].count("-") == 4  # a UUID, as Lambda's
        assert len(s["trace_id"]) == 32 and int(s["trace_id"], 16)
        report = s["report"]
        assert report["duration_ms"] > 0 and report["billed_ms"] >= 1 and report["memory_mb"] == 128
        assert report["max_memory_mb"] > 0
    assert any("init_ms" in s["report"] for s in slow)  # the cold start is among the slowest


def test_the_local_lambda_passes_only_a_well_formed_trace_root_on():
    from lambda_emulator.server import _trace_root

    assert _trace_root(b"Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1") == \
        "1-5759e988-bd862e3fe1be46a994272793"
    assert _trace_root(b"Root=1-5759e988-bd862e3fe1be46a994272793") == "1-5759e988-bd862e3fe1be46a994272793"
    for bad in (b"", b"Root=1-xyz", b"Root=1-5759e988-bd862e3fe1be46a994272793\r\nX-Evil: 1",
                b"Root=2-5759e988-bd862e3fe1be46a994272793"):
        assert _trace_root(bad) == "", bad  # dropped whole, never echoed in part
