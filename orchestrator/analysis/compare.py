"""SLO verdicts and target-vs-baseline comparisons over the groups of a RunResult."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from orchestrator.errors import exit_code
from orchestrator.run.result import Gap, Group, RunResult, SloVerdict
from workers import histograms
from workers.contract import HISTOGRAMS, Interval


class Slo(Protocol):
    target: str
    metric: str
    max: float | None
    min: float | None


PLANNED_METRICS = ("error_rate", "achieved_rps")  # judged on the plan when planned load was never sent


def unsent_by_group(gaps: Iterable[Gap]) -> dict[tuple[str, str, str], int]:
    """(region, target, phase) → planned requests no attempt sent (gaps that know their phase and count)."""
    out: dict[tuple[str, str, str], int] = {}
    for gap in gaps:
        if gap.unsent and gap.phase:
            key = (gap.region, gap.target, gap.phase)
            out[key] = out.get(key, 0) + int(gap.unsent)
    return out


def slo_verdicts(slos: Iterable[Slo], groups: Sequence[Group], gaps: Iterable[Gap] = (),
                 phase_seconds: dict[str, float] | None = None) -> list[SloVerdict]:
    """One verdict per SLO per matching measured group.  No verdict without data: a group that
    completed no request (its error_rate of 0.0 would pass on nothing), or has no value of the
    metric, is NO DATA, which fails; so is an SLO that matches no group at all.

    SLOs are judged on what was planned, not on what arrived: a group with planned requests that no
    attempt sent (``gaps`` with ``unsent``) counts them as failed requests in ``error_rate``
    ((errors + unsent) / (answered + unsent)) and as not served in ``achieved_rps`` (ok / the phase's
    planned seconds); any other metric (latency, cost) describes only what was measured, so its
    verdict is PARTIAL (a failure) however good the value."""
    verdicts = []
    unsent = unsent_by_group(gaps)
    planned_s = phase_seconds or {}
    # A group that was planned and never measured at all (its region lost every shard) is judged too.
    measured = {(g.region, g.target, g.phase) for g in groups}
    groups = [*groups, *(Group(region=r, target=t, runtime="", phase=p) for r, t, p in sorted(unsent)
                         if (r, t, p) not in measured)]
    for slo in slos:
        phase = getattr(slo, "phase", "*")
        matched = False
        for g in groups:
            if slo.target not in ("*", g.target) or phase not in ("*", g.phase):
                continue
            matched = True
            lost = unsent.get((g.region, g.target, g.phase), 0)
            value = g.metric(slo.metric) if g.completed else None
            if lost and slo.metric == "error_rate":
                answered = sum(g.outcomes.values())
                value = round((answered - g.ok + lost) / (answered + lost), 6)
            elif lost and slo.metric == "achieved_rps":
                seconds = max(planned_s.get(g.phase) or 0.0, g.seconds)
                value = round(g.ok / seconds, 3) if seconds > 0 else 0.0
            ok = value is not None
            if value is not None and slo.max is not None:
                ok = value <= slo.max
            if ok and value is not None and slo.min is not None:
                ok = value >= slo.min
            if lost and slo.metric not in PLANNED_METRICS:
                ok = False  # PARTIAL: measured on part of the plan
            verdicts.append(SloVerdict(target=g.target, region=g.region, phase=g.phase, metric=slo.metric,
                                       max=slo.max, min=slo.min, value=value, passed=ok, no_data=value is None,
                                       unsent=lost, planned=g.intended + lost if lost else None))
        if not matched:
            verdicts.append(SloVerdict(target=slo.target, region="*", phase=phase, metric=slo.metric, max=slo.max,
                                       min=slo.min, value=None, passed=False, no_data=True))
    return verdicts


def judge(result: RunResult, slos: Iterable[Slo],
          phase_seconds: dict[str, float] | None = None) -> tuple[RunResult, int]:
    """The result with its SLO verdicts, and the exit code it earns.  A verdict on a group whose planned
    load was partly never sent means load was lost: exit 3 (EXIT_LOST_LOAD), whatever the verdict."""
    result = replace(result, slo=tuple(slo_verdicts(slos, result.groups, result.gaps, phase_seconds)))
    return result, exit_code(slo_failed=result.slo_failed, errors=bool(result.errors or result.failed_groups),
                             interrupted=result.interrupted,
                             lost_load=result.lost_shards > 0 or result.bad_records > 0
                             or any(v.unsent for v in result.slo))


RATIO_FIELDS = ("p50_ms", "p99_ms", "rps", "cold_start_ms", "rss_mb",
                "duration_p99_ms", "init_duration_ms", "max_memory_mb", "per_million_usd")


@dataclass(frozen=True)
class TargetRow:
    """One (region, target): warm p50/p99 and throughput, cold start, init, peak RSS; ratios to a baseline."""

    region: str
    target: str
    runtime: str
    workload: str
    p50_ms: float | None = None
    p99_ms: float | None = None
    rps: float | None = None
    cold_start_ms: float | None = None
    init_ms: float | None = None
    rss_mb: float | None = None
    # The platform's own (AWS Lambda REPORT lines): warm Duration p99, cold Init Duration p50, Max
    # Memory Used, warm cost per million invocations.
    duration_p99_ms: float | None = None
    init_duration_ms: float | None = None
    max_memory_mb: float | None = None
    per_million_usd: float | None = None
    x: dict[str, float | None] = field(default_factory=dict)


def by_target(groups: Sequence[Group]) -> list[TargetRow]:
    rows: dict[tuple[str, str], TargetRow] = {}
    for g in groups:
        key = (g.region, g.target)
        row = rows.get(key) or TargetRow(g.region, g.target, g.runtime, g.workload)
        if g.phase == "warm":
            row = replace(row, p50_ms=g.response_ms.p50, p99_ms=g.response_ms.p99, rps=g.achieved_rps,
                          duration_p99_ms=g.platform_ms.p99 if g.platform_ms else None,
                          per_million_usd=g.cost_per_million_usd)
        else:
            # Cold start = spawn (or invoke) → first response, the cold group's service time.
            row = replace(row, cold_start_ms=g.service_ms.p50, init_ms=g.init_ms.p50 if g.init_ms else None,
                          init_duration_ms=g.init_duration_ms.p50 if g.init_duration_ms else None)
        if g.max_memory_used_mb:
            row = replace(row, max_memory_mb=max(row.max_memory_mb or 0.0, g.max_memory_used_mb))
        if g.peak_rss_mb:
            row = replace(row, rss_mb=max(row.rss_mb or 0.0, g.peak_rss_mb))
        rows[key] = row
    return list(rows.values())


def relative_to(groups: Sequence[Group], baseline_runtime: str = "rust") -> list[TargetRow]:
    """Each target beside the baseline runtime's target of the same workload and region, as ratios."""
    rows = by_target(groups)
    base = {(r.region, r.workload): r for r in rows if r.runtime == baseline_runtime}
    out = []
    for r in rows:
        b = base.get((r.region, r.workload))
        if b is None:
            continue
        ratios: dict[str, float | None] = {}
        for f in RATIO_FIELDS:
            mine, theirs = getattr(r, f), getattr(b, f)
            ratios[f] = round(mine / theirs, 2) if mine and theirs else None
        out.append(replace(r, x=ratios))
    return out


