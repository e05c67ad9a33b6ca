"""Shared pytest fixtures: real Faktory servers for the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.server import TEST_PASSWORD, FaktoryServer


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "server: test needs a real Faktory server")


@pytest.fixture(scope="session")
def faktory_server() -> Iterator[FaktoryServer]:
    """A Faktory server without a password, shared by the whole test session."""
    server = FaktoryServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def faktory_password_server() -> Iterator[FaktoryServer]:
    """A Faktory server with password TEST_PASSWORD, shared by the whole test session."""
    server = FaktoryServer().start(password=TEST_PASSWORD)
    try:
        yield server
    finally:
        server.stop()
