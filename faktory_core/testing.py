"""Helpers for testing code that uses Faktory: hypothesis strategies, and handlers run inline.

Needs hypothesis: ``pip install 'faktory-sansio[testing]'``. Like the rest of the core it does
no I/O. :func:`run_inline` calls a handler with its job's args as a worker would receive them:
encoded as PUSH sends them, stored the way the Faktory server stores them, decoded as FETCH
returns them. So an argument that would not survive production fails the test too.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Final, TypeVar

try:
    from hypothesis import strategies as st
except ImportError as error:
    raise ImportError(
        "faktory_core.testing needs hypothesis: pip install 'faktory-sansio[testing]'",
        name=__name__,
    ) from error

from ._connection import Connection
from ._errors import LocalProtocolError
from ._job import MAX_RESERVE_FOR, Job
from ._resp import ErrorReply, Reply, dump_json
from .commands import Fetch, Push
from .events import Fetched, InvalidJobFetched

__all__ = [
    "as_fetched",
    "chunkings",
    "jobs",
    "json_values",
    "replies",
    "reply_streams",
    "run_inline",
]

R = TypeVar("R")

#: Integers up to this magnitude survive the server's float64 numbers exactly.
_EXACT_INT: Final = 2**53
#: Whole numbers below this come back from the server without a fraction: as ints.
_GO_EXPONENT_FROM: Final = 1e21
_QUEUE_CHARS: Final = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
_LETTERS: Final = "abcdefghijklmnopqrstuvwxyz"
_HANDSHAKE: Final = b'+HI {"v":2}\r\n+OK\r\n'


# -- jobs ------------------------------------------------------------------------------------


def _survives(number: float) -> bool:
    return not (number.is_integer() and abs(number) < _GO_EXPONENT_FROM)


def json_values(*, max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """JSON values that reach a handler equal to what was pushed, and of the same types.

    Integers stay within 2**53 and floats are not whole numbers: the server keeps numbers as
    float64, so a bigger integer loses precision and ``2.0`` comes back as ``2`` (see
    :func:`as_fetched`). Objects come back with their keys sorted.
    """
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-_EXACT_INT, max_value=_EXACT_INT),
        st.floats(allow_nan=False, allow_infinity=False).filter(_survives),
        st.text(max_size=12),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(st.text(max_size=8), inner, max_size=4),
        ),
        max_leaves=max_leaves,
    )


def _aware_datetimes() -> st.SearchStrategy[datetime]:
    low, high = datetime(1971, 1, 1), datetime(2999, 12, 31)
    offsets = st.integers(min_value=-23 * 60, max_value=23 * 60).map(
        lambda minutes: timezone(timedelta(minutes=minutes))
    )
    return st.datetimes(min_value=low, max_value=high, timezones=st.just(UTC) | offsets)


def jobs(
    jobtype: str | st.SearchStrategy[str] | None = None,
    args: st.SearchStrategy[list[Any]] | None = None,
) -> st.SearchStrategy[Job]:
    """Valid :class:`Job` values as a producer pushes them (no server-set fields).

    ``jobtype``: a fixed name or a strategy (default: any); ``args``: a strategy of argument
    lists (default: up to four :func:`json_values`).
    """
    if jobtype is None:
        jobtype = st.text(min_size=1, max_size=16)
    elif isinstance(jobtype, str):
        jobtype = st.just(jobtype)
    if args is None:
        args = st.lists(json_values(), max_size=4)
    return st.builds(
        Job,
        jid=st.text(min_size=8, max_size=24),
        jobtype=jobtype,
        args=args,
        queue=st.text(st.sampled_from(_QUEUE_CHARS), min_size=1, max_size=16),
        retry=st.none() | st.integers(min_value=-1, max_value=25),
        reserve_for=st.none() | st.integers(min_value=60, max_value=MAX_RESERVE_FOR),
        at=st.none() | _aware_datetimes(),
        backtrace=st.none() | st.integers(min_value=0, max_value=50),
        # Custom keys starting with "_" are reserved for the server.
        custom=st.none()
        | st.dictionaries(st.text(_LETTERS, min_size=1, max_size=8), json_values(), max_size=3),
    )


# -- replies ---------------------------------------------------------------------------------

# One reply line: any text without CR or LF. An error code: one word.
_line_text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=24)
_error_code = st.text(
    st.characters(codec="utf-8", exclude_characters="\r\n ", exclude_categories=["Zs", "Cc"]),
    min_size=1,
    max_size=10,
)
# Bulk bodies: arbitrary bytes, often made of the bytes that matter to the framing.
_bulk_body = st.one_of(
    st.binary(max_size=40),
    st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"$", b"+", b"-", b":", b"x", b"\x00"])).map(
        b"".join
    ),
)
_LARGEST_INTEGER: Final = 10**20 - 1  # the parser reads at most 20 digits


def _simple(text: str) -> tuple[bytes, Reply]:
    return b"+" + text.encode() + b"\r\n", text


def _error(code: str, message: str) -> tuple[bytes, Reply]:
    return b"-" + f"{code} {message}".encode() + b"\r\n", ErrorReply(code=code, message=message)


def _bulk(body: bytes | None) -> tuple[bytes, Reply]:
    if body is None:
        return b"$-1\r\n", None
    return b"$%d\r\n%s\r\n" % (len(body), body), body


def _integer(value: int) -> tuple[bytes, Reply]:
    return b":%d\r\n" % value, value


def replies() -> st.SearchStrategy[tuple[bytes, Reply]]:
    """One well-formed RESP reply: ``(its bytes, what ReplyParser.next_reply() returns)``."""
    return st.one_of(
        _line_text.map(_simple),
        st.builds(_error, _error_code, _line_text),
        st.builds(_bulk, st.none() | _bulk_body),
        st.builds(_integer, st.integers(min_value=-_LARGEST_INTEGER, max_value=_LARGEST_INTEGER)),
    )


def reply_streams(max_size: int = 12) -> st.SearchStrategy[tuple[bytes, list[Reply]]]:
    """Several replies back to back: ``(all the bytes, the parsed replies in order)``."""
    return st.lists(replies(), max_size=max_size).map(
        lambda items: (b"".join(data for data, _ in items), [reply for _, reply in items])
    )


@st.composite
def chunkings(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut at random points into non-empty chunks, sometimes byte by byte.

    No chunk is empty: ``b""`` means end of stream to :meth:`Connection.receive_data`.
    """
    if len(data) < 2:
        return [data] if data else []
    inner = st.integers(min_value=1, max_value=len(data) - 1)
    # Shrinks towards one chunk; byte by byte is the other extreme.
    points = draw(st.sets(inner, max_size=16) | st.just(set(range(1, len(data)))))
    bounds = [0, *sorted(points), len(data)]
    return [data[start:stop] for start, stop in itertools.pairwise(bounds)]


