"""Memory sweeps (orchestrator/analysis/sweep.py) through `fnbench run`, on the local Lambda with the real
runtime clients: the same load at each Memory Size, set by UpdateFunctionConfiguration and waited
for; every group and the curve in one result.json; the functions set back afterwards."""

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from lambda_emulator import server as lambda_local
from orchestrator.analysis import cost
from tests.servers import need
from workers.platforms.aws_lambda.sigv4 import Credentials

pytestmark = pytest.mark.integration

FNBENCH = [sys.executable, "-m", "orchestrator.cli"]
ROOT = Path(__file__).resolve().parents[2]
SIZES = (128, 1769)


def fnbench(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="fnbench", AWS_SECRET_ACCESS_KEY="fnbench")  # the local Lambda's credentials
    return subprocess.run([*FNBENCH, *args], capture_output=True, text=True, cwd=ROOT, timeout=240, env=env)


def sweep_spec(tmp_path: Path, endpoint: str, extra: str = "") -> Path:
    body = "{workload: hash, params: {data: fnbench, rounds: 50}}"
    targets = "".join(
        f"  - {{name: {r}-hash, runtime: {r}, platform: aws-lambda, function: {r}, endpoint_url: '{endpoint}', "
        f"workload: hash, body: {body}, memory_sizes: [{', '.join(map(str, SIZES))}]}}\n"
        for r in ("rust", "go"))
    p = tmp_path / "sweep.yaml"
    p.write_text(f"name: sweep\ntargets:\n{targets}load: {{executor: constant, rps: 15, max_in_flight: 4}}\n"
                 "duration: 2s\nwarmup: 1s\nflush_interval: 1s\n"
                 "cold_start: {enabled: true, invocations: 2, rps: 4}\n"
                 "slos:\n  - {target: '*', metric: error_rate, max: 0.0}\n" + extra)
    return p


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    try:
        fns = lambda_local.make_functions(["rust", "go"], memory_mb=256, reserved=6)
    except FileNotFoundError as exc:
        need(False, str(exc))
    tmp = tmp_path_factory.mktemp("sweep")
    with lambda_local.Background(fns, credentials=Credentials("fnbench", "fnbench")) as lam:
        spec = sweep_spec(tmp, lam.endpoint)
        r = fnbench("run", str(spec), "--results", str(tmp / "results"), "--metrics-port", "0", "--workers", "1",
                    "--run-id", "sw", "--no-html")
        after = lam.call(lambda s: {n: f.memory_mb for n, f in s.functions.items()})
        yield r, tmp / "results" / "sw", after


def test_each_size_is_measured_and_the_functions_are_set_back(swept):
    r, folder, after = swept
    assert r.returncode == 0, r.stderr[-3000:]
    result = orjson.loads((folder / "result.json").read_bytes())
    names = {(g["target"], g["phase"]) for g in result["groups"]}
    assert names == {(f"{t}@{m}MB", p) for t in ("rust-hash", "go-hash") for m in SIZES for p in ("warm", "cold")}
    assert after == {"rust": 256, "go": 256}  # what they had before the sweep
    price = cost.price_for("us-east-1", "x86_64")
    for g in result["groups"]:
        size = int(g["target"].split("@")[1][:-2])
        assert g["outcomes"] == {"ok": g["completed"]} and g["completed"] > 0
        # Each invocation was billed at the step's Memory Size: cost per invocation = mean billed ms
        # x Power Tuning's price per ms at 128 MB x size/128 (billed ms are whole ms).
        per_invocation = g["cost"]["per_invocation_usd"]
        assert per_invocation == pytest.approx(g["billed_ms"]["mean"] * price.per_ms_128mb * size / 128, rel=0.02)
        if g["phase"] == "cold":
            assert g["cold_starts"] == g["completed"] == 2 and g["init_duration_ms"]["p50"] > 0
    # Each step is a run of its own, kept under steps/.
    assert sorted(p.name for p in (folder / "steps").iterdir()) == [f"sw.m{m}" for m in SIZES]


def test_the_curve_and_the_cheapest_size(swept):
    r, folder, _ = swept
    sweep = orjson.loads((folder / "result.json").read_bytes())["sweep"]
    assert sweep["sizes_mb"] == list(SIZES)
    for name in ("rust-hash", "go-hash"):
        entry = sweep["targets"][name]
        curve = entry["curve"]
        assert list(curve) == [str(m) for m in SIZES]
        assert all(p["measured"] and p["slo_passed"] and p["per_million_usd"] > 0 for p in curve.values())
        cheapest = min(curve, key=lambda m: (curve[m]["per_million_usd"], int(m)))
        assert entry["cheapest_mb"] == int(cheapest)
    # The table says it; Rust at each size stands beside Go at the same size.
    assert "memory sweep" in r.stdout and "rust-hash" in r.stdout
    assert "hash@128MB" in r.stdout and "hash@1769MB" in r.stdout


def test_report_rebuilds_the_same_sweep(swept):
    _, folder, _ = swept
    again = fnbench("report", str(folder), "--json")
    assert again.returncode == 0, again.stderr
    rebuilt = orjson.loads(again.stdout)
    saved = orjson.loads((folder / "result.json").read_bytes())
    assert rebuilt["sweep"] == saved["sweep"]
    assert [g["target"] for g in rebuilt["groups"]] == [g["target"] for g in saved["groups"]]


