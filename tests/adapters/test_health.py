"""``serve_health``: a real worker of each adapter probed over HTTP while it starts, runs, is
quiet, has its loop hogged by a job, loses the server (through the fault proxy), and exits;
and its heartbeat thread stuck, then dead."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import pytest

from faktory_adapters import Jobs, WorkerObserver, thread
from faktory_adapters.health import HealthServer, serve_health
from faktory_core import Job, OptionError
from tests.cli.command import taken_port
from tests.support.adapters import ADAPTERS, WAIT, adapter_module, capture_logs
from tests.support.proxy import FaultProxy
from tests.support.server import FaktoryServer

pytestmark = pytest.mark.server

#: A short stuck threshold, for the tests that make the worker stuck: a healthy loop answers
#: a ping within microseconds.
STUCK_AFTER = 0.5


def probe(health: HealthServer, path: str, method: str = "GET") -> tuple[int, str]:
    """The status and body of one request to the health server."""
    connection = http.client.HTTPConnection("127.0.0.1", health.port, timeout=WAIT)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def wait_for(
    health: HealthServer,
    path: str,
    status: int,
    *,
    meanwhile: Callable[[], None] = lambda: None,
) -> str:
    """Probe ``path`` until it answers ``status`` (WAIT s at most); its body. ``meanwhile``
    runs before each probe (to check another endpoint)."""
    deadline = time.monotonic() + WAIT
    while True:
        meanwhile()
        answer = probe(health, path)
        if answer[0] == status:
            return answer[1]
        assert time.monotonic() < deadline, f"{path} still answers {answer}, not {status}"
        time.sleep(0.02)


@contextlib.contextmanager
def serving(adapter: str, worker: Any) -> Iterator[threading.Thread]:
    """``worker`` serving on a thread of its own while the block runs; stopped after it."""

    def serve() -> None:
        try:
            if adapter == "asyncio":
                asyncio.run(worker.serve())
            else:
                worker.serve()
        finally:
            if adapter == "gevent":  # this thread's hub, with it
                gevent.get_hub().destroy(destroy_loop=True)

    runner = threading.Thread(target=serve, name="serving", daemon=True)
    runner.start()
    try:
        yield runner
    finally:
        with contextlib.suppress(RuntimeError):  # not serving (yet, or any more)
            worker.stop()
        runner.join(WAIT)
        assert not runner.is_alive(), "the worker did not exit"


def unique(prefix: str) -> str:
    return f"health-{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_worker_is_alive_when_starting_ready_when_running_unready_when_quiet_dead_once_exited(
    faktory_server: FaktoryServer, adapter: str
) -> None:
    worker = adapter_module(adapter).Worker(url=faktory_server.url, queues=[unique("idle")])
    with serve_health(worker, 0, "127.0.0.1") as health:
        assert probe(health, "/livez") == (200, "alive: starting, not serving yet\n")
        assert probe(health, "/readyz") == (503, "starting: not serving yet\n")
        with serving(adapter, worker) as runner:
            body = wait_for(health, "/readyz", 200)
            assert body == "ready: running, 10 of 10 connections ready\n"
            assert probe(health, "/livez") == (200, "alive: running\n")
            assert probe(health, "/livez", "HEAD") == (200, "")
            assert probe(health, "/readyz", "HEAD") == (200, "")
            assert probe(health, "/readyz?verbose") == (200, body)
            assert probe(health, "/")[0] == 404
            assert probe(health, "/health")[0] == 404

            worker.quiet()
            body = wait_for(health, "/readyz", 503)
            assert body == "quiet: no new fetches, running jobs continue\n"
            assert probe(health, "/livez") == (200, "alive: quiet\n")

            worker.stop()
            runner.join(WAIT)
        assert probe(health, "/livez") == (503, "the worker has exited\n")
        assert probe(health, "/readyz") == (503, "the worker has exited\n")


class HogOnStart(WorkerObserver):
    """Blocks the worker's loop (observers run there) when a job starts, until released."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release

    def job_started(self, job: Job, now: float) -> None:
        self.release.wait(WAIT)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_hogged_loop_fails_liveness_until_it_is_let_go(
    faktory_server: FaktoryServer, adapter: str
) -> None:
    queue = unique("hog")
    worker = adapter_module(adapter).Worker(url=faktory_server.url, queues=[queue])
    release = threading.Event()
    jobs = Jobs()
    if adapter == "asyncio":  # a coroutine that blocks the event loop

        @jobs.register("HealthHog")
        async def hog_the_loop() -> None:
            release.wait(WAIT)

    elif adapter == "gevent":  # a greenlet that never yields: it blocks the hub

        @jobs.register("HealthHog")
        def hog_the_hub() -> None:
            release.wait(WAIT)

    else:  # a job runs on a thread of the pool: only an observer can block the I/O thread
        jobs.register("HealthHog")(lambda: None)
        worker.observe(HogOnStart(release))
    worker.include(jobs)

    with (
        serve_health(worker, 0, "127.0.0.1", stuck_after=STUCK_AFTER) as health,
        serving(adapter, worker),
    ):
        try:
            wait_for(health, "/readyz", 200)
            with thread.Client(faktory_server.url) as client:
                client.push("HealthHog", queue=queue)
            body = wait_for(health, "/livez", 503)
            assert body.startswith("the worker's loop is stuck: a ping unanswered for ")
            status, reason = probe(health, "/readyz")  # its reason's seconds have moved on
            assert status == 503
            assert reason.startswith("the worker's loop is stuck: ")
        finally:
            release.set()
        assert wait_for(health, "/livez", 200) == "alive: running\n"
        wait_for(health, "/readyz", 200)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_server_outage_fails_readiness_never_liveness(
    faktory_server: FaktoryServer, adapter: str
) -> None:
    with FaultProxy(faktory_server.host, faktory_server.port, seed=5) as proxy:
        worker = adapter_module(adapter).Worker(
            url=proxy.url, queues=[unique("outage")], concurrency=3
        )
        # Far above what a loop under test load takes to answer: liveness must hold.
        with serve_health(worker, 0, "127.0.0.1", stuck_after=1.0) as health:
            livez: list[tuple[int, str]] = []

            def check_liveness() -> None:
                livez.append(probe(health, "/livez"))

            with serving(adapter, worker):
                wait_for(health, "/readyz", 200, meanwhile=check_liveness)
                # Every connection is cut, and every new one at its first byte: the server
                # is gone, for the worker's links and its heartbeat alike.
                proxy.set_faults(mean_bytes=1, mean_seconds=None)
                proxy.cut_all()
                body = wait_for(health, "/readyz", 503, meanwhile=check_liveness)
                assert body.startswith("not connected: ")
                assert body.endswith(" of 3 connections to the server ready\n")
                # The outage lasts over twice the stuck threshold, with the worker retrying:
                # its loop and heartbeat go on answering.
                driver = worker._driver
                assert driver is not None
                answered = driver.pings_answered
                cuts = proxy.faults
                deadline = time.monotonic() + WAIT
                while not (driver.pings_answered >= answered + 10 and proxy.faults >= cuts + 4):
                    assert time.monotonic() < deadline, "the worker stopped answering pings"
                    check_liveness()
                    time.sleep(0.05)
                assert probe(health, "/readyz")[0] == 503
                proxy.set_faults(mean_bytes=None, mean_seconds=None)
                wait_for(health, "/readyz", 200, meanwhile=check_liveness)
            assert livez
            assert set(livez) == {(200, "alive: running\n")}


