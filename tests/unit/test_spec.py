import pytest

from orchestrator.errors import SpecError
from orchestrator.run import spec

GOOD = """
name: demo
targets:
  - {name: a, runtime: rust, url: "http://127.0.0.1:8080/echo", headers: {Authorization: "${env:TOKEN}"}, body: {x: 1}}
load: {executor: ramp, from_rps: 10, to_rps: 100}
duration: 1m
warmup: 500ms
slos: [{target: a, metric: response_ms.p99, max: 50}]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        spec.load_text(text)
    return info.value.problems


def test_good_spec_parses_durations_and_body():
    b = spec.load_text(GOOD)
    assert b.duration == 60.0 and b.warmup == 0.5
    assert b.targets[0].body_text() == '{"x":1}'
    assert b.targets[0].headers["Authorization"] == "${env:TOKEN}"  # resolved on the worker, never here
    assert float(b.schedule().count(60)) == pytest.approx((10 + 100) / 2 * 60)


def test_every_problem_is_reported_with_its_yaml_path():
    found = problems(
        """
name: x
targets:
  - {name: a, url: "ftp://nope"}
  - {name: a, url: "http://127.0.0.1:1/", timeout: soon}
  - {name: c, url: "http://127.0.0.1:1/", method: FETCH, colour: blue}
load: {executor: constant}
duration: -5
slos: [{target: zzz, metric: response_ms.p42, max: 1}]
"""
    )
    text = "\n".join(found)
    assert "targets[1].timeout" in text
    assert "targets[2].method" in text
    assert "targets[2].colour" in text  # unknown keys are errors, not silently ignored
    # Field-level errors come first; semantic ones are reported once those are fixed.
    assert len(found) >= 3


def test_semantic_problems_are_all_listed():
    found = problems(
        """
name: x
targets:
  - {name: a, url: "ftp://nope"}
  - {name: a, url: "http://127.0.0.1:1/"}
load: {executor: constant}
duration: -5
slos: [{target: zzz, metric: response_ms.p42, max: 1}]
"""
    )
    paths = [p.split(":")[0] for p in found]
    assert "targets[0].url" in paths
    assert "targets[1].name" in paths
    assert "load.rps" in paths
    assert "duration" in paths
    assert "slos[0].target" in paths
    assert "slos[0].metric" in paths


def test_schedule_problems_carry_the_load_path():
    found = problems(
        "name: x\ntargets: [{name: a, url: 'http://127.0.0.1:1/'}]\n"
        "load: {executor: steps, steps: [{duration: 5s, rps: 0}]}\n"
    )
    assert any(p.startswith("load.steps") for p in found)


def test_cold_start_needs_a_platform_that_can_be_cold():
    found = problems(
        "name: x\ntargets: [{name: a, url: 'http://127.0.0.1:1/'}]\nload: {rps: 1}\ncold_start: {enabled: true}\n"
    )
    assert any(p.startswith("targets[0].platform") for p in found)


def test_yaml_syntax_error_is_a_spec_error():
    assert "not valid YAML" in problems("name: [unclosed")[0]


def test_load_is_validated_as_the_executors_own_model():
    b = spec.load_text("name: x\ntargets: [{name: a, url: 'http://127.0.0.1:1/'}]\n"
                       "load: {executor: steps, steps: [{duration: 1m, rps: 5}], max_in_flight: 9}\n")
    assert type(b.load).__name__ == "StepsLoad" and b.load.max_in_flight == 9
    assert spec.load_text("name: x\ntargets: [{name: a, url: 'http://127.0.0.1:1/'}]\nload: {rps: 3}\n").load.executor == "constant"
    # A field of another executor is an unknown key here, with the YAML path (no union tag in it).
    found = problems("name: x\ntargets: [{name: a, url: 'http://127.0.0.1:1/'}]\nload: {executor: constant, rps: 1, to_rps: 5}\n")
    assert found == ["load.to_rps: Extra inputs are not permitted"]
    found = problems("name: x\ntargets: [{name: a, url: 'http://127.0.0.1:1/'}]\nload: {executor: ramp, from_rps: 1, to_rps: 0, over: 0}\n")
    assert any(p.startswith("load.over:") for p in found)


def test_every_problem_of_a_spec_in_one_pass_structural_and_semantic():
    text = ("name: x\ntargets:\n  - {name: a, url: 'ftp://x', timeout: -1s}\n  - {name: a, url: 'http://127.0.0.1:1/'}\n"
            "load: {executor: constant, rps: 5}\nduration: -3\nwarmup: -1\nflush_interval: 0.01\nslos: [{metric: nope}]\n"
            "late_bound: 0s\n")
    with pytest.raises(SpecError) as err:
        spec.load_text(text, "s.yaml")
    problems = "\n".join(err.value.problems)
    for path in ("targets[0].timeout", "duration", "warmup", "flush_interval", "late_bound", "targets[0].url", "targets[1].name",
                 "slos[0].metric"):
        assert f"{path}:" in problems, (path, problems)


def test_bad_yaml_names_the_line_not_an_internal_stream_name():
    with pytest.raises(SpecError) as err:
        spec.load_text("name: x\ntargets: [\n", "s.yaml")
    (problem,) = err.value.problems
    assert problem.startswith("line 3, column 1: not valid YAML") and "<unicode string>" not in problem
    assert err.value.source == "s.yaml"
