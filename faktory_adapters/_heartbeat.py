"""The heartbeat on an OS thread of its own, with a blocking socket: every adapter uses it.

A runtime kept busy by its jobs (a coroutine that blocks the event loop, a greenlet that never
yields) must not starve the BEATs, or the server reaps a live worker. So the heartbeat machine
runs here, on a daemon thread that owns its socket and its clock, and talks to the adapter only
through thread-safe calls: :meth:`HeartbeatThread.report_phase` and :meth:`finish` in, the
``on_server_state`` callback out. Health checks :meth:`~HeartbeatThread.ping` it, to see that
its loop still turns.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from faktory_core import Heartbeat, MachineInput, Phase, ServerURL, WorkerConfig
from faktory_core.commands import WorkerState
from faktory_core.machine_io import (
    Close,
    Connect,
    ConnectionLost,
    ConnectionMade,
    DataReceived,
    Finish,
    MemoryUsage,
    Notice,
    PhaseReported,
    ServerStateChanged,
    Start,
    TimerFired,
    Write,
)

from ._common import MAX_SELECT_WAIT, connect_failed, connect_socket, logger, receive, rss_kb

__all__ = ["HeartbeatThread"]

_log = logger.getChild("heartbeat")


class HeartbeatThread:
    """Drives a :class:`faktory_core.Heartbeat` from a daemon thread."""

    def __init__(
        self,
        config: WorkerConfig,
        url: ServerURL,
        *,
        on_server_state: Callable[[WorkerState], None],
        random: Callable[[], float],
        ssl_context: Any = None,
        connect_timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._machine = Heartbeat(config, random=random)
        self._url = url
        self._ssl_context = ssl_context
        self._connect_timeout = connect_timeout
        self._on_server_state = on_server_state
        self._clock = clock
        self._inbox: deque[MachineInput] = deque()  # appends and pops are thread-safe
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        # Posts come from the worker's loop: a full buffer must never block it (it already
        # holds a pending wake-up).
        self._wake_writer.setblocking(False)
        self._sock: socket.socket | None = None
        self._done = threading.Event()
        #: Health pings (:meth:`ping`) sent, and those the thread had seen when it last turned.
        self.pings = 0
        self.pings_answered = 0
        self._thread = threading.Thread(target=self._run, name="faktory-heartbeat", daemon=True)

    def start(self) -> None:
        """Connect and beat until :meth:`finish`."""
        self._post(Start())
        self._thread.start()

    def report_phase(self, phase: Phase) -> None:
        """Tell the heartbeat the worker's phase (it becomes BEAT ``current_state``)."""
        self._post(PhaseReported(phase=phase))

    def finish(self, timeout: float) -> bool:
        """Send END and stop the thread; wait at most ``timeout`` s. True if it finished."""
        if not self._thread.is_alive() and not self._done.is_set():  # never started
            self._done.set()
        self._post(Finish())
        finished = self._done.wait(timeout)
        if finished:
            self._wake_reader.close()
            self._wake_writer.close()
        return finished

    def ping(self) -> None:
        """From one thread at a time (the health checks'): ask the thread to show that it
        turns. It answers on its next turn, when :attr:`pings_answered` catches up with
        :attr:`pings`; only a connect or a write may hold it, each up to the connect
        timeout."""
        self.pings += 1
        with contextlib.suppress(OSError):  # as in _post
            self._wake_writer.send(b"\0")

    @property
    def stopped(self) -> bool:
        """True once the thread has ended: after :meth:`finish`, or a failure (logged)."""
        return self._done.is_set()

    def _post(self, event: MachineInput) -> None:
        self._inbox.append(event)
        # OSError: the buffer is full of wake-ups already, or we are closed.
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"\0")

    def _run(self) -> None:
        try:
            machine = self._machine
            while not machine.finished:
                self.pings_answered = self.pings
                while self._inbox:
                    self._handle(self._inbox.popleft())
                if machine.finished:
                    break
                deadline = machine.next_deadline
                timeout = None if deadline is None else max(0.0, deadline - self._clock())
                self._wait(None if timeout is None else min(timeout, MAX_SELECT_WAIT))
                if deadline is not None and self._clock() >= deadline:
                    rss = rss_kb()
                    if rss is not None:
                        self._handle(MemoryUsage(rss_kb=rss))
                    self._handle(TimerFired())
        except Exception:  # a bug here must not pass silently, nor hang finish()
            _log.exception("the heartbeat thread failed")
        finally:
            self._close()
            self._done.set()

    def _wait(self, timeout: float | None) -> None:
        sock = self._sock
        readers: list[Any] = [self._wake_reader] if sock is None else [self._wake_reader, sock]
        ready, _, _ = select.select(readers, [], [], timeout)
        if self._wake_reader in ready:
            with contextlib.suppress(OSError):
                self._wake_reader.recv(4096)
        if sock is not None and sock in ready:
            self._receive(sock)

    def _receive(self, sock: socket.socket) -> None:
        try:
            data = receive(sock)
        except OSError as error:
            self._lost(error)
            return
        self._inbox.append(DataReceived(link=0, data=data))

    def _handle(self, event: MachineInput) -> None:
        for action in self._machine.handle(event, self._clock()):
            match action:
                case Write(data=data):
                    self._write(data)
                case Connect():
                    self._connect()
                case Close():
                    self._close()
                case ServerStateChanged(state=state):
                    _log.info("the server asks this worker to %s", state.value)
                    self._on_server_state(state)
                case Notice(message=message, level=level):
                    _log.log(level, "heartbeat: %s", message)

    def _connect(self) -> None:
        self._close()
        try:
            sock = connect_socket(
                self._url, timeout=self._connect_timeout, ssl_context=self._ssl_context
            )
        except Exception as error:  # whatever it is, the machine retries with backoff
            self._inbox.append(connect_failed(0, self._url, error, timeout=self._connect_timeout))
            return
        self._sock = sock
        self._inbox.append(ConnectionMade(link=0))

    def _write(self, data: bytes) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sock.sendall(data)
        except OSError as error:
            self._lost(error)

    def _lost(self, error: OSError) -> None:
        # Closed at once: a broken socket stays readable, and select() would return at once
        # for it over and over while the machine waits out its reconnect backoff.
        self._close()
        self._inbox.append(ConnectionLost(link=0, reason=str(error)))

    def _close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
