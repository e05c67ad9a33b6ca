"""The asyncio adapter's Client.

One Client for the three runtimes: ``_client_async.py`` is written by hand, and
``scripts/unasync.py`` generates the blocking ones from it (``_client_sync.py`` for threads,
``_client_gevent.py`` for gevent), each over its runtime's network backend (``_net_*.py``).

How calls share connections. Faktory answers a connection's commands in order, so calls need
not wait for a connection of their own: a call takes an idle connection, else opens one while
there are fewer than ``pool_size``, else joins the least busy one. There it queues behind the
commands in flight, and when their replies are in, everything queued goes out in one write (a
group commit: one system call for many calls, and no command is written while another's reply
is still coming, as the core's table requires). One of the calls waiting on a connection reads
it for all, hands each reply to its owner in turn, and passes the reading on when its own
reply is in. A command the server holds back (FETCH) goes out last in its write, and nothing
joins its connection until its reply is in.

A call whose caller goes away (a cancelled task, a killed greenlet) leaves its reply to be read
and dropped. A call's timeout runs from the call: queued past it, the call gives up unwritten;
a reply later than it closes the connection, the other calls written on it failing with
:class:`OutcomeUnknownError` and those not yet written going out on another connection, as
they do when a connection breaks.
"""

from __future__ import annotations

import contextlib
import ssl
from collections import deque
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import faktory_core as core
from faktory_core import ArgumentTypeError, Job, commands, events

from ._common import (
    BulkPushProgress,
    ClientClosedError,
    FaktoryConnectionError,
    FaktoryError,
    FaktoryProtocolError,
    FaktoryTimeoutError,
    InvalidJobError,
    ServerReplyError,
    broke_during,
    describe_error,
    expect,
    handshake_closed,
    handshake_failure,
    logger,
    new_jid,
    outcome_unknown,
    resolve_url,
    tls_context,
    unusable,
)
from ._net_asyncio import Lock, LoopBinding, Stream, Waker, clock, connect
from ._observe import ClientObserver, PushOutcome
from ._options import check_callable, check_ssl_context

__all__ = ["Client"]

_log: Final = logger.getChild("client")
_O = TypeVar("_O", bound=ClientObserver)

#: How many connections a call tries when each breaks before its command is written (so it
#: surely was not carried out, and may go on another).
SEND_ATTEMPTS: Final = 3

# A call's life. QUEUED: waiting for its connection to open, or for the replies in flight on
# it. SENT: written, its reply awaited. ABANDONED: written, but its caller is gone: the reply
# is read and dropped. DONE: answered or failed. UNSENT: its connection broke before it was
# written: it may go on another.
_QUEUED: Final = 0
_SENT: Final = 1
_ABANDONED: Final = 2
_DONE: Final = 3
_UNSENT: Final = 4


class _Unsent(Exception):
    """A call's connection broke before its command was written."""


