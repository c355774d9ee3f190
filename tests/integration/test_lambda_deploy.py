"""`fnbench functions deploy` against the local Lambda: the same boto3 calls real AWS gets
(CreateFunction, UpdateFunctionCode, UpdateFunctionConfiguration, each waited for), and the
deployed ZIPs run under the real runtime clients."""

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import orjson
import pytest
from botocore.config import Config

from lambda_emulator import server as lambda_local
from tests.servers import strict
from workers.platforms.aws_lambda.report import Report, from_log_result
from workers.platforms.aws_lambda.sigv4 import Credentials

pytestmark = pytest.mark.integration

FNBENCH = [sys.executable, "-m", "orchestrator.cli"]
ROOT = Path(__file__).resolve().parents[2]
ROLE = "arn:aws:iam::000000000000:role/fnbench"
SECRET = "fnbench-secret-never-printed-7f3a"
KEY_ID = "AKIDFNBENCH"
HASH = {"workload": "hash", "params": {"data": "abc", "rounds": 1}}
ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def fnbench(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET)
    return subprocess.run([*FNBENCH, *args], capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)


def runtimes() -> list[str]:
    """Every runtime with a package; Node needs AWS's runtime client (`make lambda-ric`), which CI builds."""
    if lambda_local.NODE_RIC.exists() or strict():
        return ["rust", "go", "python", "node", "java"]
    return ["rust", "go", "python", "java"]


def client(endpoint):
    return boto3.client("lambda", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=KEY_ID,
                        aws_secret_access_key=SECRET,
                        config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=60))


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    out = tmp_path_factory.mktemp("packages")
    with lambda_local.Background([], credentials=Credentials(KEY_ID, SECRET)) as lam:
        args = ["--endpoint-url", lam.endpoint, "--region", "us-east-1", "--role", ROLE, "--out", str(out)]
        first = fnbench("functions", "deploy", *runtimes(), *args, "--json")
        yield lam, args, first, out


def test_deploy_creates_every_function_and_each_runs_its_package(deployed):
    lam, _, first, out = deployed
    assert first.returncode == 0, first.stderr[-3000:]
    done = orjson.loads(first.stdout)
    assert [(d["function"], d["action"]) for d in done] == [(f"fnbench-{r}", "created") for r in runtimes()]
    c = client(lam.endpoint)
    for d in done:
        cfg = c.get_function_configuration(FunctionName=d["function"])
        zip_bytes = (out / f"{d['runtime']}.zip").read_bytes()
        assert cfg["CodeSha256"] == base64.b64encode(hashlib.sha256(zip_bytes).digest()).decode() == d["code_sha256"]
        assert cfg["State"] == "Active" and cfg["MemorySize"] == 128 and cfg["Role"] == ROLE
        assert cfg["Runtime"] == d["lambda_runtime"]
        r = c.invoke(FunctionName=d["function"], LogType="Tail", Payload=json.dumps(HASH))
        body = json.loads(r["Payload"].read())
        assert "FunctionError" not in r, (d["function"], body)
        assert body["result"] == ABC_SHA256 and body["cold"] is True
        report = from_log_result(r["LogResult"])
        assert isinstance(report, Report) and report.init_ms is not None and report.memory_mb == 128


def test_deploy_again_changes_nothing_then_updates_what_changed(deployed):
    lam, args, first, _ = deployed
    assert first.returncode == 0
    again = fnbench("functions", "deploy", "rust", *args, "--json")
    assert again.returncode == 0, again.stderr
    assert [d["action"] for d in orjson.loads(again.stdout)] == ["unchanged"]  # reproducible ZIP, same hash
    c = client(lam.endpoint)
    c.invoke(FunctionName="fnbench-rust", Payload=json.dumps(HASH))  # warm now
    before = c.get_function_configuration(FunctionName="fnbench-rust")
    changed = fnbench("functions", "deploy", "rust", *args, "--memory", "256", "--env", "MODE=fast", "--json")
    assert changed.returncode == 0, changed.stderr
    assert [(d["action"], d["memory_mb"]) for d in orjson.loads(changed.stdout)] == [("updated", 256)]
    cfg = c.get_function_configuration(FunctionName="fnbench-rust")
    assert cfg["MemorySize"] == 256 and cfg["Environment"]["Variables"] == {"MODE": "fast"}
    assert cfg["RevisionId"] != before["RevisionId"] and cfg["LastUpdateStatus"] == "Successful"
    r = c.invoke(FunctionName="fnbench-rust", LogType="Tail", Payload=json.dumps(HASH))
    assert json.loads(r["Payload"].read())["cold"] is True  # the update retired the warm instance
    # The secret key of the credentials chain is never printed, whatever happened.
    for p in (first, again, changed):
        assert SECRET not in p.stdout + p.stderr


def test_new_code_replaces_the_old(deployed, tmp_path):
    lam, _, first, out = deployed
    assert first.returncode == 0
    c = client(lam.endpoint)
    before = c.get_function_configuration(FunctionName="fnbench-python")
    # Python's package with a handler that answers differently: UpdateFunctionCode, then the new code runs.
    import zipfile

    zip_path = tmp_path / "python.zip"
    with zipfile.ZipFile(out / "python.zip") as src, zipfile.ZipFile(zip_path, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "handler.py":
                data += b"\n\ndef other(event, context):\n    return {'other': True}\n"
            dst.writestr(info, data)
    updated = c.update_function_code(FunctionName="fnbench-python", ZipFile=zip_path.read_bytes())
    c.get_waiter("function_updated").wait(FunctionName="fnbench-python", WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    c.update_function_configuration(FunctionName="fnbench-python", Handler="handler.other")
    c.get_waiter("function_updated").wait(FunctionName="fnbench-python", WaiterConfig={"Delay": 1, "MaxAttempts": 10})
    assert updated["CodeSha256"] != before["CodeSha256"]
    r = c.invoke(FunctionName="fnbench-python", Payload=b"{}")
    assert json.loads(r["Payload"].read()) == {"other": True}
    assert c.get_function(FunctionName="fnbench-python")["Configuration"]["Handler"] == "handler.other"


def test_bad_input_is_exit_2_naming_what_is_wrong(deployed):
    lam, _, _, out = deployed
    r = fnbench("functions", "deploy", "rust", "--region", "us-east-1", "--role", "admin", "--endpoint-url", lam.endpoint,
                "--out", str(out))
    assert r.returncode == 2 and "--role 'admin': an IAM role ARN" in r.stderr
    r = fnbench("functions", "deploy", "rust", "--role", ROLE)
    assert r.returncode == 2 and "--region needed" in r.stderr
    r = fnbench("functions", "deploy", "cobol", "--region", "us-east-1", "--role", ROLE, "--endpoint-url", lam.endpoint)
    assert r.returncode == 2 and "runtime 'cobol'" in r.stderr
    r = fnbench("functions", "deploy", "rust", "--region", "us-east-1", "--role", ROLE, "--env", "1=x",
                "--endpoint-url", lam.endpoint)
    assert r.returncode == 2 and "--env '1=x'" in r.stderr
