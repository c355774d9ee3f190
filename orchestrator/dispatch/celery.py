"""Send shards to their region's Celery queue (``fnbench.<region>``), JSON only, by task name.

The orchestrator never imports the worker's app: a client-only Celery app with the same
serialization settings sends ``fnbench.run_shard`` with the shard, signed with the task key
(workers/auth.py; workers run only signed tasks); the worker derives every key from its run id.
"""

from __future__ import annotations

from collections.abc import Iterable

from celery import Celery

from workers import auth, keys
from workers.contract import Shard

TASK = "fnbench.run_shard"


class CeleryDispatcher:
    def __init__(self, broker: str, key: bytes | None = None) -> None:
        # Loaded at the first send: reading a run (report, status) needs no signing key.  Commands
        # that will send call workers.auth.load_key() before they write anything.
        self.key = key
        self.app = Celery("fnbench-orchestrator", broker=broker)
        self.app.conf.update(task_serializer="json", accept_content=["json"], task_ignore_result=True,
                             broker_connection_retry_on_startup=True)

    def send(self, shards: Iterable[Shard]) -> int:
        """Publish every shard on one connection; returns how many were sent."""
        if self.key is None:
            self.key = auth.load_key()  # SetupError (exit 2) saying how to make and share one
        n = 0
        with self.app.producer_or_acquire() as producer:
            for shard in shards:
                self.app.send_task(
                    TASK,
                    kwargs={"payload": auth.sign(shard.to_dict(), self.key)},
                    queue=keys.queue(shard.region),
                    routing_key=keys.queue(shard.region),
                    producer=producer,
                )
                n += 1
        return n

    def close(self) -> None:
        self.app.close()
