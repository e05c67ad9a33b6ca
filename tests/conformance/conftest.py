"""Fixtures the conformance suites share: the adapter under test, and a producer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from faktory_adapters import thread
from tests.support.adapters import ADAPTERS
from tests.support.server import FaktoryServer


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    """Each test taking it runs once per adapter."""
    return str(request.param)


@pytest.fixture
def client(faktory_server: FaktoryServer) -> Iterator[thread.Client]:
    """A blocking Client of the session's server, to push and inspect (a suite may override)."""
    with thread.Client(faktory_server.url) as blocking:
        yield blocking
