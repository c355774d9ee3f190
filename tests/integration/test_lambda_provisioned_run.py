"""`fnbench run` with provisioned concurrency and forced cold starts on aliases, on the local Lambda
(issue 22 part 2): the config is put and waited for (READY) before the load, served without Init
Duration and priced at the provisioned Duration price, and what was there is put back after the run
— the config and the alias's version — even when the run does not start."""

from pathlib import Path

import boto3
import orjson
import pytest

from lambda_emulator import server as lambda_local
from orchestrator.analysis import cost
from tests.integration.test_lambda_sweep import fnbench
from tests.servers import need
from workers.platforms.aws_lambda.sigv4 import Credentials

pytestmark = pytest.mark.integration
BODY = "{workload: hash, params: {data: fnbench, rounds: 50}}"


def spec(tmp_path: Path, endpoint: str, pc: int = 2, cold: bool = True) -> Path:
    p = tmp_path / "pc.yaml"
    p.write_text(
        "name: pc\ntargets:\n"
        f"  - {{name: rust-pc, runtime: rust, platform: aws-lambda, function: rust, qualifier: live, "
        f"provisioned_concurrency: {pc}, endpoint_url: '{endpoint}', workload: hash, body: {BODY}}}\n"
        f"  - {{name: go-alias, runtime: go, platform: aws-lambda, function: go, qualifier: live, "
        f"endpoint_url: '{endpoint}', workload: hash, body: {BODY}}}\n"
        "load: {executor: constant, rps: 10, max_in_flight: 2}\nduration: 2s\nwarmup: 1s\nflush_interval: 1s\n"
        + ("cold_start: {enabled: true, invocations: 2, rps: 4}\n" if cold else ""))
    return p


def boto(endpoint):
    return boto3.client("lambda", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="fnbench",
                        aws_secret_access_key="fnbench")


@pytest.fixture
def lam():
    try:
        fns = lambda_local.make_functions(["rust", "go"], reserved=8)
    except FileNotFoundError as exc:
        need(False, str(exc))
    with lambda_local.Background(fns, credentials=Credentials("fnbench", "fnbench")) as lam:
        c = boto(lam.endpoint)
        for name in ("rust", "go"):
            c.publish_version(FunctionName=name)
            c.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
        yield lam, c


def test_a_run_with_provisioned_concurrency_is_set_up_and_restored(lam, tmp_path):
    lam, c = lam
    r = fnbench("run", str(spec(tmp_path, lam.endpoint)), "--results", str(tmp_path / "results"), "--metrics-port", "0",
                "--workers", "1", "--run-id", "pc", "--no-html")
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert "provisioned concurrency rust:live: putting 2 (was none" in out and "READY, 2/2 allocated" in out
    assert "removed (there was none before the run)" in out
    # Restored: no config, each alias back on version 1 (the forced cold starts had moved them).
    with pytest.raises(c.exceptions.ProvisionedConcurrencyConfigNotFoundException):
        c.get_provisioned_concurrency_config(FunctionName="rust", Qualifier="live")
    assert c.get_alias(FunctionName="rust", Name="live")["FunctionVersion"] == "1"
    assert c.get_alias(FunctionName="go", Name="live")["FunctionVersion"] == "1"
    assert len(c.list_versions_by_function(FunctionName="go")["Versions"]) == 1 + 1 + 2  # $LATEST, 1, one per forcing
    result = orjson.loads((tmp_path / "results" / "pc" / "result.json").read_bytes())
    groups = {(g["target"], g["phase"]): g for g in result["groups"]}
    warm = groups[("rust-pc", "warm")]
    # Served by the provisioned instances: no cold start at all, and priced at the provisioned Duration price.
    assert warm.get("cold_starts", 0) == 0 and warm["outcomes"] == {"ok": warm["completed"]}
    assert warm["cost"]["provisioned"]["invocations"] == warm["cost"]["invocations"] > 0
    price = cost.price_for("us-east-1", "x86_64")
    pc_per_ms_128 = price.provisioned_duration_gb_s_usd * 128 / 1024 / 1000
    assert warm["cost"]["per_invocation_usd"] == pytest.approx(warm["billed_ms"]["mean"] * pc_per_ms_128, rel=0.02)
    # Cold phase on the PC alias: each forcing published a version, the alias moved, READY again, then the
    # first invocation on a fresh provisioned instance (no Init Duration); on the plain alias: real cold starts.
    assert groups[("rust-pc", "cold")]["completed"] == 2 and groups[("rust-pc", "cold")].get("cold_starts", 0) == 0
    assert groups[("go-alias", "cold")]["cold_starts"] == 2
    saved = orjson.loads((tmp_path / "results" / "pc" / "provisioned.json").read_bytes())
    (entry,) = saved["configs"]
    assert entry["provisioned_concurrency"] == 2 and entry["billed_s"] == 300 and entry["provisioned_usd"] == pytest.approx(
        2 * 128 / 1024 * 300 * price.provisioned_gb_s_usd)


