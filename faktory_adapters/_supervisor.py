"""``faktory-worker --processes N``: N worker processes, kept running by one supervisor.

The supervisor forwards TERM, INT, TSTP and TTIN to every worker process, restarts one that
dies unexpectedly (killed by a signal it did not send, or exiting with a crash code) after a
capped exponential backoff, and exits once all have stopped, with the highest exit code among
them. A worker that exits by itself with 0 or 1 (a terminate from the Web UI, ``--burst``),
or with 2 or 3 (its configuration or the server), is not restarted. The processes get TERM
if the supervisor dies (Linux), so none outlives it.

With ``--metrics-port``, the supervisor serves the metrics of every worker process, added up
(:class:`SharedMetrics`); the worker processes open no port.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Final

from ._exits import EXIT_CLEAN, EXIT_UNREACHABLE

__all__ = ["SharedMetrics", "SignalInbox", "exit_code", "spawn", "supervise"]

#: The signals a parent passes on to its worker processes.
FORWARDED: Final = (signal.SIGTERM, signal.SIGINT, signal.SIGTSTP, signal.SIGTTIN)
#: The first restart comes after this many seconds; each crash in a row doubles it, up to
#: the cap. A worker that ran longer than the cap starts the count again.
RESTART_DELAY: Final = 0.5
RESTART_DELAY_CAP: Final = 30.0

_PR_SET_PDEATHSIG: Final = 1
_log: Final = logging.getLogger("faktory.supervisor")


class SignalInbox:
    """Signals delivered as bytes on a pipe, so one ``select`` waits for signals, child
    processes' exits (SIGCHLD) and a timeout together, with no thread and no race."""

    def __init__(self, signals: Sequence[signal.Signals]) -> None:
        self._signals = (*signals, signal.SIGCHLD)
        self._reader, self._writer = os.pipe()
        for fd in (self._reader, self._writer):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        self._previous: dict[int, Callable[..., object] | int | None] = {}
        self._previous_fd = -1

    def __enter__(self) -> SignalInbox:
        # A Python handler must be set for the signal to be written to the wakeup fd.
        self._previous = {signum: signal.signal(signum, _note) for signum in self._signals}
        self._previous_fd = signal.set_wakeup_fd(self._writer, warn_on_full_buffer=False)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        signal.set_wakeup_fd(self._previous_fd)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        os.close(self._reader)
        os.close(self._writer)

    def wait(self, timeout: float | None) -> list[signal.Signals]:
        """The signals received, waiting up to ``timeout`` s (None: until one comes)."""
        select.select([self._reader], [], [], timeout)
        received = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self._reader, 512):
                received += chunk
        return [signal.Signals(signum) for signum in received]


def _note(signum: int, frame: object) -> None:
    """The signal is in the inbox; nothing else to do here."""


def spawn(argv: Sequence[str], env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``python -m faktory_adapters ARGV`` in its own process group, so a terminal's Ctrl-C
    reaches it once, through its parent; it gets TERM if the parent dies (Linux). ``env``:
    its environment, if not this process's."""
    return subprocess.Popen(
        [sys.executable, "-m", "faktory_adapters", *argv],
        stdin=subprocess.DEVNULL,
        process_group=0,
        preexec_fn=death_signal(),
        env=env,
    )


def death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` giving the child TERM when this process dies: Linux only, and only
    from the main thread (the signal follows the parent *thread*, and the main thread's end
    is the process's). None where it cannot work."""
    prctl = _load_prctl()
    if prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getpid()

    def die_with_parent() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(EXIT_CLEAN)

    return die_with_parent


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


class SharedMetrics:
    """One metrics endpoint for every worker process: ``--metrics-port`` with ``--processes``.

    The worker processes count their metrics in files of a private directory (prometheus_client's
    multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` in their environment, :attr:`env`), and the
    supervisor serves the sum on ``address`` and ``port`` from the start. When a process ends,
    :meth:`process_ended` takes its gauges' files away, so its slots and running jobs no longer
    count; its counters and histograms stay in the sums, as they should. :meth:`close` stops
    serving and removes the directory. ``OSError`` if the port cannot be had.
    """

    def __init__(self, port: int, address: str) -> None:
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        from .prometheus import _metrics_url, _start_server

        self.directory = tempfile.mkdtemp(prefix="faktory-metrics-")
        try:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.directory)  # type: ignore[no-untyped-call]
            self._server, _ = _start_server(registry, port, address)
        except BaseException:
            shutil.rmtree(self.directory)
            raise
        #: The worker processes' environment.
        self.env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": self.directory}
        self.url = _metrics_url(address, self._server.server_port)

    def process_ended(self, pid: int) -> None:
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(pid, self.directory)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self._server.shutdown()  # returns once its thread stopped serving
        self._server.server_close()
        shutil.rmtree(self.directory)

    def __enter__(self) -> SharedMetrics:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def exit_code(returncode: int) -> int:
    """A process's exit code, or 128+N when it was killed by signal N (as shells report it)."""
    return 128 - returncode if returncode < 0 else returncode


