"""``faktory-worker``: options, exit codes and signals, on real processes and a real server."""

from __future__ import annotations

import importlib.metadata
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import faktory_adapters
import faktory_core
from faktory_adapters.thread import Client
from faktory_core import Failure
from tests.cli.command import Command, run
from tests.support.server import FaktoryServer, closed_port

pytestmark = pytest.mark.server

HANDLERS = ("-r", "tests.cli.jobs_ok")
OPTIONS = (
    "--adapter",
    "-r",
    "--require",
    "-q",
    "--queue",
    "-c",
    "--concurrency",
    "--shutdown-timeout",
    "--abort-grace",
    "-l",
    "--label",
    "--log-level",
    "--url",
    "FAKTORY_URL",
    "--burst",
    "--watch",
    "--check",
    "--processes",
    "--metrics-port",
    "--metrics-address",
    "--version",
)


def token() -> str:
    return uuid.uuid4().hex[:12]


def queue_size(client: Client, queue: str) -> int:
    return int(client.info()["faktory"]["queues"].get(queue, 0))


def failure_of(client: Client, queue: str, jid: str) -> Failure | None:
    """The failure the server recorded for ``jid`` if it sits in the retry set, else None.

    The queue must be empty: the job is requeued there and fetched back.
    """
    assert queue_size(client, queue) == 0
    client.mutate("requeue", "retries", jids=[jid])
    if queue_size(client, queue) == 0:
        return None
    job = client.fetch(queue)
    assert job is not None
    assert job.jid == jid
    client.ack(jid)
    return job.failure


def one_error_line(result: object) -> str:
    """The command's stderr, checked to be one ``faktory-worker: error:`` line."""
    stderr: str = result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("faktory-worker: error: ")
    return lines[0]


def test_help_documents_every_option_and_the_exit_codes() -> None:
    result = run("--help")
    assert result.returncode == 0
    for option in OPTIONS:
        assert option in result.stdout
    for code in "01234":
        assert f"\n  {code}  " in result.stdout
    # The real defaults show, though "not given" is what lets a Worker keep its own values.
    text = " ".join(result.stdout.split())
    assert "jobs run at the same time (default: 10, or the Worker's)" in text
    assert "(default: 25, or the Worker's)" in text  # --shutdown-timeout
    assert "(default: asyncio; a Worker named with -r runs on its own" in text


