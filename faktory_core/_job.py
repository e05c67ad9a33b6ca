"""The job payload, validated locally so the server never has to say no."""

from __future__ import annotations

import json
import re
import reprlib
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import attrs

from ._errors import ArgumentError, ArgumentTypeError, LocalProtocolError

__all__ = [
    "MAX_RESERVE_FOR",
    "MIN_RESERVE_FOR",
    "Failure",
    "JidScanner",
    "Job",
    "check_queue_name",
    "find_jid",
]

#: The shortest reservation the server keeps, in seconds: it silently raises a shorter one to
#: this, so a Job built here refuses it (a fetched job may carry less: another client pushed it).
MIN_RESERVE_FOR: Final = 60
#: The queue of a job pushed without one.
DEFAULT_QUEUE: Final = "default"
#: The longest reservation the server accepts, in seconds (one day).
MAX_RESERVE_FOR: Final = 86400
_QUEUE_NAME: Final = re.compile(r"[a-zA-Z0-9._-]+")
_MINUTE: Final = timedelta(minutes=1)

# Values quoted in error messages come from the wire: a bounded repr keeps a 10 MB string or
# a list nested 900 deep (repr would recurse) from making the message, and the FAIL, huge.
_repr = reprlib.Repr()
_repr.maxlevel = 3
_repr.maxstring = _repr.maxother = 80
_show = _repr.repr


def check_queue_name(name: object, what: str = "queue") -> str:
    """Return ``name`` if the server accepts it as a queue name, else raise
    :class:`ArgumentTypeError` or :class:`ArgumentError` naming ``what``."""
    if not isinstance(name, str):
        raise ArgumentTypeError(f"{what} must be a queue name (a string), got {_show(name)}")
    if _QUEUE_NAME.fullmatch(name) is None:
        raise ArgumentError(
            f"{what} must be a queue name of letters, digits, '.', '_' and '-' "
            f"([a-zA-Z0-9._-]+), got {_show(name)}"
        )
    return name


def _check_jid(_: object, __: object, jid: Any) -> None:
    if not isinstance(jid, str):
        raise ArgumentTypeError(f"jid must be a string, got {type(jid).__name__}")
    if len(jid) < 8 and len(jid.encode("utf-8", "surrogatepass")) < 8:
        raise ArgumentError(f"jid must be at least 8 bytes long, got {jid!r}")


def _check_jobtype(_: object, __: object, jobtype: Any) -> None:
    if not isinstance(jobtype, str):
        raise ArgumentTypeError(f"jobtype must be a non-empty string, got {_show(jobtype)}")
    if not jobtype:
        raise ArgumentError("jobtype must be a non-empty string, got ''")


def _to_args(args: list[Any] | tuple[Any, ...]) -> list[Any]:
    if type(args) is list:  # the common case: kept as is, no copy
        return args
    if isinstance(args, (list, tuple)):
        return list(args)
    raise ArgumentTypeError(_args_message(args))


def _args_message(args: object) -> str:
    """Why ``args`` is refused, and what the caller most likely meant."""
    kind = type(args).__name__
    shown = _show(args)
    if args is None:
        fix = "for no arguments, write args=[] (or leave it out); to pass None, args=[None]"
    elif isinstance(args, (str, bytes, bytearray, Mapping)):
        # A str would go out as its characters, a dict as its keys: never what was meant.
        fix = f"to pass one {kind}, write args=[{shown}]"
    elif isinstance(args, Iterable):
        items = "..." if shown.startswith("<") else shown  # a generator's repr helps nobody
        fix = f"to pass its items as the arguments, write args=list({items})"
    else:
        fix = f"to pass one value, write args=[{shown}]"
    return f"args must be a list or tuple of the job's arguments, got {kind}: {fix}"


def _check_optional_int(
    low: int | None, high: int | None, hint: str = ""
) -> Callable[[Any, Any, Any], None]:
    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        if type(value) is not int:
            raise ArgumentTypeError(
                f"{attribute.name} must be an integer or None, got {type(value).__name__}: "
                f"{_show(value)}"
            )
        if (low is not None and value < low) or (high is not None and value > high):
            raise ArgumentError(f"{attribute.name} must be from {low} to {high}, got {value}{hint}")

    return check


