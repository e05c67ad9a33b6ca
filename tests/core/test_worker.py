"""The worker and heartbeat machines, step by step and at exact times, against a scripted
server (``worker_peer``). Each test is one clause of the shutdown contract of
``design.md``, or one rule of the links, the heartbeat or the configuration."""

from __future__ import annotations

import contextlib
import itertools
import json
import random
from collections import Counter
from logging import DEBUG, ERROR, WARNING
from typing import Any

import pytest

from faktory_core import (
    EXIT_REFUSED,
    HEARTBEAT_END_TIMEOUT,
    Action,
    Heartbeat,
    LocalProtocolError,
    MachineInput,
    Phase,
    Trigger,
    Worker,
    WorkerConfig,
)
from faktory_core._auth import password_hash
from faktory_core._links import reconnect_delay
from faktory_core._worker import ERRTYPE_INVALID_JOB, ERRTYPE_UNKNOWN_JOBTYPE, weighted_order
from faktory_core.commands import WorkerState
from faktory_core.machine_io import (
    ERRTYPE_CANCELLED,
    AbortJob,
    AbortReason,
    AbortRequested,
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
    JobOutcome,
    JobReport,
    MemoryUsage,
    Notice,
    PhaseChanged,
    PhaseReported,
    QuietRequested,
    ServerSignal,
    ServerStateChanged,
    Start,
    StartJob,
    StopRequested,
    TimerFired,
    Write,
)
from tests.core.worker_peer import HB, Act, Driver, ServerPeer, of

WID = "w-test-1"
J1, J2, J3 = "jid-00000001", "jid-00000002", "jid-00000003"
SHUTDOWN_MESSAGE = "aborted: still running after the 25 s shutdown timeout"
SECOND_STOP_MESSAGE = "aborted: the worker was told to stop a second time"


def make_config(**overrides: Any) -> WorkerConfig:
    settings: dict[str, Any] = {
        "wid": WID,
        "concurrency": 1,
        "shutdown_timeout": 25.0,
        "abort_grace": 3.0,
        "heartbeat_interval": 15.0,
        "reply_timeout": 10.0,
    }
    settings.update(overrides)
    return WorkerConfig(**settings)


def started(*jids: str, fetch_wait: float | None = 2.0, **overrides: Any) -> Driver:
    """A driver whose worker started at 0 with ``jids`` waiting on the server."""
    driver = Driver(make_config(**overrides), fetch_wait=fetch_wait)
    for jid in jids:
        driver.peer.push(jid)
    driver.start()
    return driver


def phases(acts: list[Act]) -> list[tuple[Phase, Phase, Trigger]]:
    return [(a.previous, a.phase, a.trigger) for a in of(acts, PhaseChanged)]


def writes(acts: list[Act], machine: str = "worker") -> list[tuple[int, bytes]]:
    return [(w.link, w.data) for w in of(acts, Write, machine)]


def fail_line(jid: str, errtype: str, message: str, backtrace: tuple[str, ...] = ()) -> bytes:
    payload = {"jid": jid, "errtype": errtype, "message": message, "backtrace": list(backtrace)}
    return b"FAIL " + json.dumps(payload, separators=(",", ":")).encode() + b"\r\n"


def ack_line(jid: str) -> bytes:
    return b'ACK {"jid":"%s"}\r\n' % jid.encode()


def worker_delays(
    seed: int = 0, *failures: int, base: float = 0.5, cap: float = 30.0
) -> list[float]:
    """The reconnect delays a worker seeded ``seed`` draws, for these failure counts."""
    draw = random.Random(seed).random
    return [reconnect_delay(n, draw, base=base, cap=cap) for n in failures]


def retrying(delay: float) -> str:
    """How a failure's notice gives the delay before the next attempt."""
    return f"retrying in {f'{delay:.2f}'.rstrip('0').rstrip('.')} s"


def trouble(message: str, link: int = 0, level: int = WARNING) -> Notice:
    """The notice of the failure that starts a connection trouble episode (WARNING for the
    worker's links, INFO for the heartbeat's)."""
    return Notice(message=message, link=link, level=level)


def exits(driver: Driver) -> list[tuple[float, Exit]]:
    return driver.timed(Exit)


def ended(driver: Driver, key: str) -> list[float]:
    return [now for now, verb, _ in driver.lines(key, "END")]


# -- start-up --------------------------------------------------------------------------------


def test_start_connects_every_link_handshakes_then_fetches_and_beats() -> None:
    config = make_config(concurrency=2, hostname="box-1", pid=4242, labels=["py"])
    driver = Driver(config)
    acts = driver.start()
    assert of(acts, Connect, "worker") == [Connect(link=0), Connect(link=1)]
    assert of(acts, Connect, "heartbeat") == [Connect(link=0)]
    hello = {"v": 2, "wid": WID, "hostname": "box-1", "pid": 4242, "labels": ["py"]}
    for key in ("w0", "w1", HB):
        assert driver.peer.commands(key)[0].json() == hello
    assert [c.argument for c in driver.peer.commands("w0", "FETCH")] == ["default"]
    assert [c.json() for c in driver.peer.commands(HB, "BEAT")] == [{"wid": WID}]
    assert driver.worker.phase is Phase.RUNNING
    assert driver.worker.exit_code is None
    assert driver.worker.running == ()
    assert driver.worker.next_deadline == 10.0  # the FETCHes' replies are due
    assert driver.heartbeat.next_deadline == 15.0  # the next BEAT
    assert not driver.heartbeat.finished


def test_nothing_is_timed_while_the_connects_are_pending() -> None:
    driver = Driver(make_config(), auto_connect=False)
    driver.start()
    assert driver.worker.next_deadline is None
    assert driver.heartbeat.next_deadline is None
    assert driver.to_worker(ConnectionMade(link=0)) == []
    assert driver.worker.next_deadline == 10.0  # the greeting and the HELLO reply are due


def test_a_password_is_proven_with_the_greeting_salt() -> None:
    peer = ServerPeer(password="s3cret", salt="1f2e3d4c5b6a7988", iterations=4096)
    driver = Driver(make_config(password="s3cret"), peer=peer)
    driver.start()
    hello = peer.commands("w0")[0].json()
    assert hello["pwdhash"] == password_hash("s3cret", "1f2e3d4c5b6a7988", 4096)
    assert peer.is_ready("w0")
    assert peer.is_ready(HB)


def test_a_refused_hello_stops_the_worker_with_exit_3() -> None:
    # A wrong password is the same at every attempt: retrying for ever would only hide it.
    peer = ServerPeer(password="right")
    driver = Driver(make_config(password="wrong"), peer=peer)
    acts = driver.start()
    reason = "the server refused HELLO: ERR Invalid password"
    assert of(acts, Notice, "worker") == [  # one line, at ERROR: no retry is announced
        Notice(message=f"stopping: {reason}; retrying cannot change that", level=ERROR),
        Notice(message="the server closed the connection", link=0, level=DEBUG),
    ]
    assert driver.worker.refusal == reason
    assert phases(acts) == [
        (Phase.RUNNING, Phase.STOPPING, Trigger.REFUSED),
        (Phase.STOPPING, Phase.ENDING, Trigger.DRAINED),
        (Phase.ENDING, Phase.EXITED, Trigger.ENDED),
    ]
    assert exits(driver) == [(0.0, Exit(code=EXIT_REFUSED))]
    assert of(acts, Connect, "worker") == [Connect(link=0)]  # never tried again


def test_a_refusal_lets_running_jobs_finish_then_exits_3() -> None:
    driver = started(J1, concurrency=2, fetch_wait=None)
    assert list(driver.started) == [J1]
    driver.peer.close("w1")
    acts = driver.to_worker(ConnectionLost(link=1, reason="certificate untrusted", permanent=True))
    assert phases(acts) == [(Phase.RUNNING, Phase.STOPPING, Trigger.REFUSED)]
    driver.advance(5)
    acts = driver.finish(J1)
    assert writes(acts)[0] == (0, ack_line(J1))
    assert driver.peer.acks(J1)
    assert exits(driver) == [(5.0, Exit(code=EXIT_REFUSED))]
    assert [a for _, a in driver.timed(AbortJob)] == []


# -- stop: drain, abort, grace, exit -----------------------------------------------------------


def test_stop_drains_before_the_deadline_and_exits_0_at_once() -> None:
    driver = started(J1, J2, concurrency=2)
    assert list(driver.started) == [J1, J2]
    driver.advance(10)
    assert phases(driver.stop()) == [(Phase.RUNNING, Phase.STOPPING, Trigger.STOP)]
    assert driver.worker.next_deadline == 35.0
    driver.advance(2)
    acts = driver.finish(J1)
    assert writes(acts) == [(0, ack_line(J1))]  # no FETCH behind it
    driver.advance(8)
    acts = driver.finish(J2)
    assert phases(acts) == [
        (Phase.STOPPING, Phase.ENDING, Trigger.DRAINED),
        (Phase.ENDING, Phase.EXITED, Trigger.ENDED),
    ]
    assert exits(driver) == [(20.0, Exit(code=0))]
    assert ended(driver, "w0") == ended(driver, "w1") == ended(driver, HB) == [20.0]
    assert [a for _, a in driver.timed(AbortJob)] == []
    assert [now for now, *_ in driver.lines("w0", "FETCH")] == [0.0]
    assert driver.peer.acks(J1)
    assert driver.peer.acks(J2)
    assert driver.heartbeat.finished
    assert driver.worker.next_deadline is None
    assert driver.heartbeat.next_deadline is None
    # The BEAT between stop and exit reports the shutdown.
    assert driver.peer.commands(HB, "BEAT")[1].json() == {
        "wid": WID,
        "current_state": "terminate",
    }


