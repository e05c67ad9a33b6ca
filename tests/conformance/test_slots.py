"""A worker's job slots are not connections: thousands of running jobs on a few connections.

Each worker runs in this process against a real server of the test's own (clean counters),
reached through the fault proxy (no faults), which counts every connection the worker opens:
its ``connections`` job links and its heartbeat, however many jobs run. The jobs wait, in
their runtime's own way, until every slot is taken at once, so the test sees ``concurrency``
jobs running together, more than the server would accept connections (2,000), before any
ends.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import gevent.event
import pytest

from faktory_adapters.thread import Client
from faktory_core import Failure
from tests.support.adapters import WAIT, adapter_module, serve
from tests.support.proxy import FaultProxy
from tests.support.server import FaktoryServer

pytestmark = pytest.mark.server

#: Above Faktory's 2,000 connections, where a slot per connection could never run. The thread
#: adapter runs a thread per slot: fewer, for the test's memory.
CONCURRENCY = {"asyncio": 2500, "thread": 200, "gevent": 2500}
CONNECTIONS = 4


@pytest.fixture
def server() -> Iterator[FaktoryServer]:
    with FaktoryServer() as own:
        yield own


class Gate:
    """Counts the jobs running at once; opens when ``slots`` run together (never, if None),
    each job waiting for it in its runtime's own way (bounded by WAIT). ``full`` is set once
    ``slots`` jobs have started, ``all_done`` once ``total`` have ended."""

    def __init__(self, adapter: str, slots: int, total: int, *, opens: bool = True) -> None:
        self.slots, self.total, self.opens = slots, total, opens
        self.running = self.most = self.done = 0
        self.full = threading.Event()
        self.all_done = threading.Event()
        self._lock = threading.Lock()
        self._adapter = adapter
        self._open: Any = None  # made on the runtime's loop, when the first job starts

    def _enter(self) -> bool:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
            if self.running < self.slots:
                return False
            self.full.set()
            return self.opens

    def _leave(self) -> None:
        with self._lock:
            self.running -= 1
            self.done += 1
            if self.done == self.total:
                self.all_done.set()

    def handler(self) -> Callable[..., Any]:
        if self._adapter == "asyncio":

            async def wait_async() -> None:
                if self._open is None:
                    self._open = asyncio.Event()
                if self._enter():
                    self._open.set()
                try:
                    await asyncio.wait_for(self._open.wait(), WAIT)
                finally:
                    self._leave()

            return wait_async
        self._open = threading.Event() if self._adapter == "thread" else gevent.event.Event()

        def wait_blocking() -> None:
            if self._enter():
                self._open.set()
            try:
                if not self.opens and self._adapter == "thread":
                    # An abort raised in a thread waits for it to run Python code: this job
                    # waits on its signal, as a blocking job that wants to stop promptly does.
                    adapter_module("thread").current_job().abort.wait(WAIT)
                else:
                    assert self._open.wait(WAIT), "the slots never all ran at once"
            finally:
                self._leave()

        return wait_blocking


def test_thousands_of_slots_run_at_once_on_a_few_connections(
    server: FaktoryServer, adapter: str
) -> None:
    slots = CONCURRENCY[adapter]
    total = 2 * slots  # the second half runs as the first ends: slots are reused
    queue = f"slots-{uuid.uuid4().hex[:8]}"
    gate = Gate(adapter, slots, total)
    with FaultProxy("127.0.0.1", server.port, seed=1) as proxy, Client(server.url) as client:
        jobs = [client.job("Gate", queue=queue) for _ in range(total)]
        assert client.push_bulk(jobs) == {}
        worker: Any = adapter_module(adapter).Worker(
            url=proxy.url, queues=[queue], concurrency=slots, connections=CONNECTIONS
        )
        worker.register("Gate")(gate.handler())
        assert serve(adapter, worker, stop_when=gate.all_done) == 0
        made = proxy.connections
        stats = client.info()["faktory"]
    assert gate.done == total
    assert gate.most == slots  # every slot ran at once, more than the server has connections
    assert made == CONNECTIONS + 1  # the job links and the heartbeat, none re-opened
    # Each job ACKed once.
    assert (stats["total_processed"], stats["total_failures"]) == (total, 0)
    assert stats["sets"]["working"] == 0
    assert stats["queues"].get(queue, 0) == 0


def test_a_stop_aborts_and_fails_every_slot_over_few_connections(
    server: FaktoryServer, adapter: str
) -> None:
    """The shutdown contract when slots outnumber links: every job still running at the
    timeout is aborted and FAILed at once, over the links left free for reports."""
    slots = 60
    queue = f"slots-{uuid.uuid4().hex[:8]}"
    gate = Gate(adapter, slots, slots, opens=False)  # each job runs until aborted
    with FaultProxy("127.0.0.1", server.port, seed=1) as proxy, Client(server.url) as client:
        assert client.push_bulk([client.job("Gate", queue=queue) for _ in range(slots)]) == {}
        worker: Any = adapter_module(adapter).Worker(
            url=proxy.url,
            queues=[queue],
            concurrency=slots,
            connections=2,
            shutdown_timeout=0.5,
            abort_grace=5,
        )
        worker.register("Gate")(gate.handler())
        assert serve(adapter, worker, stop_when=gate.full) == 1  # jobs were aborted
        made = proxy.connections
        stats = client.info()["faktory"]
        failures = requeued_failures(client, queue, slots)
    assert gate.done == slots  # each job ended (aborted) before the worker exited
    assert made == 2 + 1
    # One FAIL each (Faktory counts a FAIL as processed too).
    assert (stats["total_processed"], stats["total_failures"]) == (slots, slots)
    assert stats["sets"]["working"] == 0
    assert {failure.errtype for failure in failures} == {"ShutdownAbort"}


def requeued_failures(client: Client, queue: str, count: int) -> list[Failure]:
    """The failures of the ``count`` jobs in the retry set, requeued, fetched and ACKed."""
    client.mutate("requeue", "retries", jobtype="Gate")
    failures = []
    for _ in range(count):
        job = client.fetch(queue)
        assert job is not None
        assert job.failure is not None
        failures.append(job.failure)
        client.ack(job.jid)
    return failures
