"""Reconnects a minute against a server at its connection limit.

A private Faktory (1.9 accepts 2,000 connections) is filled with 2,000 idle producer
connections; a worker with ``--concurrency`` links then reaches it through the tests' fault
proxy (no faults), which counts the connections it makes. Every one of the worker's links and
its heartbeat is refused (``ERR too many connections``). After the first refusal, the
connections and the WARNING lines are counted for ``--seconds``, and reported per minute.

    .venv/bin/python benchmarks/reconnect_storm.py [--adapter asyncio] [--concurrency 100]
        [--seconds 20] [--checkout DIR]

``--checkout DIR`` measures the packages of another checkout (say the previous main, in a
worktree made with ``git worktree add /tmp/old main~3``), with this checkout's test support;
the script prints which faktory_core it ran.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def _use_checkout(argv: list[str]) -> None:
    """Put on the path first: ``--checkout``'s packages (else ours) and our tests."""
    checkout = REPO_ROOT
    if "--checkout" in argv:
        checkout = Path(argv[argv.index("--checkout") + 1]).resolve()
    mixed = Path(tempfile.mkdtemp(prefix="storm-"))
    atexit.register(shutil.rmtree, mixed, ignore_errors=True)
    for package in ("faktory_core", "faktory_adapters"):
        (mixed / package).symlink_to(checkout / package)
    (mixed / "tests").symlink_to(REPO_ROOT / "tests")
    sys.path.insert(0, str(mixed))


_use_checkout(sys.argv)

import faktory_core  # noqa: E402
from tests.conformance.test_connection_limit import LIMIT, handshake  # noqa: E402
from tests.support.adapters import adapter_module, serve  # noqa: E402
from tests.support.proxy import FaultProxy  # noqa: E402
from tests.support.server import FaktoryServer  # noqa: E402


class _Counter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.refused = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if "too many connections" in record.getMessage():
            self.refused.set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", default="asyncio", choices=["asyncio", "thread", "gevent"])
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--checkout", type=Path, help="measure this checkout's packages")
    options = parser.parse_args()
    print(f"faktory_core from {Path(faktory_core.__file__).parent}")
    counter = _Counter()
    logging.getLogger("faktory").addHandler(counter)
    with FaktoryServer() as server:
        idle = [handshake(server.port) for _ in range(LIMIT)]
        try:
            with FaultProxy("127.0.0.1", server.port, seed=1) as proxy:
                worker: Any = adapter_module(options.adapter).Worker(
                    url=proxy.url,
                    queues=[f"storm-{uuid.uuid4().hex[:8]}"],
                    concurrency=options.concurrency,
                )
                stop = threading.Event()
                result: dict[str, float] = {}

                def measure() -> None:
                    if counter.refused.wait(30):
                        connections, warnings = proxy.connections, counter.count
                        time.sleep(options.seconds)  # the measurement window
                        result["connections"] = proxy.connections - connections
                        result["warnings"] = counter.count - warnings
                    stop.set()

                threading.Thread(target=measure, daemon=True).start()
                serve(options.adapter, worker, stop_when=stop)
        finally:
            for sock in idle:
                sock.close()
    if not result:
        sys.exit("the worker was never refused")
    per_minute = 60.0 / options.seconds
    print(
        f"{options.adapter}, concurrency {options.concurrency}, {options.seconds:g} s after the "
        f"first refusal: {result['connections'] * per_minute:,.0f} connections/min, "
        f"{result['warnings'] * per_minute:,.0f} WARNING lines/min"
    )


if __name__ == "__main__":
    main()
