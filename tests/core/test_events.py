"""ServerError.kind: the server's error texts a client acts on, classified in one place."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from faktory_core import ClientInfo, Connection
from faktory_core.commands import Ack, Beat, Fail, Fetch, Hello
from faktory_core.events import ServerError, ServerErrorKind

HELLO = Hello(payload={"v": 2})
BEAT = Beat(wid="w1")
FETCH = Fetch(queues=("default",))
JID = "0123456789abcdef"
FAIL = Fail(jid=JID, errtype="E", message="m")


@pytest.mark.parametrize(
    ("command", "message", "kind"),
    [
        # /work/shared/faktory-protocol.md, as the server spells them.
        (HELLO, "Invalid password", ServerErrorKind.AUTHENTICATION),
        (HELLO, "invalid PASSWORD", ServerErrorKind.AUTHENTICATION),
        (FETCH, "Shutdown in progress", ServerErrorKind.SHUTTING_DOWN),
        (FETCH, "shutdown in progress", ServerErrorKind.SHUTTING_DOWN),
        (None, "too many connections: 2000", ServerErrorKind.TOO_MANY_CONNECTIONS),
        (FETCH, "too many connections: 2001", ServerErrorKind.TOO_MANY_CONNECTIONS),
        (BEAT, "unknown worker w1", ServerErrorKind.UNKNOWN_WORKER),
        (BEAT, "Unknown worker w1", ServerErrorKind.UNKNOWN_WORKER),  # before 1.6.1
        (
            Fail(jid=JID, errtype="E", message="m"),
            f"Job not found {JID}",
            ServerErrorKind.JOB_NOT_FOUND,
        ),
        (FETCH, "must call fetch with at least one queue", ServerErrorKind.OTHER),
        (None, "unknown command PUSH", ServerErrorKind.OTHER),
        # A password named in a reply to anything but HELLO is an echoed payload.
        (Ack(jid=JID), 'invalid ACK {"jid":"password"}', ServerErrorKind.OTHER),
        (FETCH, "", ServerErrorKind.OTHER),
    ],
)
def test_the_server_texts_a_client_acts_on(
    command: object, message: str, kind: ServerErrorKind
) -> None:
    assert ServerError(command=command, code="ERR", message=message).kind is kind


@given(st.text(max_size=40), st.sampled_from([None, HELLO, BEAT, FETCH]))
def test_every_error_has_one_kind(message: str, command: object) -> None:
    kind = ServerError(command=command, code="ERR", message=message).kind
    assert isinstance(kind, ServerErrorKind)
    if kind is ServerErrorKind.AUTHENTICATION:
        assert command is HELLO
        assert "password" in message.lower()


def test_a_refused_hello_is_an_authentication_error() -> None:
    conn = Connection(ClientInfo(), password="wrong")
    conn.receive_data(b'+HI {"v":2,"i":4000,"s":"ab12"}\r\n-ERR Invalid password\r\n')
    event = conn.next_event()
    assert isinstance(event, ServerError)
    assert event.kind is ServerErrorKind.AUTHENTICATION
