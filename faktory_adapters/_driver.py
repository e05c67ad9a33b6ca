"""The worker driver, written once for every runtime.

A :class:`Driver` feeds :class:`faktory_core.Worker` its inputs and carries out the actions it
returns: it keeps the table of running jobs, wraps each job in the middleware chain, turns a
job's outcome into its report, logs the lifecycle, feeds the heartbeat thread, and dumps
stacks. What only a runtime knows (how bytes move, how a job runs and is interrupted, how the
loop is woken and when its timer fires) it asks of a :class:`Runtime`.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeAlias

import faktory_core as core
from faktory_core import HEARTBEAT_END_TIMEOUT, Action, Job, MachineInput
from faktory_core.machine_io import (
    AbortJob,
    AbortRequested,
    Close,
    Connect,
    Exit,
    JobError,
    JobFinished,
    Notice,
    PhaseChanged,
    ServerSignal,
    Start,
    StartJob,
    Write,
)

from . import _logging
from ._common import describe_error, job_error, logger
from ._heartbeat import HeartbeatThread

if TYPE_CHECKING:
    from ._worker_base import WorkerBase

__all__ = ["AbortSignalBase", "Driver", "Handler", "IsSet", "JobContextBase", "Runtime"]

Handler: TypeAlias = Callable[..., Any]

log: Final = logger.getChild("worker")


class IsSet:
    """What ``abort.is_set`` is: call it for the bool. Read as a bool uncalled
    (``if abort.is_set:``, once a property), it raises TypeError instead of being always true."""

    __slots__ = ("_signal",)

    def __init__(self, signal: AbortSignalBase) -> None:
        self._signal = signal

    def __call__(self) -> bool:
        """True once the job has been aborted."""
        return self._signal._reason is not None

    def __bool__(self) -> bool:
        raise TypeError("abort.is_set is a method, as threading.Event's: write abort.is_set()")

    def __repr__(self) -> str:
        return f"<abort.is_set: {self()}>"


class AbortSignalBase:
    """What every adapter's ``AbortSignal`` has: set once, with the reason (the FAIL message);
    each adapter adds its waits, named alike in every adapter (see docs/adapters.md)."""

    __slots__ = ("_reason",)

    def __init__(self) -> None:
        self._reason: str | None = None

    @property
    def is_set(self) -> IsSet:
        """``abort.is_set()``: True once the job has been aborted (called, as
        ``threading.Event.is_set``; uncalled as a bool it raises TypeError)."""
        return IsSet(self)

    @property
    def reason(self) -> str | None:
        """Why the job was aborted (the FAIL message), or None."""
        return self._reason

    def set(self, reason: str = "aborted") -> None:
        """Set the signal with ``reason``, waking its waiters: the worker does when it aborts
        the job; a test may, to see how a handler reacts. The first reason stays. The asyncio
        and thread adapters' may be set from any thread, gevent's from the hub's."""
        with _SETTING:
            if self._reason is not None:
                return
            self._reason = reason
        self._wake()

    def _wake(self) -> None:
        """Wake what waits for the signal (it is set now), from any thread."""
        raise NotImplementedError


#: Makes AbortSignalBase.set's check-and-set one step when threads race.
_SETTING: Final = threading.Lock()


class JobContextBase:
    """The running job, its abort signal, and the worker running it (each adapter's
    ``JobContext`` adds its abort signal's type and how its runtime tracks the job)."""

    __slots__ = ("_aborted", "abort", "job", "started", "worker")

    abort: Any

    def __init__(self, job: Job, worker: Any) -> None:
        self.job = job
        self.worker = worker
        #: When the job started, on the runtime's clock (for the duration in its log lines).
        self.started = 0.0
        # The worker aborted it (and FAILed it): unlike abort.is_set(), which a test, or the
        # job's own code, may have set.
        self._aborted = False

    def __repr__(self) -> str:
        return f"<JobContext {self.job.jobtype} {self.job.jid}>"


