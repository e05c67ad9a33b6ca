"""The ``faktory-worker`` command (also ``python -m faktory_adapters``).

It imports the modules named with ``-r``, takes the Worker one of them defines (with the
options given on the command line over its own) or makes one of the chosen adapter, includes
every :class:`~faktory_adapters.Jobs` they define, checks that the server answers, and runs
the worker with its signals: TERM/INT stop (a second one aborts at once), TSTP quiets, TTIN
logs stacks. ``--processes N`` runs N such workers under a supervisor; ``--watch`` restarts
the worker when a ``.py`` file changes; ``--metrics-port`` serves Prometheus metrics (with
``--processes``, the supervisor serves the sum of its worker processes'); ``--health-port``
serves ``/livez`` and ``/readyz`` for orchestrators' probes.

Exit codes (names in ``faktory_adapters._exits``):

- 0 (``EXIT_CLEAN``): the worker stopped cleanly.
- 1 (``EXIT_ABORTED``): jobs still running at the shutdown timeout were aborted.
- 2 (``EXIT_USAGE``): bad configuration: an invalid option, a handler module that fails to
  import, no handlers found, a conflict between the options and a Worker named with ``-r``.
- 3 (``EXIT_UNREACHABLE``): the server cannot be reached or refuses the handshake.
- 4 (``EXIT_CRASHED``): the worker crashed (its traceback is logged).
- 128+N: (``--processes``, ``--watch``) a worker process was killed by signal N.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import inspect
import logging
import os
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final, NoReturn

import faktory_core as core

from . import _logging
from ._common import resolve_url, unusable_reason
from ._exits import (
    EXIT_ABORTED,
    EXIT_CLEAN,
    EXIT_CRASHED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    UnreachableError,
    UsageError,
)
from ._jobs import Jobs
from ._worker_base import WorkerBase  # imports no runtime

__all__ = [
    "Handlers",
    "build_parser",
    "check_server",
    "given_options",
    "import_handlers",
    "main",
    "make_worker",
    "parse_queues",
]

PROG: Final = "faktory-worker"
#: A valid URL, to check the other options before the one that counts is known.
_ANY_URL: Final = "tcp://localhost:7419"

ADAPTERS: Final = ("asyncio", "thread", "gevent")
#: The adapter of the Worker the command makes when no -r module defines one.
DEFAULT_ADAPTER: Final = "asyncio"
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: Where ``--metrics-port`` listens by default: every IPv4 interface, since Prometheus scrapes
#: from outside the machine or container.
METRICS_ADDRESS: Final = "0.0.0.0"
#: Where ``--health-port`` listens by default: every IPv4 interface, since kubelet probes the
#: pod's IP.
HEALTH_ADDRESS: Final = "0.0.0.0"
#: What a supervisor serving ``--metrics-port`` gives its worker processes instead (not in
#: ``--help``): count the metrics in prometheus_client's multiprocess files, serve nothing.
METRICS_FOR_SUPERVISOR: Final = "--metrics-for-supervisor"
#: The reachability check's two bounds: on opening the connection (TCP, TLS and the Faktory
#: handshake together), then on the whole INFO reply. So it ends within twice this.
CHECK_TIMEOUT: Final = 5.0

_IMPORTLIB: Final = os.path.dirname(importlib.__file__)

_log: Final = logging.getLogger("faktory.cli")

_EPILOG: Final = f"""\
a Worker in a -r module:
  -r MODULE runs the Worker defined at the top level of MODULE, if there is one (name it with
  -r MODULE:ATTRIBUTE), as it is configured: its middleware, hooks, time limits, TLS context
  and heartbeat settings. The options given here (--url, -q, -c, --shutdown-timeout,
  --abort-grace, -l, --burst, --metrics-port and --metrics-address) override its own; those
  not given keep its values. The Jobs of the -r modules are included in it. It runs on its
  own adapter. A conflict exits {EXIT_USAGE}: --adapter naming another adapter, two Workers,
  two handlers for one job type, or an option the Worker's settings refuse (a tcp:// --url
  for a Worker with an ssl_context).

