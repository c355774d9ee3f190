"""Throttling as AWS does it (issue 22 part 4), on the local Lambda with real functions: each 429
carries AWS's error type and Reason (reserved concurrency, the account's unreserved concurrency, the
per-function scaling rate); boto3 reads the same Reason; fnbench counts ``throttled`` per Reason;
Get/Put/DeleteFunctionConcurrency and GetAccountSettings answer as the API reference says; a
``steps`` run from 0 to a high rate shows the scaling limit in result.json and the report."""

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from lambda_emulator import server as lambda_local
from lambda_emulator.throttle import ACCOUNT, RESERVED, SCALING, Limits
from tests.integration.test_lambda_platform import SLEEP, client, functions, ours
from workers.contract import Outcome
from workers.platforms.aws_lambda.sigv4 import Credentials

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _credentials(lambda_credentials):
    pass


def boto3_reasons(c, function, n):
    """n concurrent boto3 invokes: the Reason of each throttle (None for an invoke that ran)."""
    def one(_):
        try:
            c.invoke(FunctionName=function, Payload=json.dumps(SLEEP))["Payload"].read()
            return None
        except c.exceptions.TooManyRequestsException as exc:
            assert exc.response["Error"]["Code"] == "TooManyRequestsException"
            assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 429
            return exc.response["Reason"]

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_reserved_concurrency_throttles_with_its_reason_counted_per_reason():
    with lambda_local.Background(functions(["rust"], reserved=2)) as lam:
        got, counters = ours(lam.endpoint, "rust", [SLEEP] * 3, concurrent=True)
        assert sorted(o for o, _ in got) == [Outcome.ok, Outcome.ok, Outcome.throttled]
        counts = counters[json.dumps(SLEEP)]
        assert counts[f"lambda_throttle:{RESERVED}"] == 1
        assert not any(k.startswith("lambda_throttle:") and k != f"lambda_throttle:{RESERVED}" for k in counts)
        assert sorted(boto3_reasons(client(lam.endpoint), "rust", 3), key=str) == [None, None, RESERVED]
        assert lam.call(lambda s: dict(s.functions["rust"].throttles)) == {RESERVED: 2}
        # Reserved concurrency 0 throttles the function whole: its warm instances serve nothing.
        c = client(lam.endpoint)
        c.put_function_concurrency(FunctionName="rust", ReservedConcurrentExecutions=0)
        assert boto3_reasons(c, "rust", 1) == [RESERVED]
        c.put_function_concurrency(FunctionName="rust", ReservedConcurrentExecutions=2)
        assert boto3_reasons(c, "rust", 1) == [None]


def test_functions_without_reservations_share_the_accounts_unreserved_concurrency():
    fns = functions(["rust", "go"], reserved=None)
    with lambda_local.Background(fns, limits=Limits(account_concurrency=3)) as lam:
        c = client(lam.endpoint)
        settings = c.get_account_settings()
        assert settings["AccountLimit"]["ConcurrentExecutions"] == 3
        assert settings["AccountLimit"]["UnreservedConcurrentExecutions"] == 3
        assert c.get_function_concurrency(FunctionName="rust").get("ReservedConcurrentExecutions") is None
        # rust holds 2 instances, so go gets 1 of the account's 3; its second concurrent invoke is throttled.
        with ThreadPoolExecutor(4) as pool:
            busy = [pool.submit(c.invoke, FunctionName="rust", Payload=json.dumps({"workload": "sleep", "params": {"ms": 1500}}))
                    for _ in range(2)]
            for _ in range(100):  # bounded: until rust's two instances exist
                if lam.call(lambda s: len(s.functions["rust"].instances)) == 2:
                    break
                time.sleep(0.02)
            got, counters = ours(lam.endpoint, "go", [SLEEP] * 2, concurrent=True)
            for f in busy:
                f.result(30)["Payload"].read()
        assert sorted(o for o, _ in got) == [Outcome.ok, Outcome.throttled]
        assert counters[json.dumps(SLEEP)][f"lambda_throttle:{ACCOUNT}"] == 1
        # A reservation takes concurrency out of the unreserved pool; one that leaves too little is refused.
        assert c.put_function_concurrency(FunctionName="rust", ReservedConcurrentExecutions=2)["ReservedConcurrentExecutions"] == 2
        assert c.get_function_concurrency(FunctionName="rust")["ReservedConcurrentExecutions"] == 2
        assert c.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == 1
        with pytest.raises(c.exceptions.InvalidParameterValueException):
            c.put_function_concurrency(FunctionName="go", ReservedConcurrentExecutions=2)
        c.delete_function_concurrency(FunctionName="rust")
        assert c.get_function_concurrency(FunctionName="rust").get("ReservedConcurrentExecutions") is None
        assert c.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == 3


