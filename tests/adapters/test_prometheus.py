"""``PrometheusMetrics``: a real worker of each adapter drains real jobs while its metrics are
scraped over HTTP; the metrics several workers share; connections and pushes counted;
``serve_metrics``; the table of docs/operations.md."""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Gauge, start_http_server

from faktory_adapters import PushOutcome, thread
from faktory_adapters.prometheus import PrometheusMetrics, serve_metrics
from faktory_core import Job, Phase, WorkerConfig
from faktory_core.machine_io import JobOutcome, JobReport
from tests.support.adapters import ADAPTERS, WAIT, HeldJob, adapter_module, serve
from tests.support.metrics import Samples, sample, scrape
from tests.support.server import FaktoryServer

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


@contextlib.contextmanager
def metrics_endpoint(registry: CollectorRegistry) -> Iterator[str]:
    """``registry`` served over HTTP on a free port of 127.0.0.1; its URL."""
    server, server_thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        server_thread.join(WAIT)


# -- a real worker ----------------------------------------------------------------------------


@pytest.mark.server
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_worker_draining_jobs_counts_them_and_serves_them_while_they_run(
    faktory_server: FaktoryServer, adapter: str
) -> None:
    queue = f"prometheus-{uuid.uuid4().hex[:10]}"
    module = adapter_module(adapter)
    worker = module.Worker(
        url=faktory_server.url,
        queues=[queue],
        concurrency=2,
        burst=True,
        time_limits={"PromSlow": 0.2},
    )
    registry = CollectorRegistry()
    worker.observe(PrometheusMetrics(registry))
    held = HeldJob(adapter)
    worker.register("PromBlocked")(held.run)

    @worker.register("PromFine")
    def fine(n: int) -> None:
        pass

    @worker.register("PromBroken")
    def broken() -> None:
        raise KeyError("missing")

    @worker.register("PromSlow")
    def slow() -> None:  # aborted by its time limit
        module.current_job().abort.wait_blocking(WAIT)

    with thread.Client(faktory_server.url) as client:
        for n in range(3):
            client.push("PromFine", [n], queue=queue)
        for jobtype in ("PromBroken", "PromNobody", "PromSlow", "PromBlocked"):
            client.push(jobtype, queue=queue)

    with metrics_endpoint(registry) as url:
        seen: Samples = {}
        held.look(lambda: seen.update(scrape(url, WAIT)))
        assert serve(adapter, worker) == 0
        held.join()
        final = scrape(url, WAIT)

    # While PromBlocked ran: one running, started and not ended; the worker's two slots.
    held_labels = {"queue": queue, "jobtype": "PromBlocked"}
    assert sample(seen, "faktory_jobs_running", **held_labels) == 1
    assert sample(seen, "faktory_jobs_started_total", **held_labels) == 1
    assert not any(
        name == "faktory_jobs_ended_total" and ("jobtype", "PromBlocked") in labels
        for name, labels in seen
    )
    assert sample(seen, "faktory_worker_job_slots") == 2
    phases = {
        dict(labels)["phase"]: value
        for (name, labels), value in seen.items()
        if name == "faktory_worker_phase"
    }
    assert sum(phases.values()) == 1
    assert phases["running"] + phases["draining"] == 1  # burst: draining once the queue is empty

    # Once the worker exited: every job counted, in the registry and over HTTP alike.
    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    def ended(jobtype: str, outcome: str, errtype: str = "") -> float | None:
        return value(
            "faktory_jobs_ended_total",
            queue=queue,
            jobtype=jobtype,
            outcome=outcome,
            errtype=errtype,
        )

    for jobtype, count in {"PromFine": 3, "PromBroken": 1, "PromSlow": 1, "PromBlocked": 1}.items():
        labels = {"queue": queue, "jobtype": jobtype}
        assert value("faktory_jobs_started_total", **labels) == count
        assert value("faktory_job_duration_seconds_count", **labels) == count
        assert value("faktory_jobs_running", **labels) == 0
    assert value("faktory_jobs_started_total", queue=queue, jobtype="PromNobody") is None
    assert value("faktory_job_duration_seconds_count", queue=queue, jobtype="PromNobody") is None
    assert ended("PromFine", "succeeded") == 3
    assert ended("PromBlocked", "succeeded") == 1
    assert ended("PromBroken", "failed", "KeyError") == 1
    assert ended("PromNobody", "failed", "UnknownJobType") == 1
    assert ended("PromSlow", "aborted", "JobTimeLimit") == 1
    slow_labels = {"queue": queue, "jobtype": "PromSlow"}
    assert (value("faktory_job_duration_seconds_sum", **slow_labels) or 0) >= 0.2
    assert value("faktory_job_duration_seconds_bucket", **slow_labels, le="0.1") == 0
    assert value("faktory_job_queue_latency_seconds_count", queue=queue) == 6  # those started
    assert value("faktory_worker_job_slots") == 0
    assert value("faktory_worker_phase", phase="exited") == 1
    assert value("faktory_worker_phase", phase="running") == 0
    assert sample(final, "faktory_jobs_started_total", queue=queue, jobtype="PromFine") == 3
    for (name, scraped_labels), scraped in final.items():
        assert registry.get_sample_value(name, dict(scraped_labels)) == scraped


