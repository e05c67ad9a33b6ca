"""faktory_adapters.opentelemetry: the trace of a job from its push, through a real server, to
its handler, in every adapter; the PRODUCER spans of pushes; what it refuses.

Spans go to the SDK's InMemorySpanExporter on a TracerProvider of each test's own: the global
provider is never set. The propagator is the global default (W3C Trace Context and Baggage).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import gevent
import pytest
from opentelemetry import baggage
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from faktory_adapters import ClientObserver, PushOutcome, thread
from faktory_adapters import asyncio as aio
from faktory_adapters.opentelemetry import PushTracer, instrument_worker
from faktory_core import Job
from tests.support.adapters import ADAPTERS, WAIT, SyncClient, adapter_module
from tests.support.server import FaktoryServer, closed_port

pytestmark = pytest.mark.server

#: The time limit of the "Stall" job type, in seconds.
STALL_LIMIT = 0.2


class Declined(Exception):
    """What a failing job raises."""


class Tracing:
    """A TracerProvider of the test's own, whose spans are kept in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests")

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [
            span for span in self.exporter.get_finished_spans() if name is None or span.name == name
        ]

    def of_job(self, operation: str, jid: str) -> ReadableSpan:
        """The one span of ``operation`` ("push", "process") about the job ``jid``."""
        [span] = [
            span
            for span in self.spans()
            if span.name.startswith(f"{operation} ")
            and (span.attributes or {}).get("messaging.message.id") == jid
        ]
        return span


