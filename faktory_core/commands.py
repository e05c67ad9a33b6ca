"""Every command a client sends, as frozen data that knows its bytes and its kind of reply.

A command encodes itself when it is built, so an argument that cannot go on the wire raises
before any connection sees it: :class:`ArgumentTypeError` for a value of the wrong type (or
one JSON cannot encode), :class:`ArgumentError` for one out of bounds or malformed.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from json.encoder import encode_basestring_ascii
from typing import Any, ClassVar, Final, TypeVar

import attrs

from ._errors import ArgumentError, ArgumentTypeError
from ._job import (
    DEFAULT_QUEUE,
    Job,
    _check_jid,
    _check_optional_int,
    _show,
    _whole_minute_offset,
    check_queue_name,
)
from ._resp import command_line, dump_json, encode_json

__all__ = [
    "ALL_QUEUES",
    "DEFAULT_QUEUE",
    "DEFAULT_RETRY",
    "FETCH_WAIT_FLOOR",
    "MAX_BACKTRACE_LINES",
    "MAX_BULK_JOBS",
    "Ack",
    "BatchCommit",
    "BatchNew",
    "BatchOpen",
    "BatchStatus",
    "Beat",
    "Command",
    "End",
    "Expect",
    "Fail",
    "Fetch",
    "Flush",
    "Hello",
    "Info",
    "Mutate",
    "MutateOperation",
    "MutateTarget",
    "Push",
    "PushBulk",
    "QueueLatency",
    "QueuePause",
    "QueueRemove",
    "QueueResume",
    "TrackGet",
    "TrackSet",
    "WorkerState",
    "bulk_pushes",
    "cut_backtrace",
]

#: The queue name that means "every known queue" to QUEUE PAUSE, RESUME and REMOVE.
ALL_QUEUES: Final = "*"

#: A FETCH waits ~2 s on the server (up to its 5 s command context): a client that gave up
#: sooner would leave the job it hands out reserved for a connection nobody reads. So a FETCH
#: reply is awaited at least this long (seconds); see :meth:`Fetch.reply_timeout`.
FETCH_WAIT_FLOOR: Final = 5.0

#: The most jobs one PUSHB carries. The server takes any number, but its changelog (1.6.0)
#: recommends about 1000 per command: :func:`bulk_pushes` splits a longer list.
MAX_BULK_JOBS: Final = 1000

# The server cuts FAIL fields at these sizes (in bytes); we cut first, on character boundaries.
_MAX_ERRTYPE_BYTES: Final = 100
_MAX_MESSAGE_BYTES: Final = 1000
#: The most backtrace lines the server keeps of a FAIL (it drops the rest).
MAX_BACKTRACE_LINES: Final = 50

_E = TypeVar("_E", bound=enum.Enum)


class Expect(enum.Enum):
    """The kind of reply a command gets; the connection decodes replies by it."""

    OK = "+OK"
    JOB = "a job or null"
    BULK_PUSH = "a JSON object of failed jids"
    BEAT = "+OK or a JSON state"
    INFO = "a JSON object"
    LATENCY = "a JSON object of latencies"
    BID = "a batch id"
    STATUS = "a JSON status object"
    NOTHING = "no reply"

    # Members are singletons compared by identity; the C hash keeps table look-ups cheap.
    __hash__ = object.__hash__


class WorkerState(enum.Enum):
    """A worker's lifecycle state as the server tracks it; it only ever moves forward."""

    RUNNING = "running"
    QUIET = "quiet"
    TERMINATE = "terminate"


class MutateOperation(enum.Enum):
    """What MUTATE does to the jobs it matches."""

    CLEAR = "clear"
    KILL = "kill"
    DISCARD = "discard"
    REQUEUE = "requeue"


class MutateTarget(enum.Enum):
    """The sorted set MUTATE works on."""

    RETRIES = "retries"
    SCHEDULED = "scheduled"
    DEAD = "dead"


@attrs.frozen(kw_only=True)
class Command:
    """Base class of commands; ``encode()`` returns the command's line."""

    verb: ClassVar[str]
    expect: ClassVar[Expect] = Expect.OK
    #: The server holds the reply back (FETCH waits up to ~2 s for a job): a client that
    #: pipelines must not queue other commands behind it on the same connection.
    blocks: ClassVar[bool] = False
    _line: bytes = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_line", self._encode())

    def _encode(self) -> bytes:
        return command_line(self.verb)

    def encode(self) -> bytes:
        """The bytes of this command, CRLF included."""
        return self._line


