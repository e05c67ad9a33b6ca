"""The vocabulary between the machines and their adapters: inputs in, actions out.

Every input and action is frozen data, so a run can be recorded as ``(now, input)`` pairs and
replayed, and an adapter is a loop that carries out actions and reports what happened.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from logging import WARNING  # a level number only: the core does no logging
from typing import Any, Final

import attrs

from ._errors import ArgumentError, ArgumentTypeError
from ._job import Job
from ._lifecycle import PHASES, Phase, Trigger
from .commands import WorkerState

__all__ = [
    "ERRTYPE_CANCELLED",
    "AbortJob",
    "AbortReason",
    "AbortRequested",
    "Action",
    "Close",
    "Connect",
    "ConnectionLost",
    "ConnectionMade",
    "DataReceived",
    "Exit",
    "Finish",
    "Finished",
    "JobError",
    "JobFinished",
    "JobOutcome",
    "JobReport",
    "MachineInput",
    "MemoryUsage",
    "Notice",
    "PhaseChanged",
    "PhaseReported",
    "QuietRequested",
    "ServerSignal",
    "ServerStateChanged",
    "Start",
    "StartJob",
    "StopRequested",
    "TimerFired",
    "Write",
]


@attrs.frozen(kw_only=True)
class MachineInput:
    """Base class of what an adapter tells a machine."""


@attrs.frozen(kw_only=True)
class Start(MachineInput):
    """Begin: the machine asks for its connections."""


@attrs.frozen(kw_only=True)
class ConnectionMade(MachineInput):
    """The socket (and TLS) for ``link`` is open; the server's greeting comes next."""

    link: int


@attrs.frozen(kw_only=True)
class DataReceived(MachineInput):
    """Bytes read on ``link``; ``b""`` when the server closed it."""

    link: int
    data: bytes


@attrs.frozen(kw_only=True)
class ConnectionLost(MachineInput):
    """Connecting, reading or writing failed on ``link``.

    ``permanent``: retrying cannot help (the server's certificate is not trusted); a worker
    stops with ``EXIT_REFUSED`` rather than retry for ever.
    """

    link: int
    reason: str = ""
    permanent: bool = False


@attrs.frozen(kw_only=True)
class TimerFired(MachineInput):
    """The machine's ``next_deadline`` has passed."""


def _check_rss(_: object, __: object, value: Any) -> None:
    if type(value) is not int:
        raise ArgumentTypeError(f"rss_kb must be a non-negative integer, got {value!r}")
    if value < 0:
        raise ArgumentError(f"rss_kb must be a non-negative integer, got {value!r}")


@attrs.frozen(kw_only=True)
class MemoryUsage(MachineInput):
    """The process's resident memory in KiB, reported in the next BEAT."""

    rss_kb: int = attrs.field(validator=_check_rss)


def _lines(lines: Iterable[str]) -> tuple[str, ...]:
    return tuple(lines)


#: errtype of the FAIL for a job whose task was cancelled by something other than the worker
#: (an abort is FAILed when it is decided, never reported again): ``JobError.cancelled()``.
ERRTYPE_CANCELLED: Final = "CancelledError"


@attrs.frozen(kw_only=True)
class JobError:
    """How a job failed, as FAIL reports it.

    Give the whole ``backtrace``: the worker machine keeps the last lines the job's
    ``backtrace`` setting asks for (:func:`cut_backtrace`).
    """

    errtype: str
    message: str
    backtrace: tuple[str, ...] = attrs.field(default=(), converter=_lines)

    @classmethod
    def cancelled(cls) -> JobError:
        """The error of a job cancelled from outside the worker (its task, greenlet or thread
        interrupted by someone else): FAILed so the server retries it."""
        return cls(errtype=ERRTYPE_CANCELLED, message="the job's task was cancelled from outside")


@attrs.frozen(kw_only=True)
class JobFinished(MachineInput):
    """Worker input: the job ``jid`` returned (``error`` None) or raised."""

    jid: str
    error: JobError | None = None


@attrs.frozen(kw_only=True)
class QuietRequested(MachineInput):
    """Worker input: stop fetching (TSTP, or the API); ``source`` is for the logs."""

    source: str = "api"


@attrs.frozen(kw_only=True)
class StopRequested(MachineInput):
    """Worker input: stop (TERM, INT, or the API); a second one aborts at once."""

    source: str = "api"


@attrs.frozen(kw_only=True)
class AbortRequested(MachineInput):
    """Worker input: abort now, from any phase: the code serving the worker is leaving.

    An adapter feeds it when an exception (cancellation, ``KeyboardInterrupt``,
    ``SystemExit``) escapes its serving loop, runs the machine until it exits, then re-raises.
    ``reason`` names that exception; running jobs are FAILed with it.
    """

    reason: str


