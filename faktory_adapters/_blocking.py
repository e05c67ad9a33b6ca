"""What the thread and gevent adapters share: a selector loop that moves the job links'
bytes, the blocking Worker's methods, and the way a job runs in a thread or a greenlet.

Each of the two supplies only what differs: its selector, how it spawns a connect, how it
connects a socket, and how a job is started, interrupted and inspected.
"""

from __future__ import annotations

import abc
import contextlib
import selectors
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import faktory_core as core
from faktory_core import Job
from faktory_core.machine_io import (
    ConnectionLost,
    ConnectionMade,
    DataReceived,
    JobError,
    TimerFired,
)

from . import _logging
from ._common import MAX_SELECT_WAIT, JobAborted, connect_failed, receive
from ._driver import AbortSignalBase, Driver, Handler, JobContextBase, log
from ._jobs import check_result
from ._worker_base import WorkerBase

__all__ = ["BlockingWorker", "EventAbortSignal", "SelectorRuntime", "perform"]


class EventAbortSignal(AbortSignalBase):
    """Set when the worker aborts the job: a flag, a reason, and a ``wait(timeout)``."""

    __slots__ = ("_event",)

    #: The runtime's event class (``threading.Event``, ``gevent.event.Event``).
    _new_event: Callable[[], Any]

    def __init__(self) -> None:
        super().__init__()
        self._event = type(self)._new_event()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` s (None: for ever) for the abort; True if it came."""
        self._event.wait(timeout)
        return self._reason is not None

    def wait_blocking(self, timeout: float | None = None) -> bool:
        """The same as :meth:`wait` (named as in the asyncio adapter)."""
        return self.wait(timeout)

    def _wake(self) -> None:
        self._event.set()


def perform(driver: Driver, context: Any, handler: Handler) -> JobError | None:
    """Run a job through the middleware on this thread or greenlet; its report (None: ACK)."""
    token = _logging.CURRENT.set(context)
    job: Job = context.job
    try:
        driver.chain(context, lambda: check_result(job.jobtype, handler(*job.args)))()
    except JobAborted:
        return None  # the job was FAILed when it was aborted (and logged)
    except BaseException as error:  # a job's failure, whatever it raised
        return driver.failed(context, error)
    else:
        driver.succeeded(context)
        return None
    finally:
        _logging.CURRENT.reset(token)


class SelectorRuntime(abc.ABC):
    """A blocking runtime's loop: the caller's thread (or greenlet) selects over the job links
    and a wake-up socket, and feeds the driver."""

    def __init__(self, worker: BlockingWorker, config: core.WorkerConfig) -> None:
        self.worker = worker
        self._selector = self.new_selector()
        # Both ends non-blocking: a wake-up may be posted from the loop's own thread (a done
        # future's callback, a gevent link), where a full buffer would block the very loop
        # that drains it. A full buffer already holds a pending wake-up, so none is lost.
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self._wake_pending = False
        self._selector.register(self._wake_reader, selectors.EVENT_READ, None)
        self._socks: dict[int, socket.socket] = {}
        self._attempt: dict[int, int] = {}  # per link, so a late connect is recognised
        self._connected: deque[tuple[int, int, socket.socket | ConnectionLost]] = deque()
        self.driver = Driver(worker, config, self)

    # -- what each runtime supplies -----------------------------------------------------------

    @abc.abstractmethod
    def new_selector(self) -> selectors.BaseSelector: ...

    @abc.abstractmethod
    def spawn(self, target: Callable[..., Any], *args: Any) -> None:
        """Run ``target(*args)`` beside the loop (a thread, a greenlet)."""

    @abc.abstractmethod
    def connect_socket(
        self, url: core.ServerURL, *, timeout: float, ssl_context: Any
    ) -> socket.socket:
        """A connected socket (blocking the caller only)."""

    #: The adapter's JobContext class.
    context_type: Callable[[Job, Any], JobContextBase]

    @abc.abstractmethod
    def start_job(self, context: Any, handler: Handler) -> None: ...

    @abc.abstractmethod
    def interrupt(self, context: Any) -> None: ...

    @abc.abstractmethod
    def stack(self, context: Any) -> str: ...

    # -- the loop -----------------------------------------------------------------------------

    def serve(self) -> int:
        driver = self.driver
        try:
            self.worker._run_hooks("startup")
        except BaseException:  # interrupted before the machine started: nothing to abort
            self._close_loop()
            raise
        driver.begin()
        try:
            try:
                while driver.exit_code is None:
                    self._turn()
            except BaseException as error:  # KeyboardInterrupt, SystemExit, GreenletExit...
                driver.interrupted(f"serve() was interrupted by {type(error).__name__}")
                try:
                    while driver.exit_code is None:
                        self._turn()
                except BaseException as again:
                    driver.interrupted_again(again)
                raise
        finally:
            self._finish()
        return driver.ended(driver.exit_code)

    def _turn(self) -> None:
        driver = self.driver
        deadline = driver.machine.next_deadline
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if timeout is not None:
            timeout = min(timeout, MAX_SELECT_WAIT)
        for key, _ in self._selector.select(timeout):
            if key.data is None:
                with contextlib.suppress(OSError):
                    self._wake_reader.recv(4096)
                # Cleared after the read, before the inbox is: a post from now on writes a
                # wake-up no read has swallowed, and one before it is in the inbox already.
                self._wake_pending = False
            else:
                self._receive(key.data, key.fileobj)  # type: ignore[arg-type]
        while self._connected:
            self._on_connected(*self._connected.popleft())
        driver.feed()
        if deadline is not None and time.monotonic() >= deadline:
            driver.feed(TimerFired())

    def _receive(self, link: int, sock: socket.socket) -> None:
        try:
            data = receive(sock)
        except OSError as error:
            self._forget(link)
            self.driver.feed(ConnectionLost(link=link, reason=f"connection lost: {error}"))
            return
        self.driver.feed(DataReceived(link=link, data=data))

    def _finish(self) -> None:
        for link in list(self._socks):
            self._forget(link)
        self.shutdown_jobs()
        self.driver.finish_heartbeat()
        self._close_loop()
        self.worker._run_hooks("shutdown")

    def _close_loop(self) -> None:
        self._selector.close()
        self._wake_reader.close()
        self._wake_writer.close()

    def shutdown_jobs(self) -> None:  # noqa: B027 - most runtimes keep no pool
        """Let go of the job pool, if the runtime keeps one (jobs still running are
        abandoned: they were FAILed)."""

    # -- the Runtime the driver sees ----------------------------------------------------------

    now = staticmethod(time.monotonic)

    def wake(self) -> None:
        if self._wake_pending:  # the loop has yet to take the last one: it sees this too
            return
        self._wake_pending = True
        with contextlib.suppress(OSError):  # full of wake-ups already, or closed
            self._wake_writer.send(b"\0")

    def arm_timer(self, deadline: float | None) -> None:  # noqa: B027
        pass  # each turn computes its wait from the machine's next deadline

    def new_context(self, job: Job) -> JobContextBase:
        return self.context_type(job, self.worker)

    def exited(self, code: int) -> None:  # noqa: B027
        pass  # the loop stops on the driver's exit code

    def run_hooks_later(self, kind: str) -> None:
        self.spawn(self.worker._run_hooks, kind)

    def write(self, link: int, data: bytes) -> None:
        sock = self._socks.get(link)
        if sock is None:
            return
        try:
            sock.sendall(data)
        except OSError as error:
            self._forget(link)
            self.driver.post(ConnectionLost(link=link, reason=f"connection lost: {error}"))

    def connect(self, link: int) -> None:
        attempt = self._attempt.get(link, 0) + 1
        self._attempt[link] = attempt
        self.spawn(self._open, link, attempt)

    def _open(self, link: int, attempt: int) -> None:
        worker = self.worker
        result: socket.socket | ConnectionLost
        try:
            result = self.connect_socket(
                worker._url, timeout=worker._connect_timeout, ssl_context=worker._ssl_context
            )
        except Exception as error:  # whatever it is, the core decides what follows
            result = connect_failed(link, worker._url, error, timeout=worker._connect_timeout)
        self._connected.append((link, attempt, result))
        self.wake()

    def _on_connected(
        self, link: int, attempt: int, result: socket.socket | ConnectionLost
    ) -> None:
        if self._attempt.get(link) != attempt:  # given up on meanwhile
            if isinstance(result, socket.socket):
                result.close()
            return
        if isinstance(result, ConnectionLost):
            self.driver.feed(result)
            return
        self._socks[link] = result
        self._selector.register(result, selectors.EVENT_READ, link)
        self.driver.feed(ConnectionMade(link=link))

    def close(self, link: int) -> None:
        self._attempt[link] = self._attempt.get(link, 0) + 1
        self._forget(link)

    def _forget(self, link: int) -> None:
        sock = self._socks.pop(link, None)
        if sock is not None:
            self._selector.unregister(sock)
            sock.close()


class BlockingWorker(WorkerBase):
    """A Worker whose :meth:`serve` blocks the caller (the thread and gevent adapters')."""

    def serve(self) -> int:
        """Serve until stopped, blocking the caller; return the exit code (signals are yours).

        An exception that interrupts it (``KeyboardInterrupt``, ``SystemExit``, a kill) aborts
        the running jobs, FAILs them naming it, ENDs, and is re-raised.
        """
        return self._serve(self._make_config())

    def drain(self) -> int:
        """Work in burst mode until the queues are empty, then return the exit code; re-raise
        the first exception a job raised, or FaktoryConnectionError with the reason when the server
        cannot be used (unreachable, a wrong password). For tests: push jobs, then
        ``worker.drain()``."""
        return self._end_drain(self._serve(self._start_drain()))

    def _serve(self, config: core.WorkerConfig) -> int:
        if self._driver is not None:
            raise RuntimeError("this worker is already serving (a Worker serves once)")
        with self._serving():
            runtime = self._new_runtime(config)
            self._driver = runtime.driver
            return runtime.serve()

    @abc.abstractmethod
    def _new_runtime(self, config: core.WorkerConfig) -> SelectorRuntime: ...

    def _run_hooks(self, kind: str) -> None:
        for hook in self._hooks[kind]:
            try:
                hook()
            except Exception:
                log.exception("the %s hook %r failed", kind, hook)
