"""The Sentry middleware of docs/errors.md, as the page shows it, in every adapter, against a
real server and the real sentry-sdk with the default integrations the page recommends.

Events go to a Transport that keeps them (sentry-sdk's own mechanism, no network). Jobs that
run at the same time each get one event with their own tags; a job that succeeds, or is
aborted, gets none; the worker's ERROR log line adds none.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import types
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from faktory_adapters import thread
from tests.support.adapters import ADAPTERS, WAIT, adapter_module
from tests.support.server import FaktoryServer

pytestmark = pytest.mark.server

PAGE = Path(__file__).resolve().parents[2] / "docs" / "errors.md"
_MODULE_BLOCK = re.compile(
    r"^<!-- file: sentry_reporting\.py -->\n```python\n(?P<code>.*?)^```$", re.MULTILINE | re.DOTALL
)
#: Jobs that fail, running at the same time as one that succeeds (order 0).
FAILING = (1, 2, 3)


class Declined(Exception):
    """What a failing job raises."""


class KeepEvents(Transport):
    """Keeps the error events instead of sending them."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        event = envelope.get_event()
        if event is not None:
            self.events.append(dict(event))


@pytest.fixture(scope="module")
def reporting() -> types.ModuleType:
    """The page's ``sentry_reporting.py`` block, as a module (tracebacks name the page's lines)."""
    text = PAGE.read_text(encoding="utf-8")
    match = _MODULE_BLOCK.search(text)
    assert match is not None, "docs/errors.md has no <!-- file: sentry_reporting.py --> block"
    padding = "\n" * text.count("\n", 0, match.start("code"))
    module = types.ModuleType("sentry_reporting")
    exec(compile(padding + match["code"], str(PAGE), "exec"), module.__dict__)
    return module


@pytest.fixture
def kept() -> Iterator[KeepEvents]:
    """sentry-sdk initialised as the page says (default integrations), events kept here."""
    transport = KeepEvents()
    sentry_sdk.init(transport=transport)
    try:
        yield transport
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.get_global_scope().set_client(None)  # later tests see no client


@pytest.fixture
def queue() -> str:
    return f"reporting-{uuid.uuid4().hex[:10]}"


def middleware(reporting: types.ModuleType, adapter: str) -> Callable[..., Any]:
    blocking: Callable[..., Any] = reporting.report_errors_blocking
    return reporting.report_errors if adapter == "asyncio" else blocking


def meeting(adapter: str, count: int) -> Callable[[], Any]:
    """A wait (awaited in asyncio) that returns once ``count`` jobs wait in it, so they run at
    the same time; after WAIT s it raises instead."""
    if adapter == "thread":
        barrier = threading.Barrier(count)
        return lambda: barrier.wait(WAIT)
    arrived = [0]
    if adapter == "gevent":
        all_there = gevent.event.Event()

        def meet() -> None:
            arrived[0] += 1
            if arrived[0] == count:
                all_there.set()
            if not all_there.wait(WAIT):
                raise TimeoutError("the jobs did not all start")

        return meet
    events: list[asyncio.Event] = []  # made on the worker's loop

    async def meet_async() -> None:
        if not events:
            events.append(asyncio.Event())
        arrived[0] += 1
        if arrived[0] == count:
            events[0].set()
        await asyncio.wait_for(events[0].wait(), WAIT)

    return meet_async


def register_orders(worker: Any, adapter: str) -> None:
    """Job type "Order": it sets a tag and a breadcrumb of its own, meets the other jobs, then
    fails unless its order is 0."""
    meet = meeting(adapter, len(FAILING) + 1)

    def mark(order: int) -> None:
        sentry_sdk.set_tag("order", str(order))
        sentry_sdk.add_breadcrumb(message=f"order {order}")

    if adapter == "asyncio":

        @worker.register("Order")
        async def order_async(order: int) -> None:
            mark(order)
            await meet()
            if order:
                raise Declined(f"order {order} declined")

        return

    @worker.register("Order")
    def order_blocking(order: int) -> None:
        mark(order)
        meet()
        if order:
            raise Declined(f"order {order} declined")


def new_worker(adapter: str, server: FaktoryServer, queue: str, **options: Any) -> Any:
    return adapter_module(adapter).Worker(
        url=server.url, queues=[queue], concurrency=len(FAILING) + 1, **options
    )


def drain(adapter: str, worker: Any) -> bool:
    """``worker.drain()``, stopped after WAIT s if still draining; whether it re-raised what a
    job raised (Declined, the one exception expected)."""
    fallback = threading.Timer(WAIT, worker.stop)
    fallback.daemon = True
    fallback.start()
    try:
        if adapter == "asyncio":
            asyncio.run(worker.drain())
        else:
            worker.drain()
    except Declined:
        return True
    finally:
        fallback.cancel()
    return False


