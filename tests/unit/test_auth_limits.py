"""Task signatures (workers/auth.py) and operator limits (workers/limits.py): pure functions, no network."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest

from workers import auth, limits
from workers.contract import Shard, Target
from workers.errors import InputError, RefusedError, SetupError

KEY = b"k" * 40


def shard(url: str = "http://127.0.0.1:8080/ok", platform: str = "http", rps: str = "100", start: float | None = None,
          duration: float = 10.0, max_in_flight: int = 256) -> Shard:
    return Shard(run_id="r1", shard_id="s0", region="a",
                 target=Target(name="t", runtime="rust", platform=platform, url=url, headers=(("x-a", "b"),),
                               address={"command": ["/bin/true"]}),
                 phase="warm", arrival={"kind": "constant", "rps": rps},
                 start_at=time.time() + 2 if start is None else start, duration_s=duration,
                 max_in_flight=max_in_flight)


def roundtrip(payload: dict) -> dict:
    """What the worker receives: Celery's JSON (stdlib json) encode and decode."""
    return json.loads(json.dumps(payload))


def test_a_signed_shard_verifies_after_the_json_roundtrip_celery_makes():
    s = shard()
    payload = roundtrip(auth.sign(s.to_dict(), KEY))
    assert Shard.from_dict(auth.verify(payload, KEY)) == s


@pytest.mark.parametrize("mutate, reason", [
    (lambda p: p.pop("auth"), auth.UNSIGNED),
    (lambda p: p["auth"].update(sig=""), auth.UNSIGNED),
    (lambda p: p["auth"].update(sig="0" * 64), auth.BAD_SIGNATURE),
    (lambda p: p["shard"]["target"].update(url="http://10.0.0.1/"), auth.BAD_SIGNATURE),
    (lambda p: p["shard"]["target"]["address"].update(command=["/bin/sh", "-c", "id"]), auth.BAD_SIGNATURE),
    (lambda p: p["shard"]["arrival"].update(rps="100000"), auth.BAD_SIGNATURE),
    (lambda p: p["auth"].update(iat=p["auth"]["iat"] + 1), auth.BAD_SIGNATURE),
    (lambda p: p["auth"].update(v=2), auth.BAD_SIGNATURE),
    (lambda p: p.pop("shard"), auth.MALFORMED),
])
def test_unsigned_altered_or_malformed_tasks_are_rejected_with_their_reason(mutate, reason):
    payload = roundtrip(auth.sign(shard().to_dict(), KEY))
    mutate(payload)
    with pytest.raises(auth.TaskRejected) as e:
        auth.verify(payload, KEY)
    assert e.value.reason == reason
    assert isinstance(e.value, RefusedError)
    assert KEY.decode() not in str(e.value)


def test_a_task_signed_with_another_key_is_rejected():
    payload = roundtrip(auth.sign(shard().to_dict(), b"other" * 10))
    with pytest.raises(auth.TaskRejected) as e:
        auth.verify(payload, KEY)
    assert e.value.reason == auth.BAD_SIGNATURE
    assert payload["auth"]["sig"] not in str(e.value)


def test_timestamps_outside_the_shards_window_or_too_old_are_stale():
    now = time.time()
    old = shard(start=now - 2 * auth.STALE_AFTER_S, duration=10)
    with pytest.raises(auth.TaskRejected) as e:  # signed in its time, replayed much later
        auth.verify(roundtrip(auth.sign(old.to_dict(), KEY, now=old.start_at - 1)), KEY, now=now)
    assert e.value.reason == auth.STALE
    s = shard(start=now + 5)
    with pytest.raises(auth.TaskRejected):  # signed in the future
        auth.verify(roundtrip(auth.sign(s.to_dict(), KEY, now=now + 10 * auth.MAX_SKEW_S)), KEY, now=now)
    with pytest.raises(auth.TaskRejected):  # signed long after the shard's window
        auth.verify(roundtrip(auth.sign(old.to_dict(), KEY, now=now)), KEY, now=now)
    soak = shard(start=now + 20 * 3600, duration=300)  # the last slice of a day-long soak, sent at its start
    assert auth.verify(roundtrip(auth.sign(soak.to_dict(), KEY, now=now)), KEY, now=now)
    with pytest.raises(auth.TaskRejected):
        far = shard(start=now + 2 * auth.MAX_LEAD_S)
        auth.verify(roundtrip(auth.sign(far.to_dict(), KEY, now=now)), KEY, now=now)
    late = shard(start=now - 30, duration=10)  # just expired: verified, then recorded as expired by the loop
    assert auth.verify(roundtrip(auth.sign(late.to_dict(), KEY, now=now - 31)), KEY, now=now)


