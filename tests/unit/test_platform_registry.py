"""The platform registry: declared capabilities, the FNBENCH_PLATFORMS seam's errors, one name once."""

from __future__ import annotations

import pytest

from workers import platforms
from workers.contract import Target
from workers.errors import SetupError
from workers.platforms import Counts, CountsConnections, Platform, Prepares, counters_of
from workers.platforms.http import HttpInvoker


def test_the_built_in_platforms_are_registered_in_order_with_their_capabilities():
    known = platforms.registry()
    assert list(known)[:3] == ["http", "local", "aws-lambda"]
    assert [n for n, p in known.items() if p.cold_starts][:2] == ["local", "aws-lambda"]
    assert [n for n, p in known.items() if p.billed] == ["aws-lambda"]


def test_optional_invoker_capabilities_are_declared_protocols():
    http = HttpInvoker(Target(name="t", runtime="go", platform="http", url="http://127.0.0.1:1/"))
    assert isinstance(http, Counts) and isinstance(http, Prepares) and isinstance(http, CountsConnections)

    class Bare:
        def invoke(self, due, done): ...

    assert not isinstance(Bare(), Counts | Prepares | CountsConnections)
    assert counters_of(Bare()) == {}


@pytest.mark.parametrize(("value", "message"), [
    ("no_colon", "is not module:attribute"),
    ("fnbench_surely_missing_module:PLATFORM", "cannot import 'fnbench_surely_missing_module'"),
    ("workers.platforms.http:NOPE", "module 'workers.platforms.http' has no 'NOPE'"),
    ("workers.platforms.http:make_invoker", "is a function, not a workers.platforms.Platform"),
])
def test_a_bad_plugin_entry_is_a_setup_error_naming_it(monkeypatch, value, message):
    monkeypatch.setenv(platforms.PLUGINS_ENV, value)
    with pytest.raises(SetupError, match=f"FNBENCH_PLATFORMS: .*{message}"):
        platforms.registry()


def test_a_name_is_registered_once(monkeypatch):
    monkeypatch.setattr(platforms, "PLATFORMS", dict(platforms.registry()))
    toy = Platform("toy-once", lambda target, phase, max_in_flight: None)  # type: ignore[arg-type,return-value]
    assert platforms.register(toy) is toy and platforms.get("toy-once") is toy
    assert platforms.register(toy) is toy  # the same declaration again is harmless
    with pytest.raises(SetupError, match="already registered"):
        platforms.register(Platform("http", toy.make_invoker))
