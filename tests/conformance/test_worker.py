"""One conformance suite for every adapter: real processes, real signals, a real server.

Each test runs unchanged against each adapter: it starts ``tests.adapters.worker_app`` as a
subprocess with ``--adapter``, waits for the events it prints, and checks what the server saw.
"""

from __future__ import annotations

import signal
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from faktory_core import Failure, Job
from faktory_core.commands import Ack, Fetch, Info, Mutate, Push, PushBulk, QueueRemove
from faktory_core.events import Fetched, InfoReply
from tests.support.blocking import BlockingClient
from tests.support.process import WorkerProcess
from tests.support.server import FaktoryServer

pytestmark = pytest.mark.server


@pytest.fixture
def client(faktory_server: FaktoryServer) -> Iterator[BlockingClient]:
    with BlockingClient(faktory_server.url) as producer:
        yield producer


@pytest.fixture
def queue() -> str:
    return f"conf-{uuid.uuid4().hex[:10]}"


def push(client: BlockingClient, queue: str, jobtype: str, *args: object) -> str:
    job = Job.create(jobtype, args, jid_factory=lambda: uuid.uuid4().hex, queue=queue)
    client.ask(Push(job=job))
    return job.jid


def worker(server: FaktoryServer, queue: str, adapter: str, *options: str) -> WorkerProcess:
    return WorkerProcess("--adapter", adapter, "--url", server.url, "--queue", queue, *options)


def info(client: BlockingClient) -> dict[str, object]:
    event = client.ask(Info())
    assert isinstance(event, InfoReply)
    return event.info


def working(client: BlockingClient) -> int:
    sets = info(client)["faktory"]["sets"]  # type: ignore[index]
    return int(sets["working"])


def queue_size(client: BlockingClient, queue: str) -> int:
    queues = info(client)["faktory"]["queues"]  # type: ignore[index]
    return int(queues.get(queue, 0))


def failure_of(client: BlockingClient, queue: str, jid: str) -> Failure | None:
    """The failure the server recorded for ``jid`` if it sits in the retry set, else None.

    The queue must be empty: the job is requeued there and fetched back.
    """
    assert queue_size(client, queue) == 0
    client.ask(Mutate(operation="requeue", target="retries", jids=[jid]))
    if queue_size(client, queue) == 0:
        return None
    event = client.ask(Fetch(queues=(queue,)))
    assert isinstance(event, Fetched)
    assert event.job is not None
    assert event.job.jid == jid
    client.ask(Ack(jid=jid))
    return event.job.failure


def test_stop_drains_running_jobs_and_exits_0(
    faktory_server: FaktoryServer, client: BlockingClient, queue: str, adapter: str
) -> None:
    jids = {push(client, queue, "Sleep", 0.5) for _ in range(3)}
    with worker(faktory_server, queue, adapter, "--concurrency", "3") as process:
        started = {process.expect("started")[1] for _ in jids}
        assert started == jids
        process.send(signal.SIGTERM)
        finished = {process.expect("done")[1] for _ in jids}
        assert finished == jids
        assert process.wait(15) == 0
    assert working(client) == 0
    assert queue_size(client, queue) == 0
    assert all(failure_of(client, queue, jid) is None for jid in jids)  # ACKed, not failed


def test_a_job_that_cleans_up_on_abort_is_failed_and_the_exit_code_is_1(
    faktory_server: FaktoryServer, client: BlockingClient, queue: str, adapter: str
) -> None:
    jid = push(client, queue, "CleanupOnAbort", 60)
    options = ("--shutdown-timeout", "1", "--abort-grace", "3")
    with worker(faktory_server, queue, adapter, *options) as process:
        process.expect("started", jid)
        stopped_at = time.monotonic()
        process.send(signal.SIGTERM)
        words = process.expect("cleanup", jid)
        assert "shutdown" in " ".join(words)  # the abort reason names the timeout
        assert process.wait(15) == 1
        elapsed = time.monotonic() - stopped_at
    # The timeout, then an end before the grace period is out: the cleanup was quick.
    assert 1.0 <= elapsed < 1.0 + 3.0
    failure = failure_of(client, queue, jid)
    assert failure is not None
    assert failure.errtype == "ShutdownAbort"
    assert "1 s shutdown timeout" in (failure.message or "")
    assert working(client) == 0


