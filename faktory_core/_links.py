"""Links: the connections a machine keeps open, re-opened with backoff when they fail.

:class:`LinkMachine` is the plumbing the worker and heartbeat machines share: it turns
ConnectionMade / DataReceived / ConnectionLost into protocol events on a :class:`Connection`,
drops a link whose awaited reply is late, reconnects after a jittered backoff, and collects the
bytes to write as :class:`Write` actions. The subclasses decide what to send and when.

Connection trouble is an episode, not a line per failure: the first failure while every link
was fine gives one :class:`Notice` at the machine's ``_trouble_level`` (the worker's WARNING,
the heartbeat's DEBUG), with the reason and the next retry; later failures of the same episode
come at DEBUG; once every link that should be up is READY again, one notice at
``_back_level`` (the worker's INFO) says the connection is back and how long it was out. A
link closed on purpose is no trouble.

A link's :class:`LinkStatus` moves only by :data:`LINK_TRANSITIONS`, through
:meth:`Link.move`: a pair missing from the table is a bug, reported as ``LocalProtocolError``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from logging import DEBUG, INFO, WARNING  # level numbers only: the core does no logging
from typing import Any, ClassVar, Final, Generic, TypeAlias, TypeVar

import attrs

from ._config import WorkerConfig
from ._connection import Connection
from ._errors import LocalProtocolError, ProtocolError
from ._resp import NEED_DATA
from .commands import Command, End
from .events import ConnectionClosed, Event, Ready, ServerError, ServerErrorKind
from .machine_io import (
    Action,
    Close,
    Connect,
    ConnectionLost,
    ConnectionMade,
    DataReceived,
    MachineInput,
    MemoryUsage,
    Notice,
    Start,
    Write,
)

__all__ = [
    "LINK_TRANSITIONS",
    "Link",
    "LinkInput",
    "LinkMachine",
    "LinkStatus",
    "Random",
    "next_link_status",
    "reconnect_delay",
]

#: A source of floats in [0, 1): the only randomness a machine uses.
Random: TypeAlias = Callable[[], float]


def reconnect_delay(failures: int, random: Random, *, base: float, cap: float) -> float:
    """Capped exponential backoff with jitter: half fixed, half random, so peers spread out."""
    ceiling = min(cap, base * 2.0 ** min(failures, 32))
    return ceiling / 2 + random() * ceiling / 2


_SHUTTING_DOWN: Final = ServerErrorKind.SHUTTING_DOWN
_OVER_LIMIT: Final = ServerErrorKind.TOO_MANY_CONNECTIONS

#: Failures counted for a link the server refused for its connection limit: the next attempt
#: waits the longest backoff, so links over the limit retry slowly instead of storming.
_LIMIT_FAILURES: Final = 64


def _unserved(error: ServerError, connection: Connection) -> tuple[Command, ...]:
    """What a server that refuses and closes did not carry out: the command it answered with
    ``error`` and those behind it."""
    return ((error.command,) if error.command is not None else ()) + connection.pending


class LinkStatus(enum.Enum):
    """Where one link is in its life."""

    DOWN = "waiting to reconnect"
    CONNECTING = "connecting"
    HANDSHAKING = "handshaking"
    READY = "ready"
    CLOSED = "closed for good"

    __hash__ = object.__hash__


class LinkInput(enum.Enum):
    """What moves a link from one status to the next."""

    CONNECT = "a connection was asked for (Connect)"
    CONNECTED = "the socket is open (ConnectionMade): the handshake begins"
    ACCEPTED = "the server accepted HELLO"
    LOST = "the connection failed or was dropped: it is re-opened after a backoff"
    END = "END was sent: closed for good"
    GIVE_UP = "the machine is closing: closed for good, without END"

    __hash__ = object.__hash__


_S, _I = LinkStatus, LinkInput
#: Each link's life: (status, input) -> the next status.
LINK_TRANSITIONS: Final[dict[tuple[LinkStatus, LinkInput], LinkStatus]] = {
    (_S.DOWN, _I.CONNECT): _S.CONNECTING,
    (_S.CONNECTING, _I.CONNECTED): _S.HANDSHAKING,
    (_S.HANDSHAKING, _I.ACCEPTED): _S.READY,
    **{(status, _I.LOST): _S.DOWN for status in (_S.CONNECTING, _S.HANDSHAKING, _S.READY)},
    # END goes out only on a link free to send; the server closes without a reply.
    (_S.READY, _I.END): _S.CLOSED,
    **{
        (status, _I.GIVE_UP): _S.CLOSED
        for status in (_S.DOWN, _S.CONNECTING, _S.HANDSHAKING, _S.READY)
    },
}
del _S, _I


def next_link_status(status: LinkStatus, link_input: LinkInput) -> LinkStatus:
    """The status after ``link_input`` in ``status``."""
    try:
        return LINK_TRANSITIONS[status, link_input]
    except KeyError:
        raise LocalProtocolError(
            f"a link cannot take '{link_input.value}' while {status.value}"
        ) from None


@attrs.define(eq=False)
class Link:
    """One connection slot of a machine; once made, its status moves only by :meth:`move`."""

    id: int
    _status: LinkStatus = LinkStatus.DOWN
    connection: Connection | None = None
    retry_at: float | None = None
    failures: int = 0
    reply_due: float | None = None

    @property
    def status(self) -> LinkStatus:
        """Where the link is in its life."""
        return self._status

    def move(self, link_input: LinkInput) -> None:
        """Take ``link_input`` per :data:`LINK_TRANSITIONS` (``LocalProtocolError`` if it
        cannot happen now)."""
        self._status = next_link_status(self._status, link_input)

    @property
    def idle(self) -> bool:
        """Ready, with no reply awaited: free to send."""
        connection = self.connection
        return self.status is LinkStatus.READY and connection is not None and not connection.pending


L = TypeVar("L", bound=Link)

#: Statuses in which a link is no trouble: serving, or closed on purpose.
_SETTLED: Final = frozenset({LinkStatus.READY, LinkStatus.CLOSED})


def _retrying(delay: float) -> str:
    if delay <= 0:
        return "retrying at once"
    return f"retrying in {f'{delay:.2f}'.rstrip('0').rstrip('.')} s"


class LinkMachine(Generic[L]):
    """Base of the worker and heartbeat machines: inputs in, actions out, links kept alive."""

    #: Input type -> handler; each subclass extends it.
    _inputs: ClassVar[dict[type[MachineInput], Callable[[Any, Any, float], None]]]
    #: The levels of the notices that start and end a connection trouble episode.
    _trouble_level: ClassVar[int] = WARNING
    _back_level: ClassVar[int] = INFO
    #: An episode that started below WARNING warns once it has lasted this long (None: never);
    #: its end is then said at INFO.
    _warn_after: ClassVar[float | None] = None
    #: What the notice that ends an episode says, before how long the trouble lasted.
    _back: ClassVar[str] = "connected again"

    def __init__(
        self,
        config: WorkerConfig,
        links: list[L],
        *,
        random: Random,
        journal: list[tuple[float, MachineInput]] | None,
    ) -> None:
        self.config = config
        self._links = links
        self._random = random
        self._journal = journal
        self._client = config.client_info()
        self._started = False
        self._closing = False  # once set, dropped links are not re-opened
        self._rss_kb: int | None = None
        self._actions: list[Action] = []
        # Reply deadlines in the order they were set: always now + reply_timeout, so the
        # first is the earliest and next_deadline needs no scan of every link.
        self._reply_dues: dict[int, float] = {}
        self._retry_ats: dict[int, float] = {}
        #: Links the server refused for its connection limit and that have not served since;
        #: its own notice when the first is refused, none while any still is.
        self._over_limit: set[int] = set()
        #: Links neither READY nor CLOSED, kept by _move: an episode ends when none is left.
        self._unsettled = len(links)
        #: When the current connection trouble began (None: no trouble), and its failures.
        self._trouble_since: float | None = None
        self._trouble_failures = 0
        self._trouble_warned = False  # this episode has given its WARNING
        #: Whether the server ever accepted a HELLO of this machine.
        self._accepted_once = False
        self._ready_links = 0
        self._reconnects = 0
        self._served_links: set[int] = set()  # links that were READY once

    @property
    def ready_links(self) -> int:
        """How many of the machine's connections are ready now (the server accepted their
        HELLO, and they are not lost since)."""
        return self._ready_links

    @property
    def reconnects(self) -> int:
        """How many times a connection that had been ready was ready again, after it was
        lost (a restarted server, a broken network)."""
        return self._reconnects

    def handle(self, event: MachineInput, now: float) -> list[Action]:
        """Take one input at time ``now``; return the actions to carry out, in order.

        Once the machine is over (the worker exited, the heartbeat finished), every input it
        takes is ignored: recorded in the journal, so a replay matches, and answered with no
        action. An adapter need not stop feeding it first.
        """
        if self._journal is not None:
            self._journal.append((now, event))
        handler = self._inputs.get(type(event))
        if handler is None:
            raise LocalProtocolError(f"{type(self).__name__} does not take {event!r}")
        if self._over:
            return []
        if not self._started and not isinstance(event, Start):
            raise LocalProtocolError(f"the {type(self).__name__.lower()} has not been started")
        try:
            handler(self, event, now)
        finally:  # actions of a call that raised are not handed to the next one
            actions, self._actions = self._actions, []
        return actions

    def _link_deadline(self) -> float | None:
        """The earliest reply timeout or reconnect time of any link."""
        best = next(iter(self._reply_dues.values()), None)
        if self._retry_ats:
            retry = min(self._retry_ats.values())
            best = retry if best is None or retry < best else best
        return best

    def _set_reply_due(self, link: Link, when: float | None) -> None:
        self._reply_dues.pop(link.id, None)
        if when is not None:
            self._reply_dues[link.id] = when
        link.reply_due = when

    def _set_retry_at(self, link: Link, when: float | None) -> None:
        if when is None:
            self._retry_ats.pop(link.id, None)
        else:
            self._retry_ats[link.id] = when
        link.retry_at = when

    # -- what subclasses decide ---------------------------------------------------------------

    @property
    def _over(self) -> bool:
        """True once the machine is done: it ignores every input from then on."""
        raise NotImplementedError

    def _on_event(self, link: L, event: Event, now: float) -> None:
        raise NotImplementedError

    def _pump(self, link: L, now: float) -> None:
        raise NotImplementedError

    def _settle(self, now: float) -> None:
        """Fire what follows from the links' state; called after every input that moved it."""

    def _on_drop(self, link: L, lost: tuple[Command, ...], now: float) -> None:
        """Take back what the lost connection had in flight (``lost``: unanswered commands)."""

    def _reconnect_when_closing(self) -> bool:
        """Whether a link dropped while closing is re-opened (it has something to deliver)."""
        return False

    def _refused(self, reason: str, now: float, note: str) -> None:
        """The server refused us for a reason retrying cannot change (``reason`` says which,
        ``note`` why it is final)."""

    def _refusal_note(self, link: L, permanent: bool) -> str | None:
        """Whether the failure of ``link`` (``permanent``: retrying cannot help) refuses the
        machine for good: why it is final, else None (the link is re-opened)."""
        return None

    @property
    def _refused_already(self) -> bool:
        """True once the machine was refused for good: its links' failures are expected."""
        return False

    # -- shared inputs ------------------------------------------------------------------------

    def _start(self) -> None:
        if self._started:
            raise LocalProtocolError(f"the {type(self).__name__.lower()} was already started")
        self._started = True
        for link in self._links:
            self._connect(link)

    def _on_connection_made(self, event: ConnectionMade, now: float) -> None:
        link = self._link(event.link)
        if link.status is not LinkStatus.CONNECTING:
            if link.status is LinkStatus.CLOSED:
                self._emit(Close(link=link.id))  # the connect finished after we gave up on it
            return
        self._move(link, LinkInput.CONNECTED)
        config = self.config
        link.connection = Connection(
            self._client, password=config.password, max_reply_size=config.max_reply_size
        )
        self._set_reply_due(link, now + config.reply_timeout)  # the greeting, then HELLO

    def _on_data(self, event: DataReceived, now: float) -> None:
        link = self._link(event.link)
        connection = link.connection
        if connection is None:
            return  # bytes from a connection already given up
        replies = 0
        try:
            connection.receive_data(event.data)
            while link.connection is connection:
                reply = connection.next_event()
                if reply is NEED_DATA:
                    break
                replies += 1
                if isinstance(reply, ConnectionClosed):
                    lost = reply.unanswered
                    self._drop(link, now, "the server closed the connection", lost=lost)
                elif isinstance(reply, ServerError) and reply.kind is _SHUTTING_DOWN:
                    # The server refuses every command once it is stopping, carries out none,
                    # and closes: the refused command and those behind it are still owed.
                    self._drop(
                        link, now, "the server is shutting down", lost=_unserved(reply, connection)
                    )
                elif isinstance(reply, ServerError) and reply.kind is _OVER_LIMIT:
                    # Faktory 1.9 accepted HELLO, then refused the link (it allows 2,000
                    # connections) and closes it, carrying out no command.
                    self._refuse_over_limit(link, reply, connection, now)
                else:
                    if link.status is LinkStatus.READY and not isinstance(reply, ServerError):
                        self._served(link, now)
                    elif isinstance(reply, Ready):
                        self._move(link, LinkInput.ACCEPTED)
                        self._accepted_once = True
                        self._end_trouble(now)
                    self._on_event(link, reply, now)
        except ProtocolError as error:
            self._drop(link, now, f"protocol error: {error}")
        if link.connection is connection:
            self._flush(link)  # the HELLO that answers the greeting
            # A reply is due within reply_timeout of its request (or of the reply before it,
            # for pipelined commands): bytes that complete no reply do not move the deadline,
            # so a server trickling bytes cannot hold a link for ever.
            if not connection.pending and link.status is LinkStatus.READY:
                self._set_reply_due(link, None)
            elif replies:
                self._set_reply_due(link, now + self.config.reply_timeout)
            self._pump(link, now)
        self._settle(now)

    def _served(self, link: Link, now: float) -> None:
        """The server answered a command on ``link``: it takes us, so backoff starts afresh.

        Not at the handshake: a server over its connection limit accepts HELLO, then refuses.
        """
        link.failures = 0
        if self._over_limit:
            self._over_limit.discard(link.id)
            self._end_trouble(now)

    def _refuse_over_limit(
        self, link: L, error: ServerError, connection: Connection, now: float
    ) -> None:
        message = None
        if not self._over_limit:  # the first: say what to do about it
            links = self.config.job_links
            message = (
                f"the server refused a connection: {error.code} {error.message} "
                "(Faktory accepts 2,000 connections); this worker process opens "
                f"{links + 1} ({links} job connections and its heartbeat): lower its "
                "connections option or run fewer worker processes; refused links retry "
                f"every {self.config.reconnect_cap:g} s or so"
            )
        self._over_limit.add(link.id)
        link.failures = max(link.failures, _LIMIT_FAILURES)
        lost = _unserved(error, connection)
        self._drop(link, now, "over the server's connection limit", lost=lost, message=message)

    def _on_connection_lost(self, event: ConnectionLost, now: float) -> None:
        link = self._link(event.link)
        if link.status in (LinkStatus.CONNECTING, LinkStatus.HANDSHAKING, LinkStatus.READY):
            reason = event.reason or "connection lost"
            self._drop(link, now, reason, close=False, permanent=event.permanent)
            self._settle(now)

    def _on_memory(self, event: MemoryUsage, now: float) -> None:
        self._rss_kb = event.rss_kb

    def _expire_links(self, now: float) -> None:
        """Drop links whose reply is late; reconnect those whose backoff is over."""
        for link in self._links:
            if link.reply_due is not None and now >= link.reply_due:
                self._drop(link, now, f"no reply within {self.config.reply_timeout:g} s")
            if link.retry_at is not None and now >= link.retry_at:
                self._set_retry_at(link, None)
                self._connect(link)

    # -- plumbing -----------------------------------------------------------------------------

    def _link(self, link_id: int) -> L:
        if type(link_id) is not int or not 0 <= link_id < len(self._links):
            raise LocalProtocolError(f"no link {link_id!r}")
        return self._links[link_id]

    def _emit(self, action: Action) -> None:
        self._actions.append(action)

    def _connect(self, link: Link) -> None:
        self._move(link, LinkInput.CONNECT)
        self._emit(Connect(link=link.id))

    def _move(self, link: Link, link_input: LinkInput) -> None:
        """Move ``link`` by ``link_input``, keeping count of the links not settled."""
        before = link.status in _SETTLED
        was_ready = link.status is LinkStatus.READY
        link.move(link_input)
        self._unsettled += before - (link.status in _SETTLED)
        ready = link.status is LinkStatus.READY
        self._ready_links += ready - was_ready
        if ready and not was_ready:
            if link.id in self._served_links:
                self._reconnects += 1
            self._served_links.add(link.id)

    def _drop(
        self,
        link: L,
        now: float,
        reason: str,
        *,
        close: bool = True,
        backoff: bool = True,
        lost: tuple[Command, ...] | None = None,
        message: str | None = None,
        permanent: bool = False,
    ) -> None:
        """Give up on a link's connection; it reconnects later unless the machine is closing,
        or is refused for good by this failure (``permanent``: retrying cannot help).

        ``reason`` says why, for the notice. ``message``: the caller's own words for the
        notice instead. ``lost``: the commands that got no reply, when the connection no
        longer knows them.
        """
        refusal = self._refusal_note(link, permanent)
        if close:
            self._emit(Close(link=link.id))
        # The notice is placed here, before what the drop sets off, once its delay is known.
        notice_at = len(self._actions)
        if lost is None:
            lost = link.connection.pending if link.connection is not None else ()
        link.connection = None
        self._set_reply_due(link, None)
        self._on_drop(link, lost, now)
        if self._closing and not self._reconnect_when_closing():
            # Nothing left to deliver: the link is not re-opened, so this is no trouble.
            self._move(link, LinkInput.GIVE_UP)
            closing = f"{message or reason}; not re-opened: closing"  # one per link: DEBUG
            self._actions.insert(notice_at, Notice(message=closing, link=link.id, level=DEBUG))
            return
        self._move(link, LinkInput.LOST)
        delay = 0.0
        if backoff:
            config = self.config
            delay = reconnect_delay(
                link.failures, self._random, base=config.reconnect_base, cap=config.reconnect_cap
            )
            link.failures += 1
        self._set_retry_at(link, now + delay)
        if refusal is not None:
            self._refused(reason, now, refusal)  # which says so: no notice of a retry
            return
        if self._refused_already:  # stopping for good: no trouble to report
            quiet = Notice(message=message or reason, link=link.id, level=DEBUG)
            self._actions.insert(notice_at, quiet)
            return
        text = message or f"{reason}; {_retrying(delay)}"
        self._actions.insert(notice_at, self._trouble(link, text, now))

    def _trouble(self, link: Link, text: str, now: float) -> Notice:
        """The notice of a failure of ``link``: the start of an episode, or one more in it
        (a WARNING once, if the episode outlasts ``_warn_after`` and has not warned yet)."""
        since = self._trouble_since
        if since is None:
            self._trouble_since = now
            self._trouble_failures = 1
            self._trouble_warned = self._trouble_level >= WARNING
            return Notice(message=text, link=link.id, level=self._trouble_level)
        self._trouble_failures += 1
        after = self._warn_after
        if not self._trouble_warned and after is not None and now - since >= after:
            self._trouble_warned = True
            return Notice(
                message=f"{text} (failing for {now - since:.0f} s)", link=link.id, level=WARNING
            )
        return Notice(message=text, link=link.id, level=DEBUG)

    def _end_trouble(self, now: float) -> None:
        """End the episode if every link that should be up is READY (and served, if the
        server refused it for its connection limit)."""
        since = self._trouble_since
        if since is None or self._unsettled or self._over_limit:
            return
        failures = self._trouble_failures
        warned = self._trouble_warned
        self._trouble_since = None
        self._trouble_failures = 0
        self._trouble_warned = False
        attempts = "1 failure" if failures == 1 else f"{failures} failures"
        self._emit(
            Notice(
                message=f"{self._back} after {now - since:.1f} s of trouble ({attempts})",
                level=max(self._back_level, INFO) if warned else self._back_level,
            )
        )

    def _give_up(self, link: Link) -> None:
        """Close a link for good: the machine is closing."""
        if link.status is LinkStatus.CONNECTING:
            self._emit(Close(link=link.id))
        if link.status in (LinkStatus.DOWN, LinkStatus.CONNECTING):
            self._move(link, LinkInput.GIVE_UP)
            self._set_retry_at(link, None)

    def _send(self, link: Link, commands: list[Command], now: float) -> None:
        connection = link.connection
        assert connection is not None
        connection.send(*commands)
        self._set_reply_due(link, now + self.config.reply_timeout)
        self._flush(link)

    def _end(self, link: Link) -> None:
        """Send END (the server closes without a reply) and close the link for good."""
        connection = link.connection
        assert connection is not None
        connection.send(End())
        self._flush(link)
        self._emit(Close(link=link.id))
        self._move(link, LinkInput.END)
        link.connection = None
        self._set_reply_due(link, None)

    def _flush(self, link: Link) -> None:
        connection = link.connection
        if connection is not None:
            data = connection.data_to_send()
            if data:
                self._emit(Write(link=link.id, data=data))
