"""The IntervalSink seam: a sink registered through FNBENCH_SINKS alone sees every interval of a run once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]

TOY = '''
import os
import orjson


class Toy:
    def __init__(self, run_id):
        self.out = open(os.environ["TOY_SINK_FILE"], "ab")
        self.out.write(orjson.dumps({"open": run_id}) + b"\\n")

    def add(self, interval):
        self.out.write(orjson.dumps({"key": [interval.shard_id, interval.attempt, interval.seq],
                                     "completed": interval.completed}) + b"\\n")

    def conclude(self, result):
        self.out.write(orjson.dumps({"result": result.run_id}) + b"\\n")

    def close(self):
        self.out.write(b'{"closed": true}\\n')
        self.out.close()


def make(run_id):
    return Toy(run_id)
'''


@pytest.mark.integration
def test_a_registered_sink_sees_every_interval_of_a_run_exactly_once(fault_server, tmp_path):
    (tmp_path / "toy_sink.py").write_text(TOY)
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: sinks\ntargets:\n  - {{name: t, runtime: rust, url: '{fault_server.url('/ok')}', "
                    "method: GET, timeout: 2s}\nload: {rps: 100}\nduration: 3s\nwarmup: 1s\nflush_interval: 0.5\n")
    seen = tmp_path / "seen.jsonl"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "FNBENCH_SINKS": "toy_sink:make",
           "TOY_SINK_FILE": str(seen)}
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(spec), "--results", str(tmp_path / "r"),
                        "--metrics-port", "0", "--run-id", "sinks-1", "--no-html"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [orjson.loads(x) for x in seen.read_bytes().splitlines()]
    assert lines[0] == {"open": "sinks-1"}
    assert lines[-2:] == [{"result": "sinks-1"}, {"closed": True}]
    got = [tuple(x["key"]) for x in lines if "key" in x]
    recorded = [orjson.loads(x) for x in (tmp_path / "r" / "sinks-1" / "intervals.jsonl").read_bytes().splitlines()]
    assert len(got) == len(set(got)), "an interval reached the sink twice"
    assert set(got) == {(x["shard_id"], x["attempt"], x["seq"]) for x in recorded}
    assert sum(x["completed"] for x in lines if "key" in x) == sum(x["completed"] for x in recorded) > 300

def test_a_sink_that_is_not_one_is_a_setup_error(tmp_path, monkeypatch):
    from workers import sinks
    from workers.errors import SetupError

    (tmp_path / "not_a_sink.py").write_text("def make(run_id):\n    return object()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(sinks.SINKS_ENV, "not_a_sink:make")
    with pytest.raises(SetupError, match="no add"):
        sinks.configured("r")
    monkeypatch.setenv(sinks.SINKS_ENV, "no_such_module_here:make")
    with pytest.raises(SetupError, match="cannot load"):
        sinks.configured("r")
