"""The calibration's judge: closed-form quantiles of the injected distribution, not fnbench's own summary."""

import math
import random

import pytest

from orchestrator.analysis.calibrate import (
    PERCENTILES,
    SyntheticConfig,
    judge,
    model_cdf,
    model_quantile_ms,
    sampling_band_ms,
)


def test_lognormal_quantiles_are_closed_form():
    cfg = SyntheticConfig(median_ms=50, sigma=0.5)
    assert model_quantile_ms(cfg, 0.5) == pytest.approx(50.0)
    assert model_quantile_ms(cfg, 0.99) == pytest.approx(50 * math.exp(0.5 * 2.3263478740), rel=1e-9)
    assert model_quantile_ms(cfg, 0.999) == pytest.approx(50 * math.exp(0.5 * 3.0902323062), rel=1e-9)


def simulate_stalls(cfg: SyntheticConfig, n: int, seed: int) -> list[float]:
    """The synthetic server's own rule, drawn directly: leave times uniform over many stall periods."""
    rng = random.Random(seed)
    every_ms, out = cfg.stall_every_s * 1000.0, []
    for _ in range(n):
        d = rng.lognormvariate(math.log(cfg.median_ms), cfg.sigma)
        into = (rng.uniform(0, every_ms * 1000) + d) % every_ms
        out.append(d + (cfg.stall_ms - into if into < cfg.stall_ms else 0.0))
    return sorted(out)


def test_stall_model_matches_the_servers_rule_drawn_directly():
    cfg = SyntheticConfig(median_ms=20, sigma=0.4, stall_every_s=1.0, stall_ms=200)
    draws = simulate_stalls(cfg, 200_000, seed=3)
    for p in (0.5, 0.8, 0.9, 0.95, 0.99):
        empirical = draws[int(p * len(draws))]
        lo, hi = sampling_band_ms(cfg, p, len(draws))
        assert lo <= empirical <= hi, (p, empirical, lo, hi)
    assert model_cdf(cfg, 1e9) == pytest.approx(1.0)


def test_sampling_band_narrows_with_more_samples():
    cfg = SyntheticConfig(median_ms=50, sigma=0.5)
    narrow, wide = sampling_band_ms(cfg, 0.99, 100_000), sampling_band_ms(cfg, 0.99, 1_000)
    assert wide[0] < narrow[0] < model_quantile_ms(cfg, 0.99) < narrow[1] < wide[1]


def test_a_histogram_bug_shared_by_measurement_and_truth_fails_against_the_model():
    cfg = SyntheticConfig(median_ms=50, sigma=0.5)
    right = {k: model_quantile_ms(cfg, p) for k, p in PERCENTILES.items()}
    assert judge(cfg, right, right, 200_000, 3.0)["pass"]
    # The same 10 % error in both summaries (one shared bug): the truth comparison sees nothing.
    wrong = {**right, "p99": right["p99"] * 1.10}
    verdict = judge(cfg, wrong, wrong, 200_000, 3.0)
    assert verdict["stats"]["p99"]["error_pct"] == 0.0
    assert not verdict["stats"]["p99"]["pass"] and not verdict["pass"]
    assert verdict["stats"]["p99"]["beyond_band_pct"] > 3.0


def test_no_measurement_is_no_pass():
    cfg = SyntheticConfig()
    verdict = judge(cfg, {}, {}, 0, 3.0)
    assert not verdict["pass"] and all(not s["pass"] for s in verdict["stats"].values())
