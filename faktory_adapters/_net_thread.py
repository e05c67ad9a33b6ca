"""The thread Client's network backend: blocking sockets (the interface: ``_net_asyncio``)."""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
from typing import Final

import faktory_core as core

from ._common import connect_socket, remaining

__all__ = ["Lock", "LoopBinding", "Stream", "Waker", "clock", "connect"]

clock: Final = time.monotonic
Lock: Final = threading.Lock

_allocate_lock: Final = threading.Lock
_READ: Final = select.POLLIN
_WRITE: Final = select.POLLOUT


class Waker:
    """A call waiting for another thread to wake it: a lock held until ``wake()`` releases it."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = _allocate_lock()
        self._lock.acquire()

    def wait(self, deadline: float | None) -> bool:
        if deadline is None:
            return self._lock.acquire()
        left = deadline - clock()
        return self._lock.acquire(True, left) if left > 0 else self._lock.acquire(False)

    def wake(self) -> None:
        self._lock.release()


class LoopBinding:
    """Threads have no event loop to belong to (the interface: ``_net_asyncio``)."""

    def claim(self) -> bool:
        return False


def connect(url: core.ServerURL, ssl_context: ssl.SSLContext | None, deadline: float) -> Stream:
    sock = connect_socket(url, timeout=remaining(deadline), ssl_context=ssl_context)
    return Stream(sock) if url.tls else _PlainStream(sock)


def _milliseconds(deadline: float) -> int:
    """What poll() may wait until ``deadline``, rounded up (TimeoutError if nothing is left)."""
    return int(remaining(deadline) * 1000) + 1


class Stream:
    """One connection: a socket whose timeout is set before each write and read to what is
    left until the deadline. A socket's own timeout bounds one call, and a server sending a
    byte at a time never trips it. (The standard library's TLS counts it for a whole call
    too.) The thread Client's TLS connections, and every gevent one, are of this kind."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._pending = getattr(sock, "pending", None)  # TLS: decrypted, not yet read by us
        self._poller = select.poll()
        self._poller.register(sock, _READ)

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

    def interrupt(self) -> None:
        # A read waiting in another thread wakes with the end of the stream; the socket stays
        # open (its descriptor cannot be reused under that read) until the reader aborts it.
        # The plain socket's shutdown: TLS's own would drop its state under the read.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self._sock, socket.SHUT_RDWR)

    def abort(self) -> None:
        self.interrupt()
        self._sock.close()


class _PlainStream(Stream):
    """A plain TCP connection: a non-blocking socket, and poll() for the deadline. Setting a
    socket's timeout is a system call of its own each time (and the timeout makes every
    call poll first): here a write is one send() and a read one poll() and one recv()."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        sock.setblocking(False)

    def write(self, data: bytes, deadline: float) -> None:
        sock = self._sock
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return
        view = memoryview(data)
        waiter = select.poll()
        waiter.register(sock, _WRITE)
        while sent < len(data):  # the socket's buffer is full: wait for room
            if waiter.poll(_milliseconds(deadline)):
                with contextlib.suppress(BlockingIOError):
                    sent += sock.send(view[sent:])
            elif clock() >= deadline:
                raise TimeoutError("the deadline has passed")

    def read(self, deadline: float) -> bytes:
        poll = self._poller.poll
        while True:
            left = deadline - clock()
            if left <= 0:
                raise TimeoutError("the deadline has passed")
            if poll(int(left * 1000) + 1):  # milliseconds, rounded up
                try:
                    return self._sock.recv(65536)
                except BlockingIOError:
                    continue  # a spurious wake-up

    def readable(self) -> bool:
        return bool(self._poller.poll(0))
