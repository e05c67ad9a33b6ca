"""Prometheus metrics for workers and clients: ``worker.observe(PrometheusMetrics())``,
``client.observe(PrometheusMetrics())``.

It needs the ``prometheus`` extra (``pip install 'faktory-sansio[prometheus]'``), which brings
``prometheus_client``. Serve a worker's metrics with :func:`serve_metrics`, or run
``faktory-worker --metrics-port PORT``. Every metric, and queries to start with:
docs/operations.md.
"""

from __future__ import annotations

try:
    from prometheus_client import (
        REGISTRY,
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        make_wsgi_app,
    )
except ImportError as missing:  # pragma: no cover - depends on the environment
    raise ImportError(
        "faktory_adapters.prometheus needs prometheus_client: "
        "pip install 'faktory-sansio[prometheus]'"
    ) from missing

import socketserver
import threading
import time
import weakref
import wsgiref.simple_server
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from faktory_core import Job, Phase, WorkerConfig
from faktory_core.machine_io import JobOutcome, JobReport

from . import _http
from ._observe import ClientObserver, PushOutcome, WorkerObserver

if TYPE_CHECKING:  # full names: the docs link them
    import faktory_adapters.asyncio
    import faktory_adapters.gevent
    import faktory_adapters.thread

__all__ = ["DEFAULT_BUCKETS", "PrometheusMetrics", "serve_metrics"]

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
    uses them: a registry takes each name once.

    The gauges say what live workers are doing: under prometheus_client's multiprocess mode
    (``faktory-worker --processes``) they add up the processes still running (``livesum``),
    so a killed process's slots and running jobs stop counting once its supervisor marks it
    dead.
    """

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
        self.running = _live_gauge(ns, "jobs_running", "Jobs running now.", _JOB)
        self.slots = _live_gauge(
            ns, "worker_job_slots", "Jobs the serving workers can run at once (their concurrency)."
        )
        self.phase = _live_gauge(
            ns,
            "worker_phase",
            "Workers in each phase (running, quiet, draining, stopping, aborting, ending, exited).",
            ("phase",),
        )
        for phase in Phase:
            self.phase.labels(_phase_name(phase))  # each phase shows, at 0
        self.connections = _live_gauge(
            ns,
            "worker_job_connections",
            "Job connections the serving workers keep to the server (not the heartbeat's).",
        )
        self.ready_connections = _live_gauge(
            ns,
            "worker_ready_job_connections",
            "Job connections ready now: the server accepted their HELLO.",
        )
        self.reconnects = Counter(
            "worker_reconnects",
            "Times a job connection was ready again after it was lost.",
            namespace=ns,
            registry=None,
        )
        self.pushes = Counter(
            "pushes",
            "Jobs clients pushed, by outcome (pushed, refused, unknown, not_sent).",
            ("queue", "jobtype", "outcome"),
            namespace=ns,
            registry=None,
        )
        collectors = (
            self.started,
            self.ended,
            self.duration,
            self.latency,
            self.running,
            self.slots,
            self.phase,
            self.connections,
            self.ready_connections,
            self.reconnects,
            self.pushes,
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
                f"cannot register the faktory metrics on this registry ({error}): something "
                "else already uses these names; give PrometheusMetrics another namespace= "
                "or registry="
            ) from None
        # Each job's series, found once per label set: ``labels()`` checks and locks at every
        # call, and was most of what counting a job cost.
        self._job_series: dict[tuple[str, str], _JobSeries] = {}

    def job_series(self, queue: str, jobtype: str) -> _JobSeries:
        """The series of the jobs of a queue and job type."""
        series = self._job_series.get((queue, jobtype))
        if series is None:
            series = self._job_series[queue, jobtype] = _JobSeries(self, queue, jobtype)
        return series

    def ended_series(
        self, queue: str, jobtype: str, outcome: JobOutcome, errtype: str | None
    ) -> Any:
        """The counter of the jobs of a queue and job type that ended so."""
        return self.ended.labels(queue, jobtype, outcome.value, errtype or "")


class _JobSeries:
    """The series a job of one queue and job type counts in as it starts and ends."""

    __slots__ = ("_ended", "_labels", "_latency", "_metrics", "duration", "running", "started")

    def __init__(self, metrics: _Metrics, queue: str, jobtype: str) -> None:
        self._metrics = metrics
        self._labels = (queue, jobtype)
        self.started = metrics.started.labels(queue, jobtype)
        self.running = metrics.running.labels(queue, jobtype)
        self.duration = metrics.duration.labels(queue, jobtype)
        self._latency: Any = None  # made at its first wait: a job may have no enqueued_at
        self._ended: dict[tuple[JobOutcome, str | None], Any] = {}

    def latency(self) -> Any:
        """The queue's wait histogram."""
        if self._latency is None:
            self._latency = self._metrics.latency.labels(self._labels[0])
        return self._latency

    def ended(self, outcome: JobOutcome, errtype: str | None) -> Any:
        """The counter of the jobs that ended with ``outcome`` and ``errtype``."""
        counter = self._ended.get((outcome, errtype))
        if counter is None:
            counter = self._ended[outcome, errtype] = self._metrics.ended_series(
                *self._labels, outcome, errtype
            )
        return counter


