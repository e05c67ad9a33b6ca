"""Stops that must never be lost: during the startup hooks, and when serve() is cancelled
while the server does not answer."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from faktory_adapters import thread
from faktory_adapters.asyncio import Worker as AsyncioWorker
from faktory_adapters.asyncio import current_job
from tests.support.adapters import adapter_module
from tests.support.server import FaktoryServer

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
    jid = client.push("Never", queue=queue)
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
        code = worker.serve()
    assert code == 0
    assert time.monotonic() - started < 5.0
    assert ran == []  # stopped before the first FETCH
    assert client.info()["faktory"]["queues"].get(queue) == 1
    client.remove_queues(queue)
    del jid


def test_cancelled_serve_reraises_the_cancellation_when_the_server_does_not_answer() -> None:
    """The old adapter waited abort_grace + 5 s of its own, then raised TimeoutError."""
    queue = f"stops-{uuid.uuid4().hex[:10]}"
    with FaktoryServer() as server:

        async def main() -> tuple[BaseException | None, float, list[str]]:
            started = asyncio.Event()
            reasons: list[str] = []
            worker = AsyncioWorker(
                url=server.url, queues=[queue], shutdown_timeout=30.0, abort_grace=0.5
            )

            @worker.register("Long")
            async def long() -> None:
                started.set()
                try:
                    await asyncio.sleep(60)
                except asyncio.CancelledError:
                    reasons.append(current_job().abort.reason or "")
                    raise

            await asyncio.to_thread(_push, server.url, queue)
            serving = asyncio.create_task(worker.serve())
            await asyncio.wait_for(started.wait(), 15)
            os.kill(server.pid, signal.SIGSTOP)  # the server answers nothing from now on
            try:
                cancelled_at = time.monotonic()
                serving.cancel()
                raised: BaseException | None = None
                try:
                    await asyncio.wait_for(asyncio.shield(serving), 30)
                except BaseException as error:
                    raised = error
                return raised, time.monotonic() - cancelled_at, reasons
            finally:
                os.kill(server.pid, signal.SIGCONT)

        raised, elapsed, reasons = asyncio.run(main())
    assert isinstance(raised, asyncio.CancelledError), raised
    assert reasons == ["aborted: the task running serve() was cancelled"]
    # Bounded by the core: the grace, the END timeout (10 s), the heartbeat's END (5 s).
    assert elapsed < 20.0


def _push(url: str, queue: str) -> None:
    with thread.Client(url) as client:
        client.push("Long", queue=queue)


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
    assert worker.serve() == 0
