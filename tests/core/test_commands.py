"""Every command's exact bytes, its local validation, and lines that must never be sent."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from faktory_core import (
    ArgumentError,
    ArgumentTypeError,
    ClientInfo,
    Command,
    Job,
    LocalProtocolError,
)
from faktory_core._config import MIN_REPLY_TIMEOUT
from faktory_core.commands import (
    ALL_QUEUES,
    FETCH_WAIT_FLOOR,
    MAX_BACKTRACE_LINES,
    Ack,
    BatchCommit,
    BatchNew,
    BatchOpen,
    BatchStatus,
    Beat,
    End,
    Expect,
    Fail,
    Fetch,
    Flush,
    Hello,
    Info,
    Mutate,
    MutateOperation,
    MutateTarget,
    Push,
    PushBulk,
    QueueLatency,
    QueuePause,
    QueueRemove,
    QueueResume,
    TrackGet,
    TrackSet,
    WorkerState,
    cut_backtrace,
)

from .strategies import aware_datetimes, jids, jobs, queue_names, words

JID = "0123456789abcdef"
JOB = Job(jid=JID, jobtype="SendEmail", args=["alice@example.com", 42])
# As pushed: "retry" is always sent (Faktory 1.9.4 would give it another client's value).
JOB_JSON = (
    '{"jid":"0123456789abcdef","jobtype":"SendEmail","args":["alice@example.com",42],'
    '"queue":"default","retry":25}'
)

EXACT: list[tuple[Command, bytes]] = [
    (Push(job=JOB), b"PUSH " + JOB_JSON.encode() + b"\r\n"),
    (
        Push(
            job=Job(
                jid=JID,
                jobtype="A",
                queue="q",
                retry=-1,
                reserve_for=600,
                backtrace=5,
                custom={"track": 1},
                at=datetime(2026, 7, 1, 10, tzinfo=UTC),
            )
        ),
        b'PUSH {"jid":"0123456789abcdef","jobtype":"A","args":[],"queue":"q","retry":-1,'
        b'"reserve_for":600,"at":"2026-07-01T10:00:00+00:00","backtrace":5,"custom":{"track":1}}\r\n',
    ),
    (
        Push(job=Job(jid=JID, jobtype="\u00e9", args=["\u20ac\n"])),
        '{"jid":"0123456789abcdef","jobtype":"\u00e9","args":["\u20ac\\n"],"queue":"default",'
        '"retry":25}'.join(["PUSH ", "\r\n"]).encode(),
    ),
    (PushBulk(jobs=[JOB, JOB]), f"PUSHB [{JOB_JSON},{JOB_JSON}]\r\n".encode()),
    (Fetch(queues=["critical", "default"]), b"FETCH critical default\r\n"),
    (Fetch(queues="default"), b"FETCH default\r\n"),
    (Ack(jid=JID), b'ACK {"jid":"0123456789abcdef"}\r\n'),
    (Ack(jid='jid "\u00e9"\r\n\\'), b'ACK {"jid":"jid \\"\\u00e9\\"\\r\\n\\\\"}\r\n'),
    (
        Fail(
            jid=JID,
            errtype="SMTPError",
            message="connection refused",
            backtrace=["mailer.py:88 in send", "tasks.py:12 in run"],
        ),
        b'FAIL {"jid":"0123456789abcdef","errtype":"SMTPError","message":"connection refused",'
        b'"backtrace":["mailer.py:88 in send","tasks.py:12 in run"]}\r\n',
    ),
    (
        Fail(jid=JID, errtype="E", message=""),
        b'FAIL {"jid":"0123456789abcdef","errtype":"E","message":"","backtrace":[]}\r\n',
    ),
    (Beat(wid="9f2c41d0a7e3b6c5"), b'BEAT {"wid":"9f2c41d0a7e3b6c5"}\r\n'),
    (Beat(wid="w1", rss_kb=48212), b'BEAT {"wid":"w1","rss_kb":48212}\r\n'),
    (
        Beat(wid="w1", rss_kb=0, current_state="quiet"),
        b'BEAT {"wid":"w1","rss_kb":0,"current_state":"quiet"}\r\n',
    ),
    (
        Beat(wid="w1", current_state=WorkerState.TERMINATE),
        b'BEAT {"wid":"w1","current_state":"terminate"}\r\n',
    ),
    (Beat(wid="w1", current_state=WorkerState.RUNNING), b'BEAT {"wid":"w1"}\r\n'),
    (Beat(wid="w1", current_state="running"), b'BEAT {"wid":"w1"}\r\n'),
    (Info(), b"INFO\r\n"),
    (Flush(), b"FLUSH\r\n"),
    (End(), b"END\r\n"),
    (Mutate(operation="clear", target="dead"), b'MUTATE {"cmd":"clear","target":"dead"}\r\n'),
    (
        Mutate(operation=MutateOperation.DISCARD, target=MutateTarget.RETRIES, jobtype="SendEmail"),
        b'MUTATE {"cmd":"discard","target":"retries","filter":{"jobtype":"SendEmail"}}\r\n',
    ),
    (
        Mutate(operation="requeue", target="dead", jids=[JID, "another-jid-1"]),
        b'MUTATE {"cmd":"requeue","target":"dead","filter":{"jids":["0123456789abcdef",'
        b'"another-jid-1"]}}\r\n',
    ),
    (
        Mutate(operation="kill", target="scheduled", pattern="*Send Email*", jobtype="A B"),
        b'MUTATE {"cmd":"kill","target":"scheduled","filter":{"regexp":"*Send\\u0020Email*",'
        b'"jobtype":"A\\u0020B"}}\r\n',
    ),
    (
        Mutate(operation="kill", target="dead", jids=JID),
        b'MUTATE {"cmd":"kill","target":"dead","filter":{"jids":["0123456789abcdef"]}}\r\n',
    ),
    (QueuePause(queues=["a", "b"]), b"QUEUE PAUSE a b\r\n"),
    (QueuePause(queues=ALL_QUEUES), b"QUEUE PAUSE *\r\n"),
    (QueueResume(queues="a.b-c_1"), b"QUEUE RESUME a.b-c_1\r\n"),
    (QueueResume(queues=[ALL_QUEUES]), b"QUEUE RESUME *\r\n"),
    (QueueRemove(queues=["old"]), b"QUEUE REMOVE old\r\n"),
    (QueueRemove(queues=ALL_QUEUES), b"QUEUE REMOVE *\r\n"),
    (QueueLatency(queues=["critical", "default"]), b"QUEUE LATENCY critical default\r\n"),
    (BatchNew(success=JOB), f'BATCH NEW {{"success":{JOB_JSON}}}\r\n'.encode()),
    (BatchNew(complete=JOB), f'BATCH NEW {{"complete":{JOB_JSON}}}\r\n'.encode()),
    (
        BatchNew(complete=JOB, success=JOB, description="nightly run", parent_bid="b-1"),
        f'BATCH NEW {{"description":"nightly run","parent_bid":"b-1","success":{JOB_JSON},'
        f'"complete":{JOB_JSON}}}\r\n'.encode(),
    ),
    (BatchOpen(bid="b-123"), b"BATCH OPEN b-123\r\n"),
    (BatchCommit(bid="b-123"), b"BATCH COMMIT b-123\r\n"),
    (BatchStatus(bid="b-123"), b"BATCH STATUS b-123\r\n"),
    (TrackGet(jid=JID), b"TRACK GET 0123456789abcdef\r\n"),
    (TrackSet(jid=JID), b'TRACK SET {"jid":"0123456789abcdef"}\r\n'),
    (
        TrackSet(
            jid=JID,
            percent=40,
            description="step 2 of 5",
            reserve_until=datetime(2026, 7, 1, 12, tzinfo=timezone(timedelta(hours=2))),
        ),
        b'TRACK SET {"jid":"0123456789abcdef","percent":40,"desc":"step 2 of 5",'
        b'"reserve_until":"2026-07-01T12:00:00+02:00"}\r\n',
    ),
]


@pytest.mark.parametrize(("command", "expected"), EXACT, ids=lambda x: type(x).__name__)
def test_exact_bytes(command: Command, expected: bytes) -> None:
    assert command.encode() == expected
    assert command.encode() is command.encode()  # encoded once, when built


EXPECTS = {
    Push: Expect.OK,
    PushBulk: Expect.BULK_PUSH,
    Fetch: Expect.JOB,
    Ack: Expect.OK,
    Fail: Expect.OK,
    Beat: Expect.BEAT,
    Info: Expect.INFO,
    Flush: Expect.OK,
    End: Expect.NOTHING,
    Mutate: Expect.OK,
    QueuePause: Expect.OK,
    QueueResume: Expect.OK,
    QueueRemove: Expect.OK,
    QueueLatency: Expect.LATENCY,
    BatchNew: Expect.BID,
    BatchOpen: Expect.BID,
    BatchCommit: Expect.OK,
    BatchStatus: Expect.STATUS,
    TrackGet: Expect.STATUS,
    TrackSet: Expect.OK,
    Hello: Expect.OK,
}


@pytest.mark.parametrize(
    ("kind", "expect"), EXPECTS.items(), ids=lambda x: getattr(x, "__name__", "")
)
def test_each_command_knows_its_reply(kind: type[Command], expect: Expect) -> None:
    assert kind.expect is expect


def test_commands_compare_by_value_not_by_their_line() -> None:
    assert Fetch(queues="a") == Fetch(queues=["a"])
    assert Beat(wid="w", current_state="running") == Beat(wid="w")
    assert Fetch(queues="a") != Fetch(queues="b")
    assert "_line" not in repr(Fetch(queues="a"))


def test_hello_encodes_its_payload() -> None:
    payload = ClientInfo(wid="w1", hostname="h", pid=1, labels=["x"], username="u").hello_payload(
        "ph"
    )
    assert Hello(payload=payload).encode() == (
        b'HELLO {"v":2,"hostname":"h","wid":"w1","pid":1,"labels":["x"],"username":"u",'
        b'"pwdhash":"ph"}\r\n'
    )


def test_hello_repr_hides_the_password_hash() -> None:
    hello = Hello(payload=ClientInfo().hello_payload("d7a1c0ffee5ecret"))
    assert "d7a1c0ffee5ecret" not in repr(hello)
    assert "d7a1c0ffee5ecret" not in str(hello)


@pytest.mark.parametrize(
    ("value", "error", "problem"),
    [
        (
            object(),
            ArgumentTypeError,
            "is an object, which JSON cannot encode: send plain JSON values",
        ),
        ({1, 2}, ArgumentTypeError, "is a set, which JSON cannot encode: send a list"),
        (b"bytes", ArgumentTypeError, "is bytes, which JSON cannot encode: send text"),
        (float("nan"), ArgumentError, "is nan, which JSON cannot encode: send None or a string"),
        (float("-inf"), ArgumentError, "is -inf, which JSON cannot encode"),
    ],
)
def test_a_job_json_cannot_carry_is_refused_naming_the_job_and_where(
    value: object, error: type[Exception], problem: str
) -> None:
    bad = Job(jid="jid-of-the-bad-one", jobtype="Report", args=[1, {"data": value}])
    expected = f"job jid-of-the-bad-one (Report): args[1]['data'] {problem}"
    for build in (lambda: Push(job=bad), lambda: PushBulk(jobs=[JOB, bad])):
        with pytest.raises(error) as raised:
            build()
        assert str(raised.value).startswith(expected)
        assert isinstance(raised.value, LocalProtocolError)
        assert "bytes'" not in str(raised.value)  # the type is named, never the value


def test_a_datetime_in_args_is_a_type_error_naming_the_arg_and_the_fix() -> None:
    # The commonest mistake: json cannot encode a datetime, and the handler would get a str.
    job = Job(jid=JID, jobtype="Remind", args=["ada", datetime.now(UTC)])
    with pytest.raises(TypeError) as raised:
        Push(job=job)
    assert isinstance(raised.value, ArgumentTypeError)
    assert str(raised.value) == (
        f"job {JID} (Remind): args[1] is a datetime, which JSON cannot encode: "
        "send datetime.isoformat() and parse it in the handler"
    )


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"args": [Decimal("1.5")]}, "args[0] is a Decimal"),
        ({"args": [[1, [2, frozenset()]]]}, "args[0][1][1] is a frozenset"),
        ({"custom": {"when": date(2026, 1, 1)}}, "custom['when'] is a date"),
        ({"args": [{(1, 2): "x"}]}, "args[0] has a key of type tuple"),
        ({"args": ["ok", "lone \udcff"]}, "args[1] is a string with a lone surrogate"),
        ({"custom": {"\ud800": 1}}, "custom has a key that is a string with a lone surrogate"),
    ],
)
def test_the_first_value_the_wire_cannot_carry_is_named_by_its_path(
    fields: dict[str, Any], where: str
) -> None:
    with pytest.raises(LocalProtocolError) as raised:
        Push(job=Job(jid=JID, jobtype="T", **fields))
    assert str(raised.value).startswith(f"job {JID} (T): {where}")


def test_a_job_with_a_cycle_is_refused() -> None:
    cycle: list[object] = []
    cycle.append(cycle)
    with pytest.raises(LocalProtocolError, match="Circular reference"):
        Push(job=Job(jid=JID, jobtype="T", args=[cycle]))
    with pytest.raises(LocalProtocolError, match="Circular reference"):
        Push(job=Job(jid=JID, jobtype="T", custom={"k": cycle}))


def test_pushb_joins_the_jobs_as_one_json_array() -> None:
    line = PushBulk(jobs=[JOB, JOB]).encode()
    assert json.loads(line[len(b"PUSHB ") :]) == [json.loads(JOB_JSON)] * 2


# -- FAIL truncation -------------------------------------------------------------------------


def test_fail_keeps_short_fields_unchanged() -> None:
    fail = Fail(jid=JID, errtype="e" * 100, message="m" * 1000, backtrace=["l"] * 50)
    assert (len(fail.errtype), len(fail.message), len(fail.backtrace)) == (100, 1000, 50)


def test_fail_cuts_errtype_to_100_bytes_on_a_character_boundary() -> None:
    assert Fail(jid=JID, errtype="e" * 101, message="").errtype == "e" * 100
    assert Fail(jid=JID, errtype="\u00e9" * 60, message="").errtype == "\u00e9" * 50
    # 99 ASCII bytes, then a 2-byte character that does not fit.
    assert Fail(jid=JID, errtype="a" * 99 + "\u00e9", message="").errtype == "a" * 99


def test_fail_cuts_message_to_1000_bytes_on_a_character_boundary() -> None:
    assert Fail(jid=JID, errtype="E", message="\u20ac" * 400).message == "\u20ac" * 333
    assert Fail(jid=JID, errtype="E", message="\U0001f600" * 300).message == "\U0001f600" * 250
    assert Fail(jid=JID, errtype="E", message="a" * 998 + "\u20ac").message == "a" * 998


def test_fail_keeps_the_last_50_backtrace_lines() -> None:
    # A Python traceback ends with the innermost frame and the exception: keep those.
    lines = [f"frame {i}" for i in range(120)]
    fail = Fail(jid=JID, errtype="E", message="m", backtrace=iter(lines))
    assert fail.backtrace == tuple(lines[-50:])
    assert json.loads(fail.encode()[5:])["backtrace"] == lines[-50:]
    assert MAX_BACKTRACE_LINES == 50


@pytest.mark.parametrize(
    ("setting", "kept"),
    [(None, 50), (0, 0), (1, 1), (7, 7), (50, 50), (51, 50), (1000, 50), (-3, 0)],
)
def test_cut_backtrace_keeps_the_last_lines_the_job_asks_for(
    setting: int | None, kept: int
) -> None:
    lines = [f"frame {i}" for i in range(120)]
    assert cut_backtrace(lines, setting) == tuple(lines[len(lines) - kept :])
    assert cut_backtrace(iter(lines[:3]), setting) == tuple(lines[:3][3 - min(kept, 3) :])


@example(lines=["x"] * 26, setting=None)  # fewer lines than the limit, over half of it
@given(st.lists(st.text(max_size=5), max_size=80), st.none() | st.integers(-5, 120))
def test_cut_backtrace_is_the_longest_suffix_within_the_limit(
    lines: list[str], setting: int | None
) -> None:
    cut = cut_backtrace(lines, setting)
    limit = MAX_BACKTRACE_LINES if setting is None else max(0, min(setting, 50))
    assert len(cut) == min(len(lines), limit)
    assert list(cut) == lines[len(lines) - len(cut) :]
    fail = Fail(jid=JID, errtype="E", message="m", backtrace=lines)
    assert fail.backtrace == cut_backtrace(lines, None)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=1200), st.sampled_from(["errtype", "message"]))
def test_fail_truncation_is_the_longest_fitting_prefix(text: str, field: str) -> None:
    limit = 100 if field == "errtype" else 1000
    fields = {"errtype": "E", "message": "m", field: text}
    kept: str = getattr(Fail(jid=JID, **fields), field)
    assert text.startswith(kept)
    assert len(kept.encode()) <= limit
    if kept != text:
        assert len((text[: len(kept) + 1]).encode()) > limit


@pytest.mark.parametrize(
    "fields",
    [
        {"errtype": None, "message": "m"},
        {"errtype": "E", "message": 5},
        {"errtype": b"E", "message": "m"},
        {"errtype": "E", "message": "m", "backtrace": ["ok", 5]},
        {"errtype": "E", "message": "m", "backtrace": [None]},
        {"errtype": "E", "message": "m", "jid": "short"},
    ],
)
def test_fail_validation(fields: dict[str, Any]) -> None:
    fields.setdefault("jid", JID)
    with pytest.raises(LocalProtocolError):
        Fail(**fields)


def test_fail_backtrace_given_as_one_string() -> None:
    # labels= refuses a bare string and jids= wraps one; backtrace= splits it into characters.
    try:
        fail = Fail(jid=JID, errtype="E", message="m", backtrace="Traceback (most recent call)")
    except LocalProtocolError:
        return
    assert fail.backtrace == ("Traceback (most recent call)",)


@pytest.mark.parametrize("field", ["errtype", "message"])
def test_fail_surrogates_do_not_depend_on_length(field: str) -> None:
    # Exception texts can hold surrogate-escaped file names (os.fsdecode); a worker must
    # still be able to FAIL the job. Today the outcome depends only on the field's length.
    limit = 100 if field == "errtype" else 1000

    def outcome(text: str) -> str:
        try:
            Fail(jid=JID, **{"errtype": "E", "message": "m", field: text})
        except LocalProtocolError:
            return "refused"
        return "sent"

    assert outcome("no such file \udcff") == outcome("no such file \udcff" + "x" * limit)


# -- validation of the other commands --------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "error", "argument"),
    [
        (lambda: Fetch(queues=[]), ArgumentError, "queues"),
        (lambda: Fetch(queues=""), ArgumentError, "queues[0]"),
        (lambda: Fetch(queues=["ok", "not ok"]), ArgumentError, "queues[1]"),
        (lambda: Fetch(queues=["a*"]), ArgumentError, "queues[0]"),
        (lambda: Fetch(queues=[ALL_QUEUES]), ArgumentError, "queues[0]"),
        (lambda: Fetch(queues=5), ArgumentTypeError, "queues"),
        (lambda: Fetch(queues=[5]), ArgumentTypeError, "queues[0]"),
        (lambda: Push(job=JOB.to_wire()), ArgumentTypeError, "job"),
        (lambda: PushBulk(jobs=JOB), ArgumentTypeError, "jobs"),
        (lambda: PushBulk(jobs=[]), ArgumentError, "jobs"),
        (lambda: PushBulk(jobs=[JOB, {"jid": JID}]), ArgumentTypeError, "jobs[1]"),
        (lambda: Ack(jid="short"), ArgumentError, "jid"),
        (lambda: Ack(jid=None), ArgumentTypeError, "jid"),
        (lambda: Beat(wid=""), ArgumentError, "wid"),
        (lambda: Beat(wid="two words"), ArgumentError, "wid"),
        (lambda: Beat(wid="tab\there"), ArgumentError, "wid"),
        (lambda: Beat(wid=5), ArgumentTypeError, "wid"),
        (lambda: Beat(wid="w", rss_kb=-1), ArgumentError, "rss_kb"),
        (lambda: Beat(wid="w", rss_kb=1.5), ArgumentTypeError, "rss_kb"),
        (lambda: Beat(wid="w", rss_kb=True), ArgumentTypeError, "rss_kb"),
        (lambda: Beat(wid="w", current_state="sleepy"), ArgumentError, "current_state"),
        (lambda: Mutate(operation="explode", target="dead"), ArgumentError, "operation"),
        (lambda: Mutate(operation="kill", target="queues"), ArgumentError, "target"),
        (lambda: Mutate(operation="kill", target="dead", jids=[JID, 5]), ArgumentTypeError, "jids"),
        (lambda: Mutate(operation="kill", target="dead", pattern=5), ArgumentTypeError, "pattern"),
        (
            lambda: Mutate(operation="kill", target="dead", jobtype=["T"]),
            ArgumentTypeError,
            "jobtype",
        ),
        (lambda: QueuePause(queues=[]), ArgumentError, "queues"),
        (lambda: QueuePause(queues=["a b"]), ArgumentError, "queues[0]"),
        (lambda: QueuePause(queues=["*", "a"]), ArgumentError, "queues[0]"),
        (lambda: QueueResume(queues=["a", "*"]), ArgumentError, "queues[1]"),
        (lambda: QueueRemove(queues=""), ArgumentError, "queues[0]"),
        (lambda: QueueLatency(queues=ALL_QUEUES), ArgumentError, "queues[0]"),
        (lambda: QueueLatency(queues=["a", "*"]), ArgumentError, "queues[1]"),
        (lambda: QueueLatency(queues=[]), ArgumentError, "queues"),
        (lambda: BatchNew(), ArgumentError, "callback"),
        (lambda: BatchNew(description="no callbacks"), ArgumentError, "callback"),
        (lambda: BatchNew(success=JOB.to_wire()), ArgumentTypeError, "success"),
        (lambda: BatchNew(success=JOB, description=5), ArgumentTypeError, "description"),
        (lambda: BatchNew(success=JOB, parent_bid="two words"), ArgumentError, "parent_bid"),
        (lambda: BatchNew(success=JOB, parent_bid=""), ArgumentError, "parent_bid"),
        (lambda: BatchOpen(bid="two words"), ArgumentError, "bid"),
        (lambda: BatchOpen(bid=""), ArgumentError, "bid"),
        (lambda: BatchCommit(bid="a\nb"), ArgumentError, "bid"),
        (lambda: BatchStatus(bid=None), ArgumentTypeError, "bid"),
        (lambda: TrackGet(jid="two words"), ArgumentError, "jid"),
        (lambda: TrackGet(jid=""), ArgumentError, "jid"),
        (lambda: TrackSet(jid="short"), ArgumentError, "jid"),
        (lambda: TrackSet(jid=JID, percent=101), ArgumentError, "percent"),
        (lambda: TrackSet(jid=JID, percent=-1), ArgumentError, "percent"),
        (lambda: TrackSet(jid=JID, description=5), ArgumentTypeError, "description"),
        (
            lambda: TrackSet(jid=JID, reserve_until=datetime(2026, 7, 1, 12)),
            ArgumentError,
            "reserve_until",
        ),
        (
            lambda: TrackSet(jid=JID, reserve_until="2026-07-01T12:00:00Z"),
            ArgumentTypeError,
            "reserve_until",
        ),
        (lambda: ClientInfo(wid="two words"), ArgumentError, "wid"),
        (lambda: ClientInfo(pid="4242"), ArgumentTypeError, "pid"),
        (lambda: ClientInfo(labels="one string"), ArgumentTypeError, "labels"),
        (lambda: ClientInfo(labels=["ok", 5]), ArgumentTypeError, "labels"),
        (lambda: ClientInfo(hostname="h\udcff"), ArgumentError, "hostname"),
        (
            lambda: Fail(jid=JID, errtype="E", message="m", backtrace=5),
            ArgumentTypeError,
            "backtrace",
        ),
    ],
)
def test_invalid_command_arguments_raise_an_argument_error_naming_them(
    build: Any, error: type[LocalProtocolError], argument: str
) -> None:
    # ArgumentError is also a ValueError, ArgumentTypeError a TypeError: what Python raises.
    with pytest.raises(error) as raised:
        build()
    assert isinstance(raised.value, LocalProtocolError)
    assert argument in str(raised.value)


def test_mutate_accepts_enum_members_and_values() -> None:
    assert Mutate(operation=MutateOperation.KILL, target="dead") == Mutate(
        operation="kill", target=MutateTarget.DEAD
    )


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(MutateOperation),
    st.sampled_from(MutateTarget),
    st.lists(st.text(max_size=12), max_size=3),
    st.none() | st.text(max_size=20),
    st.none() | st.text(max_size=20),
)
def test_mutate_never_has_a_raw_space(
    operation: MutateOperation,
    target: MutateTarget,
    jid_list: list[str],
    pattern: str | None,
    jobtype: str | None,
) -> None:
    line = Mutate(
        operation=operation, target=target, jids=jid_list, pattern=pattern, jobtype=jobtype
    ).encode()
    assert line.startswith(b"MUTATE ")
    argument = line[len(b"MUTATE ") : -2]
    assert b" " not in argument
    payload = json.loads(argument)
    assert (payload["cmd"], payload["target"]) == (operation.value, target.value)
    expected_filter = {
        key: value
        for key, value in (("jids", jid_list), ("regexp", pattern), ("jobtype", jobtype))
        if value
    }
    assert payload.get("filter", {}) == expected_filter


# -- lines that crash a v1.9.4 server --------------------------------------------------------

CRASH_LINES = {
    b"PUSH",
    b"PUSHB",
    b"ACK",
    b"FAIL",
    b"BEAT",
    b"QUEUE",
    b"QUEUE PAUSE",
    b"QUEUE RESUME",
    b"QUEUE REMOVE",
}
BARE_VERBS = {b"INFO", b"FLUSH", b"END"}
JSON_ARGUMENT = {b"PUSH", b"PUSHB", b"ACK", b"FAIL", b"BEAT", b"MUTATE"}

names_or_all = st.lists(queue_names, min_size=1, max_size=4) | st.just(ALL_QUEUES)
commands = st.one_of(
    st.builds(Push, job=jobs),
    st.builds(PushBulk, jobs=st.lists(jobs, min_size=1, max_size=3)),
    st.builds(Fetch, queues=st.lists(queue_names, min_size=1, max_size=4) | queue_names),
    st.builds(Ack, jid=jids),
    st.builds(
        Fail,
        jid=jids,
        errtype=st.text(max_size=150),
        message=st.text(max_size=1100),
        backtrace=st.lists(st.text(max_size=30), max_size=60),
    ),
    st.builds(
        Beat,
        wid=words,
        rss_kb=st.none() | st.integers(0, 2**40),
        current_state=st.none() | st.sampled_from(WorkerState),
    ),
    st.builds(Info),
    st.builds(Flush),
    st.builds(End),
    st.builds(
        Mutate,
        operation=st.sampled_from(MutateOperation),
        target=st.sampled_from(MutateTarget),
        jids=st.lists(st.text(max_size=10), max_size=3),
        pattern=st.none() | st.text(max_size=10),
        jobtype=st.none() | st.text(max_size=10),
    ),
    st.builds(QueuePause, queues=names_or_all),
    st.builds(QueueResume, queues=names_or_all),
    st.builds(QueueRemove, queues=names_or_all),
    st.builds(QueueLatency, queues=st.lists(queue_names, min_size=1, max_size=4)),
    st.builds(
        BatchNew,
        success=jobs,
        complete=st.none() | jobs,
        description=st.none() | st.text(max_size=20),
        parent_bid=st.none() | words,
    ),
    st.builds(BatchOpen, bid=words),
    st.builds(BatchCommit, bid=words),
    st.builds(BatchStatus, bid=words),
    st.builds(TrackGet, jid=words),
    st.builds(
        TrackSet,
        jid=jids,
        percent=st.none() | st.integers(0, 100),
        description=st.none() | st.text(max_size=20),
        reserve_until=st.none() | aware_datetimes,
    ),
)


@settings(max_examples=400, deadline=None)
@given(commands)
def test_every_line_is_one_crlf_line_with_an_argument(command: Command) -> None:
    line = command.encode()
    assert line.endswith(b"\r\n")
    body = line[:-2]
    assert b"\r" not in body
    assert b"\n" not in body
    body.decode("utf-8")  # valid UTF-8
    assert body not in CRASH_LINES
    verb = type(command).verb.encode()
    if body in BARE_VERBS:
        assert body == verb
        return
    head, space, argument = body.partition(b" ")
    assert head == verb
    assert space == b" "
    assert argument.strip()
    assert not argument.startswith(b" ")
    if verb in JSON_ARGUMENT:
        json.loads(argument)
    elif verb in (b"QUEUE", b"BATCH", b"TRACK"):
        sub, space, rest = argument.partition(b" ")
        assert sub in {
            b"PAUSE",
            b"RESUME",
            b"REMOVE",
            b"LATENCY",
            b"NEW",
            b"OPEN",
            b"COMMIT",
            b"STATUS",
            b"GET",
            b"SET",
        }
        assert space == b" "
        assert rest
        if sub in {b"NEW", b"SET"}:
            json.loads(rest)
        else:  # single spaces between non-empty words
            assert all(rest.split(b" "))
    else:
        assert verb == b"FETCH"
        assert all(argument.split(b" "))


@pytest.mark.parametrize(("timeout", "waited"), [(0.5, 5.0), (5.0, 5.0), (30.0, 30.0)])
def test_a_fetch_reply_is_awaited_at_least_the_floor(timeout: float, waited: float) -> None:
    """The server holds a FETCH ~2 s (up to its 5 s command context): a client that gave up
    sooner would leave the job it hands out reserved for a connection nobody reads."""
    assert FETCH_WAIT_FLOOR == 5.0
    assert Fetch.reply_timeout(timeout) == waited
    assert Fetch(queues=("q",)).reply_timeout(timeout) == waited


def test_the_worker_reply_timeout_is_never_below_the_fetch_floor() -> None:
    assert MIN_REPLY_TIMEOUT >= FETCH_WAIT_FLOOR


def test_track_set_sends_a_reserve_until_whose_offset_has_seconds_in_utc() -> None:
    # As for a job's at: RFC 3339 offsets are whole minutes; isoformat would write +01:00:30.
    moment = datetime(2026, 7, 1, 12, 0, tzinfo=timezone(timedelta(hours=1, seconds=30)))
    command = TrackSet(jid=JID, reserve_until=moment)
    assert command.reserve_until == moment
    payload = json.loads(command.encode()[len(b"TRACK SET ") :])
    assert payload["reserve_until"] == "2026-07-01T10:59:30+00:00"
