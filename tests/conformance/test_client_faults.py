"""Every adapter's Client against a server that misbehaves: slow to answer (the fault proxy's
trickle), restarted under a pool of idle connections, or sending replies nobody asked for.

A call that a regression would let run for minutes runs on a thread of its own (:func:`within`),
so the test fails instead of hanging; closing the proxy afterwards ends that call.
"""

from __future__ import annotations

import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Final, TypeVar

import gevent
import pytest

from faktory_adapters import _client_gevent
from faktory_adapters._cli import CHECK_TIMEOUT
from faktory_adapters._common import FaktoryTimeoutError
from faktory_adapters._exits import EXIT_UNREACHABLE
from tests.cli.command import run
from tests.support.adapters import SyncClient
from tests.support.proxy import FaultProxy
from tests.support.server import FaktoryServer
from tests.support.tls import Certificates, make_certificates

pytestmark = pytest.mark.server

#: Seconds between two bytes of a trickled reply: the server's greeting alone takes ~5 s.
TRICKLE: Final = 0.4
#: The timeout given, and how late past it the error may come on a loaded 2-core machine.
BOUND: Final = 1.0
SLACK: Final = 1.5
#: How early before it: none, but for a clock's rounding.
EARLY: Final = 0.02
#: How long a test waits for a call that should end within BOUND + SLACK (the old code, which
#: bounded each read and not the command, took minutes).
PATIENCE: Final = 15.0
UNSOLICITED: Final = b"-ERR unsolicited\r\n"

