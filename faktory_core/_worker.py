"""The whole life of a worker process as a deterministic machine: inputs and ``now`` in,
actions out.

The machine owns its job links' protocol state and decides everything a worker decides: when
to connect, what to write, which job to start or abort, when to END and with which exit code.
Job slots are not connections: ``config.job_links`` links (20 at most by default) feed up to
``concurrency`` running jobs. A link free to send FETCHes while a slot is free (no more
FETCHes in flight than free slots), and carries every ACK and FAIL owed, pipelined with its
next FETCH. With more slots than links, one link never waits in a FETCH, which the server
holds ~2 s on an empty queue, so that a finished or aborted job's report goes out at once.
The heartbeat lives in its own machine (:mod:`faktory_core._heartbeat`), so that an adapter
can beat from a thread of its own however busy the jobs keep the runtime.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from logging import ERROR, WARNING  # level numbers only: the core does no logging
from typing import Final

import attrs

from ._config import WorkerConfig
from ._errors import LocalProtocolError
from ._job import Job
from ._lifecycle import (
    EXIT_ABORTED,
    EXIT_CLEAN,
    EXIT_REFUSED,
    PHASES,
    Phase,
    Trigger,
    next_phase,
)
from ._links import Link, LinkInput, LinkMachine, LinkStatus, Random
from .commands import Ack, Command, Fail, Fetch, Hello, WorkerState, cut_backtrace
from .events import OK, Event, Fetched, InvalidJobFetched, ServerError
from .machine_io import (
    AbortJob,
    AbortReason,
    AbortRequested,
    Close,
    ConnectionLost,
    ConnectionMade,
    DataReceived,
    Exit,
    JobFinished,
    JobOutcome,
    JobReport,
    MachineInput,
    Notice,
    PhaseChanged,
    QuietRequested,
    ServerSignal,
    Start,
    StartJob,
    StopRequested,
    TimerFired,
)

__all__ = [
    "ERRTYPE_DUPLICATE_JID",
    "ERRTYPE_INVALID_JOB",
    "ERRTYPE_UNKNOWN_JOBTYPE",
    "Worker",
    "weighted_order",
]

#: errtype of the FAIL sent for a fetched job of a type no handler is registered for.
ERRTYPE_UNKNOWN_JOBTYPE: Final = "UnknownJobType"
#: errtype of the FAIL sent for a fetched payload that is not a valid job.
ERRTYPE_INVALID_JOB: Final = "InvalidJob"
#: errtype of the FAIL sent for a fetched job whose jid is already running in this process.
ERRTYPE_DUPLICATE_JID: Final = "DuplicateJid"

#: Why a refusal stops the worker, unless a reason of its own says otherwise.
_FINAL: Final = "retrying cannot change that"


def weighted_order(weights: Mapping[str, int], random: Random) -> list[str]:
    """A weighted random order of the queues: each next queue is drawn from those left with
    probability proportional to its weight.

    A queue of weight 3 next to one of weight 1 comes first three times in four. It costs one
    draw and one logarithm per queue, whatever the weights (Efraimidis and Spirakis: each queue
    gets the key ``log(u) / weight``, and the largest keys come first).
    """
    # 1 - random() is in (0, 1], so the logarithm is finite; its key is 0.0 only for u = 1.
    keys = {name: math.log(1.0 - random()) / weight for name, weight in weights.items()}
    return sorted(keys, key=keys.__getitem__, reverse=True)


@attrs.define(eq=False)
class _Running:
    job: Job
    started: float
    aborted: bool = False


@attrs.define(eq=False)
class _JobLink(Link):
    fetching: bool = False


class Worker(LinkMachine[_JobLink]):
    """The worker machine: feed it inputs with :meth:`handle`, carry out the actions it returns.

    Links are numbered 0..config.job_links-1; any of them carries any job's report.
    Randomness (weighted queue order, reconnect jitter) comes only from ``random``, so a run
    replays exactly from its inputs and a seeded generator; pass a list as ``journal`` to
    record every ``(now, input)`` pair, and ``reports=True`` to keep a report of how each job
    ended, for :meth:`take_reports`.

    The server refuses the worker for good (:attr:`refusal`, exit code ``EXIT_REFUSED``) on a
    wrong password, an untrusted certificate, or, in burst mode, when a job link fails to
    connect or handshake before the server ever accepted one: a burst run does not wait for a
    server it cannot use. A long-running worker retries such failures for ever.
    """

    _back = "connected again: every job link is ready"

    def __init__(
        self,
        config: WorkerConfig,
        *,
        random: Random,
        journal: list[tuple[float, MachineInput]] | None = None,
        reports: bool = False,
    ) -> None:
        links = [_JobLink(id=index) for index in range(config.job_links)]
        super().__init__(config, links, random=random, journal=journal)
        self._phase = Phase.RUNNING
        #: Jobs started and not finished, by jid (aborted ones until they end).
        self._running: dict[str, _Running] = {}
        #: Links whose FETCH is awaited: with the running jobs, never more than concurrency.
        self._fetching = 0
        #: With more slots than links, one link stays out of FETCH to carry reports at once.
        spare = 1 if config.concurrency > len(links) > 1 else 0
        self._max_fetching = len(links) - spare
        #: ACKs and FAILs not yet sent: the next link free to send takes them all. Those sent
        #: and then lost with their connection come back here, so they survive reconnects.
        self._owed: list[Command] = []
        #: Ids of the links left idle by their last pump, perhaps no longer: the only ones
        #: _pump_any tries, rather than every link at every input. A link becomes idle only
        #: when a reply (or the handshake's OK) arrives, and _on_data pumps it then.
        self._spare: set[int] = set()
        #: Time-limit deadlines of running jobs, by jid.
        self._limits: dict[str, float] = {}
        self._phase_deadline: float | None = None
        self._aborted_any = False
        #: Why an AbortRequested came (the FAIL message names it).
        self._abort_reason: str | None = None
        #: Why the server refused this worker for good, if it did.
        self._refusal: str | None = None
        #: How jobs ended, until take_reports() takes them; None: not kept (reports=False).
        self._reports: list[JobReport] | None = [] if reports else None
        self._exit_code: int | None = None
        self._strict_fetch = (
            Fetch(queues=config.queues)
            if config.queue_order is None and isinstance(config.queues, tuple)
            else None
        )

    @property
    def phase(self) -> Phase:
        """Where the worker is in its life."""
        return self._phase

    @property
    def exit_code(self) -> int | None:
        """The exit code once the worker has exited, else None."""
        return self._exit_code

    @property
    def refusal(self) -> str | None:
        """Why the server refused this worker for good (it stops, then exits with
        ``EXIT_REFUSED``), else None: what an adapter raises from a drain."""
        return self._refusal

    @property
    def _over(self) -> bool:
        return self._exit_code is not None

    @property
    def running(self) -> tuple[Job, ...]:
        """The jobs started and not yet finished, aborted ones included; after the exit, those
        left running then (every one aborted: the exit ignores their JobFinished)."""
        return tuple(running.job for running in self._running.values())

    def take_reports(self) -> list[JobReport]:
        """How the jobs ended since the last call, in order: one report per job the worker
        ACKed or FAILed (aborted jobs at their abort; a job it could not even build, FAILed as
        InvalidJob, has no job to report). For metrics; nothing else reads them."""
        if self._reports is None:
            raise LocalProtocolError("this Worker keeps no reports: create it with reports=True")
        reports, self._reports = self._reports, []
        return reports

    @property
    def next_deadline(self) -> float | None:
        """When to send TimerFired next (monotonic seconds), or None if nothing is timed."""
        best = self._link_deadline()
        phase = self._phase_deadline
        if phase is not None and (best is None or phase < best):
            best = phase
        if self._limits:
            limit = min(self._limits.values())
            if best is None or limit < best:
                best = limit
        return best

    # -- inputs -------------------------------------------------------------------------------

    def _on_start(self, event: Start, now: float) -> None:
        self._start()

    def _on_job_finished(self, event: JobFinished, now: float) -> None:
        running = self._running.pop(event.jid, None)
        if running is None:
            raise LocalProtocolError(f"no job {event.jid!r} is running")
        self._limits.pop(event.jid, None)
        if not running.aborted:  # an aborted job was FAILed (and reported) at its abort
            error = event.error
            self._owed.append(
                Ack(jid=event.jid)
                if error is None
                else Fail(
                    jid=event.jid,
                    errtype=error.errtype,
                    message=error.message,
                    backtrace=cut_backtrace(error.backtrace, running.job.backtrace),
                )
            )
            outcome = JobOutcome.SUCCEEDED if error is None else JobOutcome.FAILED
            errtype = None if error is None else error.errtype
            self._report(running.job, outcome, errtype, running.started, now)
        self._settle(now)  # which sends its report, and a FETCH for the slot it freed

    def _on_quiet(self, event: QuietRequested, now: float) -> None:
        self._fire(Trigger.QUIET, now)
        self._settle(now)

    def _on_stop(self, event: StopRequested, now: float) -> None:
        self._fire(Trigger.STOP, now)
        self._settle(now)

    def _on_abort_requested(self, event: AbortRequested, now: float) -> None:
        if self._abort_reason is None:
            self._abort_reason = event.reason
        self._fire(Trigger.ABORT, now)
        self._settle(now)

    def _refused(self, reason: str, now: float, note: str = _FINAL) -> None:
        if self._refusal is None:
            self._refusal = reason
            self._emit(Notice(message=f"stopping: {reason}; {note}", level=ERROR))
        self._fire(Trigger.REFUSED, now)

    @property
    def _refused_already(self) -> bool:
        return self._refusal is not None

    def _refusal_note(self, link: _JobLink, permanent: bool) -> str | None:
        if permanent:
            return _FINAL
        if (
            self.config.burst
            and not self._accepted_once
            and link.status in (LinkStatus.CONNECTING, LinkStatus.HANDSHAKING)
        ):
            return "burst mode does not wait for a server it has not reached yet"
        return None

    def _on_server_signal(self, event: ServerSignal, now: float) -> None:
        trigger = _SERVER_STATES.get(event.state)
        if trigger is not None:
            self._fire(trigger, now)
            self._settle(now)

    def _on_timer(self, event: TimerFired, now: float) -> None:
        deadline = self._phase_deadline
        if deadline is not None and now >= deadline:
            self._phase_deadline = None
            trigger = PHASES[self._phase].on_timeout
            assert trigger is not None  # only a phase with a timeout sets a deadline
            self._fire(trigger, now)
        self._expire_links(now)
        for jid, limit_at in list(self._limits.items()):
            if now >= limit_at:
                limit = self.config.time_limit(self._running[jid].job.jobtype)
                self._abort(jid, AbortReason.TIME_LIMIT, f"ran longer than {limit:g} s", now)
        self._settle(now)

    # -- replies ------------------------------------------------------------------------------

    def _on_event(self, link: _JobLink, event: Event, now: float) -> None:
        if isinstance(event, OK):
            pass  # an ACK or FAIL delivered: nothing more is owed for it
        elif isinstance(event, Fetched):
            self._fetched(link)
            if event.job is not None:
                self._on_job(link, event.job, now)
            elif self.config.burst:
                self._fire(Trigger.QUEUES_EMPTY, now)
        elif isinstance(event, InvalidJobFetched):
            self._fetched(link)
            if event.jid is None:
                outcome = (
                    "without a jid it cannot be FAILed: the server retries it when its "
                    "reservation runs out"
                )
            else:
                outcome = f"FAILed as {ERRTYPE_INVALID_JOB}, the server retries it"
                fail = Fail(jid=event.jid, errtype=ERRTYPE_INVALID_JOB, message=event.reason)
                self._owed.append(fail)
            jid = "no jid" if event.jid is None else f"jid {event.jid}"
            message = f"invalid job fetched ({jid}): {event.reason}: {outcome}"
            self._emit(Notice(message=message, link=link.id, level=WARNING))
        elif isinstance(event, ServerError):
            self._on_server_error(link, event, now)

    def _fetched(self, link: _JobLink) -> None:
        """``link``'s FETCH is answered (or lost): its slot is free again, or taken by a job."""
        if link.fetching:
            link.fetching = False
            self._fetching -= 1

    def _on_server_error(self, link: _JobLink, error: ServerError, now: float) -> None:
        command = error.command
        text = f"{error.code} {error.message}"
        if isinstance(command, (Ack, Fail)):
            # "Job not found": the reservation is gone (expired, or already FAILed); nothing
            # more can be done for this job here.
            notice = f"{command.verb} {command.jid} refused: {text}"
            self._emit(Notice(message=notice, link=link.id))
        elif isinstance(command, Hello):
            # A wrong password (or a HELLO the server will never take): the same every time.
            self._refused(f"the server refused HELLO: {text}", now)
        else:
            # An unasked error precedes a close; a refused FETCH means trouble server-side.
            self._drop(link, now, f"server error: {text}")

    def _on_job(self, link: _JobLink, job: Job, now: float) -> None:
        if not PHASES[self._phase].starts_fetched_jobs:
            self._aborted_any = True
            errtype = AbortReason.SHUTDOWN.value
            self._owed.append(Fail(jid=job.jid, errtype=errtype, message=_LATE_JOB))
            what = (
                f"job {job.jobtype!r} (jid {job.jid}) was fetched after the worker began aborting"
            )
            self._job_notice(link, job, what, errtype, now, outcome=JobOutcome.ABORTED)
            return
        jobtypes = self.config.jobtypes
        if jobtypes is not None and job.jobtype not in jobtypes:
            message = f"no handler is registered for job type {job.jobtype!r}"
            self._owed.append(Fail(jid=job.jid, errtype=ERRTYPE_UNKNOWN_JOBTYPE, message=message))
            self._job_notice(
                link,
                job,
                f"no handler is registered for job type {job.jobtype!r} (jid {job.jid})",
                ERRTYPE_UNKNOWN_JOBTYPE,
                now,
                advice="register a handler or check the worker's queues",
            )
            return
        if job.jid in self._running:
            # Faktory does not enforce unique jids, but it keeps one reservation per jid: the
            # copy is retried later rather than run alongside.
            message = f"a job with jid {job.jid} is already running here"
            self._owed.append(Fail(jid=job.jid, errtype=ERRTYPE_DUPLICATE_JID, message=message))
            self._job_notice(
                link,
                job,
                f"job {job.jobtype!r} (jid {job.jid}) is already running here under that jid",
                ERRTYPE_DUPLICATE_JID,
                now,
                advice="give every job a jid of its own",
            )
            return
        limit = self.config.time_limit(job.jobtype)
        self._running[job.jid] = _Running(job=job, started=now)
        if limit is not None:
            self._limits[job.jid] = now + limit
        self._emit(StartJob(job=job))

    def _job_notice(
        self,
        link: _JobLink,
        job: Job,
        what: str,
        failed_as: str,
        now: float,
        *,
        advice: str | None = None,
        outcome: JobOutcome = JobOutcome.FAILED,
    ) -> None:
        """A WARNING, and the report, about a fetched job the worker FAILed itself, without
        running it."""
        message = f"{what}: FAILed as {failed_as} without running it, the server retries it"
        if advice is not None:
            message = f"{message}; {advice}"
        self._emit(Notice(message=message, link=link.id, level=WARNING, job=job))
        self._report(job, outcome, failed_as, None, now)

    def _report(
        self,
        job: Job,
        outcome: JobOutcome,
        errtype: str | None,
        started: float | None,
        now: float,
    ) -> None:
        """Keep the report of a job that ended; ``started`` None: it never ran."""
        if self._reports is not None:
            self._reports.append(
                JobReport(
                    job=job,
                    outcome=outcome,
                    errtype=errtype,
                    ran=started is not None,
                    started=now if started is None else started,
                    finished=now,
                )
            )

    # -- the lifecycle ------------------------------------------------------------------------

    def _fire(self, trigger: Trigger, now: float) -> None:
        previous = self._phase
        phase = next_phase(previous, trigger)
        if phase is previous:
            return
        self._phase = phase
        self._phase_deadline = PHASES[phase].deadline(self.config, now)
        self._emit(PhaseChanged(previous=previous, phase=phase, trigger=trigger))
        enter = _ENTER.get(phase)
        if enter is not None:
            enter(self, trigger, now)

    def _enter_aborting(self, trigger: Trigger, now: float) -> None:
        if trigger is Trigger.STOP:
            why = "aborted: the worker was told to stop a second time"
        elif trigger is Trigger.ABORT:
            why = f"aborted: {self._abort_reason}"
        else:
            timeout = self.config.shutdown_timeout
            why = f"aborted: still running after the {timeout:g} s shutdown timeout"
        for jid, running in list(self._running.items()):
            if not running.aborted:
                self._abort(jid, AbortReason.SHUTDOWN, why, now)  # _settle sends every FAIL

    def _enter_ending(self, trigger: Trigger, now: float) -> None:
        self._closing = True
        for link in self._links:
            if not self._reconnect_when_closing():
                self._give_up(link)
            self._pump(link, now)

    def _enter_exited(self, trigger: Trigger, now: float) -> None:
        undelivered = self._undelivered()
        for link in self._links:
            if link.status is not LinkStatus.CLOSED:
                self._emit(Close(link=link.id))
                self._move(link, LinkInput.GIVE_UP)
            link.connection = None
            self._set_reply_due(link, None)
            self._set_retry_at(link, None)
        self._limits.clear()
        if undelivered:
            jids = ", ".join(undelivered)
            self._emit(Notice(message=f"exiting with ACK/FAIL undelivered for {jids}"))
        if self._refusal is not None:
            self._exit_code = EXIT_REFUSED
        else:
            self._exit_code = EXIT_ABORTED if self._aborted_any else EXIT_CLEAN
        self._emit(Exit(code=self._exit_code))

    def _undelivered(self) -> list[str]:
        """The jids whose ACK or FAIL the server has not confirmed."""
        reports = self._owed + [
            command
            for link in self._links
            if link.connection is not None
            for command in link.connection.pending
        ]
        return [command.jid for command in reports if isinstance(command, (Ack, Fail))]

    def _settle(self, now: float) -> None:
        self._pump_any(now)
        if PHASES[self._phase].ends_when_drained and not (self._running or self._fetching):
            self._fire(Trigger.DRAINED, now)
        if self._phase is Phase.ENDING:
            if not self._reconnect_when_closing():
                for link in self._links:  # nothing left to deliver: stop reconnecting
                    self._give_up(link)
            if all(link.status is LinkStatus.CLOSED for link in self._links):
                self._fire(Trigger.ENDED, now)

    def _abort(self, jid: str, reason: AbortReason, message: str, now: float) -> None:
        """Abort a running job and owe its FAIL (:meth:`_settle` sends what is owed)."""
        running = self._running[jid]
        running.aborted = True
        self._report(running.job, JobOutcome.ABORTED, reason.value, running.started, now)
        if reason is AbortReason.SHUTDOWN:
            self._aborted_any = True
        self._limits.pop(jid, None)
        self._emit(AbortJob(jid=jid, reason=reason, message=message))
        self._owed.append(Fail(jid=jid, errtype=reason.value, message=message))

    # -- links --------------------------------------------------------------------------------

    def _on_drop(self, link: _JobLink, lost: tuple[Command, ...], now: float) -> None:
        self._fetched(link)  # a job it would have returned stays reserved on the server
        # ACKs and FAILs that got no reply may not have arrived: send them again (an ACK or
        # FAIL that did arrive is answered +OK or "Job not found" the second time), on a free
        # link now if there is one, else on the first to be free (_settle sends them). Its
        # FETCH may move to another link too.
        self._owed.extend(command for command in lost if isinstance(command, (Ack, Fail)))

    def _reconnect_when_closing(self) -> bool:
        return bool(self._owed) or any(
            isinstance(command, (Ack, Fail))
            for link in self._links
            if link.connection is not None
            for command in link.connection.pending
        )

    @property
    def _may_fetch(self) -> bool:
        """Whether a FETCH may go out now: the phase fetches, a slot is free for its job, and
        the links' FETCH budget is not spent."""
        return (
            PHASES[self._phase].fetches
            and self._fetching < self._max_fetching
            and len(self._running) + self._fetching < self.config.concurrency
        )

    def _pump_any(self, now: float) -> None:
        """Send what is owed, and the FETCHes the free slots allow, on the links free to."""
        spare = self._spare
        while spare and (self._owed or self._may_fetch):
            self._pump(self._links[spare.pop()], now)  # each one sends, or is not idle

    def _pump(self, link: _JobLink, now: float) -> None:
        """Send everything owed on this link, and a FETCH if one may go out, if it is free to;
        in ENDING, END it once it has nothing left to send."""
        if not link.idle:
            return
        spare = self._spare
        spare.add(link.id)  # until it sends: one whose queue_order raised is tried again
        fetch = self._fetch() if self._may_fetch else None  # first: a queue_order may raise
        commands, self._owed = self._owed, []
        if fetch is not None:
            commands.append(fetch)
            link.fetching = True
            self._fetching += 1
        if commands:
            spare.discard(link.id)
            self._send(link, commands, now)
        elif self._phase is Phase.ENDING:
            spare.discard(link.id)
            self._end(link)

    def _fetch(self) -> Fetch:
        if self._strict_fetch is not None:
            return self._strict_fetch
        order = self.config.queue_order
        if order is not None:
            return Fetch(queues=tuple(order()))
        queues = self.config.queues
        assert isinstance(queues, dict)
        return Fetch(queues=tuple(weighted_order(queues, self._random)))

    _inputs = {  # noqa: RUF012 - read-only table
        Start: _on_start,
        ConnectionMade: LinkMachine._on_connection_made,
        DataReceived: LinkMachine._on_data,
        ConnectionLost: LinkMachine._on_connection_lost,
        JobFinished: _on_job_finished,
        QuietRequested: _on_quiet,
        StopRequested: _on_stop,
        AbortRequested: _on_abort_requested,
        ServerSignal: _on_server_signal,
        TimerFired: _on_timer,
    }


_LATE_JOB: Final = "aborted: fetched after the worker began aborting; it was not started"

_SERVER_STATES: Final = {
    WorkerState.QUIET: Trigger.SERVER_QUIET,
    WorkerState.TERMINATE: Trigger.SERVER_TERMINATE,
}

#: What entering a phase does beyond what PHASES says (its deadline is set from there).
_ENTER: Final[dict[Phase, Callable[[Worker, Trigger, float], None]]] = {
    Phase.ABORTING: Worker._enter_aborting,
    Phase.ENDING: Worker._enter_ending,
    Phase.EXITED: Worker._enter_exited,
}
