"""The chaos run: jobs pushed to a real server, a worker behind a :class:`FaultProxy`, faults.

:class:`ChaosRun` pushes the jobs straight to a private Faktory server, starts the chaos worker
(:mod:`tests.chaos.worker_app`) as a subprocess whose URL points at the proxy, and then:

1. SIGKILLs the worker early and starts a new one (the jobs the first held come back only when
   their 60 s reservation expires, so that wait overlaps with the rest of the run);
2. restarts the server once mid-run (same ports, same data) while the new worker runs on;
3. keeps cutting and stalling connections at random until the queue is first empty;
4. waits (bounded) until every jid has a recorded execution and the server holds nothing
   enqueued, reserved, scheduled, retrying or dead;
5. turns the faults on again and SIGTERMs the worker, which must exit 0 or 1 within a bound.

One job in ``FAIL_EVERY`` fails its first run on purpose. Jobs that come back through the retry
set must be explained: either that planned failure, or ``ReservationExpired`` (held by the
killed worker, or handed out on a connection that was cut before the reply got through) of a
job the surviving worker did not run, under that reservation, well before it expired (that
would be an ACK or a FAIL the worker failed to deliver). Explained retries are requeued at
once instead of waiting out Faktory's retry backoff; anything else fails the run.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from faktory_adapters.thread import Client, FaktoryError
from tests.chaos.worker_app import JOBTYPE, QUEUE, ChaosFailure, open_db
from tests.support.proxy import FaultProxy
from tests.support.server import FaktoryServer

__all__ = ["ChaosRun", "Figures"]

ROOT = Path(__file__).resolve().parents[2]

#: Faktory's shortest reservation; the killed worker's jobs come back after it (plus up to
#: 15 s: the server looks for expired reservations every 15 s).
RESERVE_FOR = 60
#: A job the surviving worker completed this long before its reservation expired should have
#: been ACKed by then, reconnect backoff included.
ACK_MARGIN = 15.0
#: How long the worker gets to exit after SIGTERM: its shutdown timeout (5 s), abort grace
#: (1 s), a FETCH or a report still awaiting its reply (10 s) and the heartbeat's END (5 s).
EXIT_BOUND = 40.0
#: One job in this many fails its first run on purpose.
FAIL_EVERY = 20
#: Once the faults are over, a job that waits in the queue this long means the worker hangs.
IDLE_BOUND = 60.0
#: Random cuts: each connection is cut after this many bytes or seconds, on average.
MEAN_BYTES = 8_000
MEAN_SECONDS = 1.0
#: The share of those faults that stall a connection (the worker's reply timeout ends it)
#: instead of cutting it.
STALL_SHARE = 0.2


@dataclass
class Figures:
    """What one chaos run measured."""

    adapter: str
    jobs: int = 0
    executions: int = 0
    failures: int = 0
    duplicates: int = 0
    lost: int = 0
    faults: int = 0
    stalls: int = 0
    worker_restarts: int = 0
    server_restarts: int = 0
    requeued: int = 0
    exit_code: int | None = None
    wall_time: float = 0.0
    unexplained: list[str] = field(default_factory=list)
    timeline: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"chaos {self.adapter}: jobs pushed {self.jobs}, executions {self.executions} "
            f"({self.failures} planned failures), "
            f"duplicates {self.duplicates}, lost {self.lost}, "
            f"faults injected {self.faults} ({self.stalls} of them stalls), "
            f"worker restarts {self.worker_restarts}, server restarts {self.server_restarts}, "
            f"retries requeued {self.requeued}, exit code {self.exit_code}, "
            f"wall time {self.wall_time:.1f} s"
        )


class ChaosWorker:
    """One chaos worker subprocess; its stdout and stderr go to files in ``directory``."""

    def __init__(
        self, adapter: str, url: str, db: Path, directory: Path, *, name: str, seed: int
    ) -> None:
        self.name = name
        self._out = directory / f"{name}.out"
        self._err = directory / f"{name}.err"
        with self._out.open("wb") as out, self._err.open("wb") as err:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.chaos.worker_app",
                    f"--adapter={adapter}",
                    f"--url={url}",
                    f"--db={db}",
                    f"--seed={seed}",
                ],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def terminate(self, timeout: float) -> int | None:
        """SIGTERM, then the exit code; None if it did not exit within ``timeout`` s."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            return None

    def dump_stacks(self) -> None:
        """Make the worker write every thread's stack to its log (faulthandler, SIGUSR1)."""
        if self.alive:
            self.process.send_signal(signal.SIGUSR1)
            time.sleep(1.0)  # the dump is written from a signal handler: no event to await

    def tail(self, lines: int = 40) -> str:
        """The end of what the worker printed and logged."""
        parts = []
        for path in (self._out, self._err):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name} ---\n" + "\n".join(text))
        return "\n".join(parts)


