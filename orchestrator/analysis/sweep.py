"""Memory sweeps: the same load at each Lambda Memory Size, in turn (AWS Lambda Power Tuning inside a
load test).

A spec whose ``aws-lambda`` targets list ``memory_sizes: [128, 512, 1024, 1769]`` runs in steps, one
per size (ascending).  Before a step, the control plane sets MemorySize on every function of the
step (UpdateFunctionConfiguration, waited for until LastUpdateStatus is Successful with the new
RevisionId: workers/platforms/aws_lambda/control.py) — that time is never load.  The step is then an ordinary run
of the one run loop (orchestrator/run/runner.py: warm-up, measured phase, forced cold starts if the spec
asks) in which each swept target is named ``<target>@<size>MB`` and its workload
``<workload>@<size>MB``, so Rust at 512 MB stands beside Go at 512 MB in every table.  A step's run
is kept under ``<run>/steps/<run>.m<size>/``; the sweep's own folder holds every step's intervals,
one result.json (every group, SLO verdicts per size, ``sweep``: the curve per target and the
cheapest size that meets the SLOs) and the HTML report.  The functions' Memory Size is set back to
what it was when the sweep began, also after an interrupted or failed step.  A target on an alias
(``qualifier: live``) has each step published as a new version and the alias moved to it (waited
READY again when it has ``provisioned_concurrency``); the alias is put back on its version after the
sweep (orchestrator/subjects/provisioned.py), so ``--apply`` sets $LATEST only.

The chosen size of a target follows the spec's ``sweep.strategy`` exactly as AWS Lambda Power Tuning
chooses (lambda/analyzer.js: findCheapest, findFastest, findBalanced), among the sizes at which every
SLO of the target passed (with no SLOs, all measured sizes):

- ``cost``: the lowest cost; equal costs → the faster (analyzer.js sorts by cost, then duration);
- ``speed``: the lowest duration; equal durations → the cheaper;
- ``balanced``: the lowest ``w × cost / max cost + (1 − w) × duration / max duration`` with
  ``w = sweep.balanced_weight`` (Power Tuning's balancedWeight, default 0.5: 0 = fastest, 1 = cheapest);
  the maxima are over the candidates.

Ties beyond those keys go to the smaller size (Power Tuning's stats are in power order and V8's
sort is stable).  The inputs: cost = the size's cost per invocation (compute, Power Tuning's
computePrice on each REPORT's Billed Duration, summed by the workers; GB-s per invocation where the
region has no price); duration = the warm group's mean REPORT Duration (Power Tuning: the 20 %-trimmed
mean of Duration + Init Duration over its invocations; fnbench measures cold starts in their own
group and keeps HDR histograms, so the mean is untrimmed; without REPORT lines, the mean response
time).  ``cheapest_mb`` stays the ``cost`` choice; ``choices`` holds all three and ``chosen_mb`` the
spec's.  ``fnbench run --apply`` sets the chosen size on each function after the sweep (the control
plane's UpdateFunctionConfiguration, as Power Tuning's optimizer does with setLambdaPower).

Sizes failing their SLOs are what a sweep finds out, so its exit code is 1 only when some target has
no size meeting them (2, 3 and 130 as for any run).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestrator.analysis import budget, compare
from orchestrator.errors import EXIT_INPUT, EXIT_INTERRUPTED, EXIT_SLO, exit_code
from orchestrator.run import plan as planner
from orchestrator.run import runner
from orchestrator.run.collect import Collector
from orchestrator.run.result import Gap, Group, RunResult
from orchestrator.run.results import RunFolder, read_intervals
from orchestrator.run.spec import Benchmark, SloSpec, sizes, step_name

UPDATE_TIMEOUT_S = 120.0


def _renamed(b: Benchmark) -> dict[str, list[str]]:
    return {t.name: [step_name(t.name, m) for m in sorted(t.memory_sizes)] for t in b.targets if t.memory_sizes}


def expanded_slos(b: Benchmark) -> list[SloSpec]:
    """The spec's SLOs over the sweep's groups: one naming a swept target applies at every size."""
    names = _renamed(b)
    out: list[SloSpec] = []
    for slo in b.slos:
        if slo.target in names:
            out += [slo.model_copy(update={"target": n}) for n in names[slo.target]]
        else:
            out.append(slo)
    return out


def step_spec(b: Benchmark, size: int) -> Benchmark:
    """The plain (sweep-less) benchmark of one step: the targets that list ``size``, renamed."""
    targets = [t.model_copy(update={"name": step_name(t.name, size), "memory_sizes": [],
                                    "workload": step_name(t.workload or "invoke", size)})
               for t in b.targets if size in t.memory_sizes]
    kept = {t.name for t in b.targets if size in t.memory_sizes}
    slos = [s.model_copy(update={"target": step_name(s.target, size)}) if s.target in kept else s
            for s in b.slos if s.target == "*" or s.target in kept]
    return b.model_copy(update={"targets": targets, "slos": slos, "name": f"{b.name}@{size}MB"})


def spec_text(b: Benchmark) -> str:
    return yaml.safe_dump(b.model_dump(mode="json"), sort_keys=False)


def _functions(b: Benchmark, size: int) -> list[tuple[str, str, str]]:
    """(function, region, endpoint_url) of the step, each once."""
    return list(dict.fromkeys((t.function, t.region or "us-east-1", t.endpoint_url)
                              for t in b.targets if size in t.memory_sizes))


@dataclasses.dataclass
class _Controls:
    """One ControlPlane per function, made on first use; the Memory Size each had before the sweep."""

    made: dict[tuple[str, str, str], Any] = dataclasses.field(default_factory=dict)
    original: dict[tuple[str, str, str], int] = dataclasses.field(default_factory=dict)

    def get(self, key: tuple[str, str, str]) -> Any:
        if key not in self.made:
            from workers.platforms.aws_lambda import control as lambda_control

            function, region, endpoint = key
            self.made[key] = lambda_control.Versions(lambda_control.client(region, endpoint or None), function)
        return self.made[key]

    def set_memory(self, key: tuple[str, str, str], size: int) -> str | None:
        control = self.get(key)

        def memory(cfg: dict[str, Any]) -> dict[str, Any]:
            self.original.setdefault(key, int(cfg.get("MemorySize") or 128))
            return {"MemorySize": size}

        return control.update(memory, UPDATE_TIMEOUT_S)

    def point(self, key: tuple[str, str, str], alias: str, provisioned: int) -> str | None:
        """Publish the step's $LATEST and move ``alias`` to it (waited READY with provisioned concurrency)."""
        control = self.get(key)
        problem = control.publish_to_alias(alias, UPDATE_TIMEOUT_S)
        if problem is None and provisioned:
            problem = control.wait_provisioned(alias, 600.0)
        return problem


