"""A worker's observers hear the same things in every adapter: its start, each job as it
starts and ends (ACKed, FAILed, FAILed without running), its phases; and one that raises
costs no job."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest

from faktory_adapters import Jobs, WorkerObserver, thread
from faktory_core import ArgumentTypeError, Job, Phase, WorkerConfig
from faktory_core.machine_io import JobOutcome, JobReport
from tests.support.adapters import adapter_module
from tests.support.server import FaktoryServer

pytestmark = pytest.mark.server


class Recorder(WorkerObserver):
    def __init__(self) -> None:
        self.config: WorkerConfig | None = None
        self.started: list[tuple[str, float]] = []
        self.ended: list[JobReport] = []
        self.phases: list[Phase] = []
        self.connections: list[tuple[int, int]] = []

    def serving(self, config: WorkerConfig) -> None:
        self.config = config

    def job_started(self, job: Job, now: float) -> None:
        self.started.append((job.jid, now))

    def job_ended(self, report: JobReport) -> None:
        self.ended.append(report)

    def phase_changed(self, phase: Phase) -> None:
        self.phases.append(phase)

    def connections_changed(self, ready: int, reconnects: int) -> None:
        self.connections.append((ready, reconnects))


class Broken(WorkerObserver):
    def job_ended(self, report: JobReport) -> None:
        raise RuntimeError("the metrics backend is down")


def drain(adapter: str, worker: Any) -> None:
    if adapter == "asyncio":
        asyncio.run(worker.drain())
    else:
        worker.drain()


def test_observers_hear_every_job_start_and_end(
    faktory_server: FaktoryServer,
    client: thread.Client,
    adapter: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = f"observe-{uuid.uuid4().hex[:10]}"
    jobs = Jobs()

    @jobs.register("Fine")
    def fine() -> None:
        pass

    @jobs.register("Broken")
    def broken() -> None:
        raise KeyError("missing")

    fine_jids = [client.push("Fine", queue=queue) for _ in range(3)]
    broken_jid = client.push("Broken", queue=queue)
    unknown_jid = client.push("NobodyRunsThis", queue=queue)
    worker = adapter_module(adapter).Worker(url=faktory_server.url, queues=[queue], concurrency=2)
    worker.include(jobs)
    recorder = worker.observe(Recorder())
    worker.observe(Broken())
    with pytest.raises(KeyError), caplog.at_level(logging.ERROR, logger="faktory"):
        drain(adapter, worker)  # drain() re-raises the first job's exception
    assert recorder.config is not None
    assert recorder.config.concurrency == 2
    assert sorted(jid for jid, _ in recorder.started) == sorted([*fine_jids, broken_jid])
    outcomes = {report.job.jid: (report.outcome, report.errtype) for report in recorder.ended}
    assert outcomes == {
        **dict.fromkeys(fine_jids, (JobOutcome.SUCCEEDED, None)),
        broken_jid: (JobOutcome.FAILED, "KeyError"),
        unknown_jid: (JobOutcome.FAILED, "UnknownJobType"),
    }
    assert len(recorder.ended) == 5  # one report each
    started_at = dict(recorder.started)
    for report in recorder.ended:
        if report.job.jid in started_at:
            assert report.started == started_at[report.job.jid]
            assert report.duration >= 0
    assert recorder.phases[-1] is Phase.EXITED
    # Every job connection was ready, then closed at the end; none was lost.
    assert max(ready for ready, _ in recorder.connections) == recorder.config.job_links
    assert recorder.connections[-1] == (0, 0)
    # The broken observer was logged at every report, and cost nothing: every job was
    # reported to the server (none left in the queue, none reserved).
    failures = [r for r in caplog.records if "observer" in r.getMessage()]
    assert len(failures) == 5
    assert "the metrics backend is down" in (failures[0].exc_text or "")
    assert client.info()["faktory"]["queues"].get(queue, 0) == 0


def test_observe_takes_only_observers(adapter: str) -> None:
    worker = adapter_module(adapter).Worker()
    expected = r"observe\(observer\): observer must be a faktory_adapters\.WorkerObserver, got"
    with pytest.raises(ArgumentTypeError, match=expected):  # a TypeError
        worker.observe(lambda report: None)
