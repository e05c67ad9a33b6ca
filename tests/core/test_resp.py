"""ReplyParser, command_line and dump_json: the RESP subset fed whole, in pieces and as garbage."""

from __future__ import annotations

import json
import math
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faktory_core import (
    NEED_DATA,
    ArgumentError,
    ArgumentTypeError,
    LocalProtocolError,
    RemoteProtocolError,
    ReplyParser,
    _resp,
)
from faktory_core._resp import (
    DEFAULT_MAX_REPLY_SIZE,
    ErrorReply,
    OversizedBulk,
    command_line,
    dump_json,
    encode_json,
)

from .strategies import (
    byte_by_byte,
    cuts,
    drain_parser,
    encode_bulk,
    parse_chunks,
    reply,
    reply_stream,
)

# -- valid streams ---------------------------------------------------------------------------


@settings(deadline=None)
@given(reply_stream)
def test_whole_and_byte_by_byte_give_the_same_replies(stream: tuple[bytes, list[object]]) -> None:
    data, expected = stream
    assert parse_chunks([data]) == expected
    assert parse_chunks(byte_by_byte(data)) == expected


@settings(deadline=None)
@given(st.data(), reply_stream)
def test_any_cut_points_give_the_same_replies(
    data: st.DataObject, stream: tuple[bytes, list[object]]
) -> None:
    raw, expected = stream
    assert parse_chunks(data.draw(cuts(raw))) == expected


@settings(deadline=None)
@given(st.data(), reply_stream, reply)
def test_trailing_partial_reply_needs_data_then_completes(
    data: st.DataObject, stream: tuple[bytes, list[object]], last: tuple[bytes, object]
) -> None:
    raw, expected = stream
    last_bytes, last_value = last
    split = data.draw(st.integers(1, len(last_bytes) - 1))
    parser = ReplyParser()
    parser.feed(raw + last_bytes[:split])
    assert drain_parser(parser) == expected
    assert parser.next_reply() is NEED_DATA
    assert parser.buffered == split
    parser.feed(last_bytes[split:])
    assert parser.next_reply() == last_value
    assert parser.next_reply() is NEED_DATA
    assert parser.buffered == 0


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"+OK\r\n", "OK"),
        (b"+\r\n", ""),
        ("+h\u00e9llo w\u00f6rld\r\n".encode(), "h\u00e9llo w\u00f6rld"),
        (b"+a\rb\r\n", "a\rb"),
        (b"-ERR Invalid password\r\n", ErrorReply(code="ERR", message="Invalid password")),
        (b"-NOTUNIQUE job not unique\r\n", ErrorReply(code="NOTUNIQUE", message="job not unique")),
        (b"-ERR\r\n", ErrorReply(code="ERR", message="")),
        (b"$0\r\n\r\n", b""),
        (b"$4\r\n\r\n\r\n\r\n", b"\r\n\r\n"),
        (b"$-1\r\n", None),
        (b":0\r\n", 0),
        (b":-42\r\n", -42),
        (b":99999999999999999999\r\n", 10**20 - 1),
        (b":-99999999999999999999\r\n", -(10**20) + 1),
    ],
)
def test_single_reply(data: bytes, expected: object) -> None:
    parser = ReplyParser()
    parser.feed(data)
    assert parser.next_reply() == expected
    assert type(parser.next_reply()) is type(NEED_DATA)
    assert parser.buffered == 0


def test_reply_types_are_distinct() -> None:
    # "+1" is the text "1", ":1" the integer 1, "$1 1" the bytes b"1".
    assert parse_chunks([b"+1\r\n:1\r\n$1\r\n1\r\n"]) == ["1", 1, b"1"]
    assert [type(r) for r in parse_chunks([b"+1\r\n:1\r\n$1\r\n1\r\n"])] == [str, int, bytes]


def test_empty_parser_needs_data() -> None:
    parser = ReplyParser()
    assert parser.next_reply() is NEED_DATA
    parser.feed(b"")
    assert parser.next_reply() is NEED_DATA
    assert parser.buffered == 0
    assert repr(NEED_DATA) == "NEED_DATA"


