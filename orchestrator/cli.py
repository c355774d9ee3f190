"""The `fnbench` command line.  Each subcommand parses its arguments and calls one function.

Exit codes: 0 ok · 1 an SLO (or calibration tolerance) failed · 2 bad input or setup error ·
130 interrupted (partial results were still written).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestrator import plan as planner
from orchestrator import runner, spec
from orchestrator.collect import Collector
from orchestrator.dispatch.local import LocalDispatcher, default_workers
from orchestrator.errors import FnbenchError, InputError, SetupError, SpecError
from orchestrator.report import terminal
from orchestrator.result import RunResult
from orchestrator.results import read_intervals
from workers import keys

BROKER_ENV = keys.BROKER_ENV
BROKER_HELP = ("redis://… broker: run the shards on `fnbench worker`s, one queue per region; a password here "
               f"shows in `ps`: prefer {BROKER_ENV} or --broker-file")
BROKER_FILE_ENV = "FNBENCH_BROKER_FILE"
BrokerFileOpt = Annotated[Path | None, typer.Option(
    "--broker-file", envvar=BROKER_FILE_ENV,
    help="read the redis://… URL (with its password) from this file, so it is not visible in `ps`; never printed")]


def _plain_metavars() -> None:
    """typer 0.29 writes a required argument as {SPEC} and a value as <str>; the plain forms (SPEC,
    TEXT, N, PATH) read as written.  Only how help is printed changes; typer is pinned."""
    from typer import core

    names = {"str": "TEXT", "int": "N", "int range": "N", "float": "NUMBER", "float range": "NUMBER",
             "path": "PATH", "file": "PATH", "directory": "DIR", "bool": "BOOLEAN"}
    shown = core._TyperParameter.display_type

    def display_type(self: Any, ctx: Any) -> str:
        label = str(shown(self, ctx)).removeprefix("<").removesuffix(">")
        return names.get(label, label.upper())

    def usage(self: Any) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return str(name) + ("..." if self.nargs != 1 else "")

    if hasattr(core, "_TyperParameter") and hasattr(core.TyperArgument, "_usage_display_name"):
        core._TyperParameter.display_type = display_type  # type: ignore[method-assign]
        core.TyperArgument._usage_display_name = usage  # type: ignore[method-assign]


_plain_metavars()
app = typer.Typer(
    name="fnbench",
    help=(
        "Open-model load generator for comparing serverless functions (Rust vs Go, Node, Python).\n\n"
        "Start with `fnbench calibrate` (check the numbers on this machine), then "
        "`fnbench run examples/loopback.yaml`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: rich markup would eat "[default: …]" in help texts and show <bool> metavars.
    rich_markup_mode=None,
)
# Pipes and CI get a wide console so result tables are not folded to 80 columns.
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
out = Console(width=None if sys.stdout.isatty() else 160)


def _fail(exc: FnbenchError) -> typer.Exit:
    if isinstance(exc, SpecError):
        err.print(f"[red]invalid spec[/] {exc.source}: {len(exc.problems)} problem(s)", highlight=False)
        for p in exc.problems:
            err.print(f"  - {p}", highlight=False, markup=False)
    else:
        err.print(f"[red]error[/]: {exc}", highlight=False)
    return typer.Exit(exc.exit_code)


def _read_spec(path: Path) -> tuple[spec.Benchmark, str]:
    text = spec.read_text(path)  # bounded size, UTF-8, or a SpecError naming the file
    return spec.load_text(text, str(path)), text


def _runnable_spec(path: Path) -> tuple[spec.Benchmark, str]:
    """A spec that a worker here would run: valid, and every target inside FNBENCH_ALLOWED_TARGETS."""
    b, text = _read_spec(path)
    problems = spec.allow_list_problems(b)
    if problems:
        raise SpecError(str(path), problems)
    return b, text


@app.command()
def validate(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="benchmark YAML")],
    json_out: Annotated[bool, typer.Option("--json", help="print ok with the problems or a summary as JSON")] = False,
) -> None:
    """Check a spec; lists every problem with its YAML path (exit 2) or prints a summary.

    Targets must be inside FNBENCH_ALLOWED_TARGETS (default loopback), as the workers will require."""
    try:
        b, _ = _runnable_spec(spec_path)
        shards = planner.split(b, "validate", 0.0)
    except FnbenchError as exc:
        if json_out:
            problems = exc.problems if isinstance(exc, SpecError) else [str(exc)]
            sys.stdout.write(orjson.dumps({"spec": str(spec_path), "ok": False, "problems": problems}).decode() + "\n")
        raise _fail(exc) from None
    from orchestrator import sweep

    steps = sweep.sizes(b)
    total = planner.total_length(b) * max(1, len(steps))
    if json_out:
        summary = {"spec": str(spec_path), "ok": True, "name": b.name, "targets": len(b.targets),
                   "regions": list(b.regions), "total_s": total, "shards_at_one_worker": len(shards) * max(1, len(steps))}
        if steps:
            summary["memory_sizes_mb"] = steps
        sys.stdout.write(orjson.dumps(summary).decode() + "\n")
        return
    sweeping = f", a memory sweep in {len(steps)} steps ({', '.join(map(str, steps))} MB)" if steps else ""
    out.print(
        f"{spec_path}: ok — {len(b.targets)} target(s) × {len(b.regions)} region(s){sweeping}, "
        f"{total:.0f}s of load, {len(shards) * max(1, len(steps))} shard(s) at one worker"
    )


@app.command()
def plan(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC")],
    workers: Annotated[int, typer.Option(min=1, max=4096, help="worker processes the rate is split over")] = 1,
) -> None:
    """Show the shards a spec splits into (rates as exact fractions)."""
    from orchestrator import sweep

    try:
        b, _ = _read_spec(spec_path)
        steps = [(f"memory sweep step {n}/{len(sweep.sizes(b))}: {m} MB (set by the control plane first; "
                  "start times are from the step's start)", sweep.step_spec(b, m))
                 for n, m in enumerate(sweep.sizes(b), 1)] or [("", b)]
        plans = [(title, planner.split(step, "plan", 0.0, min_parts=workers)) for title, step in steps]
    except FnbenchError as exc:
        raise _fail(exc) from None
    for title, shards in plans:
        table = Table("shard", "start +s", "duration s", "arrival", "max in flight", title=title or None)
        for s in shards:
            arrival = ", ".join(f"{k}={v}" for k, v in s.arrival.items() if k != "kind")
            table.add_row(s.shard_id, f"{s.start_at:.1f}", f"{s.duration_s:.1f}", f"{s.arrival['kind']} {arrival}", str(s.max_in_flight))
        out.print(table)


@app.command()
def run(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="benchmark YAML (see examples/)")],
    workers: Annotated[int, typer.Option("--workers", "-w", min=0, max=4096, show_default=False, help="local worker processes [default: one per core]; with --broker, processes per region the rate is split over [default: all online]")] = 0,
    results: Annotated[Path, typer.Option(help="results root; the run goes to RESULTS/<run_id>/")] = Path("results"),
    metrics_port: Annotated[int, typer.Option(min=0, max=65535, help="serve Prometheus metrics here during the run; 0 = off")] = 9464,
    json_out: Annotated[bool, typer.Option("--json", help="print result.json to stdout instead of tables")] = False,
    broker: Annotated[str | None, typer.Option(envvar=BROKER_ENV, help=BROKER_HELP)] = None,
    broker_file: BrokerFileOpt = None,
    retention: Annotated[str, typer.Option(help="with --broker: how long the run's records stay in Redis after its end (e.g. 3d, 12h); `fnbench gc` removes expired runs")] = "3d",
    run_id: Annotated[str | None, typer.Option("--run-id", help="name the run (letters, digits, . _ -) instead of NAME-DATE-TIME-XXXX")] = None,
    no_html: Annotated[bool, typer.Option("--no-html", help="do not write results/<run>/report.html at the end")] = False,
) -> None:
    """Run a benchmark on this machine (or on workers per region with --broker) and report.

    Exit 0 ok, 1 an SLO failed, 2 bad input or a setup/worker error, 3 load was lost (shards expired or
    abandoned), 130 interrupted; the partial result is written in every case."""
    try:
        broker = _broker(broker, broker_file)
        retention_s = _duration(retention, "--retention")
        if run_id is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", run_id):
            raise InputError(f"--run-id {run_id!r}: use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit")
        b, text = _runnable_spec(spec_path)
        if broker:
            from orchestrator.dispatch.celery import CeleryDispatcher
            from workers import auth

            auth.load_key()  # before anything is written: workers run only tasks signed with it
            dispatcher: runner.Dispatcher | None = CeleryDispatcher(broker, processes=workers or None, warn=_warn,
                                                                    retention_s=retention_s)
            outcome = _run(b, text, lambda: CeleryDispatcher(broker, processes=workers or None, warn=_warn,
                                                             retention_s=retention_s),
                           dispatcher, results, run_id, 0, not no_html)
        else:
            outcome = _run(b, text, lambda: LocalDispatcher(workers or None), None, results, run_id,
                           metrics_port, not no_html)
    except FnbenchError as exc:
        raise _fail(exc) from None
    _record_history(outcome, broker, results, spec_path)  # the run's summary and intervals under its spec name
    _show(outcome.result, json_out)
    for e in outcome.result.errors:
        err.print(f"[red]error[/]: {escape(e)}", highlight=False)
    err.print(f"results: {outcome.folder}/result.json")
    if outcome.report is not None:
        err.print(f"report: {outcome.report}", highlight=False)
    raise typer.Exit(outcome.exit_code)


def _run(b: spec.Benchmark, text: str, make: Any, first: Any, results: Path, run_id: str | None, metrics_port: int,
         html: bool) -> runner.RunOutcome:
    """One run, or a memory sweep's runs (orchestrator/sweep.py) one after another."""
    from orchestrator import sweep

    if sweep.sizes(b):
        return sweep.run(b, text, make, results, run_id=run_id, metrics_port=metrics_port, console=err, html=html)
    return runner.run(b, text, first or make(), results, run_id=run_id, metrics_port=metrics_port, console=err,
                      html=html)


