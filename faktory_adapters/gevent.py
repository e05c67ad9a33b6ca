"""The gevent adapter: a Faktory :class:`Worker` and :class:`Client` on greenlets.

Install it with the ``gevent`` extra (``pip install 'faktory-sansio[gevent]'``). Jobs run as
greenlets; an abort sets the job's :class:`AbortSignal` and kills its greenlet with
:class:`JobAborted` (``Greenlet.kill``, without blocking), which lands at the job's next
cooperative switch: a greenlet that never yields cannot be interrupted, only abandoned after the
grace period. The job links are gevent sockets on the hub; the heartbeat beats from an OS thread
of its own (without monkey patching), so a greenlet that hogs the CPU cannot get the worker
reaped. Monkey patching is not needed; under ``gevent.monkey.patch_all()`` the heartbeat's
thread is a greenlet too, and that protection is lost.
"""

from __future__ import annotations

try:
    import gevent
    import gevent.event
    import gevent.lock
    import gevent.selectors
    import gevent.socket
    import gevent.ssl
except ImportError as missing:  # pragma: no cover - depends on the environment
    raise ImportError(
        "faktory_adapters.gevent needs gevent: pip install 'faktory-sansio[gevent]'"
    ) from missing

import contextvars
import signal
import socket
import ssl
import traceback
from collections.abc import Callable
from typing import Any, Final

import faktory_core as core
from faktory_core import Job, JobFinished, QuietRequested, StopRequested

from . import _client_sync
from . import thread as _thread
from ._common import (
    AuthenticationError,
    FaktoryError,
    InvalidJobError,
    JobAborted,
    ServerReplyError,
    connect_socket,
)
from ._jobs import Jobs, JobType
from ._worker_base import WorkerBase

__all__ = [
    "AbortSignal",
    "AuthenticationError",
    "Client",
    "FaktoryError",
    "InvalidJobError",
    "JobAborted",
    "JobContext",
    "JobType",
    "Jobs",
    "ServerReplyError",
    "Worker",
    "current_job",
]

_CURRENT: Final = _thread._CURRENT


class AbortSignal:
    """Set when the worker aborts the job: a flag, a reason, and a cooperative wait."""

    __slots__ = ("_event", "_reason")

    def __init__(self) -> None:
        self._event = gevent.event.Event()
        self._reason: str | None = None

    @property
    def is_set(self) -> bool:
        """True once the job has been aborted."""
        return self._reason is not None

    @property
    def reason(self) -> str | None:
        """Why the job was aborted (the FAIL message), or None."""
        return self._reason

    def wait(self, timeout: float | None = None) -> bool:
        """Wait (yielding to other greenlets) up to ``timeout`` s; True if the abort came."""
        self._event.wait(timeout)
        return self._reason is not None

    def wait_blocking(self, timeout: float | None = None) -> bool:
        """The same as :meth:`wait` (named as in the asyncio adapter)."""
        return self.wait(timeout)

    def _set(self, reason: str) -> None:
        self._reason = reason
        self._event.set()


class JobContext(_thread.JobContext):
    """The running job, its abort signal, and the worker running it."""

    __slots__ = ("_greenlet",)

    def __init__(self, job: Job, worker: Any) -> None:
        super().__init__(job, worker)
        self.abort = AbortSignal()  # type: ignore[assignment]
        self._greenlet: gevent.Greenlet[Any, Any] | None = None


def current_job() -> JobContext:
    """The context of the job this code runs for; LookupError outside a job."""
    context = _CURRENT.get()
    assert isinstance(context, JobContext)
    return context


def _wrap_tls(context: ssl.SSLContext, sock: socket.socket, host: str) -> socket.socket:
    # gevent's SSLSocket wraps a stdlib context too; SSLContext.wrap_socket would build the
    # stdlib SSLSocket, which refuses to be constructed.
    wrapped: socket.socket = gevent.ssl.SSLSocket(sock=sock, server_hostname=host, _context=context)
    return wrapped


def _connect(url: core.ServerURL, *, timeout: float, ssl_context: Any) -> socket.socket:
    # gevent's SSLSocket gives each wait of its handshake the whole socket timeout: a
    # gevent.Timeout bounds the connect and the handshake together.
    with gevent.Timeout(timeout, TimeoutError(f"connecting to {url} took more than {timeout:g} s")):
        return connect_socket(
            url,
            timeout=timeout,
            ssl_context=ssl_context,
            create_connection=gevent.socket.create_connection,
            wrap_tls=_wrap_tls,
        )


