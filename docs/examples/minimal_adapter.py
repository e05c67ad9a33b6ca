"""A complete Faktory worker over faktory_core: one thread, blocking sockets and selectors.

The two machines decide everything (what to write, which job to start, when to stop, the exit
code); this loop only carries out their actions and reports what happened. Jobs run one at a
time, inline, so an abort cannot interrupt them: for real use, see faktory_adapters.

    FAKTORY_URL=tcp://localhost:7419 python docs/examples/minimal_adapter.py

It works the queue "default" and FAILs every job there that is not an Add or an Explode, so
point it at a server of its own. TERM or INT stops it (a second one aborts the running job);
it exits with the worker's code.
"""

from __future__ import annotations

import os
import random
import secrets
import selectors
import signal
import socket
import time
import traceback
from collections.abc import Callable
from typing import Any

import faktory_core as core
from faktory_core.machine_io import (
    Close,
    Connect,
    ConnectionLost,
    ConnectionMade,
    DataReceived,
    Exit,
    Finish,
    Finished,
    JobError,
    JobFinished,
    Notice,
    PhaseChanged,
    PhaseReported,
    ServerSignal,
    ServerStateChanged,
    Start,
    StartJob,
    StopRequested,
    TimerFired,
    Write,
)


def add(a: int, b: int) -> None:
    print(f"Add: {a} + {b} = {a + b}", flush=True)


def explode(message: str) -> None:
    raise RuntimeError(message)


HANDLERS: dict[str, Callable[..., None]] = {"Add": add, "Explode": explode}
Machine = core.Worker | core.Heartbeat


def run_job(job: core.Job) -> JobFinished:
    try:
        HANDLERS[job.jobtype](*job.args)
    except Exception as error:
        lines = "".join(traceback.format_exception(error)).splitlines()
        failure = JobError(errtype=type(error).__name__, message=str(error), backtrace=lines)
        return JobFinished(jid=job.jid, error=failure)
    return JobFinished(jid=job.jid)


def main() -> int:
    url = core.ServerURL.from_env(os.environ)
    config = core.WorkerConfig(
        wid=secrets.token_hex(8),
        hostname=socket.gethostname(),
        pid=os.getpid(),
        username=url.username,
        password=url.password,
        concurrency=1,  # jobs run inline: one at a time
        jobtypes=HANDLERS,  # the machine FAILs the other types itself
    )
    worker = core.Worker(config, random=random.random)
    heartbeat = core.Heartbeat(config, random=random.random)
    selector = selectors.DefaultSelector()
    sockets: dict[tuple[Machine, int], socket.socket] = {}
    inbox: list[tuple[Machine, core.MachineInput]] = [
        (worker, Start()),
        (heartbeat, Start()),
    ]
    exit_code = 0

    # A signal only queues an input; the wake-up socket interrupts select() to handle it.
    wake_read, wake_write = socket.socketpair()
    wake_read.setblocking(False)
    wake_write.setblocking(False)
    signal.set_wakeup_fd(wake_write.fileno())
    selector.register(wake_read, selectors.EVENT_READ, None)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: inbox.append((worker, StopRequested())))

    def close(machine: Machine, link: int) -> None:
        sock = sockets.pop((machine, link), None)
        if sock is not None:
            selector.unregister(sock)
            sock.close()

    def lost(machine: Machine, link: int, error: OSError) -> None:
        close(machine, link)
        inbox.append((machine, ConnectionLost(link=link, reason=str(error))))

    def perform(machine: Machine, action: Any) -> bool:
        """Carry out one action; True once the process is done."""
        nonlocal exit_code
        if isinstance(action, Connect):
            try:
                sock = socket.create_connection((url.host, url.port), timeout=5)
            except OSError as error:
                inbox.append((machine, ConnectionLost(link=action.link, reason=str(error))))
                return False
            sockets[machine, action.link] = sock
            selector.register(sock, selectors.EVENT_READ, (machine, action.link))
            inbox.append((machine, ConnectionMade(link=action.link)))
        elif isinstance(action, Write):
            try:
                sockets[machine, action.link].sendall(action.data)
            except OSError as error:
                lost(machine, action.link, error)
        elif isinstance(action, Close):
            close(machine, action.link)
        elif isinstance(action, StartJob):
            inbox.append((worker, run_job(action.job)))
        elif isinstance(action, PhaseChanged):  # reported as current_state in BEATs
            inbox.append((heartbeat, PhaseReported(phase=action.phase)))
        elif isinstance(action, ServerStateChanged):  # quiet or terminate, from the UI
            inbox.append((worker, ServerSignal(state=action.state)))
        elif isinstance(action, Exit):
            exit_code = action.code
            inbox.append((heartbeat, Finish()))
        elif isinstance(action, Notice):
            print(f"notice: {action.message}", flush=True)
        return isinstance(action, Finished)  # the heartbeat's END: the very last action

    while True:
        while inbox:
            machine, event = inbox.pop(0)
            for action in machine.handle(event, time.monotonic()):
                if perform(machine, action):
                    return exit_code
        deadlines = [d for d in (worker.next_deadline, heartbeat.next_deadline) if d is not None]
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        for key, _ in selector.select(timeout):
            if key.data is None:
                wake_read.recv(64)  # a signal arrived; its handler queued the input
                continue
            machine, link = key.data
            try:
                data = sockets[machine, link].recv(65536)
            except OSError as error:
                lost(machine, link, error)
            else:
                inbox.append((machine, DataReceived(link=link, data=data)))
        now = time.monotonic()
        for machine in (worker, heartbeat):
            deadline = machine.next_deadline
            if deadline is not None and now >= deadline:
                inbox.append((machine, TimerFired()))


if __name__ == "__main__":
    raise SystemExit(main())