@app.command()
def report(
    paths: Annotated[list[Path], typer.Argument(metavar="RUN...", help="results/<run_id> folder (or a run id under results/) or its intervals.jsonl; with --broker, a RUN id; several: an overlay with --html")],
    json_out: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    broker: Annotated[str | None, typer.Option(envvar=BROKER_ENV, help="read the run's intervals from this broker's store")] = None,
    broker_file: BrokerFileOpt = None,
    html: Annotated[bool, typer.Option("--html", help="write a self-contained HTML report (charts; several runs overlaid) to results/<run>/report.html, or to a last argument ending in .html")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="print a compact Markdown table (for a pull-request comment)")] = False,
) -> None:
    """Re-render a result from its recorded intervals (the intervals are the source of truth)."""
    out_file = paths.pop() if html and len(paths) > 1 and paths[-1].suffix.lower() in (".html", ".htm") else None
    try:
        broker = _broker(broker, broker_file)
    except FnbenchError as exc:
        raise _fail(exc) from None
    runs = []
    try:
        for path in paths:
            path = path if broker or path.exists() or not (Path("results") / path).is_dir() else Path("results") / path
            result, code = _report_from_store(broker, str(path)) if broker else _report_from_folder(path)
            runs.append((path, result, code))
        if html or markdown:
            from orchestrator.report import html as html_report
            from orchestrator.report import markdown as md_report

            data = [_store_run_data(broker, result) if broker else html_report.load_run(path, result)
                    for path, result, _ in runs]
            if markdown:
                sys.stdout.write(md_report.render(data))
            if html:
                written = html_report.write(data, out_file)
    except FnbenchError as exc:
        raise _fail(exc) from None
    if json_out and len(runs) > 1:
        sys.stdout.write(orjson.dumps([r.to_dict() for _, r, _ in runs], option=orjson.OPT_INDENT_2).decode() + "\n")
    elif json_out or not (html or markdown):
        for _, result, _ in runs:
            _show(result, json_out)
    if html:
        err.print(f"report: {written}", highlight=False)
    raise typer.Exit(max(code for _, _, code in runs))


_SAVED_FIELDS = ("name", "start_at", "shards", "workers", "broker", "processes", "regions", "start_skew_s",
                 "dispatch_s", "redispatched", "state", "interrupted", "incomplete")


