"""A worker's settings, checked once when they are built."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from ._commands import _word
from ._connection import ClientInfo
from ._errors import LocalProtocolError
from ._job import check_queue_name
from ._resp import DEFAULT_MAX_REPLY_SIZE

__all__ = ["WorkerConfig"]


def _queues(value: Sequence[str] | Mapping[str, int]) -> tuple[str, ...] | dict[str, int]:
    if isinstance(value, str):
        value = (value,)
    if isinstance(value, Mapping):
        weights = dict(value)
        for name, weight in weights.items():
            check_queue_name(name)
            if type(weight) is not int or weight < 1:
                raise LocalProtocolError(f"queue weights must be positive integers: {name}")
        if not weights:
            raise LocalProtocolError("a worker needs at least one queue")
        return weights
    names = tuple(dict.fromkeys(value))
    if not names:
        raise LocalProtocolError("a worker needs at least one queue")
    for name in names:
        check_queue_name(name)
    return names


def _number(value: Any) -> bool:
    """A real number: not a bool, not NaN (NaN compares false with everything)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _positive(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not _number(value) or value <= 0:
        raise LocalProtocolError(f"{attribute.name} must be a positive number, got {value!r}")


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not _number(value) or value < 0:
        raise LocalProtocolError(f"{attribute.name} must be zero or more, got {value!r}")


def _optional_positive(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        _positive(instance, attribute, value)


def _concurrency(_: object, __: object, value: Any) -> None:
    if type(value) is not int or value < 1:
        raise LocalProtocolError(f"concurrency must be a positive integer, got {value!r}")


def _time_limits(value: Mapping[str, float]) -> dict[str, float]:
    limits = dict(value)
    for jobtype, limit in limits.items():
        if not _number(limit) or limit <= 0:
            raise LocalProtocolError(f"the time limit of {jobtype} must be positive")
    return limits


def _jobtypes(value: Iterable[str] | None) -> frozenset[str] | None:
    if value is None:
        return None
    names = frozenset((value,) if isinstance(value, str) else value)
    if not all(isinstance(name, str) and name for name in names):
        raise LocalProtocolError("jobtypes must be non-empty strings")
    return names


def _max_reply_size(_: object, __: object, value: Any) -> None:
    if type(value) is not int or value < 16:
        raise LocalProtocolError(f"max_reply_size must be an integer of at least 16: {value!r}")


def _wid(value: object) -> str:
    return _word(value, "wid")


def _labels(value: Iterable[str]) -> tuple[str, ...]:
    return ClientInfo(labels=value).labels


@attrs.frozen(kw_only=True)
class WorkerConfig:
    """Everything that shapes a worker's behaviour; times are in seconds."""

    wid: str = attrs.field(converter=_wid)
    hostname: str | None = None
    pid: int | None = None
    labels: tuple[str, ...] = attrs.field(default=(), converter=_labels)
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    #: Queue names in strict priority order, or a mapping of names to integer weights.
    queues: tuple[str, ...] | dict[str, int] = attrs.field(default=("default",), converter=_queues)
    #: Overrides ``queues``: returns the queue list of each FETCH.
    queue_order: Callable[[], Iterable[str]] | None = None
    concurrency: int = attrs.field(default=10, validator=_concurrency)
    shutdown_timeout: float = attrs.field(default=25.0, validator=_non_negative)
    abort_grace: float = attrs.field(default=3.0, validator=_non_negative)
    heartbeat_interval: float = attrs.field(default=15.0, validator=_positive)
    #: Abort and FAIL any job running longer than this (None: no limit)...
    job_time_limit: float | None = attrs.field(default=None, validator=_optional_positive)
    #: ...or than the limit given for its job type here.
    time_limits: dict[str, float] = attrs.field(factory=dict, converter=_time_limits)
    #: Job types this worker can run; others are FAILed as UnknownJobType (None: any).
    jobtypes: frozenset[str] | None = attrs.field(default=None, converter=_jobtypes)
    #: Burst mode: after a FETCH comes back empty, fetch no more and exit once running jobs
    #: finish (no shutdown timeout applies).
    burst: bool = False
    #: A connection whose awaited reply takes longer than this is dropped and re-opened.
    reply_timeout: float = attrs.field(default=10.0, validator=_positive)
    reconnect_base: float = attrs.field(default=0.5, validator=_positive)
    reconnect_cap: float = attrs.field(default=30.0, validator=_positive)
    max_reply_size: int = attrs.field(default=DEFAULT_MAX_REPLY_SIZE, validator=_max_reply_size)

    def __attrs_post_init__(self) -> None:
        self.client_info()  # check the HELLO fields now, not at the first connection

    def client_info(self) -> ClientInfo:
        """What every connection of this worker says in HELLO."""
        return ClientInfo(
            wid=self.wid,
            hostname=self.hostname,
            pid=self.pid,
            labels=self.labels,
            username=self.username,
        )

    def time_limit(self, jobtype: str) -> float | None:
        """The time limit of a job of this type, if any."""
        return self.time_limits.get(jobtype, self.job_time_limit)