def test_the_deadline_aborts_and_fails_at_the_same_moment_then_exit_1_when_it_ends() -> None:
    driver = started(J1)
    driver.advance(5)
    driver.stop()
    assert of(driver.advance(24.999), AbortJob) == []
    acts = driver.advance(0.001)
    assert driver.now == 30.0
    worker = [a.action for a in acts if a.machine == "worker"]
    assert worker[:3] == [
        PhaseChanged(previous=Phase.STOPPING, phase=Phase.ABORTING, trigger=Trigger.DEADLINE),
        AbortJob(jid=J1, reason=AbortReason.SHUTDOWN, message=SHUTDOWN_MESSAGE),
        Write(link=0, data=fail_line(J1, "ShutdownAbort", SHUTDOWN_MESSAGE)),
    ]
    assert "25 s" in SHUTDOWN_MESSAGE
    assert driver.worker.next_deadline == 33.0  # the grace period
    driver.advance(1)
    acts = driver.finish(J1)  # during the grace period
    assert not [w for w in writes(acts) if w[1].startswith(b"ACK")]
    assert driver.peer.acks(J1) == []
    assert len(driver.peer.fails(J1)) == 1
    assert exits(driver) == [(31.0, Exit(code=1))]
    assert ended(driver, "w0") == [31.0]


def test_a_job_that_never_ends_is_left_behind_when_the_grace_ends() -> None:
    driver = started(J1, J2, concurrency=2)
    driver.stop()
    driver.advance(25)
    assert set(driver.aborted) == {J1, J2}
    driver.finish(J2)
    assert exits(driver) == []
    acts = driver.advance(3)
    assert phases(acts)[0] == (Phase.ABORTING, Phase.ENDING, Trigger.GRACE_OVER)
    assert exits(driver) == [(28.0, Exit(code=1))]
    assert ended(driver, "w0") == ended(driver, "w1") == [28.0]
    assert [job.jid for job in driver.worker.running] == [J1]
    # The job may still report, after the exit: nothing is sent for it.
    assert driver.finish(J1) == []
    assert driver.peer.acks(J1) == []
    assert len(driver.peer.fails(J1)) == 1


def test_a_second_stop_aborts_at_once() -> None:
    driver = started(J1)
    driver.advance(5)
    driver.stop("SIGTERM")
    driver.advance(1)
    acts = driver.stop("SIGINT")
    assert [a.action for a in acts if a.machine == "worker"][:3] == [
        PhaseChanged(previous=Phase.STOPPING, phase=Phase.ABORTING, trigger=Trigger.STOP),
        AbortJob(jid=J1, reason=AbortReason.SHUTDOWN, message=SECOND_STOP_MESSAGE),
        Write(link=0, data=fail_line(J1, "ShutdownAbort", SECOND_STOP_MESSAGE)),
    ]
    assert driver.worker.next_deadline == 9.0
    assert driver.stop() == []  # a third changes nothing
    driver.advance(3)
    assert exits(driver) == [(9.0, Exit(code=1))]


def test_a_stop_with_nothing_running_awaits_the_fetches_in_flight() -> None:
    driver = started(concurrency=2)
    driver.advance(1)
    assert driver.peer.held == ["w0", "w1"]
    assert phases(driver.stop()) == [(Phase.RUNNING, Phase.STOPPING, Trigger.STOP)]
    assert driver.peer.is_open("w0")
    assert driver.peer.is_open("w1")
    driver.advance(1)  # the server answers its FETCHes after 2 s
    assert exits(driver) == [(2.0, Exit(code=0))]


def test_burst_drains_once_a_fetch_comes_back_empty_and_exits_0() -> None:
    driver = started(J1, J2, concurrency=2, burst=True, shutdown_timeout=1.0)
    assert list(driver.started) == [J1, J2]
    driver.advance(1)
    assert phases(driver.finish(J1)) == []  # its next FETCH waits on the server
    acts = driver.advance(2)
    assert phases(acts) == [(Phase.RUNNING, Phase.DRAINING, Trigger.QUEUES_EMPTY)]
    assert driver.worker.next_deadline is None  # no shutdown timeout: J2 may take its time
    driver.advance(100)
    assert [a for _, a in driver.timed(AbortJob)] == []
    acts = driver.finish(J2)
    assert phases(acts)[0] == (Phase.DRAINING, Phase.ENDING, Trigger.DRAINED)
    assert exits(driver) == [(103.0, Exit(code=0))]
    assert driver.peer.acks(J1)
    assert driver.peer.acks(J2)
    # The heartbeat told the server the worker is quiet.
    assert driver.peer.commands(HB, "BEAT")[-1].json()["current_state"] == "quiet"


def test_burst_with_empty_queues_exits_after_the_first_fetches() -> None:
    driver = started(concurrency=2, burst=True)
    driver.advance(2)
    assert exits(driver) == [(2.0, Exit(code=0))]


def test_a_stop_while_draining_starts_the_shutdown_timeout() -> None:
    driver = started(J1, burst=True, concurrency=2, shutdown_timeout=5.0)
    driver.advance(2)
    assert driver.worker.phase is Phase.DRAINING
    assert phases(driver.stop()) == [(Phase.DRAINING, Phase.STOPPING, Trigger.STOP)]
    driver.advance(5)
    assert [a.jid for _, a in driver.timed(AbortJob)] == [J1]


def test_without_burst_an_empty_fetch_fetches_again() -> None:
    driver = started(concurrency=1)
    driver.advance(4.5)
    assert driver.worker.phase is Phase.RUNNING
    assert [now for now, *_ in driver.lines("w0", "FETCH")] == [0.0, 2.0, 4.0]


def test_a_zero_grace_period_ends_at_the_deadline() -> None:
    driver = started(J1, abort_grace=0.0)
    driver.stop()
    driver.advance(25)
    assert exits(driver) == [(25.0, Exit(code=1))]


def test_exit_comes_before_the_heartbeat_ends() -> None:
    driver = started(J1)
    driver.stop()
    acts = driver.finish(J1)
    names = [type(a.action).__name__ + ":" + a.machine for a in acts]
    assert names.index("Exit:worker") < names.index("Write:heartbeat")
    assert names[-2:] == ["Close:heartbeat", "Finished:heartbeat"]
    assert driver.heartbeat_finished


# -- the server's quiet and terminate ----------------------------------------------------------


def test_server_quiet_then_terminate() -> None:
    driver = started(J1, concurrency=2)
    driver.peer.state = "quiet"
    acts = driver.advance(15)
    assert of(acts, ServerStateChanged) == [ServerStateChanged(state=WorkerState.QUIET)]
    assert phases(acts) == [(Phase.RUNNING, Phase.QUIET, Trigger.SERVER_QUIET)]
    # w1 kept fetching every 2 s; the FETCH in flight at 15 is answered at 16, then no more.
    assert [now for now, *_ in driver.lines("w1", "FETCH")] == [0, 2, 4, 6, 8, 10, 12, 14]
    driver.advance(14)
    assert len(driver.lines("w1", "FETCH")) == 8
    assert driver.peer.is_open("w1")
    driver.peer.state = "terminate"
    acts = driver.advance(1)
    assert driver.peer.commands(HB, "BEAT")[-1].json() == {"wid": WID, "current_state": "quiet"}
    assert phases(acts) == [(Phase.QUIET, Phase.STOPPING, Trigger.SERVER_TERMINATE)]
    assert driver.worker.next_deadline == 55.0
    driver.advance(10)
    driver.finish(J1)
    assert exits(driver) == [(40.0, Exit(code=0))]


def test_server_terminate_while_quiet() -> None:
    driver = started(J1)
    driver.quiet("SIGTSTP")
    driver.peer.state = "terminate"
    acts = driver.advance(15)
    assert driver.peer.commands(HB, "BEAT")[-1].json() == {"wid": WID, "current_state": "quiet"}
    assert phases(acts) == [(Phase.QUIET, Phase.STOPPING, Trigger.SERVER_TERMINATE)]
    driver.advance(25)
    assert list(driver.aborted) == [J1]
    assert driver.timed(AbortJob)[0][0] == 40.0


