"""Commands about runs: validate, plan, run, report, watch, status, stop, gc; calibrate and the synthetic
target; the region worker and its task key.

What only one command needs and is slow to import (Redis, Celery, the calibration target) is imported
by that command, so that `fnbench run` starts its load quickly."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.markup import escape

from orchestrator import session
from orchestrator.analysis import budget
from orchestrator.analysis.sweep import step_spec
from orchestrator.cli.common import (
    BROKER_ENV,
    BROKER_HELP,
    BrokerFileOpt,
    BrokerOpt,
    JsonOpt,
    broker_url,
    dump,
    err,
    out,
    require_broker,
    say,
    show,
    warn,
)
from orchestrator.errors import FnbenchError, InputError, SetupError, SpecError
from orchestrator.report import html as html_report
from orchestrator.report import markdown as md_report
from orchestrator.report import terminal
from orchestrator.run import plan as planner
from orchestrator.run import spec
from orchestrator.run.dispatch.local import default_workers
from orchestrator.run.result import RunResult
from workers import auth, keys, otlp

SpecArg = Annotated[Path, typer.Argument(metavar="SPEC", help="benchmark YAML (see examples/)")]


def validate(
    spec_path: SpecArg,
    json_out: Annotated[bool, typer.Option("--json", help="print ok with the problems or a summary as JSON")] = False,
) -> None:
    """Check a spec; lists every problem with its YAML path (exit 2) or prints a summary.

    Targets must be inside FNBENCH_ALLOWED_TARGETS (default loopback), as the workers will require."""
    try:
        b, _ = session.read_runnable(spec_path)
        shards = planner.split(b, "validate", 0.0)
    except FnbenchError as exc:
        if json_out:
            problems = exc.problems if isinstance(exc, SpecError) else [str(exc)]
            sys.stdout.write(orjson.dumps({"spec": str(spec_path), "ok": False, "problems": problems}).decode() + "\n")
        raise
    steps = spec.sizes(b)
    total = planner.total_length(b) * max(1, len(steps))
    # After its load, a run waits for requests still in flight up to the longest target timeout (the drain,
    # bounded by the spec's validation); a sweep drains after each step.
    drain = max(t.timeout for t in b.targets) + 1.0
    longest = total + drain * max(1, len(steps))
    if json_out:
        summary = {"spec": str(spec_path), "ok": True, "name": b.name, "targets": len(b.targets),
                   "regions": list(b.regions), "total_s": total, "max_s": longest,
                   "shards_at_one_worker": len(shards) * max(1, len(steps))}
        if steps:
            summary["memory_sizes_mb"] = steps
        sys.stdout.write(orjson.dumps(summary).decode() + "\n")
        return
    sweeping = f", a memory sweep in {len(steps)} steps ({', '.join(map(str, steps))} MB)" if steps else ""
    out.print(
        f"{spec_path}: ok — {len(b.targets)} target(s) × {len(b.regions)} region(s){sweeping}, "
        f"{total:.0f}s of load, {len(shards) * max(1, len(steps))} shard(s) at one worker; the run lasts at most "
        f"~{longest:.0f}s (requests in flight at the end are waited for up to their timeout)"
    )


def plan(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC")],
    workers: Annotated[int, typer.Option(min=1, max=4096, help="worker processes the rate is split over")] = 1,
) -> None:
    """Show the shards a spec splits into (rates as exact fractions), and the budget estimate.

    Exit 2 when the estimate exceeds the spec's max_cost_usd or max_invocations."""
    b = spec.load(spec_path)
    estimate = budget.estimate(b)
    if any(line.billed for line in estimate.lines) or b.max_cost_usd is not None or b.max_invocations is not None:
        out.print(escape(estimate.text()), highlight=False)
    over = budget.problems(b)
    if over:
        raise SpecError(str(spec_path), over)
    sizes = spec.sizes(b)
    steps = [(f"memory sweep step {n}/{len(sizes)}: {m} MB (set by the control plane first; "
              "start times are from the step's start)", step_spec(b, m)) for n, m in enumerate(sizes, 1)] or [("", b)]
    for title, step in steps:
        out.print(terminal.shards_table(planner.split(step, "plan", 0.0, min_parts=workers), title))


