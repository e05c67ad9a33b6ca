"""One client connection: the handshake, then commands paired with their replies.

Bytes in (``receive_data``), events out (``next_event``), bytes to write (``data_to_send``).
The connection writes on its own once: the HELLO that answers the server's greeting. So after
every call, write whatever ``data_to_send()`` returns before waiting for more data.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Final, NoReturn

import attrs

from ._auth import password_hash
from ._errors import (
    ArgumentError,
    ArgumentTypeError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from ._job import JidScanner, Job, _check_jid, find_jid
from ._resp import (
    DEFAULT_MAX_REPLY_SIZE,
    NEED_DATA,
    ErrorReply,
    NeedData,
    OversizedBulk,
    Reply,
    ReplyParser,
)
from ._state import ConnectionState, Input, transition
from .commands import Command, End, Expect, Fetch, Hello, WorkerState, _word
from .events import (
    OK,
    BatchIdReply,
    BeatReply,
    BulkPushed,
    ConnectionClosed,
    Event,
    Fetched,
    InfoReply,
    InvalidJobFetched,
    LatencyReply,
    Ready,
    ServerError,
    StatusReply,
)

__all__ = ["PROTOCOL_VERSION", "ClientInfo", "Connection"]

#: The protocol version every 1.x server speaks, sent as HELLO ``v``.
PROTOCOL_VERSION: Final = 2
#: Servers ask for 4000 to 8095 rounds; far more would stall the caller, so it is refused.
MAX_HASH_ITERATIONS: Final = 100_000
#: Of a job over max_reply_size, the bytes kept for InvalidJobFetched.payload (to show).
OVERSIZED_JOB_HEAD: Final = 1024


def _optional_word(value: object) -> str | None:
    return None if value is None else _word(value, "wid")


def _check_pid(_: object, __: object, pid: Any) -> None:
    if pid is not None and type(pid) is not int:
        raise ArgumentTypeError(f"pid must be an integer, got {type(pid).__name__}")


def _labels(labels: Iterable[str]) -> tuple[str, ...]:
    if isinstance(labels, str):
        raise ArgumentTypeError("labels must be a sequence of strings, not one string")
    if not isinstance(labels, Iterable):
        raise ArgumentTypeError(
            f"labels must be a sequence of strings, got {type(labels).__name__}"
        )
    kept = tuple(labels)
    if not all(isinstance(label, str) for label in kept):
        raise ArgumentTypeError("labels must be strings")
    return kept


def _check_text(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise ArgumentTypeError(f"{attribute.name} must be a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ArgumentError(f"{attribute.name} is not encodable as UTF-8") from None


@attrs.frozen(kw_only=True)
class ClientInfo:
    """Who we are, as sent in HELLO. A ``wid`` makes the connection a worker's; it must BEAT."""

    wid: str | None = attrs.field(default=None, converter=_optional_word)
    hostname: str | None = attrs.field(default=None, validator=_check_text)
    pid: int | None = attrs.field(default=None, validator=_check_pid)
    labels: tuple[str, ...] = attrs.field(default=(), converter=_labels)
    username: str | None = attrs.field(default=None, validator=_check_text)

    def hello_payload(self, pwdhash: str | None = None) -> dict[str, Any]:
        """The HELLO JSON object, with the fields left unset omitted."""
        payload: dict[str, Any] = {"v": PROTOCOL_VERSION}
        if self.hostname is not None:
            payload["hostname"] = self.hostname
        if self.wid is not None:
            payload["wid"] = self.wid
        if self.pid is not None:
            payload["pid"] = self.pid
        if self.labels:
            payload["labels"] = list(self.labels)
        if self.username is not None:
            payload["username"] = self.username
        if pwdhash is not None:
            payload["pwdhash"] = pwdhash
        return payload


