"""``faktory-worker --processes N``: a supervisor, its signals, restarts and exit code."""

from __future__ import annotations

import os
import select
import signal
import time
import uuid
from collections.abc import Iterator

import pytest

from faktory_adapters.thread import Client
from tests.cli.command import Command
from tests.cli.test_cli import HANDLERS, failure_of, token
from tests.support.server import FaktoryServer

pytestmark = pytest.mark.server

STARTED = r"worker process (\d) started: pid (\d+)"


@pytest.fixture(scope="module")
def own_server() -> Iterator[FaktoryServer]:
    """A server of this module's own: a killed worker leaves its job reserved there."""
    with FaktoryServer() as server:
        yield server


@pytest.fixture
def queue() -> str:
    return f"cli-{uuid.uuid4().hex[:10]}"


def supervisor(server: FaktoryServer, queue: str, *options: str) -> Command:
    return Command(
        *HANDLERS, "--processes", "2", "-c", "1", "-q", queue, "--url", server.url, *options
    )


def started(command: Command, job: str) -> int:
    """Wait for ``job`` to start; the pid of the worker process running it."""
    return int(command.expect(f"^started {job} (\\d+)")[1])


def test_sigterm_drains_every_worker_process_and_exits_0(
    faktory_server: FaktoryServer, queue: str
) -> None:
    first, second = token(), token()
    with (
        Client(faktory_server.url) as client,
        supervisor(faktory_server, queue) as command,
    ):
        for _ in range(2):  # both serving: the second job cannot wait for the first process
            command.expect(r"faktory\.worker .*: worker \w+ starting: ")
        client.push("CliSleep", [first, 2.0], queue=queue)
        first_pid = started(command, first)
        client.push("CliSleep", [second, 2.0], queue=queue)  # the first process is busy
        second_pid = started(command, second)
        assert first_pid != second_pid
        command.send(signal.SIGTERM)
        done = {command.expect(f"^done ({first}|{second}) ")[1] for _ in range(2)}
        assert done == {first, second}
        assert command.wait() == 0


def test_a_killed_worker_process_is_restarted_and_the_worst_exit_code_wins(
    own_server: FaktoryServer, queue: str
) -> None:
    kept, killed, late = token(), token(), token()
    options = ("--shutdown-timeout", "0.5", "--abort-grace", "1")
    with Client(own_server.url) as client, supervisor(own_server, queue, *options) as command:
        kept_jid = client.push("CliSleep", [kept, 60], queue=queue)
        kept_pid = started(command, kept)
        client.push("CliSleep", [killed, 60], queue=queue)
        killed_pid = started(command, killed)
        # Busy with one job each (-c 1): neither has a FETCH in flight that a kill would lose.
        os.kill(killed_pid, signal.SIGKILL)
        new_pid = int(command.expect(STARTED)[2])
        assert new_pid not in (kept_pid, killed_pid)
        client.push("CliRecord", [late], queue=queue)
        assert int(command.expect(f"^ran {late} (\\d+)")[1]) == new_pid  # the other is busy
        # The process still running a job aborts it (1), the new one stops cleanly (0).
        command.send(signal.SIGTERM)
        assert command.wait() == 1
        assert "killed by SIGKILL; restarting it" in command.output
        failure = failure_of(client, queue, kept_jid)
        assert failure is not None
        assert failure.errtype == "ShutdownAbort"


def ended(pids: set[int], timeout: float) -> set[int]:
    """Which of ``pids`` end within ``timeout`` s (awaited on pidfds, which become readable
    when their process ends: no polling)."""
    fds = {os.pidfd_open(pid): pid for pid in pids}
    deadline = time.monotonic() + timeout
    gone: set[int] = set()
    try:
        while len(gone) < len(fds) and (remaining := deadline - time.monotonic()) > 0:
            waiting = [fd for fd, pid in fds.items() if pid not in gone]
            ready, _, _ = select.select(waiting, [], [], remaining)
            gone.update(fds[fd] for fd in ready)
    finally:
        for fd in fds:
            os.close(fd)
    return gone


def test_worker_processes_do_not_outlive_a_killed_supervisor(
    faktory_server: FaktoryServer, queue: str
) -> None:
    with supervisor(faktory_server, queue) as command:
        pids = {int(command.expect(STARTED)[2]) for _ in range(2)}
        command.process.kill()  # no chance to stop them: they get TERM from the kernel
        assert ended(pids, 20) == pids
