"""The RESP2 subset Faktory replies with, parsed incrementally, and the command line writer.

Replies come out as plain Python values, the cheapest faithful form: a simple string is a
``str``, a bulk string ``bytes``, the null bulk ``None``, an integer ``int``, an error an
:class:`ErrorReply`, a bulk string too large to keep that was read past an
:class:`OversizedBulk`. :data:`NEED_DATA` says a reply is not complete yet.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Callable
from typing import Any, Final, Protocol, TypeAlias

import attrs

from ._errors import ArgumentError, ArgumentTypeError, LocalProtocolError, RemoteProtocolError

__all__ = [
    "DEFAULT_MAX_REPLY_SIZE",
    "NEED_DATA",
    "ErrorReply",
    "NeedData",
    "OversizedBulk",
    "Reply",
    "ReplyParser",
    "Skim",
    "command_line",
    "dump_json",
    "encode_json",
]

#: The largest incomplete reply a parser holds before it gives up (Faktory itself has no limit).
DEFAULT_MAX_REPLY_SIZE: Final = 16 * 1024 * 1024

# Longest length or integer line we parse: int() of a huge digit run is slow, then refused.
_MAX_NUMBER_DIGITS: Final = 20
# The first byte of every reply: + simple string, - error, $ bulk string, : integer.
_TYPE_BYTES: Final = b"+-$:"
# Consumed bytes are dropped from the buffer's front once they pass this size.
_COMPACT_AT: Final = 64 * 1024


class NeedData(enum.Enum):
    """The type of :data:`NEED_DATA`."""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by ``next_reply()`` and ``next_event()`` until more bytes arrive.
NEED_DATA: Final = NeedData.NEED_DATA


@attrs.frozen(kw_only=True)
class ErrorReply:
    """A ``-CODE message`` reply: ``code`` is the first word (``ERR``, ``NOTUNIQUE``...)."""

    code: str
    message: str


class Skim(Protocol):
    """Takes the body of a bulk reply too large to keep, piece by piece, as it arrives."""

    def feed(self, data: bytes) -> None: ...


@attrs.frozen(kw_only=True)
class OversizedBulk:
    """A bulk reply of ``size`` bytes, over max_reply_size: its body went to ``skim``."""

    size: int
    skim: Skim


Reply: TypeAlias = str | bytes | int | ErrorReply | OversizedBulk | None


def _number(digits: bytes) -> int:
    body = digits[1:] if digits[:1] == b"-" else digits
    if not body or len(body) > _MAX_NUMBER_DIGITS or not body.isdigit():
        raise RemoteProtocolError(f"not a number in a reply: {digits[:40]!r}")
    return int(digits)


class ReplyParser:
    """Incremental parser: :meth:`feed` bytes, then call :meth:`next_reply` until NEED_DATA.

    Every byte is examined once. An incomplete reply line, or the body of a bulk reply, may
    be at most ``max_reply_size`` bytes long. Malformed input raises
    :class:`RemoteProtocolError`, and so does every later call.

    A bulk header declaring more than that calls ``skim(length)``, if given: a :class:`Skim`
    returned gets the body piece by piece as it arrives, nothing of it is kept, and the
    reply comes out as :class:`OversizedBulk` (the length is known, so the stream stays in
    step). None, or no ``skim``, refuses the reply at once.
    """

    __slots__ = (
        "_ask_skim",
        "_buf",
        "_error",
        "_max",
        "_pending_bulk",
        "_pos",
        "_scan",
        "_skim",
        "_skim_left",
    )

    def __init__(
        self,
        *,
        max_reply_size: int = DEFAULT_MAX_REPLY_SIZE,
        skim: Callable[[int], Skim | None] | None = None,
    ) -> None:
        if type(max_reply_size) is not int:
            raise ArgumentTypeError(
                f"max_reply_size must be an integer, got {type(max_reply_size).__name__}"
            )
        if max_reply_size < 16:
            raise ArgumentError(f"max_reply_size must be at least 16 bytes, got {max_reply_size}")
        self._buf = bytearray()
        self._pos = 0  # start of the first unconsumed reply
        self._scan = 0  # bytes before this index hold no line end of the current reply
        self._pending_bulk = -1  # body length once a bulk header is parsed, else -1
        self._max = max_reply_size
        self._error: RemoteProtocolError | None = None
        self._ask_skim = skim
        self._skim: Skim | None = None  # where the oversized bulk being read goes
        self._skim_left = 0  # bytes of its body not yet received

    @property
    def buffered(self) -> int:
        """Bytes received and held, not yet returned as part of a reply."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        """Append bytes received from the server."""
        self._buf += data

    def take(self, reply: bytes) -> bool:
        """Consume ``reply``, one whole reply with its CRLF (``b"+OK\\r\\n"``), if it comes
        next; False (nothing consumed) if anything else does. A client's hot path: it
        stands for :meth:`next_reply` returning that reply, without parsing it."""
        if self._pending_bulk < 0 and self._error is None:
            buf = self._buf
            pos = self._pos
            if buf.startswith(reply, pos):
                self._consume(pos + len(reply))
                return True
        return False

    def next_reply(self) -> Reply | NeedData:
        """Return the next complete reply, or NEED_DATA."""
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except RemoteProtocolError as error:
            self._error = error
            raise

    def _next(self) -> Reply | NeedData:
        buf = self._buf
        pos = self._pos
        if self._pending_bulk >= 0:
            if self._skim is not None:
                return self._skip_body()
            return self._bulk_body(self._scan + 1, self._pending_bulk)
        end = buf.find(b"\n", self._scan)
        if end < 0:
            if len(buf) > pos and buf[pos] not in _TYPE_BYTES:
                # Not RESP at all (another protocol, say): say so now, not after max bytes.
                raise RemoteProtocolError(f"unexpected reply type byte {bytes([buf[pos]])!r}")
            if len(buf) - pos > self._max:
                raise RemoteProtocolError(_too_long(self._max))
            self._scan = len(buf)
            return NEED_DATA
        if end - pos > self._max:
            raise RemoteProtocolError(_too_long(self._max))
        if end == pos or buf[end - 1] != 0x0D:
            raise RemoteProtocolError("reply line not terminated by CRLF")
        kind = buf[pos]
        line = bytes(buf[pos + 1 : end - 1])
        if kind == 0x24:  # $
            length = _number(line)
            if length == -1:
                self._consume(end + 1)
                return None
            if length < 0:
                raise RemoteProtocolError(f"negative bulk length {length}")
            if length > self._max:
                return self._oversized(length, end + 1)
            self._scan = end
            self._pending_bulk = length
            return self._bulk_body(end + 1, length)
        self._consume(end + 1)
        if kind == 0x2B:  # +
            return _text(line)
        if kind == 0x2D:  # -
            code, _, message = _text(line).partition(" ")
            return ErrorReply(code=code, message=message)
        if kind == 0x3A:  # :
            return _number(line)
        raise RemoteProtocolError(f"unexpected reply type byte {bytes([kind])!r}")

    def _bulk_body(self, start: int, length: int) -> bytes | NeedData:
        buf = self._buf
        stop = start + length
        if len(buf) < stop + 2:
            return NEED_DATA
        if buf[stop : stop + 2] != b"\r\n":
            raise RemoteProtocolError("bulk reply not terminated by CRLF")
        body = bytes(buf[start:stop])
        self._pending_bulk = -1
        self._consume(stop + 2)
        return body

    def _oversized(self, length: int, body_start: int) -> OversizedBulk | NeedData:
        skim = None if self._ask_skim is None else self._ask_skim(length)
        if skim is None:
            raise RemoteProtocolError(
                f"bulk reply of {length} bytes exceeds {self._max} bytes (max_reply_size)"
            )
        self._consume(body_start)
        self._pending_bulk = length
        self._skim = skim
        self._skim_left = length
        return self._skip_body()

    def _skip_body(self) -> OversizedBulk | NeedData:
        """Pass what arrived of an oversized body to its skim and drop it, then its CRLF."""
        skim = self._skim
        assert skim is not None
        if self._skim_left:
            buf = self._buf
            pos = self._pos
            take = min(len(buf) - pos, self._skim_left)
            if take:
                skim.feed(bytes(buf[pos : pos + take]))
                self._skim_left -= take
                self._consume(pos + take)  # dropped now: memory stays bounded
            if self._skim_left:
                return NEED_DATA
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < 2:
            return NEED_DATA
        if buf[pos : pos + 2] != b"\r\n":
            raise RemoteProtocolError("bulk reply not terminated by CRLF")
        self._consume(pos + 2)
        size, self._pending_bulk, self._skim = self._pending_bulk, -1, None
        return OversizedBulk(size=size, skim=skim)

    def _consume(self, upto: int) -> None:
        buf = self._buf
        if upto == len(buf):
            buf.clear()
            upto = 0
        elif upto > _COMPACT_AT:
            del buf[:upto]
            upto = 0
        self._pos = self._scan = upto


def _too_long(limit: int) -> str:
    return f"reply line longer than {limit} bytes (max_reply_size) without its CRLF"


def _text(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError(f"reply is not UTF-8: {line[:40]!r}") from None


_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def dump_json(value: Any, what: str = "the value") -> str:
    """Encode ``value`` as compact one-line JSON.

    JSON has no NaN or infinity, bytes, sets, datetimes or cycles. A value of a type JSON
    cannot encode raises :class:`ArgumentTypeError`, any other (NaN, a cycle, nesting too
    deep) :class:`ArgumentError`; the message names ``what`` and where in it the value sits
    (``args[0]``), with its type and the usual fix, never the value itself (it may be secret).
    """
    try:
        return _encoder.encode(value)
    except (TypeError, ValueError, RecursionError) as error:
        raise _unencodable(value, what, error) from None


def encode_json(value: Any, what: str = "the value") -> bytes:
    """:func:`dump_json` as UTF-8 bytes; a string with a lone surrogate (which UTF-8 cannot
    carry) raises :class:`ArgumentError` naming where it sits.

    JSON text has no raw CR or LF, so the bytes can go on a command line as they are.
    """
    text = dump_json(value, what)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise _unencodable(value, what, error) from None


# Only on failure, so a valid value costs nothing: find the first value JSON (or UTF-8)
# cannot carry, with its path, and say how to send it instead. Types are matched by name, so
# no module is imported for them (uuid, decimal...).
_FIXES: Final = {
    "datetime.datetime": "send datetime.isoformat() and parse it in the handler",
    "datetime.date": "send date.isoformat() and parse it in the handler",
    "datetime.time": "send time.isoformat() and parse it in the handler",
    "datetime.timedelta": "send timedelta.total_seconds()",
    "builtins.bytes": "send text (bytes.decode()), or base64 for binary data",
    "builtins.bytearray": "send text (bytes.decode()), or base64 for binary data",
    "builtins.memoryview": "send text, or base64 for binary data",
    "builtins.set": "send a list (sorted(...))",
    "builtins.frozenset": "send a list (sorted(...))",
    "decimal.Decimal": "send str(value) and parse it in the handler",
    "uuid.UUID": "send str(value)",
    "pathlib.PurePath": "send str(path)",
    "enum.Enum": "send its .value",
}
_MAX_SHOWN_KEY: Final = 40
_SURROGATE: Final = (
    "is a string with a lone surrogate (an undecodable byte), which UTF-8 cannot encode: "
    "clean it with text.encode('utf-8', 'replace').decode()"
)


def _fix(value: object) -> str:
    for cls in type(value).__mro__:
        fix = _FIXES.get(f"{cls.__module__}.{cls.__qualname__}")
        if fix is not None:
            return fix
    return "send plain JSON values (str, int, float, bool, None, lists, dicts with str keys)"


def _step(path: str, key: object) -> str:
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{path}[{key}]"
    if not path and isinstance(key, str) and key.isidentifier():
        return key  # a top-level field: args, custom
    shown = repr(key)
    if len(shown) > _MAX_SHOWN_KEY:
        shown = shown[: _MAX_SHOWN_KEY - 3] + "..."
    return f"{path}[{shown}]"


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _culprit(value: Any, utf8: bool) -> tuple[str, str, bool] | None:
    """(path, what is wrong there, whether it is a wrong type) of the first value that JSON
    cannot carry (with ``utf8``, that UTF-8 cannot), in document order; None if there is none
    to name (a cycle)."""
    seen: set[int] = set()
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if utf8 and _has_surrogate(item):
                return path, _SURROGATE, False
        elif item is None or isinstance(item, int):  # bool included
            pass
        elif isinstance(item, float):
            if item != item or item in (math.inf, -math.inf):
                return path, f"is {item!r}, which JSON cannot encode: send None or a string", False
        elif isinstance(item, (list, tuple, dict)):
            if id(item) in seen:
                continue  # shared, or a cycle: each container is looked at once
            seen.add(id(item))
            children: list[tuple[Any, str]] = []
            if isinstance(item, dict):
                for key, child in item.items():
                    if isinstance(key, str):
                        if utf8 and _has_surrogate(key):
                            return path, f"has a key that {_SURROGATE}", False
                    elif not (key is None or isinstance(key, (int, float))):
                        kind = type(key).__name__
                        return path, f"has a key of type {kind}: JSON object keys are strings", True
                    children.append((child, _step(path, key)))
            else:
                children = [(child, _step(path, index)) for index, child in enumerate(item)]
            stack.extend(reversed(children))
        else:
            kind = type(item).__name__
            if kind != "bytes":  # bytes reads as a plural
                kind = ("an " if kind[:1] in "aeiouAEIO" else "a ") + kind  # a UUID
            return path, f"is {kind}, which JSON cannot encode: {_fix(item)}", True
    return None


def _unencodable(value: Any, what: str, error: BaseException) -> LocalProtocolError:
    """The error for ``value`` that ``_encoder`` or UTF-8 refused with ``error``."""
    if isinstance(error, RecursionError):
        return ArgumentError(f"{what} is nested too deeply to be encoded as JSON")
    culprit = _culprit(value, utf8=isinstance(error, UnicodeEncodeError))
    if culprit is None:
        kind: type[LocalProtocolError] = (
            ArgumentTypeError if isinstance(error, TypeError) else ArgumentError
        )
        return kind(f"{what} cannot be encoded as JSON: {error}")
    path, problem, wrong_type = culprit
    message = f"{what}: {path} {problem}" if path else f"{what} {problem}"
    return (ArgumentTypeError if wrong_type else ArgumentError)(message)


def command_line(verb: str, argument: str | None = None) -> bytes:
    """One command line: the verb, a single space and the argument, then CRLF."""
    text = verb if argument is None else f"{verb} {argument}"
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ArgumentError(f"{verb} argument is not valid Unicode: {error}") from None
    if b"\n" in data or b"\r" in data:
        raise ArgumentError(f"{verb} argument must not contain CR or LF")
    return data + b"\r\n"
