"""Many callers share ONE Client whose connections a proxy cuts mid-stream: nothing may be
lost or pushed twice, and no caller may get another's reply (every adapter).

Each caller (an asyncio task, a thread, a greenlet) loops over three calls: PUSH a job of a
jid of its own; PUSHB a valid job and one the server refuses (it has no jobtype), whose jid is
the caller's own, so the reply must name exactly that jid; QUEUE LATENCY of a queue of the
caller's own, so the reply must name exactly that queue. Calls share connections (the pool
is smaller than the callers), so replies are matched to callers by their order; the proxy
cuts connections after a random number of bytes, half-way through commands and replies. Some
asyncio calls are cancelled midway and some gevent ones interrupted by a ``gevent.Timeout``,
which leaves replies abandoned on shared connections.

Then every job in the queue is fetched: a jid whose push returned is there exactly once; one
whose push raised OutcomeUnknownError, a timeout or was abandoned at most once; one whose
push raised a plain FaktoryConnectionError (nothing was sent) not at all; nothing else is
there.
"""

from __future__ import annotations

import asyncio
import random
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import gevent
import pytest

from faktory_adapters import asyncio as aio
from faktory_adapters import gevent as gevent_adapter
from faktory_adapters import thread
from faktory_adapters._common import (
    FaktoryConnectionError,
    FaktoryError,
    FaktoryTimeoutError,
    OutcomeUnknownError,
)
from faktory_core import Job
from tests.support.proxy import FaultProxy
from tests.support.server import FaktoryServer

pytestmark = pytest.mark.server

CALLERS: Final = 24
ROUNDS: Final = 12
#: Fewer connections than callers: most calls queue behind others on a shared connection.
POOL: Final = 3
#: The proxy cuts each connection after this many bytes on average (both ways together): a
#: few rounds of a few callers.
MEAN_BYTES: Final = 3000
#: A share of the asyncio and gevent calls abandoned after a random delay up to ABANDON_AFTER.
ABANDON_SHARE: Final = 0.1
ABANDON_AFTER: Final = 0.002
#: How long anything may take: a call, the whole run.
TIMEOUT: Final = 5.0
#: The Client's timeout where connections stall: each stall costs the calls on it that long.
STALL_TIMEOUT: Final = 0.5
WAIT: Final = 120.0
REFUSED: Final = "jobs must have a jobtype parameter"

Call = Callable[..., Any]


class Abandoned(Exception):
    """The caller gave the call up midway (a cancelled task, an interrupted greenlet)."""


@dataclass
class Ledger:
    """What the callers saw, by jid."""

    pushed: set[str] = field(default_factory=set)  # the push returned: exactly once
    uncertain: set[str] = field(default_factory=set)  # may or may not have been pushed
    unsent: set[str] = field(default_factory=set)  # surely not pushed
    wrong: list[str] = field(default_factory=list)  # anything a correct Client never does
    abandoned: int = 0
    timeouts: int = 0
    failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def refused_job(jid: str, queue: str) -> Job:
    """A job the server refuses (no jobtype), which the core would never build."""
    job = Job(jid=jid, jobtype="Refused", args=[], queue=queue)
    object.__setattr__(job, "jobtype", "")
    return job


