"""Versions, aliases and provisioned concurrency on the local Lambda (issue 22 part 2), through boto3:
PublishVersion snapshots the configuration, an alias moves, a qualified invoke runs the version's own
instances; provisioned concurrency is READY only after its instances' Init, serves without Init
Duration with AWS_LAMBDA_INITIALIZATION_TYPE=provisioned-concurrency, and spills over to cold
on-demand instances beyond N."""

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lambda_emulator import server as lambda_local
from tests.integration.test_lambda_platform import HASH, SLEEP, client, functions
from workers.platforms.aws_lambda.report import from_log_result

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _credentials(lambda_credentials):
    pass


def invoke(c, name, body=HASH, qualifier=None):
    kw = {"Qualifier": qualifier} if qualifier else {}
    r = c.invoke(FunctionName=name, LogType="Tail", Payload=json.dumps(body), **kw)
    r["Payload"].read()
    return r, from_log_result(r["LogResult"])


def environ(lam, name, version, provisioned):
    """The environment of the function's process, read from /proc (what the runtime really got)."""

    def pids(s):
        fn = s.functions[name] if version == "$LATEST" else s.functions[name].versions[version]
        return [i.proc.pid for i in fn.instances if i.proc is not None and i.provisioned == provisioned]

    out = []
    for pid in lam.call(pids):
        raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        out.append(dict(x.decode().split("=", 1) for x in raw if b"=" in x))
    return out


def wait_ready(c, name, qualifier, limit_s=30.0):
    seen = []
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        cfg = c.get_provisioned_concurrency_config(FunctionName=name, Qualifier=qualifier)
        seen.append(cfg)
        if cfg["Status"] != "IN_PROGRESS":
            return cfg, seen
        time.sleep(0.05)
    raise AssertionError(f"not READY within {limit_s} s: {seen[-1]}")