class Client:
    """A producer and admin client: push jobs, inspect and manage the server.

    Connections are opened on demand, up to ``pool_size``, and shared: beyond that, calls made
    at the same time queue on them and go out together (Faktory answers a connection's
    commands in order), so a few connections serve many concurrent callers. :meth:`fetch`,
    which the server holds up to ~2 s, has its connection to itself meanwhile.
    ``connect_timeout`` bounds opening one: TCP connect, TLS handshake and Faktory's
    HI/HELLO/OK together. ``timeout`` bounds each call, from the call (its wait behind others
    included) to the last byte of its reply (:meth:`fetch` waits at least
    ``faktory_core.commands.FETCH_WAIT_FLOOR`` s). Past either bound, FaktoryTimeoutError is
    raised, and the connection closed if the command was written. A pooled connection that
    the server closed, or wrote to unasked, is replaced before use.

    Whatever the server or the network does raises a :class:`FaktoryError`:
    :class:`ServerReplyError` for an ``-ERR`` reply, :class:`FaktoryConnectionError` (a
    ConnectionError) when the server cannot be reached or the connection breaks, its subclass
    :class:`OutcomeUnknownError` when it broke after the command was sent (the server may or
    may not have carried it out), :class:`FaktoryTimeoutError` (a TimeoutError),
    :class:`FaktoryProtocolError`. A wrong argument raises TypeError or ValueError, a closed
    Client :class:`ClientClosedError`.
    It belongs to the event loop it is first used on, until that loop closes: elsewhere,
    :class:`WrongEventLoopError`.
    Use it as ``async with Client() as client``.
    """

    def __init__(
        self,
        url: str | core.ServerURL | None = None,
        *,
        pool_size: int = 4,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
        jid_factory: Callable[[], str] = new_jid,
    ) -> None:
        self._url = resolve_url(url)
        check_ssl_context(self._url, ssl_context)
        check_callable("jid_factory", jid_factory, "a function returning a new jid")
        config = core.ClientConfig(
            pool_size=pool_size, timeout=timeout, connect_timeout=connect_timeout
        )
        self._pool_size = config.pool_size
        self._timeout = config.timeout
        self._connect_timeout = config.connect_timeout
        self._ssl_context = ssl_context
        if self._url.tls and ssl_context is None:
            self._ssl_context = tls_context()
        self._jid_factory = jid_factory
        self._lock = Lock()  # guards the connections' shared state
        self._links: list[_Link] = []  # open or opening, fit for new calls
        self._loop_binding = LoopBinding()
        self._closed = False
        self._observers: tuple[ClientObserver, ...] = ()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Send END on every connection and close them (a busy one once its calls are
        answered); closing twice is harmless."""
        self._claim_loop()
        with self._lock:
            self._closed = True
            links, self._links = self._links, []
            idle = [link for link in links if link.retire()]
        deadline = clock() + self._timeout
        for link in idle:
            link.end(deadline)

    def observe(self, observer: _O) -> _O:
        """Tell ``observer`` (a :class:`~faktory_adapters.ClientObserver`) of every job
        pushed from now on, before and after; return it."""
        if not isinstance(observer, ClientObserver):
            raise ArgumentTypeError(
                f"observe(observer): observer must be a faktory_adapters.ClientObserver, got "
                f"{type(observer).__name__}"
            )
        self._observers = (*self._observers, observer)
        return observer

    # -- jobs -----------------------------------------------------------------------------

    def job(self, jobtype: str, args: list[Any] | tuple[Any, ...] = (), **options: Any) -> Job:
        """A new job with a fresh jid; ``args`` a list or tuple, ``options`` Job fields (queue,
        retry, at, ...)."""
        return Job.create(jobtype, args, jid_factory=self._jid_factory, **options)

    async def push(
        self,
        job: Job | str,
        args: list[Any] | tuple[Any, ...] = (),
        **options: Any,
    ) -> str:
        """Push a job (a :class:`Job`, or a job type with its args and options); return jid.

        :class:`OutcomeUnknownError` when the connection broke after the job was sent: it may
        or may not have been pushed.
        """
        if isinstance(job, str):
            job = Job.create(job, args, jid_factory=self._jid_factory, **options)
        elif not isinstance(job, Job):
            raise ArgumentTypeError(
                f"push(job): job must be a faktory_core.Job or a job type (a str), got "
                f"{type(job).__name__}"
            )
        elif args or options:
            raise ArgumentTypeError("push(job) takes no args or options: they are the Job's fields")
        observers = self._observers
        if observers:
            job = _pushing(observers, job)
        call = _Call(commands.Push(job=job), self._timeout)
        try:
            event = await self._run(call)
            if type(event) is not events.OK:
                expect(event, events.OK)
        except BaseException as error:
            if observers:
                outcome = _push_outcome(error, written=call.written)
                _pushed(observers, (job,), outcome, describe_error(error))
            raise
        if observers:
            _pushed(observers, (job,), PushOutcome.PUSHED, None)
        return job.jid

    async def push_bulk(self, jobs: Iterable[Job]) -> dict[str, str]:
        """Push many jobs (server 1.6+); return {jid: error} of those the server refused.

        They go in commands of ``faktory_core.commands.MAX_BULK_JOBS``, one after another;
        every job is checked before the first is sent. When one command fails, the error
        raised has ``bulk``, a :class:`BulkPushProgress`: the jobs pushed, refused, that may
        or may not have been pushed, and not sent.
        """
        pushes = commands.bulk_pushes(jobs)
        observers = self._observers
        if observers:  # each job as its observers would push it (all checked first)
            pushes = commands.bulk_pushes(
                _pushing(observers, job) for push in pushes for job in push.jobs
            )
        refused: dict[str, str] = {}
        for index, command in enumerate(pushes):
            call = _Call(command, self._timeout)
            try:
                event = expect(await self._run(call), events.BulkPushed)
            except BaseException as error:
                if isinstance(error, FaktoryError):
                    _bulk_failed(error, pushes, index, refused, written=call.written)
                if observers:
                    _bulk_pushes_ended(observers, pushes[index:], error, written=call.written)
                raise
            refused.update(event.errors)
            if observers:
                for job in command.jobs:
                    error_text = event.errors.get(job.jid)
                    outcome = PushOutcome.PUSHED if error_text is None else PushOutcome.REFUSED
                    _pushed(observers, (job,), outcome, error_text)
        return refused

    async def fetch(self, *queues: str) -> Job | None:
        """Fetch one job (blocks up to ~2 s on the server); None when there is none.

        It waits at least ``faktory_core.commands.FETCH_WAIT_FLOOR`` s whatever ``timeout``
        says: giving up sooner would leave the job the server hands out reserved for nobody.
        """
        fetch = commands.Fetch(queues=queues)
        event = await self.request(fetch, timeout=fetch.reply_timeout(self._timeout))
        if isinstance(event, events.InvalidJobFetched):
            raise InvalidJobError(event.reason, event.jid, event.payload)
        return expect(event, events.Fetched).job

    async def ack(self, jid: str) -> None:
        """Acknowledge a fetched job."""
        await self._ok(commands.Ack(jid=jid))

    async def fail(
        self,
        jid: str,
        errtype: str,
        message: str,
        backtrace: Iterable[str] | str = (),
    ) -> None:
        """Report a fetched job as failed; ``backtrace`` its lines (a str: split into lines)."""
        command = commands.Fail(jid=jid, errtype=errtype, message=message, backtrace=backtrace)
        await self._ok(command)

    # -- administration -----------------------------------------------------------------------

    async def info(self) -> dict[str, Any]:
        """The server's statistics (INFO)."""
        event = expect(await self.request(commands.Info()), events.InfoReply)
        return event.info

    async def flush(self) -> None:
        """Delete every job, queue and counter on the server."""
        await self._ok(commands.Flush())

    async def mutate(
        self,
        operation: str | commands.MutateOperation,
        target: str | commands.MutateTarget,
        *,
        jids: Iterable[str] = (),
        pattern: str | None = None,
        jobtype: str | None = None,
    ) -> None:
        """MUTATE the retries, scheduled or dead set (clear, kill, discard, requeue); ``jids``
        one jid or several."""
        await self._ok(
            commands.Mutate(
                operation=operation,
                target=target,
                jids=jids,
                pattern=pattern,
                jobtype=jobtype,
            )
        )

    async def pause_queues(self, *queues: str) -> None:
        """FETCH skips these queues until resumed (``"*"`` for all)."""
        await self._ok(commands.QueuePause(queues=queues))

    async def resume_queues(self, *queues: str) -> None:
        """Undo :meth:`pause_queues`."""
        await self._ok(commands.QueueResume(queues=queues))

    async def remove_queues(self, *queues: str) -> None:
        """Delete these queues and every job waiting in them."""
        await self._ok(commands.QueueRemove(queues=queues))

    async def queue_latency(self, *queues: str) -> dict[str, float]:
        """Seconds the oldest job of each queue has waited (server 1.9.2+)."""
        reply = await self.request(commands.QueueLatency(queues=queues))
        return expect(reply, events.LatencyReply).latencies

    # -- Enterprise -----------------------------------------------------------------------

    async def batch_new(
        self,
        *,
        success: Job | None = None,
        complete: Job | None = None,
        description: str | None = None,
        parent_bid: str | None = None,
    ) -> str:
        """Open a batch (Enterprise); return its id."""
        command = commands.BatchNew(
            success=success, complete=complete, description=description, parent_bid=parent_bid
        )
        event = expect(await self.request(command), events.BatchIdReply)
        return event.bid

    async def batch_open(self, bid: str) -> str:
        """Reopen a batch to add jobs (Enterprise)."""
        event = expect(await self.request(commands.BatchOpen(bid=bid)), events.BatchIdReply)
        return event.bid

    async def batch_commit(self, bid: str) -> None:
        """Every job of the batch is pushed (Enterprise)."""
        await self._ok(commands.BatchCommit(bid=bid))

    async def batch_status(self, bid: str) -> dict[str, Any]:
        """Counts and callback states of a batch (Enterprise)."""
        event = expect(await self.request(commands.BatchStatus(bid=bid)), events.StatusReply)
        return event.status

    async def track_get(self, jid: str) -> dict[str, Any]:
        """The progress of a tracked job (Enterprise)."""
        event = expect(await self.request(commands.TrackGet(jid=jid)), events.StatusReply)
        return event.status

    async def track_set(
        self,
        jid: str,
        *,
        percent: int | None = None,
        description: str | None = None,
        reserve_until: Any = None,
    ) -> None:
        """Report a job's progress; ``reserve_until`` extends its reservation (Enterprise)."""
        await self._ok(
            commands.TrackSet(
                jid=jid, percent=percent, description=description, reserve_until=reserve_until
            )
        )

    # -- plumbing -----------------------------------------------------------------------------

    async def request(self, command: core.Command, *, timeout: float | None = None) -> core.Event:
        """Send one command and return its reply event; ServerReplyError on ``-ERR``.

        FaktoryTimeoutError when the reply is not complete ``timeout`` s (the Client's by
        default) after the call.
        """
        if not isinstance(command, commands.Command):
            raise ArgumentTypeError(
                "request(command): command must be a faktory_core.commands command such as "
                f"commands.Info(), got {type(command).__name__}"
            )
        if isinstance(command, (commands.Hello, commands.End)):
            raise ArgumentTypeError(
                f"request(command): the Client sends {command.verb} itself, when it opens or "
                "closes a connection"
            )
        limit = self._timeout if timeout is None else core.ClientConfig(timeout=timeout).timeout
        event = await self._run(_Call(command, limit))
        if isinstance(event, events.ServerError):
            raise ServerReplyError(event.code, event.message)
        return event

    async def _ok(self, command: core.Command) -> None:
        expect(await self._run(_Call(command, self._timeout)), events.OK)

    async def _run(self, call: _Call) -> core.Event:
        """Send ``call``'s command on a pooled connection and return its reply event; again on
        another when its connection breaks before it is written."""
        attempts = 0
        while True:
            if self._closed:
                self._check_open()
            if self._loop_binding.claim():
                self._drop_links()
            link, data = self._submit(call)
            if data is None:
                await self._open(link, call, retry=attempts > 0 or call.retried)
            elif data:
                assert link.stream is not None  # ready
                # It sat idle: if the server closed it or wrote to it meanwhile, a command
                # written now would take that for its reply. (Checked outside the lock: it is
                # a system call, during which other threads run.)
                if link.stream.readable():
                    link.unfit(call)
                    continue
                try:
                    link.write(data, call.deadline)
                except BaseException:  # the caller is gone (a killed greenlet)
                    link.gone(call)
                    raise
            try:
                return await link.wait(call)
            except _Unsent:
                if clock() >= call.deadline:
                    raise call.timed_out() from None
                if not link.failed_opening:
                    attempts += 1
                if attempts >= SEND_ATTEMPTS:
                    raise FaktoryConnectionError(
                        f"the connection to {self._url} broke {attempts} times before "
                        f"{call.command.verb} could be sent: it was not sent"
                    ) from None
                call.state = _QUEUED
                call.retried = True

    def _submit(self, call: _Call) -> tuple[_Link, bytes | None]:
        """Put ``call`` on a connection: (the connection, then the bytes to write now when it
        was idle, b"" when the call waits its turn there, None when the caller must open
        it)."""
        with self._lock:
            if self._closed:  # again: another thread may have closed it since
                self._check_open()
            link = self._idle()
            if link is not None:
                return link, link.send_alone(call)
            link = self._least_busy()
            if link is None:
                link = _Link(self)
                self._links.append(link)
                link.reader = call  # the opener reads first
                link.queue(call)
                return link, None
            link.queue(call)
            return link, b""

    def _idle(self) -> _Link | None:
        """(Lock held.) A connection with nothing on it. (Bytes nobody asked for that came
        with the last reply retired it already; any that came later, its stream shows.)"""
        for link in self._links:
            if link.ready and not link.inflight and not link.queued:
                return link
        return None

    def _least_busy(self) -> _Link | None:
        """(Lock held; none is idle.) None when one more connection may be opened, else the
        least busy one (one holding a blocking command only when all do).

        A call opens a connection rather than queue on a busy one while it may: two callers
        queued on one connection take turns, a round trip each (measured with 2 and 4
        concurrent producers: ~1.5x faster on connections of their own, in all three
        runtimes); with 16 producers, 4 connections or 1 did about as well.
        """
        links = self._links
        if len(links) < self._pool_size:
            return None
        best: _Link | None = None
        for link in links:
            if not link.blocking and (best is None or link.load() < best.load()):
                best = link
        return best if best is not None else min(links, key=_Link.load)

    def _forget(self, link: _Link) -> None:
        """(Lock held.) ``link`` takes no new calls."""
        with contextlib.suppress(ValueError):
            self._links.remove(link)

    async def _open(self, link: _Link, call: _Call, *, retry: bool) -> None:
        """Connect ``link`` for ``call``, its first call (the others queued on it go too).

        ``connect_timeout`` bounds it, and the calls' timeouts start afresh once it is open;
        but a call trying again (its connection broke before it was written) has waited its
        turn already: its own deadline bounds the connect too.
        """
        url, limit = self._url, self._connect_timeout
        deadline = clock() + limit
        late = retry and call.deadline < deadline
        if late:
            deadline = call.deadline
        try:
            try:
                stream = await connect(url, self._ssl_context, deadline)
                link.stream = stream
                event = await link.handshake(deadline)
            except TimeoutError:
                if late:
                    raise call.timed_out() from None
                raise FaktoryTimeoutError(
                    f"connecting to {url} took more than {limit:g} s (connect_timeout)"
                ) from None
            except (OSError, core.RemoteProtocolError) as error:
                raise unusable(error, url, timeout=limit) from error
            if not isinstance(event, events.Ready):
                if isinstance(event, events.ConnectionClosed):
                    raise handshake_closed(url)
                raise handshake_failure(event, url)
        except BaseException:  # a timeout or a cancellation too: never leak the socket
            with self._lock:
                link.failed_opening = True
                link.reader = None
                link.break_(_unfit)  # the calls queued on it try again
                call.state = _DONE  # this one raises
            raise
        with self._lock:
            link.ready = True
            now = clock()
            for queued in link.queued:  # the wait for the connect does not count
                queued.deadline = max(queued.deadline, now + queued.timeout)
            data = link.next_batch() if link.queued and not link.broken else None
            if data:
                deadline = min(other.deadline for other in link.inflight)
        if data:
            try:
                link.write(data, deadline)
            except BaseException:  # the caller is gone (a killed greenlet)
                link.gone(call)
                raise

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError(
                "the Client is closed (by close(), or at the end of its with block): "
                "make a new Client"
            )

    def _claim_loop(self) -> None:
        """Check the event loop this call runs on (none in the blocking runtimes): when the
        connections belong to a loop that has closed, they are dead, and a new pool starts
        on this loop."""
        if self._loop_binding.claim():
            self._drop_links()

    def _drop_links(self) -> None:
        with self._lock:
            dead, self._links = self._links, []
        for link in dead:
            link.abandon()