# -- comparisons with confidence intervals: a block bootstrap over interval histograms ------------
#
# A run's measurement of one group is a sequence of intervals (blocks): each an HDR histogram of
# response times (and of init times, cold starts) with its counts.  Intervals of the same group and
# time slot (several shards) are one block.  The bootstrap resamples whole blocks with replacement,
# merges their histograms and reads the percentile off the merged counts, so the interval keeps the
# correlation inside a block (a slow minute stays a slow minute) and percentiles are never averaged.

BAND = 0.03  # a relative difference whose 95 % interval lies inside ±3 % is "no change"
ERROR_BAND_PP = 0.1  # the same for error rates, in percentage points
REPLICATES = 2000
LEVEL = 0.95
METRICS = ("p50", "p99", "p999", "error_rate", "init_p50")
METRIC_LABEL = {"p50": "p50", "p90": "p90", "p99": "p99", "p999": "p99.9", "error_rate": "error rate",
                "init_p50": "cold-start init p50"}
_PERCENT = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9, "init_p50": 50.0}


@dataclass(frozen=True)
class Block:
    """One time slot of one group: its histograms (encoded HDR, µs; several when shards overlap)."""

    response: tuple[str, ...] = ()
    init: tuple[str, ...] = ()
    total: int = 0  # responses with an outcome
    errors: int = 0  # of those, not ok

    def to_dict(self) -> dict[str, Any]:
        return {"response": list(self.response), "init": list(self.init), "total": self.total, "errors": self.errors}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Block:
        return cls(tuple(d.get("response") or ()), tuple(d.get("init") or ()), int(d.get("total") or 0),
                   int(d.get("errors") or 0))