class _Driver(_thread._Driver):
    """The thread adapter's driver, with greenlets where it uses threads."""

    _context_type = JobContext

    def _new_selector(self) -> Any:
        return gevent.selectors.GeventSelector()

    def _spawn(self, target: Callable[..., Any], *args: Any) -> None:
        gevent.spawn(target, *args)

    def _connect_socket(
        self, url: core.ServerURL, *, timeout: float, ssl_context: Any
    ) -> socket.socket:
        return _connect(url, timeout=timeout, ssl_context=ssl_context)

    def _run_job(self, context: Any, handler: Callable[..., Any]) -> None:
        jid = context.job.jid
        greenlet = gevent.spawn(contextvars.copy_context().run, self._perform, context, handler)
        context._greenlet = greenlet
        greenlet.link(lambda done: self.post(JobFinished(jid=jid, error=done.value)))

    def _interrupt(self, context: Any) -> None:
        greenlet = context._greenlet
        if greenlet is not None and not greenlet.dead:
            greenlet.kill(JobAborted, block=False)

    def _stack(self, context: Any) -> str:
        greenlet = context._greenlet
        frame = getattr(greenlet, "gr_frame", None)
        return "".join(traceback.format_stack(frame)) if frame else "(not running)\n"


class Worker(WorkerBase):
    """Fetches jobs from Faktory and runs them as greenlets.

    Handlers, middleware and hooks are plain functions that should yield (gevent sockets,
    ``gevent.sleep``). Call :meth:`run` (signals installed) or :meth:`serve`.
    """

    runtime = "gevent"
    _driver: _thread._Driver | None

    def run(self) -> int:
        """Serve until stopped, with TERM/INT stopping, TSTP quieting and TTIN dumping jobs.

        Returns 0 after a clean stop, 1 when jobs were aborted.
        """
        handlers = {
            signal.SIGTERM: lambda: self._post(StopRequested(source="SIGTERM")),
            signal.SIGINT: lambda: self._post(StopRequested(source="SIGINT")),
            signal.SIGTSTP: lambda: self._post(QuietRequested(source="SIGTSTP")),
            signal.SIGTTIN: self.dump_jobs,
        }
        installed = [gevent.signal_handler(signum, handler) for signum, handler in handlers.items()]
        try:
            return self.serve()
        finally:
            for handle in installed:
                handle.cancel()

    def serve(self) -> int:
        """Serve in this greenlet until stopped; return the exit code (signals are yours).

        An exception that interrupts it (``KeyboardInterrupt``, ``SystemExit``, a kill) aborts
        the running jobs, FAILs them naming it, ENDs, and is re-raised.
        """
        return self._serve(self._make_config())

    def drain(self) -> int:
        """Work in burst mode until the queues are empty, then return the exit code; re-raise
        the first exception a job raised. For tests: push jobs, then ``worker.drain()``."""
        return self._end_drain(self._serve(self._start_drain()))

    def _serve(self, config: core.WorkerConfig) -> int:
        if self._driver is not None:
            raise RuntimeError("this worker is already serving (a Worker serves once)")
        driver = self._driver = _Driver(self, config)  # type: ignore[arg-type]
        return driver.serve()

    def _run_hooks(self, kind: str) -> None:
        for hook in self._hooks[kind]:
            try:
                hook()
            except Exception:
                _thread._log.exception("the %s hook %r failed", kind, hook)


class Client(_client_sync.Client):
    """The thread adapter's Client over gevent sockets: cooperative, shareable by greenlets."""

    def _connect_socket(
        self, url: core.ServerURL, *, timeout: float, ssl_context: Any
    ) -> socket.socket:
        return _connect(url, timeout=timeout, ssl_context=ssl_context)

    def _semaphore(self, size: int) -> Any:
        return gevent.lock.BoundedSemaphore(size)

    def _bound(self, command: core.Command, seconds: float) -> gevent.Timeout:
        # gevent's SSLSocket gives each wait inside one TLS record the whole socket timeout.
        error = TimeoutError(f"{command.verb} got no complete reply within {seconds:g} s")
        return gevent.Timeout(seconds, error)