def _aliases(b: Benchmark, size: int) -> list[tuple[tuple[str, str, str], str, int]]:
    """(function key, alias, provisioned concurrency) of the step's targets on an alias, each once."""
    return list(dict.fromkeys(((t.function, t.region or "us-east-1", t.endpoint_url), t.qualifier,
                               int(getattr(t, "provisioned_concurrency", None) or 0))
                              for t in b.targets if size in t.memory_sizes and t.qualifier not in ("", "$LATEST")))


def run(b: Benchmark, text: str, make_dispatcher: Callable[[], Any], results_root: Path = Path("results"), *,
        run_id: str | None = None, metrics_port: int = 0, console: Console | None = None,
        interactive: bool = True, stop_event: Any = None, html: bool = True, first: Any = None,
        apply: bool = False) -> Any:
    """Run the sweep step by step through the one run loop; returns the merged RunOutcome (``first``:
    the dispatcher of the first step, already made; ``apply``: set each function to its chosen size
    afterwards instead of the size it had)."""
    console = console or Console(stderr=True)
    run_id = run_id or planner.new_run_id(b.name)
    folder = RunFolder.create(results_root, run_id, text)
    steps = sizes(b)
    controls = _Controls()
    errors: list[str] = []
    gaps: list[Gap] = []
    interrupted = False
    start_at: float | None = None
    codes: list[int] = []
    measured: list[Any] = []  # every step's intervals, in order
    spent = budget.BudgetWatch(None, None)  # the budget (max_cost_usd, max_invocations) holds over every step
    aborted_by: dict[str, Any] | None = None
    try:
        for n, size in enumerate(steps, 1):
            if stop_event is not None and stop_event.is_set():
                interrupted = True
                break
            console.print(f"memory sweep [bold]{run_id}[/]: step {n}/{len(steps)}, {size} MB — "
                          "setting Memory Size (control plane, not load)", highlight=False)
            began = time.monotonic()
            failed = [m for key in _functions(b, size) if (m := controls.set_memory(key, size)) is not None]
            if not failed:  # targets on an alias: the step's configuration as a new version, the alias on it
                failed = [m for key, alias, pc in _aliases(b, size) if (m := controls.point(key, alias, pc)) is not None]
            if failed:
                errors += [f"memory sweep at {size} MB: {m}" for m in failed]
                console.print(f"[red]error[/]: {escape('; '.join(failed))}; the sweep stops here", highlight=False)
                break
            console.print(f"  Memory Size {size} MB on {len(_functions(b, size))} function(s) after "
                          f"{time.monotonic() - began:.1f} s", highlight=False)
            step = _within_budget(step_spec(b, size), b, spent)
            try:
                dispatcher, first = first or make_dispatcher(), None
                outcome = runner.run(step, spec_text(step), dispatcher, folder.path / "steps",
                                     run_id=f"{run_id}.m{size}", metrics_port=metrics_port, console=console,
                                     interactive=interactive, stop_event=stop_event, html=False)
            except KeyboardInterrupt:
                interrupted = True
                break
            codes.append(outcome.exit_code)
            r = outcome.result
            start_at = start_at if start_at is not None else r.start_at
            gaps += list(r.gaps)
            errors += list(r.errors)
            step_file = outcome.folder / "intervals.jsonl"
            for iv in read_intervals(step_file) if step_file.exists() else ():
                folder.add(iv)
                measured.append(iv)
                spent.add(iv)
            if r.interrupted or outcome.exit_code == EXIT_INTERRUPTED:
                interrupted = True
                break
            if r.aborted_by is not None and "budget" in r.aborted_by:
                aborted_by = dict(r.aborted_by)
                console.print(f"memory sweep: stopped at {size} MB by its budget ({aborted_by['budget']})",
                              highlight=False)
                break
    finally:
        restored = _restore(controls, console)
        errors += restored
    folder.close()
    result, code = conclude(b, run_id, measured, gaps, errors, name=b.name, interrupted=interrupted,
                            incomplete=bool(folder.errors), start_at=start_at)
    if aborted_by is not None:  # stopped by its budget: exit 1, as an SLO abort (and nothing applied)
        result = dataclasses.replace(result, aborted_by=aborted_by)
        code = max(code, EXIT_SLO)
    elif apply and not interrupted and result.sweep is not None:
        problems = apply_choices(b, result.sweep, controls, console)
        if problems:
            result = dataclasses.replace(result, errors=tuple(result.errors) + tuple(problems))
            code = max(code, exit_code(slo_failed=False, errors=True, interrupted=False, lost_load=False))
    if interrupted:
        code = EXIT_INTERRUPTED
    elif any(c == EXIT_INPUT for c in codes):
        code = max(code, EXIT_INPUT)
    return runner.finish(result, code, folder, console, html)


