"""Hypothesis strategies and small helpers shared by the core tests (no I/O anywhere).

The reply strategies are the public ones of faktory_core.testing.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from faktory_core import NEED_DATA, Connection, Event, Failure, Job, ReplyParser, testing
from faktory_core._job import MAX_RESERVE_FOR, MIN_RESERVE_FOR
from faktory_core._resp import NeedData, Reply
from faktory_core.events import ConnectionClosed, Ready

# -- RESP replies ----------------------------------------------------------------------------

#: Text that fits on one reply line: any Unicode scalar value except CR and LF.
line_text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=24)
#: An error code: one word, no white space at all.
error_code = st.text(
    st.characters(codec="utf-8", exclude_characters="\r\n ", exclude_categories=["Zs", "Cc"]),
    min_size=1,
    max_size=10,
)


def encode_error(code: str, message: str) -> bytes:
    return b"-" + f"{code} {message}".encode() + b"\r\n"


def encode_bulk(body: bytes | None) -> bytes:
    if body is None:
        return b"$-1\r\n"
    return b"$%d\r\n%s\r\n" % (len(body), body)


#: One valid reply: (its bytes, what ReplyParser must return for it).
reply = testing.replies()
#: A stream of valid replies: (all the bytes, the replies in order).
reply_stream = testing.reply_streams()


@st.composite
def cuts(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` split at hypothesis-chosen points (empty chunks included sometimes)."""
    points = draw(st.lists(st.integers(0, len(data)), max_size=12))
    bounds = [0, *sorted(points), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def drain_parser(parser: ReplyParser) -> list[Reply]:
    replies: list[Reply] = []
    while True:
        item = parser.next_reply()
        if item is NEED_DATA:
            return replies
        replies.append(item)


def parse_chunks(chunks: Iterable[bytes], **kwargs: Any) -> list[Reply]:
    parser = ReplyParser(**kwargs)
    replies: list[Reply] = []
    for chunk in chunks:
        parser.feed(chunk)
        replies += drain_parser(parser)
    assert parser.buffered == 0
    return replies


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


# -- connections -----------------------------------------------------------------------------

GREETING = b'+HI {"v":2}\r\n'


def drain(conn: Connection) -> list[Event]:
    """Every event available now (stops at NEED_DATA, and after ConnectionClosed)."""
    events: list[Event] = []
    while True:
        event = conn.next_event()
        if isinstance(event, NeedData):
            return events
        events.append(event)
        if isinstance(event, ConnectionClosed):
            return events


def ready_connection(**kwargs: Any) -> Connection:
    """A connection past its handshake, with the HELLO already taken out of its buffer."""
    conn = Connection(**kwargs)
    conn.receive_data(GREETING + b"+OK\r\n")
    assert conn.next_event() == Ready(protocol_version=2)
    assert conn.data_to_send() == b'HELLO {"v":2}\r\n'
    return conn


# -- jobs ------------------------------------------------------------------------------------

#: JSON values that survive a dump/load round trip unchanged (finite floats, bounded ints).
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
    ),
    max_leaves=12,
)

queue_names = st.text(
    st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"),
    min_size=1,
    max_size=16,
)
# A jid of at least 8 bytes: 8+ ASCII characters, or fewer multi-byte ones.
jids = st.one_of(
    st.text(min_size=8, max_size=24),
    st.text(st.characters(codec="utf-8", min_codepoint=0x800), min_size=3, max_size=8),
)
words = st.text(
    st.characters(codec="utf-8", exclude_categories=["Zs", "Zl", "Zp", "Cc"]),
    min_size=1,
    max_size=16,
).filter(lambda s: not any(c.isspace() for c in s))

aware_datetimes = (
    st.builds(
        lambda moment, minutes: moment.replace(tzinfo=timezone(timedelta(minutes=minutes))),
        st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2999, 12, 31)),
        st.integers(min_value=-23 * 60, max_value=23 * 60),
    )
    | st.builds(
        # An offset with seconds (a historical zone's LMT, say): Job normalises it to UTC.
        lambda moment, seconds: moment.replace(tzinfo=timezone(timedelta(seconds=seconds))),
        st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2999, 12, 31)),
        st.integers(min_value=-23 * 3600, max_value=23 * 3600),
    )
    | st.datetimes(
        min_value=datetime(1971, 1, 1), max_value=datetime(2999, 12, 31), timezones=st.just(UTC)
    )
)

failures = st.builds(
    Failure,
    retry_count=st.integers(0, 100),
    remaining=st.none() | st.integers(-1, 100),
    failed_at=st.none() | st.text(max_size=30),
    next_at=st.none() | st.text(max_size=30),
    errtype=st.none() | st.text(max_size=30),
    message=st.none() | st.text(max_size=30),
    backtrace=st.lists(st.text(max_size=20), max_size=4).map(tuple),
)

jobs = st.builds(
    Job,
    jid=jids,
    jobtype=st.text(min_size=1, max_size=16),
    args=st.lists(json_values, max_size=4),
    queue=queue_names,
    retry=st.none() | st.integers(-1, 100),
    reserve_for=st.none() | st.integers(MIN_RESERVE_FOR, MAX_RESERVE_FOR),
    at=st.none() | aware_datetimes,
    backtrace=st.none() | st.integers(0, 100),
    custom=st.none() | st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    created_at=st.none() | st.text(max_size=30),
    failure=st.none() | failures,
)


def json_roundtrip(value: Any) -> Any:
    return json.loads(json.dumps(value, allow_nan=False))
