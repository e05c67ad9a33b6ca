"""Every client command, unchanged against every adapter's Client and a real server.

The asyncio Client is driven through a loop on a thread of its own (``SyncClient``), so one
synchronous test body serves every adapter.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from faktory_adapters import asyncio as aio
from faktory_adapters import thread
from faktory_core import Job
from tests.support.adapters import ADAPTERS, SyncClient
from tests.support.server import FaktoryServer

pytestmark = pytest.mark.server


@pytest.fixture(params=ADAPTERS)
def client(request: pytest.FixtureRequest, faktory_server: FaktoryServer) -> Iterator[Any]:
    with SyncClient(request.param, faktory_server.url) as synced:
        yield synced


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_push_fetch_ack(client: Any) -> None:
    queue = unique("q")
    jid = client.push("Probe", [1, "two"], queue=queue, retry=3, custom={"k": "v"})
    job = client.fetch(queue)
    assert isinstance(job, Job)
    assert (job.jid, job.args, job.retry, job.custom) == (jid, [1, "two"], 3, {"k": "v"})
    client.ack(jid)
    assert client.info()["faktory"]["queues"][queue] == 0


def test_push_bulk_and_a_prebuilt_job(client: Any) -> None:
    queue = unique("q")
    assert client.push_bulk([client.job("Probe", [n], queue=queue) for n in range(3)]) == {}
    job = Job(jid=unique("jid"), jobtype="Probe", args=[], queue=queue)
    assert client.push(job) == job.jid
    assert client.info()["faktory"]["queues"][queue] == 4
    with pytest.raises(TypeError):
        client.push(job, [1])  # a Job carries its own args
    client.remove_queues(queue)


def test_fail_then_requeue_shows_the_failure(client: Any) -> None:
    queue = unique("q")
    jid = client.push("Probe", queue=queue)
    assert client.fetch(queue).jid == jid
    client.fail(jid, "ValueError", "bad value", ["a.py:1"])
    client.mutate("requeue", "retries", jids=[jid])
    job = client.fetch(queue)
    assert job.failure.errtype == "ValueError"
    assert job.failure.message == "bad value"
    assert job.failure.backtrace == ("a.py:1",)
    client.ack(jid)


def test_server_errors_raise_and_the_client_stays_usable(client: Any) -> None:
    assert aio.ServerReplyError is thread.ServerReplyError  # one error class for all adapters
    with pytest.raises(thread.ServerReplyError) as refused:
        client.fail(unique("nobody"), "E", "m")
    assert refused.value.code == "ERR"
    assert refused.value.message.startswith("Job not found")
    callback = Job(jid=unique("callback"), jobtype="Done", args=[])
    for call, args, kwargs in [
        (client.batch_new, (), {"success": callback, "description": "d"}),
        (client.batch_open, ("b-123456",), {}),
        (client.batch_commit, ("b-123456",), {}),
        (client.batch_status, ("b-123456",), {}),
        (client.track_get, ("jid-12345678",), {}),
        (client.track_set, ("jid-12345678",), {"percent": 50, "description": "half"}),
    ]:
        with pytest.raises(Exception, match="Enterprise"):
            call(*args, **kwargs)
    assert client.info()["server"]["faktory_version"] == "1.9.4"


def test_queues_pause_resume_latency_remove_and_flush(client: Any) -> None:
    queue = unique("q")
    client.push("Probe", queue=queue)
    client.pause_queues(queue)
    client.resume_queues(queue)
    assert client.queue_latency(queue)[queue] >= 0.0
    client.remove_queues(queue)
    assert queue not in client.info()["faktory"]["queues"]
    other = unique("q")
    client.push("Probe", queue=other)
    client.flush()
    assert client.info()["faktory"]["queues"].get(other, 0) == 0


def test_mutate_with_a_space_in_the_pattern(client: Any) -> None:
    queue, jobtype = unique("q"), f"Send Mail {unique('t')}"
    jid = client.push(jobtype, queue=queue)
    client.fetch(queue)
    client.fail(jid, "E", "m")
    client.mutate("kill", "retries", jobtype=jobtype)
    client.mutate("requeue", "dead", pattern=f"*{jobtype}*")
    assert client.fetch(queue).jid == jid
    client.ack(jid)


def test_the_thread_client_is_shared_between_threads(faktory_server: FaktoryServer) -> None:
    queue = unique("q")
    with thread.Client(faktory_server.url, pool_size=3) as shared:
        threads = [
            threading.Thread(target=lambda: [shared.push("Probe", queue=queue) for _ in range(10)])
            for _ in range(5)
        ]
        for worker in threads:
            worker.start()
        for worker in threads:
            worker.join(30)
        assert shared.info()["faktory"]["queues"][queue] == 50
        shared.remove_queues(queue)


def test_the_thread_client_fetch_waits_out_the_server(faktory_server: FaktoryServer) -> None:
    with thread.Client(faktory_server.url, timeout=0.5) as blocking:
        assert blocking.fetch(unique("empty")) is None  # not a timeout: the server's null


def test_a_wrong_password_is_an_authentication_error(
    faktory_password_server: FaktoryServer,
) -> None:
    url = f"tcp://:wrong@127.0.0.1:{faktory_password_server.port}"
    with thread.Client(url) as blocking, pytest.raises(thread.AuthenticationError) as refused:
        blocking.info()
    assert "wrong" not in str(refused.value)
