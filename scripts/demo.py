"""Demo: a worker's shutdown contract, shown on a real Faktory server.

Starts a local Faktory v1.9.4 (the same way the tests do), pushes quick jobs, failing jobs and
one long job, runs ``faktory-worker -r demo_jobs`` (the handlers of ``scripts/demo_jobs.py``)
as a real process, sends it SIGTERM while the long job runs, and narrates what happens, read
from the worker's log and from the server. Run it with ``make demo``; ``--wire`` shows the
protocol bytes instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import sys
import tempfile
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from demo_jobs import charge_card, export_report, resize_image

from faktory_adapters.asyncio import Client
from faktory_core import ClientInfo, Failure, Job
from faktory_core.commands import Ack, Fail, Fetch, Info, Push
from faktory_core.events import InfoReply
from faktory_core.machine_io import AbortReason
from tests.support.blocking import BlockingClient
from tests.support.server import FaktoryServer

QUEUE = "demo"
QUICK_JOBS = 20
FAILING_JOBS = 3
LONG_JOB_SECONDS = 30.0
CONCURRENCY = 5
SHUTDOWN_TIMEOUT = 3.0
ABORT_GRACE = 2.0
# Bounds on waiting for the worker; generous, as a loaded 2-core machine can be slow.
JOBS_TIMEOUT = 30.0
EXIT_TIMEOUT = SHUTDOWN_TIMEOUT + ABORT_GRACE + 15.0

SHUTDOWN_ABORT = AbortReason.SHUTDOWN.value

# A log line, whatever the format: the logger's name, then the message after the first ": ".
_LOG_LINE = re.compile(r"\b(?P<logger>faktory|demo_jobs)[\w.]*\b.*?: (?P<message>.*)")
_WORKER_ID = re.compile(r"^worker \w+: ")


class DemoError(Exception):
    """The demo could not show what it set out to show."""


class Line(NamedTuple):
    """What the worker process said, stamped with the loop's clock when it arrived."""

    at: float
    source: str  # "job" (the handlers' logger), "worker" (faktory's), or "exit"
    text: str


