"""WorkerConfig and ClientConfig: every option is checked when the config is built, against
documented bounds, and refused with an error naming it.

A value that slipped through once broke a running worker far from its cause: an infinite time
limit raised OverflowError inside select(), an infinite heartbeat interval killed the heartbeat
thread, a connect timeout of 0 never connected, a lone surrogate in a label failed every HELLO.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from faktory_core import (
    ArgumentError,
    ArgumentTypeError,
    LocalProtocolError,
    OptionError,
    WorkerConfig,
)
from faktory_core._config import (
    MAX_ABORT_GRACE,
    MAX_CLIENT_TIMEOUT,
    MAX_CONCURRENCY,
    MAX_CONNECT_TIMEOUT,
    MAX_HEARTBEAT_INTERVAL,
    MAX_POOL_SIZE,
    MAX_QUEUE_WEIGHT,
    MAX_RECONNECT,
    MAX_REPLY_TIMEOUT,
    MAX_SHUTDOWN_TIMEOUT,
    MAX_TIME_LIMIT,
    MIN_HEARTBEAT_INTERVAL,
    MIN_RECONNECT_BASE,
    MIN_REPLY_TIMEOUT,
    ClientConfig,
)

WID: Final = "w-config-1"
DOCS: Final = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


@attrs.frozen
class Seconds:
    """A time option: from ``low`` (or above it, when ``above``) to ``high``."""

    low: float
    high: float
    above: bool


#: Every time option of WorkerConfig and its bounds.
WORKER_SECONDS: Final = {
    "shutdown_timeout": Seconds(0, MAX_SHUTDOWN_TIMEOUT, above=False),
    "abort_grace": Seconds(0, MAX_ABORT_GRACE, above=False),
    "heartbeat_interval": Seconds(MIN_HEARTBEAT_INTERVAL, MAX_HEARTBEAT_INTERVAL, above=False),
    "job_time_limit": Seconds(0, MAX_TIME_LIMIT, above=True),
    "connect_timeout": Seconds(0, MAX_CONNECT_TIMEOUT, above=True),
    "reply_timeout": Seconds(MIN_REPLY_TIMEOUT, MAX_REPLY_TIMEOUT, above=False),
    "reconnect_base": Seconds(MIN_RECONNECT_BASE, MAX_RECONNECT, above=False),
    "reconnect_cap": Seconds(MIN_RECONNECT_BASE, MAX_RECONNECT, above=False),
}
CLIENT_SECONDS: Final = {
    "timeout": Seconds(0, MAX_CLIENT_TIMEOUT, above=True),
    "connect_timeout": Seconds(0, MAX_CONNECT_TIMEOUT, above=True),
}
#: Values no time option takes, whatever its bounds.
NOT_SECONDS: Final[list[Any]] = [
    math.inf,
    -math.inf,
    math.nan,
    -1,
    10**400,  # an int too large for a float
    "5",
    b"5",
    True,
    False,
    [5],
    1j,
    Decimal(5),
    Fraction(5),
]


def seconds_message(name: str, bounds: Seconds, value: Any) -> str:
    span = (
        f"above {bounds.low} and at most {bounds.high}"
        if bounds.above
        else f"from {bounds.low} to {bounds.high}"
    )
    return f"{name} must be a finite number of seconds {span}, got {value!r}"


def out_of_bounds(bounds: Seconds) -> list[float]:
    """Finite numbers just outside the bounds."""
    below = bounds.low if bounds.above else math.nextafter(bounds.low, -math.inf)
    return [below, bounds.low - 1, math.nextafter(bounds.high, math.inf), bounds.high * 2]


def within(bounds: Seconds) -> list[float]:
    """Numbers at and inside the bounds, ints and floats."""
    low = math.nextafter(bounds.low, math.inf) if bounds.above else bounds.low
    return [low, bounds.high, float(bounds.high), (bounds.low + bounds.high) / 2]


def worker(**overrides: Any) -> WorkerConfig:
    return WorkerConfig(wid=WID, **overrides)


def worker_seconds(name: str, value: Any) -> WorkerConfig:
    """A config with ``name`` set to ``value``; the other end of the reconnect pair follows, so
    that reconnect_base <= reconnect_cap holds whenever ``value`` is in bounds."""
    overrides = {name: value}
    if name == "reconnect_base":
        overrides["reconnect_cap"] = MAX_RECONNECT
    elif name == "reconnect_cap":
        overrides["reconnect_base"] = MIN_RECONNECT_BASE
    return worker(**overrides)


# -- times -----------------------------------------------------------------------------------


def test_the_message_names_the_option_its_bounds_and_the_value() -> None:
    with pytest.raises(LocalProtocolError) as raised:
        worker(shutdown_timeout=math.inf)
    assert str(raised.value) == (
        "shutdown_timeout must be a finite number of seconds from 0 to 86400, got inf"
    )


@pytest.mark.parametrize("name", list(WORKER_SECONDS))
@pytest.mark.parametrize("value", NOT_SECONDS, ids=repr)
def test_a_worker_time_that_is_not_a_finite_number_is_refused(name: str, value: Any) -> None:
    with pytest.raises(LocalProtocolError) as raised:
        worker_seconds(name, value)
    assert str(raised.value) == seconds_message(name, WORKER_SECONDS[name], value)


@pytest.mark.parametrize("name", list(WORKER_SECONDS))
def test_a_worker_time_out_of_bounds_is_refused(name: str) -> None:
    bounds = WORKER_SECONDS[name]
    for value in out_of_bounds(bounds):
        with pytest.raises(LocalProtocolError) as raised:
            worker_seconds(name, value)
        assert str(raised.value) == seconds_message(name, bounds, value)


@pytest.mark.parametrize("name", list(WORKER_SECONDS))
def test_a_worker_time_within_bounds_is_kept(name: str) -> None:
    for value in within(WORKER_SECONDS[name]):
        assert getattr(worker_seconds(name, value), name) == value


def test_none_is_no_job_time_limit_and_required_times_refuse_it() -> None:
    assert worker(job_time_limit=None).time_limit("T") is None
    for name in WORKER_SECONDS.keys() - {"job_time_limit"}:
        with pytest.raises(LocalProtocolError, match=f"^{name} must be"):
            worker(**{name: None})


def test_the_backoff_cannot_start_above_its_cap() -> None:
    with pytest.raises(LocalProtocolError) as raised:
        worker(reconnect_base=10, reconnect_cap=5)
    assert str(raised.value) == "reconnect_base must be at most reconnect_cap (5), got 10"
    assert worker(reconnect_base=5, reconnect_cap=5).reconnect_cap == 5


@pytest.mark.parametrize("value", [*NOT_SECONDS, 0, -5, MAX_TIME_LIMIT + 1, None])
def test_a_time_limit_per_job_type_is_checked_like_job_time_limit(value: Any) -> None:
    with pytest.raises(LocalProtocolError) as raised:
        worker(time_limits={"Fine": 5, "Report": value})
    assert str(raised.value) == seconds_message(
        "time_limits['Report']", WORKER_SECONDS["job_time_limit"], value
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"": 5}, "time_limits keys must be job type names, got ''"),
        ({1: 5}, "time_limits keys must be job type names, got 1"),
        ([("T", 5)], "time_limits must be a mapping of job types to seconds, got list"),
        (5, "time_limits must be a mapping of job types to seconds, got int"),
    ],
)
def test_time_limits_must_map_job_types_to_seconds(value: Any, message: str) -> None:
    with pytest.raises(LocalProtocolError) as raised:
        worker(time_limits=value)
    assert str(raised.value) == message


def test_time_limits_within_bounds_are_kept() -> None:
    limits = {"Quick": 0.5, "Monthly": MAX_TIME_LIMIT}
    config = worker(time_limits=limits, job_time_limit=60)
    assert (config.time_limit("Quick"), config.time_limit("Monthly")) == (0.5, MAX_TIME_LIMIT)
    assert config.time_limit("Other") == 60


def test_connect_timeout_is_a_worker_option_of_five_seconds_by_default() -> None:
    assert WorkerConfig(wid=WID).connect_timeout == 5.0
    assert worker(connect_timeout=0.25).connect_timeout == 0.25


# -- counts ----------------------------------------------------------------------------------

NOT_COUNTS: Final[list[Any]] = [0, -1, 1.0, 1.5, True, "2", None, math.inf, math.nan]


@pytest.mark.parametrize("value", [*NOT_COUNTS, MAX_CONCURRENCY + 1], ids=repr)
def test_concurrency_is_an_integer_from_1_to_10000(value: Any) -> None:
    with pytest.raises(LocalProtocolError) as raised:
        worker(concurrency=value)
    assert str(raised.value) == f"concurrency must be an integer from 1 to 10000, got {value!r}"


def test_concurrency_above_the_server_default_limit_is_allowed() -> None:
    # The server's 2,000 connections are its own setting: only a sanity maximum applies here.
    assert worker(concurrency=2_500).concurrency == 2_500
    assert worker(concurrency=MAX_CONCURRENCY).concurrency == MAX_CONCURRENCY
    assert worker(concurrency=1).concurrency == 1


@pytest.mark.parametrize(
    "weight", [0, -1, MAX_QUEUE_WEIGHT + 1, 10**9, 1.5, 1.0, True, "1", None, math.inf, math.nan]
)
def test_queue_weights_are_integers_from_1_to_a_million(weight: Any) -> None:
    with pytest.raises(OptionError) as raised:
        worker(queues={"fine": 1, "critical": weight})
    assert str(raised.value) == (  # the option, the queue, the bounds and the value
        f"queues: the weight of 'critical' must be an integer from 1 to 1000000, got {weight!r}"
    )


def test_queue_weights_within_bounds_are_kept() -> None:
    weights = {"critical": MAX_QUEUE_WEIGHT, "bulk": 1}
    assert worker(queues=weights).queues == weights


@pytest.mark.parametrize("value", [5, None, 1.5])
def test_queues_must_be_names_or_a_mapping(value: Any) -> None:
    with pytest.raises(LocalProtocolError, match=r"^queues must be a list of queue names"):
        worker(queues=value)


def test_an_empty_or_invalid_queue_list_names_the_option() -> None:
    for queues in ([], {}):
        with pytest.raises(OptionError, match=r"^queues: a worker needs at least one queue$"):
            worker(queues=queues)
    with pytest.raises(OptionError) as raised:
        worker(queues=["fine", "not fine"])
    assert str(raised.value) == (
        "queues: each name must be a queue name of letters, digits, '.', '_' and '-' "
        "([a-zA-Z0-9._-]+), got 'not fine'"
    )
    with pytest.raises(OptionError, match=r"^queues: each name must be a queue name \(a string"):
        worker(queues={1: 1})


# -- the error classes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"concurrency": 0},
        {"concurrency": "2"},
        {"queues": {"q": 0}},
        {"queues": ["a b"]},
        {"queues": [5]},
        {"wid": "a b"},
        {"wid": 5},
        {"labels": "one"},
        {"labels": [1]},
        {"hostname": 5},
        {"pid": "5"},
        {"username": 5},
        {"password": 5},
        {"password": "\ud800x"},
        {"burst": "yes"},
        {"shutdown_timeout": -1},
    ],
    ids=repr,
)
def test_every_bad_option_is_an_option_error_and_so_a_value_error(
    overrides: dict[str, Any],
) -> None:
    # One class for every option a caller gets wrong, whatever check found it: a caller who
    # catches ValueError (or OptionError) around WorkerConfig catches them all.
    settings = {"wid": WID, **overrides}
    with pytest.raises(OptionError) as raised:
        WorkerConfig(**settings)
    assert isinstance(raised.value, ArgumentError)
    assert isinstance(raised.value, ValueError)
    name = next(iter(overrides))
    assert name.rstrip("s") in str(raised.value)  # the message names the option


def test_the_error_classes_are_one_family() -> None:
    assert issubclass(OptionError, ArgumentError)
    assert issubclass(ArgumentError, LocalProtocolError)
    assert issubclass(ArgumentError, ValueError)
    assert issubclass(ArgumentTypeError, LocalProtocolError)
    assert issubclass(ArgumentTypeError, TypeError)
    assert not issubclass(ArgumentError, TypeError)


# -- text ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"labels": ["fine", "\udcff"]}, "label '\\udcff' is not valid UTF-8"),
        ({"labels": ["a\ud800b"]}, "label 'a\\ud800b' is not valid UTF-8"),
        ({"hostname": "host\udcfe"}, "hostname 'host\\udcfe' is not valid UTF-8"),
        ({"wid": "w\udcff"}, "wid 'w\\udcff' is not valid UTF-8"),
    ],
)
def test_text_utf8_cannot_carry_is_refused_naming_it(
    overrides: dict[str, Any], message: str
) -> None:
    # An undecodable byte of argv or the environment becomes a lone surrogate in Python: HELLO,
    # JSON sent as UTF-8, would fail at every connection.
    settings = {"wid": WID, **overrides}
    with pytest.raises(LocalProtocolError) as raised:
        WorkerConfig(**settings)
    assert str(raised.value) == message


def test_any_unicode_text_is_fine() -> None:
    config = worker(labels=["é", "日本", "🚀"], hostname="hôte")
    assert config.labels == ("é", "日本", "🚀")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("python", "labels must be a sequence of strings, not one string"),
        (5, "labels must be a sequence of strings, got int"),
        ([1], "labels must be strings"),
    ],
)
def test_labels_must_be_strings(value: Any, message: str) -> None:
    with pytest.raises(LocalProtocolError) as raised:
        worker(labels=value)
    assert str(raised.value) == message


# -- flags and callables ---------------------------------------------------------------------


@pytest.mark.parametrize("value", ["yes", "false", 1, 0, None])
def test_burst_is_true_or_false(value: Any) -> None:
    with pytest.raises(LocalProtocolError) as raised:
        worker(burst=value)
    assert str(raised.value) == f"burst must be True or False, got {value!r}"


def test_queue_order_is_a_callable_or_none() -> None:
    with pytest.raises(LocalProtocolError, match=r"^queue_order must be a callable or None"):
        worker(queue_order=["a", "b"])
    assert worker(queue_order=lambda: ["a"]).queue_order is not None


# -- ClientConfig ----------------------------------------------------------------------------


def test_client_config_defaults_are_the_clients() -> None:
    config = ClientConfig()
    assert (config.pool_size, config.timeout, config.connect_timeout) == (4, 10.0, 5.0)


def test_client_config_is_keyword_only_and_frozen() -> None:
    with pytest.raises(TypeError):
        ClientConfig(4)  # type: ignore[call-arg]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        ClientConfig().pool_size = 5  # type: ignore[misc]


@pytest.mark.parametrize("name", list(CLIENT_SECONDS))
@pytest.mark.parametrize("value", [*NOT_SECONDS, None], ids=repr)
def test_a_client_time_that_is_not_a_finite_number_is_refused(name: str, value: Any) -> None:
    with pytest.raises(LocalProtocolError) as raised:
        ClientConfig(**{name: value})
    assert str(raised.value) == seconds_message(name, CLIENT_SECONDS[name], value)


@pytest.mark.parametrize("name", list(CLIENT_SECONDS))
def test_a_client_time_out_of_bounds_is_refused_and_within_kept(name: str) -> None:
    bounds = CLIENT_SECONDS[name]
    for value in out_of_bounds(bounds):
        with pytest.raises(LocalProtocolError) as raised:
            ClientConfig(**{name: value})  # type: ignore[arg-type]
        assert str(raised.value) == seconds_message(name, bounds, value)
    for value in within(bounds):
        assert getattr(ClientConfig(**{name: value}), name) == value  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [*NOT_COUNTS, MAX_POOL_SIZE + 1], ids=repr)
def test_pool_size_is_an_integer_from_1_to_1000(value: Any) -> None:
    with pytest.raises(LocalProtocolError) as raised:
        ClientConfig(pool_size=value)
    assert str(raised.value) == f"pool_size must be an integer from 1 to 1000, got {value!r}"
    assert ClientConfig(pool_size=MAX_POOL_SIZE).pool_size == MAX_POOL_SIZE


# -- any config built is usable --------------------------------------------------------------

#: Anything a caller might pass for a number: junk, edges, and plenty of valid values.
anything = st.one_of(
    st.floats(),  # inf, -inf, nan, subnormals, huge
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(min_value=0, max_value=2 * MAX_TIME_LIMIT),
    st.integers(min_value=0, max_value=2 * MAX_CONCURRENCY),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
)


def is_seconds(value: Any, bounds: Seconds) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (bounds.low < value if bounds.above else bounds.low <= value)
        and value <= bounds.high
    )


@given(
    st.dictionaries(
        st.sampled_from([*WORKER_SECONDS, "concurrency", "weight", "time_limit"]), anything
    )
)
def test_any_worker_config_built_has_every_value_within_its_bounds(
    values: dict[str, Any],
) -> None:
    overrides = {k: v for k, v in values.items() if k not in ("weight", "time_limit")}
    if "weight" in values:
        overrides["queues"] = {"q": values["weight"]}
    if "time_limit" in values:
        overrides["time_limits"] = {"T": values["time_limit"]}
    try:
        config = worker(**overrides)
    except LocalProtocolError as error:
        refusal = str(error)
        assert re.match(r"[a-z_]+(\['T'\])? must |queues: the weight of 'q' must ", refusal)
        return
    for name, bounds in WORKER_SECONDS.items():
        value = getattr(config, name)
        assert (name == "job_time_limit" and value is None) or is_seconds(value, bounds)
    assert config.reconnect_base <= config.reconnect_cap
    assert all(is_seconds(v, WORKER_SECONDS["job_time_limit"]) for v in config.time_limits.values())
    assert type(config.concurrency) is int
    assert 1 <= config.concurrency <= MAX_CONCURRENCY
    weights = config.queues.values() if isinstance(config.queues, dict) else [1]
    assert all(type(w) is int and 1 <= w <= MAX_QUEUE_WEIGHT for w in weights)


@given(st.dictionaries(st.sampled_from([*CLIENT_SECONDS, "pool_size"]), anything))
def test_any_client_config_built_has_every_value_within_its_bounds(
    values: dict[str, Any],
) -> None:
    try:
        config = ClientConfig(**values)
    except LocalProtocolError:
        return
    for name, bounds in CLIENT_SECONDS.items():
        assert is_seconds(getattr(config, name), bounds)
    assert type(config.pool_size) is int
    assert 1 <= config.pool_size <= MAX_POOL_SIZE


# -- the docs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "allowed"),
    [
        ("`concurrency`", f"1 to {MAX_CONCURRENCY:,}"),
        ("`shutdown_timeout`", f"0 to {MAX_SHUTDOWN_TIMEOUT:,}"),
        ("`abort_grace`", f"0 to {MAX_ABORT_GRACE:,}"),
        ("`heartbeat_interval`", f"{MIN_HEARTBEAT_INTERVAL} to {MAX_HEARTBEAT_INTERVAL}"),
        ("`job_time_limit`", f"above 0 up to {MAX_TIME_LIMIT:,}"),
        ("`connect_timeout`", f"above 0 up to {MAX_CONNECT_TIMEOUT}"),
        ("`queues`", f"from 1 to {MAX_QUEUE_WEIGHT:,}"),
        ("`pool_size`", f"1 to {MAX_POOL_SIZE:,}"),
        ("`timeout`", f"above 0 up to {MAX_CLIENT_TIMEOUT:,}"),
        ("`reply_timeout`", f"{MIN_REPLY_TIMEOUT} to {MAX_REPLY_TIMEOUT:,}"),
        ("`reconnect_base`", f"{MIN_RECONNECT_BASE} to {MAX_RECONNECT:,}"),
        ("`reconnect_cap`", f"{MIN_RECONNECT_BASE} to {MAX_RECONNECT:,}"),
    ],
)
def test_every_bound_is_documented_with_its_option(option: str, allowed: str) -> None:
    rows = [line for line in DOCS.read_text().splitlines() if line.startswith(f"| {option} |")]
    assert rows, f"no row documents {option}"
    assert all(allowed in row for row in rows), (option, allowed, rows)


@pytest.mark.parametrize(
    ("queues", "pushed_to"),
    [
        (("default",), "default"),
        (("critical", "default"), "default"),  # it fetches the default queue: jobs go there
        (("mail",), "mail"),
        (("mail", "bulk"), "mail"),  # the first in priority order
        ({"bulk": 1, "mail": 5}, "bulk"),  # the first named of a weighted mapping
    ],
)
def test_push_queue_is_a_queue_the_worker_fetches(queues: object, pushed_to: str) -> None:
    config = WorkerConfig(wid="w-push-queue", queues=queues)  # type: ignore[arg-type]
    assert config.push_queue == pushed_to
    assert config.push_queue in config.queues