def run(
    spec_path: SpecArg,
    workers: Annotated[int, typer.Option("--workers", "-w", min=0, max=4096, show_default=False, help="local worker processes [default: one per core]; with --broker, processes per region the rate is split over [default: all online]")] = 0,
    results: Annotated[Path, typer.Option(help="results root; the run goes to RESULTS/<run_id>/")] = Path("results"),
    metrics_port: Annotated[int, typer.Option(min=0, max=65535, help="serve Prometheus metrics here during the run; 0 = off")] = 9464,
    json_out: Annotated[bool, typer.Option("--json", help="print result.json to stdout instead of tables")] = False,
    broker: Annotated[str | None, typer.Option(envvar=BROKER_ENV, help=BROKER_HELP)] = None,
    broker_file: BrokerFileOpt = None,
    retention: Annotated[str, typer.Option(help="with --broker: how long the run's records stay in Redis after its end (e.g. 3d, 12h); `fnbench gc` removes expired runs")] = "3d",
    run_id: Annotated[str | None, typer.Option("--run-id", help="name the run (letters, digits, . _ -) instead of NAME-DATE-TIME-XXXX")] = None,
    no_html: Annotated[bool, typer.Option("--no-html", help="do not write results/<run>/report.html at the end")] = False,
    otlp_endpoint: Annotated[str | None, typer.Option("--otlp-endpoint", metavar="URL", help="export the run's metrics (latency as exponential histograms) and its slowest requests as spans over OTLP/HTTP to this base URL, e.g. http://127.0.0.1:4318 (/v1/metrics and /v1/traces are added); default: the standard OTEL_EXPORTER_OTLP_* variables, if set")] = None,
    junit: Annotated[Path | None, typer.Option("--junit", help="also write JUnit XML for CI: one test case per SLO verdict (value, bound, sentence), or per measured group when the spec sets no SLOs (never an empty file)")] = None,
    apply: Annotated[bool, typer.Option("--apply", help="a memory sweep: afterwards set each function to the size its strategy chose (sweep.strategy), instead of the size it had")] = False,
) -> None:
    """Run a benchmark on this machine (or on workers per region with --broker) and report.

    Exit 0 ok, 1 an SLO failed, 2 bad input or a setup/worker error, 3 load was lost (shards expired or
    abandoned) or unreadable records were left out, 130 interrupted; the partial result is written in every case.
    In CI: --junit FILE for test reports; with GITHUB_STEP_SUMMARY set (GitHub Actions) the run's Markdown
    summary is appended to that file."""
    where = session.Placement(broker_url(broker, broker_file), workers, spec.parse_span(retention, "--retention"),
                              metrics_port)
    if run_id is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", run_id):
        raise InputError(f"--run-id {run_id!r}: use 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit")
    if otlp_endpoint is not None:
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", otlp_endpoint):
            raise InputError(f"--otlp-endpoint {otlp_endpoint!r}: expected an http:// or https:// URL, "
                             "e.g. http://127.0.0.1:4318")
        os.environ[otlp.FNBENCH_ENV] = otlp_endpoint
    b, text = session.read_runnable(spec_path)
    if apply and not spec.sizes(b):
        raise InputError(f"--apply: {spec_path} is not a memory sweep (no target lists memory_sizes)")
    outcome = session.run(b, text, where, results=results, run_id=run_id, html=not no_html, console=err, warn=warn,
                          recording=session.Recording(spec_path=spec_path), apply=apply)
    show(outcome.result, json_out)
    for e in outcome.result.errors:
        err.print(f"[red]error[/]: {escape(e)}", highlight=False)
    err.print(f"results: {outcome.folder}/result.json")
    if junit is not None:
        from orchestrator.report import junit as junit_report

        err.print(f"junit: {junit_report.write(junit, junit_report.from_run(outcome.result))}", highlight=False)
    _step_summary(outcome.result)
    if outcome.report is not None:
        err.print(f"report: {outcome.report}", highlight=False)
    raise typer.Exit(outcome.exit_code)


