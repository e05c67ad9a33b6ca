"""Jobs per second draining a queue of no-op jobs: our Workers against their peers.

Each round, for each contender in turn (the order rotates from round to round): FLUSH the
server, PUSHB ``--jobs`` no-op jobs (chunks of 1,000) to a fresh queue, start the contender's
worker on that queue in a process of its own, and poll INFO (every ``--poll`` s) until the
queue is empty and nothing is reserved (``faktory.sets.working`` is 0); then stop the worker
(ours: ``worker.stop()``; the peers: SIGTERM, then SIGKILL). The contenders:

    ours       faktory_adapters.asyncio.Worker with an ``async def`` no-op
    thread     faktory_adapters.thread.Worker with a plain no-op
    gevent     faktory_adapters.gevent.Worker with a plain no-op
    faktory    the PyPI package ``faktory`` (use_threads=True)
    pyfaktory  the PyPI package ``pyfaktory`` (a Pebble process pool)
    node       faktory-worker 4.x from npm (benchmarks/peers/node_worker.js)

and ours again with an observer, to measure what it costs (their ratio to plain ``ours`` is
printed as an overhead):

    ours+observer  ours observed by a WorkerObserver that does nothing: the hooks' own cost
    ours+metrics   ours observed by PrometheusMetrics (prometheus_client; nothing scrapes it)
    ours+tracing   ours instrumented by faktory_adapters.opentelemetry, on an SDK
                   TracerProvider whose batch processor hands the spans to an exporter that
                   drops them: the cost of making the spans, not of shipping them. The jobs
                   are pushed without a trace context, so each gets a root span.

Per contender it prints the medians over the rounds of:

    drain jobs/s   the jobs left when the first FETCH is seen, over the time from then until
                   drained: the steady rate, without the process start-up
    spawn jobs/s   --jobs over the time from spawning the process until drained
    startup s      from spawning the process until the first job leaves the queue
    CPU us/job     user + system CPU of the worker's processes while draining, per job
    RSS MiB        peak RSS (VmHWM) of the worker process, read once drained
    tree MiB       the same summed over every process of its session (pyfaktory's pool)
    stop s         from the stop request until the process exited (* when it had to be
                   killed)
    conns          the most server connections the worker held open at once, as the server
                   counts them (the highest over the rounds): INFO's ``server.connections``,
                   read at every poll from spawn until drained, minus the figure read just
                   before the spawn (the benchmark's own admin connection, which does all the
                   polling, once a stopped worker's connections are gone: the server counts a
                   connection until it reads its EOF, up to 2 s for one blocked in a FETCH).
                   Ours open min(connections, concurrency) job connections plus a heartbeat
                   one (21 with the default of 20); a peer opens what its design does. A
                   connection that lives less than --poll between two reads can be missed.

and the ratio of ours to each peer. Each round's line also gives the machine's CPUs' busy
share while draining (all processes: the worker, the server, Redis, and anything else running:
a noisy neighbour shows there). A peer that cannot be found or does not work is reported
as unavailable, a worker that does not drain within ``--timeout`` s as timed out; both are
then killed and the run goes on. The peers are installed by hand:

    .venv/bin/pip install faktory pyfaktory
    npm install --prefix /tmp/fw-bench faktory-worker@4     # or --node-modules DIR

Usage (a private Faktory is started unless ``--url`` is given; the server is FLUSHed):

    .venv/bin/python benchmarks/throughput.py [--jobs 20000] [--concurrency 20] [--rounds 3]
        [--contenders ours,faktory,pyfaktory,node] [--sleep SECONDS] [--connections N]
        [--timeout SECONDS] [--profile ours.prof]

``--connections N`` is passed to our three Workers as ``Worker(connections=N)``, the job
connections that feed their slots (without it, the Worker's default, 20); the peers ignore it.
``--timeout`` (to drain, from the spawn) defaults to 120 s plus three times what the sleeps
alone take (jobs x --sleep / concurrency).

``--profile FILE`` runs only ours (the first of ours in --contenders: ``ours+metrics``, say),
under cProfile, and prints where its time went.

``--sleep SECONDS`` makes every job sleep that long, each contender with its runtime's own
sleep, instead of being a no-op: ``await asyncio.sleep`` (ours), ``time.sleep`` (thread, and
the peers faktory and pyfaktory, whose jobs run on threads or processes), ``gevent.sleep``
(gevent), and ``setTimeout`` (node, once benchmarks/peers/node_worker.js reads BENCH_SLEEP;
until then it is reported as skipped). It is the high-concurrency workload, where wake-up
paths, socket buffers and per-link costs show, e.g.:

    .venv/bin/python benchmarks/throughput.py --contenders ours,thread,gevent \\
        --concurrency 500 --jobs 5000 --sleep 0.05 --rounds 2

The drain rate is then bounded by concurrency / SECONDS jobs/s (10,000 for the above); the
CPU per job includes the cost of the sleeps' timers and wake-ups. Thousands of slots on a few
connections:

    .venv/bin/python benchmarks/throughput.py --contenders ours,gevent \\
        --concurrency 5000 --jobs 50000 --sleep 1 --rounds 2

is bounded by 5,000 jobs/s, and by what the machine's CPUs give the worker and the server
together (the no-op drain at the same concurrency is the other bound); conns stays at 21.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import IO, Any, Final, TypeVar

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from faktory_adapters._supervisor import death_signal  # noqa: E402
from faktory_core import NEED_DATA, Command, Connection, Event, Job, ServerURL  # noqa: E402
from faktory_core.commands import Flush, Info, PushBulk  # noqa: E402
from faktory_core.events import (  # noqa: E402
    OK,
    BulkPushed,
    ConnectionClosed,
    InfoReply,
    Ready,
    ServerError,
)

JOBTYPE: Final = "noop"
PUSH_CHUNK: Final = 1000
NODE_SCRIPT: Final = REPO_ROOT / "benchmarks" / "peers" / "node_worker.js"
CONTENDERS: Final = (
    "ours",
    "thread",
    "gevent",
    "faktory",
    "pyfaktory",
    "node",
    "ours+observer",
    "ours+metrics",
    "ours+tracing",
)
#: Ours with an observer: compared with plain "ours" as an overhead.
OBSERVED: Final = ("ours+observer", "ours+metrics", "ours+tracing")
OURS: Final = ("ours", "thread", "gevent", *OBSERVED)
LABELS: Final = {
    "ours": "ours (asyncio)",
    "thread": "ours (thread)",
    "gevent": "ours (gevent)",
    "ours+observer": "ours + observer",
    "ours+metrics": "ours + metrics",
    "ours+tracing": "ours + tracing",
    "faktory": "faktory (PyPI)",
    "pyfaktory": "pyfaktory (PyPI)",
    "node": "faktory-worker (npm)",
}
_STARTUP_POLL: Final = 0.005  # until the first job leaves the queue, to time the start-up
#: How long each job sleeps (--sleep), in a worker process; 0: a no-op.
_SLEEP: Final = float(os.environ.get("BENCH_SLEEP") or 0)
_CLK_TCK: Final = os.sysconf("SC_CLK_TCK")


# -- the worker processes ---------------------------------------------------------------------


def _sync_noop(*args: object) -> None:
    """The peers' handler (module level: pyfaktory pickles it into its pool)."""