class Connection:
    """The client side of one Faktory connection, with no I/O of its own.

    Commands may be pipelined: ``send(ack, fetch)`` writes both and their replies come back in
    order. A further ``send`` before every reply has arrived is a :class:`LocalProtocolError`.
    """

    __slots__ = (
        "_client",
        "_eof",
        "_error",
        "_max_reply_size",
        "_out",
        "_parser",
        "_password",
        "_pending",
        "_protocol_version",
        "_state",
        "_unanswered",
    )

    def __init__(
        self,
        client: ClientInfo | None = None,
        *,
        password: str | None = None,
        max_reply_size: int = DEFAULT_MAX_REPLY_SIZE,
    ) -> None:
        if password is not None:
            if not isinstance(password, str):
                raise ArgumentTypeError(
                    f"password must be a string or None, got {type(password).__name__}"
                )
            try:  # os.environ keeps undecodable bytes as lone surrogates: send those bytes
                password.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                raise ArgumentError("password must be text encodable as UTF-8") from None
        self._client = client if client is not None else ClientInfo()
        self._password = password
        self._max_reply_size = max_reply_size
        self._parser = ReplyParser(max_reply_size=max_reply_size, skim=self._skim)
        self._state = ConnectionState.AWAIT_GREETING
        self._pending: deque[Command] = deque()
        self._out: list[bytes] = []  # command lines not yet handed out
        self._eof = False
        self._error: ProtocolError | None = None
        self._unanswered: tuple[Command, ...] = ()
        self._protocol_version = 0

    def __repr__(self) -> str:
        return f"<Connection {self._state.name} pending={len(self._pending)}>"

    @property
    def state(self) -> ConnectionState:
        """The current state."""
        return self._state

    @property
    def client(self) -> ClientInfo:
        """What this connection says about itself in HELLO."""
        return self._client

    @property
    def pending(self) -> tuple[Command, ...]:
        """Commands sent whose replies have not arrived, oldest first."""
        return tuple(self._pending)

    @property
    def unread(self) -> int:
        """Bytes received that no event has used yet. On an idle connection any at all are
        bytes nobody asked for: a pooled connection holding some must be retired."""
        return self._parser.buffered

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes read from the socket; ``b""`` means the server closed it."""
        if self._state is ConnectionState.ERROR:
            self._check_usable()
        if not data:
            self._eof = True
        elif self._eof:
            self._fail(LocalProtocolError("data received after end of file"))
        elif self._state is not ConnectionState.CLOSED:
            self._parser.feed(data)

    def data_to_send(self) -> bytes:
        """Return, and forget, the bytes waiting to be written."""
        out = self._out
        if not out:
            return b""
        self._out = []
        return out[0] if len(out) == 1 else b"".join(out)

    def send(self, *commands: Command) -> None:
        """Queue the bytes of one or more commands; their replies arrive as events, in order."""
        if len(commands) == 1 and self._state is ConnectionState.READY:
            # A client's hot path: one command on a ready connection, checked as below.
            command = commands[0]
            if isinstance(command, Command) and not isinstance(command, (Hello, End)):
                self._state = _AFTER_SEND
                self._pending.append(command)
                self._out.append(command.encode())
                return
        self._check_usable()
        if not commands:
            self._fail(ArgumentError("send() needs at least one command"))
        ends = False
        for command in commands:
            if not isinstance(command, Command) or isinstance(command, Hello):
                self._fail(ArgumentTypeError(f"not a command we can send: {command!r}"))
            ends = ends or isinstance(command, End)
        if ends:
            if len(commands) != 1:
                self._fail(ArgumentError("END must be sent alone: it gets no reply"))
            self._move(Input.SEND_END)
        else:
            self._move(Input.SEND)
            self._pending.extend(commands)
        self._out.extend(command.encode() for command in commands)

    def next_event(self) -> Event | NeedData:
        """Return the next event, or NEED_DATA when more bytes must be read first."""
        state = self._state
        if state is ConnectionState.ERROR:
            self._check_usable()
        if state is ConnectionState.CLOSED:
            return ConnectionClosed(unanswered=self._unanswered)
        try:
            if state is ConnectionState.AWAIT_REPLY and self._parser.take(_OK_REPLY):
                # A client's hot path: +OK, unparsed, to a command sent (as _on_reply).
                command = self._pending.popleft()
                self._state = _AFTER_REPLY if self._pending else _AFTER_LAST_REPLY
                if command.expect is Expect.OK:
                    return OK(command=command)
                return _DECODERS[command.expect](command, "OK")
            reply = self._parser.next_reply()
            if reply is NEED_DATA:
                return self._closed() if self._eof else NEED_DATA
            return _HANDLERS[self._state](self, reply)
        except ProtocolError as error:
            self._state = ConnectionState.ERROR
            self._error = error
            raise

    # -- internals ---------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._state is ConnectionState.ERROR:
            raise LocalProtocolError(
                "the connection is unusable after an earlier protocol error"
            ) from self._error

    def _fail(self, error: ProtocolError) -> NoReturn:
        self._state = ConnectionState.ERROR
        self._error = error
        raise error

    def _move(self, event: Input) -> None:
        try:
            self._state = transition(self._state, event)
        except ProtocolError as error:
            self._fail(error)

    def _skim(self, size: int) -> _JobSkim | None:
        # A job too large to keep is read past, so the worker can still FAIL it by its jid
        # (the server reserved it for us); any other reply that large is refused.
        pending = self._pending
        if pending and pending[0].expect is Expect.JOB and self._state in _REPLY_STATES:
            return _JobSkim(size, self._max_reply_size)
        return None

    def _closed(self) -> ConnectionClosed:
        self._move(Input.EOF)
        self._unanswered = tuple(self._pending)
        self._pending.clear()
        return ConnectionClosed(unanswered=self._unanswered)

    def _on_greeting(self, reply: Reply) -> Event | NeedData:
        version, salt, iterations = _parse_greeting(reply)
        pwdhash = None
        if salt is not None and self._password is not None:
            pwdhash = password_hash(self._password, salt, iterations)
        hello = Hello(payload=self._client.hello_payload(pwdhash))
        self._move(Input.GREETING)
        self._protocol_version = version
        self._pending.append(hello)
        self._out.append(hello.encode())
        return self.next_event()

    def _on_hello_reply(self, reply: Reply) -> Event:
        hello = self._pending.popleft()
        if isinstance(reply, ErrorReply):
            self._move(Input.HELLO_REJECTED)
            return ServerError(command=hello, code=reply.code, message=reply.message)
        if reply != "OK":
            raise RemoteProtocolError(f"unexpected reply to HELLO: {_show(reply)}")
        self._move(Input.HELLO_ACCEPTED)
        return Ready(protocol_version=self._protocol_version)

    def _on_reply(self, reply: Reply) -> Event:
        if not self._pending:
            if isinstance(reply, ErrorReply):
                self._move(Input.UNSOLICITED_ERROR)
                return ServerError(command=None, code=reply.code, message=reply.message)
            self._move(Input.UNSOLICITED_REPLY)  # not in the table: raises
        command = self._pending.popleft()
        if self._state is ConnectionState.AWAIT_REPLY:  # as ever: the table's moves, looked up
            self._state = _AFTER_REPLY if self._pending else _AFTER_LAST_REPLY
        else:
            self._move(Input.REPLY if self._pending else Input.LAST_REPLY)
        if isinstance(reply, ErrorReply):
            return ServerError(command=command, code=reply.code, message=reply.message)
        return _DECODERS[command.expect](command, reply)


#: The reply most commands get, whole.
_OK_REPLY: Final = b"+OK\r\n"
_REPLY_STATES: Final = frozenset({ConnectionState.READY, ConnectionState.AWAIT_REPLY})
#: The moves of a client's hot path (sending, and each reply), looked up in the table once.
_AFTER_SEND: Final = transition(ConnectionState.READY, Input.SEND)
_AFTER_REPLY: Final = transition(ConnectionState.AWAIT_REPLY, Input.REPLY)
_AFTER_LAST_REPLY: Final = transition(ConnectionState.AWAIT_REPLY, Input.LAST_REPLY)

_HANDLERS: Final[dict[ConnectionState, Callable[[Connection, Reply], Event | NeedData]]] = {
    ConnectionState.AWAIT_GREETING: Connection._on_greeting,
    ConnectionState.AWAIT_HELLO_REPLY: Connection._on_hello_reply,
    ConnectionState.READY: Connection._on_reply,
    ConnectionState.AWAIT_REPLY: Connection._on_reply,
}


def _show(reply: Reply) -> str:
    text = repr(reply)
    return text if len(text) <= 120 else text[:117] + "..."


def _parse_greeting(reply: Reply) -> tuple[int, str | None, int]:
    """(protocol version, salt or None, hash iterations) from ``+HI {...}``."""
    if not isinstance(reply, str) or not reply.startswith("HI "):
        raise RemoteProtocolError(f"expected the +HI greeting, got {_show(reply)}")
    greeting = _json_object(reply[3:], "the greeting")
    version = greeting.get("v")
    salt = greeting.get("s")
    iterations = greeting.get("i", 1)
    if type(version) is not int or type(iterations) is not int:
        raise RemoteProtocolError(f"malformed greeting: {_show(reply)}")
    if salt is not None and (not isinstance(salt, str) or not _encodable(salt)):
        raise RemoteProtocolError(f"malformed greeting salt: {_show(reply)}")
    if iterations > MAX_HASH_ITERATIONS:
        raise RemoteProtocolError(f"the greeting asks for {iterations} hash iterations")
    return version, salt, iterations


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_raw_decode = json.JSONDecoder().raw_decode


def _loads(text: str | bytes) -> Any:
    """json.loads for one document, without its encoding sniffing (replies are UTF-8)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    text = text.lstrip()
    value, end = _raw_decode(text)
    if end != len(text) and text[end:].strip():
        raise ValueError("extra data after the JSON document")
    return value