def test_a_sweep_on_a_target_that_is_not_lambda_is_bad_input(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: bad\ntargets:\n  - {name: t, url: 'http://127.0.0.1:1/', memory_sizes: [128, 128, 64]}\n")
    r = fnbench("validate", str(p))
    assert r.returncode == 2
    assert "targets[0].memory_sizes[2]" in r.stderr  # below Lambda's 128 MB
    p.write_text("name: bad\ntargets:\n  - {name: t, url: 'http://127.0.0.1:1/', memory_sizes: [128, 128]}\n"
                 "  - {name: u, url: 'http://127.0.0.1:1/'}\n")
    r = fnbench("validate", str(p))
    assert r.returncode == 2
    assert "targets[0].memory_sizes: a memory sweep sets a Lambda function's Memory Size" in r.stderr
    assert "targets[0].memory_sizes: each size once" in r.stderr
    assert "targets[1] have no memory_sizes" in r.stderr


def test_the_html_report_has_the_sweep(swept, tmp_path):
    _, folder, _ = swept
    out = tmp_path / "report.html"
    r = fnbench("report", str(folder), "--html", str(out))
    assert r.returncode == 0, r.stderr
    page = out.read_text()
    assert "Memory sweep" in page and 'class="sweep"' in page
    assert page.count("<td>rust-hash</td>") == len(SIZES) and page.count("<td>go-hash</td>") == len(SIZES)


def test_apply_sets_the_size_the_strategy_chose_and_the_report_draws_the_frontier(tmp_path):
    try:
        fns = lambda_local.make_functions(["rust", "go"], memory_mb=256, reserved=6)
    except FileNotFoundError as exc:
        need(False, str(exc))
    with lambda_local.Background(fns, credentials=Credentials("fnbench", "fnbench")) as lam:
        spec = sweep_spec(tmp_path, lam.endpoint, "sweep: {strategy: balanced, balanced_weight: 0.3}\n")
        r = fnbench("run", str(spec), "--results", str(tmp_path / "results"), "--metrics-port", "0", "--workers", "1",
                    "--run-id", "ap", "--apply")
        after = lam.call(lambda s: {n: f.memory_mb for n, f in s.functions.items()})
    assert r.returncode == 0, r.stderr[-3000:]
    folder = tmp_path / "results" / "ap"
    sweep = orjson.loads((folder / "result.json").read_bytes())["sweep"]
    assert (sweep["strategy"], sweep["balanced_weight"]) == ("balanced", 0.3)
    chosen = {}
    for name, fn in (("rust-hash", "rust"), ("go-hash", "go")):
        entry = sweep["targets"][name]
        curve = entry["curve"]
        # Power Tuning's findBalanced over the measured points, recomputed here from the curve.
        stats = [(int(m), p["per_million_usd"], p["duration_mean_ms"]) for m, p in curve.items()]
        top_cost, top_duration = max(s[1] for s in stats), max(s[2] for s in stats)
        best = min(stats, key=lambda s: 0.3 * s[1] / top_cost + 0.7 * s[2] / top_duration)[0]
        assert entry["chosen_mb"] == entry["choices"]["balanced"] == best
        assert entry["choices"]["cost"] == entry["cheapest_mb"]
        chosen[fn] = best
    assert after == chosen  # --apply: each function now has the size its strategy chose
    assert "set to" in r.stderr and "strategy balanced" in r.stderr
    page = (folder / "report.html").read_text()
    data = orjson.loads(page.split('<script type="application/json" id="fnbench-data">', 1)[1].split("</script>", 1)[0])
    frontier = next(c for c in data["charts"] if c["id"] == "frontier")
    assert frontier["kind"] == "frontier" and {s["label"] for s in frontier["series"]} == {"rust-hash (rust)", "go-hash (go)"}
    for s in frontier["series"]:
        # every size is a point: its p99 on x, its USD per million on y, its Memory Size as the label
        assert sorted(label.split()[0] for label in s["labels"] if label) == sorted(str(m) for m in SIZES)
    # In a browser: the frontier is drawn, and hovering a point shows its cost and its Memory Size.
    from tests.integration.test_report_html import DRAWN, Browser, hover_value

    b = Browser()
    try:
        b.open((folder / "report.html").as_uri())
        assert b.problems() == []
        drawn = b.eval(DRAWN)["frontier"]
        assert min(drawn["counts"]) >= 20, drawn  # each runtime's line through its sizes
        rust = next(s for s in frontier["series"] if s["label"] == "rust-hash (rust)")
        i = next(k for k, label in enumerate(rust["labels"]) if label)
        x_shown, value = hover_value(b, "frontier", "rust-hash (rust)", frontier["x"][i])
        assert x_shown == f"{frontier['x'][i]} ms" and value.endswith(f"@ {rust['labels'][i]}")
        assert float(value.split(" @ ")[0]) == rust["values"][i]
        assert b.problems() == []
    finally:
        b.close()