# -- handlers --------------------------------------------------------------------------------


def _as_the_server_stores(value: Any) -> Any:
    """A JSON value re-encoded as the Go server does: numbers as float64, object keys sorted."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:
            raise LocalProtocolError(
                f"the server refuses the job: {value} does not fit a float64"
            ) from None
        # Go writes whole numbers below 1e21 in plain digits, the shortest that round-trip
        # (2**60 as 1152921504606847000): they come back as those ints.
        return number if _survives(number) else int(Decimal(repr(number)))
    if isinstance(value, list):
        return [_as_the_server_stores(item) for item in value]
    return {key: _as_the_server_stores(value[key]) for key in sorted(value)}


def as_fetched(job: Job) -> Job:
    """``job`` as a worker fetches it after a push; raises where the push would fail.

    The job is encoded as PUSH sends it (:class:`LocalProtocolError` for args that are not
    JSON, such as a datetime), its args and custom values are stored the way the server stores
    them (integers beyond 2**53 lose precision, whole floats become ints, object keys are
    sorted, an empty ``custom`` and a zero ``backtrace`` are dropped; PUSH sends a missing
    retry as ``DEFAULT_RETRY``), and the reply is decoded as FETCH decodes it (a tuple comes
    back as a list).
    Timestamps the server adds (``created_at``, ``enqueued_at``) are left out.
    """
    line = Push(job=job).encode()
    payload = json.loads(line.split(b" ", 1)[1])
    payload["args"] = _as_the_server_stores(payload["args"])
    if "custom" in payload:
        payload["custom"] = _as_the_server_stores(payload["custom"])
    for key in ("custom", "reserve_for", "backtrace"):
        if key in payload and not payload[key]:
            del payload[key]  # the server omits them at their zero value
    body = dump_json(payload).encode()

    connection = Connection()
    connection.receive_data(_HANDSHAKE)
    connection.next_event()  # Ready
    connection.send(Fetch(queues=[job.queue]))
    connection.receive_data(b"$%d\r\n%s\r\n" % (len(body), body))
    event = connection.next_event()
    if isinstance(event, InvalidJobFetched):
        raise LocalProtocolError(f"a worker could not run this job: {event.reason}")
    assert isinstance(event, Fetched)
    assert event.job is not None
    return event.job


def run_inline(handler: Callable[..., R], job: Job) -> R:
    """Call ``handler`` with the args of ``job`` as a worker receives them (:func:`as_fetched`).

    Returns what the handler returns: for an ``async def`` handler, a coroutine to await.
    Exceptions propagate. Nothing else of a worker runs: no middleware, no ``current_job()``
    (``faktory_adapters.testing.run_inline`` runs it inside a job context).
    """
    return handler(*as_fetched(job).args)
