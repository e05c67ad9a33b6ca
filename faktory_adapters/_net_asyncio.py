"""The asyncio Client's network backend: connections as asyncio protocols.

Every Client backend (this one, ``_net_thread`` and ``_net_gevent``) offers the same names, so
that ``scripts/unasync.py`` can turn the asyncio Client into the blocking ones by changing the
import line alone:

- ``clock()``: monotonic seconds; every deadline below is in them.
- ``Lock()``: guards the pool's shared state for the length of a few statements that never
  wait (``with``): a thread lock in the thread backend; nothing at all here and with gevent,
  where no other task or greenlet can run in between.
- ``Waker()``: how a call waits for another to hand it its reply (or the job of reading):
  ``wait(deadline)`` returns True once ``wake()`` was called, before or after, and False when
  ``deadline`` (None: none) passes first; ``wake()`` is called once.
- ``connect(url, ssl_context, deadline)``: a :class:`Stream` to the server, its TCP connect
  and, for a ``tcp+tls://`` URL, its TLS handshake with ``ssl_context`` done before
  ``deadline``; TimeoutError past it.
- ``Stream.write(data, deadline)`` and ``Stream.read(deadline)`` (``b""`` at the end of the
  stream): TimeoutError when ``deadline`` passes first, so one deadline bounds a whole command
  however its reply is cut up.
- ``Stream.readable()``: whether anything arrived that nobody read (bytes, the end of the
  stream, a reset), without blocking: a pooled connection showing either is not reused.
- ``Stream.close()`` (politely: what was written is sent first), ``Stream.abort()``, and
  ``Stream.interrupt()``: ends the connection so that a read waiting on it (another task's,
  thread's or greenlet's) returns now; whoever reads it then aborts it.
- ``LoopBinding()``: the event loop a Client's connections belong to. ``claim()`` at each use
  returns True when the connections made so far are dead (their loop has closed: the Client
  drops them and starts afresh), and raises WrongEventLoopError when they belong to another
  loop that is still open. The blocking runtimes have no loop: theirs always returns False.

Here the stream is an asyncio protocol rather than a StreamReader: it knows exactly
whether anything arrived while nobody was waiting, and costs less per call (no task, one
future per read that must wait, and one timer re-armed only when a deadline passes).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from typing import Final

import faktory_core as core

from ._common import NoLock, WrongEventLoopError, explain_tls_error, remaining

__all__ = ["Lock", "LoopBinding", "Stream", "Waker", "clock", "connect"]

clock: Final = time.monotonic
_READ_SIZE: Final = 65536


#: Nothing to lock: one task runs at a time, and the Client never awaits while holding it.
Lock: Final = NoLock


def _expire(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(False)


class Waker:
    """A call waiting for another to wake it: a future of the running loop."""

    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    async def wait(self, deadline: float | None) -> bool:
        future = self._future
        if deadline is None or future.done():
            return await future  # a cancellation of the waiting task cancels the future too
        timer = future.get_loop().call_later(max(0.0, deadline - clock()), _expire, future)
        try:
            return await future
        finally:
            timer.cancel()

    def wake(self) -> None:
        if not self._future.done():
            self._future.set_result(True)


async def connect(
    url: core.ServerURL, ssl_context: ssl.SSLContext | None, deadline: float
) -> Stream:
    async with asyncio.timeout(remaining(deadline)):
        try:
            _, stream = await asyncio.get_running_loop().create_connection(
                Stream,
                url.host,
                url.port,
                ssl=ssl_context if url.tls else None,
                server_hostname=url.host if url.tls else None,
            )
        except ssl.SSLError as error:
            explain_tls_error(error, url)
            raise
    return stream


class LoopBinding:
    """The event loop a Client's connections belong to: the one it was first used on, until
    that loop closes."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    def claim(self) -> bool:
        """Bind to the running loop; True when the connections made so far belong to a loop
        that has closed (they are dead: start afresh). WrongEventLoopError when they belong to
        another loop that is still open."""
        loop = asyncio.get_running_loop()
        bound = self._loop
        if loop is bound:
            return False
        if bound is not None and not bound.is_closed():
            raise WrongEventLoopError(
                "this asyncio Client is used on an event loop other than the one it was first "
                "used on, which is still open: its connections belong to that loop. Make one "
                "Client per event loop (in main(), or in the async fixture, with `async with "
                "Client() as client`), or close that loop before using the Client on this one"
            )
        self._loop = loop
        return bound is not None


class Stream(asyncio.BufferedProtocol):
    """One connection: a transport, and what it received that nobody has read yet.

    A buffered protocol: the transport reads into one buffer of ours, where a plain protocol
    gets a fresh bytes object of 256 KiB per read (allocated, shrunk and freed each time).
    """

    def __init__(self) -> None:
        self._buffer = memoryview(bytearray(_READ_SIZE))
        self._transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the transport's
        self._received: list[bytes] = []  # arrived, not yet read
        self._closed = False  # the server closed the connection, or it broke
        self._waiter: asyncio.Future[bool] | None = None  # a reader: True woken, False expired
        self._deadline = 0.0  # the waiting read's
        # One timer at a time, armed for the first deadline a read waited for: a read that
        # ends first leaves it armed, and when it fires it re-arms itself for the deadline of
        # the read waiting then, if that one is later. So reads that end in time (all of them,
        # as a rule) cost no timer of their own.
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def write(self, data: bytes, deadline: float) -> None:
        """Hand ``data`` to the transport, which sends it as the socket takes it: it never
        waits, so the deadline of the read that follows bounds the write too."""
        assert self._transport is not None  # connected before anything is written
        self._transport.write(data)

    async def read(self, deadline: float) -> bytes:
        if not self._received and not self._closed:
            loop = self._loop
            assert loop is not None  # connected before anything is read
            if deadline <= clock():
                raise TimeoutError("the deadline has passed")
            waiter = self._waiter = loop.create_future()
            self._deadline = deadline
            if self._timer is None or self._timer_at > deadline:
                self._arm(loop, deadline)
            try:
                woken = await waiter
            finally:
                self._waiter = None
            if not woken:
                raise TimeoutError("the deadline has passed")
        received = self._received
        if not received:  # woken by the close alone
            return b""
        self._received = []
        return received[0] if len(received) == 1 else b"".join(received)

    def _arm(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_later(max(0.0, deadline - clock()), self._on_timer)
        self._timer_at = deadline

    def _on_timer(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # no read waits: the next one arms it again
        if clock() >= self._deadline:
            waiter.set_result(False)
        elif self._loop is not None:
            self._arm(self._loop, self._deadline)

    def readable(self) -> bool:
        return bool(self._received) or self._closed

    def close(self) -> None:
        self._disarm()
        if self._transport is not None:
            self._transport.close()

    def interrupt(self) -> None:
        self.abort()  # the waiting read wakes with the end of the stream

    def abort(self) -> None:
        self._disarm()
        transport = self._transport
        if transport is None:
            return
        if self._loop is not None and self._loop.is_closed():
            # A closed loop can no longer close its transports: shut the socket down, so that
            # the server sees the connection end now (the socket is closed with the transport).
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            return
        transport.abort()

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._loop = asyncio.get_running_loop()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._received.append(bytes(self._buffer[:nbytes]))
        self._wake()

    def eof_received(self) -> None:
        self._closed = True
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(True)