def test_the_previous_config_is_put_back_and_a_refused_one_stops_the_run(lam, tmp_path):
    lam, c = lam
    c.put_provisioned_concurrency_config(FunctionName="rust", Qualifier="live", ProvisionedConcurrentExecutions=1)
    r = fnbench("run", str(spec(tmp_path, lam.endpoint, cold=False)), "--results", str(tmp_path / "results"),
                "--metrics-port", "0", "--workers", "1", "--run-id", "pc2", "--no-html")
    assert r.returncode == 0, r.stderr[-3000:]
    assert c.get_provisioned_concurrency_config(FunctionName="rust", Qualifier="live")["RequestedProvisionedConcurrentExecutions"] == 1
    # More than the reserved concurrency (8): Lambda refuses it, the run does not start, nothing is left changed.
    r = fnbench("run", str(spec(tmp_path, lam.endpoint, pc=9)), "--results", str(tmp_path / "results"),
                "--metrics-port", "0", "--workers", "1", "--run-id", "pc3", "--no-html")
    assert r.returncode != 0 and "provisioned concurrency rust:live" in r.stderr and "reserved concurrency" in r.stderr
    assert not (tmp_path / "results" / "pc3").exists()
    assert c.get_provisioned_concurrency_config(FunctionName="rust", Qualifier="live")["RequestedProvisionedConcurrentExecutions"] == 1
    assert c.get_alias(FunctionName="go", Name="live")["FunctionVersion"] == "1"


def test_a_memory_sweep_on_an_alias_publishes_each_step(lam, tmp_path):
    lam, c = lam
    p = tmp_path / "sweep.yaml"
    p.write_text(
        "name: pcsweep\ntargets:\n"
        f"  - {{name: rust-live, runtime: rust, platform: aws-lambda, function: rust, qualifier: live, "
        f"endpoint_url: '{lam.endpoint}', workload: hash, body: {BODY}, memory_sizes: [128, 256]}}\n"
        "load: {executor: constant, rps: 5, max_in_flight: 2}\nduration: 1s\nflush_interval: 1s\n")
    r = fnbench("run", str(p), "--results", str(tmp_path / "results"), "--metrics-port", "0", "--workers", "1",
                "--run-id", "sw", "--no-html")
    assert r.returncode == 0, r.stderr[-3000:]
    result = orjson.loads((tmp_path / "results" / "sw" / "result.json").read_bytes())
    price = cost.price_for("us-east-1", "x86_64")
    for g in result["groups"]:  # each step ran on the alias, at the step's size (a version published per step)
        size = int(g["target"].split("@")[1][:-2])
        assert g["completed"] > 0 and g["cost"]["per_invocation_usd"] == pytest.approx(
            g["billed_ms"]["mean"] * price.per_ms_128mb * size / 128, rel=0.02)
    assert {v["Version"]: v["MemorySize"] for v in c.list_versions_by_function(FunctionName="rust")["Versions"]} == {
        "$LATEST": 128, "1": 128, "2": 128, "3": 256}
    assert c.get_alias(FunctionName="rust", Name="live")["FunctionVersion"] == "1"  # put back


def test_an_interrupted_run_still_restores(lam, tmp_path):
    import os
    import signal
    import subprocess
    import time

    from tests.integration.test_lambda_sweep import FNBENCH, ROOT

    lam, c = lam
    p = spec(tmp_path, lam.endpoint, cold=False)
    p.write_text(p.read_text().replace("duration: 2s", "duration: 60s"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="fnbench", AWS_SECRET_ACCESS_KEY="fnbench")
    proc = subprocess.Popen([*FNBENCH, "run", str(p), "--results", str(tmp_path / "results"), "--metrics-port", "0",
                             "--workers", "1", "--run-id", "int", "--no-html"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        seen = []
        while time.monotonic() < deadline:  # bounded: until the load has started
            line = proc.stdout.readline()
            seen.append(line)
            if "results in" in line or not line:
                break
        assert any("READY, 2/2" in s for s in seen), "".join(seen)
        assert c.get_provisioned_concurrency_config(FunctionName="rust", Qualifier="live")["Status"] == "READY"
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out[-2000:]
    assert "removed (there was none before the run)" in out
    with pytest.raises(c.exceptions.ProvisionedConcurrencyConfigNotFoundException):
        c.get_provisioned_concurrency_config(FunctionName="rust", Qualifier="live")
