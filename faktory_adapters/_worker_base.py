"""What every adapter's Worker shares: its options, handlers, hooks and middleware."""

from __future__ import annotations

import functools
import os
import random
import socket
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import faktory_core as core

from ._common import new_wid, resolve_url, tls_context

__all__ = ["WorkerBase"]

_F = TypeVar("_F", bound=Callable[..., Any])


class _Driver(Protocol):
    def post(self, event: core.MachineInput) -> None: ...

    def dump_jobs(self) -> None: ...


class WorkerBase:
    """Options, handlers, hooks and middleware; each adapter adds how it runs.

    ``queues`` is a list in strict priority order or a ``{name: weight}`` mapping; times are
    in seconds. ``raise_in_job=False`` keeps an abort from interrupting a job (the asyncio
    task is not cancelled, no JobAborted is raised in a thread): the job gets the signal only.
    """

    #: The runtime's name, in the default labels.
    runtime = ""

    def __init__(
        self,
        *,
        url: str | core.ServerURL | None = None,
        queues: Sequence[str] | Mapping[str, int] = ("default",),
        concurrency: int = 10,
        shutdown_timeout: float = 25.0,
        abort_grace: float = 3.0,
        heartbeat_interval: float = 15.0,
        labels: Iterable[str] | None = None,
        job_time_limit: float | None = None,
        time_limits: Mapping[str, float] | None = None,
        wid: str | None = None,
        connect_timeout: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
        seed: int | None = None,
        raise_in_job: bool = True,
    ) -> None:
        self._url = resolve_url(url)
        self._options: dict[str, Any] = {
            "queues": queues,
            "concurrency": concurrency,
            "shutdown_timeout": shutdown_timeout,
            "abort_grace": abort_grace,
            "heartbeat_interval": heartbeat_interval,
            "labels": ("python", self.runtime) if labels is None else tuple(labels),
            "job_time_limit": job_time_limit,
            "time_limits": dict(time_limits or {}),
        }
        self.wid = wid or new_wid()
        self._handlers: dict[str, Callable[..., Any]] = {}
        self._interruptible: dict[str, bool] = {}
        self._make_config()  # check the options now, not when serving starts
        self._connect_timeout = connect_timeout
        self._ssl_context = ssl_context
        if self._url.tls and ssl_context is None:
            self._ssl_context = tls_context()
        self._random = random.Random(seed)
        self._raise_in_job = raise_in_job
        self._middleware: list[Callable[..., Any]] = []
        self._hooks: dict[str, list[Callable[[], Any]]] = {
            "startup": [],
            "quiet": [],
            "shutdown": [],
        }
        self._driver: _Driver | None = None

    def register(
        self,
        jobtype: str,
        handler: Callable[..., Any] | None = None,
        *,
        raise_in_job: bool | None = None,
    ) -> Any:
        """Run ``handler(*args)`` for jobs of ``jobtype``; without a handler, a decorator."""
        if handler is None:
            return functools.partial(self.register, jobtype, raise_in_job=raise_in_job)
        if not isinstance(jobtype, str) or not jobtype:
            raise ValueError("a job type must be a non-empty string")
        if jobtype in self._handlers:
            raise ValueError(f"a handler is already registered for {jobtype!r}")
        if not callable(handler):
            raise TypeError(f"the handler of {jobtype!r} is not callable")
        self._handlers[jobtype] = handler
        if raise_in_job is not None:
            self._interruptible[jobtype] = raise_in_job
        return handler

    def use(self, middleware: _F) -> _F:
        """Wrap every job: ``middleware(context, call_next)`` must call ``call_next()``."""
        self._middleware.append(middleware)
        return middleware

    def on_startup(self, hook: _F) -> _F:
        """Run ``hook`` before the first FETCH."""
        self._hooks["startup"].append(hook)
        return hook

    def on_quiet(self, hook: _F) -> _F:
        """Run ``hook`` when the worker stops fetching (quiet, or the start of a stop)."""
        self._hooks["quiet"].append(hook)
        return hook

    def on_shutdown(self, hook: _F) -> _F:
        """Run ``hook`` once the worker is done, before serving returns."""
        self._hooks["shutdown"].append(hook)
        return hook

    def quiet(self) -> None:
        """Stop fetching; running jobs finish. Safe to call from any thread."""
        self._post(core.QuietRequested(source="api"))

    def stop(self) -> None:
        """Stop: quiet, then abort what still runs after the shutdown timeout; a second call
        aborts at once. Safe to call from any thread."""
        self._post(core.StopRequested(source="api"))

    def dump_jobs(self) -> None:
        """Log every running job and its stack (TTIN)."""
        if self._driver is not None:
            self._driver.dump_jobs()

    def _post(self, event: core.MachineInput) -> None:
        driver = self._driver
        if driver is None:
            raise RuntimeError("the worker is not serving")
        driver.post(event)

    def _interrupts(self, jobtype: str) -> bool:
        """Whether an abort interrupts jobs of this type (cancel, or raise JobAborted)."""
        return self._interruptible.get(jobtype, self._raise_in_job)

    def _make_config(self) -> core.WorkerConfig:
        return core.WorkerConfig(
            wid=self.wid,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            username=self._url.username,
            password=self._url.password,
            jobtypes=frozenset(self._handlers),  # others are FAILed as UnknownJobType
            **self._options,
        )