@attrs.frozen(kw_only=True)
class ServerSignal(MachineInput):
    """Worker input: the heartbeat brought the server's ``quiet`` or ``terminate``."""

    state: WorkerState


@attrs.frozen(kw_only=True)
class PhaseReported(MachineInput):
    """Heartbeat input: the worker's phase, reported as ``current_state`` in BEAT."""

    phase: Phase


@attrs.frozen(kw_only=True)
class Finish(MachineInput):
    """Heartbeat input: the worker is done; send END and close."""


class AbortReason(enum.Enum):
    """Why a job was aborted; the value is the errtype of its FAIL."""

    SHUTDOWN = "ShutdownAbort"
    TIME_LIMIT = "JobTimeLimit"


class JobOutcome(enum.Enum):
    """How a job fetched by a worker ended, as its report to the server says."""

    #: It returned: ACKed.
    SUCCEEDED = "succeeded"
    #: It raised, or the worker FAILed it without running it (an unknown job type, say).
    FAILED = "failed"
    #: The worker aborted it (shutdown, time limit): FAILed with the reason as errtype.
    ABORTED = "aborted"


@attrs.frozen(kw_only=True)
class JobReport:
    """One job's end, for metrics: what the worker reported to the server, and when.

    Not an action: a worker keeps its reports until :meth:`faktory_core.Worker.take_reports`
    takes them, so an adapter that counts nothing pays nothing. ``started`` and ``finished``
    are the machine's ``now`` (equal for a job FAILed without running).
    """

    job: Job
    outcome: JobOutcome
    #: The FAIL's errtype (``ShutdownAbort``, ``JobTimeLimit``, ``UnknownJobType``...), or
    #: None for an ACK.
    errtype: str | None
    #: Whether the job ran (its StartJob was given): False for one the worker FAILed without
    #: running it (an unknown job type, a second copy of a jid it runs, one fetched after
    #: it began aborting), whose report is its only trace.
    ran: bool
    started: float
    finished: float

    @property
    def duration(self) -> float:
        """How long it ran, in seconds (until its abort, for an aborted job)."""
        return self.finished - self.started


@attrs.frozen(kw_only=True)
class Action:
    """Base class of what a machine asks its adapter to do, in order."""


@attrs.frozen(kw_only=True)
class Connect(Action):
    """Open a connection for ``link``; report ConnectionMade or ConnectionLost."""

    link: int


@attrs.frozen(kw_only=True)
class Write(Action):
    """Write ``data`` on ``link``."""

    link: int
    data: bytes


@attrs.frozen(kw_only=True)
class Close(Action):
    """Close ``link`` (or give up connecting it); later input for it is ignored."""

    link: int


@attrs.frozen(kw_only=True)
class Notice(Action):
    """Something worth a log line; nothing to do.

    ``level`` is the :mod:`logging` level to log it at (``logging.WARNING`` by default; a
    connection trouble's later failures come at ``DEBUG``, its end at ``INFO``, a refusal
    that stops the worker at ``ERROR``). ``job`` is the job the notice is about, if any, so
    that the log record can carry its jid and type; ``link``, the connection it is about.
    """

    message: str
    link: int | None = None
    level: int = WARNING
    job: Job | None = None


@attrs.frozen(kw_only=True)
class StartJob(Action):
    """Worker action: run ``job`` and report JobFinished."""

    job: Job


@attrs.frozen(kw_only=True)
class AbortJob(Action):
    """Worker action: deliver the runtime's cancellation to job ``jid`` (already FAILed)."""

    jid: str
    reason: AbortReason
    message: str


@attrs.frozen(kw_only=True)
class PhaseChanged(Action):
    """Worker action: the phase moved; tell the heartbeat (PhaseReported) and run hooks."""

    previous: Phase
    phase: Phase
    trigger: Trigger

    @property
    def stops_fetching(self) -> bool:
        """True for the one change that stops new FETCHes (out of RUNNING, per ``PHASES``):
        the time to run the quiet hooks."""
        return PHASES[self.previous].fetches and not PHASES[self.phase].fetches


@attrs.frozen(kw_only=True)
class Exit(Action):
    """Worker action: done; finish the heartbeat, then exit with ``code``."""

    code: int


@attrs.frozen(kw_only=True)
class ServerStateChanged(Action):
    """Heartbeat action: the server asked for ``state``; pass it to the worker (ServerSignal)."""

    state: WorkerState


@attrs.frozen(kw_only=True)
class Finished(Action):
    """Heartbeat action: END was sent (or could not be) and the link is closed."""
