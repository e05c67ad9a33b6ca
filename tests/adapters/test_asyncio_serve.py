"""Cancelling the asyncio Worker's serve(): the jobs are aborted and FAILed, the cancellation
goes on (the adapter never swallows a cancellation it did not cause)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from faktory_adapters.asyncio import Client, Worker, current_job
from tests.support.server import FaktoryServer

pytestmark = pytest.mark.server


def test_cancelling_serve_aborts_fails_and_reraises(faktory_server: FaktoryServer) -> None:
    queue = f"serve-{uuid.uuid4().hex[:10]}"

    async def main() -> tuple[list[str], str | None]:
        started, cleaned = asyncio.Event(), []
        worker = Worker(url=faktory_server.url, queues=[queue], shutdown_timeout=30)

        @worker.register("Long")
        async def long() -> None:
            started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cleaned.append(current_job().abort.reason or "")
                raise

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
    assert cleaned[0] == "aborted: the task running serve() was cancelled"  # at once, not at 30 s
    assert errtype == "ShutdownAbort"