@dataclass(frozen=True)
class Sample:
    """The blocks of one (region, target, phase) of a run, in time order."""

    region: str
    target: str
    runtime: str
    workload: str
    phase: str
    blocks: tuple[Block, ...]


def samples_from_intervals(intervals: Iterable[Interval], max_blocks: int | None = None) -> list[Sample]:
    """The measured (not warm-up) intervals of a run as blocks per group: intervals of one group that
    start in the same flush slot (one per shard) form one block; at most ``max_blocks`` per group
    (adjacent slots merged)."""
    by_group: dict[tuple[str, str, str, str], list[Interval]] = {}
    workloads: dict[tuple[str, str, str, str], str] = {}
    seen: set[tuple[str, int, int]] = set()
    for iv in intervals:
        if iv.warmup or iv.key in seen or not (iv.completed or sum(iv.outcomes.values())):
            continue
        seen.add(iv.key)
        key = (iv.region, iv.target, iv.runtime, iv.phase)
        by_group.setdefault(key, []).append(iv)
        workloads.setdefault(key, iv.workload)
    out = []
    for key, ivs in sorted(by_group.items()):
        ivs.sort(key=lambda iv: iv.t0)
        spans = sorted(max(iv.t1 - iv.t0, 1e-3) for iv in ivs)
        span = spans[len(spans) // 2]
        first = ivs[0].t0
        slots: dict[int, list[Interval]] = {}
        for iv in ivs:
            slots.setdefault(int((iv.t0 - first) / span + 0.25), []).append(iv)
        grouped = [slots[k] for k in sorted(slots)]
        if max_blocks and len(grouped) > max_blocks:
            step = len(grouped) / max_blocks
            grouped = [[iv for g in grouped[int(i * step):int((i + 1) * step)] for iv in g] for i in range(max_blocks)]
        blocks = []
        for g in grouped:
            total = sum(sum(iv.outcomes.values()) for iv in g)
            ok = sum(iv.outcomes.get("ok", 0) for iv in g)
            blocks.append(Block(tuple(iv.response_us for iv in g if iv.response_us),
                                tuple(iv.init_us for iv in g if iv.init_us), total, total - ok))
        out.append(Sample(key[0], key[1], key[2], workloads[key], key[3], tuple(blocks)))
    return out


def compact(sample: Sample) -> Sample:
    """The sample with each block's histograms merged into one (what history stores)."""
    return replace(sample, blocks=tuple(Block((histograms.merge_encoded(b.response),) if b.response else (),
                                              (histograms.merge_encoded(b.init),) if b.init else (), b.total, b.errors)
                                        for b in sample.blocks))


class _Sparse:
    """Decodes encoded histograms into (index, count) pairs of fnbench's HDR layout."""

    def __init__(self) -> None:
        self.m = histograms.MergedHistogram()
        self.highest: Any = None

    def counts(self, encoded: Sequence[str]) -> tuple[Any, Any]:
        """(bucket indices, counts) of the merged histograms, as numpy arrays."""
        import numpy as np

        m = self.m
        for e in encoded:
            m.add_encoded(e)
        if not m.total:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        lo, hi = m.lo, m.hi
        span = np.ctypeslib.as_array(m.counts)[lo:hi + 1]
        nz = np.flatnonzero(span)
        out = (nz + lo, span[nz].astype(np.float64))
        m.clear()
        return out

    def value_ms(self, index: Any) -> Any:
        import numpy as np

        if self.highest is None:
            self.highest = np.asarray(histograms.layout().highest, dtype=np.float64) / 1000.0
        return self.highest[index]


_sparse: _Sparse | None = None


def _decoder() -> _Sparse:
    global _sparse
    if _sparse is None:
        _sparse = _Sparse()
    return _sparse


def _matrix(blocks_a: Sequence[Block], blocks_b: Sequence[Block], which: str) -> tuple[Any, Any, Any]:
    """Count matrices (blocks × buckets) of both sides over their common support, and the bucket indices."""
    import numpy as np

    dec = _decoder()
    rows_a = [dec.counts(getattr(b, which)) for b in blocks_a]
    rows_b = [dec.counts(getattr(b, which)) for b in blocks_b]
    support = np.unique(np.concatenate([r[0] for r in (*rows_a, *rows_b)] or [np.zeros(0, dtype=np.int64)]))

    def dense(rows: list[tuple[Any, Any]]) -> Any:
        m = np.zeros((len(rows), len(support)), dtype=np.float64)
        for r, (idx, n) in enumerate(rows):
            m[r, np.searchsorted(support, idx)] = n
        return m

    return dense(rows_a), dense(rows_b), support


def _percentiles(cum: Any, support: Any, percent: float) -> Any:
    """The percentile of each row of cumulative merged counts, as fnbench's collector reads it (ms; NaN if empty)."""
    import numpy as np

    total = cum[:, -1]
    target = np.maximum(np.floor(percent * total / 100.0 + 0.5), 1.0)
    idx = np.minimum((cum < target[:, None]).sum(axis=1), cum.shape[1] - 1)
    values = np.asarray(_decoder().value_ms(np.asarray(support)[idx]), dtype=np.float64)
    return np.where(total > 0, values, np.nan)


@dataclass(frozen=True)
class Interval95:
    """A point estimate of the change from ``base`` to ``other`` and its bootstrap interval."""

    base: float | None
    other: float | None
    change: float | None  # relative (other/base − 1) or, for error rates, other − base in percentage points
    low: float | None
    high: float | None
    relative: bool = True


def _weights(rng: Any, n: int, replicates: int) -> Any:
    import numpy as np

    assert isinstance(rng, np.random.Generator)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=replicates).astype(np.float64)


