"""``faktory-worker --watch``: restart the worker when a ``.py`` file changes (development).

The worker runs in a child process. Every :data:`POLL_INTERVAL` the watcher compares the
modification times of the ``.py`` files under the watched directories (no dependency, no
inotify); on a change it sends the worker TERM, waits for it to stop, and starts a new one.
A worker that exits by itself (a syntax error, say) is started again at the next change. The
watcher imports none of the modules (one being edited may not import yet), so the worker
process checks the server: if the first one exits with 3, the server cannot be used, which no
change of a file fixes, and the watcher exits with 3 too. TERM or INT stop the worker and the
watcher, which exits with the worker's code.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import subprocess
from collections.abc import Iterable, Sequence
from typing import Final

from ._exits import EXIT_UNREACHABLE, UsageError
from ._supervisor import FORWARDED, SignalInbox, exit_code, spawn

__all__ = ["POLL_INTERVAL", "snapshot", "watch", "watched_directories"]

#: Seconds between two looks at the files.
POLL_INTERVAL: Final = 0.5

_log: Final = logging.getLogger("faktory.watch")
_NOT_WATCHED: Final = frozenset(("__pycache__", "site-packages", "node_modules"))


def watched_directories(modules: Iterable[str]) -> list[str]:
    """Where the ``-r`` modules live, found without importing them: the directory of a
    top-level module, the directory of a package (for ``package.module`` too)."""
    directories: set[str] = set()
    for name in modules:
        top = name.partition(":")[0].partition(".")[0]
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError) as error:
            raise UsageError(f"cannot find module {top!r}: {error}") from None
        if spec is None:
            raise UsageError(f"cannot find module {top!r}")
        if spec.submodule_search_locations:
            directories.update(spec.submodule_search_locations)
        elif spec.origin and os.path.isfile(spec.origin):
            directories.add(os.path.dirname(spec.origin))
    # Nested directories are walked once, under their parent.
    ordered = sorted(os.path.abspath(directory) for directory in directories or {os.getcwd()})
    kept: list[str] = []
    for directory in ordered:
        if not any(directory.startswith(parent + os.sep) for parent in kept):
            kept.append(directory)
    return kept


def snapshot(directories: Iterable[str]) -> dict[str, int]:
    """Every ``.py`` file under the directories with its modification time (ns); hidden
    directories (``.venv``, ``.git``), virtual environments, ``__pycache__``,
    ``site-packages`` and ``node_modules`` are skipped: no user code changes there."""
    files: dict[str, int] = {}
    for directory in directories:
        for root, subdirectories, names in os.walk(directory):
            subdirectories[:] = [
                name
                for name in subdirectories
                if not name.startswith(".")
                and name not in _NOT_WATCHED
                and not os.path.exists(os.path.join(root, name, "pyvenv.cfg"))
            ]
            for name in names:
                if name.endswith(".py"):
                    path = os.path.join(root, name)
                    try:
                        files[path] = os.stat(path).st_mtime_ns
                    except OSError:  # removed while we looked
                        continue
    return files


def _changed(before: dict[str, int], after: dict[str, int]) -> list[str]:
    return sorted(
        path for path in before.keys() | after.keys() if before.get(path) != after.get(path)
    )


def watch(argv: Sequence[str], directories: Sequence[str]) -> int:
    """Run ``faktory-worker ARGV`` and restart it on changes; its exit code at the end."""
    _log.info("watching the .py files under %s", ", ".join(directories))
    files = snapshot(directories)
    code = 0
    stopping = restarting = False
    first = True  # the first worker process has not exited yet
    with SignalInbox(FORWARDED) as inbox:
        worker: subprocess.Popen[bytes] | None = spawn(argv)
        while True:
            for signum in inbox.wait(None if stopping else POLL_INTERVAL):
                if signum == signal.SIGCHLD:
                    continue
                stopping = stopping or signum in (signal.SIGTERM, signal.SIGINT)
                if worker is not None and worker.poll() is None:
                    worker.send_signal(signum)
            if worker is not None and worker.poll() is not None:
                code = exit_code(worker.returncode)
                worker = None
                if first and code == EXIT_UNREACHABLE and not stopping:
                    return code  # it said why: the server cannot be used
                first = False
                if not (stopping or restarting):
                    _log.info("the worker exited with %d; waiting for a change", code)
            if stopping:
                if worker is None:
                    return code
                continue
            if restarting and worker is None:
                restarting = False
                worker = spawn(argv)
            latest = snapshot(directories)
            changed = _changed(files, latest)
            if not changed:
                continue
            files = latest
            _log.info("%s changed: restarting the worker", os.path.relpath(changed[0]))
            if worker is None:
                worker = spawn(argv)
            elif not restarting:
                restarting = True
                worker.send_signal(signal.SIGTERM)
