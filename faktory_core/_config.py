"""A worker's and a client's settings, checked once when they are built."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

import attrs

from ._connection import ClientInfo
from ._errors import ArgumentError, ArgumentTypeError, OptionError
from ._job import DEFAULT_QUEUE, check_queue_name
from ._resp import DEFAULT_MAX_REPLY_SIZE
from .commands import FETCH_WAIT_FLOOR, _word

__all__ = [
    "DEFAULT_CONNECTIONS",
    "MAX_ABORT_GRACE",
    "MAX_CLIENT_TIMEOUT",
    "MAX_CONCURRENCY",
    "MAX_CONNECT_TIMEOUT",
    "MAX_HEARTBEAT_INTERVAL",
    "MAX_POOL_SIZE",
    "MAX_QUEUE_WEIGHT",
    "MAX_RECONNECT",
    "MAX_REPLY_TIMEOUT",
    "MAX_SHUTDOWN_TIMEOUT",
    "MAX_TIME_LIMIT",
    "MIN_HEARTBEAT_INTERVAL",
    "MIN_RECONNECT_BASE",
    "MIN_REPLY_TIMEOUT",
    "ClientConfig",
    "WorkerConfig",
    "check_seconds",
]

# The bounds of every option, each documented in docs/configuration.md. Every time is finite:
# the adapters hand them to select(), sleep() and wait_for(), where inf or NaN breaks a thread.

#: A day: past it the job has outlived its longest server reservation (86,400 s) anyway.
MAX_SHUTDOWN_TIMEOUT: Final = 86_400
#: An hour for aborted jobs to clean up.
MAX_ABORT_GRACE: Final = 3_600
#: BEATs no more often than ten a second: a smaller interval only loads the server.
MIN_HEARTBEAT_INTERVAL: Final = 0.1
#: The server reaps a worker 60 s after its last BEAT: 30 s leaves room for one late beat.
MAX_HEARTBEAT_INTERVAL: Final = 30
#: 30 days, for ``job_time_limit`` and every ``time_limits`` value.
MAX_TIME_LIMIT: Final = 2_592_000
#: A FETCH waits ~2 s on the server (up to its 5 s command context): a link whose reply is due
#: sooner is dropped while its FETCH is pending, and the job it hands out stays reserved. The
#: worker's links carry FETCHes, so their reply timeout is never below ``FETCH_WAIT_FLOOR``.
MIN_REPLY_TIMEOUT: Final = int(FETCH_WAIT_FLOOR)
MAX_REPLY_TIMEOUT: Final = 3_600
#: The backoff doubles at most 32 times: a smaller first delay would retry in a tight loop.
MIN_RECONNECT_BASE: Final = 0.01
#: The longest wait between two reconnects (``reconnect_base`` and ``reconnect_cap``).
MAX_RECONNECT: Final = 3_600
#: How long opening one connection (TCP, TLS, handshake) may take.
MAX_CONNECT_TIMEOUT: Final = 300
#: A sanity maximum, not the server's limit (2,000 connections by default, configurable).
MAX_CONCURRENCY: Final = 10_000
#: Job connections a worker opens by default (fewer when its concurrency is lower): enough to
#: keep thousands of slots fed, few enough for many workers to share a server.
DEFAULT_CONNECTIONS: Final = 20
#: Weighted queue order costs the same whatever the weights; this only catches typos.
MAX_QUEUE_WEIGHT: Final = 1_000_000
#: A Client's connections (each one a server connection, like a worker's slots).
MAX_POOL_SIZE: Final = 1_000
#: How long one Client command may take.
MAX_CLIENT_TIMEOUT: Final = 3_600


def _number(value: Any) -> bool:
    """A real number: not a bool, not NaN (NaN compares false with everything)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def check_seconds(name: str, value: Any, low: float, high: float, *, above: bool) -> None:
    """Refuse anything but a finite number of seconds within ``low``..``high``.

    With ``above``, ``low`` itself is refused (the time must be longer than it).
    """
    if _number(value) and (low < value if above else low <= value) and value <= high:
        return
    bounds = f"above {low} and at most {high}" if above else f"from {low} to {high}"
    raise OptionError(f"{name} must be a finite number of seconds {bounds}, got {value!r}")


def _seconds(
    low: float, high: float, *, above: bool = True, optional: bool = False
) -> Callable[..., None]:
    """An attrs validator: ``check_seconds`` under the field's name (and None if ``optional``)."""

    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not (optional and value is None):
            check_seconds(attribute.name, value, low, high, above=above)

    return check


def _count(low: int, high: int) -> Callable[..., None]:
    """An attrs validator: an integer (not a bool) within ``low``..``high``."""

    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if type(value) is not int or not low <= value <= high:
            raise OptionError(
                f"{attribute.name} must be an integer from {low} to {high}, got {value!r}"
            )

    return check