def _json_object(text: str | bytes, what: str) -> dict[str, Any]:
    try:
        value = _loads(text)
    except (ValueError, RecursionError):
        raise RemoteProtocolError(f"{what} is not valid JSON: {text[:80]!r}") from None
    if not isinstance(value, dict):
        raise RemoteProtocolError(f"{what} is not a JSON object: {text[:80]!r}")
    return value


def _json_reply(command: Command, reply: Reply) -> dict[str, Any]:
    if not isinstance(reply, (str, bytes)):
        raise RemoteProtocolError(f"unexpected reply to {command.verb}: {_show(reply)}")
    return _json_object(reply, f"the reply to {command.verb}")


def _decode_ok(command: Command, reply: Reply) -> Event:
    if reply != "OK":
        raise RemoteProtocolError(f"unexpected reply to {command.verb}: {_show(reply)}")
    return OK(command=command)


def _decode_job(command: Any, reply: Reply) -> Event:
    if reply is None:
        return Fetched(command=command, job=None)
    if not isinstance(reply, bytes):
        if isinstance(reply, OversizedBulk):
            assert isinstance(reply.skim, _JobSkim)  # the only skim a connection hands out
            return reply.skim.event(command)
        raise RemoteProtocolError(f"unexpected reply to FETCH: {_show(reply)}")
    try:
        data = _loads(reply)
    except RecursionError:
        return _invalid_job(command, reply, "the job is nested too deeply to decode")
    except ValueError:
        return _invalid_job(command, reply, "invalid JSON")
    try:
        return Fetched(command=command, job=Job.from_wire(data))
    except LocalProtocolError as error:
        jid = data.get("jid") if isinstance(data, dict) else None
        return InvalidJobFetched(
            command=command, payload=reply, jid=_failable_jid(jid), reason=str(error)
        )