def test_serve_interrupted_by_sigint_fails_the_running_job_and_reraises(
    faktory_server: FaktoryServer, client: BlockingClient, queue: str, adapter: str
) -> None:
    """serve() installs no signal handler: SIGINT is the caller's KeyboardInterrupt (with
    asyncio.run, a cancellation first). The running job must not stay reserved for 30 min."""
    jid = push(client, queue, "CleanupOnAbort", 120)
    options = ("--serve", "--shutdown-timeout", "60", "--abort-grace", "3")
    with worker(faktory_server, queue, adapter, *options) as process:
        process.expect("started", jid)
        process.send(signal.SIGINT)
        interrupted_at = time.monotonic()
        process.expect("cleanup", jid)  # the abort reached the job at once, not after 60 s
        process.expect("raised", "KeyboardInterrupt")
        assert process.wait(15) == 130
        # Far from the 60 s timeout, however loaded the machine (CI runs 4 test processes).
        assert time.monotonic() - interrupted_at < 30.0
    failure = failure_of(client, queue, jid)
    assert failure is not None
    assert failure.errtype == "ShutdownAbort"
    cause = "cancelled" if adapter == "asyncio" else "interrupted by KeyboardInterrupt"
    assert cause in (failure.message or "")
    assert "second time" not in (failure.message or "")
    assert working(client) == 0


def test_sigint_while_a_job_holds_the_serving_thread_still_interrupts_serve(
    faktory_server: FaktoryServer, client: BlockingClient, queue: str, adapter: str
) -> None:
    """A SIGINT whose Python handler runs inside a job (a gevent job that never yields, an
    asyncio job blocking the loop) must reach serve(), not fail that job and leave the worker
    serving. Before the fix, gevent failed the job as KeyboardInterrupt and went on."""
    jid = push(client, queue, "HogThenCleanup", 1.5, 60)
    options = ("--serve", "--shutdown-timeout", "30", "--abort-grace", "3")
    with worker(faktory_server, queue, adapter, *options) as process:
        process.expect("started", jid)
        process.send(signal.SIGINT)  # while the job spins
        process.expect("cleanup", jid)
        process.expect("raised", "KeyboardInterrupt")
        assert process.wait(15) == 130
    failure = failure_of(client, queue, jid)
    assert failure is not None
    assert failure.errtype == "ShutdownAbort"
    assert working(client) == 0


def test_a_job_that_ignores_the_abort_is_failed_and_the_worker_exits_after_the_grace(
    faktory_server: FaktoryServer, client: BlockingClient, queue: str, adapter: str
) -> None:
    jid = push(client, queue, "IgnoreAbort", 60)
    options = ("--shutdown-timeout", "1", "--abort-grace", "1.5")
    with worker(faktory_server, queue, adapter, *options) as process:
        process.expect("started", jid)
        stopped_at = time.monotonic()
        process.send(signal.SIGTERM)
        process.expect("ignored", jid)
        assert process.wait(15) == 1
        elapsed = time.monotonic() - stopped_at
    assert 2.5 <= elapsed < 4.5  # timeout + grace, and not later
    failure = failure_of(client, queue, jid)
    assert failure is not None
    assert failure.errtype == "ShutdownAbort"


def test_a_second_sigterm_aborts_at_once(
    faktory_server: FaktoryServer, client: BlockingClient, queue: str, adapter: str
) -> None:
    jid = push(client, queue, "CleanupOnAbort", 60)
    with worker(faktory_server, queue, adapter, "--shutdown-timeout", "30") as process:
        process.expect("started", jid)
        process.send(signal.SIGTERM)
        process.expect("phase", "quiet")
        aborted_at = time.monotonic()
        process.send(signal.SIGTERM)
        words = process.expect("cleanup", jid)
        assert "second time" in " ".join(words)
        assert process.wait(15) == 1
        assert time.monotonic() - aborted_at < 3.0
    failure = failure_of(client, queue, jid)
    assert failure is not None
    assert failure.errtype == "ShutdownAbort"


def test_sigtstp_stops_fetching_while_running_jobs_finish(
    faktory_server: FaktoryServer, client: BlockingClient, queue: str, adapter: str
) -> None:
    # Long enough that the quiet comes before the job ends, however loaded the machine: a job
    # that ended first would have sent its ACK with the next FETCH, which may take `second`.
    first = push(client, queue, "Sleep", 3.0)
    with worker(faktory_server, queue, adapter, "--concurrency", "1") as process:
        process.expect("started", first)  # the only slot is busy: no FETCH is in flight
        process.send(signal.SIGTSTP)
        process.expect("phase", "quiet")
        second = push(client, queue, "Sleep", 0)
        process.expect("done", first)
        process.send(signal.SIGTERM)
        assert process.wait(15) == 0
        assert second not in " ".join(process.lines)
    assert queue_size(client, queue) == 1  # never fetched
    assert working(client) == 0
    client.ask(QueueRemove(queues=(queue,)))
    assert failure_of(client, queue, first) is None


def test_stopping_during_a_blocking_fetch_never_strands_a_job(
    faktory_server: FaktoryServer, client: BlockingClient, queue: str, adapter: str
) -> None:
    with worker(faktory_server, queue, adapter, "--concurrency", "2") as process:
        process.expect("wid")
        process.send(signal.SIGTERM)  # both links are inside FETCH, blocking on the server
        jid = push(client, queue, "Sleep", 0)  # a FETCH in flight may take it: it must run
        assert process.wait(15) == 0
        # Every line it printed, not only those awaited: "done <jid>" comes last, if at all.
        ran = ["done", jid] in [line.split() for line in process.read_the_rest()]
    assert working(client) == 0  # not reserved by the exited worker
    assert ran or queue_size(client, queue) == 1


