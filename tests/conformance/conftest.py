"""Fixtures the conformance suites share: the adapter under test, and a producer."""

from __future__ import annotations

from collections.abc import Iterator

import gevent
import pytest

from faktory_adapters import thread
from tests.support.adapters import ADAPTERS
from tests.support.server import FaktoryServer


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each test taking it runs once per adapter; a gevent one on a hub of its own."""
    yield str(request.param)
    if request.param == "gevent":
        # The next gevent test gets a fresh hub and threadpool, as a process would. After
        # some orders of tests, the shared hub's threadpool was left with dead threads it
        # still counted, and a getaddrinfo queued there never ran.
        gevent.get_hub().destroy(destroy_loop=True)


@pytest.fixture
def client(faktory_server: FaktoryServer) -> Iterator[thread.Client]:
    """A blocking Client of the session's server, to push and inspect (a suite may override)."""
    with thread.Client(faktory_server.url) as blocking:
        yield blocking
