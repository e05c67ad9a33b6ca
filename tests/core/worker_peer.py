"""A scripted Faktory server, and a fake adapter that runs a worker's machines against it.

:class:`ServerPeer` plays the server's side at the byte level. It reads the command lines a
machine writes (``HELLO``, ``FETCH``, ``ACK``, ``FAIL``, ``BEAT``, ``END``) and returns the reply
bytes a Faktory 1.x server sends (``/work/shared/faktory-protocol.md``): ``+HI`` on connect,
``+OK``, a bulk job or ``$-1`` for FETCH, ``+OK`` or a bulk ``{"state":...}`` for BEAT, nothing
for END. It records every command per link and every ACK and FAIL per jid. Unlike a real
server it never answers a FETCH that finds nothing on its own: the FETCH is *held* until the
test calls :meth:`ServerPeer.release` (Faktory holds it about 2 s), so tests can explore the
states where a FETCH is in flight. A test can also make it forget the worker (``unknown
worker``), stop answering a link (:meth:`ServerPeer.mute`) or lose what a link carries
(:meth:`ServerPeer.deafen`).

:class:`Driver` plays the adapter for a :class:`Worker` and its :class:`Heartbeat`: it feeds
them inputs at a fake time ``now``, carries out their actions (a Write goes to the peer, whose
reply comes back as DataReceived; a Connect is accepted at once unless ``auto_connect`` is
off; PhaseChanged, ServerStateChanged and Exit are passed between the two machines as
PhaseReported, ServerSignal and Finish), records every call, and :meth:`Driver.advance` moves
the clock, firing TimerFired exactly at each ``next_deadline``. No sockets, threads or clocks.

Peer links are named by strings: ``"hb"`` for the heartbeat's link, ``"w0"``, ``"w1"``... for
the worker's links 0, 1...
"""

from __future__ import annotations

import json
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, TypeVar

