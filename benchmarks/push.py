"""Jobs per second pushing no-op jobs: our Clients against a bare socket and their peers.

Each round, for each contender in turn (the order rotates from round to round), one process
of its own is started (``push.py --worker NAME``; node for the npm peer), and told on its stdin
to run each of three measurements, one after another; before each the server is FLUSHed, and
after each its INFO must show the queue holding exactly the jobs the contender pushed (the
queue is never fetched: jobs pile up). Every measurement first pushes ``--warmup`` jobs the
same way, untimed. A job is ``{"jobtype": "noop", "args": [i], "queue": "bench"}`` with a
fresh jid. The measurements:

    seq    one producer pushes --jobs jobs one after another: jobs/s, and each PUSH timed
           with time.perf_counter_ns (p50 and p99 in microseconds), and the CPU time of the
           contender's process per job (less swayed by a busy machine than the rates)
    conc   --producers producers push --jobs jobs between them: ours through ONE Client
           shared by all (asyncio: tasks; thread: threads; gevent: greenlets; its pool is
           --pool-size connections); the floors and the Python peers with a connection each
    bulk   --jobs jobs in PUSHB chunks of 1,000 (push_bulk, or the peer's bulk API; a peer
           without one is skipped)

The contenders:

    floor-threads  a bare socket written here: read HI, send HELLO, then per job write
                   ``PUSH {json}`` and read until ``+OK``; conc: a socket per thread
    floor-asyncio  the same with asyncio streams; conc: a connection per task
    asyncio        faktory_adapters.asyncio.Client
    thread         faktory_adapters.thread.Client
    gevent         faktory_adapters.gevent.Client (its own gevent sockets; no monkey-patching)
    faktory        the PyPI package ``faktory`` (Client.queue; no bulk API; not thread-safe:
                   conc uses one Client per thread)
    pyfaktory      the PyPI package ``pyfaktory`` (Producer.push, Producer.push_bulk; conc uses
                   one Client per thread, as its Client serialises its commands on a lock)
    node           faktory-worker 4.x from npm (benchmarks/peers/node_push.js): one client,
                   conc with --producers async pushers over its pool (up to 20 connections)

In conc the floors and the Python peers each hold --producers connections, ours --pool-size
(4 by default): compare with ``--pool-size 16`` to tell the pool from the per-push cost.

It prints the medians over the rounds, then ratios: ours sequential against floor-threads
sequential, ours concurrent (and bulk) against the floor's (asyncio against floor-asyncio,
thread and gevent against floor-threads), thread concurrent against the best Python peer's,
asyncio concurrent against node's; each as the ratio of the medians, and as the median (and
range) of the ratios taken round by round (a small machine's speed drifts from round to
round, which the medians mix into the ratio); and the machine's CPU count and load average
before and after (the server, Redis and the contender share the machine: a busy one skews
every figure).
A peer that cannot be found is reported as unavailable, a process that does not answer within
``--timeout`` s (300, for its three measurements of a round) as timed out (it is then
killed), and a queue that does not hold what was
pushed as a MISMATCH. ``--json FILE`` writes every figure: per run its wall-clock and its
process's CPU seconds, the counts, the queue size seen, and seq's per-PUSH latencies. The peers
are installed by hand:

    .venv/bin/pip install faktory pyfaktory
    npm install --prefix /tmp/fw-bench faktory-worker@4     # or --node-modules DIR

Usage (a private Faktory is started unless ``--url`` is given; the server is FLUSHed!):

    .venv/bin/python benchmarks/push.py [--jobs 10000] [--rounds 3] [--producers 16]
        [--pool-size N] [--contenders asyncio,thread,floor-threads,...] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import math
import os
import queue
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any, Final, Protocol
from urllib.parse import unquote, urlsplit

BENCH_DIR: Final = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import throughput  # noqa: E402  (also puts the repository on sys.path)
from throughput import REPO_ROOT, Admin  # noqa: E402

from faktory_adapters._supervisor import death_signal  # noqa: E402

JOBTYPE: Final = "noop"
QUEUE: Final = "bench"
CHUNK: Final = 1000
MODES: Final = ("seq", "conc", "bulk")
NODE_SCRIPT: Final = BENCH_DIR / "peers" / "node_push.js"
FLOORS: Final = ("floor-threads", "floor-asyncio")
OURS: Final = ("asyncio", "thread", "gevent")
PYTHON_PEERS: Final = ("faktory", "pyfaktory")
CONTENDERS: Final = (*FLOORS, *OURS, *PYTHON_PEERS, "node")
LABELS: Final = {
    "floor-threads": "floor (threads)",
    "floor-asyncio": "floor (asyncio)",
    "asyncio": "ours (asyncio)",
    "thread": "ours (thread)",
    "gevent": "ours (gevent)",
    "faktory": "faktory (PyPI)",
    "pyfaktory": "pyfaktory (PyPI)",
    "node": "faktory-worker (npm)",
}
_QUIT_WAIT: Final = 10.0  # s for a worker process to exit after "quit"


# == the worker processes ======================================================================


@dataclass(frozen=True)
class WorkerConfig:
    url: str
    jobs: int
    producers: int
    warmup: int
    pool_size: int | None

    @classmethod
    def from_env(cls) -> WorkerConfig:
        pool = os.environ.get("BENCH_POOL_SIZE")
        return cls(
            url=os.environ["FAKTORY_URL"],
            jobs=int(os.environ["BENCH_JOBS"]),
            producers=int(os.environ["BENCH_PRODUCERS"]),
            warmup=int(os.environ["BENCH_WARMUP"]),
            pool_size=int(pool) if pool else None,
        )

    def client_options(self) -> dict[str, Any]:
        return {} if self.pool_size is None else {"pool_size": self.pool_size}


def _shares(first: int, total: int, producers: int) -> list[range]:
    """``total`` job numbers from ``first``, split as evenly as can be between producers."""
    ranges: list[range] = []
    for k in range(producers):
        count = total // producers + (1 if k < total % producers else 0)
        ranges.append(range(first, first + count))
        first += count
    return ranges


def _chunks(total: int) -> list[range]:
    return [range(start, min(start + CHUNK, total)) for start in range(0, total, CHUNK)]


def _error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class _Stopwatch:
    """Wall-clock and this process's CPU time (every thread's) from its making."""

    def __init__(self) -> None:
        self._cpu = time.process_time()
        self._wall = time.perf_counter()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self._wall, time.process_time() - self._cpu


def _result(
    mode: str,
    seconds: float,
    attempted: int,
    failed: int = 0,
    rejected: int = 0,
    latencies_ns: list[int] | None = None,
    errors: Sequence[str] = (),
    cpu_seconds: float | None = None,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "mode": mode,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "attempted": attempted,
        "failed": failed,
        "rejected": rejected,
    }
    if latencies_ns is not None:
        result["latencies_ns"] = latencies_ns
    if errors:
        result["error"] = f"{len(errors)} producer(s) failed, the first with {errors[0]}"
    return result


# -- the bare-socket floors ---------------------------------------------------------------------


def _address(url: str) -> tuple[str, int, str | None]:
    parts = urlsplit(url)
    if parts.scheme != "tcp":
        raise ValueError(f"the floors speak plain tcp:// only, not {parts.scheme}://")
    password = unquote(parts.password) if parts.password is not None else None
    return parts.hostname or "localhost", parts.port or 7419, password


def _hello(greeting: bytes, password: str | None) -> bytes:
    """HELLO in reply to the server's ``+HI {...}`` (with pwdhash when it asks for one)."""
    if not greeting.startswith(b"+HI "):
        raise RuntimeError(f"expected +HI, got {greeting!r}")
    hi = json.loads(greeting[4:])
    hello: dict[str, Any] = {"v": 2}
    if "s" in hi:
        if password is None:
            raise RuntimeError("the server wants a password; put it in the URL")
        digest = (password + hi["s"]).encode()
        for _ in range(max(int(hi.get("i", 1)), 1)):
            digest = hashlib.sha256(digest).digest()
        hello["pwdhash"] = digest.hex()
    return b"HELLO " + json.dumps(hello).encode() + b"\r\n"


