"""Bad input gets a clear error and loses nothing: malformed URLs, worker options that would
break a running worker, job arguments JSON cannot carry, and a reply too large to accept
(every adapter, a real server)."""

from __future__ import annotations

import math
import ssl
import traceback
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Final

import pytest

from faktory_core import ConfigurationError, LocalProtocolError
from faktory_core._resp import DEFAULT_MAX_REPLY_SIZE
from tests.cli.command import run
from tests.support.adapters import SyncClient, adapter_module
from tests.support.server import FaktoryServer

pytestmark = pytest.mark.server

SECRET = "Zx9-very-secret-Qw"


@pytest.fixture
def queue() -> str:
    return f"bad-{uuid.uuid4().hex[:10]}"


def queue_size(client: SyncClient, queue: str) -> int:
    return int(client.info()["faktory"]["queues"].get(queue, 0))


# -- URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"http://:{SECRET}@localhost:7419", "the scheme must be tcp:// or tcp+tls://"),
        (f"tcp://:{SECRET}@localhost:99999", "the port must be a number"),
        (f"tcp://:{SECRET}@localhost:74x9", "the port must be a number"),
        (f"tcp://:{SECRET}/x@localhost:7419", "percent-encode"),
        (f"tcp+tls://:{SECRET}@:7419", "no host"),
        ("just junk", "the scheme must be"),
        ("", "the scheme must be"),
    ],
)
def test_a_malformed_url_fails_at_construction_without_the_password(
    adapter: str, url: str, problem: str
) -> None:
    module = adapter_module(adapter)
    makers: list[Callable[[], object]] = [
        lambda: module.Client(url),
        lambda: module.Worker(url=url),
    ]
    for make in makers:
        with pytest.raises(ConfigurationError) as raised:
            make()
        assert isinstance(raised.value, ValueError)
        assert problem in str(raised.value)
        # Not in a chained exception either: urllib's own message quotes the password.
        assert SECRET not in "".join(traceback.format_exception(raised.value))


