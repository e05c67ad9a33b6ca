"""``faktory-worker --health-port``: a real worker process answers its probes (ready while
it runs, not ready once quiet, alive throughout); the options' errors are one line and exit 2.
How the probes follow a hogged loop or a lost server: tests/adapters/test_health.py."""

from __future__ import annotations

import signal
import time
import urllib.error
import urllib.request

import pytest

from tests.cli.command import Command, run, taken_port
from tests.cli.test_cli import one_error_line
from tests.support.server import FaktoryServer

#: How long a probe may take to show what the worker does.
PROBE_TIMEOUT = 20.0


def probe(url: str) -> tuple[int, str]:
    """The status and body of a GET of ``url``."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def probe_until(url: str, status: int) -> str:
    """Probe ``url`` until it answers ``status`` (bounded); its body."""
    deadline = time.monotonic() + PROBE_TIMEOUT
    while True:
        answer = probe(url)
        if answer[0] == status:
            return answer[1]
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} answered {answer}, not {status}, for {PROBE_TIMEOUT} s")
        time.sleep(0.05)


@pytest.mark.server
def test_the_worker_answers_its_probes(faktory_server: FaktoryServer, queue: str) -> None:
    options = ("--health-port", "0", "--health-address", "127.0.0.1")
    with Command("-r", "tests.cli.jobs_ok", "-q", queue, "--url", faktory_server.url, *options) as (
        command
    ):
        base = command.expect(r"serving health checks on (http://127\.0\.0\.1:\d+)")[1]
        assert probe_until(f"{base}/readyz", 200).startswith("ready: running")
        assert probe(f"{base}/livez") == (200, "alive: running\n")
        assert probe(f"{base}/metrics")[0] == 404
        command.send(signal.SIGTSTP)  # quiet: no more jobs, still alive
        assert "quiet" in probe_until(f"{base}/readyz", 503)
        assert probe(f"{base}/livez") == (200, "alive: quiet\n")
        command.send(signal.SIGTERM)
        assert command.wait() == 0


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--health-address", "127.0.0.1"), "--health-address needs --health-port"),
        (("--health-port", "65536"), "must be a port from 0 to 65535, not 65536"),
        (
            ("--health-port", "8080", "--processes", "2"),
            "--health-port cannot be used with --processes",
        ),
    ],
)
def test_bad_health_options_exit_2_with_one_line(args: tuple[str, ...], words: str) -> None:
    result = run("-r", "tests.cli.jobs_ok", *args)
    assert result.returncode == 2
    assert words in one_error_line(result)


@pytest.mark.server
def test_a_health_port_already_taken_exits_2(faktory_server: FaktoryServer) -> None:
    with taken_port() as port:
        result = run(
            "-r",
            "tests.cli.jobs_ok",
            "--url",
            faktory_server.url,
            "--health-port",
            str(port),
            "--health-address",
            "127.0.0.1",
        )
    assert result.returncode == 2
    assert f"cannot serve health checks on 127.0.0.1 port {port}: " in one_error_line(result)