def _step_summary(result: RunResult) -> None:
    """GitHub Actions: the run's Markdown summary appended to $GITHUB_STEP_SUMMARY when it is set."""
    from orchestrator.report import junit as junit_report

    junit_report.append_step_summary(md_report.summary(result), warn)


def report(
    paths: Annotated[list[Path], typer.Argument(metavar="RUN...", help="results/<run_id> folder (or a run id under results/) or its intervals.jsonl; with --broker, a RUN id; several: an overlay with --html")],
    json_out: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    broker: Annotated[str | None, typer.Option(envvar=BROKER_ENV, help="read the run's intervals from this broker's store")] = None,
    broker_file: BrokerFileOpt = None,
    html: Annotated[bool, typer.Option("--html", help="write a self-contained HTML report (charts; several runs overlaid) to results/<run>/report.html, or to a last argument ending in .html")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="print a compact Markdown table (for a pull-request comment)")] = False,
    slowest: Annotated[int, typer.Option("--slowest", min=0, metavar="N", help="print each group's N slowest requests of the run with their trace and request ids (the spec's tracing.slowest sets how many each interval keeps)")] = 0,
) -> None:
    """Re-render a result from its recorded intervals (the intervals are the source of truth)."""
    out_file = paths.pop() if html and len(paths) > 1 and paths[-1].suffix.lower() in (".html", ".htm") else None
    url = broker_url(broker, broker_file)
    runs = []
    for path in paths:
        path = session.locate(path, url)
        result, code = session.result_of(path, url)
        if result.bad_records:
            warn(escape(f"warning: {result.bad_records} record(s) could not be read and are left out "
                        f"(bad_records); first: {result.bad_record_reasons[0] if result.bad_record_reasons else '?'}"))
        runs.append((path, result, code))
    if html or markdown:
        data = [session.run_data(path, result, url) for path, result, _ in runs]
        if markdown:
            sys.stdout.write(md_report.render(data))
        if html:
            written = html_report.write(data, out_file)
    if json_out and len(runs) > 1:
        dump([r.to_dict() for _, r, _ in runs])
    elif json_out or not (html or markdown or slowest):
        for _, result, _ in runs:
            show(result, json_out)
    if slowest and not json_out:
        for _, result, _ in runs:
            for g in result.groups:
                if g.slowest:
                    out.print(terminal.slowest_table(g, slowest))
                else:
                    out.print(f"{escape(g.region)} / {escape(g.target)} / {g.phase}: no slowest requests recorded "
                              "(tracing.slowest: 0, or a run made before fnbench kept them)", highlight=False)
    if html:
        err.print(f"report: {written}", highlight=False)
    raise typer.Exit(max(code for _, _, code in runs))


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
    from orchestrator.analysis import calibrate as calibration
    from orchestrator.analysis.calibrate import SyntheticConfig

    cfg = SyntheticConfig(median_ms=median_ms, sigma=sigma, stall_every_s=stall_every, stall_ms=stall_ms)
    rep = calibration.calibrate(cfg, rps=rps, duration_s=duration, workers=workers, results_root=results, tolerance_pct=tolerance)
    if json_out:
        dump(rep)
    else:
        stalls = f", stalls of {stall_ms:g} ms every {stall_every:g} s" if stall_every else ""
        out.print(terminal.calibration_table(rep, f"calibration: {rps:g} req/s for {duration:g}s, lognormal median "
                                                  f"{median_ms:g} ms σ {sigma:g}{stalls}"))
        req = rep["requests"]
        out.print(f"requests: {req['completed']} measured of {req['intended']} intended, {req['served']} served; outcomes {req['outcomes']}")
        out.print(("[green]PASS[/]" if rep["pass"] else "[red]FAIL[/]")
                  + f": every percentile within {tolerance}% of the model's sampling band and of the target's own record")
    raise typer.Exit(0 if rep["pass"] else 1)


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
    from orchestrator.analysis import calibrate as calibration
    from orchestrator.analysis.calibrate import SyntheticConfig

    cfg = SyntheticConfig(median_ms=median_ms, sigma=sigma, stall_every_s=stall_every, stall_ms=stall_ms)
    try:
        calibration.serve_forever(cfg, port, lambda p: say(
            f"synthetic target on http://127.0.0.1:{p}/ (lognormal median {median_ms:g} ms, σ {sigma:g}); Ctrl-C to stop"))
    except OSError as exc:
        raise SetupError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
    except KeyboardInterrupt:
        pass


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
    from workers.app import start_worker  # Celery: imported only by the command that needs it

    start_worker(region, keys.queue(region), require_broker(broker, broker_file), concurrency or default_workers(),
                 metrics_port, keys.WORKERS, loglevel)