@pytest.mark.server
@pytest.mark.parametrize("observed", [False, True])
def test_serve_metrics_serves_the_global_registry_and_counts_each_job_once(
    faktory_server: FaktoryServer, observed: bool
) -> None:
    queue = f"prometheus-{uuid.uuid4().hex[:10]}"
    worker = thread.Worker(url=faktory_server.url, queues=[queue], concurrency=1)
    if observed:  # a PrometheusMetrics of its own on the global registry is kept, not doubled
        worker.observe(PrometheusMetrics())
    worker.register("PromServed", lambda: None)
    server, server_thread = serve_metrics(worker, 0, "127.0.0.1")
    try:
        with thread.Client(faktory_server.url) as client:
            client.push("PromServed", queue=queue)
        worker.drain()
        samples = scrape(f"http://127.0.0.1:{server.server_port}/metrics", WAIT)
    finally:
        server.shutdown()
        server.server_close()
        server_thread.join(WAIT)
    assert sample(samples, "faktory_jobs_started_total", queue=queue, jobtype="PromServed") == 1
    assert any(name == "process_cpu_seconds_total" for name, _ in samples)  # the global one


# -- the observer alone -------------------------------------------------------------------------


def config(wid: str, concurrency: int = 4, connections: int = 20) -> WorkerConfig:
    return WorkerConfig(wid=wid, concurrency=concurrency, connections=connections)


def job(enqueued_at: str | None = None, jid: str = "job-0001") -> Job:
    return Job(jid=jid, jobtype="Resize", queue="images", enqueued_at=enqueued_at)


def report(of: Job, outcome: JobOutcome, errtype: str | None, seconds: float) -> JobReport:
    ran = errtype not in ("UnknownJobType", "DuplicateJid")  # FAILed without running
    return JobReport(
        job=of, outcome=outcome, errtype=errtype, ran=ran, started=1.0, finished=1.0 + seconds
    )


def test_workers_on_one_registry_share_its_metrics() -> None:
    registry = CollectorRegistry()
    first, second = PrometheusMetrics(registry), PrometheusMetrics(registry)
    first.serving(config("first", 3))
    second.serving(config("second", 5))

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("faktory_worker_job_slots") == 8
    assert value("faktory_worker_phase", phase="running") == 2
    first_job = job(jid="job-aaaa")  # the core reports the very Job it started
    first.job_started(first_job, 1.0)
    second.job_started(job(jid="job-bbbb"), 1.0)
    assert value("faktory_jobs_running", queue="images", jobtype="Resize") == 2
    first.job_ended(report(first_job, JobOutcome.SUCCEEDED, None, 0.5))
    assert value("faktory_jobs_running", queue="images", jobtype="Resize") == 1
    first.phase_changed(Phase.STOPPING)
    assert value("faktory_worker_phase", phase="running") == 1
    assert value("faktory_worker_phase", phase="stopping") == 1
    first.phase_changed(Phase.EXITED)
    assert value("faktory_worker_job_slots") == 5
    assert value("faktory_worker_phase", phase="stopping") == 0
    assert value("faktory_worker_phase", phase="exited") == 1
    assert value("faktory_jobs_started_total", queue="images", jobtype="Resize") == 2
    # The same worker serving again: out of exited, its slots back.
    first.serving(config("first", 3))
    assert value("faktory_worker_phase", phase="exited") == 0
    assert value("faktory_worker_job_slots") == 8


def test_two_on_the_default_registry_are_fine() -> None:
    first, second = PrometheusMetrics(), PrometheusMetrics()
    assert first.registry is second.registry is REGISTRY


def test_one_observer_for_two_serving_workers_is_refused() -> None:
    metrics = PrometheusMetrics(CollectorRegistry())
    metrics.serving(config("first"))
    with pytest.raises(RuntimeError, match=r"give each Worker its own PrometheusMetrics\(\)"):
        metrics.serving(config("second"))


