"""The docs: their code runs as written, against a real Faktory, and their diagrams are the
core's tables.

Conventions for ```python blocks in docs/*.md, by the HTML comment on the line before a block:

- none: the block runs, in its own process, with ``FAKTORY_URL`` set to the docs' test server;
- ``<!-- continues -->``: the block relies on what the block before it did (it runs like
  any other; the marker tells the reader it cannot run alone);
- ``<!-- file: NAME.py -->``: the block is written to ``NAME.py`` for later blocks to import;
  a ``test_*.py`` file is a user's test module: pytest runs it there and then;
- ``<!-- no-test -->``: the block is not run (a worker that runs until stopped, say).

A page's blocks run in order, in one fresh directory. The pages run one after another on one
server, which is never flushed: like a user's, it holds other people's jobs. Before each page,
strangers' jobs (of other job types, and of the docs' own types with arguments their handlers
do not expect) are pushed to "default" and to every other queue the docs' code names that no
page owns, some of them scheduled; the retries and dead sets hold some too. So an example
works on a busy server and on what earlier pages left behind: it uses a queue of its own,
named after its page (``producing-urgent`` on producing.md, ``logging-demo`` on logging.md),
and asserts only on its own jobs (by the jids it pushed, or by the size of its own queue),
never on the server's totals.
"""

from __future__ import annotations

import functools
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
from typing import Any

import attrs
import pytest

from faktory_core import Job
from faktory_core.commands import Fail, Fetch, Info, Mutate, Push, PushBulk
from faktory_core.events import OK, BulkPushed, Fetched, InfoReply
from tests.support.blocking import BlockingClient
from tests.support.server import FaktoryServer

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
MINIMAL_ADAPTER = DOCS / "examples" / "minimal_adapter.py"
BLOCK_TIMEOUT = 120.0

# The pages run in order on one server: the module's tests stay on one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group("docs")

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
    #: It relies on what the block before it did.
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


# -- the strangers on the docs' server --------------------------------------------------------

# The queues the docs' code names: queue="x", queues=["x", "y"], queues={"x": 2}.
_QUEUE_OPTION = re.compile(r'\bqueues?\s*=\s*(?:"(?P<one>[\w.-]+)"|[\[{(](?P<many>[^\]})]*))')
# The job types it names: push("X", ...), register("X"), client.job("X"), jobtype="X", or a
# function registered under its own name.
_JOBTYPE = re.compile(
    r'(?:\.push|\.register|client\.job)\(\s*"(?P<called>\w+)"|\bjobtype="(?P<field>\w+)"'
    r"|@\w+\.register(?:\s*#[^\n]*)?\n(?:async )?def (?P<function>\w+)"
)


def queue_names(code: str) -> set[str]:
    names: set[str] = set()
    for match in _QUEUE_OPTION.finditer(code):
        names.update([match["one"]] if match["one"] else re.findall(r'"([\w.-]+)"', match["many"]))
    return names


def owner(name: str) -> str | None:
    """The page a queue is named after (``producing-urgent``: producing.md), if any."""
    for page in PAGES:
        if name == page.stem or name.startswith(f"{page.stem}-"):
            return page.name
    return None


def page_code(page: Path) -> str:
    return "\n".join(block.code for block in blocks(page))


@functools.cache
def strangers_queues() -> tuple[str, ...]:
    """Where strangers' jobs wait: "default", and every queue the docs name that no page owns."""
    named = queue_names("\n".join(page_code(page) for page in PAGES))
    return tuple(sorted({"default"} | {name for name in named if owner(name) is None}))


@functools.cache
def docs_jobtypes() -> tuple[str, ...]:
    code = "\n".join(page_code(page) for page in PAGES)
    return tuple(
        sorted({name for match in _JOBTYPE.finditer(code) for name in match.groups() if name})
    )


OTHER_JOBTYPES = ("StrangerBackup", "StrangerSync", "StrangerAudit")


def stranger(jobtype: str, **options: Any) -> Job:
    """A job of someone else's; its arguments suit none of the docs' handlers."""
    return Job.create(jobtype, ["a stranger's"], jid_factory=lambda: uuid.uuid4().hex, **options)


