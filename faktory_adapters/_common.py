"""What every adapter shares and that needs no runtime: errors, the world's facts the core
asks for (ids, memory, the environment, TLS), and turning exceptions into FAIL reports.
"""

from __future__ import annotations

import base64
import concurrent.futures
import logging
import os
import queue
import secrets
import socket
import ssl
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

from faktory_core import (
    ArgumentTypeError,
    Command,
    Event,
    ProtocolError,
    RemoteProtocolError,
    ServerURL,
)
from faktory_core.commands import Push, PushBulk
from faktory_core.events import ServerError, ServerErrorKind
from faktory_core.machine_io import ConnectionLost, JobError

__all__ = [
    "MAX_SELECT_WAIT",
    "AuthenticationError",
    "BulkPushProgress",
    "ClientClosedError",
    "DaemonThreadPool",
    "FaktoryConnectionError",
    "FaktoryError",
    "FaktoryProtocolError",
    "FaktoryTimeoutError",
    "InvalidJobError",
    "JobAborted",
    "NoLock",
    "OutcomeUnknownError",
    "ServerReplyError",
    "WrongEventLoopError",
    "broke_during",
    "connect_failed",
    "connection_lost",
    "expect",
    "explain_tls_error",
    "handshake_closed",
    "handshake_failure",
    "job_error",
    "logger",
    "new_jid",
    "new_wid",
    "outcome_unknown",
    "receive",
    "remaining",
    "resolve_url",
    "rss_kb",
    "thread_stack",
    "tls_context",
    "unusable",
    "unusable_reason",
]

#: The longest single wait of a select() loop: a machine's deadline can be days away, and
#: select() refuses very long timeouts.
MAX_SELECT_WAIT: Final = 3600.0

#: Every log line of the library goes through this logger (or its children); none is configured.
logger: Final = logging.getLogger("faktory")


class FaktoryError(Exception):
    """Base class of every failure that is the server's or the network's: ``except
    FaktoryError`` catches them all. A mistake of the caller's is never one: it raises a
    ValueError, TypeError or RuntimeError naming what to change.

    ``bulk`` is set on an error that ended a Client's ``push_bulk``: how far it got.
    """

    bulk: BulkPushProgress | None = None


class BulkPushProgress:
    """How far a ``push_bulk`` got before the error that ended it (``error.bulk``).

    ``push_bulk`` sends its jobs in commands of ``faktory_core.commands.MAX_BULK_JOBS``, one
    after another, so when one fails the ones before it went through:

    - ``pushed``: the jids the server accepted (those before the command that failed);
    - ``refused``: ``{jid: reason}`` of the jobs the server refused (all of the failed
      command's when the server refused it whole);
    - ``uncertain``: the jids of the failed command when it may or may not have been carried
      out (it was sent and the connection broke, or its reply never came);
    - ``unsent``: the jids never sent (every later command's, and the failed one's when it
      surely was not).
    """

    __slots__ = ("pushed", "refused", "uncertain", "unsent")

    def __init__(
        self,
        *,
        pushed: tuple[str, ...],
        refused: dict[str, str],
        uncertain: tuple[str, ...],
        unsent: tuple[str, ...],
    ) -> None:
        self.pushed = pushed
        self.refused = refused
        self.uncertain = uncertain
        self.unsent = unsent

    def __repr__(self) -> str:
        return (
            f"<BulkPushProgress pushed={len(self.pushed)} refused={len(self.refused)} "
            f"uncertain={len(self.uncertain)} unsent={len(self.unsent)}>"
        )


class FaktoryConnectionError(FaktoryError, ConnectionError):
    """The server cannot be reached or used (refused, unknown host, a TLS handshake that
    failed, a certificate that is not trusted), or the connection broke or was closed.

    Raised from the error the runtime saw (its ``__cause__``), whose ``errno`` it carries; a
    ConnectionError, so ``except OSError`` catches it too.
    """


class OutcomeUnknownError(FaktoryConnectionError):
    """The connection broke after a command was sent and before its reply came: the server
    may or may not have carried it out, and Faktory cannot say which (a PUSH is not
    idempotent). ``command`` is the command, ``jid`` the job's for a PUSH (else None).

    A FaktoryConnectionError, so ``except ConnectionError`` catches it too. For a PUSH: push
    the same Job again if running it twice is harmless (it keeps its jid, so a handler can
    tell a duplicate), or have its handler skip a jid it has already run.
    """

    def __init__(self, message: str, command: Command) -> None:
        super().__init__(message)
        self.command = command
        self.jid = command.job.jid if isinstance(command, Push) else None


class FaktoryTimeoutError(FaktoryError, TimeoutError):
    """A connect took longer than ``connect_timeout``, or a command than ``timeout``."""


