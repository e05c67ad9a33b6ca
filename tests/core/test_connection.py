"""Connection: handshake, every command's reply decoding, misuse, closure, and fuzzing."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faktory_core import (
    NEED_DATA,
    ArgumentError,
    ArgumentTypeError,
    ClientInfo,
    Command,
    Connection,
    ConnectionState,
    Event,
    Job,
    LocalProtocolError,
    RemoteProtocolError,
)
from faktory_core._connection import PROTOCOL_VERSION
from faktory_core._resp import ReplyParser
from faktory_core.commands import (
    Ack,
    BatchCommit,
    BatchNew,
    BatchOpen,
    BatchStatus,
    Beat,
    End,
    Fail,
    Fetch,
    Flush,
    Hello,
    Info,
    Mutate,
    Push,
    PushBulk,
    QueueLatency,
    QueuePause,
    QueueRemove,
    QueueResume,
    TrackGet,
    TrackSet,
    WorkerState,
)
from faktory_core.events import (
    OK,
    BatchIdReply,
    BeatReply,
    BulkPushed,
    ConnectionClosed,
    Fetched,
    InfoReply,
    InvalidJobFetched,
    LatencyReply,
    Ready,
    ServerError,
    StatusReply,
)

from .strategies import (
    GREETING,
    byte_by_byte,
    cuts,
    drain,
    encode_bulk,
    encode_error,
    error_code,
    jobs,
    json_roundtrip,
    json_values,
    line_text,
    ready_connection,
    reply,
)

S = ConnectionState
JID = "0123456789abcdef"
JOB = Job(jid=JID, jobtype="SendEmail", args=[1])
JOB_BYTES = json.dumps(JOB.to_wire()).encode()


def exchange(command: Command, server: bytes, **kwargs: Any) -> Event:
    """Send ``command`` on a ready connection, feed the reply, return the one event."""
    conn = ready_connection(**kwargs)
    conn.send(command)
    assert conn.data_to_send() == command.encode()
    assert conn.state is S.AWAIT_REPLY
    conn.receive_data(server)
    event = conn.next_event()
    assert conn.next_event() is NEED_DATA
    assert conn.state is S.READY
    assert conn.pending == ()
    assert not isinstance(event, type(NEED_DATA))
    return event


def exchange_fails(command: Command, server: bytes) -> Connection:
    conn = ready_connection()
    conn.send(command)
    conn.receive_data(server)
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    assert conn.state is S.ERROR
    return conn


# -- the handshake ---------------------------------------------------------------------------


def test_handshake_without_password() -> None:
    conn = Connection()
    assert conn.state is S.AWAIT_GREETING
    assert conn.data_to_send() == b""
    assert conn.next_event() is NEED_DATA
    conn.receive_data(GREETING)
    assert conn.next_event() is NEED_DATA
    assert conn.state is S.AWAIT_HELLO_REPLY
    assert conn.data_to_send() == b'HELLO {"v":2}\r\n'
    assert conn.data_to_send() == b""  # taken once
    assert [type(c) for c in conn.pending] == [Hello]
    conn.receive_data(b"+OK\r\n")
    assert conn.next_event() == Ready(protocol_version=2)
    assert conn.state is S.READY
    assert conn.pending == ()
    assert conn.next_event() is NEED_DATA
    assert PROTOCOL_VERSION == 2


def test_handshake_in_one_chunk() -> None:
    conn = Connection()
    conn.receive_data(GREETING + b"+OK\r\n")
    assert conn.next_event() == Ready(protocol_version=2)
    assert conn.data_to_send() == b'HELLO {"v":2}\r\n'


@pytest.mark.parametrize(
    ("password", "salt", "iterations", "pwdhash"),
    [
        (
            "foobar",
            "55104dc76695721d",
            1545,
            "6d877f8e5544b1f2598768f817413ab8a357afffa924dedae99eb91472d4ec30",
        ),
        (
            "s3cret",
            "1f2e3d4c5b6a7988",
            4096,
            "e127e9669b12bd909b16492d0b0ba83006b5b15cabdb385f57b55fa93fe6a8ec",
        ),
        (
            "s3cret",
            "1f2e3d4c5b6a7988",
            1,
            "c8b50d16ee6412b3fd9b92a50690b49343c0ab6015e153e3d4a043db2dad9d1e",
        ),
    ],
)
def test_handshake_with_password(password: str, salt: str, iterations: int, pwdhash: str) -> None:
    client = ClientInfo(wid="9f2c41d0a7e3b6c5", hostname="build-7", pid=4242, labels=["py"])
    conn = Connection(client, password=password)
    conn.receive_data(b'+HI {"v":2,"i":%d,"s":"%s"}\r\n' % (iterations, salt.encode()))
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == (
        b'HELLO {"v":2,"hostname":"build-7","wid":"9f2c41d0a7e3b6c5","pid":4242,'
        b'"labels":["py"],"pwdhash":"' + pwdhash.encode() + b'"}\r\n'
    )
    conn.receive_data(b"+OK\r\n")
    assert conn.next_event() == Ready(protocol_version=2)
    assert conn.client is client


def test_salt_without_iterations_means_one_iteration() -> None:
    conn = Connection(password="s3cret")
    conn.receive_data(b'+HI {"v":2,"s":"1f2e3d4c5b6a7988"}\r\n')
    conn.next_event()
    hello = json.loads(conn.data_to_send()[len(b"HELLO ") :])
    assert hello["pwdhash"] == "c8b50d16ee6412b3fd9b92a50690b49343c0ab6015e153e3d4a043db2dad9d1e"


def test_no_pwdhash_without_a_salt_or_without_a_password() -> None:
    conn = Connection(password="s3cret")
    conn.receive_data(GREETING)
    conn.next_event()
    assert conn.data_to_send() == b'HELLO {"v":2}\r\n'
    conn = Connection()
    conn.receive_data(b'+HI {"v":2,"i":5,"s":"ab"}\r\n')
    conn.next_event()
    assert conn.data_to_send() == b'HELLO {"v":2}\r\n'


def test_hello_carries_the_client_info() -> None:
    client = ClientInfo(wid="w-1", hostname="h\u00e9", pid=0, labels=("a", "b"), username="bob")
    conn = Connection(client)
    conn.receive_data(GREETING)
    conn.next_event()
    assert conn.data_to_send() == (
        '{"v":2,"hostname":"h\u00e9","wid":"w-1","pid":0,"labels":["a","b"],"username":"bob"}'.join(
            ["HELLO ", "\r\n"]
        ).encode()
    )


@pytest.mark.parametrize("version", [1, 2, 3, 255])
def test_ready_reports_the_greeting_version(version: int) -> None:
    conn = Connection()
    conn.receive_data(b'+HI {"v":%d,"extra":[1]}\r\n+OK\r\n' % version)
    assert conn.next_event() == Ready(protocol_version=version)
    assert b'"v":2' in conn.data_to_send()  # we always speak version 2


def test_hello_rejected() -> None:
    conn = Connection(password="wrong")
    conn.receive_data(b'+HI {"v":2,"i":4000,"s":"ab12"}\r\n-ERR Invalid password\r\n')
    event = conn.next_event()
    assert isinstance(event, ServerError)
    assert isinstance(event.command, Hello)
    assert (event.code, event.message) == ("ERR", "Invalid password")
    assert conn.state is S.CLOSED
    assert conn.next_event() == ConnectionClosed(unanswered=())
    conn.receive_data(b"-ERR late\r\n")  # dropped once closed
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed(unanswered=())
    with pytest.raises(LocalProtocolError):
        conn.send(Info())


@pytest.mark.parametrize(
    "greeting",
    [
        b"+OK\r\n",
        b"+HELLO\r\n",
        b"+HI\r\n",
        b"+HI \r\n",
        b"+HI not json\r\n",
        b"+HI []\r\n",
        b'+HI {"v":2} trailing\r\n',
        b'+HI {"x":1}\r\n',
        b'+HI {"v":"2"}\r\n',
        b'+HI {"v":2.0}\r\n',
        b'+HI {"v":true}\r\n',
        b'+HI {"v":2,"i":"5","s":"ab"}\r\n',
        b'+HI {"v":2,"i":5,"s":5}\r\n',
        b"-ERR too many connections\r\n",
        b"$-1\r\n",
        b":2\r\n",
        encode_bulk(b'HI {"v":2}'),  # a greeting must be a simple string
    ],
)
def test_malformed_greeting(greeting: bytes) -> None:
    conn = Connection(password="pw")
    conn.receive_data(greeting)
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    assert conn.state is S.ERROR
    assert conn.data_to_send() == b""  # no HELLO went out


def test_a_greeting_asking_for_too_many_hash_rounds_is_refused() -> None:
    # A hostile server could make us hash for minutes; real ones ask for 4000 to 8095.
    conn = Connection(password="pw")
    conn.receive_data(b'+HI {"v":2,"i":100001,"s":"ab"}\r\n')
    with pytest.raises(RemoteProtocolError, match="100001 hash iterations"):
        conn.next_event()
    assert conn.data_to_send() == b""
    ok = Connection(password="pw")
    ok.receive_data(b'+HI {"v":2,"i":100000,"s":"ab"}\r\n')
    assert ok.next_event() is NEED_DATA
    assert b'"pwdhash":"' in ok.data_to_send()


@pytest.mark.parametrize("answer", [GREETING, b"+NO\r\n", b"$2\r\nOK\r\n", b":0\r\n", b"$-1\r\n"])
def test_unexpected_reply_to_hello(answer: bytes) -> None:
    conn = Connection()
    conn.receive_data(GREETING + answer)
    with pytest.raises(RemoteProtocolError, match="HELLO"):
        conn.next_event()
    assert conn.state is S.ERROR


def test_eof_before_the_greeting() -> None:
    conn = Connection()
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed(unanswered=())
    assert conn.state is S.CLOSED


def test_eof_after_the_greeting_leaves_hello_unanswered() -> None:
    conn = Connection()
    conn.receive_data(GREETING)
    conn.receive_data(b"")
    event = conn.next_event()
    assert isinstance(event, ConnectionClosed)
    assert [type(c) for c in event.unanswered] == [Hello]


def test_greeting_salt_that_is_not_encodable() -> None:
    conn = Connection(password="pw")
    conn.receive_data(b'+HI {"v":2,"i":1,"s":"\\ud800"}\r\n')
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


def test_password_with_undecodable_bytes_from_the_environment_hashes_those_bytes() -> None:
    # os.environ turns the byte 0xE9 (latin-1 é) into the lone surrogate U+DCE9.
    conn = Connection(password="caf\udce9")
    conn.receive_data(b'+HI {"v":2,"i":1,"s":"ab"}\r\n')
    assert conn.next_event() is NEED_DATA
    expected = hashlib.sha256(b"caf\xe9ab").hexdigest()
    assert f'"pwdhash":"{expected}"'.encode() in conn.data_to_send()


def test_password_that_is_not_encodable_is_refused_at_once() -> None:
    with pytest.raises(ArgumentError, match="password"):
        Connection(password="bad \ud800")
    with pytest.raises(ArgumentTypeError, match=r"^password must be a string or None, got bytes"):
        Connection(password=b"secret")  # type: ignore[arg-type]


def test_client_info_that_cannot_be_encoded_is_refused_when_built() -> None:
    with pytest.raises(LocalProtocolError, match="hostname"):
        ClientInfo(hostname="bad \ud800")
    with pytest.raises(LocalProtocolError, match="username"):
        ClientInfo(username=42)  # type: ignore[arg-type]


# -- every command and its reply -------------------------------------------------------------

PUSH = Push(job=JOB)
FETCH = Fetch(queues=["critical", "default"])
BEAT = Beat(wid="w1")
INFO = Info()
LATENCY = QueueLatency(queues=["critical", "default"])
PUSHB = PushBulk(jobs=[JOB])
BATCH_NEW = BatchNew(success=JOB)
BATCH_OPEN = BatchOpen(bid="b-1")
BATCH_STATUS = BatchStatus(bid="b-1")
TRACK_GET = TrackGet(jid=JID)

OK_COMMANDS = [
    PUSH,
    Ack(jid=JID),
    Fail(jid=JID, errtype="E", message="m"),
    Flush(),
    Mutate(operation="clear", target="dead"),
    QueuePause(queues="q"),
    QueueResume(queues="*"),
    QueueRemove(queues="q"),
    BatchCommit(bid="b-1"),
    TrackSet(jid=JID, percent=5),
]


#: One command of every kind of reply.
ALL_COMMANDS = [
    *OK_COMMANDS,
    FETCH,
    BEAT,
    INFO,
    LATENCY,
    PUSHB,
    BATCH_NEW,
    BATCH_OPEN,
    BATCH_STATUS,
    TRACK_GET,
]


@pytest.mark.parametrize("command", OK_COMMANDS, ids=lambda c: type(c).__name__)
def test_ok_replies(command: Command) -> None:
    assert exchange(command, b"+OK\r\n") == OK(command=command)


@pytest.mark.parametrize("command", OK_COMMANDS, ids=lambda c: type(c).__name__)
@pytest.mark.parametrize("bad", [b"+NOPE\r\n", b"$2\r\nOK\r\n", b"$-1\r\n", b":1\r\n"])
def test_anything_but_ok_breaks_an_ok_command(command: Command, bad: bytes) -> None:
    exchange_fails(command, bad)


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=lambda c: type(c).__name__)
@pytest.mark.parametrize(
    ("data", "code", "message"),
    [
        (b"-ERR unknown worker w1\r\n", "ERR", "unknown worker w1"),
        (b"-NOTUNIQUE job not unique\r\n", "NOTUNIQUE", "job not unique"),
        (b"-SHUTDOWN\r\n", "SHUTDOWN", ""),
    ],
)
def test_error_replies_are_events(command: Command, data: bytes, code: str, message: str) -> None:
    assert exchange(command, data) == ServerError(command=command, code=code, message=message)


SMALL_MAX = 64
#: Replies near ``+OK``, the one the connection takes without parsing, and a few others.
NEAR_OK = [
    b"+OK\r\n",
    b"+OKAY\r\n",
    b"+O\r\n",
    b"+ok\r\n",
    b"$5\r\n+OK\r\n\r\n",  # a bulk whose body is +OK
    b"$2\r\nOK\r\n",
    b"+{}\r\n",
    b"$-1\r\n",
    b"-ERR OK\r\n",
    b":1\r\n",
    encode_bulk(b"+OK\r\n" + b"x" * SMALL_MAX),  # too large: a FETCH skims it
]


class _ParsingEverything(ReplyParser):
    """A parser without the +OK shortcut: every reply goes through ``next_reply``."""

    __slots__ = ()

    def take(self, reply: bytes) -> bool:
        return False


def _outcome(conn: Connection, commands: list[Command], chunks: list[bytes]) -> list[object]:
    """The events, or the error, ``conn`` gives for ``chunks`` in reply to ``commands``."""
    conn.send(*commands)
    outcome: list[object] = []
    for chunk in chunks:
        if not chunk:
            continue  # b"" would mean the end of the stream
        conn.receive_data(chunk)
        try:
            outcome.extend(drain(conn))
        except RemoteProtocolError as error:
            return [*outcome, str(error), conn.state]
    return [*outcome, conn.state, conn.pending, conn.unread]


@given(data=st.data())
def test_the_ok_shortcut_gives_what_parsing_gives(data: st.DataObject) -> None:
    commands = data.draw(st.lists(st.sampled_from(ALL_COMMANDS), min_size=1, max_size=4))
    replies = data.draw(st.lists(st.sampled_from(NEAR_OK), min_size=1, max_size=5))
    chunks = data.draw(cuts(b"".join(replies)))
    parsing = ready_connection(max_reply_size=SMALL_MAX)
    parsing._parser = _ParsingEverything(max_reply_size=SMALL_MAX, skim=parsing._skim)
    taking = ready_connection(max_reply_size=SMALL_MAX)
    assert _outcome(taking, commands, chunks) == _outcome(parsing, commands, chunks)


def test_an_oversized_job_that_starts_like_ok_is_skimmed_not_taken() -> None:
    # The header first: the skim then stands at the body's first byte, + of +OK.
    body = b"+OK\r\n" + b"x" * SMALL_MAX
    conn = ready_connection(max_reply_size=SMALL_MAX)
    outcome = _outcome(conn, [FETCH, PUSH], [b"$%d\r\n" % len(body), body + b"\r\n+OK\r\n"])
    assert [type(event) for event in outcome[:2]] == [InvalidJobFetched, OK]
    assert outcome[2:] == [S.READY, (), 0]


def test_fetch_nothing() -> None:
    assert exchange(FETCH, b"$-1\r\n") == Fetched(command=FETCH, job=None)


def test_fetch_a_job() -> None:
    payload = (
        b'{"retry":25,"jid":"Yq3nW0vT5kLm8pQz","queue":"default","jobtype":"SendEmail",'
        b'"created_at":"2026-07-01T09:15:02.118Z","enqueued_at":"2026-07-01T09:15:02.120233Z",'
        b'"args":["alice@example.com",42]}'
    )
    event = exchange(FETCH, encode_bulk(payload))
    assert isinstance(event, Fetched)
    assert event.command is FETCH
    assert event.job is not None
    assert event.job == Job.from_wire(json.loads(payload))
    assert (event.job.jid, event.job.args, event.job.retry) == (
        "Yq3nW0vT5kLm8pQz",
        ["alice@example.com", 42],
        25,
    )


@pytest.mark.parametrize(
    ("payload", "jid", "reason"),
    [
        # Undecodable: the jid is read from the text, so the worker can still FAIL the job.
        (b'{"jid":"0123456789abcdef","jobtype":"A"', JID, "invalid JSON"),
        (b"\xff\xfe{}", None, "invalid JSON"),
        (b'{"jid":"0123456789abcdef","jobtype":"A","args":[]} x', JID, "invalid JSON"),
        (b'{"jobtype":"A","args":[{"jid":"0123456789abcdef"}]', None, "invalid JSON"),
        (b'{"jid":"short","jobtype":"A"', None, "invalid JSON"),
        (b"[1,2]", None, "object"),
        (b'"job"', None, "object"),
        (b'{"jid":"0123456789abcdef","args":[]}', JID, "jobtype"),
        (b'{"jobtype":"A","args":[]}', None, "jid"),
        (b'{"jid":"","jobtype":"A","args":[]}', None, "jid"),
        (b'{"jid":12345678,"jobtype":"A","args":[]}', None, "jid"),
        (b'{"jid":"0123456789abcdef","jobtype":"A","args":{}}', JID, "args"),
        (b'{"jid":"0123456789abcdef","jobtype":"A","args":[],"queue":"a b"}', JID, "queue"),
        (
            b'{"jid":"0123456789abcdef","jobtype":"A","args":[],"at":"2026-07-01T10:00:00"}',
            JID,
            "timezone",
        ),
        (b'{"jid":"0123456789abcdef","jobtype":"A","args":[],"failure":[]}', JID, "failure"),
        (
            b'{"jid":"0123456789abcdef","jobtype":"A","args":[],"reserve_for":90000}',
            JID,
            "reserve_for",
        ),
    ],
)
def test_fetch_a_job_we_cannot_build(payload: bytes, jid: str | None, reason: str) -> None:
    event = exchange(FETCH, encode_bulk(payload))
    assert isinstance(event, InvalidJobFetched)
    assert (event.command, event.payload, event.jid) == (FETCH, payload, jid)
    assert reason in event.reason


def _deep(shape: str, depth: int) -> bytes:
    if shape == "lists":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"{}" + b"}" * depth


@pytest.mark.parametrize("depth", [1_000, 5_000, 10_000, 100_000])
@pytest.mark.parametrize("shape", ["lists", "objects"])
@pytest.mark.parametrize("where", ["args", "custom"])
def test_fetch_of_a_job_nested_too_deeply_is_invalid_with_its_jid(
    depth: int, shape: str, where: str
) -> None:
    # Faktory 1.9.4 writes retry, custom, then jid... args last (the server takes 10,000
    # levels; json recurses and gives up near 1,000 on 3.11, 1,500 on 3.12, 10,000 on 3.13).
    # A "jid" decoy sits in the deep part.
    nested = b'[{"jid":"decoy-0001"},%s]' % _deep(shape, depth)
    custom, args = (nested, b"[]") if where == "custom" else (b"{}", nested)
    payload = b'{"retry":25,"custom":{"x":%s},"jid":"%s","queue":"q","jobtype":"T","args":%s}' % (
        custom,
        JID.encode(),
        args,
    )
    event = exchange(FETCH, encode_bulk(payload))
    try:
        json.loads(payload)
    except RecursionError:
        pass
    else:  # this Python's json takes this depth: the job is built as it is
        assert isinstance(event, Fetched)
        assert event.job is not None
        assert event.job.jid == JID
        assert depth < 100_000  # too deep for every Python we support
        return
    assert event == InvalidJobFetched(
        command=FETCH,
        payload=payload,
        jid=JID,
        reason="the job is nested too deeply to decode",
    )


def test_fetch_of_a_job_nested_too_deeply_without_a_usable_jid() -> None:
    # None, too short, not a string, a lone surrogate (FAIL's JSON cannot carry it)
    for jid in (b"", b'"short"', b"12345678", b'"\\ud800xxxxxxxx"'):
        members = b'"jid":%s,' % jid if jid else b""
        payload = b'{%s"jobtype":"T","args":%s}' % (members, _deep("lists", 100_000))
        event = exchange(FETCH, encode_bulk(payload))
        assert isinstance(event, InvalidJobFetched)
        assert (event.jid, event.reason) == (None, "the job is nested too deeply to decode")


def test_a_deep_value_in_a_job_that_decodes_is_quoted_short() -> None:
    # 100 levels decode; the error quoting the value must neither recurse nor be huge.
    payload = b'{"jid":"%s","jobtype":%s,"args":[]}' % (JID.encode(), _deep("lists", 100))
    event = exchange(FETCH, encode_bulk(payload))
    assert isinstance(event, InvalidJobFetched)
    assert event.jid == JID
    assert event.reason.startswith("jobtype must be a non-empty string, got [[[")
    assert len(event.reason) < 100


@pytest.mark.parametrize("custom", [0, 100_000])
def test_fetch_of_a_job_over_max_reply_size_is_invalid_with_its_jid(custom: int) -> None:
    payload = (
        b'{"retry":25,"custom":{"pad":"%s","jid":"decoy-0001"},"jid":"%s","jobtype":"T",'
        b'"args":["%s"]}' % (b"c" * custom, JID.encode(), b"a" * 200_000)
    )
    event = exchange(FETCH, encode_bulk(payload), max_reply_size=64 * 1024)
    assert event == InvalidJobFetched(
        command=FETCH,
        payload=payload[:1024],  # the first KiB, for a human to see
        jid=JID,
        reason=f"the job is {len(payload)} bytes, larger than max_reply_size 65536",
    )


@pytest.mark.parametrize(
    "payload",
    [
        b"x" * 100,  # not JSON
        b'{"jid":"short","jobtype":"T","args":["%s"]}' % (b"a" * 100),  # not a jid we can FAIL
        b'{"jid":' + b"[" * 100,
    ],
)
def test_fetch_of_a_job_over_max_reply_size_without_a_usable_jid(payload: bytes) -> None:
    event = exchange(FETCH, encode_bulk(payload), max_reply_size=16)
    assert isinstance(event, InvalidJobFetched)
    assert event.jid is None
    assert event.reason == f"the job is {len(payload)} bytes, larger than max_reply_size 16"


def test_only_a_fetch_reply_may_be_over_max_reply_size() -> None:
    big = encode_bulk(b"{}" + b" " * 20)
    # An ACK pipelined before a FETCH: its reply comes first, and is refused.
    conn = ready_connection(max_reply_size=16)
    conn.send(Ack(jid=JID), FETCH)
    conn.receive_data(big)
    with pytest.raises(RemoteProtocolError, match="exceeds 16 bytes"):
        conn.next_event()
    # Nothing was asked: refused too.
    conn = ready_connection(max_reply_size=16)
    conn.receive_data(big)
    with pytest.raises(RemoteProtocolError, match="exceeds 16 bytes"):
        conn.next_event()
    # Nor in the handshake.
    conn = Connection(max_reply_size=16)
    conn.receive_data(big)
    with pytest.raises(RemoteProtocolError, match="exceeds 16 bytes"):
        conn.next_event()


def test_fetch_with_whitespace_after_the_json_is_fine() -> None:
    event = exchange(FETCH, encode_bulk(JOB_BYTES + b" \r\n\t"))
    assert event == Fetched(command=FETCH, job=JOB)


def test_fetch_with_whitespace_before_the_json_is_fine() -> None:
    event = exchange(FETCH, encode_bulk(b" " + JOB_BYTES))
    assert event == Fetched(command=FETCH, job=JOB)


@pytest.mark.parametrize("bad", [b"+OK\r\n", b":1\r\n", b"+" + JOB_BYTES + b"\r\n"])
def test_fetch_reply_that_is_not_a_bulk_or_null(bad: bytes) -> None:
    exchange_fails(FETCH, bad)


@pytest.mark.parametrize(
    ("data", "errors"),
    [
        (b"$2\r\n{}\r\n", {}),
        (b"+{}\r\n", {}),
        (
            encode_bulk(b'{"bad-1":"jobs must have a reasonable jid parameter"}'),
            {"bad-1": "jobs must have a reasonable jid parameter"},
        ),
    ],
)
def test_bulk_pushed(data: bytes, errors: dict[str, str]) -> None:
    assert exchange(PUSHB, data) == BulkPushed(command=PUSHB, errors=errors)


@pytest.mark.parametrize(
    "bad", [b"$-1\r\n", b":0\r\n", encode_bulk(b"[]"), encode_bulk(b'{"j":1}'), encode_bulk(b"{")]
)
def test_bulk_pushed_malformed(bad: bytes) -> None:
    exchange_fails(PUSHB, bad)


@pytest.mark.parametrize(
    ("data", "state"),
    [
        (b"+OK\r\n", WorkerState.RUNNING),
        (b'$17\r\n{"state":"quiet"}\r\n', WorkerState.QUIET),
        (b'$21\r\n{"state":"terminate"}\r\n', WorkerState.TERMINATE),
        (b'+{"state":"quiet"}\r\n', WorkerState.QUIET),  # the spec's simple-string spelling
    ],
)
def test_beat_reply(data: bytes, state: WorkerState) -> None:
    assert exchange(BEAT, data) == BeatReply(command=BEAT, state=state)


@pytest.mark.parametrize(
    "bad",
    [
        encode_bulk(b'{"state":"sleepy"}'),
        encode_bulk(b'{"state":null}'),
        encode_bulk(b'{"state":["quiet"]}'),
        encode_bulk(b"{}"),
        encode_bulk(b'"quiet"'),
        b"+quiet\r\n",
        b"$-1\r\n",
    ],
)
def test_beat_reply_with_an_unknown_state(bad: bytes) -> None:
    exchange_fails(BEAT, bad)


def test_info_reply() -> None:
    info = {"server": {"faktory_version": "1.9.4"}, "faktory": {"queues": {"default": 2}}}
    data = encode_bulk(json.dumps(info).encode())
    assert exchange(INFO, data) == InfoReply(command=INFO, info=info)


@pytest.mark.parametrize("bad", [encode_bulk(b"[]"), encode_bulk(b"nope"), b"$-1\r\n", b":1\r\n"])
def test_info_reply_malformed(bad: bytes) -> None:
    exchange_fails(INFO, bad)


def test_latency_reply() -> None:
    event = exchange(LATENCY, encode_bulk(b'{"critical":0,"default":3.25}'))
    assert event == LatencyReply(command=LATENCY, latencies={"critical": 0.0, "default": 3.25})
    assert isinstance(event, LatencyReply)
    assert all(type(value) is float for value in event.latencies.values())


@pytest.mark.parametrize(
    "bad",
    [
        encode_bulk(b'{"q":"1"}'),
        encode_bulk(b'{"q":true}'),
        encode_bulk(b'{"q":null}'),
        encode_bulk(b"[0]"),
        b"$-1\r\n",
    ],
)
def test_latency_reply_malformed(bad: bytes) -> None:
    exchange_fails(LATENCY, bad)


def test_latency_reply_with_a_huge_integer() -> None:
    exchange_fails(LATENCY, encode_bulk(b'{"q":1' + b"0" * 400 + b"}"))


@pytest.mark.parametrize("number", [b"1e400", b"-1e400", b"Infinity"])
def test_fetched_job_with_an_infinite_failure_count(number: bytes) -> None:
    payload = b'{"jid":"0123456789abcdef","jobtype":"A","args":[],"failure":{"retry_count":%s}}'
    event = exchange(FETCH, encode_bulk(payload % number))
    assert isinstance(event, InvalidJobFetched)
    assert event.jid == JID


@pytest.mark.parametrize("command", [BATCH_NEW, BATCH_OPEN], ids=lambda c: type(c).__name__)
@pytest.mark.parametrize("data", [b"+b-42\r\n", b"$4\r\nb-42\r\n"])
def test_batch_id_from_simple_and_bulk_strings(command: Command, data: bytes) -> None:
    assert exchange(command, data) == BatchIdReply(command=command, bid="b-42")


@pytest.mark.parametrize(
    "bad", [b"+\r\n", b"$0\r\n\r\n", b"$2\r\n\xff\xfe\r\n", b"$-1\r\n", b":7\r\n"]
)
def test_batch_id_malformed(bad: bytes) -> None:
    exchange_fails(BATCH_NEW, bad)


@pytest.mark.parametrize("command", [BATCH_STATUS, TRACK_GET], ids=lambda c: type(c).__name__)
def test_status_reply(command: Command) -> None:
    status = {"bid": "b-1", "total": 3, "pending": 1, "complete_st": "", "success_st": "1"}
    data = encode_bulk(json.dumps(status).encode())
    assert exchange(command, data) == StatusReply(command=command, status=status)


@pytest.mark.parametrize("bad", [encode_bulk(b"[]"), b"$-1\r\n", b"+OK\r\n"])
def test_status_reply_malformed(bad: bytes) -> None:
    exchange_fails(TRACK_GET, bad)


# -- pipelining and misuse -------------------------------------------------------------------


def test_pipelined_ack_and_fetch() -> None:
    conn = ready_connection()
    ack, fetch = Ack(jid=JID), Fetch(queues="default")
    conn.send(ack, fetch)
    assert conn.data_to_send() == ack.encode() + fetch.encode()
    assert conn.pending == (ack, fetch)
    conn.receive_data(b"+OK\r\n")
    assert conn.next_event() == OK(command=ack)
    assert conn.state is S.AWAIT_REPLY
    assert conn.pending == (fetch,)
    assert conn.next_event() is NEED_DATA
    conn.receive_data(encode_bulk(JOB_BYTES))
    assert conn.next_event() == Fetched(command=fetch, job=JOB)
    assert conn.state is S.READY
    assert conn.pending == ()


def test_pipelined_replies_in_one_chunk_keep_their_order() -> None:
    conn = ready_connection()
    commands = [Push(job=JOB), Fetch(queues="q"), Info(), Beat(wid="w")]
    conn.send(*commands)
    conn.receive_data(b'+OK\r\n$-1\r\n-ERR boom\r\n$17\r\n{"state":"quiet"}\r\n')
    assert drain(conn) == [
        OK(command=commands[0]),
        Fetched(command=commands[1], job=None),
        ServerError(command=commands[2], code="ERR", message="boom"),
        BeatReply(command=commands[3], state=WorkerState.QUIET),
    ]


def _assert_unusable(conn: Connection) -> None:
    assert conn.state is S.ERROR
    with pytest.raises(LocalProtocolError, match="unusable"):
        conn.next_event()
    with pytest.raises(LocalProtocolError, match="unusable"):
        conn.send(Info())
    with pytest.raises(LocalProtocolError, match="unusable"):
        conn.send(End())
    assert conn.state is S.ERROR


def test_second_send_while_awaiting() -> None:
    conn = ready_connection()
    conn.send(Info())
    conn.data_to_send()
    with pytest.raises(LocalProtocolError):
        conn.send(Flush())
    assert conn.data_to_send() == b""  # nothing of the refused command was queued
    _assert_unusable(conn)
    with pytest.raises(LocalProtocolError):  # even the awaited reply is not taken any more
        conn.receive_data(b"$2\r\n{}\r\n")
    _assert_unusable(conn)


def test_the_unusable_error_chains_the_original() -> None:
    conn = ready_connection()
    conn.receive_data(b"*1\r\n")
    with pytest.raises(RemoteProtocolError) as first:
        conn.next_event()
    with pytest.raises(LocalProtocolError) as later:
        conn.next_event()
    assert later.value.__cause__ is first.value


def test_end_alone_closes() -> None:
    conn = ready_connection()
    conn.send(End())
    assert conn.data_to_send() == b"END\r\n"
    assert conn.state is S.CLOSED
    assert conn.pending == ()
    assert conn.next_event() == ConnectionClosed(unanswered=())
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed(unanswered=())
    with pytest.raises(LocalProtocolError):
        conn.send(Info())
    assert conn.state is S.ERROR


@pytest.mark.parametrize(
    "commands",
    [(Ack(jid=JID), End()), (End(), Info()), (End(), End())],
    ids=["before", "after", "twice"],
)
def test_end_with_another_command(commands: tuple[Command, ...]) -> None:
    conn = ready_connection()
    with pytest.raises(ArgumentError, match="END"):
        conn.send(*commands)
    assert conn.data_to_send() == b""
    _assert_unusable(conn)


def test_end_while_awaiting_replies() -> None:
    conn = ready_connection()
    conn.send(Info())
    with pytest.raises(LocalProtocolError):
        conn.send(End())
    assert conn.state is S.ERROR


@pytest.mark.parametrize(
    "thing",
    [Hello(payload={"v": 2}), "INFO", b"INFO\r\n", JOB, None, Info],
    ids=["hello", "str", "bytes", "job", "none", "class"],
)
def test_sending_what_is_not_a_command(thing: object) -> None:
    conn = ready_connection()
    with pytest.raises(ArgumentTypeError, match="not a command"):
        conn.send(Info(), thing)  # type: ignore[arg-type]
    assert conn.data_to_send() == b""
    _assert_unusable(conn)


def test_send_nothing() -> None:
    conn = ready_connection()
    with pytest.raises(ArgumentError, match="at least one"):
        conn.send()
    _assert_unusable(conn)


@pytest.mark.parametrize("when", ["greeting", "hello"])
def test_send_before_ready(when: str) -> None:
    conn = Connection()
    if when == "hello":
        conn.receive_data(GREETING)
        conn.next_event()
    with pytest.raises(LocalProtocolError) as raised:
        conn.send(Info())
    # Misuse of state, not a bad argument: LocalProtocolError itself.
    assert not isinstance(raised.value, (ArgumentError, ArgumentTypeError))
    assert conn.state is S.ERROR


# -- closure ---------------------------------------------------------------------------------


def test_eof_while_awaiting() -> None:
    conn = ready_connection()
    fetch = Fetch(queues="q")
    conn.send(fetch)
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed(unanswered=(fetch,))
    assert conn.state is S.CLOSED
    assert conn.pending == ()
    assert conn.next_event() == ConnectionClosed(unanswered=(fetch,))


def test_eof_after_some_pipelined_replies() -> None:
    conn = ready_connection()
    ack, fetch, info = Ack(jid=JID), Fetch(queues="q"), Info()
    conn.send(ack, fetch, info)
    conn.receive_data(b'+OK\r\n$10\r\n{"jid":')  # then the server dies mid-reply
    conn.receive_data(b"")
    assert drain(conn) == [OK(command=ack), ConnectionClosed(unanswered=(fetch, info))]


def test_eof_in_ready_state() -> None:
    conn = ready_connection()
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed(unanswered=())


def test_replies_before_eof_are_still_delivered() -> None:
    conn = ready_connection()
    conn.send(Info())
    conn.receive_data(b"$2\r\n{}\r\n")
    conn.receive_data(b"")
    assert drain(conn) == [InfoReply(command=Info(), info={}), ConnectionClosed(unanswered=())]


def test_data_after_eof() -> None:
    conn = ready_connection()
    conn.receive_data(b"")
    with pytest.raises(LocalProtocolError, match="after end of file"):
        conn.receive_data(b"+OK\r\n")
    assert conn.state is S.ERROR


def test_unsolicited_error_in_ready() -> None:
    conn = ready_connection()
    conn.receive_data(b"-ERR too many connections: 2000\r\n")
    assert conn.next_event() == ServerError(
        command=None, code="ERR", message="too many connections: 2000"
    )
    assert conn.state is S.READY
    conn.send(Info())  # still usable
    conn.receive_data(b"$2\r\n{}\r\n")
    assert conn.next_event() == InfoReply(command=Info(), info={})


def test_error_after_ok_pairs_with_the_first_command() -> None:
    # Over the connection cap the server says +OK, then the error, then closes: a command
    # sent before that error was read receives it as its reply.
    conn = Connection()
    conn.receive_data(GREETING + b"+OK\r\n")
    assert conn.next_event() == Ready(protocol_version=2)
    push = Push(job=JOB)
    conn.send(push)
    conn.receive_data(b"-ERR too many connections: 2000\r\n")
    conn.receive_data(b"")
    assert drain(conn) == [
        ServerError(command=push, code="ERR", message="too many connections: 2000"),
        ConnectionClosed(unanswered=()),
    ]


@pytest.mark.parametrize("data", [b"+OK\r\n", b"$-1\r\n", b":1\r\n", GREETING])
def test_unsolicited_reply_in_ready(data: bytes) -> None:
    conn = ready_connection()
    conn.receive_data(data)
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    _assert_unusable(conn)


def test_max_reply_size_reaches_the_parser() -> None:
    conn = ready_connection(max_reply_size=16)
    conn.send(Info())
    conn.receive_data(b"$17\r\n")
    with pytest.raises(RemoteProtocolError, match="exceeds 16"):
        conn.next_event()


def test_repr_and_properties() -> None:
    conn = ready_connection()
    conn.send(Info(), Flush())
    assert repr(conn) == "<Connection AWAIT_REPLY pending=2>"
    assert conn.client == ClientInfo()
    assert ClientInfo().hello_payload() == {"v": 2}


# -- hypothesis: chunking never changes the events -------------------------------------------

finite_floats = st.floats(allow_nan=False, allow_infinity=False, width=64)


def _ok(command: Command) -> tuple[Command, bytes, Event]:
    return command, b"+OK\r\n", OK(command=command)


def _fetch(job: Job | None) -> tuple[Command, bytes, Event]:
    command = Fetch(queues="default")
    if job is None:
        return command, b"$-1\r\n", Fetched(command=command, job=None)
    wire = json_roundtrip(job.to_wire())
    return (
        command,
        encode_bulk(json.dumps(wire).encode()),
        Fetched(command=command, job=Job.from_wire(wire)),
    )


def _beat(state: WorkerState) -> tuple[Command, bytes, Event]:
    command = Beat(wid="w1")
    data = (
        b"+OK\r\n"
        if state is WorkerState.RUNNING
        else encode_bulk(json.dumps({"state": state.value}).encode())
    )
    return command, data, BeatReply(command=command, state=state)


def _latency(latencies: dict[str, float]) -> tuple[Command, bytes, Event]:
    command = QueueLatency(queues="q")
    data = encode_bulk(json.dumps(latencies).encode())
    return command, data, LatencyReply(command=command, latencies=latencies)


def _info(info: dict[str, Any]) -> tuple[Command, bytes, Event]:
    data = encode_bulk(json.dumps(info).encode())
    return Info(), data, InfoReply(command=Info(), info=json.loads(data.split(b"\r\n", 1)[1][:-2]))


def _error(command: Command, code: str, message: str) -> tuple[Command, bytes, Event]:
    return (
        command,
        encode_error(code, message),
        ServerError(command=command, code=code, message=message),
    )


exchanges = st.one_of(
    st.builds(lambda job: _ok(Push(job=job)), jobs),
    st.builds(lambda jid: _ok(Ack(jid=jid)), st.just(JID)),
    st.builds(_fetch, st.none() | jobs),
    st.builds(_beat, st.sampled_from(WorkerState)),
    st.builds(_latency, st.dictionaries(st.text(max_size=5), finite_floats, max_size=3)),
    st.builds(_info, st.dictionaries(st.text(max_size=5), json_values, max_size=3)),
    st.builds(
        _error, st.sampled_from([Info(), Fetch(queues="q"), Push(job=JOB)]), error_code, line_text
    ),
)


def _run(chunks: list[bytes], commands: list[Command]) -> list[Event]:
    """Play the server's bytes in these chunks; send ``commands`` as soon as Ready arrives."""
    conn = Connection()
    events: list[Event] = []
    for chunk in [*(c for c in chunks if c), b""]:  # b"" is the EOF, only at the end
        conn.receive_data(chunk)
        while not isinstance(event := conn.next_event(), type(NEED_DATA)):
            events.append(event)
            if isinstance(event, ConnectionClosed):
                break
            if isinstance(event, Ready) and commands:
                conn.send(*commands)
    return events


