"""Reconnects, byte by byte, with the exact replies a real Faktory 1.9.4 sends.

What the chaos run found, and what the real server was seen to answer:

- A stopping server answers any command with ``-ERR shutdown in progress``, carries none of
  them out, and closes (``server/server.go`` ``processLines``). An ACK refused that way was
  dropped as if it had been refused for good, so the job stayed reserved, expired and ran again.
- BEAT after the server forgot the worker (a restart, or a reap after 60 s without a BEAT,
  which also closes the worker's connections) answers ``-ERR unknown worker <wid>``; a new
  HELLO with the wid registers it again.
"""

from __future__ import annotations

import json
from logging import DEBUG, INFO

from faktory_core import Heartbeat, Worker, WorkerConfig
from faktory_core.machine_io import (
    Close,
    Connect,
    ConnectionMade,
    DataReceived,
    JobFinished,
    Notice,
    Start,
    StartJob,
    TimerFired,
    Write,
)

WID = "w-reconnect"
JID = "jid-reconnect-1"
GREETING = b'+HI {"v":2}\r\n'
SHUTTING_DOWN = b"-ERR shutdown in progress\r\n"
JOB = json.dumps({"jid": JID, "jobtype": "T", "args": [], "queue": "default"}).encode()
BEAT = Write(link=0, data=b'BEAT {"wid":"%s"}\r\n' % WID.encode())
#: With a random source that always draws 0, the first reconnect waits half the base (0.5 s).
FIRST_DELAY = 0.25


def config(**overrides: object) -> WorkerConfig:
    settings: dict[str, object] = {"wid": WID, "concurrency": 1, "heartbeat_interval": 15.0}
    settings.update(overrides)
    return WorkerConfig(**settings)  # type: ignore[arg-type]


def back(message: str, level: int = INFO) -> Notice:
    """The notice that ends a connection trouble episode (the heartbeat's at DEBUG)."""
    return Notice(message=message, level=level)


def hello_line(machine_config: WorkerConfig) -> bytes:
    """The HELLO line a machine with this config writes."""
    hello = Heartbeat(machine_config, random=lambda: 0.0)
    hello.handle(Start(), 0.0)
    hello.handle(ConnectionMade(link=0), 0.0)
    (write,) = hello.handle(DataReceived(link=0, data=GREETING), 0.0)
    assert isinstance(write, Write)
    return write.data


def handshake(machine: Worker | Heartbeat, now: float) -> list[object]:
    """Connect link 0, greet, accept the HELLO; return the actions of the last step."""
    machine.handle(ConnectionMade(link=0), now)
    (hello,) = machine.handle(DataReceived(link=0, data=GREETING), now)
    assert isinstance(hello, Write)
    assert hello.data.startswith(b"HELLO ")
    return list(machine.handle(DataReceived(link=0, data=b"+OK\r\n"), now))


def worker_running_a_job() -> Worker:
    worker = Worker(config(), random=lambda: 0.0)
    assert worker.handle(Start(), 0.0) == [Connect(link=0)]
    assert handshake(worker, 0.0) == [Write(link=0, data=b"FETCH default\r\n")]
    (start,) = worker.handle(DataReceived(link=0, data=b"$%d\r\n%s\r\n" % (len(JOB), JOB)), 0.1)
    assert isinstance(start, StartJob)
    return worker


def test_an_ack_refused_because_the_server_is_stopping_is_sent_again_after_reconnect() -> None:
    worker = worker_running_a_job()
    ack = b'ACK {"jid":"%s"}\r\n' % JID.encode()
    assert worker.handle(JobFinished(jid=JID), 0.2) == [
        Write(link=0, data=ack + b"FETCH default\r\n")
    ]
    assert worker.handle(DataReceived(link=0, data=SHUTTING_DOWN), 0.3) == [
        Close(link=0),
        Notice(message="the server is shutting down; retrying in 0.25 s", link=0),
    ]
    assert worker.handle(DataReceived(link=0, data=b""), 0.3) == []  # then it closes
    assert worker.next_deadline == 0.3 + FIRST_DELAY
    assert worker.handle(TimerFired(), 0.3 + FIRST_DELAY) == [Connect(link=0)]
    assert handshake(worker, 1.0) == [
        back("connected again: every job link is ready after 0.7 s of trouble (1 failure)"),
        Write(link=0, data=ack + b"FETCH default\r\n"),
    ]


