"""Connection trouble in the log: one WARNING when it starts, one INFO when it is over, never a
line per link per attempt; and a burst worker that cannot use the server at start stops at once
with the reason, in every adapter. Against a real server, through the tests' fault proxy."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from faktory_adapters import thread
from faktory_core import EXIT_REFUSED
from tests.support.adapters import LogCapture, adapter_module, capture_logs, serve
from tests.support.proxy import FaultProxy
from tests.support.server import FaktoryServer, closed_port

pytestmark = pytest.mark.server

WAIT = 30.0


@pytest.fixture
def records() -> Iterator[LogCapture]:
    with capture_logs() as capture:
        yield capture


def from_worker(records: list[logging.LogRecord], level: int) -> list[str]:
    return [r.getMessage() for r in records if r.name == "faktory.worker" and r.levelno == level]


def connected_again(records: list[logging.LogRecord]) -> list[str]:
    return [line for line in from_worker(records, logging.INFO) if "connected again" in line]


def test_an_outage_is_one_warning_then_one_info_when_it_is_over(
    adapter: str, faktory_server: FaktoryServer, records: LogCapture
) -> None:
    queue = f"outage-{uuid.uuid4().hex[:10]}"
    with FaultProxy(faktory_server.host, faktory_server.port, seed=3) as proxy:
        worker: Any = adapter_module(adapter).Worker(url=proxy.url, queues=[queue], concurrency=5)
        ran = threading.Event()
        worker.register("Ping", lambda: ran.set())
        stop = threading.Event()
        serving = threading.Thread(target=serve, args=(adapter, worker), kwargs={"stop_when": stop})
        serving.start()
        try:
            with thread.Client(faktory_server.url) as client:
                client.push("Ping", [], queue=queue)
                assert ran.wait(WAIT)  # serving: its links are up
                # Every connection is cut, and every new one cut at its first byte, until the
                # faults are turned off: five job links failing over and over.
                proxy.set_faults(mean_bytes=1, mean_seconds=None)
                proxy.cut_all()
                records.wait_for(lambda seen: len(from_worker(seen, logging.DEBUG)) >= 10)
                proxy.set_faults(mean_bytes=None, mean_seconds=None)
                records.wait_for(lambda seen: bool(connected_again(seen)))
                # A job pushed now could be lost to a FETCH of a connection the proxy cut
                # (the server blocks it up to 2 s, then reserves the job for nobody): the
                # links being back is what the log shows, and what this test checks.
        finally:
            stop.set()
            serving.join(WAIT)
    assert not serving.is_alive()
    warnings = from_worker(records.records, logging.WARNING)
    assert len(warnings) == 1, records.text
    assert "; retrying in " in warnings[0]
    assert len(connected_again(records.records)) == 1, records.text
    # At the default level, the outage is those two lines, the heartbeat's trouble included.
    loud = [
        r.getMessage()
        for r in records.records
        if r.name.startswith("faktory")
        and r.levelno >= logging.INFO
        and not r.getMessage().startswith("worker ")  # its lifecycle: start, stop, exit
    ]
    assert loud == [warnings[0], *connected_again(records.records)], records.text


def test_a_burst_worker_that_cannot_reach_the_server_stops_at_once(
    adapter: str, records: LogCapture
) -> None:
    url = f"tcp://127.0.0.1:{closed_port()}"
    worker: Any = adapter_module(adapter).Worker(url=url, concurrency=5, burst=True)
    worker.register("Never", lambda: None)
    # Bounded: a worker that retried for ever would be stopped after WAIT s, exiting 0.
    assert serve(adapter, worker, stop_when=threading.Event()) == EXIT_REFUSED
    reason = f"cannot use the server at {url}: connection refused"
    [refusal] = from_worker(records.records, logging.ERROR)
    assert reason in refusal
    assert not from_worker(records.records, logging.WARNING)[1:]  # no line per link


def drain_error(adapter: str, worker: Any) -> BaseException | None:
    """What ``worker.drain()`` raised (None if it returned), waiting at most WAIT s."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            if adapter == "asyncio":
                asyncio.run(worker.drain())
            else:
                worker.drain()
        except BaseException as error:
            outcome.append(error)
        else:
            outcome.append(None)

    draining = threading.Thread(target=run, daemon=True)
    draining.start()
    draining.join(WAIT)
    assert outcome, "drain() went on retrying"
    return outcome[0]


def test_drain_raises_why_the_server_cannot_be_used(adapter: str) -> None:
    url = f"tcp://127.0.0.1:{closed_port()}"
    module = adapter_module(adapter)
    worker: Any = module.Worker(url=url, concurrency=2)
    worker.register("Never", lambda: None)
    error = drain_error(adapter, worker)  # in a test, an unusable server is an error
    assert isinstance(error, module.FaktoryConnectionError)
    assert str(error) == f"cannot use the server at {url}: connection refused"


def test_drain_raises_a_refused_password(
    adapter: str, faktory_password_server: FaktoryServer
) -> None:
    url = f"tcp://:wrong@127.0.0.1:{faktory_password_server.port}"
    module = adapter_module(adapter)
    worker: Any = module.Worker(url=url, concurrency=2)
    worker.register("Never", lambda: None)
    error = drain_error(adapter, worker)
    assert isinstance(error, module.FaktoryConnectionError)
    assert "Invalid password" in str(error)
