"""What the machines say: each Notice's level and job, connection trouble as one episode
(one line when it starts, one when it is over), the FAILs the worker decides itself, and a
burst worker that cannot use the server at start."""

from __future__ import annotations

from logging import DEBUG, ERROR, INFO, WARNING
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faktory_core import EXIT_REFUSED, Heartbeat, Job, Phase, Trigger, WorkerConfig
from faktory_core._worker import ERRTYPE_DUPLICATE_JID, ERRTYPE_UNKNOWN_JOBTYPE
from faktory_core.machine_io import (
    Close,
    ConnectionLost,
    ConnectionMade,
    DataReceived,
    Exit,
    Finish,
    Notice,
    PhaseChanged,
    Start,
    StartJob,
    TimerFired,
)
from tests.core.worker_peer import HB, Act, Driver, job_payload, of

WID = "w-notices"
J1, J2 = "jid-00000001", "jid-00000002"
REFUSED = "cannot use the server at tcp://localhost:7419: connection refused"


def make_config(**overrides: Any) -> WorkerConfig:
    settings: dict[str, Any] = {"wid": WID, "concurrency": 1, "heartbeat_interval": 15.0}
    settings.update(overrides)
    return WorkerConfig(**settings)


def notices(acts: list[Act], machine: str) -> list[Notice]:
    return of(acts, Notice, machine)


def refuse_pending(driver: Driver, reason: str = REFUSED) -> list[Act]:
    """Every connect in flight fails: the server is not there."""
    acts: list[Act] = []
    for key in sorted(driver.connecting):
        acts += driver.refused(key, reason)
    return acts


def accept_pending(driver: Driver) -> list[Act]:
    """Every connect in flight succeeds: the server is back."""
    acts: list[Act] = []
    for key in sorted(driver.connecting):
        acts += driver.connected(key)
    return acts


def server_down_for(driver: Driver, seconds: float) -> list[Act]:
    """Refuse every connect, at every retry, for ``seconds``."""
    acts = refuse_pending(driver)
    end = driver.now + seconds
    while (deadline := driver.next_deadline) is not None and deadline <= end:
        acts += driver.run_until(deadline)
        acts += refuse_pending(driver)
    driver.run_until(end)
    return acts


def server_back(driver: Driver, *, within: float = 120.0) -> list[Act]:
    """Accept every connect until every link is ready."""
    acts = accept_pending(driver)
    end = driver.now + within
    while not all(driver.peer.is_ready(key) for key in driver.links):
        deadline = driver.next_deadline
        assert deadline is not None
        assert deadline <= end, "the links did not come back"
        acts += driver.run_until(deadline)
        acts += accept_pending(driver)
    return acts


# -- Notice ----------------------------------------------------------------------------------


def test_a_notice_is_a_warning_about_no_job_by_default() -> None:
    notice = Notice(message="m")
    assert (notice.level, notice.job, notice.link) == (WARNING, None, None)


# -- connection trouble: one line when it starts, one when it is over -------------------------


def test_a_stopped_server_is_one_warning_however_many_links_and_attempts() -> None:
    # Was: a WARNING per link per attempt, 55 lines in 6 s for a worker of concurrency 10.
    driver = Driver(make_config(concurrency=10), auto_connect=False, fetch_wait=2.0)
    driver.start()
    acts = server_down_for(driver, 6.0)
    worker = notices(acts, "worker")
    assert len(worker) > 30  # every attempt is still there, at DEBUG
    first, *rest = worker
    assert first.level == WARNING
    assert first.link == 0
    assert first.message.startswith(f"{REFUSED}; retrying in ")
    assert first.message.endswith(" s")
    assert {notice.level for notice in rest} == {DEBUG}
    assert all(notice.message.startswith(f"{REFUSED}; retrying in ") for notice in rest)
    # The heartbeat's trouble is all DEBUG: the process logs one WARNING for it.
    heartbeat = notices(acts, "heartbeat")
    assert heartbeat
    assert {notice.level for notice in heartbeat} == {DEBUG}
    assert [n for n in worker + heartbeat if n.level >= INFO] == [first]


