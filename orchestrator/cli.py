"""The `fnbench` command line.  Each subcommand parses its arguments and calls one function.

Exit codes: 0 ok · 1 an SLO (or calibration tolerance) failed · 2 bad input or setup error ·
130 interrupted (partial results were still written).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from orchestrator import plan as planner
from orchestrator import runner, spec
from orchestrator.collect import Collector
from orchestrator.errors import FnbenchError, InputError, SetupError, SpecError
from orchestrator.grafana import grafana_app
from orchestrator.report import terminal
from orchestrator.results import read_intervals

BROKER_ENV = "FNBENCH_BROKER"
BROKER_HELP = ("redis://… broker: run the shards on `fnbench worker`s, one queue per region; a password here "
               f"shows in `ps`: prefer {BROKER_ENV} or --broker-file")
BROKER_FILE_ENV = "FNBENCH_BROKER_FILE"
BrokerFileOpt = Annotated[Path | None, typer.Option(
    "--broker-file", envvar=BROKER_FILE_ENV,
    help="read the redis://… URL (with its password) from this file, so it is not visible in `ps`; never printed")]

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
    return typer.Exit(runner.EXIT_INPUT)


def _read_spec(path: Path) -> tuple[spec.Benchmark, str]:
    text = spec.read_text(path)  # bounded size, UTF-8, or a SpecError naming the file
    return spec.load_text(text, str(path)), text


@app.command()
def validate(spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="benchmark YAML")]) -> None:
    """Check a spec; lists every problem with its YAML path (exit 2) or prints a summary."""
    try:
        b, _ = _read_spec(spec_path)
    except FnbenchError as exc:
        raise _fail(exc) from None
    shards = planner.split(b, "validate", 0.0)
    out.print(
        f"{spec_path}: ok — {len(b.targets)} target(s) × {len(b.regions)} region(s), "
        f"{planner.total_length(b):.0f}s, {len(shards)} shard(s) at one worker"
    )


@app.command()
def plan(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC")],
    workers: Annotated[int, typer.Option(min=1, max=4096, help="worker processes the rate is split over")] = 1,
) -> None:
    """Show the shards a spec splits into (rates as exact fractions)."""
    try:
        b, _ = _read_spec(spec_path)
    except FnbenchError as exc:
        raise _fail(exc) from None
    table = Table("shard", "start +s", "duration s", "arrival", "max in flight")
    for s in planner.split(b, "plan", 0.0, min_parts=workers):
        arrival = ", ".join(f"{k}={v}" for k, v in s.arrival.items() if k != "kind")
        table.add_row(s.shard_id, f"{s.start_at:.1f}", f"{s.duration_s:.1f}", f"{s.arrival['kind']} {arrival}", str(s.max_in_flight))
    out.print(table)


@app.command()
def run(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="benchmark YAML (see examples/)")],
    workers: Annotated[int, typer.Option("--workers", "-w", min=0, max=4096, help="local worker processes [default: one per core]; with --broker, processes per region the rate is split over [default: all online]")] = 0,
    results: Annotated[Path, typer.Option(help="results root; the run goes to RESULTS/<run_id>/")] = Path("results"),
    metrics_port: Annotated[int, typer.Option(min=0, max=65535, help="serve Prometheus metrics here during the run; 0 = off")] = 9464,
    json_out: Annotated[bool, typer.Option("--json", help="print result.json to stdout instead of tables")] = False,
    broker: Annotated[str | None, typer.Option(envvar=BROKER_ENV, help=BROKER_HELP)] = None,
    broker_file: BrokerFileOpt = None,
) -> None:
    """Run a benchmark on this machine (or on workers per region with --broker) and report; exit 1 when an SLO fails."""
    try:
        broker = _broker(broker, broker_file)
        b, text = _read_spec(spec_path)
        if broker:
            from orchestrator import distributed
            from workers import auth

            auth.load_key()  # before anything is written: workers run only tasks signed with it

            outcome = distributed.run(b, text, broker, results, err, processes=workers or None)
        else:
            outcome = runner.run(b, text, results, workers or None, metrics_port, err)
    except FnbenchError as exc:
        raise _fail(exc) from None
    _show(outcome.result, json_out)
    for e in outcome.result.get("errors", []):
        err.print(f"[red]error[/]: {e}", highlight=False, markup=False)
    err.print(f"results: {outcome.folder}/result.json")
    raise typer.Exit(outcome.exit_code)


@app.command()
def report(
    path: Annotated[Path, typer.Argument(help="results/<run_id> folder or its intervals.jsonl; with --broker, a RUN id")],
    json_out: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    broker: Annotated[str | None, typer.Option(envvar=BROKER_ENV, help="read the run's intervals from this broker's store")] = None,
    broker_file: BrokerFileOpt = None,
) -> None:
    """Re-render a result from its recorded intervals (the intervals are the source of truth)."""
    try:
        broker = _broker(broker, broker_file)
    except FnbenchError as exc:
        raise _fail(exc) from None
    if broker:
        from orchestrator import distributed

        try:
            result, code = distributed.report(broker, str(path))
        except FnbenchError as exc:
            raise _fail(exc) from None
        _show(result, json_out)
        raise typer.Exit(code)
    try:
        folder = path.parent if path.is_file() else path
        intervals_file = path if path.is_file() else path / "intervals.jsonl"
        if not intervals_file.exists():
            raise InputError(f"{intervals_file}: not found; give a results/<run_id> folder or an intervals.jsonl")
        intervals = read_intervals(intervals_file)
        spec_file = folder / "spec.yaml"
        b = spec.load(spec_file) if spec_file.exists() else None
    except FnbenchError as exc:
        raise _fail(exc) from None
    run_id = intervals[0].run_id if intervals else folder.name
    collector = Collector(run_id, runner.phase_seconds(b) if b else None)
    collector.add_all(intervals)
    if b is not None:
        result, code = runner.finish(b, collector)
    else:
        result, code = collector.result(), runner.EXIT_OK
    _show(result, json_out)
    raise typer.Exit(code)


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


functions_app = typer.Typer(help="The benchmark subjects in functions/: build them, list them.", no_args_is_help=True)
app.add_typer(functions_app, name="functions")
app.add_typer(grafana_app, name="grafana")


def _functions_table(artifacts: list[Any], title: str) -> Table:
    table = Table("runtime", "artefact", "size", "build s", "start command", title=title)
    for a in artifacts:
        table.add_row(a.runtime, str(a.path), f"{a.size_bytes / 1e6:.2f} MB" if a.size_bytes >= 1e5 else f"{a.size_bytes / 1e3:.1f} kB",
                      f"{a.build_seconds:.1f}" if a.build_seconds else "-", " ".join(Path(c).name if i == 0 else c for i, c in enumerate(a.command)))
    return table


@functions_app.command("build")
def functions_build(
    runtime: Annotated[str | None, typer.Argument(help="rust, go, node or python; all when omitted")] = None,
) -> None:
    """Build the functions (cargo --release, go build; node and python need nothing) and print sizes."""
    from orchestrator import functions

    if runtime is not None and runtime not in functions.RUNTIMES:
        raise _fail(InputError(f"unknown runtime {runtime!r}; one of {', '.join(functions.RUNTIMES)}"))
    built = []
    for rt in [runtime] if runtime else list(functions.RUNTIMES):
        err.print(f"building {rt} …")
        try:
            built += functions.build(rt)
        except FnbenchError as exc:
            raise _fail(exc) from None
    out.print(_functions_table(built, "built functions"))


@functions_app.command("list")
def functions_list() -> None:
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
    out.print(_functions_table(found, "functions"))
    out.print("workloads: " + ", ".join(functions.WORKLOADS) + "  (functions/CONTRACT.md)")
    if missing:
        out.print("not built: " + ", ".join(missing) + " — run `fnbench functions build`")


def _broker(broker: str | None, broker_file: Path | None) -> str | None:
    from workers.auth import broker_from

    return broker_from(broker, broker_file)


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
    concurrency: Annotated[int, typer.Option(min=0, max=4096, help="worker processes, one shard each [default: one per core]")] = 0,
    metrics_port: Annotated[int, typer.Option(min=0, max=65535, help="serve this host's Prometheus metrics here; 0 = off")] = 9464,
    loglevel: Annotated[str, typer.Option(help="Celery log level")] = "WARNING",
) -> None:
    """Start a Celery worker for one region (prefork; one async generator per process).

    It runs only tasks signed with the task key (FNBENCH_TASK_KEY or FNBENCH_TASK_KEY_FILE, see
    `fnbench keygen`) and only loads hosts in FNBENCH_ALLOWED_TARGETS (default loopback), at most
    FNBENCH_MAX_RPS per process."""
    from workers import keys
    from workers.app import start_worker

    url = _require_broker(broker, broker_file)
    try:
        start_worker(region, keys.queue(region), url, concurrency or runner.default_workers(), metrics_port,
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
    run_id: Annotated[str | None, typer.Argument(metavar="[RUN]", help="one run; recent runs when omitted")] = None,
    broker: Annotated[str | None, typer.Option(envvar=BROKER_ENV, help="redis://… broker and store")] = None,
    broker_file: BrokerFileOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Runs and their shards by state, workers online per region, queue depths."""
    from orchestrator import distributed

    try:
        st = distributed.status(_require_broker(broker, broker_file), run_id)
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
    from orchestrator import distributed

    try:
        outcome = distributed.watch(_require_broker(broker, broker_file), run_id, results, err)
    except FnbenchError as exc:
        raise _fail(exc) from None
    _show(outcome.result, json_out)
    err.print(f"results: {outcome.folder}/result.json")
    raise typer.Exit(outcome.exit_code)


@app.command()
def stop(
    run_id: Annotated[str, typer.Argument(metavar="RUN")],
    broker: Annotated[str | None, typer.Option(envvar=BROKER_ENV, help="redis://… broker and store")] = None,
    broker_file: BrokerFileOpt = None,
) -> None:
    """Stop all load of a distributed run within about a second; partial results are kept."""
    from orchestrator import distributed

    try:
        distributed.stop(_require_broker(broker, broker_file), run_id)
    except FnbenchError as exc:
        raise _fail(exc) from None
    err.print(f"stop requested for {run_id}")


def _show(result: dict[str, Any], json_out: bool) -> None:
    if json_out:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        terminal.render(result, out)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
