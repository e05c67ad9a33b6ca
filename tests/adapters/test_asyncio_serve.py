"""Cancelling the asyncio Worker's serve(): the jobs are aborted and FAILed, the cancellation
goes on (the adapter never swallows a cancellation it did not cause), even when the server no
longer answers."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from typing import Any

import pytest

from faktory_adapters.asyncio import Client, Worker, current_job
from tests.support.server import FaktoryServer

pytestmark = pytest.mark.server

CANCELLED = "aborted: the task running serve() was cancelled"


def long_worker(url: str, queue: str, **options: Any) -> tuple[Worker, asyncio.Event, list[str]]:
    """A worker whose "Long" job sets ``started``, then records the reason it is aborted."""
    started, reasons = asyncio.Event(), []
    worker = Worker(url=url, queues=[queue], **options)

    @worker.register("Long")
    async def long() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            reasons.append(current_job().abort.reason or "")
            raise

    return worker, started, reasons


def test_cancelling_serve_aborts_fails_and_reraises(faktory_server: FaktoryServer) -> None:
    queue = f"serve-{uuid.uuid4().hex[:10]}"

    async def main() -> tuple[list[str], str | None]:
        worker, started, cleaned = long_worker(faktory_server.url, queue, shutdown_timeout=30)
        async with Client(faktory_server.url) as client:
            jid = await client.push("Long", queue=queue)
            serving = asyncio.create_task(worker.serve())
            await asyncio.wait_for(started.wait(), 15)
            serving.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(serving, 15)
            await client.mutate("requeue", "retries", jids=[jid])
            job = await client.fetch(queue)
            assert job is not None
            await client.ack(jid)
            return cleaned, job.failure.errtype if job.failure else None

    cleaned, errtype = asyncio.run(main())
    assert len(cleaned) == 1
    assert cleaned[0] == CANCELLED  # at once, not at 30 s
    assert errtype == "ShutdownAbort"


def test_cancelled_serve_reraises_the_cancellation_when_the_server_does_not_answer() -> None:
    """The old adapter waited abort_grace + 5 s of its own, then raised TimeoutError."""
    queue = f"serve-{uuid.uuid4().hex[:10]}"
    with FaktoryServer() as server:

        async def main() -> tuple[BaseException | None, float, list[str]]:
            worker, started, reasons = long_worker(
                server.url, queue, shutdown_timeout=30.0, abort_grace=0.5
            )
            async with Client(server.url) as client:
                await client.push("Long", queue=queue)
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
    assert reasons == [CANCELLED]
    # Bounded by the core: the grace, the END timeout (10 s), the heartbeat's END (5 s).
    assert elapsed < 20.0
