"""The worker of the chaos run: ``python -m tests.chaos.worker_app --adapter ... --url ...``.

It serves one job type, ``Chaos(index, fail_first)``: a short random pause (a few
milliseconds, in the runtime's own way), then one row ``(jid, pid, at, outcome)`` in the SQLite
database ``--db``, committed before the handler returns, so a SIGKILL can lose the ACK of a
recorded run but never the record. A job pushed with ``fail_first`` raises
:class:`ChaosFailure` the first time it runs (outcome ``failed``), so FAILs travel through the
faults too; its retry succeeds (outcome ``ok``). The database is in WAL mode with a busy
timeout, so worker processes and the test share it. The worker runs with real signal handling
and exits with :meth:`Worker.run`'s code; the faktory log goes to stderr, and SIGUSR1 writes
every thread's stack there.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import random
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

JOBTYPE = "Chaos"
QUEUE = "chaos"
#: How long a writer waits for the database's lock before giving up, in milliseconds.
BUSY_TIMEOUT_MS = 30_000


def open_db(path: Path | str) -> sqlite3.Connection:
    """A connection to the executions database, created if need be (autocommit, WAL)."""
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS executions"
        " (jid TEXT NOT NULL, pid INTEGER NOT NULL, at REAL NOT NULL, outcome TEXT NOT NULL)"
    )
    return db


class ChaosFailure(Exception):
    """The planned failure of a job's first run."""


class Recorder:
    """Writes one row per execution, on a connection of the calling thread's own."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._local = threading.local()
        self._pid = os.getpid()

    def run(self, jid: str, index: int, fail_first: bool) -> None:
        """Record this run of job ``jid``; raise if it is the planned failure."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = open_db(self._path)
        outcome = "ok"
        if fail_first:
            query = "SELECT 1 FROM executions WHERE jid = ? AND outcome = 'failed'"
            if db.execute(query, (jid,)).fetchone() is None:
                outcome = "failed"
        db.execute(
            "INSERT INTO executions (jid, pid, at, outcome) VALUES (?, ?, ?, ?)",
            (jid, self._pid, time.time(), outcome),
        )
        if outcome == "failed":
            raise ChaosFailure(f"the planned failure of job {index}")


def build(options: argparse.Namespace) -> Any:
    recorder = Recorder(options.db)
    pauses = random.Random(options.seed)
    settings = {
        "url": options.url,
        "queues": [QUEUE],
        "concurrency": options.concurrency,
        "shutdown_timeout": 5.0,
        "abort_grace": 1.0,
        "heartbeat_interval": 5.0,
        "seed": options.seed,
    }
    if options.adapter == "asyncio":
        import asyncio

        from faktory_adapters.asyncio import Worker, current_job

        worker = Worker(**settings)

        @worker.register(JOBTYPE)
        async def chaos(index: int, fail_first: bool) -> None:
            await asyncio.sleep(pauses.random() * 0.01)
            recorder.run(current_job().job.jid, index, fail_first)

        return worker
    pause: Callable[[float], None]
    if options.adapter == "gevent":
        import gevent

        from faktory_adapters.gevent import Worker, current_job

        pause = gevent.sleep
    else:
        from faktory_adapters.thread import Worker, current_job  # type: ignore[assignment]

        pause = time.sleep
    worker = Worker(**settings)

    @worker.register(JOBTYPE)
    def chaos_blocking(index: int, fail_first: bool) -> None:
        pause(pauses.random() * 0.01)
        recorder.run(current_job().job.jid, index, fail_first)

    return worker


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--adapter", required=True, choices=["asyncio", "thread", "gevent"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    faulthandler.register(signal.SIGUSR1)  # the test asks for the stacks of a hung worker
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    worker = build(options)
    worker.on_startup(lambda: print("ready", os.getpid(), worker.wid, flush=True))
    code = worker.run()
    print("exit", code, flush=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
