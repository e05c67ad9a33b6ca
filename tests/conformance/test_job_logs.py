"""Every job outcome a user looks for is in the log, with its jid and job type, in every adapter.

A failure at ERROR with its traceback (``exc_info``, for Sentry-style handlers), an unknown job
type, an abort and a time limit at WARNING, a success at DEBUG with its duration; TTIN logs
each running job's own stack. Against a real server.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import uuid
from typing import Any

import pytest

from faktory_adapters import Jobs, _logging, thread
from tests.cli.command import ROOT, Command
from tests.support.adapters import adapter_module, capture_logs, serve
from tests.support.server import FaktoryServer

pytestmark = pytest.mark.server


@pytest.fixture
def queue() -> str:
    return f"logs-{uuid.uuid4().hex[:10]}"


def burst_worker(adapter: str, server: FaktoryServer, queue: str, **options: Any) -> Any:
    return adapter_module(adapter).Worker(
        url=server.url, queues=[queue], concurrency=2, burst=True, **options
    )


def records_about(records: list[logging.LogRecord], jid: str) -> list[logging.LogRecord]:
    """The faktory records that carry ``jid`` as their job's."""
    return [
        record
        for record in records
        if record.name.startswith("faktory") and getattr(record, "faktory_jid", "") == jid
    ]


def test_a_failing_job_is_logged_at_error_with_its_traceback(
    adapter: str, faktory_server: FaktoryServer, client: thread.Client, queue: str
) -> None:
    worker = burst_worker(adapter, faktory_server, queue)

    @worker.register("Explodes")
    def explodes(what: str) -> None:
        raise ValueError(f"no {what} today")

    jid = client.push("Explodes", ["cheese"], queue=queue)
    with capture_logs() as logs:
        assert serve(adapter, worker) == 0
    [record] = [r for r in records_about(logs.records, jid) if r.levelno == logging.ERROR]
    assert record.faktory_jobtype == "Explodes"  # type: ignore[attr-defined]
    message = record.getMessage()
    assert message.startswith(f"Explodes {jid} failed after ")
    assert message.endswith(" s: ValueError: no cheese today")
    assert record.exc_info is not None
    assert record.exc_info[0] is ValueError
    assert "in explodes" in logs.text  # the traceback reaches the handler's own frame


def test_a_successful_job_is_logged_at_debug_with_its_duration(
    adapter: str, faktory_server: FaktoryServer, client: thread.Client, queue: str
) -> None:
    worker = burst_worker(adapter, faktory_server, queue)
    worker.register("Fine", lambda: None)
    jid = client.push("Fine", [], queue=queue)
    with capture_logs() as logs:
        assert serve(adapter, worker) == 0
    [record] = records_about(logs.records, jid)
    assert record.levelno == logging.DEBUG
    assert record.getMessage().startswith(f"Fine {jid} done in ")
    assert record.getMessage().endswith(" s")


def test_an_unknown_job_type_is_logged_at_warning(
    adapter: str, faktory_server: FaktoryServer, client: thread.Client, queue: str
) -> None:
    worker = burst_worker(adapter, faktory_server, queue)
    worker.register("Known", lambda: None)
    jid = client.push("NobodyHandlesThis", [], queue=queue)
    with capture_logs() as logs:
        assert serve(adapter, worker) == 0
    [record] = records_about(logs.records, jid)
    assert record.levelno == logging.WARNING
    assert record.faktory_jobtype == "NobodyHandlesThis"  # type: ignore[attr-defined]
    assert "NobodyHandlesThis" in record.getMessage()
    assert jid in record.getMessage()


def test_a_job_over_its_time_limit_is_logged_at_warning(
    adapter: str, faktory_server: FaktoryServer, client: thread.Client, queue: str
) -> None:
    module = adapter_module(adapter)
    worker = burst_worker(adapter, faktory_server, queue, time_limits={"Slow": 0.2})

    @worker.register("Slow")
    def slow() -> None:  # a plain function: it runs in every adapter, in a thread in asyncio
        module.current_job().abort.wait_blocking(10)

    jid = client.push("Slow", [], queue=queue)
    with capture_logs() as logs:
        assert serve(adapter, worker) == 0
    warnings = [r for r in records_about(logs.records, jid) if r.levelno == logging.WARNING]
    assert [r.getMessage().split(": ", 1)[1] for r in warnings] == ["ran longer than 0.2 s"]
    assert warnings[0].getMessage().startswith(f"Slow {jid} aborted after ")
    # Aborted, not failed: no ERROR line on top of the warning.
    assert all(r.levelno < logging.ERROR for r in records_about(logs.records, jid))