def test_a_run_that_never_exited_does_not_count_twice() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    metrics.serving(config("first", 3))
    metrics.job_started(job(), 1.0)
    metrics.phase_changed(Phase.STOPPING)
    metrics.serving(config("first", 3))  # the run before was cut short
    assert registry.get_sample_value("faktory_worker_job_slots") == 3
    assert registry.get_sample_value("faktory_worker_phase", {"phase": "stopping"}) == 0
    assert registry.get_sample_value("faktory_worker_phase", {"phase": "running"}) == 1
    labels = {"queue": "images", "jobtype": "Resize"}
    assert registry.get_sample_value("faktory_jobs_running", labels) == 0


def test_connections_count_the_ready_ones_and_each_reconnect_once() -> None:
    registry = CollectorRegistry()
    first, second = PrometheusMetrics(registry), PrometheusMetrics(registry)

    def value(name: str) -> float | None:
        return registry.get_sample_value(name)

    first.serving(config("first", concurrency=8, connections=3))
    second.serving(config("second", concurrency=2))  # 2 links: never more than its slots
    assert value("faktory_worker_job_connections") == 5
    assert value("faktory_worker_ready_job_connections") == 0
    first.connections_changed(3, 0)
    second.connections_changed(2, 0)
    assert value("faktory_worker_ready_job_connections") == 5
    first.connections_changed(1, 0)  # two lost
    first.connections_changed(3, 2)  # both back
    assert value("faktory_worker_ready_job_connections") == 5
    assert value("faktory_worker_reconnects_total") == 2
    first.connections_changed(3, 2)  # told again: nothing new
    assert value("faktory_worker_reconnects_total") == 2
    first.phase_changed(Phase.EXITED)  # with its connections still counted as ready
    assert value("faktory_worker_job_connections") == 2
    assert value("faktory_worker_ready_job_connections") == 2
    first.connections_changed(0, 2)  # closed after it exited: already out of the gauges
    assert value("faktory_worker_ready_job_connections") == 2
    # The next run counts its reconnects from 0 again; the counter goes on from 2.
    first.serving(config("first", concurrency=8, connections=3))
    first.connections_changed(3, 0)
    first.connections_changed(3, 1)
    assert value("faktory_worker_reconnects_total") == 3
    assert value("faktory_worker_job_connections") == 5


def test_pushes_count_by_queue_job_type_and_outcome() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    pushed = job()
    assert metrics.pushing(pushed) is pushed
    for outcome in (PushOutcome.PUSHED, PushOutcome.PUSHED, PushOutcome.REFUSED):
        metrics.pushed(pushed, outcome, None)

    def pushes(outcome: str) -> float | None:
        labels = {"queue": "images", "jobtype": "Resize", "outcome": outcome}
        return registry.get_sample_value("faktory_pushes_total", labels)

    assert pushes("pushed") == 2
    assert pushes("refused") == 1
    assert pushes("not_sent") is None


def test_other_buckets_on_the_same_registry_are_refused() -> None:
    registry = CollectorRegistry()
    PrometheusMetrics(registry)
    with pytest.raises(ValueError, match="the same buckets"):
        PrometheusMetrics(registry, buckets=[1, 10, 100])
    PrometheusMetrics(registry, namespace="slow", buckets=[1, 10, 100])
    assert registry.get_sample_value("slow_worker_job_slots") == 0


def test_names_another_collector_took_are_refused_without_leftovers() -> None:
    registry = CollectorRegistry()
    Gauge("faktory_jobs_running", "Someone else's.", registry=registry)
    with pytest.raises(ValueError, match="another namespace= or registry="):
        PrometheusMetrics(registry)
    names = {family.name for family in registry.collect()}
    assert names == {"faktory_jobs_running"}  # what was registered before the clash is gone
    with pytest.raises(ValueError, match="another namespace="):
        PrometheusMetrics(registry)  # still refused: nothing half-made was kept
    PrometheusMetrics(registry, namespace="mine")


def queue_latency_of(enqueued_at: str | None) -> tuple[float | None, float | None]:
    """The queue latency histogram's count and sum after one job enqueued at ``enqueued_at``."""
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    metrics.serving(config("w"))
    metrics.job_started(job(enqueued_at), 1.0)
    labels = {"queue": "images"}
    return (
        registry.get_sample_value("faktory_job_queue_latency_seconds_count", labels),
        registry.get_sample_value("faktory_job_queue_latency_seconds_sum", labels),
    )


