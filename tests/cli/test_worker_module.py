"""``faktory-worker -r module:worker``: a configured Worker run as it is, with the options
given on the command line over its own; conflicts exit 2. Real processes, a real server."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import pytest

from faktory_adapters.thread import Client, Worker
from faktory_core import ConfigurationError, OptionError
from tests.cli.command import Command, run
from tests.cli.test_cli import one_error_line, token
from tests.support.server import FaktoryServer

pytestmark = pytest.mark.server

WORKER = "tests.cli.jobs_worker:worker"
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ ")
STARTED = r"faktory\.worker .*: worker \w+ starting: \S+, concurrency (\d+) on (\d+) connections?$"


def test_a_worker_runs_with_its_hooks_and_middleware_and_the_options_given(
    faktory_server: FaktoryServer, client: Client, queue: str
) -> None:
    job = token()
    jid = client.push("cli_worker_record", [job], queue=queue)
    args = ("-r", WORKER, "-q", queue, "-c", "2", "--connections", "1", "--burst")
    args += ("--url", faktory_server.url)
    with Command(*args) as command:
        assert command.wait() == 0  # --burst: once the queue is empty
    assert (
        "using the Worker tests.cli.jobs_worker:worker (thread adapter), with url, queues, "
        "concurrency, connections, burst from the command line"
    ) in command.output
    assert re.findall(STARTED, command.output, re.MULTILINE) == [("2", "1")]  # -c over its 3
    (pid,) = re.findall(r"^startup (\d+)$", command.output, re.MULTILINE)
    # The hooks and the middleware, in their order.
    ours = [line for line in command.lines if not LOG_LINE.match(line)]
    assert ours == [f"startup {pid}", f"around {jid} {pid}", f"ran {job} {pid}", f"shutdown {pid}"]


def test_a_worker_found_in_its_module_keeps_the_options_not_given(
    faktory_server: FaktoryServer, client: Client
) -> None:
    from tests.cli.jobs_worker import OWN_QUEUE, cli_worker_record

    job = token()
    cli_worker_record.send(client, job)  # to the Worker's own queue: where it fetches
    with Command("-r", "tests.cli.jobs_worker", "--burst", "--url", faktory_server.url) as command:
        assert command.wait() == 0
    # Its own concurrency, on as many connections (fewer than the default 20).
    assert re.findall(STARTED, command.output, re.MULTILINE) == [("3", "3")]
    assert re.search(f"^ran {job} ", command.output, re.MULTILINE)
    assert client.info()["faktory"]["queues"].get(OWN_QUEUE, 0) == 0


def test_processes_run_the_worker_in_each(
    faktory_server: FaktoryServer, client: Client, queue: str
) -> None:
    job = token()
    client.push("cli_worker_record", [job], queue=queue)
    args = ("-r", WORKER, "--processes", "2", "-q", queue, "--burst", "--url", faktory_server.url)
    with Command(*args) as command:
        assert command.wait() == 0  # both stop once the queue is empty
    started = set(re.findall(r"^startup (\d+)$", command.output, re.MULTILINE))
    stopped = set(re.findall(r"^shutdown (\d+)$", command.output, re.MULTILINE))
    assert len(started) == 2
    assert stopped == started
    (ran,) = re.findall(f"^ran {job} (\\d+)$", command.output, re.MULTILINE)
    assert ran in started


@pytest.mark.parametrize("adapter", ["asyncio", "gevent"])
def test_another_adapter_than_the_workers_exits_2(
    faktory_server: FaktoryServer, adapter: str
) -> None:
    result = run("-r", WORKER, "--adapter", adapter, "--url", faktory_server.url)
    assert result.returncode == 2
    assert one_error_line(result).endswith(
        f"--adapter {adapter} conflicts with tests.cli.jobs_worker:worker, a Worker of the "
        "thread adapter, which it runs on: drop --adapter or change the Worker"
    )


def test_check_makes_the_worker_and_checks_its_server(faktory_server: FaktoryServer) -> None:
    result = run("-r", WORKER, "--adapter", "thread", "--check", "--url", faktory_server.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("faktory-worker: ok: Faktory 1.9.4 at tcp://")
    broken = run("-r", "tests.cli.jobs_broken", "--check", "--url", faktory_server.url)
    assert broken.returncode == 2  # --check imports the modules it is given
    assert "this module is broken on purpose" in one_error_line(broken)


APP = """\
from faktory_adapters import Jobs
from faktory_adapters.thread import Worker

jobs = Jobs()


@jobs.register
def shared(token):
    print("shared", token, flush=True)


worker = Worker(queues=["app"])
worker.include(jobs)  # the same job types the command finds in this module: not a clash


@worker.register
def own(token):
    print("own", token, flush=True)
"""
OTHER_WORKER = """\
from faktory_adapters.thread import Worker

worker = Worker()
worker.register("Other", print)
"""
TWO_WORKERS = """\
from faktory_adapters.thread import Worker

