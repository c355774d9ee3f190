import pytest

from tests.servers import FaultServer


@pytest.fixture(scope="session")
def fault_server():
    with FaultServer() as server:
        yield server
