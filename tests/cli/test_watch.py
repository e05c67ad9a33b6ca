"""``faktory-worker --watch``: a changed ``.py`` file restarts the worker."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest

from faktory_adapters.thread import Client
from tests.cli.command import Command
from tests.cli.test_cli import token
from tests.support.server import FaktoryServer, closed_port

pytestmark = pytest.mark.server

# A project of its own in tmp_path: -r names a module of the current directory.
MODULE = """\
import os

from faktory_adapters import Jobs

jobs = Jobs()
print("loaded", os.getpid(), flush=True)


@jobs.register("WatchRecord")
def record(token):
    print("ran", token, os.getpid(), flush=True)
"""
# The same as a configured Worker, whose startup hook shows it runs as defined.
WORKER_MODULE = """\
import os

from faktory_adapters.thread import Worker

worker = Worker(queues=["never-fetched"])
print("loaded", os.getpid(), flush=True)


@worker.on_startup
def started():
    print("startup", os.getpid(), flush=True)


@worker.register("WatchRecord")
def record(token):
    print("ran", token, os.getpid(), flush=True)
"""


def touch(path: Path) -> None:
    """A later modification time, whatever the file system's time resolution."""
    mtime = path.stat().st_mtime_ns + 5_000_000_000
    os.utime(path, ns=(mtime, mtime))


@pytest.mark.parametrize("module", [MODULE, WORKER_MODULE], ids=["jobs", "worker"])
def test_a_changed_file_restarts_the_worker(
    faktory_server: FaktoryServer, tmp_path: Path, module: str
) -> None:
    queue = f"cli-{uuid.uuid4().hex[:10]}"
    (tmp_path / "watched_jobs.py").write_text(module)
    (tmp_path / "helpers").mkdir()
    helper = tmp_path / "helpers" / "util.py"
    helper.write_text("")
    options = ("--watch", "-r", "watched_jobs", "-q", queue, "--url", faktory_server.url)
    with Client(faktory_server.url) as client, Command(*options, cwd=tmp_path) as command:
        first_pid = int(command.expect(r"^loaded (\d+)")[1])
        touch(helper)  # any .py file under the module's directory
        second_pid = int(command.expect(r"^loaded (\d+)")[1])
        assert second_pid != first_pid
        assert "helpers/util.py changed: restarting the worker" in command.output
        job = token()
        client.push("WatchRecord", [job], queue=queue)
        assert int(command.expect(f"^ran {job} (\\d+)")[1]) == second_pid
        command.send(signal.SIGTERM)
        assert command.wait() == 0
    if module == WORKER_MODULE:  # the Worker's hook ran in both worker processes
        assert f"startup {first_pid}" in command.lines
        assert f"startup {second_pid}" in command.lines


def test_a_worker_that_fails_to_start_is_started_again_at_the_next_change(
    faktory_server: FaktoryServer, tmp_path: Path
) -> None:
    module = tmp_path / "watched_jobs.py"
    module.write_text("raise RuntimeError('not yet')\n")
    options = ("--watch", "-r", "watched_jobs", "--url", faktory_server.url)
    with Command(*options, cwd=tmp_path) as command:
        command.expect("cannot import 'watched_jobs': RuntimeError: not yet")
        command.expect("the worker exited with 2; waiting for a change")
        module.write_text(MODULE)
        touch(module)
        command.expect(r"^loaded (\d+)")
        command.send(signal.SIGINT)
        assert command.wait() == 0


def test_the_snapshot_skips_environments_caches_and_hidden_folders(tmp_path: Path) -> None:
    from faktory_adapters._watch import snapshot

    for folder in ("app", "venv", ".git", "__pycache__", "node_modules", "lib/site-packages"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "module.py").write_text("")
    (tmp_path / "venv" / "pyvenv.cfg").write_text("")
    assert list(snapshot([str(tmp_path)])) == [str(tmp_path / "app" / "module.py")]


def test_a_server_the_first_worker_process_cannot_use_ends_the_watcher_with_3(
    tmp_path: Path,
) -> None:
    (tmp_path / "watched_jobs.py").write_text(MODULE)
    url = f"tcp://127.0.0.1:{closed_port()}"
    with Command("--watch", "-r", "watched_jobs", "--url", url, cwd=tmp_path) as command:
        assert command.wait() == 3  # no change of a file can fix that: no waiting for one
    assert "connection refused" in command.output
    assert "waiting for a change" not in command.output