class _Call:
    """One command on its way: its place on a connection, then its outcome."""

    __slots__ = (
        "command",
        "deadline",
        "error",
        "event",
        "retried",
        "state",
        "timeout",
        "waker",
        "written",
    )

    def __init__(self, command: core.Command, timeout: float) -> None:
        self.command = command
        self.timeout = timeout
        self.deadline = clock() + timeout  # its wait behind other calls counts
        self.state = _QUEUED
        self.event: core.Event | None = None
        self.error: BaseException | None = None
        self.waker: Waker | None = None  # while it waits for another call to wake it
        self.written = False  # ever, on any connection
        self.retried = False  # its connection broke before it was written

    def timed_out(self) -> FaktoryTimeoutError:
        return FaktoryTimeoutError(
            f"{self.command.verb} got no complete reply within {self.timeout:g} s"
        )

    def outcome(self) -> core.Event:
        if self.state == _UNSENT:
            raise _Unsent
        if self.error is not None:
            raise self.error
        assert self.event is not None
        return self.event


def _unfit(call: _Call) -> BaseException:  # pragma: no cover - nothing is in flight then
    raise AssertionError("a connection retired before use has no command in flight")


#: How early a timer may fire: a read that times out this close to the first deadline of the
#: calls in flight takes that call for late.
_TIMER_SLACK: Final = 0.01


