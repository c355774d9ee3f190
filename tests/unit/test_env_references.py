"""``${env:NAME}`` reads only names an operator allows (FNBENCH_ALLOWED_ENV, default FNBENCH_SECRET_*);
fnbench's own settings and AWS's variables never, whatever the setting says (issue 20, item 3).
The worker's resolver is the trust boundary; the spec check says the same before any load."""

from __future__ import annotations

import pytest

from orchestrator.run import spec
from workers.contract import Target
from workers.errors import SetupError
from workers.platforms import ALLOWED_ENV_NAMES, env_refusal, resolve_env
from workers.platforms.http import encode_request

WORKER_SECRETS = {"FNBENCH_TASK_KEY": "task-key-123", "FNBENCH_BROKER": "redis://:pw@127.0.0.1:1/0",
                  "AWS_SECRET_ACCESS_KEY": "aws-secret-123", "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
                  "AWS_SESSION_TOKEN": "aws-token-123"}


@pytest.fixture
def worker_env(monkeypatch):
    for name, value in WORKER_SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FNBENCH_SECRET_TOKEN", "Bearer ok")
    monkeypatch.setenv("MY_TOKEN", "mine")
    monkeypatch.delenv(ALLOWED_ENV_NAMES, raising=False)
    return monkeypatch


@pytest.mark.parametrize("allowed", [None, "*", "FNBENCH_*,AWS_*", "FNBENCH_TASK_KEY,AWS_SECRET_ACCESS_KEY"])
def test_the_worker_never_resolves_its_own_or_aws_variables(worker_env, allowed):
    if allowed is not None:
        worker_env.setenv(ALLOWED_ENV_NAMES, allowed)
    for name, value in WORKER_SECRETS.items():
        with pytest.raises(SetupError, match=r"target 't'\.headers\.X-K: .*never resolved") as info:
            encode_request(Target(name="t", runtime="rust", platform="http", url="http://127.0.0.1:1/",
                                  headers=(("X-K", f"${{env:{name}}}"),)))
        assert value not in str(info.value)
        with pytest.raises(SetupError, match="never resolved"):
            resolve_env(f"http://127.0.0.1:1/${{env:{name}}}", "url")
    if allowed in (None, "*", "FNBENCH_*,AWS_*"):  # the documented prefix, wherever the patterns allow it
        assert resolve_env("${env:FNBENCH_SECRET_TOKEN}", "x") == "Bearer ok"


def test_only_allowed_names_resolve(worker_env):
    with pytest.raises(SetupError, match=r"MY_TOKEN.* is not allowed: FNBENCH_ALLOWED_ENV is FNBENCH_SECRET_\*"):
        resolve_env("${env:MY_TOKEN}", "url")
    worker_env.setenv(ALLOWED_ENV_NAMES, "MY_*, OTHER")
    assert resolve_env("a${env:MY_TOKEN}b", "url") == "amineb"
    assert env_refusal("FNBENCH_SECRET_TOKEN") is not None  # an explicit list replaces the default
    assert env_refusal("PATH") is not None and env_refusal("my_token") is not None  # case matters
    # The body is resolved on the worker too.
    worker_env.setenv(ALLOWED_ENV_NAMES, "*")
    t = Target(name="t", runtime="rust", platform="http", url="http://127.0.0.1:1/", body="${env:FNBENCH_TASK_KEY}")
    with pytest.raises(SetupError, match=r"target 't'\.body: .*never resolved"):
        encode_request(t)


SPEC = """
name: x
targets:
  - {name: a, url: "http://127.0.0.1:1/${env:FNBENCH_TASK_KEY}", headers: {Authorization: "${env:AWS_SECRET_ACCESS_KEY}", X-Ok: "${env:FNBENCH_SECRET_TOKEN}"}, body: {k: "${env:FNBENCH_BROKER}"}}
  - {name: b, url: "http://127.0.0.1:1/", headers: {X-Mine: "${env:MY_TOKEN}"}}
load: {rps: 1}
"""


def test_the_spec_check_names_each_refused_reference_with_its_yaml_path(worker_env):
    b = spec.load_text(SPEC)  # a valid spec; what a worker may read is the operator's policy
    problems = spec.allow_list_problems(b)
    assert [p.split(":")[0] for p in problems] == [
        "targets[0].url", "targets[0].headers.Authorization", "targets[0].body", "targets[1].headers.X-Mine"]
    assert not any("X-Ok" in p for p in problems)
    worker_env.setenv(ALLOWED_ENV_NAMES, "MY_*,FNBENCH_*")
    assert [p.split(":")[0] for p in spec.allow_list_problems(b)] == [
        "targets[0].url", "targets[0].headers.Authorization", "targets[0].body"]
