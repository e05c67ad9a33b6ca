"""``faktory-worker -c 500`` under thousands of short sleeping jobs: no hang, nothing lost.

High concurrency is a workload of its own: hundreds of jobs end within moments of each other,
and every end posts a wake-up to the worker's loop. The thread and gevent drivers once wrote
those wake-ups to a blocking socketpair, also from the loop's own thread (a gevent link runs
in the hub; the thread adapter's signal handlers run in the loop's thread): with a few hundred
wake-ups pending its buffer was full, and the loop blocked on itself. The worker stopped
fetching, ignored SIGTERM and left its jobs reserved for 30 minutes. A wake-up lost instead of
blocked is as bad: the loop sleeps on with ended jobs unACKed, until its next deadline (a stop
then waits out the shutdown timeout) or for good. So the shutdown timeout given here is long,
and a stop must end well within it.

Each adapter runs as a real subprocess (``python -m faktory_adapters``) with its runtime's own
sleep (``tests.conformance.jobs_sleepy``: jobs end together on 50 ms ticks), against a server
of each test's own, so its counters and its working set are the test's alone. Every wait is
bounded; a worker that hangs fails the test and is killed with its process group.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from faktory_adapters.thread import Client
from tests.cli.command import Command
from tests.conformance.jobs_sleepy import JOBTYPE
from tests.support.server import FaktoryServer

pytestmark = pytest.mark.server

CONCURRENCY = 500
JOBS = 3000
PUSH_CHUNK = 1000
TICK = 0.05  # each job sleeps 0.05 to 0.1 s, to a tick boundary shared with hundreds of others
#: Long: no job here needs it (each ends within 0.1 s), so a stop that waits for it has lost
#: the wake-ups of its ending jobs.
SHUTDOWN_TIMEOUT = 15.0
#: SIGTERM to exit: the running jobs end, a FETCH in flight returns (up to 2 s on the server),
#: END on every link, and the interpreter exits, on a loaded machine.
STOP_BOUND = 6.0
#: How long SIGTERM is given before the worker is taken for hung and killed.
KILL_AFTER = SHUTDOWN_TIMEOUT + 5.0
#: The longest a drain may take; 3,000 jobs take a few seconds even on a busy machine.
DRAIN_TIMEOUT = 60.0
#: No job leaving the queue or its reservation for this long: the worker is hung.
STALL_TIMEOUT = 10.0
POLL = 0.05
#: The SIGTERM test: rounds, each with a worker of its own, and the jobs of each.
STOP_ROUNDS = 3
STOP_JOBS = 2000
#: For the marked job to wake; 1,000 jobs take about a second.
MARKER_TIMEOUT = 30.0


@pytest.fixture
def server() -> Iterator[FaktoryServer]:
    """A server of the test's own: a hung worker's reservations stay there, not in the next."""
    with FaktoryServer() as own:
        yield own


@dataclass(frozen=True)
class Counters:
    waiting: int  # in the test's queue
    working: int  # reserved by workers
    processed: int  # ACKed
    failed: int

    @classmethod
    def read(cls, client: Client, queue: str) -> Counters:
        stats = client.info()["faktory"]
        return cls(
            waiting=int(stats["queues"].get(queue, 0)),
            working=int(stats["sets"]["working"]),
            processed=int(stats["total_processed"]),
            failed=int(stats["total_failures"]),
        )


def push_sleepy_jobs(
    client: Client, queue: str, count: int, marker: tuple[int, str] | None = None
) -> None:
    """``count`` jobs in bulk; ``marker`` (index, token): that job prints ``woke TOKEN``."""
    jobs = [client.job(JOBTYPE, [TICK], queue=queue) for _ in range(count)]
    if marker is not None:
        index, token = marker
        jobs[index] = client.job(JOBTYPE, [TICK, token], queue=queue)
    for start in range(0, count, PUSH_CHUNK):
        assert client.push_bulk(jobs[start : start + PUSH_CHUNK]) == {}


def start_worker(server: FaktoryServer, adapter: str, queue: str) -> Command:
    return Command(
        "-r",
        f"tests.conformance.jobs_sleepy:{adapter}_jobs",
        "--adapter",
        adapter,
        "-c",
        str(CONCURRENCY),
        "-q",
        queue,
        "--url",
        server.url,
        "--shutdown-timeout",
        f"{SHUTDOWN_TIMEOUT:g}",
        "--abort-grace",
        "1",
    )


def await_drained(client: Client, command: Command, queue: str) -> str | None:
    """Poll INFO until the queue is empty and nothing is reserved; None, or why not.

    Bounded twice: by DRAIN_TIMEOUT in all, and by STALL_TIMEOUT without any progress.
    """
    started = last_change = time.monotonic()
    last = Counters.read(client, queue)
    while True:
        code = command.process.poll()
        if code is not None:
            return f"the worker exited with code {code} before the queue was drained"
        now = time.monotonic()
        counters = Counters.read(client, queue)
        if counters.waiting == 0 and counters.working == 0:
            return None
        if counters != last:
            last, last_change = counters, now
        elif now - last_change > STALL_TIMEOUT:
            return (
                f"hung: no progress for {STALL_TIMEOUT:g} s, {now - started:.1f} s after the "
                f"start ({counters})"
            )
        if now - started > DRAIN_TIMEOUT:
            return f"not drained within {DRAIN_TIMEOUT:g} s ({counters})"
        time.sleep(POLL)  # polling the server's state: there is no event to await


@dataclass(frozen=True)
class Stopped:
    code: int | None  # None: it ignored SIGTERM and was killed
    seconds: float  # from SIGTERM until it exited, or was given up on

    def __str__(self) -> str:
        if self.code is None:
            return f"ignored SIGTERM for {KILL_AFTER:g} s and was killed"
        return f"exited {self.code} {self.seconds:.2f} s after SIGTERM"

    @property
    def clean(self) -> bool:
        """Exit code 0 within STOP_BOUND."""
        return self.code == 0 and self.seconds <= STOP_BOUND


def sigterm(command: Command) -> Stopped:
    """SIGTERM, then the exit code within KILL_AFTER s."""
    command.send(signal.SIGTERM)
    sent = time.monotonic()
    try:
        code: int | None = command.wait(KILL_AFTER)
    except subprocess.TimeoutExpired:
        code = None  # killed with its process group when its `with` is left
    return Stopped(code, time.monotonic() - sent)


def output(command: Command, stopped: Stopped) -> str:
    if stopped.code is None:
        command.wait(10)  # killed by now: the rest of its output
    return "\n".join(command.lines[-60:])


def test_500_slots_drain_thousands_of_sleeping_jobs_exactly_once_then_stop_on_sigterm(
    server: FaktoryServer, adapter: str
) -> None:
    queue = f"busy-{uuid.uuid4().hex[:10]}"
    with Client(server.url, pool_size=1) as client:
        push_sleepy_jobs(client, queue, JOBS)
        before = Counters.read(client, queue)
        assert (before.waiting, before.working) == (JOBS, 0)
        with start_worker(server, adapter, queue) as command:
            started = time.monotonic()
            stuck = await_drained(client, command, queue)
            drained = time.monotonic() - started
            stopped = sigterm(command)
        after = Counters.read(client, queue)
    print(f"{adapter}: {JOBS} jobs drained in {drained:.2f} s (start-up included); {stopped}")
    assert stuck is None, f"{stuck}; then the worker {stopped}:\n{output(command, stopped)}"
    assert stopped.clean, f"the worker {stopped}:\n{output(command, stopped)}"
    # Exactly once: every job ACKed (processed counts ACKs), none FAILed, none left anywhere.
    assert (after.waiting, after.working) == (0, 0)
    assert after.processed - before.processed == JOBS
    assert after.failed == before.failed


def test_sigterm_amid_hundreds_of_ending_jobs_stops_500_slots_cleanly(
    server: FaktoryServer, adapter: str
) -> None:
    """SIGTERM lands as a job wakes with hundreds of others, halfway through a backlog.

    The thread adapter runs its signal handlers in the loop's thread, where a wake-up once
    blocked on the buffer the jobs' wake-ups had just filled: a race, run a few times.
    """
    with Client(server.url, pool_size=1) as client:
        for _ in range(STOP_ROUNDS):
            queue = f"busy-{uuid.uuid4().hex[:10]}"
            token = uuid.uuid4().hex[:10]
            push_sleepy_jobs(client, queue, STOP_JOBS, marker=(STOP_JOBS // 2, token))
            before = Counters.read(client, queue)
            with start_worker(server, adapter, queue) as command:
                command.expect(f"^woke {token}$", timeout=MARKER_TIMEOUT)
                stopped = sigterm(command)
            after = Counters.read(client, queue)
            done = after.processed - before.processed
            print(f"{adapter}: stopped after {done} jobs; {stopped}")
            assert stopped.clean, f"the worker {stopped}:\n{output(command, stopped)}"
            # Every fetched job ran to its ACK; the rest wait in the queue; none is reserved.
            assert after.working == 0
            assert after.failed == before.failed
            assert done + after.waiting == STOP_JOBS
