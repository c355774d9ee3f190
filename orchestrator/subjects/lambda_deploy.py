"""``fnbench functions deploy``: the Lambda packages created or updated with boto3.

For each runtime: the package of ``orchestrator/subjects/lambda_package.py`` (built from this machine's
functions; its layout checked), then, for function ``<prefix><runtime>``:

* absent → CreateFunction (ZIP upload, runtime, handler, role, memory, timeout, architecture,
  environment), then wait until its State is Active;
* present with the same code (CodeSha256: the packages are reproducible, so an unchanged build
  has the same hash) and the same configuration → left alone (``unchanged``);
* otherwise → UpdateFunctionCode (when the code differs), wait until LastUpdateStatus is
  Successful, then UpdateFunctionConfiguration (when the configuration differs), waited for too.

Control-plane calls are paced (workers/platforms/aws_lambda/control.py) and every wait is bounded.
Credentials come from the standard chain and are never printed.  ``--endpoint-url`` sends the
same calls to another Lambda endpoint — the local Lambda (``fnbench lambda serve``), which is how
this command is tested here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import InputError, SetupError
from orchestrator.subjects import lambda_package
from workers.platforms.aws_lambda.runtimes import code_sha256

ROLE_RE = re.compile(r"^arn:aws[a-zA-Z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
WAIT_S = 300.0  # a real create or code update takes seconds; bounded anyway


@dataclass(frozen=True)
class Deployed:
    function: str
    runtime: str
    action: str  # created | updated | unchanged
    arn: str
    code_sha256: str
    code_size: int
    memory_mb: int
    architecture: str
    lambda_runtime: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_inputs(region: str, role: str, prefix: str, runtimes: list[str], memory_mb: int, timeout_s: float) -> None:
    problems = []
    if not REGION_RE.match(region):
        problems.append(f"--region {region!r}: an AWS region such as us-east-1")
    if not ROLE_RE.match(role):
        problems.append(f"--role {role!r}: an IAM role ARN, arn:aws:iam::<12-digit account>:role/<name> "
                        "(the execution role the functions run as)")
    for r in runtimes:
        if r not in lambda_package.RUNTIMES:
            problems.append(f"runtime {r!r}: one of {', '.join(lambda_package.RUNTIMES)}")
        elif not NAME_RE.match(prefix + r):
            problems.append(f"--prefix {prefix!r}: function names are 1-64 letters, digits, '-' or '_' ({prefix + r!r})")
    if not 128 <= memory_mb <= 10240:
        problems.append(f"--memory {memory_mb}: Lambda takes 128 to 10240 MB")
    if not 1 <= timeout_s <= 900:
        problems.append(f"--timeout {timeout_s:g}s: Lambda takes 1 s to 900 s")
    if problems:
        raise InputError("; ".join(problems))


def _desired(manifest: dict[str, Any], role: str, memory_mb: int, timeout_s: float,
             environment: dict[str, str]) -> dict[str, Any]:
    return {"Runtime": manifest["lambda_runtime"], "Handler": manifest["handler"], "Role": role,
            "MemorySize": memory_mb, "Timeout": int(timeout_s), "Environment": {"Variables": dict(environment)}}


def _differs(current: dict[str, Any], desired: dict[str, Any]) -> bool:
    for key, want in desired.items():
        have = current.get(key)
        if key == "Environment":
            have = {"Variables": dict((have or {}).get("Variables") or {})}
        if have != want:
            return True
    return False


def _constant(changes: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda _current: changes


def deploy(runtimes: list[str], *, region: str, role: str, endpoint_url: str | None = None, prefix: str = "fnbench-",
           memory_mb: int = 128, timeout_s: float = 30.0, environment: dict[str, str] | None = None,
           out_dir: Path = lambda_package.DEFAULT_PACKAGE_DIR, say: Callable[[str], None] = lambda _: None,
           client: Any = None) -> list[Deployed]:
    """Create or update ``<prefix><runtime>`` for each runtime; returns what was done."""
    import time

    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    from workers.platforms.aws_lambda import control as lambda_control

    check_inputs(region, role, prefix, runtimes, memory_mb, timeout_s)
    env = dict(environment or {})
    lam = client or lambda_control.client(region, endpoint_url)
    done = []
    for runtime in runtimes:
        began = time.monotonic()
        try:
            manifest = lambda_package.package(runtime, out_dir)
        except FileNotFoundError as exc:
            raise SetupError(f"{runtime}: {exc}; build it with `fnbench functions build {runtime}`") from None
        zip_bytes = Path(manifest["zip"]).read_bytes()
        sha = code_sha256(zip_bytes)
        name = prefix + runtime
        arch = manifest["architectures"][0]
        desired = _desired(manifest, role, memory_mb, timeout_s, env)
        control = lambda_control.ControlPlane(lam, name)
        try:
            try:
                current = control.configuration()
            except lam.exceptions.ResourceNotFoundException:
                current = None
            if current is None:
                say(f"{name}: creating ({manifest['lambda_runtime']}, {arch}, {len(zip_bytes):,} bytes)")
                lam.create_function(FunctionName=name, Code={"ZipFile": zip_bytes}, PackageType="Zip",
                                    Architectures=[arch], Publish=False, **desired)
                problem = control.wait(lambda_control.active, WAIT_S)
                action = "created"
            else:
                action, problem = "unchanged", None
                if current.get("CodeSha256") != sha or list(current.get("Architectures") or ["x86_64"]) != [arch]:
                    say(f"{name}: updating the code ({len(zip_bytes):,} bytes)")
                    updated = lam.update_function_code(FunctionName=name, ZipFile=zip_bytes, Architectures=[arch])
                    problem = control.wait(lambda_control.updated_to(updated["RevisionId"]), WAIT_S)
                    action = "updated"
                if problem is None and _differs(current, desired):
                    say(f"{name}: updating the configuration")
                    problem = control.update(_constant(desired), WAIT_S)
                    action = "updated"
            if problem is not None:
                raise SetupError(f"deploying {name}: {problem}")
            final = control.configuration()
        except NoCredentialsError:
            raise SetupError("no AWS credentials in the standard chain (environment, shared files, SSO, "
                             "container or instance role)") from None
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise SetupError(f"deploying {name}: {error.get('Code', 'error')}: {error.get('Message', exc)}") from None
        except BotoCoreError as exc:
            raise SetupError(f"deploying {name}: {exc}") from None
        if final.get("CodeSha256") not in (None, sha):
            raise SetupError(f"deploying {name}: the function's CodeSha256 {final.get('CodeSha256')} is not the "
                             f"package's {sha}")
        done.append(Deployed(function=name, runtime=runtime, action=action, arn=str(final.get("FunctionArn", "")),
                             code_sha256=sha, code_size=len(zip_bytes), memory_mb=int(final.get("MemorySize", memory_mb)),
                             architecture=arch, lambda_runtime=manifest["lambda_runtime"],
                             seconds=round(time.monotonic() - began, 2)))
    return done