def _to_at(at: object) -> datetime | None:
    if at is None or at == "":
        return None
    if isinstance(at, str):
        try:
            at = datetime.fromisoformat(at)
        except ValueError:
            raise ArgumentError(f"at is not an RFC 3339 timestamp: {_show(at)}") from None
    if not isinstance(at, datetime):
        raise ArgumentTypeError(
            f"at must be a timezone-aware datetime, got {type(at).__name__}: {_show(at)}"
        )
    offset = at.utcoffset()
    if offset is None:
        raise ArgumentError(
            "at must be timezone-aware: the server rejects naive times "
            "(give the datetime a tzinfo, such as datetime.UTC)"
        )
    return _whole_minute_offset(at, offset)


def _whole_minute_offset(moment: datetime, offset: timedelta) -> datetime:
    """``moment``, as UTC if its offset has seconds: RFC 3339 offsets are whole minutes, and
    the server refuses the ``+05:30:15`` that isoformat writes for such an offset."""
    if offset % _MINUTE:
        return moment.astimezone(UTC)
    return moment


def _to_custom(custom: object) -> dict[str, Any] | None:
    if custom is None:
        return None
    if not isinstance(custom, Mapping):
        raise ArgumentTypeError(
            f"custom must be a mapping with string keys, got {type(custom).__name__}"
        )
    for key in custom:
        if not isinstance(key, str):
            raise ArgumentTypeError(
                f"custom must be a mapping with string keys, got the key {_show(key)}"
            )
    return dict(custom)


