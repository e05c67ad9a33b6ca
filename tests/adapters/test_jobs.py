"""The job registry and job types, without a server."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from faktory_adapters import Jobs, JobType
from faktory_core import Job, LocalProtocolError


def add(a: int, b: int) -> int:
    return a + b


class Recorder:
    """Stands in for a Client: ``push`` is all a JobType needs."""

    def __init__(self) -> None:
        self.pushed: list[Job] = []

    def push(self, job: Job) -> str:
        self.pushed.append(job)
        return job.jid


def test_a_job_type_is_still_its_function_and_makes_jobs() -> None:
    jobs = Jobs()
    adder = jobs.register("Add", add)
    assert adder(2, 3) == 5
    assert adder.__wrapped__ is add
    assert "Add" in jobs
    assert jobs["Add"] is adder
    first, second = adder.job(1, 2), adder.job(1, 2)
    assert (first.jobtype, first.args, first.queue) == ("Add", [1, 2], "default")
    assert first.jid != second.jid
    assert repr(adder).startswith("<JobType Add ")


def test_options_are_bound_checked_at_once_and_layered() -> None:
    adder = Jobs().register("Add", add)
    when = datetime(2030, 1, 1, tzinfo=UTC)
    later = adder.options(queue="math", retry=2).options(at=when)
    job = later.job(1, 2)
    assert (job.queue, job.retry, job.at) == ("math", 2, when)
    assert adder.job(1, 2).queue == "default"  # the original is unchanged
    with pytest.raises(LocalProtocolError):
        adder.options(queue="no spaces allowed")


def test_send_pushes_through_any_client_and_returns_its_result() -> None:
    recorder = Recorder()
    adder = Jobs().register("Add", add)
    jid = adder.send(recorder, 4, 5)
    assert [(job.jid, job.args) for job in recorder.pushed] == [(jid, [4, 5])]


def test_keyword_arguments_are_refused_because_faktory_args_are_positional() -> None:
    adder = Jobs().register("Add", add)
    with pytest.raises(TypeError, match="positional args only"):
        adder.job(a=1, b=2)


def test_bad_registrations_are_refused() -> None:
    jobs = Jobs()
    with pytest.raises(ValueError, match="non-empty string"):
        jobs.register("", add)
    with pytest.raises(TypeError, match="not callable"):
        jobs.register("X", 42)  # type: ignore[call-overload]
    jobs.register("X", add)
    with pytest.raises(ValueError, match="already registered"):
        jobs.register("X", add)


def test_the_decorator_form_and_registering_a_job_type_elsewhere() -> None:
    jobs, other = Jobs(), Jobs()

    @jobs.register("Add", raise_in_job=False)
    def adder(a: int, b: int) -> int:
        return a + b

    assert isinstance(adder, JobType)
    assert adder.raise_in_job is False
    again = other.register("Plus", adder)  # the function inside is registered, not the wrapper
    assert again.__wrapped__ is adder.__wrapped__
    assert again.raise_in_job is False  # its abort setting comes along
    jobs.include(other)
    assert sorted(jobs) == ["Add", "Plus"]
    assert len(jobs) == 2


def test_worker_register_returns_a_job_type() -> None:
    from faktory_adapters.thread import Worker

    worker = Worker()
    adder = worker.register("Add", add)
    assert isinstance(adder, JobType)
    assert "Add" in worker._jobs