class _Link:
    """One pooled connection: its stream, the core's protocol state, and the calls on it.

    Every field but the stream's bytes is guarded by the Client's lock. ``inflight`` holds the
    calls written, in the order their replies come; ``queued`` the calls waiting to be
    written; ``reader`` the call that reads the stream for all (None: nobody does).
    """

    __slots__ = (
        "blocking",
        "broken",
        "client",
        "closing",
        "failed_opening",
        "inflight",
        "lock",
        "protocol",
        "queued",
        "reader",
        "ready",
        "stream",
    )

    def __init__(self, client: Client) -> None:
        url = client._url
        self.client = client
        self.lock = client._lock
        self.stream: Stream | None = None
        self.protocol = core.Connection(
            core.ClientInfo(username=url.username), password=url.password
        )
        self.ready = False  # the handshake is done
        self.inflight: deque[_Call] = deque()
        self.queued: list[_Call] = []
        self.reader: _Call | None = None
        self.blocking = 0  # blocking commands queued or in flight: nothing new joins then
        self.broken = False  # takes no more calls; closed once nobody reads it
        self.closing = False  # the Client closed: END it once idle
        self.failed_opening = False

    def load(self) -> int:
        return len(self.inflight) + len(self.queued)

    def unfit(self, call: _Call) -> None:
        """``call`` was to go alone on this idle connection, which turns out to hold bytes
        nobody asked for (or the end of the stream): retire it, nothing written."""
        with self.lock:
            self.inflight.remove(call)
            call.state = _QUEUED
            call.written = False
            if self.reader is call:
                self.reader = None
            self.break_(_unfit)  # calls queued behind it go elsewhere too

    def queue(self, call: _Call) -> None:
        """(Lock held.) ``call`` waits to be written with the next batch."""
        self.queued.append(call)
        if call.command.blocks:
            self.blocking += 1

    def send_alone(self, call: _Call) -> bytes:
        """(Lock held; idle.) Move ``call`` in flight now, alone; the bytes to write."""
        command = call.command
        call.state = _SENT
        call.written = True
        if command.blocks:
            self.blocking += 1
        self.protocol.send(command)
        self.inflight.append(call)
        if self.reader is None:
            self.reader = call  # nobody reads the connection: this call will
        return self.protocol.data_to_send()

    def next_batch(self) -> bytes | None:
        """(Lock held; nothing in flight.) Move the calls queued in flight, up to the first
        blocking one (nothing may wait behind that on the server); the bytes to write. A call
        whose timeout passed while it waited its turn gives up instead, unwritten; None when
        every one did."""
        queued = self.queued
        now = clock()
        batch: list[_Call] = []
        while queued and not batch:
            end = len(queued)
            if self.blocking:
                end = next(n for n, call in enumerate(queued) if call.command.blocks) + 1
            for call in queued[:end]:
                if call.deadline > now:
                    call.state = _SENT
                    call.written = True
                    batch.append(call)
                else:
                    if call.command.blocks:
                        self.blocking -= 1
                    _finish(call, None, call.timed_out())
            del queued[:end]
        if not batch:
            return None
        self.protocol.send(*[call.command for call in batch])
        self.inflight.extend(batch)
        return self.protocol.data_to_send()

    async def handshake(self, deadline: float) -> core.Event:
        """The event that ends the handshake (Ready, ConnectionClosed, an error reply), every
        write and read it takes done by ``deadline``."""
        protocol, stream = self.protocol, self.stream
        assert stream is not None
        while True:
            event = protocol.next_event()
            data = protocol.data_to_send()
            if data:
                stream.write(data, deadline)
            if event is not core.NEED_DATA:
                return event
            protocol.receive_data(await stream.read(deadline))

    def write(self, data: bytes, deadline: float) -> None:
        """Write the calls just moved in flight; a failure fails them."""
        assert self.stream is not None
        try:
            self.stream.write(data, deadline)
        except TimeoutError:
            with self.lock:
                self.expire()
        except OSError as error:
            with self.lock:
                self.break_(self._broke(error))

    async def wait(self, call: _Call) -> core.Event:
        """``call``'s reply event (or its error). While nobody else does, it reads for every
        call on the connection (and writes the next batch when one is due) until its own
        reply is in, then passes the reading on to a call still waiting."""
        lock, inflight = self.lock, self.inflight
        deadline = 0.0
        ending = False
        while True:
            with lock:
                if call.state >= _DONE:
                    if self.reader is call:
                        ending = self._leave()
                    break
                reader = self.reader
                if reader is call or (reader is None and self.ready):
                    if len(inflight) == 1 and not self.queued:  # (the common case)
                        deadline = inflight[0].deadline
                    else:
                        deadline = self._deadline()
                    self.reader = call
                    waker = None
                else:
                    waker = call.waker = Waker()
                    # The reader waits for the calls in flight; one queued may have to give up
                    # sooner (a reader reading already does not know of it).
                    until = call.deadline if call.state == _QUEUED else None
            if waker is not None:
                try:
                    woken = await waker.wait(until)
                except BaseException:  # the caller is gone (cancelled, killed)
                    self.gone(call)
                    raise
                if not woken:
                    with lock:
                        self._give_up(call)
                continue
            stream = self.stream
            assert stream is not None  # ready
            try:
                data = await stream.read(deadline)
            except TimeoutError:
                with lock:
                    self.expire()
                continue
            except OSError as error:
                with lock:
                    self.break_(self._broke(error))
                continue
            except BaseException:
                self.gone(call)
                raise
            with lock:
                batch = self._take(data)
                if batch is None:
                    if call.state >= _DONE:  # (as at the top, one lock sooner)
                        ending = self._leave()
                        break
                    continue
                deadline = min(other.deadline for other in inflight)
            try:
                self.write(batch, deadline)
            except BaseException:  # the caller is gone (a killed greenlet)
                self.gone(call)
                raise
        if ending:
            self.end(clock() + self.client._timeout)
        event = call.event
        if event is not None and call.state == _DONE:  # answered (the common case)
            return event
        return call.outcome()

    def _deadline(self) -> float:
        """(Lock held.) When the reader must stop waiting: the first deadline of the calls on
        the connection, in flight (their replies are late then) or queued (they give up)."""
        inflight = self.inflight
        deadline = inflight[0].deadline  # one is in flight while calls wait: the next batch
        if len(inflight) > 1:  # goes out as the last reply of one comes in
            deadline = min(other.deadline for other in inflight)
        for queued in self.queued:
            deadline = min(deadline, queued.deadline)
        return deadline

    def _give_up(self, call: _Call) -> None:
        """(Lock held.) ``call``'s timeout passed while it waited: still queued, it gives up,
        unwritten (written meanwhile, the reader minds its deadline)."""
        call.waker = None
        if call.state == _QUEUED:
            self.queued.remove(call)
            if call.command.blocks:
                self.blocking -= 1
            _finish(call, None, call.timed_out())
            if self.reader is None:  # it may have been woken to read just then: wake another
                self._hand_off()

    def _hand_off(self) -> bool:
        """(Lock held; nobody reads.) Wake a waiting call to read; False when none waits."""
        for call in (*self.inflight, *self.queued):
            if call.waker is not None:
                _wake(call)
                return True
        return False

    def gone(self, call: _Call) -> None:
        """``call``'s caller is gone (a cancelled task, a killed greenlet): drop the call, or
        its reply once it comes; pass the reading on if it read."""
        with self.lock:
            ending = self._abandon(call)
            if self.reader is call:
                ending = self._leave()
        if ending:
            self.end(clock() + self.client._timeout)

    def _take(self, data: bytes) -> bytes | None:
        """(Lock held.) Hand each reply in ``data`` to its call; the next batch to write when
        the last reply in flight is in and calls are queued."""
        protocol, inflight = self.protocol, self.inflight
        try:
            protocol.receive_data(data)
            while True:
                event = protocol.next_event()
                if event is core.NEED_DATA:
                    unread = protocol.unread
                    break
                if not inflight or isinstance(event, events.ConnectionClosed):
                    # The server closed it, or sent a reply nobody asked for: neither says
                    # what became of the calls in flight.
                    self.break_(self._closed)
                    return None
                done = inflight.popleft()
                if self.blocking and done.command.blocks:
                    self.blocking -= 1
                if done.state == _SENT:
                    done.event = event
                    done.state = _DONE
                    if done.waker is not None:
                        _wake(done)
                unread = protocol.unread
                if not unread:
                    break  # no other reply can be in what arrived
        except core.RemoteProtocolError as error:
            self.break_(self._garbled(error))
            return None
        if not inflight:
            if unread:  # bytes after the last reply, which nobody asked for
                self.break_(_unfit)
            elif self.queued:
                return self.next_batch()
        return None

    def _leave(self) -> bool:
        """(Lock held.) The reader is done: wake another call to read, if one waits; close
        the connection if it is broken, and say whether it should END (closing and idle)."""
        self.reader = None
        if self.broken:
            self.abandon()
            return False
        if self.inflight or self.queued:
            if not self._hand_off():
                self._close_if_orphaned()
            return False
        return self.closing and self._idle_and_closing()

    def _close_if_orphaned(self) -> None:
        """(Lock held; nobody reads.) When the Client has closed and only replies nobody
        waits for are due (their callers are gone), nobody would read them or END the
        connection: close it now."""
        inflight = self.inflight
        if (
            self.closing
            and inflight
            and not self.queued
            and all(call.state == _ABANDONED for call in inflight)
        ):
            self.break_(_unfit)  # no call waits on it: none fails

    def _idle_and_closing(self) -> bool:
        if self.closing and not self.inflight and not self.queued and self.reader is None:
            self.closing = False
            return True
        return False

    def _abandon(self, call: _Call) -> bool:
        """(Lock held.) ``call``'s caller is gone: drop it, or its reply once it comes. True
        when the connection should now END (the Client closed, and nothing is left on it)."""
        call.waker = None
        if call.state == _QUEUED:
            self.queued.remove(call)
            if call.command.blocks:
                self.blocking -= 1
            call.state = _DONE
        elif call.state == _SENT:
            call.state = _ABANDONED
            if call.command.blocks:
                # Its reply may be a job, reserved for whoever reads it, and may take ~2 s,
                # which nobody should wait out: as before pipelining, close the connection.
                self.break_(self._cancelled)
                return False
        if self.reader is not None or self._hand_off():  # it may have been woken to read
            return False
        self._close_if_orphaned()
        return self._idle_and_closing()

    def expire(self) -> None:
        """(Lock held.) A deadline passed: a reply later than its command's timeout closes the
        connection; a call still queued when its timeout passes gives up, unwritten."""
        now = clock()
        late = [call for call in self.inflight if call.deadline <= now]
        if not late:
            gave_up = [call for call in self.queued if call.deadline <= now]
            for call in gave_up:
                self.queued.remove(call)
                if call.command.blocks:
                    self.blocking -= 1
                _finish(call, None, call.timed_out())
            if gave_up or not self.inflight:
                return
            first = min(self.inflight, key=lambda call: call.deadline)
            if first.deadline > now + _TIMER_SLACK:
                # The read waited for a queued call that has left since (it gave up, or its
                # caller is gone): no reply is late, so the reader reads on.
                return
            late = [first]  # a timer a hair early

        def failed(call: _Call) -> BaseException:
            if call in late:
                return call.timed_out()
            return outcome_unknown(
                call.command,
                f"the connection to {self.client._url} was closed before the reply to "
                f"{call.command.verb} came: a command ahead of it got no reply within its "
                "timeout",
            )

        self.break_(failed)

    def _closed(self, call: _Call) -> BaseException:
        verb = call.command.verb
        return outcome_unknown(
            call.command,
            f"{self.client._url} closed the connection before the reply to {verb} was complete",
        )

    def _broke(self, error: OSError) -> Callable[[_Call], BaseException]:
        def failed(call: _Call) -> BaseException:
            lost = outcome_unknown(
                call.command, broke_during(error, self.client._url, call.command.verb), error
            )
            lost.__cause__ = error
            return lost

        return failed

    def _garbled(self, error: core.RemoteProtocolError) -> Callable[[_Call], BaseException]:
        head = self.inflight[0] if self.inflight else None
        url = self.client._url

        def failed(call: _Call) -> BaseException:
            wrapped: FaktoryError
            if call is head:
                wrapped = FaktoryProtocolError(
                    f"{url} broke the Faktory protocol during {call.command.verb}: {error}"
                )
            else:
                wrapped = outcome_unknown(
                    call.command,
                    f"{url} broke the Faktory protocol in the reply to a command ahead of "
                    f"{call.command.verb}, so the connection was closed",
                    error,
                )
            wrapped.__cause__ = error
            return wrapped

        return failed

    def _cancelled(self, call: _Call) -> BaseException:
        return outcome_unknown(
            call.command,
            f"the connection to {self.client._url} was closed before the reply to "
            f"{call.command.verb} came: a FETCH ahead of it was cancelled",
        )

    def break_(self, failed: Callable[[_Call], BaseException]) -> None:
        """(Lock held.) Retire the connection: each call in flight fails with ``failed(call)``,
        each call queued goes back to be sent on another, and a read waiting on it wakes. The
        stream is closed now, or by the reader when it leaves."""
        if self.broken:
            return
        self.broken = True
        self.client._forget(self)
        for call in self.inflight:
            if call.state == _SENT:
                _finish(call, None, failed(call))
        for call in self.queued:
            call.state = _UNSENT
            _wake(call)
        self.inflight.clear()
        self.queued.clear()
        self.blocking = 0
        if self.stream is not None:
            if self.reader is None:
                self.stream.abort()
            else:
                self.stream.interrupt()

    def retire(self) -> bool:
        """(Lock held.) The Client closed: True when idle (END it now), else END it once it
        is."""
        self.closing = True
        if not self.ready or self.broken:
            return False
        if self.reader is None:
            self._close_if_orphaned()
        return self._idle_and_closing()

    def end(self, deadline: float) -> None:
        """Send END (when the connection is still open to it), then close."""
        protocol, stream = self.protocol, self.stream
        if stream is None:
            return
        if protocol.state is core.ConnectionState.READY:
            protocol.send(commands.End())
            with contextlib.suppress(OSError):  # closed, reset or stalled: it ends anyway
                stream.write(protocol.data_to_send(), deadline)
        stream.close()

    def abandon(self) -> None:
        if self.stream is not None:
            self.stream.abort()