def test_buffered_counts_unreturned_bytes() -> None:
    parser = ReplyParser()
    parser.feed(b"+OK\r\n$5\r\nab")
    assert parser.buffered == 11
    assert parser.next_reply() == "OK"
    assert parser.buffered == 6
    assert parser.next_reply() is NEED_DATA
    assert parser.buffered == 6  # the bulk header stays counted until its body arrives
    parser.feed(b"cde\r\n:1")
    assert parser.buffered == 13
    assert parser.next_reply() == b"abcde"
    assert parser.buffered == 2
    assert parser.next_reply() is NEED_DATA
    parser.feed(b"\r\n")
    assert parser.next_reply() == 1
    assert parser.buffered == 0


def test_bulk_header_split_before_its_lf() -> None:
    parser = ReplyParser()
    parser.feed(b"$3\r")
    assert parser.next_reply() is NEED_DATA
    parser.feed(b"\nab")
    assert parser.next_reply() is NEED_DATA
    parser.feed(b"c\r")
    assert parser.next_reply() is NEED_DATA
    parser.feed(b"\n")
    assert parser.next_reply() == b"abc"


# -- compaction ------------------------------------------------------------------------------


def test_many_replies_past_the_compaction_threshold() -> None:
    # 30,000 replies (~185 KiB) in one buffer: consumed bytes are dropped every 64 KiB.
    items = [(b"+OK\r\n", "OK"), (encode_bulk(b"x\r\ny"), b"x\r\ny"), (b":7\r\n", 7)] * 10_000
    data = b"".join(raw for raw, _ in items)
    assert len(data) > 2 * 64 * 1024
    expected = [value for _, value in items]
    parser = ReplyParser()
    parser.feed(data)
    replies = []
    for remaining in range(len(items), 0, -1):
        replies.append(parser.next_reply())
        if remaining % 5000 == 0:
            assert parser.buffered == sum(len(raw) for raw, _ in items[len(replies) :])
    assert replies == expected
    assert parser.next_reply() is NEED_DATA
    assert parser.buffered == 0


def test_compaction_with_a_bulk_pending_across_feeds() -> None:
    # A bulk header parsed at an offset past 64 KiB, its body arriving in later feeds.
    prefix = b"+OK\r\n" * 20_000
    body = bytes(range(256)) * 40
    bulk = encode_bulk(body)
    parser = ReplyParser()
    parser.feed(prefix + bulk[:20] + b"")
    for _ in range(20_000):
        assert parser.next_reply() == "OK"
    assert parser.next_reply() is NEED_DATA
    assert parser.buffered == 20
    for start in range(20, len(bulk), 997):
        assert parser.next_reply() is NEED_DATA
        parser.feed(bulk[start : start + 997])
    assert parser.next_reply() == body
    assert parser.buffered == 0
    # The parser is still in step afterwards.
    parser.feed(b"+after\r\n")
    assert parser.next_reply() == "after"


@settings(max_examples=10, deadline=None)
@given(st.data(), reply_stream)
def test_compaction_at_random_cut_points(
    data: st.DataObject, stream: tuple[bytes, list[object]]
) -> None:
    raw, expected = stream
    big = encode_bulk(b"z" * 70_000)
    prefix = b"+OK\r\n" * 15_000
    whole = prefix + raw + big + raw
    replies = parse_chunks(data.draw(cuts(whole)))
    assert replies == ["OK"] * 15_000 + expected + [b"z" * 70_000] + expected


# -- malformed input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"*1\r\n",  # arrays are never sent
        b"OK\r\n",  # no type byte
        b"\r\n",  # an empty line
        b"\n",  # a bare LF at the start
        b"+OK\n",  # LF without CR
        b"$3\r\nabcd\r\n",  # bulk body longer than declared
        b"$3\r\nab\r\n\r\n",  # bulk body shorter than declared
        b"$x\r\n",
        b"$\r\n",
        b"$-\r\n",
        b"$+3\r\n",
        b"$ 3\r\n",
        b"$-2\r\n",  # negative lengths other than -1
        b"$3.0\r\n",
        b":\r\n",
        b":-\r\n",
        b":1e3\r\n",
        b":\xd9\xa3\r\n",  # an Arabic-Indic digit: isdigit() in str, not in bytes
        b"+\xff\xfe\r\n",  # not UTF-8
        b"-\xc3\r\n",
    ],
)
def test_malformed_reply_raises_remote_protocol_error(data: bytes) -> None:
    parser = ReplyParser()
    parser.feed(data)
    with pytest.raises(RemoteProtocolError):
        parser.next_reply()


