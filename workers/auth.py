"""Task authentication: the orchestrator signs every shard it sends, workers verify.

Whoever can write to Redis can push a task onto ``fnbench.<region>``; only a task signed with
the shared task key is run.  The key lives outside Redis: ``FNBENCH_TASK_KEY`` (the key
itself) or the file ``FNBENCH_TASK_KEY_FILE`` (default ``~/.config/fnbench/task.key``, mode
0600), made with ``fnbench keygen``.

A signed task is ``{"shard": {...}, "auth": {"v": 1, "iat": <epoch s>, "sig": <hex>}}``;
``sig`` is HMAC-SHA256 over ``"fnbench-task-v1\\n"`` + the canonical JSON (orjson, sorted
keys) of ``{"iat": iat, "shard": shard}``.  The worker recomputes it from what it received,
compares with ``hmac.compare_digest``, then checks the timestamp against the shard's window;
a replay of a (run, shard, attempt) already seen is caught by the claims hash (workers/link.py).

Neither the key nor a signature is ever put in a message or a log line.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import time
from pathlib import Path
from typing import Any

import orjson

from workers.errors import InputError, RefusedError, SetupError

KEY_ENV = "FNBENCH_TASK_KEY"
KEY_FILE_ENV = "FNBENCH_TASK_KEY_FILE"
DEFAULT_KEY_FILE = Path("~/.config/fnbench/task.key")
BROKER_FILE_ENV = "FNBENCH_BROKER_FILE"
VERSION = 1
_DOMAIN = b"fnbench-task-v1\n"
_STORED_DOMAIN = b"fnbench-stored-shard-v1\n"
MIN_KEY_CHARS = 32

# Clocks of the orchestrator and the workers may differ by this much.
MAX_SKEW_S = 60.0
# A task may be signed at most this long before its shard's window: every slice of a run (up to
# 31 days, workers.arrivals MAX_DURATION_S) is dispatched when the run starts.
MAX_LEAD_S = 32 * 86_400.0
# After its window, a signed task is stale this much later (before that it is recorded as expired).
STALE_AFTER_S = 3600.0

# Rejection reasons (a fixed set: each has its own counter, keys.rejected(reason)).
UNSIGNED, BAD_SIGNATURE, STALE, REPLAYED, MALFORMED, WRONG_REGION, REFUSED = (
    "unsigned", "bad-signature", "stale", "replayed", "malformed", "wrong-region", "refused")
REASONS = (UNSIGNED, BAD_SIGNATURE, STALE, REPLAYED, MALFORMED, WRONG_REGION, REFUSED)

HOW_TO = (
    "create one with `fnbench keygen` (writes ~/.config/fnbench/task.key, mode 0600) and give the same key "
    f"to the orchestrator and every worker: copy the file to each host, or set {KEY_ENV} from a secret store "
    f"(Kubernetes: the fnbench-task-key Secret, deploy/k8s/README.md); {KEY_FILE_ENV}=PATH names another file"
)


class TaskRejected(RefusedError):
    """A task that is not run; ``reason`` is one of REASONS (the message never holds key or signature)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def key_file() -> Path:
    return Path(os.environ.get(KEY_FILE_ENV) or DEFAULT_KEY_FILE).expanduser()


def load_key() -> bytes:
    """The shared task key, from ``FNBENCH_TASK_KEY`` or the key file; SetupError saying how to make one."""
    value = os.environ.get(KEY_ENV, "")
    source = KEY_ENV
    if not value:
        path = key_file()
        source = str(path)
        try:
            mode = path.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise SetupError(f"task key file {path} is readable by others (mode {stat.S_IMODE(mode):o}); "
                                 f"run `chmod 600 {path}`")
            value = path.read_text()
        except FileNotFoundError:
            raise SetupError(f"no task key: {KEY_ENV} is not set and {path} does not exist; {HOW_TO}") from None
        except OSError as exc:
            raise SetupError(f"cannot read the task key file {path}: {exc.strerror}") from None
    value = value.strip()
    if len(value) < MIN_KEY_CHARS:
        raise SetupError(f"the task key from {source} is too short ({len(value)} characters, at least "
                         f"{MIN_KEY_CHARS}); {HOW_TO}")
    return value.encode()


def generate_key() -> str:
    return secrets.token_urlsafe(32)