def test_a_malformed_faktory_url_in_the_environment_fails_at_construction(
    adapter: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FAKTORY_PROVIDER", raising=False)
    monkeypatch.setenv("FAKTORY_URL", f"tcp://:{SECRET}@localhost:port")
    module = adapter_module(adapter)
    for make in (module.Client, module.Worker):
        with pytest.raises(ConfigurationError, match="the port must be a number") as raised:
            make()
        assert SECRET not in str(raised.value)


@pytest.mark.parametrize("url", [f"tcp://:{SECRET}@localhost:0", "tcp+tls://localhost:0"])
def test_port_0_fails_at_construction_without_the_password(adapter: str, url: str) -> None:
    module = adapter_module(adapter)
    makers: list[Callable[[], object]] = [
        lambda: module.Client(url),
        lambda: module.Worker(url=url),
    ]
    for make in makers:
        with pytest.raises(ConfigurationError, match="the port must be a number from 1 to 65535"):
            make()


# -- worker options --------------------------------------------------------------------------

#: Options each once accepted by every adapter's Worker, which then broke as it ran: inf in
#: select() (OverflowError, the job left reserved), a heartbeat thread dead at once, a worker
#: that never connects, a HELLO that always fails, a weighted order that ran out of memory.
BAD_OPTIONS: Final[list[tuple[str, Any, str]]] = [
    ("job_time_limit", math.inf, "job_time_limit must be a finite number of seconds above 0"),
    ("job_time_limit", 0, "job_time_limit must be a finite number of seconds above 0"),
    ("shutdown_timeout", math.inf, "shutdown_timeout must be a finite number of seconds from 0"),
    ("shutdown_timeout", math.nan, "shutdown_timeout must be a finite number of seconds from 0"),
    ("shutdown_timeout", 86_401, "shutdown_timeout must be a finite number of seconds from 0"),
    ("abort_grace", math.inf, "abort_grace must be a finite number of seconds from 0"),
    ("abort_grace", -1, "abort_grace must be a finite number of seconds from 0"),
    ("heartbeat_interval", math.inf, "heartbeat_interval must be a finite number of seconds"),
    ("heartbeat_interval", 60, "heartbeat_interval must be a finite number of seconds"),
    ("heartbeat_interval", 0, "heartbeat_interval must be a finite number of seconds"),
    ("connect_timeout", 0, "connect_timeout must be a finite number of seconds above 0"),
    ("connect_timeout", -1, "connect_timeout must be a finite number of seconds above 0"),
    ("connect_timeout", math.nan, "connect_timeout must be a finite number of seconds above 0"),
    ("connect_timeout", math.inf, "connect_timeout must be a finite number of seconds above 0"),
    ("connect_timeout", True, "connect_timeout must be a finite number of seconds above 0"),
    ("time_limits", {"Report": math.inf}, "time_limits['Report'] must be a finite number"),
    ("concurrency", 10_001, "concurrency must be an integer from 1 to 10000"),
    ("concurrency", True, "concurrency must be an integer from 1 to 10000"),
    (
        "queues",
        {"bulk": 10**7},
        "queues: the weight of 'bulk' must be an integer from 1 to 1000000",
    ),
    (
        "queues",
        {"bulk": 10**9},
        "queues: the weight of 'bulk' must be an integer from 1 to 1000000",
    ),
    ("labels", ["\udcff"], "label '\\udcff' is not valid UTF-8"),
    ("labels", "python", "labels must be a sequence of strings, not one string"),
    ("wid", "w\udcff", "wid 'w\\udcff' is not valid UTF-8"),
    ("wid", "", "wid must be a non-empty string"),
    ("burst", "yes", "burst must be True or False, got 'yes'"),
]


@pytest.mark.parametrize(
    ("option", "value", "message"), BAD_OPTIONS, ids=[f"{o}={v!r}" for o, v, _ in BAD_OPTIONS]
)
def test_a_bad_worker_option_fails_at_construction_naming_it(
    adapter: str, option: str, value: Any, message: str
) -> None:
    with pytest.raises(LocalProtocolError) as raised:
        adapter_module(adapter).Worker(url="tcp://localhost:7419", **{option: value})
    assert str(raised.value).startswith(message), str(raised.value)


def test_a_bad_raise_in_job_fails_at_construction(adapter: str) -> None:
    with pytest.raises(ConfigurationError, match="raise_in_job must be True or False"):
        adapter_module(adapter).Worker(url="tcp://localhost:7419", raise_in_job="no")


def test_an_ssl_context_with_a_plain_tcp_url_is_refused(adapter: str) -> None:
    # Once ignored: the traffic, password proof included, stayed plaintext.
    context = ssl.create_default_context()
    module = adapter_module(adapter)
    with pytest.raises(ConfigurationError) as raised:
        module.Worker(url=f"tcp://:{SECRET}@localhost:7419", ssl_context=context)
    assert str(raised.value) == (
        "ssl_context was given but tcp://:***@localhost:7419 is plain TCP: use a tcp+tls:// URL"
    )
    with pytest.raises(ConfigurationError, match=r"ssl_context must be an ssl\.SSLContext"):
        module.Worker(url="tcp+tls://localhost:7419", ssl_context="/etc/ssl/ca.pem")
    worker = module.Worker(url="tcp+tls://localhost:7419", ssl_context=context)
    assert worker._ssl_context is context


BAD_CLIENT_OPTIONS: Final[list[tuple[str, Any, str]]] = [
    ("pool_size", 0, "pool_size must be an integer from 1 to 1000"),
    ("pool_size", 2.5, "pool_size must be an integer from 1 to 1000"),
    ("timeout", math.inf, "timeout must be a finite number of seconds"),
    ("timeout", 0, "timeout must be a finite number of seconds"),
    ("connect_timeout", math.nan, "connect_timeout must be a finite number of seconds"),
    ("connect_timeout", -1, "connect_timeout must be a finite number of seconds"),
]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    BAD_CLIENT_OPTIONS,
    ids=[f"{o}={v!r}" for o, v, _ in BAD_CLIENT_OPTIONS],
)
def test_a_bad_client_option_fails_at_construction_naming_it(
    adapter: str, option: str, value: Any, message: str
) -> None:
    with pytest.raises(LocalProtocolError) as raised:
        adapter_module(adapter).Client("tcp://localhost:7419", **{option: value})
    assert str(raised.value).startswith(message), str(raised.value)


def test_a_client_refuses_an_ssl_context_with_a_plain_tcp_url(adapter: str) -> None:
    context = ssl.create_default_context()
    module = adapter_module(adapter)
    with pytest.raises(ConfigurationError, match="is plain TCP: use a tcp\\+tls:// URL"):
        module.Client(f"tcp://:{SECRET}@localhost:7419", ssl_context=context)
    assert module.Client("tcp+tls://localhost:7419", ssl_context=context)._ssl_context is context


def test_the_checked_connect_timeout_is_the_one_used(adapter: str) -> None:
    worker = adapter_module(adapter).Worker(url="tcp://localhost:7419", connect_timeout=2)
    assert worker._connect_timeout == 2
    assert worker._make_config().connect_timeout == 2


def test_options_given_as_iterators_are_read_once(adapter: str) -> None:
    worker = adapter_module(adapter).Worker(
        url="tcp://localhost:7419", queues=iter(["a", "b"]), labels=iter(["x"])
    )
    for _ in range(2):  # the config is made again at each serve
        config = worker._make_config()
        assert (config.queues, config.labels) == (("a", "b"), ("x",))


