"""Replies no real server sends, fed to the sans-IO core as bytes: too large, or corrupt.

A connection raises RemoteProtocolError however the bytes are cut, never holds much more than
``max_reply_size`` of them, and refuses further use. A worker link that gets them drops and
reconnects, and sends again the ACKs and FAILs whose replies it lost: nothing is lost.

One exception: a job over ``max_reply_size`` in reply to FETCH is valid protocol (the server
has no limit). It is read past in bounded memory and becomes InvalidJobFetched with its jid,
so the worker FAILs it at once instead of dropping the link each time it is handed out.
"""

from __future__ import annotations

import json
import tracemalloc
from typing import Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faktory_core import (
    NEED_DATA,
    Connection,
    ConnectionState,
    Event,
    LocalProtocolError,
    RemoteProtocolError,
    WorkerConfig,
)
from faktory_core.commands import Ack, Fail, Fetch, Info
from faktory_core.events import OK, Fetched, InfoReply, InvalidJobFetched
from faktory_core.machine_io import JobError, Notice
from tests.core.strategies import byte_by_byte, cuts, encode_bulk, ready_connection
from tests.core.worker_peer import Driver

LIMIT: Final = 64
J1, J2 = "jid-00000001", "jid-00000002"

#: Bulk replies too large for LIMIT: refused, except in reply to FETCH (a job to FAIL).
OVERSIZED_BULKS: Final = [
    b"$65\r\n" + b"x" * 65 + b"\r\n",
    b"$99999999\r\n",
    encode_bulk(json.dumps({"jid": J2, "jobtype": "T", "args": ["y" * 80]}).encode()),
]
#: Replies too large for LIMIT: the bulks, a line that never ends, a complete line too long.
OVERSIZED: Final = [
    *OVERSIZED_BULKS,
    b"+" + b"a" * 200,
    b"-ERR " + b"e" * 100 + b"\r\n",
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
#: (bad reply, the command it answers): every pair but an oversized bulk answering FETCH.
BAD_ANSWERS: Final = [
    (bad, command)
    for bad in BAD
    for command in (Info(), Fetch(queues="q"), Ack(jid=J1))
    if not (bad in OVERSIZED_BULKS and isinstance(command, Fetch))
]


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
@given(st.sampled_from(BAD_ANSWERS), st.data())
def test_a_bad_reply_raises_however_it_is_cut(
    answer: tuple[bytes, Info | Fetch | Ack], data: st.DataObject
) -> None:
    bad, command = answer
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


@pytest.mark.parametrize("command", [Info(), Ack(jid=J1)], ids=["INFO", "ACK"])
def test_a_bulk_declaring_too_much_is_refused_before_its_body(command: Info | Ack) -> None:
    conn = ready_connection(max_reply_size=LIMIT)
    conn.send(command)
    conn.receive_data(b"$65\r\n")
    with pytest.raises(RemoteProtocolError, match=r"65 bytes exceeds 64 bytes \(max_reply_size\)"):
        conn.next_event()


# -- a job over max_reply_size ---------------------------------------------------------------


def _big_job(jid: str, size: int, *, custom: int = 0) -> bytes:
    """A job of about ``size`` bytes, with a ``custom`` of ``custom`` bytes before its jid, as
    Faktory 1.9.4 orders the keys (a "jid" decoy inside it)."""
    head = b'{"retry":25,"custom":{"jid":"decoy-0000001","pad":"%s"},' % (b"c" * custom)
    head += b'"jid":"%s","queue":"q","jobtype":"T","args":["' % jid.encode()
    return head + b"y" * max(0, size - len(head) - 3) + b'"]}'


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([0, 10, 200]), st.integers(65, 400), st.data())
def test_a_job_over_the_limit_is_invalid_with_its_jid_however_it_is_cut(
    custom: int, size: int, data: st.DataObject
) -> None:
    job = _big_job(J2, size, custom=custom)
    stream = b"$-1\r\n" + encode_bulk(job) + b"+OK\r\n"
    fetch, ack = Fetch(queues="q"), Ack(jid=J1)
    expected = [
        Fetched(command=fetch, job=None),
        InvalidJobFetched(
            command=fetch,
            payload=job,  # all of it: under the 1 KiB kept
            jid=J2,
            reason=f"the job is {len(job)} bytes, larger than max_reply_size {LIMIT}",
        ),
        OK(command=ack),
    ]
    for chunks in ([stream], byte_by_byte(stream), data.draw(cuts(stream))):
        conn = ready_connection(max_reply_size=LIMIT)
        conn.send(fetch, fetch, ack)
        events: list[Event] = []
        for chunk in filter(None, chunks):
            conn.receive_data(chunk)
            while (event := conn.next_event()) is not NEED_DATA:
                assert isinstance(event, Event)
                events.append(event)
        assert events == expected  # and the stream is still in step
        assert conn.state is ConnectionState.READY


