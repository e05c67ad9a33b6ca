"""``PrometheusMetrics`` as a client observer, in every adapter against a real server: pushes
counted by queue, job type and outcome, one by one, in bulk, many at once, refused by the
server, and not sent at all."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from faktory_adapters import ClientObserver
from faktory_adapters.prometheus import PrometheusMetrics
from faktory_core import Job
from tests.support.adapters import ADAPTERS, SyncClient
from tests.support.server import FaktoryServer, closed_port

pytestmark = pytest.mark.server

CONCURRENT = 8


class Refusable(ClientObserver):
    """Makes jobs of args ``["refuse me"]`` ones the server refuses, past the Job's own check
    (reserved for more than a day), as tests/conformance/test_client_observers.py does."""

    def pushing(self, job: Job) -> Job:
        if job.args == ["refuse me"]:
            object.__setattr__(job, "reserve_for", 100_000)
        return job


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(adapter: str, faktory_server: FaktoryServer) -> Iterator[Any]:
    with SyncClient(adapter, faktory_server.url) as synced:
        yield synced


def test_pushes_are_counted_by_queue_job_type_and_outcome(client: Any, adapter: str) -> None:
    registry = CollectorRegistry()
    client.observe(Refusable())
    metrics = client.observe(PrometheusMetrics(registry))
    queue = f"prometheus-pushes-{uuid.uuid4().hex[:10]}"

    def pushes(jobtype: str, outcome: str) -> float | None:
        labels = {"queue": queue, "jobtype": jobtype, "outcome": outcome}
        return registry.get_sample_value("faktory_pushes_total", labels)

    client.push("PromPushed", [1], queue=queue)
    bulk = [client.job("PromBulk", [n], queue=queue) for n in range(3)]
    refused = client.job("PromBulk", ["refuse me"], queue=queue)
    assert client.push_bulk([*bulk, refused]).keys() == {refused.jid}
    with pytest.raises(Exception, match="reserved for more than one day"):
        client.push("PromPushed", ["refuse me"], queue=queue)
    at_once = [client.job("PromAtOnce", [n], queue=queue) for n in range(CONCURRENT)]
    client.concurrently("push", *((job,) for job in at_once))
    assert pushes("PromPushed", "pushed") == 1
    assert pushes("PromPushed", "refused") == 1
    assert pushes("PromBulk", "pushed") == 3
    assert pushes("PromBulk", "refused") == 1
    assert pushes("PromAtOnce", "pushed") == CONCURRENT
    # Another Client sharing the PrometheusMetrics, with no server to push to.
    with SyncClient(adapter, f"tcp://127.0.0.1:{closed_port()}") as unreachable:
        unreachable.observe(metrics)
        with pytest.raises(ConnectionError):
            unreachable.push("PromPushed", queue=queue)
    assert pushes("PromPushed", "not_sent") == 1
    assert pushes("PromPushed", "pushed") == 1