def test_a_stuck_then_dead_heartbeat_thread_fails_liveness(faktory_server: FaktoryServer) -> None:
    # The heartbeat thread is the same in every adapter: one is enough.
    worker = thread.Worker(
        url=faktory_server.url, queues=[unique("heartbeat")], connect_timeout=0.5
    )
    mode = "ok"
    release = threading.Event()

    def clock() -> float:  # the heartbeat thread reads it at every turn
        if mode == "stuck":
            release.wait(WAIT)
        elif mode == "dead":
            raise RuntimeError("a bug in the heartbeat thread")
        return time.monotonic()

    with (
        capture_logs() as logs,
        serve_health(worker, 0, "127.0.0.1", stuck_after=STUCK_AFTER) as health,
        serving("thread", worker),
    ):
        wait_for(health, "/readyz", 200)
        assert worker._driver is not None
        heartbeat = worker._driver.heartbeat  # type: ignore[attr-defined]
        heartbeat._clock = clock
        mode = "stuck"
        try:
            body = wait_for(health, "/livez", 503)
        finally:
            mode = "ok"
            release.set()
        # Over stuck_after plus the connect timeout, which a connect may take.
        assert body.startswith("the heartbeat thread is stuck: a ping unanswered for ")
        assert body.endswith(" s (over 1 s)\n")
        assert wait_for(health, "/livez", 200) == "alive: running\n"
        mode = "dead"
        body = wait_for(health, "/livez", 503)
        assert body == "the heartbeat thread has stopped (see the log)\n"
        assert probe(health, "/readyz") == (503, body)
        assert "the heartbeat thread failed" in logs.text


