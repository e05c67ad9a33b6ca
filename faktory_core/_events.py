"""What a connection reports: one event per server reply, plus handshake and closure."""

from __future__ import annotations

from typing import Any

import attrs

from ._commands import (
    BatchNew,
    BatchOpen,
    BatchStatus,
    Beat,
    Command,
    Fetch,
    Info,
    PushBulk,
    QueueLatency,
    TrackGet,
    WorkerState,
)
from ._job import Job

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


@attrs.frozen(kw_only=True)
class ServerError(Event):
    """A ``-CODE message`` reply to ``command`` (None when the server sent it unasked)."""

    command: Command | None
    code: str
    message: str


@attrs.frozen(kw_only=True)
class ConnectionClosed(Event):
    """The connection is closed; ``unanswered`` are the commands sent that got no reply."""

    unanswered: tuple[Command, ...] = ()