first, second = Worker(), Worker()
first.register("One", print)
"""
CLASHING = """\
from faktory_adapters import Jobs

jobs = Jobs()
jobs.register("own", print)  # not app's handler for that job type
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory of modules, the current directory of the command."""
    modules = {"app": APP, "other": OTHER_WORKER, "two": TWO_WORKERS, "clashing": CLASHING}
    for name, text in modules.items():
        (tmp_path / f"{name}.py").write_text(text)
    return tmp_path


def test_the_jobs_beside_a_worker_are_included_and_the_same_job_types_skipped(
    faktory_server: FaktoryServer, client: Client, queue: str, project: Path
) -> None:
    job = token()
    for jobtype in ("shared", "own"):
        client.push(jobtype, [job], queue=queue)
    args = ("-r", "app", "-q", queue, "--burst", "--url", faktory_server.url)
    result = run(*args, cwd=project)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == [f"own {job}", f"shared {job}"]


@pytest.mark.parametrize(
    ("modules", "words"),
    [
        (("two",), "two:first and two:second are Workers: the command runs one, so name it"),
        (("app", "other:worker"), "app:worker and other:worker are Workers"),
        (
            ("app:worker", "clashing"),
            "cannot include clashing:jobs in app:worker: other handlers are already registered "
            "for own",
        ),
    ],
)
def test_conflicts_exit_2_with_one_line(
    faktory_server: FaktoryServer, project: Path, modules: tuple[str, ...], words: str
) -> None:
    requires = [arg for module in modules for arg in ("-r", module)]
    result = run(*requires, "--url", faktory_server.url, cwd=project)
    assert result.returncode == 2
    assert words in one_error_line(result)


TLS_APP = """\
import re
import ssl

from faktory_adapters.thread import Worker

worker = Worker(url={url!r}, ssl_context=ssl.create_default_context(cafile={ca!r}))
worker.register("Secure", print)
"""


def test_check_uses_the_workers_url_and_tls_context_and_an_option_it_refuses_exits_2(
    tls_server: tuple[FaktoryServer, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, ca_cert = tls_server
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)  # only the Worker's context trusts it
    monkeypatch.delenv("FAKTORY_URL", raising=False)
    (tmp_path / "secure.py").write_text(TLS_APP.format(url=server.url, ca=str(ca_cert)))
    result = run("-r", "secure", "--check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(f"at tcp+tls://localhost:{server.port}")
    # The Worker's URL is the one that counts: a malformed one in the environment is not
    # checked (it is, and refused, when no Worker is named).
    monkeypatch.setenv("FAKTORY_URL", "http://not-faktory")
    assert run("-r", "secure", "--check", cwd=tmp_path).returncode == 0
    from_env = run("--check", cwd=tmp_path)
    assert from_env.returncode == 2
    assert "the environment variable FAKTORY_URL: invalid Faktory URL" in one_error_line(from_env)
    plain = run("-r", "secure", "--check", "--url", f"tcp://127.0.0.1:{server.port}", cwd=tmp_path)
    assert plain.returncode == 2
    assert one_error_line(plain).endswith(
        "the options given cannot apply to secure:worker: ssl_context was given but "
        f"tcp://127.0.0.1:{server.port} is plain TCP: use a tcp+tls:// URL"
    )


# The override itself, in process: WorkerBase._reconfigure.


@pytest.fixture
def worker() -> Worker:
    return Worker(
        url="tcp://127.0.0.1:7419",
        queues={"a": 2, "b": 1},
        concurrency=3,
        heartbeat_interval=5,
        job_time_limit=60,
        time_limits={"Long": 600},
        raise_in_job=False,
        seed=1,
    )


def test_reconfigure_changes_what_is_given_and_keeps_the_rest(worker: Worker) -> None:
    kept = {key: value for key, value in worker._options.items() if key != "concurrency"}
    wid = worker.wid
    worker._reconfigure(concurrency=5, url="tcp://other:7419")
    assert worker._options == {**kept, "concurrency": 5}
    assert str(worker._url) == "tcp://other:7419"
    assert (worker.wid, worker._raise_in_job) == (wid, False)
    assert worker._make_config().time_limits == {"Long": 600}


@pytest.mark.parametrize(
    ("changes", "error", "words"),
    [
        ({"concurrency": 0}, OptionError, "concurrency must be"),
        ({"url": "http://x"}, ConfigurationError, "tcp://"),
        ({"ssl_context": ssl.create_default_context()}, ConfigurationError, "plain TCP"),
        ({"queue": ["a"]}, TypeError, "not a Worker option: queue"),
    ],
)
def test_reconfigure_refuses_what_init_refuses_and_changes_nothing(
    worker: Worker, changes: dict[str, object], error: type[Exception], words: str
) -> None:
    before = (worker._url, dict(worker._options), worker._ssl_context, worker.wid)
    with pytest.raises(error, match=words):
        worker._reconfigure(**changes)
    assert (worker._url, worker._options, worker._ssl_context, worker.wid) == before