class FaktoryProtocolError(FaktoryError):
    """The server broke the Faktory protocol (raised from the core's RemoteProtocolError), or
    answered with a reply the command does not take."""


class ServerReplyError(FaktoryError):
    """The server answered a command with ``-CODE message``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message


class AuthenticationError(FaktoryError):
    """The server refused our password (or needs one and none was given)."""


class InvalidJobError(FaktoryError):
    """FETCH handed out a job that cannot be built; FAIL it by ``jid`` (when known)."""

    def __init__(self, reason: str, jid: str | None, payload: bytes) -> None:
        super().__init__(f"the server handed out an invalid job: {reason}")
        self.jid = jid
        self.payload = payload


class NoLock:
    """A lock with nothing to lock, for a runtime that runs one task (or greenlet) at a time
    when the code holding it never waits."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None


class ClientClosedError(RuntimeError):
    """A Client was used after ``close()`` (or after its ``with`` block): make a new one."""


class WrongEventLoopError(RuntimeError):
    """An asyncio Client was used on an event loop other than the one its connections belong
    to, while that one is still open: make one Client per event loop."""


_E = TypeVar("_E", bound=Event)


def expect(event: Event, kind: type[_E]) -> _E:
    """``event`` if it is a ``kind``, else a FaktoryError (ServerReplyError for ``-ERR``)."""
    if isinstance(event, kind):
        return event
    if isinstance(event, ServerError):
        raise ServerReplyError(event.code, event.message)
    raise FaktoryProtocolError(f"unexpected reply {event!r}")


def handshake_failure(event: Event, url: ServerURL) -> FaktoryError:
    """The error for a handshake that ended in ``event`` instead of Ready."""
    if isinstance(event, ServerError):
        if event.kind is ServerErrorKind.AUTHENTICATION:
            given = "" if url.password else ": the URL gives none"
            return AuthenticationError(f"{url} refused the password ({event.message}){given}")
        return ServerReplyError(event.code, event.message)
    return FaktoryProtocolError(f"the handshake with {url} failed: {event}")


def handshake_closed(url: ServerURL) -> FaktoryConnectionError:
    """The error for a server that closed the connection before the handshake ended."""
    # Faktory serving TLS waits 2 s for a TLS hello, then closes a plain client's connection.
    hint = "" if url.tls else ": if the server speaks TLS, use a tcp+tls:// URL"
    return FaktoryConnectionError(f"{url} closed the connection during the handshake{hint}")


def _wrapped(error: BaseException) -> BaseException:
    """What the runtime raised, for an error the Client wrapped (raised ``from`` it)."""
    if isinstance(error, (FaktoryConnectionError, FaktoryProtocolError)) and error.__cause__:
        return error.__cause__
    return error


def _wire(error: OSError | RemoteProtocolError, message: str) -> FaktoryError:
    """``error`` (which the caller raises it from) as a FaktoryError saying ``message``; the
    notes explaining a TLS failure move to it, where a traceback shows them last."""
    wrapped: FaktoryError
    if isinstance(error, RemoteProtocolError):
        wrapped = FaktoryProtocolError(message)
    else:
        wrapped = FaktoryConnectionError(message)
        wrapped.errno = error.errno
    for note in getattr(error, "__notes__", ()):
        wrapped.add_note(note)
    if hasattr(error, "__notes__"):
        del error.__notes__
    return wrapped


def unusable(
    error: OSError | RemoteProtocolError, url: ServerURL, *, timeout: float
) -> FaktoryError:
    """The error for a connect or handshake that failed with ``error`` (``timeout``: the bound
    it ran under); raise it ``from error``."""
    reason = unusable_reason(error, url, timeout=timeout)
    return _wire(error, f"cannot use the server at {url}: {reason}")


def connection_lost(
    error: OSError | RemoteProtocolError, url: ServerURL, verb: str
) -> FaktoryError:
    """The error for a command ``verb`` whose connection failed with ``error``; raise it
    ``from error``."""
    if isinstance(error, RemoteProtocolError):
        return _wire(error, f"{url} broke the Faktory protocol during {verb}: {error}")
    return _wire(error, broke_during(error, url, verb))


def broke_during(error: OSError, url: ServerURL, verb: str) -> str:
    """How the connection of a command ``verb`` broke with ``error``, in words."""
    return f"the connection to {url} broke during {verb}: {_os_reason(error)}"