def push_orders(server: FaktoryServer, queue: str) -> dict[int, str]:
    """Push orders 0 (succeeds) and FAILING; their jids by order."""
    with thread.Client(server.url) as client:
        return {
            order: client.push("Order", [order], queue=queue, retry=0) for order in (0, *FAILING)
        }


def crumbs(event: dict[str, Any]) -> list[str]:
    """The messages of the event's breadcrumbs."""
    return [crumb.get("message", "") for crumb in event.get("breadcrumbs", {}).get("values", [])]


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_each_failed_job_is_reported_once_with_its_own_tags(
    adapter: str,
    faktory_server: FaktoryServer,
    queue: str,
    reporting: types.ModuleType,
    kept: KeepEvents,
) -> None:
    worker = new_worker(adapter, faktory_server, queue)
    worker.use(middleware(reporting, adapter))
    register_orders(worker, adapter)
    jids = push_orders(faktory_server, queue)
    with sentry_sdk.isolation_scope():  # this test's; the worker runs in it
        sentry_sdk.add_breadcrumb(message="before the jobs")  # not about any job
        # The middleware re-raised: the worker FAILed the jobs, and drain() re-raises.
        assert drain(adapter, worker)

    # One event per failed job, none for the job that succeeded, none from the worker's log
    # line (an event of the logging integration has no faktory.jid tag).
    reported = [event.get("tags", {}).get("faktory.jid") for event in kept.events]
    assert sorted(reported, key=str) == sorted(jids[order] for order in FAILING)
    for order in FAILING:
        [event] = [e for e in kept.events if e["tags"]["faktory.jid"] == jids[order]]
        [exception] = event["exception"]["values"]
        assert (exception["type"], exception["value"]) == ("Declined", f"order {order} declined")
        assert event["tags"] == {
            "faktory.jid": jids[order],
            "faktory.jobtype": "Order",
            "faktory.queue": queue,
            "order": str(order),  # the handler's own tag, not another job's
        }
        assert crumbs(event) == [f"order {order}"]  # its own, none from before or others
        assert "logger" not in event


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_without_the_middleware_the_worker_s_error_line_is_reported(
    adapter: str, faktory_server: FaktoryServer, queue: str, kept: KeepEvents
) -> None:
    # What the previous test's single event per job proves: the logging integration is on,
    # and it is the DedupeIntegration that drops the worker's record of a reported failure.
    worker = new_worker(adapter, faktory_server, queue)
    register_orders(worker, adapter)
    jids = push_orders(faktory_server, queue)
    assert drain(adapter, worker)

    assert sorted(event["extra"]["faktory_jid"] for event in kept.events) == sorted(
        jids[order] for order in FAILING
    )
    for event in kept.events:
        assert event["logger"] == "faktory.worker"
        assert event["extra"]["faktory_jobtype"] == "Order"
        assert not any(tag.startswith("faktory.") for tag in event.get("tags", {}))


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_job_aborted_at_its_time_limit_is_not_reported(
    adapter: str,
    faktory_server: FaktoryServer,
    queue: str,
    reporting: types.ModuleType,
    kept: KeepEvents,
) -> None:
    worker = new_worker(adapter, faktory_server, queue, time_limits={"Stall": 0.2})
    passed: list[str] = []  # what went through the middleware

    if adapter == "asyncio":

        @worker.use
        async def spy_async(context: Any, call_next: Callable[[], Any]) -> None:
            try:
                await call_next()
            except BaseException as error:
                passed.append(type(error).__name__)
                raise

        @worker.register("Stall")
        async def stall_async() -> None:
            await asyncio.sleep(WAIT)

    else:
        sleep = gevent.sleep if adapter == "gevent" else time.sleep

        @worker.use
        def spy(context: Any, call_next: Callable[[], Any]) -> None:
            try:
                call_next()
            except BaseException as error:
                passed.append(type(error).__name__)
                raise

        @worker.register("Stall")
        def stall() -> None:
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:  # a thread gets JobAborted between sleeps
                sleep(0.01)

    worker.use(middleware(reporting, adapter))
    with thread.Client(faktory_server.url) as client:
        client.push("Stall", [], queue=queue, retry=0)
    started = time.monotonic()
    assert not drain(adapter, worker)  # the job was FAILed, but raised nothing of its own

    assert time.monotonic() - started < WAIT / 2  # aborted, not run out
    assert passed == ["CancelledError" if adapter == "asyncio" else "JobAborted"]
    assert kept.events == []
