"""The local platform on a shared worker: it runs only its own build of a function (never a
command from the task), and a cold phase on one target does not delay another target."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import uvloop

from tests.servers import strict
from workers import functions
from workers.contract import Interval, Shard, Target
from workers.errors import RefusedError
from workers.histograms import merge
from workers.shard import run_shard, run_shards_async

ROOT = Path(__file__).resolve().parents[2]
BODY = '{"data": "abc", "rounds": 10}'


def built(runtime: str) -> functions.Artifact:
    try:
        return functions.artifact_for(runtime)
    except FileNotFoundError:
        if strict():
            raise
        from orchestrator.subjects.functions import build

        return build(runtime)[0]


def local_shard(name: str, phase: str, rps: int, seconds: float, start_at: float, runtime: str = "go",
                workload: str = "hash", address: dict | None = None) -> Shard:
    target = Target(name=name, runtime=runtime, platform="local", workload=workload, body=BODY,
                    address=address or {})
    return Shard(run_id="r", shard_id=name, region="local", target=target, phase=phase,
                 arrival={"kind": "constant", "rps": str(rps)}, start_at=start_at, duration_s=seconds,
                 flush_interval_s=1.0, max_in_flight=64)


def totals(intervals: list[Interval]) -> dict[str, int]:
    out: dict[str, int] = {}
    for iv in intervals:
        for k, n in iv.outcomes.items():
            out[k] = out.get(k, 0) + n
    return out


# ------------------------------------------------------------------ the task cannot name a command

FORGED = ["/bin/sh", "-c", "touch {marker}"]


@pytest.mark.integration
@pytest.mark.parametrize("phase", ["warm", "cold"])
def test_a_forged_command_in_the_task_is_never_run(tmp_path, phase):
    built("go")
    marker = tmp_path / "pwned"
    address = {"command": [a.format(marker=marker) for a in FORGED], "env": {"LD_PRELOAD": "/x.so"},
               "cwd": str(tmp_path), "instances": 1}
    shard = local_shard("forged", phase, rps=10, seconds=1.0, start_at=time.time() + 0.3, address=address)
    intervals: list[Interval] = []
    run_shard(shard, intervals.append)
    assert not marker.exists()
    # The worker's own go build answered every request.
    assert totals(intervals) == {"ok": 10}
    assert sum(iv.cold_starts for iv in intervals) == (10 if phase == "cold" else 0)
    assert sum(iv.intended for iv in intervals) == 10


@pytest.mark.integration
@pytest.mark.parametrize(("runtime", "workload"), [("sh", "hash"), ("go", "../../etc/passwd"), ("", "hash")])
def test_a_runtime_or_workload_the_worker_does_not_build_is_refused_before_anything_starts(runtime, workload):
    start_at = time.time() + 2.0
    shard = local_shard("bad", "warm", rps=10, seconds=0.5, start_at=start_at, runtime=runtime, workload=workload)
    intervals: list[Interval] = []
    run_shard(shard, intervals.append)  # the refusal fails this target's shard, not the worker (issue 26)
    (failed,) = intervals
    assert failed.status == "failed" and failed.final and failed.failure.startswith("RefusedError: ")
    assert "local" in failed.failure and failed.intended == failed.sent == 0  # nothing was started or sent
    assert time.time() < start_at  # refused at once, not after the window


@pytest.mark.integration
def test_instances_from_the_task_are_capped():
    from workers.platforms.local import MAX_INSTANCES, instance_count

    target = Target(name="t", runtime="go", platform="local", workload="hash", address={"instances": 10**6})
    assert instance_count(target) == MAX_INSTANCES
    with pytest.raises(RefusedError):
        instance_count(Target(name="t", runtime="go", platform="local", workload="hash",
                              address={"instances": ["/bin/sh"]}))


# ------------------------------------------------------------------ a cold neighbour

WARM_RPS, COLD_RPS, SECONDS, ROUNDS = 400, 20, 3.0, 3


@pytest.fixture(scope="module")
def server_port():
    """The fault server in its own process: the warm target's latency is not this process's GIL."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from tests.servers import FaultServer; s = FaultServer().__enter__();"
         " print(s.port, flush=True); sys.stdin.read()"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)


_COLD_APART = """
import sys
from workers.contract import Shard
from workers.shard import run_shard
out = []
run_shard(Shard.from_json(sys.argv[1]), out.append)
print(sum(iv.outcomes.get("ok", 0) for iv in out))
"""


def _round(port: int, cold: str) -> tuple[int, int]:
    """The warm target's send-lag (p90, p99) in µs, with the cold neighbour ``none``, in another
    process (``apart``: the same machine load, its own loop) or on this loop (``together``)."""
    start_at = time.time() + (2.0 if cold == "apart" else 0.5)  # a process to import fnbench first
    warm = Shard(run_id="r", shard_id="warm", region="local",
                 target=Target(name="warm", runtime="other", platform="http", url=f"http://127.0.0.1:{port}/ok",
                               method="GET"),
                 phase="warm", arrival={"kind": "constant", "rps": str(WARM_RPS)}, start_at=start_at,
                 duration_s=SECONDS, flush_interval_s=1.0, max_in_flight=64)
    neighbour = local_shard("cold", "cold", rps=COLD_RPS, seconds=SECONDS, start_at=start_at)
    apart = None
    if cold == "apart":
        apart = subprocess.Popen([sys.executable, "-c", _COLD_APART, neighbour.to_json().decode()], cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    intervals: list[Interval] = []
    uvloop.run(run_shards_async([warm, neighbour] if cold == "together" else [warm], intervals.append))
    w = [iv for iv in intervals if iv.shard_id == "warm"]
    assert totals(w) == {"ok": int(WARM_RPS * SECONDS)}
    if apart is not None:
        out, err = apart.communicate(timeout=60)
        # On a badly overloaded machine the process may start after its window (0 sent): then
        # this round is just the warm target alone, a stricter baseline.
        assert apart.returncode == 0, err[-2000:]
    if cold == "together":
        c = [iv for iv in intervals if iv.shard_id == "cold"]
        assert totals(c) == {"ok": int(COLD_RPS * SECONDS)} and sum(iv.cold_starts for iv in c) == COLD_RPS * SECONDS
    lag = merge(iv.send_lag_us for iv in w)
    return lag.get_value_at_percentile(90.0), lag.get_value_at_percentile(99.0)


@pytest.mark.integration
def test_a_cold_phase_does_not_delay_another_targets_requests(server_port):
    built("go")
    lag: dict[str, list[tuple[int, int]]] = {"none": [], "apart": [], "together": []}
    for _ in range(ROUNDS):  # interleaved, so a burst of machine noise hits every condition
        for cold in lag:
            lag[cold].append(_round(server_port, cold))
    # Noise only ever adds delay: sharing the loop is judged by its best round, against a typical
    # (median) round of the unshared conditions.
    def best(cold: str, i: int) -> int:
        return min(r[i] for r in lag[cold])

    def typical(cold: str, i: int) -> float:
        return statistics.median(r[i] for r in lag[cold])

    # The cold functions' processes load the machine whichever loop spawns them (``apart``: its
    # own process); what sharing the loop adds on top is what this bounds, with generous slack
    # for a machine shared with other work.  Spawning on the loop stalled the neighbour for
    # fork + exec + wait at every cold start: p90 6-25 ms (p99 15-50 ms) where the warm target
    # alone had 0.1-0.3 ms (1-3 ms).
    for i, slack in ((0, 8), (1, 10)):  # p90, p99
        assert best("together", i) <= slack * max(typical("none", i), typical("apart", i)), lag