exit codes:
  {EXIT_CLEAN}  the worker stopped cleanly (after TERM/INT, a terminate from the server, or
     --burst once the queues are empty)
  {EXIT_ABORTED}  jobs still running at the shutdown timeout were aborted (and FAILed: they retry)
  {EXIT_USAGE}  bad configuration: an invalid option, a handler module that fails to import,
     no handlers found, weighted and unweighted queues mixed, a conflict with a Worker
  {EXIT_UNREACHABLE}  the server cannot be reached or refuses the handshake (connection refused or
     timed out, TLS error, wrong password)
  {EXIT_CRASHED}  the worker crashed (its traceback is logged)
  with --processes or --watch, a worker process killed by signal N counts as 128+N;
  --processes exits with the highest code of its worker processes

signals: TERM/INT stop (a second one aborts at once), TSTP quiets, TTIN logs running jobs
"""

#: The Worker keywords the command line sets, by option (argparse's dest). Their default is
#: None, "not given": a Worker named with -r keeps its own value, and a Worker the command
#: makes takes the Worker's default, which --help shows.
WORKER_KEYWORDS: Final = {
    "url": "url",
    "queue": "queues",
    "concurrency": "concurrency",
    "connections": "connections",
    "shutdown_timeout": "shutdown_timeout",
    "abort_grace": "abort_grace",
    "label": "labels",
    "burst": "burst",
}
_DEFAULTS: Final = {
    name: parameter.default
    for name, parameter in inspect.signature(WorkerBase.__init__).parameters.items()
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, not {text}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 0 to 65535, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command's options; ``--help`` documents each one with its default."""
    parser = _Parser(
        prog=PROG,
        description="Run a Faktory worker with the job handlers registered in MODULEs.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # so --processes and --watch can be taken out for child processes
    )
    add = parser.add_argument
    add(
        "-r",
        "--require",
        metavar="MODULE",
        action="append",
        default=[],
        help="import MODULE (repeatable) and run the Worker and every faktory_adapters.Jobs "
        "defined at its top level; MODULE:ATTRIBUTE names one Worker or Jobs. The current "
        "directory is searched first",
    )
    add(
        "--adapter",
        choices=ADAPTERS,
        help=f"the runtime jobs run on (default: {DEFAULT_ADAPTER}; a Worker named with -r runs "
        "on its own, and naming another is an error)",
    )
    add(
        "-q",
        "--queue",
        metavar="NAME[:WEIGHT]",
        action="append",
        help="a queue to fetch from (repeatable; default: default, or the Worker's). Without "
        "weights, queues are fetched in strict priority order; give weights to all queues or "
        "to none",
    )
    add(
        "-c",
        "--concurrency",
        metavar="N",
        type=_positive_int,
        help=f"jobs run at the same time (default: {_DEFAULTS['concurrency']}, or the Worker's)",
    )
    add(
        "--connections",
        metavar="N",
        type=_positive_int,
        help="server connections that feed those jobs, at most (default: "
        f"{_DEFAULTS['connections']}, or the Worker's; never more than the concurrency); the "
        "heartbeat opens one more",
    )
    add(
        "--shutdown-timeout",
        metavar="SECONDS",
        type=_seconds,
        help="after TERM/INT, how long running jobs may take to finish before they are "
        f"aborted (default: {_DEFAULTS['shutdown_timeout']:g}, or the Worker's)",
    )
    add(
        "--abort-grace",
        metavar="SECONDS",
        type=_seconds,
        help="how long aborted jobs get to clean up before the worker exits "
        f"(default: {_DEFAULTS['abort_grace']:g}, or the Worker's)",
    )
    add(
        "-l",
        "--label",
        metavar="LABEL",
        action="append",
        help="a label shown in the Web UI (repeatable; default: python and the adapter, or the "
        "Worker's)",
    )
    add(
        "--log-level",
        metavar="LEVEL",
        type=str.upper,
        choices=LOG_LEVELS,
        default="INFO",
        help=f"{', '.join(LOG_LEVELS)} (default: %(default)s); logs go to stderr",
    )
    add(
        "--url",
        help="the server, tcp://[:PASSWORD@]HOST[:PORT] or tcp+tls://... (default: the "
        "Worker's, else the env var FAKTORY_URL, or the one FAKTORY_PROVIDER names, else "
        "tcp://localhost:7419). A password given here shows in the process list: prefer the "
        "environment. TLS certificates are verified against the system's CAs, or those in the "
        "file the env var SSL_CERT_FILE names (a Worker's ssl_context, if it has one)",
    )
    add(
        "--burst",
        action="store_true",
        default=None,
        help="work until the queues are empty, then stop cleanly",
    )
    add(
        "--watch",
        action="store_true",
        help="for development: restart the worker when a .py file changes under the "
        "directories of the -r modules. The watcher imports nothing: each worker process "
        f"imports the modules and checks the server (if the first cannot use it, exit "
        f"{EXIT_UNREACHABLE}; after a failed import it waits for a change)",
    )
    add(
        "--check",
        action="store_true",
        help="only check the options and that the server answers, and start no worker: with "
        "-r, import the modules, make the worker as it would run (a Worker they define, with "
        "the options given here) and check its server; without, check the server --url or the "
        f"environment names. Exit {EXIT_CLEAN}, {EXIT_USAGE} for bad options or modules, or "
        f"{EXIT_UNREACHABLE} with the reason",
    )
    add(
        "--processes",
        metavar="N",
        type=_positive_int,
        default=1,
        help="run N worker processes under a supervisor that forwards signals and restarts "
        "crashed ones (default: %(default)s). The supervisor imports the -r modules and "
        "checks the server once first; each worker process imports them again",
    )
    add(
        "--metrics-port",
        metavar="PORT",
        type=_port,
        help="serve Prometheus metrics over HTTP on PORT, at /metrics (0: any free port, "
        "logged). Needs the prometheus extra: pip install 'faktory-sansio[prometheus]'. With "
        "--processes, the supervisor serves the sum of the worker processes' metrics. "
        "Overrides the Worker's metrics_port",
    )
    add(
        "--metrics-address",
        metavar="ADDRESS",
        help=f"the address the metrics server listens on (default: {METRICS_ADDRESS}, every "
        "IPv4 interface, for a scraper outside the machine or container; 127.0.0.1 keeps it "
        "local)",
    )
    add(METRICS_FOR_SUPERVISOR, action="store_true", help=argparse.SUPPRESS)
    add(
        "--health-port",
        metavar="PORT",
        type=_port,
        help="serve health checks over HTTP on PORT: /livez (the worker's loop and heartbeat "
        "answer; never the server) and /readyz (running and connected), for Kubernetes probes "
        "(0: any free port, logged). Not with --processes",
    )
    add(
        "--health-address",
        metavar="ADDRESS",
        help=f"the address the health checks listen on (default: {HEALTH_ADDRESS}, every IPv4 "
        "interface, where kubelet probes the pod's IP; 127.0.0.1 keeps it local)",
    )
    add("--version", action="version", version=f"{PROG} {core.__version__}")
    return parser


