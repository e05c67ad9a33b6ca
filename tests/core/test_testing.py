"""faktory_core.testing: its strategies draw what they promise, and run_inline sees a job as a
worker does (checked against the real server's round trip in the last tests)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

from faktory_core import NEED_DATA, Connection, Job, LocalProtocolError, ReplyParser
from faktory_core._resp import Reply
from faktory_core.commands import Ack, Fetch, Push
from faktory_core.events import OK, Fetched, Ready
from faktory_core.testing import (
    as_fetched,
    chunkings,
    jobs,
    json_values,
    replies,
    reply_streams,
    run_inline,
)
from tests.support.blocking import BlockingClient
from tests.support.server import FaktoryServer

JID = "0123456789abcdef"


def identical(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down and dict keys in the same order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(map(identical, a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(identical(a[key], b[key]) for key in a)
    return bool(a == b)


def sorted_keys(value: Any) -> Any:
    """``value`` with every dict's keys in sorted order, as the server writes them."""
    if isinstance(value, list):
        return [sorted_keys(item) for item in value]
    if isinstance(value, dict):
        return {key: sorted_keys(value[key]) for key in sorted(value)}
    return value


def parse(chunks: list[bytes]) -> list[Reply]:
    parser = ReplyParser()
    replies: list[Reply] = []
    for chunk in chunks:
        parser.feed(chunk)
        while (reply := parser.next_reply()) is not NEED_DATA:
            replies.append(reply)
    assert parser.buffered == 0
    return replies


# -- strategies ------------------------------------------------------------------------------


@settings(deadline=None)
@given(jobs())
def test_jobs_are_valid_and_reach_a_worker_unchanged(job: Job) -> None:
    fetched = as_fetched(job)
    assert identical(fetched.args, sorted_keys(job.args))
    assert identical(fetched.custom, sorted_keys(job.custom or None))
    assert fetched.backtrace == (job.backtrace or None)
    unchanged = ("jid", "jobtype", "queue", "reserve_for", "at")
    assert [getattr(fetched, name) for name in unchanged] == [
        getattr(job, name) for name in unchanged
    ]
    assert fetched.retry == (25 if job.retry is None else job.retry)


@given(jobs("SendEmail", st.tuples(st.emails()).map(list)))
def test_jobs_take_a_fixed_jobtype_and_an_args_strategy(job: Job) -> None:
    assert job.jobtype == "SendEmail"
    assert len(job.args) == 1
    assert "@" in job.args[0]


@given(jobs(st.sampled_from(["A", "B"])))
def test_jobs_take_a_jobtype_strategy(job: Job) -> None:
    assert job.jobtype in ("A", "B")


@settings(deadline=None)
@given(json_values())
def test_json_values_survive_the_round_trip_with_their_types(value: Any) -> None:
    fetched = as_fetched(Job(jid=JID, jobtype="T", args=[value]))
    assert fetched.args == [value]
    assert identical(fetched.args[0], sorted_keys(value))


@given(replies())
def test_a_reply_parses_to_its_value(reply: tuple[bytes, Reply]) -> None:
    data, value = reply
    assert parse([data]) == [value]


@settings(deadline=None)
@given(st.data(), reply_streams())
def test_reply_streams_parse_the_same_in_any_chunking(
    data: st.DataObject, stream: tuple[bytes, list[Reply]]
) -> None:
    raw, values = stream
    assert parse([raw]) == values
    assert parse(data.draw(chunkings(raw))) == values


@given(st.data(), st.binary(max_size=64))
def test_chunkings_cut_without_losing_or_empty_chunks(data: st.DataObject, raw: bytes) -> None:
    chunks = data.draw(chunkings(raw))
    assert b"".join(chunks) == raw
    assert all(chunks)


def test_chunkings_reach_both_extremes() -> None:
    raw = b"+OK\r\n$3\r\nabc\r\n"
    assert find(chunkings(raw), lambda chunks: len(chunks) == len(raw)) == [
        raw[i : i + 1] for i in range(len(raw))
    ]
    assert find(chunkings(raw), lambda chunks: len(chunks) == 1) == [raw]
    assert find(chunkings(b""), lambda chunks: True) == []


def test_a_connection_fed_chunkings_of_the_handshake_gets_ready() -> None:
    @given(chunkings(b'+HI {"v":2}\r\n+OK\r\n'))
    def check(chunks: list[bytes]) -> None:
        connection = Connection()
        for chunk in chunks:
            connection.receive_data(chunk)  # an empty chunk would be taken for EOF
        assert connection.next_event() == Ready(protocol_version=2)

    check()


