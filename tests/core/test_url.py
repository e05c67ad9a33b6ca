"""ServerURL: tcp and tcp+tls URLs, the environment convention, and a password kept secret."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faktory_core import ConfigurationError, ServerURL
from faktory_core._url import DEFAULT_PORT, DEFAULT_URL

SECRET = "Zx9-very-secret-Qw"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("tcp://localhost", ServerURL(host="localhost")),
        ("tcp://localhost:7419", ServerURL(host="localhost", port=7419)),
        ("tcp://faktory.internal:17419", ServerURL(host="faktory.internal", port=17419)),
        ("tcp+tls://faktory.example.com", ServerURL(host="faktory.example.com", tls=True)),
        ("tcp://:pw@h:1", ServerURL(host="h", port=1, password="pw")),
        ("tcp://user@h", ServerURL(host="h", username="user")),
        ("tcp://user:pw@h", ServerURL(host="h", username="user", password="pw")),
        (
            "tcp://us%40er:p%40%3As%2F%20%25@h",
            ServerURL(host="h", username="us@er", password="p@:s/ %"),
        ),
        ("tcp://[::1]:7420", ServerURL(host="::1", port=7420)),
        ("tcp://[2001:db8::5]", ServerURL(host="2001:db8::5")),
        ("tcp://HOST.Example", ServerURL(host="host.example")),
        ("  tcp://h:1/path?query=1  ", ServerURL(host="h", port=1)),
        ("tcp://:@h", ServerURL(host="h")),  # empty password and user mean none
    ],
)
def test_parse(url: str, expected: ServerURL) -> None:
    assert ServerURL.parse(url) == expected


def test_default_port() -> None:
    assert DEFAULT_PORT == 7419
    assert ServerURL.parse("tcp+tls://h").port == 7419
    assert ServerURL.parse(DEFAULT_URL) == ServerURL(host="localhost", port=7419)


@settings(deadline=None)
@given(st.text(min_size=1, max_size=30))
def test_any_percent_encoded_password_comes_back(password: str) -> None:
    url = f"tcp+tls://worker:{quote(password, safe='')}@faktory:7419"
    assert ServerURL.parse(url).password == password


@pytest.mark.parametrize(
    "url",
    [
        f"http://:{SECRET}@h:7419",
        f"redis://:{SECRET}@h",
        f"{SECRET}@h:7419",
        f"tcp://:{SECRET}@:7419",
        f"tcp://:{SECRET}@h:abc",
        f"tcp://:{SECRET}@h:99999",
        f"tcp://:{SECRET}@h:-1",
        f"tcp://:{SECRET}@h:0",
        f"tcp+tls://user:{SECRET}@h:00",
        f"tcp://:{SECRET}@[::1",
        f"tcp://user:{SECRET}@",
        "tcp://",
        "",
        "localhost:7419",
    ],
)
def test_bad_urls_raise_without_the_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        ServerURL.parse(url)
    assert SECRET not in str(raised.value)
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"tcp://:{SECRET}@h:0", "tcp://:***@h:0"),
        (f"tcp+tls://bob:{SECRET}@[::1]:0", "tcp+tls://bob:***@[::1]:0"),
        ("tcp://h:0", "tcp://h:0"),
    ],
)
def test_port_0_is_refused_naming_the_url_without_its_password(url: str, shown: str) -> None:
    # urllib takes port 0; no server listens there, and a worker would retry it for ever.
    with pytest.raises(ConfigurationError) as raised:
        ServerURL.parse(url)
    assert str(raised.value) == (
        f"invalid Faktory URL {shown!r}: the port must be a number from 1 to 65535"
    )


@pytest.mark.parametrize("port", [0, -1, 65536, True, "7419", 7419.0, None])
def test_a_server_url_built_directly_checks_its_port(port: object) -> None:
    with pytest.raises(ConfigurationError, match="the port must be a number from 1 to 65535"):
        ServerURL(host="h", port=port, password=SECRET)  # type: ignore[arg-type]
    assert ServerURL(host="h", port=1).port == 1
    assert ServerURL(host="h", port=65535).port == 65535


@pytest.mark.parametrize("host", ["", None, 5])
def test_a_server_url_built_directly_needs_a_host(host: object) -> None:
    with pytest.raises(ConfigurationError, match="no host"):
        ServerURL(host=host)  # type: ignore[arg-type]


@pytest.mark.parametrize("separator", ["/", "?", "#", " w/"])
def test_unencoded_password_never_leaks_into_the_error(separator: str) -> None:
    # A password pasted without percent-encoding: urlsplit ends the netloc at the separator,
    # takes the password as the port, and its ValueError quotes it.
    with pytest.raises(ConfigurationError) as raised:
        ServerURL.parse(f"tcp://:{SECRET}{separator}x@localhost:7419")
    assert SECRET not in str(raised.value)


# -- the environment -------------------------------------------------------------------------


def test_from_env_default() -> None:
    assert ServerURL.from_env({}) == ServerURL(host="localhost", port=7419)
    assert ServerURL.from_env({"FAKTORY_URL": ""}) == ServerURL(host="localhost", port=7419)
    assert ServerURL.from_env({"FAKTORY_PROVIDER": ""}) == ServerURL(host="localhost")


def test_from_env_faktory_url() -> None:
    env = {"FAKTORY_URL": f"tcp+tls://:{SECRET}@f.example:7500"}
    assert ServerURL.from_env(env) == ServerURL(
        host="f.example", port=7500, tls=True, password=SECRET
    )


def test_from_env_provider_names_the_variable() -> None:
    env = {
        "FAKTORY_PROVIDER": "ACME_FAKTORY_URL",
        "ACME_FAKTORY_URL": "tcp://acme:7000",
        "FAKTORY_URL": "tcp://ignored:1",
    }
    assert ServerURL.from_env(env) == ServerURL(host="acme", port=7000)


def test_from_env_provider_holding_a_url_is_refused() -> None:
    env = {"FAKTORY_PROVIDER": f"tcp://:{SECRET}@h:7419"}
    with pytest.raises(ConfigurationError, match="name the variable") as raised:
        ServerURL.from_env(env)
    assert SECRET not in str(raised.value)


def test_from_env_provider_naming_a_missing_variable() -> None:
    env = {"FAKTORY_PROVIDER": "NOPE_URL", "FAKTORY_URL": "tcp://fallback:1"}
    with pytest.raises(ConfigurationError, match="NOPE_URL"):
        ServerURL.from_env(env)


def test_from_env_bad_url_does_not_leak() -> None:
    with pytest.raises(ConfigurationError) as raised:
        ServerURL.from_env({"FAKTORY_URL": f"http://:{SECRET}@h"})
    assert SECRET not in str(raised.value)


# -- the password stays secret ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"tcp://:{SECRET}@h:1", "tcp://:***@h:1"),
        (f"tcp+tls://bob:{SECRET}@h", "tcp+tls://bob:***@h:7419"),
        ("tcp://bob@h", "tcp://bob@h:7419"),
        ("tcp://h", "tcp://h:7419"),
        ("tcp://[::1]:2", "tcp://[::1]:2"),
    ],
)
def test_str_and_repr_hide_the_password(url: str, shown: str) -> None:
    parsed = ServerURL.parse(url)
    assert str(parsed) == shown
    assert SECRET not in repr(parsed)
    assert SECRET not in str(parsed)
    assert "password" not in repr(parsed)


@settings(deadline=None)
@given(st.text(min_size=1, max_size=20).map(lambda s: f"{SECRET}{s}"))
def test_no_password_appears_in_repr_or_str(password: str) -> None:
    parsed = ServerURL.parse(f"tcp://user:{quote(password, safe='')}@host:7419")
    assert parsed.password == password
    for text in (repr(parsed), str(parsed), repr([parsed])):
        assert SECRET not in text


def test_str_round_trips_without_the_password() -> None:
    parsed = ServerURL.parse(f"tcp+tls://bob:{SECRET}@[::1]:9000")
    again = ServerURL.parse(str(parsed))
    assert (again.host, again.port, again.tls, again.username) == ("::1", 9000, True, "bob")


def test_a_bad_url_from_the_environment_names_its_variable() -> None:
    with pytest.raises(ConfigurationError, match=r"^the environment variable FAKTORY_URL: invalid"):
        ServerURL.from_env({"FAKTORY_URL": "http://x"})
    env = {"FAKTORY_PROVIDER": "MY_URL", "MY_URL": "tcp://host:99999"}
    with pytest.raises(ConfigurationError, match=r"^the environment variable MY_URL: invalid"):
        ServerURL.from_env(env)
