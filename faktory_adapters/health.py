"""Health endpoints for orchestrators: a worker's ``/livez`` and ``/readyz`` over HTTP.

Call :func:`serve_health` before the worker serves; it answers on a daemon thread of its own
(``http.server``), whatever the worker's loop is doing::

    health = serve_health(worker, 8080)
    worker.run()

``/livez`` answers 200 while the worker is worth keeping: its loop (the event loop, the I/O
thread, the gevent hub) and its heartbeat thread answer pings, and it has not exited. It never
depends on the Faktory server, so a server outage restarts no worker. ``/readyz`` answers 200
only while the worker runs (fetches) and every job connection is ready. A 503 comes with its
reason, one line of text. The guide, with the Kubernetes probes that fit: docs/health.md.
"""

from __future__ import annotations

import contextlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol, Self, cast
from urllib.parse import urlsplit

import attrs

from faktory_core import Phase, WorkerConfig

from . import _http
from ._common import logger
from ._observe import WorkerObserver
from ._options import check_port
from ._worker_base import WorkerBase

if TYPE_CHECKING:
    from ._driver import Driver

__all__ = ["DEFAULT_STUCK_AFTER", "HealthServer", "ProbeResult", "WorkerHealth", "serve_health"]

#: How long (seconds) the worker's loop may leave a ping unanswered before ``/livez`` fails:
#: far longer than a healthy loop ever takes (microseconds), so that only a job that blocks
#: it (or a bug) trips it.
DEFAULT_STUCK_AFTER: Final = 30.0

_log: Final = logger.getChild("health")


@attrs.frozen(kw_only=True)
class ProbeResult:
    """What a probe answers."""

    #: Healthy: HTTP 200 (else 503).
    ok: bool
    #: Why, in one line of text (the HTTP body).
    reason: str


class _Pingable(Protocol):
    """A loop that answers pings: the worker's driver, its heartbeat thread."""

    pings: int
    pings_answered: int

    def ping(self) -> None: ...


class _Pinged:
    """One loop the health checks ping, and since when its oldest unanswered ping waits."""

    def __init__(self, target: _Pingable) -> None:
        self.target = target
        self._waiting_since: float | None = None

    def ping(self, now: float) -> None:
        if self._waiting_since is None or self._answered():
            self._waiting_since = now  # the wait starts with this ping
        self.target.ping()

    def silent_for(self, now: float) -> float:
        """How long (seconds) the oldest ping not yet answered has waited; 0.0 if none."""
        if self._waiting_since is None or self._answered():
            return 0.0
        return now - self._waiting_since

    def _answered(self) -> bool:
        return self.target.pings_answered == self.target.pings


class _Serving:
    """What the health checks watch of a serving worker."""

    def __init__(self, driver: Driver, config: WorkerConfig) -> None:
        self.config = config
        self.heartbeat = driver.heartbeat
        self.loop_pings = _Pinged(driver)
        self.heartbeat_pings = _Pinged(driver.heartbeat)


