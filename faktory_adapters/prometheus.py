"""Prometheus metrics for workers: ``worker.observe(PrometheusMetrics())``.

It needs the ``prometheus`` extra (``pip install 'faktory-sansio[prometheus]'``), which brings
``prometheus_client``; serve the metrics with ``prometheus_client.start_http_server(port)``,
or run ``faktory-worker --metrics-port PORT``. Every metric, and queries to start with:
docs/operations.md.
"""

from __future__ import annotations

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
except ImportError as missing:  # pragma: no cover - depends on the environment
    raise ImportError(
        "faktory_adapters.prometheus needs prometheus_client: "
        "pip install 'faktory-sansio[prometheus]'"
    ) from missing

import threading
import time
import weakref
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

from faktory_core import Job, Phase, WorkerConfig
from faktory_core.machine_io import JobReport

from ._observe import WorkerObserver

__all__ = ["DEFAULT_BUCKETS", "PrometheusMetrics"]

# fmt: off
#: The buckets of the duration and queue latency histograms, in seconds: background jobs
#: take from milliseconds to an hour.
DEFAULT_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)
# fmt: on

_JOB: Final = ("queue", "jobtype")


class _Metrics:
    """The metrics of one namespace on one registry, shared by every PrometheusMetrics that
    uses them: a registry takes each name once."""

    def __init__(
        self, registry: CollectorRegistry, namespace: str, buckets: tuple[float, ...]
    ) -> None:
        self.buckets = buckets
        ns = namespace
        self.started = Counter(
            "jobs_started", "Jobs that started running.", _JOB, namespace=ns, registry=None
        )
        self.ended = Counter(
            "jobs_ended",
            "Jobs ACKed or FAILed, by outcome (succeeded, failed, aborted) and errtype.",
            (*_JOB, "outcome", "errtype"),
            namespace=ns,
            registry=None,
        )
        self.duration = Histogram(
            "job_duration_seconds",
            "How long jobs ran (until their abort, for aborted jobs).",
            _JOB,
            namespace=ns,
            registry=None,
            buckets=buckets,
        )
        self.latency = Histogram(
            "job_queue_latency_seconds",
            "How long jobs waited in their queue: from enqueued_at to their start.",
            ("queue",),
            namespace=ns,
            registry=None,
            buckets=buckets,
        )
        self.running = Gauge("jobs_running", "Jobs running now.", _JOB, namespace=ns, registry=None)
        self.slots = Gauge(
            "worker_job_slots",
            "Jobs the serving workers can run at once (their concurrency).",
            namespace=ns,
            registry=None,
        )
        self.phase = Gauge(
            "worker_phase",
            "Workers in each phase (running, quiet, draining, stopping, aborting, ending, exited).",
            ("phase",),
            namespace=ns,
            registry=None,
        )
        for phase in Phase:
            self.phase.labels(_phase_name(phase))  # each phase shows, at 0
        collectors = (
            self.started,
            self.ended,
            self.duration,
            self.latency,
            self.running,
            self.slots,
            self.phase,
        )
        registered = []
        try:
            for collector in collectors:
                registry.register(collector)
                registered.append(collector)
        except ValueError as error:
            for collector in registered:
                registry.unregister(collector)
            raise ValueError(
                f"cannot register the worker metrics on this registry ({error}): something "
                "else already uses these names; give PrometheusMetrics another namespace= "
                "or registry="
            ) from None


_SHARED: Final[weakref.WeakKeyDictionary[CollectorRegistry, dict[str, _Metrics]]] = (
    weakref.WeakKeyDictionary()
)
_SHARED_LOCK: Final = threading.Lock()


def _metrics_of(
    registry: CollectorRegistry, namespace: str, buckets: tuple[float, ...]
) -> _Metrics:
    """The metrics of ``namespace`` on ``registry``, registered the first time."""
    with _SHARED_LOCK:
        by_namespace = _SHARED.setdefault(registry, {})
        metrics = by_namespace.get(namespace)
        if metrics is None:
            metrics = by_namespace[namespace] = _Metrics(registry, namespace, buckets)
        elif metrics.buckets != buckets:
            raise ValueError(
                f"the {namespace!r} metrics of this registry have the buckets "
                f"{metrics.buckets}, not {buckets}: give every PrometheusMetrics of one "
                "registry the same buckets, or another namespace="
            )
        return metrics


