"""HTTPS targets: keep-alive over TLS, and certificate verification on by default."""

import shutil
import ssl
import subprocess

import pytest

from tests.integration.test_outcomes import drive
from tests.servers import FaultServer


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.fail("openssl is needed to make the test certificate (apt-get install openssl)")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")], check=True, capture_output=True)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    with FaultServer(ssl_context=ctx) as server:
        yield server


@pytest.mark.integration
def test_untrusted_certificate_is_refused_by_default(tls_server):
    _, totals = drive(tls_server.url("/ok"), rate=50, seconds=1.0)
    assert totals == {"connect_error": 50}


@pytest.mark.integration
def test_https_chunked_responses_over_reused_connections(tls_server):
    before = tls_server.connections
    _, totals = drive(tls_server.url("/chunked"), rate=100, seconds=1.0, tls_verify=False)
    assert totals == {"ok": 100}
    assert tls_server.connections - before < 10  # keep-alive: a handful of handshakes for 100 requests
