"""The `fnbench` command as a user runs it: exit codes, result.json, report, Ctrl-C, metrics."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

FNBENCH = [sys.executable, "-m", "orchestrator.cli"]
ROOT = Path(__file__).resolve().parents[2]


def fnbench(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*FNBENCH, *args], capture_output=True, text=True, cwd=ROOT, timeout=120, **kw)


def write_spec(tmp_path: Path, url: str, extra: str = "", duration: str = "3s", rps: int = 200) -> Path:
    p = tmp_path / "spec.yaml"
    p.write_text(
        f"name: cli\ntargets:\n  - {{name: t, runtime: rust, url: '{url}', method: GET, timeout: 2s}}\n"
        f"load: {{executor: constant, rps: {rps}}}\nduration: {duration}\nflush_interval: 1s\n{extra}"
    )
    return p


def only_run(results: Path) -> Path:
    runs = list(results.iterdir())
    assert len(runs) == 1
    return runs[0]


@pytest.mark.integration
def test_validate_lists_every_problem_and_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntargets:\n  - {name: a, url: nope}\n  - {name: a, url: 'http://127.0.0.1:1/'}\n"
                   "load: {executor: ramp}\nduration: 0\n")
    r = fnbench("validate", str(bad))
    assert r.returncode == 2
    for path in ("targets[0].url", "targets[1].name", "load.from_rps", "load.to_rps", "duration"):
        assert path in r.stderr, (path, r.stderr)


@pytest.mark.integration
def test_run_refuses_a_bad_spec_without_starting(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntargets: []\n")
    r = fnbench("run", str(bad), "--results", str(tmp_path / "results"), "--metrics-port", "0")
    assert r.returncode == 2 and "targets" in r.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.integration
def test_missing_spec_file_is_a_clear_error(tmp_path):
    r = fnbench("run", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2 and "nope.yaml" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.integration
def test_run_writes_result_json_and_report_rerenders_it(fault_server, tmp_path):
    spec = write_spec(tmp_path, fault_server.url("/ok"), "slos: [{metric: error_rate, max: 0.0}]\n")
    results = tmp_path / "results"
    r = fnbench("run", str(spec), "--results", str(results), "--workers", "2", "--metrics-port", "0", "--json")
    assert r.returncode == 0, r.stderr
    folder = only_run(results)
    assert {p.name for p in folder.iterdir()} >= {"spec.yaml", "intervals.jsonl", "result.json"}
    result = orjson.loads((folder / "result.json").read_bytes())
    assert result["run_id"] == folder.name and result["gaps"] == []
    assert result["slo"][0]["pass"] is True
    (g,) = result["groups"]
    assert (g["region"], g["target"], g["runtime"], g["phase"]) == ("local", "t", "rust", "warm")
    assert g["intended"] == g["sent"] == g["completed"] == 600
    assert g["outcomes"] == {"ok": 600}
    assert g["achieved_rps"] == pytest.approx(200, rel=0.02)
    for hist in ("response_ms", "service_ms", "send_lag_ms"):
        assert set(g[hist]) == {"p50", "p90", "p99", "p999", "max", "mean"}
        assert 0 <= g[hist]["p50"] <= g[hist]["p99"] <= g[hist]["max"]
    assert orjson.loads(r.stdout)["groups"][0]["completed"] == 600

    again = fnbench("report", str(folder), "--json")
    assert again.returncode == 0, again.stderr
    rerendered = orjson.loads(again.stdout)
    assert rerendered["groups"][0]["outcomes"] == g["outcomes"]
    assert rerendered["groups"][0]["response_ms"] == g["response_ms"]
    assert rerendered == result  # the report of a folder is its result.json: one document


@pytest.mark.integration
def test_a_full_disk_loses_nothing_measured_and_says_where_the_result_went(fault_server, tmp_path):
    spec = write_spec(tmp_path, fault_server.url("/ok"), duration="1s")
    results = tmp_path / "results"
    folder = results / "full-disk"
    folder.mkdir(parents=True)
    for name in ("intervals.jsonl", "result.json.tmp"):  # every write there ends in ENOSPC
        (folder / name).symlink_to("/dev/full")
    r = fnbench("run", str(spec), "--results", str(results), "--metrics-port", "0", "--workers", "1",
                "--run-id", "full-disk", "--json")
    assert r.returncode == 2, r.stderr
    assert "No space left on device" in r.stderr and "the result went to" in r.stderr
    fallback = Path(r.stderr.split("the result went to ")[1].split()[0])
    saved = orjson.loads(fallback.read_bytes())
    assert saved["incomplete"] is True and any("intervals.jsonl" in e for e in saved["errors"])
    (g,) = saved["groups"]
    assert g["outcomes"] == {"ok": 200}  # measured and kept in memory, though nothing reached the disk
    assert orjson.loads(r.stdout)["groups"][0]["outcomes"] == {"ok": 200}
    # The folder holds no result: report says the run is cut, never shows it as whole.
    (folder / "intervals.jsonl").unlink()
    (folder / "intervals.jsonl").write_bytes(b"")
    again = fnbench("report", str(folder), "--json")
    assert again.returncode == 2
    report = orjson.loads(again.stdout)
    assert report["incomplete"] is True and "result.json: missing" in report["errors"][0]
    bad = fnbench("run", str(spec), "--results", str(results), "--run-id", "../escape")
    assert bad.returncode == 2 and "--run-id" in bad.stderr


@pytest.mark.integration
def test_failed_slo_exits_1(fault_server, tmp_path):
    spec = write_spec(tmp_path, fault_server.url("/5xx"), "slos: [{metric: error_rate, max: 0.01}]\n", duration="1s")
    r = fnbench("run", str(spec), "--results", str(tmp_path / "r"), "--metrics-port", "0", "--workers", "1")
    assert r.returncode == 1, r.stderr
    assert "FAIL" in r.stdout


@pytest.mark.integration
def test_a_reference_to_a_worker_variable_is_refused_before_any_load(fault_server, tmp_path):
    """${env:FNBENCH_TASK_KEY} (or AWS's keys) would send the worker's secret to the target: validate and
    run refuse it with its YAML path and exit 2, even when FNBENCH_ALLOWED_ENV is '*'; nothing is sent."""
    route = "/envleak-cli"
    spec = write_spec(tmp_path, fault_server.url(route + "-${env:FNBENCH_TASK_KEY}"), duration="1s")
    spec.write_text(spec.read_text().replace("timeout: 2s", "timeout: 2s, headers: {X-K: '${env:AWS_SECRET_ACCESS_KEY}'}"))
    env = {**os.environ, "FNBENCH_TASK_KEY": "the-task-key-0123456789", "AWS_SECRET_ACCESS_KEY": "aws-secret-0123",
           "FNBENCH_ALLOWED_ENV": "*"}
    for command in (["validate", str(spec)],
                    ["run", str(spec), "--results", str(tmp_path / "r"), "--metrics-port", "0", "--workers", "1"]):
        r = fnbench(*command, env=env)
        assert r.returncode == 2, r.stderr
        assert "targets[0].url" in r.stderr and "targets[0].headers.X-K" in r.stderr and "never resolved" in r.stderr
        assert "the-task-key-0123456789" not in r.stderr + r.stdout and "aws-secret-0123" not in r.stderr + r.stdout
    assert not any(path.startswith(route) for path in fault_server.hits)
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


@pytest.mark.integration
def test_an_allowed_secret_reference_is_sent(fault_server, tmp_path):
    """FNBENCH_SECRET_* (the default) and what FNBENCH_ALLOWED_ENV adds are resolved on the worker."""
    spec = write_spec(tmp_path, fault_server.url("/envok-${env:FNBENCH_SECRET_T}-${env:MY_T}"), duration="1s", rps=20)
    env = {**os.environ, "FNBENCH_SECRET_T": "s1", "MY_T": "m2"}
    r = fnbench("run", str(spec), "--results", str(tmp_path / "r"), "--metrics-port", "0", "--workers", "1", env=env)
    assert r.returncode == 2 and "MY_T" in r.stderr and "not allowed" in r.stderr, r.stderr
    assert fault_server.hits["/envok-s1-m2"] == 0
    r = fnbench("run", str(spec), "--results", str(tmp_path / "r"), "--metrics-port", "0", "--workers", "1",
                env={**env, "FNBENCH_ALLOWED_ENV": "FNBENCH_SECRET_*,MY_*"})
    assert r.returncode == 0, r.stderr
    assert fault_server.hits["/envok-s1-m2"] > 0


@pytest.mark.integration
def test_unset_secret_reference_is_a_setup_error(fault_server, tmp_path):
    spec = write_spec(tmp_path, fault_server.url("/ok"), duration="1s")
    spec.write_text(spec.read_text().replace("timeout: 2s", "timeout: 2s, headers: {Authorization: '${env:FNBENCH_SECRET_TEST_UNSET}'}"))
    env = {k: v for k, v in os.environ.items() if k != "FNBENCH_SECRET_TEST_UNSET"}
    r = fnbench("run", str(spec), "--results", str(tmp_path / "r"), "--metrics-port", "0", "--workers", "1", env=env)
    assert r.returncode == 2
    assert "FNBENCH_SECRET_TEST_UNSET" in r.stderr and "headers.Authorization" in r.stderr
    # Once, rendered (no literal markup), and no empty result table.
    assert r.stderr.count("FNBENCH_SECRET_TEST_UNSET") == 1 and "[red]" not in r.stderr


@pytest.mark.integration
def test_sigint_stops_the_run_and_still_writes_the_result(fault_server, tmp_path):
    spec = write_spec(tmp_path, fault_server.url("/ok"), duration="60s")
    results = tmp_path / "results"
    proc = subprocess.Popen([*FNBENCH, "run", str(spec), "--results", str(results), "--metrics-port", "0"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    first = proc.stderr.readline()  # "run …: …" once the shards are out (start-up is slow on a loaded machine)
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    stderr = first + stderr
    assert proc.returncode == 130, stderr
    result = orjson.loads((only_run(results) / "result.json").read_bytes())
    assert result["interrupted"] is True
    (g,) = result["groups"]
    assert 200 < g["completed"] < 60 * 200
    assert g["completed"] == sum(g["outcomes"].values()) - g["outcomes"].get("dropped", 0)


@pytest.mark.integration
def test_metrics_are_served_during_the_run_with_values(fault_server, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = write_spec(tmp_path, fault_server.url("/ok"), duration="6s", rps=100)
    proc = subprocess.Popen([*FNBENCH, "run", str(spec), "--results", str(tmp_path / "r"), "--metrics-port", str(port),
                             "--workers", "1"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    def value(line: str) -> float:  # "name{labels} value timestamp_ms": samples carry their interval's time
        return float(line.split()[1])

    ok: list[str] = []
    body = ""
    try:
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:  # poll while the run goes (values trail it)
            time.sleep(0.5)
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            except OSError:
                continue
            ok = [line for line in body.splitlines() if line.startswith("fnbench_requests_total{") and 'outcome="ok"' in line]
            if ok and value(ok[0]) >= 100:
                break
    finally:
        proc.communicate(timeout=60)
    assert len(ok) == 1, body[-2000:]
    assert 'target="t"' in ok[0] and 'runtime="rust"' in ok[0] and 'phase="warm"' in ok[0]
    assert 100 <= value(ok[0]) <= 600
    count = [line for line in body.splitlines() if line.startswith("fnbench_response_time_seconds_count{")]
    assert value(count[0]) == pytest.approx(value(ok[0]), rel=1e-9)  # spread over the interval: floats


@pytest.mark.integration
def test_a_broker_url_of_another_scheme_and_a_busy_worker_metrics_port_are_clear_errors(tmp_path):
    r = fnbench("status", "--broker", "http://127.0.0.1:1/")
    assert r.returncode == 2 and "--broker" in r.stderr and "Traceback" not in r.stderr
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "FNBENCH_TASK_KEY": "k" * 40}
        r = fnbench("worker", "--region", "a", "--broker", "redis://127.0.0.1:1/0", "--metrics-port", str(port),
                    env=env)
    assert r.returncode == 2 and f"--metrics-port {port}" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.integration
def test_validate_and_functions_list_speak_json(tmp_path):
    ok = fnbench("validate", str(ROOT / "examples" / "two-regions.yaml"), "--json")
    assert ok.returncode == 0 and orjson.loads(ok.stdout)["regions"] == ["a", "b"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntargets: [\n")
    r = fnbench("validate", str(bad), "--json")
    assert r.returncode == 2 and orjson.loads(r.stdout)["problems"][0].startswith("line 3")
    listing = orjson.loads(fnbench("functions", "list", "--json").stdout)
    assert set(listing["workloads"]) >= {"echo", "hash"}
    assert all(f["size_bytes"] > 0 for f in listing["functions"])
