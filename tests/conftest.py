import pytest

from tests.servers import FaultServer, OtelCollector


@pytest.fixture
def lambda_credentials(monkeypatch):
    """AWS credentials for the standard chain, and nothing else of it: clients sign with them and a
    local Lambda started in the test (``lambda_local.Background``) takes them as its own."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
                 "FNBENCH_LAMBDA_ACCESS_KEY_ID", "FNBENCH_LAMBDA_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "fnbench")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fnbench")


@pytest.fixture(scope="session")
def fault_server():
    with FaultServer() as server:
        yield server


@pytest.fixture
def otel_collector(tmp_path):
    """fnbench's OpenTelemetry Collector on free loopback ports (``OtelCollector``): send OTLP to
    ``http_endpoint`` (or ``grpc_endpoint``), read what arrived with ``read()`` / ``wait_for()``."""
    with OtelCollector(tmp_path / "otelcol") as collector:
        yield collector
