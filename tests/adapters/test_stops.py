"""Stops that must never be lost: those that come while the startup hooks run."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from faktory_adapters import thread
from tests.support.adapters import adapter_module
from tests.support.server import FaktoryServer
from tests.support.watchdog import serve_until_it_stops

pytestmark = pytest.mark.server


@pytest.fixture
def queue() -> str:
    return f"stops-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def client(faktory_server: FaktoryServer) -> Iterator[thread.Client]:
    with thread.Client(faktory_server.url) as blocking:
        yield blocking


@pytest.mark.parametrize("adapter", ["asyncio", "thread", "gevent"])
def test_a_stop_during_the_startup_hooks_stops_the_worker(
    faktory_server: FaktoryServer, client: thread.Client, queue: str, adapter: str
) -> None:
    client.push("Never", queue=queue)
    worker: Any = adapter_module(adapter).Worker(
        url=faktory_server.url, queues=[queue], shutdown_timeout=5.0
    )
    ran: list[str] = []
    worker.register("Never", lambda: ran.append("ran"))

    if adapter == "asyncio":

        async def startup() -> None:
            worker.stop()  # as a SIGTERM would, while the hook awaits
            await asyncio.sleep(0.05)

        worker.on_startup(startup)
        started = time.monotonic()
        code = asyncio.run(asyncio.wait_for(worker.serve(), 15))
    else:
        worker.on_startup(worker.stop)
        started = time.monotonic()
        code = serve_until_it_stops(adapter, worker)  # a lost stop: the fallback's, at 20 s
    assert code == 0
    assert time.monotonic() - started < 5.0
    assert ran == []  # stopped before the first FETCH
    assert client.info()["faktory"]["queues"].get(queue) == 1
    client.remove_queues(queue)


def test_a_stop_from_another_thread_during_a_slow_startup_hook_is_kept(
    faktory_server: FaktoryServer, queue: str
) -> None:
    worker = thread.Worker(url=faktory_server.url, queues=[queue], shutdown_timeout=5.0)
    hooked = threading.Event()
    release = threading.Event()

    def startup() -> None:
        hooked.set()
        release.wait(15)

    worker.on_startup(startup)

    def stopper() -> None:
        hooked.wait(15)
        worker.stop()
        release.set()

    threading.Thread(target=stopper, daemon=True).start()
    started = time.monotonic()
    assert serve_until_it_stops("thread", worker) == 0  # a lost stop: the fallback's, at 20 s
    assert time.monotonic() - started < 10.0
