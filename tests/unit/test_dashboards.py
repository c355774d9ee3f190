"""The committed Grafana boards: current with the builder, typed by grafana-foundation-sdk, queries by the rules."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BOARD = ROOT / "grafana" / "dashboards" / "fnbench.json"
sdk = pytest.importorskip("grafana_foundation_sdk", reason="dev extra: grafana-foundation-sdk")


def builder():
    spec = importlib.util.spec_from_file_location("fnbench_grafana_build", ROOT / "grafana" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exprs(board: dict) -> list[str]:
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def test_committed_boards_match_the_builder():
    rendered = builder().render()
    committed = {p.name: p.read_text() for p in (ROOT / "grafana" / "dashboards").glob("*.json")}
    assert committed == rendered, "stale: run `python grafana/build.py` and commit grafana/dashboards/"


def test_board_json_decodes_into_the_sdk_types_without_loss():
    from grafana_foundation_sdk.cog import plugins
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import prometheus
    from grafana_foundation_sdk.models.dashboard import Dashboard, Panel, RowPanel

    plugins.register_default_plugins()
    raw = json.loads(BOARD.read_text())
    typed = Dashboard.from_json(raw)
    # A key the typed model does not know would be dropped here, and the round trip would differ.
    assert json.loads(json.dumps(typed, cls=JSONEncoder)) == raw
    panels = [p for p in typed.panels if isinstance(p, Panel)]
    assert len([p for p in typed.panels if isinstance(p, RowPanel)]) == 6
    for p in panels:
        assert p.targets and all(isinstance(t, prometheus.Dataquery) for t in p.targets), p.title
        assert p.type_val in {"timeseries", "stat", "bargauge"} and not isinstance(p.options, dict), p.title


def test_panel_ids_unique_and_panels_do_not_overlap():
    panels = json.loads(BOARD.read_text())["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = set()
    for p in panels:
        g = p["gridPos"]
        new = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & new, p["title"]
        assert g["x"] + g["w"] <= 24
        cells |= new


def test_percentiles_only_from_histogram_quantile_over_summed_buckets():
    board = json.loads(BOARD.read_text())
    for expr in exprs(board):
        for m in re.finditer(r"histogram_quantile\(([\d.]+), (\w+) by \(le, [\w, ]+\) \((\w+)\((\w+)_bucket\{", expr):
            assert m.group(2) == "sum" and m.group(3) in ("rate", "max_over_time"), expr
        assert "_bucket" not in expr or "histogram_quantile" in expr, expr
        assert not re.search(r"avg[_ (].*quantile|quantile.*avg[_ (]", expr), f"averaged percentile: {expr}"
    assert sum(e.count("histogram_quantile") for e in exprs(board)) == sum(e.count("_bucket{") for e in exprs(board))


def test_every_query_filters_by_the_board_variables():
    for expr in exprs(json.loads(BOARD.read_text())):
        for selector in re.findall(r"fnbench_\w+\{([^}]*)\}", expr):
            assert 'run=~"$run", region=~"$region", target=~"$target"' in selector, expr


def test_board_covers_the_issue_panels():
    titles = " | ".join(p["title"] for p in json.loads(BOARD.read_text())["panels"])
    for words in ("Intended vs achieved", "p50 / p90 / p99 / p99.9", "Rust vs baseline", "Errors by outcome",
                  "Cold starts", "Init time", "send lag", "in flight", "dropped", "Region comparison"):
        assert words in titles, words
    annotations = json.loads(BOARD.read_text())["annotations"]["list"]
    assert any(a["target"]["tags"] == ["fnbench"] for a in annotations)


def test_metric_names_exist_in_workers_metrics():
    from workers import metrics

    known = {f"{n}_bucket" for n in metrics.HISTOGRAMS} | {"fnbench_requests_total", "fnbench_intended_requests_total",
                                                          "fnbench_out_of_range_values_total", "fnbench_in_flight",
                                                          "fnbench_intended_rps"}
    known |= {f"{name}_total" for name, _ in metrics.PLATFORM_COUNTERS.values()}
    used = {m for e in exprs(json.loads(BOARD.read_text())) for m in re.findall(r"(fnbench_\w+)\{", e)}
    assert used <= known, used - known


def rows(board: dict) -> dict[str, list[dict]]:
    """Row title → the panels under it, in board order."""
    out: dict[str, list[dict]] = {}
    current = None
    for p in board["panels"]:
        if p["type"] == "row":
            current = out.setdefault(p["title"], [])
        else:
            assert current is not None, f"{p['title']}: a panel above the first row"
            current.append(p)
    return out


def test_cost_row_reads_the_lambda_billing_counters():
    from workers import metrics

    cost = rows(json.loads(BOARD.read_text()))["Cost (AWS Lambda)"]
    by_title = {p["title"].split(" (AWS Lambda)")[0]: p for p in cost}
    assert set(by_title) == {"Cost per million invocations per target", "GB-seconds per second per target",
                             "Cost so far", "GB-seconds so far"}
    counters = {name: f"{prom}_total" for name, (prom, _) in metrics.PLATFORM_COUNTERS.items()}
    per_million = {t["refId"]: t["expr"] for t in by_title["Cost per million invocations per target"]["targets"]}
    # Cost over invocations per target, x 1e6: compute only (A), and with the request fees (B).
    # … the invocations billed (every REPORT read), not the successful responses.
    assert per_million["A"].endswith(f'/ sum by (target) (rate({counters["billed_requests"]}{{run=~"$run", region=~"$region", '
                                     'target=~"$target"}[$__rate_interval])) * 1e6'), per_million["A"]
    assert counters["cost_usd"] in per_million["A"] and counters["request_usd"] not in per_million["A"]
    assert counters["cost_usd"] in per_million["B"] and counters["request_usd"] in per_million["B"]
    assert all(e.count("sum by (target) (rate(") == e.count("rate(") for e in per_million.values())
    assert [t["expr"] for t in by_title["GB-seconds per second per target"]["targets"]] == [
        f'sum by (target) (rate({counters["gb_s"]}{{run=~"$run", region=~"$region", target=~"$target"}}[$__rate_interval]))']
    for title in ("Cost so far", "GB-seconds so far"):
        panel = by_title[title]
        assert panel["type"] == "stat" and all(t["instant"] for t in panel["targets"]), title
        assert all("max_over_time(" in t["expr"] and "[$__range]" in t["expr"] for t in panel["targets"]), title
    assert {by_title[t]["fieldConfig"]["defaults"]["unit"] for t in ("Cost per million invocations per target", "Cost so far")} == {
        "currencyUSD"}