def _sync_sleep(*args: object) -> None:
    """With --sleep: the thread adapter's and the peers' handler (module level, as above)."""
    time.sleep(_SLEEP)


def _gevent_sleep(*args: object) -> None:
    """With --sleep: the gevent adapter's handler."""
    import gevent

    gevent.sleep(_SLEEP)


async def _async_noop(*args: object) -> None:
    return None


async def _async_sleep(*args: object) -> None:
    """With --sleep: the asyncio adapter's handler."""
    import asyncio

    await asyncio.sleep(_SLEEP)


def _handler(adapter: str) -> Callable[..., Any]:
    """Our adapter's handler: a no-op, or with --sleep its runtime's own sleep."""
    if adapter == "asyncio":
        return _async_sleep if _SLEEP else _async_noop
    if adapter == "gevent" and _SLEEP:
        return _gevent_sleep
    return _sync_sleep if _SLEEP else _sync_noop


def _peer_handler() -> Callable[..., None]:
    return _sync_sleep if _SLEEP else _sync_noop


def _child_settings() -> tuple[str, str, int]:
    return (
        os.environ["FAKTORY_URL"],
        os.environ["BENCH_QUEUE"],
        int(os.environ["BENCH_CONCURRENCY"]),
    )


def _observe_nothing(worker: Any) -> None:
    from faktory_adapters import WorkerObserver

    worker.observe(WorkerObserver())  # its methods do nothing: what being observed costs


def _observe_metrics(worker: Any) -> None:
    from faktory_adapters.prometheus import PrometheusMetrics

    worker.observe(PrometheusMetrics())


def _observe_tracing(worker: Any) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from faktory_adapters.opentelemetry import instrument_worker

    class Dropped(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped()))
    instrument_worker(worker, tracer_provider=provider)


