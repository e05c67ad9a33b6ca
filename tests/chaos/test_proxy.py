"""The fault-injecting proxy of the chaos run, in front of the real server."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.support.proxy import FaultProxy
from tests.support.server import FaktoryServer

pytestmark = pytest.mark.server

GREETING = b'+HI {"v":2}\r\n'


def connect(proxy: FaultProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    sock.settimeout(5)
    return sock


def read_line(sock: socket.socket) -> bytes:
    """One reply line (TCP may deliver it in pieces)."""
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything received until the proxy closes the connection (FIN or RST)."""
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def received_until_cut(proxy: FaultProxy) -> bytes:
    """What one new connection receives before the proxy cuts it. A cut with RST can come
    before ``connect()`` has even returned (the greeting is on its way at once): then nothing
    was received, as when RST discards bytes not yet read."""
    try:
        sock = connect(proxy)
    except ConnectionResetError:
        return b""
    with sock:
        return read_until_closed(sock)


def wait_until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.01)


def test_it_relays_both_ways(faktory_server: FaktoryServer) -> None:
    with FaultProxy(faktory_server.host, faktory_server.port) as proxy, connect(proxy) as sock:
        assert read_line(sock) == GREETING
        sock.sendall(b'HELLO {"v":2}\r\n')
        assert read_line(sock) == b"+OK\r\n"
        sock.sendall(b"INFO\r\n")
        assert read_line(sock).startswith(b"$")  # the bulk reply's length
        assert proxy.faults == 0
        assert proxy.connections == 1


def test_a_byte_cut_delivers_a_prefix_then_closes(faktory_server: FaktoryServer) -> None:
    with FaultProxy(faktory_server.host, faktory_server.port, seed=3, mean_bytes=4) as proxy:
        received = [received_until_cut(proxy) for _ in range(5)]
        assert all(GREETING.startswith(data) and len(data) < len(GREETING) for data in received)
        assert proxy.random_cuts == 5
        assert proxy.faults == 5


def test_plans_follow_the_seed(faktory_server: FaktoryServer) -> None:
    """The bytes the proxy sends each connection before its cut follow the seed. (What the
    client reads may be less: an RST discards bytes it had not read yet.)"""

    def prefixes(seed: int) -> list[int]:
        sent = []
        with FaultProxy(faktory_server.host, faktory_server.port, seed=seed, mean_bytes=6) as p:
            for _ in range(8):
                before = p.bytes_to_clients
                received = received_until_cut(p)  # the cut is made by the time it returns
                sent.append(p.bytes_to_clients - before)
                assert GREETING[: sent[-1]].startswith(received)
        return sent

    first = prefixes(11)
    assert first == prefixes(11)
    assert first != prefixes(12)


def test_a_timed_cut_closes_an_idle_connection(faktory_server: FaktoryServer) -> None:
    with (
        FaultProxy(faktory_server.host, faktory_server.port, seed=1, mean_seconds=0.05) as proxy,
        connect(proxy) as sock,
    ):
        assert read_until_closed(sock) in (b"", GREETING)
        assert proxy.random_cuts == 1


def test_a_stall_keeps_the_connection_open_and_loses_what_it_carries(
    faktory_server: FaktoryServer,
) -> None:
    with FaultProxy(
        faktory_server.host, faktory_server.port, seed=2, mean_bytes=3, stall_share=1.0
    ) as proxy:
        sock = connect(proxy)
        data = sock.recv(4096)
        assert GREETING.startswith(data)
        assert len(data) < len(GREETING)
        wait_until(lambda: proxy.stalls == 1)
        sock.sendall(b'HELLO {"v":2}\r\n')
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(4096)  # neither the rest of the greeting nor a reply to HELLO
        assert proxy.open_connections == 1
        sock.close()
        wait_until(lambda: proxy.open_connections == 0)
        assert proxy.faults == 1


def test_cut_all_cuts_every_open_connection(faktory_server: FaktoryServer) -> None:
    with FaultProxy(faktory_server.host, faktory_server.port) as proxy:
        first, second = connect(proxy), connect(proxy)
        for sock in (first, second):
            assert read_line(sock) == GREETING
        assert proxy.cut_all() == 2
        for sock in (first, second):
            assert read_until_closed(sock) == b""
            sock.close()
        assert proxy.forced_cuts == 2
        assert proxy.open_connections == 0