def test_the_trouble_ends_with_one_info_once_every_link_is_ready_again() -> None:
    driver = Driver(make_config(concurrency=3), auto_connect=False, fetch_wait=2.0)
    driver.start()
    failures = len(notices(server_down_for(driver, 5.0), "worker"))
    started = 0.0
    acts = server_back(driver)
    worker = notices(acts, "worker")
    (back,) = worker
    elapsed = next(now for now, n in driver.timed(Notice, "worker") if n is back) - started
    assert back == Notice(
        message=(
            f"connected again: every job link is ready after {elapsed:.1f} s of trouble "
            f"({failures} failures)"
        ),
        level=INFO,
    )
    (hb_back,) = notices(acts, "heartbeat")
    assert hb_back.level == DEBUG  # the worker's INFO says it once
    assert hb_back.message.startswith("connected again after ")
    # The next failure is a new episode: a WARNING again.
    acts = driver.lose("w1")
    assert [n.level for n in notices(acts, "worker")] == [WARNING]


def test_the_trouble_is_not_over_while_a_link_still_cannot_connect() -> None:
    driver = Driver(make_config(concurrency=2), auto_connect=False, fetch_wait=2.0)
    driver.start()
    driver.connected("w1")
    driver.connected(HB)
    acts = driver.refused("w0")
    assert [n.level for n in notices(acts, "worker")] == [WARNING]
    driver.lose("w1")  # the same episode
    driver.advance(1.0)  # both reconnects are under way
    assert driver.connecting == {"w0", "w1"}
    acts = driver.connected("w0")
    assert notices(acts, "worker") == []  # w1 is still down
    acts = driver.connected("w1")
    assert [n.message[:15] for n in notices(acts, "worker")] == ["connected again"]
    assert [n.level for n in driver.actions(Notice, "worker")] == [WARNING, DEBUG, INFO]


def test_a_link_that_never_failed_but_is_still_connecting_holds_the_end() -> None:
    # "Every link that should be up": one still connecting for the first time is not up.
    driver = Driver(make_config(concurrency=2), auto_connect=False, fetch_wait=2.0)
    driver.start()
    driver.refused("w0")
    driver.advance(1.0)
    assert notices(driver.connected("w0"), "worker") == []
    assert [n.level for n in notices(driver.connected("w1"), "worker")] == [INFO]


def test_a_handshake_alone_ends_the_trouble_and_a_refusal_after_it_is_a_new_one() -> None:
    driver = Driver(make_config(), auto_connect=False, fetch_wait=2.0)
    driver.start()
    driver.refused("w0")
    driver.advance(1.0)
    acts = driver.connected("w0")
    assert [n.level for n in notices(acts, "worker")] == [INFO]
    driver.peer.close("w0")
    acts = driver.data("w0", b"-ERR boom\r\n")
    assert [(n.level, n.message[:26]) for n in notices(acts, "worker")] == [
        (WARNING, "server error: ERR boom; re")
    ]


def test_over_the_connection_limit_inside_an_episode_adds_no_warning() -> None:
    # The over-limit notice says what to do, once per episode: at WARNING when it starts the
    # trouble, at DEBUG when the trouble had already begun.
    driver = Driver(make_config(concurrency=2), auto_connect=False, fetch_wait=2.0)
    driver.start()
    driver.connected(HB)
    driver.refused("w0")  # the episode starts here
    acts = driver.connected("w1")
    assert notices(acts, "worker") == []
    driver.peer.close("w1")
    acts = driver.data("w1", b"-ERR too many connections: 2001\r\n")
    (over,) = notices(acts, "worker")
    assert over.level == DEBUG
    assert over.message.startswith("the server refused a connection: ERR too many connections")
    assert [n.level for n in driver.actions(Notice, "worker")] == [WARNING, DEBUG]