def test_a_repeated_server_terminate_is_not_a_second_stop() -> None:
    driver = started(J1)
    driver.peer.state = "terminate"
    acts = driver.advance(15)
    assert phases(acts) == [(Phase.RUNNING, Phase.STOPPING, Trigger.SERVER_TERMINATE)]
    acts = driver.advance(15)  # the reply to the BEAT at 30 says terminate again
    assert of(acts, ServerStateChanged) == []
    assert phases(acts) == []
    assert driver.to_worker(ServerSignal(state=WorkerState.TERMINATE)) == []
    assert driver.aborted == {}
    driver.advance(10)
    assert driver.timed(AbortJob) == [
        (40.0, AbortJob(jid=J1, reason=AbortReason.SHUTDOWN, message=SHUTDOWN_MESSAGE))
    ]


def test_a_running_server_state_changes_nothing() -> None:
    driver = started(J1)
    assert driver.to_worker(ServerSignal(state=WorkerState.RUNNING)) == []
    assert driver.worker.phase is Phase.RUNNING


def test_a_stop_after_the_server_said_terminate_aborts_at_once() -> None:
    """The table counts a local stop after the server's terminate as the second stop.

    Worth a design decision: an operator's "terminate" in the Web UI followed by the SIGTERM
    of a routine deploy skips the whole shutdown timeout.
    """
    driver = started(J1)
    driver.peer.state = "terminate"
    driver.advance(15)
    acts = driver.stop("SIGTERM")
    assert phases(acts) == [(Phase.STOPPING, Phase.ABORTING, Trigger.STOP)]
    assert list(driver.aborted) == [J1]


# -- quiet and the FETCH in flight -------------------------------------------------------------


def test_quiet_stops_fetching_on_every_link_and_runs_a_job_in_flight() -> None:
    driver = started(concurrency=3, fetch_wait=None)
    assert driver.peer.held == ["w0", "w1", "w2"]
    driver.advance(1)
    acts = driver.quiet()
    assert [a.action for a in acts if a.machine == "worker"] == [
        PhaseChanged(previous=Phase.RUNNING, phase=Phase.QUIET, trigger=Trigger.QUIET)
    ]
    driver.peer.push(J1)
    driver.advance(0.5)
    acts = driver.release("w1")
    assert of(acts, StartJob)
    assert driver.running == [J1]
    driver.release("w0")
    driver.release("w2")
    driver.advance(1.5)
    acts = driver.finish(J1)
    assert [data for _, data in writes(acts)] == [ack_line(J1)]  # on a free link, no FETCH
    assert all(now == 0 for key in ("w0", "w1", "w2") for now, *_ in driver.lines(key, "FETCH"))
    assert all(driver.peer.is_open(key) for key in driver.links)
    assert driver.quiet() == []  # quiet is one-way: asking again changes nothing
    driver.advance(100)
    assert driver.worker.phase is Phase.QUIET
    assert [now for now, *_ in driver.lines(HB, "BEAT")] == [0, 15, 30, 45, 60, 75, 90]


def test_a_job_fetched_after_the_abort_is_failed_at_once_and_never_started() -> None:
    driver = started(concurrency=2, fetch_wait=None)
    driver.advance(1)
    driver.quiet()
    driver.advance(1)
    driver.stop()
    driver.advance(0.5)
    assert phases(driver.stop()) == [(Phase.STOPPING, Phase.ABORTING, Trigger.STOP)]
    assert driver.aborted == {}  # nothing was running
    # Both FETCHes are still awaited: neither link is ended or closed.
    assert driver.peer.held == ["w0", "w1"]
    assert ended(driver, "w0") == ended(driver, "w1") == []
    assert driver.actions(Close, "worker") == []
    driver.peer.push(J1)
    driver.advance(0.5)
    acts = driver.release("w0")
    assert of(acts, StartJob) == []
    message = "aborted: fetched after the worker began aborting; it was not started"
    assert writes(acts) == [(0, fail_line(J1, "ShutdownAbort", message))]
    assert exits(driver) == []
    driver.advance(0.5)
    driver.release("w1")
    assert exits(driver) == [(3.5, Exit(code=1))]
    assert ended(driver, "w0") == ended(driver, "w1") == [3.5]


def test_no_end_or_close_on_a_link_whose_fetch_is_pending() -> None:
    driver = started(J1, concurrency=2, fetch_wait=None)
    assert driver.peer.held == ["w1"]
    driver.advance(1)
    driver.stop()
    driver.advance(1)
    acts = driver.finish(J1)
    assert writes(acts) == [(0, ack_line(J1))]
    assert of(acts, Close) == []
    assert exits(driver) == []
    assert driver.peer.holding("w1")
    driver.advance(1)
    driver.release("w1")
    assert exits(driver) == [(3.0, Exit(code=0))]
    assert ended(driver, "w0") == ended(driver, "w1") == [3.0]


# -- job outcomes ------------------------------------------------------------------------------


def test_a_job_error_is_failed_with_its_errtype_message_and_backtrace() -> None:
    driver = started(J1)
    driver.advance(1)
    error = JobError(errtype="ValueError", message="bad input", backtrace=["a.py:1", "b.py:2"])
    acts = driver.finish(J1, error)
    line = fail_line(J1, "ValueError", "bad input", ("a.py:1", "b.py:2"))
    assert writes(acts) == [(0, line + b"FETCH default\r\n")]
    assert driver.peer.fails(J1)[0].json()["backtrace"] == ["a.py:1", "b.py:2"]


@pytest.mark.parametrize(
    ("setting", "kept"), [(None, 50), (0, 0), (2, 2), (80, 50)], ids=["none", "0", "2", "80"]
)
def test_a_job_error_backtrace_is_cut_to_the_jobs_backtrace_setting(
    setting: int | None, kept: int
) -> None:
    """The job's ``backtrace`` says how many lines to send (None: the server's 50); the
    innermost frames, last in a Python traceback, are kept."""
    driver = Driver(make_config(), fetch_wait=2.0)
    driver.peer.push(J1, **({} if setting is None else {"backtrace": setting}))
    driver.start()
    assert driver.started[J1].backtrace == setting
    lines = [f"frame {i}" for i in range(70)]
    driver.finish(J1, JobError(errtype="E", message="m", backtrace=lines))
    assert driver.peer.fails(J1)[0].json()["backtrace"] == lines[len(lines) - kept :]


def test_a_finished_job_is_acked_together_with_the_next_fetch() -> None:
    driver = started(J1, J2)
    acts = driver.finish(J1)
    assert writes(acts)[0] == (0, ack_line(J1) + b"FETCH default\r\n")
    assert of(acts, StartJob)[0].job.jid == J2


def test_an_unknown_job_type_is_failed_and_never_started() -> None:
    driver = Driver(make_config(jobtypes=["T"]), fetch_wait=2.0)
    driver.peer.push(J1, jobtype="Other")
    acts = driver.start()
    assert of(acts, StartJob) == []
    message = "no handler is registered for job type 'Other'"
    assert (0, fail_line(J1, ERRTYPE_UNKNOWN_JOBTYPE, message) + b"FETCH default\r\n") in writes(
        acts
    )
    assert ERRTYPE_UNKNOWN_JOBTYPE == "UnknownJobType"


def test_an_invalid_job_with_a_jid_is_failed() -> None:
    driver = Driver(make_config(), fetch_wait=2.0)
    driver.peer.push_payload(b'{"jid":"jid-00000009","args":[]}')
    acts = driver.start()
    notice = of(acts, Notice, "worker")
    assert notice == [
        Notice(
            message=(
                "invalid job fetched (jid jid-00000009): a job needs 'jobtype': "
                "FAILed as InvalidJob, the server retries it"
            ),
            link=0,
            level=WARNING,
        )
    ]
    line = fail_line("jid-00000009", ERRTYPE_INVALID_JOB, "a job needs 'jobtype'")
    assert (0, line + b"FETCH default\r\n") in writes(acts)
    assert of(acts, StartJob) == []


def test_an_invalid_job_without_a_jid_is_only_noticed() -> None:
    driver = Driver(make_config(), fetch_wait=2.0)
    driver.peer.push_payload(b"not json")
    acts = driver.start()
    assert of(acts, Notice, "worker") == [
        Notice(
            message=(
                "invalid job fetched (no jid): invalid JSON: without a jid it cannot be "
                "FAILed: the server retries it when its reservation runs out"
            ),
            link=0,
            level=WARNING,
        )
    ]
    assert [data for _, data in writes(acts)][-1] == b"FETCH default\r\n"
    assert driver.peer.outcomes == {}


def test_concurrency_is_respected() -> None:
    driver = Driver(make_config(concurrency=3), fetch_wait=2.0)
    jids = [f"jid-{n:08d}" for n in range(10)]
    for jid in jids:
        driver.peer.push(jid)
    driver.start()
    assert list(driver.started) == jids[:3]
    assert len(driver.worker.running) == 3
    driver.advance(60)
    assert len(driver.started) == 3
    acts = driver.finish(jids[1])
    assert [s.job.jid for s in of(acts, StartJob)] == [jids[3]]
    assert {job.jid for job in driver.worker.running} == {jids[0], jids[2], jids[3]}