def _finish(call: _Call, event: core.Event | None, error: BaseException | None) -> None:
    """(Lock held.) ``call`` is answered (``event``) or failed (``error``): wake its caller."""
    call.event = event
    call.error = error
    call.state = _DONE
    _wake(call)


def _wake(call: _Call) -> None:
    waker = call.waker
    if waker is not None:
        call.waker = None
        waker.wake()


def _pushing(observers: tuple[ClientObserver, ...], job: Job) -> Job:
    """``job`` as ``observers`` would push it: each may return a changed copy."""
    for observer in observers:
        try:
            changed = observer.pushing(job)
        except Exception:
            _log.exception("client observer %r failed in pushing", observer)
            continue
        if not isinstance(changed, Job) or changed.jid != job.jid:
            _log.error(
                "client observer %r: pushing() must return the job, or a Job with the same "
                "jid; got %r (ignored)",
                observer,
                changed,
            )
            continue
        job = changed
    return job


def _pushed(
    observers: tuple[ClientObserver, ...],
    jobs: Iterable[Job],
    outcome: PushOutcome,
    error: str | None,
) -> None:
    """Tell ``observers`` how the push of each of ``jobs`` ended (one that raises is
    logged: it never changes the push's result)."""
    for job in jobs:
        for observer in observers:
            try:
                observer.pushed(job, outcome, error)
            except Exception:
                _log.exception("client observer %r failed in pushed", observer)


