"""A real Prometheus server (Debian's ``prometheus`` package) for the metrics tests.

Each :class:`PrometheusServer` runs its own ``prometheus`` on a free loopback port, with its
storage and log in a directory of the test's, and the configuration the test gives::

    with PrometheusServer(config_text, tmp_path).start() as prometheus:
        prometheus.wait_for("a job", lambda: prometheus.query("faktory_jobs_started_total"))

``scripts/install-prometheus`` installs the package (``make test`` runs it); the package's own
service is not used. Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from faktory_adapters._supervisor import death_signal

__all__ = ["INSTALL_HINT", "PrometheusError", "PrometheusServer", "missing_binaries"]

T = TypeVar("T")

INSTALL_HINT = (
    "run scripts/install-prometheus as root (`make test` does): it installs Debian's "
    "prometheus package"
)
_HOST = "127.0.0.1"
_MAX_START_ATTEMPTS = 3  # a picked port can be taken before prometheus binds it
_POLL = 0.1
# Prometheus reads no proxy setting; the tests' HTTP calls must not either.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def missing_binaries() -> list[str]:
    """The commands of Debian's prometheus package that are not on PATH."""
    return [name for name in ("prometheus", "promtool") if shutil.which(name) is None]


class PrometheusError(AssertionError):
    """Prometheus's API refused a request (a query that does not parse, say): its message."""


class PrometheusServer:
    """One ``prometheus`` process, configured by ``config`` (the YAML text of a
    ``prometheus.yml``), keeping its data and log in ``directory``."""

    def __init__(self, config: str, directory: Path, *, startup_timeout: float = 30.0) -> None:
        self.config = config
        self.directory = directory
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    # ------------------------------------------------------------- start / stop

    def start(self) -> Self:
        """Launch it and wait until ``/-/ready`` answers; RuntimeError with its log if not."""
        if self._proc is not None:
            raise RuntimeError("this PrometheusServer is already running")
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "prometheus.yml").write_text(self.config, encoding="utf-8")
        for _ in range(_MAX_START_ATTEMPTS):
            self._launch()
            try:
                self._wait_until_ready()
            except BaseException:
                log = self.log_tail()
                self.stop()
                if "address already in use" in log:
                    continue
                raise
            return self
        raise RuntimeError(f"prometheus could not bind a port in {_MAX_START_ATTEMPTS} attempts")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s. Idempotent."""
        proc, self._proc, self._port = self._proc, None, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("PrometheusServer is not started")
        return f"http://{_HOST}:{self._port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "prometheus.log"

    def log_tail(self, max_bytes: int = 4000) -> str:
        try:
            text = self.log_path.read_bytes()[-max_bytes:].decode("utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return text.rstrip() or "(empty log)"

    # ---------------------------------------------------------------------- API

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``: its ``data``. PrometheusError with the error it gives."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with _OPENER.open(url, timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as error:  # 400 and 422 carry the reason as JSON
            try:
                body = json.loads(error.read())
            except ValueError:
                raise PrometheusError(f"{path} {params}: HTTP {error.code}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"{params or path}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's series: ``[{"metric": {labels}, "value": [time, "text"]}]``."""
        data = self.api("query", query=expr)
        if data["resultType"] != "vector":
            raise PrometheusError(f"{expr}: a {data['resultType']}, not a vector")
        return list(data["result"])

    def value(self, expr: str) -> float | None:
        """The one value ``expr`` gives now, or None if it gives no series."""
        result = self.query(expr)
        if not result:
            return None
        (series,) = result
        return float(series["value"][1])

    def wait_for(self, what: str, condition: Callable[[], T | None], timeout: float = 30.0) -> T:
        """Poll ``condition()`` until it returns something true, for ``timeout`` s at most:
        Prometheus scrapes and evaluates on its own clock, and has no event to await."""
        deadline = time.monotonic() + timeout
        while True:
            result = condition()
            if result:
                return result
            if self._proc is None or self._proc.poll() is not None:
                raise AssertionError(f"prometheus is not running; its log:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus did not show {what} within {timeout} s")
            time.sleep(_POLL)

    # ---------------------------------------------------------------- internals

    def _launch(self) -> None:
        self._port = _free_port()
        argv = [
            "prometheus",
            f"--config.file={self.directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.directory / 'data'}",
            f"--web.listen-address={_HOST}:{self._port}",
        ]
        env = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}
        with self.log_path.open("wb") as log:  # a log per attempt
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=death_signal(),  # never outlives the tests
            )

    def _wait_until_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            status = self._proc.poll()
            if status is not None:
                raise RuntimeError(f"prometheus exited with status {status}:\n{self.log_tail()}")
            with (
                contextlib.suppress(OSError),
                _OPENER.open(f"{self.url}/-/ready", timeout=1) as response,
            ):
                if response.status == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"prometheus was not ready within {self.startup_timeout} s:\n{self.log_tail()}"
                )
            time.sleep(_POLL)


def _free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port