def _check_optional_str(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise ArgumentTypeError(
            f"{attribute.name} must be a string or None, got {type(value).__name__}"
        )


def _check_failure(_: object, __: object, value: Any) -> None:
    if value is not None and not isinstance(value, Failure):
        raise ArgumentTypeError(
            f"failure must be a Failure or None, got {type(value).__name__}"
            + (": build it with Failure.from_wire(...)" if isinstance(value, Mapping) else "")
        )


@attrs.frozen(kw_only=True)
class Failure:
    """What the server recorded about a job's last failure (the ``failure`` object)."""

    retry_count: int = attrs.field(default=0, validator=_check_optional_int(0, None))
    remaining: int | None = attrs.field(default=None, validator=_check_optional_int(None, None))
    failed_at: str | None = attrs.field(default=None, validator=_check_optional_str)
    next_at: str | None = attrs.field(default=None, validator=_check_optional_str)
    errtype: str | None = attrs.field(default=None, validator=_check_optional_str)
    message: str | None = attrs.field(default=None, validator=_check_optional_str)
    backtrace: tuple[str, ...] = ()

    @classmethod
    def from_wire(cls, data: object) -> Failure:
        """Build from the server's ``failure`` JSON object."""
        if not isinstance(data, Mapping):
            raise LocalProtocolError("failure must be a JSON object")
        get = data.get
        backtrace = get("backtrace") or []
        if not isinstance(backtrace, list) or not all(isinstance(x, str) for x in backtrace):
            raise LocalProtocolError("failure backtrace must be a list of strings")
        try:
            return cls(
                retry_count=get("retry_count") or 0,
                remaining=get("remaining"),
                failed_at=get("failed_at"),
                next_at=get("next_at"),
                errtype=get("errtype"),
                message=get("message"),
                backtrace=tuple(backtrace),
            )
        except LocalProtocolError as error:
            raise LocalProtocolError(f"invalid failure object: {error}") from None

    def to_wire(self) -> dict[str, Any]:
        """The JSON object the server stores."""
        wire: dict[str, Any] = {"retry_count": self.retry_count}
        for key in ("remaining", "failed_at", "next_at", "errtype", "message"):
            value = getattr(self, key)
            if value is not None:
                wire[key] = value
        if self.backtrace:
            wire["backtrace"] = list(self.backtrace)
        return wire


_check_retry: Final = _check_optional_int(None, None)
_check_reserve_for: Final = _check_optional_int(
    MIN_RESERVE_FOR,
    MAX_RESERVE_FOR,
    f" (None: the server's 1800; it would raise less than {MIN_RESERVE_FOR} to {MIN_RESERVE_FOR})",
)


@attrs.frozen(kw_only=True, hash=False)
class Job:
    """A unit of work: ``jobtype`` names the handler, ``args`` are its JSON arguments.

    Every field is checked when the job is built, so an invalid job never reaches the wire:
    :class:`ArgumentTypeError` for a value of the wrong type, :class:`ArgumentError` for one
    out of bounds. Fields the server fills in (``created_at``, ``enqueued_at``, ``failure``)
    are kept as the server wrote them.
    """

    jid: str
    jobtype: str
    #: The handler's arguments: a list (kept as is) or a tuple (copied to a list); anything
    #: else, a str or a dict included, is refused rather than spread into arguments.
    args: list[Any] = attrs.field(factory=list, converter=_to_args)
    queue: str = DEFAULT_QUEUE
    #: Retries before the job is dead; None means the server's default (25), -1 dead at once.
    retry: int | None = None
    #: Seconds the server reserves a fetched job for (MIN_RESERVE_FOR to MAX_RESERVE_FOR, 60
    #: to 86400; None: the server's 1800).
    reserve_for: int | None = None
    #: Run no earlier than this (timezone-aware; an RFC 3339 string is parsed); None runs now.
    #: An offset that is not a whole number of minutes is converted to UTC when the job is
    #: built (the same instant): RFC 3339, and the server, have no seconds in an offset.
    at: datetime | None = attrs.field(default=None, converter=_to_at)
    #: How many backtrace lines a worker should send when the job fails: None, as many as the
    #: server keeps (50); 0 none (see ``cut_backtrace``). The server only stores it.
    backtrace: int | None = None
    custom: dict[str, Any] | None = attrs.field(default=None, converter=_to_custom)
    created_at: str | None = None
    enqueued_at: str | None = None
    failure: Failure | None = None

    def __attrs_post_init__(self) -> None:
        # Every field's check, in field order. One method rather than a validator per field:
        # a Job is built for every push, and each validator is a call of its own. The common
        # case is tested inline; the checkers raise the error that says what is wrong.
        jid = self.jid
        if type(jid) is not str or len(jid) < 8:
            _check_jid(self, None, jid)
        jobtype = self.jobtype
        if type(jobtype) is not str or not jobtype:
            _check_jobtype(self, None, jobtype)
        queue = self.queue
        if type(queue) is not str or _QUEUE_NAME.fullmatch(queue) is None:
            check_queue_name(queue)
        if self.retry is not None:
            _check_retry(self, _JOB_FIELDS.retry, self.retry)
        if self.reserve_for is not None:
            _check_reserve_for(self, _JOB_FIELDS.reserve_for, self.reserve_for)
        if self.backtrace is not None:
            _check_retry(self, _JOB_FIELDS.backtrace, self.backtrace)
        if self.created_at is not None:
            _check_optional_str(self, _JOB_FIELDS.created_at, self.created_at)
        if self.enqueued_at is not None:
            _check_optional_str(self, _JOB_FIELDS.enqueued_at, self.enqueued_at)
        if self.failure is not None:
            _check_failure(self, None, self.failure)

    @classmethod
    def create(
        cls,
        jobtype: str,
        args: list[Any] | tuple[Any, ...] = (),
        *,
        jid_factory: Callable[[], str],
        **fields: Any,
    ) -> Job:
        """Build a new job whose jid comes from ``jid_factory`` (the core has no randomness).

        ``args`` is a list or a tuple of the handler's arguments, as for ``Job(...)``; a list
        is copied, so the caller's changing it later does not change the job.
        """
        if type(args) is list:
            args = args.copy()
        return cls(jid=jid_factory(), jobtype=jobtype, args=args, **fields)

    def to_wire(self) -> dict[str, Any]:
        """The JSON object sent to the server, without the fields left at their defaults."""
        wire: dict[str, Any] = {
            "jid": self.jid,
            "jobtype": self.jobtype,
            "args": self.args,
            "queue": self.queue,
        }
        if self.retry is not None:
            wire["retry"] = self.retry
        if self.reserve_for is not None:
            wire["reserve_for"] = self.reserve_for
        if self.at is not None:
            wire["at"] = self.at.isoformat()
        if self.backtrace is not None:
            wire["backtrace"] = self.backtrace
        if self.custom is not None:
            wire["custom"] = self.custom
        if self.created_at is not None:
            wire["created_at"] = self.created_at
        if self.failure is not None:
            wire["failure"] = self.failure.to_wire()
        return wire

    @classmethod
    def from_wire(cls, data: object) -> Job:
        """Build from a job JSON object as FETCH returns it; unknown keys are ignored.

        This is the worker's hot path, so it checks each field present once, by type, and
        skips the per-field validators of ``__init__``; what it accepts ``__init__`` accepts,
        but for a ``reserve_for`` under MIN_RESERVE_FOR (another client may have pushed it).
        """
        if not isinstance(data, dict):
            raise LocalProtocolError("a job must be a JSON object")
        try:
            jid = data["jid"]
            jobtype = data["jobtype"]
            args = data["args"]
        except KeyError as missing:
            raise LocalProtocolError(f"a job needs {missing}") from None
        _check_jid(None, None, jid)
        _check_jobtype(None, None, jobtype)
        if type(args) is not list:
            raise LocalProtocolError(f"args must be a list, got {type(args).__name__}")
        get = data.get
        queue = get("queue")
        if queue is None or queue == "":
            queue = DEFAULT_QUEUE
        elif queue != DEFAULT_QUEUE:
            check_queue_name(queue)
        values = {name: get(name) for name in _WIRE_TYPES}
        for name, expected in _WIRE_TYPES.items():
            value = values[name]
            if value is not None and type(value) is not expected:
                raise LocalProtocolError(f"{name} must be {expected.__name__}, got {_show(value)}")
        reserve_for = values["reserve_for"]
        if reserve_for is not None and reserve_for > MAX_RESERVE_FOR:
            raise LocalProtocolError(f"reserve_for must be at most {MAX_RESERVE_FOR}")
        at = get("at")
        failure = get("failure")
        job = object.__new__(cls)
        _set = object.__setattr__
        _set(job, "jid", jid)
        _set(job, "jobtype", jobtype)
        _set(job, "args", args)
        _set(job, "queue", queue)
        for name, value in values.items():
            _set(job, name, value)
        _set(job, "at", None if at is None else _to_at(at))
        _set(job, "failure", None if failure is None else Failure.from_wire(failure))
        return job


_JOB_FIELDS: Final = attrs.fields(Job)

# Optional fields of a fetched job that need only a type check; JSON objects come back as
# dicts with string keys, so "custom" needs nothing more.
_WIRE_TYPES: Final[dict[str, type]] = {
    "retry": int,
    "reserve_for": int,
    "backtrace": int,
    "custom": dict,
    "created_at": str,
    "enqueued_at": str,
}


# -- the jid of a job we cannot decode -------------------------------------------------------

# Outside strings: a run of openers, a run of closers, a quote, or a run of anything else
# (commas, colons, numbers, literals). Runs keep "[[[[..." one token, however deep.
_TOKEN: Final = re.compile(rb'[\[{]+|[\]}]+|"|[^\s\[\]{}"]+')
# A string's body up to its closing quote (escapes skipped), or to a backslash ending the data.
_STRING_BODY: Final = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)
#: The longest key or jid kept while scanning, in bytes of JSON text.
_MAX_CAPTURE: Final = 4096