def _word(value: object, what: str) -> str:
    """A single protocol word: non-empty, no white space."""
    if not isinstance(value, str):
        raise ArgumentTypeError(
            f"{what} must be a non-empty string without spaces, got {type(value).__name__}: "
            f"{_show(value)}"
        )
    if not value or any(c.isspace() for c in value):
        raise ArgumentError(f"{what} must be a non-empty string without spaces: {value!r}")
    return value


def _queues(value: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, Iterable):
        raise ArgumentTypeError(
            f"queues must be a queue name or a list of them, got {type(value).__name__}"
        )
    names = tuple(value)
    if not names:
        raise ArgumentError("queues must name at least one queue")
    return names


def _check_queue_names(_: object, __: object, names: Any) -> None:
    for index, name in enumerate(names):
        check_queue_name(name, f"queues[{index}]")


def _check_queue_names_or_all(_: object, __: object, names: Any) -> None:
    if names != (ALL_QUEUES,):
        _check_queue_names(_, __, names)


def _member(kind: type[_E], value: object, what: str) -> _E:
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(repr(member.value) for member in kind)
        raise ArgumentError(
            f"{what} must be a {kind.__name__} or one of {choices}, got {_show(value)}"
        ) from None


def _operation(value: object) -> MutateOperation:
    return _member(MutateOperation, value, "operation")


def _target(value: object) -> MutateTarget:
    return _member(MutateTarget, value, "target")


def _errtype(text: object) -> str:
    return _truncate(text, _MAX_ERRTYPE_BYTES, "errtype")


def _message(text: object) -> str:
    return _truncate(text, _MAX_MESSAGE_BYTES, "message")


def _wid(value: object) -> str:
    return _word(value, "wid")


def _bid(value: object) -> str:
    return _word(value, "bid")


def _jid_word(value: object) -> str:
    return _word(value, "jid")


