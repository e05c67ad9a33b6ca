"""Job and Failure: local validation with the server's rules, and the wire round trip."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faktory_core import ArgumentError, ArgumentTypeError, Failure, Job, LocalProtocolError
from faktory_core._job import (
    MAX_RESERVE_FOR,
    MIN_RESERVE_FOR,
    JidScanner,
    check_queue_name,
    find_jid,
)
from faktory_core.commands import Push

from .strategies import cuts, failures, jobs, json_roundtrip, json_values

JID = "0123456789abcdef"


def job(**fields: Any) -> Job:
    fields.setdefault("jid", JID)
    fields.setdefault("jobtype", "SendEmail")
    return Job(**fields)


def wire(**fields: Any) -> dict[str, Any]:
    return {"jid": JID, "jobtype": "SendEmail", "args": [], **fields}


def test_defaults() -> None:
    j = job()
    assert (j.args, j.queue, j.retry, j.reserve_for, j.at, j.custom, j.failure) == (
        [],
        "default",
        None,
        None,
        None,
        None,
        None,
    )
    assert j.to_wire() == {"jid": JID, "jobtype": "SendEmail", "args": [], "queue": "default"}


# -- jid -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "jid", ["12345678", "a" * 100, "\u20ac\u20ac\u20ac", "\u00e9\u00e9\u00e9\u00e9"]
)
def test_jid_of_at_least_eight_bytes(jid: str) -> None:
    # "€€€" is 3 characters but 9 bytes; "éééé" 4 characters, 8 bytes.
    assert len(jid.encode()) >= 8
    assert job(jid=jid).jid == jid


@pytest.mark.parametrize(
    "jid", ["", "1234567", "\u00e9\u00e9\u00e9", "\u20ac\u20ac", None, 12345678, b"12345678"]
)
def test_jid_too_short_or_not_a_string(jid: object) -> None:
    with pytest.raises(LocalProtocolError, match="jid"):
        job(jid=jid)


# -- jobtype and args ------------------------------------------------------------------------


@pytest.mark.parametrize("jobtype", ["", None, 1, ["A"], b"A"])
def test_jobtype_must_be_a_non_empty_string(jobtype: object) -> None:
    with pytest.raises(LocalProtocolError, match="jobtype"):
        job(jobtype=jobtype)


def test_args_list_is_kept_and_tuple_converted() -> None:
    args = [1, "two"]
    assert job(args=args).args is args
    assert job(args=(1, "two")).args == [1, "two"]
    assert type(job(args=(1,)).args) is list


@pytest.mark.parametrize(
    "args",
    [
        "abc",
        {"a": 1},
        None,
        5,
        {1, 2},
        frozenset([1]),
        (x for x in [1]),
        b"ab",
        bytearray(b"ab"),
        range(3),
        iter([1]),
        {"a": 1}.keys(),
    ],
    # The type, not repr: a generator's repr holds its address, and pytest-xdist's workers
    # must collect the same ids.
    ids=lambda args: type(args).__name__,
)
def test_args_must_be_a_list_or_tuple(args: object) -> None:
    for build in (lambda: job(args=args), lambda: Job.create("T", args, jid_factory=lambda: JID)):  # type: ignore[arg-type]
        with pytest.raises(ArgumentTypeError) as raised:
            build()
        message = str(raised.value)
        assert message.startswith(
            f"args must be a list or tuple of the job's arguments, got {type(args).__name__}: "
        )
        assert isinstance(raised.value, TypeError)
        assert "write args=" in message  # the fix


@pytest.mark.parametrize(
    ("args", "fix"),
    [
        ("a@b", "to pass one str, write args=['a@b']"),
        (b"ab", "to pass one bytes, write args=[b'ab']"),
        ({"to": "ada"}, "to pass one dict, write args=[{'to': 'ada'}]"),
        ({3, 1}, "to pass its items as the arguments, write args=list({1, 3})"),
        (5, "to pass one value, write args=[5]"),
        (None, "for no arguments, write args=[] (or leave it out); to pass None, args=[None]"),
        ((x for x in "ab"), "to pass its items as the arguments, write args=list(...)"),
    ],
)
def test_a_str_or_a_dict_as_args_is_refused_naming_the_fix(args: object, fix: str) -> None:
    # Job.create did list(args): "a@b" went out as ['a', '@', 'b'], a dict as its keys.
    with pytest.raises(ArgumentTypeError) as raised:
        Job.create("SendEmail", args, jid_factory=lambda: JID)  # type: ignore[arg-type]
    assert str(raised.value).endswith(fix)


def test_a_huge_args_value_is_quoted_short() -> None:
    with pytest.raises(ArgumentTypeError) as raised:
        Job.create("T", "x" * 100_000, jid_factory=lambda: JID)  # type: ignore[arg-type]
    assert len(str(raised.value)) < 300


# -- queue -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.b-c_1", "default", "Q", "0", "-", "a" * 200])
def test_valid_queue_names(name: str) -> None:
    assert check_queue_name(name) == name
    assert job(queue=name).queue == name


@pytest.mark.parametrize("name", ["a b", "a*", "*", "", "caf\u00e9", "a\n", "a/b", None, 1])
def test_invalid_queue_names(name: object) -> None:
    with pytest.raises(LocalProtocolError, match="queue"):
        check_queue_name(name)
    with pytest.raises(LocalProtocolError, match="queue"):
        job(queue=name)


# -- integers --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [MIN_RESERVE_FOR, 61, 1800, MAX_RESERVE_FOR])
def test_reserve_for_from_a_minute_up_to_a_day(value: int) -> None:
    assert job(reserve_for=value).reserve_for == value


@pytest.mark.parametrize("value", [MAX_RESERVE_FOR + 1, 10**9])
def test_reserve_for_over_a_day_is_refused(value: object) -> None:
    with pytest.raises(ArgumentError, match=r"^reserve_for must be from 60 to 86400"):
        job(reserve_for=value)


@pytest.mark.parametrize("value", [True, 60.0, "60"])
def test_reserve_for_not_an_int_is_a_type_error(value: object) -> None:
    with pytest.raises(ArgumentTypeError, match=r"^reserve_for must be an integer or None"):
        job(reserve_for=value)


@pytest.mark.parametrize("value", [59, 10, 0, -5])
def test_reserve_for_under_a_minute_is_refused_saying_what_the_server_would_do(
    value: int,
) -> None:
    # The server silently raises it to 60: the job would stay reserved longer than asked.
    for build in (
        lambda: job(reserve_for=value),
        lambda: Job.create("T", jid_factory=lambda: JID, reserve_for=value),
    ):
        with pytest.raises(ArgumentError) as raised:
            build()
        assert str(raised.value) == (
            f"reserve_for must be from 60 to 86400, got {value} (None: the server's 1800; "
            "it would raise less than 60 to 60)"
        )
    assert MIN_RESERVE_FOR == 60


def test_a_fetched_job_may_carry_a_reserve_for_under_a_minute() -> None:
    # Another client may have pushed it; refusing it would FAIL a valid job as InvalidJob.
    assert Job.from_wire(wire(reserve_for=10)).reserve_for == 10
    assert Job.from_wire(wire(reserve_for=0)).reserve_for == 0


@pytest.mark.parametrize("value", [None, -1, 0, 25, 10**6])
def test_retry_accepts_any_int(value: int | None) -> None:
    assert job(retry=value).retry == value


@pytest.mark.parametrize("value", [True, False, 2.0, "5"])
def test_retry_rejects_bools_and_non_ints(value: object) -> None:
    with pytest.raises(LocalProtocolError, match="retry"):
        job(retry=value)


@pytest.mark.parametrize("value", [True, 1.5, "3"])
def test_backtrace_must_be_an_int(value: object) -> None:
    with pytest.raises(LocalProtocolError, match="backtrace"):
        job(backtrace=value)


# -- at --------------------------------------------------------------------------------------


def test_naive_at_is_rejected() -> None:
    with pytest.raises(LocalProtocolError, match="timezone-aware"):
        job(at=datetime(2026, 7, 1, 10, 0))
    with pytest.raises(LocalProtocolError, match="timezone-aware"):
        job(at="2026-07-01T10:00:00")


def test_aware_at_is_accepted_and_sent_as_rfc3339() -> None:
    at = datetime(2026, 7, 1, 10, 0, tzinfo=timezone(timedelta(hours=2)))
    j = job(at=at)
    assert j.at == at
    assert j.to_wire()["at"] == "2026-07-01T10:00:00+02:00"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-07-01T09:15:02.118Z", datetime(2026, 7, 1, 9, 15, 2, 118000, tzinfo=UTC)),
        ("2026-07-01T11:15:02+02:00", datetime(2026, 7, 1, 9, 15, 2, tzinfo=UTC)),
    ],
)
def test_at_string_is_parsed(text: str, expected: datetime) -> None:
    assert job(at=text).at == expected


def test_empty_at_means_now() -> None:
    assert job(at="").at is None


@pytest.mark.parametrize("at", ["tomorrow", "2026-13-01T00:00:00Z"])
def test_at_that_is_not_a_timestamp(at: object) -> None:
    with pytest.raises(ArgumentError, match=r"^at is not an RFC 3339 timestamp"):
        job(at=at)


@pytest.mark.parametrize("at", [1700000000, 1.5, ["x"]])
def test_at_of_another_type_is_a_type_error(at: object) -> None:
    with pytest.raises(ArgumentTypeError, match=r"^at must be a timezone-aware datetime, got"):
        job(at=at)


@pytest.mark.parametrize(
    ("offset", "wire_at"),
    [
        (timedelta(hours=5, minutes=30, seconds=15), "2026-07-01T04:29:45+00:00"),
        (timedelta(seconds=-1), "2026-07-01T10:00:01+00:00"),
        (timedelta(minutes=-75, microseconds=-5), "2026-07-01T11:15:00.000005+00:00"),
    ],
)
def test_an_offset_with_seconds_is_sent_as_the_same_instant_in_utc(
    offset: timedelta, wire_at: str
) -> None:
    # isoformat writes "+05:30:15", which is not RFC 3339 and which the server refuses.
    at = datetime(2026, 7, 1, 10, 0, tzinfo=timezone(offset))
    j = job(at=at)
    assert j.at == at  # the same instant...
    assert j.at is not None
    assert j.at.utcoffset() == timedelta(0)  # ...in UTC, from when the job is built
    assert j.to_wire()["at"] == wire_at
    assert json.loads(Push(job=j).encode()[5:])["at"] == wire_at


@pytest.mark.parametrize("minutes", [0, 120, -210, 23 * 60 + 59])
def test_an_offset_of_whole_minutes_is_kept(minutes: int) -> None:
    zone = timezone(timedelta(minutes=minutes))
    j = job(at=datetime(2026, 7, 1, 10, 0, tzinfo=zone))
    assert j.at is not None
    assert j.at.tzinfo is zone


# -- custom and server fields ----------------------------------------------------------------


def test_custom_mapping_is_copied_to_a_dict() -> None:
    source = {"track": 1, "bid": "b-1"}
    j = job(custom=MappingProxyType(source))
    assert j.custom == source
    assert type(j.custom) is dict


@pytest.mark.parametrize("custom", [{1: "x"}, {("a",): 1}, {"ok": 1, None: 2}, ["a"], "abc"])
def test_custom_needs_string_keys_in_a_mapping(custom: object) -> None:
    with pytest.raises(LocalProtocolError, match="custom"):
        job(custom=custom)


@pytest.mark.parametrize("field", ["created_at", "enqueued_at"])
def test_server_timestamps_must_be_strings(field: str) -> None:
    assert getattr(job(**{field: "2026-07-01T09:15:02Z"}), field) == "2026-07-01T09:15:02Z"
    with pytest.raises(LocalProtocolError, match=field):
        job(**{field: 5})


def test_to_wire_omits_enqueued_at() -> None:
    # The server overwrites enqueued_at whenever a job enters a queue, so it is never sent.
    j = job(enqueued_at="2026-07-01T09:15:02Z", created_at="2026-07-01T09:15:01Z")
    assert "enqueued_at" not in j.to_wire()
    assert j.to_wire()["created_at"] == "2026-07-01T09:15:01Z"


def test_to_wire_carries_a_failure() -> None:
    # The server accepts and keeps a failure on PUSH (a re-pushed fetched job keeps its history).
    failure = Failure(retry_count=2, errtype="E", backtrace=("a",))
    assert job(failure=failure).to_wire()["failure"] == {
        "retry_count": 2,
        "errtype": "E",
        "backtrace": ["a"],
    }
    assert b'"failure":{"retry_count":2,"errtype":"E","backtrace":["a"]}' in (
        Push(job=job(failure=failure)).encode()
    )


def test_jobs_are_frozen() -> None:
    j = job()
    with pytest.raises(AttributeError):
        j.jid = "another-jid-1234"  # type: ignore[misc]


def test_failure_must_be_a_failure() -> None:
    # A dict is the natural mistake (it is what to_wire() gives back).
    with pytest.raises(LocalProtocolError):
        Push(job=job(failure={"retry_count": 1}))


# -- Job.create ------------------------------------------------------------------------------


def test_create_takes_the_jid_from_the_factory() -> None:
    made = iter(["jid-000000000001", "jid-000000000002"])
    first = Job.create("A", [1, 2], jid_factory=lambda: next(made), queue="critical", retry=3)
    second = Job.create("B", jid_factory=lambda: next(made))
    assert (first.jid, first.jobtype, first.args, first.queue, first.retry) == (
        "jid-000000000001",
        "A",
        [1, 2],
        "critical",
        3,
    )
    assert (second.jid, second.args) == ("jid-000000000002", [])


def test_create_copies_a_list_and_takes_a_tuple_as_a_list() -> None:
    args = [1, "two"]
    job = Job.create("A", args, jid_factory=lambda: JID)
    args.append("three")  # the caller's list changes later: the job does not
    assert job.args == [1, "two"]
    args.pop()
    made = Job.create("A", (1, "two"), jid_factory=lambda: JID)
    assert made.args == args
    assert type(made.args) is list


def test_create_validates_the_factory_result() -> None:
    with pytest.raises(LocalProtocolError, match="jid"):
        Job.create("A", jid_factory=lambda: "short")


# -- the wire round trip ---------------------------------------------------------------------


@settings(deadline=None)
@given(jobs)
def test_to_wire_from_wire_round_trip(j: Job) -> None:
    assert Job.from_wire(j.to_wire()) == j
    assert Job.from_wire(json_roundtrip(j.to_wire())) == j


@settings(deadline=None)
@given(jobs)
def test_to_wire_is_what_init_accepts(j: Job) -> None:
    data = json_roundtrip(j.to_wire())
    failure = data.pop("failure", None)
    rebuilt = Job(**data, failure=None if failure is None else Failure.from_wire(failure))
    assert rebuilt == j


def test_from_wire_reads_what_the_server_sends() -> None:
    payload = (
        '{"retry":25,"jid":"Yq3nW0vT5kLm8pQz","queue":"default","jobtype":"SendEmail",'
        '"created_at":"2026-07-01T09:15:02.118Z","enqueued_at":"2026-07-01T09:15:02.120233Z",'
        '"args":["alice@example.com",42],"unknown_key":1,'
        '"failure":{"retry_count":2,"remaining":23,"failed_at":"2026-07-01T09:15:03Z",'
        '"errtype":"E","message":"m","backtrace":["a","b"]}}'
    )
    j = Job.from_wire(json.loads(payload))
    assert j.retry == 25
    assert j.args == ["alice@example.com", 42]
    assert j.enqueued_at == "2026-07-01T09:15:02.120233Z"
    assert j.failure == Failure(
        retry_count=2,
        remaining=23,
        failed_at="2026-07-01T09:15:03Z",
        errtype="E",
        message="m",
        backtrace=("a", "b"),
    )


def test_from_wire_defaults_queue_and_accepts_null_fields() -> None:
    j = Job.from_wire(wire(queue=None, retry=None, at=None, failure=None, custom=None))
    assert j == job()
    assert Job.from_wire(wire(queue="")).queue == "default"
    assert Job.from_wire(wire(at="")).at is None


INVALID_FIELDS: list[tuple[str, object]] = [
    ("jid", "short"),
    ("jid", 12345678),
    ("jobtype", ""),
    ("jobtype", 1),
    ("args", {"a": 1}),
    ("args", "abc"),
    ("args", None),
    ("queue", "a b"),
    ("queue", "*"),
    ("queue", ["q"]),
    ("retry", True),
    ("retry", "5"),
    ("retry", 2.0),
    ("reserve_for", MAX_RESERVE_FOR + 1),
    ("reserve_for", 60.0),
    ("backtrace", "10"),
    ("at", "2026-07-01T10:00:00"),
    ("at", "soon"),
    ("at", 5),
    ("custom", ["a"]),
    ("custom", "x"),
    ("created_at", 1),
    ("enqueued_at", []),
]


@pytest.mark.parametrize(("field", "value"), INVALID_FIELDS)
def test_from_wire_rejects_what_init_rejects(field: str, value: object) -> None:
    with pytest.raises(LocalProtocolError):
        job(**{"args": [], field: value})
    with pytest.raises(LocalProtocolError):
        Job.from_wire(wire(**{field: value}))


@pytest.mark.parametrize("value", [0, False, [], {}])
def test_from_wire_rejects_falsy_non_string_queues(value: object) -> None:
    with pytest.raises(LocalProtocolError):
        job(queue=value)  # __init__ refuses them...
    with pytest.raises(LocalProtocolError):
        Job.from_wire(wire(queue=value))  # ...and so should from_wire


@pytest.mark.parametrize("missing", ["jid", "jobtype", "args"])
def test_from_wire_needs_the_required_keys(missing: str) -> None:
    data = wire()
    del data[missing]
    with pytest.raises(LocalProtocolError, match=missing):
        Job.from_wire(data)


@pytest.mark.parametrize("data", [[], "job", None, 5])
def test_from_wire_needs_an_object(data: object) -> None:
    with pytest.raises(LocalProtocolError, match="object"):
        Job.from_wire(data)


@pytest.mark.parametrize(
    "failure", ["x", [1], {"retry_count": "many"}, {"remaining": []}, {"backtrace": 5}]
)
def test_from_wire_rejects_a_malformed_failure(failure: object) -> None:
    with pytest.raises(LocalProtocolError, match="failure"):
        Job.from_wire(wire(failure=failure))


# -- Failure ---------------------------------------------------------------------------------


@settings(deadline=None)
@given(failures)
def test_failure_round_trip(failure: Failure) -> None:
    assert Failure.from_wire(failure.to_wire()) == failure
    assert Failure.from_wire(json_roundtrip(failure.to_wire())) == failure


def test_failure_to_wire_omits_empty_fields() -> None:
    assert Failure().to_wire() == {"retry_count": 0}
    assert Failure(retry_count=3, message="m", backtrace=("x",)).to_wire() == {
        "retry_count": 3,
        "message": "m",
        "backtrace": ["x"],
    }


def test_failure_from_wire_tolerates_nulls() -> None:
    assert Failure.from_wire({"retry_count": None, "remaining": None, "backtrace": None}) == (
        Failure()
    )


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), 1e400])
def test_failure_from_wire_rejects_infinite_numbers(value: float) -> None:
    for key in ("retry_count", "remaining"):
        with pytest.raises(LocalProtocolError):
            Failure.from_wire({key: value})


# -- what Push refuses at construction -------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [[object()], [float("nan")], [{"x": float("inf")}], ["\ud800"], [{"k": "lone \udfff"}], [b"x"]],
    ids=["object", "nan", "inf", "surrogate", "nested-surrogate", "bytes"],
)
def test_push_refuses_args_that_cannot_go_on_the_wire(args: list[object]) -> None:
    j = job(args=args)  # a job only checks that args is a list...
    with pytest.raises(LocalProtocolError):
        Push(job=j)  # ...the command refuses what cannot be encoded


# -- the jid of a job too deep or too large to decode -----------------------------------------

#: Keys and strings likely to confuse a scanner: "jid" itself, escapes, quotes, brackets.
tricky_text = st.one_of(
    st.sampled_from(["jid", "JID", "jid ", "j\\id", '"jid"', "[", "]", "{", "}", ":", ",", "\\"]),
    st.text(max_size=8),
)
decoy_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), tricky_text),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(tricky_text, inner, max_size=4),
        # a nested object with a "jid" of its own, which must never be taken
        st.builds(
            lambda jid, rest: {**rest, "jid": jid},
            tricky_text,
            st.dictionaries(tricky_text, inner, max_size=3),
        ),
    ),
    max_leaves=16,
)
documents = st.builds(
    lambda members, jid, at, ascii, spaced: _dump(members, jid, at, ascii, spaced),
    st.dictionaries(tricky_text.filter(lambda k: k != "jid"), decoy_values, max_size=6),
    st.one_of(st.text(max_size=30), tricky_text, json_values),
    st.integers(0, 6),
    st.booleans(),
    st.booleans(),
)


def _dump(
    members: dict[str, Any], jid: object, at: int, ascii: bool, spaced: bool
) -> tuple[bytes, object]:
    """A JSON object with "jid" as its ``at``-th key; (its text, json.loads' view of jid)."""
    items = list(members.items())
    items.insert(min(at, len(items)), ("jid", jid))
    separators = (" , ", " : ") if spaced else (",", ":")
    text = json.dumps(dict(items), ensure_ascii=ascii, separators=separators)
    if spaced:
        text = f" \n{text}\t "
    return text.encode(), json.loads(text)["jid"]


def _scan(chunks: list[bytes]) -> str | None:
    scanner = JidScanner()
    for chunk in chunks:
        scanner.feed(chunk)
    return scanner.jid


@settings(max_examples=400, deadline=None)
@given(documents, st.data())
def test_the_scanner_finds_the_top_level_jid_however_the_text_is_cut(
    document: tuple[bytes, object], data: st.DataObject
) -> None:
    text, jid = document
    expected = jid if isinstance(jid, str) else None  # only a string jid can be FAILed
    assert find_jid(text) == expected
    assert _scan(data.draw(cuts(text))) == expected
    assert _scan([text[i : i + 1] for i in range(len(text))]) == expected


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(tricky_text.filter(lambda k: k != "jid"), decoy_values, max_size=6))
def test_the_scanner_never_takes_a_nested_jid(members: dict[str, Any]) -> None:
    members["args"] = [{"jid": "nested-0001"}, ["jid", "nested-0002"]]
    members["custom"] = {"jid": "nested-0003", "x": {"jid": "nested-0004"}}
    for ascii in (True, False):
        text = json.dumps(members, ensure_ascii=ascii).encode()
        assert find_jid(text) is None
    # Not an object at the top: no jid at all.
    assert find_jid(json.dumps([{"jid": "nested-0005"}]).encode()) is None