def test_key_from_env_or_a_private_file(tmp_path, monkeypatch):
    monkeypatch.delenv(auth.KEY_ENV, raising=False)
    path = tmp_path / "sub" / "task.key"
    monkeypatch.setenv(auth.KEY_FILE_ENV, str(path))
    with pytest.raises(SetupError, match="fnbench keygen"):
        auth.load_key()
    auth.write_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(auth.load_key()) >= auth.MIN_KEY_CHARS
    with pytest.raises(InputError, match="--force"):
        auth.write_key(path)
    os.chmod(path, 0o644)
    with pytest.raises(SetupError, match="chmod 600"):
        auth.load_key()
    monkeypatch.setenv(auth.KEY_ENV, "short")
    with pytest.raises(SetupError, match="too short"):
        auth.load_key()
    monkeypatch.setenv(auth.KEY_ENV, "x" * 40)
    assert auth.load_key() == b"x" * 40


def test_broker_url_from_a_file(tmp_path):
    f = tmp_path / "broker"
    f.write_text("redis://:secret@127.0.0.1:6379/0\n")
    assert auth.broker_from(None, f) == "redis://:secret@127.0.0.1:6379/0"
    assert auth.broker_from("redis://x/0", f) == "redis://x/0"
    assert auth.broker_from(None, None) is None
    with pytest.raises(InputError):
        auth.broker_from(None, tmp_path / "missing")


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/ok", "http://127.9.9.9/", "http://localhost:1/x",
                                 "http://[::1]:8080/", "https://LOCALHOST/"])
def test_loopback_is_allowed_by_default(url, monkeypatch):
    monkeypatch.delenv(limits.ALLOWED_ENV, raising=False)
    assert limits.target_refusals(url, "http") == []


@pytest.mark.parametrize("url", ["http://10.255.255.1/", "http://127.0.0.1@10.0.0.1/", "http://2130706433/",
                                 "http://localhost.evil.example/", "http://127.0.0.1.evil.example/",
                                 "http://[::ffff:10.0.0.1]/", "ftp://127.0.0.1/", "http://127.0.0.1:99999/"])
def test_other_hosts_are_refused_by_default_with_how_to_allow(url, monkeypatch):
    monkeypatch.delenv(limits.ALLOWED_ENV, raising=False)
    (msg,) = limits.target_refusals(url, "http")
    assert limits.ALLOWED_ENV in msg and "not in" in msg


@pytest.mark.parametrize("entries, url, ok", [
    ("api.example.com", "https://api.example.com/v1", True),
    ("api.example.com:8443", "https://api.example.com/v1", False),
    ("api.example.com:8443", "https://api.example.com:8443/v1", True),
    ("*.example.com", "https://a.b.example.com/", True),
    ("*.example.com", "https://example.com.evil/", False),
    ("10.0.0.0/8", "http://10.1.2.3:81/", True),
    ("10.0.0.0/8", "http://11.1.2.3/", False),
    ("[::1]:8080", "http://[::1]:8080/", True),
    ("[::1]:8080", "http://[::1]:8081/", False),
    ("*:8080", "http://anything:8080/", True),
    ("https://api.example.com/v1/*", "https://api.example.com/v1/x", True),
    ("https://api.example.com/v1/*", "https://api.example.com/v2/x", False),
    ("https://api.example.com/v1/*", "https://api.example.com@evil.example/v1/x", False),
    ("*", "http://203.0.113.7/", True),
])
def test_allow_list_entries(entries, url, ok, monkeypatch):
    monkeypatch.setenv(limits.ALLOWED_ENV, entries)
    assert (limits.target_refusals(url, "http") == []) is ok


def test_env_references_are_resolved_before_the_check(monkeypatch):
    monkeypatch.delenv(limits.ALLOWED_ENV, raising=False)
    monkeypatch.setenv("FNBENCH_SECRET_T_HOST", "10.0.0.9")
    assert limits.target_refusals("http://${env:FNBENCH_SECRET_T_HOST}/", "http")
    monkeypatch.setenv("FNBENCH_SECRET_T_HOST", "127.0.0.1")
    assert limits.target_refusals("http://${env:FNBENCH_SECRET_T_HOST}/", "http") == []


def test_rate_and_in_flight_caps(monkeypatch):
    monkeypatch.delenv(limits.ALLOWED_ENV, raising=False)
    monkeypatch.setenv(limits.MAX_RPS_ENV, "1000")
    monkeypatch.setenv(limits.MAX_IN_FLIGHT_ENV, "500")
    assert limits.refusals(shard(rps="1000", max_in_flight=500)) == []
    (msg,) = limits.refusals(shard(rps="1001"))
    assert limits.MAX_RPS_ENV in msg
    (msg,) = limits.refusals(shard(max_in_flight=501))
    assert limits.MAX_IN_FLIGHT_ENV in msg
    assert len(limits.refusals(shard(url="http://10.0.0.1/", rps="5000", max_in_flight=9999))) == 3
    monkeypatch.setenv(limits.MAX_RPS_ENV, "lots")
    with pytest.raises(SetupError):
        limits.check_config()


def test_local_targets_have_no_host_and_unknown_platforms_are_refused(monkeypatch):
    monkeypatch.delenv(limits.ALLOWED_ENV, raising=False)
    assert limits.target_refusals("", "local") == []
    assert limits.target_refusals("", "gopher")
    assert limits.target_refusals("", "aws-lambda", {"region": "eu-west-1"})
