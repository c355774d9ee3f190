"""Commands about the subjects and the systems beside a run: `functions` (build, package, deploy, list),
`lambda serve` (the local Lambda) and `grafana push`."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.common import JsonOpt, dump, err, out, say
from orchestrator.errors import FnbenchError, InputError, SetupError
from orchestrator.report import grafana, terminal
from orchestrator.run.spec import parse_span
from orchestrator.subjects import functions, lambda_deploy, lambda_package

functions_app = typer.Typer(help="The benchmark subjects in functions/: build them, list them.", no_args_is_help=True,
                            rich_markup_mode=None)
grafana_app = typer.Typer(help="Grafana: push the fnbench boards (grafana/dashboards/).", no_args_is_help=True,
                          rich_markup_mode=None)
lambda_app = typer.Typer(help="A local AWS Lambda (Invoke API + Runtime API) hosting functions/ on loopback.",
                         no_args_is_help=True, rich_markup_mode=None)


@lambda_app.command("serve")
def lambda_serve(
    functions: Annotated[str, typer.Option(help="runtimes to host, comma-separated; each is a function of that name ('none': start empty and take functions from `fnbench functions deploy --endpoint-url`)")] = "rust,go,python,node",
    port: Annotated[int, typer.Option(help="Invoke API port on 127.0.0.1 (0: any free one)")] = 9001,
    idle: Annotated[str, typer.Option(help="reap an instance idle this long (e.g. 5m, 30s)")] = "5m",
    memory: Annotated[int, typer.Option(help="MemorySize (MB) of every function")] = 128,
    timeout: Annotated[int, typer.Option(help="Timeout (s) of every function")] = 30,
    reserved: Annotated[str, typer.Option(help="reserved concurrency of each function: most instances; beyond: 429 ReservedFunctionConcurrentInvocationLimitExceeded ('none': no reservation, the functions share --account-concurrency)")] = "10",
    account_concurrency: Annotated[int, typer.Option("--account-concurrency", help="the account's concurrency limit; functions without a reservation share what reservations leave; beyond: 429 ConcurrentInvocationLimitExceeded (AWS's default: 1000)")] = 1000,
    scaling_rate: Annotated[int, typer.Option("--scaling-rate", help="new instances per function per 10 s, refilled continuously; beyond: 429 FunctionInvocationRateLimitExceeded (AWS: 1000)")] = 1000,
    region: Annotated[str, typer.Option(help="the region the functions' ARNs and AWS_REGION name")] = "us-east-1",
    no_cgroups: Annotated[bool, typer.Option("--no-cgroups", help="run instances uncapped (default: memory capped at Memory Size and CPU scaled to memory/1769 MB with cgroups where this machine allows; also FNBENCH_LAMBDA_CGROUPS=off)")] = False,
    code_storage_mb: Annotated[int, typer.Option("--code-storage-mb", help="most MB of unpacked code of all deployed functions together (each at most 250 MB, as on AWS); beyond: CodeStorageExceededException")] = 1024,
) -> None:
    """Serve the functions as AWS Lambda does, on loopback, until Ctrl-C (boto3: endpoint_url=http://127.0.0.1:PORT).

    Functions come from this machine's builds (--functions) and from `fnbench functions deploy --endpoint-url`.
    It runs uploaded code: every request must be SigV4-signed with the access key in its environment,
    FNBENCH_LAMBDA_ACCESS_KEY_ID and FNBENCH_LAMBDA_SECRET_ACCESS_KEY (else AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY); it does not start without one (exit 2)."""
    from lambda_emulator import auth
    from lambda_emulator import server as lambda_local

    try:
        credentials = auth.server_credentials()
    except auth.CredentialsMissing as exc:
        raise SetupError(str(exc)) from None
    if code_storage_mb < 1:
        raise SetupError(f"--code-storage-mb {code_storage_mb}: at least 1")
    from lambda_emulator.throttle import Limits

    reserved_n: int | None = None
    if reserved.strip().lower() != "none":
        try:
            reserved_n = int(reserved)
        except ValueError:
            raise SetupError(f"--reserved {reserved!r}: a whole number of instances (0 or more) or 'none'") from None
        if reserved_n < 0:
            raise SetupError(f"--reserved {reserved_n}: 0 or more ('none': no reservation)")
    for flag, value in (("--account-concurrency", account_concurrency), ("--scaling-rate", scaling_rate)):
        if value < 1:
            raise SetupError(f"{flag} {value}: at least 1")
    if reserved_n is not None and reserved_n > account_concurrency:
        raise SetupError(f"--reserved {reserved_n}: more than --account-concurrency {account_concurrency}")
    limits = Limits(account_concurrency=account_concurrency, scaling_per_10s=scaling_rate)
    runtimes = [r.strip() for r in functions.split(",") if r.strip() and r.strip() != "none"]
    try:
        lambda_local.run_cli(runtimes, credentials=credentials, port=port, idle_s=parse_span(idle, "--idle"),
                             memory_mb=memory, timeout_s=float(timeout), reserved=reserved_n, region=region,
                             announce=say, cgroups=not no_cgroups, code_storage_bytes=code_storage_mb * 1024 * 1024,
                             limits=limits)
    except FileNotFoundError as exc:
        raise SetupError(f"{exc}; build it with `fnbench functions build`") from None
    except OSError as exc:
        raise SetupError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None


@grafana_app.command("push")
def grafana_push(
    url: Annotated[str, typer.Option(envvar="FNBENCH_GRAFANA_URL", help="Grafana base URL, e.g. http://localhost:3000 [env FNBENCH_GRAFANA_URL]")],
    dashboards: Annotated[Path | None, typer.Option(help="folder of board JSON files [default: grafana/dashboards]")] = None,
    folder_uid: Annotated[str | None, typer.Option(help="Grafana folder uid to put the boards in")] = None,
) -> None:
    """Upload the boards with the token in FNBENCH_GRAFANA_TOKEN; exit 2 when Grafana is unreachable or refuses."""
    started = time.monotonic()
    urls = grafana.push(url, os.environ.get(grafana.TOKEN_ENV), grafana.load_dashboards(dashboards or grafana.DASHBOARDS),
                        folder_uid)
    for u in urls:
        say(f"pushed {u}")
    say(f"{len(urls)} board(s) pushed to {grafana.safe_url(url)} in {time.monotonic() - started:.1f}s")


@functions_app.command("build")
def functions_build(
    runtime: Annotated[str | None, typer.Argument(help="one runtime (see `fnbench functions list`); all when omitted")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no build tool output, only the table")] = False,
) -> None:
    """Build the functions (cargo --release, go build, mvn; node and python need nothing) and print sizes.

    The build tools' own progress lines are shown as they come, prefixed with the runtime and the
    seconds since its build began."""
    if runtime is not None and runtime not in functions.RUNTIMES:
        raise InputError(f"unknown runtime {runtime!r}; one of {', '.join(functions.RUNTIMES)}")
    started = time.monotonic()

    def show(rt: str, line: str) -> None:
        err.print(f"  {rt} {time.monotonic() - started:5.1f}s  {line[:150]}", highlight=False, markup=False,
                  soft_wrap=True)

    functions.build_progress = None if quiet else show
    built = []
    for rt in [runtime] if runtime else list(functions.RUNTIMES):
        say(f"building {rt} …")
        started = time.monotonic()
        built += functions.build(rt)
        say(f"{rt}: done in {time.monotonic() - started:.1f}s")
    out.print(terminal.functions_table(built, "built functions"))


@functions_app.command("package")
def functions_package(
    runtime: Annotated[str | None, typer.Argument(help="one runtime (default: rust, go, python, node, java)")] = None,
    lambda_zip: Annotated[bool, typer.Option("--lambda", help="AWS Lambda ZIP packages (the only kind so far)")] = False,
    out_dir: Annotated[Path | None, typer.Option("--out", help="where the packages go (default: build/lambda)")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Package built functions for deployment: one reproducible ZIP per runtime plus its runtime/handler."""
    if not lambda_zip:
        raise InputError("say which kind of package: --lambda")
    made = []
    for r in [runtime] if runtime else list(lambda_package.RUNTIMES):
        try:
            made.append(lambda_package.package(r, out_dir or lambda_package.DEFAULT_PACKAGE_DIR))
        except FileNotFoundError as exc:
            raise SetupError(f"{r}: {exc}; build it with `fnbench functions build {r}`") from None
        except ValueError as exc:
            raise InputError(str(exc)) from None
    if json_out:
        dump(made)
        return
    for m in made:
        out.print(f"{m['runtime']:7} {m['zip']}  {m['size_bytes']} bytes  {m['lambda_runtime']} {m['handler']} "
                  f"{','.join(m['architectures'])}", highlight=False)


@functions_app.command("deploy")
def functions_deploy(
    runtime: Annotated[list[str] | None, typer.Argument(metavar="RUNTIME", help="runtimes to deploy (default: rust, go, python, node, java)", show_default=False)] = None,
    region: Annotated[str, typer.Option(help="the AWS region the functions go to", show_default=False)] = "",
    role: Annotated[str, typer.Option(help="the execution role's ARN, arn:aws:iam::<account>:role/<name>", show_default=False)] = "",
    endpoint_url: Annotated[str | None, typer.Option("--endpoint-url", help="another Lambda endpoint: the local Lambda (`fnbench lambda serve`), e.g. http://127.0.0.1:9001")] = None,
    prefix: Annotated[str, typer.Option(help="function name = PREFIX + runtime")] = "fnbench-",
    memory: Annotated[int, typer.Option(help="Memory Size in MB (128-10240; a spec's memory_sizes sweeps it later)")] = 128,
    timeout: Annotated[str, typer.Option(help="the functions' timeout (1s-15m)")] = "30s",
    env: Annotated[list[str] | None, typer.Option("--env", help="KEY=VALUE environment variable of the functions (repeatable)")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="where the packages go (default: build/lambda)")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Create or update the functions on AWS Lambda (or the local Lambda) with boto3.

    Packages each runtime as `functions package --lambda` does, then creates `PREFIX<runtime>` or, when it
    exists, updates its code (only when the package's SHA-256 differs) and configuration, waiting until
    each change has landed. Credentials come from the standard AWS chain and are never printed.

    Real AWS:  fnbench functions deploy --region eu-west-1 --role arn:aws:iam::123456789012:role/fnbench-lambda
    Here:      fnbench lambda serve --port 9001 --functions none &
               fnbench functions deploy --endpoint-url http://127.0.0.1:9001 --region us-east-1 --role arn:aws:iam::000000000000:role/fnbench"""
    if not region or not role:
        raise InputError(" and ".join(f"--{n}" for n, v in (("region", region), ("role", role)) if not v)
                         + " needed: where the functions go and the IAM role they run as")
    variables = {}
    for item in env or []:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", key):
            raise InputError(f"--env {item!r}: KEY=VALUE with KEY letters, digits and _ (starting with a letter)")
        variables[key] = value
    runtimes = list(dict.fromkeys(runtime)) if runtime else list(lambda_package.RUNTIMES)
    try:
        done = lambda_deploy.deploy(runtimes, region=region, role=role, endpoint_url=endpoint_url, prefix=prefix,
                                    memory_mb=memory, timeout_s=parse_span(timeout, "--timeout"), environment=variables,
                                    out_dir=out_dir or lambda_package.DEFAULT_PACKAGE_DIR, say=say)
    except ValueError as exc:  # a package whose layout Lambda would refuse
        raise InputError(str(exc)) from None
    if json_out:
        dump([d.to_dict() for d in done])
        return
    out.print(terminal.deployed_table(done))


@functions_app.command("list")
def functions_list(json_out: JsonOpt = False) -> None:
    """Show runtimes, workloads and the size of each built artefact."""
    found, missing = [], []
    for rt in functions.RUNTIMES:
        try:
            found.append(functions.artifact_for(rt))
        except FileNotFoundError:
            missing.append(rt)
        except FnbenchError as exc:
            missing.append(f"{rt} ({exc})")
    if json_out:
        dump({"functions": [{"runtime": a.runtime, "path": str(a.path), "size_bytes": a.size_bytes,
                             "command": list(a.command)} for a in found],
              "workloads": list(functions.WORKLOADS), "not_built": missing})
        return
    out.print(terminal.functions_table(found, "functions"))
    out.print("workloads: " + ", ".join(functions.WORKLOADS) + "  (functions/CONTRACT.md)")
    if missing:
        out.print("not built: " + ", ".join(missing) + " — run `fnbench functions build`")


GROUPS = {"functions": functions_app, "grafana": grafana_app, "lambda": lambda_app}
