"""Fixtures of the ``faktory-worker`` tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from faktory_adapters.thread import Client
from tests.support.server import FaktoryServer
from tests.support.tls import make_certificates


@pytest.fixture
def client(faktory_server: FaktoryServer) -> Iterator[Client]:
    with Client(faktory_server.url) as producer:
        yield producer


@pytest.fixture
def queue() -> str:
    return f"cli-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FaktoryServer, Path]]:
    """A server speaking TLS only, with the CA file that trusts its certificate."""
    certs = make_certificates(tmp_path_factory.mktemp("cli-tls"))
    with FaktoryServer(tls=(certs.server_key, certs.server_cert)) as server:
        yield server, certs.ca_cert
