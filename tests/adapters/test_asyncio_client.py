"""faktory_adapters.asyncio.Client, every method, against a real Faktory v1.9.4.

Each test runs its own event loop with ``asyncio.run`` (no pytest-asyncio), bounds every wait
(the whole test with ``run``'s timeout, each command with the client's own ``timeout``), and
isolates itself with its own queue names. Only one test waits out the server's ~2 s empty FETCH.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
import time
import urllib.parse
import uuid
import warnings
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest

from faktory_adapters._common import (
    ClientClosedError,
    FaktoryConnectionError,
    WrongEventLoopError,
)
from faktory_adapters.asyncio import (
    AuthenticationError,
    Client,
    FaktoryError,
    ServerReplyError,
)
from faktory_core import Job
from faktory_core.commands import (
    Fetch,
    Info,
    MutateOperation,
    MutateTarget,
    Push,
    QueueLatency,
    TrackGet,
)
from faktory_core.events import OK, Fetched, InfoReply
from tests.support.proxy import FaultProxy
from tests.support.server import TEST_PASSWORD, FaktoryServer, closed_port

pytestmark = pytest.mark.server

_T = TypeVar("_T")

# Every command of these tests answers at once except the one empty FETCH (~2 s).
COMMAND_TIMEOUT = 5.0


def run(coroutine: Coroutine[Any, Any, _T], timeout: float = 30.0) -> _T:
    """Run one test body on a fresh event loop, bounded as a whole."""
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def client_for(server: FaktoryServer, **options: Any) -> Client:
    options.setdefault("timeout", COMMAND_TIMEOUT)
    return Client(server.url, **options)


async def queue_sizes(client: Client) -> dict[str, int]:
    sizes: dict[str, int] = (await client.info())["faktory"]["queues"]
    return sizes


async def connection_count(client: Client) -> int:
    """The server's count of open command connections (``client``'s own included)."""
    count = (await client.info())["server"]["connections"]
    assert isinstance(count, int)
    return count


async def settled_connection_count(client: Client) -> int:
    """The count once two readings 0.2 s apart agree (the server drops closed ones lazily)."""
    previous = await connection_count(client)
    for _ in range(15):
        await asyncio.sleep(0.2)
        current = await connection_count(client)
        if current == previous:
            return current
        previous = current
    return previous


async def wait_for_connection_count(client: Client, expected: int) -> int:
    """Poll (up to ~3 s) until the server counts ``expected`` connections; return the last."""
    count = await connection_count(client)
    for _ in range(30):
        if count == expected:
            break
        await asyncio.sleep(0.1)
        count = await connection_count(client)
    return count


async def fetch_one(client: Client, *queues: str) -> Job:
    job = await client.fetch(*queues)
    assert job is not None
    return job


# -- push, fetch, ack ---------------------------------------------------------------------------


def test_push_by_jobtype_args_and_options_then_fetch_and_ack(
    faktory_server: FaktoryServer,
) -> None:
    queue = unique("q")
    at = datetime(2020, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)  # in the past: enqueued at once
    args: list[Any] = [1, "two", {"three": 3.5}, None, [True]]

    async def main() -> None:
        async with client_for(faktory_server) as client:
            jid = await client.push(
                "Probe",
                args,
                queue=queue,
                retry=3,
                reserve_for=120,
                backtrace=7,
                custom={"trace": "t-1"},
                at=at,
            )
            assert isinstance(jid, str)
            assert len(jid) >= 8
            assert (await queue_sizes(client))[queue] == 1

            job = await fetch_one(client, queue)
            assert (job.jid, job.jobtype, job.args, job.queue) == (jid, "Probe", args, queue)
            assert (job.retry, job.reserve_for, job.backtrace) == (3, 120, 7)
            assert job.custom == {"trace": "t-1"}
            assert job.at == at
            assert job.created_at
            assert job.enqueued_at
            assert job.failure is None

            await client.ack(jid)
            assert (await queue_sizes(client))[queue] == 0

    run(main())


def test_push_of_a_prebuilt_job_returns_its_jid(faktory_server: FaktoryServer) -> None:
    queue = unique("q")

    async def main() -> None:
        async with client_for(faktory_server) as client:
            built = Job(jid=unique("jid"), jobtype="Built", args=["by hand"], queue=queue)
            made = client.job("Made", [1, 2], queue=queue, retry=0)
            assert made.jid != built.jid
            assert await client.push(built) == built.jid
            assert await client.push(made) == made.jid

            first, second = await fetch_one(client, queue), await fetch_one(client, queue)
            assert (first.jid, first.jobtype, first.args) == (built.jid, "Built", ["by hand"])
            assert (second.jid, second.jobtype, second.args, second.retry) == (
                made.jid, "Made", [1, 2], 0)  # fmt: skip
            await client.ack(first.jid)
            await client.ack(second.jid)

    run(main())


def test_jid_factory_names_the_jobs_the_client_builds(faktory_server: FaktoryServer) -> None:
    queue = unique("q")
    jids = iter([unique("made-1"), unique("made-2")])

    async def main() -> None:
        async with client_for(faktory_server, jid_factory=lambda: next(jids)) as client:
            first = await client.push("Probe", queue=queue)
            second = client.job("Probe", queue=queue).jid
            assert first.startswith("made-1-")
            assert second.startswith("made-2-")
            job = await fetch_one(client, queue)
            assert job.jid == first
            await client.ack(first)

    run(main())


def test_push_bulk_returns_no_errors_and_enqueues_every_job(
    faktory_server: FaktoryServer,
) -> None:
    queue = unique("q")

    async def main() -> None:
        async with client_for(faktory_server) as client:
            jobs = [client.job("Bulk", [n], queue=queue) for n in range(5)]
            assert await client.push_bulk(iter(jobs)) == {}  # any iterable, a generator too
            assert (await queue_sizes(client))[queue] == 5
            fetched = [await fetch_one(client, queue) for _ in jobs]
            assert [job.jid for job in fetched] == [job.jid for job in jobs]  # FIFO
            assert [job.args for job in fetched] == [[n] for n in range(5)]
            for job in fetched:
                await client.ack(job.jid)

    run(main())


def test_fetch_serves_queues_in_the_order_given(faktory_server: FaktoryServer) -> None:
    low, high = unique("low"), unique("high")

    async def main() -> None:
        async with client_for(faktory_server) as client:
            await client.push("Probe", queue=low)
            await client.push("Probe", queue=high)
            first = await fetch_one(client, high, low)
            second = await fetch_one(client, high, low)
            assert (first.queue, second.queue) == (high, low)
            await client.ack(first.jid)
            await client.ack(second.jid)

    run(main())


def test_fetch_returns_none_on_an_empty_queue_after_the_server_wait(
    faktory_server: FaktoryServer,
) -> None:
    async def main() -> float:
        async with client_for(faktory_server) as client:
            started = time.monotonic()
            await client.fetch(unique("empty"), unique("empty"))
            return time.monotonic() - started

    elapsed = run(main())
    assert 1.5 <= elapsed < COMMAND_TIMEOUT


def test_ack_of_an_unknown_jid_is_accepted(faktory_server: FaktoryServer) -> None:
    async def main() -> None:
        async with client_for(faktory_server) as client:
            await client.ack(unique("nobody"))  # +OK: ACK is not checked against reservations

    run(main())


# -- fail -----------------------------------------------------------------------------------------


def test_fail_records_errtype_message_and_backtrace(faktory_server: FaktoryServer) -> None:
    queue = unique("q")
    backtrace = ["app.py:10 in handler", "lib.py:20 in helper"]

    async def main() -> None:
        async with client_for(faktory_server) as client:
            jid = await client.push("Probe", [7], queue=queue, retry=5)
            assert (await fetch_one(client, queue)).jid == jid
            await client.fail(jid, "ValueError", "bad value: é", iter(backtrace))
            assert (await queue_sizes(client))[queue] == 0  # in the retries set now

            await client.mutate("requeue", "retries", jids=[jid])
            retried = await fetch_one(client, queue)
            assert (retried.jid, retried.args) == (jid, [7])
            assert retried.failure is not None
            assert retried.failure.errtype == "ValueError"
            assert retried.failure.message == "bad value: é"
            assert retried.failure.backtrace == tuple(backtrace)
            assert (retried.failure.retry_count, retried.failure.remaining) == (0, 5)
            await client.ack(jid)

    run(main())


def test_fail_of_an_unknown_jid_raises_server_reply_error(faktory_server: FaktoryServer) -> None:
    async def main() -> None:
        async with client_for(faktory_server, pool_size=1) as client:
            jid = unique("nobody")
            with pytest.raises(ServerReplyError) as caught:
                await client.fail(jid, "E", "m")
            error = caught.value
            assert isinstance(error, FaktoryError)
            assert error.code == "ERR"
            assert error.message == f"Job not found {jid}"
            assert str(error) == f"ERR Job not found {jid}"
            assert "server" in await client.info()  # the same (only) connection still works

    run(main())


# -- administration -------------------------------------------------------------------------------


def test_info_describes_the_server(faktory_server: FaktoryServer) -> None:
    async def main() -> None:
        async with client_for(faktory_server) as client:
            info = await client.info()
            assert info["server"]["faktory_version"] == "1.9.4"
            assert info["server"]["connections"] >= 1
            assert set(info["faktory"]["tasks"]) >= {"Dead", "Retries", "Scheduled"}
            assert isinstance(info["faktory"]["queues"], dict)

    run(main())


def test_request_sends_a_core_command_and_returns_its_event(
    faktory_server: FaktoryServer,
) -> None:
    queue = unique("q")

    async def main() -> None:
        async with client_for(faktory_server) as client:
            event = await client.request(Info())
            assert isinstance(event, InfoReply)
            job = client.job("Probe", queue=queue)
            assert await client.request(Push(job=job)) == OK(command=Push(job=job))
            fetched = await client.request(Fetch(queues=(queue,)))
            assert isinstance(fetched, Fetched)
            assert fetched.job is not None
            assert fetched.job.jid == job.jid
            await client.ack(job.jid)
            with pytest.raises(ServerReplyError, match="Enterprise"):
                await client.request(TrackGet(jid="jid-12345678"))

    run(main())


def test_flush_deletes_every_queue(faktory_server: FaktoryServer) -> None:
    queue = unique("q")

    async def main() -> None:
        async with client_for(faktory_server) as client:
            await client.push("Probe", queue=queue)
            assert queue in await queue_sizes(client)
            await client.flush()
            assert (await queue_sizes(client)).get(queue, 0) == 0

    run(main())


def test_mutate_kill_requeue_and_discard_by_jid(faktory_server: FaktoryServer) -> None:
    queue = unique("q")

    async def main() -> None:
        async with client_for(faktory_server) as client:
            first = await client.push("Probe", ["first"], queue=queue, retry=5)
            second = await client.push("Probe", ["second"], queue=queue, retry=5)
            for _ in range(2):
                await client.fail((await fetch_one(client, queue)).jid, "E", "m")

            # Enum members and plain strings are both accepted.
            await client.mutate(MutateOperation.KILL, MutateTarget.RETRIES, jids=[first])
            await client.mutate("requeue", "dead", jids=[first])
            assert (await fetch_one(client, queue)).jid == first  # kill moved it to dead
            assert (await queue_sizes(client))[queue] == 0  # second is still a retry
            await client.mutate("requeue", "retries", jids=iter([second]))
            assert (await fetch_one(client, queue)).jid == second

            for jid in (first, second):
                await client.fail(jid, "E", "again")
            await client.mutate("discard", "retries", jids=[first, second])
            await client.mutate("requeue", "retries", jids=[first, second])
            await client.mutate("requeue", "dead", jids=[first, second])
            assert (await queue_sizes(client))[queue] == 0  # discarded: nothing to requeue

    run(main())


def test_mutate_by_jobtype_and_by_a_pattern_with_spaces(faktory_server: FaktoryServer) -> None:
    queue = unique("q")
    jobtype = f"Send Email {unique('t')}"  # spaces: MUTATE must escape them
    decoy_type = f"Send Email {unique('other')}"

    async def main() -> None:
        async with client_for(faktory_server) as client:
            jid = await client.push(jobtype, queue=queue, retry=5)
            decoy = await client.push(decoy_type, queue=queue, retry=5)
            for _ in range(2):
                await client.fail((await fetch_one(client, queue)).jid, "E", "m")

            await client.mutate("kill", "retries", jobtype=jobtype)
            await client.mutate("requeue", "dead", pattern=f"*{jobtype}*")
            assert (await fetch_one(client, queue)).jid == jid  # kill moved it to dead
            assert (await queue_sizes(client))[queue] == 0  # the decoy is still a retry
            await client.mutate("requeue", "retries", pattern=f"*{decoy_type}*")
            assert (await fetch_one(client, queue)).jid == decoy
            await client.ack(jid)
            await client.ack(decoy)

    run(main())


def test_pause_resume_latency_and_remove_queues(faktory_server: FaktoryServer) -> None:
    paused, open_, removed, unknown = unique("paused"), unique("open"), unique("rm"), unique("no")

    async def main() -> None:
        async with client_for(faktory_server) as client:
            held = await client.push("Probe", queue=paused)
            free = await client.push("Probe", queue=open_)
            await client.pause_queues(paused)
            # The paused queue comes first, yet its job is skipped (no 2 s wait needed).
            assert (await fetch_one(client, paused, open_)).jid == free

            latencies = await client.queue_latency(paused, unknown)
            assert set(latencies) == {paused, unknown}
            assert latencies[paused] > 0.0
            assert latencies[unknown] == 0.0

            await client.resume_queues(paused)
            assert (await fetch_one(client, paused, open_)).jid == held
            await client.ack(held)
            await client.ack(free)

            for _ in range(2):
                await client.push("Probe", queue=removed)
            assert (await queue_sizes(client))[removed] == 2
            await client.remove_queues(removed, unknown)
            assert removed not in await queue_sizes(client)

    run(main())


def test_pause_and_resume_every_queue(faktory_server: FaktoryServer) -> None:
    first, second, later = unique("a"), unique("b"), unique("c")

    async def main() -> None:
        async with client_for(faktory_server) as client:
            await client.push("Probe", queue=first)
            await client.push("Probe", queue=second)
            await client.pause_queues("*")
            try:
                # "*" pauses the queues that exist now; one made afterwards is served.
                late = await client.push("Probe", queue=later)
                assert (await fetch_one(client, first, second, later)).jid == late
                await client.ack(late)
            finally:
                await client.resume_queues("*")
            job = await fetch_one(client, first, second, later)
            assert job.queue == first
            await client.ack(job.jid)
            await client.remove_queues(first, second, later)

    run(main())


# -- Enterprise-only commands ---------------------------------------------------------------------

EnterpriseCall = Callable[[Client], Awaitable[object]]


@pytest.mark.parametrize(
    ("call", "subsystem"),
    [
        pytest.param(
            lambda c: c.batch_new(success=c.job("Done"), complete=c.job("Also"), description="d"),
            "batch",
            id="batch_new",
        ),
        pytest.param(lambda c: c.batch_open("b-123456"), "batch", id="batch_open"),
        pytest.param(lambda c: c.batch_commit("b-123456"), "batch", id="batch_commit"),
        pytest.param(lambda c: c.batch_status("b-123456"), "batch", id="batch_status"),
        pytest.param(lambda c: c.track_get("jid-12345678"), "tracking", id="track_get"),
        pytest.param(
            lambda c: c.track_set(
                "jid-12345678",
                percent=50,
                description="half way",
                reserve_until=datetime(2030, 1, 1, tzinfo=UTC),
            ),
            "tracking",
            id="track_set",
        ),
    ],
)
def test_enterprise_calls_raise_and_the_client_stays_usable(
    faktory_server: FaktoryServer, call: EnterpriseCall, subsystem: str
) -> None:
    async def main() -> None:
        async with client_for(faktory_server, pool_size=1) as client:
            for _ in range(2):  # the same (only) connection, twice
                with pytest.raises(ServerReplyError) as caught:
                    await call(client)
                assert caught.value.code == "ERR"
                assert caught.value.message == (
                    f"{subsystem} subsystem is only available in Faktory Enterprise"
                )
                assert "Enterprise" in str(caught.value)
                assert (await client.info())["server"]["faktory_version"] == "1.9.4"

    run(main())


# -- lifecycle and the pool -----------------------------------------------------------------------


def test_context_manager_closes_its_connections(faktory_server: FaktoryServer) -> None:
    queue = unique("q")

    async def main() -> None:
        async with client_for(faktory_server) as observer:
            before = await settled_connection_count(observer)
            client = client_for(faktory_server, pool_size=3)
            async with client as entered:
                assert entered is client
                await asyncio.gather(*(client.push("Probe", queue=queue) for _ in range(3)))
                assert await settled_connection_count(observer) == before + 3
            assert await wait_for_connection_count(observer, before) == before

            with pytest.raises(ClientClosedError, match="closed"):
                await client.info()
            with pytest.raises(ClientClosedError, match="closed"):
                await client.push("Probe", queue=queue)
            await client.close()  # closing twice is harmless
            assert (await queue_sizes(observer))[queue] == 3
            await observer.remove_queues(queue)

    run(main())


def test_pool_serves_many_concurrent_requests_on_few_connections(
    faktory_server: FaktoryServer,
) -> None:
    queue = unique("q")

    async def main() -> None:
        async with client_for(faktory_server) as observer:
            before = await settled_connection_count(observer)
            async with client_for(faktory_server, pool_size=3) as client:
                jids = await asyncio.gather(
                    *(client.push("Probe", [n], queue=queue) for n in range(50))
                )
                assert len(set(jids)) == 50
                assert (await queue_sizes(observer))[queue] == 50
                assert await settled_connection_count(observer) == before + 3

                jobs = await asyncio.gather(*(fetch_one(client, queue) for _ in range(50)))
                assert {job.jid for job in jobs} == set(jids)
                await asyncio.gather(*(client.ack(jid) for jid in jids))
                assert (await queue_sizes(observer))[queue] == 0
                assert await settled_connection_count(observer) == before + 3

    run(main())


def test_pool_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="pool_size"):
        Client("tcp://127.0.0.1:7419", pool_size=0)


def test_fetch_waits_out_the_server_whatever_the_timeout(faktory_server: FaktoryServer) -> None:
    # Giving up on a FETCH the server still holds would let it hand the next job to a
    # connection nobody reads: that job would sit reserved for 30 minutes.
    empty, other = unique("empty"), unique("other")

    async def main() -> None:
        async with (
            Client(faktory_server.url, timeout=0.5, pool_size=1) as client,
            client_for(faktory_server) as producer,
        ):
            started = time.monotonic()
            assert await client.fetch(empty) is None
            assert time.monotonic() - started >= 1.5  # the server's wait, not our 0.5 s

            fetching = asyncio.create_task(client.fetch(other))
            await asyncio.sleep(0.7)  # past the 0.5 s timeout, inside the server's wait
            jid = await producer.push("Probe", queue=other)
            job = await asyncio.wait_for(fetching, 5)
            assert job is not None
            assert job.jid == jid  # handed to the waiting FETCH, and received
            await client.ack(jid)

    run(main())


def test_a_cancelled_command_does_not_poison_the_pool(faktory_server: FaktoryServer) -> None:
    empty, other = unique("empty"), unique("other")

    async def main() -> None:
        async with client_for(faktory_server, pool_size=1) as client:
            fetching = asyncio.create_task(client.fetch(empty))
            await asyncio.sleep(0.3)  # the FETCH is on the wire, the server holds it
            fetching.cancel()
            with pytest.raises(asyncio.CancelledError):
                await fetching
            assert (await client.info())["server"]["faktory_version"] == "1.9.4"
            jid = await client.push("Probe", queue=other)
            assert (await fetch_one(client, other)).jid == jid
            await client.ack(jid)

    run(main())


def test_a_cancelled_call_s_reply_is_read_and_dropped_on_a_shared_connection(
    faktory_server: FaktoryServer,
) -> None:
    # One connection, two calls on it: the first is cancelled while its reply trickles in.
    # The second still gets its own reply (the first's is read and dropped), and the
    # connection is kept: nothing about it is in doubt.
    first, second = unique("first"), unique("second")
    line = len(QueueLatency(queues=(first,)).encode())

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with FaultProxy(faktory_server.host, faktory_server.port) as proxy:
            async with Client(proxy.url, pool_size=1, timeout=COMMAND_TIMEOUT) as client:
                await client.info()
                before = proxy.bytes_to_target
                proxy.set_trickle(0.05)
                cancelled = asyncio.create_task(client.queue_latency(first))
                waiting = asyncio.create_task(client.queue_latency(second))
                reached = await loop.run_in_executor(
                    None, proxy.wait_for, lambda: proxy.bytes_to_target >= before + line, 10
                )
                assert reached
                cancelled.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await cancelled
                proxy.set_trickle(None)
                assert await waiting == {second: 0.0}
                assert await client.queue_latency(first) == {first: 0.0}
                assert proxy.connections == 1

    run(main())


# -- event loops ----------------------------------------------------------------------------------


def test_a_client_whose_loop_closed_starts_afresh_on_the_next(
    faktory_server: FaktoryServer,
) -> None:
    # A module-level Client, used by asyncio.run twice (or by tests that each get a new loop):
    # the second loop once met the first one's connections ("Event loop is closed", a
    # Future attached to a different loop, or a timeout).
    queue = unique("q")
    client = client_for(faktory_server, pool_size=2)  # made outside any loop

    async def push_two() -> int:
        await asyncio.gather(*(client.push("Probe", queue=queue) for _ in range(2)))
        return await settled_connection_count(client)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # the dead loop's transports
        first = run(push_two())  # the loop closes with two connections in the pool
        second = run(push_two())
        gc.collect()
    # The dead loop's two connections were closed, not left open on the server (the count may
    # still drop as the server lets go of earlier tests' connections).
    assert second <= first

    async def finish() -> None:
        assert (await queue_sizes(client))[queue] == 4
        await client.remove_queues(queue)

    run(finish())
    run(client.close())  # a third loop: the Client closes there too


def test_a_client_used_on_a_second_loop_while_the_first_is_open_says_so(
    faktory_server: FaktoryServer,
) -> None:
    first = asyncio.new_event_loop()
    runner = threading.Thread(target=first.run_forever, name="first-loop", daemon=True)
    runner.start()

    def on_first(coroutine: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, first).result(COMMAND_TIMEOUT)

    try:
        client = client_for(faktory_server)
        assert on_first(client.info())["server"]["faktory_version"] == "1.9.4"
        for use in (client.info, client.close):
            with pytest.raises(WrongEventLoopError) as caught:
                run(use())
            error = caught.value
            assert isinstance(error, RuntimeError)
            assert not isinstance(error, FaktoryError)
            assert str(error) == (
                "this asyncio Client is used on an event loop other than the one it was first "
                "used on, which is still open: its connections belong to that loop. Make one "
                "Client per event loop (in main(), or in the async fixture, with `async with "
                "Client() as client`), or close that loop before using the Client on this one"
            )
        assert on_first(client.info())["server"]["faktory_version"] == "1.9.4"  # unharmed
        on_first(client.close())
    finally:
        first.call_soon_threadsafe(first.stop)
        runner.join(COMMAND_TIMEOUT)
        first.close()
    with pytest.raises(ClientClosedError):
        run(client.info())


# -- where the server is --------------------------------------------------------------------------


def test_url_from_faktory_url(
    faktory_server: FaktoryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FAKTORY_PROVIDER", raising=False)
    monkeypatch.setenv("FAKTORY_URL", faktory_server.url)

    async def main() -> None:
        async with Client(timeout=COMMAND_TIMEOUT) as client:
            assert (await client.info())["server"]["faktory_version"] == "1.9.4"

    run(main())


def test_url_from_faktory_provider(
    faktory_server: FaktoryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKTORY_URL", f"tcp://127.0.0.1:{closed_port()}")  # must be ignored
    monkeypatch.setenv("MY_FAKTORY_SERVER", faktory_server.url)
    monkeypatch.setenv("FAKTORY_PROVIDER", "MY_FAKTORY_SERVER")

    async def main() -> None:
        async with Client(timeout=COMMAND_TIMEOUT) as client:
            assert (await client.info())["server"]["faktory_version"] == "1.9.4"

    run(main())


def test_an_unreachable_port_is_refused_quickly() -> None:
    port = closed_port()

    async def main() -> float:
        async with Client(f"tcp://127.0.0.1:{port}", timeout=COMMAND_TIMEOUT) as client:
            started = time.monotonic()
            with pytest.raises(FaktoryConnectionError) as refused:
                await client.info()
            assert isinstance(refused.value.__cause__, ConnectionRefusedError)
            with pytest.raises(FaktoryConnectionError) as again:  # nothing is cached
                await client.push("Probe", queue=unique("q"))
            assert isinstance(again.value.__cause__, ConnectionRefusedError)
            return time.monotonic() - started

    assert run(main(), timeout=10.0) < 2.0


# -- passwords ------------------------------------------------------------------------------------

WRONG_PASSWORD = "n0t-the Pa55word/%"


def _secret_spellings(password: str) -> list[str]:
    return [password, urllib.parse.quote(password, safe=""), urllib.parse.quote(password)]


def assert_hidden(text: str, password: str) -> None:
    for spelling in _secret_spellings(password):
        assert spelling not in text


def test_the_right_password_is_accepted_and_never_shown(
    faktory_password_server: FaktoryServer,
) -> None:
    async def main() -> None:
        client = Client(faktory_password_server.url, timeout=COMMAND_TIMEOUT)
        async with client:
            assert (await client.info())["server"]["faktory_version"] == "1.9.4"
            jid = unique("nobody")
            with pytest.raises(ServerReplyError) as caught:
                await client.fail(jid, "E", "m")
            for text in (repr(client), str(client), str(caught.value), repr(caught.value)):
                assert_hidden(text, TEST_PASSWORD)
        with pytest.raises(ClientClosedError) as closed:
            await client.info()
        assert_hidden(str(closed.value), TEST_PASSWORD)

    run(main())


def test_a_wrong_password_raises_authentication_error_without_the_password(
    faktory_password_server: FaktoryServer,
) -> None:
    quoted = urllib.parse.quote(WRONG_PASSWORD, safe="")
    url = f"tcp://:{quoted}@127.0.0.1:{faktory_password_server.port}"

    async def main() -> None:
        async with Client(url, timeout=COMMAND_TIMEOUT) as client:
            for _ in range(2):  # a refused handshake leaves nothing behind
                with pytest.raises(AuthenticationError) as caught:
                    await client.info()
                error = caught.value
                assert isinstance(error, FaktoryError)
                assert "password" in str(error).lower()
                for text in (str(error), repr(error), repr(error.args), repr(client)):
                    assert_hidden(text, WRONG_PASSWORD)
                assert error.__cause__ is None
                assert error.__context__ is None

    run(main())


def test_a_missing_password_raises_authentication_error(
    faktory_password_server: FaktoryServer,
) -> None:
    url = f"tcp://127.0.0.1:{faktory_password_server.port}"

    async def main() -> None:
        async with Client(url, timeout=COMMAND_TIMEOUT) as client:
            with pytest.raises(AuthenticationError, match="password"):
                await client.push("Probe", queue=unique("q"))

    run(main())


# -- bugs -----------------------------------------------------------------------------------------


def test_a_handshake_that_times_out_closes_its_socket() -> None:
    # A listener that accepts (in the kernel) but never greets: the greeting never comes.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        url = f"tcp://127.0.0.1:{listener.getsockname()[1]}"

        async def main() -> bytes | None:
            loop = asyncio.get_running_loop()
            client = Client(url, connect_timeout=0.3, timeout=COMMAND_TIMEOUT)
            started = time.monotonic()
            with pytest.raises(TimeoutError) as caught:  # kept alive while we look
                await client.info()
            assert time.monotonic() - started < 1.5
            accepted, _ = await asyncio.wait_for(loop.sock_accept(listener), 1.0)
            with accepted:
                try:  # b"" once the client has closed its end
                    data = await asyncio.wait_for(loop.sock_recv(accepted, 100), 1.0)
                except TimeoutError:
                    data = None  # still open
            del caught
            return data

        gc.collect()
        with warnings.catch_warnings(record=True) as recorded:
            warnings.simplefilter("always", ResourceWarning)
            data = run(main())
            gc.collect()
    assert data == b""  # None: the client left its socket open
    leaks = [str(w.message) for w in recorded if issubclass(w.category, ResourceWarning)]
    assert leaks == []