def _live_gauge(namespace: str, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
    """A gauge of the live workers: the sum over live processes in multiprocess mode."""
    return Gauge(
        name,
        documentation,
        labels,
        namespace=namespace,
        registry=None,
        multiprocess_mode="livesum",
    )


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


class PrometheusMetrics(WorkerObserver, ClientObserver):
    """A worker's jobs, phase and connections, and a client's pushes, as Prometheus metrics,
    on ``registry`` (by default prometheus_client's global one), named ``<namespace>_...``.

    Give each Worker its own: ``worker.observe(PrometheusMetrics())``. Clients may share one,
    a worker's included: ``client.observe(metrics)`` (its pushes may come from many threads
    at once). Several on one registry and namespace (several Workers in one process) share its
    metrics, so the counts are the process's. ``buckets`` are those of the duration and queue
    latency histograms (the same for every PrometheusMetrics of a registry and namespace).
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
        self._running: dict[str, _JobSeries] = {}  # started jobs not ended, by jid
        self._connections = 0  # the worker's job connections, and those ready
        self._ready = 0
        self._reconnects = 0  # the run's reconnects counted so far

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
        self._connections = config.job_links
        self._metrics.connections.inc(self._connections)
        self._reconnects = 0  # the worker counts them again in each run
        self._enter(Phase.RUNNING)

    def job_started(self, job: Job, now: float) -> None:
        series = self._metrics.job_series(job.queue, job.jobtype)
        self._running[job.jid] = series
        series.started.inc()
        series.running.inc()
        latency = _queue_latency(job, time.time())
        if latency is not None:
            series.latency().observe(latency)

    def job_ended(self, report: JobReport) -> None:
        job = report.job
        # A job that never ran (a second copy of a running jid among them) ends no series.
        series = self._running.pop(job.jid, None) if report.ran else None
        if series is None:
            self._metrics.ended_series(job.queue, job.jobtype, report.outcome, report.errtype).inc()
            return
        series.ended(report.outcome, report.errtype).inc()
        series.running.dec()
        series.duration.observe(report.duration)

    def phase_changed(self, phase: Phase) -> None:
        self._enter(phase)
        if phase is Phase.EXITED:
            self._stopped_serving()

    def connections_changed(self, ready: int, reconnects: int) -> None:
        if self._wid is None:  # the worker exited: its connections are out of the gauges
            return
        metrics = self._metrics
        metrics.ready_connections.inc(ready - self._ready)
        self._ready = ready
        if reconnects > self._reconnects:
            metrics.reconnects.inc(reconnects - self._reconnects)
            self._reconnects = reconnects

    def pushed(self, job: Job, outcome: PushOutcome, error: str | None) -> None:
        self._metrics.pushes.labels(job.queue, job.jobtype, outcome.value).inc()

    def _enter(self, phase: Phase) -> None:
        if self._phase is not None:
            self._metrics.phase.labels(_phase_name(self._phase)).dec()
        self._metrics.phase.labels(_phase_name(phase)).inc()
        self._phase = phase

    def _stopped_serving(self) -> None:
        """Take the worker's slots and connections, and jobs never reported, out of the
        gauges."""
        self._metrics.slots.dec(self._slots)
        self._slots = 0
        self._metrics.connections.dec(self._connections)
        self._metrics.ready_connections.dec(self._ready)
        self._connections = self._ready = 0
        for series in self._running.values():
            series.running.dec()
        self._running.clear()
        self._wid = None

    def __repr__(self) -> str:
        return f"PrometheusMetrics(namespace={self.namespace!r})"


def serve_metrics(
    worker: faktory_adapters.asyncio.Worker
    | faktory_adapters.thread.Worker
    | faktory_adapters.gevent.Worker,
    port: int,
    address: str = "0.0.0.0",
) -> tuple[wsgiref.simple_server.WSGIServer, threading.Thread]:
    """Count ``worker``'s metrics on prometheus_client's global registry and serve that
    registry over HTTP, at ``http://ADDRESS:PORT/metrics``, on a thread of its own: what
    ``faktory-worker --metrics-port`` does. Call it before the worker serves.

    The worker is given a ``PrometheusMetrics()`` unless it observes one on the global
    registry already. ``port`` 0 takes any free port: ``server.server_port`` says which.
    ``address`` is every IPv4 interface by default, for a scraper outside the machine or
    container. Returns the server and its thread, as ``prometheus_client.start_http_server``
    does: ``server.shutdown()`` stops it (within 50 ms), ``server.server_close()`` lets the
    port go. ``OSError`` if the port cannot be had.
    """
    if not any(
        isinstance(observer, PrometheusMetrics) and observer.registry is REGISTRY
        for observer in worker._observers
    ):
        worker.observe(PrometheusMetrics())
    return _start_server(REGISTRY, port, address)


class _Server(socketserver.ThreadingMixIn, wsgiref.simple_server.WSGIServer):
    daemon_threads = True

    def server_bind(self) -> None:
        _http.bind(self)
        self.setup_environ()


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Not every scrape on stderr."""


def _start_server(
    registry: CollectorRegistry, port: int, address: str
) -> tuple[wsgiref.simple_server.WSGIServer, threading.Thread]:
    """``registry`` served over HTTP on ``address``:``port``, on a daemon thread (unlike
    prometheus_client's start_http_server, it lets its port go within 50 ms of a shutdown)."""

    class Server(_Server):
        address_family = _http.family(address)

    server = wsgiref.simple_server.make_server(
        address, port, make_wsgi_app(registry), Server, handler_class=_QuietHandler
    )
    return server, _http.serve_on_thread(server, "faktory-metrics-http")


def _metrics_url(address: str, port: int) -> str:
    """Where a metrics server listening on ``address`` and ``port`` serves, for the log."""
    return f"{_http.base_url(address, port)}/metrics"