def _job(i: int) -> dict[str, Any]:
    return {"jid": secrets.token_hex(12), "jobtype": JOBTYPE, "args": [i], "queue": QUEUE}


def _push_line(i: int) -> bytes:
    return b"PUSH " + json.dumps(_job(i)).encode() + b"\r\n"


def _pushb_line(items: range) -> bytes:
    return b"PUSHB " + json.dumps([_job(i) for i in items]).encode() + b"\r\n"


def _rejected(reply: bytes | None) -> int:
    """How many jobs a PUSHB reply (its payload, None for nil) says were refused."""
    if not reply or reply == b"OK":
        return 0
    return len(json.loads(reply))


class FloorSocket:
    """One blocking socket speaking just enough of the protocol to PUSH and PUSHB."""

    bulk = True

    def __init__(self, url: str) -> None:
        host, port, password = _address(url)
        self._sock = socket.create_connection((host, port), timeout=30)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""
        self._sock.sendall(_hello(self._line(), password))
        if self._line() != b"+OK":
            raise RuntimeError("HELLO was not answered +OK")

    def _line(self) -> bytes:
        while (end := self._buffer.find(b"\r\n")) < 0:
            self._more()
        line, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
        return line

    def _more(self) -> None:
        data = self._sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self._buffer += data

    def push(self, i: int) -> bool:
        self._sock.sendall(_push_line(i))
        buffer = self._sock.recv(65536)
        while not buffer.endswith(b"\r\n"):
            more = self._sock.recv(65536)
            if not more:
                raise ConnectionError("the server closed the connection")
            buffer += more
        return buffer == b"+OK\r\n"

    def push_bulk(self, items: range) -> int:
        self._sock.sendall(_pushb_line(items))
        line = self._line()
        if line.startswith(b"-"):
            raise RuntimeError(line.decode())
        if line.startswith(b"+"):
            return _rejected(line[1:])
        size = int(line[1:])  # a bulk string: $N, then N bytes and CRLF
        if size < 0:
            return 0
        while len(self._buffer) < size + 2:
            self._more()
        payload, self._buffer = self._buffer[:size], self._buffer[size + 2 :]
        return _rejected(payload)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.sendall(b"END\r\n")
        self._sock.close()