# -- job reports, for metrics ----------------------------------------------------------------


def outcomes(driver: Driver) -> list[tuple[str, JobOutcome, str | None, float, float]]:
    """The reports taken, of jobs that ran."""
    reports = driver.worker.take_reports()
    assert all(r.ran for r in reports)
    return [(r.job.jid, r.outcome, r.errtype, r.started, r.finished) for r in reports]


def test_each_job_is_reported_once_as_it_ends_with_its_outcome_and_times() -> None:
    driver = started(J1, J2, J3, concurrency=3)
    assert outcomes(driver) == []  # started, not ended
    driver.advance(2)
    driver.finish(J1)
    driver.advance(1)
    driver.finish(J2, JobError(errtype="KeyError", message="'x'"))
    assert outcomes(driver) == [
        (J1, JobOutcome.SUCCEEDED, None, 0.0, 2.0),
        (J2, JobOutcome.FAILED, "KeyError", 0.0, 3.0),
    ]
    assert outcomes(driver) == []  # taken
    driver.stop()
    driver.advance(25)  # the shutdown timeout: J3 is aborted, and reported then
    [report] = driver.worker.take_reports()
    assert (report.job.jid, report.outcome, report.errtype) == (
        J3,
        JobOutcome.ABORTED,
        "ShutdownAbort",
    )
    assert report.duration == 28.0
    driver.finish(J3)  # its end after the abort adds nothing
    assert outcomes(driver) == []


def test_a_job_over_its_time_limit_is_reported_aborted_as_job_time_limit() -> None:
    driver = started(J1, job_time_limit=5)
    driver.advance(5)
    assert outcomes(driver) == [(J1, JobOutcome.ABORTED, "JobTimeLimit", 0.0, 5.0)]


def test_a_worker_keeps_no_reports_unless_asked() -> None:
    worker = Worker(make_config(), random=random.Random(0).random)
    assert worker._reports is None  # nothing piles up in a worker whose adapter counts nothing
    with pytest.raises(LocalProtocolError, match="reports=True"):
        worker.take_reports()


def test_a_job_failed_without_running_is_reported_with_its_errtype() -> None:
    driver = Driver(make_config(jobtypes=["T"]), fetch_wait=2.0)
    driver.peer.push(J1, jobtype="Other")
    driver.start()
    [report] = driver.worker.take_reports()
    assert report == JobReport(
        job=report.job,
        outcome=JobOutcome.FAILED,
        errtype=ERRTYPE_UNKNOWN_JOBTYPE,
        ran=False,
        started=0.0,
        finished=0.0,
    )
    assert (report.job.jid, report.job.jobtype, report.duration) == (J1, "Other", 0.0)


# -- per-job time limits -----------------------------------------------------------------------


def test_the_job_time_limit_aborts_and_fails_the_job() -> None:
    driver = started(J1, job_time_limit=5)
    assert driver.worker.next_deadline == 5.0
    acts = driver.advance(5)
    message = "ran longer than 5 s"
    assert [a.action for a in acts if a.machine == "worker"] == [
        AbortJob(jid=J1, reason=AbortReason.TIME_LIMIT, message=message),
        Write(link=0, data=fail_line(J1, "JobTimeLimit", message)),
    ]
    assert driver.worker.phase is Phase.RUNNING
    assert driver.worker.next_deadline is None  # an aborted job has no limit any more
    driver.advance(1)
    acts = driver.finish(J1)
    assert writes(acts) == [(0, b"FETCH default\r\n")]  # no ACK: it was FAILed
    assert driver.peer.acks(J1) == []


def test_time_limits_per_job_type_override_the_default() -> None:
    driver = Driver(
        make_config(concurrency=3, job_time_limit=5, time_limits={"Quick": 1, "Slow": 60})
    )
    driver.peer.push(J1, jobtype="Quick")
    driver.peer.push(J2, jobtype="T")
    driver.peer.push(J3, jobtype="Slow")
    driver.start()
    driver.advance(60)
    assert [(now, a.jid, a.message) for now, a in driver.timed(AbortJob)] == [
        (1.0, J1, "ran longer than 1 s"),
        (5.0, J2, "ran longer than 5 s"),
        (60.0, J3, "ran longer than 60 s"),
    ]
    assert {a.reason for a in driver.aborted.values()} == {AbortReason.TIME_LIMIT}
    assert [f.json()["errtype"] for jid in (J1, J2, J3) for f in driver.peer.fails(jid)] == [
        "JobTimeLimit"
    ] * 3


def test_a_time_limit_abort_does_not_make_the_exit_code_1() -> None:
    """A job aborted by its time limit and never ending holds the shutdown to its deadline
    and grace, and the exit code is still 0 (EXIT_CLEAN says "every job finished")."""
    driver = started(J1, job_time_limit=5)
    driver.advance(6)
    driver.stop()
    driver.advance(25)
    assert [a.reason for a in driver.aborted.values()] == [AbortReason.TIME_LIMIT]
    driver.advance(3)
    assert exits(driver) == [(34.0, Exit(code=0))]


# -- links: drops, reconnects, what is owed ----------------------------------------------------


def test_an_ack_owed_while_the_link_is_down_is_sent_after_reconnect() -> None:
    driver = started(J1)
    driver.advance(1)
    acts = driver.lose("w0")
    (delay,) = worker_delays(0, 0)
    assert [a.action for a in acts] == [trouble(f"reset by peer; {retrying(delay)}")]
    assert driver.worker.next_deadline == 1 + delay
    driver.advance(0.1)
    assert driver.finish(J1) == []  # nothing can be written yet
    acts = driver.advance(1 + delay - driver.now)
    assert driver.timed(Connect, "worker")[-1] == (1 + delay, Connect(link=0))
    assert (0, ack_line(J1) + b"FETCH default\r\n") in writes(acts)
    assert len(driver.peer.acks(J1)) == 1


def test_an_ack_and_a_fail_whose_replies_were_lost_are_sent_again() -> None:
    driver = started(J1, J2, concurrency=2)
    driver.peer.mute("w0")
    driver.peer.mute("w1")
    driver.advance(1)
    driver.finish(J1)
    driver.finish(J2, JobError(errtype="E", message="m"))
    driver.advance(1)
    driver.lose("w0")
    driver.lose("w1")
    driver.advance(5)
    acks, fails = driver.peer.acks(J1), driver.peer.fails(J2)
    assert len(acks) == 2
    assert acks[0].argument == acks[1].argument
    assert acks[0].connection != acks[1].connection
    assert len(fails) == 2
    assert fails[0].argument == fails[1].argument
    # The server took the first FAIL, so it refuses the second: the worker lets it go.
    assert Notice(message=f"FAIL {J2} refused: ERR Job not found {J2}", link=1) in (
        driver.actions(Notice, "worker")
    )
    driver.advance(100)
    assert len(driver.peer.fails(J2)) == 2


def test_a_refused_connect_backs_off_exponentially_until_a_command_is_served() -> None:
    driver = Driver(make_config(), auto_connect=False, fetch_wait=2.0)
    driver.start()
    d0, d1, d2 = worker_delays(0, 0, 1, 0)
    driver.refused("w0")
    assert driver.worker.next_deadline == d0
    driver.advance(d0)
    assert driver.connecting == {"w0", HB}
    driver.refused("w0")
    assert driver.worker.next_deadline == d0 + d1
    driver.advance(d1)
    driver.connected("w0")
    assert driver.peer.is_ready("w0")
    driver.advance(2.0)  # the FETCH is answered: the server takes this worker
    driver.lose("w0")  # a served command resets the backoff
    assert driver.worker.next_deadline == pytest.approx(d0 + d1 + 2.0 + d2)


def test_a_handshake_alone_does_not_reset_the_backoff() -> None:
    # A server over its connection limit accepts HELLO, then refuses: that is no success.
    driver = Driver(make_config(), auto_connect=False)
    driver.start()
    d0, d1, d2 = worker_delays(0, 0, 1, 2)
    driver.refused("w0")
    driver.advance(d0)
    driver.refused("w0")
    driver.advance(d1)
    driver.connected("w0")
    assert driver.peer.is_ready("w0")
    driver.lose("w0")
    assert driver.worker.next_deadline == pytest.approx(d0 + d1 + d2)


def test_the_backoff_is_capped() -> None:
    draw = random.Random(3).random
    for failures in range(40):
        delay = reconnect_delay(failures, draw, base=0.5, cap=30.0)
        ceiling = min(30.0, 0.5 * 2**failures)
        assert ceiling / 2 <= delay < ceiling or delay == ceiling / 2
    assert reconnect_delay(0, lambda: 0.0, base=1.0, cap=8.0) == 0.5
    assert reconnect_delay(10, lambda: 0.999, base=1.0, cap=8.0) == pytest.approx(7.996)


