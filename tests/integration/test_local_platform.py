"""The local platform: warm instances and real cold starts of the built functions, and no orphans."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from orchestrator.subjects import functions
from tests.servers import strict

ROOT = Path(__file__).resolve().parents[2]


def built(runtime: str) -> functions.Artifact:
    try:
        return functions.artifact_for(runtime)
    except FileNotFoundError:
        if strict():
            raise
        return functions.build(runtime)[0]


def function_pids(marker: str) -> set[int]:
    """PIDs of live processes whose command line contains ``marker`` (zombies excluded)."""
    pids = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes()
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmd and state != "Z":
            pids.add(int(d.name))
    return pids


def spec(tmp_path: Path, runtime: str, duration: str, cold: bool) -> Path:
    p = tmp_path / f"{runtime}.yaml"
    p.write_text(
        f"name: local-{runtime}\n"
        f"targets: [{{name: {runtime}, runtime: {runtime}, platform: local, workload: hash, instances: 2,"
        " body: {data: abc, rounds: 10}}]\n"
        f"load: {{executor: constant, rps: 50}}\nduration: {duration}\nflush_interval: 1s\n"
        + ("cold_start: {enabled: true, invocations: 4, rps: 4}\n" if cold else "")
    )
    return p


@pytest.mark.integration
def test_warm_and_cold_phases_measure_the_function(tmp_path):
    art = built("go")
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(spec(tmp_path, "go", "2s", cold=True)),
                        "--results", str(tmp_path / "r"), "--metrics-port", "0", "--json"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    groups = {g["phase"]: g for g in orjson.loads(r.stdout)["groups"]}
    warm, cold = groups["warm"], groups["cold"]
    assert warm["outcomes"] == {"ok": 100}
    assert "cold_starts" not in warm and warm["peak_rss_mb"] > 0
    assert cold["outcomes"] == {"ok": 4}
    assert cold["cold_starts"] == 4  # cold starts counted = processes spawned
    # spawn → first response includes the function's own init time.
    assert cold["service_ms"]["p50"] >= cold["init_ms"]["p50"] > 0
    assert cold["service_ms"]["p50"] > warm["service_ms"]["p50"]
    assert function_pids(str(art.path)) == set()


@pytest.mark.integration
@pytest.mark.parametrize("how", ["sigint", "sigkill"])
def test_no_function_process_outlives_the_run(tmp_path, how):
    art = built("python")
    marker = str(art.path / "server.py")
    before = function_pids(marker)
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", str(spec(tmp_path, "python", "60s", cold=False)),
                             "--results", str(tmp_path / "r"), "--metrics-port", "0", "--workers", "1"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while len(function_pids(marker) - before) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(function_pids(marker) - before) == 2, "two warm instances should be running"
    if how == "sigint":
        proc.send_signal(signal.SIGINT)
    else:
        # A crash: the orchestrator dies without cleaning up. Its worker and the
        # worker's function processes must die with it (PR_SET_PDEATHSIG chain).
        proc.kill()
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while function_pids(marker) - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert function_pids(marker) - before == set()
