"""The thread adapter: a Faktory :class:`Worker` on OS threads, with blocking sockets.

One thread (the caller's, in :meth:`Worker.run`) moves the bytes of every job link with
``selectors`` and drives :class:`faktory_core.Worker`; jobs run on a pool of ``concurrency``
daemon threads; the heartbeat beats from a thread of its own.

Abort: the job's :class:`AbortSignal` is set and, unless ``raise_in_job=False``,
:class:`JobAborted` is raised inside the job's thread (``PyThreadState_SetAsyncExc``). That
exception lands only while the thread runs Python bytecode (not inside a blocking C call such
as ``time.sleep`` or a socket read, which it interrupts only when the call returns), and it can
land anywhere in Python code, a pure-Python database commit included: turn it off per worker,
or per job type with ``raise_in_job=False`` in :meth:`Worker.register`, where that is unsafe.
Either way the job was FAILed when it was aborted, and a thread that refuses to end cannot keep
the process alive: after the grace period the worker ENDs and exits.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import selectors
import signal
import socket
import ssl
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any, Final, TypeAlias, TypeVar, cast

import faktory_core as core
from faktory_core import (
    AbortJob,
    AbortRequested,
    Action,
    Close,
    Connect,
    ConnectionLost,
    ConnectionMade,
    DataReceived,
    Exit,
    Job,
    JobError,
    JobFinished,
    MachineInput,
    Notice,
    PhaseChanged,
    QuietRequested,
    ServerSignal,
    Start,
    StartJob,
    StopRequested,
    TimerFired,
    Write,
)

from . import _logging
from ._client_sync import Client
from ._common import (
    AuthenticationError,
    DaemonThreadPool,
    FaktoryError,
    InvalidJobError,
    JobAborted,
    ServerReplyError,
    connect_failed,
    connect_socket,
    job_error,
    logger,
)
from ._heartbeat import HeartbeatThread
from ._jobs import Jobs, JobType, check_result
from ._worker_base import WorkerBase

__all__ = [
    "AbortSignal",
    "AuthenticationError",
    "Client",
    "FaktoryError",
    "InvalidJobError",
    "JobAborted",
    "JobContext",
    "JobType",
    "Jobs",
    "ServerReplyError",
    "Worker",
    "current_job",
]

Handler: TypeAlias = Callable[..., Any]
Hook: TypeAlias = Callable[[], Any]
Middleware: TypeAlias = Callable[["JobContext", Callable[[], None]], None]
_F = TypeVar("_F", bound=Callable[..., Any])

_log: Final = logger.getChild("worker")
_CURRENT: Final = _logging.CURRENT
_HEARTBEAT_END_TIMEOUT: Final = 5.0
#: The longest single wait of the loop: the machine's deadlines can be days away.
_MAX_WAIT: Final = 3600.0
_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc


class AbortSignal:
    """Set when the worker aborts the job: a flag, a reason, and a ``wait(timeout)``."""

    __slots__ = ("_event", "_reason")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._reason: str | None = None

    @property
    def is_set(self) -> bool:
        """True once the job has been aborted."""
        return self._event.is_set()

    @property
    def reason(self) -> str | None:
        """Why the job was aborted (the FAIL message), or None."""
        return self._reason

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` s (None: for ever) for the abort; True if it came."""
        return self._event.wait(timeout)

    def wait_blocking(self, timeout: float | None = None) -> bool:
        """The same as :meth:`wait` (named as in the asyncio adapter)."""
        return self._event.wait(timeout)

    def _set(self, reason: str) -> None:
        self._reason = reason
        self._event.set()


class JobContext:
    """The running job, its abort signal, and the worker running it."""

    __slots__ = ("_lock", "_thread", "abort", "job", "worker")

    def __init__(self, job: Job, worker: Worker) -> None:
        self.job = job
        self.abort = AbortSignal()
        self.worker = worker
        self._thread: int | None = None  # set while the handler runs
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<JobContext {self.job.jobtype} {self.job.jid}>"


