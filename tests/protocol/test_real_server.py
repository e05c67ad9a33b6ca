"""Every command of faktory_core, byte for byte against a real Faktory v1.9.4.

Each test isolates itself with its own queue names; none depends on another's leftovers.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from faktory_core import ArgumentError, ClientInfo, Command, Event, Job
from faktory_core.commands import (
    ALL_QUEUES,
    DEFAULT_RETRY,
    Ack,
    BatchCommit,
    BatchNew,
    BatchOpen,
    BatchStatus,
    Beat,
    Fail,
    Fetch,
    Flush,
    Hello,
    Info,
    Mutate,
    Push,
    PushBulk,
    QueueLatency,
    QueuePause,
    QueueRemove,
    QueueResume,
    TrackGet,
    TrackSet,
    WorkerState,
)
from faktory_core.events import (
    OK,
    BeatReply,
    BulkPushed,
    ConnectionClosed,
    Fetched,
    InfoReply,
    LatencyReply,
    Ready,
    ServerError,
)
from tests.support.blocking import BlockingClient
from tests.support.server import FaktoryServer

pytestmark = pytest.mark.server


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def new_job(queue: str, jobtype: str = "Probe", **fields: object) -> Job:
    return Job.create(jobtype, [1, "two", {"three": 3.5}], jid_factory=lambda: unique("jid"),
                      queue=queue, **fields)  # fmt: skip


@pytest.fixture
def client(faktory_server: FaktoryServer) -> Iterator[BlockingClient]:
    with BlockingClient(faktory_server.url) as producer:
        yield producer


@pytest.fixture
def worker(faktory_server: FaktoryServer) -> Iterator[BlockingClient]:
    info = ClientInfo(wid=unique("wid"), hostname="test-host", pid=4242, labels=("pytest",))
    with BlockingClient(faktory_server.url, info) as consumer:
        yield consumer


def ok(event: Event, command: Command) -> None:
    assert event == OK(command=command)


def fetch_one(client: BlockingClient, *queues: str) -> Job:
    event = client.ask(Fetch(queues=queues))
    assert isinstance(event, Fetched)
    assert event.job is not None
    return event.job


def queue_sizes(client: BlockingClient) -> dict[str, int]:
    event = client.ask(Info())
    assert isinstance(event, InfoReply)
    sizes: dict[str, int] = event.info["faktory"]["queues"]
    return sizes


def test_handshake_as_producer_and_as_worker(
    client: BlockingClient, worker: BlockingClient
) -> None:
    assert client.handshake == Ready(protocol_version=2)
    assert worker.handshake == Ready(protocol_version=2)


def test_push_fetch_ack_round_trip(client: BlockingClient, worker: BlockingClient) -> None:
    queue = unique("q")
    at = datetime(2020, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)  # in the past: enqueued at once
    job = new_job(queue, retry=3, reserve_for=120, backtrace=7, custom={"trace": "t-1"}, at=at)
    push = Push(job=job)
    ok(client.ask(push), push)
    assert queue_sizes(client)[queue] == 1

    fetched = fetch_one(worker, queue)
    assert (fetched.jid, fetched.jobtype, fetched.args, fetched.queue) == (
        job.jid, job.jobtype, job.args, queue)  # fmt: skip
    assert (fetched.retry, fetched.reserve_for, fetched.backtrace) == (3, 120, 7)
    assert fetched.custom == {"trace": "t-1"}
    assert fetched.at == at
    assert fetched.created_at
    assert fetched.enqueued_at
    assert fetched.failure is None

    ack = Ack(jid=fetched.jid)
    ok(worker.ask(ack), ack)
    assert queue_sizes(client)[queue] == 0


def test_a_job_without_retry_keeps_the_default_whatever_others_pushed(
    client: BlockingClient, worker: BlockingClient
) -> None:
    # Faktory 1.9.4 gives a job pushed without "retry" the last retry any client pushed: we
    # always send it, so another producer's choice cannot reach our jobs.
    queue = unique("q")
    for fields in ({"retry": 0}, {}, {"retry": -1}, {}):
        push = Push(job=new_job(queue, **fields))
        ok(client.ask(push), push)
        fetched = fetch_one(worker, queue)
        assert fetched.retry == fields.get("retry", DEFAULT_RETRY)
        ok(worker.ask(Ack(jid=fetched.jid)), Ack(jid=fetched.jid))


def test_pipelined_push_fetch_ack_in_one_write(worker: BlockingClient) -> None:
    queue = unique("q")
    job = new_job(queue)
    push, fetch, ack = Push(job=job), Fetch(queues=(queue,)), Ack(jid=job.jid)
    pushed, fetched, acked = worker.request(push, fetch, ack)
    ok(pushed, push)
    assert isinstance(fetched, Fetched)
    assert fetched.job is not None
    assert fetched.job.jid == job.jid
    ok(acked, ack)


def test_fetch_with_nothing_queued_returns_null_after_the_server_wait(
    worker: BlockingClient,
) -> None:
    fetch = Fetch(queues=(unique("empty"), unique("empty")))
    assert worker.ask(fetch) == Fetched(command=fetch, job=None)


def test_fetch_serves_queues_in_the_order_given(worker: BlockingClient) -> None:
    low, high = unique("low"), unique("high")
    for queue in (low, high):
        worker.ask(Push(job=new_job(queue)))
    first, second = fetch_one(worker, high, low), fetch_one(worker, high, low)
    assert (first.queue, second.queue) == (high, low)
    for job in (first, second):
        ok(worker.ask(Ack(jid=job.jid)), Ack(jid=job.jid))


def test_push_bulk_reports_no_failures(client: BlockingClient) -> None:
    queue = unique("q")
    jobs = [new_job(queue) for _ in range(3)]
    bulk = PushBulk(jobs=jobs)
    assert client.ask(bulk) == BulkPushed(command=bulk, errors={})
    assert queue_sizes(client)[queue] == 3


def test_fail_records_errtype_message_and_backtrace(
    client: BlockingClient, worker: BlockingClient
) -> None:
    queue = unique("q")
    job = new_job(queue, retry=5)
    client.ask(Push(job=job))
    fetch_one(worker, queue)
    fail = Fail(jid=job.jid, errtype="ValueError", message="bad value: é", backtrace=["a.py:1"])
    ok(worker.ask(fail), fail)

    requeue = Mutate(operation="requeue", target="retries", jids=[job.jid])
    ok(client.ask(requeue), requeue)
    retried = fetch_one(worker, queue)
    assert retried.jid == job.jid
    assert retried.failure is not None
    assert (retried.failure.errtype, retried.failure.message) == ("ValueError", "bad value: é")
    assert retried.failure.backtrace == ("a.py:1",)
    assert (retried.failure.retry_count, retried.failure.remaining) == (0, 5)
    worker.ask(Ack(jid=job.jid))


def test_fail_of_an_unknown_jid_is_a_server_error(worker: BlockingClient) -> None:
    fail = Fail(jid=unique("nobody"), errtype="E", message="m")
    event = worker.ask(fail)
    assert isinstance(event, ServerError)
    assert (event.command, event.code) == (fail, "ERR")
    assert event.message.startswith("Job not found")
    assert isinstance(worker.ask(Info()), InfoReply)  # still usable


def test_beat_reports_running_then_the_state_we_reported(worker: BlockingClient) -> None:
    wid = worker.connection.client.wid
    assert wid is not None
    beat = Beat(wid=wid, rss_kb=1234)
    assert worker.ask(beat) == BeatReply(command=beat, state=WorkerState.RUNNING)
    quiet = Beat(wid=wid, current_state=WorkerState.QUIET)
    assert worker.ask(quiet) == BeatReply(command=quiet, state=WorkerState.QUIET)
    again = Beat(wid=wid)
    assert worker.ask(again) == BeatReply(command=again, state=WorkerState.QUIET)
    stop = Beat(wid=wid, current_state="terminate")
    assert worker.ask(stop) == BeatReply(command=stop, state=WorkerState.TERMINATE)


def test_beat_for_an_unknown_worker_is_a_server_error(client: BlockingClient) -> None:
    event = client.ask(Beat(wid=unique("ghost")))
    assert isinstance(event, ServerError)
    assert event.code == "ERR"
    assert event.message.startswith("unknown worker")


def test_info_describes_the_server(client: BlockingClient) -> None:
    event = client.ask(Info())
    assert isinstance(event, InfoReply)
    assert event.info["server"]["faktory_version"] == "1.9.4"
    assert set(event.info["faktory"]["sets"]) >= {"dead", "retries", "scheduled", "working"}


def test_scheduled_job_keeps_its_time(client: BlockingClient, worker: BlockingClient) -> None:
    queue = unique("q")
    at = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=250000)
    job = new_job(queue, at=at)
    client.ask(Push(job=job))
    assert queue not in queue_sizes(client)  # scheduled, not enqueued
    client.ask(Mutate(operation="requeue", target="scheduled", jids=[job.jid]))
    fetched = fetch_one(worker, queue)
    assert (fetched.jid, fetched.at) == (job.jid, at)
    worker.ask(Ack(jid=job.jid))


def raw_reply(server: FaktoryServer, line: bytes) -> bytes:
    """The server's reply line to ``line``, sent as is by a producer (no checks of ours)."""
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        replies = sock.makefile("rb")
        assert replies.readline().startswith(b"+HI ")
        sock.sendall(b'HELLO {"v":2}\r\n')
        assert replies.readline() == b"+OK\r\n"
        sock.sendall(line + b"\r\n")
        return replies.readline()