def bootstrap(base: Sequence[Block], other: Sequence[Block], metric: str, replicates: int = REPLICATES,
              level: float = LEVEL, seed: int | None = 0) -> Interval95:
    """The change of ``metric`` from ``base`` to ``other`` with its bootstrap interval (see bootstrap_all)."""
    return bootstrap_all(base, other, (metric,), replicates, level, seed)[metric]


def bootstrap_all(base: Sequence[Block], other: Sequence[Block], metrics: Sequence[str],
                  replicates: int = REPLICATES, level: float = LEVEL, seed: int | None = 0) -> dict[str, Interval95]:
    """The change of each metric from ``base`` to ``other`` with a percentile interval from a block
    bootstrap: each side's blocks are resampled with replacement (independently, the same draws for
    every metric), their histograms merged and the statistic read off the merged counts.  Relative
    changes are bootstrapped on the log scale; error rates as differences in percentage points."""
    import numpy as np

    rng = np.random.default_rng(seed)
    alpha = (1.0 - level) / 2.0
    out: dict[str, Interval95] = {}
    if not base or not other:
        return {m: Interval95(None, None, None, None, None, m != "error_rate") for m in metrics}
    wa, wb = _weights(rng, len(base), replicates), _weights(rng, len(other), replicates)
    matrices: dict[str, tuple[Any, Any, Any]] = {}
    for metric in metrics:
        if metric == "error_rate":
            ta, ea = (np.array([getattr(b, f) for b in base], dtype=np.float64) for f in ("total", "errors"))
            tb, eb = (np.array([getattr(b, f) for b in other], dtype=np.float64) for f in ("total", "errors"))
            if not ta.sum() or not tb.sum():
                out[metric] = Interval95(None, None, None, None, None, False)
                continue
            ra, rb = ea.sum() / ta.sum(), eb.sum() / tb.sum()
            with np.errstate(invalid="ignore", divide="ignore"):
                diff = (wb @ eb) / (wb @ tb) - (wa @ ea) / (wa @ ta)
            diff = diff[np.isfinite(diff)] * 100.0
            low, high = (float(np.quantile(diff, q)) for q in (alpha, 1 - alpha)) if diff.size else (None, None)
            out[metric] = Interval95(float(ra), float(rb), float((rb - ra) * 100.0), low, high, relative=False)
            continue
        which = "init" if metric.startswith("init") else "response"
        if which not in matrices:
            matrices[which] = _matrix(base, other, which)
        ca, cb, support = matrices[which]
        if not support.size or not ca.sum() or not cb.sum():
            out[metric] = Interval95(None, None, None, None, None)
            continue
        percent = _PERCENT[metric]
        key = f"{which}:cumulative"
        if key not in matrices:  # the point estimates' and every replicate's cumulative counts, once
            matrices[key] = (np.cumsum(ca.sum(axis=0, keepdims=True), axis=1), np.cumsum(cb.sum(axis=0, keepdims=True), axis=1),
                             (np.cumsum(wa @ ca, axis=1), np.cumsum(wb @ cb, axis=1)))
        point_a, point_b, (ma, mb) = matrices[key]
        va = float(_percentiles(point_a, support, percent)[0])
        vb = float(_percentiles(point_b, support, percent)[0])
        with np.errstate(invalid="ignore", divide="ignore"):
            logs = np.log(_percentiles(mb, support, percent)) - np.log(_percentiles(ma, support, percent))
        logs = logs[np.isfinite(logs)]
        if not logs.size or va <= 0:
            out[metric] = Interval95(va, vb, None, None, None)
            continue
        low, high = (float(np.expm1(np.quantile(logs, q))) for q in (alpha, 1 - alpha))
        out[metric] = Interval95(va, vb, vb / va - 1.0, low, high)
    return out


