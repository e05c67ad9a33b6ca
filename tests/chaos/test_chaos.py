"""The chaos run for each adapter: faults everywhere, and still no job is lost.

Short by default (CI runs it with the rest); ``CHAOS_JOBS=5000`` makes the long form. Run it
alone with ``pytest -m chaos -s``: each run prints one line of figures, also appended to
``$CHAOS_REPORT`` (default ``/tmp/faktory-chaos-report.txt``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos.harness import ChaosRun

pytestmark = [pytest.mark.chaos, pytest.mark.server]

SHORT_FORM_JOBS = 1000
REPORT = Path(os.environ.get("CHAOS_REPORT", "/tmp/faktory-chaos-report.txt"))


@pytest.mark.parametrize("adapter", ["asyncio", "thread", "gevent"])
def test_every_job_runs_despite_cuts_restarts_and_a_kill(adapter: str, tmp_path: Path) -> None:
    jobs = int(os.environ.get("CHAOS_JOBS", SHORT_FORM_JOBS))
    figures = ChaosRun(adapter, jobs, tmp_path, seed=jobs).run()
    print(figures.line())
    for event in figures.timeline:
        print("   ", event)
    with REPORT.open("a") as report:
        report.write(figures.line() + "\n")
    assert figures.lost == 0
    assert figures.unexplained == []
    assert figures.exit_code in (0, 1)
    assert figures.faults > 0
    assert figures.failures > 0  # the planned failures were FAILed and retried
    assert (figures.worker_restarts, figures.server_restarts) == (1, 1)
