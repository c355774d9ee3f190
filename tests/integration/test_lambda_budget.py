"""The budget guard end to end on the local Lambda: `fnbench plan` prints the estimate and refuses a
plan over max_cost_usd (exit 2, the key named), as validate does; a run whose estimate passes but whose
REPORT lines cost more is stopped by the cost its workers counted (aborted_by, exit 1)."""

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from lambda_emulator import server as lambda_local
from tests.servers import need
from workers.platforms.aws_lambda.sigv4 import Credentials

pytestmark = pytest.mark.integration

FNBENCH = [sys.executable, "-m", "orchestrator.cli"]
ROOT = Path(__file__).resolve().parents[2]


def fnbench(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="fnbench", AWS_SECRET_ACCESS_KEY="fnbench")  # the local Lambda's credentials
    return subprocess.run([*FNBENCH, *args], capture_output=True, text=True, cwd=ROOT, timeout=180, env=env)


def budget_spec(tmp_path: Path, endpoint: str, extra: str) -> Path:
    p = tmp_path / "budget.yaml"
    p.write_text("name: budget\ntargets:\n"
                 f"  - {{name: rust-sleep, runtime: rust, platform: aws-lambda, function: rust, endpoint_url: '{endpoint}', "
                 "workload: sleep, body: {workload: sleep, params: {ms: 100}}, timeout: 5s}\n"
                 "load: {executor: constant, rps: 10, max_in_flight: 8}\nduration: 30s\nflush_interval: 1s\n" + extra)
    return p


def test_plan_prints_the_estimate_and_refuses_a_plan_over_budget(tmp_path):
    p = budget_spec(tmp_path, "http://127.0.0.1:9", "max_cost_usd: 0.001\n")
    r = fnbench("plan", str(p))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "budget estimate (an estimate, not a bill): 300 invocations" in r.stdout
    assert "each target's timeout, the worst case" in r.stdout
    assert "max_cost_usd: the plan's estimated cost $" in r.stderr
    v = fnbench("validate", str(p))
    assert v.returncode == 2 and "max_cost_usd: the plan's estimated cost" in v.stderr
    p = budget_spec(tmp_path, "http://127.0.0.1:9", "max_invocations: 100\n")
    v = fnbench("validate", str(p))
    assert v.returncode == 2 and "max_invocations: the plan makes 300 invocations" in v.stderr
    ok = fnbench("plan", str(budget_spec(tmp_path, "http://127.0.0.1:9", "max_cost_usd: 1\n")))
    assert ok.returncode == 0, ok.stderr
    assert "rust-sleep: 300 × 5000 ms × 10240 MB" in ok.stdout


def test_a_run_stops_when_the_cost_its_workers_counted_passes_the_budget(tmp_path):
    try:
        fns = lambda_local.make_functions(["rust"], memory_mb=2048, reserved=8)
    except FileNotFoundError as exc:
        need(False, str(exc))
    # The estimate assumes 1 ms at 2048 MB (≈ $2.3e-7 per invocation with the request fee: $7e-5 for the
    # 300 planned), under the budget; each invocation really bills ≥ 100 ms (≈ $3.5e-6), so ~29 pass it.
    budget = 1e-4
    with lambda_local.Background(fns, credentials=Credentials("fnbench", "fnbench")) as lam:
        p = budget_spec(tmp_path, lam.endpoint,
                        f"max_cost_usd: {budget}\nexpected_billed_ms: 1\nexpected_memory_mb: 2048\n")
        r = fnbench("run", str(p), "--results", str(tmp_path / "results"), "--metrics-port", "0", "--workers", "1",
                    "--run-id", "bud", "--no-html")
    assert r.returncode == 1, r.stderr[-3000:]
    assert "abort" in r.stderr and "budget max_cost_usd" in r.stderr
    result = orjson.loads((tmp_path / "results" / "bud" / "result.json").read_bytes())
    aborted = result["aborted_by"]
    assert aborted["budget"] == "max_cost_usd" and aborted["max"] == budget and aborted["value"] > budget
    g = next(g for g in result["groups"] if g["phase"] == "warm")
    # It stopped well before the 300 planned invocations, and what it counted is the run's cost.
    assert g["completed"] < 300
    assert g["cost"]["cost_with_requests_usd"] >= aborted["value"] - 1e-12
    assert not result.get("interrupted")