def write_key(path: Path, force: bool = False) -> Path:
    """Write a new random key to ``path`` with mode 0600 (its folder 0700); refuses to overwrite."""
    path = path.expanduser()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise InputError(f"{path} exists; keep it (every worker must have the same key) or pass --force") from None
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(generate_key() + "\n")
    return path


def _mac(key: bytes, shard: dict[str, Any], iat: float) -> str:
    try:
        canonical = orjson.dumps({"iat": iat, "shard": shard}, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise TaskRejected(MALFORMED, f"the task's shard cannot be encoded: {type(exc).__name__}") from None
    return hmac.new(key, _DOMAIN + canonical, hashlib.sha256).hexdigest()


def seal(shard: dict[str, Any], key: bytes) -> str:
    """The signature of a shard as the orchestrator stores it in the run (keys.shards): a watcher that
    re-dispatches the shard signs only a stored shard whose seal matches (another domain than tasks)."""
    canonical = orjson.dumps(shard, option=orjson.OPT_SORT_KEYS)
    return hmac.new(key, _STORED_DOMAIN + canonical, hashlib.sha256).hexdigest()


def sealed(shard: Any, sig: Any, key: bytes) -> bool:
    """Whether ``sig`` is the seal of ``shard`` under ``key``."""
    if not isinstance(shard, dict) or not isinstance(sig, str):
        return False
    try:
        expected = seal(shard, key)
    except (TypeError, orjson.JSONEncodeError):
        return False
    return hmac.compare_digest(expected.encode(), sig.encode("utf-8", "replace"))


def sign(shard: dict[str, Any], key: bytes, now: float | None = None) -> dict[str, Any]:
    """The task payload for a shard (its ``to_dict()``), signed now."""
    iat = round(time.time() if now is None else now, 6)
    return {"shard": shard, "auth": {"v": VERSION, "iat": iat, "sig": _mac(key, shard, iat)}}


def verify(payload: Any, key: bytes, now: float | None = None) -> dict[str, Any]:
    """The shard dict of a correctly signed, timely payload; raises TaskRejected otherwise."""
    if not isinstance(payload, dict) or not isinstance(payload.get("shard"), dict):
        raise TaskRejected(MALFORMED, "the task has no shard")
    auth = payload.get("auth")
    if not isinstance(auth, dict) or not auth.get("sig"):
        raise TaskRejected(UNSIGNED, "the task is not signed")
    sig, iat = auth.get("sig"), auth.get("iat")
    if auth.get("v") != VERSION or not isinstance(sig, str) or isinstance(iat, bool) or not isinstance(iat, (int, float)):
        raise TaskRejected(BAD_SIGNATURE, "the task's signature is not of a known form")
    shard = payload["shard"]
    if not hmac.compare_digest(_mac(key, shard, iat).encode(), sig.encode("utf-8", "replace")):
        raise TaskRejected(BAD_SIGNATURE, "the task's signature does not match (another key, or the task was altered)")
    now = time.time() if now is None else now
    try:
        start, duration = float(shard["start_at"]), float(shard["duration_s"])
    except (KeyError, TypeError, ValueError):
        raise TaskRejected(MALFORMED, "the signed shard has no start_at/duration_s") from None
    if iat > now + MAX_SKEW_S:
        raise TaskRejected(STALE, f"the task was signed {iat - now:.0f}s in the future (clock skew?)")
    if iat > start + duration + MAX_SKEW_S or iat < start - MAX_LEAD_S:
        raise TaskRejected(STALE, "the task was signed far outside its shard's window")
    if now > start + duration + STALE_AFTER_S:
        raise TaskRejected(STALE, f"the task is {now - iat:.0f}s old, long past its shard's window")
    return shard


def broker_from(broker: str | None, broker_file: Path | None) -> str | None:
    """The broker URL: given (``--broker``/``FNBENCH_BROKER``) or read from ``--broker-file``/``FNBENCH_BROKER_FILE``
    (keeps a password out of ``ps``).  The URL is never printed."""
    if broker:
        return broker
    if broker_file is None:
        return None
    try:
        url = broker_file.expanduser().read_text().strip()
    except OSError as exc:
        raise InputError(f"cannot read the broker file {broker_file}: {exc.strerror}") from None
    if not url:
        raise InputError(f"the broker file {broker_file} is empty; put one redis://… URL in it")
    return url
