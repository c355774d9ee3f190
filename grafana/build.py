"""The fnbench Grafana boards as code: builds grafana/dashboards/*.json with grafana-foundation-sdk.

    python grafana/build.py            # regenerate the committed JSON
    python grafana/build.py --check    # exit 1 when the committed JSON is stale

Queries read the metrics in workers/metrics.py.  Percentiles are always histogram_quantile over
buckets summed *before* the quantile (``sum by (le, …) (rate(…_bucket[…]))``), never averaged.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import (
    bargauge,
    common,
    dashboard,
    prometheus,
    stat,
    timeseries,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    BigValueGraphMode,
    LegendDisplayMode,
    LegendPlacement,
    ScaleDistribution,
    VizOrientation,
)
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh, VariableSort

OUT = Path(__file__).resolve().parent / "dashboards"
UID = "fnbench-main"
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
# Every panel filters by the three board variables; run ids are unique, so counters start at 0.
SEL = 'run=~"$run", region=~"$region", target=~"$target"'
QUANTILES = (("p50", "0.5"), ("p90", "0.9"), ("p99", "0.99"), ("p99.9", "0.999"))


def quantile(q: str, metric: str, by: str, extra: str = "", window: str = "$__rate_interval") -> str:
    """histogram_quantile over buckets summed by ``le`` and ``by`` (never an average of percentiles)."""
    sel = SEL + (f", {extra}" if extra else "")
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{sel}}}[{window}])))"


def whole_run_quantile(q: str, metric: str, by: str) -> str:
    """Over the whole selected range: run-scoped counters start at 0, so max_over_time is the total."""
    return f"histogram_quantile({q}, sum by (le, {by}) (max_over_time({metric}_bucket{{{SEL}}}[$__range])))"


def query(expr: str, legend: str, ref: str, *, instant: bool = False, exemplar: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DS)
    if exemplar:  # the slowest requests' trace / request ids on the bucket they fell in (workers/metrics.py)
        q = q.exemplar(True)
    return q.instant() if instant else q.range()


def series(title: str, unit: str, description: str, queries: list[prometheus.Dataquery], *, log: bool = False,
           width: int = 12) -> timeseries.Panel:
    panel = (
        timeseries.Panel().title(title).description(description).unit(unit).datasource(DS).height(8).span(width)
        .line_width(1).fill_opacity(0).span_nulls(True)
        .legend(common.VizLegendOptions().display_mode(LegendDisplayMode.TABLE).placement(LegendPlacement.BOTTOM)
                .show_legend(True).calcs(["mean", "max", "lastNotNull"]))
    )
    if log:
        panel = panel.scale_distribution(common.ScaleDistributionConfig().type(ScaleDistribution.LOG).log(10))
    for q in queries:
        panel = panel.with_target(q)
    return panel


def variable(name: str, label: str, query_expr: str) -> dashboard.QueryVariable:
    return (
        dashboard.QueryVariable(name).label(label).datasource(DS)
        .query({"query": query_expr, "refId": f"var-{name}", "qryType": 1})
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True).include_all(True).all_value(".*")
    )


def throughput_panels() -> list[timeseries.Panel]:
    return [
        series("Intended vs achieved throughput", "reqps",
               "Intended: requests due by the schedule. Achieved: requests that got an outcome other than "
               "dropped. A gap means the target or the generator cannot keep up.",
               [query(f"sum by (target) (rate(fnbench_intended_requests_total{{{SEL}}}[$__rate_interval]))",
                      "{{target}} intended", "A"),
                query(f'sum by (target) (rate(fnbench_requests_total{{{SEL}, outcome!="dropped"}}[$__rate_interval]))',
                      "{{target}} achieved", "B")]),
        series("Region comparison: achieved throughput", "reqps", "Per region, all selected targets together.",
               [query(f'sum by (region) (rate(fnbench_requests_total{{{SEL}, outcome!="dropped"}}[$__rate_interval]))',
                      "{{region}}", "A")], width=6),
        series("Region comparison: p99 per region and target (warm)", "s", "The same target side by side across regions.",
               [query(quantile("0.99", "fnbench_response_time_seconds", "region, target", 'phase="warm"'),
                      "{{target}} {{region}}", "A")], log=True, width=6),
    ]


def latency_panels() -> list[timeseries.Panel]:
    per_target = [
        query(quantile(q, "fnbench_response_time_seconds", "target", 'phase="warm"'), f"{{{{target}}}} {name}", chr(65 + i),
              exemplar=name == "p99")
        for i, (name, q) in enumerate(QUANTILES)
    ]
    rust = quantile("0.99", "fnbench_response_time_seconds", "region", 'phase="warm", runtime="rust"')
    base = quantile("0.99", "fnbench_response_time_seconds", "region, runtime", 'phase="warm", runtime!="rust"')
    return [
        series("Response time p50 / p90 / p99 / p99.9 per target (warm)", "s",
               "From the due time, so queueing counts (coordinated-omission correct). histogram_quantile over "
               "buckets summed across workers; never an average of percentiles. The dots are exemplars: the "
               "slowest requests of each interval with the trace id fnbench sent or the platform's request id "
               "(Prometheus needs --enable-feature=exemplar-storage).", per_target, log=True, width=24),
        series("Rust vs baseline: p99 ratio (warm)", "percentunit",
               "Rust p99 divided by each baseline runtime's p99, per region. Below 100 % Rust is faster.",
               [query(f"{rust} / on (region) group_right {base}", "rust / {{runtime}} ({{region}})", "A")]),
        series("Service time p99 per target (warm)", "s",
               "From the actual send: the target's own latency without generator queueing.",
               [query(quantile("0.99", "fnbench_service_time_seconds", "target", 'phase="warm"'), "{{target}} p99", "A")],
               log=True),
    ]


def error_panels() -> list[timeseries.Panel]:
    errors = f'rate(fnbench_requests_total{{{SEL}, outcome!="ok"}}[$__rate_interval])'
    total = f"rate(fnbench_requests_total{{{SEL}}}[$__rate_interval])"
    return [
        series("Errors by outcome", "reqps", "Every request has exactly one outcome; all but ok are shown.",
               [query(f"sum by (target, outcome) ({errors})", "{{target}} {{outcome}}", "A")]),
        series("Error ratio per target", "percentunit", "Requests with an outcome other than ok, over all requests.",
               # `or … * 0` keeps an explicit 0 for targets without errors.
               [query(f"(sum by (target) ({errors}) or sum by (target) ({total}) * 0) / sum by (target) ({total})",
                      "{{target}}", "A")]),
    ]


def cold_panels() -> list[stat.Panel | bargauge.Panel]:
    cold_count = (
        stat.Panel().title("Cold starts").description("Cold invocations per target over the selected range.")
        .datasource(DS).height(8).span(8).unit("none").graph_mode(BigValueGraphMode.NONE)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .with_target(query(f'sum by (target) (max_over_time(fnbench_requests_total{{{SEL}, phase="cold"}}[$__range]))',
                           "{{target}}", "A", instant=True))
    )
    init = (
        bargauge.Panel().title("Init time p50 / p99 (cold starts)").datasource(DS).height(8).span(16).unit("s")
        .description("Spawn or init to ready, per target, over the selected range.")
        .orientation(VizOrientation.HORIZONTAL)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    for i, (name, q) in enumerate((("p50", "0.5"), ("p99", "0.99"))):
        init = init.with_target(query(whole_run_quantile(q, "fnbench_init_time_seconds", "target"),
                                      f"{{{{target}}}} {name}", chr(65 + i), instant=True))
    return [cold_count, init]


def health_panels() -> list[timeseries.Panel]:
    dropped = f'rate(fnbench_requests_total{{{SEL}, outcome="dropped"}}[$__rate_interval])'
    total = f"rate(fnbench_requests_total{{{SEL}}}[$__rate_interval])"
    return [
        series("Generator health: send lag p99", "s",
               "Actual send minus due time. Growing lag means the generator, not the target, is the bottleneck.",
               [query(quantile("0.99", "fnbench_send_lag_seconds", "target"), "{{target}} p99", "A"),
                query(quantile("0.5", "fnbench_send_lag_seconds", "target"), "{{target}} p50", "B")], width=8),
        series("Generator health: in flight", "none", "Peak requests in flight over the last interval, summed over shards.",
               [query(f"sum by (target) (fnbench_in_flight{{{SEL}}})", "{{target}}", "A")], width=8),
        series("Generator health: dropped and out-of-range", "reqps",
               "Dropped: due requests past max_in_flight's queue bound. Out of range: latencies above the histogram range.",
               [query(f"sum by (target) ({dropped}) or sum by (target) ({total}) * 0", "{{target}} dropped", "A"),
                query(f"sum by (target) (rate(fnbench_out_of_range_values_total{{{SEL}}}[$__rate_interval]))",
                      "{{target}} out of range", "B")], width=8),
    ]


# The aws-lambda invoker's billing counters (workers.metrics.PLATFORM_COUNTERS), from REPORT lines.
COST, REQUEST_FEES, GB_S = "fnbench_lambda_cost_usd_total", "fnbench_lambda_request_cost_usd_total", "fnbench_lambda_gb_seconds_total"
# The invocations billed (those whose REPORT line was read: function errors included, invocations
# without a REPORT left out), the denominator of cost per invocation.
INVOCATIONS = f"fnbench_lambda_billed_requests_total{{{SEL}}}"


def total(metric: str, by: str = "") -> str:
    """A run-scoped counter's total over the selected range (it starts at 0: max_over_time is the total)."""
    return f"sum{f' by ({by}) ' if by else ''}(max_over_time({metric}{{{SEL}}}[$__range]))"


