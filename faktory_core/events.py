"""What a connection reports: one event per server reply, plus handshake and closure."""

from __future__ import annotations

import enum
from typing import Any, Final

import attrs

from ._job import Job
from .commands import (
    BatchNew,
    BatchOpen,
    BatchStatus,
    Beat,
    Command,
    Fetch,
    Hello,
    Info,
    PushBulk,
    QueueLatency,
    TrackGet,
    WorkerState,
)

__all__ = [
    "OK",
    "BatchIdReply",
    "BeatReply",
    "BulkPushed",
    "ConnectionClosed",
    "Event",
    "Fetched",
    "InfoReply",
    "InvalidJobFetched",
    "LatencyReply",
    "Ready",
    "ServerError",
    "ServerErrorKind",
    "StatusReply",
]


@attrs.frozen(kw_only=True)
class Event:
    """Base class of everything ``Connection.next_event()`` returns."""


@attrs.frozen(kw_only=True)
class Ready(Event):
    """The handshake succeeded; ``protocol_version`` is the ``v`` of the server's greeting."""

    protocol_version: int


@attrs.frozen(kw_only=True)
class OK(Event):
    """``+OK`` in reply to ``command``."""

    command: Command


@attrs.frozen(kw_only=True)
class Fetched(Event):
    """The reply to FETCH: a job, or None when no queue had one within the server's wait."""

    command: Fetch
    job: Job | None


@attrs.frozen(kw_only=True)
class InvalidJobFetched(Event):
    """FETCH returned a job we cannot run as is (it is reserved: FAIL it by ``jid`` if known).

    ``jid`` is found even in a job too deep to decode or larger than max_reply_size; None
    when there is none a FAIL can carry. ``payload`` is the job's bytes, only the first KiB
    of a job over max_reply_size (the rest was read past, not kept).
    """

    command: Fetch
    payload: bytes
    jid: str | None
    reason: str


@attrs.frozen(kw_only=True)
class BulkPushed(Event):
    """The reply to PUSHB: the jids the server refused, each with its error text."""

    command: PushBulk
    errors: dict[str, str]


@attrs.frozen(kw_only=True)
class BeatReply(Event):
    """The reply to BEAT: the state the server wants this worker in."""

    command: Beat
    state: WorkerState


@attrs.frozen(kw_only=True)
class InfoReply(Event):
    """The reply to INFO: the server's statistics as a JSON object."""

    command: Info
    info: dict[str, Any]


@attrs.frozen(kw_only=True)
class LatencyReply(Event):
    """The reply to QUEUE LATENCY: seconds waited by the oldest job, per queue."""

    command: QueueLatency
    latencies: dict[str, float]


@attrs.frozen(kw_only=True)
class BatchIdReply(Event):
    """The batch id returned by BATCH NEW or BATCH OPEN."""

    command: BatchNew | BatchOpen
    bid: str


@attrs.frozen(kw_only=True)
class StatusReply(Event):
    """The JSON status object returned by BATCH STATUS or TRACK GET."""

    command: BatchStatus | TrackGet
    status: dict[str, Any]


class ServerErrorKind(enum.Enum):
    """What a server error means, for the errors a client acts on (``ServerError.kind``)."""

    AUTHENTICATION = "HELLO refused for its password (Invalid password)"
    SHUTTING_DOWN = "the server is stopping and carries out no command (shutdown in progress)"
    TOO_MANY_CONNECTIONS = "over the server's connection limit; it closes the connection"
    UNKNOWN_WORKER = "BEAT from a worker the server does not know (reaped or restarted)"
    JOB_NOT_FOUND = "ACK or FAIL of a job no longer reserved"
    OTHER = "any other error"

    __hash__ = object.__hash__


#: How each kind's message begins, lower-cased (faktory-protocol.md; Faktory spelled
#: "Unknown worker" before 1.6.1, "Shutdown in progress" and "Job not found" capitalised).
_PREFIXES: Final = (
    ("shutdown in progress", ServerErrorKind.SHUTTING_DOWN),
    ("too many connections", ServerErrorKind.TOO_MANY_CONNECTIONS),
    ("unknown worker", ServerErrorKind.UNKNOWN_WORKER),
    ("job not found", ServerErrorKind.JOB_NOT_FOUND),
)


@attrs.frozen(kw_only=True)
class ServerError(Event):
    """A ``-CODE message`` reply to ``command`` (None when the server sent it unasked)."""

    command: Command | None
    code: str
    message: str

    @property
    def kind(self) -> ServerErrorKind:
        """What the error means: the one place the server's error texts are matched."""
        text = self.message.lower()
        # Only a HELLO's refusal: other replies may echo a payload that says "password".
        if isinstance(self.command, Hello) and "password" in text:
            return ServerErrorKind.AUTHENTICATION
        for prefix, kind in _PREFIXES:
            if text.startswith(prefix):
                return kind
        return ServerErrorKind.OTHER


@attrs.frozen(kw_only=True)
class ConnectionClosed(Event):
    """The connection is closed; ``unanswered`` are the commands sent that got no reply."""

    unanswered: tuple[Command, ...] = ()