# Scanner states: before the document; inside it; inside a top-level key; after the key
# "jid" (":" next), then its value (a string next); inside that string; finished.
_BEFORE, _MEMBERS, _KEY, _JID_COLON, _JID_VALUE, _JID, _DONE = range(7)


class JidScanner:
    """Finds the ``"jid"`` of a top-level JSON object fed piece by piece, without decoding it.

    A job nested too deeply for ``json`` (which recurses) or too large to keep must still be
    FAILed by its jid. This reads the text in one pass with no recursion: it tracks the
    nesting depth and skips strings with their escapes, so only a key of the top-level
    object counts, never a "jid" inside args or custom. It holds a few KiB at most, and
    ignores what it is fed once done. On invalid JSON it does its best; ``jid`` stays None
    when the top-level object has no string jid (or one over 4 KiB).
    """

    __slots__ = ("_capture", "_depth", "_escaped", "_in_string", "_key_next", "_state", "jid")

    def __init__(self) -> None:
        self.jid: str | None = None
        self._state = _BEFORE
        self._depth = 0
        self._key_next = False  # at depth 1 after "{" or ",": the next string is a key
        self._in_string = False
        self._escaped = False  # the last piece ended on a backslash inside a string
        self._capture: bytearray | None = None  # the key or jid being read (None: too long)

    @property
    def done(self) -> bool:
        """True once the jid is found, or known to be absent."""
        return self._state == _DONE

    def feed(self, data: bytes) -> None:
        """Read the next piece of the document."""
        pos, end = 0, len(data)
        while pos < end and self._state != _DONE:
            pos = self._string(data, pos) if self._in_string else self._token(data, pos)

    def _token(self, data: bytes, pos: int) -> int:
        match = _TOKEN.search(data, pos)
        if match is None:
            return len(data)  # white space only
        token = match.group()
        first = token[0]
        state = self._state
        if state == _BEFORE:
            if first != 0x7B:  # not an object: no jid to find
                self._state = _DONE
                return len(data)
            self._state = _MEMBERS
        elif state == _JID_COLON:
            self._state = _JID_VALUE if token == b":" else _DONE
            return match.end()
        elif state == _JID_VALUE:
            if first != 0x22:  # the jid is not a string
                self._state = _DONE
                return len(data)
            self._state = _JID
            self._in_string = True
            self._capture = bytearray()
            return match.end()
        if first == 0x22:  # "
            self._in_string = True
            if self._depth == 1 and self._key_next:
                self._state = _KEY
                self._capture = bytearray()
        elif first in b"[{":
            self._depth += len(token)
            self._key_next = token == b"{" and self._depth == 1
        elif first in b"]}":
            self._depth -= len(token)
            if self._depth <= 0:  # the top-level object closed without a jid
                self._state = _DONE
            self._key_next = False
        elif self._depth == 1:
            self._key_next = token.endswith(b",")
        return match.end()

    def _string(self, data: bytes, pos: int) -> int:
        start = pos
        if self._escaped:  # this byte is the escaped one: never a closing quote
            self._escaped = False
            pos += 1
        match = _STRING_BODY.match(data, pos)
        assert match is not None  # it matches the empty string
        stop = match.end()
        if stop == len(data):  # the string goes on in the next piece
            self._keep(data[start:stop])
            return stop
        if data[stop] == 0x5C:  # a backslash ending the piece: its escaped byte comes next
            self._escaped = True
            self._keep(data[start:])
            return len(data)
        self._keep(data[start:stop])
        self._in_string = False
        capture, self._capture = self._capture, None
        if self._state == _KEY:
            self._state = (
                _JID_COLON if capture is not None and _text(capture) == "jid" else _MEMBERS
            )
        elif self._state == _JID:
            self.jid = None if capture is None else _text(capture)
            self._state = _DONE
        self._key_next = False
        return stop + 1

    def _keep(self, piece: bytes) -> None:
        capture = self._capture
        if capture is not None:
            if len(capture) + len(piece) > _MAX_CAPTURE:
                self._capture = None
            else:
                capture += piece


def _text(body: bytearray) -> str | None:
    """The value of a JSON string from its body (the bytes between its quotes), if valid."""
    try:
        value = json.loads('"' + body.decode("utf-8") + '"')
    except ValueError:  # UnicodeDecodeError included
        return None
    assert isinstance(value, str)
    return value


def find_jid(payload: bytes) -> str | None:
    """The top-level ``"jid"`` string of a JSON object, found without decoding the object."""
    scanner = JidScanner()
    scanner.feed(payload)
    return scanner.jid