def outcome_unknown(
    command: Command, what: str, cause: OSError | RemoteProtocolError | None = None
) -> OutcomeUnknownError:
    """The error of ``command``, sent on a connection that broke before its reply came
    (``what``: how, naming the server); raise it ``from cause`` (the runtime's error)."""
    if isinstance(command, Push):
        outcome = (
            f"job {command.job.jid} may or may not have been pushed (Faktory cannot tell). "
            "Push the same Job again if running it twice is harmless (its jid stays the same, "
            "so a handler can skip one it has run)"
        )
    elif isinstance(command, PushBulk):
        outcome = (
            f"its {len(command.jobs)} jobs may or may not have been pushed (Faktory cannot "
            "tell). Push them again if running them twice is harmless (their jids stay the "
            "same, so a handler can skip one it has run)"
        )
    else:
        outcome = (
            f"{command.verb} may or may not have been carried out: repeat it if doing it twice "
            "is harmless"
        )
    error = OutcomeUnknownError(f"{what}: {outcome}", command)
    if isinstance(cause, OSError):
        error.errno = cause.errno
    return error


def _os_reason(error: OSError) -> str:
    if isinstance(error, ssl.SSLError):
        return f"TLS error: {error.reason or error}"
    return str(error.strerror or error)


def unusable_reason(error: BaseException, url: ServerURL, *, timeout: float) -> str:
    """Why the server at ``url`` could not be used, in a few words (``timeout``: the bound a
    TimeoutError ran into). The CLI's check and a worker's connects word it alike, and an
    error the Client wrapped as the error it wrapped."""
    error = _wrapped(error)
    if isinstance(error, AuthenticationError):
        if url.password:
            return "wrong password (the server refused the password in the URL)"
        return "wrong password (the server needs one and the URL gives none)"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS error: the certificate is not trusted ({error.verify_message})"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, TimeoutError):
        return f"no answer within {timeout:g} s (timeout)"
    if isinstance(error, ServerReplyError):
        return f"the handshake was refused: {error}"
    if isinstance(error, FaktoryError):  # in its own words (an OSError, some of them)
        return str(error)
    if isinstance(error, ssl.SSLError):
        return _os_reason(error)
    if isinstance(error, OSError):
        return f"cannot connect: {_os_reason(error)}"
    if isinstance(error, ProtocolError):
        return f"it does not speak the Faktory protocol: {error}"
    return f"{type(error).__name__}: {error}"


def connect_failed(
    link: int, url: ServerURL, error: Exception, *, timeout: float
) -> ConnectionLost:
    """The machine input for a connect that raised ``error``: retried with backoff, unless
    retrying cannot help (a certificate that is not trusted, or names another host)."""
    return ConnectionLost(
        link=link,
        reason=f"cannot use the server at {url}: {unusable_reason(error, url, timeout=timeout)}",
        permanent=isinstance(_wrapped(error), ssl.SSLCertVerificationError),
    )


def explain_tls_error(error: ssl.SSLError, url: ServerURL) -> None:
    """Add to a failed TLS handshake's error what it usually means (a note: tracebacks show it)."""
    if isinstance(error, ssl.SSLCertVerificationError):
        error.add_note(
            f"{url}: give the CA that signed the server's certificate with ssl_context= or the "
            "SSL_CERT_FILE variable; the certificate must name the URL's host"
        )
    elif error.reason == "WRONG_VERSION_NUMBER":
        error.add_note(f"{url} does not speak TLS: if the server is plain TCP, use a tcp:// URL")


class JobAborted(BaseException):
    """Raised inside a job the worker aborted (shutdown timeout, second stop, time limit).

    It derives from BaseException, like ``asyncio.CancelledError``, so ``except Exception``
    in a handler does not swallow it. The job was already FAILed when it was raised.
    """

    def __init__(self, reason: str = "aborted") -> None:
        super().__init__(reason)
        self.reason = reason


#: Random jids are made this many at a time: one system call for the lot (a producer's hot
#: path made one per job).
_JID_BATCH: Final = 256
_jids: list[str] = []
# A child process must not hand out the jids its parent has made already.
os.register_at_fork(after_in_child=_jids.clear)


def new_jid() -> str:
    """A random job id: 16 URL-safe characters (96 bits), as the Go client makes them."""
    try:
        return _jids.pop()  # atomic: threads may share the stock
    except IndexError:
        # 12 random bytes are 16 base64 characters, without padding.
        text = base64.urlsafe_b64encode(os.urandom(12 * _JID_BATCH)).decode("ascii")
        _jids.extend([text[start : start + 16] for start in range(16, len(text), 16)])
        return text[:16]


def new_wid() -> str:
    """A random worker id for this process."""
    return secrets.token_hex(8)


def resolve_url(url: str | ServerURL | None, env: Mapping[str, str] | None = None) -> ServerURL:
    """The server address: the argument, else FAKTORY_PROVIDER / FAKTORY_URL, else localhost."""
    if isinstance(url, ServerURL):
        return url
    if isinstance(url, str):
        return ServerURL.parse(url)
    if url is not None:
        raise ArgumentTypeError(
            "url must be a string such as 'tcp://localhost:7419', a faktory_core.ServerURL or "
            f"None (FAKTORY_URL), got {type(url).__name__}"
        )
    return ServerURL.from_env(os.environ if env is None else env)


