"""Run a process and wait for the lines it prints, never sleeping."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, TypeVar

ROOT = Path(__file__).resolve().parents[2]

T = TypeVar("T")


class AwaitedLines:
    """The lines of a text stream, read on a thread of their own, awaited one by one."""

    def __init__(self, stream: IO[str]) -> None:
        #: Every line awaited so far, matching or not.
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def next_matching(
        self,
        match: Callable[[str], T | None],
        what: str,
        timeout: float,
        context: Callable[[], str],
    ) -> T:
        """The first non-None ``match(line)`` of the next lines, within ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                raise AssertionError(
                    f"no line {what} within {timeout} s; got:\n{context()}"
                ) from None
            if line is None:
                self._queue.put(None)
                raise AssertionError(f"the process ended without a line {what}; got:\n{context()}")
            self.seen.append(line)
            found = match(line)
            if found is not None:
                return found

    def rest(self, timeout: float) -> None:
        """Read the remaining lines into ``seen``, until the stream ends."""
        while (line := self._queue.get(timeout=timeout)) is not None:
            self.seen.append(line)
        self._queue.put(None)


class WorkerProcess:
    """``python -m tests.adapters.worker_app ARGS``; its stdout lines become awaitable events."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.adapters.worker_app", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self._stdout = AwaitedLines(self.process.stdout)
        self._stderr: list[str] = []
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

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr.append(line)

    @property
    def lines(self) -> list[str]:
        """The stdout lines awaited so far."""
        return self._stdout.seen

    @property
    def log(self) -> str:
        """What the worker logged on stderr so far."""
        return "".join(self._stderr)

    def expect(self, *words: str, timeout: float = 15.0) -> list[str]:
        """Wait for the next line starting with ``words``; return its words."""

        def starts(line: str) -> list[str] | None:
            parts = line.split()
            return parts if tuple(parts[: len(words)]) == words else None

        return self._stdout.next_matching(
            starts, repr(" ".join(words)), timeout, lambda: f"{self.lines}\n{self.log}"
        )

    def send(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """The exit code, waiting at most ``timeout`` s."""
        return self.process.wait(timeout)

    def read_the_rest(self, timeout: float = 15.0) -> list[str]:
        """Once it has exited: every stdout line, those not awaited included."""
        self._stdout.rest(timeout)
        return self.lines
