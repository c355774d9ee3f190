"""Every Redis key and queue name fnbench uses, in one place.

It lives in ``workers`` because both packages need it and workers never import the
orchestrator.  A worker derives every key it writes from the run id of a verified task and
these functions, never from names carried in the task.
"""

from __future__ import annotations

PREFIX = "fnbench"
TASK = "fnbench.run_shard"  # the Celery task that runs one shard (JSON kwargs: {"payload": signed shard})
BROKER_ENV = "FNBENCH_BROKER"  # the redis://… broker and store, for the CLI and the worker app
RUNS = f"{PREFIX}:runs"  # sorted set: run_id scored by creation time
# Every key of a run expires: the orchestrator sets the run's retention on all of them (and renews it
# while the run goes on); a worker that creates a run key sets this fallback when it has no TTL yet.
RETENTION_S = 3 * 86400
ORPHAN_TTL_S = 7 * 86400
WORKERS = f"{PREFIX}:workers"  # hash: worker node name → JSON {region, concurrency, metrics_port, seen}


def queue(region: str) -> str:
    """The Celery queue of a region (a Redis list of the same name)."""
    return f"{PREFIX}.{region}"


def run(run_id: str) -> str:
    """Hash: the run record (spec text, name, start_at, total_s, state, shard count, …)."""
    return f"{PREFIX}:run:{run_id}"


def shards(run_id: str) -> str:
    """Hash: shard_id → Shard JSON of its current attempt."""
    return f"{run(run_id)}:shards"


def attempts(run_id: str) -> str:
    """Hash: shard_id → current attempt; a worker running an older attempt stops itself."""
    return f"{run(run_id)}:attempts"


def intervals(run_id: str) -> str:
    """Stream: one entry per Interval, field ``iv`` = its JSON (at least once; deduplicated on read)."""
    return f"{run(run_id)}:intervals"


def stop(run_id: str) -> str:
    """String: present once `fnbench stop RUN` (or Ctrl-C) asked every worker to stop."""
    return f"{run(run_id)}:stop"


def beats(run_id: str) -> str:
    """Hash: "shard_id#attempt" → epoch seconds of the shard's last heartbeat."""
    return f"{run(run_id)}:beats"


def claims(run_id: str) -> str:
    """Hash: "shard_id#attempt" → JSON {state, node, pid}; a redelivered claimed task is ignored."""
    return f"{run(run_id)}:claims"


def gaps(run_id: str) -> str:
    """List: JSON gaps recorded by the orchestrator (lost shards re-dispatched, shards never run)."""
    return f"{run(run_id)}:gaps"


def rollups(run_id: str) -> str:
    """Hash: "shard_id#attempt" → JSON rollup of that attempt's intervals trimmed from the stream."""
    return f"{run(run_id)}:rollups"


def rejections(run_id: str) -> str:
    """List: JSON {field, reason, message, node, at} of each delivery of a verified task of the run that a
    worker did not run (a replay); the orchestrator reports them in the result's errors."""
    return f"{run(run_id)}:rejections"


def attempt_field(shard_id: str, attempt: int) -> str:
    return f"{shard_id}#{attempt}"


def all_of_run(run_id: str) -> list[str]:
    return [run(run_id), shards(run_id), attempts(run_id), intervals(run_id), stop(run_id), beats(run_id),
            claims(run_id), gaps(run_id), rollups(run_id), rejections(run_id)]


def rejected(reason: str) -> str:
    """Counter (INCR): tasks a worker rejected for ``reason`` (workers.auth.REASONS); never per run,
    since an unauthenticated task's run id is not to be trusted with keys."""
    return f"{PREFIX}:rejected:{reason}"


def region_rejections(region: str) -> str:
    """List: JSON {reason, message, run, node, at} of each task a worker of ``region`` rejected before or
    without running it (a bad signature, a wrong region, …), the latest REGION_REJECTIONS_KEPT.  Keyed by
    the worker's own region, never by the task: ``run`` is the run id the task claimed, unverified, kept
    as data only so the orchestrator of that run can say why its shards were never claimed."""
    return f"{PREFIX}:rejected:region:{region}"


REGION_REJECTIONS_KEPT = 1000


# -- history and schedules (orchestrator/analysis/history.py, orchestrator/schedule.py) ----------------------
# User-chosen names (spec and schedule names: letters, digits, ``_.@-``, never ``:``) only ever appear
# as the last part of a key in a namespace of their own, so no name can collide with an index key
# (a spec named ``runs`` once hit HISTORY_RUNS' hash: WRONGTYPE).
HISTORY_NAMES = f"{PREFIX}:history"  # set: spec names that have a run history
HISTORY_RUNS = f"{PREFIX}:history:index:runs"  # hash: run_id → spec name (find a run's entry by its id)
HISTORY_LAYOUT = f"{PREFIX}:history:index:layout"  # string: "2" once history keys of before are moved
LEGACY_HISTORY_RUNS = f"{PREFIX}:history:runs"  # HISTORY_RUNS until layout 2
SCHEDULES = f"{PREFIX}:schedules"  # set: schedule names
SCHEDULES_REMOVED = f"{PREFIX}:schedules:removed"  # hash: name → signed tombstone {name, version, removed}
REDBEAT_PREFIX = f"{PREFIX}:redbeat:"  # celery-redbeat's keys: <prefix>NAME, <prefix>:schedule, <prefix>:lock
SCHEDULED_QUEUE = f"{PREFIX}.scheduled"  # the Celery queue of headless scheduled runs (`fnbench scheduler`)
SCHEDULED_TASK = f"{PREFIX}.scheduled_run"


def history(name: str) -> str:
    """Sorted set: run_id scored by the run's start (epoch seconds), for spec ``name``."""
    return f"{PREFIX}:history:name:{name}"


def history_entry(name: str, run_id: str) -> str:
    """String: the JSON history entry of one run (summary per group and its interval blocks)."""
    return f"{history(name)}:{run_id}"


def legacy_history(name: str) -> str:
    """``history(name)`` until layout 2 (it shared a namespace with HISTORY_RUNS)."""
    return f"{PREFIX}:history:{name}"


def schedule(name: str) -> str:
    """Hash: a schedule's record (spec text and its signature, recurrence, paused, last run and verdict)."""
    return f"{PREFIX}:schedule:{name}"


def schedule_fire(name: str, fire: str) -> str:
    """String (SET NX): claimed by the one scheduler that runs this firing of the schedule."""
    return f"{schedule(name)}:fire:{fire}"
