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

import contextvars
import ctypes
import selectors
import signal
import socket
import threading
from collections.abc import Callable
from typing import Any, Final, TypeAlias, cast

import faktory_core as core
from faktory_core import Job
from faktory_core.machine_io import JobError

from . import _logging
from ._blocking import BlockingWorker, EventAbortSignal, SelectorRuntime, perform
from ._client_sync import Client
from ._common import (
    AuthenticationError,
    ClientClosedError,
    DaemonThreadPool,
    FaktoryConnectionError,
    FaktoryError,
    FaktoryProtocolError,
    FaktoryTimeoutError,
    InvalidJobError,
    JobAborted,
    OutcomeUnknownError,
    ServerReplyError,
    WrongEventLoopError,
    connect_socket,
    thread_stack,
)
from ._driver import Handler, JobContextBase
from ._jobs import Jobs, JobType

__all__ = [
    "AbortSignal",
    "AuthenticationError",
    "Client",
    "ClientClosedError",
    "FaktoryConnectionError",
    "FaktoryError",
    "FaktoryProtocolError",
    "FaktoryTimeoutError",
    "InvalidJobError",
    "JobAborted",
    "JobContext",
    "JobType",
    "Jobs",
    "OutcomeUnknownError",
    "ServerReplyError",
    "Worker",
    "WrongEventLoopError",
    "current_job",
]

Hook: TypeAlias = Callable[[], Any]
Middleware: TypeAlias = Callable[["JobContext", Callable[[], None]], None]

_set_async_exc: Final = ctypes.pythonapi.PyThreadState_SetAsyncExc


class AbortSignal(EventAbortSignal):
    """Set when the worker aborts the job: a flag, a reason, and a ``wait(timeout)``."""

    __slots__ = ()
    _new_event = threading.Event


class JobContext(JobContextBase):
    """The running job, its abort signal, and the worker running it."""

    __slots__ = ("_lock", "_thread")

    abort: AbortSignal

    def __init__(self, job: Job, worker: Worker) -> None:
        super().__init__(job, worker)
        self.abort = AbortSignal()
        self._thread: int | None = None  # set while the handler runs
        self._lock = threading.Lock()


def current_job() -> JobContext:
    """The context of the job this code runs for; LookupError, saying so, outside a job."""
    return cast(JobContext, _logging.current())


class Worker(BlockingWorker):
    """Fetches jobs from Faktory and runs them on a pool of threads.

    Handlers, middleware and hooks are plain functions. Call :meth:`run` (the main thread's
    signals are installed) or :meth:`serve`.
    """

    runtime = "thread"

    def run(self) -> int:
        """Serve until stopped, with TERM/INT stopping, TSTP quieting and TTIN dumping jobs.

        Call it from the main thread. Returns 0 after a clean stop, 1 when jobs were aborted.
        """
        previous = {
            signum: signal.signal(signum, lambda *_, act=act: act())
            for signum, act in self._signal_actions().items()
        }
        try:
            return self.serve()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _new_runtime(self, config: core.WorkerConfig) -> SelectorRuntime:
        return _ThreadRuntime(self, config)


class _ThreadRuntime(SelectorRuntime):
    """Jobs on a pool of daemon threads; connects on threads of their own."""

    context_type = JobContext

    def __init__(self, worker: Worker, config: core.WorkerConfig) -> None:
        super().__init__(worker, config)
        self._executor: DaemonThreadPool | None = None

    def new_selector(self) -> selectors.BaseSelector:
        return selectors.DefaultSelector()

    def spawn(self, target: Callable[..., Any], *args: Any) -> None:
        threading.Thread(target=target, args=args, name="faktory-task", daemon=True).start()

    def connect_socket(
        self, url: core.ServerURL, *, timeout: float, ssl_context: Any
    ) -> socket.socket:
        return connect_socket(url, timeout=timeout, ssl_context=ssl_context)

    def start_job(self, context: JobContext, handler: Handler) -> None:
        if self._executor is None:
            self._executor = DaemonThreadPool(self.driver.config.concurrency, "faktory-job")
        driver, jid = self.driver, context.job.jid
        future = self._executor.submit(contextvars.copy_context().run, self._run, context, handler)
        future.add_done_callback(lambda done: driver.post(driver.job_finished(jid, done.result())))

    def _run(self, context: JobContext, handler: Handler) -> JobError | None:
        try:  # an abort may land in this bookkeeping too, after the handler returned
            with context._lock:
                context._thread = threading.get_ident()
            try:
                return perform(self.driver, context, handler)
            finally:
                with context._lock:
                    context._thread = None
        except JobAborted:
            return None

    def interrupt(self, context: JobContext) -> None:
        with context._lock:  # only while the job runs on its thread
            if context._thread is not None:
                _set_async_exc(ctypes.c_ulong(context._thread), ctypes.py_object(JobAborted))

    def stack(self, context: JobContext) -> str:
        return thread_stack(context._thread)

    def shutdown_jobs(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)
