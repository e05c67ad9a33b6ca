"""``PrometheusMetrics`` counts a real worker's job connections in every adapter: the ready
ones drop when the fault proxy in front of the server cuts them, and come back, each return
counted once in ``faktory_worker_reconnects_total``."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

from faktory_adapters import WorkerObserver
from faktory_adapters.prometheus import PrometheusMetrics
from tests.support.adapters import ADAPTERS, WAIT, adapter_module, serve
from tests.support.proxy import FaultProxy
from tests.support.server import FaktoryServer

pytestmark = pytest.mark.server

LINKS = 3


class ConnectionsTold(WorkerObserver):
    """Wakes the test each time the worker tells its connections; observed after the
    PrometheusMetrics, which has counted them by then."""

    def __init__(self) -> None:
        self._told = threading.Condition()

    def connections_changed(self, ready: int, reconnects: int) -> None:
        with self._told:
            self._told.notify_all()

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        with self._told:
            assert self._told.wait_for(condition, WAIT), f"never {what}"


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_cut_connections_drop_the_ready_gauge_and_count_as_reconnects_when_back(
    faktory_server: FaktoryServer, adapter: str
) -> None:
    registry = CollectorRegistry()

    def value(name: str) -> float | None:
        return registry.get_sample_value(name)

    def ready() -> float | None:
        return value("faktory_worker_ready_job_connections")

    with FaultProxy(faktory_server.host, faktory_server.port, seed=5) as proxy:
        worker = adapter_module(adapter).Worker(
            url=proxy.url,
            queues=[f"prometheus-links-{uuid.uuid4().hex[:10]}"],
            concurrency=LINKS,
            connections=LINKS,
        )
        worker.observe(PrometheusMetrics(registry))
        told = worker.observe(ConnectionsTold())
        stop = threading.Event()
        serving = threading.Thread(target=serve, args=(adapter, worker), kwargs={"stop_when": stop})
        serving.start()
        try:
            told.wait_for(lambda: ready() == LINKS, "every link ready")
            assert value("faktory_worker_job_connections") == LINKS
            assert value("faktory_worker_reconnects_total") == 0
            # Every connection cut, and each new one at its first byte, until the faults stop.
            proxy.set_faults(mean_bytes=1, mean_seconds=None)
            proxy.cut_all()
            told.wait_for(lambda: ready() == 0, "every link lost")
            assert value("faktory_worker_reconnects_total") == 0
            assert value("faktory_worker_job_connections") == LINKS
            proxy.set_faults(mean_bytes=None, mean_seconds=None)
            told.wait_for(lambda: ready() == LINKS, "every link back")
            assert value("faktory_worker_reconnects_total") == LINKS  # once per link
        finally:
            stop.set()
            serving.join(WAIT)
    assert not serving.is_alive()
    # Exited: its connections are out of the gauges; the reconnects stay counted.
    assert value("faktory_worker_job_connections") == 0
    assert ready() == 0
    assert value("faktory_worker_reconnects_total") == LINKS