@pytest.fixture
def tracing() -> Iterator[Tracing]:
    kept = Tracing()
    yield kept
    kept.provider.shutdown()


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each test taking it runs once per adapter; a gevent one on a hub of its own."""
    yield str(request.param)
    if request.param == "gevent":
        gevent.get_hub().destroy(destroy_loop=True)


@pytest.fixture
def queue() -> str:
    return f"tracing-{uuid.uuid4().hex[:10]}"


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def traceparent(span: ReadableSpan) -> str:
    """The W3C ``traceparent`` of ``span``."""
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


@contextlib.contextmanager
def baggage_item(name: str, value: str) -> Iterator[None]:
    """The current context, with the baggage ``name=value``, while the block runs."""
    token = otel_context.attach(baggage.set_baggage(name, value))
    try:
        yield
    finally:
        otel_context.detach(token)


def drain(adapter: str, worker: Any) -> bool:
    """``worker.drain()``, stopped after WAIT s if still draining; whether it re-raised what a
    job raised (Declined, the one exception expected)."""
    fallback = threading.Timer(WAIT, worker.stop)
    fallback.daemon = True
    fallback.start()
    try:
        if adapter == "asyncio":
            asyncio.run(worker.drain())
        else:
            worker.drain()
    except Declined:
        return True
    finally:
        fallback.cancel()
    return False


# -- a job's trace, from its push to its handler ----------------------------------------------


def register_jobs(
    worker: Any, adapter: str, url: str, tracing: Tracing, seen: dict[str, Any]
) -> None:
    """The job types of the trace test. "Traced" makes a span of its own, then pushes a "Child"
    (through a traced Client of its adapter) with the baggage ``origin=traced``; each job
    keeps what it saw, its ``custom`` and its baggage, in ``seen`` by job type."""
    module = adapter_module(adapter)
    pushes = PushTracer(tracing.provider)

    def keep() -> None:
        job = module.current_job().job
        seen[job.jobtype] = {"custom": job.custom, "baggage": dict(baggage.get_all())}

    def handler_span() -> None:
        with tracing.tracer.start_as_current_span("handler work"):
            pass

    # Plain in every adapter: in the asyncio one, they run on a thread of the executor.
    @worker.register("Child")
    def child() -> None:
        keep()
        handler_span()

    @worker.register("Retried")
    def retried() -> None:
        pass

    if adapter == "asyncio":

        @worker.register("Traced")
        async def traced_async() -> None:
            keep()
            handler_span()
            async with aio.Client(url) as client:
                client.observe(pushes)
                with baggage_item("origin", "traced"):
                    seen["child"] = await client.push("Child", queue=aio.current_job().job.queue)

        @worker.register("Failing")
        async def failing_async() -> None:
            raise Declined("not today")

        @worker.register("Stall")
        async def stall_async() -> None:
            await asyncio.sleep(WAIT)  # cancelled at the time limit

        @worker.register("Orphan")
        async def orphan_async() -> None:
            keep()

        return

    @worker.register("Traced")
    def traced() -> None:
        keep()
        handler_span()
        with module.Client(url) as client:
            client.observe(pushes)
            with baggage_item("origin", "traced"):
                seen["child"] = client.push("Child", queue=module.current_job().job.queue)

    @worker.register("Failing")
    def failing() -> None:
        raise Declined("not today")

    sleep = gevent.sleep if adapter == "gevent" else time.sleep

    @worker.register("Stall")
    def stall() -> None:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:  # JobAborted lands in a thread between sleeps
            sleep(0.01)

    @worker.register("Orphan")
    def orphan() -> None:
        keep()


def test_a_job_continues_the_trace_of_its_push(
    adapter: str, faktory_server: FaktoryServer, tracing: Tracing, queue: str
) -> None:
    url = faktory_server.url
    worker = adapter_module(adapter).Worker(
        url=url, queues=[queue], concurrency=1, time_limits={"Stall": STALL_LIMIT}
    )
    instrument_worker(worker, tracer_provider=tracing.provider)
    seen: dict[str, Any] = {}
    register_jobs(worker, adapter, url, tracing, seen)
    with SyncClient(adapter, url) as client, thread.Client(url) as untraced:
        client.observe(PushTracer(tracing.provider))
        # A job that failed once: the server retries it with its failure's retry_count, 0.
        retried = client.push("Retried", queue=queue, retry=1)
        fetched = untraced.fetch(queue)
        assert fetched is not None
        assert fetched.jid == retried
        untraced.fail(retried, "Declined", "the first time")
        untraced.mutate("requeue", "retries", jids=[retried])
        jids = {
            jobtype: client.push(jobtype, queue=queue, retry=0, custom={"tenant": "acme"})
            for jobtype in ("Traced", "Failing", "Stall")
        }
        orphan = untraced.push("Orphan", queue=queue, retry=0)  # no trace context
    # What is current where the worker runs is not the jobs' context.
    with tracing.tracer.start_as_current_span("serving"), baggage_item("origin", "worker"):
        assert drain(adapter, worker)  # Failing raised

    jids["Child"] = seen["child"]
    push = {jobtype: tracing.of_job("push", jid) for jobtype, jid in jids.items()}
    process = {jobtype: tracing.of_job("process", jid) for jobtype, jid in jids.items()}

    # Each job's process span is the child of its push span, in its trace, and links to it.
    for jobtype in jids:
        producer, consumer = push[jobtype], process[jobtype]
        assert consumer.context.trace_id == producer.context.trace_id
        assert parent_id(consumer) == producer.context.span_id
        assert [(link.context.trace_id, link.context.span_id) for link in consumer.links] == [
            (producer.context.trace_id, producer.context.span_id)
        ]
        assert (producer.kind, consumer.kind) == (SpanKind.PRODUCER, SpanKind.CONSUMER)
    assert push["Traced"].name == process["Traced"].name.replace("process", "push")
    assert dict(push["Traced"].attributes or {}) == {
        "messaging.system": "faktory",
        "messaging.operation.type": "send",
        "messaging.operation.name": "push",
        "messaging.destination.name": queue,
        "messaging.message.id": jids["Traced"],
        "faktory.job.type": "Traced",
        "faktory.push.outcome": "pushed",
    }
    assert push["Traced"].name == f"push {queue}"
    assert dict(process["Traced"].attributes or {}) == {
        "messaging.system": "faktory",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": queue,
        "messaging.message.id": jids["Traced"],
        "messaging.client.id": worker.wid,
        "faktory.job.type": "Traced",
    }
    assert process["Traced"].name == f"process {queue}"
    assert process["Traced"].status.status_code is StatusCode.UNSET
    assert push["Traced"].status.status_code is StatusCode.UNSET

    # The job's custom keeps the user's key beside the push span's context.
    assert seen["Traced"]["custom"] == {
        "tenant": "acme",
        "traceparent": traceparent(push["Traced"]),
    }
    # Inside the job, its span is current: the handler's span and its push are its children,
    # and the Child, in the same trace, carries the baggage its push was made with.
    handler_spans = {parent_id(span): span for span in tracing.spans("handler work")}
    assert handler_spans.keys() == {
        process["Traced"].context.span_id,
        process["Child"].context.span_id,
    }
    assert parent_id(push["Child"]) == process["Traced"].context.span_id
    assert process["Child"].context.trace_id == push["Traced"].context.trace_id
    assert seen["Child"]["baggage"] == {"origin": "traced"}
    assert seen["Traced"]["baggage"] == {}

    # A job that raised: an error, with the exception as an event.
    failed = process["Failing"]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "Declined: not today"
    assert (failed.attributes or {})["error.type"] == "Declined"
    [event] = failed.events
    assert event.name == "exception"
    assert (event.attributes or {})["exception.type"] == f"{Declined.__module__}.Declined"
    assert (event.attributes or {})["exception.message"] == "not today"

    # A job aborted at its time limit: an error naming the abort, and no exception event (the
    # abort's cancellation or JobAborted is the worker's, not the job's).
    aborted = process["Stall"]
    reason = f"ran longer than {STALL_LIMIT:g} s"
    assert (aborted.attributes or {})["faktory.job.aborted"] == reason
    assert (aborted.attributes or {})["error.type"] == "JobAborted"
    assert aborted.status.status_code is StatusCode.ERROR
    assert aborted.status.description == f"aborted: {reason}"
    assert aborted.events == ()

    # A job run again carries its retry count; one pushed without a trace context gets a
    # root span (the worker's own context is not its parent).
    assert (tracing.of_job("process", retried).attributes or {})["faktory.job.retry_count"] == 0
    assert "faktory.job.retry_count" not in (process["Traced"].attributes or {})
    root = tracing.of_job("process", orphan)
    assert root.parent is None
    assert root.links == ()
    assert root.context.trace_id not in {span.context.trace_id for span in push.values()}
    assert seen["Orphan"] == {"custom": None, "baggage": {}}


# -- pushes -----------------------------------------------------------------------------------


class Refusable(ClientObserver):
    """Makes jobs of args ``["refuse me"]`` ones the server refuses, past the Job's own
    check (reserved for more than a day)."""

    def pushing(self, job: Job) -> Job:
        if job.args == ["refuse me"]:
            object.__setattr__(job, "reserve_for", 100_000)
        return job


def test_each_job_of_a_bulk_push_has_its_span_and_outcome(
    adapter: str, faktory_server: FaktoryServer, tracing: Tracing, queue: str
) -> None:
    with SyncClient(adapter, faktory_server.url) as client:
        client.observe(Refusable())
        client.observe(PushTracer(tracing.provider))
        jobs = [client.job("Bulk", [n], queue=queue) for n in range(2)]
        refused = client.job("Bulk", ["refuse me"], queue=queue)
        assert client.push_bulk([*jobs, refused]).keys() == {refused.jid}
        fetched = [client.fetch(queue) for _ in jobs]
        for job in fetched:
            client.ack(job.jid)

    for job in fetched:  # each carries the context of its own span
        span = tracing.of_job("push", job.jid)
        assert job.custom == {"traceparent": traceparent(span)}
        assert (span.attributes or {})["faktory.push.outcome"] == "pushed"
        assert span.status.status_code is StatusCode.UNSET
    span = tracing.of_job("push", refused.jid)
    assert (span.attributes or {})["faktory.push.outcome"] == "refused"
    assert (span.attributes or {})["error.type"] == "refused"
    assert span.status.status_code is StatusCode.ERROR
    assert "reserved for more than one day" in (span.status.description or "")
    assert len(tracing.spans()) == 3


def test_a_push_that_is_not_sent_ends_its_span_in_error(tracing: Tracing) -> None:
    with thread.Client(f"tcp://127.0.0.1:{closed_port()}") as client:
        client.observe(PushTracer(tracing.provider))
        with pytest.raises(ConnectionError):
            client.push("Nowhere")
    [span] = tracing.spans()
    assert (span.attributes or {})["faktory.push.outcome"] == "not_sent"
    assert span.status.status_code is StatusCode.ERROR
    assert "FaktoryConnectionError" in (span.status.description or "")


def test_the_context_replaces_an_earlier_push_s_and_keeps_the_user_s_keys(
    tracing: Tracing,
) -> None:
    pushes = PushTracer(tracing.provider)
    stale = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01", "tracestate": "old=1"}
    job = Job(
        jid="again-0000", jobtype="Again", queue="tracing", custom={"tenant": "acme", **stale}
    )
    with tracing.tracer.start_as_current_span("request") as request:
        pushed = pushes.pushing(job)
    pushes.pushed(pushed, PushOutcome.PUSHED, None)
    span = tracing.of_job("push", job.jid)
    assert pushed.custom == {"tenant": "acme", "traceparent": traceparent(span)}
    assert parent_id(span) == request.get_span_context().span_id  # the current span
    assert job.custom == {"tenant": "acme", **stale}  # the caller's job is not changed


def outcomes(spans: Sequence[ReadableSpan]) -> dict[str, str | None]:
    """Each span's job, and the outcome it ended with (None: ended without one)."""
    return {
        str((span.attributes or {})["messaging.message.id"]): (
            None
            if "faktory.push.outcome" not in (span.attributes or {})
            else str((span.attributes or {})["faktory.push.outcome"])
        )
        for span in spans
    }