def test_a_job_over_the_limit_waits_for_its_body_instead_of_being_refused() -> None:
    conn = ready_connection(max_reply_size=LIMIT)
    conn.send(Fetch(queues="q"))
    conn.receive_data(b"$99999999\r\n" + b"{" * 1000)
    assert conn.next_event() is NEED_DATA
    assert conn.state is ConnectionState.AWAIT_REPLY


def test_a_huge_job_is_read_past_in_bounded_memory() -> None:
    limit = 1024 * 1024
    body = _big_job(J2, 3 * limit, custom=200_000)
    size = len(body)
    header = b"$%d\r\n" % size
    conn = ready_connection(max_reply_size=limit)
    fetch = Fetch(queues="q")
    conn.send(fetch)
    chunk = 64 * 1024
    pieces = [header, *(body[i : i + chunk] for i in range(0, len(body), chunk)), b"\r\n"]
    del body
    tracemalloc.start()
    try:
        for piece in pieces:
            conn.receive_data(piece)
            event = conn.next_event()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(event, InvalidJobFetched)
    assert event.jid == J2
    assert len(event.payload) == 1024
    assert event.reason == f"the job is {size} bytes, larger than max_reply_size {limit}"
    # The job is 3 MiB: what the connection held at any time stays near one piece.
    assert peak < 4 * chunk, peak
    fail = Fail(jid=J2, errtype="InvalidJob", message=event.reason)
    conn.send(fail, Info())
    conn.receive_data(b"+OK\r\n$2\r\n{}\r\n")
    assert conn.next_event() == OK(command=fail)
    assert isinstance(conn.next_event(), InfoReply)


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
    assert any(m.startswith("protocol error:") for m in notices), notices
    assert not driver.peer.is_open("w0")
    driver.advance(60)  # the backoff, the reconnect, the FETCHes that follow
    assert driver.peer.is_ready("w0")
    acks = driver.peer.acks(J1)
    assert len(acks) == 2  # the first may have arrived: the server answers the second +OK
    assert acks[0].connection != acks[1].connection
    assert driver.peer.fails(J1) == []
    assert list(driver.started) == [J1]  # run once


def test_a_job_over_max_reply_size_is_failed_at_once_and_the_next_one_runs() -> None:
    driver = Driver(worker_config(), fetch_wait=2.0)
    payload = json.dumps({"jid": J1, "jobtype": "T", "args": ["z" * 80]}).encode()
    driver.peer.push_payload(payload)
    driver.peer.push(J2)
    driver.start()
    reason = f"the job is {len(payload)} bytes, larger than max_reply_size 64"
    notices = [n.message for n in driver.actions(Notice, "worker")]
    # The link is not dropped.
    assert notices == [
        f"invalid job fetched (jid {J1}): {reason}: FAILed as InvalidJob, the server retries it"
    ]
    fails = driver.peer.fails(J1)
    assert [(f.json()["errtype"], f.json()["message"]) for f in fails] == [("InvalidJob", reason)]
    assert J1 not in driver.peer.reserved  # released at once, not after its reservation
    assert list(driver.started) == [J2]
    driver.finish(J2)
    assert len(driver.peer.acks(J2)) == 1
    assert [f.connection for f in fails] == [driver.peer.connection("w0")]


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