def test_publish_alias_and_invoke_by_qualifier():
    with lambda_local.Background(functions(["rust"], reserved=6)) as lam:
        c = client(lam.endpoint)
        c.update_function_configuration(FunctionName="rust", MemorySize=256, Environment={"Variables": {"V": "one"}})
        c.get_waiter("function_updated").wait(FunctionName="rust", WaiterConfig={"Delay": 1, "MaxAttempts": 10})
        v1 = c.publish_version(FunctionName="rust")
        assert v1["Version"] == "1" and v1["MemorySize"] == 256 and v1["FunctionArn"].endswith(":rust:1")
        assert c.publish_version(FunctionName="rust")["Version"] == "1"  # unchanged: not published again
        c.update_function_configuration(FunctionName="rust", MemorySize=512, Environment={"Variables": {"V": "two"}})
        c.get_waiter("function_updated").wait(FunctionName="rust", WaiterConfig={"Delay": 1, "MaxAttempts": 10})
        assert c.publish_version(FunctionName="rust")["Version"] == "2"
        alias = c.create_alias(FunctionName="rust", Name="live", FunctionVersion="1")
        assert alias["FunctionVersion"] == "1" and alias["AliasArn"].endswith(":rust:live")
        assert c.get_function_configuration(FunctionName="rust", Qualifier="live")["MemorySize"] == 256

        r, report = invoke(c, "rust", qualifier="live")
        assert r["ExecutedVersion"] == "1" and report.memory_mb == 256 and report.init_ms is not None
        r, report = invoke(c, "rust:1")  # name:qualifier, same version, its instance is warm now
        assert r["ExecutedVersion"] == "1" and report.init_ms is None
        r, report = invoke(c, "rust")
        assert r["ExecutedVersion"] == "$LATEST" and report.memory_mb == 512 and report.init_ms is not None
        (env1,) = environ(lam, "rust", "1", False)
        assert env1["V"] == "one" and env1["AWS_LAMBDA_FUNCTION_VERSION"] == "1"
        assert env1["AWS_LAMBDA_INITIALIZATION_TYPE"] == "on-demand" and env1["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"

        c.update_alias(FunctionName="rust", Name="live", FunctionVersion="2")
        assert c.get_alias(FunctionName="rust", Name="live")["FunctionVersion"] == "2"
        r, report = invoke(c, "rust", qualifier="live")
        assert r["ExecutedVersion"] == "2" and report.memory_mb == 512 and report.init_ms is not None
        with pytest.raises(c.exceptions.ResourceNotFoundException):
            invoke(c, "rust", qualifier="7")
        with pytest.raises(c.exceptions.InvalidParameterValueException):
            invoke(c, "rust:1", qualifier="2")  # the name's qualifier and ?Qualifier= disagree


def test_provisioned_concurrency_ready_after_init_then_warm_and_spill_over_is_cold():
    with lambda_local.Background(functions(["python"], reserved=5)) as lam:
        c = client(lam.endpoint)
        c.publish_version(FunctionName="python")
        c.create_alias(FunctionName="python", Name="live", FunctionVersion="1")
        with pytest.raises(c.exceptions.InvalidParameterValueException):
            c.put_provisioned_concurrency_config(FunctionName="python", Qualifier="$LATEST", ProvisionedConcurrentExecutions=1)
        with pytest.raises(c.exceptions.ProvisionedConcurrencyConfigNotFoundException):
            c.get_provisioned_concurrency_config(FunctionName="python", Qualifier="live")
        put = c.put_provisioned_concurrency_config(FunctionName="python", Qualifier="live", ProvisionedConcurrentExecutions=2)
        assert put["Status"] == "IN_PROGRESS" and put["RequestedProvisionedConcurrentExecutions"] == 2
        assert put["AllocatedProvisionedConcurrentExecutions"] == 0
        ready, seen = wait_ready(c, "python", "live")
        assert ready["Status"] == "READY" and ready["AllocatedProvisionedConcurrentExecutions"] == 2
        assert ready["AvailableProvisionedConcurrentExecutions"] == 2
        # READY only once both had finished Init (their first /invocation/next).
        assert lam.call(lambda s: all(i.init_ms is not None for i in s.functions["python"].versions["1"].instances))
        envs = environ(lam, "python", "1", True)
        assert len(envs) == 2 and all(e["AWS_LAMBDA_INITIALIZATION_TYPE"] == "provisioned-concurrency"
                                      and e["AWS_LAMBDA_FUNCTION_VERSION"] == "1" for e in envs)

        # Two at once: the provisioned instances, no Init Duration.
        with ThreadPoolExecutor(3) as pool:
            two = list(pool.map(lambda _: invoke(c, "python", SLEEP, "live"), range(2)))
        assert all(r["ExecutedVersion"] == "1" and rep.init_ms is None for r, rep in two)
        # Three at once: one beyond N spills to an on-demand instance, cold.
        with ThreadPoolExecutor(3) as pool:
            three = list(pool.map(lambda _: invoke(c, "python", SLEEP, "live"), range(3)))
        assert sorted(rep.init_ms is not None for _, rep in three) == [False, False, True]
        (od,) = environ(lam, "python", "1", False)
        assert od["AWS_LAMBDA_INITIALIZATION_TYPE"] == "on-demand"
        # Reserved concurrency counts every instance of every version: 3 of 5 in use by version 1.
        with pytest.raises(c.exceptions.InvalidParameterValueException):
            c.put_provisioned_concurrency_config(FunctionName="python", Qualifier="live", ProvisionedConcurrentExecutions=6)

        c.delete_provisioned_concurrency_config(FunctionName="python", Qualifier="live")
        with pytest.raises(c.exceptions.ProvisionedConcurrencyConfigNotFoundException):
            c.get_provisioned_concurrency_config(FunctionName="python", Qualifier="live")
        assert lam.call(lambda s: sum(i.provisioned for i in s.functions["python"].versions["1"].instances)) == 0


def test_provisioned_instances_are_not_reaped_and_are_replaced():
    with lambda_local.Background(functions(["rust"], reserved=4), idle_s=0.2) as lam:
        c = client(lam.endpoint)
        c.publish_version(FunctionName="rust")
        c.put_provisioned_concurrency_config(FunctionName="rust", Qualifier="1", ProvisionedConcurrentExecutions=1)
        wait_ready(c, "rust", "1")
        r, report = invoke(c, "rust", qualifier="1")
        assert report.init_ms is None
        time.sleep(0.8)  # several reaper ticks past idle_s
        assert lam.call(lambda s: len(s.functions["rust"].versions["1"].instances)) == 1
        assert invoke(c, "rust", qualifier="1")[1].init_ms is None
        lam.call(lambda s: s.functions["rust"].versions["1"].instances[0].kill())  # it dies: replaced
        cfg, _ = wait_ready(c, "rust", "1")
        assert cfg["Status"] == "READY"
        assert invoke(c, "rust", qualifier="1")[1].init_ms is None


def test_the_invoker_prices_duration_at_the_provisioned_price_only_within_n():
    import asyncio

    from orchestrator.analysis import cost
    from workers.contract import Outcome, Target
    from workers.platforms.aws_lambda import LambdaInvoker

    price = cost.price_for("us-east-1", "x86_64")
    with lambda_local.Background(functions(["python"], reserved=5)) as lam:
        c = client(lam.endpoint)
        c.publish_version(FunctionName="python")
        c.put_provisioned_concurrency_config(FunctionName="python", Qualifier="1", ProvisionedConcurrentExecutions=1)
        wait_ready(c, "python", "1")

        async def main():
            inv = LambdaInvoker(Target(name="pc", runtime="python", platform="aws-lambda", body=json.dumps(SLEEP),
                                       timeout_s=30, address={"function": "python", "qualifier": "1", "endpoint_url": lam.endpoint,
                                                              "provisioned_concurrency": 1, "price": price.to_address()}))
            await inv.start()
            results = []

            async def one():
                fut = asyncio.get_running_loop().create_future()
                inv.invoke(time.monotonic(), lambda o, d, s, e, info=None: fut.set_result((o, info)))
                results.append(await fut)

            await asyncio.gather(one(), one(), one())  # 1 on the provisioned instance, 2 spill over (cold)
            await one()  # alone again: the provisioned instance
            await inv.close()
            return results, inv.counters()

        results, counters = asyncio.run(main())
    assert [o for o, _ in results] == [Outcome.ok] * 4
    assert sum(info.cold for _, info in results) == 2
    assert counters["billed_requests"] == 4 and counters["billed_requests_provisioned"] == 2
    # Cost: the two provisioned invocations at the provisioned Duration price, the cold ones at the on-demand price.
    pc_ms, od_ms = price.provisioned_duration_gb_s_usd * 128 / 1024 / 1000, price.per_ms_128mb
    billed = [info.billed_us / 1000 for _, info in results]
    want = sum(b * (od_ms if info.cold else pc_ms) for b, (_, info) in zip(billed, results, strict=True))
    assert counters["cost_usd"] == pytest.approx(want, rel=1e-6)


def test_a_published_version_keeps_its_code_after_update_function_code():
    from tests.integration.test_lambda_security import ROLE, zip_of

    def handler(n):
        return {"handler.py": f"def handler(e, c):\n    return {{'n': e['n'] + {n}}}\n".encode()}

    with lambda_local.Background([]) as lam:
        c = client(lam.endpoint)
        c.create_function(FunctionName="py", Runtime="python3.12", Handler="handler.handler", Role=ROLE,
                          Code={"ZipFile": zip_of(handler(1))})
        c.get_waiter("function_active_v2").wait(FunctionName="py", WaiterConfig={"Delay": 1, "MaxAttempts": 10})
        assert c.publish_version(FunctionName="py")["Version"] == "1"
        c.update_function_code(FunctionName="py", ZipFile=zip_of(handler(2)))
        c.get_waiter("function_updated_v2").wait(FunctionName="py", WaiterConfig={"Delay": 1, "MaxAttempts": 10})
        one = c.invoke(FunctionName="py", Qualifier="1", Payload=b'{"n": 1}')
        latest = c.invoke(FunctionName="py", Payload=b'{"n": 1}')
        assert json.loads(one["Payload"].read()) == {"n": 2} and one["ExecutedVersion"] == "1"
        assert json.loads(latest["Payload"].read()) == {"n": 3} and latest["ExecutedVersion"] == "$LATEST"
        c.delete_function(FunctionName="py")
        assert lam.call(lambda s: list(s.functions)) == []