def parse_queues(specs: Sequence[str]) -> list[str] | dict[str, int]:
    """``-q`` values: names in priority order, or ``{name: weight}`` when all are weighted."""
    if not specs:
        return ["default"]
    names: list[str] = []
    weights: dict[str, int] = {}
    for spec in specs:
        name, colon, weight = spec.rpartition(":") if ":" in spec else (spec, "", "")
        if not name:
            raise UsageError(f"queue {spec!r} has no name")
        if name in names:
            raise UsageError(f"queue {name!r} is given twice")
        names.append(name)
        if colon:
            try:
                weights[name] = int(weight)
            except ValueError:
                raise UsageError(f"the weight of queue {name!r} is not a whole number") from None
            if weights[name] < 1:
                raise UsageError(f"the weight of queue {name!r} must be at least 1")
    if not weights:
        return names
    if len(weights) < len(names):
        unweighted = ", ".join(name for name in names if name not in weights)
        raise UsageError(f"give a weight to every queue or to none (no weight: {unweighted})")
    return weights


def given_options(options: argparse.Namespace) -> dict[str, Any]:
    """The Worker keywords given on the command line; the others are left to the Worker."""
    given = {
        keyword: getattr(options, dest)
        for dest, keyword in WORKER_KEYWORDS.items()
        if getattr(options, dest) is not None
    }
    if "queues" in given:
        given["queues"] = parse_queues(given["queues"])
    return given


def _check_options(given: Mapping[str, Any]) -> None:
    """Check the options given, as a Worker would, before any module is imported.

    Without ``--url``, the environment's URL is not checked here: a Worker named with ``-r``
    may have its own. It is where it is used.
    """
    with _usage_error():
        WorkerBase(**{"url": _ANY_URL, **given})


