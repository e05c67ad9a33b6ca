"""``faktory-worker --metrics-port``: a real worker process serves its Prometheus metrics while
it works a real server's jobs; the options' errors are one line and exit 2."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from faktory_adapters.thread import Client
from tests.cli.command import ROOT, Command, run, taken_port
from tests.cli.test_cli import one_error_line, token
from tests.support.metrics import sample, scrape_until
from tests.support.server import FaktoryServer

#: How long the metrics may take to show what the worker did.
SCRAPE_TIMEOUT = 20.0


@pytest.mark.server
@pytest.mark.parametrize(
    ("module", "jobtype", "slots"),
    [
        ("tests.cli.jobs_ok", "CliRecord", 10),  # a Worker the command makes
        ("tests.cli.jobs_metrics_worker", "CliMetricsRecord", 3),  # one that observes already
    ],
)
def test_the_worker_serves_its_metrics_while_it_works(
    faktory_server: FaktoryServer,
    client: Client,
    queue: str,
    module: str,
    jobtype: str,
    slots: int,
) -> None:
    options = ("--metrics-port", "0", "--metrics-address", "127.0.0.1")
    with Command("-r", module, "-q", queue, "--url", faktory_server.url, *options) as command:
        found = command.expect(r"serving metrics on (http://127\.0\.0\.1:\d+/metrics)")
        url = found[1]
        tokens = [token() for _ in range(3)]
        for each in tokens:
            client.push(jobtype, [each], queue=queue)
        ran = {command.expect(r"^ran (\w+) ")[1] for _ in tokens}  # in any order
        assert ran == set(tokens)
        labels = {"queue": queue, "jobtype": jobtype}
        succeeded = {**labels, "outcome": "succeeded", "errtype": ""}
        samples = scrape_until(
            url,
            lambda samples: (sample(samples, "faktory_jobs_ended_total", **succeeded) or 0) >= 3,
            SCRAPE_TIMEOUT,
        )
        assert sample(samples, "faktory_jobs_ended_total", **succeeded) == 3
        assert sample(samples, "faktory_jobs_started_total", **labels) == 3  # counted once
        assert sample(samples, "faktory_jobs_running", **labels) == 0
        assert sample(samples, "faktory_job_duration_seconds_count", **labels) == 3
        assert sample(samples, "faktory_job_queue_latency_seconds_count", queue=queue) == 3
        assert sample(samples, "faktory_worker_job_slots") == slots
        assert sample(samples, "faktory_worker_job_connections") == slots  # under 20 slots
        assert sample(samples, "faktory_worker_phase", phase="running") == 1
        # The global registry is served: prometheus_client's process metrics are there too.
        assert any(name == "process_cpu_seconds_total" for name, _ in samples)
        command.send(signal.SIGTERM)
        assert command.wait() == 0


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--metrics-address", "127.0.0.1"), "--metrics-address needs --metrics-port"),
        (("--metrics-port", "65536"), "must be a port from 0 to 65535, not 65536"),
        (("--metrics-port", "http"), "not a port number: 'http'"),
    ],
)
def test_bad_metrics_options_exit_2_with_one_line(args: tuple[str, ...], words: str) -> None:
    result = run("-r", "tests.cli.jobs_ok", *args)
    assert result.returncode == 2
    assert words in one_error_line(result)


@pytest.mark.parametrize("check", [False, True])
def test_without_prometheus_client_the_command_exits_2_naming_the_extra(check: bool) -> None:
    args = ["-r", "tests.cli.jobs_ok", "--metrics-port", "9100", *(["--check"] if check else [])]
    probe = (
        "import sys; sys.modules['prometheus_client'] = None; "
        "from faktory_adapters._cli import main; "
        f"sys.exit(main({args!r}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    line = one_error_line(result)
    assert "--metrics-port needs prometheus_client" in line
    assert "pip install 'faktory-sansio[prometheus]'" in line


@pytest.mark.server
def test_check_accepts_the_metrics_options(faktory_server: FaktoryServer) -> None:
    result = run("--check", "--url", faktory_server.url, "--metrics-port", "9100")
    assert result.returncode == 0, result.stderr


@pytest.mark.server
def test_a_port_already_taken_exits_2(faktory_server: FaktoryServer) -> None:
    with taken_port() as port:
        result = run(
            "-r",
            "tests.cli.jobs_ok",
            "--url",
            faktory_server.url,
            "--metrics-port",
            str(port),
            "--metrics-address",
            "127.0.0.1",
        )
    assert result.returncode == 2
    assert f"cannot serve metrics on 127.0.0.1 port {port}: " in one_error_line(result)


@pytest.mark.server
def test_a_worker_s_own_metrics_port_is_served_by_the_command(
    faktory_server: FaktoryServer, client: Client, queue: str
) -> None:
    module = ("-r", "tests.cli.jobs_metrics_option")  # Worker(metrics_port=0, ...)
    with Command(*module, "-q", queue, "--url", faktory_server.url) as command:
        url = command.expect(r"serving metrics on (http://127\.0\.0\.1:\d+/metrics)")[1]
        each = token()
        client.push("CliOptionRecord", [each], queue=queue)
        assert command.expect(r"^ran (\w+) ")[1] == each
        labels = {"queue": queue, "jobtype": "CliOptionRecord"}
        ended = {**labels, "outcome": "succeeded", "errtype": ""}
        samples = scrape_until(
            url,
            lambda samples: sample(samples, "faktory_jobs_ended_total", **ended) == 1,
            SCRAPE_TIMEOUT,
        )
        assert sample(samples, "faktory_jobs_started_total", **labels) == 1  # counted once
        assert sample(samples, "faktory_worker_job_slots") == 2
        command.send(signal.SIGTERM)
        assert command.wait() == 0
    assert sum("serving metrics on" in line for line in command.lines) == 1


@pytest.mark.server
def test_metrics_port_overrides_the_worker_s_own_and_keeps_its_address(
    faktory_server: FaktoryServer, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with taken_port() as port:
        monkeypatch.setenv("CLI_METRICS_PORT", str(port))  # the Worker's metrics_port: taken
        options = ("--metrics-port", "0")  # its metrics_address, 127.0.0.1, is kept
        module = ("-r", "tests.cli.jobs_metrics_option")
        with Command(*module, "-q", queue, "--url", faktory_server.url, *options) as command:
            served = int(command.expect(r"serving metrics on http://127\.0\.0\.1:(\d+)/")[1])
            command.expect(r"worker \S+ starting: ")  # past the point a metrics port is bound
            command.send(signal.SIGTERM)
            assert command.wait() == 0
    assert served != port


@pytest.mark.server
def test_metrics_address_overrides_the_worker_s_own(
    faktory_server: FaktoryServer, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLI_METRICS_ADDRESS", "192.0.2.1")  # TEST-NET-1: no interface has it
    module = ("-r", "tests.cli.jobs_metrics_option")
    options = ("--metrics-address", "127.0.0.1")  # the Worker's port, this address
    with Command(*module, "-q", queue, "--url", faktory_server.url, *options) as command:
        command.expect(r"serving metrics on http://127\.0\.0\.1:\d+/metrics")
        command.expect(r"worker \S+ starting: ")
        command.send(signal.SIGTERM)
        assert command.wait() == 0