class WorkerOutput:
    """The worker process's output lines and its exit, in the order they arrive."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.seen: list[Line] = []
        self._queue: asyncio.Queue[Line | None] = asyncio.Queue()
        assert process.stdout is not None
        assert process.stderr is not None
        self._open = 3  # producers still running: two pipes and the exit watcher
        self._tasks = [  # referenced here, as the loop only keeps weak references to tasks
            asyncio.create_task(self._read(process.stdout)),
            asyncio.create_task(self._read(process.stderr)),
            asyncio.create_task(self._watch_exit()),
        ]

    async def _read(self, stream: asyncio.StreamReader) -> None:
        loop = asyncio.get_running_loop()
        in_job_traceback = False
        async for raw in stream:
            text = raw.decode(errors="replace").rstrip()
            match = _LOG_LINE.search(text)
            if match is None:
                # A failed job's log line carries its traceback (for error trackers); the demo
                # shows the line, not the traceback. Any other traceback is shown: a crash.
                if not in_job_traceback:
                    self._queue.put_nowait(Line(loop.time(), "worker", text))
            else:
                in_job_traceback = " failed after " in match["message"]
                source = "job" if match["logger"] == "demo_jobs" else "worker"
                message = _WORKER_ID.sub("", match["message"])
                self._queue.put_nowait(Line(loop.time(), source, message))
        self._queue.put_nowait(None)

    async def _watch_exit(self) -> None:
        code = await self.process.wait()
        self._queue.put_nowait(Line(asyncio.get_running_loop().time(), "exit", str(code)))
        self._queue.put_nowait(None)

    async def next(self, deadline: float, waiting_for: str) -> Line | None:
        """The next line, or None once the process exited and both pipes closed."""
        while self._open:
            try:
                async with asyncio.timeout_at(deadline):
                    line = await self._queue.get()
            except TimeoutError:
                raise DemoError(f"no {waiting_for} in time.{self.tail()}") from None
            if line is not None:
                self.seen.append(line)
                return line
            self._open -= 1
        return None

    def tail(self) -> str:
        lines = [f"\n    {line.source}: {line.text}" for line in self.seen[-12:]]
        return "\n  The worker's last lines:" + "".join(lines) if lines else ""


def worker_command(url: str) -> list[str]:
    """The ``faktory-worker`` command line, run in scripts/ so that ``-r demo_jobs`` finds it."""
    return [
        sys.executable,
        "-m",
        "faktory_adapters",
        "--adapter=asyncio",
        "-r",
        "demo_jobs",
        f"--queue={QUEUE}",
        f"--concurrency={CONCURRENCY}",
        f"--shutdown-timeout={SHUTDOWN_TIMEOUT:g}",
        f"--abort-grace={ABORT_GRACE:g}",
        f"--url={url}",
    ]


async def push_jobs(client: Client, directory: Path) -> None:
    """Push the demo's jobs in one PUSHB, made from the handlers' own job types."""
    export = export_report.options(queue=QUEUE)
    resize = resize_image.options(queue=QUEUE)
    charge = charge_card.options(queue=QUEUE)
    jobs = [export.job(str(directory), LONG_JOB_SECONDS)]
    jobs += [resize.job(f"photo-{n:02}.jpg") for n in range(QUICK_JOBS)]
    jobs += [charge.job(f"4000-0000-0000-{n:04}") for n in range(FAILING_JOBS)]
    refused = await client.push_bulk(jobs)
    if refused:
        raise DemoError(f"the server refused jobs: {refused}")
    print(f'Pushed {len(jobs)} jobs to the queue "{QUEUE}" in one PUSHB:')
    print(f"  {QUICK_JOBS:2} ResizeImage    quick (50 ms each)")
    print(f"  {FAILING_JOBS:2} ChargeCard     raises PaymentDeclined")
    print(f"   1 ExportReport   writes a report for {LONG_JOB_SECONDS:g} s; deletes it if aborted")


async def wait_until_busy(output: WorkerOutput, started: float) -> str:
    """Wait until the quick and failing jobs ran and the long one is writing; its file."""
    resized = charged = 0
    partial = ""
    busy = started
    while resized < QUICK_JOBS or charged < FAILING_JOBS or not partial:
        line = await output.next(started + JOBS_TIMEOUT, "sign of the jobs running")
        if line is None or line.source == "exit":
            raise DemoError(f"the worker exited before its jobs ran.{output.tail()}")
        busy = line.at
        word, _, rest = line.text.partition(" ")
        if line.source == "job" and word == "resized":
            resized += 1
        elif line.source == "job" and word == "charging":
            charged += 1
        elif line.source == "job" and word == "writing":
            partial = rest
    print(
        f"  after {busy - started:.2f} s: {resized} images resized, {charged} cards declined,"
        f" ExportReport writing {Path(partial).name}"
    )
    return partial


def note(line: Line, aborted_at: float | None) -> str:
    """What a line of the worker's log means for the shutdown contract ("" if nothing new)."""
    if line.source == "worker" and line.text.startswith("stopping"):
        return f"no new FETCH; running jobs get {SHUTDOWN_TIMEOUT:g} s to finish"
    if line.source == "worker" and line.text.startswith("aborting "):
        return "its task is cancelled, and the job FAILed at once as ShutdownAbort"
    if aborted_at is None:
        return ""
    if line.source == "job" and line.text.startswith("cancelled"):
        return (
            f"the job's cleanup ran, {line.at - aborted_at:.2f} s after its abort"
            f" (abort_grace: {ABORT_GRACE:g} s)"
        )
    if line.source == "worker" and line.text.startswith("ending"):
        if line.at - aborted_at < ABORT_GRACE:
            return "every aborted job has ended: the worker does not wait out abort_grace"
        return "abort_grace ran out: the worker leaves behind what still runs"
    return ""


