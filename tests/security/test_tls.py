"""TLS against a real Faktory with its own CA, for every adapter's Client and Worker.

Verification is on by default; the CA is given as ``ssl_context`` or through OpenSSL's
``SSL_CERT_FILE``; a wrong CA or host name fails naming the verification.
"""

from __future__ import annotations

import json
import ssl
import threading
import traceback
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from faktory_adapters._common import FaktoryConnectionError, handshake_closed
from faktory_core import EXIT_REFUSED, ServerURL
from tests.support.adapters import SyncClient, adapter_module, capture_logs, serve
from tests.support.server import TEST_PASSWORD, FaktoryServer
from tests.support.tls import Certificates, make_certificates
from tests.support.watchdog import serve_until_it_stops

pytestmark = pytest.mark.server


def trusting(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


@pytest.fixture(scope="module")
def misnamed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaktoryServer]:
    """A TLS Faktory whose certificate names faktory.invalid, not localhost."""
    certs = make_certificates(tmp_path_factory.mktemp("tls-misnamed"), ["faktory.invalid"])
    server = FaktoryServer(tls=(certs.server_key, certs.server_cert)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def misnamed_ca(misnamed_server: FaktoryServer) -> Path:
    assert misnamed_server.tls is not None
    return misnamed_server.tls[1].parent / "ca.cert.pem"


def refused(adapter: str, url: str, **options: Any) -> FaktoryConnectionError:
    """The error of a Client whose TLS handshake fails verification: a FaktoryConnectionError
    raised from the SSLCertVerificationError, saying that the certificate is not trusted."""
    with (
        SyncClient(adapter, url, **options) as client,
        pytest.raises(FaktoryConnectionError) as raised,
    ):
        client.info()
    cause = raised.value.__cause__
    assert isinstance(cause, ssl.SSLCertVerificationError)
    assert "certificate verify failed" in str(cause)
    assert str(raised.value) == (
        f"cannot use the server at {ServerURL.parse(url)}: TLS error: the certificate is not "
        f"trusted ({cause.verify_message})"
    )
    for shown in (str(raised.value), "".join(traceback.format_exception(raised.value))):
        assert TEST_PASSWORD not in shown
    return raised.value


def test_the_server_serves_tls_only(tls_server: FaktoryServer, certificates: Certificates) -> None:
    assert tls_server.url.startswith("tcp+tls://:")
    assert tls_server.url.endswith(f"@localhost:{tls_server.port}")
    assert tls_server.web_url == f"https://localhost:{tls_server.web_port}"
    https = urllib.request.HTTPSHandler(context=trusting(certificates.ca_cert))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), https)
    with opener.open(f"{tls_server.web_url}/health", timeout=10) as response:
        assert json.loads(response.read())["server"]["faktory_version"] == "1.9.4"


def test_a_restarted_server_serves_tls_again(certificates: Certificates) -> None:
    server = FaktoryServer(tls=(certificates.server_key, certificates.server_cert)).start()
    try:
        context = trusting(certificates.ca_cert)
        with SyncClient("thread", server.url, ssl_context=context) as client:
            client.push("Kept", [], queue="restart")
        server.restart()
        with SyncClient("thread", server.url, ssl_context=context) as client:
            assert client.info()["faktory"]["queues"]["restart"] == 1
    finally:
        server.stop()


def test_verification_is_on_by_default(adapter: str, tls_server: FaktoryServer) -> None:
    error = refused(adapter, tls_server.url)
    assert isinstance(error.__cause__, ssl.SSLCertVerificationError)
    assert error.__cause__.verify_message == "unable to get local issuer certificate"


def test_the_ca_given_as_an_ssl_context(
    adapter: str, tls_server: FaktoryServer, certificates: Certificates
) -> None:
    context = trusting(certificates.ca_cert)
    with SyncClient(adapter, tls_server.url, ssl_context=context) as client:
        assert client.info()["server"]["faktory_version"] == "1.9.4"


def test_the_ca_from_ssl_cert_file(
    adapter: str,
    tls_server: FaktoryServer,
    certificates: Certificates,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca_cert))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with SyncClient(adapter, tls_server.url) as client:
        assert client.info()["server"]["faktory_version"] == "1.9.4"


def test_a_wrong_ca_fails_naming_the_verification(
    adapter: str, tls_server: FaktoryServer, other_ca: Path
) -> None:
    refused(adapter, tls_server.url, ssl_context=trusting(other_ca))


def test_a_wrong_host_name_fails_naming_the_mismatch(
    adapter: str, misnamed_server: FaktoryServer, misnamed_ca: Path
) -> None:
    error = refused(adapter, misnamed_server.url, ssl_context=trusting(misnamed_ca))
    assert "Hostname mismatch" in str(error)
    assert "'localhost'" in str(error)