def _within_budget(step: Benchmark, b: Benchmark, spent: budget.BudgetWatch) -> Benchmark:
    """A step's budget: what the sweep's budget leaves after the steps before it."""
    update: dict[str, Any] = {}
    if b.max_cost_usd is not None:
        update["max_cost_usd"] = b.max_cost_usd - spent.cost_usd
    if b.max_invocations is not None:
        update["max_invocations"] = b.max_invocations - spent.invocations
    return step.model_copy(update=update) if update else step


def apply_choices(b: Benchmark, sweep: dict[str, Any], controls: _Controls, console: Console) -> list[str]:
    """``--apply``: set every swept function to its chosen size (Power Tuning's optimizer step)."""
    problems = []
    by_name = {t.name: t for t in b.targets if t.memory_sizes}
    for key, entry in sweep.get("targets", {}).items():
        t = by_name.get(key.split("/", 1)[-1])
        size = entry.get("chosen_mb")
        if t is None or size is None:
            console.print(f"memory sweep --apply: {key} has no chosen size; its Memory Size stays", highlight=False)
            continue
        fn = (t.function, t.region or "us-east-1", t.endpoint_url)  # the key _functions gives the steps
        if (m := controls.get(fn).update(lambda cfg, s=size: {"MemorySize": s}, UPDATE_TIMEOUT_S)) is not None:
            problems.append(f"memory sweep --apply: could not set {t.function} to {size} MB: {m}")
            console.print(f"[red]error[/]: {escape(problems[-1])}", highlight=False)
        else:
            entry["applied_mb"] = size
            console.print(f"memory sweep --apply: {t.function} set to {size} MB "
                          f"(strategy {sweep.get('strategy', 'cost')})", highlight=False)
    return problems


