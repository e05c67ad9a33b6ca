"""One abort vocabulary: code written against one adapter's ``current_job().abort`` works
unchanged in another or fails loudly at its first use; and ``run_inline`` gives a handler a job
context whose abort signal a test can set."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import uuid
from typing import Any

import gevent
import pytest

from faktory_adapters import asyncio as aio
from faktory_adapters import gevent as gevent_adapter
from faktory_adapters.testing import run_inline
from faktory_core import Job
from tests.support.adapters import ADAPTERS, adapter_module, capture_logs
from tests.support.server import FaktoryServer


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_is_set_is_a_method_and_the_first_reason_stays(adapter: str) -> None:
    signal = adapter_module(adapter).AbortSignal()
    assert signal.is_set() is False
    assert signal.reason is None
    signal.set("the shutdown timeout ran out")
    signal.set("a second reason")
    assert signal.is_set() is True
    assert signal.reason == "the shutdown timeout ran out"


def test_every_adapter_offers_a_blocking_wait_by_the_same_name(adapter: str) -> None:
    signal = adapter_module(adapter).AbortSignal()
    assert signal.wait_blocking(0) is False
    signal.set("stop")
    assert signal.wait_blocking(0) is True


@pytest.mark.parametrize("adapter", ["thread", "gevent"])
def test_a_blocking_wait_returns_a_bool(adapter: str) -> None:
    signal = adapter_module(adapter).AbortSignal()
    assert signal.wait(0) is False
    signal.set("stop")
    assert signal.wait(0.01) is True


def test_an_asyncio_wait_awaited_returns_the_bool() -> None:
    async def main() -> tuple[bool, bool]:
        signal = aio.AbortSignal()
        before = await signal.wait(0)
        asyncio.get_running_loop().call_soon(signal.set, "stop")
        return before, await signal.wait(5)

    assert asyncio.run(main()) == (False, True)


def test_an_asyncio_wait_used_as_a_bool_refuses() -> None:
    # The thread adapter's spelling, moved to asyncio by its import line: it must not be
    # silently true (a coroutine is), skipping the job's work.
    async def main() -> None:
        signal = aio.AbortSignal()
        if signal.wait(0.05):
            raise AssertionError("unreachable")

    with pytest.raises(TypeError, match="must be awaited"):
        asyncio.run(main())


def test_an_asyncio_wait_called_and_dropped_is_logged_as_an_error() -> None:
    signal = aio.AbortSignal()
    with capture_logs() as logs:
        signal.wait(1)  # waits for nothing
        gc.collect()
    errors = [r for r in logs.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "waited for nothing" in errors[0].getMessage()


def test_the_thread_docs_example_moved_to_asyncio_fails_its_job_loudly(
    faktory_server: FaktoryServer,
) -> None:
    queue = f"vocab-{uuid.uuid4().hex[:10]}"
    worker = aio.Worker(url=faktory_server.url, queues=[queue], concurrency=1)
    done: list[int] = []

    @worker.register("Import")
    def import_rows(rows: int) -> None:  # as in docs/adapters.md's thread example
        abort = aio.current_job().abort
        for row in range(rows):
            if abort.wait(0.05):
                return
            done.append(row)

    async def main() -> None:
        async with aio.Client(faktory_server.url) as client:
            await client.push(
                Job.create("Import", [3], jid_factory=lambda: uuid.uuid4().hex, queue=queue)
            )
        await worker.drain()

    with pytest.raises(TypeError, match="must be awaited"):
        asyncio.run(main())
    assert done == []


# -- run_inline ------------------------------------------------------------------------------


def job_of(*args: Any) -> Job:
    return Job.create("Export", list(args), jid_factory=lambda: uuid.uuid4().hex)


def test_run_inline_gives_the_handler_its_job(adapter: str) -> None:
    module = adapter_module(adapter)
    job = job_of(1, "two")

    def handler(one: int, two: str) -> tuple[str, list[Any], bool]:
        context = module.current_job()
        return context.job.jid, context.job.args, context.abort.is_set()

    assert run_inline(handler, job) == (job.jid, [1, "two"], False)


def test_run_inline_takes_an_abort_signal_the_test_sets(adapter: str) -> None:
    module = adapter_module(adapter)
    rows: list[int] = []

    def export(count: int) -> None:
        abort = module.current_job().abort
        for row in range(count):
            if abort.wait_blocking(0):
                return
            rows.append(row)

    signal = module.AbortSignal()
    signal.set("the test aborts it")
    run_inline(export, job_of(5), abort=signal)
    assert rows == []
    run_inline(export, job_of(2))  # its own signal, never set
    assert rows == [0, 1]


def test_run_inline_keeps_the_context_while_an_async_handler_runs() -> None:
    async def export(count: int) -> list[str]:
        seen = []
        for _ in range(count):
            await asyncio.sleep(0)
            context = aio.current_job()
            seen.append(context.job.jobtype)
            if await context.abort.wait(0):
                break
        return seen

    assert asyncio.run(run_inline(export, job_of(2))) == ["Export", "Export"]
    with pytest.raises(LookupError, match="outside a job"):
        aio.current_job()


def test_run_inline_gives_gevent_code_a_gevent_signal_when_asked() -> None:
    signal = gevent_adapter.AbortSignal()

    def handler() -> bool:
        waiter = gevent.spawn(gevent_adapter.current_job().abort.wait, 5)
        gevent.spawn(signal.set, "stop")
        return bool(waiter.get(timeout=5))

    assert run_inline(handler, job_of(), abort=signal) is True


def test_is_set_read_uncalled_refuses_to_be_a_bool(adapter: str) -> None:
    # Once a property: `if abort.is_set:` would be a bound method, always true.
    signal = adapter_module(adapter).AbortSignal()
    with pytest.raises(TypeError, match=r"write abort\.is_set\(\)"):
        bool(signal.is_set)


def test_an_asyncio_wait_is_a_coroutine_asyncio_takes_as_one() -> None:
    async def main() -> list[bool]:
        signal = aio.AbortSignal()
        task = asyncio.create_task(signal.wait(5))
        unset = await asyncio.wait_for(signal.wait(0.01), 5)
        signal.set("stop")
        return [unset, await task, await asyncio.wait_for(signal.wait(5), 5)]

    with capture_logs() as logs:
        assert asyncio.run(main()) == [False, True, True]
        gc.collect()
    assert not [r for r in logs.records if r.levelno >= logging.ERROR], logs.text


def test_an_asyncio_wait_cancelled_before_it_starts_logs_nothing() -> None:
    async def main() -> None:
        task = asyncio.ensure_future(aio.AbortSignal().wait(5))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with capture_logs() as logs:
        asyncio.run(main())
        gc.collect()
    assert not [r for r in logs.records if r.levelno >= logging.ERROR], logs.text


def test_an_asyncio_signal_set_from_another_thread_wakes_its_waiter() -> None:
    async def main() -> bool:
        signal = aio.AbortSignal()
        waiting = asyncio.ensure_future(signal.wait(30))
        await asyncio.sleep(0)
        assert signal._event is not None  # the waiter has made its event: it waits on it
        setter = threading.Thread(target=signal.set, args=("from a thread",))
        setter.start()
        woke = await asyncio.wait_for(waiting, 10)  # not the 30 s of its own timeout
        setter.join(10)
        return woke

    assert asyncio.run(main()) is True


def test_an_asyncio_wait_dropped_in_a_job_is_logged_on_the_loop_s_next_turn() -> None:
    async def main() -> int:
        aio.AbortSignal().wait(1)  # waits for nothing
        gc.collect()
        return len(ours())  # not yet: a finalizer may run inside a handler's lock

    def ours() -> list[logging.LogRecord]:
        return [r for r in logs.records if r.name.startswith("faktory")]

    with capture_logs() as logs:
        assert asyncio.run(main()) == 0
    assert ["waited for nothing" in r.getMessage() for r in ours()] == [True]
