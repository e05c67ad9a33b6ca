"""Every adapter's Client sharing its connections: what a blocking FETCH, a connection that
breaks after or before a command was written, and a push_bulk too big for one command do.

Against the session's server, directly or through the fault proxy (which trickles replies
and cuts connections at a point a test waits for on its byte counters). Calls that must run
at the same time run as the adapter runs them (:func:`started`: a task, a thread, a
greenlet); a test waits for the proxy in a way that lets greenlets run (:func:`wait_until`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Final

import gevent
import gevent.event
import pytest

from faktory_adapters import asyncio as aio
from faktory_adapters._common import (
    FaktoryConnectionError,
    FaktoryTimeoutError,
    OutcomeUnknownError,
    ServerReplyError,
)
from faktory_core import Job
from faktory_core.commands import MAX_BULK_JOBS, Fetch, Push, QueueLatency, bulk_pushes
from tests.support.adapters import SyncClient
from tests.support.proxy import FaultProxy
from tests.support.server import FaktoryServer

pytestmark = pytest.mark.server

WAIT: Final = 30.0
REFUSED: Final = "jobs must have a jobtype parameter"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Started:
    """A call running on its own (a task, a thread, a greenlet): :meth:`outcome` waits for
    it and returns its result, or the exception it raised."""

    def __init__(self, wait: Callable[[], Any]) -> None:
        self._wait = wait

    def outcome(self) -> Any:
        return self._wait()


def started(client: SyncClient, method: str, *args: Any, **kwargs: Any) -> Started:
    """Start ``client.method(*args, **kwargs)`` the adapter's way, without waiting for it."""
    call = getattr(client._client, method)
    if client.adapter == "asyncio":

        async def capture() -> Any:
            try:
                return await call(*args, **kwargs)
            except Exception as error:
                return error

        future = asyncio.run_coroutine_threadsafe(capture(), client._loop)  # type: ignore[arg-type]
        return Started(lambda: future.result(WAIT))
    if client.adapter == "gevent":
        greenlet = gevent.spawn(call, *args, **kwargs)
        gevent.sleep(0)  # it runs until it waits for the server

        def joined() -> Any:
            greenlet.join(WAIT)
            assert greenlet.ready(), "still running"
            return greenlet.value if greenlet.successful() else greenlet.exception

        return Started(joined)
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call(*args, **kwargs))
        except Exception as error:
            outcome.append(error)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()

    def joined_thread() -> Any:
        runner.join(WAIT)
        assert outcome, "still running"
        return outcome[0]

    return Started(joined_thread)


def wait_until(client: SyncClient, proxy: FaultProxy, condition: Callable[[], bool]) -> None:
    """Wait (bounded) until ``condition`` holds on the proxy's counters; greenlets of this
    thread keep running meanwhile."""
    if client.adapter == "gevent":
        done = gevent.get_hub().threadpool.apply(proxy.wait_for, (condition, WAIT))
    else:
        done = proxy.wait_for(condition, WAIT)
    assert done, "the condition never held"