def caller(call: Call, number: int, prefix: str, queue: str, ledger: Ledger) -> None:
    """One caller's rounds; every outcome goes to ``ledger``."""
    rng = random.Random(number)
    own_queue = f"{prefix}-own-{number}"

    def abandon() -> float | None:
        return rng.uniform(0, ABANDON_AFTER) if rng.random() < ABANDON_SHARE else None

    def failed(error: BaseException, jids: set[str], what: str) -> None:
        with ledger.lock:
            ledger.failures += 1
            if isinstance(error, Abandoned):
                ledger.abandoned += 1
                ledger.uncertain |= jids
            elif isinstance(error, (OutcomeUnknownError, FaktoryTimeoutError)):
                ledger.timeouts += isinstance(error, FaktoryTimeoutError)
                ledger.uncertain |= jids
            elif type(error) is FaktoryConnectionError:  # nothing was sent
                ledger.unsent |= jids
            else:
                ledger.wrong.append(f"{what}: {type(error).__name__}: {error}")

    for round_ in range(ROUNDS):
        tag = f"{prefix}-{number}-{round_}"
        job = Job(jid=f"{tag}-push", jobtype="Probe", args=[number, round_], queue=queue)
        try:
            jid = call("push", job, abandon=abandon())
        except (FaktoryError, Abandoned) as error:
            if isinstance(error, OutcomeUnknownError) and error.jid != job.jid:
                ledger.wrong.append(f"{tag}: OutcomeUnknownError of another job: {error.jid}")
            failed(error, {job.jid}, f"{tag} push")
        else:
            with ledger.lock:
                if jid != job.jid:
                    ledger.wrong.append(f"{tag}: push returned {jid}")
                ledger.pushed.add(job.jid)

        valid = Job(jid=f"{tag}-bulk", jobtype="Probe", args=[number, round_], queue=queue)
        refused = refused_job(f"{tag}-refused", queue)
        try:
            rejected = call("push_bulk", [valid, refused], abandon=abandon())
        except (FaktoryError, Abandoned) as error:
            bulk = getattr(error, "bulk", None)
            if isinstance(error, FaktoryError) and (
                bulk is None or set(bulk.uncertain) | set(bulk.unsent) != {valid.jid, refused.jid}
            ):
                ledger.wrong.append(f"{tag}: push_bulk's error tells {bulk!r}")
            failed(error, {valid.jid}, f"{tag} push_bulk")
        else:
            with ledger.lock:
                if rejected != {refused.jid: REFUSED}:
                    ledger.wrong.append(f"{tag}: push_bulk got {rejected!r}")
                ledger.pushed.add(valid.jid)

        try:
            latencies = call("queue_latency", own_queue, abandon=abandon())
        except (FaktoryError, Abandoned) as error:
            failed(error, set(), f"{tag} queue_latency")
        else:
            if set(latencies) != {own_queue}:
                with ledger.lock:
                    ledger.wrong.append(f"{tag}: queue_latency got {latencies!r}")


def run_asyncio(url: str, body: Callable[[Call, int], None], timeout: float) -> None:
    """The callers on threads of their own, each call a task on one loop and one Client."""
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, name="callers-loop", daemon=True)
    runner.start()

    async def make() -> aio.Client:
        return aio.Client(url, pool_size=POOL, timeout=timeout, connect_timeout=TIMEOUT)

    client = asyncio.run_coroutine_threadsafe(make(), loop).result(WAIT)

    def call(method: str, *args: Any, abandon: float | None = None) -> Any:
        async def task() -> Any:
            work = getattr(client, method)(*args)
            if abandon is None:
                return await work
            try:
                return await asyncio.wait_for(work, abandon)
            except FaktoryTimeoutError:
                raise
            except TimeoutError:  # wait_for cancelled it
                raise Abandoned from None

        return asyncio.run_coroutine_threadsafe(task(), loop).result(WAIT)

    try:
        run_threads_of(lambda number: body(call, number))
    finally:
        asyncio.run_coroutine_threadsafe(client.close(), loop).result(WAIT)
        loop.call_soon_threadsafe(loop.stop)
        runner.join(WAIT)
        loop.close()


def run_thread(url: str, body: Callable[[Call, int], None], timeout: float) -> None:
    """The callers on threads, sharing one Client (threads cannot be cancelled)."""
    with thread.Client(url, pool_size=POOL, timeout=timeout, connect_timeout=TIMEOUT) as client:

        def call(method: str, *args: Any, abandon: float | None = None) -> Any:
            return getattr(client, method)(*args)

        run_threads_of(lambda number: body(call, number))


def run_gevent(url: str, body: Callable[[Call, int], None], timeout: float) -> None:
    """The callers as greenlets of this thread, sharing one Client."""
    with gevent_adapter.Client(
        url, pool_size=POOL, timeout=timeout, connect_timeout=TIMEOUT
    ) as client:

        def call(method: str, *args: Any, abandon: float | None = None) -> Any:
            if abandon is None:
                return getattr(client, method)(*args)
            timeout = gevent.Timeout(abandon)
            try:
                with timeout:
                    return getattr(client, method)(*args)
            except gevent.Timeout as interrupted:
                if interrupted is not timeout:
                    raise
                raise Abandoned from None

        greenlets = [gevent.spawn(body, call, number) for number in range(CALLERS)]
        gevent.joinall(greenlets, timeout=WAIT, raise_error=True)
        assert all(greenlet.dead for greenlet in greenlets), "callers still running"