@contextlib.contextmanager
def _usage_error(prefix: str = "") -> Iterator[None]:
    """A bad option (the core's checks included) is a UsageError: one line, exit 2."""
    try:
        yield
    except (ValueError, TypeError, core.ProtocolError) as error:
        raise UsageError(f"{prefix}{error}") from None


def check_server(url: str | core.ServerURL | None, ssl_context: Any = None) -> str:
    """Connect and handshake with the thread adapter's Client (with ``ssl_context``, a
    Worker's, if given); the server's version.

    Raises UnreachableError with the reason in one line.
    """
    from .thread import Client  # stdlib only

    address = resolve_url(url)
    try:
        with Client(
            address,
            pool_size=1,
            timeout=CHECK_TIMEOUT,
            connect_timeout=CHECK_TIMEOUT,
            ssl_context=ssl_context,
        ) as client:
            info = client.info()
    except Exception as error:
        reason = unusable_reason(error, address, timeout=CHECK_TIMEOUT)
        raise UnreachableError(f"cannot use the server at {address}: {reason}") from None
    server = info.get("server")
    return str(server.get("faktory_version", "?")) if isinstance(server, Mapping) else "?"


@dataclasses.dataclass(frozen=True)
class Handlers:
    """What the ``-r`` modules define: Workers and Jobs, each by where it was found
    (``module:attribute``), each object once."""

    workers: dict[str, WorkerBase]
    jobs: dict[str, Jobs]


def import_handlers(names: Sequence[str]) -> Handlers:
    """Import the ``-r`` modules; the Workers and Jobs at their top level (or named)."""
    found: dict[int, tuple[str, WorkerBase | Jobs]] = {}  # by identity: one can be imported
    for name in names:  # by several modules
        module_name, _, attribute = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as error:
            raise UsageError(f"cannot import {module_name!r}: {_describe(error)}") from None
        if attribute:
            if not hasattr(module, attribute):
                raise UsageError(f"module {module_name!r} has no attribute {attribute!r}")
            value = getattr(module, attribute)
            if not isinstance(value, (Jobs, WorkerBase)):
                kind = type(value).__name__
                raise UsageError(
                    f"{name} is not a faktory_adapters.Jobs or a Worker (its type is {kind})"
                )
            candidates = {name: value}
        else:
            candidates = {f"{module_name}:{key}": value for key, value in vars(module).items()}
        for where, value in candidates.items():
            if isinstance(value, (Jobs, WorkerBase)):
                found.setdefault(id(value), (where, value))
    return Handlers(
        workers={where: value for where, value in found.values() if isinstance(value, WorkerBase)},
        jobs={where: value for where, value in found.values() if isinstance(value, Jobs)},
    )


def make_worker(options: argparse.Namespace, given: Mapping[str, Any]) -> WorkerBase:
    """The worker the command runs: the Worker the ``-r`` modules define, with the options
    given over its own, or one of the chosen adapter with them; every Jobs of the modules
    included. Every conflict is a UsageError."""
    handlers = import_handlers(options.require)
    registries = {where: jobs for where, jobs in handlers.jobs.items() if len(jobs)}
    if len(handlers.workers) > 1:
        raise UsageError(
            f"{' and '.join(handlers.workers)} are Workers: the command runs one, so name it "
            "with -r MODULE:ATTRIBUTE"
        )
    if handlers.workers:
        ((target, worker),) = handlers.workers.items()
        if options.adapter is not None and options.adapter != worker.runtime:
            raise UsageError(
                f"--adapter {options.adapter} conflicts with {target}, a Worker of the "
                f"{worker.runtime} adapter, which it runs on: drop --adapter or change the Worker"
            )
        with _usage_error(f"the options given cannot apply to {target}: "):
            worker._reconfigure(**given)
    elif registries:
        adapter = _import_adapter(options.adapter or DEFAULT_ADAPTER)
        with _usage_error():
            worker = adapter.Worker(**given)
        target = "the worker"
    else:
        raise _no_handlers(options.require)
    for where, jobs in registries.items():
        try:
            worker.include(jobs)
        except ValueError as error:
            raise UsageError(f"cannot include {where} in {target}: {error}") from None
    if not len(worker._jobs):
        raise _no_handlers(options.require)
    if handlers.workers:
        overrides = f", with {', '.join(given)} from the command line" if given else ""
        _log.info("using the Worker %s (%s adapter)%s", target, worker.runtime, overrides)
    return worker