def test_an_at_whose_offset_has_seconds_is_scheduled_at_the_same_instant(
    faktory_server: FaktoryServer, client: BlockingClient, worker: BlockingClient
) -> None:
    queue = unique("q")
    zone = timezone(timedelta(hours=5, minutes=30, seconds=15))
    at = (datetime.now(UTC) + timedelta(hours=1)).astimezone(zone)
    # isoformat writes the offset as "+05:30:15", which the server refuses...
    raw = {"jid": unique("jid"), "jobtype": "Probe", "args": [], "queue": queue}
    refused = raw_reply(
        faktory_server, b"PUSH " + json.dumps({**raw, "at": at.isoformat()}).encode()
    )
    assert refused.startswith(b"-ERR invalid timestamp for 'at'")
    # ...so the job sends the same instant in UTC.
    job = new_job(queue, at=at)
    push = Push(job=job)
    ok(client.ask(push), push)
    assert queue not in queue_sizes(client)  # scheduled, not enqueued
    requeue = Mutate(operation="requeue", target="scheduled", jids=[job.jid])
    ok(client.ask(requeue), requeue)  # scheduled at the instant: requeued now to read it back
    fetched = fetch_one(worker, queue)
    assert fetched.jid == job.jid
    assert fetched.at == at  # the instant asked for, to the microsecond
    worker.ask(Ack(jid=job.jid))


