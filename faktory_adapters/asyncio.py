"""The asyncio adapter: a Faktory :class:`Client` and :class:`Worker` on an event loop.

The worker is a thin driver of :class:`faktory_core.Worker`: it moves bytes with asyncio
protocols, reads ``loop.time()``, sleeps until the machine's next deadline, runs jobs as tasks,
and maps the machine's abort onto task cancellation. The heartbeat beats from a thread of its
own, so a handler that blocks the loop cannot get the worker reaped.

Inside a handler, :func:`current_job` returns the :class:`JobContext`: the job and its
:class:`AbortSignal`.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import contextvars
import functools
import inspect
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Final, TypeAlias, TypeVar, cast

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
from ._client_async import Client
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
    connect_failed,
    thread_stack,
)
from ._driver import AbortSignalBase, Driver, Handler, JobContextBase, log
from ._jobs import Jobs, JobType, check_result
from ._worker_base import WorkerBase

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
Middleware: TypeAlias = Callable[["JobContext", Callable[[], Awaitable[None]]], Awaitable[None]]
_F = TypeVar("_F", bound=Callable[..., Any])

# Guards the lazy creation of AbortSignal's events against a concurrent abort.
_EVENT_LOCK: Final = threading.Lock()


_NOT_AWAITED: Final = (
    "abort.wait() must be awaited in the asyncio adapter: write `await abort.wait(timeout)`, "
    "or `abort.wait_blocking(timeout)` in a plain function running in a thread"
)


class AbortWait(collections.abc.Coroutine[Any, Any, bool]):
    """What :meth:`AbortSignal.wait` returns: a coroutine; ``await`` it for the bool (or hand
    it to ``asyncio.create_task``, ``wait_for``...).

    Used as a bool unawaited (``if abort.wait(1):``, the thread adapter's spelling), it raises
    TypeError instead of being silently true; called and dropped, it logs an ERROR.
    """

    __slots__ = ("_coroutine", "_used")

    def __init__(self, coroutine: Coroutine[Any, Any, bool]) -> None:
        self._coroutine = coroutine
        self._used = False

    def __await__(self) -> Generator[Any, None, bool]:
        self._used = True
        return self._coroutine.__await__()

    def send(self, value: Any) -> Any:
        self._used = True
        return self._coroutine.send(value)

    def throw(self, *error: Any) -> Any:
        self._used = True
        return self._coroutine.throw(*error)

    def close(self) -> None:
        self._used = True
        self._coroutine.close()

    def __bool__(self) -> bool:
        self.close()  # no "never awaited" warning on top of the error
        raise TypeError(_NOT_AWAITED)

    def __del__(self) -> None:
        # `abort.wait(1)` as a statement waits for nothing: say so where it is seen, in the log
        # (an exception here would only be printed), instead of a RuntimeWarning. From the
        # loop's next turn when there is one: a finalizer may run inside a log handler's lock.
        if self._used or sys.is_finalizing():
            return
        self._coroutine.close()
        try:
            say: Callable[..., Any] = asyncio.get_running_loop().call_soon
        except RuntimeError:
            say = _call
        say(log.error, "%s (it was called and dropped, so it waited for nothing)", _NOT_AWAITED)

    # What asyncio and inspect read of a coroutine (a task's repr, its stack), passed through.
    __name__ = property(lambda self: "AbortSignal.wait")
    cr_await = property(lambda self: self._coroutine.cr_await)
    cr_code = property(lambda self: self._coroutine.cr_code)
    cr_frame = property(lambda self: self._coroutine.cr_frame)
    cr_running = property(lambda self: self._coroutine.cr_running)


def _call(function: Callable[..., Any], *args: Any) -> None:
    function(*args)


class AbortSignal(AbortSignalBase):
    """Set when the worker aborts the job: a flag, a reason, and waits for both runtimes.

    Coroutines ``await signal.wait(timeout)``; a plain function running in a thread calls
    ``signal.wait_blocking(timeout)``; both can poll ``signal.is_set()``.
    """

    __slots__ = ("_event", "_loop", "_thread_event")

    def __init__(self) -> None:
        super().__init__()
        # Made on first use: most jobs never wait for their abort.
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the event's
        self._thread_event: threading.Event | None = None

    def wait(self, timeout: float | None = None) -> AbortWait:
        """Wait up to ``timeout`` s (None: for ever) for the abort; await it: True if it came."""
        return AbortWait(self._wait(timeout))

    async def _wait(self, timeout: float | None) -> bool:
        with _EVENT_LOCK:  # a thread may be setting it right now
            if self._reason is not None:
                return True
            if self._event is None:
                self._event = asyncio.Event()
                self._loop = asyncio.get_running_loop()
            event = self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        return self._reason is not None

    def wait_blocking(self, timeout: float | None = None) -> bool:
        """From a thread: wait up to ``timeout`` s for the abort; True if it came."""
        with _EVENT_LOCK:  # the loop thread may be setting it right now
            if self._reason is not None:
                return True
            if self._thread_event is None:
                self._thread_event = threading.Event()
            event = self._thread_event
        event.wait(timeout)
        return self._reason is not None

    def _wake(self) -> None:
        # _reason is set: a waiter that takes the lock from now on sees it; one that took it
        # before left its event here.
        with _EVENT_LOCK:
            thread_event, event, loop = self._thread_event, self._event, self._loop
        if thread_event is not None:
            thread_event.set()
        if event is None or loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            event.set()
        else:  # an asyncio.Event is set on its own loop
            with contextlib.suppress(RuntimeError):  # that loop is closed: nothing waits
                loop.call_soon_threadsafe(event.set)


class JobContext(JobContextBase):
    """The running job, its abort signal, and the worker running it."""

    __slots__ = ("_coroutine", "_task", "_thread")

    abort: AbortSignal

    def __init__(self, job: Job, worker: Worker) -> None:
        super().__init__(job, worker)
        self.abort = AbortSignal()
        self._coroutine = False  # an async def handler (else a plain function in a thread)
        self._task: asyncio.Task[Any] | None = None
        self._thread: int | None = None  # the thread of a plain-function handler


def current_job() -> JobContext:
    """The context of the job this code runs for; LookupError, saying so, outside a job."""
    return cast(JobContext, _logging.current())


class Worker(WorkerBase):
    """Fetches jobs from Faktory and runs them on the event loop.

    ``async def`` handlers, middleware and hooks run on the loop (plain functions are accepted
    too: handlers then run in a thread pool). Call :meth:`run` (owns a new loop and the
    signals) or ``await`` :meth:`serve`.
    """

    runtime = "asyncio"

    def run(self) -> int:
        """Run on a new event loop until stopped; TERM/INT stop, TSTP quiets, TTIN dumps.

        Returns the exit code: 0 after a clean stop, 1 when jobs had to be aborted.
        """
        loop = asyncio.new_event_loop()
        actions = self._signal_actions()
        try:
            for signum, act in actions.items():
                loop.add_signal_handler(signum, act)
            return loop.run_until_complete(self.serve())
        finally:
            for signum in actions:
                loop.remove_signal_handler(signum)
            # Tasks still running ignored their abort and were FAILed: they are not awaited.
            loop.close()

    async def serve(self) -> int:
        """Run on the current loop until stopped; return the exit code.

        Signals are the application's: call :meth:`stop` and :meth:`quiet`. Cancelling this
        coroutine aborts the running jobs at once, FAILs them, and re-raises the cancellation.
        """
        return await self._serve(self._make_config())

    async def drain(self) -> int:
        """Work in burst mode until the queues are empty, then return the exit code; re-raise
        the first exception a job raised, or FaktoryConnectionError with the reason when the
        server cannot be used (unreachable, a wrong password). For tests: push jobs, then
        ``await worker.drain()``.
        """
        return self._end_drain(await self._serve(self._start_drain()))

    async def _serve(self, config: core.WorkerConfig) -> int:
        if self._driver is not None:
            raise RuntimeError("this worker is already serving (a Worker serves once)")
        with self._serving():
            runtime = _Runtime(self, asyncio.get_running_loop(), config)
            self._driver = runtime.driver
            return await runtime.serve()

    async def _run_hooks(self, kind: str) -> None:
        for hook in self._hooks[kind]:
            try:
                result = hook()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("the %s hook %r failed", kind, hook)


class _LinkProtocol(asyncio.Protocol):
    """Feeds one link's socket events to the driver."""

    def __init__(self, runtime: _Runtime, link: int) -> None:
        self._runtime = runtime
        self._link = link
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._runtime.transports[self._link] = transport
        self._runtime.driver.feed(ConnectionMade(link=self._link))

    def data_received(self, data: bytes) -> None:
        self._runtime.driver.feed(DataReceived(link=self._link, data=data))

    def eof_received(self) -> bool:
        self._runtime.driver.feed(DataReceived(link=self._link, data=b""))
        return False

    def connection_lost(self, error: Exception | None) -> None:
        transports = self._runtime.transports
        if transports.get(self._link) is self._transport:  # not one we closed ourselves
            del transports[self._link]
            reason = f"connection lost: {error}" if error else "connection closed"
            self._runtime.driver.feed(ConnectionLost(link=self._link, reason=reason))


class _Runtime:
    """The event loop as the driver's runtime: links are protocols, jobs are tasks."""

    def __init__(
        self, worker: Worker, loop: asyncio.AbstractEventLoop, config: core.WorkerConfig
    ) -> None:
        self.worker = worker
        self.loop = loop
        self.now = loop.time
        self.transports: dict[int, asyncio.Transport] = {}
        self._connecting: dict[int, asyncio.Task[None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._exit: asyncio.Future[int] = loop.create_future()
        self._executor = DaemonThreadPool(config.concurrency, "faktory-job")
        self.driver = Driver(worker, config, self)

    async def serve(self) -> int:
        driver = self.driver
        await self.worker._run_hooks("startup")  # inputs meanwhile wait in the driver
        driver.begin()
        try:
            code = await asyncio.shield(self._exit)
        except BaseException as error:  # not ours: abort, FAIL what runs, END, pass it on
            if isinstance(error, asyncio.CancelledError):
                driver.interrupted("the task running serve() was cancelled")
            else:
                driver.interrupted(f"serve() was interrupted by {type(error).__name__}")
            try:
                await asyncio.shield(self._exit)
            except asyncio.CancelledError as again:
                driver.interrupted_again(again)
            raise
        finally:
            await self._finish()
        return driver.ended(code)

    async def _finish(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for transport in self.transports.values():
            transport.close()
        for connecting in self._connecting.values():
            connecting.cancel()
        self._executor.shutdown(wait=False)
        await self.loop.run_in_executor(None, self.driver.finish_heartbeat)
        await self.worker._run_hooks("shutdown")

    # -- the Runtime the driver sees ----------------------------------------------------------

    def wake(self) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.driver.feed)

    def arm_timer(self, deadline: float | None) -> None:
        # Most inputs push the next deadline later (each FETCH moves its reply timeout), so
        # the timer is only moved earlier; when it fires early, the machine does nothing and
        # the timer is armed again. That saves a timer per job.
        timer = self._timer
        if deadline is None or (timer is not None and deadline >= timer.when()):
            return
        if timer is not None:
            timer.cancel()
        self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.driver.feed(TimerFired())

    def exited(self, code: int) -> None:
        if not self._exit.done():
            self._exit.set_result(code)

    def run_hooks_later(self, kind: str) -> None:
        self.loop.create_task(self.worker._run_hooks(kind))

    def write(self, link: int, data: bytes) -> None:
        transport = self.transports.get(link)
        if transport is not None:
            transport.write(data)

    def connect(self, link: int) -> None:
        self._connecting[link] = self.loop.create_task(self._open(link))

    async def _open(self, link: int) -> None:
        url, context = self.worker._url, self.worker._ssl_context
        try:
            await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: _LinkProtocol(self, link),
                    url.host,
                    url.port,
                    ssl=context if url.tls else None,
                    server_hostname=url.host if url.tls else None,
                ),
                self.worker._connect_timeout,
            )
        except Exception as error:  # whatever it is, the core decides what follows
            self._connecting.pop(link, None)
            self.driver.feed(connect_failed(link, url, error, timeout=self.worker._connect_timeout))
        else:
            self._connecting.pop(link, None)

    def close(self, link: int) -> None:
        transport = self.transports.pop(link, None)
        if transport is not None:
            transport.close()
        connecting = self._connecting.pop(link, None)
        if connecting is not None:
            connecting.cancel()

    def new_context(self, job: Job) -> JobContext:
        return JobContext(job, self.worker)

    def start_job(self, context: JobContext, handler: Handler) -> None:
        context._coroutine = inspect.iscoroutinefunction(handler)
        task = self.loop.create_task(self._perform(context, handler))
        context._task = task
        task.add_done_callback(functools.partial(self._job_done, context))

    def interrupt(self, context: JobContext) -> None:
        # A plain function in a thread cannot be interrupted: it has the signal only.
        if context._coroutine and context._task is not None:
            context._task.cancel(context.abort.reason)

    def stack(self, context: JobContext) -> str:
        if context._coroutine and context._task is not None:
            return _coroutine_stack(context._task.get_coro())
        return thread_stack(context._thread)

    async def _perform(self, context: JobContext, handler: Handler) -> JobError | None:
        token = _logging.CURRENT.set(context)
        job = context.job
        if context._coroutine:

            async def innermost() -> None:
                check_result(job.jobtype, await handler(*job.args))

            call: Callable[[], Awaitable[Any]] = innermost
        else:

            def innermost_in_thread() -> Awaitable[Any]:
                # The context as the middleware left it (a tracker's per-job scope), copied
                # when the middleware calls it, not before the middleware ran.
                run = contextvars.copy_context().run
                return self.loop.run_in_executor(self._executor, run, _in_thread, context, handler)

            call = innermost_in_thread
        try:
            await self.driver.chain(context, call)()
        except asyncio.CancelledError:
            if context._aborted:
                return None  # ours: the job was FAILed when it was aborted (and logged)
            self.driver.cancelled(context)
            raise  # not ours: never swallowed
        except BaseException as error:  # a job's failure, whatever it raised
            return self.driver.failed(context, error)
        else:
            self.driver.succeeded(context)
            return None
        finally:
            _logging.CURRENT.reset(token)

    def _job_done(self, context: JobContext, task: asyncio.Task[JobError | None]) -> None:
        if task.cancelled():
            error: JobError | None = JobError.cancelled()
        else:
            failure = task.exception()
            error = task.result() if failure is None else self.driver.failed(context, failure)
        self.driver.feed(self.driver.job_finished(context.job.jid, error))


def _in_thread(context: JobContext, handler: Handler) -> None:
    context._thread = threading.get_ident()
    check_result(context.job.jobtype, handler(*context.job.args))


def _coroutine_stack(coroutine: Any) -> str:
    """A coroutine's stack down to where it waits, formatted (a task's ``get_stack()`` shows
    only its outermost coroutine: here, the adapter's)."""
    frames = []
    while coroutine is not None:
        frame = getattr(coroutine, "cr_frame", None) or getattr(coroutine, "gi_frame", None)
        if frame is None:  # finished, or a future or a C-level awaitable: the bottom
            break
        frames.append((frame, frame.f_lineno))
        coroutine = getattr(coroutine, "cr_await", None) or getattr(coroutine, "gi_yieldfrom", None)
    if not frames:
        return "(not running)\n"
    return "".join(traceback.format_list(traceback.StackSummary.extract(frames)))
