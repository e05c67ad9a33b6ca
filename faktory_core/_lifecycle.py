"""The worker's life, from the first FETCH to the exit code, as two tables.

A worker is in one :class:`Phase`; a :class:`Trigger` moves it to the next, per
:data:`LIFECYCLE`. A pair missing from the table cannot happen: the worker machine only fires
the triggers a phase lists, so a missing pair is a bug, reported as ``LocalProtocolError``.
:data:`PHASES` says what the worker does in each phase (fetch? start the jobs a FETCH returns?
which deadline? what BEAT reports?); the worker and heartbeat machines read it rather than
decide it themselves. These tables are the specification of the shutdown contract; the docs'
diagram and phase table are drawn from them.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Final

import attrs

from ._errors import LocalProtocolError
from .commands import WorkerState

if TYPE_CHECKING:
    from ._config import WorkerConfig

__all__ = [
    "EXIT_ABORTED",
    "EXIT_CLEAN",
    "EXIT_REFUSED",
    "LIFECYCLE",
    "PHASES",
    "Phase",
    "PhaseRules",
    "Trigger",
    "next_phase",
]

#: Exit code after a stop in which every job finished (or none ran).
EXIT_CLEAN: Final = 0
#: Exit code after a stop that had to abort at least one job.
EXIT_ABORTED: Final = 1
#: Exit code after the server refused this worker for a reason that will not change by itself
#: (a wrong password, an untrusted certificate): retrying could only hold jobs hostage. Also
#: a burst worker's whose links could not connect or handshake before the server accepted one.
EXIT_REFUSED: Final = 3


class Phase(enum.Enum):
    """Where the worker is in its life. Phases only move forward."""

    RUNNING = "running: fetching and running jobs"
    QUIET = "quiet: no new fetches, running jobs continue"
    DRAINING = "draining (burst): the queues were empty; ends when running jobs finish"
    STOPPING = "stopping: quiet, and the shutdown timeout is running"
    ABORTING = "aborting: running jobs were aborted and FAILed; grace period"
    ENDING = "ending: sending END on every connection"
    EXITED = "exited"

    __hash__ = object.__hash__  # identity hash: cheap table look-ups


class Trigger(enum.Enum):
    """What moves the worker from one phase to the next."""

    QUIET = "quiet requested (signal or API)"
    SERVER_QUIET = "the server said quiet (BEAT reply)"
    STOP = "stop requested (signal or API)"
    SERVER_TERMINATE = "the server said terminate (BEAT reply)"
    ABORT = "abort requested: the code serving the worker was interrupted"
    REFUSED = (
        "the server refused the worker for good (wrong password, untrusted certificate), "
        "or a burst worker cannot use it before any link was accepted"
    )
    DEADLINE = "the shutdown timeout ran out"
    DRAINED = "no job running and no FETCH awaiting its reply"
    GRACE_OVER = "the abort grace period ran out"
    QUEUES_EMPTY = "a FETCH came back empty in burst mode"
    ENDED = "every connection ended"
    END_TIMEOUT = "the END timeout ran out: replies still awaited are given up"

    __hash__ = object.__hash__


_P, _T = Phase, Trigger
_REQUESTS: Final = (_T.QUIET, _T.SERVER_QUIET, _T.STOP, _T.SERVER_TERMINATE)
# Requests that every later phase takes and stays in.
_LATE_REQUESTS: Final = (*_REQUESTS, _T.ABORT, _T.REFUSED)
_BEFORE_ABORTING: Final = (_P.RUNNING, _P.QUIET, _P.DRAINING, _P.STOPPING)

LIFECYCLE: Final[dict[tuple[Phase, Trigger], Phase]] = {
    (_P.RUNNING, _T.QUIET): _P.QUIET,
    (_P.RUNNING, _T.SERVER_QUIET): _P.QUIET,
    (_P.RUNNING, _T.STOP): _P.STOPPING,
    (_P.RUNNING, _T.SERVER_TERMINATE): _P.STOPPING,
    # An interrupted caller (cancellation, KeyboardInterrupt) aborts at once: it is leaving.
    **{(phase, _T.ABORT): _P.ABORTING for phase in _BEFORE_ABORTING},
    # A refusal that will not change stops the worker; jobs still running may finish.
    **{(phase, _T.REFUSED): _P.STOPPING for phase in (_P.RUNNING, _P.QUIET, _P.DRAINING)},
    (_P.STOPPING, _T.REFUSED): _P.STOPPING,
    # Quiet is one-way: asking again changes nothing.
    (_P.QUIET, _T.QUIET): _P.QUIET,
    (_P.QUIET, _T.SERVER_QUIET): _P.QUIET,
    (_P.QUIET, _T.STOP): _P.STOPPING,
    (_P.QUIET, _T.SERVER_TERMINATE): _P.STOPPING,
    # Burst mode: an empty FETCH means the work is done; no timeout, running jobs finish.
    (_P.RUNNING, _T.QUEUES_EMPTY): _P.DRAINING,
    (_P.QUIET, _T.QUEUES_EMPTY): _P.DRAINING,
    (_P.DRAINING, _T.QUEUES_EMPTY): _P.DRAINING,
    (_P.DRAINING, _T.QUIET): _P.DRAINING,
    (_P.DRAINING, _T.SERVER_QUIET): _P.DRAINING,
    (_P.DRAINING, _T.STOP): _P.STOPPING,
    (_P.DRAINING, _T.SERVER_TERMINATE): _P.STOPPING,
    (_P.DRAINING, _T.DRAINED): _P.ENDING,
    (_P.STOPPING, _T.QUIET): _P.STOPPING,
    (_P.STOPPING, _T.SERVER_QUIET): _P.STOPPING,
    (_P.STOPPING, _T.QUEUES_EMPTY): _P.STOPPING,
    # The server repeats its state in every BEAT reply: that is not a second request.
    (_P.STOPPING, _T.SERVER_TERMINATE): _P.STOPPING,
    # A second stop request skips the rest of the shutdown timeout.
    (_P.STOPPING, _T.STOP): _P.ABORTING,
    (_P.STOPPING, _T.DEADLINE): _P.ABORTING,
    (_P.STOPPING, _T.DRAINED): _P.ENDING,
    **{(_P.ABORTING, request): _P.ABORTING for request in _LATE_REQUESTS},
    (_P.ABORTING, _T.QUEUES_EMPTY): _P.ABORTING,
    (_P.ABORTING, _T.DRAINED): _P.ENDING,
    (_P.ABORTING, _T.GRACE_OVER): _P.ENDING,
    **{(_P.ENDING, request): _P.ENDING for request in _LATE_REQUESTS},
    (_P.ENDING, _T.QUEUES_EMPTY): _P.ENDING,
    (_P.ENDING, _T.ENDED): _P.EXITED,
    # Replies still awaited (a FETCH in flight, an ACK or FAIL) do not hold the exit for ever;
    # the exit names the reports left undelivered.
    (_P.ENDING, _T.END_TIMEOUT): _P.EXITED,
    **{(_P.EXITED, request): _P.EXITED for request in _LATE_REQUESTS},
}
del _P, _T, _BEFORE_ABORTING


def next_phase(phase: Phase, trigger: Trigger) -> Phase:
    """The phase after ``trigger`` in ``phase``."""
    try:
        return LIFECYCLE[phase, trigger]
    except KeyError:
        raise LocalProtocolError(f"{trigger.value} cannot happen while {phase.value}") from None


def _check_timeout(rules: PhaseRules, attribute: attrs.Attribute[Any], value: Any) -> None:
    if (rules.timeout is None) is not (value is None):
        raise LocalProtocolError("a phase's timeout and on_timeout go together")


@attrs.frozen(kw_only=True)
class PhaseRules:
    """What the worker does while in one phase: a row of :data:`PHASES`."""

    #: New FETCHes go out. A FETCH already in flight is awaited in every phase: closing its
    #: link would let the server hand its next job to a connection nobody reads.
    fetches: bool
    #: A job that a FETCH in flight returns is started; else it is FAILed at once, unstarted
    #: (errtype ``ShutdownAbort``), so the server retries it soon.
    starts_fetched_jobs: bool
    #: How the phase is reported as ``current_state`` in BEAT (``RUNNING``: none is sent).
    reported: WorkerState
    #: The phase ends (``Trigger.DRAINED``) once no job runs and no FETCH awaits its reply.
    ends_when_drained: bool = False
    #: The :class:`WorkerConfig` field (seconds) of the deadline that starts on entering the
    #: phase; None: no deadline.
    timeout: str | None = None
    #: The trigger fired when that deadline runs out.
    on_timeout: Trigger | None = attrs.field(default=None, validator=_check_timeout)

    def deadline(self, config: WorkerConfig, now: float) -> float | None:
        """When the phase's deadline runs out, for a phase entered at ``now``; None if none."""
        if self.timeout is None:
            return None
        seconds: float = getattr(config, self.timeout)
        return now + seconds