def _run_ours(adapter: str = "asyncio", observe: Callable[[Any], None] | None = None) -> int:
    module: Any = importlib.import_module(f"faktory_adapters.{adapter}")
    url, queue, concurrency = _child_settings()
    options: dict[str, Any] = {}
    if os.environ.get("BENCH_CONNECTIONS"):  # --connections; else the Worker's default
        options["connections"] = int(os.environ["BENCH_CONNECTIONS"])
    worker = module.Worker(url=url, queues=[queue], concurrency=concurrency, **options)
    worker.register(JOBTYPE, _handler(adapter))
    if observe is not None:
        observe(worker)

    def stop_on_request() -> None:
        # A line, or EOF when the benchmark died: stop as asked, else fall back on SIGTERM.
        sys.stdin.readline()
        try:
            worker.stop()
        except RuntimeError:
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_on_request, name="bench-stop", daemon=True).start()
    profile = os.environ.get("BENCH_PROFILE")
    if not profile:
        code: int = worker.run()
        return code
    import cProfile

    profiler = cProfile.Profile()
    try:
        code = profiler.runcall(worker.run)
    finally:
        profiler.dump_stats(profile)
    return code


def _run_faktory() -> int:
    faktory: Any = importlib.import_module("faktory")
    url, queue, concurrency = _child_settings()
    worker = faktory.Worker(faktory=url, queues=[queue], concurrency=concurrency, use_threads=True)
    worker.register(JOBTYPE, _peer_handler())
    worker.run()  # exits the process itself
    return 0


def _run_pyfaktory() -> int:
    pyfaktory: Any = importlib.import_module("pyfaktory")
    url, queue, concurrency = _child_settings()
    # As its README does: leaving the `with` ends the heartbeat thread (within its 15 s sleep),
    # which would otherwise keep the process alive after run() has exited.
    with pyfaktory.Client(faktory_url=url, role="consumer") as client:
        consumer = pyfaktory.Consumer(
            client=client, queues=[queue], priority="strict", concurrency=concurrency
        )
        consumer.register(JOBTYPE, _peer_handler())
        consumer.run()  # raises SystemExit when stopped
    return 0


_CHILDREN: Final[dict[str, Callable[[], int]]] = {
    "ours": _run_ours,
    "thread": lambda: _run_ours("thread"),
    "gevent": lambda: _run_ours("gevent"),
    "ours+observer": lambda: _run_ours("asyncio", _observe_nothing),
    "ours+metrics": lambda: _run_ours("asyncio", _observe_metrics),
    "ours+tracing": lambda: _run_ours("asyncio", _observe_tracing),
    "faktory": _run_faktory,
    "pyfaktory": _run_pyfaktory,
}


# -- a blocking admin client --------------------------------------------------------------------


