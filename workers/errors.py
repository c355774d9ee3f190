"""Errors a worker raises before load starts.  During a run, failures are Outcomes, not exceptions.

    WorkerError
    └── SetupError      a shard cannot start: unresolved ${env:NAME}, bad URL, unknown platform
"""


class WorkerError(Exception):
    """Base of every exception the workers package raises on purpose."""


class SetupError(WorkerError):
    """The shard cannot start; the message names what is wrong and where."""
