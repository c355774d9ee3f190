"""Property: whatever the spec text, `fnbench validate` ends with exit 0 or 2 and a message, never
a traceback, in bounded time and memory.  Specs are generated valid-ish (real keys, odd values)
and as garbage (random YAML, the shapes of past crashes).  Derandomized: CI never flakes."""

from __future__ import annotations

import math
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import orjson
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import SpecError
from orchestrator.run import plan, spec

PROFILE = settings(derandomize=True, max_examples=150, deadline=None, database=None,
                   suppress_health_check=list(HealthCheck))

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([0, 1, -1, 1e-300, 1e12, 1e15, 5e-324, 10**400, 0.0001]),
)
durations = st.one_of(numbers, st.sampled_from(["30s", "250ms", "5m", "1h", "1000000h", "-1s", "9" * 80 + "s", "soon", ""]))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=20))
json_like = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=5), kids, max_size=4),
                         max_leaves=20)
targets = st.fixed_dictionaries(
    {"name": st.one_of(st.just("a"), st.text(max_size=8))},
    optional={"url": st.sampled_from(["http://127.0.0.1:1/", "http://127.0.0.1:99999/", "ftp://x", "http://127.0.0.1:1/é", ""]),
              "platform": st.sampled_from(["http", "local", "aws-lambda", "gopher"]), "timeout": durations,
              "body": json_like, "headers": st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3),
              "instances": numbers, "function": st.text(max_size=5)},
)
steps = st.lists(st.fixed_dictionaries({"duration": durations, "rps": numbers}), max_size=4)
loads = st.one_of(
    st.fixed_dictionaries({"executor": st.just("constant")}, optional={"rps": numbers, "max_in_flight": numbers}),
    st.fixed_dictionaries({"executor": st.just("poisson")}, optional={"rps": numbers}),
    st.fixed_dictionaries({"executor": st.just("ramp")}, optional={"from_rps": numbers, "to_rps": numbers, "over": durations}),
    st.fixed_dictionaries({"executor": st.just("steps")}, optional={"steps": steps}),
    st.fixed_dictionaries({}, optional={"executor": st.text(max_size=8), "rps": numbers}),
    json_like,
)
specs = st.fixed_dictionaries(
    {"name": st.one_of(st.just("p"), scalars), "targets": st.one_of(st.lists(targets, min_size=1, max_size=3), json_like)},
    optional={"load": loads, "duration": durations, "warmup": durations, "flush_interval": durations,
              "regions": st.lists(st.sampled_from(["local", "us-east-1", "EU", ""]), max_size=3),
              "sharding": st.fixed_dictionaries({}, optional={"max_rps_per_shard": numbers, "slice": durations}),
              "cold_start": st.fixed_dictionaries({}, optional={"enabled": st.booleans(), "invocations": numbers, "rps": numbers}),
              "seed": numbers, "slos": st.lists(st.fixed_dictionaries({"metric": st.text(max_size=12)}, optional={"max": numbers}), max_size=2),
              "colour": scalars},
)

# Shapes of past crashes, spliced into the text: aliases, nesting, binary-ish and odd YAML.
hostile = st.sampled_from([
    "", "x: &a [*a]\n", "x: " + "[" * 5000 + "]" * 5000 + "\n", "load: {rps: 1}\nload: {rps: 2}\n",
    "a: &a [1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n",
    "? [a, b]\n: 1\n", "x: !!binary aGk=\n", "x: !!python/name:os.system\n", "\x00\x01", "---\n---\n", "x: *nope\n",
    "%YAML 1.1\n---\n", "<<: *x\n", "x: " + "9" * 5000 + "\n", "\t- oops\n", "'unclosed\n",
])


def _yaml(data: object) -> str:
    try:
        return yaml.safe_dump(data, allow_unicode=True, width=10**6)
    except (yaml.YAMLError, ValueError, RecursionError):  # e.g. ints Python cannot print
        return "name: x\n"


def check(text: str) -> int:
    """The in-process `fnbench validate`: 0 or 2, within the bounds; anything else fails the test."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        b = spec.load_text(text)
        n = len(plan.split(b, "validate", 0.0))  # what validate prints; bounded by MAX_SHARDS
        assert n <= plan.MAX_SHARDS and math.isfinite(plan.total_length(b))
        code = 0
    except SpecError as exc:
        assert exc.problems and len(exc.problems) <= spec.MAX_PROBLEMS + 1
        assert all(p and len(p) <= spec.MAX_PROBLEM_CHARS for p in exc.problems)
        code = 2
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 20  # generous: a bound, not a timing
    assert peak < 512 * 2**20
    return code


@PROFILE
@given(specs, hostile, st.booleans())
def test_generated_specs_validate_or_fail_cleanly(data: dict, extra: str, before: bool) -> None:
    text = _yaml(data)
    text = extra + text if before else text + extra
    assert check(text) in (0, 2)


@PROFILE
@given(st.text(max_size=300))
def test_garbage_text_validates_or_fails_cleanly(text: str) -> None:
    assert check(text) in (0, 2)


@PROFILE
@given(st.binary(max_size=300))
def test_garbage_bytes_never_crash(raw: bytes) -> None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return  # read_text refuses it (test_bad_input covers the message)
    assert check(text) in (0, 2)


def test_the_cli_exits_0_or_2_without_a_traceback(tmp_path: Path) -> None:
    """A few of the same shapes through `python -m orchestrator.cli validate FILE`."""
    base = {"name": "p", "targets": [{"name": "a", "url": "http://127.0.0.1:1/"}], "load": {"rps": 10}}
    samples: list[bytes] = [
        orjson.dumps(base),  # JSON is YAML
        _yaml({**base, "load": {"rps": 1e12}}).encode(),
        _yaml({**base, "duration": "1000000h"}).encode(),
        (_yaml(base) + "load: {rps: 1}\n").encode(),
        b"\xff\xfe\x00garbage",
        b"x: " + b"[" * 100_000 + b"]" * 100_000,
    ]
    for i, raw in enumerate(samples):
        f = tmp_path / f"s{i}.yaml"
        f.write_bytes(raw)
        r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "validate", str(f)], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode in (0, 2), (i, r.stderr)
        assert "Traceback" not in r.stderr + r.stdout, (i, r.stderr)
        assert (r.returncode == 0) == (i == 0), (i, r.stderr)
