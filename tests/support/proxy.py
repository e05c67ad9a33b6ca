"""A loopback TCP proxy that cuts connections, to put a worker's reconnects to the test.

:class:`FaultProxy` listens on a free loopback port and relays every connection it accepts to
the target (a real Faktory server). With random cuts on, each connection is given a plan when
it is accepted: it is cut after a random number of bytes (both directions together; the last
chunk is cut short, so a command or a reply arrives half-written) or after a random time,
whichever comes first. A cut closes both sides, half of them with a reset (RST) and half with
a plain close (FIN). A share of the faults (``stall_share``) are stalls instead: the connection
stays open, but whatever it carries from then on is lost, both ways, until a side closes it.
:meth:`FaultProxy.cut_all` cuts every open connection at once. The plans are drawn from a
generator seeded with ``seed``, in the order connections are accepted, so a run replays its
plans as far as the timing of the peers allows.

Two faults no real server shows on demand: with ``trickle`` (seconds), every byte the server
sends is delivered alone, that long after the one before (a server that answers, but slowly);
:meth:`FaultProxy.inject` hands every client bytes the server never sent (an unsolicited
``-ERR``), at once or glued to the next bytes the server sends (after them, or ahead of them:
garbage, or a reply of the wrong kind, where a client waits for the server's reply).

A test that must act at a given point of a conversation waits for it with
:meth:`FaultProxy.wait_for` on the byte counters (:attr:`FaultProxy.bytes_to_clients`,
:attr:`FaultProxy.bytes_to_target`), rather than guessing how long it takes.

One thread moves every byte (a selector, non-blocking sockets); :meth:`FaultProxy.close`
stops it and closes everything. Standard library only::

    with FaultProxy("127.0.0.1", server.port, seed=7, mean_bytes=4000) as proxy:
        run_worker(f"tcp://127.0.0.1:{proxy.port}")
        print(proxy.faults)
"""

from __future__ import annotations

import contextlib
import math
import random
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Self

__all__ = ["FaultProxy"]

_HOST = "127.0.0.1"
_CHUNK = 65536
_CONNECT_TIMEOUT = 2.0


