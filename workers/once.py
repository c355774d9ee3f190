"""Each signed task runs at most once per worker host, remembered outside Redis.

The claims hash in Redis (workers/link.py) says which (run, shard, attempt) was taken, but whoever
can write to Redis can delete a claim and push the captured task again.  So a worker also remembers,
on its own host, every (run, shard, attempt) it started: one empty file per task in a private folder
(``FNBENCH_STATE_DIR``, default ``$TMPDIR/fnbench-<uid>/executed``, mode 0700), created with
O_EXCL so two pool processes (or two workers on the host) cannot both take one.  A file lives until
its task could no longer be accepted anyway (the signed window + ``auth.STALE_AFTER_S``: a later
delivery is rejected as stale); its mtime is that moment, and expired files are pruned, so the
folder is bounded by the tasks of the last hour and the windows still open.

A replay delivered to another host is not prevented by this (no state is shared but Redis); the
orchestrator sees the second execution in the intervals (a second ``started`` for one attempt),
drops it and says so in the result (orchestrator/run/collect.py).
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
import time
from pathlib import Path

from workers import auth
from workers.contract import Shard
from workers.errors import SetupError

STATE_DIR_ENV = "FNBENCH_STATE_DIR"
PRUNE_EVERY_S = 60.0


def default_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"fnbench-{os.getuid()}" / "executed"


def prepare(path: Path | None = None) -> Path:
    """The folder of executed tasks, created private (0700) and owned by this user; SetupError if not."""
    path = (path or Path(os.environ.get(STATE_DIR_ENV) or default_dir())).expanduser()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
        for p in (path.parent, path):
            st = p.lstat()
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise SetupError(f"{p}: the worker's record of executed tasks must be a folder owned by this user "
                                 f"with mode 0700 (it is {stat.S_IMODE(st.st_mode):o}, owner {st.st_uid}); "
                                 f"fix it or set {STATE_DIR_ENV} to another folder")
    except OSError as exc:
        raise SetupError(f"cannot create {path} (the worker's record of executed tasks): {exc.strerror}; "
                         f"set {STATE_DIR_ENV} to a writable folder") from None
    return path


class Executed:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.next_prune = 0.0

    @staticmethod
    def name(shard: Shard) -> str:
        return hashlib.sha256(f"{shard.run_id}\0{shard.shard_id}\0{shard.attempt}".encode()).hexdigest()

    def first_use(self, shard: Shard) -> bool:
        """Record that this host executes ``shard``; False when it already did (a replay)."""
        self._prune()
        entry = self.path / self.name(shard)
        try:
            fd = os.open(entry, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        os.close(fd)
        until = shard.start_at + shard.duration_s + auth.STALE_AFTER_S + auth.MAX_SKEW_S
        os.utime(entry, (until, until))
        return True

    def _prune(self) -> None:
        now = time.time()
        if now < self.next_prune:
            return
        self.next_prune = now + PRUNE_EVERY_S
        try:
            with os.scandir(self.path) as it:
                for e in it:
                    try:
                        if e.stat(follow_symlinks=False).st_mtime < now:
                            os.unlink(e.path)
                    except OSError:
                        pass  # pruned by another process meanwhile
        except OSError:
            pass
