"""Coverage of the block-bootstrap intervals of ``fnbench compare`` on synthetic runs with a known shift.

Each repetition builds two runs of ``blocks`` intervals (``per_block`` lognormal response times each,
every interval with its own random slowness, as real minutes differ), encodes every interval as fnbench's
HDR histogram, and compares them with ``orchestrator.analysis.compare.bootstrap``.  Run B is run A scaled by
``shift`` (0.73: 27 % lower), so the true change of every percentile is exactly ``shift - 1``; the
interval covers the truth when ``low <= shift - 1 <= high``.  With ``shift = 1`` (identical
distributions) it counts how often the verdict is "no change" (the interval inside ±3 %).

    python bench/bootstrap_coverage.py [--reps 200] [--blocks 40] [--per-block 1500]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.analysis.compare import Block, bootstrap, verdict_of  # noqa: E402
from workers import histograms  # noqa: E402

METRICS = ("p50", "p99", "p999", "error_rate")


def _histogram(values_us: np.ndarray) -> Any:
    """An HDR histogram of fnbench's layout holding ``values_us`` (histograms.fill's slot arithmetic, in numpy)."""
    h = histograms.new_histogram()
    unit, half_mag, half = h.unit_magnitude, h.sub_bucket_half_count_magnitude, h.sub_bucket_half_count
    top = half_mag + 1 + unit
    v = np.minimum(values_us, histograms.HIGHEST_US)
    bucket = np.floor(np.log2(v | h.sub_bucket_mask)).astype(np.int64) + 1 - top
    index = ((bucket + 1) << half_mag) + (v >> (bucket + unit)) - half
    counts = np.ctypeslib.as_array(h.counts)
    counts += np.bincount(index, minlength=len(counts)).astype(counts.dtype)
    h.total_count += int(v.size)
    h.min_value, h.max_value = int(v.min()), int(v.max())
    return h


def synthetic_run(rng: np.random.Generator, blocks: int, per_block: int, scale: float = 1.0,
                  median_ms: float = 20.0, sigma: float = 0.5, block_sigma: float = 0.01,
                  error_rate: float = 0.002) -> list[Block]:
    out = []
    for _ in range(blocks):
        slowness = np.exp(rng.normal(0.0, block_sigma))  # this interval's own level
        values_us = rng.lognormal(np.log(median_ms * 1000.0 * slowness * scale), sigma, per_block)
        h = _histogram(np.maximum(values_us, 1).astype(np.int64))
        errors = int(rng.binomial(per_block, error_rate))
        out.append(Block((histograms.encode(h),), (), per_block, errors))
    return out


def coverage(reps: int = 200, blocks: int = 40, per_block: int = 5000, shift: float = 0.73, seed: int = 7,
             replicates: int = 1000) -> dict[str, dict[str, float]]:
    """Per metric: the fraction of repetitions whose 95 % interval covers the true change, and (for
    shift 1) the fraction judged 'no change'."""
    rng = np.random.default_rng(seed)
    covered = dict.fromkeys(METRICS, 0)
    no_change = dict.fromkeys(METRICS, 0)
    for rep in range(reps):
        a = synthetic_run(rng, blocks, per_block)
        b = synthetic_run(rng, blocks, per_block, scale=shift)
        for metric in METRICS:
            iv = bootstrap(a, b, metric, replicates=replicates, seed=rep)
            assert iv.low is not None and iv.high is not None
            truth = 0.0 if metric == "error_rate" else shift - 1.0
            covered[metric] += iv.low <= truth <= iv.high
            no_change[metric] += verdict_of(iv) == "no change"
    return {m: {"coverage": covered[m] / reps, "no_change": no_change[m] / reps} for m in METRICS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--blocks", type=int, default=40)
    parser.add_argument("--per-block", type=int, default=5000)
    args = parser.parse_args()
    for shift in (0.73, 1.0):
        started = time.monotonic()
        rows = coverage(args.reps, args.blocks, args.per_block, shift)
        print(f"shift {shift:g} ({args.reps} repetitions, {args.blocks} intervals x {args.per_block} responses per run, "
              f"{time.monotonic() - started:.0f} s)")
        for metric, r in rows.items():
            print(f"  {metric:10s} 95 % CI covers the truth in {r['coverage'] * 100:5.1f} %   'no change' in {r['no_change'] * 100:5.1f} %")


if __name__ == "__main__":
    main()
