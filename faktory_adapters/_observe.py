"""What a worker tells its observers (metrics, say): its start, its jobs as they start and
end, and its phase. The driver calls them, so every adapter tells the same things."""

from __future__ import annotations

from faktory_core import Job, Phase, WorkerConfig
from faktory_core.machine_io import JobReport

__all__ = ["WorkerObserver"]


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