class AsyncFloor:
    """The same with asyncio streams."""

    bulk = True

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, url: str) -> AsyncFloor:
        host, port, password = _address(url)
        reader, writer = await asyncio.open_connection(host, port)  # sets TCP_NODELAY
        writer.write(_hello((await reader.readuntil(b"\r\n"))[:-2], password))
        if await reader.readuntil(b"\r\n") != b"+OK\r\n":
            raise RuntimeError("HELLO was not answered +OK")
        return cls(reader, writer)

    async def push(self, i: int) -> bool:
        # No drain(): one command at a time, so the reply means the buffer was written out.
        self._writer.write(_push_line(i))
        return await self._reader.readuntil(b"\r\n") == b"+OK\r\n"

    async def push_bulk(self, items: range) -> int:
        self._writer.write(_pushb_line(items))
        line = (await self._reader.readuntil(b"\r\n"))[:-2]
        if line.startswith(b"-"):
            raise RuntimeError(line.decode())
        if line.startswith(b"+"):
            return _rejected(line[1:])
        size = int(line[1:])
        return 0 if size < 0 else _rejected((await self._reader.readexactly(size + 2))[:-2])

    async def close(self) -> None:
        self._writer.write(b"END\r\n")
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


# -- our Clients and the Python peers -----------------------------------------------------------


class SyncPusher(Protocol):
    bulk: bool

    def push(self, i: int) -> bool: ...

    def push_bulk(self, items: range) -> int: ...

    def close(self) -> None: ...


class AsyncPusher(Protocol):
    bulk: bool

    async def push(self, i: int) -> bool: ...

    async def push_bulk(self, items: range) -> int: ...

    async def close(self) -> None: ...


class OursSync:
    """faktory_adapters.thread.Client or faktory_adapters.gevent.Client."""

    bulk = True

    def __init__(self, adapter: str, config: WorkerConfig) -> None:
        module: Any = importlib.import_module(f"faktory_adapters.{adapter}")
        self._client = module.Client(config.url, **config.client_options())

    def push(self, i: int) -> bool:
        self._client.push(JOBTYPE, [i], queue=QUEUE)
        return True

    def push_bulk(self, items: range) -> int:
        client = self._client
        return len(client.push_bulk([client.job(JOBTYPE, [i], queue=QUEUE) for i in items]))

    def close(self) -> None:
        self._client.close()


class OursAsync:
    """faktory_adapters.asyncio.Client."""

    bulk = True

    def __init__(self, config: WorkerConfig) -> None:
        from faktory_adapters.asyncio import Client

        self._client = Client(config.url, **config.client_options())

    async def push(self, i: int) -> bool:
        await self._client.push(JOBTYPE, [i], queue=QUEUE)
        return True

    async def push_bulk(self, items: range) -> int:
        client = self._client
        return len(await client.push_bulk([client.job(JOBTYPE, [i], queue=QUEUE) for i in items]))

    async def close(self) -> None:
        await self._client.close()


class FaktoryPeer:
    """PyPI ``faktory``: Client.queue over one socket of its own; it has no bulk API."""

    bulk = False

    def __init__(self, config: WorkerConfig) -> None:
        faktory: Any = importlib.import_module("faktory")
        self._client = faktory.Client(config.url)
        self._client.connect()

    def push(self, i: int) -> bool:
        return bool(self._client.queue(JOBTYPE, args=[i], queue=QUEUE))

    def push_bulk(self, items: range) -> int:
        raise NotImplementedError

    def close(self) -> None:
        self._client.disconnect()


class PyfaktoryPeer:
    """PyPI ``pyfaktory``: a producer Client and its Producer."""

    bulk = True

    def __init__(self, config: WorkerConfig) -> None:
        pyfaktory: Any = importlib.import_module("pyfaktory")
        self._job = pyfaktory.Job
        self._client = pyfaktory.Client(faktory_url=config.url, role="producer")
        self._client.connect()
        self._producer = pyfaktory.Producer(client=self._client)

    def push(self, i: int) -> bool:
        return bool(self._producer.push(self._job(jobtype=JOBTYPE, args=[i], queue=QUEUE)))

    def push_bulk(self, items: range) -> int:
        jobs = [self._job(jobtype=JOBTYPE, args=[i], queue=QUEUE) for i in items]
        return len(self._producer.push_bulk(jobs))

    def close(self) -> None:
        self._client.disconnect()


# -- the measurements ---------------------------------------------------------------------------


