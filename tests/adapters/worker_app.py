"""A worker process for the adapter tests: ``python -m tests.adapters.worker_app ...``.

It registers test handlers, runs the worker with real signal handling, and prints one line per
event on stdout (``started <jid>``, ``cleanup <jid>``, ``phase quiet`` ...), flushed, so a test
can wait for events instead of sleeping. The faktory log goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import threading
import time
from typing import Any

_SAY = threading.Lock()


def say(*words: object) -> None:
    """One whole line per event: jobs on several threads must not interleave their words."""
    line = " ".join(str(word) for word in words) + "\n"
    with _SAY:
        sys.stdout.write(line)
        sys.stdout.flush()


def announce_lifecycle(worker: Any) -> None:
    """Hooks that print the worker id at startup, then quiet and shutdown as they happen."""
    worker.on_startup(lambda: say("wid", worker.wid))
    worker.on_quiet(lambda: say("phase quiet"))
    worker.on_shutdown(lambda: say("phase shutdown"))


def build_asyncio(options: argparse.Namespace) -> Any:
    from faktory_adapters.asyncio import Worker, current_job

    worker = Worker(
        url=options.url,
        queues=options.queues,
        concurrency=options.concurrency,
        shutdown_timeout=options.shutdown_timeout,
        abort_grace=options.abort_grace,
        heartbeat_interval=options.heartbeat_interval,
    )

    @worker.register("Sleep")
    async def sleep(seconds: float) -> None:
        jid = current_job().job.jid
        say("started", jid)
        await asyncio.sleep(seconds)
        say("done", jid)

    @worker.register("CleanupOnAbort")
    async def cleanup_on_abort(seconds: float) -> None:
        context = current_job()
        say("started", context.job.jid)
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            say("cleanup", context.job.jid, context.abort.reason)
            raise

    @worker.register("HogThenCleanup")
    async def hog_then_cleanup(hog: float, seconds: float) -> None:
        context = current_job()
        say("started", context.job.jid)
        try:
            spin(hog)  # holds the loop: a signal's Python handler runs in this job
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            say("cleanup", context.job.jid, context.abort.reason)
            raise

    @worker.register("IgnoreAbort")
    async def ignore_abort(seconds: float) -> None:
        jid = current_job().job.jid
        say("started", jid)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                await asyncio.sleep(deadline - time.monotonic())
            except asyncio.CancelledError:
                say("ignored", jid)  # and carries on regardless

    @worker.register("BlockLoop")
    async def block_loop(seconds: float) -> None:
        jid = current_job().job.jid
        say("started", jid)
        time.sleep(seconds)  # blocks the event loop on purpose
        say("unblocked", jid)

    @worker.register("SyncSleep")
    def sync_sleep(seconds: float) -> None:
        context = current_job()
        say("started", context.job.jid, threading.current_thread().name)
        aborted = context.abort.wait_blocking(seconds)
        say("aborted" if aborted else "done", context.job.jid)

    @worker.register("Boom")
    async def boom(message: str) -> None:
        raise ValueError(message)

    @worker.register("Record")
    async def record() -> None:
        job = current_job().job
        say("ran", job.queue, job.jid)

    announce_lifecycle(worker)

    return worker


def spin(seconds: float) -> None:
    """Run Python code for ``seconds``, yielding to nothing."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


def build_thread(options: argparse.Namespace) -> Any:
    from faktory_adapters.thread import JobAborted, Worker, current_job

    return _build_blocking(options, Worker, current_job, JobAborted, time.sleep)


def build_gevent(options: argparse.Namespace) -> Any:
    import gevent

    from faktory_adapters.gevent import JobAborted, Worker, current_job

    return _build_blocking(options, Worker, current_job, JobAborted, gevent.sleep)


