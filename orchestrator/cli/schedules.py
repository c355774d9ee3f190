"""Commands about recurring runs and what they add up to: `schedule …`, `scheduler`, `history`, `compare`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from orchestrator.analysis import compare as cmp
from orchestrator.analysis import history as hist
from orchestrator.cli.common import (
    BrokerFileOpt,
    BrokerOpt,
    JsonOpt,
    broker_url,
    dump,
    out,
    require_broker,
    say,
    warn,
)
from orchestrator.errors import InputError
from orchestrator.report import terminal
from orchestrator.run.results import read_intervals

schedule_app = typer.Typer(help="Recurring runs in Redis (celery-redbeat), fired by `fnbench scheduler`.",
                           no_args_is_help=True, rich_markup_mode=None)
NameArg = Annotated[str, typer.Argument(metavar="NAME", help="the schedule's name")]


def _schedules(broker: str | None, broker_file: Path | None) -> Any:
    from orchestrator.schedule import (
        Schedules,  # Celery and RedBeat: only for the commands that need them
    )

    return Schedules(require_broker(broker, broker_file))


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
    from orchestrator.schedule import Recurrence

    rec = _schedules(broker, broker_file).add(name, spec_path, cron, every, tz, local, workers)
    recurrence = Recurrence.from_dict(rec["recurrence"])
    say(f"schedule {name}: {recurrence.describe()}, spec {rec['spec_name']!r} ({'local' if local else 'region workers'}); "
        f"next run {terminal.when(recurrence.next_after(recurrence.anchor))}")


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
    rec = _schedules(broker, broker_file).update(name, spec_path, cron, every, tz)
    say(f"schedule {name} updated from {rec['spec_path']}")


@schedule_app.command("list")
def schedule_list(broker: BrokerOpt = None, broker_file: BrokerFileOpt = None, json_out: JsonOpt = False) -> None:
    """Schedules with their next due time, last run and its verdict."""
    s = _schedules(broker, broker_file)
    rows = [s.status(n) for n in s.names()]
    if json_out:
        dump([{k: v for k, v in r.items() if k != "spec"} for r in rows])
        return
    out.print(terminal.schedules_table(rows))


@schedule_app.command("show")
def schedule_show(name: NameArg, broker: BrokerOpt = None, broker_file: BrokerFileOpt = None,
                  json_out: JsonOpt = False) -> None:
    """A schedule's record and the spec text it runs."""
    r = _schedules(broker, broker_file).status(name)
    if json_out:
        dump(r)
        return
    for k in ("name", "describe", "spec_name", "spec_path", "git", "local", "workers", "paused", "runs", "last_run",
              "last_verdict", "verified"):
        out.print(f"{k}: {r.get(k)}", highlight=False, markup=False)
    out.print(f"next due: {terminal.when(r['next_due'])}\nlast fired: {terminal.when(r['last_fired'])}\n--- spec ---",
              highlight=False)
    out.print(r["spec"], highlight=False, markup=False)


@schedule_app.command("pause")
def schedule_pause(name: NameArg, broker: BrokerOpt = None, broker_file: BrokerFileOpt = None) -> None:
    """Stop firing until `resume`."""
    _schedules(broker, broker_file).set_paused(name, True)
    say(f"schedule {name}: paused")


@schedule_app.command("resume")
def schedule_resume(name: NameArg, broker: BrokerOpt = None, broker_file: BrokerFileOpt = None) -> None:
    """Fire again from the next due time (no catch-up of the paused time)."""
    _schedules(broker, broker_file).set_paused(name, False)
    say(f"schedule {name}: resumed")


@schedule_app.command("remove")
def schedule_remove(name: NameArg, broker: BrokerOpt = None, broker_file: BrokerFileOpt = None) -> None:
    """Delete a schedule (its history stays)."""
    _schedules(broker, broker_file).remove(name)
    say(f"schedule {name} removed")


@schedule_app.command("run-now")
def schedule_run_now(name: NameArg, broker: BrokerOpt = None, broker_file: BrokerFileOpt = None) -> None:
    """Queue one run of the schedule now (a running `fnbench scheduler` takes it)."""
    fire = _schedules(broker, broker_file).run_now(name)
    say(f"schedule {name}: firing {fire} queued for `fnbench scheduler`")