def verdict_of(iv: Interval95, band: float = BAND, error_band_pp: float = ERROR_BAND_PP) -> str:
    """'no change' (the interval inside the noise band), 'higher' / 'lower' (the interval excludes no
    difference), 'inconclusive' (neither), 'no data'."""
    if iv.low is None or iv.high is None or iv.change is None:
        return "no data"
    width = band if iv.relative else error_band_pp
    if iv.low >= -width and iv.high <= width:
        return "no change"
    if iv.low > 0:
        return "higher"
    if iv.high < 0:
        return "lower"
    return "inconclusive"


@dataclass(frozen=True)
class Comparison:
    """One metric of one (region, target): ``subject`` against ``reference`` (values, ratio, CI, verdict)."""

    region: str
    metric: str
    subject: str  # e.g. "rust", or "go in RUN_B"
    reference: str  # e.g. "go", or "RUN_A"
    reference_value: float | None
    subject_value: float | None
    ratio: float | None  # subject / reference
    change: float | None
    low: float | None
    high: float | None
    relative: bool
    verdict: str
    band: float
    subject_run: str = ""  # run against run: the subject's run (the reference is the other run)

    @property
    def sentence(self) -> str:
        return sentence(self)

    def to_dict(self) -> dict[str, object]:
        return {"region": self.region, "metric": self.metric, "subject": self.subject, "reference": self.reference,
                "reference_value": self.reference_value, "subject_value": self.subject_value, "ratio": self.ratio,
                "change": self.change, "ci_low": self.low, "ci_high": self.high,
                "unit": "relative" if self.relative else "pp", "verdict": self.verdict, "band": self.band,
                "subject_run": self.subject_run or None, "sentence": self.sentence}