class ChaosRun:
    """One chaos run for one adapter, in ``directory``; :meth:`run` returns its figures."""

    def __init__(self, adapter: str, jobs: int, directory: Path, *, seed: int = 1) -> None:
        self.adapter = adapter
        self.jobs = jobs
        self.directory = directory
        self.seed = seed
        self.db_path = directory / "executions.db"
        self.figures = Figures(adapter=adapter)
        self.jids: list[str] = []
        self.failing: set[str] = set()  # the jids whose first run fails
        self.survivor_pid: int | None = None
        self._workers: list[ChaosWorker] = []
        self._server: FaktoryServer | None = None
        self._started = time.monotonic()
        self._queued_since: float | None = None
        self._failed_at: dict[str, float] = {}  # the last failure seen of each jid

    def _note(self, event: str) -> None:
        self.figures.timeline.append(f"{time.monotonic() - self._started:.1f} s {event}")

    def run(self) -> Figures:
        started = self._started = time.monotonic()
        figures = self.figures
        db = open_db(self.db_path)
        try:
            with (
                FaktoryServer() as server,
                FaultProxy(
                    server.host, server.port, seed=self.seed, stall_share=STALL_SHARE
                ) as proxy,
            ):
                self._server = server
                try:
                    self._run(server, proxy, db)
                finally:
                    for worker in self._workers:
                        if worker.alive:
                            worker.kill()
                    figures.faults = proxy.faults
                    figures.stalls = proxy.stalls
        finally:
            db.close()
        figures.wall_time = time.monotonic() - started
        return figures

    def _run(self, server: FaktoryServer, proxy: FaultProxy, db: sqlite3.Connection) -> None:
        figures = self.figures
        self._push(server)
        proxy.set_faults(mean_bytes=MEAN_BYTES, mean_seconds=MEAN_SECONDS)

        first = self._start_worker(proxy, "worker1")
        self._wait("the first worker to run a few jobs", 60, lambda: self._ran_count(db) >= 20)
        first.kill()
        self._note(f"first worker killed, {self._ran_count(db)} jobs ran")
        figures.worker_restarts += 1
        survivor = self._start_worker(proxy, "worker2")
        self.survivor_pid = survivor.pid

        # Restart the server while the new worker is at work, a third of the way through.
        restart_at = max(20, (self.jobs - self._ran_count(db)) // 3)
        self._wait(
            "the new worker to run a third of the jobs left",
            120 + self.jobs / 20,
            lambda: self._ran_by(db, survivor.pid) >= restart_at,
        )
        self._note(f"server restart, {self._ran_count(db)} of {self.jobs} jobs ran")
        server.restart()
        self._note("server back")
        figures.server_restarts += 1
        self._wait(
            "every job to run, and the server to hold nothing but what it has finished",
            2 * RESERVE_FOR + 120 + self.jobs / 20,
            lambda: self._settled(server, proxy, db),
        )
        assert survivor.alive, "the worker died:\n" + survivor.tail()
        # The stop, too, goes through faults: nothing may keep the worker from exiting.
        proxy.set_faults(mean_bytes=MEAN_BYTES, mean_seconds=MEAN_SECONDS)
        self._note("random cuts on again; SIGTERM")
        figures.exit_code = survivor.terminate(EXIT_BOUND)
        self._note(f"the worker exited with {figures.exit_code}")
        assert figures.exit_code is not None, (
            f"the worker did not exit within {EXIT_BOUND} s of SIGTERM:\n" + survivor.tail()
        )

        figures.jobs = len(self.jids)
        (figures.executions,) = db.execute("SELECT COUNT(*) FROM executions").fetchone()
        (figures.failures,) = db.execute(
            "SELECT COUNT(*) FROM executions WHERE outcome = 'failed'"
        ).fetchone()
        (successes,) = db.execute("SELECT COUNT(*) FROM executions WHERE outcome = 'ok'").fetchone()
        ran = _ran(db)
        figures.duplicates = successes - len(ran)
        figures.lost = len(set(self.jids) - ran)

    # -- steps --------------------------------------------------------------------------------

    def _push(self, server: FaktoryServer) -> None:
        with Client(server.url) as client:
            batch: list[Any] = []
            for index in range(self.jobs):
                fail_first = index % FAIL_EVERY == 0
                job = client.job(JOBTYPE, [index, fail_first], queue=QUEUE, reserve_for=RESERVE_FOR)
                batch.append(job)
                if fail_first:
                    self.failing.add(job.jid)
                if len(batch) == 500 or index == self.jobs - 1:
                    refused = client.push_bulk(batch)
                    assert not refused, refused
                    self.jids += [job.jid for job in batch]
                    batch = []

    def _start_worker(self, proxy: FaultProxy, name: str) -> ChaosWorker:
        worker = ChaosWorker(
            self.adapter,
            proxy.url,
            self.db_path,
            self.directory,
            name=name,
            seed=self.seed + len(self._workers),
        )
        self._workers.append(worker)
        return worker

    def _wait(self, what: str, timeout: float, condition: Callable[[], bool]) -> None:
        """Poll ``condition`` until it holds; fail with the workers' logs after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not condition():
            current = self._workers[-1]
            if not current.alive:
                raise AssertionError(
                    f"the worker exited while waiting for {what}:\n{current.tail()}"
                )
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"no {what} within {timeout:g} s: {self._progress()}\n"
                    + "\n".join(worker.tail() for worker in self._workers)
                )
            time.sleep(0.2)

    def _ran_count(self, db: sqlite3.Connection) -> int:
        return len(_ran(db))

    def _ran_by(self, db: sqlite3.Connection, pid: int) -> int:
        query = "SELECT COUNT(DISTINCT jid) FROM executions WHERE pid = ? AND outcome = 'ok'"
        (count,) = db.execute(query, (pid,)).fetchone()
        return int(count)

    def _progress(self) -> str:
        """Where the run is: what ran, what the server holds, where the missing jobs are."""
        with sqlite3.connect(self.db_path, timeout=30) as db:
            ran = _ran(db)
        missing = [jid for jid in self.jids if jid not in ran]
        lines = [f"{len(ran)} of {self.jobs} jobs ran", *self.figures.timeline]
        server = self._server
        if server is not None:
            lines.append(f"server (queued, sets): {_info(server)}")
            for jid in missing[:10]:
                found = [
                    f"{key}: {member[:300]}"
                    for key in ("working", "retries", "scheduled", "dead")
                    for member in _members(server, key)
                    if jid in member
                ]
                logged = [line for line in _log_lines(server) if jid in line]
                lines.append(f"missing {jid}: {found or 'in no set'}; server log: {logged}")
        return "\n".join(lines)

    def _settled(self, server: FaktoryServer, proxy: FaultProxy, db: sqlite3.Connection) -> bool:
        """True once every job ran and the server holds nothing; requeues explained retries.

        The random cuts end when the queue is first empty: from then on the jobs still to run
        are those whose reservations were lost, and they come back one by one. A FETCH
        blocked on an empty queue, on a connection cut meanwhile, still takes the next job
        (the server notices the close only when the FETCH returns), so each cut would cost a
        returning job another reservation timeout.
        """
        info = _info(server)
        if info is None:
            return False  # restarting
        queued, sets = info
        if queued == 0 and proxy.faults_on:
            proxy.set_faults(mean_bytes=None, mean_seconds=None)
            self._note("the queue is empty: random cuts off")
        self._check_fetching(queued, proxy)
        if sets.get("retries") or sets.get("dead"):
            self._explain_and_requeue(server, db)
            return False
        ran = _ran(db)
        return (
            queued == 0
            and not sets.get("working")
            and not sets.get("scheduled")
            and ran.issuperset(self.jids)
        )

    def _check_fetching(self, queued: int, proxy: FaultProxy) -> None:
        """Fail if jobs wait in the queue for long while the worker should be fetching.

        Once the faults are over, every link of the worker blocks in a FETCH, so a job that
        comes back is taken at once; jobs left waiting mean the worker hangs.
        """
        now = time.monotonic()
        if queued == 0 or proxy.faults_on:
            self._queued_since = None
        elif self._queued_since is None:
            self._queued_since = now
        elif now - self._queued_since > IDLE_BOUND:
            survivor = self._workers[-1]
            survivor.dump_stacks()
            raise AssertionError(
                f"{queued} jobs waited {IDLE_BOUND:g} s in the queue, with no fault injected, "
                f"and the worker took none: {self._progress()}\n{survivor.tail(200)}"
            )

    def _explain_and_requeue(self, server: FaktoryServer, db: sqlite3.Connection) -> None:
        explained = []
        for target in ("retries", "dead"):
            for job in _sorted_set(server, target):
                jid = job["jid"]
                failure = job.get("failure") or {}
                reason = self._unexplained(jid, failure, target, db)
                if reason is None:
                    explained.append(jid)
                    self._failed_at[jid] = _timestamp(failure["failed_at"])
                elif not any(jid in entry for entry in self.figures.unexplained):
                    self.figures.unexplained.append(f"{jid}: {reason}")
        if explained:  # a MUTATE without jids would requeue everything
            with Client(server.url) as client:
                for target in ("retries", "dead"):
                    client.mutate("requeue", target, jids=explained)
            self.figures.requeued += len(explained)
        if self.figures.unexplained:
            raise AssertionError("unexplained failures: " + "; ".join(self.figures.unexplained))

    def _unexplained(
        self, jid: str, failure: dict[str, Any], target: str, db: sqlite3.Connection
    ) -> str | None:
        """Why a failed job is not explained by the faults, or None if it is."""
        if target == "dead":
            return f"in the dead set ({failure})"
        if failure.get("errtype") == ChaosFailure.__name__ and jid in self.failing:
            return None
        if failure.get("errtype") != "ReservationExpired":
            return f"failed with {failure.get('errtype')}: {failure.get('message')}"
        # The reservation that expired began after the job's previous failure.
        failed_at = _timestamp(failure["failed_at"])
        early = db.execute(
            "SELECT at FROM executions WHERE jid = ? AND pid = ? AND at > ? AND at < ?",
            (jid, self.survivor_pid, self._failed_at.get(jid, 0.0), failed_at - ACK_MARGIN),
        ).fetchone()
        if early is not None:
            return (
                f"run by the surviving worker at {early[0]:.3f}, yet its reservation "
                f"expired at {failed_at:.3f}: its ACK or FAIL was lost"
            )
        return None


def _ran(db: sqlite3.Connection) -> set[str]:
    """The jids that ran to the end at least once."""
    return {jid for (jid,) in db.execute("SELECT jid FROM executions WHERE outcome = 'ok'")}


def _info(server: FaktoryServer) -> tuple[int, dict[str, int]] | None:
    """(jobs waiting in the chaos queue, the sizes of the server's sets), or None if down."""
    try:
        with Client(server.url, timeout=5.0, connect_timeout=2.0) as client:
            info = client.info()
    except (OSError, FaktoryError):
        return None
    faktory = info["faktory"]
    return int(faktory["queues"].get(QUEUE, 0)), dict(faktory["sets"])


def _members(server: FaktoryServer, key: str) -> list[str]:
    """The members of one of the server's sorted sets, read from its Redis."""
    sock = server.directory / "db" / "redis.sock"
    result = subprocess.run(
        ["redis-cli", "-s", str(sock), "--raw", "ZRANGE", key, "0", "-1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return [line for line in result.stdout.splitlines() if line.strip()]


def _log_lines(server: FaktoryServer) -> list[str]:
    return server.log_path.read_text(errors="replace").splitlines()


def _sorted_set(server: FaktoryServer, key: str) -> Iterator[dict[str, Any]]:
    """The jobs of the retries, scheduled or dead set."""
    for member in _members(server, key):
        yield json.loads(member)


def _timestamp(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 time with nanoseconds, as Faktory writes them."""
    head, _, fraction = text.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(head + "+00:00").timestamp()
    return seconds + float("0." + fraction) if fraction else seconds
