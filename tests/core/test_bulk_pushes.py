"""commands.bulk_pushes: a list of jobs as the PUSHB commands the server accepts, and which
commands the server holds back (``Command.blocks``)."""

from __future__ import annotations

import pytest

from faktory_core import ArgumentError, ArgumentTypeError, Job, commands
from faktory_core.commands import MAX_BULK_JOBS, PushBulk, bulk_pushes


def jobs(count: int) -> list[Job]:
    return [Job(jid=f"jid-{n:08}", jobtype="Probe", args=[n]) for n in range(count)]


@pytest.mark.parametrize(
    ("count", "sizes"),
    [
        (1, [1]),
        (MAX_BULK_JOBS, [MAX_BULK_JOBS]),
        (MAX_BULK_JOBS + 1, [MAX_BULK_JOBS, 1]),
        (2 * MAX_BULK_JOBS + 500, [MAX_BULK_JOBS, MAX_BULK_JOBS, 500]),
    ],
)
def test_jobs_go_in_order_at_most_max_bulk_jobs_a_command(count: int, sizes: list[int]) -> None:
    given = jobs(count)
    pushes = bulk_pushes(iter(given))  # any iterable
    assert [len(push.jobs) for push in pushes] == sizes
    assert [job for push in pushes for job in push.jobs] == given
    assert all(isinstance(push, PushBulk) for push in pushes)


def test_the_size_can_be_given() -> None:
    assert [len(push.jobs) for push in bulk_pushes(jobs(5), 2)] == [2, 2, 1]
    with pytest.raises(ArgumentError, match="size must be at least 1"):
        bulk_pushes(jobs(5), 0)
    with pytest.raises(ArgumentTypeError, match="size must be an integer"):
        bulk_pushes(jobs(5), 2.0)  # type: ignore[arg-type]


def test_every_job_is_checked_before_any_command_is_made() -> None:
    given: list[object] = [*jobs(MAX_BULK_JOBS + 1), "not a job"]
    with pytest.raises(ArgumentTypeError, match=r"jobs\[1001\] must be a Job"):
        bulk_pushes(given)  # type: ignore[arg-type]
    unencodable = Job(jid="jid-unencodable", jobtype="Probe", args=[{1, 2}])
    with pytest.raises(ArgumentTypeError, match="job jid-unencodable"):
        bulk_pushes([*jobs(MAX_BULK_JOBS), unencodable])


def test_no_jobs_is_refused() -> None:
    with pytest.raises(ArgumentError, match="at least one job"):
        bulk_pushes([])
    with pytest.raises(ArgumentTypeError, match="a sequence of Job"):
        bulk_pushes(jobs(1)[0])  # type: ignore[arg-type]


def test_only_fetch_blocks() -> None:
    blocking = {
        name
        for name in commands.__all__
        if isinstance(kind := getattr(commands, name), type)
        and issubclass(kind, commands.Command)
        and kind.blocks
    }
    assert blocking == {"Fetch"}