def _pct(x: float) -> str:
    return f"{abs(x) * 100:.0f}" if abs(x) >= 0.1 else f"{abs(x) * 100:.1f}"


def sentence(c: Comparison) -> str:
    """'rust p99 is 27 % lower than go (95 % CI 22–31 %) in eu-west-1'."""
    what = f"{c.subject} {METRIC_LABEL.get(c.metric, c.metric)}" + (f" in {c.subject_run}" if c.subject_run else "")
    than = f"in {c.reference}" if c.subject_run else c.reference
    where = f" in {c.region}" if c.region else ""
    if c.verdict == "no data" or c.change is None or c.low is None or c.high is None:
        return f"{what}: no data to compare with {c.reference}{where}"
    if c.relative:
        def fmt(x: float) -> str:
            return _pct(x)

        unit, band = " %", f"±{c.band * 100:g} %"
    else:
        def fmt(x: float) -> str:
            return f"{abs(x):.2f}"

        unit, band = " pp", f"±{c.band:g} pp"
    signed = f"{c.low * (100 if c.relative else 1):+.1f} to {c.high * (100 if c.relative else 1):+.1f}{unit}"
    if c.verdict == "no change":
        return f"{what} is within {band} of {c.reference} (no change; 95 % CI {signed}){where}"
    if c.verdict in ("higher", "lower"):
        lo, hi = sorted((abs(c.low), abs(c.high)))
        return (f"{what} is {fmt(c.change)}{unit} {c.verdict} than {than} "
                f"(95 % CI {fmt(lo)}–{fmt(hi)}{unit}){where}")
    return f"{what} against {c.reference}: {c.change * (100 if c.relative else 1):+.1f}{unit} (95 % CI {signed}; inconclusive){where}"


def _compare(reference: Sample | None, subject: Sample | None, cold_ref: Sample | None, cold_sub: Sample | None,
             region: str, subject_name: str, reference_name: str, metrics: Sequence[str], band: float,
             error_band_pp: float, replicates: int, seed: int | None, subject_run: str = "") -> list[Comparison]:
    warm = [m for m in metrics if not m.startswith("init")]
    cold = [m for m in metrics if m.startswith("init")]
    found: dict[str, Interval95] = {}
    for names, a, b in ((warm, reference, subject), (cold, cold_ref, cold_sub)):
        if names and a is not None and b is not None:
            found.update(bootstrap_all(a.blocks, b.blocks, names, replicates, seed=seed))
    out = []
    for metric in metrics:
        iv = found.get(metric) or Interval95(None, None, None, None, None, metric != "error_rate")
        ratio = iv.other / iv.base if iv.base and iv.other is not None else None
        out.append(Comparison(region, metric, subject_name, reference_name, iv.base, iv.other, ratio, iv.change,
                              iv.low, iv.high, iv.relative, verdict_of(iv, band, error_band_pp),
                              band if iv.relative else error_band_pp, subject_run))
    return out


def compare_runs(a: Sequence[Sample], b: Sequence[Sample], label_a: str, label_b: str, *,
                 metrics: Sequence[str] = METRICS, band: float = BAND, error_band_pp: float = ERROR_BAND_PP,
                 replicates: int = REPLICATES, seed: int | None = 0) -> list[Comparison]:
    """Run B against run A, per target × region: 'go p99 in RUN_B is 5 % higher than in RUN_A (…) in eu-west-1'."""
    index_a = {(s.region, s.target, s.phase): s for s in a}
    index_b = {(s.region, s.target, s.phase): s for s in b}
    out = []
    for region, target in sorted({(r, t) for r, t, _ in index_a} & {(r, t) for r, t, _ in index_b}):
        out += _compare(index_a.get((region, target, "warm")), index_b.get((region, target, "warm")),
                        index_a.get((region, target, "cold")), index_b.get((region, target, "cold")),
                        region, target, label_a, metrics, band, error_band_pp, replicates, seed, label_b)
    return out