@settings(max_examples=60, deadline=None)
@given(st.lists(exchanges, max_size=6), st.data())
def test_same_events_whole_byte_by_byte_and_cut(
    items: list[tuple[Command, bytes, Event]], data: st.DataObject
) -> None:
    commands = [command for command, _, _ in items]
    server = GREETING + b"+OK\r\n" + b"".join(raw for _, raw, _ in items)
    expected = [
        Ready(protocol_version=2),
        *(event for _, _, event in items),
        ConnectionClosed(unanswered=()),
    ]
    assert _run([server], commands) == expected
    assert _run(byte_by_byte(server), commands) == expected
    assert _run(data.draw(cuts(server)), commands) == expected


# -- hypothesis: hostile servers -------------------------------------------------------------

job_like = st.fixed_dictionaries(
    {},
    optional={
        key: st.one_of(json_values, strategy)
        for key, strategy in {
            "jid": st.just(JID) | st.text(max_size=10),
            "jobtype": st.text(max_size=5),
            "args": st.lists(json_values, max_size=2),
            "queue": st.sampled_from(["default", "a b", "", "q"]),
            "retry": st.integers(-2, 30),
            "reserve_for": st.integers(0, 90_000),
            "at": st.sampled_from(["", "2026-07-01T10:00:00Z", "2026-07-01T10:00:00", "x"]),
            "backtrace": st.integers(0, 5),
            "custom": st.dictionaries(st.text(max_size=3), json_values, max_size=2),
            "created_at": st.text(max_size=5),
            "enqueued_at": st.text(max_size=5),
            "failure": st.fixed_dictionaries(
                {},
                optional={
                    "retry_count": json_values,
                    "remaining": json_values,
                    "backtrace": json_values,
                    "message": json_values,
                },
            ),
        }.items()
    },
)
json_bodies = st.one_of(
    json_values,
    job_like,
    st.fixed_dictionaries({"state": json_values | st.sampled_from(["quiet", "terminate"])}),
    st.dictionaries(st.text(max_size=4), json_values, max_size=3),
).map(lambda value: json.dumps(value).encode())
hostile_server = st.one_of(
    st.binary(max_size=80),
    st.lists(
        st.one_of(
            reply.map(lambda item: item[0]),
            json_bodies.map(encode_bulk),
            json_bodies.map(lambda body: b"+" + body + b"\r\n"),
            st.binary(max_size=6),
        ),
        max_size=6,
    ).map(b"".join),
)
pending_commands = st.lists(
    st.sampled_from(
        [
            FETCH,
            INFO,
            BEAT,
            LATENCY,
            PUSHB,
            BATCH_NEW,
            BATCH_OPEN,
            BATCH_STATUS,
            TRACK_GET,
            PUSH,
            Ack(jid=JID),
        ]
    ),
    max_size=4,
)


