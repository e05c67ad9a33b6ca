"""Each adapter's Client and Worker driven the same way from a synchronous test, and a log
capture that can be waited on."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any, Final

import gevent

from faktory_adapters import asyncio as aio
from faktory_adapters import gevent as gevent_adapter
from faktory_adapters import thread

__all__ = [
    "ADAPTERS",
    "HeldJob",
    "LogCapture",
    "SyncClient",
    "adapter_module",
    "capture_logs",
    "serve",
]

ADAPTERS: Final = ("asyncio", "thread", "gevent")
_MODULES: Final = {"asyncio": aio, "thread": thread, "gevent": gevent_adapter}
#: How long a test waits for anything a worker or a server does.
WAIT: Final = 30.0


def adapter_module(adapter: str) -> ModuleType:
    """``faktory_adapters.asyncio``, ``.thread`` or ``.gevent``."""
    return _MODULES[adapter]


class HeldJob:
    """A job handler (:meth:`run`) that holds its job until :meth:`look` has looked at the
    worker while it does. In the gevent adapter it waits on a thread, not on the hub."""

    def __init__(self, adapter: str) -> None:
        self._adapter = adapter
        self._held, self._released = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self._errors: list[BaseException] = []

    def run(self) -> None:
        self._held.set()
        if self._adapter == "gevent":
            gevent.get_hub().threadpool.apply(self._released.wait, (WAIT,))
        else:
            self._released.wait(WAIT)

    def look(self, action: Callable[[], None]) -> None:
        """On a thread of its own: once the job is held, ``action()``, then release the job
        (after WAIT s without a job, release nothing and fail :meth:`join`)."""

        def look_then_release() -> None:
            try:
                if not self._held.wait(WAIT):
                    raise AssertionError(f"no job was held within {WAIT} s")
                action()
            except BaseException as error:
                self._errors.append(error)
            finally:
                self._released.set()

        self._thread = threading.Thread(target=look_then_release, daemon=True)
        self._thread.start()

    def join(self) -> None:
        """Wait for :meth:`look` to be done; raise what its action raised."""
        assert self._thread is not None
        self._thread.join(WAIT)
        if self._errors:
            raise self._errors[0]


class SyncClient:
    """An adapter's Client with blocking methods: the asyncio one runs on a private loop."""

    def __init__(self, adapter: str, url: str | None, **options: Any) -> None:
        self.adapter = adapter
        self._loop: asyncio.AbstractEventLoop | None = None
        if adapter == "asyncio":
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
            self._thread.start()
            self._client = self._run(self._make(url, options))
        else:
            self._client = adapter_module(adapter).Client(url, **options)

    async def _make(self, url: str | None, options: dict[str, Any]) -> aio.Client:
        return aio.Client(url, **options)

    def _run(self, coroutine: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(WAIT)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            return self._run(result) if asyncio.iscoroutine(result) else result

        return call

    def settle(self) -> None:
        """Return once the Client's runtime has taken in whatever already reached its sockets.

        An asyncio loop reads a socket only on its next turn: after a call that runs on it
        (and so waits out a select), it has. The blocking Clients read their sockets when
        they check them, so there is nothing to wait for.
        """
        if self._loop is not None:
            self._run(asyncio.sleep(0))

    def concurrently(self, method: str, *argsets: tuple[Any, ...]) -> list[Any]:
        """Call ``method`` once per tuple of arguments, all at once, the adapter's way (tasks,
        threads or greenlets); return the results in order."""
        call = getattr(self._client, method)
        if self._loop is not None:

            async def gather() -> list[Any]:
                return list(await asyncio.gather(*(call(*args) for args in argsets)))

            return self._run(gather())  # type: ignore[no-any-return]
        if self.adapter == "gevent":
            greenlets = [gevent.spawn(call, *args) for args in argsets]
            gevent.joinall(greenlets, timeout=WAIT, raise_error=True)
            return [greenlet.get(block=False) for greenlet in greenlets]
        with concurrent.futures.ThreadPoolExecutor(len(argsets)) as pool:
            futures = [pool.submit(call, *args) for args in argsets]
            return [future.result(WAIT) for future in futures]

    def __repr__(self) -> str:
        return repr(self._client)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is None:
            self._client.close()
            return
        try:
            self._run(self._client.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(WAIT)
            if not self._thread.is_alive():
                self._loop.close()  # not left to the garbage collector, from another thread


def serve(adapter: str, worker: Any, *, stop_when: threading.Event | None = None) -> int:
    """Run ``worker.serve()`` on this thread and return its exit code.

    With ``stop_when``, a watcher thread calls ``worker.stop()`` once the event is set, or
    after WAIT seconds if it never is (the test then fails on what did not happen).
    """
    done = threading.Event()
    watcher = None
    if stop_when is not None:
        event = stop_when

        def watch() -> None:
            # Until the event, or the worker stopped by itself (then there is nothing to wait
            # for: the join below would otherwise take WAIT s), or WAIT s.
            deadline = time.monotonic() + WAIT
            while not (event.is_set() or done.is_set()) and time.monotonic() < deadline:
                done.wait(0.05)
            while not done.is_set():
                with contextlib.suppress(RuntimeError):  # not serving yet
                    worker.stop()
                    return
                done.wait(0.05)

        watcher = threading.Thread(target=watch, name="stopper", daemon=True)
        watcher.start()
    try:
        if adapter == "asyncio":
            return int(asyncio.run(worker.serve()))
        return int(worker.serve())
    finally:
        done.set()
        if watcher is not None:
            watcher.join(WAIT)


class LogCapture(logging.Handler):
    """Every record, formatted with its exception; ``seen`` is set by a matching one, and
    :meth:`wait_for` waits for the records to satisfy a condition."""

    def __init__(self, pattern: str | None = None) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []
        self.seen = threading.Event()
        self._pattern = None if pattern is None else re.compile(pattern)
        self._changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        with self._changed:
            self.records.append(record)
            self.lines.append(line)
            self._changed.notify_all()
        if self._pattern is not None and self._pattern.search(line):
            self.seen.set()

    def wait_for(self, condition: Callable[[list[logging.LogRecord]], bool]) -> None:
        """Wait up to WAIT s until ``condition(records)`` holds; fail showing the log if not."""
        with self._changed:
            met = self._changed.wait_for(lambda: condition(self.records), WAIT)
        assert met, self.text

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@contextlib.contextmanager
def capture_logs(pattern: str | None = None) -> Iterator[LogCapture]:
    """Capture every log record of the process, DEBUG and up, while the block runs."""
    root = logging.getLogger()
    capture = LogCapture(pattern)
    level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(level)
