"""``faktory-worker --processes N --metrics-port P``: the supervisor serves the sum of its
worker processes' metrics (prometheus_client's multiprocess mode, in a private directory it
removes at exit); a killed process's gauges stop counting, its counters do not; the worker
processes open no port."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from faktory_adapters.thread import Client
from tests.cli.command import Command, run, taken_port
from tests.cli.test_cli import HANDLERS, one_error_line, token
from tests.cli.test_processes import STARTED, started
from tests.support.metrics import Samples, sample, scrape_until
from tests.support.server import FaktoryServer

pytestmark = pytest.mark.server

SCRAPE_TIMEOUT = 20.0
LOCAL = ("--metrics-address", "127.0.0.1")


@pytest.fixture(scope="module")
def own_server() -> Iterator[FaktoryServer]:
    """A server of this module's own: a killed worker leaves its job reserved there."""
    with FaktoryServer() as server:
        yield server


@pytest.fixture
def temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The commands' TMPDIR: where the supervisor makes its metrics directory."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    return tmp_path


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on, from /proc: its sockets' inodes, found in
    the listening (0A) rows of its network namespace's tables."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed since the listing
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target.removeprefix("socket:[").removesuffix("]"))
    ports = set()
    for table in ("tcp", "tcp6"):
        for row in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def test_the_supervisor_serves_the_sum_of_its_worker_processes(
    own_server: FaktoryServer, queue: str, temp_dir: Path
) -> None:
    sleeping = {"queue": queue, "jobtype": "CliSleep"}
    recorded = {"queue": queue, "jobtype": "CliRecord", "outcome": "succeeded", "errtype": ""}
    options = ("--shutdown-timeout", "0.5", "--abort-grace", "1", "--metrics-port", "0", *LOCAL)
    with (
        Client(own_server.url) as client,
        Command(
            *HANDLERS, "--processes", "2", "-c", "1", "-q", queue, "--url", own_server.url, *options
        ) as command,
    ):
        found = command.expect(r"serving metrics on (http://127\.0\.0\.1:(\d+)/metrics)")
        url, port = found[1], int(found[2])
        pids = {int(command.expect(STARTED)[2]) for _ in range(2)}
        # Busy with one sleep each (-c 1): both processes count, on one endpoint.
        first, second = token(), token()
        client.push("CliSleep", [first, 60], queue=queue)
        first_pid = started(command, first)
        client.push("CliSleep", [second, 60], queue=queue)
        second_pid = started(command, second)
        assert {first_pid, second_pid} == pids

        def both_busy(samples: Samples) -> bool:
            return sample(samples, "faktory_jobs_running", **sleeping) == 2

        samples = scrape_until(url, both_busy, SCRAPE_TIMEOUT)
        assert sample(samples, "faktory_jobs_started_total", **sleeping) == 2
        assert sample(samples, "faktory_worker_job_slots") == 2
        assert sample(samples, "faktory_worker_phase", phase="running") == 2
        assert sample(samples, "faktory_worker_job_connections") == 2
        assert sample(samples, "faktory_worker_ready_job_connections") == 2
        # The processes count in the supervisor's directory, and only the supervisor listens.
        [directory] = temp_dir.iterdir()
        assert directory.name.startswith("faktory-metrics-")
        assert {f"counter_{pid}.db" for pid in pids} <= {
            entry.name for entry in directory.iterdir()
        }
        assert listening_ports(command.process.pid) == {port}
        for pid in pids:
            assert listening_ports(pid) == set()

        os.kill(second_pid, signal.SIGKILL)
        restarted_pid = int(command.expect(STARTED)[2])
        late = token()
        client.push("CliRecord", [late], queue=queue)
        assert int(command.expect(f"^ran {late} (\\d+)")[1]) == restarted_pid  # the first is busy
        samples = scrape_until(
            url,
            lambda samples: sample(samples, "faktory_jobs_ended_total", **recorded) == 1,
            SCRAPE_TIMEOUT,
        )
        # Two processes live: the killed one's slot, phase, connection and running job no
        # longer count (they would add up to 3 slots and 3 running workers)...
        assert sample(samples, "faktory_worker_job_slots") == 2
        assert sample(samples, "faktory_worker_phase", phase="running") == 2
        assert sample(samples, "faktory_worker_job_connections") == 2
        assert sample(samples, "faktory_worker_ready_job_connections") == 2
        assert sample(samples, "faktory_jobs_running", **sleeping) == 1
        # ... while its counters still do: its sleep started.
        assert sample(samples, "faktory_jobs_started_total", **sleeping) == 2
        command.send(signal.SIGTERM)
        assert command.wait() == 1  # the first sleep was aborted
    assert list(temp_dir.iterdir()) == []  # the metrics directory is gone


