"""The ``faktory-worker`` command's exit codes and the errors that choose them, shared by the
command, its supervisor (``--processes``) and its watcher (``--watch``)."""

from __future__ import annotations

from typing import Final

import faktory_core as core

__all__ = [
    "EXIT_ABORTED",
    "EXIT_CLEAN",
    "EXIT_CRASHED",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "UnreachableError",
    "UsageError",
]

EXIT_CLEAN: Final = core.EXIT_CLEAN
EXIT_ABORTED: Final = core.EXIT_ABORTED
EXIT_USAGE: Final = 2
# The worker itself stops with 3 when the server refuses it for good: the same meaning.
EXIT_UNREACHABLE: Final = core.EXIT_REFUSED
EXIT_CRASHED: Final = 4


class UsageError(Exception):
    """Bad configuration: reported on one line, exit code 2."""


class UnreachableError(Exception):
    """The server cannot be reached or refuses the handshake: one line, exit code 3."""