def test_a_label_that_is_not_utf8_stops_the_command_with_exit_2(
    faktory_server: FaktoryServer,
) -> None:
    # $'\xff' on the command line is '\udcff' in Python: every HELLO failed, and the process
    # once exited 0 without ever working.
    result = run("-l", "\udcff", "-r", "tests.cli.jobs_ok", "--url", faktory_server.url)
    assert result.returncode == 2, result
    assert result.stderr.splitlines() == [
        "faktory-worker: error: label '\\udcff' is not valid UTF-8"
    ]


# -- job arguments ---------------------------------------------------------------------------


def _cycle() -> list[Any]:
    cycle: list[Any] = []
    cycle.append(cycle)
    return cycle


#: What JSON cannot carry, the class of the error (a TypeError for a value of the wrong type,
#: a ValueError for a value out of JSON's range) and what its message says.
UNENCODABLE: dict[str, tuple[Any, type[Exception], str]] = {
    "object": (object(), TypeError, ": args[1]['data'] is an object, which JSON cannot encode"),
    "bytes": (b"\x00raw", TypeError, ": args[1]['data'] is bytes, which JSON cannot encode"),
    "set": ({1, 2}, TypeError, ": args[1]['data'] is a set, which JSON cannot encode"),
    "cycle": (_cycle(), ValueError, " cannot be encoded as JSON: Circular reference"),
    # JSON has no NaN or infinity; the server's Go parser neither.
    "nan": (math.nan, ValueError, ": args[1]['data'] is nan, which JSON cannot encode"),
    "infinity": (-math.inf, ValueError, ": args[1]['data'] is -inf, which JSON cannot encode"),
    # Built in the test: a 100,000-deep list.
    "deep": (None, ValueError, " is nested too deeply to be encoded as JSON"),
}


@pytest.mark.parametrize("kind", list(UNENCODABLE))
def test_args_json_cannot_carry_fail_at_push_and_nothing_is_sent(
    adapter: str, faktory_server: FaktoryServer, queue: str, kind: str
) -> None:
    value, error_class, cause = UNENCODABLE[kind]
    if kind == "deep":
        for _ in range(100_000):
            value = [value]
    with SyncClient(adapter, faktory_server.url, pool_size=1) as client:
        client.push("Before", [], queue=queue)
        bad = client.job("Report", [1, {"data": value}], queue=queue)
        with pytest.raises(error_class) as raised:
            client.push(bad)
        assert isinstance(raised.value, LocalProtocolError)
        assert str(raised.value).startswith(f"job {bad.jid} (Report){cause}")
        with pytest.raises(error_class, match=f"job {bad.jid} "):
            client.push_bulk([client.job("Fine", [], queue=queue), bad])  # none of them
        client.push("After", [], queue=queue)  # the one connection is still fine
        assert queue_size(client, queue) == 2
        fetched = [client.fetch(queue) for _ in range(2)]
        for job in fetched:
            client.ack(job.jid)  # the server is shared: leave nothing reserved
        assert [job.jobtype for job in fetched] == ["Before", "After"]


def test_a_lone_surrogate_in_the_args_fails_at_push(
    adapter: str, faktory_server: FaktoryServer, queue: str
) -> None:
    with SyncClient(adapter, faktory_server.url, pool_size=1) as client:
        with pytest.raises(ValueError, match=r"args\[0\] is a string with a lone surrogate"):
            client.push("Report", ["file \udcff name"], queue=queue)
        assert queue_size(client, queue) == 0


# -- a reply too large -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def hoarding_server() -> Iterator[FaktoryServer]:
    """A server of its own for jobs too large to fetch: one that is not FAILed stays reserved
    until the server stops."""
    server = FaktoryServer().start()
    try:
        yield server
    finally:
        server.stop()


def test_a_job_over_max_reply_size_is_refused_with_its_jid_and_the_link_stays_usable(
    adapter: str, hoarding_server: FaktoryServer, queue: str
) -> None:
    with SyncClient(adapter, hoarding_server.url, pool_size=1, timeout=60) as client:
        huge = client.push("Huge", ["x" * DEFAULT_MAX_REPLY_SIZE], queue=queue)
        small = client.push("Small", [], queue=queue)
        working = client.info()["faktory"]["sets"]["working"]
        invalid = adapter_module(adapter).InvalidJobError
        limit = rf"larger than max_reply_size {DEFAULT_MAX_REPLY_SIZE}$"
        with pytest.raises(invalid, match=limit) as raised:
            client.fetch(queue)
        # Read past in bounded memory (the first KiB kept), its jid found: it can be FAILed.
        assert raised.value.jid == huge
        assert len(raised.value.payload) == 1024
        stats = client.info()["faktory"]
        assert stats["sets"]["working"] == working + 1  # handed out, reserved for us
        assert stats["queues"][queue] == 1
        client.fail(huge, "InvalidJob", str(raised.value))
        assert client.info()["faktory"]["sets"]["working"] == working
        job = client.fetch(queue)
        assert job.jid == small
        client.ack(small)