def test_an_asyncio_job_cancelled_by_something_else_is_logged_as_a_failure(
    faktory_server: FaktoryServer, client: thread.Client, queue: str
) -> None:
    worker = burst_worker("asyncio", faktory_server, queue)

    @worker.register("CancelsItself")
    async def cancels_itself() -> None:
        current = asyncio.current_task()
        assert current is not None
        # Its own code sets its signal (as a test might): that is not the worker's abort.
        adapter_module("asyncio").current_job().abort.set("set by the job itself")
        current.cancel()  # as a library the job calls might
        await asyncio.sleep(10)

    jid = client.push("CancelsItself", [], queue=queue)
    with capture_logs() as logs:
        assert serve("asyncio", worker) == 0
    [record] = [r for r in records_about(logs.records, jid) if r.levelno == logging.ERROR]
    assert record.getMessage().endswith("its task was cancelled, not by the worker")


@pytest.mark.parametrize("adapter", ["thread", "gevent"])
def test_an_async_handler_on_a_blocking_adapter_is_logged_as_a_failure(
    adapter: str, faktory_server: FaktoryServer, client: thread.Client, queue: str
) -> None:
    worker = burst_worker(adapter, faktory_server, queue)

    @worker.register("Coroutine")
    async def coroutine() -> None:
        pass

    jid = client.push("Coroutine", [], queue=queue)
    with capture_logs() as logs:
        assert serve(adapter, worker) == 0
    [record] = [r for r in records_about(logs.records, jid) if r.levelno == logging.ERROR]
    assert "returned coroutine, which nothing awaits" in record.getMessage()


def test_current_job_outside_a_job_says_so(adapter: str) -> None:
    with pytest.raises(LookupError, match=r"outside a job.*run_inline"):
        adapter_module(adapter).current_job()


def test_a_log_format_naming_the_job_fields_works_before_any_worker_exists() -> None:
    # A web app that shares its logging config with its workers, and never serves one.
    script = (
        "import logging, faktory_adapters\n"
        "logging.basicConfig(format='[%(faktory_jobtype)s|%(faktory_jid)s] %(message)s')\n"
        "logging.getLogger('app').warning('hello')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,  # this checkout's package, not whichever one is installed
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert done.stderr == "[|] hello\n"


def test_ttin_logs_each_running_job_down_to_where_it_waits(
    adapter: str, faktory_server: FaktoryServer, client: thread.Client, queue: str
) -> None:
    registry = f"tests.conformance.jobs_visible:{adapter}_jobs"
    with Command(
        "--adapter", adapter, "-r", registry, "--url", faktory_server.url, "-q", queue
    ) as worker:
        token = uuid.uuid4().hex[:8]
        jid = client.push("Nap", [token, 5], queue=queue)
        worker.expect(f"napping {token}")
        worker.send(signal.SIGTTIN)
        worker.expect(f"Nap {jid} running for ")
        # The stack goes on down to the job's own innermost call, not the adapter's frame.
        worker.expect(rf"jobs_visible\.py.*in innermost_wait_{adapter}")
        # Then a clean stop: the job ends and is ACKed, nothing is left reserved on the
        # server the other tests share.
        worker.send(signal.SIGTERM)
        assert worker.wait(30) == 0


def test_a_worker_puts_the_job_fields_back_when_a_record_factory_set_later_dropped_them(
    faktory_server: FaktoryServer, client: thread.Client, queue: str
) -> None:
    previous = logging.getLogRecordFactory()
    logging.setLogRecordFactory(logging.LogRecord)  # another library's, set without chaining
    try:
        worker = burst_worker("thread", faktory_server, queue)
        worker.register("Fine", lambda: None)
        jid = client.push("Fine", [], queue=queue)
        with capture_logs() as logs:
            assert serve("thread", worker) == 0  # it installs the fields again at its start
        [done] = [r for r in logs.records if r.getMessage().startswith("Fine ")]
        assert (done.faktory_jobtype, done.faktory_jid) == ("Fine", jid)  # type: ignore[attr-defined]
        factory = logging.getLogRecordFactory()
        _logging.install()
        assert logging.getLogRecordFactory() is factory  # ours already: not wrapped twice
    finally:
        logging.setLogRecordFactory(previous)


def test_a_worker_says_which_job_types_push_to_queues_it_does_not_fetch(
    faktory_server: FaktoryServer, queue: str
) -> None:
    jobs = Jobs()
    jobs.register("Elsewhere", lambda: None)  # a registry's job type pushes to "default"
    worker = burst_worker("thread", faktory_server, queue)
    worker.include(jobs)
    worker.register("Here", lambda: None)  # registered on the worker: pushes to its queue
    with capture_logs() as logs:
        assert serve("thread", worker) == 0
    [line] = [r.getMessage() for r in logs.records if "does not fetch" in r.getMessage()]
    assert line.endswith(f"push to queues it does not fetch ({queue}): Elsewhere to 'default'")