def _invalid_job(command: Fetch, payload: bytes, reason: str) -> InvalidJobFetched:
    """A job we cannot decode: its jid is read from the text itself, without recursion."""
    jid = _failable_jid(find_jid(payload))
    return InvalidJobFetched(command=command, payload=payload, jid=jid, reason=reason)


class _JobSkim:
    """The reply to FETCH of a job over max_reply_size, read past: its head and its jid."""

    __slots__ = ("_head", "_limit", "_scanner", "_size")

    def __init__(self, size: int, limit: int) -> None:
        self._size = size
        self._limit = limit
        self._head = bytearray()
        self._scanner = JidScanner()

    def feed(self, data: bytes) -> None:
        room = OVERSIZED_JOB_HEAD - len(self._head)
        if room > 0:
            self._head += data[:room]
        self._scanner.feed(data)

    def event(self, command: Fetch) -> InvalidJobFetched:
        reason = f"the job is {self._size} bytes, larger than max_reply_size {self._limit}"
        jid = _failable_jid(self._scanner.jid)
        return InvalidJobFetched(command=command, payload=bytes(self._head), jid=jid, reason=reason)


def _failable_jid(jid: object) -> str | None:
    """``jid`` if a FAIL can carry it, so the worker can release the job's reservation."""
    if not isinstance(jid, str):
        return None
    try:
        _check_jid(None, None, jid)
        jid.encode("utf-8")
    except (LocalProtocolError, UnicodeEncodeError):
        return None
    return jid


