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
    assert len([p for p in typed.panels if isinstance(p, RowPanel)]) == 5
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
    used = {m for e in exprs(json.loads(BOARD.read_text())) for m in re.findall(r"(fnbench_\w+)\{", e)}
    assert used <= known, used - known