def _push_outcome(error: BaseException, *, written: bool) -> PushOutcome:
    """How a push that raised ``error`` ended, its command ``written`` or not."""
    if isinstance(error, ServerReplyError):
        return PushOutcome.REFUSED
    return PushOutcome.UNKNOWN if written else PushOutcome.NOT_SENT


def _bulk_pushes_ended(
    observers: tuple[ClientObserver, ...],
    pushes: tuple[commands.PushBulk, ...],
    error: BaseException,
    *,
    written: bool,
) -> None:
    """Tell ``observers`` of the jobs of ``pushes``: the first failed with ``error``, the
    others were not sent."""
    text = describe_error(error)
    _pushed(observers, pushes[0].jobs, _push_outcome(error, written=written), text)
    later = [job for push in pushes[1:] for job in push.jobs]
    _pushed(observers, later, PushOutcome.NOT_SENT, f"not sent: an earlier command failed ({text})")


def _bulk_failed(
    error: FaktoryError,
    pushes: tuple[commands.PushBulk, ...],
    index: int,
    refused: dict[str, str],
    *,
    written: bool,
) -> None:
    """Tell ``error``, which ended a push_bulk at ``pushes[index]``, how far it got."""
    failed = tuple(job.jid for job in pushes[index].jobs)
    later = tuple(job.jid for push in pushes[index + 1 :] for job in push.jobs)
    pushed = tuple(
        job.jid for push in pushes[:index] for job in push.jobs if job.jid not in refused
    )
    refused = dict(refused)
    uncertain: tuple[str, ...] = ()
    unsent = later
    if isinstance(error, ServerReplyError):
        refused.update(dict.fromkeys(failed, str(error)))
    elif written:
        uncertain = failed
    else:
        unsent = failed + later
    error.bulk = BulkPushProgress(
        pushed=pushed, refused=refused, uncertain=uncertain, unsent=unsent
    )
    total = sum(len(push.jobs) for push in pushes)
    error.add_note(
        f"push_bulk: of {total} jobs, {len(pushed)} were pushed, {len(refused)} refused, "
        f"{len(uncertain)} may or may not have been pushed, {len(unsent)} were not sent "
        "(error.bulk names them)"
    )