def _phase_name(phase: Phase) -> str:
    return phase.name.lower()


def _queue_latency(job: Job, now: float) -> float | None:
    """Seconds from the job's ``enqueued_at`` (the server's clock) to ``now`` (a
    ``time.time()``), at least 0; None if the job has no valid ``enqueued_at``."""
    if job.enqueued_at is None:
        return None
    try:
        enqueued = datetime.fromisoformat(job.enqueued_at)
    except ValueError:
        return None
    if enqueued.tzinfo is None:
        enqueued = enqueued.replace(tzinfo=UTC)
    # The two clocks may disagree: a job never waited less than nothing.
    return max(0.0, now - enqueued.timestamp())


class PrometheusMetrics(WorkerObserver):
    """A worker's jobs and phase as Prometheus metrics, on ``registry`` (by default
    prometheus_client's global one), named ``<namespace>_...``.

    Give each Worker its own: ``worker.observe(PrometheusMetrics())``. Several on one registry
    and namespace (several Workers in one process) share its metrics, so the counts are the
    process's. ``buckets`` are those of the duration and queue latency histograms (the same
    for every PrometheusMetrics of a registry and namespace).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        namespace: str = "faktory",
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        self.registry: CollectorRegistry = REGISTRY if registry is None else registry
        self.namespace = namespace
        self._metrics = _metrics_of(self.registry, namespace, tuple(float(b) for b in buckets))
        self._wid: str | None = None  # the worker observed, while it serves
        self._slots = 0
        self._phase: Phase | None = None
        self._running: dict[str, tuple[str, str]] = {}  # started jobs not ended, by jid

    def serving(self, config: WorkerConfig) -> None:
        if self._wid is not None:
            if self._wid != config.wid:
                raise RuntimeError(
                    f"this PrometheusMetrics already observes worker {self._wid}, which "
                    f"still serves: give each Worker its own PrometheusMetrics()"
                )
            self._stopped_serving()  # a run of the same worker that never said it exited
        self._wid = config.wid
        self._slots = config.concurrency
        self._metrics.slots.inc(self._slots)
        self._enter(Phase.RUNNING)

    def job_started(self, job: Job, now: float) -> None:
        metrics = self._metrics
        labels = self._running[job.jid] = (job.queue, job.jobtype)
        metrics.started.labels(*labels).inc()
        metrics.running.labels(*labels).inc()
        latency = _queue_latency(job, time.time())
        if latency is not None:
            metrics.latency.labels(job.queue).observe(latency)

    def job_ended(self, report: JobReport) -> None:
        metrics, job = self._metrics, report.job
        errtype = report.errtype or ""
        metrics.ended.labels(job.queue, job.jobtype, report.outcome.value, errtype).inc()
        labels = self._running.pop(job.jid, None)
        if labels is not None:  # else FAILed without running (an unknown job type)
            metrics.running.labels(*labels).dec()
            metrics.duration.labels(*labels).observe(report.duration)

    def phase_changed(self, phase: Phase) -> None:
        self._enter(phase)
        if phase is Phase.EXITED:
            self._stopped_serving()

    def _enter(self, phase: Phase) -> None:
        if self._phase is not None:
            self._metrics.phase.labels(_phase_name(self._phase)).dec()
        self._metrics.phase.labels(_phase_name(phase)).inc()
        self._phase = phase

    def _stopped_serving(self) -> None:
        """Take the worker's slots, and jobs never reported, out of the gauges."""
        self._metrics.slots.dec(self._slots)
        self._slots = 0
        for labels in self._running.values():
            self._metrics.running.labels(*labels).dec()
        self._running.clear()
        self._wid = None

    def __repr__(self) -> str:
        return f"PrometheusMetrics(namespace={self.namespace!r})"
