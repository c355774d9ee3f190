"""The functions as Lambda runtimes, invoked through boto3 (retries off).

The Rust and Go bootstraps run their real Lambda mode (lambda_runtime / aws-lambda-go),
and the Python, Node and Java handlers run under AWS's runtime interface clients (awslambdaric,
aws-lambda-ric, aws-lambda-java-runtime-interface-client: the Java jar starts it itself when
AWS_LAMBDA_RUNTIME_API is set, as the bootstraps do), hosted by fnbench's local Lambda
(lambda_emulator/server.py): the Runtime API to the function, the Invoke API to boto3.
"""

import json

import boto3
import pytest
from botocore.config import Config

from lambda_emulator import server as lambda_local
from orchestrator.subjects import functions as fn
from tests.servers import need
from workers.platforms.aws_lambda.sigv4 import Credentials


def lambda_client(endpoint: str):
    return boto3.client(
        "lambda", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="fnbench", aws_secret_access_key="fnbench",
        # DESIGN.md §4.7: no SDK magic in measurements — one attempt, explicit timeouts.
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=30),
    )


def hosted(runtime: str) -> list[lambda_local.Function]:
    try:
        return lambda_local.make_functions([runtime])
    except FileNotFoundError as exc:
        if runtime in ("node", "python"):
            need(False, str(exc))  # make test builds every runtime interface client
        fn.build(runtime)  # a function not built yet
        return lambda_local.make_functions([runtime])


@pytest.fixture(params=["rust", "go", "python", "node", "java", "java-cds"])
def function(request):
    with lambda_local.Background(hosted(request.param), credentials=Credentials("fnbench", "fnbench")) as lam:
        yield request.param, lam.endpoint


@pytest.mark.integration
def test_boto3_invokes_the_function_cold_then_warm(function):
    runtime, endpoint = function
    client = lambda_client(endpoint)
    results = []
    for _ in range(3):
        r = client.invoke(FunctionName=runtime, Payload=json.dumps(
            {"workload": "hash", "params": {"data": "abc", "rounds": 1}}))
        assert r["StatusCode"] == 200 and "FunctionError" not in r
        results.append(json.loads(r["Payload"].read()))
    assert [b["cold"] for b in results] == [True, False, False]
    assert {b["runtime"] for b in results} == {runtime}
    assert len({b["instance"] for b in results}) == 1
    assert results[0]["result"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.mark.integration
def test_bad_params_are_a_function_error_not_a_crash(function):
    runtime, endpoint = function
    client = lambda_client(endpoint)
    r = client.invoke(FunctionName=runtime, Payload=json.dumps({"workload": "nope"}))
    assert r["FunctionError"] == "Unhandled"
    assert json.loads(r["Payload"].read())["errorType"] == "BadRequest"
    ok = client.invoke(FunctionName=runtime, Payload=json.dumps({"workload": "echo", "params": {"payload": 1}}))
    assert json.loads(ok["Payload"].read())["result"] == 1
