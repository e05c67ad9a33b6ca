"""The whole life of a worker process as a deterministic machine: inputs and ``now`` in,
actions out.

The machine owns its job links' protocol state and decides everything a worker decides: when
to connect, what to write, which job to start or abort, when to END and with which exit code.
Each link carries one job slot: FETCH, then the job's ACK or FAIL pipelined with the next
FETCH, so a finished job's report never waits behind a blocking FETCH (its link is idle while
the job runs). The heartbeat lives in its own machine (:mod:`faktory_core._heartbeat`), so
that an adapter can beat from a thread of its own however busy the jobs keep the runtime.
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
    aborted: bool = False


@attrs.define(eq=False)
class _Slot(Link):
    job: _Running | None = None
    fetching: bool = False


class Worker(LinkMachine[_Slot]):
    """The worker machine: feed it inputs with :meth:`handle`, carry out the actions it returns.

    Links are numbered 0..concurrency-1. Randomness (weighted queue order, reconnect jitter)
    comes only from ``random``, so a run replays exactly from its inputs and a seeded
    generator; pass a list as ``journal`` to record every ``(now, input)`` pair.

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
    ) -> None:
        slots = [_Slot(id=index) for index in range(config.concurrency)]
        super().__init__(config, slots, random=random, journal=journal)
        self._phase = Phase.RUNNING
        self._by_jid: dict[str, _Slot] = {}
        #: ACKs and FAILs not yet sent, each with the link it should go on (its job's). Any
        #: idle link takes those whose own link is busy or down; those sent and then lost with
        #: their connection come back here, so they survive reconnects.
        self._owed: list[tuple[Command, int]] = []
        #: Time-limit deadlines of running jobs, by jid.
        self._limits: dict[str, float] = {}
        self._phase_deadline: float | None = None
        self._aborted_any = False
        #: Why an AbortRequested came (the FAIL message names it).
        self._abort_reason: str | None = None
        #: Why the server refused this worker for good, if it did.
        self._refusal: str | None = None
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
        return tuple(slot.job.job for slot in self._links if slot.job is not None)

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
        slot = self._by_jid.pop(event.jid, None)
        if slot is None or slot.job is None:
            raise LocalProtocolError(f"no job {event.jid!r} is running")
        running, slot.job = slot.job, None
        self._limits.pop(event.jid, None)
        if not running.aborted:  # an aborted job was FAILed when it was aborted
            error = event.error
            self._owe(
                Ack(jid=event.jid)
                if error is None
                else Fail(
                    jid=event.jid,
                    errtype=error.errtype,
                    message=error.message,
                    backtrace=cut_backtrace(error.backtrace, running.job.backtrace),
                ),
                slot,
                now,
            )
        self._pump(slot, now)
        self._settle(now)

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

    def _refusal_note(self, link: _Slot, permanent: bool) -> str | None:
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
                slot = self._by_jid[jid]
                assert slot.job is not None
                limit = self.config.time_limit(slot.job.job.jobtype)
                self._abort(slot, AbortReason.TIME_LIMIT, f"ran longer than {limit:g} s", now)
        self._settle(now)

    # -- replies ------------------------------------------------------------------------------

    def _on_event(self, slot: _Slot, event: Event, now: float) -> None:
        if isinstance(event, OK):
            pass  # an ACK or FAIL delivered: nothing more is owed for it
        elif isinstance(event, Fetched):
            slot.fetching = False
            if event.job is not None:
                self._on_job(slot, event.job, now)
            elif self.config.burst:
                self._fire(Trigger.QUEUES_EMPTY, now)
        elif isinstance(event, InvalidJobFetched):
            slot.fetching = False
            if event.jid is None:
                outcome = (
                    "without a jid it cannot be FAILed: the server retries it when its "
                    "reservation runs out"
                )
            else:
                outcome = f"FAILed as {ERRTYPE_INVALID_JOB}, the server retries it"
                fail = Fail(jid=event.jid, errtype=ERRTYPE_INVALID_JOB, message=event.reason)
                self._owe(fail, slot, now)
            jid = "no jid" if event.jid is None else f"jid {event.jid}"
            message = f"invalid job fetched ({jid}): {event.reason}: {outcome}"
            self._emit(Notice(message=message, link=slot.id, level=WARNING))
        elif isinstance(event, ServerError):
            self._on_server_error(slot, event, now)

    def _on_server_error(self, slot: _Slot, error: ServerError, now: float) -> None:
        command = error.command
        text = f"{error.code} {error.message}"
        if isinstance(command, (Ack, Fail)):
            # "Job not found": the reservation is gone (expired, or already FAILed); nothing
            # more can be done for this job here.
            notice = f"{command.verb} {command.jid} refused: {text}"
            self._emit(Notice(message=notice, link=slot.id))
        elif isinstance(command, Hello):
            # A wrong password (or a HELLO the server will never take): the same every time.
            self._refused(f"the server refused HELLO: {text}", now)
        else:
            # An unasked error precedes a close; a refused FETCH means trouble server-side.
            self._drop(slot, now, f"server error: {text}")

    def _on_job(self, slot: _Slot, job: Job, now: float) -> None:
        if not PHASES[self._phase].starts_fetched_jobs:
            self._aborted_any = True
            errtype = AbortReason.SHUTDOWN.value
            self._owe(Fail(jid=job.jid, errtype=errtype, message=_LATE_JOB), slot, now)
            what = (
                f"job {job.jobtype!r} (jid {job.jid}) was fetched after the worker began aborting"
            )
            self._job_notice(slot, job, what, errtype)
            return
        jobtypes = self.config.jobtypes
        if jobtypes is not None and job.jobtype not in jobtypes:
            message = f"no handler is registered for job type {job.jobtype!r}"
            self._owe(
                Fail(jid=job.jid, errtype=ERRTYPE_UNKNOWN_JOBTYPE, message=message), slot, now
            )
            self._job_notice(
                slot,
                job,
                f"no handler is registered for job type {job.jobtype!r} (jid {job.jid})",
                ERRTYPE_UNKNOWN_JOBTYPE,
                "register a handler or check the worker's queues",
            )
            return
        if job.jid in self._by_jid:
            # Faktory does not enforce unique jids, but it keeps one reservation per jid: the
            # copy is retried later rather than run alongside.
            message = f"a job with jid {job.jid} is already running here"
            self._owe(Fail(jid=job.jid, errtype=ERRTYPE_DUPLICATE_JID, message=message), slot, now)
            self._job_notice(
                slot,
                job,
                f"job {job.jobtype!r} (jid {job.jid}) is already running here under that jid",
                ERRTYPE_DUPLICATE_JID,
                "give every job a jid of its own",
            )
            return
        limit = self.config.time_limit(job.jobtype)
        slot.job = _Running(job=job)
        if limit is not None:
            self._limits[job.jid] = now + limit
        self._by_jid[job.jid] = slot
        self._emit(StartJob(job=job))

    def _job_notice(
        self, slot: _Slot, job: Job, what: str, failed_as: str, advice: str | None = None
    ) -> None:
        """A WARNING about a fetched job the worker FAILed itself, without running it."""
        message = f"{what}: FAILed as {failed_as} without running it, the server retries it"
        if advice is not None:
            message = f"{message}; {advice}"
        self._emit(Notice(message=message, link=slot.id, level=WARNING, job=job))

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
        aborted = [slot for slot in self._links if slot.job is not None and not slot.job.aborted]
        for slot in aborted:  # every FAIL is owed before any is sent: each takes its own link
            self._abort(slot, AbortReason.SHUTDOWN, why, now, send=False)
        for slot in aborted:
            self._owe_flush(slot, now)

    def _enter_ending(self, trigger: Trigger, now: float) -> None:
        self._closing = True
        for slot in self._links:
            if not self._reconnect_when_closing():
                self._give_up(slot)
            self._pump(slot, now)

    def _enter_exited(self, trigger: Trigger, now: float) -> None:
        undelivered = self._undelivered()
        for slot in self._links:
            if slot.status is not LinkStatus.CLOSED:
                self._emit(Close(link=slot.id))
                self._move(slot, LinkInput.GIVE_UP)
            slot.connection = None
            self._set_reply_due(slot, None)
            self._set_retry_at(slot, None)
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
        reports = [command for command, _ in self._owed] + [
            command
            for slot in self._links
            if slot.connection is not None
            for command in slot.connection.pending
        ]
        return [command.jid for command in reports if isinstance(command, (Ack, Fail))]

    def _settle(self, now: float) -> None:
        if PHASES[self._phase].ends_when_drained and not any(
            slot.job is not None or slot.fetching for slot in self._links
        ):
            self._fire(Trigger.DRAINED, now)
        if self._phase is Phase.ENDING:
            if not self._reconnect_when_closing():
                for slot in self._links:  # nothing left to deliver: stop reconnecting
                    self._give_up(slot)
            if all(slot.status is LinkStatus.CLOSED for slot in self._links):
                self._fire(Trigger.ENDED, now)

    def _abort(
        self, slot: _Slot, reason: AbortReason, message: str, now: float, *, send: bool = True
    ) -> None:
        running = slot.job
        assert running is not None
        running.aborted = True
        if reason is AbortReason.SHUTDOWN:
            self._aborted_any = True
        jid = running.job.jid
        self._limits.pop(jid, None)
        self._emit(AbortJob(jid=jid, reason=reason, message=message))
        self._owed.append((Fail(jid=jid, errtype=reason.value, message=message), slot.id))
        if send:
            self._owe_flush(slot, now)

    # -- links --------------------------------------------------------------------------------

    def _on_drop(self, slot: _Slot, lost: tuple[Command, ...], now: float) -> None:
        slot.fetching = False  # a job it would have returned stays reserved on the server
        # ACKs and FAILs that got no reply may not have arrived: send them again (an ACK or
        # FAIL that did arrive is answered +OK or "Job not found" the second time), on a free
        # link now if there is one, else on this one once it is back.
        reports = [command for command in lost if isinstance(command, (Ack, Fail))]
        if reports:
            self._owed.extend((command, slot.id) for command in reports)
            for other in self._links:
                if other is not slot and other.idle and other.job is None:
                    self._pump(other, now)
                    break

    def _reconnect_when_closing(self) -> bool:
        return bool(self._owed) or any(
            isinstance(command, (Ack, Fail))
            for slot in self._links
            if slot.connection is not None
            for command in slot.connection.pending
        )

    def _owe(self, command: Command, slot: _Slot, now: float) -> None:
        """Queue an ACK or FAIL for ``slot``'s link, or any free one if that one is not."""
        self._owed.append((command, slot.id))
        self._owe_flush(slot, now)

    def _owe_flush(self, slot: _Slot, now: float) -> None:
        """Send what is owed: on ``slot``'s link if it is free, else on any free link."""
        self._pump(slot, now)
        if self._owed and not slot.idle:
            for other in self._links:
                if other.idle and other.job is None:
                    self._pump(other, now)
                    break

    def _pump(self, slot: _Slot, now: float) -> None:
        """Send what is owed on this link, and its next FETCH, if it is free to."""
        if not slot.idle:
            return
        commands: list[Command] = []
        if self._owed:
            # A link whose job still runs carries only its own reports: its job's FAIL must
            # go out the moment the job is aborted, never wait behind another job's reply.
            links, keep, free = self._links, [], slot.job is None
            for command, link in self._owed:
                if link == slot.id or (free and not links[link].idle):
                    commands.append(command)
                else:
                    keep.append((command, link))
            self._owed = keep
        if PHASES[self._phase].fetches and slot.job is None and not slot.fetching:
            commands.append(self._fetch())
            slot.fetching = True
        if commands:
            self._send(slot, commands, now)
        elif self._phase is Phase.ENDING:
            self._end(slot)

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