def test_the_threshold_must_be_positive_and_the_worker_not_serving_yet(
    faktory_server: FaktoryServer,
) -> None:
    worker = thread.Worker(url=faktory_server.url, queues=[unique("options")], burst=True)
    with pytest.raises(ValueError, match="stuck_after"):
        serve_health(worker, 0, "127.0.0.1", stuck_after=0)
    assert worker.drain() == 0
    with pytest.raises(RuntimeError, match="before the worker serves"):
        serve_health(worker, 0, "127.0.0.1")


LOCAL = "127.0.0.1"


def test_a_worker_that_fails_before_it_serves_is_not_alive(faktory_server: FaktoryServer) -> None:
    with taken_port() as port:
        worker = thread.Worker(url=faktory_server.url, metrics_port=port, metrics_address=LOCAL)
        with serve_health(worker, 0, LOCAL) as health:
            assert probe(health, "/livez")[0] == 200  # starting
            with pytest.raises(OSError, match="metrics_port"):
                worker.drain()
            failed = "the worker stopped before it served (see the log)\n"
            assert probe(health, "/livez") == (503, failed)
            assert probe(health, "/readyz") == (503, failed)


def test_a_port_in_use_raises_oserror(faktory_server: FaktoryServer) -> None:
    worker = thread.Worker(url=faktory_server.url)
    with serve_health(worker, 0, "127.0.0.1") as first, pytest.raises(OSError, match="in use"):
        serve_health(thread.Worker(url=faktory_server.url), first.port, "127.0.0.1")


@pytest.mark.parametrize(
    ("port", "error", "words"),
    [(70000, OptionError, "port must be 0 (any free port) to 65535"), ("80", TypeError, "'80'")],
)
def test_a_port_that_is_not_one_is_refused_naming_it(
    port: Any, error: type[Exception], words: str
) -> None:
    worker = thread.Worker(url="tcp://localhost:7419")
    with pytest.raises(error, match=re.escape(words)):
        serve_health(worker, port, LOCAL)


def test_a_client_that_sends_nothing_is_let_go(monkeypatch: pytest.MonkeyPatch) -> None:
    from faktory_adapters import health as module

    assert module._Handler.timeout == 10  # the standard library's default waits forever
    monkeypatch.setattr(module._Handler, "timeout", 0.2)
    worker = thread.Worker(url="tcp://localhost:7419")
    with (
        serve_health(worker, 0, LOCAL) as health,
        socket.create_connection((LOCAL, health.port)) as silent,
    ):
        silent.settimeout(WAIT)
        assert silent.recv(1) == b""  # the server closed it: its thread is free