def _play(conn: Connection, chunks: list[bytes]) -> RemoteProtocolError | None:
    """Feed the chunks, draining events; the RemoteProtocolError raised, if any."""
    try:
        for chunk in chunks:
            conn.receive_data(chunk)
            for event in drain(conn):
                assert isinstance(event, Event)
    except RemoteProtocolError as error:
        return error
    return None


@settings(max_examples=400, deadline=None)
@given(pending_commands, hostile_server, st.booleans(), st.data())
def test_hostile_server_only_causes_remote_protocol_errors(
    commands: list[Command], server: bytes, eof: bool, data: st.DataObject
) -> None:
    # Any exception other than RemoteProtocolError escapes _play() and fails the test.
    conn = ready_connection()
    if commands:
        conn.send(*commands)
    chunks = [chunk for chunk in data.draw(cuts(server)) if chunk] + ([b""] if eof else [])
    error = _play(conn, chunks)
    if error is not None:
        assert conn.state is S.ERROR
        with pytest.raises(LocalProtocolError) as again:
            conn.next_event()
        assert again.value.__cause__ is error
        return
    # No error: every event was valid protocol and the state is consistent.
    assert conn.state in (S.READY, S.AWAIT_REPLY, S.CLOSED)
    assert (conn.state is S.AWAIT_REPLY) == bool(conn.pending)
    assert conn.next_event() is NEED_DATA or conn.state is S.CLOSED