def _decode_bulk_push(command: Any, reply: Reply) -> Event:
    errors = _json_reply(command, reply)
    if not all(isinstance(text, str) for text in errors.values()):
        raise RemoteProtocolError(f"malformed PUSHB reply: {_show(reply)}")
    return BulkPushed(command=command, errors=errors)


def _decode_beat(command: Any, reply: Reply) -> Event:
    if reply == "OK":
        return BeatReply(command=command, state=WorkerState.RUNNING)
    state = _json_reply(command, reply).get("state")
    try:
        return BeatReply(command=command, state=WorkerState(state))
    except ValueError:
        raise RemoteProtocolError(f"unknown worker state in BEAT reply: {_show(reply)}") from None


def _decode_info(command: Any, reply: Reply) -> Event:
    return InfoReply(command=command, info=_json_reply(command, reply))


def _decode_latency(command: Any, reply: Reply) -> Event:
    latencies = _json_reply(command, reply)
    try:
        if not all(type(value) in (int, float) for value in latencies.values()):
            raise ValueError
        seconds = {name: float(value) for name, value in latencies.items()}
    except (ValueError, OverflowError):
        raise RemoteProtocolError(f"malformed QUEUE LATENCY reply: {_show(reply)}") from None
    return LatencyReply(command=command, latencies=seconds)


def _decode_bid(command: Any, reply: Reply) -> Event:
    if isinstance(reply, bytes):
        try:
            reply = reply.decode("utf-8")
        except UnicodeDecodeError:
            reply = None
    if not isinstance(reply, str) or not reply:
        raise RemoteProtocolError(f"expected a batch id from BATCH: {_show(reply)}")
    return BatchIdReply(command=command, bid=reply)


def _decode_status(command: Any, reply: Reply) -> Event:
    return StatusReply(command=command, status=_json_reply(command, reply))


def _never(command: Command, reply: Reply) -> Event:  # pragma: no cover - END is never pending
    raise AssertionError(f"{command.verb} expects no reply")


_DECODERS: Final[dict[Expect, Callable[[Any, Reply], Event]]] = {
    Expect.OK: _decode_ok,
    Expect.JOB: _decode_job,
    Expect.BULK_PUSH: _decode_bulk_push,
    Expect.BEAT: _decode_beat,
    Expect.INFO: _decode_info,
    Expect.LATENCY: _decode_latency,
    Expect.BID: _decode_bid,
    Expect.STATUS: _decode_status,
    Expect.NOTHING: _never,
}
