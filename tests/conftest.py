"""Shared pytest fixtures: real Faktory servers for the integration tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.support.server import TEST_PASSWORD, FaktoryServer

# CI replays the same examples every run (a new one found there would fail a run for no
# change of ours); a developer's runs keep exploring new ones. CI runs two test processes
# on two cores, beside servers and workers: how fast examples are drawn there says nothing.
settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
if os.environ.get("CI"):
    settings.load_profile("ci")


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
