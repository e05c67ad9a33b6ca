"""Context variables a middleware sets are what its job sees, in every adapter and for both
kinds of handler: an error tracker's per-job scope, a request id for the logs."""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from faktory_adapters import thread
from tests.support.adapters import adapter_module
from tests.support.server import FaktoryServer

pytestmark = pytest.mark.server

TAG: contextvars.ContextVar[str] = contextvars.ContextVar("TAG", default="unset")


@pytest.mark.parametrize(
    ("adapter", "coroutine"),
    [("asyncio", True), ("asyncio", False), ("thread", False), ("gevent", False)],
)
def test_a_job_sees_the_context_its_middleware_set(
    faktory_server: FaktoryServer, adapter: str, coroutine: bool
) -> None:
    queue = f"contextvars-{uuid.uuid4().hex[:10]}"
    seen: dict[str, str] = {}
    worker: Any = adapter_module(adapter).Worker(
        url=faktory_server.url, queues=[queue], concurrency=4
    )

    if adapter == "asyncio":

        @worker.use
        async def tag(context: Any, call_next: Callable[[], Awaitable[None]]) -> None:
            TAG.set(context.job.jid)
            await call_next()

    else:

        @worker.use
        def tag(context: Any, call_next: Callable[[], None]) -> None:
            TAG.set(context.job.jid)
            call_next()

    def record(name: str) -> None:
        seen[name] = TAG.get()

    if coroutine:

        @worker.register("Record")
        async def record_async(name: str) -> None:
            record(name)

    else:
        worker.register("Record", record)

    with thread.Client(faktory_server.url) as client:
        jids = {client.push("Record", [f"job {n}"], queue=queue): f"job {n}" for n in range(6)}
    if adapter == "asyncio":
        assert asyncio.run(worker.drain()) == 0
    else:
        assert worker.drain() == 0
    assert seen == {name: jid for jid, name in jids.items()}