from faktory_core import Action, Heartbeat, Job, MachineInput, Worker, WorkerConfig
from faktory_core._auth import password_hash
from faktory_core._heartbeat import HEARTBEAT_LINK
from faktory_core.machine_io import (
    AbortJob,
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
    MemoryUsage,
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

__all__ = [
    "GREETING",
    "HB",
    "NULL",
    "OK",
    "Act",
    "Call",
    "Driver",
    "Received",
    "ServerPeer",
    "bulk",
    "job_payload",
    "of",
]

OK: Final = b"+OK\r\n"
NULL: Final = b"$-1\r\n"
GREETING: Final = b'+HI {"v":2}\r\n'
#: The peer's name for the heartbeat's link.
HB: Final = "hb"
WORKER: Final = "worker"
HEARTBEAT: Final = "heartbeat"

A = TypeVar("A", bound=Action)


def bulk(body: bytes) -> bytes:
    """A RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(body), body)


def job_payload(jid: str, jobtype: str = "T", queue: str = "default", **fields: Any) -> bytes:
    """The JSON of a job as FETCH hands it out."""
    job = {"jid": jid, "jobtype": jobtype, "args": [], "queue": queue, **fields}
    return json.dumps(job, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Received:
    """One command line the peer read."""

    link: str
    connection: int  # serial number of the connection it came on, unique in the run
    verb: str
    argument: str

    def json(self) -> dict[str, Any]:
        value = json.loads(self.argument)
        assert isinstance(value, dict)
        return value


@dataclass
class _PeerLink:
    connection: int | None = None  # serial of the open connection, None when closed
    ready: bool = False  # its HELLO was accepted
    muted: bool = False  # commands are read, replies are swallowed
    deaf: bool = False  # what is written is lost on the way: never read, never answered
    unanswered: int = 0  # commands read while muted, or lost while deaf
    buffer: bytes = b""
    held: tuple[str, ...] | None = None  # the queues of a FETCH awaiting a job
    commands: list[Received] = field(default_factory=list)


class ServerPeer:
    """The server's side of every link of one worker process."""

    def __init__(
        self, *, password: str | None = None, salt: str = "5eed", iterations: int = 7
    ) -> None:
        self.state = "running"  # what BEAT replies: running, quiet or terminate
        self.password = password
        self.salt = salt
        self.iterations = iterations
        self.jobs: list[tuple[str, bytes]] = []  # (queue, payload) waiting to be fetched
        self.reserved: dict[str, bytes] = {}  # handed out, neither ACKed nor FAILed yet
        self.outcomes: dict[str, list[Received]] = {}  # every ACK and FAIL, per jid
        self.known_wids: set[str] = set()
        self.handed_out: dict[str, str] = {}  # jid -> the link FETCH returned it on
        self._links: dict[str, _PeerLink] = {}
        self._serial = 0

    # -- set-up by the test --------------------------------------------------------------------

    def push(self, jid: str, jobtype: str = "T", queue: str = "default", **fields: Any) -> None:
        """Queue a job for FETCH."""
        self.jobs.append((queue, job_payload(jid, jobtype, queue, **fields)))

    def push_payload(self, payload: bytes, queue: str = "default") -> None:
        """Queue raw bytes (an invalid job, say) as a FETCH reply."""
        self.jobs.append((queue, payload))

    def forget_worker(self) -> None:
        """Forget every registered wid: the next BEAT gets ``-ERR unknown worker``."""
        self.known_wids.clear()

    def mute(self, link: str) -> None:
        """Read what the current connection of ``link`` sends, but never answer again."""
        self._link(link).muted = True

    def deafen(self, link: str) -> None:
        """Lose whatever the current connection of ``link`` carries from now on, both ways."""
        state = self._link(link)
        state.muted = state.deaf = True

    # -- connections ---------------------------------------------------------------------------

    def open(self, link: str) -> bytes:
        """Accept a connection for ``link``; return the greeting."""
        state = self._link(link)
        assert state.connection is None, f"link {link} opened while open"
        self._serial += 1
        state.connection = self._serial
        state.ready = state.muted = state.deaf = False
        state.unanswered = 0
        state.buffer = b""
        state.held = None
        if self.password is None:
            return GREETING
        return b'+HI {"v":2,"i":%d,"s":"%s"}\r\n' % (self.iterations, self.salt.encode())

    def close(self, link: str) -> None:
        """The connection of ``link`` is gone (either side closed it), and a held FETCH too."""
        state = self._link(link)
        state.connection = None
        state.ready = False
        state.held = None

    def is_open(self, link: str) -> bool:
        return self._link(link).connection is not None

    def is_ready(self, link: str) -> bool:
        """Open, and its HELLO accepted."""
        return self._link(link).ready

    def connection(self, link: str) -> int | None:
        return self._link(link).connection

    def holding(self, link: str) -> bool:
        """A FETCH on ``link`` awaits a job."""
        return self._link(link).held is not None

    def awaited(self, link: str) -> bool:
        """Something written on ``link`` awaits a reply: a held FETCH, or a muted command."""
        state = self._link(link)
        return state.held is not None or state.unanswered > 0

    def is_muted(self, link: str) -> bool:
        return self._link(link).muted

    @property
    def held(self) -> list[str]:
        """The links whose FETCH is held."""
        return sorted(name for name, state in self._links.items() if state.held is not None)

    def release(self, link: str) -> bytes:
        """Answer the FETCH held on ``link``: the first job of its queues, else ``$-1``."""
        state = self._link(link)
        queues = state.held
        assert queues is not None, f"no FETCH held on {link}"
        state.held = None
        if state.muted:
            state.unanswered += 1  # the reply is lost, and the link is handed no job
            return b""
        reply = self._take(queues, link)
        return NULL if reply is None else reply

    # -- reading commands ----------------------------------------------------------------------

    def receive(self, link: str, data: bytes) -> bytes:
        """Read the bytes written on ``link``; return the replies."""
        state = self._link(link)
        assert state.connection is not None, f"write on {link}, which is not open: {data!r}"
        if state.deaf:
            state.unanswered += 1
            return b""
        state.buffer += data
        replies = []
        while b"\r\n" in state.buffer:
            line, state.buffer = state.buffer.split(b"\r\n", 1)
            verb, _, argument = line.decode().partition(" ")
            command = Received(link, state.connection, verb, argument)
            state.commands.append(command)
            if state.muted and verb != "END":
                state.unanswered += 1
            replies.append(self._answer(state, command))
            if verb == "END":
                assert not state.buffer, f"bytes written after END on {link}"
                self.close(link)  # the server closes without a reply
        return b"" if state.muted else b"".join(replies)

    def commands(self, link: str, verb: str | None = None) -> list[Received]:
        """Every command read on ``link`` (all its connections), or those of one verb."""
        return [c for c in self._link(link).commands if verb is None or c.verb == verb]

    def acks(self, jid: str) -> list[Received]:
        return [c for c in self.outcomes.get(jid, ()) if c.verb == "ACK"]

    def fails(self, jid: str) -> list[Received]:
        return [c for c in self.outcomes.get(jid, ()) if c.verb == "FAIL"]

    # -- internals -----------------------------------------------------------------------------

    def _link(self, link: str) -> _PeerLink:
        return self._links.setdefault(link, _PeerLink())

    def _answer(self, state: _PeerLink, command: Received) -> bytes:
        verb = command.verb
        if not state.ready:
            return self._hello(state, command)
        assert state.held is None, f"{verb} written behind a FETCH awaiting its reply"
        if verb == "FETCH":
            queues = tuple(command.argument.split(" "))
            assert all(queues), f"malformed FETCH: {command.argument!r}"
            reply = None if state.muted else self._take(queues, command.link)
            if reply is None:
                state.held = queues
                return b""
            return reply
        if verb in ("ACK", "FAIL"):
            jid = command.json()["jid"]
            self.outcomes.setdefault(jid, []).append(command)
            if self.reserved.pop(jid, None) is None and verb == "FAIL":
                return f"-ERR Job not found {jid}\r\n".encode()
            return OK  # an ACK of a jid not reserved gets +OK too
        if verb == "BEAT":
            wid = command.json()["wid"]
            if wid not in self.known_wids:
                return f"-ERR unknown worker {wid}\r\n".encode()
            if self.state == "running":
                return OK
            return bulk(json.dumps({"state": self.state}, separators=(",", ":")).encode())
        if verb == "END":
            return b""
        return f"-ERR unknown command {verb}\r\n".encode()

    def _hello(self, state: _PeerLink, command: Received) -> bytes:
        assert command.verb == "HELLO", f"{command.verb} before HELLO"
        hello = command.json()
        assert hello.get("v") == 2, hello
        if self.password is not None:
            expected = password_hash(self.password, self.salt, self.iterations)
            if hello.get("pwdhash") != expected:
                return b"-ERR Invalid password\r\n"
        if hello.get("wid"):
            self.known_wids.add(hello["wid"])
        state.ready = True
        return OK

    def _take(self, queues: tuple[str, ...], link: str) -> bytes | None:
        for name in queues:  # strict priority by the order given, FIFO within a queue
            for index, (queue, payload) in enumerate(self.jobs):
                if queue == name:
                    del self.jobs[index]
                    try:
                        jid = json.loads(payload).get("jid")
                    except (ValueError, AttributeError):
                        jid = None
                    if isinstance(jid, str):
                        self.reserved[jid] = payload
                        self.handed_out[jid] = link
                    return bulk(payload)
        return None


# -- the fake adapter ----------------------------------------------------------------------------


class Act(NamedTuple):
    """An action and the machine (``"worker"`` or ``"heartbeat"``) that asked for it."""

    machine: str
    action: Action


def of(acts: list[Act], kind: type[A], machine: str | None = None) -> list[A]:
    """The actions of one type (and machine) among ``acts``, in order."""
    found: list[Any] = [
        act.action
        for act in acts
        if isinstance(act.action, kind) and (machine is None or act.machine == machine)
    ]
    return found


@dataclass(frozen=True)
class Call:
    """One ``handle`` call of one machine: the time, the input and the actions returned."""

    machine: str
    now: float
    input: MachineInput
    actions: list[Action]


class Driver:
    """Runs a Worker and its Heartbeat against a ServerPeer at a fake time, as an adapter."""

    def __init__(
        self,
        config: WorkerConfig,
        *,
        seed: int = 0,
        now: float = 0.0,
        peer: ServerPeer | None = None,
        auto_connect: bool = True,
        fetch_wait: float | None = None,
        journal: list[tuple[float, MachineInput]] | None = None,
    ) -> None:
        self.config = config
        self.seed = seed
        self.worker = Worker(
            config, random=random.Random(seed).random, journal=journal, reports=True
        )
        self.heartbeat = Heartbeat(config, random=random.Random(seed + 1).random)
        self.peer = peer if peer is not None else ServerPeer()
        self.now = now
        #: When off, a Connect waits for :meth:`connected` or :meth:`refused`.
        self.auto_connect = auto_connect
        #: When set, :meth:`advance` answers a FETCH held this long, as Faktory does after 2 s.
        self.fetch_wait = fetch_wait
        self.calls: list[Call] = []
        self.started: dict[str, Job] = {}  # every job started, by jid
        self.finished: set[str] = set()
        self.aborted: dict[str, AbortJob] = {}
        self.exit_code: int | None = None
        self.heartbeat_finished = False
        self.connecting: set[str] = set()  # Connects not answered yet (auto_connect off)
        self.held_since: dict[str, float] = {}
        #: Called with every Call as soon as it returns, before its actions are carried out.
        self.observers: list[Callable[[Call], None]] = []
        self._inbox: deque[tuple[str, MachineInput]] = deque()

    # -- names ---------------------------------------------------------------------------------

    @staticmethod
    def key(machine: str, link: int) -> str:
        """The peer's name of a machine's link."""
        return HB if machine == HEARTBEAT else f"w{link}"

    @staticmethod
    def route(key: str) -> tuple[str, int]:
        """The machine and link id behind a peer link name."""
        return (HEARTBEAT, HEARTBEAT_LINK) if key == HB else (WORKER, int(key[1:]))

    @property
    def links(self) -> list[str]:
        """Every peer link name, the heartbeat's first."""
        return [HB] + [f"w{index}" for index in range(self.config.job_links)]

    # -- inputs --------------------------------------------------------------------------------

    def to_worker(self, event: MachineInput) -> list[Act]:
        return self._run(WORKER, event)

    def to_heartbeat(self, event: MachineInput) -> list[Act]:
        return self._run(HEARTBEAT, event)

    def start(self) -> list[Act]:
        self._inbox.append((WORKER, Start()))
        return self._run(HEARTBEAT, Start())

    def finish(self, jid: str, error: JobError | None = None) -> list[Act]:
        self.finished.add(jid)
        return self.to_worker(JobFinished(jid=jid, error=error))

    def stop(self, source: str = "api") -> list[Act]:
        return self.to_worker(StopRequested(source=source))

    def quiet(self, source: str = "api") -> list[Act]:
        return self.to_worker(QuietRequested(source=source))

    def memory(self, rss_kb: int) -> list[Act]:
        return self.to_heartbeat(MemoryUsage(rss_kb=rss_kb))

    def data(self, key: str, data: bytes) -> list[Act]:
        """Bytes from the server on ``key``, past the peer (for replies it never sends)."""
        machine, link = self.route(key)
        return self._run(machine, DataReceived(link=link, data=data))

    def release(self, key: str) -> list[Act]:
        """Let the peer answer the FETCH it holds on ``key``."""
        self.held_since.pop(key, None)
        reply = self.peer.release(key)
        return self.data(key, reply) if reply else []

    def lose(self, key: str, reason: str = "reset by peer") -> list[Act]:
        """The connection of ``key`` (or its pending connect) failed."""
        self.peer.close(key)
        self.connecting.discard(key)
        self.held_since.pop(key, None)
        machine, link = self.route(key)
        return self._run(machine, ConnectionLost(link=link, reason=reason))

    def eof(self, key: str) -> list[Act]:
        """The server closed the connection of ``key``."""
        self.peer.close(key)
        self.held_since.pop(key, None)
        return self.data(key, b"")

    def connected(self, key: str) -> list[Act]:
        """A pending connect succeeds (auto_connect off)."""
        self.connecting.remove(key)
        machine, link = self.route(key)
        greeting = self.peer.open(key)
        self._inbox.append((machine, ConnectionMade(link=link)))
        return self._run(machine, DataReceived(link=link, data=greeting))

    def refused(self, key: str, reason: str = "connection refused") -> list[Act]:
        """A pending connect fails (auto_connect off)."""
        self.connecting.remove(key)
        machine, link = self.route(key)
        return self._run(machine, ConnectionLost(link=link, reason=reason))

    # -- time ----------------------------------------------------------------------------------

    @property
    def next_deadline(self) -> float | None:
        """The earliest deadline of either machine."""
        deadlines = [self.worker.next_deadline, self.heartbeat.next_deadline]
        return min((d for d in deadlines if d is not None), default=None)

    def advance(self, seconds: float) -> list[Act]:
        """Move the clock ``seconds`` on, firing every deadline passed exactly when it falls."""
        return self.run_until(self.now + seconds)

    def run_until(self, target: float) -> list[Act]:
        acts: list[Act] = []
        for _ in range(10_000):
            deadline = self.next_deadline
            release = None
            if self.fetch_wait is not None and self.held_since:
                release = min(
                    (since + self.fetch_wait, key) for key, since in self.held_since.items()
                )
            if (
                release is not None
                and release[0] <= target
                and (deadline is None or release[0] < deadline)
            ):
                self.now = max(self.now, release[0])
                acts += self.release(release[1])
            elif deadline is not None and deadline <= target:
                self.now = max(self.now, deadline)
                acts += self.fire()
            else:
                self.now = max(self.now, target)
                return acts
        raise AssertionError("the timers keep firing while time stands still")

    def fire(self) -> list[Act]:
        """TimerFired, now, to each machine whose deadline has come."""
        acts: list[Act] = []
        deadline = self.worker.next_deadline
        if deadline is not None and deadline <= self.now:
            acts += self.to_worker(TimerFired())
        deadline = self.heartbeat.next_deadline
        if deadline is not None and deadline <= self.now:
            acts += self.to_heartbeat(TimerFired())
        return acts

    # -- what happened -------------------------------------------------------------------------

    @property
    def running(self) -> list[str]:
        """Jids started and not reported finished, in start order."""
        return [jid for jid in self.started if jid not in self.finished]

    def actions(self, kind: type[A], machine: str | None = None) -> list[A]:
        """Every action of one type so far."""
        return of(
            [Act(call.machine, action) for call in self.calls for action in call.actions],
            kind,
            machine,
        )

    def timed(self, kind: type[A], machine: str | None = None) -> list[tuple[float, A]]:
        """Every action of one type so far, with the time it was asked for."""
        found: list[tuple[float, Any]] = [
            (call.now, action)
            for call in self.calls
            for action in call.actions
            if isinstance(action, kind) and (machine is None or call.machine == machine)
        ]
        return found

    def lines(self, key: str, verb: str | None = None) -> list[tuple[float, str, str]]:
        """Every command written on ``key``: (time, verb, argument)."""
        machine, link = self.route(key)
        found = []
        for call in self.calls:
            for action in call.actions:
                if call.machine == machine and isinstance(action, Write) and action.link == link:
                    for line in action.data.split(b"\r\n")[:-1]:
                        head, _, argument = line.decode().partition(" ")
                        if verb is None or head == verb:
                            found.append((call.now, head, argument))
        return found

    # -- internals -----------------------------------------------------------------------------

    def _run(self, machine: str, event: MachineInput) -> list[Act]:
        self._inbox.append((machine, event))
        acts: list[Act] = []
        while self._inbox:
            target, queued = self._inbox.popleft()
            acts += self._call(target, queued)
        return acts

    def _call(self, machine: str, event: MachineInput) -> list[Act]:
        handler = self.worker if machine == WORKER else self.heartbeat
        actions = handler.handle(event, self.now)
        call = Call(machine, self.now, event, actions)
        self.calls.append(call)
        for observer in self.observers:
            observer(call)
        for action in actions:
            self._carry_out(machine, action)
        return [Act(machine, action) for action in actions]

    def _carry_out(self, machine: str, action: Action) -> None:
        if isinstance(action, Connect):
            key = self.key(machine, action.link)
            if self.auto_connect:
                greeting = self.peer.open(key)
                self._inbox.append((machine, ConnectionMade(link=action.link)))
                self._inbox.append((machine, DataReceived(link=action.link, data=greeting)))
            else:
                self.connecting.add(key)
        elif isinstance(action, Write):
            key = self.key(machine, action.link)
            reply = self.peer.receive(key, action.data)
            if self.peer.holding(key):
                self.held_since.setdefault(key, self.now)
            if reply:
                self._inbox.append((machine, DataReceived(link=action.link, data=reply)))
        elif isinstance(action, Close):
            key = self.key(machine, action.link)
            self.peer.close(key)
            self.connecting.discard(key)
            self.held_since.pop(key, None)
            # Later input for the link is ignored: drop what is still queued for it.
            self._inbox = deque(
                (target, event)
                for target, event in self._inbox
                if target != machine or getattr(event, "link", None) != action.link
            )
        elif isinstance(action, StartJob):
            self.started[action.job.jid] = action.job
        elif isinstance(action, AbortJob):
            self.aborted[action.jid] = action
        elif isinstance(action, PhaseChanged):
            self._inbox.append((HEARTBEAT, PhaseReported(phase=action.phase)))
        elif isinstance(action, ServerStateChanged):
            self._inbox.append((WORKER, ServerSignal(state=action.state)))
        elif isinstance(action, Exit):
            self.exit_code = action.code
            self._inbox.append((HEARTBEAT, Finish()))
        elif isinstance(action, Finished):
            self.heartbeat_finished = True
