"""What every adapter's Worker shares: its options, handlers, hooks and middleware."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import ssl
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, Protocol, TypeVar, cast

import faktory_core as core
from faktory_core.machine_io import QuietRequested, StopRequested

from ._common import FaktoryConnectionError, logger, new_wid, resolve_url, tls_context
from ._jobs import Jobs, JobType, Registrar
from ._observe import WorkerObserver
from ._options import check_flag, check_metrics_options, check_ssl_context

__all__ = ["JobType", "Jobs", "Serving", "WorkerBase"]

_F = TypeVar("_F", bound=Callable[..., Any])
_O = TypeVar("_O", bound=WorkerObserver)

log: Final = logger.getChild("worker")


class Serving(Protocol):
    """What a serving Worker talks to (the driver of ``_driver``, which imports this module:
    a Protocol here keeps the import one way)."""

    def post(self, event: core.MachineInput) -> None: ...

    def dump_jobs(self) -> None: ...

    @property
    def refusal(self) -> str | None: ...


class WorkerBase(Registrar):
    """Options, handlers, hooks and middleware; each adapter adds how it runs.

    ``queues`` is a list in strict priority order or a ``{name: weight}`` mapping; times are
    in seconds. ``raise_in_job=False`` keeps an abort from interrupting a job (the asyncio
    task is not cancelled, no JobAborted is raised in a thread): the job gets the signal only.
    ``burst=True`` works until a FETCH comes back empty, then stops once running jobs finish.
    ``metrics_port`` serves the worker's Prometheus metrics at
    ``http://METRICS_ADDRESS:PORT/metrics`` while it serves (the ``prometheus`` extra; see
    :func:`faktory_adapters.prometheus.serve_metrics`).

    Every option is checked here, with the bounds of docs/configuration.md: a bad one raises
    ``LocalProtocolError`` (the core's checks; ``OptionError``, also a ``ValueError``, for a
    value out of its bounds) or ``ConfigurationError`` (the URL, ssl_context) naming it, never
    a failure once the worker runs.
    """

    #: The runtime's name, in the default labels.
    runtime = ""

    def __init__(
        self,
        *,
        url: str | core.ServerURL | None = None,
        queues: Sequence[str] | Mapping[str, int] = ("default",),
        concurrency: int = 10,
        connections: int = core.DEFAULT_CONNECTIONS,
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
        burst: bool = False,
        metrics_port: int | None = None,
        metrics_address: str = "0.0.0.0",
    ) -> None:
        self._jobs = Jobs()
        # While drain() runs: what jobs raised, the first to be re-raised.
        self._raised: list[BaseException] | None = None
        self._middleware: list[Callable[..., Any]] = []
        self._observers: list[WorkerObserver] = []
        self._hooks: dict[str, list[Callable[[], Any]]] = {
            "startup": [],
            "quiet": [],
            "shutdown": [],
        }
        self._driver: Serving | None = None
        #: Whether the last serve (run, serve, drain) has returned or raised.
        self._serve_ended = False
        self._configure(
            {
                "url": url,
                "queues": queues,
                "concurrency": concurrency,
                "connections": connections,
                "shutdown_timeout": shutdown_timeout,
                "abort_grace": abort_grace,
                "heartbeat_interval": heartbeat_interval,
                "labels": labels,
                "job_time_limit": job_time_limit,
                "time_limits": time_limits,
                "wid": wid,
                "connect_timeout": connect_timeout,
                "ssl_context": ssl_context,
                "seed": seed,
                "raise_in_job": raise_in_job,
                "burst": burst,
                "metrics_port": metrics_port,
                "metrics_address": metrics_address,
            }
        )

    def _reconfigure(self, **changes: Any) -> None:
        """Change options given to ``__init__`` (``faktory-worker``'s command-line options over
        a Worker named with ``-r``), with the checks ``__init__`` makes: the others keep their
        values; a refused change raises as ``__init__`` would, and changes nothing."""
        if self._driver is not None:
            raise RuntimeError("a serving worker cannot be reconfigured")
        unknown = sorted(changes.keys() - self._settings.keys())
        if unknown:
            raise TypeError(f"not a Worker option: {', '.join(unknown)}")
        self._configure({**self._settings, **changes})

    def _configure(self, settings: dict[str, Any]) -> None:
        """Check every option of ``__init__`` in ``settings``, then take them all (none if one
        is refused)."""
        url = resolve_url(settings["url"])
        ssl_context = settings["ssl_context"]
        check_ssl_context(url, ssl_context)
        check_flag("raise_in_job", settings["raise_in_job"])
        check_metrics_options(settings["metrics_port"], settings["metrics_address"])
        # Copies: the config is made again at each serve, so an iterator must be read once,
        # and a dict changed later must not skip the checks. Anything else (one string, a
        # number) goes to the core as given, to be taken or refused there.
        queues, labels, time_limits = (
            settings["queues"],
            settings["labels"],
            settings["time_limits"],
        )
        if isinstance(queues, Mapping):
            queues = dict(queues)
        elif isinstance(queues, Iterable) and not isinstance(queues, str):
            queues = tuple(queues)
        if labels is None:
            labels = ("python", self.runtime)
        elif isinstance(labels, Iterable) and not isinstance(labels, str):
            labels = tuple(labels)
        if time_limits is None:
            time_limits = {}
        elif isinstance(time_limits, Mapping):
            time_limits = dict(time_limits)
        options: dict[str, Any] = {
            "queues": queues,
            "concurrency": settings["concurrency"],
            "connections": settings["connections"],
            "shutdown_timeout": settings["shutdown_timeout"],
            "abort_grace": settings["abort_grace"],
            "heartbeat_interval": settings["heartbeat_interval"],
            "labels": labels,
            "job_time_limit": settings["job_time_limit"],
            "time_limits": time_limits,
            "burst": settings["burst"],
            "connect_timeout": settings["connect_timeout"],
        }
        # An empty wid is refused by the core, not silently replaced.
        wid = new_wid() if settings["wid"] is None else settings["wid"]
        config = self._make_config(url=url, wid=wid, options=options)  # checks them all
        generator = random.Random(settings["seed"])
        if url.tls and ssl_context is None:
            ssl_context = tls_context()
        # Every check passed: take them. Kept as resolved (the URL read from the environment
        # once, the wid drawn once), so a later change keeps the rest as they are.
        self._settings = {**settings, "url": url, "wid": wid}
        self._url = url
        self.wid = wid
        self._options = options
        self._connect_timeout = config.connect_timeout
        self._ssl_context = ssl_context
        self._random = generator
        self._raise_in_job: bool = settings["raise_in_job"]
        self._jobs._queue = config.push_queue

    @contextlib.contextmanager
    def _serving(self) -> Iterator[None]:
        """Around each serve: the metrics served (with ``metrics_port``), and
        :attr:`_serve_ended` kept, so a health check tells a worker that failed before it
        served from one that is starting."""
        self._serve_ended = False
        try:
            with self._serving_metrics():
                yield
        finally:
            self._serve_ended = True

    @contextlib.contextmanager
    def _serving_metrics(self) -> Iterator[None]:
        """With ``metrics_port``: the metrics served over HTTP for as long as the worker
        serves. Entered before the worker serves (``serve_metrics`` observes it); OSError
        when the port cannot be had, naming the option."""
        port, address = self._settings["metrics_port"], self._settings["metrics_address"]
        if port is None:
            yield
            return
        from .prometheus import _metrics_url, serve_metrics

        try:
            # serve_metrics names each adapter's Worker, for its docs: this is one of them.
            server, _ = serve_metrics(cast("Any", self), port, address)
        except OSError as error:
            raise OSError(
                error.errno,
                f"metrics_port={port}: cannot serve metrics on {address} port {port}: "
                f"{error.strerror or error}",
            ) from None
        log.info("serving metrics on %s", _metrics_url(address, server.server_port))
        try:
            yield
        finally:  # the port is free once the worker returns (its loop notices within 50 ms)
            server.shutdown()
            server.server_close()

    def _registry(self) -> Jobs:
        return self._jobs

    def include(self, jobs: Jobs) -> None:
        """Run the job types registered in ``jobs`` so far too (ValueError on a type seen
        already)."""
        self._jobs.include(jobs)

    def use(self, middleware: _F) -> _F:
        """Wrap every job: ``middleware(context, call_next)`` must call ``call_next()``."""
        self._middleware.append(middleware)
        return middleware

    def observe(self, observer: _O) -> _O:
        """Tell ``observer`` (a :class:`~faktory_adapters.WorkerObserver`) what the worker
        does: its jobs as they start and end, its phase. For metrics."""
        if not isinstance(observer, WorkerObserver):
            raise core.ArgumentTypeError(
                f"observe(observer): observer must be a faktory_adapters.WorkerObserver, got "
                f"{type(observer).__name__}: subclass it and override the methods you need"
            )
        if self._driver is not None:
            raise RuntimeError("observe() before the worker serves, not while it does")
        self._observers.append(observer)
        return observer

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

    def run(self) -> int:
        """Serve until stopped, handling the signals; the exit code (each adapter's own)."""
        raise NotImplementedError

    def quiet(self) -> None:
        """Stop fetching; running jobs finish. Safe to call from any thread."""
        self._post(QuietRequested(source="api"))

    def stop(self) -> None:
        """Stop: quiet, then abort what still runs after the shutdown timeout; a second call
        aborts at once. Safe to call from any thread."""
        self._post(StopRequested(source="api"))

    def _signal_actions(self) -> dict[signal.Signals, Callable[[], None]]:
        """What :meth:`run` does on each signal: TERM and INT stop, TSTP quiets, TTIN dumps."""
        return {
            signal.SIGTERM: lambda: self._post(StopRequested(source="SIGTERM")),
            signal.SIGINT: lambda: self._post(StopRequested(source="SIGINT")),
            signal.SIGTSTP: lambda: self._post(QuietRequested(source="SIGTSTP")),
            signal.SIGTTIN: self.dump_jobs,
        }

    def dump_jobs(self) -> None:
        """Log every running job and its stack (TTIN)."""
        if self._driver is not None:
            self._driver.dump_jobs()

    def _post(self, event: core.MachineInput) -> None:
        driver = self._driver
        if driver is None:
            raise RuntimeError("the worker is not serving")
        driver.post(event)

    def _handler(self, jobtype: str) -> Callable[..., Any]:
        return self._jobs[jobtype].__wrapped__  # the machine FAILs unknown types itself

    def _interrupts(self, jobtype: str) -> bool:
        """Whether an abort interrupts jobs of this type (cancel, or raise JobAborted)."""
        choice = self._jobs[jobtype].raise_in_job
        return self._raise_in_job if choice is None else choice

    def _job_raised(self, error: BaseException) -> None:
        if self._raised is not None:
            self._raised.append(error)

    def _start_drain(self) -> core.WorkerConfig:
        """drain()'s config: burst mode, keeping what jobs raise."""
        self._raised = []
        return self._make_config(burst=True)

    def _end_drain(self, code: int) -> int:
        raised, self._raised = self._raised, None
        if raised:
            raise raised[0]
        refusal = None if self._driver is None else self._driver.refusal
        if refusal is not None:  # the server cannot be used: a test must not pass on that
            raise FaktoryConnectionError(refusal)
        return code

    def _make_config(
        self,
        *,
        url: core.ServerURL | None = None,
        wid: str | None = None,
        options: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> core.WorkerConfig:
        """The core's config of this worker (checking every option), with ``overrides``;
        ``_configure`` passes the URL, wid and options it has yet to take."""
        url = self._url if url is None else url
        return core.WorkerConfig(
            wid=self.wid if wid is None else wid,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            username=url.username,
            password=url.password,
            jobtypes=frozenset(self._jobs),  # others are FAILed as UnknownJobType
            **{**(self._options if options is None else options), **overrides},
        )
