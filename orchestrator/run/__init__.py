"""The run: spec (YAML → Benchmark) → plan (pure) → dispatch (local pool · Celery regions) → collect
(Intervals → RunResult) → result (typed, one JSON codec) and the run folder and Redis store."""