def _restore(controls: _Controls, console: Console) -> list[str]:
    """Set every function back to the Memory Size it had before the sweep."""
    problems = []
    for key, size in controls.original.items():
        if (m := controls.get(key).update(lambda cfg, s=size: {"MemorySize": s}, UPDATE_TIMEOUT_S)) is not None:
            problems.append(f"memory sweep: could not set {key[0]} back to {size} MB: {m}")
            console.print(f"[red]error[/]: {escape(problems[-1])}", highlight=False)
        else:
            console.print(f"memory sweep: {key[0]} back at {size} MB", highlight=False)
    return problems


def conclude(b: Benchmark, run_id: str, intervals: Sequence[Any], gaps: Sequence[Gap], errors: Sequence[str],
             **fields: Any) -> tuple[RunResult, int]:
    """The sweep's RunResult from every step's intervals: judged by the expanded SLOs, with ``sweep``
    (also ``fnbench report`` of a sweep's folder)."""
    collector = Collector(run_id, planner.phase_seconds(b))
    collector.add_all(intervals)
    result = collector.result(gaps=gaps, errors=tuple(dict.fromkeys(errors)), **fields)
    result, _ = compare.judge(result, expanded_slos(b))
    result = dataclasses.replace(result, sweep=summary(b, result))
    # A size failing its SLOs is what a sweep is for: it fails (exit 1) only when some target has
    # no size that meets them.
    assert result.sweep is not None
    unmet = any(entry["cheapest_mb"] is None for entry in result.sweep["targets"].values())
    return result, exit_code(slo_failed=unmet, errors=bool(result.errors), interrupted=result.interrupted,
                             lost_load=result.lost_shards > 0)


def _point(g: Group | None, cold: Group | None, verdicts: list[Any]) -> dict[str, Any]:
    point: dict[str, Any] = {}
    if g is not None:
        cost = g.cost or {}
        point.update({
            "p50_ms": g.response_ms.p50, "p99_ms": g.response_ms.p99, "mean_ms": g.response_ms.mean,
            "achieved_rps": g.achieved_rps,
            "error_rate": g.error_rate,
            "duration_p50_ms": g.platform_ms.p50 if g.platform_ms else None,
            "duration_p99_ms": g.platform_ms.p99 if g.platform_ms else None,
            "duration_mean_ms": g.platform_ms.mean if g.platform_ms else None,
            "billed_p50_ms": g.billed_ms.p50 if g.billed_ms else None,
            "max_memory_used_mb": g.max_memory_used_mb,
            "per_million_usd": cost.get("per_million_usd"),
            "per_million_with_requests_usd": cost.get("per_million_with_requests_usd"),
            "gb_s_per_invocation": cost["gb_s"] / cost["invocations"] if cost.get("invocations") else None,
        })
    if cold is not None and cold.init_duration_ms is not None:
        point["init_duration_p50_ms"] = cold.init_duration_ms.p50
    # No verdict without data: a size whose warm group served no successful request (or failed to
    # set up) has no point on the curve; its SLOs are NO DATA (failed) and it is never the cheapest.
    point["measured"] = g is not None and g.ok > 0 and not g.failed
    point["slo_passed"] = (all(v.passed for v in verdicts) if verdicts else None) if point["measured"] else \
        (False if verdicts else None)
    if not point["measured"]:
        point["no_data"] = True
    return point


def summary(b: Benchmark, result: RunResult) -> dict[str, Any]:
    """Per swept target and region: the curve (one point per size) and the cheapest size meeting the SLOs."""
    strategy, weight = b.sweep.strategy, b.sweep.balanced_weight
    out: dict[str, Any] = {"sizes_mb": sizes(b), "strategy": strategy, "balanced_weight": weight, "targets": {}}
    regions = sorted({g.region for g in result.groups}) or list(b.regions)
    for t in b.targets:
        if not t.memory_sizes:
            continue
        for region in regions:
            curve: dict[str, Any] = {}
            for m in sorted(t.memory_sizes):
                name = step_name(t.name, m)
                warm = next((g for g in result.groups if g.target == name and g.region == region and g.phase == "warm"), None)
                cold = next((g for g in result.groups if g.target == name and g.region == region and g.phase == "cold"), None)
                verdicts = [v for v in result.slo if v.target == name and v.region == region]
                curve[str(m)] = _point(warm, cold, verdicts)
            key = t.name if len(regions) == 1 else f"{region}/{t.name}"
            choices = {s: choose(curve, bool(b.slos), s, weight) for s in ("cost", "speed", "balanced")}
            out["targets"][key] = {"runtime": t.runtime, "region": region, "function": t.function,
                                   "curve": curve, "cheapest_mb": choices["cost"], "choices": choices,
                                   "chosen_mb": choices[strategy],
                                   "rule": (f"strategy {strategy} (AWS Lambda Power Tuning) among sizes whose SLOs all pass"
                                            if b.slos else f"strategy {strategy} (AWS Lambda Power Tuning); the spec has no SLOs")}
    return out