def current_job() -> JobContext:
    """The context of the job this code runs for; LookupError outside a job."""
    return cast(JobContext, _CURRENT.get())


class Worker(WorkerBase):
    """Fetches jobs from Faktory and runs them on a pool of threads.

    Handlers, middleware and hooks are plain functions. Call :meth:`run` (the main thread's
    signals are installed) or :meth:`serve`.
    """

    runtime = "thread"
    _driver: _Driver | None

    def run(self) -> int:
        """Serve until stopped, with TERM/INT stopping, TSTP quieting and TTIN dumping jobs.

        Call it from the main thread. Returns 0 after a clean stop, 1 when jobs were aborted.
        """
        handlers = {
            signal.SIGTERM: lambda *_: self._post(StopRequested(source="SIGTERM")),
            signal.SIGINT: lambda *_: self._post(StopRequested(source="SIGINT")),
            signal.SIGTSTP: lambda *_: self._post(QuietRequested(source="SIGTSTP")),
            signal.SIGTTIN: lambda *_: self.dump_jobs(),
        }
        previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
        try:
            return self.serve()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def serve(self) -> int:
        """Serve on this thread until stopped; return the exit code (signals are yours).

        An exception that interrupts it (``KeyboardInterrupt``, ``SystemExit``, a kill) aborts
        the running jobs, FAILs them naming it, ENDs, and is re-raised.
        """
        return self._serve(self._make_config())

    def drain(self) -> int:
        """Work in burst mode until the queues are empty, then return the exit code; re-raise
        the first exception a job raised. For tests: push jobs, then ``worker.drain()``."""
        return self._end_drain(self._serve(self._start_drain()))

    def _serve(self, config: core.WorkerConfig) -> int:
        if self._driver is not None:
            raise RuntimeError("this worker is already serving (a Worker serves once)")
        self._driver = _Driver(self, config)
        return self._driver.serve()

    def _run_hooks(self, kind: str) -> None:
        for hook in self._hooks[kind]:
            try:
                hook()
            except Exception:
                _log.exception("the %s hook %r failed", kind, hook)


