"""Real REPORT records that AWS accounts printed (tests/fixtures/lambda_reports.jsonl, each with its
source): the parser reads each to the numbers it carries, and the billed time and cost fnbench
computes (the invoker's billing, orchestrator/analysis/cost.py) are what AWS billed on that line."""

import base64
import json
import math
from pathlib import Path

import orjson
import pytest

from orchestrator.analysis import cost
from workers.contract import Target
from workers.platforms.aws_lambda import LambdaInvoker
from workers.platforms.aws_lambda.report import Report, find_report, parse_json, parse_text

FIXTURES = [json.loads(line) for line in
            (Path(__file__).parents[1] / "fixtures" / "lambda_reports.jsonl").read_text().splitlines() if line]
X86 = cost.price_for("us-east-1", "x86_64")


def _parse(fx):
    return parse_text(fx["record"]) if fx["format"] == "text" else parse_json(fx["record"])


def _log_line(fx) -> str:
    return fx["record"] if fx["format"] == "text" else orjson.dumps(fx["record"]).decode()


def test_the_fixtures_cover_the_kinds_with_sources():
    assert len(FIXTURES) >= 20
    kinds = {k for fx in FIXTURES for k in fx["kinds"]}
    assert {"warm", "cold", "managed-runtime", "before-2025-08", "after-2025-08", "init-billed", "snapstart",
            "timeout", "out-of-memory", "xray", "json", "custom-runtime"} <= kinds
    assert all(fx["source"] and fx["what"] for fx in FIXTURES)
    assert len({fx["id"] for fx in FIXTURES}) == len(FIXTURES)


@pytest.mark.parametrize("fx", FIXTURES, ids=[fx["id"] for fx in FIXTURES])
def test_each_real_line_reads_to_its_numbers(fx):
    r = _parse(fx)
    assert isinstance(r, Report), fx["id"]
    want = fx["expect"]
    for name in ("duration_ms", "billed_ms", "memory_mb", "max_memory_mb"):
        assert getattr(r, name) == want[name], name
    for name in ("init_ms", "restore_ms", "billed_restore_ms"):
        assert getattr(r, name) == want.get(name), name
    assert r.status == want.get("status", "success")
    assert r.error_type == want.get("error_type", "")
    assert r.cold == ("cold" in fx["kinds"])
    # In a log tail, as the invoker reads it.
    assert find_report(f"START RequestId: x Version: $LATEST\nEND RequestId: x\n{_log_line(fx)}\n") == r


@pytest.mark.parametrize("fx", FIXTURES, ids=[fx["id"] for fx in FIXTURES])
def test_billed_and_cost_are_what_aws_billed_on_the_line(fx):
    r = _parse(fx)
    aws_billed = fx["expect"]["billed_ms"]  # the line's Billed Duration: what the account paid for
    assert r.billed_total_ms == aws_billed
    gb_s = aws_billed / 1000 * r.memory_mb / 1024
    assert cost.invocation_cost(r.billed_total_ms, r.memory_mb, X86) == pytest.approx(gb_s * X86.gb_s_usd, rel=1e-12)
    # The invoker's own counters from the same line in an X-Amz-Log-Result header.
    inv = LambdaInvoker(Target(name="t", runtime="x", platform="aws-lambda", address={
        "function": "f", "endpoint": "http://127.0.0.1:9", "price": X86.to_address()}))
    info = inv._report(base64.b64encode(_log_line(fx).encode()))
    assert info is not None and info.billed_us == aws_billed * 1000
    assert inv.billed_ms == aws_billed and inv.gb_s == pytest.approx(gb_s)
    assert inv.cost_usd == pytest.approx(gb_s * X86.gb_s_usd, rel=1e-12)


@pytest.mark.parametrize("fx", [fx for fx in FIXTURES if fx.get("billed_rule")], ids=lambda fx: fx["id"])
def test_the_billing_rule_each_line_shows(fx):
    """How Billed Duration came about on the line: SnapStart lines include Billed Restore Duration;
    managed runtimes include Init Duration from 1 Aug 2025 on, not before."""
    r = _parse(fx)
    rule = fx["billed_rule"]
    extra = {"ceil(duration)": 0.0, "ceil(duration + init)": r.init_ms,
             "ceil(duration + billed_restore)": r.billed_restore_ms}[rule]
    assert r.billed_ms == math.ceil(round(r.duration_ms + extra, 6))