def _report_from_folder(path: Path) -> tuple[RunResult, int]:
    """The result from the recorded intervals; what only the run knew (its start, workers, errors,
    gaps the dispatcher saw) comes from its result.json, so both are the same document."""
    folder = path.parent if path.is_file() else path
    intervals_file = path if path.is_file() else path / "intervals.jsonl"
    if not intervals_file.exists():
        raise InputError(f"{intervals_file}: not found; give a results/<run_id> folder or an intervals.jsonl")
    intervals = read_intervals(intervals_file)
    spec_file = folder / "spec.yaml"
    b = spec.load(spec_file) if spec_file.exists() else None
    saved_file = folder / "result.json"
    saved = RunResult.load(saved_file) if saved_file.exists() else None
    from orchestrator import sweep

    if b is not None and sweep.sizes(b):  # a memory sweep: every step's intervals, one result
        saved = RunResult.load(folder / "result.json") if (folder / "result.json").exists() else None
        return sweep.conclude(b, folder.name, intervals, saved.gaps if saved else (),
                              list(saved.errors) if saved else [f"{folder}/result.json: missing; the sweep did not finish"],
                              name=b.name, interrupted=saved.interrupted if saved else False,
                              incomplete=saved is None or saved.incomplete, start_at=saved.start_at if saved else None)
    collector = Collector(intervals[0].run_id if intervals else folder.name, planner.phase_seconds(b) if b else None)
    collector.add_all(intervals)
    if saved is None:
        # A run cut short (killed orchestrator, full disk) never wrote its result: say so.
        return runner.conclude(b.slos if b else [], collector, [], [
            f"{saved_file}: missing; the run did not finish (these are the intervals it recorded)"],
            name=b.name if b else None, incomplete=True)
    fields = {name: getattr(saved, name) for name in _SAVED_FIELDS}
    seen = {(g.shard, g.attempt, g.reason) for g in collector.interval_gaps}
    gaps = [g for g in saved.gaps if (g.shard, g.attempt, g.reason) not in seen]
    return runner.conclude(b.slos if b else [], collector, gaps, list(saved.errors), **fields)


def _store_run_data(broker: str, result: RunResult) -> Any:
    """A distributed run's intervals and spec from the store, for the HTML report."""
    from orchestrator.dispatch.celery import CeleryDispatcher
    from orchestrator.report.html import RunData

    dispatcher = CeleryDispatcher(broker)
    meta = dispatcher.attach(result.run_id)
    intervals: list[Any] = []
    dispatcher.snapshot(intervals.append)
    return RunData(result, intervals, meta.get("spec"), [], Path("results") / result.run_id)


def _report_from_store(broker: str, run_id: str) -> tuple[RunResult, int]:
    """The result of a distributed run from the store alone: same intervals, same gaps, same result."""
    from orchestrator.dispatch.celery import CeleryDispatcher

    dispatcher = CeleryDispatcher(broker)
    meta = dispatcher.attach(run_id)
    b = spec.load_text(meta["spec"], f"{run_id}/spec.yaml") if meta.get("spec") else None
    collector = Collector(run_id, meta.get("phase_seconds"))
    for rollup in dispatcher.backlog():  # compacted intervals first, then what is still in the stream
        collector.add_rollup(rollup)
    dispatcher.snapshot(collector.add)
    return runner.conclude(b.slos if b else [], collector, dispatcher.gaps(), dispatcher.errors(),
                           name=meta.get("name"), interrupted=meta.get("state") == "stopped", **dispatcher.fields())