def test_a_broken_parser_keeps_raising_the_same_error() -> None:
    parser = ReplyParser()
    parser.feed(b"+OK\r\n*2\r\n")
    assert parser.next_reply() == "OK"
    with pytest.raises(RemoteProtocolError, match="type byte") as first:
        parser.next_reply()
    parser.feed(b"+OK\r\n")
    for _ in range(2):
        with pytest.raises(RemoteProtocolError) as again:
            parser.next_reply()
        assert again.value is first.value


@pytest.mark.parametrize(
    "data",
    [
        b"$" + b"9" * 10_000 + b"\r\n",
        b":" + b"1" * 10_000 + b"\r\n",
        b":-" + b"1" * 5_000 + b"\r\n",
        b"$" + b"0" * 21 + b"\r\n",  # 21 digits, even though the value is small
        b":" + b"1" * 21 + b"\r\n",
    ],
)
def test_huge_digit_runs_raise_remote_protocol_error(data: bytes) -> None:
    # int() would raise ValueError past 4300 digits; the parser must refuse first.
    parser = ReplyParser()
    parser.feed(data)
    with pytest.raises(RemoteProtocolError, match="not a number"):
        parser.next_reply()


def test_twenty_digit_numbers_are_accepted() -> None:
    parser = ReplyParser()
    parser.feed(b":" + b"1" * 20 + b"\r\n$" + b"0" * 19 + b"3\r\nabc\r\n")
    assert parser.next_reply() == int("1" * 20)
    assert parser.next_reply() == b"abc"


def _outcome(parser: ReplyParser) -> tuple[list[object], RemoteProtocolError | None]:
    replies: list[object] = []
    while True:
        try:
            item = parser.next_reply()
        except RemoteProtocolError as error:
            return replies, error
        if item is NEED_DATA:
            return replies, None
        assert item is None or isinstance(item, str | bytes | int | ErrorReply)
        replies.append(item)


def _assert_keeps_raising(parser: ReplyParser, error: RemoteProtocolError) -> None:
    with pytest.raises(RemoteProtocolError) as again:
        parser.next_reply()
    assert again.value is error
    parser.feed(b"+OK\r\n")
    with pytest.raises(RemoteProtocolError):
        parser.next_reply()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.data())
def test_arbitrary_bytes_only_give_replies_or_remote_errors(
    garbage: bytes, data: st.DataObject
) -> None:
    # Any other exception type escaping next_reply() fails this test.
    parser = ReplyParser(max_reply_size=data.draw(st.sampled_from([16, 32, 1024])))
    error = None
    for chunk in data.draw(cuts(garbage)):
        parser.feed(chunk)
        _, error = _outcome(parser)
        if error is not None:
            break
    if error is not None:
        _assert_keeps_raising(parser, error)


@settings(max_examples=200, deadline=None)
@given(reply_stream, st.binary(min_size=1, max_size=64), st.data())
def test_garbage_after_a_valid_prefix(
    stream: tuple[bytes, list[object]], garbage: bytes, data: st.DataObject
) -> None:
    raw, expected = stream
    parser = ReplyParser()
    replies: list[object] = []
    error = None
    for chunk in data.draw(cuts(raw + garbage)):
        parser.feed(chunk)
        got, error = _outcome(parser)
        replies += got
        if error is not None:
            break
    assert replies[: len(expected)] == expected
    if error is not None:
        assert len(replies) >= len(expected)  # the valid prefix is never rejected
        _assert_keeps_raising(parser, error)


# -- size limits -----------------------------------------------------------------------------


def test_max_reply_size_must_be_sensible() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        ReplyParser(max_reply_size=15)
    ReplyParser(max_reply_size=16)
    assert DEFAULT_MAX_REPLY_SIZE == 16 * 1024 * 1024


def test_long_line_without_lf_is_refused_once_past_the_limit() -> None:
    parser = ReplyParser(max_reply_size=16)
    parser.feed(b"+" + b"a" * 15)  # 16 bytes: still acceptable
    assert parser.next_reply() is NEED_DATA
    parser.feed(b"a")  # 17 bytes without a line end
    with pytest.raises(RemoteProtocolError, match="longer than 16"):
        parser.next_reply()