# -- run_inline ------------------------------------------------------------------------------


def test_run_inline_returns_what_the_handler_returns() -> None:
    def add(a: int, b: int) -> int:
        return a + b

    assert run_inline(add, Job(jid=JID, jobtype="Add", args=[2, 3])) == 5


def test_run_inline_gives_an_async_handler_s_coroutine_to_await() -> None:
    async def add(a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a + b

    assert asyncio.run(run_inline(add, Job(jid=JID, jobtype="Add", args=[2, 3]))) == 5


def test_a_handler_relying_on_a_tuple_fails_inline_as_in_production() -> None:
    visited: set[tuple[int, int]] = set()

    def visit(point: tuple[int, int]) -> None:
        visited.add(point)  # a list arrives: unhashable, a TypeError

    job = Job(jid=JID, jobtype="Visit", args=[(1, 2)])
    visit(*job.args)  # called directly, it passes
    assert visited == {(1, 2)}
    with pytest.raises(TypeError, match="unhashable type: 'list'"):
        run_inline(visit, job)


def test_a_datetime_argument_fails_inline_as_the_push_would() -> None:
    def remind(when: datetime) -> str:
        return when.isoformat()

    job = Job(jid=JID, jobtype="Remind", args=[datetime(2026, 1, 1, tzinfo=UTC)])
    with pytest.raises(LocalProtocolError, match="JSON"):
        run_inline(remind, job)
    with pytest.raises(LocalProtocolError, match="JSON"):
        Push(job=job)  # the same error a push raises


def test_numbers_come_back_as_the_server_stores_them() -> None:
    job = Job(jid=JID, jobtype="T", args=[2.0, 2**53 + 1, 1e22, -0.0, 0.5, {"b": 1, "a": 2}])
    args = run_inline(lambda *args: args, job)
    assert identical(list(args), [2, 2**53, 1e22, 0, 0.5, {"a": 2, "b": 1}])


def test_a_number_too_big_for_the_server_fails_inline() -> None:
    with pytest.raises(LocalProtocolError, match="float64"):
        as_fetched(Job(jid=JID, jobtype="T", args=[10**400]))


def test_handler_exceptions_propagate() -> None:
    def broken() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing"):
        run_inline(broken, Job(jid=JID, jobtype="Broken"))


def test_importing_without_hypothesis_names_the_extra() -> None:
    code = "import sys; sys.modules['hypothesis'] = None; import faktory_core.testing"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "ImportError" in result.stderr
    assert "pip install 'faktory-sansio[testing]'" in result.stderr


def test_the_core_imports_without_hypothesis() -> None:
    code = "import sys; sys.modules['hypothesis'] = None; import faktory_core; print('ok')"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "ok", result.stderr


# -- against the real server -----------------------------------------------------------------

QUEUE = "testing-as-fetched"

#: Args that do not survive unchanged: big and whole numbers, unsorted keys, tuples.
awkward_values = st.recursive(
    st.one_of(
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        json_values(max_leaves=3),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=4), inner, max_size=3),
    ),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def client() -> Iterator[BlockingClient]:
    # A server of its own: pushing an explicit retry changes v1.9.4's default retry for every
    # later job pushed without one (see below), which other tests must not inherit.
    with FaktoryServer().start() as server, BlockingClient(server.url) as client:
        yield client


@pytest.mark.server
@settings(max_examples=60, deadline=None)
@given(jobs(args=st.lists(awkward_values, max_size=4)))
def test_as_fetched_matches_what_the_real_server_hands_back(
    client: BlockingClient, job: Job
) -> None:
    job = attrs.evolve(job, queue=QUEUE, at=None)  # a scheduled job would not be fetched now
    assert client.ask(Push(job=job)) == OK(command=Push(job=job))
    fetched = client.ask(Fetch(queues=[QUEUE]))
    assert isinstance(fetched, Fetched)
    assert fetched.job is not None
    assert client.ask(Ack(jid=job.jid)) == OK(command=Ack(jid=job.jid))
    expected = as_fetched(job)
    assert identical(expected.args, fetched.job.args)
    assert identical(expected.custom, fetched.job.custom)
    assert (expected.reserve_for, expected.backtrace) == (
        fetched.job.reserve_for,
        fetched.job.backtrace,
    )
    if job.retry is not None:
        # Without one, v1.9.4 applies the last retry any client pushed: its default is a
        # global the JSON decoder writes through (client.NewJob's Retry: &RetryPolicyDefault).
        assert expected.retry == fetched.job.retry
