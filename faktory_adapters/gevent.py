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
    import gevent.selectors
except ImportError as missing:  # pragma: no cover - depends on the environment
    raise ImportError(
        "faktory_adapters.gevent needs gevent: pip install 'faktory-sansio[gevent]'"
    ) from missing

import contextvars
import selectors
import signal
import socket
import threading
import traceback
from collections.abc import Callable
from typing import Any, cast

import faktory_core as core
from faktory_core import Job

from . import _logging
from ._blocking import BlockingWorker, EventAbortSignal, SelectorRuntime, perform
from ._client_gevent import Client
from ._common import (
    AuthenticationError,
    ClientClosedError,
    FaktoryConnectionError,
    FaktoryError,
    FaktoryProtocolError,
    FaktoryTimeoutError,
    InvalidJobError,
    JobAborted,
    OutcomeUnknownError,
    ServerReplyError,
    WrongEventLoopError,
)
from ._driver import Handler, JobContextBase
from ._jobs import Jobs, JobType
from ._net_gevent import connect_socket

__all__ = [
    "AbortSignal",
    "AuthenticationError",
    "Client",
    "ClientClosedError",
    "FaktoryConnectionError",
    "FaktoryError",
    "FaktoryProtocolError",
    "FaktoryTimeoutError",
    "InvalidJobError",
    "JobAborted",
    "JobContext",
    "JobType",
    "Jobs",
    "OutcomeUnknownError",
    "ServerReplyError",
    "Worker",
    "WrongEventLoopError",
    "current_job",
]


class AbortSignal(EventAbortSignal):
    """Set when the worker aborts the job: a flag, a reason, and a cooperative wait."""

    __slots__ = ()
    _new_event = gevent.event.Event


class JobContext(JobContextBase):
    """The running job, its abort signal, and the worker running it."""

    __slots__ = ("_greenlet",)

    abort: AbortSignal

    def __init__(self, job: Job, worker: Worker) -> None:
        super().__init__(job, worker)
        self.abort = AbortSignal()
        self._greenlet: gevent.Greenlet[Any, Any] | None = None


def current_job() -> JobContext:
    """The context of the job this code runs for; LookupError, saying so, outside a job."""
    return cast(JobContext, _logging.current())


class Worker(BlockingWorker):
    """Fetches jobs from Faktory and runs them as greenlets.

    Handlers, middleware and hooks are plain functions that should yield (gevent sockets,
    ``gevent.sleep``). Call :meth:`run` (signals installed) or :meth:`serve`.
    """

    runtime = "gevent"

    def run(self) -> int:
        """Serve until stopped, with TERM/INT stopping, TSTP quieting and TTIN dumping jobs.

        Returns 0 after a clean stop, 1 when jobs were aborted.
        """
        installed = [
            gevent.signal_handler(signum, act) for signum, act in self._signal_actions().items()
        ]
        try:
            return self.serve()
        finally:
            for handle in installed:
                handle.cancel()

    def _new_runtime(self, config: core.WorkerConfig) -> SelectorRuntime:
        return _GeventRuntime(self, config)


class _GeventRuntime(SelectorRuntime):
    """Jobs and connects as greenlets on the hub."""

    context_type = JobContext

    def serve(self) -> int:
        # Python raises KeyboardInterrupt in whichever greenlet runs when SIGINT comes, a
        # job's included: that job would fail with it and serve() would go on. So while the
        # default handler is in place, SIGINT is raised in the serving greenlet instead,
        # where it aborts the jobs and is re-raised, as in the thread adapter.
        if (
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler
            or threading.current_thread() is not threading.main_thread()
        ):
            return super().serve()
        serving = gevent.getcurrent()
        signal.signal(signal.SIGINT, lambda *_: gevent.kill(serving, KeyboardInterrupt))
        try:
            return super().serve()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def new_selector(self) -> selectors.BaseSelector:
        selector: selectors.BaseSelector = gevent.selectors.GeventSelector()
        return selector

    def spawn(self, target: Callable[..., Any], *args: Any) -> None:
        gevent.spawn(target, *args)

    def connect_socket(
        self, url: core.ServerURL, *, timeout: float, ssl_context: Any
    ) -> socket.socket:
        return connect_socket(url, timeout=timeout, ssl_context=ssl_context)

    def start_job(self, context: JobContext, handler: Handler) -> None:
        driver, jid = self.driver, context.job.jid
        greenlet = gevent.spawn(contextvars.copy_context().run, perform, driver, context, handler)
        context._greenlet = greenlet
        greenlet.link(lambda done: driver.post(driver.job_finished(jid, done.value)))

    def interrupt(self, context: JobContext) -> None:
        greenlet = context._greenlet
        if greenlet is not None and not greenlet.dead:
            greenlet.kill(JobAborted, block=False)

    def stack(self, context: JobContext) -> str:
        frame = getattr(context._greenlet, "gr_frame", None)
        return "".join(traceback.format_stack(frame)) if frame else "(not running)\n"