def test_long_complete_line_is_refused() -> None:
    ok = ReplyParser(max_reply_size=16)
    ok.feed(b"+" + b"a" * 14 + b"\r\n")  # 16 bytes before the LF
    assert ok.next_reply() == "a" * 14
    parser = ReplyParser(max_reply_size=16)
    parser.feed(b"+" + b"a" * 15 + b"\r\n")
    with pytest.raises(RemoteProtocolError, match="longer than 16"):
        parser.next_reply()


def test_long_line_after_earlier_replies_is_measured_from_its_start() -> None:
    parser = ReplyParser(max_reply_size=16)
    parser.feed(b"+OK\r\n" * 10 + b"-" + b"e" * 15)
    for _ in range(10):
        assert parser.next_reply() == "OK"
    assert parser.next_reply() is NEED_DATA
    assert parser.buffered == 16
    parser.feed(b"e")
    with pytest.raises(RemoteProtocolError):
        parser.next_reply()


def test_bulk_header_declaring_too_much_is_refused_before_its_body() -> None:
    parser = ReplyParser(max_reply_size=16)
    parser.feed(b"$17\r\n")
    with pytest.raises(RemoteProtocolError, match="exceeds 16"):
        parser.next_reply()
    parser = ReplyParser()
    parser.feed(b"$%d\r\n" % (DEFAULT_MAX_REPLY_SIZE + 1))
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        parser.next_reply()


def test_bulk_of_exactly_the_maximum_is_accepted() -> None:
    parser = ReplyParser(max_reply_size=16)
    parser.feed(encode_bulk(b"b" * 16))
    assert parser.next_reply() == b"b" * 16


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from([16, 20, 64]),
    st.one_of(
        st.binary(max_size=200).map(lambda b: b"+" + b.replace(b"\n", b"")),
        st.builds(
            lambda n, cr: b"$%d\r\n" % n + b"y" * n + (b"\r" if cr else b""),
            st.integers(0, 300),
            st.booleans(),
        ),
    ),
    st.data(),
)
def test_never_holds_more_than_the_maximum_of_an_incomplete_reply(
    limit: int, incomplete: bytes, data: st.DataObject
) -> None:
    # ``incomplete`` never ends a reply; fed in pieces, the parser either waits holding a
    # bounded amount or refuses it. For a bulk, the bound is on its body: the header and the
    # body's CR come on top (see the report: the docstring's "at most max_reply_size bytes").
    parser = ReplyParser(max_reply_size=limit)
    for chunk in data.draw(cuts(incomplete)):
        parser.feed(chunk)
        try:
            assert parser.next_reply() is NEED_DATA
        except RemoteProtocolError:
            return
        if incomplete.startswith(b"+"):
            assert parser.buffered <= limit
        else:
            header = incomplete.index(b"\n") + 1 if b"\n" in incomplete else 0
            assert parser.buffered <= header + limit + 1
    assert parser.buffered == len(incomplete)


# -- bulk replies over the limit, skimmed -----------------------------------------------------