def test_a_refused_link_holds_the_end_until_it_is_served() -> None:
    # Faktory 1.9 accepts HELLO over its limit, then refuses: READY is not yet "back".
    driver = Driver(make_config(concurrency=2, reconnect_cap=5.0), fetch_wait=2.0)
    driver.start()
    driver.peer.close("w1")
    acts = driver.data("w1", b"-ERR too many connections: 2001\r\n")
    assert [n.level for n in notices(acts, "worker")] == [WARNING]
    acts = driver.advance(5.0)  # w1 reconnects and is READY...
    assert driver.peer.is_ready("w1")
    assert [n.level for n in notices(acts, "worker")] == []  # ...but has not served yet
    acts = driver.advance(2.0)  # its FETCH comes back empty: served
    assert [n.level for n in notices(acts, "worker")] == [INFO]


def test_a_stop_during_trouble_gives_the_links_up_without_a_line() -> None:
    driver = Driver(make_config(concurrency=2), auto_connect=False, fetch_wait=2.0)
    driver.start()
    driver.connected("w0")
    driver.connected(HB)
    driver.refused("w1")
    acts = driver.stop()
    acts += driver.advance(3.0)
    assert notices(acts, "worker") == []  # a link given up is no trouble, and nothing is back
    assert driver.exit_code == 0


def test_a_healthy_stop_and_quiet_say_nothing() -> None:
    driver = Driver(make_config(concurrency=2), fetch_wait=2.0)
    driver.peer.push(J1)
    driver.start()
    acts = driver.quiet()
    acts += driver.advance(3.0)
    acts += driver.stop()
    acts += driver.finish(J1)
    acts += driver.advance(10.0)
    assert of(acts, Notice) == []
    assert driver.exit_code == 0


def test_a_link_lost_while_closing_is_not_trouble() -> None:
    driver = Driver(make_config(), fetch_wait=2.0)
    driver.start()
    driver.peer.mute(HB)
    driver.advance(15.0)  # a BEAT awaits its reply
    driver.to_heartbeat(Finish())
    acts = driver.eof(HB)
    assert notices(acts, "heartbeat") == [
        Notice(
            message="the server closed the connection; not re-opened: closing",
            link=0,
            level=DEBUG,  # one per link: not worth a line at INFO
        )
    ]
    assert driver.heartbeat.finished


@st.composite
def link_histories(draw: st.DrawFn) -> tuple[int, list[tuple[str, int, float]]]:
    """A worker's concurrency and what happens to its links: connects refused or accepted,
    connections lost, time passing."""
    concurrency = draw(st.integers(1, 3))
    steps = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["refuse", "accept", "lose", "advance"]),
                st.integers(0, concurrency),  # 0: the heartbeat's link
                st.floats(0.0, 20.0),
            ),
            max_size=40,
        )
    )
    return concurrency, steps


@settings(max_examples=200, deadline=None)
@given(link_histories())
def test_at_most_one_warning_per_episode_and_one_info_when_it_ends(
    history: tuple[int, list[tuple[str, int, float]]],
) -> None:
    concurrency, steps = history
    driver = Driver(make_config(concurrency=concurrency), auto_connect=False, fetch_wait=2.0)
    driver.start()
    for kind, index, seconds in steps:
        key = HB if index == 0 else f"w{index - 1}"
        if kind == "refuse" and key in driver.connecting:
            driver.refused(key)
        elif kind == "accept" and key in driver.connecting:
            driver.connected(key)
        elif kind == "lose" and driver.peer.is_ready(key):
            driver.lose(key)
        elif kind == "advance":
            driver.advance(seconds)
    # Then the server is there for good: every link comes back.
    server_back(driver)
    for machine, start_level, back_level in (
        ("worker", WARNING, INFO),
        ("heartbeat", DEBUG, DEBUG),
    ):
        in_trouble = warned = False
        for notice in driver.actions(Notice, machine):
            if notice.message.startswith("connected again"):
                assert in_trouble, "a trouble ended that never began"
                # An episode that warned late (the heartbeat's, after 30 s) ends at INFO.
                assert notice.level == (INFO if warned and start_level < WARNING else back_level)
                in_trouble = warned = False
            elif not in_trouble:
                assert notice.level == start_level, notice
                in_trouble, warned = True, start_level >= WARNING
            elif notice.level == WARNING:  # at most one per episode
                assert not warned, notice
                warned = True
            else:
                assert notice.level == DEBUG, notice
        assert not in_trouble, f"every {machine} link is ready, yet the trouble is not over"