def compare_within(samples: Sequence[Sample], baseline_runtime: str = "rust", *, metrics: Sequence[str] = METRICS,
                   band: float = BAND, error_band_pp: float = ERROR_BAND_PP, replicates: int = REPLICATES,
                   seed: int | None = 0) -> list[Comparison]:
    """Every other target against the baseline runtime's target of the same workload and region, with the
    baseline as the subject: 'rust p99 is 27 % lower than go (95 % CI 22–31 %) in eu-west-1'."""
    index = {(s.region, s.target, s.phase): s for s in samples}
    targets = sorted({(s.region, s.target, s.runtime, s.workload) for s in samples})
    out = []
    for region, target, runtime, workload in targets:
        if runtime == baseline_runtime:
            continue
        for br, bt, brt, bw in targets:
            if br == region and brt == baseline_runtime and bw == workload:
                out += _compare(index.get((region, target, "warm")), index.get((region, bt, "warm")),
                                index.get((region, target, "cold")), index.get((region, bt, "cold")),
                                region, bt, target, metrics, band, error_band_pp, replicates, seed)
    return out


# -- SLOs evaluated during a run: abort_on_fail ------------------------------------------------------
@dataclass(frozen=True)
class SloAbort:
    """The SLO that stopped a run: its metric over the trailing window when it failed."""

    target: str
    region: str
    phase: str
    metric: str
    max: float | None
    min: float | None
    value: float
    window_s: float
    at: float  # epoch seconds the orchestrator saw it fail (and stopped every region)
    measured_until: float  # the end of the newest interval in the window

    @property
    def message(self) -> str:
        bound = f"<= {self.max:g}" if self.max is not None and self.value > self.max else f">= {self.min:g}"
        return (f"SLO {self.metric} {bound} failed for {self.target} in {self.region} ({self.phase}) over the last "
                f"{self.window_s:g}s: {self.value:g}; every region stopped")

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "region": self.region, "phase": self.phase, "metric": self.metric,
                "max": self.max, "min": self.min, "value": self.value, "window_s": self.window_s, "at": self.at,
                "measured_until": self.measured_until}

    def verdict(self) -> SloVerdict:
        return SloVerdict(self.target, self.region, self.phase, self.metric, self.max, self.min, self.value, False)


class SloWatch:
    """Evaluates the ``abort_on_fail`` SLOs over the trailing ``after`` seconds of each group's intervals
    as they arrive; ``check()`` returns the first SLO that fails (a group needs ``after`` seconds of
    measurement first, and a request in the window)."""

    def __init__(self, slos: Iterable[object]) -> None:
        self.slos = [s for s in slos if getattr(s, "abort_on_fail", False)]
        self.recent: dict[tuple[str, str, str], list[Interval]] = {}
        self.first: dict[tuple[str, str, str], float] = {}
        self.changed = False

    def add(self, iv: Interval) -> None:
        """IntervalSink: keep the interval for the trailing windows of the abort_on_fail SLOs."""
        if not self.slos or iv.warmup or not (iv.intended or iv.completed):
            return
        key = (iv.region, iv.target, iv.phase)
        self.recent.setdefault(key, []).append(iv)
        self.first[key] = min(self.first.get(key, iv.t0), iv.t0)
        self.changed = True

    def close(self) -> None:
        """IntervalSink: nothing to release."""

    def check(self, now: float | None = None) -> SloAbort | None:
        if not self.changed:
            return None
        self.changed = False
        longest = max((float(getattr(s, "after", 0.0)) for s in self.slos), default=0.0)
        for key, ivs in self.recent.items():
            newest = max(iv.t1 for iv in ivs)
            ivs[:] = [iv for iv in ivs if iv.t1 > newest - longest]
            region, target, phase = key
            for slo in self.slos:
                if getattr(slo, "target", "*") not in ("*", target) or getattr(slo, "phase", "*") not in ("*", phase):
                    continue
                window = float(getattr(slo, "after", 0.0))
                if newest - self.first[key] < window - 1e-6:
                    continue
                inside = [iv for iv in ivs if iv.t1 > newest - window + 1e-6]
                value = _window_metric(inside, str(getattr(slo, "metric", "")), window)
                if value is None:
                    continue
                high, low = getattr(slo, "max", None), getattr(slo, "min", None)
                if (high is not None and value > high) or (low is not None and value < low):
                    return SloAbort(target, region, phase, str(getattr(slo, "metric", "")), high, low, value, window,
                                    time.time() if now is None else now, newest)
        return None


