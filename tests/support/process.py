"""Run a worker in a real subprocess and wait for the events it prints, never sleeping."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parents[2]


class WorkerProcess:
    """``python -m tests.adapters.worker_app ARGS``; its stdout lines become awaitable events."""

    def __init__(self, *args: str) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.adapters.worker_app", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._stderr: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr.append(line)

    @property
    def log(self) -> str:
        """What the worker logged on stderr so far."""
        return "".join(self._stderr)

    def expect(self, *words: str, timeout: float = 15.0) -> list[str]:
        """Wait for the next line starting with ``words``; return its words."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._queue.get(timeout=max(remaining, 0.0))
            except queue.Empty:
                raise AssertionError(
                    f"no line {' '.join(words)!r} within {timeout} s; got {self.lines}\n{self.log}"
                ) from None
            if line is None:
                self._queue.put(None)
                raise AssertionError(
                    f"the worker ended without {' '.join(words)!r}; got {self.lines}\n{self.log}"
                )
            self.lines.append(line)
            parts = line.split()
            if tuple(parts[: len(words)]) == words:
                return parts

    def send(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """The exit code, waiting at most ``timeout`` s."""
        return self.process.wait(timeout)
