"""Replies no real server sends, fed to the sans-IO core as bytes: too large, or corrupt.

A connection raises RemoteProtocolError however the bytes are cut, never holds much more than
``max_reply_size`` of them, and refuses further use. A worker link that gets them drops and
reconnects, and sends again the ACKs and FAILs whose replies it lost: nothing is lost.
"""

from __future__ import annotations

import json
from typing import Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faktory_core import (
    NEED_DATA,
    Ack,
    Connection,
    ConnectionState,
    Event,
    Fetch,
    Fetched,
    Info,
    JobError,
    LocalProtocolError,
    Notice,
    RemoteProtocolError,
    WorkerConfig,
)
from tests.core.strategies import byte_by_byte, cuts, encode_bulk, ready_connection
from tests.core.worker_peer import Driver

LIMIT: Final = 64
J1, J2 = "jid-00000001", "jid-00000002"

#: Replies too large for LIMIT: a bulk that declares too much, a line that never ends, a
#: complete line too long, and a job payload over the limit.
OVERSIZED: Final = [
    b"$65\r\n" + b"x" * 65 + b"\r\n",
    b"$99999999\r\n",
    b"+" + b"a" * 200,
    b"-ERR " + b"e" * 100 + b"\r\n",
    encode_bulk(json.dumps({"jid": J2, "jobtype": "T", "args": ["y" * 80]}).encode()),
]
#: Replies that break the protocol whatever command awaits them.
CORRUPT: Final = [
    b"*1\r\n$2\r\nOK\r\n",  # an array
    b"OK\r\n",  # no type byte
    b"+OK\n",  # LF without CR
    b"$3\r\nabcd\r\n",  # a body longer than declared
    b"$-2\r\n",
    b":1e3\r\n",
    b"+\xff\xfe\r\n",  # not UTF-8
    b"\x16\x03\x01\x00\xa5\x01\x00",  # a TLS handshake record: a plaintext client to TLS
]
BAD: Final = OVERSIZED + CORRUPT


def worker_config(**overrides: object) -> WorkerConfig:
    settings: dict[str, object] = {"wid": "w-bad-1", "concurrency": 1, "max_reply_size": LIMIT}
    settings.update(overrides)
    return WorkerConfig(**settings)  # type: ignore[arg-type]


# -- one connection --------------------------------------------------------------------------


def _play(conn: Connection, chunks: list[bytes]) -> tuple[list[Event], RemoteProtocolError]:
    """Feed the chunks; the events before the RemoteProtocolError, and that error."""
    events: list[Event] = []
    for chunk in filter(None, chunks):  # b"" would be the end of the stream
        conn.receive_data(chunk)
        try:
            while (event := conn.next_event()) is not NEED_DATA:
                assert isinstance(event, Event)
                events.append(event)
        except RemoteProtocolError as error:
            return events, error
    raise AssertionError(f"no RemoteProtocolError, only {events}")


def _assert_unusable(conn: Connection, error: RemoteProtocolError) -> None:
    assert conn.state is ConnectionState.ERROR
    for use in (conn.next_event, lambda: conn.receive_data(b"+OK\r\n"), lambda: conn.send(Info())):
        with pytest.raises(LocalProtocolError, match="unusable") as refused:
            use()
        assert refused.value.__cause__ is error


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(BAD), st.sampled_from([Info(), Fetch(queues="q"), Ack(jid=J1)]), st.data())
def test_a_bad_reply_raises_however_it_is_cut(
    bad: bytes, command: Info | Fetch | Ack, data: st.DataObject
) -> None:
    # The reply to a first FETCH arrives intact before the bad one.
    stream = b"$-1\r\n" + bad
    diagnoses = set()
    for chunks in ([stream], byte_by_byte(stream), data.draw(cuts(stream))):
        conn = ready_connection(max_reply_size=LIMIT)
        conn.send(Fetch(queues="q"), command)
        events, error = _play(conn, chunks)
        assert events == [Fetched(command=Fetch(queues="q"), job=None)]
        _assert_unusable(conn, error)
        diagnoses.add(str(error))
    assert len(diagnoses) == 1  # however the bytes came: the same diagnosis


