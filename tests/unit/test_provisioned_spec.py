"""`provisioned_concurrency` and qualifiers on aws-lambda targets: what a spec may ask (issue 22 part 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import session
from orchestrator.errors import SpecError

HEAD = "name: pc\nload: {executor: constant, rps: 1}\nduration: 1s\n"


def target(extra: str) -> str:
    return (HEAD + "targets:\n  - {name: j, platform: aws-lambda, function: fnbench-java, "
            "endpoint_url: 'http://127.0.0.1:9001', " + extra + "}\n")


COLD = "cold_start: {enabled: true, invocations: 1}\n"


@pytest.mark.parametrize("text, field, words", [
    (target("provisioned_concurrency: 2"), "provisioned_concurrency", "needs a qualifier"),
    (target("qualifier: $LATEST, provisioned_concurrency: 2"), "provisioned_concurrency", "$LATEST"),
    (target("qualifier: live, provisioned_concurrency: 0"), "provisioned_concurrency", "1 or more"),
    (target("qualifier: live, provisioned_concurrency: true"), "provisioned_concurrency", "valid integer"),
    (target("qualifier: '3'") + COLD, "qualifier", "version 3 is immutable"),
])
def test_bad_provisioned_specs_name_the_key(text: str, field: str, words: str) -> None:
    with pytest.raises(SpecError) as info:
        session.runnable(text, "<spec>")
    problems = info.value.problems
    assert any(p.startswith(f"targets[0].{field}") and words.split(" ")[-1] in p for p in problems), problems


def test_good_provisioned_specs() -> None:
    session.runnable(target("qualifier: live, provisioned_concurrency: 2") + COLD, "<spec>")  # cold on an alias works now
    session.runnable(target("qualifier: '3', provisioned_concurrency: 1"), "<spec>")  # PC on a version
    session.runnable(target("qualifier: live") + COLD, "<spec>")


def test_validate_exits_2_naming_the_key(tmp_path: Path) -> None:
    f = tmp_path / "spec.yaml"
    f.write_text(target("provisioned_concurrency: 2"))
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "validate", str(f)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "targets[0].provisioned_concurrency" in r.stderr, r.stderr


def test_the_example_is_valid() -> None:
    path = Path(__file__).resolve().parents[2] / "examples" / "lambda-provisioned.yaml"
    b = session.runnable(path.read_text(), str(path))
    assert [t.provisioned_concurrency for t in b.targets] == [None, None, 2]
