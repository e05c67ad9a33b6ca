"""Run ``faktory-worker`` in a real subprocess and await the lines it prints, never sleeping."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from tests.support.process import AwaitedLines

ROOT = Path(__file__).resolve().parents[2]
#: The installed entry point, next to this interpreter.
FAKTORY_WORKER = str(Path(sys.executable).with_name("faktory-worker"))


@contextlib.contextmanager
def taken_port() -> Iterator[int]:
    """A loopback port something listens on, for as long as the block runs."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def run(*args: str, timeout: float = 30.0, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run the command to its end; its exit code, stdout and stderr."""
    return subprocess.run(
        [FAKTORY_WORKER, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


class Command:
    """``python -m faktory_adapters ARGS``; each line of its stdout and stderr is an event."""

    def __init__(self, *args: str, cwd: Path = ROOT) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "faktory_adapters", *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        assert self.process.stdout is not None
        self._output = AwaitedLines(self.process.stdout)

    def __enter__(self) -> Command:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.process.poll() is None:
            # Worker processes have process groups of their own: kill them by pid, found
            # before their parent dies and they are handed to init.
            for pid in [*_descendants(self.process.pid), self.process.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.process.wait(10)

    @property
    def lines(self) -> list[str]:
        """The lines awaited so far."""
        return self._output.seen

    def expect(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """Wait for the next line in which ``pattern`` (a regex) is found."""
        return self._output.next_matching(
            lambda line: re.search(pattern, line),
            f"matching {pattern!r}",
            timeout,
            lambda: self.output,
        )

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def send(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        """The exit code, within ``timeout`` s; the rest of the output is read into lines."""
        code = self.process.wait(timeout)
        self._output.rest(timeout)
        return code


def _descendants(root: int) -> list[int]:
    """Every process whose parent chain leads to ``root``, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat[stat.rfind(")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, frontier = [], [root]
    while frontier:
        for child in children.get(frontier.pop(), []):
            found.append(child)
            frontier.append(child)
    return found