def _build_blocking(
    options: argparse.Namespace,
    Worker: Any,
    current_job: Any,
    JobAborted: Any,
    pause: Any,
) -> Any:

    worker = Worker(
        url=options.url,
        queues=options.queues,
        concurrency=options.concurrency,
        shutdown_timeout=options.shutdown_timeout,
        abort_grace=options.abort_grace,
        heartbeat_interval=options.heartbeat_interval,
    )

    def nap(seconds: float) -> None:
        # Short sleeps: the abort exception lands between them (a thread) or in one (gevent).
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            pause(0.01)

    @worker.register("Sleep")
    def sleep(seconds: float) -> None:
        jid = current_job().job.jid
        say("started", jid)
        nap(seconds)
        say("done", jid)

    # "started" is said inside the try: in a thread, JobAborted can land while say() still
    # runs, once the test has read the line and signalled the worker.
    @worker.register("CleanupOnAbort")
    def cleanup_on_abort(seconds: float) -> None:
        context = current_job()
        try:
            say("started", context.job.jid)
            nap(seconds)
        except JobAborted:
            say("cleanup", context.job.jid, context.abort.reason)
            raise

    @worker.register("HogThenCleanup")
    def hog_then_cleanup(hog: float, seconds: float) -> None:
        context = current_job()
        try:
            say("started", context.job.jid)
            spin(hog)  # gevent: never yields, so a signal's Python handler runs in this job
            nap(seconds)
        except JobAborted:
            say("cleanup", context.job.jid, context.abort.reason)
            raise

    @worker.register("IgnoreAbort")
    def ignore_abort(seconds: float) -> None:
        jid = current_job().job.jid
        say("started", jid)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                nap(deadline - time.monotonic())
            except JobAborted:
                say("ignored", jid)  # and carries on regardless

    @worker.register("BlockLoop")
    def block_loop(seconds: float) -> None:
        jid = current_job().job.jid
        say("started", jid)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:  # pure Python, holding the GIL as much as it can
            pass
        say("unblocked", jid)

    @worker.register("SyncSleep")
    def sync_sleep(seconds: float) -> None:
        context = current_job()
        say("started", context.job.jid, threading.current_thread().name)
        aborted = context.abort.wait(seconds)
        say("aborted" if aborted else "done", context.job.jid)

    @worker.register("Boom")
    def boom(message: str) -> None:
        raise ValueError(message)

    @worker.register("Record")
    def record() -> None:
        job = current_job().job
        say("ran", job.queue, job.jid)

    announce_lifecycle(worker)

    return worker


BUILDERS = {"asyncio": build_asyncio, "thread": build_thread, "gevent": build_gevent}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--adapter", default="asyncio", choices=sorted(BUILDERS))
    parser.add_argument("--url", required=True)
    parser.add_argument("--queue", dest="queues", action="append", required=True)
    parser.add_argument("--concurrency", type=int, default=5)
    parser.add_argument("--shutdown-timeout", type=float, default=25.0)
    parser.add_argument("--abort-grace", type=float, default=3.0)
    parser.add_argument("--heartbeat-interval", type=float, default=15.0)
    parser.add_argument(
        "--serve", action="store_true", help="serve() with no signal handlers of ours"
    )
    options = parser.parse_args()
    # --queue name:weight makes the queues weighted; plain names keep strict order.
    if any(":" in queue for queue in options.queues):
        options.queues = {
            name: int(weight)
            for name, _, weight in (queue.partition(":") for queue in options.queues)
        }
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(relativeCreated)6d %(name)s %(message)s"
    )
    logging.getLogger("faktory.heartbeat").addHandler(_HeartbeatEcho())
    worker = BUILDERS[options.adapter](options)
    if options.serve:  # SIGINT raises KeyboardInterrupt (asyncio.run: cancels serve() first)
        try:
            code = asyncio.run(worker.serve()) if options.adapter == "asyncio" else worker.serve()
        except KeyboardInterrupt:
            say("raised KeyboardInterrupt")
            sys.exit(130)
    else:
        code = worker.run()
    say("exit", code)
    sys.exit(code)


class _HeartbeatEcho(logging.Handler):
    """Echo what the heartbeat thread hears from the server, to stdout, as it happens."""

    def emit(self, record: logging.LogRecord) -> None:
        if "asks this worker" in record.getMessage():
            say("heartbeat", record.getMessage().rsplit(" ", 1)[-1])


if __name__ == "__main__":
    main()
