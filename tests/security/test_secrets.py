"""Passwords: a wrong one fails naming the cause, and neither the password nor the pwdhash
ever shows in a repr, an exception or a log line (real server, every adapter)."""

from __future__ import annotations

import traceback
import urllib.parse
import uuid
from collections.abc import Iterator

import pytest

from faktory_core import EXIT_REFUSED, ClientInfo, Connection, ServerURL, WorkerConfig
from faktory_core.commands import Hello
from tests.support.adapters import SyncClient, adapter_module, capture_logs, serve
from tests.support.server import TEST_PASSWORD, FaktoryServer
from tests.support.watchdog import serve_until_it_stops

pytestmark = pytest.mark.server

WRONG = "not-the-Pa55word"


def secrets(*proofs: str) -> list[str]:
    """What must never be shown: the passwords, raw and percent-encoded, and the proofs."""
    forms = [TEST_PASSWORD, urllib.parse.quote(TEST_PASSWORD, safe=""), "s3cret", WRONG]
    return forms + list(proofs)


def assert_hidden(text: str, proofs: list[str]) -> None:
    for secret in secrets(*proofs):
        assert secret not in text


def with_password(server: FaktoryServer, password: str | None) -> str:
    """The server's URL with this password instead of its own (None: no password)."""
    auth = "" if password is None else f":{urllib.parse.quote(password, safe='')}@"
    return f"tcp://{auth}{server.host}:{server.port}"


def everything_about(error: BaseException) -> str:
    """str and repr of the error and of every exception chained to it, and the traceback."""
    parts = ["".join(traceback.format_exception(error))]
    seen: BaseException | None = error
    while seen is not None:
        parts += [str(seen), repr(seen), repr(seen.args)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


@pytest.fixture
def queue() -> str:
    return f"secret-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def producer(faktory_password_server: FaktoryServer) -> Iterator[SyncClient]:
    with SyncClient("thread", faktory_password_server.url) as client:
        yield client


# -- clients ---------------------------------------------------------------------------------


def test_a_wrong_password_fails_naming_the_cause(
    adapter: str, faktory_password_server: FaktoryServer, pwdhashes: list[str]
) -> None:
    url = with_password(faktory_password_server, WRONG)
    module = adapter_module(adapter)
    with capture_logs() as logs, SyncClient(adapter, url) as client:
        with pytest.raises(module.AuthenticationError) as raised:
            client.info()
        assert "refused the password (Invalid password)" in str(raised.value)
        assert isinstance(raised.value, module.FaktoryError)
        with pytest.raises(module.AuthenticationError):  # every attempt, not just the first
            client.push("T", [])
    assert len(pwdhashes) == 2  # one HELLO proof per attempt, both refused
    assert_hidden(everything_about(raised.value), pwdhashes)
    assert_hidden(logs.text, pwdhashes)


def test_no_password_for_a_server_that_wants_one(
    adapter: str, faktory_password_server: FaktoryServer
) -> None:
    url = with_password(faktory_password_server, None)
    refused = adapter_module(adapter).AuthenticationError
    with SyncClient(adapter, url) as client, pytest.raises(refused) as raised:
        client.info()
    assert str(raised.value).endswith("refused the password (Invalid password): the URL gives none")


def test_the_right_password_works_and_stays_hidden(
    adapter: str, faktory_password_server: FaktoryServer, pwdhashes: list[str]
) -> None:
    with capture_logs() as logs, SyncClient(adapter, faktory_password_server.url) as client:
        assert client.info()["server"]["faktory_version"] == "1.9.4"
        shown = repr(client)
    assert len(pwdhashes) == 1
    assert_hidden(shown + logs.text, pwdhashes)


# -- reprs -----------------------------------------------------------------------------------


def test_reprs_never_show_the_password_or_the_proof(adapter: str, pwdhashes: list[str]) -> None:
    url = f"tcp://:{urllib.parse.quote(TEST_PASSWORD, safe='')}@127.0.0.1:1"
    parsed = ServerURL.parse(url)
    assert parsed.password == TEST_PASSWORD
    config = WorkerConfig(wid="w1", password=TEST_PASSWORD)
    connection = Connection(ClientInfo(wid="w1"), password=TEST_PASSWORD)
    connection.receive_data(b'+HI {"v":2,"i":3,"s":"5a17"}\r\n')
    connection.next_event()  # computes the proof, queues the HELLO
    (hello,) = connection.pending
    assert isinstance(hello, Hello)
    assert hello.payload["pwdhash"] == pwdhashes[0]
    module = adapter_module(adapter)
    worker = module.Worker(url=url)
    shown = [repr(parsed), str(parsed), repr(config), repr(connection), repr(hello), str(hello)]
    client = module.Client(url)  # never connected: nothing to close
    shown += [repr(worker), str(worker), repr(client), str(client)]
    assert_hidden("\n".join(shown), pwdhashes)


# -- workers ---------------------------------------------------------------------------------


def test_a_worker_with_a_wrong_password_says_so_and_hides_it(
    adapter: str,
    faktory_password_server: FaktoryServer,
    producer: SyncClient,
    queue: str,
    pwdhashes: list[str],
) -> None:
    producer.push("Secretive", [], queue=queue)
    worker = adapter_module(adapter).Worker(
        url=with_password(faktory_password_server, WRONG), queues=[queue], concurrency=1
    )
    worker.register("Secretive", lambda: None)
    with capture_logs("refused HELLO: ERR Invalid password") as logs:
        # It stops by itself with exit 3: retrying cannot make the password right.
        assert serve_until_it_stops(adapter, worker) == EXIT_REFUSED
    assert logs.seen.is_set(), logs.text  # an error names the cause: no silent retrying
    stops = [r for r in logs.records if "refused HELLO: ERR Invalid password" in r.getMessage()]
    assert [record.levelname for record in stops] == ["ERROR"], logs.text
    assert pwdhashes
    assert_hidden(logs.text, pwdhashes)
    assert producer.info()["faktory"]["queues"][queue] == 1  # nothing fetched, nothing lost
    producer.remove_queues(queue)


def test_a_worker_run_at_debug_level_never_logs_the_secrets(
    adapter: str,
    faktory_password_server: FaktoryServer,
    producer: SyncClient,
    queue: str,
    pwdhashes: list[str],
) -> None:
    producer.push("Secretive", ["payload"], queue=queue)
    worker = adapter_module(adapter).Worker(
        url=faktory_password_server.url, queues=[queue], concurrency=2, burst=True
    )
    ran: list[str] = []
    worker.register("Secretive", ran.append)
    with capture_logs() as logs:
        assert serve(adapter, worker) == 0
    assert ran == ["payload"]
    assert producer.info()["faktory"]["queues"].get(queue, 0) == 0
    assert len(pwdhashes) >= 3  # two job links and the heartbeat's said HELLO
    assert any("starting: tcp://:***@127.0.0.1:" in line for line in logs.lines), logs.text
    assert_hidden(logs.text, pwdhashes)
