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
import contextlib
import contextvars
import functools
import inspect
import signal
import sys
import threading
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
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
    Phase,
    PhaseChanged,
    QuietRequested,
    ServerSignal,
    Start,
    StartJob,
    StopRequested,
    TimerFired,
    WorkerState,
    Write,
)

from . import _logging
from ._client_async import Client
from ._common import (
    AuthenticationError,
    DaemonThreadPool,
    FaktoryError,
    InvalidJobError,
    JobAborted,
    ServerReplyError,
    connect_failed,
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
Middleware: TypeAlias = Callable[["JobContext", Callable[[], Awaitable[None]]], Awaitable[None]]
_F = TypeVar("_F", bound=Callable[..., Any])

_log: Final = logger.getChild("worker")
_CURRENT: Final = _logging.CURRENT

# Guards the lazy creation of AbortSignal's threading.Event against a concurrent abort.
_EVENT_LOCK: Final = threading.Lock()

# After Exit, how long the heartbeat gets to send its END.
_HEARTBEAT_END_TIMEOUT: Final = 5.0


class AbortSignal:
    """Set when the worker aborts the job: a flag, a reason, and waits for both runtimes.

    Coroutines ``await signal.wait()``; a plain function running in a thread polls
    ``signal.is_set`` or calls ``signal.wait_blocking(timeout)``.
    """

    __slots__ = ("_event", "_reason", "_thread_event")

    def __init__(self) -> None:
        # Made on first use: most jobs never wait for their abort.
        self._event: asyncio.Event | None = None
        self._thread_event: threading.Event | None = None
        self._reason: str | None = None

    @property
    def is_set(self) -> bool:
        """True once the job has been aborted."""
        return self._reason is not None

    @property
    def reason(self) -> str | None:
        """Why the job was aborted (the FAIL message), or None."""
        return self._reason

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` s (None: for ever) for the abort; True if it came."""
        if self._reason is None:
            if self._event is None:
                self._event = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout)
        return self._reason is not None

    def wait_blocking(self, timeout: float | None = None) -> bool:
        """From a thread: wait up to ``timeout`` s for the abort; True if it came."""
        if self._reason is None:
            with _EVENT_LOCK:  # the loop thread may be setting it right now
                if self._thread_event is None:
                    self._thread_event = threading.Event()
                    if self._reason is not None:
                        self._thread_event.set()
            self._thread_event.wait(timeout)
        return self._reason is not None

    def _set(self, reason: str) -> None:
        with _EVENT_LOCK:
            self._reason = reason
            if self._thread_event is not None:
                self._thread_event.set()
        if self._event is not None:
            self._event.set()


class JobContext:
    """The running job, its abort signal, and the worker running it."""

    __slots__ = ("_thread", "abort", "job", "worker")

    def __init__(self, job: Job, worker: Worker) -> None:
        self.job = job
        self.abort = AbortSignal()
        self.worker = worker
        self._thread: int | None = None  # the thread of a plain-function handler

    def __repr__(self) -> str:
        return f"<JobContext {self.job.jobtype} {self.job.jid}>"


def current_job() -> JobContext:
    """The context of the job this code runs for; LookupError outside a job."""
    return cast(JobContext, _CURRENT.get())


class _RunningJob:
    __slots__ = ("context", "coroutine", "task")

    def __init__(self, context: JobContext, task: asyncio.Task[Any], coroutine: bool) -> None:
        self.context = context
        self.task = task
        self.coroutine = coroutine


class _LinkProtocol(asyncio.Protocol):
    """Feeds one link's socket events to the worker."""

    def __init__(self, driver: _Driver, link: int) -> None:
        self._worker = driver
        self._link = link
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._worker.transports[self._link] = transport
        self._worker.feed(ConnectionMade(link=self._link))

    def data_received(self, data: bytes) -> None:
        self._worker.feed(DataReceived(link=self._link, data=data))

    def eof_received(self) -> bool:
        self._worker.feed(DataReceived(link=self._link, data=b""))
        return False

    def connection_lost(self, error: Exception | None) -> None:
        transports = self._worker.transports
        if transports.get(self._link) is self._transport:  # not one we closed ourselves
            del transports[self._link]
            reason = f"connection lost: {error}" if error else "connection closed"
            self._worker.feed(ConnectionLost(link=self._link, reason=reason))


class Worker(WorkerBase):
    """Fetches jobs from Faktory and runs them on the event loop.

    ``async def`` handlers, middleware and hooks run on the loop (plain functions are accepted
    too: handlers then run in a thread pool). Call :meth:`run` (owns a new loop and the
    signals) or ``await`` :meth:`serve`.
    """

    runtime = "asyncio"
    _driver: _Driver | None

    # -- running ------------------------------------------------------------------------------

    def run(self) -> int:
        """Run on a new event loop until stopped; TERM/INT stop, TSTP quiets, TTIN dumps.

        Returns the exit code: 0 after a clean stop, 1 when jobs had to be aborted.
        """
        loop = asyncio.new_event_loop()
        handlers = {
            signal.SIGTERM: lambda: self._post(StopRequested(source="SIGTERM")),
            signal.SIGINT: lambda: self._post(StopRequested(source="SIGINT")),
            signal.SIGTSTP: lambda: self._post(QuietRequested(source="SIGTSTP")),
            signal.SIGTTIN: self.dump_jobs,
        }
        try:
            for signum, handler in handlers.items():
                loop.add_signal_handler(signum, handler)
            return loop.run_until_complete(self.serve())
        finally:
            for signum in handlers:
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
        the first exception a job raised. For tests: push jobs, then ``await worker.drain()``.
        """
        return self._end_drain(await self._serve(self._start_drain()))

    async def _serve(self, config: core.WorkerConfig) -> int:
        if self._driver is not None:
            raise RuntimeError("this worker is already serving (a Worker serves once)")
        driver = self._driver = _Driver(self, asyncio.get_running_loop(), config)
        return await driver.serve()

    async def _run_hooks(self, kind: str) -> None:
        for hook in self._hooks[kind]:
            try:
                result = hook()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                _log.exception("the %s hook %r failed", kind, hook)


class _Driver:
    """One run of a worker: the machine, its links, its jobs, its timer and its heartbeat."""

    def __init__(
        self, worker: Worker, loop: asyncio.AbstractEventLoop, config: core.WorkerConfig
    ) -> None:
        self.worker = worker
        self.loop = loop
        self.config = config
        self.machine = core.Worker(config, random=worker._random.random)
        _logging.install()
        self.transports: dict[int, asyncio.Transport] = {}
        self._connecting: dict[int, asyncio.Task[None]] = {}
        self._jobs: dict[str, _RunningJob] = {}
        self._inbox: deque[MachineInput] = deque()
        self._feeding = False
        self._started = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._exit: asyncio.Future[int] = loop.create_future()
        self._executor = DaemonThreadPool(config.concurrency, "faktory-job")
        self._heartbeat = HeartbeatThread(
            config,
            worker._url,
            on_server_state=self._from_heartbeat,
            random=worker._random.random,
            ssl_context=worker._ssl_context,
            connect_timeout=worker._connect_timeout,
        )

    async def serve(self) -> int:
        worker, config = self.worker, self.config
        await worker._run_hooks("startup")  # inputs meanwhile wait in the inbox
        _log.info(
            "worker %s starting: %s, concurrency %d", worker.wid, worker._url, config.concurrency
        )
        self._heartbeat.start()
        self._started = True
        self._inbox.appendleft(Start())
        self.feed(None)
        try:
            code = await asyncio.shield(self._exit)
        except BaseException as error:  # not ours: abort, FAIL what runs, END, pass it on
            await self._abort_for(error)
            raise
        finally:
            await self._finish()
        _log.info("worker %s exiting with code %d", worker.wid, code)
        return code

    async def _abort_for(self, error: BaseException) -> None:
        """Abort the running jobs, FAIL them naming ``error``, and wait for the machine to
        exit (it bounds that: abort grace, then the END timeout). Cancelled again: no wait."""
        if isinstance(error, asyncio.CancelledError):
            reason = "the task running serve() was cancelled"
        else:
            reason = f"serve() was interrupted by {type(error).__name__}"
        _log.warning("worker %s: %s; aborting", self.worker.wid, reason)
        self.feed(AbortRequested(reason=reason))
        try:
            await asyncio.shield(self._exit)
        except asyncio.CancelledError:
            _log.warning("worker %s cancelled again: exiting without waiting", self.worker.wid)

    def dump_jobs(self) -> None:
        frames = sys._current_frames()
        for running in list(self._jobs.values()):
            context = running.context
            if running.coroutine:
                stack = "".join(traceback.format_list(_task_stack(running.task)))
            else:
                frame = frames.get(context._thread or -1)
                stack = "".join(traceback.format_stack(frame)) if frame else "(not started)\n"
            _log.warning("running %s %s\n%s", context.job.jobtype, context.job.jid, stack)

    def post(self, event: MachineInput) -> None:
        """Queue an input from any thread; the loop feeds it to the machine."""
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.feed, event)

    def _from_heartbeat(self, state: WorkerState) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.feed, ServerSignal(state=state))

    def feed(self, event: MachineInput | None) -> None:
        """Give the machine an input (None: only what waits) and carry out its actions.

        Never re-entered; inputs that come before the machine starts (a stop during the
        startup hooks) wait, and after it exits they are dropped.
        """
        if event is not None:
            self._inbox.append(event)
        if self._feeding or not self._started:
            return
        self._feeding = True
        try:
            machine, time = self.machine, self.loop.time
            while self._inbox:
                if machine.phase is Phase.EXITED:
                    self._inbox.clear()
                    break
                for action in machine.handle(self._inbox.popleft(), time()):
                    _ACTIONS[type(action)](self, action)
            self._arm_timer()
        finally:
            self._feeding = False

    def _arm_timer(self) -> None:
        # Most inputs push the next deadline later (each FETCH moves its reply timeout), so
        # the timer is only moved earlier; when it fires early, the machine does nothing and
        # the timer is armed again. That saves a timer per job.
        deadline = self.machine.next_deadline
        if deadline is None or (self._timer_at is not None and deadline >= self._timer_at):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        self.feed(TimerFired())

    # -- actions ------------------------------------------------------------------------------

    def _write(self, action: Write) -> None:
        transport = self.transports.get(action.link)
        if transport is not None:
            transport.write(action.data)

    def _connect(self, action: Connect) -> None:
        self._connecting[action.link] = self.loop.create_task(self._open(action.link))

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
            self.feed(connect_failed(link, url, error))
        else:
            self._connecting.pop(link, None)

    def _close(self, action: Close) -> None:
        transport = self.transports.pop(action.link, None)
        if transport is not None:
            transport.close()
        connecting = self._connecting.pop(action.link, None)
        if connecting is not None:
            connecting.cancel()

    def _start_job(self, action: StartJob) -> None:
        job = action.job
        handler = self.worker._handler(job.jobtype)
        context = JobContext(job, self.worker)
        coroutine = inspect.iscoroutinefunction(handler)
        task = self.loop.create_task(self._perform(context, handler, coroutine))
        self._jobs[job.jid] = _RunningJob(context, task, coroutine)
        task.add_done_callback(functools.partial(self._job_done, job.jid))

    def _abort(self, action: AbortJob) -> None:
        running = self._jobs.get(action.jid)
        if running is None:
            return
        job = running.context.job
        _log.warning("aborting %s %s: %s", job.jobtype, action.jid, action.message)
        running.context.abort._set(action.message)
        if running.coroutine and self.worker._interrupts(job.jobtype):
            running.task.cancel(action.message)
        # A plain function in a thread cannot be interrupted: it gets the signal only.

    def _phase_changed(self, action: PhaseChanged) -> None:
        _log.info("worker %s: %s (%s)", self.worker.wid, action.phase.value, action.trigger.value)
        self._heartbeat.report_phase(action.phase)
        if action.stops_fetching:
            self.loop.create_task(self.worker._run_hooks("quiet"))

    def _notice(self, action: Notice) -> None:
        _log.warning("%s", action.message)

    def _exited(self, action: Exit) -> None:
        if not self._exit.done():
            self._exit.set_result(action.code)

    # -- jobs ---------------------------------------------------------------------------------

    async def _perform(self, context: JobContext, handler: Handler, coroutine: bool) -> Any:
        token = _CURRENT.set(context)
        try:
            await self._call(context, handler, coroutine, 0)
        except asyncio.CancelledError:
            if context.abort.is_set:
                return None  # ours: the job was FAILed when it was aborted
            raise  # not ours: never swallowed
        except BaseException as error:  # a job's failure, whatever it raised
            self.worker._job_raised(error)
            return job_error(error, context.job.backtrace)
        finally:
            _CURRENT.reset(token)
        return None

    async def _call(
        self, context: JobContext, handler: Handler, coroutine: bool, depth: int
    ) -> None:
        middleware = self.worker._middleware
        if depth < len(middleware):
            await middleware[depth](
                context, lambda: self._call(context, handler, coroutine, depth + 1)
            )
        elif coroutine:
            check_result(context.job.jobtype, await handler(*context.job.args))
        else:
            run = contextvars.copy_context().run
            await self.loop.run_in_executor(self._executor, run, _in_thread, context, handler)

    def _job_done(self, jid: str, task: asyncio.Task[Any]) -> None:
        self._jobs.pop(jid, None)
        if task.cancelled():
            error: JobError | None = JobError(
                errtype="CancelledError", message="the job's task was cancelled from outside"
            )
        else:
            failure = task.exception()
            error = task.result() if failure is None else job_error(failure)
        self.feed(JobFinished(jid=jid, error=error))

    async def _finish(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for transport in self.transports.values():
            transport.close()
        for connecting in self._connecting.values():
            connecting.cancel()
        self._executor.shutdown(wait=False)
        finished = await self.loop.run_in_executor(
            None, self._heartbeat.finish, _HEARTBEAT_END_TIMEOUT
        )
        if not finished:
            _log.warning("the heartbeat did not end within %g s", _HEARTBEAT_END_TIMEOUT)
        await self.worker._run_hooks("shutdown")


def _in_thread(context: JobContext, handler: Handler) -> None:
    context._thread = threading.get_ident()
    check_result(context.job.jobtype, handler(*context.job.args))


def _task_stack(task: asyncio.Task[Any]) -> traceback.StackSummary:
    return traceback.StackSummary.extract((frame, frame.f_lineno) for frame in task.get_stack())


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
