"""The one error tree of fnbench.  Both packages raise these; the CLI turns each into a message
and an exit code once, at its boundary.  During a run, failures are Outcomes, not exceptions.

    FnbenchError                 exit 2 unless a subclass says otherwise
    ├── InputError               a bad argument, file or record given by the user
    │   └── SpecError            (orchestrator.errors) the spec is invalid: every problem with its path
    ├── SetupError               this machine cannot run it: unresolved ${env:NAME}, bad URL,
    │   │                        unknown platform, port busy, toolchain missing, worker failed
    │   └── RefusedError         a worker refuses a shard: outside FNBENCH_ALLOWED_TARGETS, over its
    │                            rate cap, unsigned or badly signed task
    └── SchemaError              (workers.contract) a record of another schema_version
"""

from __future__ import annotations

# 0 ok · 1 an SLO failed · 2 bad input, setup error, worker error or refusal · 3 the result is partial:
# load was lost (shards expired or abandoned: it does not cover the planned window) or records were
# unreadable and left out (bad_records) · 130 interrupted.
EXIT_OK, EXIT_SLO, EXIT_INPUT, EXIT_LOST_LOAD, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def exit_code(*, slo_failed: bool = False, errors: bool = False, interrupted: bool = False,
              lost_load: bool = False) -> int:
    """The exit code of a finished run; the most serious condition wins."""
    if errors:
        return EXIT_INPUT
    if interrupted:
        return EXIT_INTERRUPTED
    if lost_load:
        return EXIT_LOST_LOAD
    return EXIT_SLO if slo_failed else EXIT_OK


class FnbenchError(Exception):
    """Base of every exception fnbench raises on purpose; ``exit_code`` is what the CLI exits with."""

    exit_code = EXIT_INPUT


class InputError(FnbenchError):
    """A bad argument, file or record; the message names it."""


class SetupError(FnbenchError):
    """The shard or run cannot start; the message names what is wrong and where."""


class RefusedError(SetupError):
    """A worker refuses a shard (operator limits or task authentication); the reason is shown."""


# Kept for callers that name the worker side explicitly.
WorkerError = FnbenchError
