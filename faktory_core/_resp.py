"""The RESP2 subset Faktory replies with, parsed incrementally, and the command line writer.

Replies come out as plain Python values, the cheapest faithful form: a simple string is a
``str``, a bulk string ``bytes``, the null bulk ``None``, an integer ``int``, an error an
:class:`ErrorReply`, a bulk string too large to keep that was read past an
:class:`OversizedBulk`. :data:`NEED_DATA` says a reply is not complete yet.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from typing import Any, Final, Protocol, TypeAlias

import attrs

from ._errors import LocalProtocolError, RemoteProtocolError

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
        if max_reply_size < 16:
            raise ValueError("max_reply_size must be at least 16 bytes")
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
    """Encode ``value`` as compact one-line JSON, or raise :class:`LocalProtocolError`.

    JSON has no NaN or infinity, bytes, sets or cycles; the error says which ``what`` held
    one (never the value itself, which may be secret).
    """
    try:
        return _encoder.encode(value)
    except (TypeError, ValueError, RecursionError) as error:
        raise LocalProtocolError(f"{what} cannot be encoded as JSON: {error}") from None


def command_line(verb: str, argument: str | None = None) -> bytes:
    """One command line: the verb, a single space and the argument, then CRLF."""
    text = verb if argument is None else f"{verb} {argument}"
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise LocalProtocolError(f"{verb} argument is not valid Unicode: {error}") from None
    if b"\n" in data or b"\r" in data:
        raise LocalProtocolError(f"{verb} argument must not contain CR or LF")
    return data + b"\r\n"