def _window_metric(intervals: Sequence[Interval], metric: str, window_s: float) -> float | None:
    """An SLO metric over some intervals of one group (histograms merged, never averaged)."""
    total = sum(sum(iv.outcomes.values()) for iv in intervals)
    ok = sum(iv.outcomes.get("ok", 0) for iv in intervals)
    if metric == "error_rate":
        return (total - ok) / total if total else None
    if metric == "achieved_rps":
        return ok / window_s if window_s > 0 else None
    kind, _, stat = metric.partition(".")
    field_name = {result: name for _, name, result in HISTOGRAMS}.get(kind)
    if field_name is None:
        return None
    merged = histograms.MergedHistogram()
    for iv in intervals:
        encoded = getattr(iv, field_name)
        if encoded:
            merged.add_encoded(encoded)
    return merged.summary().stat(stat) if merged.total else None


# -- one run's own intervals (the bands of the trend page) ------------------------------------------
LEVEL_METRICS = ("p50", "p99", "p999", "error_rate")
COLD_LEVEL_METRICS = ("init_p50", "init_p99")
_PERCENT_LEVEL = {**_PERCENT, "init_p99": 99.0}


def levels(blocks: Sequence[Block], metrics: Sequence[str], replicates: int = 400, level: float = LEVEL,
           seed: int | None = 0) -> dict[str, tuple[float | None, float | None]]:
    """Each metric's 95 % percentile interval over one run's own blocks (resampled with replacement, merged,
    the statistic read off the merged counts): the uncertainty of that run's value, drawn as a band.
    Error rates are fractions; percentiles ms.  (None, None) without data or with a single block."""
    import numpy as np

    out: dict[str, tuple[float | None, float | None]] = dict.fromkeys(metrics, (None, None))
    if len(blocks) < 2:
        return out
    rng = np.random.default_rng(seed)
    alpha = (1.0 - level) / 2.0
    w = _weights(rng, len(blocks), replicates)
    cums: dict[str, Any] = {}
    for metric in metrics:
        if metric == "error_rate":
            t, e = (np.array([getattr(b, f) for b in blocks], dtype=np.float64) for f in ("total", "errors"))
            with np.errstate(invalid="ignore", divide="ignore"):
                rates = (w @ e) / (w @ t)
            rates = rates[np.isfinite(rates)]
            if rates.size:
                out[metric] = (float(np.quantile(rates, alpha)), float(np.quantile(rates, 1 - alpha)))
            continue
        which = "init" if metric.startswith("init") else "response"
        if which not in cums:
            counts, _, support = _matrix(blocks, (), which)
            cums[which] = (np.cumsum(w @ counts, axis=1), support) if support.size and counts.sum() else None
        found = cums[which]
        if found is None:
            continue
        values = _percentiles(found[0], found[1], _PERCENT_LEVEL[metric])
        values = values[np.isfinite(values)]
        if values.size:
            out[metric] = (float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha)))
    return out
