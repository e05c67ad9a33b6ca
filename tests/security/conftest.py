"""Fixtures of the security tests: certificates, a TLS server, and the pwdhashes computed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from faktory_core._auth import password_hash
from tests.support.adapters import ADAPTERS
from tests.support.server import TEST_PASSWORD, FaktoryServer
from tests.support.tls import Certificates, make_certificates


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA, and a server certificate it signed for localhost and 127.0.0.1."""
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The certificate of a CA that signed nothing the servers use."""
    return make_certificates(tmp_path_factory.mktemp("tls-other")).ca_cert


@pytest.fixture(scope="session")
def tls_server(certificates: Certificates) -> Iterator[FaktoryServer]:
    """A Faktory speaking TLS only, with password TEST_PASSWORD; its url names localhost."""
    server = FaktoryServer(tls=(certificates.server_key, certificates.server_cert))
    server.start(password=TEST_PASSWORD)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pwdhashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every pwdhash this process computes while the test runs (a HELLO's proof)."""
    computed: list[str] = []

    def recording(password: str, salt: str, iterations: int) -> str:
        proof = password_hash(password, salt, iterations)
        computed.append(proof)
        return proof

    monkeypatch.setattr("faktory_core._connection.password_hash", recording)
    return computed
