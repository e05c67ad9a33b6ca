"""The README's code works when pasted."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from faktory_core import Job
from faktory_core.commands import Push
from tests.support.blocking import BlockingClient
from tests.support.server import FaktoryServer

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 2


def test_the_sans_io_example_runs() -> None:
    (block,) = [block for block in BLOCKS if "faktory_adapters" not in block]
    exec(compile(block, "README.md (core)", "exec"), {})


@pytest.fixture(scope="module")
def busy_server() -> Iterator[FaktoryServer]:
    """A server that already holds other people's jobs in the README's queue, "default"."""
    with FaktoryServer().start() as server, BlockingClient(server.url) as client:
        for index in range(20):
            jobtype = "SendGreeting" if index % 5 == 0 else "SomeoneElsesJob"
            job = Job.create(
                jobtype, [f"stranger {index}"], jid_factory=lambda: uuid.uuid4().hex, retry=0
            )
            client.ask(Push(job=job))
        yield server


@pytest.mark.server
def test_the_producer_and_worker_example_runs(
    busy_server: FaktoryServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("FAKTORY_URL", busy_server.url)
    (block,) = [block for block in BLOCKS if "faktory_adapters.asyncio" in block]
    namespace: dict[str, Any] = {}
    exec(compile(block, "README.md (asyncio)", "exec"), namespace)  # pushes the jobs
    worker = namespace["worker"]

    async def run_until_greeted() -> int:
        greeted: set[str] = set()
        both = asyncio.Event()

        @worker.use
        async def notice(context: Any, call_next: Callable[[], Awaitable[None]]) -> None:
            await call_next()
            if context.job.jobtype == "SendGreeting":
                greeted.add(context.job.args[0])
                if {"world", "you"} <= greeted:
                    both.set()

        serving = asyncio.create_task(worker.serve())
        await asyncio.wait_for(both.wait(), 15)
        worker.stop()
        return await asyncio.wait_for(serving, 15)

    assert asyncio.run(run_until_greeted()) == 0
    out = capsys.readouterr().out
    assert "Hello, world!" in out
    assert "Hello, you!" in out
