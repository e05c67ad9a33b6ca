"""The Worker's ``metrics_port`` option: in every adapter, a real worker serves its metrics
while it serves, and stops when it is done; the option's checks."""

from __future__ import annotations

import importlib.util
import logging
import re
import socket
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest

from faktory_adapters import thread
from faktory_core import ConfigurationError, OptionError
from tests.cli.command import taken_port
from tests.support.adapters import ADAPTERS, WAIT, HeldJob, adapter_module, serve
from tests.support.metrics import Samples, sample, scrape
from tests.support.server import FaktoryServer

SERVING = re.compile(r"serving metrics on (http://127\.0\.0\.1:\d+/metrics)")


def closed(url: str) -> bool:
    """Whether nothing answers at ``url`` any more (the connection is refused)."""
    try:
        with urllib.request.urlopen(url, timeout=WAIT):
            return False
    except urllib.error.URLError as error:
        return isinstance(error.reason, ConnectionRefusedError)
    except ConnectionResetError:  # accepted as the server closed: not closed yet
        return False


@pytest.mark.server
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_worker_serves_its_metrics_on_its_metrics_port_while_it_serves(
    faktory_server: FaktoryServer, adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="faktory")
    queue = f"metrics-option-{uuid.uuid4().hex[:10]}"
    module = adapter_module(adapter)
    worker = module.Worker(
        url=faktory_server.url,
        queues=[queue],
        concurrency=1,
        burst=True,
        metrics_port=0,  # any free port, logged
        metrics_address="127.0.0.1",
    )
    held = HeldJob(adapter)
    worker.register("OptionBlocked")(held.run)
    with thread.Client(faktory_server.url) as client:
        client.push("OptionBlocked", queue=queue)
    seen: dict[str, Any] = {}

    def scrape_while_held() -> None:
        (url,) = [
            found[1] for record in caplog.records if (found := SERVING.search(record.getMessage()))
        ]
        seen["url"], seen["samples"] = url, scrape(url, WAIT)

    held.look(scrape_while_held)
    assert serve(adapter, worker) == 0
    held.join()
    samples: Samples = seen["samples"]
    assert sample(samples, "faktory_jobs_running", queue=queue, jobtype="OptionBlocked") == 1
    assert any(name == "process_cpu_seconds_total" for name, _ in samples)  # the global registry
    # Done serving, the worker has stopped serving its metrics too: the port is free.
    assert closed(seen["url"])


@pytest.mark.server
def test_workers_one_after_the_other_serve_on_the_same_metrics_port(
    faktory_server: FaktoryServer,
) -> None:
    with socket.socket() as probe:  # a free port, for the two workers in turn
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    queue = f"metrics-option-{uuid.uuid4().hex[:10]}"
    for _ in range(2):
        worker = thread.Worker(
            url=faktory_server.url, queues=[queue], metrics_port=port, metrics_address="127.0.0.1"
        )
        worker.register("OptionNothing", lambda: None)
        assert worker.drain() == 0  # OSError if the first still held the port
        assert closed(f"http://127.0.0.1:{port}/metrics")


@pytest.mark.server
def test_a_metrics_port_taken_fails_the_serve_naming_the_option(
    faktory_server: FaktoryServer,
) -> None:
    with taken_port() as port:
        worker = thread.Worker(
            url=faktory_server.url, metrics_port=port, metrics_address="127.0.0.1"
        )
        worker.register("Never", lambda: None)
        with pytest.raises(OSError, match=f"metrics_port={port}: cannot serve metrics on 127"):
            worker.drain()


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"metrics_port": "9100"}, TypeError, "metrics_port must be an int or None, got '9100'"),
        ({"metrics_port": True}, TypeError, "metrics_port must be an int or None, got True"),
        ({"metrics_port": 65536}, OptionError, "metrics_port must be 0 (any free port) to 65535"),
        ({"metrics_port": -1}, OptionError, "got -1"),
        ({"metrics_address": ""}, TypeError, "metrics_address must be a host name or IP"),
        ({"metrics_address": None}, TypeError, "metrics_address must be a host name or IP"),
    ],
)
def test_bad_metrics_options_are_refused_naming_them(
    options: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=re.escape(words)):
        thread.Worker(url="tcp://localhost:7419", **options)


def test_a_metrics_port_without_prometheus_client_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    find_spec = importlib.util.find_spec

    def without_prometheus(name: str, *args: Any) -> Any:
        return None if name == "prometheus_client" else find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_prometheus)
    with pytest.raises(ConfigurationError, match=re.escape("faktory-sansio[prometheus]")):
        thread.Worker(url="tcp://localhost:7419", metrics_port=9100)
    thread.Worker(url="tcp://localhost:7419")  # without the option, nothing is needed
