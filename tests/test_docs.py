"""The docs: their code runs as written, against a real Faktory, and their diagrams are the
core's tables.

Conventions for ```python blocks in docs/*.md, by the HTML comment on the line before a block:

- none: the block runs, in its own process, with ``FAKTORY_URL`` set to a test server that
  was flushed just before, so it must work on its own;
- ``<!-- continues -->``: the block runs on what the block before it left on the server;
- ``<!-- file: NAME.py -->``: the block is written to ``NAME.py`` for later blocks to import;
  a ``test_*.py`` file is a user's test module: pytest runs it there and then;
- ``<!-- no-test -->``: the block is not run (a worker that runs until stopped, say).

A page's blocks run in order, in one fresh directory.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest

from faktory_core import Job
from faktory_core.commands import Fetch, Flush, Info, Mutate, Push
from faktory_core.events import OK, Fetched, InfoReply
from tests.support.blocking import BlockingClient
from tests.support.server import FaktoryServer

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
MINIMAL_ADAPTER = DOCS / "examples" / "minimal_adapter.py"
BLOCK_TIMEOUT = 120.0

# A fence opening a python block, with the comment line before it, if any.
_BLOCK = re.compile(
    r"(?:^<!-- (?P<marker>[^>]*?) -->\n)?^```python\n(?P<code>.*?)^```$", re.MULTILINE | re.DOTALL
)
_FILE_MARKER = re.compile(r"file: (?P<name>[\w/]+\.py)")


@attrs.frozen
class Block:
    page: str
    line: int
    code: str
    #: None: run it; a file name: write it there; "": skip it.
    file: str | None
    #: Run it without flushing the server first.
    continues: bool = False


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    found: list[Block] = []
    for match in _BLOCK.finditer(text):
        marker = match["marker"]
        line = text.count("\n", 0, match.start("code"))
        file: str | None = None
        if marker is None or marker == "continues":
            pass
        elif marker == "no-test":
            file = ""
        elif named := _FILE_MARKER.fullmatch(marker):
            file = named["name"]
        else:
            raise AssertionError(f"{page.name}:{line}: unknown marker <!-- {marker} -->")
        block = Block(page.name, line, match["code"], file, continues=marker == "continues")
        found.append(block)
    return found


@pytest.fixture(scope="module")
def server() -> Iterator[FaktoryServer]:
    """A server of the docs' own: their examples leave jobs in queues the other tests use."""
    with FaktoryServer().start() as server:
        yield server


def flush(server: FaktoryServer) -> None:
    with BlockingClient(server.url) as client:
        assert isinstance(client.ask(Flush()), OK)


# -- the pages -------------------------------------------------------------------------------


def test_the_docs_have_runnable_examples() -> None:
    runnable = [
        block
        for page in PAGES
        for block in blocks(page)
        if block.file is None or block.file.startswith("test_")
    ]
    assert len(runnable) >= 10


def test_every_marker_comment_is_attached_to_a_python_block() -> None:
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        markers = re.findall(r"^<!-- (?:no-test|continues|file: [^>]*) -->$", text, re.MULTILINE)
        attached = [block for block in blocks(page) if block.file is not None or block.continues]
        assert len(markers) == len(attached), f"{page.name}: a marker not right above ```python"


@pytest.mark.server
@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_the_page_s_examples_run(page: Path, server: FaktoryServer, tmp_path: Path) -> None:
    run_page(page, server, tmp_path)


@pytest.mark.server
def test_the_quickstart_runs_on_a_server_that_holds_other_jobs(
    server: FaktoryServer, tmp_path: Path
) -> None:
    # A user's server is not empty: jobs of other types wait in "default", some of the
    # quickstart's own type too, and others are scheduled there.
    flush(server)
    with BlockingClient(server.url) as client:
        for index in range(30):
            jobtype = "SendGreeting" if index % 10 == 0 else f"Other{index % 3}"
            at = datetime.now(UTC) + timedelta(hours=1) if index % 4 == 0 else None
            job = Job.create(
                jobtype, [f"someone {index}"], jid_factory=lambda: uuid.uuid4().hex, at=at
            )
            assert isinstance(client.ask(Push(job=job)), OK)
    run_page(DOCS / "quickstart.md", server, tmp_path, flush_first=False)


