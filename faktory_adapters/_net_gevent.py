"""The gevent Client's network backend: gevent sockets (the interface: ``_net_asyncio``).

A plain gevent socket's timeout bounds a whole call, as a blocking socket's does (and setting
it is no system call). gevent's SSLSocket gives each wait inside one TLS record (and of its
handshake) the whole socket timeout instead, so a ``gevent.Timeout`` bounds each TLS write and
read, and the connect, with what is left until the deadline.
"""

from __future__ import annotations

try:
    import gevent
    import gevent.event
    import gevent.socket
    import gevent.ssl
except ImportError as missing:  # pragma: no cover - depends on the environment
    raise ImportError(
        "faktory_adapters.gevent needs gevent: pip install 'faktory-sansio[gevent]'"
    ) from missing

import socket
import ssl
import time
from typing import Any, Final

import faktory_core as core

from . import _net_thread
from ._common import NoLock, remaining
from ._common import connect_socket as _connect_socket
from ._net_thread import LoopBinding  # a gevent hub is no asyncio loop: nothing to bind

__all__ = [
    "Lock",
    "LoopBinding",
    "Stream",
    "Waker",
    "clock",
    "connect",
    "connect_socket",
]

clock: Final = time.monotonic
#: Nothing to lock: a greenlet runs until it waits, and the Client never waits holding it.
Lock: Final = NoLock


class Waker:
    """A greenlet waiting for another to wake it: a gevent Event."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = gevent.event.Event()

    def wait(self, deadline: float | None) -> bool:
        if deadline is None:
            return bool(self._event.wait())
        return bool(self._event.wait(max(0.0, deadline - clock())))

    def wake(self) -> None:
        self._event.set()


def connect(url: core.ServerURL, ssl_context: ssl.SSLContext | None, deadline: float) -> Stream:
    sock = connect_socket(url, timeout=remaining(deadline), ssl_context=ssl_context)
    return _TLSStream(sock) if url.tls else Stream(sock)


def connect_socket(url: core.ServerURL, *, timeout: float, ssl_context: Any) -> socket.socket:
    """A gevent socket connected to the server (wrapped in TLS for ``tcp+tls://``), the TCP
    connect and the TLS handshake bounded together by ``timeout``, which is left as the
    socket's timeout."""
    error = TimeoutError(f"connecting to {url} took more than {timeout:g} s")
    with gevent.Timeout(timeout, error):
        return _connect_socket(
            url,
            timeout=timeout,
            ssl_context=ssl_context,
            create_connection=gevent.socket.create_connection,
            wrap_tls=_wrap_tls,
        )


def _wrap_tls(context: ssl.SSLContext, sock: socket.socket, host: str) -> socket.socket:
    # gevent's SSLSocket wraps a stdlib context too; SSLContext.wrap_socket would build the
    # stdlib SSLSocket, which refuses to be constructed.
    wrapped: socket.socket = gevent.ssl.SSLSocket(sock=sock, server_hostname=host, _context=context)
    return wrapped


class Stream(_net_thread.Stream):
    """One connection: a gevent socket, which waits cooperatively."""

    def write(self, data: bytes, deadline: float) -> None:
        # One send() takes a command, as a rule: gevent's sendall() asks the socket for its
        # buffer size first, a system call of its own every time.
        sock = self._sock
        sock.settimeout(remaining(deadline))
        sent = sock.send(data)
        if sent < len(data):
            sock.sendall(memoryview(data)[sent:])

    def interrupt(self) -> None:
        # gevent wakes a greenlet waiting on a socket that is closed, with an OSError: no
        # descriptor can be reused under it.
        self._sock.close()


class _TLSStream(Stream):
    """One connection over TLS: a gevent SSLSocket, each call under a gevent.Timeout."""

    def write(self, data: bytes, deadline: float) -> None:
        left = remaining(deadline)
        self._sock.settimeout(left)
        with gevent.Timeout(left, TimeoutError):
            self._sock.sendall(data)

    def read(self, deadline: float) -> bytes:
        left = remaining(deadline)
        self._sock.settimeout(left)
        with gevent.Timeout(left, TimeoutError):
            return self._sock.recv(65536)
