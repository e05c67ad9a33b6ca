"""The job registry and job types: every form of ``register``, the push options a job type
binds, and where a job type registered on a Worker pushes (against a real server at the end)."""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from faktory_adapters import Jobs, JobType
from faktory_adapters.thread import Client, Worker
from faktory_core import Job, LocalProtocolError
from tests.support.server import FaktoryServer


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
    worker = Worker()
    adder = worker.register("Add", add)
    assert isinstance(adder, JobType)
    assert "Add" in worker._jobs


@pytest.fixture(params=["Jobs", "Worker"])
def registry(request: pytest.FixtureRequest) -> Jobs | Worker:
    """Jobs and a Worker register alike (a Worker fetching "default", so pushing there)."""
    return Jobs() if request.param == "Jobs" else Worker()


def registered(registry: Jobs | Worker) -> Jobs:
    return registry if isinstance(registry, Jobs) else registry._jobs


def test_every_form_of_register_works(registry: Jobs | Worker) -> None:
    @registry.register
    def bare(a: int) -> int:
        return a

    @registry.register()
    def called(a: int) -> int:
        return a

    @registry.register("Named")
    def named(a: int) -> int:
        return a

    def plain(a: int) -> int:
        return a

    both = registry.register("Both", plain)
    alone = registry.register(plain)
    made = {
        "bare": bare,
        "called": called,
        "Named": named,
        "Both": both,
        "plain": alone,
    }
    for name, kind in made.items():
        assert isinstance(kind, JobType)
        assert kind.jobtype == name
        assert registered(registry)[name] is kind
        assert kind(7) == 7  # still the function
        assert kind.job(1).jobtype == name
    assert sorted(registered(registry)) == sorted(made)


@pytest.mark.parametrize(
    ("register", "error", "words"),
    [
        (lambda jobs: jobs.register(lambda: None), ValueError, "a lambda has no name"),
        (lambda jobs: jobs.register()(lambda: None), ValueError, "register('Name', handler)"),
        (lambda jobs: jobs.register(42), TypeError, "a handler (a function), got int"),
        (lambda jobs: jobs.register()(42), TypeError, "must be callable, got int"),
        (lambda jobs: jobs.register("X")(42), TypeError, "'X' is not callable (it is int)"),
        (lambda jobs: jobs.register("X", "Y"), TypeError, "'X' is not callable (it is str)"),
        (lambda jobs: jobs.register(functools.partial(add, 1)), ValueError, "no __name__"),
    ],
)
def test_a_handler_that_cannot_be_registered_is_refused_clearly(
    registry: Jobs | Worker,
    register: Callable[[Any], object],
    error: type[Exception],
    words: str,
) -> None:
    with pytest.raises(error, match=re.escape(words)):
        register(registry)
    assert len(registered(registry)) == 0


def test_a_job_type_binds_its_push_options_at_registration(registry: Jobs | Worker) -> None:
    when = datetime(2030, 1, 1, tzinfo=UTC)

    @registry.register(
        "Mail", queue="mail", retry=3, at=when, reserve_for=600, backtrace=5, custom={"k": 1}
    )
    def mail(to: str) -> None:
        """Sends nothing."""

    recorder = Recorder()
    jid = mail.send(recorder, "a@b.c")
    (job,) = recorder.pushed
    assert job.jid == jid
    assert (job.queue, job.retry, job.at, job.reserve_for) == ("mail", 3, when, 600)
    assert (job.backtrace, job.custom, job.args) == (5, {"k": 1}, ["a@b.c"])
    assert mail.options(retry=1).job("x").queue == "mail"  # options() layers over them
    assert registry.register(print, queue="bare").job().queue == "bare"


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"queue": "no spaces"}, LocalProtocolError, "queue"),
        ({"retry": "3"}, LocalProtocolError, "retry must be an integer"),
        ({"reserve_for": 86401}, LocalProtocolError, "reserve_for must be from"),
        ({"at": "tomorrow"}, LocalProtocolError, "at is not an RFC 3339 timestamp"),
        ({"custom": {1: 2}}, LocalProtocolError, "custom must be a mapping"),
        ({"queu": "mail"}, TypeError, "unknown push option 'queu': a job type takes queue"),
        ({"raise_in_job": "no"}, ValueError, "raise_in_job must be True or False"),
    ],
)
def test_bad_push_options_raise_at_the_decorator_naming_the_option(
    registry: Jobs | Worker, options: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        registry.register("Checked", **options)  # before any function is decorated
    with pytest.raises(error, match=words):
        registry.register("Checked", add, **options)
    with pytest.raises(error, match=words):
        registry.register(add, **options)
    assert len(registered(registry)) == 0


def test_include_keeps_each_job_types_options_and_skips_the_same_job_type() -> None:
    jobs = Jobs()
    mail = jobs.register("Mail", add, queue="mail", retry=2)
    worker = Worker(queues=["other"])
    worker.include(jobs)
    worker.include(jobs)  # the same job types again: nothing to add, no clash
    assert worker._jobs["Mail"] is mail
    assert (mail.job(1, 2).queue, mail.job(1, 2).retry) == ("mail", 2)
    everything = Jobs()
    everything.include(jobs)
    assert everything["Mail"] is mail
    clashing = Jobs()
    clashing.register("Mail", add)  # another job type of that name
    with pytest.raises(ValueError, match="other handlers are already registered for Mail"):
        worker.include(clashing)


def test_registering_a_job_type_again_keeps_its_options_unless_given() -> None:
    mail = Jobs().register("Mail", add, queue="mail", raise_in_job=False)
    again = Jobs().register(mail)  # bare: named after the job type
    assert (again.jobtype, again.job(1, 2).queue, again.raise_in_job) == ("Mail", "mail", False)
    assert Jobs().register(mail, queue="other").job(1, 2).queue == "other"
    on_worker = Worker(queues=["elsewhere"]).register(mail)
    assert on_worker.job(1, 2).queue == "mail"  # its own queue, not the worker's


@pytest.mark.parametrize(
    ("queues", "pushed_to"),
    [
        (["default"], "default"),
        (["mail", "reports"], "mail"),
        (["critical", "default", "bulk"], "default"),
        ({"bulk": 1, "mail": 5}, "bulk"),
        ({"mail": 1, "default": 5}, "default"),
    ],
)
def test_a_job_type_registered_on_a_worker_pushes_where_that_worker_looks(
    queues: list[str] | dict[str, int], pushed_to: str
) -> None:
    worker = Worker(queues=queues)

    @worker.register
    def bare() -> None:
        """Does nothing."""

    assert bare.job().queue == pushed_to
    assert worker.register("Given", add, queue="given").job(1, 2).queue == "given"
    assert Jobs().register("Free", add).job(1, 2).queue == "default"  # no worker: default


@pytest.mark.server
def test_send_from_a_worker_registered_job_type_reaches_that_worker(
    faktory_server: FaktoryServer,
) -> None:
    queue = f"jobs-{uuid.uuid4().hex[:10]}"
    worker = Worker(url=faktory_server.url, queues=[queue], concurrency=1)
    ran: list[str] = []

    @worker.register
    def record(token: str) -> None:
        ran.append(token)

    with Client(faktory_server.url) as client:
        record.send(client, "sent")
        assert client.info()["faktory"]["queues"].get(queue) == 1
    assert worker.drain() == 0
    assert ran == ["sent"]