class Runtime(Protocol):
    """What the driver needs from a runtime. Every method but :meth:`wake` is called on the
    runtime's loop (its thread, its hub); none may block."""

    def now(self) -> float:
        """The monotonic clock the machine's deadlines are in."""

    def wake(self) -> None:
        """From any thread or a signal handler: have the loop call ``driver.feed()`` soon."""

    def arm_timer(self, deadline: float | None) -> None:
        """Feed ``TimerFired`` at ``deadline`` (the machine's next one, after every input)."""

    def connect(self, link: int) -> None:
        """Open ``link``'s connection; feed ConnectionMade, or ConnectionLost on failure."""

    def write(self, link: int, data: bytes) -> None:
        """Send ``data`` on ``link`` (nothing if it is gone: its loss is reported apart)."""

    def close(self, link: int) -> None:
        """Close ``link`` (or give up opening it), reporting nothing."""

    def new_context(self, job: Job) -> JobContextBase:
        """The runtime's ``JobContext`` for ``job``."""

    def start_job(self, context: Any, handler: Handler) -> None:
        """Run the job; on its end feed or post ``driver.job_finished(...)``."""

    def interrupt(self, context: Any) -> None:
        """Interrupt the job natively (its abort signal is already set)."""

    def stack(self, context: Any) -> str:
        """The job's current stack, formatted."""

    def run_hooks_later(self, kind: str) -> None:
        """Run the worker's ``kind`` hooks without blocking the loop."""

    def exited(self, code: int) -> None:
        """The machine exited with ``code``."""


