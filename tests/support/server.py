"""Start and stop a real Faktory server (v1.9.4) for the integration tests.

The server is installed and launched by ``scripts/faktory-server`` (see its ``--help``). Each
:class:`FaktoryServer` runs its own Faktory, and through it its own Redis, on two free loopback
ports with a short private directory under ``/tmp``::

    with FaktoryServer().start(password="s3cret") as server:
        connect_somehow(server.url)  # tcp://:s3cret@127.0.0.1:<port>

With ``FaktoryServer(tls=(key_path, cert_path))`` the server speaks TLS only, on the command
port and the Web UI (Faktory does so when its config directory holds ``private.key.pem`` and
``public.cert.pem``); :attr:`FaktoryServer.url` is then ``tcp+tls://localhost:<port>``, so the
certificate must name ``localhost`` for a verifying client (see ``tests.support.tls``).

Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from faktory_adapters._supervisor import death_signal

__all__ = ["FAKTORY_VERSION", "SCRIPT", "TEST_PASSWORD", "FaktoryServer", "closed_port"]

FAKTORY_VERSION = "1.9.4"
# The password of the `faktory_password_server` fixture; exercises percent-encoding in
# FaktoryServer.url (space, "/", "&", "@", ":", "%").
TEST_PASSWORD = "s3cret w/ spaces&symbols@:%"
REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "faktory-server"

_HOST = "127.0.0.1"
# The name a TLS URL gives: certificates name hosts, and Faktory listens on _HOST only.
_TLS_HOST = "localhost"
_INSTALL_TIMEOUT = 1800.0  # apt-get plus a cold Go build; normally ~25 s, or instant.
_MAX_START_ATTEMPTS = 3  # a picked port can be taken before Faktory binds it


class _PortConflictError(Exception):
    """Faktory could not bind one of the ports picked for it; retry with new ones."""


class FaktoryServer:
    """One Faktory server process (plus the Redis it launches) for tests.

    Call :meth:`start` (or use the instance as a context manager) and :meth:`stop`. The
    connection details are available as properties once started.
    """

    _install_lock: ClassVar[threading.Lock] = threading.Lock()
    _installed_binary: ClassVar[str | None] = None
    _install_error: ClassVar[str | None] = None

    def __init__(
        self,
        *,
        log_level: str = "info",
        startup_timeout: float = 20.0,
        stop_timeout: float = 10.0,
        tls: tuple[str | os.PathLike[str], str | os.PathLike[str]] | None = None,
    ) -> None:
        """``tls``: (private key, certificate) PEM files; the server then speaks TLS only."""
        self.log_level = log_level
        self.tls = None if tls is None else (Path(tls[0]), Path(tls[1]))
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._port: int | None = None
        self._web_port: int | None = None
        self._password: str | None = None

    # ------------------------------------------------------------------ install

    @classmethod
    def install(cls) -> str:
        """Run ``scripts/faktory-server install`` (once per process); return the binary path.

        Raises RuntimeError, with the script's stderr, if the installation fails. A failure is
        remembered, so later calls fail the same way without running the script again.
        """
        with cls._install_lock:
            if cls._installed_binary is not None:
                return cls._installed_binary
            if cls._install_error is not None:
                raise RuntimeError(cls._install_error)
            try:
                result = subprocess.run(
                    [str(SCRIPT), "install"],
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=_INSTALL_TIMEOUT,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                cls._install_error = f"{SCRIPT} install could not run: {exc}"
                raise RuntimeError(cls._install_error) from exc
            lines = result.stdout.strip().splitlines()
            if result.returncode != 0 or not lines:
                cls._install_error = (
                    f"{SCRIPT} install failed (exit status {result.returncode}):\n"
                    f"{result.stderr.strip()}"
                )
                raise RuntimeError(cls._install_error)
            cls._installed_binary = lines[-1].strip()
            return cls._installed_binary

    # ------------------------------------------------------------- start / stop

    def start(self, password: str | None = None) -> Self:
        """Launch the server and wait until it greets with ``+HI`` and serves ``/health``.

        ``password`` (optional, non-empty) protects the command port and the Web UI. Raises
        RuntimeError if the server does not come up within ``startup_timeout`` seconds or exits
        early; the message includes the tail of its log.
        """
        if self._proc is not None:
            raise RuntimeError("this FaktoryServer is already running")
        if password is not None:
            if not password:
                raise ValueError("password must be non-empty (use None for no password)")
            if password.startswith("/") and password != password.strip():
                # Faktory reads a '/'-prefixed FAKTORY_PASSWORD as a file and trims its content.
                raise ValueError("a password starting with '/' cannot have surrounding spaces")
        binary = self.install()
        conflict = ""
        for _ in range(_MAX_START_ATTEMPTS):
            try:
                self._start_once(binary, password)
            except _PortConflictError as exc:
                conflict = str(exc)
            else:
                return self
        raise RuntimeError(
            f"Faktory could not bind its ports in {_MAX_START_ATTEMPTS} attempts:\n{conflict}"
        )

    def stop(self) -> None:
        """Stop the server and its Redis, and remove the private directory. Idempotent."""
        proc, directory = self._proc, self._dir
        self._proc = None
        self._dir = None
        self._port = self._web_port = None
        self._password = None
        try:
            if proc is not None:
                _terminate_group(proc, self.stop_timeout)
        finally:
            if directory is not None:
                _kill_redis_for(directory)
                shutil.rmtree(directory, ignore_errors=True)

    def restart(self) -> None:
        """Stop Faktory and its Redis (SIGTERM, so Redis saves), then start them again on the
        same ports with the same data. Jobs pushed before survive the restart."""
        self._require_started()
        proc, directory = self._proc, self._dir
        port, web_port, password = self._port, self._web_port, self._password
        assert proc is not None
        assert directory is not None
        assert port is not None
        assert web_port is not None
        _terminate_group(proc, self.stop_timeout)
        _kill_redis_for(directory)
        self._launch(self.install(), directory, port, web_port, password)

    def __enter__(self) -> Self:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --------------------------------------------------------------- properties

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        """The server process's pid (to stop it with SIGSTOP, for a server that answers nothing)."""
        self._require_started()
        assert self._proc is not None
        return self._proc.pid

    @property
    def host(self) -> str:
        return _HOST

    @property
    def port(self) -> int:
        self._require_started()
        assert self._port is not None
        return self._port

    @property
    def web_port(self) -> int:
        self._require_started()
        assert self._web_port is not None
        return self._web_port

    @property
    def password(self) -> str | None:
        self._require_started()
        return self._password

    @property
    def url(self) -> str:
        """``tcp://127.0.0.1:PORT``, or ``tcp://:PASSWORD@127.0.0.1:PORT`` (percent-encoded).

        With TLS: ``tcp+tls://[:PASSWORD@]localhost:PORT``, the host name a certificate names.
        """
        if self.tls is None:
            scheme, host = "tcp", self.host
        else:
            scheme, host = "tcp+tls", _TLS_HOST
        if self.password is None:
            return f"{scheme}://{host}:{self.port}"
        return f"{scheme}://:{urllib.parse.quote(self.password, safe='')}@{host}:{self.port}"

    @property
    def web_url(self) -> str:
        if self.tls is None:
            return f"http://{self.host}:{self.web_port}"
        return f"https://{_TLS_HOST}:{self.web_port}"

    @property
    def directory(self) -> Path:
        """The private directory: ``db/`` (Redis data, socket, log), ``conf/``, the log file."""
        self._require_started()
        assert self._dir is not None
        return self._dir

    @property
    def log_path(self) -> Path:
        return self.directory / "faktory.log"

    def log_tail(self, max_bytes: int = 4000) -> str:
        """The end of Faktory's log and of its Redis log, for error messages."""
        if self._dir is None:
            return ""
        return _log_tail(self._dir, max_bytes)

    # ---------------------------------------------------------------- internals

    def _require_started(self) -> None:
        if self._proc is None:
            raise RuntimeError("FaktoryServer is not started")

    def _start_once(self, binary: str, password: str | None) -> None:
        directory = Path(tempfile.mkdtemp(prefix="fk", dir="/tmp"))
        if self.tls is not None:
            key, cert = self.tls
            conf = directory / "conf"
            conf.mkdir()
            try:
                shutil.copyfile(key, conf / "private.key.pem")
                shutil.copyfile(cert, conf / "public.cert.pem")
            except OSError:
                shutil.rmtree(directory, ignore_errors=True)
                raise
        port, web_port = _free_ports(2)
        self._launch(binary, directory, port, web_port, password)

    def _launch(
        self, binary: str, directory: Path, port: int, web_port: int, password: str | None
    ) -> None:
        env = os.environ.copy()
        env.pop("FAKTORY_PASSWORD", None)
        env["FAKTORY_BIN"] = binary
        if password is not None:
            if password.startswith("/"):
                secret = directory / "password"
                secret.write_text(password, encoding="utf-8")
                secret.chmod(0o600)
                env["FAKTORY_PASSWORD"] = str(secret)
            else:
                env["FAKTORY_PASSWORD"] = password
        argv = [
            str(SCRIPT),
            "run",
            "--port",
            str(port),
            "--web-port",
            str(web_port),
            "--dir",
            str(directory),
            "--log-level",
            self.log_level,
        ]
        try:
            with (directory / "faktory.log").open("wb") as log:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    preexec_fn=death_signal(),
                )
        except OSError:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        self._proc, self._dir = proc, directory
        self._port, self._web_port, self._password = port, web_port, password
        try:
            self._wait_until_ready()
        except BaseException:
            tail = _log_tail(directory, 4000)
            self.stop()
            if re.search(r"address already in use|server crashed", tail, re.IGNORECASE):
                raise _PortConflictError(tail) from None
            raise

    def _wait_until_ready(self) -> None:
        assert self._proc is not None
        assert self._port is not None
        assert self._web_port is not None
        deadline = time.monotonic() + self.startup_timeout
        greeted = False
        tls = self.tls is not None
        while True:
            status = self._proc.poll()
            if status is not None:
                raise RuntimeError(
                    f"Faktory exited early with status {status}; log tail:\n{self.log_tail()}"
                )
            if not greeted:
                greeted = _greets(self._port, deadline, tls=tls)
            if greeted and _healthy(self._web_port, deadline, tls=tls):
                return
            # The Web UI runs in its own goroutine and only logs a failed bind.
            if greeted and "server crashed" in self.log_tail():
                raise RuntimeError(
                    f"Faktory's Web UI failed to start; log tail:\n{self.log_tail()}"
                )
            if time.monotonic() >= deadline:
                what = "serve /health" if greeted else "greet with +HI"
                raise RuntimeError(
                    f"Faktory did not {what} within {self.startup_timeout} s "
                    f"(port {self._port}, web port {self._web_port}); log tail:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.05)


# ------------------------------------------------------------------------- helpers


def closed_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago): connects are refused."""
    (port,) = _free_ports(1)
    return port


def _free_ports(count: int) -> list[int]:
    """Distinct loopback ports that were free a moment ago (held open until all are picked)."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((_HOST, 0))
            ports.append(sock.getsockname()[1])
        return ports