def test_the_command_imports_no_runtime_before_it_runs_one() -> None:
    probe = (
        "import sys; from faktory_adapters import _cli; "
        "_cli.build_parser().parse_args(['-r', 'tasks', '--adapter', 'gevent']); "
        "probed = {'asyncio', 'gevent', 'prometheus_client', 'opentelemetry'}; "
        "print(sorted(probed & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.strip() == "[]"


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"faktory-worker {faktory_core.__version__}"


def test_the_version_has_one_source() -> None:
    """The installed metadata, both packages and the command agree (pyproject.toml reads the
    version from faktory_core; a stale editable install shows here)."""
    assert importlib.metadata.version("faktory-sansio") == faktory_core.__version__
    assert faktory_adapters.__version__ == faktory_core.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?", faktory_core.__version__)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--concurrency", "0"), "at least 1"),
        (("--shutdown-timeout", "soon"), "not a number"),
        (("--no-such-option",), "unrecognized arguments"),
        (("--adapter", "trio"), "invalid choice"),
        (("-q", "high:3", "-q", "low"), "a weight to every queue or to none"),
        (("-q", "high:x"), "not a whole number"),
        (("-q", "no spaces", "-r", "tests.cli.jobs_ok"), "[a-zA-Z0-9._-]+"),
        (("--url", "http://localhost:7419"), "tcp://"),
        ((), "-r MODULE"),
    ],
)
def test_bad_options_exit_2_with_one_line(args: tuple[str, ...], words: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert words in one_error_line(result)


def test_a_crash_outside_the_worker_exits_4_not_1(faktory_server: FaktoryServer) -> None:
    result = run("-r", "tests.cli.jobs_crash", "--url", faktory_server.url)
    assert result.returncode == 4
    assert "faktory-worker crashed" in result.stderr
    assert "RuntimeError: a registry that explodes on purpose" in result.stderr


@pytest.mark.parametrize(
    ("module", "words"),
    [
        ("tests.cli.jobs_broken", "RuntimeError: this module is broken on purpose"),
        ("tests.cli.no_such_module", "No module named 'tests.cli.no_such_module'"),
        ("tests.cli.jobs_none", "no job handlers found"),
        (
            "tests.cli.jobs_none:not_jobs",
            "is not a faktory_adapters.Jobs or a Worker (its type is object)",
        ),
        ("tests.cli.jobs_none:nothing", "has no attribute 'nothing'"),
    ],
)
def test_handler_modules_that_fail_exit_2(
    faktory_server: FaktoryServer, module: str, words: str
) -> None:
    result = run("-r", module, "--url", faktory_server.url)
    assert result.returncode == 2
    line = one_error_line(result)
    assert words in line
    if module.endswith("broken"):
        assert "jobs_broken.py:3" in line  # where the module raised


@pytest.mark.parametrize("args", [("--check",), HANDLERS, (*HANDLERS, "--processes", "2")])
def test_an_unreachable_server_exits_3_at_once(args: tuple[str, ...]) -> None:
    result = run(*args, "--url", f"tcp://127.0.0.1:{closed_port()}", timeout=20)
    assert result.returncode == 3
    assert "connection refused" in one_error_line(result)


@pytest.mark.parametrize("password", [None, "not-the-password"])
def test_a_wrong_password_exits_3(
    faktory_password_server: FaktoryServer, password: str | None
) -> None:
    auth = f":{password}@" if password else ""
    url = f"tcp://{auth}127.0.0.1:{faktory_password_server.port}"
    result = run(*HANDLERS, "--url", url)
    assert result.returncode == 3
    line = one_error_line(result)
    assert "wrong password" in line
    if password is None:
        assert "the URL gives none" in line
    else:
        assert password not in line  # never echoed


def test_an_untrusted_certificate_exits_3_naming_tls(
    tls_server: tuple[FaktoryServer, Path],
) -> None:
    server, _ = tls_server
    result = run("--check", "--url", server.url)
    assert result.returncode == 3
    assert "TLS error: the certificate is not trusted" in one_error_line(result)


def test_a_private_ca_is_trusted_through_ssl_cert_file(
    tls_server: tuple[FaktoryServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, ca_cert = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_cert))
    result = run("--check", "--url", server.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("faktory-worker: ok: Faktory 1.9.4 at tcp+tls://")


def test_check_reports_the_server_version(faktory_server: FaktoryServer) -> None:
    result = run("--check", "--url", faktory_server.url)
    assert result.returncode == 0
    assert result.stdout.strip() == (
        f"faktory-worker: ok: Faktory 1.9.4 at tcp://127.0.0.1:{faktory_server.port}"
    )


def test_the_url_comes_from_faktory_url(
    faktory_server: FaktoryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKTORY_URL", faktory_server.url)
    monkeypatch.delenv("FAKTORY_PROVIDER", raising=False)
    result = run("--check")
    assert result.returncode == 0
    assert f":{faktory_server.port}" in result.stdout


@pytest.mark.parametrize("adapter", ["asyncio", "thread", "gevent"])
def test_burst_works_the_queue_empty_and_exits_0(
    faktory_server: FaktoryServer, client: Client, queue: str, adapter: str
) -> None:
    tokens = {token() for _ in range(3)}
    jids = {client.push("CliRecord", [each], queue=queue): each for each in tokens}
    with Command(
        *HANDLERS, "--adapter", adapter, "--burst", "-q", queue, "--url", faktory_server.url
    ) as command:
        ran = {command.expect(r"^ran (\w+) ")[1] for _ in tokens}
        assert command.wait() == 0
    assert ran == tokens
    assert queue_size(client, queue) == 0
    # The log format names the running job in each record the handler logs.
    for jid, each in jids.items():
        assert any(f"CliRecord {jid}: recording {each}" in line for line in command.lines)


def test_sigterm_lets_running_jobs_finish_and_exits_0(
    faktory_server: FaktoryServer, client: Client, queue: str
) -> None:
    job = token()
    jid = client.push("CliSleep", [job, 1.0], queue=queue)
    with Command(*HANDLERS, "-q", queue, "--url", faktory_server.url) as command:
        command.expect(f"^started {job} ")
        command.send(signal.SIGTERM)
        command.expect(f"^done {job} ")
        assert command.wait() == 0
    assert failure_of(client, queue, jid) is None


def test_sigterm_aborts_a_job_still_running_at_the_shutdown_timeout_and_exits_1(
    faktory_server: FaktoryServer, client: Client, queue: str
) -> None:
    job = token()
    jid = client.push("CliSleep", [job, 60], queue=queue)
    options = ("--shutdown-timeout", "0.5", "--abort-grace", "1")
    with Command(*HANDLERS, *options, "-q", queue, "--url", faktory_server.url) as command:
        command.expect(f"^started {job} ")
        command.send(signal.SIGTERM)
        assert command.wait() == 1
    failure = failure_of(client, queue, jid)
    assert failure is not None
    assert failure.errtype == "ShutdownAbort"


def test_a_weighted_queue_list_is_accepted(
    faktory_server: FaktoryServer, client: Client, queue: str
) -> None:
    job = token()
    client.push("CliRecord", [job], queue=queue)
    queues = ("-q", f"{queue}:3", "-q", f"{queue}-other:1")
    with Command(*HANDLERS, *queues, "--burst", "--url", faktory_server.url) as command:
        command.expect(f"^ran {job} ")
        assert command.wait() == 0


def test_sigterm_while_loading_handlers_exits_0_quietly(faktory_server: FaktoryServer) -> None:
    # A worker stopped before it serves has nothing to drain.
    with Command("-r", "tests.cli.jobs_slow_import", "--url", faktory_server.url) as command:
        command.expect("^importing$")
        command.send(signal.SIGTERM)
        assert command.wait() == 0
    assert "Traceback" not in command.output
