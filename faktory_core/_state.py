"""Every rule of a connection's life, as one table.

A connection moves between :class:`ConnectionState` values on :class:`Input` values. A pair
missing from :data:`TRANSITIONS` breaks the protocol: the side that produced the input is at
fault, so it raises :class:`LocalProtocolError` or :class:`RemoteProtocolError`.
"""

from __future__ import annotations

import enum
from typing import Final

from ._errors import LocalProtocolError, ProtocolError, RemoteProtocolError

__all__ = ["TRANSITIONS", "ConnectionState", "Input", "transition"]


class ConnectionState(enum.Enum):
    """Where a connection is in its life."""

    AWAIT_GREETING = "awaiting the server's +HI"
    AWAIT_HELLO_REPLY = "awaiting the reply to HELLO"
    READY = "ready for a command"
    AWAIT_REPLY = "awaiting replies"
    CLOSED = "closed"
    ERROR = "unusable after a protocol error"

    # Members are singletons compared by identity; the C hash keeps table look-ups cheap.
    __hash__ = object.__hash__


class Input(enum.Enum):
    """What can happen to a connection, and which side makes it happen."""

    GREETING = "the +HI greeting"
    HELLO_ACCEPTED = "+OK to HELLO"
    HELLO_REJECTED = "an error reply to HELLO"
    REPLY = "a reply, more awaited"
    LAST_REPLY = "the last awaited reply"
    UNSOLICITED_ERROR = "an error reply nobody asked for"
    UNSOLICITED_REPLY = "a reply nobody asked for"
    EOF = "the server closing the connection"
    SEND = "sending commands"
    SEND_END = "sending END"

    __hash__ = object.__hash__

    @property
    def local(self) -> bool:
        """True when our side produces this input (the rest come from the server)."""
        return self in _LOCAL_INPUTS


_LOCAL_INPUTS: Final = frozenset({Input.SEND, Input.SEND_END})

S = ConnectionState
TRANSITIONS: Final[dict[tuple[ConnectionState, Input], ConnectionState]] = {
    (S.AWAIT_GREETING, Input.GREETING): S.AWAIT_HELLO_REPLY,
    (S.AWAIT_GREETING, Input.EOF): S.CLOSED,
    (S.AWAIT_HELLO_REPLY, Input.HELLO_ACCEPTED): S.READY,
    # The server closes after refusing a HELLO (wrong password).
    (S.AWAIT_HELLO_REPLY, Input.HELLO_REJECTED): S.CLOSED,
    (S.AWAIT_HELLO_REPLY, Input.EOF): S.CLOSED,
    (S.READY, Input.SEND): S.AWAIT_REPLY,
    # END gets no reply: the server closes the socket.
    (S.READY, Input.SEND_END): S.CLOSED,
    # "too many connections" and "shutdown in progress" can arrive before any command.
    (S.READY, Input.UNSOLICITED_ERROR): S.READY,
    (S.READY, Input.EOF): S.CLOSED,
    (S.AWAIT_REPLY, Input.REPLY): S.AWAIT_REPLY,
    (S.AWAIT_REPLY, Input.LAST_REPLY): S.READY,
    (S.AWAIT_REPLY, Input.EOF): S.CLOSED,
    (S.CLOSED, Input.EOF): S.CLOSED,
}
del S


def transition(state: ConnectionState, event: Input) -> ConnectionState:
    """The state after ``event`` in ``state``, or the protocol error of the side at fault."""
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        error: type[ProtocolError] = LocalProtocolError if event.local else RemoteProtocolError
        raise error(f"{event.value} is not allowed when {state.value}") from None