def _no_handlers(names: Sequence[str]) -> UsageError:
    return UsageError(
        f"no job handlers found in {', '.join(names)}: register them on a "
        "faktory_adapters.Jobs or a Worker at the top level of a module"
    )


def _import_adapter(name: str) -> Any:
    try:
        return importlib.import_module(f"faktory_adapters.{name}")
    except ImportError as error:
        raise UsageError(
            f"the {name} adapter cannot be imported ({error}); "
            f"install it with: pip install 'faktory-sansio[{name}]'"
        ) from None


def _describe(error: Exception) -> str:
    """An import error in one line, with where the imported code raised it."""
    text = f"{type(error).__name__}: {error}"
    if isinstance(error, SyntaxError):
        return text  # its message names the file and line
    where = ""
    traceback = error.__traceback__
    while traceback is not None:
        filename = traceback.tb_frame.f_code.co_filename
        if not filename.startswith(("<frozen ", _IMPORTLIB)) and filename != __file__:
            where = f" ({filename}:{traceback.tb_lineno})"
        traceback = traceback.tb_next
    return text + where


def _without(argv: Sequence[str], option: str, *, takes_value: bool) -> list[str]:
    """``argv`` less ``option`` (and its value): the command line of a child process."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = takes_value
        elif not arg.startswith(f"{option}="):
            kept.append(arg)
    return kept


def _main(options: argparse.Namespace, argv: Sequence[str]) -> int:
    given = given_options(options)
    _check_options(given)
    _check_metrics_options(options)
    _check_health_options(options)
    if not (options.require or options.check):
        raise UsageError("no job handlers: name the modules that register them with -r MODULE")
    if options.watch and not options.check:
        from ._watch import watch, watched_directories

        # Nothing is imported here: a module being edited may not import yet.
        directories = watched_directories(options.require)
        return watch(_without(argv, "--watch", takes_value=False), directories)
    worker = make_worker(options, given) if options.require else None
    if worker is not None:
        _take_metrics_option(options, worker)
    if worker is None:
        with _usage_error():
            url = resolve_url(given.get("url"))
    else:
        url = worker._url
    version = check_server(url, None if worker is None else worker._ssl_context)
    if options.check or worker is None:  # without -r, only --check comes this far
        print(f"{PROG}: ok: Faktory {version} at {url}")
        return EXIT_CLEAN
    if options.processes > 1:
        return _supervise(options, _without(argv, "--processes", takes_value=True))
    if options.metrics_port is not None:
        _serve_metrics(worker, options.metrics_port, options.metrics_address or METRICS_ADDRESS)
    elif options.metrics_for_supervisor:
        _count_metrics_for_supervisor(worker)
    if options.health_port is not None:
        _serve_health(worker, options.health_port, options.health_address or HEALTH_ADDRESS)
    try:
        code: int = worker.run()
    except Exception:
        _log.exception("the worker crashed")
        return EXIT_CRASHED
    return code


def _take_metrics_option(options: argparse.Namespace, worker: WorkerBase) -> None:
    """A Worker's own ``metrics_port`` is served as ``--metrics-port`` is (which overrides
    it, as ``--metrics-address`` overrides its address): by the supervisor under
    ``--processes``, and a port taken is a usage error."""
    port, address = worker._settings["metrics_port"], worker._settings["metrics_address"]
    if port is not None:
        worker._reconfigure(metrics_port=None)  # the command serves it, or the supervisor
    if options.metrics_for_supervisor:  # a worker process: its supervisor serves
        return
    if options.metrics_port is None:
        options.metrics_port = port
    if options.metrics_port is None:
        if options.metrics_address is not None:
            raise UsageError(
                "--metrics-address needs --metrics-port (or a Worker with metrics_port)"
            )
        return
    # The Worker's address unless one is given: a Worker kept on 127.0.0.1 stays there.
    options.metrics_address = options.metrics_address or address


def _supervise(options: argparse.Namespace, argv: list[str]) -> int:
    """``--processes``: the worker processes run with ``argv``; with ``--metrics-port``, they
    count their metrics for the supervisor, which serves them."""
    from ._supervisor import SharedMetrics, supervise

    if options.metrics_port is None:
        return supervise(argv, options.processes)
    port, address = options.metrics_port, options.metrics_address or METRICS_ADDRESS
    argv = _without(argv, "--metrics-port", takes_value=True)
    argv = [*_without(argv, "--metrics-address", takes_value=True), METRICS_FOR_SUPERVISOR]
    try:
        metrics = SharedMetrics(port, address)
    except OSError as error:
        raise _unservable(port, address, error) from None
    with metrics:
        _log.info("serving metrics on %s", metrics.url)
        return supervise(argv, options.processes, metrics)


def _check_metrics_options(options: argparse.Namespace) -> None:
    """``--metrics-*``: given together, and prometheus_client importable (``--check`` checks
    that too)."""
    if options.metrics_port is None:
        if options.metrics_address is not None and not options.require:  # else a -r Worker's
            raise UsageError("--metrics-address needs --metrics-port")
        if not options.metrics_for_supervisor:
            return
    _import_prometheus()


def _check_health_options(options: argparse.Namespace) -> None:
    """``--health-*``: given together, and not with ``--processes``."""
    if options.health_port is None:
        if options.health_address is not None:
            raise UsageError("--health-address needs --health-port")
        return
    if options.processes > 1:
        raise UsageError(
            "--health-port cannot be used with --processes: a probe checks one worker "
            "process. Run one worker process per container (more replicas) instead"
        )


def _serve_health(worker: WorkerBase, port: int, address: str) -> None:
    from .health import serve_health

    try:
        serve_health(worker, port, address)
    except OSError as error:
        raise UsageError(
            f"cannot serve health checks on {address} port {port}: {error.strerror or error}"
        ) from None


def _import_prometheus() -> Any:
    try:
        return importlib.import_module("faktory_adapters.prometheus")
    except ImportError as error:
        reason = error.__cause__ or error  # "No module named 'prometheus_client'"
        raise UsageError(
            f"--metrics-port needs prometheus_client ({reason}); "
            "install it with: pip install 'faktory-sansio[prometheus]'"
        ) from None


def _serve_metrics(worker: WorkerBase, port: int, address: str) -> None:
    """``prometheus.serve_metrics``, its errors one line each."""
    prometheus = _import_prometheus()
    try:
        with _usage_error("--metrics-port: "):  # a module registered metrics of these names
            server, _ = prometheus.serve_metrics(worker, port, address)
    except OSError as error:
        raise _unservable(port, address, error) from None
    _log.info("serving metrics on %s", prometheus._metrics_url(address, server.server_port))


def _unservable(port: int, address: str, error: OSError) -> UsageError:
    return UsageError(f"cannot serve metrics on {address} port {port}: {error.strerror or error}")


def _count_metrics_for_supervisor(worker: WorkerBase) -> None:
    """A worker process of a supervisor serving ``--metrics-port``: count the worker's metrics,
    unless a PrometheusMetrics of its own does already (in multiprocess mode, every registry's
    metrics go to the files the supervisor serves)."""
    prometheus = _import_prometheus()
    if not any(
        isinstance(observer, prometheus.PrometheusMetrics) for observer in worker._observers
    ):
        with _usage_error("--metrics-port: "):
            worker.observe(prometheus.PrometheusMetrics())


@contextlib.contextmanager
def _term_interrupts() -> Iterator[None]:
    """Until the worker installs its own handlers, TERM interrupts like INT does."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    options = build_parser().parse_args(args)
    logging.basicConfig(level=options.log_level, format=_logging.LOG_FORMAT, stream=sys.stderr)
    # Like `python -m`: modules in the current directory can be named with -r, first.
    with contextlib.suppress(ValueError):
        sys.path.remove(os.getcwd())
    sys.path.insert(0, os.getcwd())
    try:
        with _term_interrupts():
            return _main(options, args)
    except UsageError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except UnreachableError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:  # stopped before a worker started: nothing to drain
        return EXIT_CLEAN
    except Exception:  # never exit 1, which says jobs were aborted
        _log.exception("%s crashed", PROG)
        return EXIT_CRASHED