def iso(moment: datetime) -> str:
    """As Faktory writes it: RFC 3339 in UTC, with nanoseconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"


def test_the_queue_latency_is_from_enqueued_at_to_the_start() -> None:
    before = time.time()
    count, total = queue_latency_of(iso(datetime.now(UTC) - timedelta(seconds=5)))
    assert count == 1
    assert total is not None
    assert 5 <= total <= 5 + (time.time() - before) + 0.01
    # The server's clock ahead of ours: never below 0.
    assert queue_latency_of(iso(datetime.now(UTC) + timedelta(seconds=30))) == (1, 0)
    # No enqueued_at, or one that is not a time: not observed.
    assert queue_latency_of(None) == (None, None)
    assert queue_latency_of("yesterday") == (None, None)


def test_a_job_failed_without_running_has_no_duration() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    metrics.serving(config("w"))
    metrics.job_ended(report(job(), JobOutcome.FAILED, "UnknownJobType", 0.0))
    labels = {"queue": "images", "jobtype": "Resize"}
    ended = {**labels, "outcome": "failed", "errtype": "UnknownJobType"}
    assert registry.get_sample_value("faktory_jobs_ended_total", ended) == 1
    assert registry.get_sample_value("faktory_job_duration_seconds_count", labels) is None
    assert registry.get_sample_value("faktory_jobs_running", labels) is None


def test_a_second_copy_of_a_running_jid_does_not_end_the_job_that_runs() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    metrics.serving(config("w"))
    running = job(jid="job-duplicated")
    metrics.job_started(running, 1.0)
    # The core FAILs the copy at once, without running it: its report is the copy's.
    copy = Job(jid="job-duplicated", jobtype="Email", queue="images")
    metrics.job_ended(report(copy, JobOutcome.FAILED, "DuplicateJid", 0.0))
    resize, email = (
        {"queue": "images", "jobtype": "Resize"},
        {"queue": "images", "jobtype": "Email"},
    )

    def value(name: str, labels: dict[str, str]) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("faktory_jobs_running", resize) == 1
    assert value("faktory_jobs_running", email) is None
    assert value("faktory_job_duration_seconds_count", resize) == 0  # none observed yet
    metrics.job_ended(report(running, JobOutcome.SUCCEEDED, None, 90.0))
    assert value("faktory_jobs_running", resize) == 0
    assert value("faktory_job_duration_seconds_count", resize) == 1
    assert value("faktory_job_duration_seconds_sum", resize) == 90.0


# -- the docs ---------------------------------------------------------------------------------

_ROW = re.compile(r"^\| `(?P<name>\w+)` \| (?P<type>\w+) \|(?P<labels>[^|]*)\|", re.MULTILINE)


def metrics_in_the_code() -> dict[str, tuple[str, set[str]]]:
    """``{name: (type, labels)}`` of every metric, as a scrape names them."""
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    metrics.serving(config("w"))
    started = job(iso(datetime.now(UTC)))
    metrics.job_started(started, 1.0)  # so that every labelled metric has a series
    metrics.job_ended(report(started, JobOutcome.SUCCEEDED, None, 0.1))
    metrics.pushed(started, PushOutcome.PUSHED, None)
    found = {}
    for family in registry.collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        labels = {label for each in family.samples for label in each.labels} - {"le"}
        found[name] = (family.type, labels)
    return found


def test_the_operations_page_lists_every_metric_as_the_code_has_it() -> None:
    page = OPERATIONS.read_text(encoding="utf-8")
    documented = {
        row["name"]: (row["type"], set(re.findall(r"`(\w+)`", row["labels"])))
        for row in _ROW.finditer(page)
    }
    assert documented == metrics_in_the_code()


def test_the_queries_of_the_operations_page_name_metrics_that_exist() -> None:
    page = OPERATIONS.read_text(encoding="utf-8")
    exposed = set()
    for name, (kind, _) in metrics_in_the_code().items():
        exposed.add(name)
        if kind == "histogram":
            exposed.update(f"{name}_{suffix}" for suffix in ("bucket", "count", "sum"))
    queries = re.findall(r"^```promql\n(.*?)^```$", page, re.MULTILINE | re.DOTALL)
    assert len(queries) >= 4
    named = set(re.findall(r"\bfaktory_\w+", "\n".join(queries)))
    assert named
    assert named <= exposed
    # The alert rules are alerting.md's file, which test_prometheus_server checks.
    assert "](alerting.md)" in page
