"""The test-support server fixtures really run Faktory 1.9.4."""

from __future__ import annotations

import base64
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest

from faktory_adapters.thread import Client
from tests.support.server import FAKTORY_VERSION, TEST_PASSWORD, FaktoryServer

pytestmark = pytest.mark.server

TIMEOUT = 5.0
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def read_greeting(server: FaktoryServer) -> bytes:
    """Connect to the command port and return the first line (the +HI greeting)."""
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
        sock.settimeout(TIMEOUT)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    line, sep, _ = data.partition(b"\r\n")
    assert sep, f"no complete greeting line: {data!r}"
    return line


def get_json(url: str, password: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if password is not None:
        token = base64.b64encode(f"user:{password}".encode()).decode("ascii")
        request.add_header("Authorization", f"Basic {token}")
    try:
        with _OPENER.open(request, timeout=TIMEOUT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None


def test_greeting_without_password(faktory_server: FaktoryServer) -> None:
    assert read_greeting(faktory_server) == b'+HI {"v":2}'


def test_greeting_with_password_has_salt_and_iterations(
    faktory_password_server: FaktoryServer,
) -> None:
    line = read_greeting(faktory_password_server)
    assert line.startswith(b"+HI ")
    assert b'"s":' in line
    assert b'"i":' in line
    hi = json.loads(line[4:])
    assert hi["v"] == 2
    assert 4000 <= hi["i"] <= 8095
    assert isinstance(hi["s"], str)
    assert hi["s"]


@pytest.mark.parametrize("fixture_name", ["faktory_server", "faktory_password_server"])
def test_health_reports_version(fixture_name: str, request: pytest.FixtureRequest) -> None:
    server: FaktoryServer = request.getfixturevalue(fixture_name)
    # /health is not behind the Web UI's basic auth, even with a password set.
    status, payload = get_json(f"{server.web_url}/health")
    assert status == 200
    assert payload["server"]["faktory_version"] == FAKTORY_VERSION == "1.9.4"


def test_web_ui_needs_the_password(faktory_password_server: FaktoryServer) -> None:
    stats = f"{faktory_password_server.web_url}/stats"
    assert get_json(stats)[0] == 401
    assert get_json(stats, password="wrong")[0] == 401
    status, payload = get_json(stats, password=TEST_PASSWORD)
    assert status == 200
    assert payload["server"]["faktory_version"] == FAKTORY_VERSION


def test_urls(faktory_server: FaktoryServer, faktory_password_server: FaktoryServer) -> None:
    assert faktory_server.password is None
    assert faktory_server.url == f"tcp://127.0.0.1:{faktory_server.port}"
    assert faktory_server.web_url == f"http://127.0.0.1:{faktory_server.web_port}"
    url = urllib.parse.urlsplit(faktory_password_server.url)
    assert url.scheme == "tcp"
    assert url.username == ""
    assert url.password is not None
    assert urllib.parse.unquote(url.password) == TEST_PASSWORD
    assert url.hostname == "127.0.0.1"
    assert url.port == faktory_password_server.port
    assert " " not in faktory_password_server.url


def test_restart_keeps_ports_and_jobs() -> None:
    with FaktoryServer() as server:
        port, directory = server.port, server.directory
        with Client(server.url) as client:
            client.push("Kept", queue="restart")
        server.restart()
        assert (server.port, server.directory) == (port, directory)
        assert read_greeting(server).startswith(b"+HI")
        with Client(server.url) as client:
            job = client.fetch("restart")
        assert job is not None
        assert job.jobtype == "Kept"