@pytest.mark.parametrize("start", [b"+", b"-ERR ", b"$5", b":12"])
def test_a_line_that_never_ends_is_refused_once_past_the_limit(start: bytes) -> None:
    conn = ready_connection(max_reply_size=LIMIT)
    conn.send(Info())
    line = start + b"7" * (LIMIT - len(start))
    for byte in byte_by_byte(line):
        conn.receive_data(byte)
        assert conn.next_event() is NEED_DATA
    conn.receive_data(b"7")  # the first byte past the limit: memory stays bounded
    with pytest.raises(RemoteProtocolError, match="max_reply_size") as raised:
        conn.next_event()
    _assert_unusable(conn, raised.value)


def test_a_bulk_declaring_too_much_is_refused_before_its_body() -> None:
    conn = ready_connection(max_reply_size=LIMIT)
    conn.send(Fetch(queues="q"))
    conn.receive_data(b"$65\r\n")
    with pytest.raises(RemoteProtocolError, match=r"65 bytes exceeds 64 bytes \(max_reply_size\)"):
        conn.next_event()


# -- a worker link ---------------------------------------------------------------------------


def _ack_lost_then(bad_chunks: list[bytes]) -> Driver:
    """A worker whose ACK of J1 went out, then got ``bad_chunks`` instead of +OK."""
    driver = Driver(worker_config(), fetch_wait=2.0)
    driver.peer.push(J1)
    driver.start()
    assert list(driver.started) == [J1]
    driver.peer.mute("w0")  # the server takes the ACK, its reply is replaced by bad bytes
    driver.finish(J1)
    assert [verb for _, verb, _ in driver.lines("w0")][-2:] == ["ACK", "FETCH"]
    for chunk in filter(None, bad_chunks):  # b"" would be the end of the stream
        driver.data("w0", chunk)
    return driver


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(BAD), st.data())
def test_a_bad_reply_to_an_ack_drops_the_link_and_the_ack_is_sent_again(
    bad: bytes, data: st.DataObject
) -> None:
    chunks = data.draw(st.sampled_from([[bad], byte_by_byte(bad)]) | cuts(bad))
    driver = _ack_lost_then(chunks)
    notices = [n.message for n in driver.actions(Notice, "worker")]
    assert any(m.startswith("connection lost: protocol error:") for m in notices), notices
    assert not driver.peer.is_open("w0")
    driver.advance(60)  # the backoff, the reconnect, the FETCHes that follow
    assert driver.peer.is_ready("w0")
    acks = driver.peer.acks(J1)
    assert len(acks) == 2  # the first may have arrived: the server answers the second +OK
    assert acks[0].connection != acks[1].connection
    assert driver.peer.fails(J1) == []
    assert list(driver.started) == [J1]  # run once


def test_a_job_over_max_reply_size_drops_the_link_stays_reserved_and_the_next_one_runs() -> None:
    driver = Driver(worker_config(), fetch_wait=2.0)
    driver.peer.push_payload(json.dumps({"jid": J1, "jobtype": "T", "args": ["z" * 80]}).encode())
    driver.peer.push(J2)
    driver.start()
    notices = [n.message for n in driver.actions(Notice, "worker")]
    size = len(driver.peer.reserved[J1])
    assert notices[0] == (
        f"connection lost: protocol error: bulk reply of {size} bytes exceeds 64 bytes "
        "(max_reply_size)"
    )
    assert driver.started == {}
    # The server handed J1 out: it stays reserved there and comes back when the reservation
    # expires; nothing is FAILed or ACKed for it here.
    assert J1 in driver.peer.reserved
    driver.advance(60)
    assert list(driver.started) == [J2]
    driver.finish(J2)
    assert len(driver.peer.acks(J2)) == 1
    assert driver.peer.outcomes.get(J1) is None


def test_a_fail_whose_reply_was_corrupt_is_sent_again() -> None:
    driver = Driver(worker_config(), fetch_wait=2.0)
    driver.peer.push(J1)
    driver.start()
    driver.peer.mute("w0")
    driver.finish(J1, JobError(errtype="Boom", message="it broke"))
    driver.data("w0", b"+OK\n")
    driver.advance(60)
    fails = driver.peer.fails(J1)
    assert len(fails) == 2
    assert fails[0].argument == fails[1].argument
    assert json.loads(fails[1].argument)["errtype"] == "Boom"