class Recorder:
    """A skim that keeps what it is fed (a real one keeps a bounded summary)."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []

    def feed(self, data: bytes) -> None:
        assert data  # never called for nothing
        self.pieces.append(data)


def skimming_parser(limit: int, *, refuse: bool = False) -> tuple[ReplyParser, list[int]]:
    """A parser whose skim records each length it is asked about (and refuses if told)."""
    asked: list[int] = []

    def skim(length: int) -> Recorder | None:
        asked.append(length)
        return None if refuse else Recorder()

    return ReplyParser(max_reply_size=limit, skim=skim), asked


def _skimmed(reply: object) -> tuple[int, bytes]:
    assert isinstance(reply, OversizedBulk)
    assert isinstance(reply.skim, Recorder)
    return reply.size, b"".join(reply.skim.pieces)


def test_an_oversized_bulk_is_skimmed_and_the_stream_stays_in_step() -> None:
    parser, asked = skimming_parser(16)
    body = b"0123456789" * 5
    parser.feed(b"+OK\r\n" + encode_bulk(body) + encode_bulk(b"x" * 16) + b":7\r\n")
    assert parser.next_reply() == "OK"
    assert _skimmed(parser.next_reply()) == (50, body)
    assert parser.next_reply() == b"x" * 16  # exactly the limit: kept, skim not asked
    assert parser.next_reply() == 7
    assert parser.next_reply() is NEED_DATA
    assert asked == [50]
    assert parser.buffered == 0


def test_an_oversized_bulk_refused_by_skim_is_a_protocol_error_at_its_header() -> None:
    parser, asked = skimming_parser(16, refuse=True)
    parser.feed(b"$17\r\n")
    with pytest.raises(RemoteProtocolError, match=r"17 bytes exceeds 16 bytes \(max_reply_size\)"):
        parser.next_reply()
    assert asked == [17]


@pytest.mark.parametrize("end", [b"xx", b"\rx", b"\nx", b"\n\r"])
def test_a_skimmed_bulk_must_end_with_crlf(end: bytes) -> None:
    parser, _ = skimming_parser(16)
    parser.feed(b"$20\r\n" + b"b" * 20)
    assert parser.next_reply() is NEED_DATA
    parser.feed(end)
    with pytest.raises(RemoteProtocolError, match="not terminated by CRLF"):
        parser.next_reply()


def test_a_skimmed_bulk_byte_by_byte_holds_at_most_one_byte() -> None:
    limit = 16
    body = bytes(range(256)) * 3  # 48 times the limit, CR and LF bytes included
    stream = encode_bulk(body) + b"+after\r\n"
    parser, _ = skimming_parser(limit)
    replies: list[object] = []
    for byte in byte_by_byte(stream):
        parser.feed(byte)
        replies += drain_parser(parser)
        assert parser.buffered <= 8  # a header or the line after it, else one byte at a time
    assert [_skimmed(replies[0]), replies[1]] == [(768, body), "after"]


class Counter:
    """A skim that only counts: the parser alone holds memory."""

    def __init__(self) -> None:
        self.seen = 0

    def feed(self, data: bytes) -> None:
        self.seen += len(data)


def test_a_skimmed_bulk_three_times_the_limit_is_never_held() -> None:
    limit, chunk = 256 * 1024, 16 * 1024
    size = 3 * limit
    counter = Counter()
    parser = ReplyParser(max_reply_size=limit, skim=lambda length: counter)
    piece = b"z" * chunk
    tracemalloc.start()
    try:
        parser.feed(b"$%d\r\n" % size)
        assert parser.next_reply() is NEED_DATA
        for _ in range(size // chunk):
            parser.feed(piece)
            assert parser.next_reply() is NEED_DATA
            assert parser.buffered == 0
        parser.feed(b"\r\n+OK\r\n")
        reply = parser.next_reply()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reply == OversizedBulk(size=size, skim=counter)
    assert counter.seen == size
    assert parser.next_reply() == "OK"
    assert peak < 4 * chunk, peak  # a piece and its copy for the skim, never the body


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([16, 100, 1000]),
    st.integers(1, 4),
    reply_stream,
    st.data(),
)
def test_skimmed_bulks_at_random_cut_points_never_hold_more_than_a_chunk(
    limit: int, times: int, stream: tuple[bytes, list[object]], data: st.DataObject
) -> None:
    raw, expected = stream
    limit = max(limit, len(raw))  # every reply of the stream fits: only ``body`` is over
    size = limit * times + data.draw(st.integers(1, limit))
    body = data.draw(st.binary(min_size=size, max_size=size))
    whole = raw + encode_bulk(body) + raw
    parser, asked = skimming_parser(limit)
    replies: list[object] = []
    for chunk in data.draw(cuts(whole)):
        parser.feed(chunk)
        replies += drain_parser(parser)
        # Whatever is left over is part of a reply not yet complete: the skimmed body is not
        # held, so at most a header, a line under the limit, or a bulk body up to the limit.
        assert parser.buffered <= limit + 40
    assert replies[: len(expected)] == expected
    assert _skimmed(replies[len(expected)]) == (size, body)
    assert replies[len(expected) + 1 :] == expected
    assert asked == [size]
    assert parser.buffered == 0


# -- command_line and dump_json --------------------------------------------------------------


def test_command_line() -> None:
    assert command_line("INFO") == b"INFO\r\n"
    assert command_line("FETCH", "a b") == b"FETCH a b\r\n"
    assert command_line("PUSH", "{\u00e9}") == "PUSH {\u00e9}\r\n".encode()


@pytest.mark.parametrize("argument", ["a\nb", "a\rb", "\r\n", "\ud800"])
def test_command_line_refuses_line_breaks_and_surrogates(argument: str) -> None:
    with pytest.raises(LocalProtocolError):
        command_line("PUSH", argument)


def test_dump_json_is_compact_and_unicode() -> None:
    assert dump_json({"a": [1, "\u00e9 x"], "b": None}) == '{"a":[1,"\u00e9 x"],"b":null}'
    assert dump_json("line\nbreak") == '"line\\nbreak"'


@pytest.mark.parametrize(
    "value",
    [object(), {1j: 1}, math.nan, math.inf, [-math.inf], {"k": {1, 2}}, b"bytes"],
)
def test_dump_json_refuses_what_json_cannot_say(value: object) -> None:
    with pytest.raises(LocalProtocolError, match="JSON"):
        dump_json(value)


def test_dump_json_refuses_cycles_and_deep_nesting() -> None:
    cycle: list[object] = []
    cycle.append(cycle)
    with pytest.raises(LocalProtocolError):
        dump_json(cycle)
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(LocalProtocolError):
        dump_json(deep)


@settings(deadline=None)
@given(st.recursive(st.none() | st.integers() | st.text(), lambda i: st.lists(i, max_size=3)))
def test_dump_json_round_trips(value: object) -> None:
    assert json.loads(dump_json(value)) == value


def test_size_errors_name_the_setting_to_change() -> None:
    for data in (b"$17\r\n", b"+" + b"a" * 17):
        parser = ReplyParser(max_reply_size=16)
        parser.feed(data)
        with pytest.raises(RemoteProtocolError, match=r"16 bytes \(max_reply_size\)"):
            parser.next_reply()


def test_dump_json_names_what_it_could_not_encode_where_and_the_fix() -> None:
    with pytest.raises(ArgumentTypeError) as raised:
        dump_json({"k": {1}}, "the payload")
    assert str(raised.value) == (
        "the payload: k is a set, which JSON cannot encode: send a list (sorted(...))"
    )
    with pytest.raises(ArgumentError) as nan:
        dump_json([1, math.nan], "the payload")
    assert str(nan.value) == (
        "the payload: [1] is nan, which JSON cannot encode: send None or a string"
    )
    with pytest.raises(ArgumentTypeError, match=r"^the value is an object, which JSON cannot"):
        dump_json(object())


def test_a_valid_value_is_never_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    # The path of the culprit is looked for only on failure: pushing valid jobs costs nothing.
    def walked(*_: object, **__: object) -> None:
        raise AssertionError("walked")

    monkeypatch.setattr(_resp, "_culprit", walked)
    assert dump_json({"args": [1, "é", [None]]}) == '{"args":[1,"é",[null]]}'
    assert encode_json({"args": ["é"]}) == '{"args":["é"]}'.encode()


def test_encode_json_names_a_lone_surrogate() -> None:
    assert encode_json({"a": ["é"]}) == '{"a":["é"]}'.encode()
    with pytest.raises(ArgumentError, match=r"^the job: args\[0\] is a string with a lone"):
        encode_json({"args": ["\udcff"]}, "the job")


@pytest.mark.parametrize("first", [b"\x16", b"H", b"*", b"\r", b" "])
def test_a_bad_first_byte_is_refused_before_its_line_ends(first: bytes) -> None:
    # Another protocol answering (TLS, HTTP...) fails at once, not after max_reply_size bytes.
    parser = ReplyParser()
    parser.feed(b"+OK\r\n" + first)
    assert parser.next_reply() == "OK"
    with pytest.raises(RemoteProtocolError, match="type byte"):
        parser.next_reply()


@pytest.mark.parametrize("first", [b"+", b"-", b"$", b":"])
def test_a_good_first_byte_waits_for_its_line(first: bytes) -> None:
    parser = ReplyParser()
    parser.feed(first)
    assert parser.next_reply() is NEED_DATA