def test_spans_waiting_for_their_push_s_end_are_bounded(tracing: Tracing) -> None:
    pushes = PushTracer(tracing.provider, max_pending=2)
    jobs = [Job(jid=f"bounded-{n}", jobtype="Bounded", queue="tracing") for n in range(3)]
    sent = [pushes.pushing(job) for job in jobs]
    # The third push ended the first's span, without an outcome: its end is never told.
    assert outcomes(tracing.spans()) == {"bounded-0": None}
    for job in sent:
        pushes.pushed(job, PushOutcome.PUSHED, None)
    assert outcomes(tracing.spans()) == {
        "bounded-0": None,
        "bounded-1": "pushed",
        "bounded-2": "pushed",
    }
    # A jid pushed again before its first push ended: the first span ends then.
    again = pushes.pushing(jobs[0])
    pushes.pushing(jobs[0])
    pushes.pushed(again, PushOutcome.UNKNOWN, "broken")
    assert [outcomes([span]) for span in tracing.spans()[3:]] == [
        {"bounded-0": None},
        {"bounded-0": "unknown"},
    ]


def test_pushes_from_many_threads_each_end_their_own_span(tracing: Tracing) -> None:
    pushes = PushTracer(tracing.provider)
    count, threads = 200, 8
    start = threading.Barrier(threads)

    def push_many(worker: int) -> None:
        start.wait(WAIT)
        for n in range(count):
            job = pushes.pushing(Job(jid=f"many-{worker}-{n:04}", jobtype="Many", queue="tracing"))
            pushes.pushed(job, PushOutcome.PUSHED, None)

    runners = [threading.Thread(target=push_many, args=(n,)) for n in range(threads)]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join(WAIT)
    ended = outcomes(tracing.spans())
    assert len(tracing.spans()) == count * threads
    assert set(ended.values()) == {"pushed"}


