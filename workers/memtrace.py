"""Where a long-lived worker process keeps memory: tracemalloc snapshots on request.

``FNBENCH_MEMTRACE=DIR[:PERIOD_S]`` (a diagnostic, off by default: tracing costs CPU and memory)
makes the worker's main process and every pool process trace allocations (12 frames) and dump a
snapshot, after ``gc.collect()``, every PERIOD_S seconds (default 300) to
``DIR/<role>-<pid>-<n>.snap``.  ``bench/soak.py --memtrace`` compares the snapshot after its warm-up
with the last one per process and prints the allocation sites that grew.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
import tracemalloc

ENV = "FNBENCH_MEMTRACE"
FRAMES = 12
log = logging.getLogger("fnbench.memtrace")


def start(role: str) -> bool:
    """Start tracing and the snapshot thread in this process when FNBENCH_MEMTRACE is set."""
    spec = os.environ.get(ENV, "")
    if not spec:
        return False
    folder, _, period_text = spec.partition(":")
    try:
        period = float(period_text) if period_text else 300.0
    except ValueError:
        log.warning("%s=%r: the period must be seconds; memory tracing is off", ENV, spec)
        return False
    os.makedirs(folder, exist_ok=True)
    if not tracemalloc.is_tracing():
        tracemalloc.start(FRAMES)
    pid = os.getpid()

    def dump() -> None:
        n = 0
        while True:
            time.sleep(period)
            gc.collect()
            path = os.path.join(folder, f"{role}-{pid}-{n:04d}.snap")
            tracemalloc.take_snapshot().dump(path + ".tmp")
            os.replace(path + ".tmp", path)
            n += 1

    threading.Thread(target=dump, name="fnbench-memtrace", daemon=True).start()
    return True