T = TypeVar("T")


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(certificates: Certificates) -> Iterator[FaktoryServer]:
    server = FaktoryServer(tls=(certificates.server_key, certificates.server_cert)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def private_server() -> Iterator[FaktoryServer]:
    """A server of this module's own, which its tests restart."""
    server = FaktoryServer().start()
    try:
        yield server
    finally:
        server.stop()


def within(limit: float, scenario: Callable[[], T]) -> T:
    """Run ``scenario`` on a thread of its own (the Client made there too: gevent's sockets
    belong to one thread); its result, or its exception; fail if it runs past ``limit`` s."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append((scenario(), None))
        except BaseException as error:
            outcome.append((None, error))

    thread = threading.Thread(target=target, name="scenario", daemon=True)
    thread.start()
    thread.join(limit)
    assert outcome, f"still running after {limit} s"
    result, error = outcome[0]
    if error is not None:
        raise error
    return result  # type: ignore[no-any-return]


def timed_error(call: Callable[[], object]) -> tuple[float, BaseException]:
    """How long ``call`` took to fail, and its exception."""
    started = time.monotonic()
    with pytest.raises(Exception) as raised:  # noqa: PT011 - the caller checks which
        call()
    return time.monotonic() - started, raised.value


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# -- timeouts bound the whole command, and the whole connect ---------------------------------


def test_timeout_bounds_a_whole_command(adapter: str, faktory_server: FaktoryServer) -> None:
    with FaultProxy(faktory_server.host, faktory_server.port) as proxy:

        def scenario() -> tuple[float, BaseException]:
            with SyncClient(adapter, proxy.url, timeout=BOUND) as client:
                client.info()  # connected and pooled at full speed
                proxy.set_trickle(TRICKLE)
                outcome = timed_error(client.info)  # a reply of hundreds of bytes
                proxy.set_trickle(None)
                assert client.info()["server"]["faktory_version"] == "1.9.4"
                return outcome

        elapsed, error = within(PATIENCE, scenario)
        assert isinstance(error, FaktoryTimeoutError)  # a TimeoutError too
        assert str(error) == "INFO got no complete reply within 1 s"
        assert BOUND - EARLY <= elapsed < BOUND + SLACK
        assert proxy.connections == 2  # the connection that timed out was not reused


def test_timeout_bounds_a_whole_command_over_tls(
    adapter: str, tls_server: FaktoryServer, certificates: Certificates
) -> None:
    # A TLS record trickled a byte at a time: gevent's SSLSocket gave each wait inside one
    # record read the whole socket timeout.
    context = ssl.create_default_context(cafile=str(certificates.ca_cert))
    with FaultProxy(tls_server.host, tls_server.port) as proxy:
        url = f"tcp+tls://127.0.0.1:{proxy.port}"

        def scenario() -> tuple[float, BaseException]:
            with SyncClient(adapter, url, timeout=BOUND, ssl_context=context) as client:
                client.info()
                proxy.set_trickle(TRICKLE / 4)
                outcome = timed_error(client.info)
                proxy.set_trickle(None)
                return outcome

        elapsed, error = within(PATIENCE, scenario)
        assert isinstance(error, FaktoryTimeoutError)  # a TimeoutError too
        assert str(error) == "INFO got no complete reply within 1 s"
        assert BOUND - EARLY <= elapsed < BOUND + SLACK


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_the_generated_gevent_client_bounds_each_greenlet_s_command(
    tls: bool, request: pytest.FixtureRequest, certificates: Certificates
) -> None:
    # The gevent Client generated from the asyncio one, used directly (the runs above reach
    # the gevent adapter's Client through faktory_adapters.gevent, whatever it imports): two
    # greenlets' trickled commands each end at their bound, waiting together, not in turn.
    server: FaktoryServer = request.getfixturevalue("tls_server" if tls else "faktory_server")
    context = ssl.create_default_context(cafile=str(certificates.ca_cert)) if tls else None
    with FaultProxy(server.host, server.port) as proxy:
        url = f"tcp+tls://127.0.0.1:{proxy.port}" if tls else proxy.url

        def scenario() -> tuple[float, list[BaseException | None]]:
            with _client_gevent.Client(url, timeout=BOUND, ssl_context=context) as client:
                gevent.joinall([gevent.spawn(client.info) for _ in range(2)], raise_error=True)
                proxy.set_trickle(TRICKLE / 4 if tls else TRICKLE)
                started = time.monotonic()
                greenlets = [gevent.spawn(client.info) for _ in range(2)]
                gevent.joinall(greenlets)
                elapsed = time.monotonic() - started
                proxy.set_trickle(None)
                return elapsed, [greenlet.exception for greenlet in greenlets]

        elapsed, errors = within(PATIENCE, scenario)
        for error in errors:
            assert isinstance(error, FaktoryTimeoutError)  # a TimeoutError too
            assert str(error) == "INFO got no complete reply within 1 s"
        assert BOUND - EARLY <= elapsed < BOUND + SLACK
        assert proxy.connections == 2


def test_connect_timeout_bounds_a_trickled_handshake(
    adapter: str, faktory_server: FaktoryServer
) -> None:
    with FaultProxy(faktory_server.host, faktory_server.port, trickle=TRICKLE) as proxy:

        def scenario() -> tuple[float, BaseException]:
            with SyncClient(adapter, proxy.url, connect_timeout=BOUND) as client:
                return timed_error(client.info)

        elapsed, error = within(PATIENCE, scenario)
        assert isinstance(error, FaktoryTimeoutError)  # a TimeoutError too
        assert str(error) == f"connecting to {proxy.url} took more than 1 s (connect_timeout)"
        assert BOUND - EARLY <= elapsed < BOUND + SLACK


def test_connect_timeout_bounds_a_trickled_tls_handshake(
    adapter: str, tls_server: FaktoryServer, certificates: Certificates
) -> None:
    context = ssl.create_default_context(cafile=str(certificates.ca_cert))
    with FaultProxy(tls_server.host, tls_server.port, trickle=TRICKLE / 4) as proxy:
        url = f"tcp+tls://127.0.0.1:{proxy.port}"  # the certificate names 127.0.0.1 too

        def scenario() -> tuple[float, BaseException]:
            with SyncClient(adapter, url, connect_timeout=BOUND, ssl_context=context) as client:
                return timed_error(client.info)

        elapsed, error = within(PATIENCE, scenario)
        assert isinstance(error, FaktoryTimeoutError)  # a TimeoutError too
        assert "took more than 1 s (connect_timeout)" in str(error)
        assert BOUND - EARLY <= elapsed < BOUND + SLACK


def test_the_check_command_ends_within_its_bound(faktory_server: FaktoryServer) -> None:
    # The greeting alone trickles for over CHECK_TIMEOUT; the old check took minutes.
    with FaultProxy(faktory_server.host, faktory_server.port, trickle=0.5) as proxy:
        started = time.monotonic()
        try:
            result = run("--check", "--url", proxy.url, timeout=PATIENCE)
        except subprocess.TimeoutExpired:
            pytest.fail(f"faktory-worker --check still ran after {PATIENCE} s")
        elapsed = time.monotonic() - started
    assert result.returncode == EXIT_UNREACHABLE, result.stderr
    assert f"no answer within {CHECK_TIMEOUT:g} s (timeout)" in result.stderr
    assert elapsed < CHECK_TIMEOUT + 3.0  # Python's start, and a loaded machine


# -- pooled connections the server closed, or wrote to, while they sat idle -------------------


def test_idle_pooled_connections_are_replaced_after_a_server_restart(
    adapter: str, private_server: FaktoryServer
) -> None:
    queue = unique("q")
    with SyncClient(adapter, private_server.url, pool_size=4) as client:
        assert client.concurrently("fetch", *[(unique("empty"),)] * 4) == [None] * 4
        assert client.info()["server"]["connections"] >= 4  # four pooled, one more counted
        private_server.restart()
        for n in range(10):
            client.push("Probe", [n], queue=queue)
        assert client.info()["faktory"]["queues"][queue] == 10


def test_an_unsolicited_error_retires_an_idle_connection(
    adapter: str, faktory_server: FaktoryServer
) -> None:
    queue = unique("q")
    with (
        FaultProxy(faktory_server.host, faktory_server.port) as proxy,
        SyncClient(adapter, proxy.url) as client,
    ):
        client.info()
        assert proxy.inject(UNSOLICITED) == 1
        client.settle()  # the bytes are in: an asyncio loop takes them on its next turn
        for n in range(3):
            client.push("Probe", [n], queue=queue)  # each gets its own reply: +OK
        assert client.info()["faktory"]["queues"][queue] == 3
        client.remove_queues(queue)
        assert proxy.connections == 2


def test_bytes_after_the_reply_awaited_retire_the_connection(
    adapter: str, faktory_server: FaktoryServer
) -> None:
    queue = unique("q")
    with (
        FaultProxy(faktory_server.host, faktory_server.port) as proxy,
        SyncClient(adapter, proxy.url) as client,
    ):
        client.info()
        assert proxy.inject(UNSOLICITED, glued=True) == 1
        client.push("Probe", queue=queue)  # its +OK arrives with the error glued to it
        assert client.info()["faktory"]["queues"][queue] == 1  # not the glued error
        client.remove_queues(queue)
        assert proxy.connections == 2


def test_idle_connections_are_reused_and_cut_ones_replaced(
    adapter: str, tls_server: FaktoryServer, certificates: Certificates
) -> None:
    # Over TLS, where bytes can wait inside the TLS layer rather than on the socket.

    context = ssl.create_default_context(cafile=str(certificates.ca_cert))
    with FaultProxy(tls_server.host, tls_server.port) as proxy:
        url = f"tcp+tls://127.0.0.1:{proxy.port}"
        with SyncClient(adapter, url, ssl_context=context) as client:
            for _ in range(3):
                client.info()
            assert proxy.connections == 1
            assert proxy.cut_all(reset=False) == 1
            client.settle()  # the close is in: an asyncio loop takes it on its next turn
            for _ in range(3):
                client.info()
            assert proxy.connections == 2
            assert proxy.inject(UNSOLICITED) == 1
            client.settle()
            client.info()
            assert proxy.connections == 3