@app.command()
def calibrate(
    rps: Annotated[float, typer.Option(help="request rate to drive the synthetic target at")] = 400.0,
    duration: Annotated[float, typer.Option(help="seconds")] = 15.0,
    median_ms: Annotated[float, typer.Option(help="median of the lognormal delay")] = 50.0,
    sigma: Annotated[float, typer.Option(help="sigma of the lognormal delay (0: constant)")] = 0.5,
    stall_every: Annotated[float, typer.Option(help="stall all responses every N seconds (0: never)")] = 0.0,
    stall_ms: Annotated[float, typer.Option(help="length of each stall")] = 0.0,
    tolerance: Annotated[float, typer.Option(help="max |error| in percent before exiting 1")] = 3.0,
    workers: Annotated[int, typer.Option(min=1, max=4096, help="worker processes")] = 1,
    results: Annotated[Path, typer.Option(help="results root")] = Path("results"),
    json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Measure a synthetic target whose latency distribution is known; print measured vs true percentiles."""
    from orchestrator.calibrate import SyntheticConfig
    from orchestrator.calibrate import calibrate as do_calibrate

    problems = [m for ok, m in (
        (rps > 0, "--rps must be > 0"), (duration > 0, "--duration must be > 0"),
        (median_ms > 0, "--median-ms must be > 0"), (sigma >= 0, "--sigma must be >= 0"),
        (stall_every >= 0 and stall_ms >= 0, "--stall-every and --stall-ms must be >= 0"),
        (stall_every == 0 or stall_ms < stall_every * 1000, "--stall-ms must be shorter than --stall-every"),
    ) if not ok]
    if problems:
        raise _fail(InputError("; ".join(problems)))
    cfg = SyntheticConfig(median_ms=median_ms, sigma=sigma, stall_every_s=stall_every, stall_ms=stall_ms)
    try:
        rep = do_calibrate(cfg, rps=rps, duration_s=duration, workers=workers, results_root=results)
    except FnbenchError as exc:
        raise _fail(exc) from None
    worst = max((abs(s["error_pct"]) for s in rep["stats"].values() if s["error_pct"] is not None), default=None)
    rep["tolerance_pct"] = tolerance
    rep["pass"] = worst is not None and worst <= tolerance
    if json_out:
        sys.stdout.write(orjson.dumps(rep, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        table = Table("percentile", "measured ms", "truth ms", "error %", "lognormal model ms",
                      title=f"calibration: {rps:g} req/s for {duration:g}s, lognormal median {median_ms:g} ms σ {sigma:g}")
        model = rep["model"] or {}
        for stat, s in rep["stats"].items():
            table.add_row(stat, str(s["measured_ms"]), str(s["truth_ms"]),
                          "-" if s["error_pct"] is None else f"{s['error_pct']:+.2f}",
                          f"{model[stat]:.3f}" if stat in model else "-")
        out.print(table)
        req = rep["requests"]
        out.print(f"requests: {req['completed']} measured of {req['intended']} intended, {req['served']} served; outcomes {req['outcomes']}")
        out.print(("[green]PASS[/]" if rep["pass"] else "[red]FAIL[/]") + f" worst error {worst}% (tolerance {tolerance}%)")
    raise typer.Exit(0 if rep["pass"] else 1)


@app.command()
def synthetic(
    port: Annotated[int, typer.Option(min=0, max=65535, help="loopback port to listen on")] = 18080,
    median_ms: Annotated[float, typer.Option(help="median of the lognormal delay")] = 5.0,
    sigma: Annotated[float, typer.Option(help="sigma of the lognormal delay (0: constant)")] = 0.5,
    stall_every: Annotated[float, typer.Option(help="stall all responses every N seconds (0: never)")] = 0.0,
    stall_ms: Annotated[float, typer.Option(help="length of each stall")] = 0.0,
) -> None:
    """Serve the synthetic target (known latency distribution) on 127.0.0.1 until Ctrl-C.

    Pair it with `fnbench run examples/loopback.yaml` to try specs, SLOs and the live view.
    """
    from orchestrator.calibrate import SyntheticConfig, serve_forever

    cfg = SyntheticConfig(median_ms=median_ms, sigma=sigma, stall_every_s=stall_every, stall_ms=stall_ms)
    try:
        serve_forever(cfg, port, lambda p: err.print(
            f"synthetic target on http://127.0.0.1:{p}/ (lognormal median {median_ms:g} ms, σ {sigma:g}); Ctrl-C to stop"))
    except OSError as exc:
        raise _fail(SetupError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}")) from None
    except KeyboardInterrupt:
        pass


functions_app = typer.Typer(help="The benchmark subjects in functions/: build them, list them.", no_args_is_help=True,
                            rich_markup_mode=None)
app.add_typer(functions_app, name="functions")
grafana_app = typer.Typer(help="Grafana: push the fnbench boards (grafana/dashboards/).", no_args_is_help=True,
                          rich_markup_mode=None)
app.add_typer(grafana_app, name="grafana")
lambda_app = typer.Typer(help="A local AWS Lambda (Invoke API + Runtime API) hosting functions/ on loopback.",
                         no_args_is_help=True, rich_markup_mode=None)
app.add_typer(lambda_app, name="lambda")


@lambda_app.command("serve")
def lambda_serve(
    functions: Annotated[str, typer.Option(help="runtimes to host, comma-separated; each is a function of that name ('none': start empty and take functions from `fnbench functions deploy --endpoint-url`)")] = "rust,go,python,node",
    port: Annotated[int, typer.Option(help="Invoke API port on 127.0.0.1 (0: any free one)")] = 9001,
    idle: Annotated[str, typer.Option(help="reap an instance idle this long (e.g. 5m, 30s)")] = "5m",
    memory: Annotated[int, typer.Option(help="MemorySize (MB) of every function")] = 128,
    timeout: Annotated[int, typer.Option(help="Timeout (s) of every function")] = 30,
    reserved: Annotated[int, typer.Option(help="reserved concurrency: most instances per function; beyond: 429")] = 10,
    region: Annotated[str, typer.Option(help="the region the functions' ARNs and AWS_REGION name")] = "us-east-1",
    no_cgroups: Annotated[bool, typer.Option("--no-cgroups", help="run instances uncapped (default: memory capped at Memory Size and CPU scaled to memory/1769 MB with cgroups where this machine allows; also FNBENCH_LAMBDA_CGROUPS=off)")] = False,
) -> None:
    """Serve the functions as AWS Lambda does, on loopback, until Ctrl-C (boto3: endpoint_url=http://127.0.0.1:PORT).

    Functions come from this machine's builds (--functions) and from `fnbench functions deploy --endpoint-url`."""
    from orchestrator import lambda_local

    runtimes = [r.strip() for r in functions.split(",") if r.strip() and r.strip() != "none"]
    try:
        lambda_local.run_cli(runtimes, port=port, idle_s=_duration(idle, "--idle"), memory_mb=memory,
                             timeout_s=float(timeout), reserved=reserved, region=region,
                             announce=lambda line: err.print(line, highlight=False), cgroups=not no_cgroups)
    except FileNotFoundError as exc:
        raise _fail(SetupError(f"{exc}; build it with `fnbench functions build`")) from None
    except OSError as exc:
        raise _fail(SetupError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}")) from None


@grafana_app.command("push")
def grafana_push(
    url: Annotated[str, typer.Option(envvar="FNBENCH_GRAFANA_URL", help="Grafana base URL, e.g. http://localhost:3000 [env FNBENCH_GRAFANA_URL]")],
    dashboards: Annotated[Path | None, typer.Option(help="folder of board JSON files [default: grafana/dashboards]")] = None,
    folder_uid: Annotated[str | None, typer.Option(help="Grafana folder uid to put the boards in")] = None,
) -> None:
    """Upload the boards with the token in FNBENCH_GRAFANA_TOKEN; exit 2 when Grafana is unreachable or refuses."""
    import os
    import time

    from orchestrator import grafana

    started = time.monotonic()
    try:
        urls = grafana.push(url, os.environ.get(grafana.TOKEN_ENV), grafana.load_dashboards(dashboards or grafana.DASHBOARDS),
                            folder_uid)
    except FnbenchError as exc:
        raise _fail(exc) from None
    for u in urls:
        err.print(f"pushed {u}", highlight=False)
    err.print(f"{len(urls)} board(s) pushed to {grafana.safe_url(url)} in {time.monotonic() - started:.1f}s", highlight=False)


def _functions_table(artifacts: list[Any], title: str) -> Table:
    table = Table("runtime", "artefact", "size", "build s", "start command", title=title)
    for a in artifacts:
        table.add_row(a.runtime, str(a.path), f"{a.size_bytes / 1e6:.2f} MB" if a.size_bytes >= 1e5 else f"{a.size_bytes / 1e3:.1f} kB",
                      f"{a.build_seconds:.1f}" if a.build_seconds else "-", " ".join(Path(c).name if i == 0 else c for i, c in enumerate(a.command)))
    return table


@functions_app.command("build")
def functions_build(
    runtime: Annotated[str | None, typer.Argument(help="one runtime (see `fnbench functions list`); all when omitted")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no build tool output, only the table")] = False,
) -> None:
    """Build the functions (cargo --release, go build, mvn; node and python need nothing) and print sizes.

    The build tools' own progress lines are shown as they come, prefixed with the runtime and the
    seconds since its build began."""
    import time

    from orchestrator import functions

    if runtime is not None and runtime not in functions.RUNTIMES:
        raise _fail(InputError(f"unknown runtime {runtime!r}; one of {', '.join(functions.RUNTIMES)}"))
    started = time.monotonic()

    def show(rt: str, line: str) -> None:
        err.print(f"  {rt} {time.monotonic() - started:5.1f}s  {line[:150]}", highlight=False, markup=False,
                  soft_wrap=True)

    functions.build_progress = None if quiet else show
    built = []
    for rt in [runtime] if runtime else list(functions.RUNTIMES):
        err.print(f"building {rt} …", highlight=False)
        started = time.monotonic()
        try:
            built += functions.build(rt)
        except FnbenchError as exc:
            raise _fail(exc) from None
        err.print(f"{rt}: done in {time.monotonic() - started:.1f}s", highlight=False)
    out.print(_functions_table(built, "built functions"))


@functions_app.command("package")
def functions_package(
    runtime: Annotated[str | None, typer.Argument(help="one runtime (default: rust, go, python, node, java)")] = None,
    lambda_zip: Annotated[bool, typer.Option("--lambda", help="AWS Lambda ZIP packages (the only kind so far)")] = False,
    out_dir: Annotated[Path | None, typer.Option("--out", help="where the packages go (default: build/lambda)")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Package built functions for deployment: one reproducible ZIP per runtime plus its runtime/handler."""
    from orchestrator import lambda_package

    if not lambda_zip:
        raise _fail(InputError("say which kind of package: --lambda"))
    runtimes = [runtime] if runtime else list(lambda_package.RUNTIMES)
    made = []
    for r in runtimes:
        try:
            made.append(lambda_package.package(r, out_dir or lambda_package.DEFAULT_PACKAGE_DIR))
        except FileNotFoundError as exc:
            raise _fail(SetupError(f"{r}: {exc}; build it with `fnbench functions build {r}`")) from None
        except ValueError as exc:
            raise _fail(InputError(str(exc))) from None
    if json_out:
        sys.stdout.write(orjson.dumps(made, option=orjson.OPT_INDENT_2).decode() + "\n")
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
    json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Create or update the functions on AWS Lambda (or the local Lambda) with boto3.

    Packages each runtime as `functions package --lambda` does, then creates `PREFIX<runtime>` or, when it
    exists, updates its code (only when the package's SHA-256 differs) and configuration, waiting until
    each change has landed. Credentials come from the standard AWS chain and are never printed.

    Real AWS:  fnbench functions deploy --region eu-west-1 --role arn:aws:iam::123456789012:role/fnbench-lambda
    Here:      fnbench lambda serve --port 9001 --functions none &
               fnbench functions deploy --endpoint-url http://127.0.0.1:9001 --region us-east-1 --role arn:aws:iam::000000000000:role/fnbench"""
    from orchestrator import lambda_deploy, lambda_package

    try:
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
        done = lambda_deploy.deploy(runtimes, region=region, role=role, endpoint_url=endpoint_url, prefix=prefix,
                                    memory_mb=memory, timeout_s=_duration(timeout, "--timeout"), environment=variables,
                                    out_dir=out_dir or lambda_package.DEFAULT_PACKAGE_DIR,
                                    say=lambda line: err.print(line, highlight=False))
    except FnbenchError as exc:
        raise _fail(exc) from None
    except ValueError as exc:  # a package whose layout Lambda would refuse
        raise _fail(InputError(str(exc))) from None
    if json_out:
        sys.stdout.write(orjson.dumps([d.to_dict() for d in done], option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    table = Table("function", "action", "Lambda runtime", "arch", "MB", "code", "SHA-256", "s", "ARN", title="deployed")
    for d in done:
        table.add_row(d.function, d.action, d.lambda_runtime, d.architecture, str(d.memory_mb), f"{d.code_size:,} B",
                      d.code_sha256[:12] + "…", f"{d.seconds:.1f}", d.arn)
    out.print(table)


@functions_app.command("list")
def functions_list(
    json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Show runtimes, workloads and the size of each built artefact."""
    from orchestrator import functions

    found, missing = [], []
    for rt in functions.RUNTIMES:
        try:
            found.append(functions.artifact_for(rt))
        except FileNotFoundError:
            missing.append(rt)
        except FnbenchError as exc:
            missing.append(f"{rt} ({exc})")
    if json_out:
        listing = {"functions": [{"runtime": a.runtime, "path": str(a.path), "size_bytes": a.size_bytes,
                                  "command": list(a.command)} for a in found],
                   "workloads": list(functions.WORKLOADS), "not_built": missing}
        sys.stdout.write(orjson.dumps(listing, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    out.print(_functions_table(found, "functions"))
    out.print("workloads: " + ", ".join(functions.WORKLOADS) + "  (functions/CONTRACT.md)")
    if missing:
        out.print("not built: " + ", ".join(missing) + " — run `fnbench functions build`")


def _broker(broker: str | None, broker_file: Path | None) -> str | None:
    from workers.auth import broker_from

    url = broker_from(broker, broker_file)
    if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
        scheme = url.split("://", 1)[0] if "://" in url else "(none)"
        raise InputError(f"--broker: the URL scheme must be redis://, rediss:// (TLS) or unix://, got {scheme}")
    return url


def _require_broker(broker: str | None, broker_file: Path | None = None) -> str:
    try:
        broker = _broker(broker, broker_file)
    except FnbenchError as exc:
        raise _fail(exc) from None
    if not broker:
        raise _fail(InputError(f"give --broker redis://HOST:PORT/DB (or set {BROKER_ENV}, or put the URL in a file "
                               f"named by --broker-file/{BROKER_FILE_ENV})"))
    return broker


@app.command()
def worker(
    region: Annotated[str, typer.Option(help="the region whose queue (fnbench.REGION) this worker consumes")],
    broker: Annotated[str | None, typer.Option(envvar=BROKER_ENV, help="redis://… broker and store")] = None,
    broker_file: BrokerFileOpt = None,
    concurrency: Annotated[int, typer.Option(min=0, max=4096, show_default=False, help="worker processes, one shard each [default: one per core]")] = 0,
    metrics_port: Annotated[int, typer.Option(min=0, max=65535, help="serve this host's Prometheus metrics here; 0 = off")] = 9464,
    loglevel: Annotated[str, typer.Option(help="Celery log level")] = "WARNING",
) -> None:
    """Start a Celery worker for one region (prefork; one async generator per process).

    It runs only tasks signed with the task key (FNBENCH_TASK_KEY or FNBENCH_TASK_KEY_FILE, see
    `fnbench keygen`) and only loads hosts in FNBENCH_ALLOWED_TARGETS (default loopback), at most
    FNBENCH_MAX_RPS per process."""
    from workers.app import start_worker

    url = _require_broker(broker, broker_file)
    try:
        start_worker(region, keys.queue(region), url, concurrency or default_workers(), metrics_port,
                     keys.WORKERS, loglevel)
    except FnbenchError as exc:
        raise _fail(exc) from None


@app.command()
def keygen(
    file: Annotated[Path | None, typer.Option("--file", help="where to write it [default: FNBENCH_TASK_KEY_FILE or ~/.config/fnbench/task.key]")] = None,
    force: Annotated[bool, typer.Option(help="replace an existing key (every worker then needs the new one)")] = False,
) -> None:
    """Write a random task key (mode 0600): the orchestrator signs tasks with it, workers run only signed tasks."""
    from workers import auth

    try:
        path = auth.write_key(file or auth.key_file(), force=force)
    except FnbenchError as exc:
        raise _fail(exc) from None
    err.print(f"task key written to {path} (mode 0600).\n"
              f"Give the same key to the orchestrator and every `fnbench worker`: copy this file to the same path "
              f"on each host (or point {auth.KEY_FILE_ENV} at it), or store it in your secret manager and set "
              f"{auth.KEY_ENV}; on Kubernetes: kubectl -n fnbench create secret generic fnbench-task-key "
              f"--from-file=key={path}", highlight=False, markup=False)


@app.command()
def status(
    run_id: Annotated[str | None, typer.Argument(metavar="RUN", help="one run; recent runs when omitted")] = None,
    broker: Annotated[str | None, typer.Option(envvar=BROKER_ENV, help="redis://… broker and store")] = None,
    broker_file: BrokerFileOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Runs and their shards by state, workers online per region, queue depths."""
    from orchestrator.store import Store

    try:
        st = Store(_require_broker(broker, broker_file)).status(run_id)
    except FnbenchError as exc:
        raise _fail(exc) from None
    if json_out:
        sys.stdout.write(orjson.dumps(st, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    regions = Table("region", "workers", "processes", "queued tasks", title="regions")
    for name, r in st["regions"].items():
        regions.add_row(name, str(r["workers"]), str(r["processes"]), str(r["queue_depth"]))
    out.print(regions)
    runs = Table("run", "state", "shards by state", title="runs")
    for r in st["runs"]:
        runs.add_row(r["run_id"], str(r["state"]), ", ".join(f"{k} {v}" for k, v in sorted(r["shards"].items())))
    out.print(runs)


@app.command()
def watch(
    run_id: Annotated[str, typer.Argument(metavar="RUN")],
    broker: Annotated[str | None, typer.Option(envvar=BROKER_ENV, help="redis://… broker and store")] = None,
    broker_file: BrokerFileOpt = None,
    results: Annotated[Path, typer.Option(help="results root; the run goes to RESULTS/<run_id>/")] = Path("results"),
    json_out: Annotated[bool, typer.Option("--json", help="print result.json to stdout instead of tables")] = False,
) -> None:
    """Attach the live view to a distributed run and supervise it to its end (e.g. after its orchestrator died)."""
    from orchestrator.dispatch.celery import CeleryDispatcher
    from workers import auth

    try:
        auth.load_key()  # a re-dispatch must be signed: say now, not at the first lost shard
        outcome = runner.attach(CeleryDispatcher(_require_broker(broker, broker_file), warn=_warn), run_id, results, err)
    except FnbenchError as exc:
        raise _fail(exc) from None
    _show(outcome.result, json_out)
    err.print(f"results: {outcome.folder}/result.json")
    if outcome.report is not None:
        err.print(f"report: {outcome.report}", highlight=False)
    raise typer.Exit(outcome.exit_code)


@app.command()
def stop(
    run_id: Annotated[str, typer.Argument(metavar="RUN")],
    broker: Annotated[str | None, typer.Option(envvar=BROKER_ENV, help="redis://… broker and store")] = None,
    broker_file: BrokerFileOpt = None,
) -> None:
    """Stop all load of a distributed run within about a second; partial results are kept."""
    from orchestrator.store import Store

    try:
        store = Store(_require_broker(broker, broker_file))
        store.meta(run_id)  # an unknown run is an error, not a silent no-op
        store.stop(run_id)
    except FnbenchError as exc:
        raise _fail(exc) from None
    err.print(f"stop requested for {run_id}")


@app.command()
def gc(
    older_than: Annotated[str | None, typer.Option(help="also remove runs created longer ago than this (e.g. 7d)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only list what would be removed")] = False,
    broker: Annotated[str | None, typer.Option(envvar=BROKER_ENV, help="redis://… broker and store")] = None,
    broker_file: BrokerFileOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Remove expired runs from the store (their keys expire on their own; this clears what is left)."""
    from orchestrator.store import Store

    try:
        age = _duration(older_than, "--older-than") if older_than else None
        report = Store(_require_broker(broker, broker_file)).gc(age, dry_run)
    except FnbenchError as exc:
        raise _fail(exc) from None
    if json_out:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    verb = "would remove" if dry_run else "removed"
    out.print(f"{verb} {len(report['runs'])} run(s), {report['keys_deleted']} key(s); Redis used memory "
              f"{report['used_memory_before'] / 1e6:.1f} MB → {report['used_memory_after'] / 1e6:.1f} MB", highlight=False)
    for run_id in report["runs"]:
        out.print(f"  {run_id}", highlight=False)


# -- schedules, history and comparisons (orchestrator/schedule.py, history.py, compare.py) ---------
schedule_app = typer.Typer(help="Recurring runs in Redis (celery-redbeat), fired by `fnbench scheduler`.",
                           no_args_is_help=True, rich_markup_mode=None)
app.add_typer(schedule_app, name="schedule")
NameArg = Annotated[str, typer.Argument(metavar="NAME", help="the schedule's name")]
BrokerOpt = Annotated[str | None, typer.Option(envvar=BROKER_ENV, help="redis://… broker and store")]


def _schedules(broker: str | None, broker_file: Path | None) -> Any:
    from orchestrator.schedule import Schedules

    return Schedules(_require_broker(broker, broker_file))


def _when(ts: float | None) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else "-"


@schedule_app.command("add")
def schedule_add(
    name: NameArg,
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="benchmark YAML; its text is stored with the schedule")],
    cron: Annotated[str | None, typer.Option(help='cron expression, e.g. "0 */6 * * *" (UTC unless --tz)')] = None,
    every: Annotated[str | None, typer.Option(help="an interval instead of --cron: 30s, 15m, 6h, 1d")] = None,
    tz: Annotated[str | None, typer.Option("--tz", help="IANA time zone of the cron expression [default: UTC]")] = None,
    local: Annotated[bool, typer.Option("--local", help="run on the scheduler's machine (local pool) instead of the region workers")] = False,
    workers: Annotated[int | None, typer.Option(min=1, max=4096, help="local processes, or processes per region the rate is split over")] = None,
    broker: BrokerOpt = None,
    broker_file: BrokerFileOpt = None,
) -> None:
    """Add a schedule; a bad spec or cron expression is rejected (exit 2)."""
    try:
        rec = _schedules(broker, broker_file).add(name, spec_path, cron, every, tz, local, workers)
        from orchestrator.schedule import Recurrence

        rec_ = Recurrence.from_dict(rec["recurrence"])
        err.print(f"schedule {name}: {rec_.describe()}, spec {rec['spec_name']!r} ({'local' if local else 'region workers'}); "
                  f"next run {_when(rec_.next_after(rec_.anchor))}", highlight=False)
    except FnbenchError as exc:
        raise _fail(exc) from None


@schedule_app.command("update")
def schedule_update(
    name: NameArg,
    spec_path: Annotated[Path | None, typer.Argument(metavar="SPEC", help="the spec file [default: the one it was added from]")] = None,
    cron: Annotated[str | None, typer.Option(help="a new cron expression")] = None,
    every: Annotated[str | None, typer.Option(help="a new interval")] = None,
    tz: Annotated[str | None, typer.Option("--tz", help="time zone of the cron expression")] = None,
    broker: BrokerOpt = None,
    broker_file: BrokerFileOpt = None,
) -> None:
    """Store the spec file's current text again (and change the recurrence if given)."""
    try:
        rec = _schedules(broker, broker_file).update(name, spec_path, cron, every, tz)
    except FnbenchError as exc:
        raise _fail(exc) from None
    err.print(f"schedule {name} updated from {rec['spec_path']}", highlight=False)


@schedule_app.command("list")
def schedule_list(
    broker: BrokerOpt = None,
    broker_file: BrokerFileOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Schedules with their next due time, last run and its verdict."""
    try:
        s = _schedules(broker, broker_file)
        rows = [s.status(n) for n in s.names()]
    except FnbenchError as exc:
        raise _fail(exc) from None
    if json_out:
        sys.stdout.write(orjson.dumps([{k: v for k, v in r.items() if k != "spec"} for r in rows],
                                      option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    table = Table("name", "when", "spec", "next due", "last run", "verdict", "runs", title="schedules")
    for r in rows:
        table.add_row(r["name"], r["describe"] + (" (paused)" if r.get("paused") else ""), r["spec_name"],
                      _when(r["next_due"]), str(r.get("last_run") or "-"), str(r.get("last_verdict") or "-"), str(r.get("runs", 0)))
    out.print(table)


@schedule_app.command("show")
def schedule_show(name: NameArg, broker: BrokerOpt = None, broker_file: BrokerFileOpt = None,
                  json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """A schedule's record and the spec text it runs."""
    try:
        r = _schedules(broker, broker_file).status(name)
    except FnbenchError as exc:
        raise _fail(exc) from None
    if json_out:
        sys.stdout.write(orjson.dumps(r, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    for k in ("name", "describe", "spec_name", "spec_path", "git", "local", "workers", "paused", "runs", "last_run",
              "last_verdict", "verified"):
        out.print(f"{k}: {r.get(k)}", highlight=False, markup=False)
    out.print(f"next due: {_when(r['next_due'])}\nlast fired: {_when(r['last_fired'])}\n--- spec ---", highlight=False)
    out.print(r["spec"], highlight=False, markup=False)


def _schedule_simple(name: str, broker: str | None, broker_file: Path | None, action: str) -> None:
    try:
        s = _schedules(broker, broker_file)
        if action == "pause":
            s.set_paused(name, True)
        elif action == "resume":
            s.set_paused(name, False)
        elif action == "remove":
            s.remove(name)
        else:
            fire = s.run_now(name)
            err.print(f"schedule {name}: firing {fire} queued for `fnbench scheduler`", highlight=False)
            return
    except FnbenchError as exc:
        raise _fail(exc) from None
    err.print(f"schedule {name}: {action}d" if action != "remove" else f"schedule {name} removed", highlight=False)


@schedule_app.command("pause")
def schedule_pause(name: NameArg, broker: BrokerOpt = None, broker_file: BrokerFileOpt = None) -> None:
    """Stop firing until `resume`."""
    _schedule_simple(name, broker, broker_file, "pause")


@schedule_app.command("resume")
def schedule_resume(name: NameArg, broker: BrokerOpt = None, broker_file: BrokerFileOpt = None) -> None:
    """Fire again from the next due time (no catch-up of the paused time)."""
    _schedule_simple(name, broker, broker_file, "resume")


@schedule_app.command("remove")
def schedule_remove(name: NameArg, broker: BrokerOpt = None, broker_file: BrokerFileOpt = None) -> None:
    """Delete a schedule (its history stays)."""
    _schedule_simple(name, broker, broker_file, "remove")


@schedule_app.command("run-now")
def schedule_run_now(name: NameArg, broker: BrokerOpt = None, broker_file: BrokerFileOpt = None) -> None:
    """Queue one run of the schedule now (a running `fnbench scheduler` takes it)."""
    _schedule_simple(name, broker, broker_file, "run-now")


@app.command()
def scheduler(
    broker: BrokerOpt = None,
    broker_file: BrokerFileOpt = None,
    results: Annotated[Path, typer.Option(help="results root of the scheduled runs")] = Path("results"),
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="scheduled runs at once")] = 1,
    lock_timeout: Annotated[float, typer.Option(min=1, help="seconds a dead scheduler's lock lasts before a standby takes over")] = 5.0,
    loop_interval: Annotated[float, typer.Option(min=0.1, help="beat's longest sleep (seconds); the lock timeout must be at least 3x this")] = 1.0,
    loglevel: Annotated[str, typer.Option(help="log level")] = "WARNING",
) -> None:
    """Run Celery beat with RedBeat and a worker for headless scheduled runs (queue fnbench.scheduled).

    Start one on each of two hosts: one beats, the other stands by and takes over when it dies."""
    from orchestrator.schedule import SchedulerConfig, serve

    url = _require_broker(broker, broker_file)
    try:
        serve(SchedulerConfig(url, results, concurrency, loop_interval, lock_timeout, loglevel))
    except FnbenchError as exc:
        raise _fail(exc) from None


def _record_history(outcome: Any, broker: str | None, results: Path, spec_path: Path) -> None:
    from orchestrator import history

    history.record_outcome(outcome, broker=broker, results_root=results, spec_path=spec_path, say=_warn)


@app.command()
def history(
    name: Annotated[str, typer.Argument(metavar="NAME", help="the spec's name (`name:` in the YAML)")],
    limit: Annotated[int, typer.Option(min=1, help="runs shown")] = 20,
    check: Annotated[bool, typer.Option("--check", help="judge the newest run against its recent history; exit 1 on a regression")] = False,
    notify: Annotated[bool, typer.Option("--notify", help="with --check: announce a regression (Grafana annotation, FNBENCH_WEBHOOK_URL)")] = False,
    band: Annotated[float, typer.Option(help="noise band: relative differences within ± this are 'no change'")] = 0.03,
    json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    broker: BrokerOpt = None,
    broker_file: BrokerFileOpt = None,
    results: Annotated[Path, typer.Option(help="results root (without a broker, history entries are RESULTS/<run>/history.json)")] = Path("results"),
) -> None:
    """Runs of a spec per target × region, newest first, with a trend glyph per column."""
    from orchestrator import history as hist

    try:
        entries = hist.open_history(_broker(broker, broker_file), results).entries(name)
        verdict = hist.check(name, entries, band=band) if check else None
    except FnbenchError as exc:
        raise _fail(exc) from None
    if not entries:
        raise _fail(InputError(f"no runs recorded for {name!r}"))
    if json_out:
        doc: dict[str, Any] = {"name": name, "runs": [{k: v for k, v in e.items() if k != "samples"} for e in entries[:limit]]}
        if verdict is not None:
            doc["check"] = verdict.to_dict()
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for (target, region), rows in sorted(hist.rows(entries[:limit + 1]).items()):
            table = Table("run", "start", "git", *[label for _, label in hist.COLUMNS], title=f"{name}: {target} in {region}")
            for i, row in enumerate(rows[:limit]):
                older = rows[i + 1] if i + 1 < len(rows) else None
                cells = []
                for column, _ in hist.COLUMNS:
                    v = row.get(column)
                    arrow = hist.glyph(v, older.get(column) if older else None, column, band)
                    text = "-" if v is None else (f"{v * 100:.2f}%" if column == "error_rate" else f"{v:g}")
                    bad = hist.worse(arrow, column)
                    style = "red" if bad else "green" if bad is False else ""
                    cells.append(f"[{style}]{text} {arrow}[/]" if style else f"{text} {arrow}".strip())
                table.add_row(row["run_id"], _when(row["start"]), str(row.get("git") or "-"), *cells)
            out.print(table)
        if verdict is not None:
            out.print(verdict.message(), highlight=False, markup=False)
            for f in verdict.findings:
                if not f.regressed:
                    out.print(f"  {f.comparison.sentence}", highlight=False, markup=False)
    if verdict is not None and notify:
        hist.notify(verdict, _warn)
    raise typer.Exit(1 if verdict is not None and verdict.failed else 0)


def _samples_of_run(ref: str, broker: str | None, results: Path) -> tuple[str, list[Any]]:
    """A run's interval blocks: from its folder's intervals.jsonl, else from its history entry."""
    from orchestrator import compare as cmp
    from orchestrator import history as hist

    path = Path(ref)
    folder = path if path.is_dir() else results / ref
    if (folder / "intervals.jsonl").exists():
        return folder.name, cmp.samples_from_intervals(read_intervals(folder / "intervals.jsonl"))
    entry = hist.open_history(broker, results).find(ref)
    if entry is None:
        raise InputError(f"{ref}: no results/<run>/intervals.jsonl and no history entry for this run")
    return ref, hist.samples_of(entry)


@app.command()
def compare(
    runs: Annotated[list[str], typer.Argument(metavar="RUN [RUN_B]", help="one run (every target against the Rust one) or two (RUN_B against RUN_A)")],
    band: Annotated[float, typer.Option(help="noise band: a difference whose 95 % interval lies within ± this is 'no change'")] = 0.03,
    baseline: Annotated[str, typer.Option(help="with one run: the runtime the others are compared with")] = "rust",
    replicates: Annotated[int, typer.Option(min=200, max=100000, help="bootstrap replicates")] = 2000,
    json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    broker: BrokerOpt = None,
    broker_file: BrokerFileOpt = None,
    results: Annotated[Path, typer.Option(help="results root")] = Path("results"),
) -> None:
    """Compare with 95 % confidence intervals from a block bootstrap over the runs' interval histograms."""
    from orchestrator import compare as cmp

    if len(runs) > 2:
        raise _fail(InputError("give one run (baselines against Rust) or two runs (RUN_B against RUN_A)"))
    try:
        url = _broker(broker, broker_file)
        loaded = [_samples_of_run(r, url, results) for r in runs]
        if len(loaded) == 1:
            found = cmp.compare_within(loaded[0][1], baseline, band=band, replicates=replicates)
            if not found:
                raise InputError(f"{runs[0]}: no target of runtime {baseline!r} beside another target of the same "
                                 "workload and region")
        else:
            (label_a, a), (label_b, b) = loaded
            found = cmp.compare_runs(a, b, label_a, label_b, band=band, replicates=replicates)
            if not found:
                raise InputError(f"{label_a} and {label_b} have no target × region in common")
    except FnbenchError as exc:
        raise _fail(exc) from None
    if json_out:
        sys.stdout.write(orjson.dumps([c.to_dict() for c in found], option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    table = Table("region", "subject", "vs", "metric", "vs value", "subject value", "ratio", "change (95 % CI)", "verdict")
    for c in found:
        def num(v: float | None, metric: str = c.metric) -> str:
            return "-" if v is None else f"{v * 100:.3f}%" if metric == "error_rate" else f"{v:g}"

        ci = "-" if c.low is None or c.high is None or c.change is None else (
            f"{c.change * 100:+.1f}% ({c.low * 100:+.1f}…{c.high * 100:+.1f})" if c.relative
            else f"{c.change:+.2f}pp ({c.low:+.2f}…{c.high:+.2f})")
        table.add_row(c.region, c.subject, c.reference, cmp.METRIC_LABEL.get(c.metric, c.metric), num(c.reference_value),
                      num(c.subject_value), "-" if c.ratio is None else f"{c.ratio:.3f}", ci, c.verdict)
    out.print(table)
    for c in found:
        if c.verdict in ("higher", "lower"):
            out.print(f"• {c.sentence}", highlight=False, markup=False)


def _duration(text: str, option: str) -> float:
    """A retention-like duration: the spec's forms (30s, 5m, 12h) and days (3d)."""
    days = text.strip().removesuffix("d")
    try:
        if days != text.strip() and days.replace(".", "", 1).isdigit():
            seconds = float(days) * 86400
        else:
            seconds = spec.parse_duration(text)
    except ValueError as exc:
        raise InputError(f"{option}: {exc} (or days, like 3d)") from None
    if not 0 < seconds < 366 * 86400:
        raise InputError(f"{option}: must be more than 0 and less than a year, got {text!r}")
    return seconds


def _show(result: RunResult, json_out: bool) -> None:
    if json_out:
        sys.stdout.write(result.to_json().decode() + "\n")
    else:
        terminal.render(result, out)


def _warn(message: str) -> None:
    err.print(f"[yellow]{message}[/]", highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