def _cost_of(p: dict[str, Any]) -> float | None:
    """A point's cost per invocation: USD (Power Tuning's computePrice), else GB-s where unpriced."""
    if p.get("per_million_usd") is not None:
        return float(p["per_million_usd"]) / 1e6
    value = p.get("gb_s_per_invocation")
    return None if value is None else float(value)


def _duration_of(p: dict[str, Any]) -> float | None:
    """A point's duration: the mean REPORT Duration (Power Tuning's averageDuration), else the mean response."""
    value = p.get("duration_mean_ms")
    if value is None:
        value = p.get("mean_ms")
    return None if value is None else float(value)


def choose(curve: dict[str, Any], with_slos: bool, strategy: str = "cost", weight: float = 0.5) -> int | None:
    """The size AWS Lambda Power Tuning's analyzer (lambda/analyzer.js) would choose among the measured
    sizes that meet the SLOs: findCheapest / findFastest / findBalanced with their tie-breaking."""
    stats = []
    for m in sorted(curve, key=int):  # Power Tuning's stats are in power order; its sort is stable
        p = curve[m]
        if not p.get("measured") or (with_slos and not p.get("slo_passed")):
            continue
        cost, duration = _cost_of(p), _duration_of(p)
        if cost is None or duration is None or not duration:  # analyzer.js: filter(stat => stat.averageDuration)
            continue
        stats.append((int(m), cost, duration))
    if not stats:
        return None
    if strategy == "cost":  # findCheapest: sort by cost; same cost → fastest
        return min(stats, key=lambda s: (s[1], s[2]))[0]
    if strategy == "speed":  # findFastest: sort by duration; same duration → cheapest
        return min(stats, key=lambda s: (s[2], s[1]))[0]
    if strategy != "balanced":
        raise ValueError(f"unknown strategy {strategy!r}")
    # findBalanced: weight * cost / maxCost + (1 - weight) * duration / maxDuration, minimised.
    weight = min(max(weight, 0.0), 1.0)
    max_cost = max(s[1] for s in stats)
    max_duration = max(s[2] for s in stats)

    def value(s: tuple[int, float, float]) -> float:
        return weight * s[1] / max_cost + (1 - weight) * s[2] / max_duration if max_cost else (1 - weight) * s[2] / max_duration

    return min(stats, key=value)[0]  # min() keeps the first of equal values: the smaller size


def _marks(entry: dict[str, Any], mb: int) -> str:
    """`` *`` on the chosen size, and which strategies choose it (C cost, S speed, B balanced)."""
    choices = entry.get("choices") or {"cost": entry.get("cheapest_mb")}
    letters = "".join(s[0].upper() for s in ("cost", "speed", "balanced") if choices.get(s) == mb)
    chosen = entry.get("chosen_mb", entry.get("cheapest_mb"))
    return (" *" if chosen == mb else "") + (f" {letters}" if letters else "")


def table(sweep: dict[str, Any]) -> Table:
    """The sweep's curves: one row per target and size; the cheapest size meeting the SLOs marked."""
    t = Table(title=f"memory sweep: the same load at each Memory Size (chosen by strategy "
                    f"{sweep.get('strategy', 'cost')}: *; cost C, speed S, balanced B)", header_style="bold")
    for col in ("target", "runtime", "MB", "p50 ms", "p99 ms", "dur p99 ms", "init p50 ms", "max mem MB",
                "$/1M", "SLOs"):
        t.add_column(col, justify="left" if col in ("target", "runtime") else "right")

    def ms(v: float | None) -> str:
        return "-" if v is None else (f"{v:.3f}" if v < 10 else f"{v:.1f}")

    for name, entry in sweep.get("targets", {}).items():
        for m, p in entry["curve"].items():
            mark = _marks(entry, int(m))
            slo = "NO DATA" if p.get("no_data") else {True: "pass", False: "FAIL", None: "-"}[p.get("slo_passed")]
            usd = p.get("per_million_usd")
            t.add_row(name, entry["runtime"], f"{m}{mark}", ms(p.get("p50_ms")), ms(p.get("p99_ms")),
                      ms(p.get("duration_p99_ms")), ms(p.get("init_duration_p50_ms")),
                      "-" if p.get("max_memory_used_mb") is None else f"{p['max_memory_used_mb']:g}",
                      "-" if usd is None else f"{usd:.4g}", slo)
    return t