async def narrate_shutdown(output: WorkerOutput, sigterm: float) -> tuple[int, float]:
    """Print what the worker says from SIGTERM to its exit; return its exit code and time."""
    aborted_at: float | None = None
    exit_line: Line | None = None
    while (line := await output.next(sigterm + EXIT_TIMEOUT, "exit")) is not None:
        if line.source == "exit":
            print(f"  {line.at - sigterm:+6.2f} s  the worker process exited with code {line.text}")
            exit_line = line
            continue
        print(f"  {line.at - sigterm:+6.2f} s  {line.source + ':':7} {line.text}")
        if meaning := note(line, aborted_at):
            print(f"{'':12}-> {meaning}")
        if line.text.startswith("aborting "):
            aborted_at = line.at
    assert exit_line is not None  # the exit watcher always reports before it closes
    return int(exit_line.text), exit_line.at - sigterm


async def read_back(client: Client) -> tuple[dict[str, Any], list[Job]]:
    """The server's counters, and the jobs of its retry set (moved back to the queue to read
    them: the protocol has no command that lists a set)."""
    info = (await client.info())["faktory"]
    await client.mutate("requeue", "retries")
    retried: list[Job] = []
    for _ in range(info["sets"]["retries"]):
        job = await client.fetch(QUEUE)
        if job is None:
            break
        retried.append(job)
    return info, retried


async def shutdown_demo(server: FaktoryServer, directory: Path) -> int:
    loop = asyncio.get_running_loop()
    async with Client(server.url) as client:
        await push_jobs(client, directory)
        command = worker_command(server.url)
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=Path(__file__).parent,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # Ctrl-C in the terminal reaches the demo only
        )
        started = loop.time()
        try:
            output = WorkerOutput(process)
            print(
                f"\nStarted the worker (asyncio, concurrency {CONCURRENCY}, shutdown_timeout"
                f" {SHUTDOWN_TIMEOUT:g} s, abort_grace {ABORT_GRACE:g} s), pid {process.pid}:"
            )
            shell = "(in scripts/) python " + " ".join(command[1:])
            lines = textwrap.wrap(shell, 96, break_on_hyphens=False, break_long_words=False)
            print("  " + "\n      ".join(lines))
            partial = await wait_until_busy(output, started)
            print("\nSIGTERM to the worker; times are from the signal:")
            sigterm = loop.time()
            process.send_signal(signal.SIGTERM)
            code, took = await narrate_shutdown(output, sigterm)
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        info, retried = await read_back(client)
    return report(output, info, retried, partial, code, took)


def retry_delay(failure: Failure) -> str:
    """How long after the FAIL the server will run the job again."""
    if failure.failed_at is None or failure.next_at is None:
        return "(unknown)"
    delay = datetime.fromisoformat(failure.next_at) - datetime.fromisoformat(failure.failed_at)
    return f"{delay.total_seconds():.0f} s"


def report(
    output: WorkerOutput,
    info: dict[str, Any],
    retried: list[Job],
    partial: str,
    code: int,
    took: float,
) -> int:
    """Print what the server holds and the summary; 0 if all is as the contract says."""
    sets = info["sets"]
    acked = info["total_processed"] - info["total_failures"]
    print(
        f"\nThe server now (INFO): {info['total_processed']} processed, {info['total_failures']}"
        f" failed, {sets['retries']} in the retry set, {sets['working']} reserved,"
        f" {info['queues'].get(QUEUE, 0)} waiting"
    )
    print("The retry set, read back (MUTATE requeue, then FETCH):")
    kinds: dict[tuple[str, str | None], list[Failure]] = {}
    for job in retried:
        if job.failure is not None:
            kinds.setdefault((job.jobtype, job.failure.errtype), []).append(job.failure)
    for (jobtype, errtype), failures in sorted(kinds.items()):
        first = failures[0]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        print(f"  {len(failures):2} {jobtype:13} {errtype}: {first.message}{more}")
        soon = ", not when its 30-minute reservation ends" if errtype == SHUTDOWN_ABORT else ""
        print(f"{'':19}next try {retry_delay(first)} after the FAIL{soon}")
    by_error = sum(1 for job in retried if job.failure and job.failure.errtype != SHUTDOWN_ABORT)
    aborted = [job for job in retried if job.failure and job.failure.errtype == SHUTDOWN_ABORT]
    cleaned = any(line.text == f"cancelled: deleted {partial}" for line in output.seen)
    partial_gone = not Path(partial).exists()
    print(f"{Path(partial).name}: {'deleted' if partial_gone else 'STILL THERE'}")
    cleaned_up = len(aborted) if cleaned and partial_gone else 0
    bound = SHUTDOWN_TIMEOUT + ABORT_GRACE

    print("\nSummary")
    print(f"  ACKed                    {acked:6}    INFO: processed - failed")
    print(f"  FAILed by an error       {by_error:6}    retry set, errtype PaymentDeclined")
    print(f"  aborted and cleaned up   {cleaned_up:6}    retry set, errtype {SHUTDOWN_ABORT}")
    print(f"  worker exit code         {code:6}    1: jobs had to be aborted")
    print(
        f"  SIGTERM to exit        {took:6.2f} s  at most shutdown_timeout + abort_grace ="
        f" {bound:g} s (+ END)"
    )
    expected = {
        "ACKed": (acked, QUICK_JOBS),
        "FAILed by an error": (by_error, FAILING_JOBS),
        "aborted and cleaned up": (cleaned_up, 1),
        "aborted jobs in the retry set": (len(aborted), 1),
        "worker exit code": (code, 1),
        "jobs left reserved": (sets["working"], 0),
    }
    wrong = [f"{name}: {got}, not {want}" for name, (got, want) in expected.items() if got != want]
    if wrong:
        print("\nNot as the shutdown contract says: " + "; ".join(wrong))
        return 1
    return 0