@pytest.fixture(params=["asyncio", "thread", "gevent"])
def adapter(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def proxy(faktory_server: FaktoryServer) -> Iterator[FaultProxy]:
    with FaultProxy(faktory_server.host, faktory_server.port) as relay:
        yield relay


@pytest.fixture
def queue(faktory_server: FaktoryServer) -> Iterator[str]:
    """A queue of the test's own, removed after it."""
    name = unique("pl")
    yield name
    with SyncClient("thread", faktory_server.url) as admin:
        admin.remove_queues(name)


def fetch_all(client: SyncClient, queue: str) -> list[str]:
    """The jids in ``queue``, oldest first, fetched and ACKed until it is empty."""
    jids = []
    while (job := client.fetch(queue)) is not None:
        jids.append(job.jid)
        client.ack(job.jid)
    return jids


def fetch_some(client: SyncClient, queue: str, count: int) -> list[str]:
    """The ``count`` jids in ``queue``, oldest first, fetched and ACKed; then it is empty (a
    FETCH of an empty queue would wait out the server's 2 s)."""
    jids = []
    for _ in range(count):
        job = client.fetch(queue)
        assert job is not None
        jids.append(job.jid)
        client.ack(job.jid)
    assert client.info()["faktory"]["queues"].get(queue, 0) == 0
    return jids


# -- a FETCH has its connection to itself -------------------------------------------------------


def test_a_fetch_the_server_holds_does_not_hold_up_other_calls(
    adapter: str, proxy: FaultProxy, queue: str
) -> None:
    # The server holds a FETCH on an empty queue up to 2 s. Twenty pushes made meanwhile go
    # on the other connection: they are all done while it still waits, so the job pushed
    # after them is the one it hands out. (Queued behind the FETCH, they would wait for its
    # null reply, and the FETCH would return None.)
    empty = unique("empty")
    with SyncClient(adapter, proxy.url, pool_size=2) as client:
        before = proxy.bytes_to_target
        fetching = started(client, "fetch", empty)
        line = len(Fetch(queues=(empty,)).encode())
        wait_until(client, proxy, lambda: proxy.bytes_to_target >= before + line)
        jids = [client.push("Probe", [n], queue=queue) for n in range(20)]
        handed = client.push("Probe", queue=empty)
        job = fetching.outcome()
        assert isinstance(job, Job), job
        assert job.jid == handed
        client.ack(handed)
        assert proxy.connections == 2
        assert fetch_some(client, queue, 20) == jids


def test_a_call_queued_past_its_timeout_gives_up_unwritten(
    adapter: str, faktory_server: FaktoryServer, proxy: FaultProxy, queue: str
) -> None:
    # One connection, held by a FETCH the server keeps (up to 2 s; its timeout is at least
    # 5): a push queued behind it, with a timeout of 0.5 s, gives up unwritten while the FETCH
    # still waits (a job pushed then by another client is the one it hands out), and the
    # FETCH and the connection carry on.
    empty = unique("empty")
    with (
        SyncClient(adapter, proxy.url, pool_size=1, timeout=0.5) as client,
        SyncClient("thread", faktory_server.url) as other,
    ):
        client.info()
        before = proxy.bytes_to_target
        fetching = started(client, "fetch", empty)
        wait_until(client, proxy, lambda: proxy.bytes_to_target > before)
        with pytest.raises(FaktoryTimeoutError) as late:
            client.push("Probe", queue=queue)
        assert str(late.value) == "PUSH got no complete reply within 0.5 s"
        handed = other.push("Probe", queue=empty)
        job = fetching.outcome()
        assert isinstance(job, Job), job
        assert job.jid == handed
        client.ack(handed)
        assert client.info()["faktory"]["queues"].get(queue, 0) == 0  # never written
        assert proxy.connections == 1


def test_a_queued_call_that_gives_up_leaves_the_call_ahead_of_it_alone(
    adapter: str, proxy: FaultProxy, queue: str
) -> None:
    # One connection: a QUEUE LATENCY reply trickles in, a byte every 50 ms, and a call with
    # a 0.3 s timeout waits behind it. Each byte makes the reader wait until the first
    # deadline on the connection, the queued call's; once it gave up, the reader must read
    # on, not take the call in flight for late (which failed it with a timeout 9.7 s early
    # and closed the connection).
    latency = QueueLatency(queues=(queue,))
    with SyncClient(adapter, proxy.url, pool_size=1) as client:
        client.info()
        proxy.set_trickle(0.05)
        before = proxy.bytes_to_target
        ahead = started(client, "queue_latency", queue)
        wait_until(client, proxy, lambda: proxy.bytes_to_target >= before + len(latency.encode()))
        with pytest.raises(FaktoryTimeoutError):
            client.request(latency, timeout=0.3)
        outcome = ahead.outcome()
        proxy.set_trickle(None)
        assert isinstance(outcome, dict), repr(outcome)
        assert queue in outcome
        assert proxy.connections == 1


def test_closing_closes_a_connection_left_with_only_a_cancelled_calls_reply(
    proxy: FaultProxy, queue: str
) -> None:
    # A call cancelled while its reply is on its way leaves the reply to be read and dropped;
    # once the Client is closed, nobody will: the connection must close then, not be left to
    # the garbage collector.
    async def scenario() -> bool:
        client = aio.Client(proxy.url)
        await client.info()
        proxy.set_trickle(1.0)
        before = proxy.bytes_to_target
        task = asyncio.create_task(client.queue_latency(queue))
        line = len(QueueLatency(queues=(queue,)).encode())
        sent = await asyncio.to_thread(
            proxy.wait_for, lambda: proxy.bytes_to_target >= before + line, WAIT
        )
        assert sent
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()
        closed = await asyncio.to_thread(proxy.wait_for, lambda: proxy.open_connections == 0, WAIT)
        proxy.set_trickle(None)
        return closed

    assert asyncio.run(scenario()), "the connection was left open"


# -- a connection that breaks -------------------------------------------------------------------


def test_a_push_whose_connection_breaks_after_it_was_sent_may_have_happened(
    adapter: str, proxy: FaultProxy, queue: str
) -> None:
    job = Job(jid=unique("jid"), jobtype="Probe", args=[], queue=queue)
    line = len(Push(job=job).encode())
    with SyncClient(adapter, proxy.url) as client:
        client.info()
        proxy.set_trickle(1.0)  # the +OK comes a byte a second: the cut falls inside it
        before = proxy.bytes_to_target
        pushing = started(client, "push", job)
        wait_until(client, proxy, lambda: proxy.bytes_to_target >= before + line)
        assert proxy.cut_all(reset=False) == 1
        proxy.set_trickle(None)
        error = pushing.outcome()
        assert isinstance(error, OutcomeUnknownError), repr(error)
        assert isinstance(error, FaktoryConnectionError)
        assert isinstance(error, ConnectionError)  # what `except ConnectionError` catches
        assert error.jid == job.jid
        assert error.command == Push(job=job)
        assert str(error) == (
            f"{proxy.url} closed the connection before the reply to PUSH was complete: job "
            f"{job.jid} may or may not have been pushed (Faktory cannot tell). Push the same "
            "Job again if running it twice is harmless (its jid stays the same, so a handler "
            "can skip one it has run)"
        )
        # Here it had: the server read it whole. Pushed again, the jid shows the duplicate.
        assert client.push(job) == job.jid
        assert fetch_some(client, queue, 2) == [job.jid, job.jid]


def test_calls_queued_behind_a_connection_that_breaks_go_out_on_another(
    adapter: str, proxy: FaultProxy, queue: str
) -> None:
    # One connection: the FETCH holds it (the server waits 2 s), so the push waits its turn
    # behind it, unwritten. The connection is cut: the FETCH was sent and fails as such; the
    # push was not, so it goes out on a new connection and succeeds.
    empty = unique("empty")
    with SyncClient(adapter, proxy.url, pool_size=1) as client:
        client.info()
        before = proxy.bytes_to_target
        fetching = started(client, "fetch", empty)
        wait_until(client, proxy, lambda: proxy.bytes_to_target > before)
        pushing = started(client, "push", "Probe", queue=queue)
        assert proxy.cut_all(reset=False) == 1
        error = fetching.outcome()
        jid = pushing.outcome()
        assert isinstance(error, OutcomeUnknownError), repr(error)
        assert error.jid is None
        assert str(error).endswith(
            ": FETCH may or may not have been carried out: repeat it if doing it twice is harmless"
        )
        assert isinstance(jid, str), repr(jid)
        assert proxy.connections == 2
        assert fetch_some(client, queue, 1) == [jid]


# -- push_bulk in commands the server accepts -----------------------------------------------------


def refused_job(jid: str, queue: str) -> Job:
    """A job the server refuses (no jobtype), which the core would never build."""
    job = Job(jid=jid, jobtype="Refused", args=[], queue=queue)
    object.__setattr__(job, "jobtype", "")
    return job


def test_push_bulk_of_100000_jobs_goes_in_commands_of_1000_and_merges_the_refusals(
    adapter: str, faktory_server: FaktoryServer, queue: str
) -> None:
    assert MAX_BULK_JOBS == 1000
    jobs = [
        Job(jid=f"{queue}-{n:06}", jobtype="Probe", args=[n], queue=queue) for n in range(100_000)
    ]
    refused = {n: refused_job(f"{queue}-refused-{n:06}", queue) for n in (0, 999, 1000, 99_999)}
    for n, job in refused.items():
        jobs[n] = job
    with (
        FaultProxy(faktory_server.host, faktory_server.port) as proxy,
        SyncClient(adapter, proxy.url, timeout=WAIT) as client,
    ):
        rejected = client.push_bulk(jobs)
        assert rejected == {job.jid: REFUSED for job in refused.values()}
        assert client.info()["faktory"]["queues"][queue] == 100_000 - len(refused)
        # A hundred PUSHB lines went out, one after another, and came back one reply each.
        assert proxy.bytes_to_target > 100 * len(b"PUSHB []\r\n")


def test_push_bulk_cut_midway_says_which_jobs_were_pushed(
    adapter: str, proxy: FaultProxy, queue: str
) -> None:
    jobs = [
        Job(jid=f"{queue}-{n:05}", jobtype="Probe", args=[n], queue=queue) for n in range(10_000)
    ]
    jobs[5] = refused_job(f"{queue}-refused", queue)
    lines = [len(command.encode()) for command in bulk_pushes(jobs)]
    with SyncClient(adapter, proxy.url, timeout=WAIT) as client:
        client.info()
        before = proxy.bytes_to_target
        # Each PUSHB waits for the reply to the one before, and the replies crawl: once the
        # third has begun to reach the server, the connection is cut before its reply.
        proxy.set_trickle(0.005)
        pushing = started(client, "push_bulk", jobs)
        third = before + lines[0] + lines[1] + 1
        wait_until(client, proxy, lambda: proxy.bytes_to_target >= third)
        assert proxy.cut_all(reset=False) == 1
        proxy.set_trickle(None)
        error = pushing.outcome()
    assert isinstance(error, OutcomeUnknownError), repr(error)
    progress = error.bulk
    assert progress is not None
    chunks = [[job.jid for job in jobs[start : start + 1000]] for start in range(0, 10_000, 1000)]
    assert list(progress.pushed) == [jid for jid in chunks[0] + chunks[1] if jid != jobs[5].jid]
    assert progress.refused == {jobs[5].jid: REFUSED}
    assert list(progress.uncertain) == chunks[2]
    assert list(progress.unsent) == [jid for chunk in chunks[3:] for jid in chunk]
    assert error.__notes__ == [
        "push_bulk: of 10000 jobs, 1999 were pushed, 1 refused, 1000 may or may not have been "
        "pushed, 7000 were not sent (error.bulk names them)"
    ]
    with SyncClient("thread", proxy.url) as admin:
        queued = fetch_all(admin, queue)
    assert queued[:1999] == list(progress.pushed)
    assert set(queued[1999:]) <= set(progress.uncertain)
    assert len(queued) == len(set(queued))


def test_push_bulk_refused_whole_says_so(adapter: str, proxy: FaultProxy, queue: str) -> None:
    # A PUSHB the server refuses whole (here: a job it cannot decode) refuses all its jobs.
    job = Job(jid=unique("jid"), jobtype="Probe", args=[], queue=queue)
    broken = Job(jid=unique("jid"), jobtype="Probe", args=[], queue=queue)
    object.__setattr__(broken, "args", "not a list")  # which the core would never build
    with SyncClient(adapter, proxy.url) as client, pytest.raises(ServerReplyError) as refused:
        client.push_bulk([job, broken])
    assert refused.value.message.startswith("invalid JSON")
    progress = refused.value.bulk
    assert progress is not None
    assert progress.refused == dict.fromkeys([job.jid, broken.jid], str(refused.value))
    assert (progress.pushed, progress.uncertain, progress.unsent) == ((), (), ())
    with SyncClient(adapter, proxy.url) as client:
        assert client.info()["faktory"]["queues"].get(queue, 0) == 0