# -- FAILs the worker decides itself ----------------------------------------------------------


def test_an_unknown_job_type_is_a_warning_carrying_the_job() -> None:
    driver = Driver(make_config(jobtypes=["Known"]), fetch_wait=2.0)
    driver.peer.push(J1, jobtype="Foo")
    acts = driver.start()
    (notice,) = notices(acts, "worker")
    assert notice == Notice(
        message=(
            f"no handler is registered for job type 'Foo' (jid {J1}): FAILed as "
            f"{ERRTYPE_UNKNOWN_JOBTYPE} without running it, the server retries it; register a "
            "handler or check the worker's queues"
        ),
        link=0,
        level=WARNING,
        job=Job.from_wire({"jid": J1, "jobtype": "Foo", "args": [], "queue": "default"}),
    )
    assert driver.peer.fails(J1)[0].json()["errtype"] == ERRTYPE_UNKNOWN_JOBTYPE


def test_a_duplicate_jid_is_a_warning_carrying_the_job() -> None:
    driver = Driver(make_config(concurrency=2), fetch_wait=2.0)
    driver.peer.push(J1)
    driver.peer.push_payload(job_payload(J1, jobtype="Copy"))
    acts = driver.start()
    assert list(driver.started) == [J1]
    (notice,) = notices(acts, "worker")
    assert notice.level == WARNING
    assert notice.job is not None
    assert (notice.job.jid, notice.job.jobtype) == (J1, "Copy")
    assert notice.message.startswith(f"job 'Copy' (jid {J1}) is already running here")
    assert f"FAILed as {ERRTYPE_DUPLICATE_JID} without running it" in notice.message


def test_a_job_fetched_while_aborting_is_a_warning_carrying_the_job() -> None:
    driver = Driver(make_config(concurrency=2, shutdown_timeout=1.0), fetch_wait=None)
    driver.peer.push(J1)
    driver.start()  # J1 runs on w0; w1's FETCH is held
    driver.stop()
    driver.advance(1.0)  # aborting
    driver.peer.push(J2)
    acts = driver.release("w1")
    (notice,) = notices(acts, "worker")
    assert notice.level == WARNING
    assert notice.job is not None
    assert notice.job.jid == J2
    assert notice.message == (
        f"job 'T' (jid {J2}) was fetched after the worker began aborting: FAILed as "
        "ShutdownAbort without running it, the server retries it"
    )


# -- burst mode fails fast on a server it cannot use -------------------------------------------


def test_a_burst_worker_that_cannot_connect_at_start_stops_at_once_with_exit_3() -> None:
    driver = Driver(make_config(burst=True, concurrency=3), auto_connect=False)
    driver.start()
    acts = driver.refused("w1", REFUSED)
    assert next((a.previous, a.phase, a.trigger) for a in of(acts, PhaseChanged)) == (
        Phase.RUNNING,
        Phase.STOPPING,
        Trigger.REFUSED,
    )
    assert notices(acts, "worker") == [
        Notice(
            message=(
                f"stopping: {REFUSED}; burst mode does not wait for a server it has not reached yet"
            ),
            level=ERROR,
        )
    ]
    assert driver.worker.refusal == REFUSED
    assert driver.timed(Exit) == [(0.0, Exit(code=EXIT_REFUSED))]
    # The other job links' connects were given up, and the heartbeat ended.
    assert of(acts, Close, "worker") == [Close(link=0), Close(link=2)]
    assert driver.connecting == set()


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        ("lost", "connection lost: reset by peer"),
        ("eof", "the server closed the connection"),
        ("timeout", "no reply within 10 s"),
    ],
)
def test_a_burst_worker_whose_first_handshake_fails_stops_with_exit_3(
    failure: str, reason: str
) -> None:
    driver = Driver(make_config(burst=True), auto_connect=False)
    driver.start()
    driver.connecting.remove("w0")
    driver.to_worker(ConnectionMade(link=0))  # the greeting never comes
    if failure == "lost":
        acts = driver.to_worker(ConnectionLost(link=0, reason=reason))
    elif failure == "eof":
        acts = driver.data("w0", b"")
    else:
        acts = driver.advance(10.0)
    assert driver.worker.refusal == reason
    assert of(acts, Exit) == [Exit(code=EXIT_REFUSED)]
    assert [n.level for n in notices(acts, "worker")] == [ERROR]