def cost_panels() -> list[timeseries.Panel | stat.Panel]:
    def rate(metric: str) -> str:
        return f"sum by (target) (rate({metric}[$__rate_interval]))"

    compute, fees, invocations = rate(f"{COST}{{{SEL}}}"), rate(f"{REQUEST_FEES}{{{SEL}}}"), rate(INVOCATIONS)
    so_far = (
        stat.Panel().title("Cost so far (AWS Lambda)").datasource(DS).height(8).span(4).unit("currencyUSD")
        .description("Compute cost (AWS Lambda Power Tuning's formula), and with the request fees, of the selected "
                     "runs' aws-lambda targets, from their REPORT lines, up to the end of the selected range.")
        .graph_mode(BigValueGraphMode.NONE)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .with_target(query(total(COST), "compute", "A", instant=True))
        .with_target(query(f"{total(COST)} + {total(REQUEST_FEES)}", "with request fees", "B", instant=True))
    )
    gb_s = (
        stat.Panel().title("GB-seconds so far (AWS Lambda)").datasource(DS).height(8).span(4).unit("suffix: GB-s")
        .description("Billed Duration x Memory Size of the selected runs' aws-lambda invocations, summed.")
        .graph_mode(BigValueGraphMode.NONE)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .with_target(query(total(GB_S), "GB-s", "A", instant=True))
    )
    return [
        series("Cost per million invocations per target (AWS Lambda)", "currencyUSD",
               "Billed cost over billed invocations (those with a REPORT line, function errors included), x 1e6: "
               "compute only (AWS Lambda Power Tuning's formula) and with the request fees.",
               [query(f"{compute} / {invocations} * 1e6", "{{target}} compute", "A"),
                query(f"({compute} + {fees}) / {invocations} * 1e6", "{{target}} with request fees", "B")], width=8),
        series("GB-seconds per second per target (AWS Lambda)", "suffix: GB-s/s",
               "Billed Duration x Memory Size per second of the run, from the REPORT lines.",
               [query(rate(f"{GB_S}{{{SEL}}}"), "{{target}}", "A")], width=8),
        so_far, gb_s,
    ]


