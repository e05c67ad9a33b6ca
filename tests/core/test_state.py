"""The transition table: every state x input pair, and the connection's agreement with it."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from faktory_core import (
    Connection,
    ConnectionState,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from faktory_core._state import TRANSITIONS, Input, transition
from faktory_core.commands import End, Flush
from faktory_core.events import ConnectionClosed

from .strategies import GREETING, drain, ready_connection

S = ConnectionState
ALL_PAIRS = list(itertools.product(ConnectionState, Input))


def test_local_inputs_are_exactly_the_sends() -> None:
    assert {i for i in Input if i.local} == {Input.SEND, Input.SEND_END}


def test_the_table_only_names_known_states_and_inputs() -> None:
    for (state, event), target in TRANSITIONS.items():
        assert isinstance(state, ConnectionState)
        assert isinstance(event, Input)
        assert isinstance(target, ConnectionState)


@pytest.mark.parametrize(("state", "event"), ALL_PAIRS, ids=lambda x: x.name)
def test_every_state_input_pair(state: ConnectionState, event: Input) -> None:
    if (state, event) in TRANSITIONS:
        assert transition(state, event) is TRANSITIONS[state, event]
    else:
        expected = LocalProtocolError if event.local else RemoteProtocolError
        with pytest.raises(expected) as raised:
            transition(state, event)
        assert type(raised.value) is expected
        assert event.value in str(raised.value)
        assert state.value in str(raised.value)


def test_error_has_no_way_out() -> None:
    assert not [pair for pair in TRANSITIONS if pair[0] is S.ERROR]
    assert S.ERROR not in TRANSITIONS.values()  # and nothing in the table leads into it
    for event in Input:
        with pytest.raises(ProtocolError):
            transition(S.ERROR, event)


@pytest.mark.parametrize("state", [s for s in ConnectionState if s is not S.ERROR])
def test_every_state_but_error_closes_on_eof(state: ConnectionState) -> None:
    assert transition(state, Input.EOF) is S.CLOSED


def test_closed_only_accepts_eof() -> None:
    assert [event for state, event in TRANSITIONS if state is S.CLOSED] == [Input.EOF]


def test_every_state_is_reachable_from_the_start() -> None:
    seen = {S.AWAIT_GREETING}
    frontier = [S.AWAIT_GREETING]
    while frontier:
        state = frontier.pop()
        for (source, _), target in TRANSITIONS.items():
            if source is state and target not in seen:
                seen.add(target)
                frontier.append(target)
    assert seen == set(ConnectionState) - {S.ERROR}  # ERROR is entered only by raising


# -- the connection agrees with the table ----------------------------------------------------


def _in_state(state: ConnectionState, pending: int = 1) -> Connection:
    """A connection driven, through its public API, into ``state``."""
    conn = Connection()
    if state is S.AWAIT_GREETING:
        return conn
    conn.receive_data(GREETING)
    drain(conn)
    if state is S.AWAIT_HELLO_REPLY:
        assert conn.state is state
        return conn
    conn = ready_connection()
    if state is S.AWAIT_REPLY:
        conn.send(*[Flush() for _ in range(pending)])
    elif state is S.CLOSED:
        conn.send(End())
    elif state is S.ERROR:
        with pytest.raises(LocalProtocolError):
            conn.send()
    assert conn.state is state
    return conn


Stimulus = Callable[[Connection], object]


def _server(data: bytes) -> Stimulus:
    def stimulus(conn: Connection) -> object:
        conn.receive_data(data)
        return conn.next_event()

    return stimulus


SERVER_STIMULI: dict[str, Stimulus] = {
    "hi": _server(GREETING),
    "ok": _server(b"+OK\r\n"),
    "err": _server(b"-ERR boom\r\n"),
    "eof": _server(b""),
}
LOCAL_STIMULI: dict[Input, Stimulus] = {
    Input.SEND: lambda conn: conn.send(Flush()),
    Input.SEND_END: lambda conn: conn.send(End()),
}


def _classify(state: ConnectionState, pending: int, stimulus: str) -> Input | None:
    """Which table input the server's bytes are in ``state`` (None: not a table input)."""
    if stimulus == "eof":
        return Input.EOF
    if state is S.AWAIT_GREETING:
        return {
            "hi": Input.GREETING,
            "ok": Input.UNSOLICITED_REPLY,
            "err": Input.UNSOLICITED_ERROR,
        }[stimulus]
    if state is S.AWAIT_HELLO_REPLY:
        return {"hi": Input.GREETING, "ok": Input.HELLO_ACCEPTED, "err": Input.HELLO_REJECTED}[
            stimulus
        ]
    if state is S.READY:
        return Input.UNSOLICITED_ERROR if stimulus == "err" else Input.UNSOLICITED_REPLY
    if state is S.AWAIT_REPLY and stimulus in ("ok", "err"):
        return Input.REPLY if pending > 1 else Input.LAST_REPLY
    return None  # AWAIT_REPLY + "hi" is a decoding error; CLOSED drops server bytes


CASES = [
    (state, pending, stimulus)
    for state in ConnectionState
    if state is not S.ERROR
    for pending in ((1, 2) if state is S.AWAIT_REPLY else (0,))
    for stimulus in [*SERVER_STIMULI, *LOCAL_STIMULI]
]


@pytest.mark.parametrize(
    ("state", "pending", "stimulus"), CASES, ids=lambda x: getattr(x, "name", str(x))
)
def test_connection_agrees_with_the_table(
    state: ConnectionState, pending: int, stimulus: str | Input
) -> None:
    conn = _in_state(state, pending)
    if isinstance(stimulus, Input):
        event: Input | None = stimulus
        action = LOCAL_STIMULI[stimulus]
    else:
        event = _classify(state, pending, stimulus)
        action = SERVER_STIMULI[stimulus]
    if event is None:
        if state is S.CLOSED:
            assert isinstance(action(conn), ConnectionClosed)
            assert conn.state is S.CLOSED
        else:
            with pytest.raises(RemoteProtocolError):
                action(conn)
            assert conn.state is S.ERROR
        return
    if (state, event) in TRANSITIONS:
        action(conn)
        assert conn.state is TRANSITIONS[state, event]
    else:
        expected = LocalProtocolError if event.local else RemoteProtocolError
        with pytest.raises(expected):
            action(conn)
        assert conn.state is S.ERROR


@pytest.mark.parametrize(
    "action",
    [*SERVER_STIMULI.values(), *LOCAL_STIMULI.values(), lambda conn: conn.next_event()],
)
def test_connection_in_error_refuses_everything(action: Stimulus) -> None:
    # Unlike the bare table (which blames the server for server inputs in ERROR), the
    # connection blames the caller: using it after an error is a local mistake.
    conn = _in_state(S.ERROR)
    with pytest.raises(LocalProtocolError, match="unusable"):
        action(conn)
    assert conn.state is S.ERROR
