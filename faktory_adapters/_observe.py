"""What workers and clients tell their observers (metrics, tracing).

A worker tells its start, its jobs as they start and end, its phase and its connections; the
driver calls them, so every adapter tells the same things. A client tells each job it pushes,
before and after: the Client of every adapter is generated from one source.
"""

from __future__ import annotations

import enum

from faktory_core import Job, Phase, WorkerConfig
from faktory_core.machine_io import JobReport

__all__ = ["ClientObserver", "PushOutcome", "WorkerObserver"]


class WorkerObserver:
    """Subclass it and override what you need, then ``worker.observe(observer)``.

    Every method is called on the worker's own loop (the event loop, the I/O thread, the
    hub), between two steps of its work: it must not block. One that raises is logged at
    ERROR and the worker goes on. ``now`` is the worker's monotonic clock, the one of
    ``JobReport.started`` and ``finished``.
    """

    def serving(self, config: WorkerConfig) -> None:
        """The worker starts serving with ``config`` (its concurrency, queues...)."""

    def job_started(self, job: Job, now: float) -> None:
        """A job fetched by the worker starts running."""

    def job_ended(self, report: JobReport) -> None:
        """A job was ACKed or FAILed: run, failed without running, or aborted (then at its
        abort, though it may still be running)."""

    def phase_changed(self, phase: Phase) -> None:
        """The worker entered ``phase`` (quiet, stopping...)."""

    def connections_changed(self, ready: int, reconnects: int) -> None:
        """``ready`` of the worker's ``config.job_links`` job connections are ready now (the
        server accepted their HELLO); ``reconnects``: how many times, in this run, one was
        ready again after it was lost. Not the heartbeat's connection."""


class PushOutcome(enum.Enum):
    """How the push of one job ended."""

    PUSHED = "pushed"
    """The server took the job."""
    REFUSED = "refused"
    """The server refused it (an ``-ERR`` reply, or a bulk push's error for it)."""
    UNKNOWN = "unknown"
    """The connection broke or timed out after it was sent: it may or may not be pushed."""
    NOT_SENT = "not_sent"
    """It was never sent (the server could not be reached, the call timed out queued)."""


class ClientObserver:
    """Subclass it and override what you need, then ``client.observe(observer)``.

    The methods are called by the pushing caller (its task, thread or greenlet), so
    concurrent pushes call them at the same time: keep them quick and thread-safe. One that
    raises is logged at ERROR and the push goes on.
    """

    def pushing(self, job: Job) -> Job:
        """``job`` is about to be pushed: return it, or a copy to push instead (with keys
        added to its ``custom``, say, by ``attrs.evolve``), with the same jid."""
        return job

    def pushed(self, job: Job, outcome: PushOutcome, error: str | None) -> None:
        """The push of ``job`` (as :meth:`pushing` returned it) ended with ``outcome``;
        ``error`` says why, unless it was pushed."""