def _remaining(deadline: float, cap: float) -> float:
    return max(0.01, min(cap, deadline - time.monotonic()))


# Readiness probes only: whether the server trusts its certificate is for the tests to check.
_UNVERIFIED = ssl.create_default_context()
_UNVERIFIED.check_hostname = False
_UNVERIFIED.verify_mode = ssl.CERT_NONE


def _greets(port: int, deadline: float, *, tls: bool = False) -> bool:
    """True if a TCP (or TLS) connection to ``port`` receives a line starting with ``+HI``."""
    try:
        with contextlib.ExitStack() as stack:
            sock = stack.enter_context(
                socket.create_connection((_HOST, port), timeout=_remaining(deadline, 0.5))
            )
            sock.settimeout(_remaining(deadline, 1.0))
            if tls:
                sock = stack.enter_context(_UNVERIFIED.wrap_socket(sock))
            data = b""
            while b"\r\n" not in data and len(data) < 4096:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data.startswith(b"+HI")
    except OSError:
        return False


_NO_PROXY_OPENER = urllib.request.build_opener(
    urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=_UNVERIFIED)
)


def _healthy(web_port: int, deadline: float, *, tls: bool = False) -> bool:
    """True if ``GET /health`` (over HTTPS with ``tls``) answers 200 with Faktory's JSON."""
    url = f"{'https' if tls else 'http'}://{_HOST}:{web_port}/health"
    try:
        with _NO_PROXY_OPENER.open(url, timeout=_remaining(deadline, 1.0)) as response:
            if response.status != 200:
                return False
            payload = json.loads(response.read())
    except (OSError, ValueError):
        return False
    return isinstance(payload, dict) and isinstance(payload.get("server"), dict)