def test_a_late_fetch_reply_drops_the_link() -> None:
    driver = started(fetch_wait=None)
    acts = driver.advance(10)
    (delay,) = worker_delays(0, 0)
    assert [a.action for a in acts if a.machine == "worker"][:2] == [
        Close(link=0),
        trouble(f"no reply within 10 s; {retrying(delay)}"),
    ]
    assert driver.worker.next_deadline == 10 + delay
    driver.advance(delay)
    assert [now for now, *_ in driver.lines("w0", "FETCH")] == [0.0, 10 + delay]


def test_the_server_closing_a_link_drops_it() -> None:
    driver = started(fetch_wait=None)
    acts = driver.eof("w0")
    (delay,) = worker_delays(0, 0)
    assert [a.action for a in acts] == [
        Close(link=0),
        trouble(f"the server closed the connection; {retrying(delay)}"),
    ]


def test_a_refused_fetch_drops_the_link() -> None:
    driver = started(fetch_wait=None)
    acts = driver.data("w0", b"-ERR boom\r\n")
    (delay,) = worker_delays(0, 0)
    assert [a.action for a in acts] == [
        Close(link=0),
        trouble(f"server error: ERR boom; {retrying(delay)}"),
    ]


def test_an_unasked_error_drops_the_link() -> None:
    driver = started(fetch_wait=None)
    driver.quiet()
    driver.release("w0")
    acts = driver.data("w0", b"-ERR something unexpected\r\n")
    assert of(acts, Close) == [Close(link=0)]
    assert of(acts, Notice)[0].message.startswith("server error: ERR something unexpected; ")


def test_links_over_the_server_connection_limit_back_off_with_one_warning() -> None:
    # Faktory 1.9 greets and takes HELLO, then refuses a link over its 2,000 connections.
    driver = started(fetch_wait=2.0, concurrency=3)
    over = b"-ERR too many connections: 2001\r\n"
    notices: list[Notice] = []
    for _ in range(120):  # two minutes in which links 1 and 2 are refused at every attempt
        for key in ("w1", "w2"):
            if driver.peer.is_ready(key):
                driver.peer.close(key)
                acts = driver.data(key, over)
                assert Close(link=int(key[1:])) in of(acts, Close)
                notices += of(acts, Notice, "worker")
        driver.advance(1.0)
    # One warning for the whole episode, saying what to do; the refusals after it at DEBUG.
    (warning,) = [notice for notice in notices if notice.level >= WARNING]
    assert {notice.level for notice in notices} == {WARNING, DEBUG}
    assert notices[0] is warning
    assert "ERR too many connections: 2001" in warning.message
    assert "opens 4 (3 job connections and its heartbeat)" in warning.message
    for link in (1, 2):
        attempts = [now for now, c in driver.timed(Connect, "worker") if c.link == link]
        # The first at the start, then the longest backoff (15-30 s) between each two.
        assert 1 + 120 / 30 <= len(attempts) <= 1 + 120 / 15
        assert all(b - a >= 15.0 for a, b in itertools.pairwise(attempts))
    assert driver.peer.is_ready("w0")  # the link under the limit works on


def test_a_link_over_the_limit_warns_again_only_after_every_link_served() -> None:
    driver = started(fetch_wait=2.0, concurrency=2)
    over = b"-ERR too many connections: 2001\r\n"
    driver.peer.close("w1")
    assert len(of(driver.data("w1", over), Notice, "worker")) == 1
    driver.advance(33.0)  # w1 is back and its FETCH was answered
    assert driver.peer.is_ready("w1")
    driver.peer.close("w1")
    assert len(of(driver.data("w1", over), Notice, "worker")) == 1


def test_bytes_that_complete_no_reply_do_not_move_the_reply_deadline() -> None:
    # A server trickling one byte at a time must not hold a link for ever.
    driver = started(fetch_wait=None)
    assert driver.worker.next_deadline == 10.0
    for second, byte in enumerate(b"$5\r\nhello", start=1):
        driver.advance(0.9)
        driver.data("w0", bytes([byte]))
        assert driver.worker.next_deadline == 10.0, second
    acts = driver.advance(10.0 - driver.now)
    (delay,) = worker_delays(0, 0)
    assert trouble(f"no reply within 10 s; {retrying(delay)}") in of(acts, Notice)


def test_a_garbled_reply_drops_the_link() -> None:
    driver = started(fetch_wait=None)
    acts = driver.data("w0", b"?what\r\n")
    assert of(acts, Close) == [Close(link=0)]
    assert of(acts, Notice)[0].message.startswith("protocol error: unexpected reply type byte")


def test_stale_input_is_ignored() -> None:
    driver = started(J1)
    assert driver.to_worker(ConnectionMade(link=0)) == []  # already connected
    driver.lose("w0")
    assert driver.to_worker(DataReceived(link=0, data=b"+OK\r\n")) == []  # connection gone
    assert driver.to_worker(ConnectionLost(link=0)) == []  # already down


def test_a_connect_pending_at_the_exit_is_given_up_by_its_close() -> None:
    driver = Driver(make_config(concurrency=2), auto_connect=False)
    driver.start()
    driver.connected("w0")
    driver.connected(HB)
    driver.stop()
    acts = driver.advance(10)  # the FETCH on w0 times out, and w1 is still connecting
    assert exits(driver) == [(10.0, Exit(code=0))]
    assert Close(link=1) in of(acts, Close, "worker")  # give up the connect: close it if it opens
    assert driver.worker.handle(ConnectionMade(link=1), 11.0) == []  # the worker has exited
    assert driver.worker.handle(DataReceived(link=1, data=b'+HI {"v":2}\r\n'), 11.0) == []


def test_a_connect_given_up_while_ending_is_closed_again_when_it_completes() -> None:
    config = make_config(concurrency=3, shutdown_timeout=1.0, abort_grace=1.0)
    driver = Driver(config, auto_connect=False)
    driver.peer.push(J1)
    driver.start()
    for key in ("w0", HB, "w2"):
        driver.connected(key)
    assert list(driver.started) == [J1]  # on w0; w2's FETCH is held, w1 still connecting
    driver.stop()
    driver.release("w0")  # the FETCH w0 sent after J1's: nothing
    driver.finish(J1)  # its ACK on w0: nothing is owed
    driver.advance(2)  # the shutdown timeout, then the grace period
    assert driver.worker.phase is Phase.ENDING  # w2's FETCH is still awaited
    assert Close(link=1) in driver.actions(Close, "worker")
    assert driver.worker.handle(ConnectionMade(link=1), 2.5) == [Close(link=1)]


def test_an_interrupted_caller_aborts_at_once_with_its_reason() -> None:
    driver = started(J1)
    acts = driver.to_worker(AbortRequested(reason="KeyboardInterrupt"))
    assert phases(acts) == [(Phase.RUNNING, Phase.ABORTING, Trigger.ABORT)]
    message = "aborted: KeyboardInterrupt"
    assert of(acts, AbortJob) == [AbortJob(jid=J1, reason=AbortReason.SHUTDOWN, message=message)]
    assert driver.to_worker(AbortRequested(reason="CancelledError")) == []  # the first reason
    assert driver.peer.fails(J1)[0].json()["message"] == message


def test_the_ending_phase_is_bounded_even_by_a_trickling_reply() -> None:
    driver = started(J1, concurrency=1)
    driver.peer.mute("w0")
    driver.stop()
    driver.advance(1)
    driver.finish(J1)  # the ACK waits for a reply that never comes
    assert driver.worker.phase is Phase.ENDING
    assert driver.worker.next_deadline == 11.0
    driver.advance(5)
    driver.data("w0", b"+O")  # part of a reply: the link's own timer starts again
    acts = driver.advance(5)
    assert phases(acts) == [(Phase.ENDING, Phase.EXITED, Trigger.END_TIMEOUT)]
    assert exits(driver) == [(11.0, Exit(code=0))]
    assert ended(driver, "w0") == []  # no END while a reply is awaited
    assert Close(link=0) in of(acts, Close, "worker")


def test_a_late_timer_fires_one_phase_deadline_at_a_time() -> None:
    """A TimerFired long after a deadline moves one phase on; the next phase's deadline runs
    from then, and no timer trigger is ever fired in a phase that has none."""
    driver = started(J1, concurrency=1)
    worker = driver.worker
    driver.peer.mute("w0")  # the FAIL at the abort awaits a reply that never comes
    driver.stop()
    acts = worker.handle(TimerFired(), 1000.0)
    changes = [a for a in acts if isinstance(a, PhaseChanged)]
    assert changes == [
        PhaseChanged(previous=Phase.STOPPING, phase=Phase.ABORTING, trigger=Trigger.DEADLINE)
    ]
    assert worker.next_deadline == 1003.0  # the grace period, from the late timer
    assert worker.handle(TimerFired(), 1002.0) == []  # early: nothing
    acts = worker.handle(TimerFired(), 2000.0)
    assert [(a.previous, a.phase, a.trigger) for a in acts if isinstance(a, PhaseChanged)] == [
        (Phase.ABORTING, Phase.ENDING, Trigger.GRACE_OVER)
    ]
    # The FAIL's link was dropped at its reply timeout; its reconnect is due first...
    assert Connect(link=0) in worker.handle(TimerFired(), 2000.5)
    assert worker.next_deadline == 2010.0  # ...then the END timeout, from the late timer
    acts = worker.handle(TimerFired(), 3000.0)
    assert [(a.previous, a.phase, a.trigger) for a in acts if isinstance(a, PhaseChanged)] == [
        (Phase.ENDING, Phase.EXITED, Trigger.END_TIMEOUT)
    ]
    assert worker.exit_code == 1
    assert worker.next_deadline is None


