"""The thread Client's network backend: blocking sockets (the interface: ``_net_asyncio``)."""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from typing import Final

import faktory_core as core

from ._common import connect_socket, remaining

__all__ = ["LoopBinding", "Stream", "clock", "connect", "semaphore"]

clock: Final = time.monotonic


def semaphore(size: int) -> threading.BoundedSemaphore:
    return threading.BoundedSemaphore(size)


class LoopBinding:
    """Threads have no event loop to belong to (the interface: ``_net_asyncio``)."""

    def claim(self) -> bool:
        return False


def connect(url: core.ServerURL, ssl_context: ssl.SSLContext | None, deadline: float) -> Stream:
    return Stream(connect_socket(url, timeout=remaining(deadline), ssl_context=ssl_context))


class Stream:
    """One connection: a blocking socket. Each write and read may take only what is left
    until the deadline: a socket's own timeout bounds one call, and a server sending a byte
    at a time never trips it. (The standard library's TLS counts it for a whole call too.)"""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._pending = getattr(sock, "pending", None)  # TLS: decrypted, not yet read by us
        self._poller = select.poll()
        self._poller.register(sock, select.POLLIN)

    def write(self, data: bytes, deadline: float) -> None:
        sock = self._sock
        sock.settimeout(remaining(deadline))
        sock.sendall(data)

    def read(self, deadline: float) -> bytes:
        sock = self._sock
        sock.settimeout(remaining(deadline))
        return sock.recv(65536)

    def readable(self) -> bool:
        # What TLS decrypted already, or what the socket shows: bytes, an end of file or a
        # reset. A zero timeout never blocks.
        pending = self._pending
        return bool((pending is not None and pending()) or self._poller.poll(0))

    def close(self) -> None:
        self._sock.close()

    def abort(self) -> None:
        self._sock.close()