def _log_tail(directory: Path, max_bytes: int) -> str:
    parts: list[str] = []
    for name in ("faktory.log", "db/redis.log"):
        path = directory / name
        try:
            with path.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - max_bytes))
                text = fh.read().decode("utf-8", errors="replace")
        except OSError:
            continue
        if text.strip():
            parts.append(f"--- {path} ---\n{text.rstrip()}")
    return "\n".join(parts) if parts else "(no log output)"


def _terminate_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the process group, wait up to ``timeout`` s, then SIGKILL it."""
    pgid = proc.pid  # start_new_session=True: the child leads its own group
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        proc.wait(timeout=10)


def _alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (orphans may never be reaped here)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state not in (b"Z", b"X", b"")


def _redis_pids_for(directory: Path) -> list[int]:
    """redis-server processes whose Unix socket is ``<directory>/db/redis.sock``.

    Faktory starts them with ``--unixsocket <sock>``; Redis then retitles itself to
    ``/usr/bin/redis-server unixsocket:<sock>``, so both spellings are matched.
    """
    sock = os.fsencode(directory / "db" / "redis.sock")
    found: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            comm = Path(f"/proc/{entry}/comm").read_bytes().strip()
        except OSError:
            continue
        tokens = re.split(rb"[\0 ]+", cmdline)
        if comm != b"redis-server" and not tokens[0].endswith(b"redis-server"):
            continue
        if any(tok == sock or tok.endswith(b":" + sock) for tok in tokens):
            found.append(int(entry))
    return found


def _kill_redis_for(directory: Path) -> None:
    """Make sure no redis-server for ``directory`` survives: SIGTERM, then SIGKILL."""
    pids = [pid for pid in _redis_pids_for(directory) if _alive(pid)]
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            time.sleep(0.05)
            pids = [pid for pid in pids if _alive(pid)]
    if pids:
        raise RuntimeError(f"redis-server process(es) {pids} for {directory} would not die")