def scheduler(
    broker: BrokerOpt = None,
    broker_file: BrokerFileOpt = None,
    results: Annotated[Path, typer.Option(help="results root of the scheduled runs")] = Path("results"),
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="scheduled runs at once")] = 1,
    lock_timeout: Annotated[float, typer.Option(min=1, help="seconds a dead scheduler's lock lasts before a standby takes over")] = 5.0,
    loop_interval: Annotated[float, typer.Option(min=0.1, help="beat's longest sleep (seconds); the lock timeout must be at least 3x this")] = 1.0,
    loglevel: Annotated[str, typer.Option(help="log level")] = "WARNING",
    no_html: Annotated[bool, typer.Option("--no-html", help="do not write RESULTS/<run>/report.html for each scheduled run (the trend page then links its result.json)")] = False,
) -> None:
    """Run Celery beat with RedBeat and a worker for headless scheduled runs (queue fnbench.scheduled).

    Start one on each of two hosts: one beats, the other stands by and takes over when it dies.
    After each firing: the run's report, its history entry and regression check, and the spec's trend
    page RESULTS/trend-NAME.html written again (serve RESULTS statically to publish it)."""
    from orchestrator.schedule import SchedulerConfig, serve

    serve(SchedulerConfig(require_broker(broker, broker_file), results, concurrency, loop_interval, lock_timeout, loglevel,
                          html=not no_html))


def history(
    names: Annotated[list[str] | None, typer.Argument(metavar="NAME...", show_default=False, help="the spec's name (`name:` in the YAML); with --html several names (or --all) make a leaderboard; a last argument ending in .html is the page's file")] = None,
    limit: Annotated[int, typer.Option(min=1, help="runs shown")] = 20,
    check: Annotated[bool, typer.Option("--check", help="judge the newest run against its recent history (the verdict is kept with it, for its trend page); exit 1 on a regression. GITHUB_STEP_SUMMARY, when set, gets the verdict as Markdown")] = False,
    notify: Annotated[bool, typer.Option("--notify", help="with --check: announce a regression (Grafana annotation, FNBENCH_WEBHOOK_URL)")] = False,
    band: Annotated[float, typer.Option(help="noise band: relative differences within ± this are 'no change'")] = 0.03,
    html: Annotated[bool, typer.Option("--html", help="write an offline HTML page: with one NAME its trend page (percentiles, cold starts, errors and $/1M over the runs with 95 % bands, change points, verdicts, what changed since the last run and the last week) to RESULTS/trend-NAME.html; with several NAMEs or --all a leaderboard (runtime × region ranked by --rank-by) to RESULTS/leaderboard.html; or to a last argument ending in .html")] = False,
    all_names: Annotated[bool, typer.Option("--all", help="with --html: a leaderboard of every spec name in the history")] = False,
    rank_by: Annotated[str, typer.Option("--rank-by", metavar="METRIC", help="the leaderboard's ranking metric (lower is better): p50, p99, p999, error_rate, init_p50, init_p99, cost")] = "p99",
    junit: Annotated[Path | None, typer.Option("--junit", help="with --check: write JUnit XML (one test case per regression verdict, with its value, bound and sentence) for CI")] = None,
    json_out: JsonOpt = False,
    broker: BrokerOpt = None,
    broker_file: BrokerFileOpt = None,
    results: Annotated[Path, typer.Option(help="results root (without a broker, history entries are RESULTS/<run>/history.json; pages link the runs' reports here)")] = Path("results"),
) -> None:
    """Runs of a spec per target × region, newest first, with a trend glyph per column.

    `fnbench history NAME --html` writes its trend page; `fnbench history A B --html` (or `--all --html`)
    a leaderboard; `fnbench history NAME --check --junit FILE` a JUnit file for CI."""
    from orchestrator.report import junit as junit_report
    from orchestrator.report import markdown as md_report
    from orchestrator.report import trend

    names = list(names or [])
    out_file = Path(names.pop()) if html and names and names[-1].lower().endswith((".html", ".htm")) else None
    if rank_by not in trend.RANK_METRICS:
        raise InputError(f"--rank-by {rank_by!r}: use one of {', '.join(trend.RANK_METRICS)}")
    if junit is not None and not check:
        raise InputError("--junit needs --check (the JUnit file holds the regression verdicts)")
    store = hist.open_history(broker_url(broker, broker_file), results)
    if all_names:
        if not html:
            raise InputError("--all needs --html (it draws the leaderboard)")
        names = store.names()
        if not names:
            raise InputError("no runs recorded in the history")
    if not names:
        raise InputError("give a spec NAME (or --all --html for a leaderboard)")
    if len(names) > 1 or all_names:
        if not html:
            raise InputError(f"{len(names)} names: give one NAME, or add --html for a leaderboard of several")
        if check:
            raise InputError("--check judges one NAME at a time")
        named = {n: store.entries(n, limit=2) for n in names}
        empty = [n for n, e in named.items() if not e]
        if empty:
            raise InputError("no runs recorded for " + ", ".join(repr(n) for n in empty))
        written = trend.write_leaderboard(named, out_file or results / "leaderboard.html", rank_by, results)
        say(f"leaderboard: {written}")
        return
    name = names[0]
    entries = store.entries(name)
    verdict = hist.check(name, entries, band=band) if check else None
    if not entries:
        raise InputError(f"no runs recorded for {name!r}")
    if html:
        written = trend.write_trend(name, entries, out_file or trend.default_trend_path(results, name), results)
        say(f"trend page: {written}")
    if json_out:
        doc: dict[str, Any] = {"name": name, "runs": [{k: v for k, v in e.items() if k != "samples"} for e in entries[:limit]]}
        if verdict is not None:
            doc["check"] = verdict.to_dict()
        dump(doc)
    elif not html or verdict is not None:
        for table in terminal.history_tables(name, entries, limit, band):
            out.print(table)
        if verdict is not None:
            out.print(verdict.message(), highlight=False, markup=False)
            for f in verdict.findings:
                if not f.regressed:
                    out.print(f"  {f.comparison.sentence}", highlight=False, markup=False)
    if verdict is not None:
        if verdict.newest is not None:  # kept with the run it judged: its trend page marks it
            try:
                store.annotate(name, verdict.newest, {"check": verdict.to_dict()})
            except Exception as exc:  # noqa: BLE001 - the verdict stands without its copy in the history
                warn(f"warning: the verdict was not kept with run {verdict.newest}: {exc}")
        if junit is not None:
            say(f"junit: {junit_report.write(junit, junit_report.from_check(verdict))}")
        junit_report.append_step_summary(md_report.check_summary(verdict), warn)
        if notify:
            hist.notify(verdict, warn)
    raise typer.Exit(1 if verdict is not None and verdict.failed else 0)


