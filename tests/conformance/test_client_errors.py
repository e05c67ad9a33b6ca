"""One error family, for every adapter's Client: whatever the server or the network does is a
FaktoryError (a FaktoryConnectionError, FaktoryTimeoutError or FaktoryProtocolError, raised
from what the runtime saw), and what the caller does wrong is a TypeError, ValueError or
RuntimeError naming it.

Against the real server, directly or through the fault proxy, which does to the server's
replies what it cannot be made to do: trickles them, cuts them short, puts garbage or a reply
of the wrong kind in front of them. The one raw socket is a listener that is no Faktory server
at all (it greets with an SSH banner).
"""

from __future__ import annotations

import contextlib
import errno
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Final

import pytest

from faktory_adapters._common import (
    ClientClosedError,
    FaktoryConnectionError,
    FaktoryError,
    FaktoryProtocolError,
    FaktoryTimeoutError,
    OutcomeUnknownError,
    unusable_reason,
)
from faktory_core import RemoteProtocolError, ServerURL
from faktory_core.commands import Info
from tests.support.adapters import SyncClient
from tests.support.proxy import FaultProxy
from tests.support.server import FaktoryServer, closed_port

pytestmark = pytest.mark.server

#: How long a test waits for anything (every wait is bounded).
WAIT: Final = 10.0
#: The greeting of the session's server (no password).
GREETING: Final = b'+HI {"v":2}\r\n'


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@contextlib.contextmanager
def not_a_faktory_server(banner: bytes) -> Iterator[str]:
    """Yield the URL of a loopback listener that is no Faktory server: it greets a connection
    with ``banner``, then reads until the client closes it. No Faktory server (nor the proxy,
    which relays one) can be made to greet that way; this is the one raw socket of the tests."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(WAIT)

        def serve() -> None:
            with contextlib.suppress(OSError):  # nobody came within WAIT, or a reset
                connection, _ = listener.accept()
                with connection:
                    connection.settimeout(WAIT)
                    connection.sendall(banner)
                    while connection.recv(4096):
                        pass

        server = threading.Thread(target=serve, name="not-faktory", daemon=True)
        server.start()
        try:
            yield f"tcp://127.0.0.1:{listener.getsockname()[1]}"
        finally:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes an accept() still waiting
    server.join(WAIT)


@contextlib.contextmanager
def cut_when(proxy: FaultProxy, condition: Callable[[], bool], *, reset: bool) -> Iterator[None]:
    """Cut every connection of ``proxy`` (``reset``: with RST, else FIN) the moment
    ``condition()`` holds, from a thread of its own while the block's call waits for the
    server; the block fails if that did not happen within WAIT."""
    cuts: list[int] = []

    def cut() -> None:
        if proxy.wait_for(condition, WAIT):
            cuts.append(proxy.cut_all(reset=reset))

    cutter = threading.Thread(target=cut, name="cutter", daemon=True)
    cutter.start()
    try:
        yield
    finally:
        cutter.join(WAIT)
    assert cuts == [1], "the condition for the cut never held"


def failure(client: SyncClient, method: str = "info", *args: Any) -> BaseException:
    """The exception a call of ``method`` raises (the test checks which)."""
    with pytest.raises(Exception) as raised:  # noqa: PT011 - checked by the caller
        getattr(client, method)(*args)
    return raised.value


def assert_usable(client: SyncClient) -> None:
    """The Client still works: the failed connection was not kept."""
    assert client.info()["server"]["faktory_version"] == "1.9.4"


# -- the server cannot be reached, or used ------------------------------------------------------


def test_a_refused_connect_is_a_faktory_connection_error(adapter: str) -> None:
    url = f"tcp://127.0.0.1:{closed_port()}"
    with SyncClient(adapter, url) as client:
        for _ in range(2):  # nothing is cached
            error = failure(client)
            assert isinstance(error, FaktoryConnectionError)
            assert isinstance(error, FaktoryError)
            assert isinstance(error, ConnectionError)  # an OSError, as Python habits expect
            assert isinstance(error.__cause__, ConnectionRefusedError)
            assert error.errno == errno.ECONNREFUSED
            assert str(error) == f"cannot use the server at {url}: connection refused"
            # The CLI's check and a worker's log word a wrapped error as the error itself.
            reason = unusable_reason(error, ServerURL.parse(url), timeout=1)
            assert reason == "connection refused"


def test_an_unknown_host_is_a_faktory_connection_error(adapter: str) -> None:
    url = "tcp://faktory.invalid:7419"
    with SyncClient(adapter, url, connect_timeout=2) as client:
        error = failure(client)
    assert isinstance(error, FaktoryConnectionError)
    assert isinstance(error.__cause__, socket.gaierror)
    assert str(error).startswith(f"cannot use the server at {url}: cannot connect: ")


def test_a_connect_past_its_bound_is_a_faktory_timeout_error(
    adapter: str, faktory_server: FaktoryServer
) -> None:
    # The server greets, but its greeting trickles: a byte, then one a minute.
    with (
        FaultProxy(faktory_server.host, faktory_server.port, trickle=60) as proxy,
        SyncClient(adapter, proxy.url, connect_timeout=0.3) as client,
    ):
        url = proxy.url
        started = time.monotonic()
        error = failure(client)
        assert time.monotonic() - started < WAIT / 2
        assert proxy.bytes_to_clients < len(GREETING)  # the greeting never came whole
    assert isinstance(error, FaktoryTimeoutError)
    assert isinstance(error, TimeoutError)
    assert isinstance(error, FaktoryError)
    assert str(error) == f"connecting to {url} took more than 0.3 s (connect_timeout)"


def test_a_command_past_its_bound_is_a_faktory_timeout_error(
    adapter: str, faktory_server: FaktoryServer
) -> None:
    with (
        FaultProxy(faktory_server.host, faktory_server.port) as proxy,
        SyncClient(adapter, proxy.url, timeout=0.5) as client,
    ):
        client.info()
        proxy.set_trickle(0.2)  # a reply of hundreds of bytes: minutes
        error = failure(client)
        proxy.set_trickle(None)
        assert isinstance(error, FaktoryTimeoutError)
        assert isinstance(error, TimeoutError)
        assert str(error) == "INFO got no complete reply within 0.5 s"
        assert_usable(client)


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_a_server_that_closes_mid_reply_is_a_faktory_connection_error(
    adapter: str, faktory_server: FaktoryServer, reset: bool
) -> None:
    with (
        FaultProxy(faktory_server.host, faktory_server.port) as proxy,
        SyncClient(adapter, proxy.url, timeout=WAIT) as client,
    ):
        client.info()
        # The reply (hundreds of bytes) comes a byte every 20 ms: cut once 8 have gone.
        proxy.set_trickle(0.02)
        before = proxy.bytes_to_clients
        with cut_when(proxy, lambda: proxy.bytes_to_clients >= before + 8, reset=reset):
            error = failure(client)
        proxy.set_trickle(None)
        # INFO was sent: the server may or may not have carried it out (for INFO harmless,
        # for a PUSH not), which the error's class and message say.
        assert isinstance(error, OutcomeUnknownError)
        assert isinstance(error, FaktoryConnectionError)
        assert isinstance(error, ConnectionError)
        assert isinstance(error.command, Info)
        assert error.jid is None
        text = str(error)
        assert proxy.url in text
        assert "INFO" in text
        assert text.endswith(
            ": INFO may or may not have been carried out: repeat it if doing it twice is harmless"
        )
        if not reset:  # a FIN: the server closed it, and the Client says so
            assert text.startswith(
                f"{proxy.url} closed the connection before the reply to INFO was complete: "
            )
        # An RST: that, or (where the runtime reports the reset) "the connection to URL broke
        # during INFO: Connection reset by peer".
        assert_usable(client)  # a new connection


def test_a_server_that_closes_during_the_handshake_is_a_faktory_connection_error(
    adapter: str, faktory_server: FaktoryServer
) -> None:
    # The greeting trickles, a byte a second: the server closes (FIN) once the first has gone.
    with (
        FaultProxy(faktory_server.host, faktory_server.port, trickle=1.0) as proxy,
        SyncClient(adapter, proxy.url, timeout=WAIT, connect_timeout=WAIT) as client,
    ):
        with cut_when(proxy, lambda: proxy.bytes_to_clients >= 1, reset=False):
            error = failure(client)
        assert proxy.bytes_to_clients < len(GREETING)  # cut during the greeting
        assert isinstance(error, FaktoryConnectionError)
        assert str(error).startswith(f"{proxy.url} closed the connection during the handshake")
        proxy.set_trickle(None)
        assert_usable(client)


# -- the server breaks the protocol -------------------------------------------------------------


def test_garbage_for_a_greeting_is_a_faktory_protocol_error(adapter: str) -> None:
    with (
        not_a_faktory_server(b"SSH-2.0-OpenSSH_9.2\r\n") as url,
        SyncClient(adapter, url) as client,
    ):
        error = failure(client)
    assert isinstance(error, FaktoryProtocolError)
    assert not isinstance(error, OSError)
    assert isinstance(error.__cause__, RemoteProtocolError)
    assert str(error) == (
        f"cannot use the server at {url}: it does not speak the Faktory protocol: {error.__cause__}"
    )


@contextlib.contextmanager
def ahead_of_the_next_reply(
    adapter: str, server: FaktoryServer, data: bytes
) -> Iterator[tuple[FaultProxy, SyncClient]]:
    """A Client, through the proxy, whose next reply comes with ``data`` in front of it (in
    the same write, as though the server had sent it)."""
    with (
        FaultProxy(server.host, server.port) as proxy,
        SyncClient(adapter, proxy.url, timeout=WAIT) as client,
    ):
        client.info()
        assert proxy.inject(data, glued=True, ahead=True) == 1
        yield proxy, client


def test_garbage_for_a_reply_is_a_faktory_protocol_error(
    adapter: str, faktory_server: FaktoryServer
) -> None:
    garbage = b"%not a RESP reply\r\n"
    with ahead_of_the_next_reply(adapter, faktory_server, garbage) as (proxy, client):
        sent = proxy.bytes_to_target
        error = failure(client)
        assert isinstance(error, FaktoryProtocolError)
        assert isinstance(error.__cause__, RemoteProtocolError)
        assert str(error).startswith(f"{proxy.url} broke the Faktory protocol during INFO: ")
        # The server got INFO, whole (the garbage came glued to its reply).
        assert proxy.bytes_to_target - sent == len(b"INFO\r\n")
        assert_usable(client)


def test_an_unexpected_reply_is_a_faktory_protocol_error(
    adapter: str, faktory_server: FaktoryServer
) -> None:
    # A well-formed reply of the wrong kind: +OK where INFO's JSON should be (which follows).
    with ahead_of_the_next_reply(adapter, faktory_server, b"+OK\r\n") as (_, client):
        error = failure(client)
        assert isinstance(error, FaktoryProtocolError), repr(error)
        assert_usable(client)  # not INFO's own reply, left unread on the failed connection


# -- misuse is not a FaktoryError ---------------------------------------------------------------


def test_a_closed_client_raises_client_closed_error(
    adapter: str, faktory_server: FaktoryServer
) -> None:
    with SyncClient(adapter, faktory_server.url) as client:
        client.info()
        client.close()
        for call, args in (("info", ()), ("push", ("Probe", [1])), ("fetch", ("q",))):
            error = failure(client, call, *args)
            assert isinstance(error, ClientClosedError), repr(error)
            assert isinstance(error, RuntimeError)
            assert not isinstance(error, FaktoryError)
            assert str(error) == (
                "the Client is closed (by close(), or at the end of its with block): "
                "make a new Client"
            )
        client.close()  # closing twice is harmless


def test_the_cause_and_the_tls_note_stay_in_the_traceback(adapter: str) -> None:
    url = f"tcp://127.0.0.1:{closed_port()}"
    with SyncClient(adapter, url) as client:
        error = failure(client)
    shown = "".join(traceback.format_exception(error))
    assert "ConnectionRefusedError" in shown
    assert "The above exception was the direct cause" in shown


def test_request_refuses_what_is_not_a_command(adapter: str, faktory_server: FaktoryServer) -> None:
    with SyncClient(adapter, faktory_server.url) as client:
        with pytest.raises(TypeError, match=r"^request\(command\): command must be a"):
            client.request("INFO")
        with pytest.raises(ValueError, match=r"^timeout must be a finite number of seconds"):
            client.request(Info(), timeout=-1)
        assert client.request(Info(), timeout=5).info["server"]["faktory_version"] == "1.9.4"


# -- arguments: a wrong type or value is a TypeError or ValueError naming it ----------------------


@pytest.mark.parametrize(
    "args",
    ["a@b", {"to": "a@b"}, {"a@b"}, (n for n in range(2))],
    ids=["str", "dict", "set", "gen"],
)
def test_args_that_are_not_a_list_or_tuple_are_refused_and_nothing_is_pushed(
    adapter: str, faktory_server: FaktoryServer, args: Any
) -> None:
    # A str once went out as its characters (["a", "@", "b"]), a dict as its keys.
    queue = unique("q")
    with SyncClient(adapter, faktory_server.url) as client:
        with pytest.raises(TypeError, match="args must be a list or tuple"):
            client.push("SendEmail", args, queue=queue)
        with pytest.raises(TypeError, match="args must be a list or tuple"):
            client.job("SendEmail", args, queue=queue)
        assert client.info()["faktory"]["queues"].get(queue, 0) == 0


def test_push_refuses_what_is_not_a_job_naming_it(
    adapter: str, faktory_server: FaktoryServer
) -> None:
    with SyncClient(adapter, faktory_server.url) as client:
        for wrong in (None, 42, {"jobtype": "SendEmail"}):
            with pytest.raises(TypeError, match=r"^push\(job\): job must be a faktory_core\.Job"):
                client.push(wrong)
        job = client.job("SendEmail", ["a@b"])
        with pytest.raises(TypeError, match=r"^push\(job\) takes no args or options"):
            client.push(job, queue="other")


def test_push_bulk_refuses_a_lone_job(adapter: str, faktory_server: FaktoryServer) -> None:
    with SyncClient(adapter, faktory_server.url) as client:
        job = client.job("SendEmail", ["a@b"], queue=unique("q"))
        with pytest.raises(TypeError, match=r"^jobs must be a sequence of Job instances"):
            client.push_bulk(job)
        assert client.info()["faktory"]["queues"].get(job.queue, 0) == 0


def test_a_backtrace_given_as_one_string_is_its_lines(
    adapter: str, faktory_server: FaktoryServer
) -> None:
    # tuple("a.py:1...") once sent every character as a line of its own.
    queue = unique("q")
    with SyncClient(adapter, faktory_server.url) as client:
        jid = client.push("Probe", queue=queue)
        client.fetch(queue)
        client.fail(jid, "ValueError", "bad", "a.py:1 in f\nb.py:2 in g")
        client.mutate("requeue", "retries", jids=jid)  # one jid, not its characters
        job = client.fetch(queue)
        assert job is not None
        assert job.jid == jid
        assert job.failure.backtrace == ("a.py:1 in f", "b.py:2 in g")
        client.ack(jid)


def test_client_arguments_of_the_wrong_type_are_named(adapter: str) -> None:
    with pytest.raises(TypeError, match=r"^url must be a string such as 'tcp://localhost:7419'"):
        SyncClient(adapter, 7419)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^jid_factory must be a function returning a new jid"):
        SyncClient(adapter, "tcp://localhost:7419", jid_factory="jid-12345678")