def main_board() -> dashboard.Dashboard:
    board = (
        dashboard.Dashboard("fnbench").uid(UID).tags(["fnbench"]).refresh("5s").time("now-30m", "now")
        .timezone("browser").editable()
        .description("Live view of fnbench runs: throughput, CO-correct latency percentiles, errors, cold starts, "
                     "generator health, regions, AWS Lambda cost.")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_variable(variable("run", "run", "label_values(fnbench_intended_requests_total, run)"))
        .with_variable(variable("region", "region", 'label_values(fnbench_intended_requests_total{run=~"$run"}, region)'))
        .with_variable(variable("target", "target",
                                'label_values(fnbench_intended_requests_total{run=~"$run", region=~"$region"}, target)'))
        .annotation(
            dashboard.AnnotationQuery().name("fnbench runs").enable(True).icon_color("#8AB8FF")
            .datasource(DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            # Run start/stop annotations are posted by `fnbench run` with these tags (orchestrator/report/grafana.py).
            .target(dashboard.AnnotationTarget().type("tags").tags(["fnbench"]).match_any(False).limit(100))
        )
    )
    rows = (("Throughput", throughput_panels()), ("Latency", latency_panels()), ("Errors", error_panels()),
            ("Cold starts", cold_panels()), ("Generator health", health_panels()), ("Cost (AWS Lambda)", cost_panels()))
    next_id = 1
    for title, panels in rows:
        board = board.with_row(dashboard.Row(title).id(next_id))
        next_id += 1
        for panel in panels:
            board = board.with_panel(panel.id(next_id))
            next_id += 1
    return board


BOARDS = {"fnbench.json": main_board}


def render() -> dict[str, str]:
    """File name → JSON text, exactly as committed."""
    return {name: json.dumps(make().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n" for name, make in BOARDS.items()}


def main(argv: list[str]) -> int:
    files = render()
    if "--check" in argv:
        stale = [n for n, text in files.items() if not (OUT / n).exists() or (OUT / n).read_text() != text]
        for n in stale:
            print(f"stale: grafana/dashboards/{n}; run `python grafana/build.py`", file=sys.stderr)
        return 1 if stale else 0
    OUT.mkdir(exist_ok=True)
    for n, text in files.items():
        (OUT / n).write_text(text)
        print(f"wrote grafana/dashboards/{n}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
