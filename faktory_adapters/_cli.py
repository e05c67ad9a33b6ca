"""The ``faktory-worker`` command (also ``python -m faktory_adapters``).

It imports the modules named with ``-r``, includes every :class:`~faktory_adapters.Jobs` they
define in a Worker of the chosen adapter, checks that the server answers, and runs the worker
with its signals: TERM/INT stop (a second one aborts at once), TSTP quiets, TTIN logs stacks.
``--processes N`` runs N such workers under a supervisor; ``--watch`` restarts the worker when
a ``.py`` file changes.

Exit codes (names in ``faktory_adapters._exits``):

- 0 (``EXIT_CLEAN``): the worker stopped cleanly.
- 1 (``EXIT_ABORTED``): jobs still running at the shutdown timeout were aborted.
- 2 (``EXIT_USAGE``): bad configuration: an invalid option, a handler module that fails to
  import, no handlers found.
- 3 (``EXIT_UNREACHABLE``): the server cannot be reached or refuses the handshake.
- 4 (``EXIT_CRASHED``): the worker crashed (its traceback is logged).
- 128+N: (``--processes``, ``--watch``) a worker process was killed by signal N.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
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

__all__ = [
    "build_parser",
    "check_server",
    "import_jobs",
    "main",
    "parse_queues",
]

PROG: Final = "faktory-worker"

ADAPTERS: Final = ("asyncio", "thread", "gevent")
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: The reachability check's two bounds: on opening the connection (TCP, TLS and the Faktory
#: handshake together), then on the whole INFO reply. So it ends within twice this.
CHECK_TIMEOUT: Final = 5.0

_IMPORTLIB: Final = os.path.dirname(importlib.__file__)

_log: Final = logging.getLogger("faktory.cli")

_EPILOG: Final = f"""\
exit codes:
  {EXIT_CLEAN}  the worker stopped cleanly (after TERM/INT, a terminate from the server, or
     --burst once the queues are empty)
  {EXIT_ABORTED}  jobs still running at the shutdown timeout were aborted (and FAILed: they retry)
  {EXIT_USAGE}  bad configuration: an invalid option, a handler module that fails to import,
     no handlers found, weighted and unweighted queues mixed
  {EXIT_UNREACHABLE}  the server cannot be reached or refuses the handshake (connection refused or
     timed out, TLS error, wrong password)
  {EXIT_CRASHED}  the worker crashed (its traceback is logged)
  with --processes or --watch, a worker process killed by signal N counts as 128+N;
  --processes exits with the highest code of its worker processes

signals: TERM/INT stop (a second one aborts at once), TSTP quiets, TTIN logs running jobs
"""


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


def _version() -> str:
    try:
        return importlib.metadata.version("faktory-sansio")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


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
        help="import MODULE (repeatable) and run every faktory_adapters.Jobs defined at its top "
        "level; MODULE:ATTRIBUTE names one Jobs. The current directory is searched first",
    )
    add(
        "--adapter",
        choices=ADAPTERS,
        default="asyncio",
        help="the runtime jobs run on (default: %(default)s)",
    )
    add(
        "-q",
        "--queue",
        metavar="NAME[:WEIGHT]",
        action="append",
        default=[],
        help="a queue to fetch from (repeatable; default: default). Without weights, queues "
        "are fetched in strict priority order; give weights to all queues or to none",
    )
    add(
        "-c",
        "--concurrency",
        metavar="N",
        type=_positive_int,
        default=10,
        help="jobs run at the same time (default: %(default)s)",
    )
    add(
        "--shutdown-timeout",
        metavar="SECONDS",
        type=_seconds,
        default=25.0,
        help="after TERM/INT, how long running jobs may take to finish before they are "
        "aborted (default: %(default)g)",
    )
    add(
        "--abort-grace",
        metavar="SECONDS",
        type=_seconds,
        default=3.0,
        help="how long aborted jobs get to clean up before the worker exits (default: %(default)g)",
    )
    add(
        "-l",
        "--label",
        metavar="LABEL",
        action="append",
        default=[],
        help="a label shown in the Web UI (repeatable; default: python and the adapter)",
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
        help="the server, tcp://[:PASSWORD@]HOST[:PORT] or tcp+tls://... (default: the env var "
        "FAKTORY_URL, or the one FAKTORY_PROVIDER names, else tcp://localhost:7419). A "
        "password given here shows in the process list: prefer the environment. TLS "
        "certificates are verified against the system's CAs, or those in the file the env var "
        "SSL_CERT_FILE names",
    )
    add(
        "--burst",
        action="store_true",
        help="work until the queues are empty, then stop cleanly",
    )
    add(
        "--watch",
        action="store_true",
        help="for development: restart the worker when a .py file changes under the "
        "directories of the -r modules",
    )
    add(
        "--check",
        action="store_true",
        help="only check the options and that the server answers (no module is imported, no "
        f"worker started); exit {EXIT_CLEAN}, or {EXIT_UNREACHABLE} with the reason",
    )
    add(
        "--processes",
        metavar="N",
        type=_positive_int,
        default=1,
        help="run N worker processes under a supervisor that forwards signals and restarts "
        "crashed ones (default: %(default)s)",
    )
    add("--version", action="version", version=f"{PROG} {_version()}")
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


def _worker_options(options: argparse.Namespace) -> dict[str, Any]:
    """The Worker keywords the options give, checked by the options' own class."""
    from ._worker_base import WorkerBase  # imports no runtime

    worker_options: dict[str, Any] = {
        "url": options.url,
        "queues": parse_queues(options.queue),
        "concurrency": options.concurrency,
        "shutdown_timeout": options.shutdown_timeout,
        "abort_grace": options.abort_grace,
        "labels": options.label or None,
        "burst": options.burst,
    }
    try:
        WorkerBase(**worker_options)
    except (ValueError, TypeError, core.ProtocolError) as error:  # the core's checks too
        raise UsageError(str(error)) from None
    return worker_options