def keygen(
    file: Annotated[Path | None, typer.Option("--file", help="where to write it [default: FNBENCH_TASK_KEY_FILE or ~/.config/fnbench/task.key]")] = None,
    force: Annotated[bool, typer.Option(help="replace an existing key (every worker then needs the new one)")] = False,
) -> None:
    """Write a random task key (mode 0600): the orchestrator signs tasks with it, workers run only signed tasks."""
    path = auth.write_key(file or auth.key_file(), force=force)
    err.print(f"task key written to {path} (mode 0600).\n"
              f"Give the same key to the orchestrator and every `fnbench worker`: copy this file to the same path "
              f"on each host (or point {auth.KEY_FILE_ENV} at it), or store it in your secret manager and set "
              f"{auth.KEY_ENV}; on Kubernetes: kubectl -n fnbench create secret generic fnbench-task-key "
              f"--from-file=key={path}", highlight=False, markup=False)


def status(
    run_id: Annotated[str | None, typer.Argument(metavar="RUN", help="one run; recent runs when omitted")] = None,
    broker: BrokerOpt = None,
    broker_file: BrokerFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Runs and their shards by state, workers online per region, queue depths."""
    from orchestrator.run.store import Store

    st = Store(require_broker(broker, broker_file)).status(run_id)
    if json_out:
        dump(st)
        return
    for table in terminal.status_tables(st):
        out.print(table)


def watch(
    run_id: Annotated[str, typer.Argument(metavar="RUN")],
    broker: BrokerOpt = None,
    broker_file: BrokerFileOpt = None,
    results: Annotated[Path, typer.Option(help="results root; the run goes to RESULTS/<run_id>/")] = Path("results"),
    json_out: Annotated[bool, typer.Option("--json", help="print result.json to stdout instead of tables")] = False,
) -> None:
    """Attach the live view to a distributed run and supervise it to its end (e.g. after its orchestrator died)."""
    outcome = session.attach(require_broker(broker, broker_file), run_id, results, err, warn)
    show(outcome.result, json_out)
    err.print(f"results: {outcome.folder}/result.json")
    if outcome.report is not None:
        err.print(f"report: {outcome.report}", highlight=False)
    raise typer.Exit(outcome.exit_code)


def stop(
    run_id: Annotated[str, typer.Argument(metavar="RUN")],
    broker: BrokerOpt = None,
    broker_file: BrokerFileOpt = None,
) -> None:
    """Stop all load of a distributed run within about a second; partial results are kept."""
    from orchestrator.run.store import Store

    store = Store(require_broker(broker, broker_file))
    store.meta(run_id)  # an unknown run is an error, not a silent no-op
    store.stop(run_id)
    err.print(f"stop requested for {run_id}")


def gc(
    older_than: Annotated[str | None, typer.Option(help="also remove runs created longer ago than this (e.g. 7d)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only list what would be removed")] = False,
    broker: BrokerOpt = None,
    broker_file: BrokerFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Remove expired runs from the store (their keys expire on their own; this clears what is left)."""
    from orchestrator.run.store import Store

    age = spec.parse_span(older_than, "--older-than") if older_than else None
    report = Store(require_broker(broker, broker_file)).gc(age, dry_run)
    if json_out:
        dump(report)
        return
    verb = "would remove" if dry_run else "removed"
    out.print(f"{verb} {len(report['runs'])} run(s), {report['keys_deleted']} key(s); Redis used memory "
              f"{report['used_memory_before'] / 1e6:.1f} MB → {report['used_memory_after'] / 1e6:.1f} MB", highlight=False)
    for run_id in report["runs"]:
        out.print(f"  {run_id}", highlight=False)


COMMANDS = (validate, plan, run, report, calibrate, synthetic, worker, keygen, status, watch, stop, gc)
