"""A Client's observers hear every push in every adapter, before and after: they may change
the job pushed, and learn how its push ended (pushed, refused, or not sent); one that raises
costs no push."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from faktory_adapters import ClientObserver, PushOutcome
from faktory_core import Job
from tests.support.adapters import ADAPTERS, SyncClient
from tests.support.server import FaktoryServer, closed_port

pytestmark = pytest.mark.server


class Stamper(ClientObserver):
    """Adds ``{"stamp": n}`` to each job's custom, and records each push's end."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.ended: list[tuple[str, PushOutcome, str | None, Any]] = []

    def pushing(self, job: Job) -> Job:
        self.seen.append(job.jid)
        return attrs.evolve(job, custom={**(job.custom or {}), "stamp": len(self.seen)})

    def pushed(self, job: Job, outcome: PushOutcome, error: str | None) -> None:
        self.ended.append((job.jid, outcome, error, (job.custom or {}).get("stamp")))


class Refusable(ClientObserver):
    """Makes jobs of args ``["refuse me"]`` ones the server refuses, past the Job's own
    check (reserved for more than a day): every real refusal is of a job the core lets by."""

    def pushing(self, job: Job) -> Job:
        if job.args == ["refuse me"]:
            object.__setattr__(job, "reserve_for", 100_000)
        return job


class Broken(ClientObserver):
    def pushing(self, job: Job) -> Job:
        raise RuntimeError("the tracer is down")

    def pushed(self, job: Job, outcome: PushOutcome, error: str | None) -> None:
        raise RuntimeError("the metrics are down")


@pytest.fixture(params=ADAPTERS)
def client(request: pytest.FixtureRequest, faktory_server: FaktoryServer) -> Iterator[Any]:
    with SyncClient(request.param, faktory_server.url) as synced:
        yield synced


def queue_name() -> str:
    return f"client-observe-{uuid.uuid4().hex[:10]}"


def test_observers_change_jobs_and_hear_every_push(client: Any) -> None:
    stamper = client.observe(Stamper())
    client.observe(Refusable())
    queue = queue_name()
    jid = client.push("Stamped", [1], queue=queue)
    jobs = [client.job("Stamped", [n], queue=queue) for n in range(3)]
    refused = client.job("Stamped", ["refuse me"], queue=queue)
    assert client.push_bulk([*jobs, refused]).keys() == {refused.jid}
    assert [jid for jid, *_ in stamper.ended] == [jid, *(job.jid for job in jobs), refused.jid]
    assert [(outcome, stamp) for _, outcome, _, stamp in stamper.ended] == [
        (PushOutcome.PUSHED, 1),
        (PushOutcome.PUSHED, 2),
        (PushOutcome.PUSHED, 3),
        (PushOutcome.PUSHED, 4),
        (PushOutcome.REFUSED, 5),
    ]
    assert "reserved for more than one day" in (stamper.ended[-1][2] or "")
    # The server has the jobs as the observer changed them.
    fetched = [client.fetch(queue) for _ in range(4)]
    assert sorted((job.custom or {})["stamp"] for job in fetched) == [1, 2, 3, 4]
    for job in fetched:
        client.ack(job.jid)


def test_a_refused_push_is_told_and_raised(client: Any) -> None:
    stamper = client.observe(Stamper())
    client.observe(Refusable())
    job = client.job("Stamped", ["refuse me"], queue=queue_name())
    with pytest.raises(Exception, match="reserved for more than one day"):
        client.push(job)
    [(jid, outcome, error, _)] = stamper.ended
    assert (jid, outcome) == (job.jid, PushOutcome.REFUSED)
    assert error is not None
    assert error.startswith("ServerReplyError: ERR jobs cannot be reserved")


def test_a_push_to_no_server_is_not_sent(faktory_server: FaktoryServer) -> None:
    with SyncClient("thread", f"tcp://127.0.0.1:{closed_port()}") as client:
        stamper = client.observe(Stamper())
        with pytest.raises(ConnectionError):
            client.push("Nowhere")
        [(_, outcome, error, _)] = stamper.ended
        assert outcome is PushOutcome.NOT_SENT
        assert error is not None
        assert "FaktoryConnectionError" in error


def test_an_observer_that_raises_costs_no_push(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client.observe(Broken())
    stamper = client.observe(Stamper())
    with caplog.at_level(logging.ERROR, logger="faktory.client"):
        client.push("Stamped", queue=queue_name())
    assert [outcome for _, outcome, _, _ in stamper.ended] == [PushOutcome.PUSHED]
    failures = [record.getMessage() for record in caplog.records]
    assert len(failures) == 2
    assert "failed in pushing" in failures[0]
    assert "failed in pushed" in failures[1]


def test_observe_takes_only_client_observers(client: Any) -> None:
    with pytest.raises(TypeError, match=r"must be a faktory_adapters\.ClientObserver"):
        client.observe(object())
