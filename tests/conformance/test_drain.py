"""In-process workers of every adapter, drained against a real server: ``Jobs``, ``JobType``,
``drain()``, what handlers raise or return, and the job context in log records."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from faktory_adapters import Jobs, JobType, thread
from faktory_adapters import asyncio as aio
from faktory_adapters import gevent as gevent_adapter
from faktory_core import Failure
from tests.support.server import FaktoryServer

pytestmark = pytest.mark.server

MODULES = {"asyncio": aio, "thread": thread, "gevent": gevent_adapter}


class Custom(BaseException):
    """A BaseException of the user's own."""


@pytest.fixture
def queue() -> str:
    return f"drain-{uuid.uuid4().hex[:10]}"


def drain(adapter: str, server: FaktoryServer, queue: str, *registries: Jobs) -> int:
    worker = MODULES[adapter].Worker(
        url=server.url, queues=[queue], concurrency=2, shutdown_timeout=5.0
    )
    for jobs in registries:
        worker.include(jobs)
    if adapter == "asyncio":
        return asyncio.run(worker.drain())  # type: ignore[no-any-return]
    return worker.drain()  # type: ignore[no-any-return]


def failure_of(client: thread.Client, queue: str, jid: str) -> Failure | None:
    """The failure recorded for ``jid`` if it sits in the retry set (the queue is empty)."""
    assert client.info()["faktory"]["queues"].get(queue, 0) == 0
    client.mutate("requeue", "retries", jids=[jid])
    job = client.fetch(queue) if client.info()["faktory"]["queues"].get(queue, 0) else None
    if job is None:
        return None
    assert job.jid == jid
    client.ack(jid)
    return job.failure


def test_jobtypes_send_themselves_and_drain_runs_them_all(
    faktory_server: FaktoryServer, client: thread.Client, queue: str, adapter: str
) -> None:
    seen: list[tuple[int, str]] = []
    jobs = Jobs()

    @jobs.register("Record")
    def record(number: int, word: str) -> None:
        seen.append((number, word))

    assert isinstance(record, JobType)
    record(0, "called directly")  # still the function
    on_queue = record.options(queue=queue)
    jids = [on_queue.send(client, n, "sent") for n in range(1, 5)]
    jids.append(client.push("Record", [5, "by name"], queue=queue))
    assert drain(adapter, faktory_server, queue, jobs) == 0
    assert sorted(seen) == [
        (0, "called directly"),
        *((n, "sent") for n in range(1, 5)),
        (5, "by name"),
    ]
    assert len(set(jids)) == 5
    assert client.info()["faktory"]["queues"].get(queue, 0) == 0


def test_drain_reraises_the_first_job_error_and_fails_it_on_the_server(
    faktory_server: FaktoryServer, client: thread.Client, queue: str, adapter: str
) -> None:
    done: list[int] = []
    jobs = Jobs()

    @jobs.register("MaybeBoom")
    def maybe_boom(number: int) -> None:
        if number == 3:
            raise ValueError("three is bad")
        done.append(number)

    boom = ""
    for number in range(6):
        jid = maybe_boom.options(queue=queue).send(client, number)
        boom = jid if number == 3 else boom
    with pytest.raises(ValueError, match="three is bad"):
        drain(adapter, faktory_server, queue, jobs)
    assert sorted(done) == [0, 1, 2, 4, 5]  # nothing else lost
    failure = failure_of(client, queue, boom)
    assert failure is not None
    assert (failure.errtype, failure.message) == ("ValueError", "three is bad")


@pytest.mark.parametrize(
    ("raised", "errtype"),
    [
        (SystemExit(3), "SystemExit"),
        (KeyboardInterrupt(), "KeyboardInterrupt"),
        (Custom(), "Custom"),
    ],
    ids=["SystemExit", "KeyboardInterrupt", "custom"],
)
def test_a_base_exception_from_a_handler_fails_its_job_and_the_worker_goes_on(
    faktory_server: FaktoryServer,
    client: thread.Client,
    queue: str,
    adapter: str,
    raised: BaseException,
    errtype: str,
) -> None:
    after: list[str] = []
    jobs = Jobs()

    @jobs.register("Raise")
    def raise_it() -> None:
        raise raised

    @jobs.register("After")
    def after_it(word: str) -> None:
        after.append(word)

    jid = raise_it.options(queue=queue).send(client)
    after_it.options(queue=queue).send(client, "still ran")
    with pytest.raises(type(raised)):  # drain() re-raises it in the test, where it belongs
        drain(adapter, faktory_server, queue, jobs)
    assert after == ["still ran"]
    failure = failure_of(client, queue, jid)
    assert failure is not None
    assert failure.errtype == errtype


def test_a_handler_returning_an_unawaited_awaitable_fails_clearly(
    faktory_server: FaktoryServer, client: thread.Client, queue: str, adapter: str
) -> None:
    ran: list[str] = []
    jobs = Jobs()

    async def work() -> None:
        ran.append("never")

    # A plain function that hands back a coroutine: nothing would ever run it.
    jobs.register("Forgot", lambda: work())
    jobs.register("Value", lambda: 42)  # any other value is ignored: Faktory keeps no results
    forgot = client.push("Forgot", queue=queue)
    value = client.push("Value", queue=queue)
    with pytest.raises(TypeError, match="returned coroutine, which nothing awaits"):
        drain(adapter, faktory_server, queue, jobs)
    assert ran == []
    failure = failure_of(client, queue, forgot)
    assert failure is not None
    assert failure.errtype == "TypeError"
    assert failure_of(client, queue, value) is None


def test_log_records_written_in_a_job_carry_its_jid_and_jobtype(
    faktory_server: FaktoryServer, client: thread.Client, queue: str, adapter: str
) -> None:
    records: list[logging.LogRecord] = []
    collect = logging.Handler()
    collect.emit = records.append  # type: ignore[method-assign]
    log = logging.getLogger(f"tests.app.{adapter}")
    log.addHandler(collect)
    log.setLevel(logging.INFO)
    jobs = Jobs()

    def say(word: str) -> None:
        log.info("saying %s", word, extra={"jid": "mine"})

    jobs.register("Say", say)
    jid = client.push("Say", ["hello"], queue=queue)
    try:
        drain(adapter, faktory_server, queue, jobs)
        log.info("outside any job")
    finally:
        log.removeHandler(collect)
    inside, outside = records
    assert inside.getMessage() == "saying hello"
    assert (inside.faktory_jid, inside.faktory_jobtype) == (jid, "Say")  # type: ignore[attr-defined]
    assert (outside.faktory_jid, outside.faktory_jobtype) == ("", "")  # type: ignore[attr-defined]
    line = logging.Formatter("%(faktory_jobtype)s %(faktory_jid)s %(message)s").format(inside)
    assert line == f"Say {jid} saying hello"
    # The job's own "jid" in extra is the user's business: it does not collide with ours.
    assert (inside.jid, inside.faktory_jid) == ("mine", jid)  # type: ignore[attr-defined]


def test_registering_a_job_type_twice_is_refused(adapter: str) -> None:
    worker = MODULES[adapter].Worker()
    handler: Callable[[], Any] = lambda: None  # noqa: E731
    worker.register("Twice", handler)
    jobs = Jobs()
    jobs.register("Twice", handler)
    with pytest.raises(ValueError, match="already registered for 'Twice'"):
        worker.register("Twice", handler)
    with pytest.raises(ValueError, match="already registered for Twice"):
        worker.include(jobs)