def web_signal(server: FaktoryServer, wid: str, action: str) -> None:
    """Press the Web UI's Quiet or Stop button for ``wid``."""
    request = urllib.request.Request(
        f"{server.web_url}/busy",
        data=urllib.parse.urlencode({"wid": wid, "signal": action}).encode(),
        headers={"Origin": server.web_url},
        method="POST",
    )

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as answer:  # the 302 back to /busy
        opener.open(request, timeout=10)
    assert answer.value.code == 302, answer.value.read()


def test_server_quiet_then_terminate_through_the_web_ui(
    faktory_server: FaktoryServer, client: BlockingClient, queue: str, adapter: str
) -> None:
    options = ("--heartbeat-interval", "0.5", "--concurrency", "1")
    first = push(client, queue, "Sleep", 2.0)
    with worker(faktory_server, queue, adapter, *options) as process:
        wid = process.expect("wid")[1]
        process.expect("started", first)
        web_signal(faktory_server, wid, "quiet")
        process.expect("heartbeat", "quiet", timeout=3)
        process.expect("phase", "quiet")
        second = push(client, queue, "Sleep", 0)
        process.expect("done", first)
        web_signal(faktory_server, wid, "terminate")
        process.expect("heartbeat", "terminate", timeout=3)
        assert process.wait(15) == 0
        assert second not in " ".join(process.lines)
    assert queue_size(client, queue) == 1
    assert working(client) == 0


def test_heartbeats_go_on_while_a_handler_blocks_its_runtime(
    faktory_server: FaktoryServer, client: BlockingClient, queue: str, adapter: str
) -> None:
    options = ("--heartbeat-interval", "0.5", "--concurrency", "1")
    jid = push(client, queue, "BlockLoop", 4.0)
    with worker(faktory_server, queue, adapter, *options) as process:
        wid = process.expect("wid")[1]
        process.expect("started", jid)
        web_signal(faktory_server, wid, "quiet")
        # The server answers a BEAT with "quiet" while the loop is still blocked: the
        # heartbeat did not wait for the loop.
        process.expect("heartbeat", "quiet", timeout=3)
        assert f"unblocked {jid}" not in process.lines
        process.expect("unblocked", jid)
        if "phase quiet" not in process.lines:  # the thread adapter's loop was never blocked
            process.expect("phase", "quiet")
        process.send(signal.SIGTERM)
        assert process.wait(15) == 0
    assert failure_of(client, queue, jid) is None


def test_handler_errors_unknown_job_types_and_sync_handlers(
    faktory_server: FaktoryServer, client: BlockingClient, queue: str, adapter: str
) -> None:
    boom = push(client, queue, "Boom", "kaboom")
    sync = push(client, queue, "SyncSleep", 0.2)
    unknown = push(client, queue, "NoSuchJobType")
    with worker(faktory_server, queue, adapter) as process:
        words = process.expect("started", sync)
        if adapter != "gevent":  # a plain function runs on a thread of the pool
            assert words[2].startswith("faktory-job")
        process.expect("done", sync)
        process.send(signal.SIGTERM)
        assert process.wait(15) == 0
    failure = failure_of(client, queue, boom)
    assert failure is not None
    assert (failure.errtype, failure.message) == ("ValueError", "kaboom")
    assert any("raise ValueError(message)" in line for line in failure.backtrace)
    assert failure_of(client, queue, sync) is None
    failure = failure_of(client, queue, unknown)
    assert failure is not None
    assert failure.errtype == "UnknownJobType"
    assert "NoSuchJobType" in (failure.message or "")


def test_weighted_queues_are_served_in_proportion(
    faktory_server: FaktoryServer, client: BlockingClient, queue: str, adapter: str
) -> None:
    heavy, light = f"{queue}-heavy", f"{queue}-light"
    jobs = [
        Job.create("Record", [], jid_factory=lambda: uuid.uuid4().hex, queue=name)
        for name in (heavy, light)
        for _ in range(150)
    ]
    client.ask(PushBulk(jobs=jobs))
    weights = ("--queue", f"{heavy}:3", "--queue", f"{light}:1", "--concurrency", "1")
    with WorkerProcess("--adapter", adapter, "--url", faktory_server.url, *weights) as process:
        served = [process.expect("ran")[1] for _ in range(120)]  # both queues still hold jobs
        process.send(signal.SIGTERM)
        assert process.wait(15) == 0
    share = served.count(heavy) / len(served)
    assert 0.6 <= share <= 0.9, share  # 3:1 gives 0.75; binomial sd over 120 is 0.04
    client.ask(QueueRemove(queues=(heavy, light)))
