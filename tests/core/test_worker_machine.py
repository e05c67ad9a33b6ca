"""The worker and its heartbeat under random schedules: a hypothesis state machine drives
them through the scripted server (``worker_peer``) on a fake clock, and checks the shutdown
contract of ``design.md`` after every step and inside every ``handle()`` call."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from faktory_core import Phase, Trigger, WorkerConfig
from faktory_core._links import LinkStatus
from faktory_core.machine_io import (
    AbortJob,
    AbortReason,
    Close,
    ConnectionLost,
    DataReceived,
    Exit,
    Finished,
    JobError,
    JobFinished,
    JobOutcome,
    JobReport,
    Notice,
    PhaseChanged,
    PhaseReported,
    StartJob,
    StopRequested,
    TimerFired,
    Write,
)
from tests.core.worker_peer import HB, Call, Driver

EPSILON = 1e-9
WID = "w-machine"
JOBTYPES = ("T", "U", "X")  # X is unknown when the worker names its job types
SERVER_STATES = ("running", "quiet", "terminate")
LATE = "fetched after the worker began aborting"


def lines(data: bytes) -> list[tuple[str, str]]:
    found = []
    for line in data.split(b"\r\n")[:-1]:
        verb, _, argument = line.decode().partition(" ")
        found.append((verb, argument))
    return found


#: The phases in which a FETCH in flight may still deliver a job that then starts.
FETCHED_JOB_PHASES = (Phase.RUNNING, Phase.QUIET, Phase.DRAINING, Phase.STOPPING)


class WorkerMachine(RuleBasedStateMachine):
    """Random inputs; the contract's invariants checked all along."""

    driver: Driver

    @initialize(
        concurrency=st.integers(1, 4),
        connections=st.integers(1, 3),
        shutdown_timeout=st.sampled_from([0.0, 4.0, 25.0]),
        abort_grace=st.sampled_from([0.0, 1.0, 3.0]),
        heartbeat_interval=st.sampled_from([5.0, 15.0]),
        job_time_limit=st.sampled_from([None, 6.0]),
        named_jobtypes=st.booleans(),
        weighted=st.booleans(),
        fetch_wait=st.sampled_from([None, 2.0]),
        burst=st.booleans(),
        seed=st.integers(0, 2**16),
    )
    def start(
        self,
        concurrency: int,
        connections: int,
        shutdown_timeout: float,
        abort_grace: float,
        heartbeat_interval: float,
        job_time_limit: float | None,
        named_jobtypes: bool,
        weighted: bool,
        fetch_wait: float | None,
        burst: bool,
        seed: int,
    ) -> None:
        self.config = WorkerConfig(
            wid=WID,
            concurrency=concurrency,
            connections=connections,
            queues={"a": 3, "b": 1} if weighted else ("a", "b"),
            shutdown_timeout=shutdown_timeout,
            abort_grace=abort_grace,
            heartbeat_interval=heartbeat_interval,
            job_time_limit=job_time_limit,
            time_limits={"U": 2.5} if job_time_limit else {},
            jobtypes=("T", "U") if named_jobtypes else None,
            reply_timeout=10.0,
            burst=burst,
        )
        self.driver = Driver(self.config, seed=seed, fetch_wait=fetch_wait)
        self.jids = 0
        # What the observer learns, call by call.
        self.phase = Phase.RUNNING
        self.reported = Phase.RUNNING  # the phase the heartbeat was last told
        self.stop_at: float | None = None
        self.ending_at: float | None = None
        self.second_stop = False
        self.in_flight: dict[str, tuple[str, int | None]] = {}  # jid -> last report's link
        self.undelivered: set[str] = set()  # jids the worker exited without delivering
        self.start_at: dict[str, float] = {}
        self.outcomes: dict[str, list[tuple[int | None, str, dict[str, Any]]]] = {}
        self.expected: dict[str, tuple[str, str | None]] = {}  # jid -> (verb, errtype)
        self.reports: dict[str, JobReport] = {}  # jid -> take_reports()'s report
        self.reconnects_seen = 0
        self.last_io: dict[str, float] = {}
        self.exited_at: float | None = None
        self.shutdown_aborts = False
        self.last_beat: float | None = None
        self.beating = False  # the heartbeat link has been up and answering since last_beat
        self.heartbeat_closing = False
        self.driver.observers.append(self.observe)
        self.driver.start()

    # -- rules: time -----------------------------------------------------------------------

    @rule(seconds=st.sampled_from([0.0, 0.5, 1.0, 2.0, 2.5, 4.0, 7.0, 15.0, 30.0]))
    def advance(self, seconds: float) -> None:
        self.driver.advance(seconds)

    # -- rules: the server -----------------------------------------------------------------

    @rule(
        jobtypes=st.lists(st.sampled_from(JOBTYPES), min_size=1, max_size=3),
        queue=st.sampled_from(["a", "b"]),
        deliver=st.booleans(),
    )
    def push_jobs(self, jobtypes: list[str], queue: str, deliver: bool) -> None:
        for jobtype in jobtypes:
            self.jids += 1
            self.driver.peer.push(f"jid-{self.jids:08d}", jobtype=jobtype, queue=queue)
        if deliver and self.driver.peer.held:
            # Like Faktory's blocking pop: a FETCH waiting on the queue gets the job at once.
            self.driver.release(self.driver.peer.held[0])

    @rule(with_jid=st.booleans())
    def push_invalid_job(self, with_jid: bool) -> None:
        self.jids += 1
        payload = {"args": []} if not with_jid else {"jid": f"jid-{self.jids:08d}", "args": 1}
        self.driver.peer.push_payload(json.dumps(payload).encode(), queue="a")

    @precondition(lambda self: self.driver.peer.held)
    @rule(index=st.integers(0, 3))
    def release_fetch(self, index: int) -> None:
        held = self.driver.peer.held
        self.driver.release(held[index % len(held)])

    @precondition(lambda self: self.driver.running)
    @rule(index=st.integers(0, 3), error=st.booleans())
    def finish_job(self, index: int, error: bool) -> None:
        running = self.driver.running
        jid = running[index % len(running)]
        failure = JobError(errtype="Boom", message=f"{jid} failed", backtrace=["job.py:1"])
        self.driver.finish(jid, failure if error else None)

    @rule(
        kind=st.sampled_from(
            ["quiet", "stop", "server quiet", "server terminate", "server forgets", "memory"]
        )
    )
    def signal(self, kind: str) -> None:
        """What the process, the operator or the server says."""
        peer = self.driver.peer
        if kind == "quiet":
            self.driver.quiet("SIGTSTP")
        elif kind == "stop":
            self.driver.stop("SIGTERM")
        elif kind == "server forgets":
            peer.forget_worker()
        elif kind == "memory":
            self.driver.memory(40_000 + self.jids)
        else:
            state = kind.split(" ")[1]
            if SERVER_STATES.index(state) > SERVER_STATES.index(peer.state):
                peer.state = state  # the server's state only moves forward

    # -- rules: the network ----------------------------------------------------------------

    def open_links(self) -> list[str]:
        return [key for key in self.driver.links if self.driver.peer.is_open(key)]

    @rule(
        index=st.integers(0, 3),
        kind=st.sampled_from(["lost", "eof", "mute", "deafen", "slow connects", "fast connects"]),
    )
    def network(self, index: int, kind: str) -> None:
        """A connection fails, the server closes it or stops answering, or the bytes are lost
        on the way; connects slow down."""
        if kind.endswith("connects"):
            self.driver.auto_connect = kind == "fast connects"
            return
        keys = self.open_links()
        if not keys:
            return
        key = keys[index % len(keys)]
        if kind == "lost":
            self.driver.lose(key)
        elif kind == "eof":
            self.driver.eof(key)
        elif kind == "mute":
            self.driver.peer.mute(key)
        else:
            self.driver.peer.deafen(key)

    @precondition(lambda self: self.driver.connecting)
    @rule(index=st.integers(0, 3), ok=st.booleans())
    def complete_connect(self, index: int, ok: bool) -> None:
        keys = sorted(self.driver.connecting)
        key = keys[index % len(keys)]
        if ok:
            self.driver.connected(key)
        else:
            self.driver.refused(key)

    # -- the observer: every handle() call, checked as it returns --------------------------

    def observe(self, call: Call) -> None:
        driver, peer, now = self.driver, self.driver.peer, call.now
        machine, actions = call.machine, call.actions
        link_input = getattr(call.input, "link", None)
        input_key = None if link_input is None else driver.key(machine, link_input)
        if input_key is not None and isinstance(call.input, DataReceived):
            self.last_io[input_key] = now
        if machine == "heartbeat":
            self.observe_heartbeat(call)
            return
        phase_before = self.phase
        if isinstance(call.input, StopRequested) and phase_before is Phase.STOPPING:
            self.second_stop = True
        if self.exited_at is not None:
            assert actions == [], f"after Exit: {actions}"
        written: dict[str, list[tuple[str, str]]] = {}
        aborts: list[tuple[AbortJob, Phase]] = []
        for index, action in enumerate(actions):
            if isinstance(action, PhaseChanged):
                assert action.previous is self.phase
                self.phase = action.phase
                if action.phase is Phase.STOPPING:
                    self.stop_at = now
                elif action.phase is Phase.ENDING:
                    self.ending_at = now
                elif action.phase is Phase.EXITED:
                    self.check_ended(action, now)
            elif isinstance(action, Write):
                key = driver.key(machine, action.link)
                self.last_io[key] = now
                for verb, argument in lines(action.data):
                    written.setdefault(key, []).append((verb, argument))
                    assert verb != "FETCH" or self.phase is Phase.RUNNING, (
                        f"FETCH written on {key} at {now} after quiet or stop began"
                    )
                    if verb in ("ACK", "FAIL"):
                        payload = json.loads(argument)
                        self.outcomes.setdefault(payload["jid"], []).append(
                            (peer.connection(key), verb, payload)
                        )
                        self.in_flight[payload["jid"]] = (key, peer.connection(key))
                        if verb == "FAIL" and payload["errtype"] == "ShutdownAbort":
                            self.shutdown_aborts = True
            elif isinstance(action, Close):
                key = driver.key(machine, action.link)
                self.check_close(key, actions, index, now)
            elif isinstance(action, Notice) and action.message.startswith("exiting with"):
                undelivered = action.message.split(" for ", 1)[1].split(", ")
                self.undelivered.update(undelivered)
                event("exit with reports undelivered (ENDING deadline)")
            elif isinstance(action, StartJob):
                job = action.job
                assert self.phase in FETCHED_JOB_PHASES, self.phase
                assert self.config.jobtypes is None or job.jobtype in self.config.jobtypes
                assert job.jid not in driver.started, f"{job.jid} started twice"
                assert isinstance(call.input, DataReceived)
                assert input_key is not None
                event(f"job started while {self.phase.name}")
                self.start_at[job.jid] = now
                self.expected[job.jid] = ("ACK", None)
            elif isinstance(action, AbortJob):
                aborts.append((action, self.phase))
            elif isinstance(action, Exit):
                self.check_exit(action, actions, now)
        for abort, phase in aborts:
            self.check_abort(abort, phase, written, now, call)
        if isinstance(call.input, JobFinished):
            self.check_finished(call.input, written)
        for report in driver.worker.take_reports():
            jid = report.job.jid
            assert jid not in self.reports, f"{jid} reported twice"
            assert report.started <= report.finished == now
            self.reports[jid] = report
        self.expect_refusals(written)
        self.check_deadline(call)

    def observe_heartbeat(self, call: Call) -> None:
        _driver, peer, now = self.driver, self.driver.peer, call.now
        ready_before = peer.is_ready(HB) and not peer.is_muted(HB)
        if isinstance(call.input, PhaseReported):
            self.reported = call.input.phase
        for index, action in enumerate(call.actions):
            if isinstance(action, Write):
                self.last_io[HB] = now
                for verb, argument in lines(action.data):
                    assert verb in ("BEAT", "HELLO", "END"), verb
                    if verb == "BEAT":
                        beat = json.loads(argument)
                        assert beat["wid"] == WID
                        expected_state = {
                            Phase.RUNNING: None,
                            Phase.QUIET: "quiet",
                            Phase.DRAINING: "quiet",
                        }.get(self.reported, "terminate")
                        assert beat.get("current_state") == expected_state, (beat, self.reported)
                        if self.beating and self.last_beat is not None:
                            gap = now - self.last_beat
                            assert gap <= self.config.heartbeat_interval + EPSILON, gap
                        self.last_beat = now
                        self.beating = ready_before
                    if verb == "END":
                        assert self.exited_at is not None, "the heartbeat ended before Exit"
            elif isinstance(action, Close):
                self.check_close(HB, call.actions, index, now)
                self.beating = False
            elif isinstance(action, Finished):
                assert self.exited_at is not None
                self.heartbeat_closing = True
        if isinstance(call.input, ConnectionLost | DataReceived) and not peer.is_ready(HB):
            self.beating = False
        self.check_deadline(call)

    def check_close(self, key: str, actions: list[Any], index: int, now: float) -> bool:
        """A Close of a link whose FETCH is awaited only when the link is being dropped;
        a Close without END only for a dropped link or one awaiting a reply too long.
        Return whether END went out just before."""
        peer = self.driver.peer
        link = actions[index].link
        after = actions[index + 1] if index + 1 < len(actions) else None
        # A dropped link's Close is followed by the notice of its failure, or, when the
        # failure refuses the worker for good, by the refusal's notice.
        dropped = (isinstance(after, Notice) and after.link == link) or any(
            isinstance(later, Notice) and later.message.startswith("stopping: ")
            for later in actions[index + 1 :]
        )
        before = actions[index - 1] if index else None
        ended = isinstance(before, Write) and before.link == link and before.data == b"END\r\n"
        timed_out = now >= self.last_io.get(key, 0.0) + self.config.reply_timeout - EPSILON
        if dropped:
            event(f"link dropped: {getattr(after, 'message', '')[:23]}")
        if peer.holding(key):
            event("a link with a FETCH in flight closed")
            assert dropped or timed_out, f"{key} closed at {now} with its FETCH in flight"
            assert not ended
        if not ended and not dropped and peer.is_ready(key):
            # Closed without END: only a link awaiting a reply, at the end of the timeout.
            assert peer.awaited(key), f"{key} closed at {now} without END, nothing awaited"
            assert timed_out, f"{key} closed at {now} without END before its reply timeout"
        return ended

    def check_abort(
        self,
        abort: AbortJob,
        phase: Phase,
        written: dict[str, list[tuple[str, str]]],
        now: float,
        call: Call,
    ) -> None:
        driver, jid = self.driver, abort.jid
        assert jid in driver.started, jid
        assert jid not in driver.finished, jid
        assert jid not in driver.aborted, f"{jid} aborted twice"
        event(f"AbortJob {abort.reason.name}")
        if abort.reason is AbortReason.SHUTDOWN:
            self.shutdown_aborts = True
            assert phase is Phase.ABORTING
            assert self.stop_at is not None
            deadline = self.stop_at + self.config.shutdown_timeout
            second = self.second_stop and isinstance(call.input, StopRequested)
            assert second or now >= deadline - EPSILON, f"abort at {now}, deadline {deadline}"
        else:
            limit = self.config.time_limit(driver.started[jid].jobtype)
            assert limit is not None
            assert now >= self.start_at[jid] + limit - EPSILON
        # Aborts happen on TimerFired or StopRequested, when every reply has been read: the
        # peer's view of the links is the worker's. The FAIL goes out in the same call unless
        # every link is busy or down.
        sent = any(
            verb == "FAIL" and json.loads(argument)["jid"] == jid
            for lines_ in written.values()
            for verb, argument in lines_
        )
        free = self.free_links()
        assert sent or not free, f"AbortJob {jid} without its FAIL while {free} free"
        self.expected[jid] = ("FAIL", abort.reason.value)

    def check_finished(self, finished: JobFinished, written: dict[str, list[Any]]) -> None:
        jid = finished.jid
        if jid in self.driver.aborted:
            return  # FAILed when aborted
        error = finished.error
        self.expected[jid] = ("ACK", None) if error is None else ("FAIL", error.errtype)
        sent = [
            json.loads(argument)["jid"]
            for lines_ in written.values()
            for verb, argument in lines_
            if verb in ("ACK", "FAIL")
        ]
        free = self.free_links()
        assert jid in sent or not free, f"{jid} finished, {free} free, nothing sent"

    def free(self, key: str) -> bool:
        """The worker link ``key`` is connected, and no reply is awaited on it."""
        return self.driver.peer.is_ready(key) and not self.driver.peer.awaited(key)

    def free_links(self) -> list[str]:
        return [key for key in self.driver.links if key != HB and self.free(key)]

    def expect_refusals(self, written: dict[str, list[tuple[str, str]]]) -> None:
        """Jobs FETCH returned that were FAILed without being started."""
        for lines_ in written.values():
            for verb, argument in lines_:
                if verb != "FAIL":
                    continue
                payload = json.loads(argument)
                jid, errtype = payload["jid"], payload["errtype"]
                if jid not in self.driver.started:
                    assert errtype in ("UnknownJobType", "InvalidJob", "ShutdownAbort"), errtype
                    event(f"FAIL of a job never started: {errtype}")
                    if errtype == "ShutdownAbort":
                        assert LATE in payload["message"]
                    self.expected[jid] = ("FAIL", errtype)

    def check_ended(self, change: PhaseChanged, now: float) -> None:
        """ENDED once every link closed; END_TIMEOUT exactly when ENDING's deadline ran out."""
        assert self.ending_at is not None
        deadline = self.ending_at + self.config.reply_timeout
        if change.trigger is Trigger.END_TIMEOUT:
            assert now >= deadline - EPSILON, (now, deadline)
            event("exit at the END timeout")
        else:
            assert change.trigger is Trigger.ENDED, change
            assert now <= deadline + EPSILON, (now, deadline)
            event("exit once every link ended")

    def check_exit(self, exit_: Exit, actions: list[Any], now: float) -> None:
        assert self.exited_at is None, "two Exits"
        self.exited_at = now
        # Reports written on a connection still open at the exit: ENDING's deadline came
        # before their replies (the worker's exit Notice names only those never written).
        peer = self.driver.peer
        for jid, (key, connection) in self.in_flight.items():
            if not peer.outcomes.get(jid) and peer.connection(key) == connection:
                self.undelivered.add(jid)
                event("exit with a report in flight (ENDING deadline)")
        assert exit_.code == (1 if self.shutdown_aborts else 0), (exit_, self.shutdown_aborts)
        assert self.phase is Phase.EXITED

    def check_deadline(self, call: Call) -> None:
        machine = self.driver.worker if call.machine == "worker" else self.driver.heartbeat
        deadline = machine.next_deadline
        now = call.now
        if deadline is None:
            return
        assert deadline >= now - EPSILON, f"{call.machine} deadline {deadline} before {now}"
        if isinstance(call.input, TimerFired) and deadline <= now:
            # The one legitimate case: a zero grace period starts at the deadline that began it.
            assert call.machine == "worker"
            assert self.config.abort_grace == 0
            assert self.driver.worker.phase is Phase.ABORTING
            event("next_deadline == now after TimerFired (abort_grace 0)")

    # -- invariants after every step ---------------------------------------------------------

    @invariant()
    def concurrency_is_respected(self) -> None:
        assert len(self.driver.running) <= self.config.concurrency
        left = {job.jid for job in self.driver.worker.running}
        if self.exited_at is None:
            assert left == set(self.driver.running)
        else:  # the jobs left running at the exit, every one aborted; later news is ignored
            assert set(self.driver.running) <= left
            assert left <= set(self.driver.aborted)

    @invariant()
    def one_outcome_per_job(self) -> None:
        """Never an ACK and a FAIL, never two different ones; the same one again only on a
        new connection (after its reply was lost)."""
        for jid, sent in self.outcomes.items():
            assert len({(verb, json.dumps(p, sort_keys=True)) for _, verb, p in sent}) == 1, sent
            connections = [connection for connection, _, _ in sent]
            assert len(connections) == len(set(connections)), f"{jid} sent twice on one link"
            if jid in self.expected:
                verb, errtype = self.expected[jid]
                assert sent[0][1] == verb, (jid, sent, self.expected[jid])
                assert errtype is None or sent[0][2]["errtype"] == errtype

    @invariant()
    def every_ack_and_fail_has_its_report(self) -> None:
        """The report of each job says what the worker told the server about it (a job it
        could not even build, FAILed as InvalidJob, has none)."""
        for jid, sent in self.outcomes.items():
            verb, payload = sent[0][1], sent[0][2]
            if verb == "FAIL" and payload["errtype"] == "InvalidJob":
                assert jid not in self.reports
                continue
            report = self.reports.get(jid)
            assert report is not None, f"{verb} {jid} without a report"
            assert report.ran == (jid in self.start_at), report
            if verb == "ACK":
                assert (report.outcome, report.errtype) == (JobOutcome.SUCCEEDED, None)
            else:
                assert report.outcome is not JobOutcome.SUCCEEDED
                assert report.errtype == payload["errtype"]
                aborted = payload["errtype"] in ("ShutdownAbort", "JobTimeLimit")
                assert (report.outcome is JobOutcome.ABORTED) == aborted, report

    def unsettled(self) -> list[str]:
        """Jids owed a report that the server has not received and that is not in flight."""
        peer = self.driver.peer
        found = []
        for jid in self.expected:
            if jid in self.driver.running and jid not in self.driver.aborted:
                continue  # nothing owed yet
            if peer.outcomes.get(jid):
                continue  # received (a lost reply makes it go out again, harmlessly)
            key, connection = self.in_flight.get(jid, ("", None))
            if connection is not None and peer.connection(key) == connection:
                continue  # written on a connection still open: the reply or a drop will tell
            found.append(jid)
        return found

    @invariant()
    def owed_reports_go_out_on_a_free_link(self) -> None:
        """An ACK or FAIL the server lacks waits only while no link could carry it: every
        link is down or awaiting a reply (any link carries any job's report)."""
        if self.exited_at is not None:
            return
        unsettled = self.unsettled()
        if not unsettled:
            return
        free = self.free_links()
        assert not free, f"{unsettled} owed while {free} free"
        if any(jid in self.outcomes for jid in unsettled):
            event("a report taken back from a dropped link waits for a free one")

    @invariant()
    def ready_links_are_counted(self) -> None:
        """``ready_links`` is the number of links READY now; ``reconnects`` never falls."""
        machine = self.driver.worker
        ready = [link for link in machine._links if link.status is LinkStatus.READY]
        assert machine.ready_links == len(ready)
        assert machine.reconnects >= self.reconnects_seen
        self.reconnects_seen = machine.reconnects
        if machine.reconnects:
            event("a link was ready again after it was lost")

    @invariant()
    def slots_are_not_connections(self) -> None:
        """``config.job_links`` links, never more than ``connections``; FETCHes in flight
        never more than the free slots; with more slots than links, one link never waits in
        a FETCH (it carries the reports)."""
        config, driver = self.config, self.driver
        links = [key for key in driver.links if key != HB]
        assert len(links) == min(config.connections, config.concurrency)
        fetching = [key for key in links if driver.peer.holding(key)]
        assert len(fetching) + len(driver.running) <= config.concurrency
        if config.concurrency > len(links) > 1:
            assert len(fetching) < len(links), fetching
        if len(fetching) + len(driver.running) == config.concurrency:
            event("every slot taken or fetching")

    @invariant()
    def every_job_ends_in_an_outcome(self) -> None:
        """Once the worker exits, the server has an ACK or a FAIL for every job it handed
        out, but for those the worker named when the ENDING deadline cut it short."""
        if self.exited_at is None:
            return
        peer = self.driver.peer
        for jid, key in peer.handed_out.items():
            if peer.outcomes.get(jid):
                continue
            if jid in self.driver.running and jid not in self.driver.aborted:
                raise AssertionError(f"{jid} still running, not aborted, after Exit")
            assert jid in self.undelivered, f"{jid} never ACKed or FAILed (FETCHed on {key})"

    @invariant()
    def deadlines_are_never_in_the_past(self) -> None:
        now = self.driver.now
        for deadline in (self.driver.worker.next_deadline, self.driver.heartbeat.next_deadline):
            assert deadline is None or deadline >= now - EPSILON

    @invariant()
    def beats_keep_their_interval(self) -> None:
        peer = self.driver.peer
        answering = peer.is_ready(HB) and not peer.is_muted(HB)
        if self.beating and answering and not self.heartbeat_closing:
            assert self.last_beat is not None
            gap = self.driver.now - self.last_beat
            assert gap <= self.config.heartbeat_interval + EPSILON, gap

    def teardown(self) -> None:
        """Every run ends with a stop: the worker must exit within its bounds, and account
        for every job it received."""
        driver = self.driver
        event(f"phase before the final stop: {driver.worker.phase.name}")
        driver.auto_connect = True
        while driver.connecting:
            driver.connected(min(driver.connecting))
        if self.jids % 2:
            for jid in driver.running:
                if jid not in driver.aborted:
                    driver.finish(jid)  # half the runs drain, half must abort
        driver.stop()
        if self.jids % 3 == 0:
            driver.stop()  # a second signal: abort at once
        # A burst run may be ending already, having drained: then a stop changes nothing.
        assert self.stop_at is not None or driver.worker.phase in (Phase.ENDING, Phase.EXITED)
        for _ in range(200):
            if driver.exit_code is not None and driver.heartbeat_finished:
                break
            if driver.peer.held and self.jids % 4 < 2:
                # A job arrives for a FETCH in flight while the worker stops or aborts.
                self.jids += 1
                driver.peer.push(f"jid-{self.jids:08d}", queue="a")
                driver.release(driver.peer.held[0])
            driver.advance(0.5)
        assert driver.exit_code is not None, "the worker never exited"
        assert self.exited_at is not None
        config = self.config
        if self.stop_at is not None:
            bound = self.stop_at + config.shutdown_timeout + config.abort_grace
            assert self.exited_at <= bound + config.reply_timeout + EPSILON
        elif self.ending_at is not None:
            assert self.exited_at <= self.ending_at + config.reply_timeout + EPSILON
        assert driver.heartbeat_finished, "the heartbeat never ended"
        # Late or repeated inputs after the exit cannot crash the machine or undo its exit.
        late = driver.now + 2 * config.reply_timeout
        driver.worker.handle(TimerFired(), late)
        driver.worker.handle(StopRequested(), late)
        assert driver.worker.phase is Phase.EXITED
        assert driver.worker.next_deadline is None
        self.one_outcome_per_job()
        self.every_job_ends_in_an_outcome()
        for key in driver.links:
            assert not driver.peer.is_open(key), f"{key} left open"
        event(f"exit code {driver.exit_code}")


WorkerMachine.TestCase.settings = settings(max_examples=1000, stateful_step_count=50, deadline=None)
TestWorkerMachine = WorkerMachine.TestCase