class Driver:
    """One run of a worker: the machine, its running jobs and its heartbeat."""

    def __init__(self, worker: WorkerBase, config: core.WorkerConfig, runtime: Runtime) -> None:
        self.worker = worker
        self.config = config
        self.runtime = runtime
        self.observers = tuple(worker._observers)
        self.machine = core.Worker(
            config, random=worker._random.random, reports=bool(self.observers)
        )
        self.jobs: dict[str, Any] = {}
        self._inbox: deque[MachineInput] = deque()  # appends and pops are thread-safe
        self._feeding = False
        self._started = False
        self._now = 0.0
        self._connections = (0, 0)  # what observers were told: ready links, reconnects
        #: Health pings (:meth:`ping`) sent, and those the loop had seen when it last ran.
        self.pings = 0
        self.pings_answered = 0
        self._actions: dict[type[Action], Callable[[Any], None]] = {
            Write: self._write,
            Connect: self._connect,
            Close: self._close,
            StartJob: self._start_job,
            AbortJob: self._abort,
            PhaseChanged: self._phase_changed,
            Notice: self._notice,
            Exit: self._exited,
        }
        _logging.install()  # again: a factory set since the import may have dropped ours
        self.heartbeat = HeartbeatThread(
            config,
            worker._url,
            on_server_state=lambda state: self.post(ServerSignal(state=state)),
            random=worker._random.random,
            ssl_context=worker._ssl_context,
            connect_timeout=worker._connect_timeout,
        )

    @property
    def exit_code(self) -> int | None:
        """The machine's exit code once it has exited, else None."""
        return self.machine.exit_code

    @property
    def refusal(self) -> str | None:
        """Why the server refused the worker for good (it then exits 3), else None."""
        return self.machine.refusal

    # -- the run ------------------------------------------------------------------------------

    def begin(self) -> None:
        """Start the heartbeat and the machine (after the startup hooks ran); inputs that came
        meanwhile (a stop during the hooks) follow Start."""
        links = self.config.job_links
        log.info(
            "worker %s starting: %s, concurrency %d on %d connection%s",
            self.worker.wid,
            self.worker._url,
            self.config.concurrency,
            links,
            "" if links == 1 else "s",
        )
        self._say_where_jobs_go()
        self._tell("serving", self.config)
        self.heartbeat.start()
        self._started = True
        self._inbox.appendleft(Start())
        self.feed()

    def _say_where_jobs_go(self) -> None:
        """One line when job types run here push, by default, to queues this worker does not
        fetch (another worker's, on purpose, or a mistake: ``.send()`` would land there)."""
        fetched = self.config.queues
        jobs = self.worker._jobs
        elsewhere = [
            f"{name} to {jobs[name].queue!r}" for name in jobs if jobs[name].queue not in fetched
        ]
        if elsewhere:
            log.info(
                "worker %s: job types it runs push to queues it does not fetch (%s): %s",
                self.worker.wid,
                ", ".join(fetched),
                "; ".join(elsewhere),
            )

    def interrupted(self, reason: str) -> None:
        """The code serving the worker was interrupted: abort, FAIL what runs naming
        ``reason``, and END (the machine bounds that: abort grace, then the END timeout)."""
        log.warning("worker %s: %s; aborting", self.worker.wid, reason)
        self.feed(AbortRequested(reason=reason))

    def interrupted_again(self, error: BaseException) -> None:
        log.warning(
            "worker %s interrupted again (%s): exiting without waiting",
            self.worker.wid,
            type(error).__name__,
        )

    def finish_heartbeat(self) -> None:
        """Have the heartbeat send END and stop; blocks up to HEARTBEAT_END_TIMEOUT s."""
        if not self.heartbeat.finish(HEARTBEAT_END_TIMEOUT):
            log.warning("the heartbeat did not end within %g s", HEARTBEAT_END_TIMEOUT)

    def ended(self, code: int) -> int:
        log.info("worker %s exiting with code %d", self.worker.wid, code)
        return code

    # -- inputs -------------------------------------------------------------------------------

    def ping(self) -> None:
        """From one thread at a time (the health checks'): ask the loop to show that it
        turns. It answers on its next turn, when :attr:`pings_answered` catches up with
        :attr:`pings`; a loop that a job blocks does not."""
        self.pings += 1
        self.runtime.wake()

    def post(self, event: MachineInput) -> None:
        """Queue an input from any thread (or a signal handler) and wake the loop."""
        self._inbox.append(event)
        self.runtime.wake()

    def feed(self, event: MachineInput | None = None) -> None:
        """On the loop: give the machine ``event`` and what waits, and carry out its actions.

        Never re-entered (an input that comes while actions run waits its turn); inputs that
        come before :meth:`begin` wait for it.
        """
        self.pings_answered = self.pings  # the loop runs: the pings sent so far are answered
        if event is not None:
            self._inbox.append(event)
        if self._feeding or not self._started:
            return
        self._feeding = True
        try:
            inbox, handle, now, actions = (
                self._inbox,
                self.machine.handle,
                self.runtime.now,
                self._actions,
            )
            while inbox:  # after the exit, the machine ignores what comes
                self._now = now()  # the machine's now, for what its actions start
                for action in handle(inbox.popleft(), self._now):
                    actions[type(action)](action)
            if self.observers:
                self._tell_observers()
            self.runtime.arm_timer(self.machine.next_deadline)
        finally:
            self._feeding = False

    def _tell_observers(self) -> None:
        """Tell observers how jobs ended, and how the connections changed, since last time."""
        machine = self.machine
        for report in machine.take_reports():
            self._tell("job_ended", report)
        connections = (machine.ready_links, machine.reconnects)
        if connections != self._connections:
            self._connections = connections
            self._tell("connections_changed", *connections)

    # -- jobs ---------------------------------------------------------------------------------

    def chain(self, context: Any, innermost: Callable[[], Any]) -> Callable[[], Any]:
        """``innermost`` (the handler's call) wrapped in the middleware, outermost first."""
        call = innermost
        for middleware in reversed(self.worker._middleware):
            call = functools.partial(middleware, context, call)
        return call

    def failed(self, context: JobContextBase, error: BaseException) -> JobError:
        """Log a job that raised ``error`` and return its report (``error`` is kept for
        drain() to re-raise)."""
        self.worker._job_raised(error)
        self._say(
            logging.ERROR, context, "failed after %s: %s", describe_error(error), exc_info=error
        )
        return job_error(error)

    def cancelled(self, context: JobContextBase) -> None:
        """Log a job whose task something other than the worker cancelled (it is FAILed)."""
        self._say(
            logging.ERROR, context, "failed after %s: its task was cancelled, not by the worker"
        )

    def succeeded(self, context: JobContextBase) -> None:
        """Log a job that returned (at DEBUG: the default level pays one check)."""
        if log.isEnabledFor(logging.DEBUG):
            self._say(logging.DEBUG, context, "done in %s")

    def _say(
        self,
        level: int,
        context: JobContextBase,
        what: str,
        *args: object,
        exc_info: BaseException | None = None,
    ) -> None:
        """Log ``"<jobtype> <jid> " + what`` about a job, with its fields in the record; the
        first ``%s`` of ``what`` is how long the job has run."""
        job = context.job
        ran = f"{self.runtime.now() - context.started:.3f} s"
        with _logging.about(context):
            log.log(level, f"%s %s {what}", job.jobtype, job.jid, ran, *args, exc_info=exc_info)

    def job_finished(self, jid: str, error: JobError | None) -> JobFinished:
        """The job is done: forget it, and return the input to feed (or post) the machine."""
        self.jobs.pop(jid, None)
        return JobFinished(jid=jid, error=error)

    def dump_jobs(self) -> None:
        """Log each running job with its own stack (TTIN)."""
        contexts = list(self.jobs.values())
        log.warning("worker %s: %d job(s) running", self.worker.wid, len(contexts))
        for context in contexts:
            self._say(logging.WARNING, context, "running for %s:\n%s", self.runtime.stack(context))

    # -- actions ------------------------------------------------------------------------------

    def _write(self, action: Write) -> None:
        self.runtime.write(action.link, action.data)

    def _connect(self, action: Connect) -> None:
        self.runtime.connect(action.link)

    def _close(self, action: Close) -> None:
        self.runtime.close(action.link)

    def _start_job(self, action: StartJob) -> None:
        job = action.job
        context = self.runtime.new_context(job)
        context.started = self._now  # the machine's start, as in the job's report
        self.jobs[job.jid] = context
        if self.observers:
            self._tell("job_started", job, context.started)
        self.runtime.start_job(context, self.worker._handler(job.jobtype))

    def _abort(self, action: AbortJob) -> None:
        context = self.jobs.get(action.jid)
        if context is None:
            return
        self._say(logging.WARNING, context, "aborted after %s: %s", action.message)
        context._aborted = True
        context.abort.set(action.message)
        if self.worker._interrupts(context.job.jobtype):
            self.runtime.interrupt(context)

    def _phase_changed(self, action: PhaseChanged) -> None:
        log.info("worker %s: %s (%s)", self.worker.wid, action.phase.value, action.trigger.value)
        self.heartbeat.report_phase(action.phase)
        self._tell("phase_changed", action.phase)
        if action.stops_fetching:
            self.runtime.run_hooks_later("quiet")

    def _notice(self, action: Notice) -> None:
        if action.job is None:
            log.log(action.level, "%s", action.message)
        else:
            with _logging.about(action.job):
                log.log(action.level, "%s", action.message)

    def _exited(self, action: Exit) -> None:
        self.runtime.exited(action.code)

    def _tell(self, method: str, *args: Any) -> None:
        """Call ``method`` of every observer; one that raises is logged, and the worker goes
        on (metrics must never cost a job)."""
        for observer in self.observers:
            try:
                getattr(observer, method)(*args)
            except Exception:
                log.exception(
                    "worker %s: observer %r failed in %s", self.worker.wid, observer, method
                )