@pytest.mark.parametrize(
    ("text", "jid"),
    [
        (b'{"jid":"abc"}', "abc"),
        (b'{"j\\u0069d":"a\\"b\\\\c\\u00e9"}', 'a"b\\c\u00e9'),  # escaped key and value
        (b'{"a":"jid","jid":"x"}', "x"),  # "jid" as a value, then as a key
        (b'{"a":["jid",{"jid":"no"}],"jid":"yes"}', "yes"),
        (b'{"a":"\\\\","jid":"after-a-backslash"}', "after-a-backslash"),
        (b'{"a":"\\"jid\\":\\"no\\"","jid":"yes"}', "yes"),  # quotes escaped in a string
        (b'{"jid":12345678}', None),  # not a string
        (b'{"jid":["x"]}', None),
        (b'{"jid" "x"}', None),  # no colon
        (b'{"a":1}', None),
        (b'{"a":{}}{"jid":"x"}', None),  # after the top-level object: not its jid
        (b'["jid","x"]', None),
        (b'"jid"', None),
        (b"", None),
        (b'{"jid":"unterminated', None),
        (b'{"jid":"\\ud800"}', "\ud800"),  # a lone surrogate: the caller decides
        (b'{"jid":"bad\\x"}', None),  # an invalid escape
        (b'{"jid":"\xff\xfe"}', None),  # not UTF-8
        (b'{"jid":"%s"}' % (b"j" * 4096), "j" * 4096),
        (b'{"jid":"%s"}' % (b"j" * 4097), None),  # longer than the scanner keeps
        (b'{"%s":1,"jid":"x"}' % (b"k" * 5000), "x"),  # a long key is skipped, not kept
    ],
)
def test_the_scanner_on_edge_cases(text: bytes, jid: str | None) -> None:
    assert find_jid(text) == jid
    assert _scan([text[i : i + 1] for i in range(len(text))]) == jid