def run_page(
    page: Path, server: FaktoryServer, tmp_path: Path, *, flush_first: bool = True
) -> None:
    """Run a page's blocks in order in ``tmp_path``; each asserts what it shows."""
    env = {**os.environ, "FAKTORY_URL": server.url, "PYTHONUNBUFFERED": "1"}
    for block in blocks(page):
        if block.file == "":
            continue
        if block.file is not None:
            target = tmp_path / block.file
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.code, encoding="utf-8")
            if not target.name.startswith("test_"):
                continue
            command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", block.file]
        else:
            # Blank lines keep the traceback's line numbers those of the page.
            script = tmp_path / f"{page.stem}_line_{block.line}.py"
            script.write_text("\n" * block.line + block.code, encoding="utf-8")
            command = [sys.executable, str(script)]
        if flush_first and not block.continues:
            flush(server)
        result = subprocess.run(
            command,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
        )
        assert result.returncode == 0, (
            f"{page.name}, the block at line {block.line + 1}, exited {result.returncode}:\n"
            f"{result.stdout}\n{result.stderr}"
        )


def test_state_diagrams_match_the_tables() -> None:
    check = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "diagrams.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr


# -- the minimal adapter of library-authors.md -----------------------------------------------


class Process:
    """A subprocess whose stdout lines can be awaited, each wait bounded."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for_line(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            assert line is not None, f"exited before printing {text!r}: {self.seen}"
            self.seen.append(line)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)


def wait_for_info(client: BlockingClient, processed: int, failures: int) -> None:
    """Poll INFO until the server counts these ACKs and FAILs (it has no event to await)."""
    deadline = time.monotonic() + 30.0
    while True:
        reply = client.ask(Info())
        assert isinstance(reply, InfoReply)
        counts = reply.info["faktory"]
        seen = (counts["total_processed"], counts["total_failures"])
        if seen == (processed, failures):
            return
        assert time.monotonic() < deadline, f"the server counts {seen}"
        time.sleep(0.1)


def last_failure(client: BlockingClient, jid: str) -> tuple[str | None, str | None]:
    """The errtype and message of a job in the retries set (requeued, fetched, to see them)."""
    mutate = Mutate(operation="requeue", target="retries", jids=[jid])
    assert client.ask(mutate) == OK(command=mutate)
    fetched = client.ask(Fetch(queues=["default"]))
    assert isinstance(fetched, Fetched)
    assert fetched.job is not None
    assert fetched.job.jid == jid
    assert fetched.job.failure is not None
    return fetched.job.failure.errtype, fetched.job.failure.message


@pytest.mark.server
def test_the_minimal_adapter_acks_fails_and_stops_cleanly(server: FaktoryServer) -> None:
    flush(server)
    jobs = [
        Job(jid="minimal-add", jobtype="Add", args=[2, 3]),
        Job(jid="minimal-explode", jobtype="Explode", args=["kaboom"]),
        Job(jid="minimal-unknown", jobtype="Nobody"),  # no handler: FAILed by the machine
    ]
    with BlockingClient(server.url) as client:
        for job in jobs:
            assert isinstance(client.ask(Push(job=job)), OK)
        env = {**os.environ, "FAKTORY_URL": server.url, "PYTHONUNBUFFERED": "1"}
        adapter = Process([sys.executable, str(MINIMAL_ADAPTER)], env)
        try:
            adapter.wait_for_line("Add: 2 + 3 = 5")
            wait_for_info(client, processed=3, failures=2)
            adapter.popen.send_signal(signal.SIGTERM)
            assert adapter.popen.wait(30) == 0
        finally:
            adapter.kill()
        assert adapter.popen.stderr is not None
        assert adapter.popen.stderr.read() == ""
        assert last_failure(client, "minimal-explode") == ("RuntimeError", "kaboom")
        assert last_failure(client, "minimal-unknown")[0] == "UnknownJobType"