def test_push_tracer_checks_max_pending() -> None:
    with pytest.raises(ValueError, match="max_pending must be at least 1"):
        PushTracer(max_pending=0)
    with pytest.raises(TypeError, match="max_pending must be an int"):
        PushTracer(max_pending=2.5)  # type: ignore[arg-type]


# -- instrument_worker ------------------------------------------------------------------------


def test_instrument_worker_refuses_what_it_does_not_know(faktory_server: FaktoryServer) -> None:
    with pytest.raises(TypeError, match=r"must be a Worker of faktory_adapters\.asyncio"):
        instrument_worker(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"got faktory_adapters\.\w+\.Client$"):
        instrument_worker(thread.Client(faktory_server.url))  # type: ignore[arg-type]
    worker = thread.Worker(url=faktory_server.url)
    instrument_worker(worker)
    with pytest.raises(ValueError, match="instrumented already"):
        instrument_worker(worker)
    assert len(worker._middleware) == 1


# -- an optional extra ------------------------------------------------------------------------


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=WAIT * 2,
        env={**os.environ, **env},
    )


def test_without_opentelemetry_the_module_names_the_extra() -> None:
    result = run_python(
        "import sys; sys.modules['opentelemetry'] = None; import faktory_adapters.opentelemetry"
    )
    assert result.returncode != 0
    assert "pip install 'faktory-sansio[opentelemetry]'" in result.stderr


def test_a_worker_runs_without_importing_opentelemetry(
    faktory_server: FaktoryServer, queue: str
) -> None:
    code = f"""
import sys
import faktory_adapters
import faktory_adapters.asyncio
import faktory_adapters.gevent
from faktory_adapters.thread import Client, Worker

worker = Worker(queues=[{queue!r}])
ran = []
worker.register("Plain", lambda: ran.append(1))
with Client() as client:
    client.push("Plain", queue={queue!r})
worker.drain()
assert ran == [1]
print(sorted(name for name in sys.modules if name.split(".")[0] == "opentelemetry"))
"""
    result = run_python(code, FAKTORY_URL=faktory_server.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
