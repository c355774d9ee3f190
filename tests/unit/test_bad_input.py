"""Bad input never crashes or hangs: each case is a clear problem with its YAML path (exit 2),
in bounded time and memory.  Each case here crashed, hung or was silently accepted before."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import orjson
import pytest

from orchestrator import session
from orchestrator.errors import InputError, SpecError
from orchestrator.run import plan, spec
from orchestrator.run.dispatch import local
from workers import histograms, limits, recorder

HEAD = "name: x\ntargets: [{name: a, url: 'http://127.0.0.1:1/'}]\n"


def problems(text: str) -> list[str]:
    """Every problem the runnable check finds (the spec's own, then the plan's limits)."""
    with pytest.raises(SpecError) as info:
        session.runnable(text, "<spec>")
    return info.value.problems


def bomb(levels: int, width: int = 9) -> str:
    """A billion-laughs document: ``width ** levels`` values from a few hundred bytes."""
    lines = ["a0: &a0 [" + ",".join(["lol"] * width) + "]"]
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels + 1)]
    return HEAD + "load: {rps: 1}\nx-anchors:\n" + "".join(f"  {line}\n" for line in lines).replace(
        "  a0", "  a0", 1) + f"targets: [{{name: a, url: 'http://127.0.0.1:1/', body: *a{levels}}}]\n"


CASES = {
    # numbers
    "nan rate": (HEAD + "load: {rps: .nan}\n", "load.rps", "finite"),
    "inf rate": (HEAD + "load: {rps: .inf}\n", "load.rps", "finite"),
    "inf duration": (HEAD + "load: {rps: 1}\nduration: .inf\n", "duration", "finite"),
    "nan step duration": (HEAD + "load: {executor: steps, steps: [{duration: .nan, rps: 1}]}\n",
                          "load.steps[0].duration", "finite"),
    "rate 1e12": (HEAD + "load: {rps: 1e12}\n", "load.rps", "less than or equal"),
    "ramp to 1e15": (HEAD + "load: {executor: ramp, from_rps: 1, to_rps: 1e15}\n", "load.to_rps", "less than"),
    "duration 1000000h": (HEAD + "load: {rps: 10}\nduration: 1000000h\n", "duration", "31 days"),
    "huge integer duration": (HEAD + "load: {rps: 10}\nduration: " + "9" * 400 + "\n", "duration", "31 days"),
    "long ramp": (HEAD + "load: {executor: ramp, from_rps: 1, to_rps: 2, over: 9999999h}\n", "load.over", "31 days"),
    "a million shards": (HEAD + "load: {rps: 100}\nsharding: {max_rps_per_shard: 0.0001}\n", "sharding", "shards"),
    "zero shard rate": (HEAD + "load: {rps: 1}\nsharding: {max_rps_per_shard: 0}\n", "sharding.max_rps_per_shard", ""),
    "tiny rate": (HEAD + "load: {rps: 1e-300}\n", "load.rps", "at least"),
    "cold phase of years": (HEAD.replace("url: 'http://127.0.0.1:1/'", "platform: aws-lambda, function: f")
                            + "load: {rps: 1}\ncold_start: {enabled: true, invocations: 1000000, rps: 0.001}\n",
                            "duration", "31 days"),
    "nan slo": (HEAD + "load: {rps: 1}\nslos: [{metric: error_rate, max: .nan}]\n", "slos[0].max", "finite"),
    # refused at its path with a plain message (it said "call sys.set_int_max_str_digits()" before)
    "seed of 5000 digits": (HEAD + "load: {rps: 1}\nseed: " + "9" * 5000 + "\n", "seed", "an integer of 5,000"),
    "seed past 64 bits": (HEAD + "load: {rps: 1}\nseed: " + str(2**70) + "\n", "seed", "less than"),
    # issue 27 item 8: validated, then ran wrongly or not at all
    "no regions": (HEAD + "load: {rps: 1}\nregions: []\n", "regions", "at least 1"),
    "slo on a cold phase there is not": (HEAD + "load: {rps: 1}\nslos: [{metric: response_ms.p99, max: 100, "
                                          "phase: cold}]\n", "slos[0].phase", "no cold phase"),
    "slo min above max": (HEAD + "load: {rps: 1}\nslos: [{metric: response_ms.p99, min: 10, max: 1}]\n",
                          "slos[0]", "above max"),
    "negative error rate": (HEAD + "load: {rps: 1}\nslos: [{metric: error_rate, max: -1}]\n", "slos[0].max",
                            "never negative"),
    "error rate above 1": (HEAD + "load: {rps: 1}\nslos: [{metric: error_rate, min: 2}]\n", "slos[0].min",
                           "from 0 to 1"),
    "rps true": (HEAD + "load: {rps: true}\n", "load.rps", "got true"),
    "max_in_flight true": (HEAD + "load: {rps: 1, max_in_flight: true}\n", "load.max_in_flight", "got true"),
    "seed true": (HEAD + "load: {rps: 1}\nseed: true\n", "seed", "got true"),
    "slo max false": (HEAD + "load: {rps: 1}\nslos: [{metric: error_rate, max: false}]\n", "slos[0].max",
                      "got false"),
    "timeout longer than the run": (HEAD.replace("'}]", "', timeout: 1h}]") + "load: {rps: 1}\nduration: 2s\n",
                                    "targets[0].timeout", "longer than the whole run"),
    "a shard over the worker rate cap": (HEAD + "load: {rps: 1e7}\nsharding: {max_rps_per_shard: 1e7}\n",
                                         "sharding.max_rps_per_shard", "FNBENCH_MAX_RPS"),
    "a step over the worker rate cap": (HEAD + "load: {executor: steps, steps: [{duration: 1s, rps: 10}, "
                                        "{duration: 1s, rps: 1e7}]}\nsharding: {max_rps_per_shard: 1e7}\n",
                                        "sharding.max_rps_per_shard", "FNBENCH_MAX_RPS"),
    "ten thousand targets": ("name: x\nload: {rps: 0.01}\nduration: 10m\ntargets:\n" + "".join(
        f"  - {{name: t{i}, url: 'http://127.0.0.1:1/'}}\n" for i in range(10_000)), "targets", "MB of shard state"),
    # YAML
    "duplicate key": (HEAD + "load: {rps: 10}\nload: {rps: 20}\n", "load", "duplicate key 'load'"),
    "duplicate nested key": (HEAD + "load: {rps: 10, rps: 20}\n", "load.rps", "duplicate key 'rps'"),
    "deep nesting": (HEAD + "load: {rps: 1}\nx: " + "[" * 100_000 + "]" * 100_000 + "\n", "x[0][0]", "nested"),
    "alias bomb": (bomb(9), "x-anchors.a", "more than"),
    "recursive alias": (HEAD + "load: {rps: 1}\nx: &r [*r]\n", "x[0]", "contains it"),
    "too many aliases": (HEAD + "load: {rps: 1}\nv: &v 1\nx: [" + ",".join(["*v"] * 101) + "]\n", "x[100]", "aliases"),
    "binary body": (HEAD.replace("'}]", "', body: [!!binary aGk=]}]") + "load: {rps: 1}\n", "targets[0].body", "JSON"),
    "set body": (HEAD.replace("'}]", "', body: !!set {a: null}}]") + "load: {rps: 1}\n", "targets[0].body", "JSON"),
    "unknown executor": (HEAD + "load: {executor: zigzag, rps: 1}\n", "load", "one of constant"),
    "load not a mapping": (HEAD + "load: 5\n", "load", "dictionary"),
    "python tag": (HEAD + "load: !!python/object/apply:os.system [echo hi]\n", "", "not valid YAML"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_specs_are_problems_with_their_path(case: str) -> None:
    text, path, words = CASES[case]
    tracemalloc.start()
    try:
        found = problems(text)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    # (No time bound: under a loaded machine and tracemalloc even the ten thousand targets vary 10x.)
    assert peak < 200 * 2**20, (case, peak)
    assert any(p.startswith(path) and words in p for p in found), (case, found)


def test_an_alias_bomb_in_the_body_is_refused_before_it_expands() -> None:
    # 624 bytes of YAML that expand to 9**9 strings (1.4 GB before); deeper ones segfaulted.
    for levels in (5, 9, 30):
        tracemalloc.start()
        try:
            found = problems(bomb(levels))
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        assert peak < 50 * 2**20
        assert "expands to more than" in found[0] or "nested more than" in found[0]


def test_a_small_alias_use_is_fine() -> None:
    b = spec.load_text("defaults: &d {url: 'http://127.0.0.1:1/'}\n".replace("defaults", "x")[:0]
                       + "name: x\ntargets:\n  - &t {name: a, url: 'http://127.0.0.1:1/', body: {k: [1, 2]}}\n"
                       "  - {<<: *t, name: b}\nload: {rps: 1}\n")
    assert [t.name for t in b.targets] == ["a", "b"] and b.targets[1].body == {"k": [1, 2]}


def test_many_problems_are_capped_with_a_count() -> None:
    found = problems(HEAD + "load: {rps: 1}\n" + "".join(f"k{i}: 1\n" for i in range(5000)))
    assert len(found) == spec.MAX_PROBLEMS + 1
    assert found[-1].startswith("… and 4,950 more")


def test_problem_text_is_cut_and_printable() -> None:
    found = problems(HEAD + "load: {rps: 1}\n\"k\\e[2J" + "y" * 5000 + "\": 1\n")
    assert all(len(p) <= spec.MAX_PROBLEM_CHARS and p.isprintable() for p in found)


def test_files_too_big_binary_or_not_utf8(tmp_path: Path) -> None:
    cases = {
        "big.yaml": (b"name: x\n" + b"#" * (spec.MAX_SPEC_BYTES + 10), "larger than"),
        "bin.yaml": (bytes(range(256)) * 8, "not UTF-8"),
        "latin1.yaml": ("name: caf\xe9\n".encode("latin-1"), "not UTF-8"),
        "nul.yaml": (b"name: x\x00\n", "not valid YAML"),
    }
    for name, (data, words) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SpecError) as info:
            spec.load(tmp_path / name)
        assert words in info.value.problems[0], name
    with pytest.raises(SpecError, match="cannot read"):
        spec.load(tmp_path)  # a directory
    with pytest.raises(SpecError, match="at most"):
        spec.load_text("name: x\n" + "#" * spec.MAX_SPEC_BYTES)


def test_shard_count_is_arithmetic_and_checked_before_any_shard_is_built() -> None:
    b = spec.load_text(HEAD.replace("[{", "[{name: b, url: 'http://127.0.0.1:2/'}, {") +
                       "regions: [r-1, r-2]\nload: {rps: 1000}\nduration: 12s\nwarmup: 3s\n"
                       "sharding: {max_rps_per_shard: 300, slice: 5s}\n")
    for workers in (1, 3, 7):
        assert plan.shard_count(b, workers) == len(plan.split(b, "r", 0.0, min_parts=workers))
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="shards"):
        plan.split(b, "r", 0.0, min_parts=10**9)
    assert time.perf_counter() - t0 < 10


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("case", ["rate 1e12", "duration 1000000h", "a million shards", "alias bomb",
                                  "ten thousand targets", "seed of 5000 digits"])
def test_validate_ends_quickly_with_exit_2(tmp_path: Path, case: str) -> None:
    f = tmp_path / "spec.yaml"
    f.write_text(CASES[case][0])
    r = _cli("validate", str(f))  # these hung (or took GBs) before
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and CASES[case][1] in r.stderr


def test_cli_options_out_of_range_are_usage_errors(tmp_path: Path) -> None:
    f = tmp_path / "spec.yaml"
    f.write_text(HEAD + "load: {rps: 1}\nduration: 1s\n")
    r = _cli("run", str(f), "--metrics-port", "99999", "--results", str(tmp_path / "r"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--metrics-port" in r.stderr
    r = _cli("plan", str(f), "--workers", "0")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_validate_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "spec.fifo"
    os.mkfifo(fifo)  # opening it for reading blocked forever before
    r = _cli("validate", str(fifo))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "FIFO" in r.stderr and "not a regular file" in r.stderr


def test_validate_says_how_long_the_run_can_last(tmp_path: Path) -> None:
    f = tmp_path / "spec.yaml"
    f.write_text(HEAD.replace("'}]", "', timeout: 20s}]") + "load: {rps: 1}\nduration: 2s\n")
    r = _cli("validate", str(f), "--json")
    assert r.returncode == 0, r.stderr
    summary = orjson.loads(r.stdout)
    assert summary["total_s"] == 2 and summary["max_s"] == 2 + 20 + 1  # the load, then the drain
    r = _cli("validate", str(f))
    assert "lasts at most ~23s" in " ".join(r.stdout.split())


def test_a_timeout_up_to_the_drain_cap_is_fine() -> None:
    b = session.runnable(HEAD.replace("'}]", "', timeout: 30s}]") + "load: {rps: 1}\nduration: 2s\n", "<spec>")
    assert b.targets[0].timeout == 30
    b = session.runnable(HEAD.replace("'}]", "', timeout: 2m}]") + "load: {rps: 1}\nduration: 5m\n", "<spec>")
    assert b.targets[0].timeout == 120
    # A limit of running, not of reading: an old run's spec still loads for its report.
    old = HEAD.replace("'}]", "', timeout: 1h}]") + "load: {rps: 1}\nduration: 2s\nslos: [{metric: error_rate, max: -1}]\n"
    assert spec.load_text(old).targets[0].timeout == 3600


def test_the_memory_bound_follows_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    many = "name: x\nload: {rps: 0.01}\ntargets:\n" + "".join(
        f"  - {{name: t{i}, url: 'http://127.0.0.1:1/'}}\n" for i in range(1000))
    b = session.runnable(many, "<spec>")  # ~0.9 GB: under the default bound
    estimate, running = plan.memory_estimate(b)
    assert running == 1000 and estimate >= 1000 * 4 * recorder.HISTOGRAM_BYTES
    # Splitting the rate over more local processes multiplies the running shards: refused at the split.
    with pytest.raises(InputError, match="fewer --workers"):
        plan.split(b, "r", 0.0, min_parts=8)
    monkeypatch.setenv(plan.MAX_PLAN_MEMORY_ENV, "100")
    assert any("FNBENCH_MAX_PLAN_MEMORY_MB" in p for p in problems(many))


def test_a_recorder_holds_only_the_histograms_it_fills() -> None:
    rec = recorder.ShardRecorder()
    assert rec.histograms() == 0  # a shard waiting for its slice holds none (it held 8, 1.5 MB, before)
    rec.response.append(1000)
    rec.service.append(900)
    rec.send_lag.append(5)
    encoded, _ = rec.drain()
    assert rec.histograms() == 3 and set(encoded) == set(recorder.ShardRecorder.HISTOGRAMS)
    assert encoded["response"] and encoded["connect"] == "" and encoded["init_duration"] == ""
    assert histograms.merge([encoded["response"]]).get_total_count() == 1
    rec.release()
    assert rec.histograms() == 0


def test_local_processes_are_held_to_the_worker_rate_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(limits.MAX_RPS_ENV, "100")
    b = session.runnable(HEAD + "load: {rps: 80}\nduration: 10s\nsharding: {max_rps_per_shard: 50}\n", "<spec>")
    shards = plan.split(b, "r", 0.0)  # 2 shards of 40 req/s
    assert local.rate_refusal(local.assign(shards, 1)) == ""
    b = session.runnable(HEAD.replace("[{", "[{name: b, url: 'http://127.0.0.1:2/'}, {")
                         + "load: {rps: 80}\nduration: 10s\nsharding: {max_rps_per_shard: 50, slice: 5s}\n", "<spec>")
    shards = plan.split(b, "r", 0.0)  # 2 targets × 2 parts × 2 slices of 40 req/s; slices follow each other
    assert "160 req/s" in local.rate_refusal(local.assign(shards, 1))
    assert local.rate_refusal(local.assign(shards, 2)) == ""


def test_a_local_run_over_the_rate_cap_is_refused_before_any_load(tmp_path: Path) -> None:
    # A 1e7 step in local mode reached 1.5 GB and dropped 1.73 M requests: the cap applied only to Celery workers.
    f = tmp_path / "spec.yaml"
    f.write_text(HEAD + "load: {executor: steps, steps: [{duration: 1s, rps: 10}, {duration: 1s, rps: 1e6}]}\n")
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(f), "--workers", "2",
                        "--results", str(tmp_path / "r")], capture_output=True, text=True, timeout=120,
                       env={**os.environ, limits.MAX_RPS_ENV: "100000"})
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "FNBENCH_MAX_RPS" in r.stderr and "--workers" in r.stderr