# -- the heartbeat -----------------------------------------------------------------------------


def test_beats_every_interval_with_rss_and_the_current_state() -> None:
    driver = started(J1)
    driver.advance(1)
    driver.memory(2048)
    driver.advance(15)
    driver.quiet()
    driver.advance(15)
    driver.stop()
    driver.advance(15)
    beats = driver.lines(HB, "BEAT")
    assert [now for now, *_ in beats] == [0, 15, 30, 45]
    assert [json.loads(argument) for *_, argument in beats] == [
        {"wid": WID},
        {"wid": WID, "rss_kb": 2048},
        {"wid": WID, "rss_kb": 2048, "current_state": "quiet"},
        {"wid": WID, "rss_kb": 2048, "current_state": "terminate"},
    ]


def test_unknown_worker_registers_again_at_once() -> None:
    driver = started(J1)
    driver.peer.forget_worker()
    acts = driver.advance(15)
    heartbeat = [a.action for a in acts if a.machine == "heartbeat"]
    assert heartbeat[:4] == [
        Write(link=0, data=b'BEAT {"wid":"w-test-1"}\r\n'),
        Close(link=0),
        Notice(
            message="heartbeat refused (ERR unknown worker w-test-1); registering again",
            link=0,
            level=DEBUG,
        ),
        Connect(link=0),
    ]
    assert [c.verb for c in driver.peer.commands(HB)] == ["HELLO", "BEAT", "BEAT", "HELLO", "BEAT"]
    assert [now for now, *_ in driver.lines(HB, "BEAT")] == [0, 15, 15]
    assert WID in driver.peer.known_wids
    assert driver.heartbeat.next_deadline == 30.0


def test_another_beat_error_reconnects_after_a_backoff() -> None:
    driver = started(J1)
    driver.peer.mute(HB)
    driver.advance(15)
    acts = driver.data(HB, b"-ERR invalid BEAT\r\n")
    delay = reconnect_delay(0, random.Random(1).random, base=0.5, cap=30.0)
    assert [a.action for a in acts] == [
        Close(link=0),
        trouble(f"server error: ERR invalid BEAT; {retrying(delay)}", level=DEBUG),
    ]
    assert driver.heartbeat.next_deadline == 15 + delay


def test_a_late_beat_reply_drops_the_heartbeat_link() -> None:
    driver = started(J1)
    driver.peer.mute(HB)
    driver.advance(15)
    assert driver.heartbeat.next_deadline == 25.0  # the reply; the next beat waits for it
    acts = driver.advance(10)
    delay = reconnect_delay(0, random.Random(1).random, base=0.5, cap=30.0)
    assert of(acts, Notice, "heartbeat") == [
        trouble(f"no reply within 10 s; {retrying(delay)}", level=DEBUG)
    ]


def test_the_heartbeat_ends_after_the_reply_it_awaits() -> None:
    driver = started(J1)
    driver.peer.mute(HB)
    driver.advance(15)
    assert driver.to_heartbeat(Finish()) == []
    assert not driver.heartbeat.finished
    acts = driver.data(HB, b"+OK\r\n")
    assert [a.action for a in acts] == [Write(link=0, data=b"END\r\n"), Close(link=0), Finished()]
    assert driver.heartbeat.finished
    assert driver.heartbeat.next_deadline is None


def test_the_heartbeat_finishes_at_once_when_its_link_is_down() -> None:
    driver = started(J1)
    driver.lose(HB)
    assert [a.action for a in driver.to_heartbeat(Finish())] == [Finished()]
    assert driver.lines(HB, "END") == []


def test_the_heartbeat_gives_up_a_pending_connect_when_finished() -> None:
    driver = Driver(make_config(), auto_connect=False)
    driver.start()
    assert [a.action for a in driver.to_heartbeat(Finish())] == [Close(link=0), Finished()]


def test_a_heartbeat_ends_once_even_if_its_connect_completes_later() -> None:
    driver = Driver(make_config(), auto_connect=False)
    driver.start()
    driver.connected(HB)
    driver.to_heartbeat(Finish())
    assert driver.lines(HB, "END") == [(0.0, "END", "")]
    assert driver.to_heartbeat(PhaseReported(phase=Phase.EXITED)) == []
    assert driver.to_heartbeat(TimerFired()) == []


def test_a_refused_hello_on_the_heartbeat_link_drops_it() -> None:
    driver = Driver(make_config(password="wrong"), peer=ServerPeer(password="right"))
    acts = driver.start()
    delay = reconnect_delay(0, random.Random(1).random, base=0.5, cap=30.0)
    assert of(acts, Notice, "heartbeat") == [
        trouble(f"server error: ERR Invalid password; {retrying(delay)}", level=DEBUG)
    ]


# -- which queues a FETCH names ----------------------------------------------------------------


def test_strict_queue_order() -> None:
    driver = started(concurrency=2, queues=["critical", "default", "low", "critical"])
    driver.advance(10)
    fetched = {argument for key in ("w0", "w1") for *_, argument in driver.lines(key, "FETCH")}
    assert fetched == {"critical default low"}


def test_a_single_queue_name_is_one_queue() -> None:
    assert make_config(queues="critical").queues == ("critical",)


def test_a_caller_supplied_queue_order() -> None:
    orders = itertools.cycle([["b", "a"], ["a"], ("c", "a", "b")])
    driver = started(queue_order=lambda: next(orders))
    driver.advance(5)
    assert [argument for *_, argument in driver.lines("w0", "FETCH")] == [
        "b a",
        "a",
        "c a b",
    ]


def weighted_fetches(seed: int, count: int) -> list[str]:
    driver = Driver(make_config(queues={"a": 3, "b": 1}), seed=seed, fetch_wait=2.0)
    driver.start()
    driver.advance(2.0 * (count - 1))
    return [argument for *_, argument in driver.lines("w0", "FETCH")]


def test_weighted_queues_put_the_heavier_queue_first_three_times_in_four() -> None:
    fetches = weighted_fetches(seed=7, count=2000)
    assert len(fetches) == 2000
    assert set(fetches) == {"a b", "b a"}
    share = Counter(f.split(" ")[0] for f in fetches)["a"] / len(fetches)
    assert 0.72 < share < 0.78


def test_weighted_queues_are_deterministic_for_a_seed() -> None:
    assert weighted_fetches(seed=11, count=50) == weighted_fetches(seed=11, count=50)
    assert weighted_fetches(seed=11, count=50) != weighted_fetches(seed=12, count=50)


def test_weighted_order_lists_every_queue_once() -> None:
    draw = random.Random(5).random
    weights = {"a": 5, "b": 2, "c": 1}
    for _ in range(200):
        assert sorted(weighted_order(weights, draw)) == ["a", "b", "c"]
    assert weighted_order(weights, lambda: 0.0)[0] in weights
    assert weighted_order({"only": 1}, draw) == ["only"]


def test_weighted_order_costs_one_draw_per_queue_whatever_the_weights() -> None:
    # Expanding each queue weight times made 10**7 burn a core and 10**9 run out of memory.
    draws = 0
    source = random.Random(3)

    def draw() -> float:
        nonlocal draws
        draws += 1
        return source.random()

    weights = {"huge": 10**9, "big": 10**7, "small": 1}
    for _ in range(100):
        assert sorted(weighted_order(weights, draw)) == ["big", "huge", "small"]
    assert draws == 300


def test_weighted_order_keeps_the_ratio_at_large_weights() -> None:
    draw = random.Random(9).random
    firsts = Counter(weighted_order({"a": 3_000_000, "b": 1_000_000}, draw)[0] for _ in range(4000))
    assert 0.72 < firsts["a"] / 4000 < 0.78


# -- configuration and misuse ------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"wid": ""},
        {"wid": "two words"},
        {"wid": None},
        {"queues": []},
        {"queues": {}},
        {"queues": ["bad name"]},
        {"queues": {"bad name": 1}},
        {"queues": {"a": 0}},
        {"queues": {"a": True}},
        {"queues": {"a": 1.5}},
        {"concurrency": 0},
        {"concurrency": 1.5},
        {"concurrency": True},
        {"shutdown_timeout": -1},
        {"shutdown_timeout": "25"},
        {"shutdown_timeout": True},
        {"abort_grace": -0.1},
        {"heartbeat_interval": 0},
        {"heartbeat_interval": None},
        {"job_time_limit": 0},
        {"job_time_limit": -5},
        {"time_limits": {"T": 0}},
        {"time_limits": {"T": True}},
        {"time_limits": {"T": "5"}},
        {"reply_timeout": 0},
        {"reconnect_base": 0},
        {"reconnect_cap": -1},
        {"labels": "python"},
        {"labels": [1]},
        {"jobtypes": [""]},
        {"jobtypes": ["T", 1]},
    ],
    ids=lambda o: "-".join(f"{k}={v!r}" for k, v in o.items()),
)
def test_invalid_settings_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(LocalProtocolError):
        make_config(**overrides)


