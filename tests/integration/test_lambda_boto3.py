"""The functions as Lambda runtimes, invoked through boto3 (retries off).

The Rust and Go bootstraps run their real Lambda mode (lambda_runtime / aws-lambda-go),
and the Python, Node and Java handlers run under AWS's runtime interface clients (awslambdaric,
aws-lambda-ric, aws-lambda-java-runtime-interface-client: the Java jar starts it itself when
AWS_LAMBDA_RUNTIME_API is set, as the bootstraps do), against
tests/lambda_api.LoopbackLambda, which serves the Runtime API to the function and the
Invoke API to boto3 on one loopback port.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from orchestrator import functions as fn
from tests.lambda_api import LoopbackLambda


def lambda_client(endpoint: str):
    return boto3.client(
        "lambda", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="fnbench", aws_secret_access_key="fnbench",
        # DESIGN.md §4.7: no SDK magic in measurements — one attempt, explicit timeouts.
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=30),
    )


NODE_RIC = Path(__file__).resolve().parents[1] / "lambda-ric" / "node_modules" / "aws-lambda-ric" / "bin" / "index.mjs"


def runtime_command(runtime: str) -> list[str]:
    """How Lambda would start the function as a custom runtime here."""
    if runtime == "python":
        # The AWS Python runtime interface client (awslambdaric) loads handler.handler.
        return [sys.executable, "-m", "awslambdaric", "handler.handler"]
    if runtime == "node":
        # AWS's Node.js runtime interface client (npm aws-lambda-ric, built by `make lambda-ric`).
        if not NODE_RIC.exists():
            if os.environ.get("CI"):
                pytest.fail(f"{NODE_RIC} missing: run `make lambda-ric`")
            pytest.skip("aws-lambda-ric not installed: run `make lambda-ric`")
        return ["node", str(NODE_RIC), "index.handler"]
    try:
        return fn.artifact_for(runtime).command
    except FileNotFoundError:
        return fn.build(runtime)[0].command


@pytest.fixture(params=["rust", "go", "python", "node", "java", "java-cds"])
def function(request):
    command = runtime_command(request.param)
    api = LoopbackLambda()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_LAMBDA_RUNTIME_API": api.address, "AWS_LAMBDA_FUNCTION_NAME": "function",
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128", "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_REGION": "us-east-1"})
    source = "java" if request.param.startswith("java") else request.param  # java-cds: the same sources
    env["LAMBDA_TASK_ROOT"] = str(fn.FUNCTIONS_DIR / source)
    proc = subprocess.Popen(command, env=env, cwd=env["LAMBDA_TASK_ROOT"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    yield request.param, f"http://{api.address}"
    fn.stop_server(proc)
    api.close()


@pytest.mark.integration
def test_boto3_invokes_the_function_cold_then_warm(function):
    runtime, endpoint = function
    client = lambda_client(endpoint)
    results = []
    for _ in range(3):
        r = client.invoke(FunctionName="function", Payload=json.dumps(
            {"workload": "hash", "params": {"data": "abc", "rounds": 1}}))
        assert r["StatusCode"] == 200 and "FunctionError" not in r
        results.append(json.loads(r["Payload"].read()))
    assert [b["cold"] for b in results] == [True, False, False]
    assert {b["runtime"] for b in results} == {runtime}
    assert len({b["instance"] for b in results}) == 1
    assert results[0]["result"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.mark.integration
def test_bad_params_are_a_function_error_not_a_crash(function):
    _, endpoint = function
    client = lambda_client(endpoint)
    r = client.invoke(FunctionName="function", Payload=json.dumps({"workload": "nope"}))
    assert r["FunctionError"] == "Unhandled"
    assert json.loads(r["Payload"].read())["errorType"] == "BadRequest"
    ok = client.invoke(FunctionName="function", Payload=json.dumps({"workload": "echo", "params": {"payload": 1}}))
    assert json.loads(ok["Payload"].read())["result"] == 1