def _threads(producers: Sequence[Callable[[], None]]) -> None:
    threads = [threading.Thread(target=producer) for producer in producers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _greenlets(producers: Sequence[Callable[[], None]]) -> None:
    import gevent

    gevent.joinall([gevent.spawn(producer) for producer in producers], raise_error=False)


@dataclass(frozen=True)
class SyncContender:
    open: Callable[[], SyncPusher]
    shared: bool  # conc: one pusher (ours: one Client) for every producer, else one each
    spawn: Callable[[Sequence[Callable[[], None]]], None] = _threads


def run_sync(contender: SyncContender, mode: str, config: WorkerConfig) -> dict[str, Any]:
    warmup, jobs = config.warmup, config.jobs
    if mode == "seq":
        pusher = contender.open()
        try:
            failed = sum(not pusher.push(i) for i in range(warmup))
            latencies: list[int] = []
            clock, record = time.perf_counter_ns, latencies.append
            watch = _Stopwatch()
            for i in range(jobs):
                before = clock()
                ok = pusher.push(i)
                record(clock() - before)
                failed += not ok
            seconds, cpu = watch.stop()
        finally:
            pusher.close()
        return _result(
            mode, seconds, warmup + jobs, failed, latencies_ns=latencies, cpu_seconds=cpu
        )
    if mode == "conc":
        count = 1 if contender.shared else config.producers
        pushers = [contender.open() for _ in range(count)]
        tally: list[int] = []
        errors: list[str] = []

        def produce(pusher: SyncPusher, items: range) -> None:
            failed = 0
            try:
                for i in items:
                    failed += not pusher.push(i)
            except Exception as error:
                errors.append(_error(error))
            tally.append(failed)

        def producers(total: int) -> list[Callable[[], None]]:
            shares = _shares(0, total, config.producers)
            return [partial(produce, pushers[k % count], items) for k, items in enumerate(shares)]

        try:
            contender.spawn(producers(warmup))
            watch = _Stopwatch()
            contender.spawn(producers(jobs))
            seconds, cpu = watch.stop()
        finally:
            for pusher in pushers:
                pusher.close()
        return _result(mode, seconds, warmup + jobs, sum(tally), errors=errors, cpu_seconds=cpu)
    pusher = contender.open()
    try:
        if not pusher.bulk:
            return {"mode": mode, "skipped": "no bulk API"}
        rejected = sum(pusher.push_bulk(chunk) for chunk in _chunks(warmup))
        watch = _Stopwatch()
        for chunk in _chunks(jobs):
            rejected += pusher.push_bulk(chunk)
        seconds, cpu = watch.stop()
    finally:
        pusher.close()
    return _result(mode, seconds, warmup + jobs, rejected=rejected, cpu_seconds=cpu)


async def run_async(
    open_pusher: Callable[[], Awaitable[AsyncPusher]],
    shared: bool,
    mode: str,
    config: WorkerConfig,
) -> dict[str, Any]:
    warmup, jobs = config.warmup, config.jobs
    if mode == "seq":
        pusher = await open_pusher()
        try:
            failed = 0
            for i in range(warmup):
                failed += not await pusher.push(i)
            latencies: list[int] = []
            clock, record = time.perf_counter_ns, latencies.append
            watch = _Stopwatch()
            for i in range(jobs):
                before = clock()
                ok = await pusher.push(i)
                record(clock() - before)
                failed += not ok
            seconds, cpu = watch.stop()
        finally:
            await pusher.close()
        return _result(
            mode, seconds, warmup + jobs, failed, latencies_ns=latencies, cpu_seconds=cpu
        )
    if mode == "conc":
        count = 1 if shared else config.producers
        pushers = [await open_pusher() for _ in range(count)]
        errors: list[str] = []

        async def produce(pusher: AsyncPusher, items: range) -> int:
            failed = 0
            try:
                for i in items:
                    failed += not await pusher.push(i)
            except Exception as error:
                errors.append(_error(error))
            return failed

        async def producers(total: int) -> int:
            shares = _shares(0, total, config.producers)
            tasks = [produce(pushers[k % count], items) for k, items in enumerate(shares)]
            return sum(await asyncio.gather(*tasks))

        try:
            failed = await producers(warmup)
            watch = _Stopwatch()
            failed += await producers(jobs)
            seconds, cpu = watch.stop()
        finally:
            for pusher in pushers:
                await pusher.close()
        return _result(mode, seconds, warmup + jobs, failed, errors=errors, cpu_seconds=cpu)
    pusher = await open_pusher()
    try:
        rejected = 0
        for chunk in _chunks(warmup):
            rejected += await pusher.push_bulk(chunk)
        watch = _Stopwatch()
        for chunk in _chunks(jobs):
            rejected += await pusher.push_bulk(chunk)
        seconds, cpu = watch.stop()
    finally:
        await pusher.close()
    return _result(mode, seconds, warmup + jobs, rejected=rejected, cpu_seconds=cpu)


def _runner(name: str, config: WorkerConfig) -> Callable[[str], dict[str, Any]]:
    """What runs one measurement (a mode) for contender ``name`` in this process."""
    if name in ("asyncio", "floor-asyncio"):

        async def open_pusher() -> AsyncPusher:
            if name == "asyncio":
                return OursAsync(config)
            return await AsyncFloor.open(config.url)

        shared = name == "asyncio"
        return lambda mode: asyncio.run(run_async(open_pusher, shared, mode, config))
    contender = {
        "floor-threads": SyncContender(lambda: FloorSocket(config.url), shared=False),
        "thread": SyncContender(lambda: OursSync("thread", config), shared=True),
        "gevent": SyncContender(lambda: OursSync("gevent", config), True, _greenlets),
        "faktory": SyncContender(lambda: FaktoryPeer(config), shared=False),
        "pyfaktory": SyncContender(lambda: PyfaktoryPeer(config), shared=False),
    }[name]
    return lambda mode: run_sync(contender, mode, config)


def worker_main(name: str) -> int:
    """Answer each mode read from stdin with one ``BENCH {json}`` line, until quit or EOF."""
    run = _runner(name, WorkerConfig.from_env())
    for line in sys.stdin:
        mode = line.strip()
        if mode == "quit":
            break
        try:
            if mode not in MODES:
                raise ValueError(f"unknown mode {mode!r}")
            result = run(mode)
        except Exception as error:
            result = {"mode": mode, "error": _error(error)}
        print("BENCH " + json.dumps(result), flush=True)
    return 0


# == the benchmark =============================================================================


@dataclass(frozen=True)
class Contender:
    name: str
    label: str
    argv: tuple[str, ...]
    env: dict[str, str]
    version: str
    unavailable: str | None = None


def _python_contender(name: str) -> Contender:
    argv = (sys.executable, str(Path(__file__).resolve()), "--worker", name)
    version, unavailable = "", None
    needs = {"gevent": "gevent", "faktory": "faktory", "pyfaktory": "pyfaktory"}.get(name)
    if needs is not None and importlib.util.find_spec(needs) is None:
        unavailable = f"not installed (.venv/bin/pip install {needs})"
    elif name in FLOORS:
        version = f"Python {sys.version.split()[0]}"
    elif name in OURS:
        version = importlib.metadata.version("faktory-sansio")
    else:
        version = importlib.metadata.version(name)
    return Contender(name, LABELS[name], argv, {}, version, unavailable)


def _node_contender(node_modules: Path | None) -> Contender:
    found = throughput._node_contender(node_modules)  # finds node and faktory-worker 4.x
    return Contender(
        "node",
        LABELS["node"],
        (found.argv[0], str(NODE_SCRIPT)),
        found.env,
        found.version,
        found.unavailable,
    )


def make_contenders(names: Sequence[str], node_modules: Path | None) -> list[Contender]:
    return [
        _node_contender(node_modules) if name == "node" else _python_contender(name)
        for name in names
    ]


@dataclass
class Run:
    contender: str
    round: int
    mode: str
    error: str | None = None
    skipped: str | None = None
    seconds: float | None = None
    rate: float | None = None  # jobs/s
    cpu_us: float | None = None  # the contender process's CPU time per job
    attempted: int = 0
    failed: int = 0
    rejected: int = 0
    queue_size: int | None = None  # the server's, after the measurement
    p50_us: float | None = None
    p90_us: float | None = None
    p99_us: float | None = None
    max_us: float | None = None
    latencies_ns: list[int] = field(default_factory=list, repr=False)


@dataclass(frozen=True)
class Settings:
    jobs: int
    producers: int
    warmup: int
    pool_size: int | None
    timeout: float


def _percentile(ordered: Sequence[int], fraction: float) -> float:
    """The nearest-rank percentile of sorted nanoseconds, in microseconds."""
    rank = max(math.ceil(fraction * len(ordered)) - 1, 0)
    return ordered[rank] / 1000


def _fill(run: Run, reply: dict[str, Any], settings: Settings) -> None:
    if reply.get("skipped"):
        run.skipped = str(reply["skipped"])
        return
    if reply.get("error"):
        run.error = str(reply["error"])
    run.seconds = reply.get("seconds")
    run.attempted = int(reply.get("attempted", 0))
    run.failed = int(reply.get("failed", 0))
    run.rejected = int(reply.get("rejected", 0))
    if run.seconds:
        run.rate = settings.jobs / run.seconds
    if reply.get("cpu_seconds") is not None:
        run.cpu_us = reply["cpu_seconds"] / settings.jobs * 1e6
    latencies = reply.get("latencies_ns")
    if latencies:
        run.latencies_ns = latencies
        ordered = sorted(latencies)
        run.p50_us = _percentile(ordered, 0.50)
        run.p90_us = _percentile(ordered, 0.90)
        run.p99_us = _percentile(ordered, 0.99)
        run.max_us = ordered[-1] / 1000


def _check(run: Run, admin: Admin, settings: Settings) -> None:
    """The queue must hold every job the contender pushed, and it must have pushed them all."""
    run.queue_size, _ = admin.queue_state(QUEUE)
    if run.skipped is not None or run.error is not None:
        return
    expected = settings.warmup + settings.jobs
    pushed = run.attempted - run.failed - run.rejected
    problems = []
    if run.attempted != expected or run.failed or run.rejected:
        problems.append(
            f"{run.attempted} attempted of {expected}, {run.failed} failed, {run.rejected} rejected"
        )
    if run.queue_size != pushed:
        problems.append(f"the server's queue holds {run.queue_size} jobs, {pushed} were pushed")
    if problems:
        run.error = "MISMATCH: " + "; ".join(problems)


class _Process:
    """A contender's worker process: commands on its stdin, ``BENCH`` lines from its stdout."""

    def __init__(self, contender: Contender, env: dict[str, str], stderr: IO[bytes]) -> None:
        self._stderr = stderr
        self.chatter: list[str] = []  # what else it printed
        self.proc = subprocess.Popen(
            contender.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            cwd=REPO_ROOT,
            start_new_session=True,
            preexec_fn=death_signal(),
        )
        self._replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, name="bench-reader", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            if line.startswith("BENCH "):
                try:
                    self._replies.put(json.loads(line[6:]))
                except ValueError as error:
                    self._replies.put({"error": f"an unreadable reply: {error}"})
            else:
                self.chatter = [*self.chatter[-19:], line]
        self._replies.put(None)

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()

    def reply(self, deadline: float) -> dict[str, Any] | str:
        """The next reply, or why there is none."""
        try:
            reply = self._replies.get(timeout=max(deadline - time.monotonic(), 0))
        except queue.Empty:
            return "timed out"
        if reply is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
            return f"the process exited with status {self.proc.returncode}: {self.output()}"
        return reply

    def output(self) -> str:
        return " | ".join([*self.chatter[-5:], throughput._tail(self._stderr, 800)])

    def stop(self, graceful: bool) -> None:
        """Ask it to quit (when ``graceful``) and wait a while; then kill its session."""
        if graceful:
            with contextlib.suppress(OSError):
                self.send("quit")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(_QUIT_WAIT)
        throughput._kill_session(self.proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def _worker_env(url: str, settings: Settings, contender: Contender) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("BENCH_") and key != "FAKTORY_URL"
    }
    env.update(contender.env)
    env.update(
        FAKTORY_URL=url,
        BENCH_QUEUE=QUEUE,
        BENCH_JOBTYPE=JOBTYPE,
        BENCH_JOBS=str(settings.jobs),
        BENCH_PRODUCERS=str(settings.producers),
        BENCH_WARMUP=str(settings.warmup),
        BENCH_CHUNK=str(CHUNK),
    )
    if settings.pool_size is not None:
        env["BENCH_POOL_SIZE"] = str(settings.pool_size)
    return env


def measure(
    admin: Admin, url: str, contender: Contender, settings: Settings, rnd: int
) -> list[Run]:
    """The three measurements of one contender in one process of its own."""
    runs = [Run(contender.name, rnd, mode) for mode in MODES]
    deadline = time.monotonic() + settings.timeout
    with tempfile.TemporaryFile() as stderr:
        process = _Process(contender, _worker_env(url, settings, contender), stderr)
        graceful = False  # it answered every command: let it quit by itself
        try:
            for index, run in enumerate(runs):
                admin.flush()
                process.send(run.mode)
                reply = process.reply(deadline)
                if isinstance(reply, str):
                    if reply == "timed out":
                        reply = (
                            f"timed out: no result within --timeout {settings.timeout:g} s "
                            f"(the process is killed); output: {process.output()}"
                        )
                    for rest in runs[index:]:
                        rest.error = reply
                    break
                _fill(run, reply, settings)
                _check(run, admin, settings)
            else:
                graceful = True
        except OSError as error:  # its stdin closed: it died
            for run in runs:
                if run.rate is None and run.error is None and run.skipped is None:
                    run.error = f"{_error(error)}; output: {process.output()}"
        finally:
            process.stop(graceful)
    admin.flush()
    return runs


# -- report -------------------------------------------------------------------------------------


def _median(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def _fmt(value: float | None, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def _kind(error: str) -> str:
    """TIMED OUT, MISMATCH (the queue does not hold what was pushed) or ERROR."""
    if error.startswith("timed out"):
        return "TIMED OUT"
    return "MISMATCH" if error.startswith("MISMATCH") else "ERROR"


def _describe(run: Run) -> str:
    if run.error is not None:
        return f"{run.mode} {_kind(run.error)}"
    if run.skipped is not None:
        return f"{run.mode} skipped ({run.skipped})"
    text = f"{run.mode} {_fmt(run.rate)} jobs/s"
    if run.p50_us is not None:
        text += f" (p50 {_fmt(run.p50_us)} us, p99 {_fmt(run.p99_us)} us)"
    return text


@dataclass
class Summary:
    """A contender's medians over its rounds."""

    rates: dict[str, float | None]
    p50_us: float | None
    p99_us: float | None
    cpu_us: float | None  # seq's, per job
    good: dict[str, int]  # rounds without an error, by mode
    skipped: dict[str, str]
    failed: dict[str, str]  # a mode's first error, when it failed in some round


def summarise(contender: Contender, runs: Sequence[Run]) -> Summary:
    mine = [run for run in runs if run.contender == contender.name]
    summary = Summary({}, None, None, None, {}, {}, {})
    for mode in MODES:
        of_mode = [run for run in mine if run.mode == mode]
        good = [run for run in of_mode if run.error is None and run.skipped is None]
        summary.rates[mode] = _median([run.rate for run in good])
        summary.good[mode] = len(good)
        skipped = [run.skipped for run in of_mode if run.skipped is not None]
        if skipped:
            summary.skipped[mode] = skipped[0]
        errors = [run.error for run in of_mode if run.error is not None]
        if errors:
            summary.failed[mode] = errors[0]
        if mode == "seq":
            summary.p50_us = _median([run.p50_us for run in good])
            summary.p99_us = _median([run.p99_us for run in good])
            summary.cpu_us = _median([run.cpu_us for run in good])
    return summary


def _cell(summary: Summary, mode: str) -> str:
    if mode in summary.skipped:
        return "n/a"
    text = _fmt(summary.rates[mode])
    if mode in summary.failed:
        if summary.good[mode]:
            return text + " ERR"
        return _kind(summary.failed[mode])
    return text


def _rounds_done(summary: Summary) -> int:
    """Rounds in which every mode the contender has worked."""
    return min(count for mode, count in summary.good.items() if mode not in summary.skipped)


LEGEND: Final = """\
  seq    one producer, one PUSH after another; p50/p99: per PUSH of that run, in us; CPU:
         the contender process's CPU time (all its threads) per job of that run, in us
  conc   {producers} producers: ours share ONE Client (pool {pool}): asyncio tasks, threads,
         greenlets; the floors and the Python peers one connection per producer (threads;
         floor (asyncio): tasks); faktory-worker one client, {producers} async pushers over
         its pool (up to 20 connections)
  bulk   PUSHB in chunks of {chunk}; n/a: the peer has no bulk API (faktory)
  medians over the rounds; ERR: an error in some round (listed below); MISMATCH: the
  server's queue did not hold exactly the jobs the contender pushed"""


def report(
    contenders: Sequence[Contender], runs: Sequence[Run], settings: Settings, rounds: int
) -> dict[str, Any]:
    header = (
        f"{'contender':<22} {'seq jobs/s':>11} {'conc jobs/s':>12} {'bulk jobs/s':>12} "
        f"{'p50 us':>7} {'p99 us':>7} {'CPU us':>6} {'rounds':>6}"
    )
    print()
    print(header)
    print("-" * len(header))
    summaries: dict[str, Summary] = {}
    for contender in contenders:
        if contender.unavailable is not None:
            print(f"{contender.label:<22} unavailable: {contender.unavailable}")
            continue
        summary = summaries[contender.name] = summarise(contender, runs)
        print(
            f"{contender.label:<22} {_cell(summary, 'seq'):>11} {_cell(summary, 'conc'):>12} "
            f"{_cell(summary, 'bulk'):>12} {_fmt(summary.p50_us):>7} {_fmt(summary.p99_us):>7} "
            f"{_fmt(summary.cpu_us, '.1f'):>6} {_rounds_done(summary)}/{rounds:<4}"
        )
    print()
    pool = settings.pool_size if settings.pool_size is not None else f"{_default_pool()}, default"
    print(LEGEND.format(producers=settings.producers, pool=pool, chunk=CHUNK))
    ratios = _ratios(summaries, runs)
    if ratios:
        print()
        print("ratios: of the medians; then, round by round, their median and range")
        width = max(len(text) for text, _, _ in ratios.values())
        for text, ratio, paired in ratios.values():
            by_round = ""
            if paired:
                by_round = (
                    f"   by round x{statistics.median(paired):.2f} "
                    f"(x{paired[0]:.2f} to x{paired[-1]:.2f})"
                )
            print(f"{text:<{width}}  x{ratio:.2f}{by_round}")
    errors = [run for run in runs if run.error is not None]
    if errors:
        print(f"\n!!! {len(errors)} measurement(s) FAILED:")
        for run in errors:
            print(f"  round {run.round} {LABELS[run.contender]} {run.mode}: {run.error}")
    return {
        name: {
            "rates": summary.rates,
            "p50_us": summary.p50_us,
            "p99_us": summary.p99_us,
            "cpu_us": summary.cpu_us,
            "good_rounds": summary.good,
            "skipped": summary.skipped,
            "errors": summary.failed,
        }
        for name, summary in summaries.items()
    } | {
        "ratios": {key: ratio for key, (_, ratio, _) in ratios.items()},
        "ratios_by_round": {key: paired for key, (_, _, paired) in ratios.items()},
    }


def _default_pool() -> Any:
    from faktory_adapters.thread import Client

    return inspect.signature(Client).parameters["pool_size"].default


def _paired(runs: Sequence[Run], mine: str, theirs: str, mode: str) -> list[float]:
    """``mine``'s rate over ``theirs``'s in each round both measured ``mode`` without error:
    the two ran minutes apart at most, where the medians may come from rounds that ran on a
    machine faster or slower by more than the difference measured."""
    rates: dict[tuple[str, int], float] = {
        (run.contender, run.round): run.rate
        for run in runs
        if run.mode == mode and run.error is None and run.skipped is None and run.rate
    }
    return sorted(
        rate / rates[theirs, rnd]
        for (name, rnd), rate in rates.items()
        if name == mine and (theirs, rnd) in rates
    )


def _ratios(
    summaries: dict[str, Summary], runs: Sequence[Run]
) -> dict[str, tuple[str, float, list[float]]]:
    """{key: (what, ratio of the medians, the ratios round by round)}, for those both sides
    of which have a median."""

    def rate(name: str, mode: str) -> float | None:
        summary = summaries.get(name)
        return None if summary is None else summary.rates.get(mode)

    pairs = [(name, "floor-threads", "seq") for name in OURS]
    for mode in ("conc", "bulk"):
        pairs += [
            ("asyncio", "floor-asyncio", mode),
            ("thread", "floor-threads", mode),
            ("gevent", "floor-threads", mode),
        ]
    peers = [(rate(peer, "conc") or 0.0, peer) for peer in PYTHON_PEERS]
    best_peer = max(peers)[1] if any(value for value, _ in peers) else None
    if best_peer is not None:
        pairs.append(("thread", best_peer, "conc"))
    pairs.append(("asyncio", "node", "conc"))
    ratios: dict[str, tuple[str, float, list[float]]] = {}
    for mine, theirs, mode in pairs:
        a, b = rate(mine, mode), rate(theirs, mode)
        if a is None or not b:
            continue
        label = LABELS[theirs]
        if theirs == best_peer:
            label = f"the best Python peer, {label},"
        ratios[f"{mine}/{theirs} {mode}"] = (
            f"{LABELS[mine]} {mode} / {label} {mode}",
            a / b,
            _paired(runs, mine, theirs, mode),
        )
    return ratios


# == main ======================================================================================


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs per measurement (10000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (3)")
    parser.add_argument("--producers", type=int, default=16, help="for conc (16)")
    parser.add_argument(
        "--pool-size", type=int, help="our Clients' pool_size (default: the Clients' default)"
    )
    parser.add_argument("--warmup", type=int, default=200, help="untimed pushes first (200)")
    parser.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help=f"comma-separated, of {', '.join(CONTENDERS)} (all)",
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="per contender and round, s (300)"
    )
    parser.add_argument("--url", help="an existing server (it is FLUSHed!); default: our own")
    parser.add_argument("--node-modules", type=Path, help="where faktory-worker is installed")
    parser.add_argument("--json", metavar="FILE", type=Path, help="write every figure there")
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.contenders.split(",") if name.strip()]
    unknown = sorted(set(names) - set(CONTENDERS))
    if unknown:
        parser.error(f"unknown contenders: {', '.join(unknown)}")
    if not names:
        parser.error("no contenders")
    if min(args.jobs, args.rounds, args.producers) < 1 or args.warmup < 0:
        parser.error("--jobs, --rounds and --producers must be positive, --warmup not negative")
    if args.pool_size is not None and args.pool_size < 1:
        parser.error("--pool-size must be positive")
    args.names = [name for name in CONTENDERS if name in names]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.worker:
        return worker_main(args.worker)
    signal.signal(signal.SIGTERM, throughput._terminated)
    settings = Settings(args.jobs, args.producers, args.warmup, args.pool_size, args.timeout)
    contenders = make_contenders(args.names, args.node_modules)
    machine: dict[str, Any] = {"cpus": os.cpu_count(), "load_before": os.getloadavg()}
    runs: list[Run] = []
    server: dict[str, Any] = {}
    code = 0
    try:
        _rounds(args, settings, contenders, runs, server)
    except (KeyboardInterrupt, throughput._Terminated):
        print("interrupted: the workers and the server are stopped", file=sys.stderr)
        code = 130
    machine["load_after"] = os.getloadavg()
    summary = report(contenders, runs, settings, args.rounds)
    print(
        f"\nmachine: {machine['cpus']} CPUs; load average (1, 5, 15 min) before "
        f"{_load(machine['load_before'])}, after {_load(machine['load_after'])}"
    )
    if args.json:
        data = {
            "settings": asdict(settings) | {"rounds": args.rounds, "chunk": CHUNK},
            "machine": machine,
            "server": server,
            "contenders": [asdict(contender) for contender in contenders],
            "runs": [asdict(run) for run in runs],
            "summary": summary,
        }
        args.json.write_text(json.dumps(data))
        print(f"figures written to {args.json}")
    if any(run.error is not None for run in runs):
        code = code or 1
    return code


def _load(load: Sequence[float]) -> str:
    return ", ".join(f"{value:.2f}" for value in load)


def _rounds(
    args: argparse.Namespace,
    settings: Settings,
    contenders: Sequence[Contender],
    runs: list[Run],
    server: dict[str, Any],
) -> None:
    available = [contender for contender in contenders if contender.unavailable is None]
    with throughput._server(args.url) as url:
        admin = Admin(url)
        try:
            server.update(admin.info()["server"])
            pool = settings.pool_size or f"{_default_pool()} (default)"
            print(
                f"{settings.jobs:,} jobs per measurement (+{settings.warmup} warm-up), "
                f"{settings.producers} producers, pool size {pool}, {args.rounds} round(s); "
                f"Faktory {server.get('faktory_version')}, {os.cpu_count()} CPUs, "
                f"Python {sys.version.split()[0]}"
            )
            for contender in contenders:
                print(f"  {contender.label:<22} {contender.unavailable or contender.version}")
            for rnd, contender in throughput.rotating(available, args.rounds):
                done = measure(admin, url, contender, settings, rnd)
                runs.extend(done)
                described = ", ".join(_describe(run) for run in done)
                print(f"round {rnd} {contender.label:<22} {described}", flush=True)
        finally:
            admin.close()


if __name__ == "__main__":
    sys.exit(main())