_P, _T, _S = Phase, Trigger, WorkerState
#: What the worker does in each phase.
PHASES: Final[dict[Phase, PhaseRules]] = {
    _P.RUNNING: PhaseRules(fetches=True, starts_fetched_jobs=True, reported=_S.RUNNING),
    _P.QUIET: PhaseRules(fetches=False, starts_fetched_jobs=True, reported=_S.QUIET),
    # Burst mode's end: no timeout, the running jobs finish.
    _P.DRAINING: PhaseRules(
        fetches=False, starts_fetched_jobs=True, reported=_S.QUIET, ends_when_drained=True
    ),
    # A job fetched while stopping still runs: the shutdown timeout bounds it like the others.
    _P.STOPPING: PhaseRules(
        fetches=False,
        starts_fetched_jobs=True,
        reported=_S.TERMINATE,
        ends_when_drained=True,
        timeout="shutdown_timeout",
        on_timeout=_T.DEADLINE,
    ),
    _P.ABORTING: PhaseRules(
        fetches=False,
        starts_fetched_jobs=False,
        reported=_S.TERMINATE,
        ends_when_drained=True,
        timeout="abort_grace",
        on_timeout=_T.GRACE_OVER,
    ),
    # Owed ACKs and FAILs and a FETCH still in flight get their replies, at most this long.
    _P.ENDING: PhaseRules(
        fetches=False,
        starts_fetched_jobs=False,
        reported=_S.TERMINATE,
        timeout="reply_timeout",
        on_timeout=_T.END_TIMEOUT,
    ),
    _P.EXITED: PhaseRules(fetches=False, starts_fetched_jobs=False, reported=_S.TERMINATE),
}
del _P, _T, _S