class _Slot:
    """One of the N worker processes, across its restarts."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.process: subprocess.Popen[bytes] | None = None
        self.sent: set[int] = set()  # the signals the supervisor sent to this process
        self.started_at = 0.0
        self.crashes = 0
        self.restart_at: float | None = None
        self.code = EXIT_CLEAN

    def start(self, argv: Sequence[str], env: Mapping[str, str] | None) -> None:
        self.process = spawn(argv, env)
        self.sent = set()
        self.started_at = time.monotonic()
        self.restart_at = None
        _log.info("worker process %d started: pid %d", self.number, self.process.pid)

    def send(self, signum: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            self.sent.add(signum)
            self.process.send_signal(signum)

    def reap(self, restarts: bool) -> int | None:
        """If the process has ended: note its code and whether to restart it, and return its
        pid."""
        if self.process is None or self.process.poll() is None:
            return None
        returncode, pid = self.process.returncode, self.process.pid
        self.process = None
        self.code = exit_code(returncode)
        if returncode < 0:
            unexpected = -returncode not in self.sent
        else:
            unexpected = returncode > EXIT_UNREACHABLE  # 0 to 3 are a worker's own decisions
        if not unexpected:
            _log.info("worker process %d (pid %d) exited with %d", self.number, pid, self.code)
            return pid
        how = (
            f"was killed by {signal.Signals(-returncode).name}"
            if returncode < 0
            else f"crashed with {self.code}"
        )
        if not restarts:
            _log.warning("worker process %d (pid %d) %s", self.number, pid, how)
            return pid
        now = time.monotonic()
        self.crashes = 1 if now - self.started_at > RESTART_DELAY_CAP else self.crashes + 1
        delay = min(RESTART_DELAY_CAP, RESTART_DELAY * 2 ** (self.crashes - 1))
        self.restart_at = now + delay
        _log.warning(
            "worker process %d (pid %d) %s; restarting it in %g s", self.number, pid, how, delay
        )
        return pid


def supervise(argv: Sequence[str], count: int, metrics: SharedMetrics | None = None) -> int:
    """Run ``count`` workers with ``argv`` until all have stopped; the highest exit code.
    With ``metrics``, they count in its directory, and each one's end is told to it."""
    slots = [_Slot(number) for number in range(1, count + 1)]
    env = None if metrics is None else metrics.env
    stopping = quiet = False
    with SignalInbox(FORWARDED) as inbox:
        for slot in slots:
            slot.start(argv, env)
        while True:
            for slot in slots:
                ended = slot.reap(restarts=not (stopping or quiet))
                if ended is not None and metrics is not None:
                    metrics.process_ended(ended)
                if slot.restart_at is not None and (stopping or quiet):
                    slot.restart_at = None  # a stopping or quiet supervisor starts nothing
                if slot.restart_at is not None and slot.restart_at <= time.monotonic():
                    slot.start(argv, env)
            if all(slot.process is None and slot.restart_at is None for slot in slots):
                break
            restarts = [slot.restart_at for slot in slots if slot.restart_at is not None]
            timeout = max(0.0, min(restarts) - time.monotonic()) if restarts else None
            for signum in inbox.wait(timeout):
                if signum == signal.SIGCHLD:
                    continue
                stopping = stopping or signum in (signal.SIGTERM, signal.SIGINT)
                quiet = quiet or signum == signal.SIGTSTP
                _log.info("forwarding %s to the worker processes", signum.name)
                for slot in slots:
                    slot.send(signum)
    code = max(slot.code for slot in slots)
    _log.info("every worker process has stopped; exiting with %d", code)
    return code