def _samples_of_run(ref: str, broker: str | None, results: Path) -> tuple[str, list[Any]]:
    """A run's interval blocks: from its folder's intervals.jsonl, else from its history entry."""
    path = Path(ref)
    folder = path if path.is_dir() else results / ref
    if (folder / "intervals.jsonl").exists():
        return folder.name, cmp.samples_from_intervals(read_intervals(folder / "intervals.jsonl"))
    entry = hist.open_history(broker, results).find(ref)
    if entry is None:
        raise InputError(f"{ref}: no results/<run>/intervals.jsonl and no history entry for this run")
    return ref, hist.samples_of(entry)


def compare(
    runs: Annotated[list[str], typer.Argument(metavar="RUN [RUN_B]", help="one run (every target against the Rust one) or two (RUN_B against RUN_A)")],
    band: Annotated[float, typer.Option(help="noise band: a difference whose 95 % interval lies within ± this is 'no change'")] = 0.03,
    baseline: Annotated[str, typer.Option(help="with one run: the runtime the others are compared with")] = "rust",
    replicates: Annotated[int, typer.Option(min=200, max=100000, help="bootstrap replicates")] = 2000,
    json_out: JsonOpt = False,
    broker: BrokerOpt = None,
    broker_file: BrokerFileOpt = None,
    results: Annotated[Path, typer.Option(help="results root")] = Path("results"),
) -> None:
    """Compare with 95 % confidence intervals from a block bootstrap over the runs' interval histograms."""
    if len(runs) > 2:
        raise InputError("give one run (baselines against Rust) or two runs (RUN_B against RUN_A)")
    url = broker_url(broker, broker_file)
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
    if json_out:
        dump([c.to_dict() for c in found])
        return
    out.print(terminal.comparison_table(found))
    for c in found:
        if c.verdict in ("higher", "lower"):
            out.print(f"• {c.sentence}", highlight=False, markup=False)


COMMANDS = (scheduler, history, compare)
GROUPS = {"schedule": schedule_app}