def test_the_scaling_rate_limits_new_instances_with_its_reason():
    with lambda_local.Background(functions(["rust"], reserved=None), limits=Limits(scaling_per_10s=2)) as lam:
        got, counters = ours(lam.endpoint, "rust", [SLEEP] * 4, concurrent=True)
        assert sorted(o for o, _ in got) == [Outcome.ok, Outcome.ok, Outcome.throttled, Outcome.throttled]
        assert counters[json.dumps(SLEEP)][f"lambda_throttle:{SCALING}"] == 2
        # Warm instances are reused without a token: two at a time run, the third waits for a token.
        again, _ = ours(lam.endpoint, "rust", [SLEEP] * 2, concurrent=True)
        assert [o for o, _ in again] == [Outcome.ok, Outcome.ok]
        assert lam.call(lambda s: s.functions["rust"].cold_starts) == 2


def test_the_token_bucket_refills_continuously_and_never_above_its_capacity():
    now = [0.0]
    limits = Limits(scaling_per_10s=10, clock=lambda: now[0])

    class Fn:
        name, reserved, instances = "f", None, ()

    assert [limits.refuse_new_instance(Fn, [Fn]) for _ in range(11)] == [None] * 10 + [SCALING]
    now[0] = 0.5  # half a token (10 per 10 s)
    assert limits.refuse_new_instance(Fn, [Fn]) == SCALING
    now[0] = 1.01
    assert limits.refuse_new_instance(Fn, [Fn]) is None
    now[0] = 1000.0  # a long idle time refills to the capacity, not beyond
    assert [limits.refuse_new_instance(Fn, [Fn]) for _ in range(11)] == [None] * 10 + [SCALING]
    with pytest.raises(ValueError):
        Limits(scaling_per_10s=0)


def fnbench(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="fnbench", AWS_SECRET_ACCESS_KEY="fnbench", COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=180, env=env)


def test_a_steps_ramp_from_zero_shows_the_scaling_limit(tmp_path):
    """Steps from 0 to 40 req/s of 200 ms invocations want ~8 instances; a scaling rate of 3 per 10 s
    gives 3 at once and 0.3 more per second, so the ramp is throttled by the scaling rate alone and the
    report says so, window by window."""
    fns = functions(["rust"], reserved=None)
    with lambda_local.Background(fns, credentials=Credentials("fnbench", "fnbench"),
                                 limits=Limits(scaling_per_10s=3)) as lam:
        spec = tmp_path / "ramp.yaml"
        spec.write_text(
            "name: ramp\ntargets:\n"
            f"  - {{name: rust-sleep, runtime: rust, platform: aws-lambda, function: rust, endpoint_url: '{lam.endpoint}', "
            "workload: sleep, body: {workload: sleep, params: {ms: 200}}, timeout: 5s}\n"
            "load: {executor: steps, steps: [{duration: 2s, rps: 0}, {duration: 6s, rps: 40}], max_in_flight: 64}\n"
            "duration: 10s\nflush_interval: 1s\n")
        started = time.monotonic()
        r = fnbench("run", str(spec), "--results", str(tmp_path / "results"), "--metrics-port", "0", "--workers", "1",
                    "--run-id", "ramp")
        elapsed = time.monotonic() - started
        instances = lam.call(lambda s: s.functions["rust"].cold_starts)
    assert r.returncode in (0, 1), r.stderr[-3000:]
    result = orjson.loads((tmp_path / "results" / "ramp" / "result.json").read_bytes())
    g = next(g for g in result["groups"] if g["phase"] == "warm")
    assert set(g["throttled_by_reason"]) == {SCALING}, g.get("throttled_by_reason")
    assert g["throttled_by_reason"][SCALING] == g["outcomes"]["throttled"] > 0
    assert sum(sum(c.values()) for _, c in g["throttle_series"]) == g["outcomes"]["throttled"]
    # The bucket's 3 at once, then more as it refilled, never more than 0.3 per second of the run.
    assert 4 <= instances <= 3 + 0.3 * elapsed + 1, (instances, elapsed)
    assert "throttles local/rust-sleep warm" in r.stdout and SCALING in r.stdout
    page = (tmp_path / "results" / "ramp" / "report.html").read_text()
    assert "throttles rust-sleep @local (warm)" in page and f"<th>{SCALING}</th>" in page