def seed(server: FaktoryServer) -> None:
    """Push strangers' jobs of every type to every queue in strangers_queues(), a third of the
    types scheduled there too."""
    later = datetime.now(UTC) + timedelta(hours=1)
    jobs: list[Job] = []
    for queue_name in strangers_queues():
        for index, jobtype in enumerate((*docs_jobtypes(), *OTHER_JOBTYPES)):
            jobs.append(stranger(jobtype, queue=queue_name))
            if index % 3 == 0:
                jobs.append(stranger(jobtype, queue=queue_name, at=later))
    with BlockingClient(server.url) as client:
        pushed = client.ask(PushBulk(jobs=jobs))
    assert isinstance(pushed, BulkPushed), pushed
    assert pushed.errors == {}


def fail_strangers(client: BlockingClient) -> None:
    """On an empty server: FAIL a few strangers' jobs, leaving some in the retries set (they
    come back to "default" 15 to 44 s later) and some in the dead set."""
    jobs = [stranger(jobtype) for jobtype in (docs_jobtypes()[0], *OTHER_JOBTYPES)]
    for job in jobs:
        assert isinstance(client.ask(Push(job=job)), OK)
    for _ in jobs:
        fetched = client.ask(Fetch(queues=["default"]))
        assert isinstance(fetched, Fetched)
        assert fetched.job is not None
        failed = Fail(jid=fetched.job.jid, errtype="StrangerError", message="it went wrong")
        assert client.ask(failed) == OK(command=failed)
    kill = Mutate(operation="kill", target="retries", jids=[job.jid for job in jobs[::2]])
    assert client.ask(kill) == OK(command=kill)
    sets = info(client)["sets"]
    assert (sets["retries"], sets["dead"]) == (len(jobs) // 2, len(jobs) // 2)


def info(client: BlockingClient) -> dict[str, Any]:
    reply = client.ask(Info())
    assert isinstance(reply, InfoReply)
    stats: dict[str, Any] = reply.info["faktory"]
    return stats


@pytest.fixture(scope="module")
def server() -> Iterator[FaktoryServer]:
    """The docs' own server, already used by strangers; the pages' examples leave their jobs."""
    with FaktoryServer().start() as server:
        with BlockingClient(server.url) as client:
            fail_strangers(client)
        seed(server)
        yield server


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


def test_a_queue_named_after_a_page_is_used_by_that_page_only() -> None:
    for page in PAGES:
        for name in queue_names(page_code(page)):
            assert owner(name) in (None, page.name), f"{page.name} uses {owner(name)}'s {name!r}"


@pytest.mark.server
def test_the_docs_server_holds_strangers_jobs(server: FaktoryServer) -> None:
    # Among them, jobs of the quickstart's own type, and of types its worker does not know,
    # wait in "default", where that worker fetches; others are scheduled there.
    assert "SendGreeting" in docs_jobtypes()
    assert "default" in strangers_queues()
    with BlockingClient(server.url) as client:
        stats = info(client)
    each = len(docs_jobtypes()) + len(OTHER_JOBTYPES)
    assert all(stats["queues"].get(name, 0) >= each for name in strangers_queues()), stats
    assert stats["sets"]["scheduled"] >= len(strangers_queues()) * (each // 3)
    assert stats["sets"]["dead"] >= 1


@pytest.mark.server
@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_the_page_s_examples_run(page: Path, server: FaktoryServer, tmp_path: Path) -> None:
    run_page(page, server, tmp_path)


def run_page(page: Path, server: FaktoryServer, tmp_path: Path) -> None:
    """Run a page's blocks in order in ``tmp_path``; each asserts what it shows."""
    seed(server)  # again: an earlier page may have emptied a queue
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
            f"{result.stdout}\n{result.stderr}\n"
            f"(The server holds strangers' jobs in {', '.join(strangers_queues())}: does the "
            f"example use a queue of its own, named {page.stem}-..., and assert only on its "
            f"own jobs?)"
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
        counts = info(client)
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
def test_the_minimal_adapter_acks_fails_and_stops_cleanly() -> None:
    # On a server of its own: the adapter works "default", as a user would run it, and the test
    # reads the server's totals, which the strangers on the docs' server would change.
    jobs = [
        Job(jid="minimal-add", jobtype="Add", args=[2, 3]),
        Job(jid="minimal-explode", jobtype="Explode", args=["kaboom"]),
        Job(jid="minimal-unknown", jobtype="Nobody"),  # no handler: FAILed by the machine
    ]
    with FaktoryServer().start() as server, BlockingClient(server.url) as client:
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