class TracingClient(BlockingClient):
    """Prints what goes out (C:) and what comes in (S:)."""

    def flush(self) -> None:
        data = self.connection.data_to_send()
        for line in data.splitlines():
            print(f"  C: {line.decode()[:110]}")
        if data:
            self.sock.sendall(data)

    def receive(self) -> bytes:
        data = super().receive()
        for line in data.splitlines():
            print(f"  S: {line.decode(errors='replace')[:110]}")
        return data


def wire_trace(server: FaktoryServer) -> int:
    """Push, fetch, ACK and FAIL over one socket, printing every line on the wire."""
    client = TracingClient(
        server.url, ClientInfo(wid=os.urandom(6).hex(), hostname="demo", pid=os.getpid())
    )
    counter = iter(range(1, 100))

    def jid() -> str:
        return f"demo-job-{next(counter):03d}"

    print(f"Handshake:\n  {client.handshake}\n")
    pushes: list[tuple[str, list[Any]]] = [("Greet", ["world"]), ("Divide", [1, 0])]
    for jobtype, args in pushes:
        print(f"Push {jobtype}{args}:")
        client.ask(Push(job=Job.create(jobtype, args, jid_factory=jid, queue=QUEUE)))
    print("\nFetch, ACK the first, FAIL the second (pipelined with the next FETCH):")
    first = client.ask(Fetch(queues=(QUEUE,)))
    print(f"  {first}\n")
    client.request(Ack(jid="demo-job-001"), Fetch(queues=(QUEUE,)))
    client.ask(Fail(jid="demo-job-002", errtype="ZeroDivisionError", message="by zero"))
    print("\nINFO:")
    info = client.ask(Info())
    if not isinstance(info, InfoReply):
        raise DemoError(f"INFO answered {info}")
    stats = info.info["faktory"]
    print(f"  retries={stats['sets']['retries']} processed={stats['total_processed']}")
    print(f"\nEND gets no reply; the server closes: {client.end()}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wire", action="store_true", help="show the protocol bytes instead")
    options = parser.parse_args()
    print("Starting a local Faktory server (installing it first if needed)...")
    try:
        with FaktoryServer() as server:
            print(f"Faktory {server.url}\nWeb UI  {server.web_url}  (live while the demo runs)\n")
            if options.wire:
                return wire_trace(server)
            with tempfile.TemporaryDirectory(prefix="faktory-demo-") as directory:
                return asyncio.run(shutdown_demo(server, Path(directory)))
    except KeyboardInterrupt:
        print("\nInterrupted.")
        return 130
    except (DemoError, RuntimeError) as error:
        print(f"\nThe demo failed: {error}")
        return 1
    finally:
        print("The server is stopped.")


if __name__ == "__main__":
    sys.exit(main())
