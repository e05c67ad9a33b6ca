"""The README's code works when pasted."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import FaktoryServer

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 2


def test_the_sans_io_example_runs() -> None:
    (block,) = [block for block in BLOCKS if "faktory_adapters" not in block]
    exec(compile(block, "README.md (core)", "exec"), {})


@pytest.mark.server
def test_the_producer_and_worker_example_runs(
    faktory_server: FaktoryServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("FAKTORY_URL", faktory_server.url)
    (block,) = [block for block in BLOCKS if "faktory_adapters.asyncio" in block]
    namespace: dict[str, Any] = {}
    exec(compile(block, "README.md (asyncio)", "exec"), namespace)  # pushes the job
    worker = namespace["worker"]

    async def run_until_greeted() -> int:
        greeted = asyncio.Event()

        @worker.use
        async def notice(context: Any, call_next: Callable[[], Awaitable[None]]) -> None:
            await call_next()
            if context.job.jobtype == "SendGreeting":
                greeted.set()

        serving = asyncio.create_task(worker.serve())
        await asyncio.wait_for(greeted.wait(), 15)
        worker.stop()
        return await asyncio.wait_for(serving, 15)

    assert asyncio.run(run_until_greeted()) == 0
    assert "Hello, world!" in capsys.readouterr().out