def test_settings_are_normalised() -> None:
    config = make_config(
        queues=("a", "b", "a"), jobtypes=["T", "U"], labels=["x"], time_limits={"T": 2}
    )
    assert config.queues == ("a", "b")
    assert config.jobtypes == frozenset({"T", "U"})
    assert config.labels == ("x",)
    assert config.time_limit("T") == 2
    assert config.time_limit("U") is None
    assert make_config(job_time_limit=7).time_limit("U") == 7
    assert make_config(shutdown_timeout=0, abort_grace=0).shutdown_timeout == 0
    assert WorkerConfig(wid=WID) == WorkerConfig(wid=WID)
    assert "password" not in repr(make_config(password="secret"))


def test_the_defaults_follow_the_contract() -> None:
    config = WorkerConfig(wid=WID)
    assert (config.shutdown_timeout, config.abort_grace, config.heartbeat_interval) == (25, 3, 15)
    assert (config.queues, config.concurrency, config.jobtypes) == (("default",), 10, None)


def fresh_worker(**overrides: Any) -> Worker:
    return Worker(make_config(**overrides), random=random.Random(0).random)


@pytest.mark.parametrize(
    "event",
    [
        ConnectionMade(link=0),
        DataReceived(link=0, data=b""),
        ConnectionLost(link=0),
        JobFinished(jid=J1),
        QuietRequested(),
        StopRequested(),
        ServerSignal(state=WorkerState.QUIET),
        TimerFired(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_inputs_before_start_are_refused(event: MachineInput) -> None:
    worker = fresh_worker()
    with pytest.raises(LocalProtocolError, match="has not been started"):
        worker.handle(event, 0.0)
    heartbeat = Heartbeat(make_config(), random=random.random)
    with pytest.raises(LocalProtocolError):
        heartbeat.handle(event, 0.0)


def test_a_second_start_is_refused() -> None:
    worker = fresh_worker()
    worker.handle(Start(), 0.0)
    with pytest.raises(LocalProtocolError, match="already started"):
        worker.handle(Start(), 0.0)
    heartbeat = Heartbeat(make_config(), random=random.random)
    heartbeat.handle(Start(), 0.0)
    with pytest.raises(LocalProtocolError, match="already started"):
        heartbeat.handle(Start(), 0.0)


def test_a_job_finished_that_is_not_running_is_refused() -> None:
    driver = started(J1)
    with pytest.raises(LocalProtocolError, match="no job 'jid-00000002' is running"):
        driver.worker.handle(JobFinished(jid=J2), 0.0)
    driver.finish(J1)
    with pytest.raises(LocalProtocolError):
        driver.worker.handle(JobFinished(jid=J1), 0.0)  # not twice


@pytest.mark.parametrize("link", [-1, 1, 99, "0", True, None])
def test_a_link_that_does_not_exist_is_refused(link: Any) -> None:
    worker = fresh_worker()
    worker.handle(Start(), 0.0)
    with pytest.raises(LocalProtocolError, match="no link"):
        worker.handle(ConnectionMade(link=link), 0.0)


@pytest.mark.parametrize(
    ("machine", "event"),
    [
        ("worker", MemoryUsage(rss_kb=1)),
        ("worker", Finish()),
        ("worker", PhaseReported(phase=Phase.QUIET)),
        ("heartbeat", JobFinished(jid=J1)),
        ("heartbeat", StopRequested()),
        ("heartbeat", ServerSignal(state=WorkerState.QUIET)),
    ],
    ids=lambda x: x if isinstance(x, str) else type(x).__name__,
)
def test_an_input_of_the_other_machine_is_refused(machine: str, event: MachineInput) -> None:
    target: Worker | Heartbeat = (
        fresh_worker() if machine == "worker" else Heartbeat(make_config(), random=random.random)
    )
    target.handle(Start(), 0.0)
    with pytest.raises(LocalProtocolError, match="does not take"):
        target.handle(event, 0.0)


def test_not_an_input_at_all_is_refused() -> None:
    worker = fresh_worker()
    with pytest.raises(LocalProtocolError):
        worker.handle(Close(link=0), 0.0)  # type: ignore[arg-type]


# -- replay ------------------------------------------------------------------------------------


def test_a_journal_replays_to_the_same_actions() -> None:
    journal: list[tuple[float, MachineInput]] = []
    config = make_config(concurrency=3, queues={"a": 2, "b": 1, "c": 1}, job_time_limit=20)
    driver = Driver(config, seed=42, journal=journal, fetch_wait=2.0)
    for n in range(8):
        driver.peer.push(f"jid-{n:08d}", queue="abc"[n % 3])
    driver.start()
    driver.advance(3)
    driver.finish("jid-00000000")
    driver.lose("w1")
    driver.advance(4)
    driver.finish(driver.running[0], JobError(errtype="E", message="m"))
    driver.peer.state = "quiet"
    driver.advance(30)
    driver.stop()
    driver.advance(30)
    assert driver.worker.exit_code is not None
    recorded = [call.actions for call in driver.calls if call.machine == "worker"]
    assert len(journal) == len(recorded) > 25

    replayed = Worker(config, random=random.Random(42).random)
    assert [replayed.handle(event, now) for now, event in journal] == recorded
    assert replayed.exit_code == driver.worker.exit_code
    assert replayed.phase is Phase.EXITED


# -- bugs found while writing these tests --------------------------------------------------
# The tests below failed on the machine as first written (they were strict xfails) and pass
# since faktory_core was fixed.


def test_an_ack_owed_on_a_down_link_is_delivered_before_the_exit() -> None:
    driver = started(J1)
    driver.advance(1)
    driver.lose("w0")  # reconnects after a short backoff...
    driver.stop()
    driver.finish(J1)  # ...and the drain completes at once: ENDING must re-open the link
    driver.advance(30)
    assert driver.peer.acks(J1), "the job ran to completion and was never ACKed"
    (ack_at, *_), *_ = driver.lines("w0", "ACK")
    assert ended(driver, "w0") == [ack_at]
    assert exits(driver) == [(ack_at, Exit(code=0))]
    assert 1 < ack_at < 2  # after one reconnect delay


def test_the_fail_of_an_aborted_job_on_a_down_link_is_delivered_while_ending() -> None:
    driver = started(J1)
    driver.stop()
    driver.advance(24)
    driver.lose("w0", "broken pipe")
    driver.auto_connect = False  # the reconnect is slow to complete
    driver.advance(1)  # the deadline: AbortJob, and a FAIL owed on a link still down
    assert list(driver.aborted) == [J1]
    driver.finish(J1)  # the aborted job ends during the grace period: DRAINED, ENDING
    driver.advance(1)
    driver.connected("w0")  # the slow reconnect completes while the worker is ending
    driver.advance(30)
    assert driver.peer.fails(J1), "the abort was never reported: the job waits out reserve_for"


@pytest.mark.parametrize(
    "name",
    ["shutdown_timeout", "abort_grace", "heartbeat_interval", "reply_timeout", "job_time_limit"],
)
def test_nan_settings_are_refused(name: str) -> None:
    with pytest.raises(LocalProtocolError):
        make_config(**{name: float("nan")})


def test_a_nan_shutdown_timeout_cannot_prevent_the_abort() -> None:
    try:
        driver = started(J1, shutdown_timeout=float("nan"))
    except LocalProtocolError:
        return
    driver.stop()
    driver.advance(1000)
    assert driver.aborted, "the worker never aborts and never exits"


def test_jobtypes_given_as_one_string_name_one_type() -> None:
    try:
        config = make_config(jobtypes="SendEmail")
    except LocalProtocolError:
        return  # refusing it is fine too
    assert config.jobtypes == frozenset({"SendEmail"})


@pytest.mark.parametrize("overrides", [{"pid": "4242"}, {"hostname": 42}, {"username": ["u"]}])
def test_hello_fields_are_checked_when_the_config_is_built(overrides: dict[str, Any]) -> None:
    with pytest.raises(LocalProtocolError):
        make_config(**overrides)


def test_max_reply_size_is_checked_when_the_config_is_built() -> None:
    # Once found when the first connection was made (a ValueError from the parser).
    with pytest.raises(LocalProtocolError, match="max_reply_size must be an integer"):
        fresh_worker(max_reply_size=0)


@pytest.mark.parametrize("rss_kb", [-5, 1.5])
def test_a_bad_memory_usage_cannot_break_a_later_timer(rss_kb: Any) -> None:
    driver = started(J1)
    with contextlib.suppress(LocalProtocolError):
        driver.memory(rss_kb)  # refused at the door: fine
    driver.advance(15)  # raised LocalProtocolError from Beat, far from its cause
    assert len(driver.lines(HB, "BEAT")) == 2


def test_a_time_limit_due_at_time_zero_is_enforced() -> None:
    driver = Driver(make_config(job_time_limit=5), now=-5.0, fetch_wait=2.0)
    driver.peer.push(J1)
    driver.start()
    assert driver.worker.next_deadline == 0.0
    driver.advance(5)  # TimerFired at 0.0 aborted nothing, and next_deadline stayed 0.0
    assert list(driver.aborted) == [J1]


def test_a_second_job_with_a_running_jid_is_failed_not_run() -> None:
    driver = Driver(make_config(concurrency=2), fetch_wait=2.0)
    driver.peer.push(J1)
    driver.peer.push(J1)  # Faktory does not enforce unique jids
    driver.start()
    # Faktory keeps one reservation per jid: the copy is FAILed for a later retry, not run.
    assert len(driver.actions(StartJob)) == 1
    assert driver.peer.fails(J1)
    driver.worker.handle(JobFinished(jid=J1), 1.0)
    assert driver.worker.running == ()


def test_the_actions_of_a_call_that_raised_are_not_handed_to_the_next() -> None:
    calls = itertools.count()

    def order() -> list[str]:
        if next(calls) == 1:
            raise RuntimeError("the caller's queue order failed")  # inside the second FETCH
        return ["default"]

    worker = Worker(make_config(queue_order=order), random=random.random)
    worker.handle(Start(), 0.0)
    worker.handle(ConnectionMade(link=0), 0.0)
    worker.handle(DataReceived(link=0, data=b'+HI {"v":2}\r\n'), 0.0)
    worker.handle(DataReceived(link=0, data=b"+OK\r\n"), 0.0)  # FETCH default
    invalid = b'{"jid":"jid-00000009","args":[]}'
    reply = b"$%d\r\n%s\r\n" % (len(invalid), invalid)
    with pytest.raises(RuntimeError):
        worker.handle(DataReceived(link=0, data=reply), 0.0)
    # The raising call's notice of the invalid job is not handed over; the FAIL it owed is
    # not lost either: it goes out with the FETCH tried again at the next input.
    later: list[Action] = worker.handle(TimerFired(), 1.0)
    assert not [action for action in later if isinstance(action, Notice)], later
    assert later == [
        Write(
            link=0,
            data=b'FAIL {"jid":"jid-00000009","errtype":"InvalidJob","message":'
            + b'"a job needs \'jobtype\'","backtrace":[]}\r\nFETCH default\r\n',
        )
    ], later


def test_a_fail_goes_out_on_a_free_link_when_its_own_is_down() -> None:
    driver = started(J1, concurrency=2)
    driver.advance(1)
    driver.stop()
    driver.advance(23)
    driver.lose("w0")
    driver.auto_connect = False  # w0 stays down
    acts = driver.advance(2)
    assert driver.now == 26.0
    assert of(acts, AbortJob) == [
        AbortJob(jid=J1, reason=AbortReason.SHUTDOWN, message=SHUTDOWN_MESSAGE)
    ]
    assert (1, fail_line(J1, "ShutdownAbort", SHUTDOWN_MESSAGE)) in writes(acts)
    driver.finish(J1)
    assert exits(driver) == [(26.0, Exit(code=1))]
    assert driver.actions(Close, "worker")[-2:] == [Close(link=0), Close(link=1)]


def test_the_exit_names_the_reports_it_could_not_deliver() -> None:
    driver = started(J1)
    driver.lose("w0")
    driver.auto_connect = False  # the reconnect never completes
    driver.advance(1)
    driver.stop()
    driver.finish(J1)
    assert driver.worker.phase is Phase.ENDING
    acts = driver.advance(10)
    assert [a.action for a in acts if a.machine == "worker"][-3:] == [
        Close(link=0),
        Notice(message=f"exiting with ACK/FAIL undelivered for {J1}"),
        Exit(code=0),
    ]
    assert driver.now == 11.0


def test_reports_lost_with_a_link_go_out_on_a_free_one() -> None:
    driver = started(J1, J2, concurrency=2)
    driver.quiet()
    driver.peer.deafen("w0")  # what w0 carries from now on is lost on the way
    driver.finish(J1)  # its ACK is written on w0, and lost
    driver.finish(J2)  # acknowledged on w1, which is then free
    driver.auto_connect = False  # w0 is slow to come back
    driver.lose("w0")  # the worker takes the ACK of J1 back
    assert driver.peer.acks(J1), "the ACK waits for w0 while w1 is free"


def test_the_exit_names_the_reports_still_awaiting_their_reply() -> None:
    driver = started(J1)
    driver.quiet()
    driver.peer.deafen("w0")
    driver.finish(J1)  # the ACK (alone: no FETCH when quiet) is lost on the way
    driver.stop()  # nothing runs: ENDING at once, its deadline at 10
    assert driver.worker.phase is Phase.ENDING
    driver.advance(10)  # ENDING's deadline and the ACK's reply timeout fall together
    assert exits(driver) == [(10.0, Exit(code=0))]
    notices = [n.message for n in driver.actions(Notice, "worker")]
    assert any(J1 in message for message in notices), notices


class ForgetfulPeer(ServerPeer):
    """A server that forgets the worker as soon as it registers it."""

    def _hello(self, state: Any, command: Any) -> bytes:
        reply = super()._hello(state, command)
        self.known_wids.clear()
        return reply


def test_a_server_that_keeps_forgetting_the_worker_is_retried_with_backoff() -> None:
    driver = Driver(make_config(), peer=ForgetfulPeer(), fetch_wait=2.0)
    driver.start()
    driver.advance(1)  # the driver gives up after 10,000 timers at time 0.0
    assert len(driver.lines(HB, "HELLO")) < 10


def test_a_job_cancelled_from_outside_is_failed_as_cancelled() -> None:
    """A job's task cancelled by something other than the worker's abort (the adapter reports
    JobError.cancelled()): FAILed so the server retries it, with the core's errtype."""
    assert JobError.cancelled() == JobError(
        errtype=ERRTYPE_CANCELLED, message="the job's task was cancelled from outside"
    )
    assert ERRTYPE_CANCELLED == "CancelledError"
    driver = started(J1)
    driver.finish(J1, JobError.cancelled())
    fail = driver.peer.fails(J1)[0].json()
    assert (fail["errtype"], fail["message"]) == (
        "CancelledError",
        "the job's task was cancelled from outside",
    )


AFTER_THE_END: list[MachineInput] = [
    Start(),
    ConnectionMade(link=0),
    DataReceived(link=0, data=b'+HI {"v":2}\r\n'),
    DataReceived(link=0, data=b""),
    ConnectionLost(link=0, reason="reset", permanent=True),
    TimerFired(),
]


@pytest.mark.parametrize(
    "late",
    [
        *AFTER_THE_END,
        JobFinished(jid=J1),
        JobFinished(jid="jid-never-ran"),
        QuietRequested(),
        StopRequested(),
        AbortRequested(reason="KeyboardInterrupt"),
        ServerSignal(state=WorkerState.TERMINATE),
    ],
    ids=repr,
)
def test_an_exited_worker_ignores_every_input_and_journals_it(late: MachineInput) -> None:
    journal: list[tuple[float, MachineInput]] = []
    driver = Driver(make_config(), journal=journal, fetch_wait=2.0)
    driver.peer.push(J1)
    driver.start()
    driver.stop()
    driver.stop()  # abort J1 at once
    driver.advance(3)  # the grace period ends: J1 never finished
    assert driver.worker.exit_code == 1
    assert driver.worker.handle(late, 100.0) == []
    assert journal[-1] == (100.0, late)
    assert driver.worker.phase is Phase.EXITED
    assert driver.worker.exit_code == 1
    assert driver.worker.next_deadline is None
    with pytest.raises(LocalProtocolError):  # a misuse is still one
        driver.worker.handle(PhaseReported(phase=Phase.QUIET), 100.0)


@pytest.mark.parametrize(
    "late", [*AFTER_THE_END, MemoryUsage(rss_kb=1), PhaseReported(phase=Phase.EXITED), Finish()]
)
def test_a_finished_heartbeat_ignores_every_input(late: MachineInput) -> None:
    driver = Driver(make_config(), fetch_wait=2.0)
    driver.start()
    driver.stop()
    driver.advance(3)  # the FETCH in flight comes back empty: the worker exits
    assert driver.heartbeat.finished
    assert driver.heartbeat.handle(late, 100.0) == []
    assert driver.heartbeat.next_deadline is None


def test_the_heartbeat_end_timeout_is_the_cores() -> None:
    """How long an adapter waits, after Exit, for the heartbeat's Finished: a heartbeat that
    is slow to send END (its link awaiting a BEAT reply) must not hold the exit for long."""
    assert HEARTBEAT_END_TIMEOUT == 5.0
