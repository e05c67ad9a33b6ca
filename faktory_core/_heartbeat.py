"""The heartbeat of a worker process, as a machine of its own.

One link, HELLO'd with the worker's ``wid``: a BEAT every ``heartbeat_interval`` (the first as
soon as the link is ready), carrying ``rss_kb`` and, once the worker is quiet or stopping,
``current_state``. The server's quiet and terminate come back as :class:`ServerStateChanged`,
once each (the server repeats its state in every reply). ``unknown worker`` means the server
forgot us (reaped, or restarted): the machine re-opens the link at once, and the fresh HELLO
registers the worker again. It is separate from the worker machine so an adapter can drive it
from its own thread: a runtime kept busy by its jobs must not starve the heartbeat.
"""

from __future__ import annotations

from logging import DEBUG  # a level number only: the core does no logging
from typing import Final

from ._config import WorkerConfig
from ._lifecycle import PHASES
from ._links import Link, LinkMachine, LinkStatus, Random
from .commands import Beat, Command, WorkerState
from .events import BeatReply, Event, Ready, ServerError, ServerErrorKind
from .machine_io import (
    ConnectionLost,
    ConnectionMade,
    DataReceived,
    Finish,
    Finished,
    MachineInput,
    MemoryUsage,
    PhaseReported,
    ServerStateChanged,
    Start,
    TimerFired,
)

__all__ = ["HEARTBEAT_END_TIMEOUT", "HEARTBEAT_LINK", "HEARTBEAT_WARN_AFTER", "Heartbeat"]

#: The heartbeat machine's only link.
HEARTBEAT_LINK: Final = 0

#: After the worker's Exit, how long (seconds) an adapter waits for the heartbeat's Finished
#: before it exits anyway: END is a courtesy (the server forgets a silent worker in 60 s), and
#: a heartbeat whose link awaits a reply must not hold the process.
HEARTBEAT_END_TIMEOUT: Final = 5.0

#: How long the heartbeat's connection may fail before it warns: half the 60 s after which
#: the server reaps a worker that sent no BEAT.
HEARTBEAT_WARN_AFTER: Final = 30.0

_RANK: Final = {None: 0, WorkerState.RUNNING: 0, WorkerState.QUIET: 1, WorkerState.TERMINATE: 2}


class Heartbeat(LinkMachine[Link]):
    """BEATs for one worker process; feed it inputs with :meth:`handle`.

    Its connection trouble episodes are DEBUG notices: the job links of the same process warn
    once for the same trouble, and say once when it is over. A trouble of the heartbeat alone
    must not stay silent, though: the server reaps a worker it has not heard from for 60 s,
    so an episode still going after ``HEARTBEAT_WARN_AFTER`` s gives a WARNING (and its end an
    INFO).
    """

    _trouble_level = DEBUG
    _back_level = DEBUG
    _warn_after = HEARTBEAT_WARN_AFTER

    def __init__(
        self,
        config: WorkerConfig,
        *,
        random: Random,
        journal: list[tuple[float, MachineInput]] | None = None,
    ) -> None:
        super().__init__(config, [Link(id=HEARTBEAT_LINK)], random=random, journal=journal)
        self._link0 = self._links[HEARTBEAT_LINK]
        self._next_beat: float | None = None
        self._current_state: WorkerState | None = None
        self._server_state: WorkerState = WorkerState.RUNNING
        self._finished = False
        self._forgotten = 0  # "unknown worker" replies in a row

    @property
    def finished(self) -> bool:
        """True once END went out (or the link was down) after :class:`Finish`."""
        return self._finished

    @property
    def _over(self) -> bool:
        return self._finished

    @property
    def next_deadline(self) -> float | None:
        """When to send TimerFired next (monotonic seconds), or None if nothing is timed."""
        best = self._link_deadline()
        beat = self._next_beat
        # A beat due while a reply is awaited goes out when the reply comes.
        if beat is not None and self._link0.idle and (best is None or beat < best):
            best = beat
        return best

    def _on_start(self, event: Start, now: float) -> None:
        self._start()

    def _on_phase(self, event: PhaseReported, now: float) -> None:
        self._current_state = PHASES[event.phase].reported

    def _on_finish(self, event: Finish, now: float) -> None:
        self._closing = True
        self._give_up(self._link0)
        self._pump(self._link0, now)
        self._settle(now)

    def _on_timer(self, event: TimerFired, now: float) -> None:
        self._expire_links(now)
        self._pump(self._link0, now)
        self._settle(now)

    def _on_event(self, link: Link, event: Event, now: float) -> None:
        if isinstance(event, BeatReply):
            self._forgotten = 0
            # The server repeats its state in every reply, and echoes the state we reported:
            # pass on only what is news to the worker.
            state = event.state
            known = max(_RANK[self._server_state], _RANK[self._current_state])
            if _RANK[state] > known:
                self._server_state = state
                self._emit(ServerStateChanged(state=state))
        elif isinstance(event, Ready):  # the link is READY: beat at once
            self._next_beat = now
        elif isinstance(event, ServerError):
            text = f"{event.code} {event.message}"
            if isinstance(event.command, Beat) and event.kind is ServerErrorKind.UNKNOWN_WORKER:
                # Register again at once; if the server keeps forgetting us, back off.
                again = self._forgotten > 0
                self._forgotten += 1
                message = f"heartbeat refused ({text}); registering again"
                self._drop(link, now, "unknown worker", backoff=again, message=message)
            else:
                self._drop(link, now, f"server error: {text}")

    def _on_drop(self, link: Link, lost: tuple[Command, ...], now: float) -> None:
        self._next_beat = None

    def _pump(self, link: Link, now: float) -> None:
        if not link.idle:
            return
        if self._closing:
            self._end(link)
        elif self._next_beat is not None and now >= self._next_beat:
            beat = Beat(wid=self.config.wid, rss_kb=self._rss_kb, current_state=self._current_state)
            self._next_beat = now + self.config.heartbeat_interval
            self._send(link, [beat], now)

    def _settle(self, now: float) -> None:
        if self._closing and not self._finished and self._link0.status is LinkStatus.CLOSED:
            self._finished = True
            self._next_beat = None
            self._emit(Finished())

    _inputs = {  # noqa: RUF012 - read-only table
        Start: _on_start,
        ConnectionMade: LinkMachine._on_connection_made,
        DataReceived: LinkMachine._on_data,
        ConnectionLost: LinkMachine._on_connection_lost,
        MemoryUsage: LinkMachine._on_memory,
        PhaseReported: _on_phase,
        Finish: _on_finish,
        TimerFired: _on_timer,
    }
