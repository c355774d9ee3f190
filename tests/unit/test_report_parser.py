"""Lambda's REPORT record in both log formats, read by field name; missing/truncated never guessed."""

import base64

import orjson
import pytest

from workers.platforms.aws_lambda.report import (
    MISSING,
    TRUNCATED,
    Report,
    find_report,
    from_log_result,
    parse_json,
    parse_text,
)

# Lines in the form AWS publishes them (Lambda developer guide: CloudWatch logs, SnapStart, the
# Telemetry API's platform.report): text with tabs, a trailing tab or space as CloudWatch shows it.
COLD = ("REPORT RequestId: 8f507cfc-xmpl-4697-b07a-ac58fc914c95\tDuration: 469.40 ms\tBilled Duration: 500 ms\t"
        "Memory Size: 1024 MB\tMax Memory Used: 21 MB\tInit Duration: 100.99 ms")
WARM_OLD = ("REPORT RequestId: 3604209a-e9a3-11e6-939a-754dd98c7be3\tDuration: 12.34 ms\tBilled Duration: 100 ms \t"
            "Memory Size: 128 MB\tMax Memory Used: 18 MB\t")
SNAPSTART = ("REPORT RequestId: 3b7a8a41-xmpl-4a4e-b8b4-1b2a6e0b7c2d\tDuration: 15.54 ms\tBilled Duration: 346 ms\t"
             "Memory Size: 512 MB\tMax Memory Used: 157 MB\tRestore Duration: 516.24 ms\tBilled Restore Duration: 330 ms\t")
TIMEOUT = ("REPORT RequestId: 1a2b3c4d-xmpl-4e5f-8a9b-0c1d2e3f4a5b\tDuration: 3000.00 ms\tBilled Duration: 3000 ms\t"
           "Memory Size: 128 MB\tMax Memory Used: 52 MB\tStatus: timeout")
JSON_COLD = {"time": "2022-10-12T00:03:50.000Z", "type": "platform.report",
             "record": {"requestId": "6f7f0961f83442118a7af6fe80b88d56",
                        "metrics": {"durationMs": 101.51, "billedDurationMs": 102, "memorySizeMB": 128,
                                    "maxMemoryUsedMB": 70, "initDurationMs": 51.27},
                        "tracing": {"spanId": "54565fb41ac79632", "type": "X-Amzn-Trace-Id",
                                    "value": "Root=1-62e900b2-710d76f009d6e7785905449a;Parent=0efbd19962d95b05;Sampled=1"},
                        "status": "success"}}


def test_text_cold():
    r = parse_text(COLD)
    assert r == Report("8f507cfc-xmpl-4697-b07a-ac58fc914c95", 469.40, 500, 1024, 21, init_ms=100.99)
    assert r.cold and r.billed_total_ms == 500


def test_text_warm_with_trailing_whitespace():
    r = parse_text(WARM_OLD)
    assert isinstance(r, Report) and not r.cold
    assert (r.duration_ms, r.billed_ms, r.memory_mb, r.max_memory_mb, r.init_ms) == (12.34, 100, 128, 18, None)


def test_text_snapstart_billed_duration_already_includes_the_restore():
    r = parse_text(SNAPSTART)
    assert isinstance(r, Report) and r.cold and r.init_ms is None
    # 346 = ceil(15.54 + 330): real SnapStart lines (tests/fixtures/lambda_reports.jsonl) all show it.
    assert (r.restore_ms, r.billed_restore_ms, r.billed_total_ms) == (516.24, 330, 346)


def test_text_status():
    r = parse_text(TIMEOUT)
    assert isinstance(r, Report) and r.status == "timeout"


def test_json_by_field_name():
    r = parse_json(JSON_COLD)
    assert r == Report("6f7f0961f83442118a7af6fe80b88d56", 101.51, 102, 128, 70, init_ms=51.27)
    reordered = {"record": {"status": "success", "metrics": {"maxMemoryUsedMB": 70, "restoreDurationMs": 9.5,
                 "billedRestoreDurationMs": 4, "memorySizeMB": 128, "billedDurationMs": 102, "durationMs": 101.51},
                 "requestId": "x"}, "type": "platform.report"}
    r2 = parse_json(reordered)
    assert isinstance(r2, Report) and r2.restore_ms == 9.5 and r2.billed_total_ms == 102


def test_find_in_a_tail():
    log = f"START RequestId: x Version: $LATEST\nhello\nEND RequestId: x\n{COLD}\n"
    assert find_report(log) == parse_text(COLD)
    json_log = "\n".join(orjson.dumps(r).decode() for r in (
        {"type": "platform.start", "record": {"requestId": "x"}}, {"type": "function", "record": "hi"}, JSON_COLD))
    assert find_report(json_log) == parse_json(JSON_COLD)
    assert from_log_result(base64.b64encode(log.encode())) == parse_text(COLD)


@pytest.mark.parametrize("log", ["START RequestId: x\nsome output\n", ""])
def test_missing(log):
    assert find_report(log) is MISSING


@pytest.mark.parametrize("log", [
    COLD[40:],  # the 4 KB window began inside the REPORT line
    COLD[: COLD.index("\tMax Memory")],  # a required field cut off
    COLD[: COLD.index(" MB\tMax")],  # cut inside a value
    orjson.dumps(JSON_COLD).decode()[:-40],  # cut JSON record
    '{"type": "platform.report", "record": {"requestId": "x", "metrics": {"durationMs": 1}}}',
])
def test_truncated(log):
    assert find_report(log) is TRUNCATED