def test_a_worker_with_the_right_ca_runs_a_job(
    adapter: str, tls_server: FaktoryServer, certificates: Certificates
) -> None:
    context = trusting(certificates.ca_cert)
    queue = f"tls-{uuid.uuid4().hex[:10]}"
    with SyncClient(adapter, tls_server.url, ssl_context=context) as client:
        before = client.info()["faktory"]["total_processed"]
        jid = client.push("OverTls", ["hello"], queue=queue)
        ran: list[tuple[str, str]] = []
        worker = adapter_module(adapter).Worker(
            url=tls_server.url, queues=[queue], concurrency=1, ssl_context=context, burst=True
        )
        worker.register("OverTls", lambda word: ran.append((word, jid)))
        assert serve(adapter, worker) == 0
        assert ran == [("hello", jid)]
        stats = client.info()["faktory"]
        assert stats["queues"].get(queue, 0) == 0
        assert stats["total_processed"] == before + 1
        assert stats["sets"]["retries"] == 0


def test_a_worker_configured_by_the_environment_alone(
    adapter: str,
    tls_server: FaktoryServer,
    certificates: Certificates,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # FAKTORY_URL names the server, SSL_CERT_FILE its CA: no URL or context in the code.
    monkeypatch.delenv("FAKTORY_PROVIDER", raising=False)
    monkeypatch.setenv("FAKTORY_URL", tls_server.url)
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca_cert))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    queue = f"tls-{uuid.uuid4().hex[:10]}"
    with SyncClient(adapter, None) as client:
        client.push("FromEnv", [1, 2], queue=queue)
    ran: list[int] = []
    worker = adapter_module(adapter).Worker(queues=[queue], concurrency=1, burst=True)
    worker.register("FromEnv", lambda a, b: ran.append(a + b))
    assert serve(adapter, worker) == 0
    assert ran == [3]


def test_a_worker_refuses_an_unverified_server_and_says_why(
    adapter: str, tls_server: FaktoryServer, certificates: Certificates
) -> None:
    queue = f"tls-{uuid.uuid4().hex[:10]}"
    with SyncClient(adapter, tls_server.url, ssl_context=trusting(certificates.ca_cert)) as client:
        client.push("NeverRuns", [], queue=queue)
        worker = adapter_module(adapter).Worker(url=tls_server.url, queues=[queue], concurrency=1)
        ran = threading.Event()
        worker.register("NeverRuns", ran.set)
        with capture_logs("the certificate is not trusted") as logs:
            # It stops by itself with exit 3 rather than retry for ever.
            assert serve_until_it_stops(adapter, worker) == EXIT_REFUSED
        assert logs.seen.is_set(), logs.text
        assert not ran.is_set()
        assert client.info()["faktory"]["queues"][queue] == 1  # still there, for a good worker
        assert TEST_PASSWORD not in logs.text


# -- the wrong scheme ------------------------------------------------------------------------

HINTED: Final = ["asyncio", "thread", "gevent"]  # the adapters whose connect code adds hints


@pytest.mark.parametrize("adapter", HINTED)
def test_a_tls_url_for_a_plain_server_hints_at_tcp(
    adapter: str, faktory_server: FaktoryServer
) -> None:
    url = f"tcp+tls://localhost:{faktory_server.port}"
    with SyncClient(adapter, url) as client, pytest.raises(FaktoryConnectionError) as raised:
        client.info()
    assert isinstance(raised.value.__cause__, ssl.SSLError)
    assert raised.value.__cause__.reason == "WRONG_VERSION_NUMBER"
    assert str(raised.value) == f"cannot use the server at {url}: TLS error: WRONG_VERSION_NUMBER"
    shown = "".join(traceback.format_exception(raised.value))
    hint = f"{url} does not speak TLS: if the server is plain TCP, use a tcp:// URL"
    assert shown.count(hint) == 1  # once, under the error the caller sees
    assert raised.value.__notes__ == [hint]


@pytest.mark.parametrize("adapter", HINTED)
def test_a_plain_url_for_a_tls_server_hints_at_tcp_tls(
    adapter: str, tls_server: FaktoryServer
) -> None:
    # Faktory waits 2 s for a TLS hello, then closes the connection without a word.
    url = tls_server.url.replace("tcp+tls://", "tcp://", 1)
    with (
        SyncClient(adapter, url) as client,
        pytest.raises(FaktoryConnectionError) as raised,
    ):
        client.info()
    assert isinstance(raised.value, adapter_module(adapter).FaktoryError)
    assert str(raised.value) == (
        f"tcp://:***@localhost:{tls_server.port} closed the connection during the handshake: "
        "if the server speaks TLS, use a tcp+tls:// URL"
    )


@pytest.mark.parametrize("adapter", HINTED)
def test_an_untrusted_certificate_hints_at_the_remedy(
    adapter: str, tls_server: FaktoryServer
) -> None:
    error = refused(adapter, tls_server.url)
    assert any("ssl_context= or the SSL_CERT_FILE variable" in note for note in error.__notes__)
    shown = "".join(traceback.format_exception(error))
    assert shown.count("ssl_context= or the SSL_CERT_FILE variable") == 1


def test_the_closed_handshake_error_hints_at_tls_for_plain_urls_only() -> None:
    plain = handshake_closed(ServerURL.parse("tcp://:pw@faktory:7419"))
    assert str(plain) == (
        "tcp://:***@faktory:7419 closed the connection during the handshake: "
        "if the server speaks TLS, use a tcp+tls:// URL"
    )
    tls = handshake_closed(ServerURL.parse("tcp+tls://faktory:7419"))
    assert str(tls) == "tcp+tls://faktory:7419 closed the connection during the handshake"