def test_a_fetch_refused_because_the_server_is_stopping_is_sent_again_after_reconnect() -> None:
    worker = Worker(config(), random=lambda: 0.0)
    worker.handle(Start(), 0.0)
    handshake(worker, 0.0)
    assert worker.handle(DataReceived(link=0, data=SHUTTING_DOWN), 0.1) == [
        Close(link=0),
        Notice(message="the server is shutting down; retrying in 0.25 s", link=0),
    ]
    worker.handle(TimerFired(), 0.1 + FIRST_DELAY)
    assert handshake(worker, 1.0) == [
        back("connected again: every job link is ready after 0.9 s of trouble (1 failure)"),
        Write(link=0, data=b"FETCH default\r\n"),
    ]


def test_a_beat_refused_because_the_server_is_stopping_reconnects_after_a_backoff() -> None:
    heartbeat = Heartbeat(config(), random=lambda: 0.0)
    heartbeat.handle(Start(), 0.0)
    assert handshake(heartbeat, 0.0) == [BEAT]  # the first BEAT goes out with the handshake
    assert heartbeat.handle(DataReceived(link=0, data=SHUTTING_DOWN), 0.1) == [
        Close(link=0),
        Notice(message="the server is shutting down; retrying in 0.25 s", link=0, level=DEBUG),
    ]
    assert heartbeat.next_deadline == 0.1 + FIRST_DELAY


def test_unknown_worker_opens_a_new_connection_and_says_hello_with_the_wid_again() -> None:
    heartbeat = Heartbeat(config(), random=lambda: 0.0)
    heartbeat.handle(Start(), 0.0)
    handshake(heartbeat, 0.0)
    heartbeat.handle(DataReceived(link=0, data=b"+OK\r\n"), 0.0)
    assert heartbeat.handle(TimerFired(), 15.0) == [BEAT]
    # The server restarted (or reaped the worker) since: it no longer knows the wid.
    refused = b"-ERR unknown worker %s\r\n" % WID.encode()
    assert heartbeat.handle(DataReceived(link=0, data=refused), 15.0) == [
        Close(link=0),
        Notice(
            message=f"heartbeat refused (ERR unknown worker {WID}); registering again",
            link=0,
            level=DEBUG,  # the heartbeat's trouble is DEBUG: the job links warn
        ),
    ]
    assert heartbeat.next_deadline == 15.0  # no backoff the first time
    assert heartbeat.handle(TimerFired(), 15.0) == [Connect(link=0)]
    heartbeat.handle(ConnectionMade(link=0), 15.0)
    (hello,) = heartbeat.handle(DataReceived(link=0, data=GREETING), 15.0)
    assert hello == Write(link=0, data=hello_line(config()))
    assert json.loads(hello.data[len(b"HELLO ") :])["wid"] == WID
    # Registered again, it beats again at once.
    assert heartbeat.handle(DataReceived(link=0, data=b"+OK\r\n"), 15.0) == [
        back("connected again after 0.0 s of trouble (1 failure)", level=DEBUG),
        BEAT,
    ]


def test_a_reaped_worker_whose_heartbeat_link_is_closed_registers_again() -> None:
    heartbeat = Heartbeat(config(), random=lambda: 0.0)
    heartbeat.handle(Start(), 0.0)
    handshake(heartbeat, 0.0)
    heartbeat.handle(DataReceived(link=0, data=b"+OK\r\n"), 0.0)
    # Reaping closes every connection of the worker, the heartbeat's too.
    assert heartbeat.handle(DataReceived(link=0, data=b""), 70.0) == [
        Close(link=0),
        Notice(message="the server closed the connection; retrying in 0.25 s", link=0, level=DEBUG),
    ]
    assert heartbeat.handle(TimerFired(), 70.0 + FIRST_DELAY) == [Connect(link=0)]
    heartbeat.handle(ConnectionMade(link=0), 71.0)
    (hello,) = heartbeat.handle(DataReceived(link=0, data=GREETING), 71.0)
    assert hello == Write(link=0, data=hello_line(config()))


def test_an_unasked_shutdown_error_drops_an_idle_link() -> None:
    heartbeat = Heartbeat(config(), random=lambda: 0.0)
    heartbeat.handle(Start(), 0.0)
    handshake(heartbeat, 0.0)
    heartbeat.handle(DataReceived(link=0, data=b"+OK\r\n"), 0.0)  # nothing awaits a reply
    assert heartbeat.handle(DataReceived(link=0, data=SHUTTING_DOWN), 1.0) == [
        Close(link=0),
        Notice(message="the server is shutting down; retrying in 0.25 s", link=0, level=DEBUG),
    ]