class WorkerHealth(WorkerObserver):
    """Whether ``worker`` is alive (:meth:`live`) and ready (:meth:`ready`); it observes the
    worker, so make it before the worker serves. :func:`serve_health` serves it over HTTP;
    an application with a web server of its own may answer its probes with it instead.

    A thread of its own pings the worker's loop and its heartbeat thread a few times per
    ``stuck_after`` (at least every second); a loop that leaves a ping unanswered longer than
    ``stuck_after`` seconds is stuck (the heartbeat thread gets its connect timeout on top: a
    connect blocks it that long). :meth:`close` stops the thread.
    """

    def __init__(self, worker: WorkerBase, *, stuck_after: float = DEFAULT_STUCK_AFTER) -> None:
        if not stuck_after > 0:
            raise ValueError(f"stuck_after must be a number of seconds above 0: {stuck_after!r}")
        self.stuck_after = stuck_after
        self._worker = worker
        self._lock = threading.Lock()  # the pinger and the probes, on two threads
        self._serving: _Serving | None = None  # None: not serving yet
        self._phase = Phase.RUNNING  # once serving
        self._ready = 0  # job connections ready
        self._closed = threading.Event()
        worker.observe(self)
        self._pinger = threading.Thread(target=self._ping, name="faktory-health", daemon=True)
        self._pinger.start()

    # -- the probes ---------------------------------------------------------------------------

    def live(self) -> ProbeResult:
        """Alive: the worker has not exited, and its loop and heartbeat thread answer pings
        (a worker still starting, its startup hooks running, is alive). Whether the server
        can be reached plays no part."""
        with self._lock:
            serving, phase = self._serving, self._phase
            if phase is Phase.EXITED:
                return ProbeResult(ok=False, reason="the worker has exited")
            if serving is None:
                if self._worker._serve_ended:  # run() raised before the worker served
                    return ProbeResult(
                        ok=False, reason="the worker stopped before it served (see the log)"
                    )
                return ProbeResult(ok=True, reason="alive: starting, not serving yet")
            now = time.monotonic()
            silent = serving.loop_pings.silent_for(now)
            if silent > self.stuck_after:
                return ProbeResult(
                    ok=False,
                    reason=f"the worker's loop is stuck: a ping unanswered for {silent:.1f} s "
                    f"(over {self.stuck_after:g} s); a job blocking it?",
                )
            if serving.heartbeat.stopped:
                return ProbeResult(
                    ok=False, reason="the heartbeat thread has stopped (see the log)"
                )
            silent = serving.heartbeat_pings.silent_for(now)
            limit = self.stuck_after + serving.config.connect_timeout
            if silent > limit:
                return ProbeResult(
                    ok=False,
                    reason=f"the heartbeat thread is stuck: a ping unanswered for {silent:.1f} s "
                    f"(over {limit:g} s)",
                )
            return ProbeResult(ok=True, reason=f"alive: {phase.name.lower()}")

    def ready(self) -> ProbeResult:
        """Ready: alive, running (not quiet, stopping or draining), and every job connection
        ready (the server took its HELLO)."""
        alive = self.live()
        if not alive.ok:
            return alive
        with self._lock:
            serving, phase, ready = self._serving, self._phase, self._ready
        if serving is None:
            return ProbeResult(ok=False, reason="starting: not serving yet")
        if phase is not Phase.RUNNING:
            return ProbeResult(ok=False, reason=phase.value)
        links = serving.config.job_links
        if ready < links:
            return ProbeResult(
                ok=False,
                reason=f"not connected: {ready} of {links} connections to the server ready",
            )
        return ProbeResult(ok=True, reason=f"ready: running, {links} of {links} connections ready")

    def close(self) -> None:
        """Stop pinging (the probes then answer from what they last saw)."""
        self._closed.set()
        self._pinger.join()

    # -- what the worker tells (on its loop) -------------------------------------------------

    def serving(self, config: WorkerConfig) -> None:
        # The worker set its driver before it serves; a Driver, the only kind of serving object.
        driver = cast("Driver", self._worker._driver)
        with self._lock:  # a new run (drain() again) starts afresh
            self._serving = _Serving(driver, config)
            self._phase = Phase.RUNNING
            self._ready = 0

    def phase_changed(self, phase: Phase) -> None:
        with self._lock:
            self._phase = phase

    def connections_changed(self, ready: int, reconnects: int) -> None:
        with self._lock:
            self._ready = ready

    # -- the pinger thread --------------------------------------------------------------------

    def _ping(self) -> None:
        interval = min(1.0, self.stuck_after / 4)
        while not self._closed.wait(interval):
            with self._lock:
                serving = self._serving
                if serving is None or self._phase is Phase.EXITED:
                    continue
                now = time.monotonic()
                # RuntimeError: an asyncio loop closed since the exit was seen (a race).
                with contextlib.suppress(RuntimeError):
                    serving.loop_pings.ping(now)
                serving.heartbeat_pings.ping(now)


class HealthServer:
    """``/livez`` and ``/readyz`` of a :class:`WorkerHealth`, served over HTTP on a daemon
    thread (GET and HEAD; any other path is a 404); :meth:`close` stops it."""

    def __init__(self, health: WorkerHealth, port: int, address: str) -> None:
        self.health = health
        self._server = _Server(address, port, health)
        #: The address it listens on.
        self.address = address
        #: The port it listens on (the one chosen when 0 was asked).
        self.port: int = self._server.server_address[1]
        self._thread = _http.serve_on_thread(self._server, "faktory-health-http")

    @property
    def url(self) -> str:
        """``http://ADDRESS:PORT``, the base of the endpoints' URLs."""
        return _http.base_url(self.address, self.port)

    def close(self) -> None:
        """Stop serving, and stop the health checks' pings."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self.health.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def serve_health(
    worker: WorkerBase,
    port: int,
    address: str = "0.0.0.0",  # every IPv4 interface: kubelet probes the pod's IP
    *,
    stuck_after: float = DEFAULT_STUCK_AFTER,
) -> HealthServer:
    """Serve ``worker``'s ``/livez`` and ``/readyz`` on ``address``:``port`` (0: a free port,
    :attr:`HealthServer.port`) from now on, on a daemon thread; call it before the worker
    serves (``run()``, ``serve()``, ``drain()``). ``stuck_after``: see :class:`WorkerHealth`.
    Raises OSError when it cannot listen there (the port is taken), ``OptionError`` (a
    ValueError) for a port beyond 65535 and ``ArgumentTypeError`` (a TypeError) for one
    that is not an int."""
    check_port("port", port)
    health = WorkerHealth(worker, stuck_after=stuck_after)
    try:
        server = HealthServer(health, port, address)
    except BaseException:
        health.close()
        raise
    _log.info("serving health checks on %s (/livez, /readyz)", server.url)
    return server


class _Server(ThreadingHTTPServer):
    def __init__(self, address: str, port: int, health: WorkerHealth) -> None:
        self.address_family = _http.family(address)
        self.health = health
        super().__init__((address, port), _Handler)

    def server_bind(self) -> None:
        _http.bind(self)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # A client that connects and sends nothing lets its thread go after this many seconds.
    timeout = 10

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def _answer(self, *, with_body: bool) -> None:
        health = self.server.health
        probe = {"/livez": health.live, "/readyz": health.ready}.get(urlsplit(self.path).path)
        if probe is None:
            status, reason = 404, "not found: the endpoints are /livez and /readyz"
        else:
            result = probe()
            status, reason = (200 if result.ok else 503), result.reason
        body = f"{reason}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # A probe every few seconds: DEBUG, and under the library's logger, not on stderr.
        _log.debug("%s %s", self.address_string(), format % args)
