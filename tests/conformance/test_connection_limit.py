"""A server at its connection limit: the worker backs off instead of storming it.

Faktory 1.9 accepts 2,000 connections; past that it greets, takes HELLO, answers ``+OK``, then
writes ``-ERR too many connections: <n>`` and closes. A worker whose backoff reset at every
handshake reconnected every half second per link (~15,700 reconnects and WARNING lines a minute
at concurrency 2,100). Here a real server is filled with 2,000 idle connections, and a worker
reaches it through the fault proxy (no faults), which counts the connections it makes.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from faktory_core import NEED_DATA, ClientInfo, Connection
from faktory_core.events import Ready
from tests.support.adapters import adapter_module, capture_logs, serve
from tests.support.proxy import FaultProxy
from tests.support.server import FaktoryServer

pytestmark = pytest.mark.server

#: Faktory OSS's connection limit (server/config.go DefaultMaxPoolSize).
LIMIT = 2000
#: How long the worker is watched once refused.
WINDOW = 3.0


def handshake(port: int) -> socket.socket:
    """A connection that said HELLO (as a producer) and sits idle."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    protocol = Connection(ClientInfo())
    while True:
        event = protocol.next_event()
        data = protocol.data_to_send()
        if data:
            sock.sendall(data)
        if isinstance(event, Ready):
            return sock
        if event is NEED_DATA:
            protocol.receive_data(sock.recv(4096))
        else:
            raise AssertionError(f"handshake failed: {event!r}")


@pytest.fixture(scope="module")
def full_server() -> Iterator[FaktoryServer]:
    with FaktoryServer() as server:
        idle = [handshake(server.port) for _ in range(LIMIT)]
        try:
            yield server
        finally:
            for sock in idle:
                sock.close()


@pytest.mark.parametrize("adapter", ["asyncio", "thread", "gevent"])
def test_a_full_server_gets_slow_retries_and_one_warning(
    full_server: FaktoryServer, adapter: str
) -> None:
    concurrency = 4
    with FaultProxy("127.0.0.1", full_server.port, seed=1) as proxy:
        worker: Any = adapter_module(adapter).Worker(
            url=proxy.url, queues=[f"full-{uuid.uuid4().hex[:8]}"], concurrency=concurrency
        )
        stop = threading.Event()
        counted: dict[str, float] = {}

        def watch() -> None:
            # From the first refusal on, count the connections made over the window.
            if not logs.seen.wait(20):
                stop.set()
                return
            before = proxy.connections
            time.sleep(WINDOW)  # a measurement window: the rate is what is measured
            counted["connections"] = proxy.connections - before
            stop.set()

        with capture_logs("too many connections") as logs:
            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            serve(adapter, worker, stop_when=stop)
            watcher.join(30)
        assert logs.seen.is_set(), logs.text
    warnings = [r for r in logs.records if r.levelno >= logging.WARNING]
    refusals = [r for r in warnings if "too many connections" in r.getMessage()]
    # One for the job links, at most one for the heartbeat's: not one per attempt.
    assert 1 <= len(refusals) <= 2, [r.getMessage() for r in refusals]
    assert f"opens {concurrency + 1}" in refusals[0].getMessage()
    assert len(warnings) <= 4, [r.getMessage() for r in warnings]
    # Every link waits the longest backoff (15-30 s) after a refusal: none retries in the window.
    # (Resetting the backoff at each handshake gave 2-4 attempts per link per second.)
    assert counted["connections"] <= 1, counted


def test_the_filled_server_refuses_the_next_connection(full_server: FaktoryServer) -> None:
    """The fixture really fills the server: a producer past the limit is refused too."""
    from faktory_adapters.asyncio import Client, ServerReplyError

    async def info() -> None:
        async with Client(full_server.url) as client:
            await client.info()

    with pytest.raises(ServerReplyError, match="too many connections"):
        asyncio.run(info())