class Admin:
    """One blocking connection driving faktory_core: FLUSH, PUSHB and INFO."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        address = ServerURL.parse(url)
        self._connection = Connection(password=address.password)
        self._sock = socket.create_connection((address.host, address.port), timeout=timeout)
        event = self._next_event()
        if not isinstance(event, Ready):
            self._sock.close()
            raise RuntimeError(f"the handshake with the server failed: {event}")

    def close(self) -> None:
        self._sock.close()

    def _next_event(self) -> Event:
        connection = self._connection
        while True:
            event = connection.next_event()
            data = connection.data_to_send()
            if data:
                self._sock.sendall(data)
            if event is not NEED_DATA:
                if isinstance(event, ConnectionClosed):
                    raise RuntimeError("the server closed the admin connection")
                return event
            connection.receive_data(self._sock.recv(65536))

    def request(self, command: Command) -> Event:
        self._connection.send(command)
        event = self._next_event()
        if isinstance(event, ServerError):
            raise RuntimeError(f"{type(command).__name__}: {event.code} {event.message}")
        return event

    def flush(self) -> None:
        event = self.request(Flush())
        assert isinstance(event, OK), event

    def info(self) -> dict[str, Any]:
        event = self.request(Info())
        assert isinstance(event, InfoReply), event
        return event.info

    def queue_state(self, queue: str) -> tuple[int, int]:
        """(jobs waiting in ``queue``, jobs reserved by workers). benchmarks/push.py uses it."""
        stats = self.info()["faktory"]
        return int(stats["queues"].get(queue, 0)), int(stats["sets"]["working"])

    def drain_state(self, queue: str) -> tuple[int, int, int]:
        """(jobs waiting in ``queue``, jobs reserved by workers, the server's connections), from
        one INFO. The connections are INFO's ``server.connections``: every client connection
        open after its handshake, this one included."""
        info = self.info()
        stats = info["faktory"]
        return (
            int(stats["queues"].get(queue, 0)),
            int(stats["sets"]["working"]),
            int(info["server"]["connections"]),
        )

    def connections(self) -> int:
        """INFO's ``server.connections``: the server's client connections, this one included."""
        return int(self.info()["server"]["connections"])

    def settled_connections(self, timeout: float = 8.0, steady: float = 3.0) -> int:
        """The server's connections once those of a worker just stopped are gone.

        The server counts a connection until its goroutine reads the EOF, and one blocked in a
        FETCH does not read before the FETCH times out (2 s): wait until the figure is down to
        this admin connection alone, or (another client of an existing ``--url`` server) has
        not changed for ``steady`` s, or ``timeout`` s have passed."""
        deadline = time.monotonic() + timeout
        count = self.connections()
        steady_since = time.monotonic()
        while count > 1:
            now = time.monotonic()
            if now >= deadline or now - steady_since >= steady:
                break
            time.sleep(0.02)
            latest = self.connections()
            if latest != count:
                count, steady_since = latest, time.monotonic()
        return count

    def push(self, queue: str, count: int) -> None:
        for start in range(0, count, PUSH_CHUNK):
            jobs = tuple(
                Job(jid=secrets.token_hex(12), jobtype=JOBTYPE, queue=queue)
                for _ in range(min(PUSH_CHUNK, count - start))
            )
            event = self.request(PushBulk(jobs=jobs))
            assert isinstance(event, BulkPushed), event
            if event.errors:
                raise RuntimeError(f"PUSHB refused {len(event.errors)} jobs: {event.errors}")


# -- processes ----------------------------------------------------------------------------------


def _session_members(sid: int) -> list[int]:
    """Every live process of session ``sid`` (the worker started its own)."""
    members: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _stat_fields(int(entry))
        if stat is not None and int(stat[3]) == sid and stat[0] not in ("Z", "X"):
            members.append(int(entry))
    return members


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def _cpu_seconds(pids: Sequence[int]) -> float:
    ticks = 0
    for pid in pids:
        stat = _stat_fields(pid)
        if stat is not None:
            ticks += int(stat[11]) + int(stat[12])  # utime, stime
    return ticks / _CLK_TCK


def _host_ticks() -> tuple[int, int]:
    """(all CPU ticks of the machine, idle ones) from /proc/stat."""
    fields = [int(field) for field in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:8]), fields[3] + fields[4]  # user..steal; idle + iowait


def _vm_hwm_kib(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def _kill_session(pid: int) -> None:
    for member in [pid, *_session_members(pid)]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(member, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _tail(stream: IO[bytes], limit: int = 1500) -> str:
    stream.seek(0, io.SEEK_END)
    size = stream.tell()
    stream.seek(max(0, size - limit))
    text = stream.read().decode("utf-8", "replace").strip()
    return text.replace("\n", "\n      ") if text else "(no output)"


# -- contenders ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Contender:
    name: str
    label: str
    argv: tuple[str, ...]
    env: dict[str, str]
    stop_by_stdin: bool  # ours: a line on stdin calls worker.stop()
    version: str
    unavailable: str | None = None
    skipped: str | None = None  # available, but not for this workload

    @property
    def absent(self) -> str | None:
        """Why it does not run, as reported; None when it runs."""
        if self.unavailable is not None:
            return f"unavailable: {self.unavailable}"
        if self.skipped is not None:
            return f"skipped: {self.skipped}"
        return None


def _python_contender(name: str, distribution: str | None) -> Contender:
    argv = (sys.executable, str(Path(__file__).resolve()), "--worker", name)
    version, unavailable = "", None
    if distribution is None:
        version = importlib.metadata.version("faktory-sansio")
    elif importlib.util.find_spec(distribution) is None:
        unavailable = f"not installed (.venv/bin/pip install {distribution})"
    else:
        version = importlib.metadata.version(distribution)
    return Contender(name, LABELS[name], argv, {}, name in OURS, version, unavailable)


def _node_contender(node_modules: Path | None) -> Contender:
    name = "node"
    node = shutil.which("node")
    candidates = (
        [node_modules]
        if node_modules is not None
        else [NODE_SCRIPT.parent / "node_modules", Path("/tmp/fw-bench/node_modules")]
    )
    found = next((path for path in candidates if (path / "faktory-worker").is_dir()), None)
    argv = (node or "node", str(NODE_SCRIPT))
    unavailable, version = None, ""
    if node is None:
        unavailable = "node is not on PATH"
    elif found is None:
        where = " or ".join(str(path) for path in candidates)
        unavailable = (
            f"faktory-worker not found in {where} "
            "(npm install --prefix /tmp/fw-bench faktory-worker@4)"
        )
    else:
        try:
            package = json.loads((found / "faktory-worker" / "package.json").read_text())
            node_version = subprocess.run(
                [node, "--version"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, ValueError, subprocess.SubprocessError) as error:
            unavailable = f"cannot run node or read faktory-worker: {error}"
        else:
            version = f"{package.get('version', '?')}, node {node_version}"
            if not str(package.get("version", "")).startswith("4."):
                unavailable = f"faktory-worker {package.get('version')} found; 4.x is needed"
    env = {"NODE_PATH": str(found)} if found is not None else {}
    return Contender(name, LABELS[name], argv, env, False, version, unavailable)


def make_contenders(
    names: Sequence[str], node_modules: Path | None, sleep: float = 0.0
) -> list[Contender]:
    made: list[Contender] = []
    for name in names:
        if name == "node":
            made.append(_node_contender(node_modules))
        else:
            made.append(_python_contender(name, None if name in OURS else name))
    if sleep:
        made = [replace(contender, skipped=_cannot_sleep(contender)) for contender in made]
    return made


def _cannot_sleep(contender: Contender) -> str | None:
    """Why ``contender`` cannot run the --sleep workload, or None."""
    if contender.name == "node" and "BENCH_SLEEP" not in NODE_SCRIPT.read_text():
        return (
            f"no --sleep: {NODE_SCRIPT.relative_to(REPO_ROOT)} runs a no-op only (it does not "
            "read BENCH_SLEEP)"
        )
    return None


# -- one measurement ----------------------------------------------------------------------------


@dataclass
class Run:
    contender: str
    round: int
    error: str | None = None
    drain_rate: float | None = None
    spawn_rate: float | None = None
    startup: float | None = None
    cpu_us: float | None = None
    rss_kib: int | None = None
    tree_kib: int | None = None
    processes: int = 0
    baseline_conns: int | None = None  # the server's connections before the worker started
    peak_conns: int | None = None  # the most the worker held at once (baseline subtracted)
    host_busy: float | None = None  # how busy the machine's CPUs were while draining, %
    stop_seconds: float | None = None
    exit_code: int | None = None
    killed: bool = False  # did not stop on its own within --stop-timeout
    note: str = ""


@dataclass(frozen=True)
class Settings:
    jobs: int
    concurrency: int
    timeout: float
    stop_timeout: float
    poll: float
    profile: str | None
    sleep: float = 0.0  # each job's, in seconds (--sleep); 0: a no-op
    connections: int | None = None  # ours: Worker(connections=...) (--connections); None: default


def measure(admin: Admin, url: str, contender: Contender, settings: Settings, rnd: int) -> Run:
    run = Run(contender.name, rnd)
    jobs = settings.jobs
    admin.flush()
    name = contender.name.replace("+", "-")  # a queue name has no "+"
    queue = f"bench_{name}_{rnd}_{secrets.token_hex(4)}"
    admin.push(queue, jobs)
    waiting, working = admin.queue_state(queue)
    if (waiting, working) != (jobs, 0):
        run.error = f"after PUSHB the queue holds {waiting} jobs and {working} are reserved"
        return run
    # The benchmark's own connections (the admin one; more only with --url and other clients).
    run.baseline_conns = admin.settled_connections()
    env = dict(os.environ)
    env.pop("BENCH_PROFILE", None)
    env.pop("BENCH_SLEEP", None)
    env.update(contender.env)
    env.update(
        FAKTORY_URL=url,
        BENCH_QUEUE=queue,
        BENCH_CONCURRENCY=str(settings.concurrency),
        BENCH_JOBTYPE=JOBTYPE,
    )
    if settings.sleep:
        env["BENCH_SLEEP"] = repr(settings.sleep)
    env.pop("BENCH_CONNECTIONS", None)
    if settings.connections is not None and contender.name in OURS:
        env["BENCH_CONNECTIONS"] = str(settings.connections)
    if settings.profile and contender.name in OURS:
        env["BENCH_PROFILE"] = settings.profile
    with tempfile.TemporaryFile() as output:
        spawned = time.monotonic()
        proc = subprocess.Popen(
            contender.argv,
            stdin=subprocess.PIPE if contender.stop_by_stdin else subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO_ROOT,
            start_new_session=True,
            preexec_fn=death_signal(),
        )
        try:
            _watch(admin, proc, queue, settings, spawned, run)
        finally:
            _stop(proc, contender, settings.stop_timeout, run)
        if run.error is not None:
            run.error += f"\n      worker output: {_tail(output)}"
            return run
    stats = admin.info()["faktory"]
    processed, failures = int(stats["total_processed"]), int(stats["total_failures"])
    if failures or processed < jobs:
        run.error = f"{processed} jobs processed and {failures} failed, of {jobs}"
    if contender.name in OURS and run.exit_code != 0:
        run.note = f"exit code {run.exit_code}"
    return run


def _watch(
    admin: Admin,
    proc: subprocess.Popen[bytes],
    queue: str,
    settings: Settings,
    spawned: float,
    run: Run,
) -> None:
    """Poll INFO until the queue is drained with nothing reserved; fill in ``run``."""
    deadline = spawned + settings.timeout
    first_at: float | None = None
    first_left = 0
    first_cpu = 0.0
    first_host = (0, 0)
    baseline = run.baseline_conns or 0
    while True:
        code = proc.poll()
        if code is not None:
            run.error = f"the worker exited with status {code} before the queue was drained"
            return
        waiting, working, connections = admin.drain_state(queue)
        now = time.monotonic()
        held = connections - baseline
        run.peak_conns = held if run.peak_conns is None else max(run.peak_conns, held)
        if first_at is None and waiting < settings.jobs:
            first_at, first_left = now, waiting + working
            first_cpu = _cpu_seconds(_session_members(proc.pid))
            first_host = _host_ticks()
        if waiting == 0 and working == 0:
            break
        if now >= deadline:
            run.error = (
                f"timed out: {waiting} jobs waiting and {working} reserved "
                f"after {settings.timeout:g} s"
            )
            return
        time.sleep(_STARTUP_POLL if first_at is None else settings.poll)
    members = _session_members(proc.pid)
    cpu = _cpu_seconds(members)
    host_total, host_idle = _host_ticks()
    assert first_at is not None
    run.drain_rate = first_left / max(now - first_at, 1e-9)
    run.spawn_rate = settings.jobs / (now - spawned)
    run.startup = first_at - spawned
    run.cpu_us = (cpu - first_cpu) / max(first_left, 1) * 1e6
    run.rss_kib = _vm_hwm_kib(proc.pid)
    run.tree_kib = sum(_vm_hwm_kib(pid) or 0 for pid in members)
    run.processes = len(members)
    total, idle = host_total - first_host[0], host_idle - first_host[1]
    run.host_busy = 100 * (1 - idle / total) if total > 0 else None


def _stop(proc: subprocess.Popen[bytes], contender: Contender, timeout: float, run: Run) -> None:
    """Stop gracefully, then by SIGTERM, then SIGKILL; kill whatever of its session remains."""
    started = time.monotonic()
    try:
        steps: list[Callable[[], None]] = []
        if contender.stop_by_stdin:
            steps.append(lambda: _ask_to_stop(proc))
        steps.append(lambda: proc.send_signal(signal.SIGTERM))
        for step in steps:
            if proc.poll() is not None:
                break
            with contextlib.suppress(OSError):
                step()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                run.note = f"did not stop within {timeout:g} s"
            else:
                break
        else:
            run.killed = proc.poll() is None
    finally:
        _kill_session(proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        run.exit_code = proc.returncode
        run.stop_seconds = time.monotonic() - started
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()


def _ask_to_stop(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdin is not None
    proc.stdin.write(b"stop\n")
    proc.stdin.flush()


# -- report -------------------------------------------------------------------------------------


def _median(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _describe(run: Run) -> str:
    if run.error is not None:
        return f"FAILED: {run.error}"
    mib = (run.rss_kib or 0) / 1024
    text = (
        f"drain {_fmt(run.drain_rate, ',.0f')} jobs/s, spawn {_fmt(run.spawn_rate, ',.0f')} "
        f"jobs/s, startup {_fmt(run.startup, '.2f')} s, {_fmt(run.cpu_us, '.0f')} us CPU/job, "
        f"RSS {mib:.1f} MiB, stop {_fmt(run.stop_seconds, '.2f')} s, "
        f"{_fmt(run.peak_conns, 'd')} conns at most (server {_fmt(run.baseline_conns, 'd')} "
        f"before), host CPUs {_fmt(run.host_busy, '.0f')}% busy"
    )
    if run.processes > 1:
        text += f", {run.processes} processes {(run.tree_kib or 0) / 1024:.1f} MiB"
    return text + (f" ({run.note})" if run.note else "")


def report(contenders: Sequence[Contender], runs: Sequence[Run], rounds: int) -> None:
    header = (
        f"{'contender':<22} {'drain jobs/s':>12} {'spawn jobs/s':>12} {'startup s':>9} "
        f"{'CPU us/job':>10} {'RSS MiB':>8} {'tree MiB':>8} {'stop s':>6} {'conns':>5} "
        f"{'rounds':>6}"
    )
    print()
    print(header)
    print("-" * len(header))
    medians: dict[str, tuple[float | None, float | None]] = {}
    cpu: dict[str, float | None] = {}  # median CPU us/job
    for contender in contenders:
        if contender.absent is not None:
            print(f"{contender.label:<22} {contender.absent}")
            continue
        mine = [run for run in runs if run.contender == contender.name]
        good = [run for run in mine if run.error is None]
        if not good:
            reason = mine[0].error.splitlines()[0] if mine and mine[0].error else "no round run"
            print(f"{contender.label:<22} unavailable: {reason}")
            continue
        drain = _median([run.drain_rate for run in good])
        spawn = _median([run.spawn_rate for run in good])
        medians[contender.name] = (drain, spawn)
        cpu[contender.name] = _median([run.cpu_us for run in good])
        rss = _median([None if run.rss_kib is None else run.rss_kib / 1024 for run in good])
        tree = _median([None if run.tree_kib is None else run.tree_kib / 1024 for run in good])
        peaks = [run.peak_conns for run in good if run.peak_conns is not None]
        conns = str(max(peaks)) if peaks else "-"
        print(
            f"{contender.label:<22} {_fmt(drain, ',.0f'):>12} {_fmt(spawn, ',.0f'):>12} "
            f"{_fmt(_median([run.startup for run in good]), '.2f'):>9} "
            f"{_fmt(cpu[contender.name], ',.0f'):>10} "
            f"{_fmt(rss, '.1f'):>8} {_fmt(tree, '.1f'):>8} "
            f"{_fmt(_median([run.stop_seconds for run in good]), '.2f'):>5}"
            f"{'*' if any(run.killed for run in good) else ' '} "
            f"{conns:>5} {len(good)}/{rounds:<4}"
        )
    print()
    if any(run.killed for run in runs):
        print("* killed: did not exit within --stop-timeout of SIGTERM\n")
    ours = medians.get("ours")
    for contender in contenders:
        peer = medians.get(contender.name)
        if contender.name == "ours" or ours is None or peer is None:
            continue
        ratios = [
            f"{kind} x{mine / theirs:.2f}"
            for kind, mine, theirs in zip(("drain", "spawn"), ours, peer, strict=True)
            if mine is not None and theirs
        ]
        if contender.name in OBSERVED:
            overhead = _overhead(peer, ours, cpu[contender.name], cpu["ours"])
            print(f"{contender.label} / ours: {overhead}")
        else:
            print(f"ours / {contender.label}: {', '.join(ratios)}")
    failed = [run for run in runs if run.error is not None]
    for run in failed:
        print(f"round {run.round} {LABELS[run.contender]}: {run.error}")


def _overhead(
    observed: tuple[float | None, float | None],
    plain: tuple[float | None, float | None],
    observed_cpu: float | None,
    plain_cpu: float | None,
) -> str:
    """The drain and spawn rates and the CPU per job of ours observed over plain ours: the
    drain rate is what users see, the CPU per job the cost, less blurred by the server."""
    parts = [
        f"{kind} x{mine / theirs:.3f}"
        for kind, mine, theirs in zip(("drain", "spawn"), observed, plain, strict=True)
        if mine is not None and theirs
    ]
    if observed_cpu is not None and plain_cpu:
        parts.append(f"CPU/job x{observed_cpu / plain_cpu:.3f}")
    return ", ".join(parts)


def print_profile(path: str) -> None:
    import pstats

    for key in ("tottime", "cumulative"):
        print(f"\n-- ours under cProfile, by {key} ({path}) --")
        stream = io.StringIO()
        stats = pstats.Stats(path, stream=stream)
        stats.sort_stats(key).print_stats(30)
        print(stream.getvalue().split("\n", 6)[-1].rstrip())


# -- main ---------------------------------------------------------------------------------------


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per run (20000)")
    parser.add_argument("--concurrency", type=int, default=20, help="per worker (20)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (3)")
    parser.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help=f"comma-separated, of {', '.join(CONTENDERS)} (all)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        help="to drain, s (120, plus 3 x jobs x --sleep / concurrency: what the sleeps take)",
    )
    parser.add_argument(
        "--connections",
        metavar="N",
        type=int,
        help="ours: Worker(connections=N), the job connections feeding its slots (default: "
        "not passed, the Worker's own default); the peers ignore it",
    )
    parser.add_argument("--stop-timeout", type=float, default=20.0, help="per stop step (20)")
    parser.add_argument("--poll", type=float, default=0.05, help="INFO interval, s (0.05)")
    parser.add_argument("--url", help="an existing server (it is FLUSHed!); default: our own")
    parser.add_argument("--node-modules", type=Path, help="where faktory-worker is installed")
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="run only the first of ours named (default: ours), under cProfile",
    )
    parser.add_argument(
        "--sleep",
        metavar="SECONDS",
        type=float,
        default=0.0,
        help="each job sleeps SECONDS with its runtime's own sleep (asyncio.sleep, time.sleep, "
        "gevent.sleep) instead of being a no-op; e.g. --concurrency 500 --jobs 5000 --sleep "
        "0.05 (0: no-op)",
    )
    parser.add_argument("--worker", choices=sorted(_CHILDREN), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.contenders.split(",") if name.strip()]
    unknown = sorted(set(names) - set(CONTENDERS))
    if unknown:
        parser.error(f"unknown contenders: {', '.join(unknown)}")
    if args.profile:  # the first of ours named (ours+metrics, say), or ours
        names = [next((name for name in names if name in OURS), "ours")]
    if args.jobs < 1 or args.concurrency < 1 or args.rounds < 1:
        parser.error("--jobs, --concurrency and --rounds must be positive")
    if not 0 <= args.sleep < float("inf"):
        parser.error("--sleep must be a finite number of seconds >= 0")
    if args.connections is not None and args.connections < 1:
        parser.error("--connections must be positive")
    if args.timeout is None:
        args.timeout = 120.0 + 3 * args.jobs * args.sleep / args.concurrency
    args.names = names
    return args


@contextlib.contextmanager
def _server(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    from tests.support.server import FaktoryServer

    with FaktoryServer().start() as server:
        yield server.url


class _Terminated(Exception):
    pass


def _terminated(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: let the clean-ups finish
    raise _Terminated  # unwinds through the clean-ups


T = TypeVar("T")


def rotating(contenders: Sequence[T], rounds: int) -> Iterator[tuple[int, T]]:
    """(round, contender) for each round, the order rotating from round to round so that no
    contender always runs first (a cold server) or last."""
    for rnd in range(1, rounds + 1):
        shift = (rnd - 1) % max(len(contenders), 1)
        for contender in (*contenders[shift:], *contenders[:shift]):
            yield rnd, contender


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.worker:
        logging.basicConfig(level=logging.WARNING)
        return _CHILDREN[args.worker]()
    signal.signal(signal.SIGTERM, _terminated)
    settings = Settings(
        args.jobs,
        args.concurrency,
        args.timeout,
        args.stop_timeout,
        args.poll,
        args.profile,
        args.sleep,
        args.connections,
    )
    contenders = make_contenders(args.names, args.node_modules, args.sleep)
    runs: list[Run] = []
    try:
        _rounds(args, settings, contenders, runs)
    except (KeyboardInterrupt, _Terminated):
        print("interrupted: the workers and the server are stopped", file=sys.stderr)
        report(contenders, runs, args.rounds)
        return 130
    report(contenders, runs, args.rounds)
    if args.profile:
        print_profile(args.profile)
    return 0


def _package_dir() -> str:
    """Where the workers' faktory_adapters comes from (this script's tree: see REPO_ROOT)."""
    spec = importlib.util.find_spec("faktory_adapters")
    origin = spec.origin if spec is not None else None
    return str(Path(origin).parent) if origin else "?"


def _rounds(
    args: argparse.Namespace,
    settings: Settings,
    contenders: Sequence[Contender],
    runs: list[Run],
) -> None:
    available = [contender for contender in contenders if contender.absent is None]
    with _server(args.url) as url:
        admin = Admin(url)
        try:
            server = admin.info()["server"]
            work = f"jobs sleeping {args.sleep:g} s" if args.sleep else "no-op jobs"
            links = (
                "the Worker's default connections"
                if args.connections is None
                else f"connections={args.connections}"
            )
            print(
                f"{args.jobs:,} {work}, concurrency {args.concurrency} (ours: {links}), "
                f"{args.rounds} round(s); Faktory {server.get('faktory_version')}, "
                f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}; "
                f"ours from {_package_dir()}"
            )
            for contender in contenders:
                print(f"  {contender.label:<22} {contender.absent or contender.version}")
            for rnd, contender in rotating(available, args.rounds):
                run = measure(admin, url, contender, settings, rnd)
                runs.append(run)
                print(f"round {rnd} {contender.label:<22} {_describe(run)}", flush=True)
        finally:
            admin.close()


if __name__ == "__main__":
    sys.exit(main())