def test_a_burst_worker_retries_once_the_server_has_accepted_a_link() -> None:
    driver = Driver(make_config(burst=True, concurrency=2), auto_connect=False, fetch_wait=None)
    driver.start()
    driver.connected("w0")
    acts = driver.refused("w1")
    assert [n.level for n in notices(acts, "worker")] == [WARNING]
    assert driver.worker.refusal is None
    assert driver.worker.phase is Phase.RUNNING


@pytest.mark.parametrize("burst", [False, True])
def test_a_long_running_worker_retries_and_a_late_failure_never_refuses(burst: bool) -> None:
    driver = Driver(make_config(burst=burst), auto_connect=False, fetch_wait=None)
    driver.start()
    if not burst:
        driver.refused("w0")  # a long-running worker waits for its server
        driver.advance(1.0)
    driver.connected("w0")
    driver.lose("w0")  # after an acceptance: retried, burst or not
    assert driver.worker.refusal is None
    assert driver.worker.phase is Phase.RUNNING


def test_an_untrusted_certificate_still_refuses_any_worker() -> None:
    driver = Driver(make_config(), auto_connect=False)
    driver.start()
    acts = driver.to_worker(ConnectionLost(link=0, reason="certificate untrusted", permanent=True))
    assert notices(acts, "worker") == [
        Notice(message="stopping: certificate untrusted; retrying cannot change that", level=ERROR)
    ]
    assert driver.worker.refusal == "certificate untrusted"
    assert driver.exit_code == EXIT_REFUSED


def test_a_worker_never_refused_has_no_refusal() -> None:
    driver = Driver(make_config(), fetch_wait=2.0)
    driver.peer.push(J1)
    acts = driver.start()
    assert of(acts, StartJob)
    assert driver.worker.refusal is None


def test_a_heartbeat_failing_alone_warns_once_it_has_failed_for_30_s() -> None:
    # Its trouble is DEBUG, as the job links warn for the process; but when the heartbeat
    # alone fails, the server reaps the worker after 60 s without a BEAT: not silent.
    heartbeat = Heartbeat(make_config(), random=lambda: 0.0)
    heartbeat.handle(Start(), 0.0)
    said: list[tuple[float, Notice]] = []
    now = 0.0
    while now < 90.0:
        acts = heartbeat.handle(ConnectionLost(link=0, reason="connection refused"), now)
        said += [(now, act) for act in acts if isinstance(act, Notice)]
        deadline = heartbeat.next_deadline
        assert deadline is not None
        now = deadline
        heartbeat.handle(TimerFired(), now)  # the retry: Connect
    warnings = [(when, notice) for when, notice in said if notice.level >= INFO]
    assert len(warnings) == 1
    when, warning = warnings[0]
    assert warning.level == WARNING
    assert 30.0 <= when < 60.0
    assert warning.message.startswith("connection refused; retrying in ")
    assert warning.message.endswith(f"(failing for {when:.0f} s)")
    heartbeat.handle(ConnectionMade(link=0), now)
    heartbeat.handle(DataReceived(link=0, data=b'+HI {"v":2}\r\n'), now)
    back = heartbeat.handle(DataReceived(link=0, data=b"+OK\r\n"), now)
    [over] = [act for act in back if isinstance(act, Notice)]
    assert over.level == INFO  # it warned: its end is said at INFO too
    assert over.message.startswith("connected again after ")