def test_a_worker_observed_already_counts_each_job_once(
    faktory_server: FaktoryServer, client: Client, queue: str, temp_dir: Path
) -> None:
    module = ("-r", "tests.cli.jobs_metrics_worker")  # a Worker with a PrometheusMetrics, -c 3
    options = ("-q", queue, "--url", faktory_server.url, "--metrics-port", "0", *LOCAL)
    with Command(*module, "--processes", "2", *options) as command:
        url = command.expect(r"serving metrics on (http://127\.0\.0\.1:\d+/metrics)")[1]
        tokens = [token() for _ in range(4)]
        for each in tokens:
            client.push("CliMetricsRecord", [each], queue=queue)
        assert {command.expect(r"^ran (\w+) ")[1] for _ in tokens} == set(tokens)
        labels = {"queue": queue, "jobtype": "CliMetricsRecord"}
        ended = {**labels, "outcome": "succeeded", "errtype": ""}

        def all_ended_both_serving(samples: Samples) -> bool:
            return (sample(samples, "faktory_jobs_ended_total", **ended) or 0) >= 4 and (
                sample(samples, "faktory_worker_phase", phase="running") or 0
            ) >= 2

        samples = scrape_until(url, all_ended_both_serving, SCRAPE_TIMEOUT)
        assert sample(samples, "faktory_jobs_ended_total", **ended) == 4
        assert sample(samples, "faktory_jobs_started_total", **labels) == 4
        assert sample(samples, "faktory_worker_phase", phase="running") == 2
        assert sample(samples, "faktory_worker_job_slots") == 6
        command.send(signal.SIGTERM)
        assert command.wait() == 0


def test_a_port_already_taken_exits_2_and_starts_no_worker_process(
    faktory_server: FaktoryServer, temp_dir: Path
) -> None:
    with taken_port() as port:
        result = run(
            *HANDLERS,
            "--processes",
            "2",
            "--url",
            faktory_server.url,
            "--metrics-port",
            str(port),
            *LOCAL,
        )
    assert result.returncode == 2
    assert f"cannot serve metrics on 127.0.0.1 port {port}: " in one_error_line(result)
    assert list(temp_dir.iterdir()) == []


def test_a_worker_s_own_metrics_port_is_served_by_the_supervisor_alone(
    faktory_server: FaktoryServer, client: Client, queue: str, temp_dir: Path
) -> None:
    module = ("-r", "tests.cli.jobs_metrics_option")  # Worker(metrics_port=0, -c 2)
    with Command(*module, "--processes", "2", "-q", queue, "--url", faktory_server.url) as command:
        found = command.expect(r"serving metrics on (http://127\.0\.0\.1:(\d+)/metrics)")
        url, port = found[1], int(found[2])
        pids = {int(command.expect(STARTED)[2]) for _ in range(2)}
        samples = scrape_until(
            url,
            lambda samples: sample(samples, "faktory_worker_phase", phase="running") == 2,
            SCRAPE_TIMEOUT,
        )
        assert sample(samples, "faktory_worker_job_slots") == 4
        assert listening_ports(command.process.pid) == {port}
        for pid in pids:  # the worker processes count for the supervisor, and serve nothing
            assert listening_ports(pid) == set()
        command.send(signal.SIGTERM)
        assert command.wait() == 0
    assert sum("serving metrics on" in line for line in command.lines) == 1
