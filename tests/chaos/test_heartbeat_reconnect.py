"""The heartbeat thread of every adapter, re-opening its connection through real faults."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator

import pytest

from faktory_adapters._heartbeat import HeartbeatThread
from faktory_core import ServerURL, WorkerConfig
from faktory_core.commands import WorkerState
from tests.support.proxy import FaultProxy
from tests.support.server import FaktoryServer

pytestmark = pytest.mark.server


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.01)


@pytest.fixture
def proxy(faktory_server: FaktoryServer) -> Iterator[FaultProxy]:
    with FaultProxy(faktory_server.host, faktory_server.port, seed=4) as proxy:
        yield proxy


def start_heartbeat(proxy: FaultProxy, **settings: float) -> HeartbeatThread:
    config = WorkerConfig(wid=f"hb-{random.randrange(10**9)}", **settings)
    states: list[WorkerState] = []
    heartbeat = HeartbeatThread(
        config, ServerURL.parse(proxy.url), on_server_state=states.append, random=random.random
    )
    heartbeat.start()
    return heartbeat


@pytest.mark.parametrize("reset", [True, False], ids=["rst", "fin"])
def test_a_cut_heartbeat_link_waits_out_its_backoff_idle_then_reconnects(
    proxy: FaultProxy, reset: bool
) -> None:
    # A backoff of 1 to 2 s: long enough to see whether the thread spins through it.
    heartbeat = start_heartbeat(proxy, reconnect_base=2.0, reconnect_cap=2.0)
    try:
        wait_until(lambda: proxy.open_connections == 1)
        cpu, wall = time.process_time(), time.monotonic()
        assert proxy.cut_all(reset=reset) == 1
        wait_until(lambda: proxy.connections == 2 and proxy.open_connections == 1)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        assert wall >= 0.9  # the backoff was waited out...
        assert cpu < 0.25 * wall  # ...asleep, not polling a dead socket
    finally:
        assert heartbeat.finish(10)