def test_a_connection_is_closed_at_once_while_the_target_is_down() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with FaultProxy("127.0.0.1", port) as proxy, connect(proxy) as sock:
        assert read_until_closed(sock) == b""
        wait_until(lambda: proxy.refused == 1)
        assert proxy.faults == 0


def test_set_faults_turns_the_cuts_off_for_open_connections(
    faktory_server: FaktoryServer,
) -> None:
    # Seed 5 plans a cut after 16 bytes: past the greeting (13), within the HELLO round trip.
    with FaultProxy(faktory_server.host, faktory_server.port, seed=5, mean_bytes=16) as proxy:
        assert proxy.faults_on
        sock = connect(proxy)
        assert read_line(sock) == GREETING
        proxy.set_faults(mean_bytes=None, mean_seconds=None)
        assert not proxy.faults_on
        sock.sendall(b'HELLO {"v":2}\r\n')
        assert read_line(sock) == b"+OK\r\n"
        sock.sendall(b"BEAT " + json.dumps({"wid": "nobody"}).encode() + b"\r\n")
        assert read_line(sock) == b"-ERR unknown worker nobody\r\n"
        sock.close()
        assert proxy.faults == 0


def test_without_set_faults_that_connection_is_cut(faktory_server: FaktoryServer) -> None:
    with FaultProxy(faktory_server.host, faktory_server.port, seed=5, mean_bytes=16) as proxy:
        sock = connect(proxy)
        assert read_line(sock) == GREETING
        sock.sendall(b'HELLO {"v":2}\r\n')
        assert read_until_closed(sock) == b""  # 3 bytes of HELLO went through, then the cut
        sock.close()
        assert proxy.random_cuts == 1


def test_a_trickle_delivers_each_byte_alone_and_late(faktory_server: FaktoryServer) -> None:
    with (
        FaultProxy(faktory_server.host, faktory_server.port, trickle=0.05) as proxy,
        connect(proxy) as sock,
    ):
        started = time.monotonic()
        chunks = [sock.recv(4096) for _ in range(len(GREETING))]
        assert chunks == [bytes([byte]) for byte in GREETING]
        assert time.monotonic() - started >= (len(GREETING) - 1) * 0.05
        sock.sendall(b'HELLO {"v":2}\r\n')
        assert sock.recv(4096) == b"+"
        proxy.set_trickle(None)  # what was held back goes at once, and the rest as it comes
        assert read_line(sock) == b"OK\r\n"
        sock.sendall(b"FLUSH\r\n")
        assert sock.recv(4096) == b"+OK\r\n"


def test_a_trickled_connection_is_closed_after_its_last_byte(
    faktory_server: FaktoryServer,
) -> None:
    with (
        FaultProxy(faktory_server.host, faktory_server.port, trickle=0.01) as proxy,
        connect(proxy) as sock,
    ):
        assert read_line(sock) == GREETING
        sock.sendall(b'HELLO {"v":2}\r\nEND\r\n')
        assert read_until_closed(sock) == b"+OK\r\n"


def test_inject_sends_every_client_what_the_server_never_sent(
    faktory_server: FaktoryServer,
) -> None:
    with FaultProxy(faktory_server.host, faktory_server.port) as proxy:
        first, second = connect(proxy), connect(proxy)
        for sock in (first, second):
            assert read_line(sock) == GREETING
        assert proxy.inject(b"-ERR unsolicited\r\n") == 2
        for sock in (first, second):
            assert read_line(sock) == b"-ERR unsolicited\r\n"
            sock.close()


def test_inject_glued_comes_in_one_piece_with_the_next_reply(
    faktory_server: FaktoryServer,
) -> None:
    with FaultProxy(faktory_server.host, faktory_server.port) as proxy, connect(proxy) as sock:
        assert read_line(sock) == GREETING
        assert proxy.inject(b"-ERR unsolicited\r\n", glued=True) == 1
        sock.sendall(b'HELLO {"v":2}\r\n')
        assert sock.recv(4096) == b"+OK\r\n-ERR unsolicited\r\n"