class _Pipe:
    """One accepted connection and its connection to the target."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.pending = {client: bytearray(), server: bytearray()}  # bytes to write to each
        self.masks = {client: 0, server: 0}  # the events each is registered for (0: none)
        self.budget: int | None = None  # bytes left before the cut
        self.cut_at: float | None = None  # monotonic time of the cut
        self.reset = False  # cut with RST rather than FIN
        self.stall = False  # the fault is a stall rather than a cut
        self.stalled = False  # the stall has begun: whatever comes is dropped
        self.held = bytearray()  # server bytes trickling to the client, one at a time
        self.next_byte_at = 0.0  # monotonic time the next held byte may go
        self.glued = bytearray()  # injected bytes to send after the server's next bytes
        self.glued_ahead = bytearray()  # injected bytes to send ahead of the server's next bytes

    def other(self, sock: socket.socket) -> socket.socket:
        return self.server if sock is self.client else self.client


class FaultProxy:
    """Relays loopback connections to ``target_host:target_port``, cutting them at random.

    ``mean_bytes`` and ``mean_seconds`` set the random cuts: each connection is cut after an
    exponentially distributed number of bytes or seconds with that mean (None: never). Change
    them while running with :meth:`set_faults`; ``stall_share`` of those faults are stalls.
    ``trickle``: deliver what the server sends one byte at a time, that many seconds apart
    (None: as it comes); change it with :meth:`set_trickle`.
    The counters: :attr:`connections` accepted, :attr:`random_cuts`, :attr:`stalls`,
    :attr:`forced_cuts` (by :meth:`cut_all`), :attr:`refused` (the target was down, so the
    connection was closed at once); :attr:`faults` is the sum of the cuts and stalls.
    :attr:`bytes_to_clients` and :attr:`bytes_to_target`: the bytes written so far to the
    clients and to the target (every connection together; injected bytes count, bytes held
    back by the trickle only once they go); :meth:`wait_for` waits for a condition on them.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        seed: int = 0,
        mean_bytes: float | None = None,
        mean_seconds: float | None = None,
        stall_share: float = 0.0,
        trickle: float | None = None,
    ) -> None:
        self.target = (target_host, target_port)
        self._trickle = trickle
        self._random = random.Random(seed)
        self._mean_bytes = mean_bytes
        self._mean_seconds = mean_seconds
        self._stall_share = stall_share
        self.connections = 0
        self.random_cuts = 0
        self.stalls = 0
        self.forced_cuts = 0
        self.refused = 0
        self.bytes_to_clients = 0
        self.bytes_to_target = 0
        self._turned = threading.Condition()  # notified after every turn of the relay thread
        self._pipes: dict[socket.socket, _Pipe] = {}  # by either of its sockets
        self._requests: deque[tuple[Callable[[], object], list[object], threading.Event]] = deque()
        self._selector = selectors.DefaultSelector()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((_HOST, 0))
        self._listener.listen(128)
        self._listener.setblocking(False)
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_reader, selectors.EVENT_READ)
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        """The loopback port to connect to instead of the target's."""
        port: int = self._listener.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """``tcp://127.0.0.1:<port>``: a Faktory URL through the proxy (no password)."""
        return f"tcp://{_HOST}:{self.port}"

    @property
    def faults(self) -> int:
        """Every fault injected so far: cuts, random or forced, and stalls."""
        return self.random_cuts + self.stalls + self.forced_cuts

    @property
    def open_connections(self) -> int:
        """How many connections are relayed right now."""
        return self._call(lambda: len(self._pipes) // 2)  # type: ignore[no-any-return]

    @property
    def faults_on(self) -> bool:
        """Whether random cuts are on."""
        return self._mean_bytes is not None or self._mean_seconds is not None

    def set_faults(self, *, mean_bytes: float | None, mean_seconds: float | None) -> None:
        """Change the random cuts; open connections get a new plan, from now."""

        def change() -> None:
            self._mean_bytes, self._mean_seconds = mean_bytes, mean_seconds
            for pipe in self._each_pipe():
                self._plan(pipe)

        self._call(change)

    def set_trickle(self, seconds: float | None) -> None:
        """Trickle the server's bytes ``seconds`` apart from now on, open connections too
        (None: stop; bytes held back go at once)."""

        def change() -> None:
            self._trickle = seconds
            for pipe in self._each_pipe():
                if seconds is None and pipe.held:
                    pipe.pending[pipe.client] += pipe.held
                    pipe.held.clear()
                    self._flush(pipe, pipe.client)

        self._call(change)

    def inject(self, data: bytes, *, glued: bool = False, ahead: bool = False) -> int:
        """Send ``data`` to the client of every open connection as if the server had sent it;
        return how many connections got it.

        ``glued``: not now, but right after the next bytes the server sends on each connection,
        in the same write (so a client reads them together with a reply).
        ``ahead`` (with ``glued``): in front of those bytes instead, still in the same write (so
        a client waiting for a reply reads ``data`` in its place, and the real reply after it).
        """
        if ahead and not glued:
            raise ValueError("inject(ahead=True) needs glued=True")

        def send() -> int:
            pipes = self._each_pipe()
            for pipe in pipes:
                if ahead:
                    pipe.glued_ahead += data
                elif glued:
                    pipe.glued += data
                else:
                    pipe.pending[pipe.client] += data
                    self._flush(pipe, pipe.client)
            return len(pipes)

        return self._call(send)  # type: ignore[no-any-return]

    def cut_all(self, *, reset: bool | None = None) -> int:
        """Cut every open connection now; return how many were cut.

        ``reset``: True cuts with RST, False with FIN, None as each connection's plan says.
        """

        def cut() -> int:
            pipes = list(self._each_pipe())
            for pipe in pipes:
                if reset is not None:
                    pipe.reset = reset
                self._cut(pipe)
            self.forced_cuts += len(pipes)
            return len(pipes)

        return self._call(cut)  # type: ignore[no-any-return]

    def wait_for(self, condition: Callable[[], object], timeout: float) -> bool:
        """Wait until ``condition()`` is true, for at most ``timeout`` seconds; return whether
        it came true.

        It is checked at once, then after every turn of the relay thread (where the counters
        change), so a test can act the moment the proxy has relayed something, e.g. a few bytes
        of a reply: ``proxy.wait_for(lambda: proxy.bytes_to_clients >= before + 8, 10)``. The
        condition runs on the caller's thread, while the relay thread may be mid-turn: read
        counters in it, not the connections.
        """
        with self._turned:
            return bool(self._turned.wait_for(condition, timeout))

    def close(self) -> None:
        """Stop relaying, close every connection and the listener. Idempotent."""
        if self._thread.is_alive():
            self._call(lambda: setattr(self, "_closing", True))
            self._thread.join(10)
        for sock in (self._listener, self._wake_reader, self._wake_writer):
            sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- the relay thread ---------------------------------------------------------------------

    def _call(self, request: Callable[[], object]) -> object:
        """Run ``request`` on the relay thread, between two turns; return its result."""
        done = threading.Event()
        result: list[object] = []
        self._requests.append((request, result, done))
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"\0")
        if not done.wait(10):
            raise RuntimeError("the proxy thread did not answer within 10 s")
        return result[0] if result else None

    def _run(self) -> None:
        try:
            while not self._closing:
                self._turn()
                with self._turned:
                    self._turned.notify_all()
        finally:
            for pipe in list(self._each_pipe()):
                self._drop(pipe)
            self._selector.close()
            while self._requests:  # nobody waits for ever on a dead proxy
                self._requests.popleft()[2].set()

    def _turn(self) -> None:
        pipes = self._each_pipe()
        timers = [pipe.cut_at for pipe in pipes if pipe.cut_at is not None]
        timers += [pipe.next_byte_at for pipe in pipes if pipe.held]
        timeout = max(0.0, min(timers) - time.monotonic()) if timers else None
        for key, mask in self._selector.select(timeout):
            sock = key.fileobj
            if sock is self._listener:
                self._accept()
            elif sock is self._wake_reader:
                with contextlib.suppress(OSError):
                    self._wake_reader.recv(4096)
            else:
                assert isinstance(sock, socket.socket)
                pipe = self._pipes.get(sock)
                if pipe is None:
                    continue  # cut earlier in this turn
                if mask & selectors.EVENT_WRITE:
                    self._flush(pipe, sock)
                if mask & selectors.EVENT_READ and sock in self._pipes:
                    self._relay(pipe, sock)
        now = time.monotonic()
        for pipe in list(self._each_pipe()):
            if pipe.cut_at is not None and now >= pipe.cut_at:
                self._fault(pipe)
            elif pipe.held and now >= pipe.next_byte_at:
                self._release(pipe, now)
        while self._requests:
            request, result, done = self._requests.popleft()
            result.append(request())
            done.set()

    def _each_pipe(self) -> list[_Pipe]:
        return [pipe for sock, pipe in self._pipes.items() if sock is pipe.client]

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        self.connections += 1
        try:
            server = socket.create_connection(self.target, timeout=_CONNECT_TIMEOUT)
        except OSError:  # the target is down (restarting): the client sees a closed socket
            self.refused += 1
            client.close()
            return
        for sock in (client, server):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pipe = _Pipe(client, server)
        self._plan(pipe)
        for sock in (client, server):
            self._pipes[sock] = pipe
        self._watch(pipe)

    def _plan(self, pipe: _Pipe) -> None:
        """Draw when and how ``pipe`` fails (always three draws, so plans follow the seed)."""
        draw_bytes = self._random.random()
        draw_seconds = self._random.random()
        draw_kind = self._random.random()
        pipe.stall = draw_kind < self._stall_share
        pipe.reset = not pipe.stall and draw_kind < (1 + self._stall_share) / 2
        pipe.budget = pipe.cut_at = None
        if pipe.stalled:
            return
        if self._mean_bytes is not None:
            pipe.budget = 1 + int(-self._mean_bytes * _log1m(draw_bytes))
        if self._mean_seconds is not None:
            pipe.cut_at = time.monotonic() - self._mean_seconds * _log1m(draw_seconds)

    def _relay(self, pipe: _Pipe, sock: socket.socket) -> None:
        try:
            data = sock.recv(_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # one side closed: pass on what is left, then close the other
            self._flush(pipe, pipe.other(sock))
            self._drop(pipe)
            return
        if pipe.stalled:
            return  # lost on the way
        cut = pipe.budget is not None and len(data) >= pipe.budget
        if pipe.budget is not None:
            if cut:
                data = data[: pipe.budget]
            pipe.budget -= len(data)
        target = pipe.other(sock)
        if target is pipe.client and (pipe.glued or pipe.glued_ahead):
            data = bytes(pipe.glued_ahead) + data + bytes(pipe.glued)
            pipe.glued_ahead.clear()
            pipe.glued.clear()
        if target is pipe.client and self._trickle is not None:
            pipe.held += data  # the turns release it, a byte at a time
        else:
            pipe.pending[target] += data
            self._flush(pipe, target)
        if cut:
            self._fault(pipe)
        elif target in self._pipes:
            self._watch(pipe)

    def _flush(self, pipe: _Pipe, sock: socket.socket) -> None:
        pending = pipe.pending[sock]
        if pending:
            try:
                sent = sock.send(pending)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._drop(pipe)
                return
            del pending[:sent]
            if sock is pipe.client:
                self.bytes_to_clients += sent
            else:
                self.bytes_to_target += sent
        if sock in self._pipes:
            self._watch(pipe)

    def _release(self, pipe: _Pipe, now: float) -> None:
        """Send the client the next byte held back by the trickle."""
        pipe.pending[pipe.client] += pipe.held[:1]
        del pipe.held[:1]
        pipe.next_byte_at = now + (self._trickle or 0.0)
        self._flush(pipe, pipe.client)

    def _watch(self, pipe: _Pipe) -> None:
        """Read a side only while the other has nothing pending (nor held back by the
        trickle: so the server's close waits for it too); watch writes while pending."""
        for sock in (pipe.client, pipe.server):
            mask = selectors.EVENT_WRITE if pipe.pending[sock] else 0
            if not pipe.pending[pipe.other(sock)] and not (sock is pipe.server and pipe.held):
                mask |= selectors.EVENT_READ
            registered = pipe.masks[sock]
            if mask == registered:
                continue
            if not registered:
                self._selector.register(sock, mask)
            elif mask:
                self._selector.modify(sock, mask)
            else:
                self._selector.unregister(sock)
            pipe.masks[sock] = mask

    def _fault(self, pipe: _Pipe) -> None:
        """The random fault planned for ``pipe`` is due: cut it, or stall it."""
        if not pipe.stall:
            self.random_cuts += 1
            self._cut(pipe)
            return
        self.stalls += 1
        pipe.stalled = True
        pipe.budget = pipe.cut_at = None
        for pending in pipe.pending.values():
            pending.clear()
        pipe.held.clear()
        self._watch(pipe)

    def _cut(self, pipe: _Pipe) -> None:
        if pipe.reset:
            for sock in (pipe.client, pipe.server):
                with contextlib.suppress(OSError):  # SO_LINGER 0: close sends RST
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._drop(pipe)

    def _drop(self, pipe: _Pipe) -> None:
        for sock in (pipe.client, pipe.server):
            self._pipes.pop(sock, None)
            if pipe.masks[sock]:
                self._selector.unregister(sock)
                pipe.masks[sock] = 0
            sock.close()


def _log1m(value: float) -> float:
    """ln(1 - value) for value in [0, 1): an exponential draw is -mean * ln(1 - u)."""
    return math.log1p(-value)
