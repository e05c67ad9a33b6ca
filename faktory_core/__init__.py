"""A sans-IO implementation of the Faktory wire protocol and of a worker's lifecycle.

No sockets, threads, clocks or randomness: feed bytes to a :class:`Connection`, take events
out, and write what :meth:`Connection.data_to_send` returns. :class:`Worker` and
:class:`Heartbeat` take inputs with a ``now`` and return the actions an adapter carries out.

The package holds what an adapter author needs; the vocabulary lives in three modules:
:mod:`faktory_core.commands` (what a client sends), :mod:`faktory_core.events` (what a
connection reports) and :mod:`faktory_core.machine_io` (the machines' inputs and actions).
Everything else is internal, importable from its private module for tests and tools.
"""

__version__ = "0.1.0"  # the package's one version: pyproject.toml reads it from here

from . import commands, events, machine_io
from ._config import DEFAULT_CONNECTIONS, ClientConfig, WorkerConfig
from ._connection import ClientInfo, Connection
from ._errors import (
    ArgumentError,
    ArgumentTypeError,
    ConfigurationError,
    LocalProtocolError,
    OptionError,
    ProtocolError,
    RemoteProtocolError,
)
from ._heartbeat import HEARTBEAT_END_TIMEOUT, Heartbeat
from ._job import Failure, Job
from ._lifecycle import EXIT_ABORTED, EXIT_CLEAN, EXIT_REFUSED, PHASES, Phase, Trigger
from ._resp import NEED_DATA, ReplyParser
from ._state import ConnectionState
from ._url import ServerURL
from ._worker import Worker
from .commands import Command
from .events import Event
from .machine_io import Action, MachineInput

__all__ = [
    "DEFAULT_CONNECTIONS",
    "EXIT_ABORTED",
    "EXIT_CLEAN",
    "EXIT_REFUSED",
    "HEARTBEAT_END_TIMEOUT",
    "NEED_DATA",
    "PHASES",
    "Action",
    "ArgumentError",
    "ArgumentTypeError",
    "ClientConfig",
    "ClientInfo",
    "Command",
    "ConfigurationError",
    "Connection",
    "ConnectionState",
    "Event",
    "Failure",
    "Heartbeat",
    "Job",
    "LocalProtocolError",
    "MachineInput",
    "OptionError",
    "Phase",
    "ProtocolError",
    "RemoteProtocolError",
    "ReplyParser",
    "ServerURL",
    "Trigger",
    "Worker",
    "WorkerConfig",
    "commands",
    "events",
    "machine_io",
]