def tls_context(*, cafile: str | None = None, verify: bool = True) -> ssl.SSLContext:
    """A client TLS context (TLS 1.2 or later) for ``tcp+tls://`` URLs without ``ssl_context``.

    The server's certificate and host name are verified unless ``verify`` is False. The CAs
    trusted are ``cafile``, else the system's, which OpenSSL's standard ``SSL_CERT_FILE`` and
    ``SSL_CERT_DIR`` variables replace when set (read when the Client or Worker is made). So a
    server with a private CA needs either ``SSL_CERT_FILE=/path/ca.pem`` in the environment or
    ``ssl_context=ssl.create_default_context(cafile="/path/ca.pem")``.
    """
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def rss_kb() -> int | None:
    """This process's resident memory in KiB (Linux), for the heartbeat; None if unknown."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def describe_error(error: BaseException) -> str:
    """An exception in a few words: its type, and its message if it has one."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def job_error(error: BaseException) -> JobError:
    """The FAIL report of an exception: its type, its message and its traceback's lines (the
    worker machine keeps as many as the job's ``backtrace`` setting asks for)."""
    lines = traceback.format_exception(error)
    backtrace = tuple(line.rstrip("\n") for line in lines if line.strip())
    message = str(error) or type(error).__name__
    return JobError(errtype=type(error).__name__, message=message, backtrace=backtrace)


def _wrap_tls(context: ssl.SSLContext, sock: socket.socket, host: str) -> socket.socket:
    return context.wrap_socket(sock, server_hostname=host)


def connect_socket(
    url: ServerURL,
    *,
    timeout: float,
    ssl_context: Any = None,
    create_connection: Callable[..., Any] = socket.create_connection,
    wrap_tls: Callable[[ssl.SSLContext, socket.socket, str], socket.socket] = _wrap_tls,
) -> socket.socket:
    """A blocking socket connected to the server (wrapped in TLS for ``tcp+tls://``).

    ``timeout`` bounds the whole, the TCP connect and the TLS handshake together: the handshake
    gets what the connect left (the standard library's counts it for the whole handshake, not
    for each read). The socket returned has ``timeout`` as its timeout, TLS or not. A runtime
    with sockets of its own (gevent) passes how it connects and wraps them.
    """
    deadline = time.monotonic() + timeout
    sock: socket.socket = create_connection((url.host, url.port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if url.tls:
            context = ssl_context if ssl_context is not None else tls_context()
            sock.settimeout(remaining(deadline))
            try:
                sock = wrap_tls(context, sock, url.host)
            except ssl.SSLError as error:
                explain_tls_error(error, url)
                raise
            sock.settimeout(timeout)  # what it was without TLS: the callers' I/O timeout
    except BaseException:
        sock.close()
        raise
    return sock


def receive(sock: socket.socket) -> bytes:
    """What a readable socket holds: one read, plus what TLS has decrypted already (which
    select() cannot see). b"" at the end of the stream."""
    data = sock.recv(65536)
    pending = getattr(sock, "pending", None)  # TLS sockets only
    while data and pending is not None and pending():
        data += sock.recv(pending())
    return data


def thread_stack(ident: int | None) -> str:
    """The current stack of the thread ``ident`` (a job's), formatted."""
    frame = sys._current_frames().get(ident) if ident is not None else None
    return "".join(traceback.format_stack(frame)) if frame else "(not running)\n"


def remaining(deadline: float) -> float:
    """Seconds left until ``deadline`` (monotonic); TimeoutError if none are."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the deadline has passed")
    return left


class DaemonThreadPool(concurrent.futures.Executor):
    """A thread pool whose threads never keep the process alive.

    ``concurrent.futures.ThreadPoolExecutor`` joins its threads at interpreter exit, so one
    job that never returns would hang a worker that is done. Here the threads are daemons: a
    job still running when the worker exits is abandoned (it was already FAILed).
    """

    def __init__(self, max_workers: int, name: str) -> None:
        self._max_workers = max_workers
        self._name = name
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._shutdown = False

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("the pool is shut down")
            self._queue.put((future, fn, args, kwargs))
            if self._idle == 0 and len(self._threads) < self._max_workers:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            elif self._idle > 0:
                self._idle -= 1  # an idle thread takes it
        return future

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn, args, kwargs = item
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as error:
                    future.set_exception(error)
                else:
                    future.set_result(result)
            del item, future, fn, args, kwargs
            with self._lock:
                self._idle += 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)
        if wait:
            for thread in threads:
                thread.join()
