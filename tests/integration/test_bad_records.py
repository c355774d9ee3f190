"""One bad record never costs a run its result (issue 20, item 6): crafted intervals.jsonl lines and
entries XADDed into a real run's Redis stream are counted in ``bad_records`` (result.json, printed),
left out, and the command exits 3 (the result is partial), never 1 (an SLO failed) or a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.integration.distributed_fixtures import (
    cluster_fixture,  # noqa: F401 - the `cluster` fixture
    write_spec,
)
from tests.servers import wait_for
from tests.unit.test_bad_records import CRAFTED, record
from workers import keys

ROOT = Path(__file__).resolve().parents[2]
FNBENCH = [sys.executable, "-m", "orchestrator.cli"]
pytestmark = pytest.mark.integration


def fnbench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*FNBENCH, *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def good_lines(n: int = 4) -> list[bytes]:
    return [orjson.dumps(record(seq=i, t0=1_700_000_000.0 + i, t1=1_700_000_001.0 + i)) for i in range(n)]


@pytest.mark.parametrize("with_result", [False, True])
def test_report_of_a_folder_with_each_crafted_line_counts_them_and_exits_3(tmp_path, with_result):
    folder = tmp_path / "run"
    folder.mkdir()
    lines = good_lines()
    crafted = [orjson.dumps(v) for v in CRAFTED.values()] + [b"{not json", b"[]"]
    body = lines[:2] + crafted + lines[2:]
    (folder / "intervals.jsonl").write_bytes(b"\n".join(body) + b"\n")
    if with_result:  # the run's own result.json: what it says is kept, its bad_records added
        saved = {"schema_version": 2, "run_id": "r", "groups": [], "errors": [],
                 "bad_records": {"count": 2, "reasons": ["stream entry 1-0: from the run"]}}
        (folder / "result.json").write_bytes(orjson.dumps(saved))
    r = fnbench("report", str(folder), "--json")
    # 3: partial; without result.json the run did not finish, which errors[] says (2, as before).
    code = 3 if with_result else 2
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr
    result = orjson.loads(r.stdout)
    assert bool(result["errors"]) is not with_result
    expected = len(crafted) + (2 if with_result else 0)
    assert result["bad_records"]["count"] == expected, result["bad_records"]
    assert any("intervals.jsonl:3" in reason for reason in result["bad_records"]["reasons"])
    assert f"{expected} record(s) could not be read" in r.stderr
    (g,) = result["groups"]
    assert g["completed"] == 12 and g["outcomes"] == {"ok": 12}  # every good line, nothing of the bad
    shown = fnbench("report", str(folder))
    assert shown.returncode == code and "partial" in shown.stdout and "Traceback" not in shown.stderr


def test_report_of_a_clean_folder_still_exits_0(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "intervals.jsonl").write_bytes(b"\n".join(good_lines()) + b"\n")
    (folder / "result.json").write_bytes(orjson.dumps({"schema_version": 2, "run_id": "r", "groups": [], "errors": []}))
    r = fnbench("report", str(folder), "--json")
    assert r.returncode == 0, r.stderr
    assert "bad_records" not in orjson.loads(r.stdout)


def test_bad_entries_xadded_into_a_running_distributed_run_are_counted(cluster, tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", "http://127.0.0.1:1/", regions="[a]", rps=20, duration="4s",
                      flush="500ms", name="badxadd")
    proc = cluster.popen("run", str(spec), "--results", str(tmp_path / "results"), "--json", "--metrics-port", "0")
    client = cluster.redis.client()
    injected = [b'{"not": "an interval"', orjson.dumps({"not": "an interval"}), orjson.dumps(CRAFTED["unknown outcome"]),
                orjson.dumps(CRAFTED["index out of range"]), orjson.dumps(CRAFTED["t1 = 1e308"])]
    try:
        def running() -> str | None:
            for raw in client.zrange(keys.RUNS, 0, -1):
                run_id = raw.decode()
                if run_id.startswith("badxadd") and client.xlen(keys.intervals(run_id)) > 0:
                    return run_id
            return None

        run_id = wait_for(running, 30, "the run's first interval in its stream")
        for raw in injected:
            client.xadd(keys.intervals(run_id), {"iv": raw})
        client.xadd(keys.intervals(run_id), {"other": b"field"})
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 3, err[-3000:]
    assert "Traceback" not in err
    result = orjson.loads(out)
    assert result["bad_records"]["count"] == len(injected) + 1, result["bad_records"]
    assert f"{len(injected) + 1} record(s) could not be read" in err
    assert result["groups"] and result["groups"][0]["intended"] > 0  # the real intervals are all there
    saved = orjson.loads((tmp_path / "results" / run_id / "result.json").read_bytes())
    assert saved["bad_records"]["count"] == len(injected) + 1
    # The store's view (fnbench report RUN --broker): the same count, the same exit code.
    again = cluster.fnbench("report", run_id, "--json")
    assert again.returncode == 3, again.stderr[-3000:]
    assert orjson.loads(again.stdout)["bad_records"]["count"] == len(injected) + 1