def run_threads_of(body: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def target(number: int) -> None:
        try:
            body(number)
        except BaseException as error:
            errors.append(error)

    threads = [
        threading.Thread(target=target, args=(number,), name=f"caller-{number}", daemon=True)
        for number in range(CALLERS)
    ]
    for each in threads:
        each.start()
    for each in threads:
        each.join(WAIT)
    assert not any(each.is_alive() for each in threads), "callers still running"
    if errors:
        raise errors[0]


RUNNERS: Final = {"asyncio": run_asyncio, "thread": run_thread, "gevent": run_gevent}


def within(limit: float, scenario: Callable[[], None]) -> None:
    """Run ``scenario`` on a thread of its own (gevent's sockets belong to one thread), and
    fail if it is still running after ``limit`` s."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            scenario()
        except BaseException as error:
            outcome.append(error)
        else:
            outcome.append(None)

    runner = threading.Thread(target=target, name="scenario", daemon=True)
    runner.start()
    runner.join(limit)
    assert outcome, f"still running after {limit} s"
    if outcome[0] is not None:
        raise outcome[0]


def fetch_all(client: thread.Client, queue: str) -> Counter[str]:
    """Every jid in ``queue``, fetched (and ACKed) until it is empty."""
    seen: Counter[str] = Counter()
    while (job := client.fetch(queue)) is not None:
        seen[job.jid] += 1
        client.ack(job.jid)
    return seen


@pytest.fixture
def names(faktory_server: FaktoryServer) -> Iterator[tuple[str, str]]:
    """A prefix and a queue of this test's own; the queues it used are removed after it."""
    prefix = f"cc-{uuid.uuid4().hex[:8]}"
    queue = f"{prefix}-jobs"
    yield prefix, queue
    with thread.Client(faktory_server.url) as admin:
        admin.remove_queues(queue, *[f"{prefix}-own-{number}" for number in range(CALLERS)])


def check(ledger: Ledger, seen: Counter[str]) -> None:
    assert not ledger.wrong, "\n".join(ledger.wrong[:20])
    twice = {jid: count for jid, count in seen.items() if count > 1}
    assert not twice, f"pushed more than once: {twice}"
    missing = ledger.pushed - set(seen)
    assert not missing, f"pushes that returned, not in the queue: {sorted(missing)[:10]}"
    sent_anyway = ledger.unsent & set(seen)
    assert not sent_anyway, f"said not sent, yet in the queue: {sorted(sent_anyway)[:10]}"
    unknown = set(seen) - ledger.pushed - ledger.uncertain
    assert not unknown, f"in the queue, never pushed: {sorted(unknown)[:10]}"
    assert sum(seen.values()) == len(ledger.pushed) + len(ledger.uncertain & set(seen))


def run_callers(
    adapter: str,
    faktory_server: FaktoryServer,
    proxy: FaultProxy,
    names: tuple[str, str],
    timeout: float,
) -> Ledger:
    """Every caller through ``proxy`` at once, each call with ``timeout``; then the queue
    checked against the ledger."""
    prefix, queue = names
    ledger = Ledger()
    within(
        WAIT,
        lambda: RUNNERS[adapter](
            proxy.url,
            lambda call, number: caller(call, number, prefix, queue, ledger),
            timeout,
        ),
    )
    with thread.Client(faktory_server.url) as admin:
        check(ledger, fetch_all(admin, queue))
    return ledger


@pytest.mark.parametrize("adapter", ["asyncio", "thread", "gevent"])
def test_concurrent_calls_through_cut_connections_lose_and_mix_up_nothing(
    adapter: str, faktory_server: FaktoryServer, names: tuple[str, str]
) -> None:
    with FaultProxy(
        faktory_server.host, faktory_server.port, seed=7, mean_bytes=MEAN_BYTES
    ) as proxy:
        ledger = run_callers(adapter, faktory_server, proxy, names, TIMEOUT)
        faults = proxy.faults
    # The run did what it is for: connections were cut under the callers, some calls failed,
    # most went through, and (where a caller can give up) some were abandoned.
    assert faults > 10
    assert ledger.failures > 0
    assert len(ledger.pushed) > CALLERS * ROUNDS
    if adapter != "thread":
        assert ledger.abandoned > 0


@pytest.mark.parametrize("adapter", ["asyncio", "thread", "gevent"])
def test_concurrent_calls_through_stalled_connections_time_out_and_mix_up_nothing(
    adapter: str, faktory_server: FaktoryServer, names: tuple[str, str]
) -> None:
    # Half the faults are stalls: the connection stays open and carries nothing more, so the
    # calls on it wait for replies that never come, until the first one's timeout closes it.
    with FaultProxy(
        faktory_server.host,
        faktory_server.port,
        seed=11,
        mean_bytes=MEAN_BYTES,
        stall_share=0.5,
    ) as proxy:
        ledger = run_callers(adapter, faktory_server, proxy, names, STALL_TIMEOUT)
        stalls = proxy.stalls
    assert stalls > 0
    assert ledger.timeouts > 0
    assert len(ledger.pushed) > CALLERS * ROUNDS