def check_server(url: str | None) -> str:
    """Connect and handshake with the thread adapter's Client; the server's version.

    Raises UnreachableError with the reason in one line.
    """
    from .thread import Client  # stdlib only

    address = resolve_url(url)
    try:
        with Client(
            address, pool_size=1, timeout=CHECK_TIMEOUT, connect_timeout=CHECK_TIMEOUT
        ) as client:
            info = client.info()
    except Exception as error:
        reason = unusable_reason(error, address, timeout=CHECK_TIMEOUT)
        raise UnreachableError(f"cannot use the server at {address}: {reason}") from None
    server = info.get("server")
    return str(server.get("faktory_version", "?")) if isinstance(server, Mapping) else "?"


def import_jobs(names: Sequence[str]) -> list[Jobs]:
    """Import the ``-r`` modules; the Jobs at their top level (or the named attributes)."""
    from ._worker_base import WorkerBase

    found: dict[int, Jobs] = {}  # by identity: one Jobs can be imported by several modules
    workers: list[str] = []
    for name in names:
        module_name, _, attribute = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as error:
            raise UsageError(f"cannot import {module_name!r}: {_describe(error)}") from None
        if attribute:
            if not hasattr(module, attribute):
                raise UsageError(f"module {module_name!r} has no attribute {attribute!r}")
            value = getattr(module, attribute)
            if not isinstance(value, Jobs):
                kind = type(value).__name__
                raise UsageError(f"{name} is not a faktory_adapters.Jobs (its type is {kind})")
            found[id(value)] = value
            continue
        for key, value in vars(module).items():
            if isinstance(value, Jobs):
                found[id(value)] = value
            elif isinstance(value, WorkerBase):
                workers.append(f"{module_name}.{key}")
    jobs = [registry for registry in found.values() if len(registry)]
    if not jobs:
        hint = (
            f" ({', '.join(workers)} is a Worker: this command makes its own, so register "
            "the handlers on a Jobs and include it in yours with worker.include(jobs))"
            if workers
            else ""
        )
        raise UsageError(
            f"no job handlers found in {', '.join(names)}: register them on a "
            f"faktory_adapters.Jobs at the top level of a module{hint}"
        )
    return jobs


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


def _run_worker(options: argparse.Namespace, worker_options: dict[str, Any]) -> int:
    jobs = import_jobs(options.require)
    check_server(options.url)
    try:
        adapter = importlib.import_module(f"faktory_adapters.{options.adapter}")
    except ImportError as error:
        raise UsageError(
            f"the {options.adapter} adapter cannot be imported ({error}); "
            f"install it with: pip install 'faktory-sansio[{options.adapter}]'"
        ) from None
    worker = adapter.Worker(**worker_options)
    try:
        for registry in jobs:
            worker.include(registry)
    except ValueError as error:
        raise UsageError(str(error)) from None
    try:
        code: int = worker.run()
    except Exception:
        _log.exception("the worker crashed")
        return EXIT_CRASHED
    return code


def _main(options: argparse.Namespace, argv: Sequence[str]) -> int:
    worker_options = _worker_options(options)
    if options.check:
        version = check_server(options.url)
        print(f"{PROG}: ok: Faktory {version} at {resolve_url(options.url)}")
        return EXIT_CLEAN
    if not options.require:
        raise UsageError("no job handlers: name the modules that register them with -r MODULE")
    if options.watch:
        from ._watch import watch, watched_directories

        directories = watched_directories(options.require)
        check_server(options.url)
        return watch(_without(argv, "--watch", takes_value=False), directories)
    if options.processes > 1:
        from ._supervisor import supervise

        check_server(options.url)
        return supervise(_without(argv, "--processes", takes_value=True), options.processes)
    return _run_worker(options, worker_options)


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
    _logging.install()
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
