"""The runtime-neutral driver, over a runtime that only records what it is asked to do.

What the three adapters share is tested here once, without a server: inputs that come before
the machine starts, a feed never re-entered, late inputs after the exit carrying out nothing
(the machine ignores them; the driver must not fail on them either), and the middleware
chain's order. Their behaviour against a real server is the conformance suite's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import faktory_core as core
from faktory_adapters import thread
from faktory_adapters._driver import Driver, JobContextBase
from faktory_core.machine_io import AbortRequested, ConnectionLost, StopRequested, TimerFired


class RecordingRuntime:
    """A runtime that runs nothing: it records each call, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.clock = 100.0
        self.on_connect: Callable[[int], None] | None = None

    def now(self) -> float:
        return self.clock

    def wake(self) -> None:
        self.calls.append(("wake", None))

    def arm_timer(self, deadline: float | None) -> None:
        self.calls.append(("arm_timer", deadline))

    def connect(self, link: int) -> None:
        self.calls.append(("connect", link))
        if self.on_connect is not None:
            self.on_connect(link)

    def write(self, link: int, data: bytes) -> None:
        self.calls.append(("write", link))

    def close(self, link: int) -> None:
        self.calls.append(("close", link))

    def new_context(self, job: core.Job) -> JobContextBase:
        return thread.JobContext(job, None)  # type: ignore[arg-type]

    def start_job(self, context: Any, handler: Any) -> None:
        self.calls.append(("start_job", context.job.jid))

    def interrupt(self, context: Any) -> None:
        self.calls.append(("interrupt", context.job.jid))

    def stack(self, context: Any) -> str:
        return "(recorded)\n"

    def run_hooks_later(self, kind: str) -> None:
        self.calls.append(("hooks", kind))

    def exited(self, code: int) -> None:
        self.calls.append(("exited", code))

    def named(self, name: str) -> list[Any]:
        return [argument for call, argument in self.calls if call == name]


@pytest.fixture
def worker() -> thread.Worker:
    # Port 9 (discard) on loopback: nothing listens, the heartbeat's connects fail at once.
    return thread.Worker(url="tcp://127.0.0.1:9", concurrency=2, shutdown_timeout=1.0)


@pytest.fixture
def runtime() -> RecordingRuntime:
    return RecordingRuntime()


@pytest.fixture
def driver(worker: thread.Worker, runtime: RecordingRuntime) -> Iterator[Driver]:
    driver = Driver(worker, worker._make_config(), runtime)
    yield driver
    driver.finish_heartbeat()


def test_inputs_before_begin_wait_and_follow_start(
    driver: Driver, runtime: RecordingRuntime
) -> None:
    driver.post(StopRequested(source="test"))
    driver.feed()  # not started: nothing reaches the machine
    assert runtime.named("connect") == []
    assert driver.machine.phase is core.Phase.RUNNING
    driver.begin()
    assert runtime.named("connect") == [0, 1]  # Start came first, then the stop
    assert driver.machine.phase is not core.Phase.RUNNING
    assert runtime.named("hooks") == ["quiet"]


def test_an_input_fed_while_actions_run_waits_its_turn(
    driver: Driver, runtime: RecordingRuntime
) -> None:
    # A runtime that reports a failed connect at once, from inside the Connect action.
    runtime.on_connect = lambda link: driver.feed(ConnectionLost(link=link, reason="refused"))
    driver.begin()
    connects = [index for index, (call, _) in enumerate(runtime.calls) if call == "connect"]
    timers = [index for index, (call, _) in enumerate(runtime.calls) if call == "arm_timer"]
    assert len(connects) == 2
    # Both Connects of Start were carried out before either loss was handled: one timer,
    # armed once every queued input was fed, for the reconnect backoff.
    assert timers
    assert min(timers) > max(connects)
    assert runtime.named("arm_timer")[-1] is not None


def test_late_inputs_after_the_exit_carry_out_nothing(
    driver: Driver, runtime: RecordingRuntime
) -> None:
    driver.begin()
    driver.feed(AbortRequested(reason="test"))
    for link in (0, 1):
        driver.feed(ConnectionLost(link=link, reason="gone", permanent=True))
    runtime.clock += 60.0
    driver.feed(TimerFired())
    assert runtime.named("exited") == [core.EXIT_CLEAN]
    assert driver.exit_code == core.EXIT_CLEAN
    before = list(runtime.calls)
    driver.feed(StopRequested(source="late"))
    driver.feed(TimerFired())
    assert [call for call in runtime.calls[len(before) :] if call[0] != "arm_timer"] == []


def test_the_middleware_wraps_the_handler_outermost_first(
    driver: Driver, worker: thread.Worker
) -> None:
    seen: list[str] = []

    def outer(context: Any, call_next: Callable[[], None]) -> None:
        seen.append("outer in")
        call_next()
        seen.append("outer out")

    def inner(context: Any, call_next: Callable[[], None]) -> None:
        seen.append("inner in")
        call_next()
        seen.append("inner out")

    worker.use(outer)
    worker.use(inner)
    driver.chain(None, lambda: seen.append("handler"))()
    assert seen == ["outer in", "inner in", "handler", "inner out", "outer out"]