class _Driver:
    """One run of a worker: the machine, its sockets, its jobs and its heartbeat."""

    _context_type: Any = None  # JobContext, set below (the gevent adapter has its own)

    def __init__(self, worker: Worker, config: core.WorkerConfig) -> None:
        self.worker = worker
        self.config = config
        self.machine = core.Worker(config, random=worker._random.random)
        _logging.install()
        self._selector = self._new_selector()
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
        self._inbox: deque[MachineInput] = deque()
        self._jobs: dict[str, JobContext] = {}
        self._exit_code: int | None = None
        self._executor: DaemonThreadPool | None = None
        self._heartbeat = HeartbeatThread(
            config,
            worker._url,
            on_server_state=lambda state: self.post(ServerSignal(state=state)),
            random=worker._random.random,
            ssl_context=worker._ssl_context,
            connect_timeout=worker._connect_timeout,
        )

    def post(self, event: MachineInput) -> None:
        """Queue an input from any thread (or a signal handler) and wake the loop."""
        self._inbox.append(event)
        self._wake()

    def _wake(self) -> None:
        if self._wake_pending:  # the loop has yet to take the last one: it sees this too
            return
        self._wake_pending = True
        with contextlib.suppress(OSError):  # full of wake-ups already, or closed
            self._wake_writer.send(b"\0")

    def serve(self) -> int:
        worker = self.worker
        worker._run_hooks("startup")
        _log.info(
            "worker %s starting: %s, concurrency %d",
            worker.wid,
            worker._url,
            self.config.concurrency,
        )
        self._heartbeat.start()
        self._feed(Start())
        try:
            try:
                while self._exit_code is None:
                    self._turn()
            except BaseException as error:  # KeyboardInterrupt, SystemExit, GreenletExit...
                self._abort_for(error)
                raise
        finally:
            self._finish()
        _log.info("worker %s exiting with code %d", worker.wid, self._exit_code)
        return self._exit_code

    def _abort_for(self, error: BaseException) -> None:
        """Abort the running jobs, FAIL them naming ``error``, and END before it goes on up.

        The machine bounds this (abort grace, then the END timeout). A second interruption
        while it runs gives up at once.
        """
        reason = f"serve() was interrupted by {type(error).__name__}"
        _log.warning("worker %s: %s; aborting", self.worker.wid, reason)
        try:
            if self._exit_code is None:
                self._feed(AbortRequested(reason=reason))
            while self._exit_code is None:
                self._turn()
        except BaseException as again:
            _log.warning("interrupted again (%s): exiting without waiting", type(again).__name__)

    def _turn(self) -> None:
        deadline = self.machine.next_deadline
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if timeout is not None:
            timeout = min(timeout, _MAX_WAIT)  # select() refuses very long timeouts
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
        while self._inbox and self._exit_code is None:
            self._feed(self._inbox.popleft())
        if deadline is not None and time.monotonic() >= deadline and self._exit_code is None:
            self._feed(TimerFired())

    def _receive(self, link: int, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
            while data and isinstance(sock, ssl.SSLSocket) and sock.pending():
                data += sock.recv(sock.pending())
        except OSError as error:
            self._forget(link)
            self._feed(ConnectionLost(link=link, reason=f"connection lost: {error}"))
            return
        self._feed(DataReceived(link=link, data=data))

    def _feed(self, event: MachineInput) -> None:
        for action in self.machine.handle(event, time.monotonic()):
            _ACTIONS[type(action)](self, action)

    # -- actions ------------------------------------------------------------------------------

    def _write(self, action: Write) -> None:
        sock = self._socks.get(action.link)
        if sock is None:
            return
        try:
            sock.sendall(action.data)
        except OSError as error:
            self._forget(action.link)
            self.post(ConnectionLost(link=action.link, reason=f"connection lost: {error}"))

    def _connect(self, action: Connect) -> None:
        link = action.link
        attempt = self._attempt.get(link, 0) + 1
        self._attempt[link] = attempt
        self._spawn(self._open, link, attempt)

    def _open(self, link: int, attempt: int) -> None:
        worker = self.worker
        result: socket.socket | ConnectionLost
        try:
            result = self._connect_socket(
                worker._url, timeout=worker._connect_timeout, ssl_context=worker._ssl_context
            )
        except Exception as error:  # whatever it is, the core decides what follows
            result = connect_failed(link, worker._url, error)
        self._connected.append((link, attempt, result))
        self._wake()

    def _on_connected(
        self, link: int, attempt: int, result: socket.socket | ConnectionLost
    ) -> None:
        if self._attempt.get(link) != attempt:  # given up on meanwhile
            if isinstance(result, socket.socket):
                result.close()
            return
        if isinstance(result, ConnectionLost):
            self._feed(result)
            return
        self._socks[link] = result
        self._selector.register(result, selectors.EVENT_READ, link)
        self._feed(ConnectionMade(link=link))

    def _close(self, action: Close) -> None:
        self._attempt[action.link] = self._attempt.get(action.link, 0) + 1
        self._forget(action.link)

    def _forget(self, link: int) -> None:
        sock = self._socks.pop(link, None)
        if sock is not None:
            self._selector.unregister(sock)
            sock.close()

    def _start_job(self, action: StartJob) -> None:
        job = action.job
        handler = self.worker._handler(job.jobtype)
        context = self._context_type(job, self.worker)
        self._jobs[job.jid] = context
        self._run_job(context, handler)

    def _abort(self, action: AbortJob) -> None:
        context = self._jobs.get(action.jid)
        if context is None:
            return
        job = context.job
        _log.warning("aborting %s %s: %s", job.jobtype, action.jid, action.message)
        context.abort._set(action.message)
        if self.worker._interrupts(job.jobtype):
            self._interrupt(context)

    # -- how this runtime runs things (the gevent adapter overrides these) -----------------

    def _new_selector(self) -> selectors.BaseSelector:
        return selectors.DefaultSelector()

    def _spawn(self, target: Callable[..., Any], *args: Any) -> None:
        threading.Thread(target=target, args=args, name="faktory-task", daemon=True).start()

    def _connect_socket(
        self, url: core.ServerURL, *, timeout: float, ssl_context: Any
    ) -> socket.socket:
        return connect_socket(url, timeout=timeout, ssl_context=ssl_context)

    def _run_job(self, context: JobContext, handler: Handler) -> None:
        if self._executor is None:
            self._executor = DaemonThreadPool(self.config.concurrency, "faktory-job")
        jid = context.job.jid
        future = self._executor.submit(
            contextvars.copy_context().run, self._perform, context, handler
        )
        future.add_done_callback(lambda done: self.post(JobFinished(jid=jid, error=done.result())))

    def _interrupt(self, context: JobContext) -> None:
        with context._lock:  # only while the handler itself runs
            if context._thread is not None:
                _set_async_exc(ctypes.c_ulong(context._thread), ctypes.py_object(JobAborted))

    def _stack(self, context: JobContext) -> str:
        thread = context._thread
        frame = sys._current_frames().get(thread) if thread is not None else None
        return "".join(traceback.format_stack(frame)) if frame else "(not running)\n"

    def _phase_changed(self, action: PhaseChanged) -> None:
        _log.info("worker %s: %s (%s)", self.worker.wid, action.phase.value, action.trigger.value)
        self._heartbeat.report_phase(action.phase)
        if action.stops_fetching:
            self._spawn(self.worker._run_hooks, "quiet")

    def _notice(self, action: Notice) -> None:
        _log.warning("%s", action.message)

    def _exited(self, action: Exit) -> None:
        self._exit_code = action.code

    # -- jobs ---------------------------------------------------------------------------------

    def _perform(self, context: JobContext, handler: Handler) -> JobError | None:
        token = _CURRENT.set(context)
        try:  # the outer try catches an abort landing in our own bookkeeping
            try:
                with context._lock:
                    context._thread = threading.get_ident()
                self._call(context, handler, 0)
                return None
            except JobAborted:
                return None  # the job was FAILed when it was aborted
            except BaseException as error:  # a job's failure, whatever it raised
                self.worker._job_raised(error)
                return job_error(error, context.job.backtrace)
            finally:
                with context._lock:
                    context._thread = None
                _CURRENT.reset(token)
                self._jobs.pop(context.job.jid, None)
        except JobAborted:
            return None

    def _call(self, context: JobContext, handler: Handler, depth: int) -> None:
        middleware = self.worker._middleware
        if depth < len(middleware):
            middleware[depth](context, lambda: self._call(context, handler, depth + 1))
        else:
            check_result(context.job.jobtype, handler(*context.job.args))

    def dump_jobs(self) -> None:
        for context in list(self._jobs.values()):
            stack = self._stack(context)
            _log.warning("running %s %s\n%s", context.job.jobtype, context.job.jid, stack)

    def _finish(self) -> None:
        for link in list(self._socks):
            self._forget(link)
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        if not self._heartbeat.finish(_HEARTBEAT_END_TIMEOUT):
            _log.warning("the heartbeat did not end within %g s", _HEARTBEAT_END_TIMEOUT)
        self._selector.close()
        self._wake_reader.close()
        self._wake_writer.close()
        self.worker._run_hooks("shutdown")


_Driver._context_type = JobContext

_ACTIONS: Final[dict[type[Action], Callable[[_Driver, Any], None]]] = {
    Write: _Driver._write,
    Connect: _Driver._connect,
    Close: _Driver._close,
    StartJob: _Driver._start_job,
    AbortJob: _Driver._abort,
    PhaseChanged: _Driver._phase_changed,
    Notice: _Driver._notice,
    Exit: _Driver._exited,
}