def working_set(server: FaktoryServer) -> list[dict[str, Any]]:
    """The server's reservations, read from its Redis (Faktory 1.9.4 keeps them in the sorted
    set "working"): what FETCH reserved, and until when."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(server.directory / "db" / "redis.sock"))
        sock.sendall(b"*4\r\n$6\r\nZRANGE\r\n$7\r\nworking\r\n$1\r\n0\r\n$2\r\n-1\r\n")
        replies = sock.makefile("rb")
        count = int(replies.readline()[1:])
        entries = []
        for _ in range(count):
            size = int(replies.readline()[1:])
            entries.append(json.loads(replies.read(size + 2)))
        return entries


def test_the_server_raises_a_reserve_for_under_60_to_60(
    faktory_server: FaktoryServer, client: BlockingClient, worker: BlockingClient
) -> None:
    # Why Job refuses reserve_for < 60 (MIN_RESERVE_FOR): the server would keep it 60 s.
    with pytest.raises(ArgumentError, match="it would raise less than 60 to 60"):
        new_job(unique("q"), reserve_for=10)
    queue = unique("q")
    # Another client may push one: a fetched job with reserve_for 10 is still a valid job.
    pushed = Job.from_wire({"jid": unique("jid"), "jobtype": "Probe", "args": [], "queue": queue,
                            "reserve_for": 10})  # fmt: skip
    ok(client.ask(Push(job=pushed)), Push(job=pushed))
    fetched = fetch_one(worker, queue)
    assert (fetched.jid, fetched.reserve_for) == (pushed.jid, 10)
    (reservation,) = [r for r in working_set(faktory_server) if r["job"]["jid"] == pushed.jid]
    reserved = datetime.fromisoformat(reservation["reserved_at"])
    expires = datetime.fromisoformat(reservation["expires_at"])
    assert expires - reserved == timedelta(seconds=60)
    worker.ask(Ack(jid=fetched.jid))


def test_mutate_filters_with_spaces_kill_and_discard(
    client: BlockingClient, worker: BlockingClient
) -> None:
    queue = unique("q")
    jobtype = f"Send Email {unique('t')}"  # a space: MUTATE must escape it
    job = new_job(queue, jobtype=jobtype)
    client.ask(Push(job=job))
    fetch_one(worker, queue)
    worker.ask(Fail(jid=job.jid, errtype="E", message="m"))

    kill = Mutate(operation="kill", target="retries", jobtype=jobtype)
    ok(client.ask(kill), kill)  # "invalid format" if the space went out raw
    pattern = Mutate(operation="requeue", target="dead", pattern=f"*{jobtype}*")
    ok(client.ask(pattern), pattern)
    assert fetch_one(worker, queue).jid == job.jid  # so kill moved it to dead
    worker.ask(Fail(jid=job.jid, errtype="E", message="again"))

    discard = Mutate(operation="discard", target="retries", jids=[job.jid])
    ok(client.ask(discard), discard)
    requeue = Mutate(operation="requeue", target="retries", jids=[job.jid])
    ok(client.ask(requeue), requeue)
    assert queue_sizes(client).get(queue, 0) == 0  # nothing left to requeue


def test_queue_pause_resume_latency_remove(client: BlockingClient) -> None:
    queue = unique("q")
    client.ask(Push(job=new_job(queue)))
    pause = QueuePause(queues=(queue,))
    ok(client.ask(pause), pause)
    assert client.ask(Fetch(queues=(queue,))) == Fetched(command=Fetch(queues=(queue,)), job=None)
    resume = QueueResume(queues=(queue,))
    ok(client.ask(resume), resume)

    latency = QueueLatency(queues=(queue, unique("unknown")))
    event = client.ask(latency)
    assert isinstance(event, LatencyReply)
    assert event.latencies[queue] >= 0.0
    assert event.latencies[latency.queues[1]] == 0.0

    remove = QueueRemove(queues=(queue,))
    ok(client.ask(remove), remove)
    assert queue not in queue_sizes(client)


def test_queue_pause_and_resume_of_every_queue(client: BlockingClient) -> None:
    pause, resume = QueuePause(queues=ALL_QUEUES), QueueResume(queues=ALL_QUEUES)
    ok(client.ask(pause), pause)
    ok(client.ask(resume), resume)


@pytest.mark.parametrize(
    ("command", "subsystem"),
    [
        (BatchNew(success=Job(jid="callback-1", jobtype="Done"), description="d"), "batch"),
        (BatchOpen(bid="b-123456"), "batch"),
        (BatchCommit(bid="b-123456"), "batch"),
        (BatchStatus(bid="b-123456"), "batch"),
        (TrackGet(jid="jid-12345678"), "tracking"),
        (TrackSet(jid="jid-12345678", percent=50, description="half way"), "tracking"),
    ],
)
def test_enterprise_commands_are_clean_errors_on_the_open_source_server(
    client: BlockingClient, command: Command, subsystem: str
) -> None:
    event = client.ask(command)
    assert event == ServerError(
        command=command,
        code="ERR",
        message=f"{subsystem} subsystem is only available in Faktory Enterprise",
    )
    assert isinstance(client.ask(Info()), InfoReply)  # the connection is still usable


def test_end_gets_no_reply_and_the_server_closes(client: BlockingClient) -> None:
    assert client.end() == ConnectionClosed(unanswered=())


def test_flush_deletes_every_queue(client: BlockingClient) -> None:
    queue = unique("q")
    client.ask(Push(job=new_job(queue)))
    assert queue in queue_sizes(client)
    ok(client.ask(Flush()), Flush())
    assert queue_sizes(client).get(queue, 0) == 0


def test_password_handshake(faktory_password_server: FaktoryServer) -> None:
    with BlockingClient(faktory_password_server.url, ClientInfo(wid=unique("wid"))) as client:
        assert client.handshake == Ready(protocol_version=2)
        assert isinstance(client.ask(Info()), InfoReply)


@pytest.mark.parametrize("password", ["wrong password", None])
def test_wrong_or_missing_password_is_refused(
    faktory_password_server: FaktoryServer, password: str | None
) -> None:
    url = f"tcp://127.0.0.1:{faktory_password_server.port}"
    with BlockingClient(url, password=password) as client:
        event = client.handshake
        assert isinstance(event, ServerError)
        assert isinstance(event.command, Hello)
        assert (event.code, event.message) == ("ERR", "Invalid password")
        client.connection.receive_data(client.sock.recv(100))  # the server closed: b""
        assert client.connection.next_event() == ConnectionClosed(unanswered=())