def _deep_list(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _deep_dict(depth: int) -> bytes:
    return b'{"a":' * depth + b"{}" + b"}" * depth


@pytest.mark.parametrize("depth", [1_000, 5_000, 10_000, 100_000])
@pytest.mark.parametrize("deep", [_deep_list, _deep_dict], ids=["lists", "objects"])
@pytest.mark.parametrize("where", ["args", "custom"])
def test_the_scanner_reads_past_any_depth(depth: int, deep: Any, where: str) -> None:
    nested = deep(depth)
    decoy = b'{"jid":"decoy-0001"}'
    if where == "args":
        text = b'{"retry":25,"jid":"jid-00000001","args":[%s,%s],"jobtype":"T"}' % (decoy, nested)
    else:  # Faktory 1.9.4 writes custom before jid: the scan reads through it
        text = b'{"retry":25,"custom":{"d":%s,"e":%s},"jid":"jid-00000001"}' % (nested, decoy)
    assert find_jid(text) == "jid-00000001"
    chunks = [text[i : i + 997] for i in range(0, len(text), 997)]
    assert _scan(chunks) == "jid-00000001"


def test_the_scanner_stops_reading_once_done() -> None:
    scanner = JidScanner()
    scanner.feed(b'{"jid":"jid-00000001"')
    assert scanner.done
    scanner.feed(b',"jid":"jid-00000002"}')  # ignored: the first top-level jid counts
    assert scanner.jid == "jid-00000001"
    closed = JidScanner()
    closed.feed(b'{"a":[1]}')
    assert closed.done
    assert closed.jid is None


@pytest.mark.parametrize(
    ("wire_fields", "needle"),
    [
        ({"jobtype": "x" * 100_000}, None),
        ({"queue": ["q"] * 100_000}, r"queue must be a queue name \(a string\), got \['q'"),
        ({"retry": "r" * 100_000}, "retry must be int"),
        ({"at": "t" * 100_000}, "RFC 3339"),
    ],
)
def test_values_quoted_in_errors_are_cut_short(
    wire_fields: dict[str, Any], needle: str | None
) -> None:
    payload = wire(**wire_fields)
    if needle is None:
        assert Job.from_wire(payload).jobtype == "x" * 100_000  # long is fine, only quoted short
        return
    with pytest.raises(LocalProtocolError, match=needle) as raised:
        Job.from_wire(payload)
    assert len(str(raised.value)) < 200


def test_a_value_nested_deeply_is_quoted_without_recursing() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    for field in ("jobtype", "queue", "retry"):
        with pytest.raises(LocalProtocolError) as raised:
            Job.from_wire(wire(**{field: deep}))
        assert "[[[" in str(raised.value)
        assert len(str(raised.value)) < 200