def _clean(text: str) -> str:
    """The text with lone surrogates (say, from a surrogate-escaped file name) replaced."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _truncate(text: object, limit: int, what: str) -> str:
    if not isinstance(text, str):
        raise ArgumentTypeError(f"{what} must be a string, got {type(text).__name__}")
    text = _clean(text)  # a job must be FAILable whatever its exception says
    if len(text) * 4 <= limit:
        return text
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def cut_backtrace(lines: Iterable[str], setting: int | None) -> tuple[str, ...]:
    """The last lines of a backtrace that a job's ``backtrace`` setting asks for.

    ``setting`` is the job's :attr:`Job.backtrace`: None sends as many as the server keeps
    (:data:`MAX_BACKTRACE_LINES`), 0 (or less) none, ``n`` at most ``n`` and never more than
    the server keeps. The last lines are kept: a Python traceback ends with the innermost frame
    and the exception.
    """
    limit = MAX_BACKTRACE_LINES if setting is None else max(0, min(setting, MAX_BACKTRACE_LINES))
    kept = tuple(lines)
    return kept[max(0, len(kept) - limit) :]


def _backtrace(lines: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(lines, str):  # a formatted traceback: one entry per line
        lines = lines.splitlines()
    if not isinstance(lines, Iterable):
        raise ArgumentTypeError(
            f"backtrace must be a sequence of strings, got {type(lines).__name__}"
        )
    kept = cut_backtrace(lines, None)
    if not all(isinstance(line, str) for line in kept):
        raise ArgumentTypeError("backtrace must be a sequence of strings")
    return tuple(_clean(line) for line in kept)


def _job(_: object, __: object, job: Any) -> None:
    if not isinstance(job, Job):
        raise ArgumentTypeError(f"job must be a Job, got {type(job).__name__}")


def _check_optional_job(_: object, attribute: attrs.Attribute[Any], job: Any) -> None:
    if job is not None and not isinstance(job, Job):
        raise ArgumentTypeError(f"{attribute.name} must be a Job or None, got {type(job).__name__}")


def _jobs(jobs: Iterable[Job]) -> tuple[Job, ...]:
    if isinstance(jobs, Job) or not isinstance(jobs, Iterable):
        raise ArgumentTypeError(
            f"jobs must be a sequence of Job instances, got {type(jobs).__name__}"
        )
    kept = tuple(jobs)
    for index, job in enumerate(kept):
        if not isinstance(job, Job):
            raise ArgumentTypeError(f"jobs[{index}] must be a Job, got {type(job).__name__}")
    return kept


def _jids(jids: Iterable[str]) -> tuple[str, ...]:
    if not isinstance(jids, Iterable):
        raise ArgumentTypeError(f"jids must be strings, got {type(jids).__name__}")
    kept = (jids,) if isinstance(jids, str) else tuple(jids)
    if not all(isinstance(jid, str) for jid in kept):
        raise ArgumentTypeError("jids must be strings")
    return kept


def _check_optional_text(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise ArgumentTypeError(
            f"{attribute.name} must be a string or None, got {type(value).__name__}"
        )


#: The server's retry count for a job that gives none.
DEFAULT_RETRY: Final = 25


def _pushed(job: Job) -> dict[str, Any]:
    """The job as pushed: ``retry`` is always given, because Faktory 1.9.4 gives a job without
    one the last ``retry`` any client pushed (its default is shared, and decoding writes it)."""
    wire = job.to_wire()
    wire.setdefault("retry", DEFAULT_RETRY)
    return wire


def _refuse(value: object) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# What encode_json does for a valid job (the same C encoder, compact, no NaN), without
# JSONEncoder.encode's per-call set-up and its check for cycles: a PUSH is a producer's hot
# path. Anything it refuses goes through encode_json again, for the error naming the culprit.
_make_encoder: Final = getattr(json.encoder, "c_make_encoder", None)  # CPython's C accelerator
_encode_fast: Final = (
    None
    if _make_encoder is None
    else _make_encoder(
        None, _refuse, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )
)


def _job_json(job: Job) -> bytes:
    """The job's JSON, as UTF-8; an error names the job and where in it the value JSON cannot
    carry sits (``args[0]``), never the value itself."""
    wire = _pushed(job)
    if _encode_fast is not None:
        try:
            return "".join(_encode_fast(wire, 0)).encode("utf-8")
        except (TypeError, ValueError, RecursionError, UnicodeEncodeError):
            pass  # encode_json raises the error that says why
    return encode_json(wire, f"job {job.jid} ({job.jobtype})")


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise ArgumentTypeError(
            f"reserve_until must be a timezone-aware datetime, got {type(value).__name__}"
        )
    offset = value.utcoffset()
    if offset is None:
        raise ArgumentError("reserve_until must be timezone-aware: the server rejects naive times")
    return _whole_minute_offset(value, offset)


@attrs.frozen(kw_only=True)
class Hello(Command):
    """The handshake line; the connection builds and sends it, never the caller."""

    verb: ClassVar[str] = "HELLO"
    payload: Mapping[str, Any] = attrs.field(repr=False)

    def _encode(self) -> bytes:
        return command_line(self.verb, dump_json(self.payload))


@attrs.frozen(kw_only=True)
class Push(Command):
    """PUSH one job."""

    verb: ClassVar[str] = "PUSH"
    job: Job = attrs.field(validator=_job)

    def _encode(self) -> bytes:
        # JSON text holds no raw CR or LF: no line check needed.
        return b"PUSH " + _job_json(self.job) + b"\r\n"


@attrs.frozen(kw_only=True)
class PushBulk(Command):
    """PUSHB several jobs in one line (server 1.6.0+); the reply names the jobs refused."""

    verb: ClassVar[str] = "PUSHB"
    expect: ClassVar[Expect] = Expect.BULK_PUSH
    jobs: tuple[Job, ...] = attrs.field(converter=_jobs)

    def _encode(self) -> bytes:
        if not self.jobs:
            raise ArgumentError("jobs must hold at least one job: PUSHB needs one")
        return b"PUSHB [" + b",".join(_job_json(job) for job in self.jobs) + b"]\r\n"


def bulk_pushes(jobs: Iterable[Job], size: int = MAX_BULK_JOBS) -> tuple[PushBulk, ...]:
    """The PUSHB commands that carry ``jobs``, in order, at most ``size`` jobs each.

    Every job is checked and encoded before any command is returned, so a job that cannot go
    on the wire raises before anything is sent; no jobs at all is an :class:`ArgumentError`.
    """
    if type(size) is not int:
        raise ArgumentTypeError(f"size must be an integer, got {type(size).__name__}")
    if size < 1:
        raise ArgumentError(f"size must be at least 1, got {size}")
    kept = _jobs(jobs)
    if len(kept) <= size:
        return (PushBulk(jobs=kept),)
    return tuple(PushBulk(jobs=kept[start : start + size]) for start in range(0, len(kept), size))


@attrs.frozen(kw_only=True)
class Fetch(Command):
    """FETCH one job from the first non-empty queue, in the order given; blocks up to ~2 s."""

    verb: ClassVar[str] = "FETCH"
    expect: ClassVar[Expect] = Expect.JOB
    blocks: ClassVar[bool] = True
    queues: tuple[str, ...] = attrs.field(converter=_queues, validator=_check_queue_names)

    def _encode(self) -> bytes:
        return command_line(self.verb, " ".join(self.queues))

    @staticmethod
    def reply_timeout(timeout: float) -> float:
        """How long to await a FETCH's reply for a client whose timeout is ``timeout``: at
        least :data:`FETCH_WAIT_FLOOR`."""
        return max(timeout, FETCH_WAIT_FLOOR)


@attrs.frozen(kw_only=True)
class Ack(Command):
    """ACK a finished job."""

    verb: ClassVar[str] = "ACK"
    jid: str = attrs.field(validator=_check_jid)

    def _encode(self) -> bytes:
        # The worker's hot path. The ASCII encoder escapes every control character and every
        # non-ASCII one, so the line needs none of command_line's checks.
        return b'ACK {"jid":' + encode_basestring_ascii(self.jid).encode("ascii") + b"}\r\n"


@attrs.frozen(kw_only=True)
class Fail(Command):
    """FAIL a job; long fields are cut to what the server keeps, on character boundaries (of
    ``backtrace``, the last :data:`MAX_BACKTRACE_LINES` lines)."""

    verb: ClassVar[str] = "FAIL"
    jid: str = attrs.field(validator=_check_jid)
    errtype: str = attrs.field(converter=_errtype)
    message: str = attrs.field(converter=_message)
    backtrace: tuple[str, ...] = attrs.field(default=(), converter=_backtrace)

    def _encode(self) -> bytes:
        payload = {
            "jid": self.jid,
            "errtype": self.errtype,
            "message": self.message,
            "backtrace": list(self.backtrace),
        }
        return command_line(self.verb, dump_json(payload))


def _reported_state(value: object) -> WorkerState | None:
    if value is None:
        return None
    state = _member(WorkerState, value, "current_state")
    if state is WorkerState.RUNNING:
        return None  # the server ignores it; sending nothing says the same
    return state


@attrs.frozen(kw_only=True)
class Beat(Command):
    """BEAT for a worker process; ``current_state`` reports a quiet or terminate begun locally."""

    verb: ClassVar[str] = "BEAT"
    expect: ClassVar[Expect] = Expect.BEAT
    wid: str = attrs.field(converter=_wid)
    rss_kb: int | None = attrs.field(default=None, validator=_check_optional_int(0, None))
    current_state: WorkerState | None = attrs.field(default=None, converter=_reported_state)

    def _encode(self) -> bytes:
        payload: dict[str, Any] = {"wid": self.wid}
        if self.rss_kb is not None:
            payload["rss_kb"] = self.rss_kb
        if self.current_state is not None:
            payload["current_state"] = self.current_state.value
        return command_line(self.verb, dump_json(payload))


@attrs.frozen(kw_only=True)
class Info(Command):
    """INFO: server and queue statistics."""

    verb: ClassVar[str] = "INFO"
    expect: ClassVar[Expect] = Expect.INFO


@attrs.frozen(kw_only=True)
class Flush(Command):
    """FLUSH: delete every job, queue and counter on the server."""

    verb: ClassVar[str] = "FLUSH"


@attrs.frozen(kw_only=True)
class End(Command):
    """END: the server closes the connection without a reply."""

    verb: ClassVar[str] = "END"
    expect: ClassVar[Expect] = Expect.NOTHING


@attrs.frozen(kw_only=True)
class Mutate(Command):
    """MUTATE the retries, scheduled or dead set; ``pattern`` is a Redis glob, not a regex."""

    verb: ClassVar[str] = "MUTATE"
    operation: MutateOperation = attrs.field(converter=_operation)
    target: MutateTarget = attrs.field(converter=_target)
    jids: tuple[str, ...] = attrs.field(default=(), converter=_jids)
    pattern: str | None = attrs.field(default=None, validator=_check_optional_text)
    jobtype: str | None = attrs.field(default=None, validator=_check_optional_text)

    def _encode(self) -> bytes:
        payload: dict[str, Any] = {"cmd": self.operation.value, "target": self.target.value}
        selection: dict[str, Any] = {}
        if self.jids:
            selection["jids"] = list(self.jids)
        if self.pattern:
            selection["regexp"] = self.pattern
        if self.jobtype:
            selection["jobtype"] = self.jobtype
        if selection:
            payload["filter"] = selection
        # The server splits MUTATE on every space; compact JSON has spaces only inside strings,
        # where the escape \u0020 means the same.
        return command_line(self.verb, dump_json(payload).replace(" ", "\\u0020"))


@attrs.frozen(kw_only=True)
class _QueueCommand(Command):
    verb: ClassVar[str] = "QUEUE"
    subcommand: ClassVar[str]
    queues: tuple[str, ...] = attrs.field(converter=_queues, validator=_check_queue_names_or_all)

    def _encode(self) -> bytes:
        return command_line(self.verb, f"{self.subcommand} {' '.join(self.queues)}")


@attrs.frozen(kw_only=True)
class QueuePause(_QueueCommand):
    """QUEUE PAUSE: FETCH skips these queues (``ALL_QUEUES`` for every one)."""

    subcommand: ClassVar[str] = "PAUSE"


@attrs.frozen(kw_only=True)
class QueueResume(_QueueCommand):
    """QUEUE RESUME: undo a pause."""

    subcommand: ClassVar[str] = "RESUME"


@attrs.frozen(kw_only=True)
class QueueRemove(_QueueCommand):
    """QUEUE REMOVE: delete the queues and every job waiting in them."""

    subcommand: ClassVar[str] = "REMOVE"


@attrs.frozen(kw_only=True)
class QueueLatency(_QueueCommand):
    """QUEUE LATENCY: seconds the oldest job of each queue has waited (server 1.9.2+)."""

    subcommand: ClassVar[str] = "LATENCY"
    expect: ClassVar[Expect] = Expect.LATENCY
    queues: tuple[str, ...] = attrs.field(converter=_queues, validator=_check_queue_names)


@attrs.frozen(kw_only=True)
class BatchNew(Command):
    """BATCH NEW (Enterprise): open a batch with a success and/or complete callback job."""

    verb: ClassVar[str] = "BATCH"
    expect: ClassVar[Expect] = Expect.BID
    success: Job | None = attrs.field(default=None, validator=_check_optional_job)
    complete: Job | None = attrs.field(default=None, validator=_check_optional_job)
    description: str | None = attrs.field(default=None, validator=_check_optional_text)
    parent_bid: str | None = None

    def _encode(self) -> bytes:
        if self.success is None and self.complete is None:
            raise ArgumentError("a batch needs a success or a complete callback job (or both)")
        payload: dict[str, Any] = {}
        if self.description is not None:
            payload["description"] = self.description
        if self.parent_bid is not None:
            payload["parent_bid"] = _word(self.parent_bid, "parent_bid")
        if self.success is not None:
            payload["success"] = _pushed(self.success)
        if self.complete is not None:
            payload["complete"] = _pushed(self.complete)
        return command_line(self.verb, "NEW " + dump_json(payload))


@attrs.frozen(kw_only=True)
class _BatchCommand(Command):
    verb: ClassVar[str] = "BATCH"
    subcommand: ClassVar[str]
    bid: str = attrs.field(converter=_bid)

    def _encode(self) -> bytes:
        return command_line(self.verb, f"{self.subcommand} {self.bid}")


@attrs.frozen(kw_only=True)
class BatchOpen(_BatchCommand):
    """BATCH OPEN (Enterprise): reopen a committed batch to add jobs."""

    subcommand: ClassVar[str] = "OPEN"
    expect: ClassVar[Expect] = Expect.BID


@attrs.frozen(kw_only=True)
class BatchCommit(_BatchCommand):
    """BATCH COMMIT (Enterprise): every job of the batch has been pushed."""

    subcommand: ClassVar[str] = "COMMIT"


@attrs.frozen(kw_only=True)
class BatchStatus(_BatchCommand):
    """BATCH STATUS (Enterprise): counts and callback states of a batch."""

    subcommand: ClassVar[str] = "STATUS"
    expect: ClassVar[Expect] = Expect.STATUS


@attrs.frozen(kw_only=True)
class TrackGet(Command):
    """TRACK GET (Enterprise): the progress of a tracked job."""

    verb: ClassVar[str] = "TRACK"
    expect: ClassVar[Expect] = Expect.STATUS
    jid: str = attrs.field(converter=_jid_word)

    def _encode(self) -> bytes:
        return command_line(self.verb, f"GET {self.jid}")


@attrs.frozen(kw_only=True)
class TrackSet(Command):
    """TRACK SET (Enterprise): report progress; ``reserve_until`` extends the reservation."""

    verb: ClassVar[str] = "TRACK"
    jid: str = attrs.field(validator=_check_jid)
    percent: int | None = attrs.field(default=None, validator=_check_optional_int(0, 100))
    description: str | None = attrs.field(default=None, validator=_check_optional_text)
    reserve_until: datetime | None = attrs.field(default=None, converter=_aware)

    def _encode(self) -> bytes:
        payload: dict[str, Any] = {"jid": self.jid}
        if self.percent is not None:
            payload["percent"] = self.percent
        if self.description is not None:
            payload["desc"] = self.description
        if self.reserve_until is not None:
            payload["reserve_until"] = self.reserve_until.isoformat()
        return command_line(self.verb, "SET " + dump_json(payload))