def _utf8(what: str, value: str) -> str:
    """``value``, if UTF-8 can carry it: a lone surrogate (an undecodable byte of argv or the
    environment) cannot, and would make every HELLO fail."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise OptionError(f"{what} {value!r} is not valid UTF-8") from None
    return value


@contextlib.contextmanager
def _as_option() -> Iterator[None]:
    """A shared check's ArgumentError or ArgumentTypeError, as the option's OptionError."""
    try:
        yield
    except (ArgumentError, ArgumentTypeError) as error:
        raise OptionError(str(error)) from None


def _queue_name(name: object) -> None:
    with _as_option():
        check_queue_name(name, "queues: each name")


def _queues(value: Sequence[str] | Mapping[str, int]) -> tuple[str, ...] | dict[str, int]:
    if isinstance(value, str):
        value = (value,)
    if isinstance(value, Mapping):
        weights = dict(value)
        for name, weight in weights.items():
            _queue_name(name)
            if type(weight) is not int or not 1 <= weight <= MAX_QUEUE_WEIGHT:
                raise OptionError(
                    f"queues: the weight of {name!r} must be an integer from 1 to "
                    f"{MAX_QUEUE_WEIGHT}, got {weight!r}"
                )
        if not weights:
            raise OptionError("queues: a worker needs at least one queue")
        return weights
    if not isinstance(value, Iterable):
        raise OptionError(
            "queues must be a list of queue names or a {name: weight} mapping, "
            f"got {type(value).__name__}"
        )
    names = tuple(dict.fromkeys(value))
    if not names:
        raise OptionError("queues: a worker needs at least one queue")
    for name in names:
        _queue_name(name)
    return names


def _time_limits(value: Mapping[str, float]) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise OptionError(
            f"time_limits must be a mapping of job types to seconds, got {type(value).__name__}"
        )
    limits = dict(value)
    for jobtype, limit in limits.items():
        if not isinstance(jobtype, str) or not jobtype:
            raise OptionError(f"time_limits keys must be job type names, got {jobtype!r}")
        check_seconds(f"time_limits[{jobtype!r}]", limit, 0, MAX_TIME_LIMIT, above=True)
    return limits


def _jobtypes(value: Iterable[str] | None) -> frozenset[str] | None:
    if value is None:
        return None
    names = frozenset((value,) if isinstance(value, str) else value)
    if not all(isinstance(name, str) and name for name in names):
        raise OptionError("jobtypes must be non-empty strings")
    return names


def _max_reply_size(_: object, __: object, value: Any) -> None:
    if type(value) is not int or value < 16:
        raise OptionError(f"max_reply_size must be an integer of at least 16: {value!r}")


def _wid(value: object) -> str:
    with _as_option():
        word = _word(value, "wid")
    return _utf8("wid", word)


def _labels(value: Iterable[str]) -> tuple[str, ...]:
    if not isinstance(value, Iterable):
        raise OptionError(f"labels must be a sequence of strings, got {type(value).__name__}")
    with _as_option():
        labels = ClientInfo(labels=value).labels  # a sequence of strings, not one string
    for label in labels:
        _utf8("label", label)
    return labels


def _hostname(_: object, __: object, value: Any) -> None:
    if isinstance(value, str):
        _utf8("hostname", value)  # ClientInfo refuses anything but a string or None


def _password(_: object, __: object, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise OptionError(f"password must be a string or None, got {type(value).__name__}")
    try:  # os.environ keeps undecodable bytes as lone surrogates: those bytes are sent
        value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise OptionError("password is not valid UTF-8") from None


def _boolean(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, bool):
        raise OptionError(f"{attribute.name} must be True or False, got {value!r}")


def _queue_order(_: object, __: object, value: Any) -> None:
    if value is not None and not callable(value):
        raise OptionError(f"queue_order must be a callable or None, got {value!r}")


@attrs.frozen(kw_only=True)
class WorkerConfig:
    """Everything that shapes a worker's behaviour; times are in seconds.

    Every option is checked here, once, with the bounds documented in docs/configuration.md:
    a bad one raises OptionError (an ArgumentError: a LocalProtocolError and a ValueError)
    naming it, never a failure later in a running worker.
    """

    wid: str = attrs.field(converter=_wid)
    hostname: str | None = attrs.field(default=None, validator=_hostname)
    pid: int | None = None
    labels: tuple[str, ...] = attrs.field(default=(), converter=_labels)
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False, validator=_password)
    #: Queue names in strict priority order, or a mapping of names to integer weights
    #: (1 to MAX_QUEUE_WEIGHT).
    queues: tuple[str, ...] | dict[str, int] = attrs.field(
        default=(DEFAULT_QUEUE,), converter=_queues
    )
    #: Overrides ``queues``: returns the queue list of each FETCH.
    queue_order: Callable[[], Iterable[str]] | None = attrs.field(
        default=None, validator=_queue_order
    )
    #: Jobs run at the same time (1 to MAX_CONCURRENCY).
    concurrency: int = attrs.field(default=10, validator=_count(1, MAX_CONCURRENCY))
    #: Server connections that carry FETCH, ACK and FAIL for those jobs, at most (1 to
    #: MAX_CONCURRENCY; never more than ``concurrency``): see :attr:`job_links`.
    connections: int = attrs.field(
        default=DEFAULT_CONNECTIONS, validator=_count(1, MAX_CONCURRENCY)
    )
    shutdown_timeout: float = attrs.field(
        default=25.0, validator=_seconds(0, MAX_SHUTDOWN_TIMEOUT, above=False)
    )
    abort_grace: float = attrs.field(
        default=3.0, validator=_seconds(0, MAX_ABORT_GRACE, above=False)
    )
    heartbeat_interval: float = attrs.field(
        default=15.0,
        validator=_seconds(MIN_HEARTBEAT_INTERVAL, MAX_HEARTBEAT_INTERVAL, above=False),
    )
    #: Abort and FAIL any job running longer than this (None: no limit)...
    job_time_limit: float | None = attrs.field(
        default=None, validator=_seconds(0, MAX_TIME_LIMIT, optional=True)
    )
    #: ...or than the limit given for its job type here.
    time_limits: dict[str, float] = attrs.field(factory=dict, converter=_time_limits)
    #: Job types this worker can run; others are FAILed as UnknownJobType (None: any).
    jobtypes: frozenset[str] | None = attrs.field(default=None, converter=_jobtypes)
    #: Burst mode: after a FETCH comes back empty, fetch no more and exit once running jobs
    #: finish (no shutdown timeout applies).
    burst: bool = attrs.field(default=False, validator=_boolean)
    #: How long opening a connection may take (the adapters apply it).
    connect_timeout: float = attrs.field(default=5.0, validator=_seconds(0, MAX_CONNECT_TIMEOUT))
    #: A connection whose awaited reply takes longer than this is dropped and re-opened.
    reply_timeout: float = attrs.field(
        default=10.0, validator=_seconds(MIN_REPLY_TIMEOUT, MAX_REPLY_TIMEOUT, above=False)
    )
    #: Reconnect backoff: the first wait, doubling up to the cap (base <= cap).
    reconnect_base: float = attrs.field(
        default=0.5, validator=_seconds(MIN_RECONNECT_BASE, MAX_RECONNECT, above=False)
    )
    reconnect_cap: float = attrs.field(
        default=30.0, validator=_seconds(MIN_RECONNECT_BASE, MAX_RECONNECT, above=False)
    )
    max_reply_size: int = attrs.field(default=DEFAULT_MAX_REPLY_SIZE, validator=_max_reply_size)

    def __attrs_post_init__(self) -> None:
        if self.reconnect_base > self.reconnect_cap:
            raise OptionError(
                f"reconnect_base must be at most reconnect_cap ({self.reconnect_cap!r}), "
                f"got {self.reconnect_base!r}"
            )
        try:
            self.client_info()  # check the HELLO fields now, not at the first connection
        except (ArgumentError, ArgumentTypeError) as error:
            raise OptionError(str(error)) from None

    def client_info(self) -> ClientInfo:
        """What every connection of this worker says in HELLO."""
        return ClientInfo(
            wid=self.wid,
            hostname=self.hostname,
            pid=self.pid,
            labels=self.labels,
            username=self.username,
        )

    @property
    def job_links(self) -> int:
        """How many job connections the worker opens: ``connections``, or ``concurrency`` if
        that is lower (a FETCH fills one slot, so more links than slots would sit idle). The
        heartbeat opens one more."""
        return min(self.connections, self.concurrency)

    def time_limit(self, jobtype: str) -> float | None:
        """The time limit of a job of this type, if any."""
        return self.time_limits.get(jobtype, self.job_time_limit)

    @property
    def push_queue(self) -> str:
        """Where a job type run by this worker pushes unless told otherwise, so that the
        worker sees its jobs: the default queue if it fetches it, else its first queue (the
        first in priority order, or the first named of a weighted mapping)."""
        queues = self.queues
        return DEFAULT_QUEUE if DEFAULT_QUEUE in queues else next(iter(queues))


@attrs.frozen(kw_only=True)
class ClientConfig:
    """A Client's settings, checked like a worker's (OptionError naming the option)."""

    #: Connections kept open at most, each a server connection (1 to MAX_POOL_SIZE).
    pool_size: int = attrs.field(default=4, validator=_count(1, MAX_POOL_SIZE))
    #: How long one command may take.
    timeout: float = attrs.field(default=10.0, validator=_seconds(0, MAX_CLIENT_TIMEOUT))
    #: How long opening a connection may take.
    connect_timeout: float = attrs.field(default=5.0, validator=_seconds(0, MAX_CONNECT_TIMEOUT))
