"""Poison jobs against a real server: a job nested too deeply to decode, or larger than
``max_reply_size``, is FAILed at once as ``InvalidJob`` by its jid, never left reserved.

The server accepts JSON nested up to 10,000 levels; Python's decoder gives up near 1,000 on
3.11, 1,500 on 3.12 and just short of 10,000 on 3.13. The poison jobs here are as deep as the
server takes.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from typing import Any, Final

import pytest

from faktory_adapters import Jobs, thread
from faktory_adapters import asyncio as aio
from faktory_adapters import gevent as gevent_adapter
from faktory_core import NEED_DATA, ClientInfo, Command, Connection, Event, Failure, Job, ServerURL
from faktory_core._resp import DEFAULT_MAX_REPLY_SIZE
from faktory_core.commands import Fail, Fetch, Info
from faktory_core.events import OK, InfoReply, InvalidJobFetched, Ready
from tests.support.server import FaktoryServer

pytestmark = pytest.mark.server

MODULES: Final = {"asyncio": aio, "thread": thread, "gevent": gevent_adapter}
#: The deepest JSON document the server accepts (Go's encoding/json limit).
DEPTH: Final = 10_000


@pytest.fixture
def queue() -> str:
    return f"poison-{uuid.uuid4().hex[:10]}"


def deep_json(shape: str) -> str:
    """Lists (for args) or objects (for custom) nested so deep that the job is DEPTH levels.

    Written by hand: no json module takes this depth on every Python (3.12 and later bound
    the C recursion whatever ``sys.setrecursionlimit`` says), and our encoder refuses it too,
    as it should.
    """
    if shape == "args":  # the job, then DEPTH - 1 lists
        return "[" * (DEPTH - 1) + "]" * (DEPTH - 1)
    # the job, custom, then DEPTH - 2 objects
    return '{"deep":' + '{"a":' * (DEPTH - 3) + "{}" + "}" * (DEPTH - 3) + "}"


def push_deep(server: FaktoryServer, queue: str, shape: str) -> str:
    """Push a job DEPTH levels deep in its args or its custom; retry=1 keeps its failure."""
    jid = uuid.uuid4().hex
    deep = deep_json(shape)
    args, custom = (deep, "{}") if shape == "args" else ("[]", deep)
    job = (
        f'{{"jid":"{jid}","jobtype":"Poison","queue":"{queue}","retry":1,"reserve_for":60,'
        f'"args":{args},"custom":{custom}}}'
    )
    core = CoreClient(server.url)
    try:
        assert core.ask_raw(f"PUSH {job}\r\n".encode()) == b"+OK\r\n"
    finally:
        core.close()
    return jid


def working(client: thread.Client) -> int:
    return int(client.info()["faktory"]["sets"]["working"])


def failure_of(client: thread.Client, queue: str, jid: str, shape: str) -> Failure | None:
    """The failure recorded for ``jid`` if it sits in the retry set (the queue is empty).

    The job is requeued and fetched back; fetch() cannot build it either, so the failure is
    read from the InvalidJobError's payload.
    """
    assert client.info()["faktory"]["queues"].get(queue, 0) == 0
    client.mutate("requeue", "retries", jids=[jid])
    if client.info()["faktory"]["queues"].get(queue, 0) == 0:
        return None
    with pytest.raises(thread.InvalidJobError) as raised:
        client.fetch(queue)
    assert raised.value.jid == jid
    client.ack(jid)
    # The server writes the deep part back as it was sent: cut it out to decode the rest.
    shallow = raised.value.payload.decode().replace(deep_json(shape), "0")
    return Failure.from_wire(json.loads(shallow)["failure"])


def drain(adapter: str, server: FaktoryServer, queue: str, jobs: Jobs) -> int:
    worker = MODULES[adapter].Worker(
        url=server.url, queues=[queue], concurrency=2, shutdown_timeout=5.0
    )
    worker.include(jobs)
    if adapter == "asyncio":
        return asyncio.run(worker.drain())  # type: ignore[no-any-return]
    return worker.drain()  # type: ignore[no-any-return]


@pytest.mark.parametrize("shape", ["args", "custom"])
def test_a_job_too_deep_to_decode_is_failed_at_once_as_invalid(
    faktory_server: FaktoryServer, client: thread.Client, queue: str, adapter: str, shape: str
) -> None:
    ran: list[str] = []
    jobs = Jobs()

    @jobs.register("Poison")
    def poison(*args: object) -> None:
        ran.append("poison")

    @jobs.register("After")
    def after() -> None:
        ran.append("after")

    jid = push_deep(faktory_server, queue, shape)
    client.push("After", queue=queue)
    assert drain(adapter, faktory_server, queue, jobs) == 0
    assert ran == ["after"]  # the worker went on after the poison job
    assert working(client) == 0  # nothing left reserved
    failure = failure_of(client, queue, jid, shape)
    assert failure is not None, "the poison job was not FAILed"
    assert failure.errtype == "InvalidJob"
    assert failure.message is not None
    assert "nested too deeply" in failure.message
    assert failure.retry_count == 0  # failed once, by the worker, not by a reservation expiry


def test_client_fetch_of_a_job_too_deep_raises_invalid_job_error_with_its_jid(
    faktory_server: FaktoryServer, client: thread.Client, queue: str
) -> None:
    jid = push_deep(faktory_server, queue, "args")
    with pytest.raises(thread.InvalidJobError, match="nested too deeply") as raised:
        client.fetch(queue)
    assert raised.value.jid == jid
    client.fail(jid, "InvalidJob", str(raised.value))
    assert working(client) == 0


# -- larger than max_reply_size: the core over a socket (Workers do not take the setting) ---


class CoreClient:
    """A core Connection with a small max_reply_size over a blocking socket."""

    def __init__(self, url: str, max_reply_size: int = DEFAULT_MAX_REPLY_SIZE) -> None:
        address = ServerURL.parse(url)
        self.connection = Connection(ClientInfo(), max_reply_size=max_reply_size)
        self.sock = socket.create_connection((address.host, address.port), timeout=10)
        assert isinstance(self._next_event(), Ready)

    def ask(self, command: Command) -> Event:
        self.connection.send(command)
        return self._next_event()

    def ask_raw(self, line: bytes) -> bytes:
        """Send a command line the core would refuse to build; read its one-line reply."""
        self.sock.sendall(line)
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = self.sock.recv(65536)
            assert chunk, f"the server closed the connection after {reply!r}"
            reply += chunk
        return reply

    def _next_event(self) -> Event:
        while True:
            event = self.connection.next_event()
            if event is not NEED_DATA:
                assert isinstance(event, Event)
                return event
            self.sock.sendall(self.connection.data_to_send())
            self.connection.receive_data(self.sock.recv(65536))

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("where", ["args", "custom"])
def test_a_job_over_max_reply_size_is_reported_with_its_jid_and_the_link_stays_usable(
    faktory_server: FaktoryServer, client: thread.Client, queue: str, where: str
) -> None:
    # 1.9.4 writes "custom" before "jid": a large custom puts the jid far into the reply.
    big = "x" * 300_000
    fields: dict[str, Any] = {"queue": queue, "retry": 1, "reserve_for": 60}
    if where == "args":
        fields["args"] = [big]
    else:
        fields["custom"] = {"blob": big}
    jid = client.push(client.job("Huge", **fields))
    small = 64 * 1024
    core = CoreClient(faktory_server.url, max_reply_size=small)
    try:
        fetch = Fetch(queues=(queue,))
        event = core.ask(fetch)
        assert isinstance(event, InvalidJobFetched)
        assert event.jid == jid
        assert event.reason.startswith("the job is ")
        assert event.reason.endswith(f" bytes, larger than max_reply_size {small}")
        size = int(event.reason.split()[3])
        assert size > 300_000
        # The stream is still in step: the FAIL and an INFO go through on the same link.
        fail = Fail(jid=jid, errtype="InvalidJob", message=event.reason)
        assert core.ask(fail) == OK(command=fail)
        assert isinstance(core.ask(Info()), InfoReply)
    finally:
        core.close()
    assert working(client) == 0
    client.mutate("requeue", "retries", jids=[jid])
    job = client.fetch(queue)  # the default max_reply_size holds it
    assert isinstance(job, Job)
    assert job.failure is not None
    assert (job.failure.errtype, job.failure.retry_count) == ("InvalidJob", 0)
    assert "larger than max_reply_size" in (job.failure.message or "")
    client.ack(jid)
