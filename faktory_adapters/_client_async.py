"""The asyncio adapter's Client.

One Client for the three runtimes: ``_client_async.py`` is written by hand, and
``scripts/unasync.py`` generates the blocking ones from it (``_client_sync.py`` for threads,
``_client_gevent.py`` for gevent), each over its runtime's network backend (``_net_*.py``).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Self

import faktory_core as core
from faktory_core import ArgumentTypeError, Job, commands, events

from ._common import (
    ClientClosedError,
    FaktoryConnectionError,
    FaktoryTimeoutError,
    InvalidJobError,
    ServerReplyError,
    connection_lost,
    expect,
    handshake_closed,
    handshake_failure,
    new_jid,
    resolve_url,
    tls_context,
    unusable,
)
from ._net_asyncio import LoopBinding, Stream, clock, connect, semaphore
from ._options import check_callable, check_ssl_context

__all__ = ["Client"]


class Client:
    """A producer and admin client: push jobs, inspect and manage the server.

    Connections are opened on demand and kept in a small pool (``pool_size``).
    ``connect_timeout`` bounds opening one: TCP connect, TLS handshake and Faktory's
    HI/HELLO/OK together. ``timeout`` bounds each command, from writing it to the last byte of
    its reply (:meth:`fetch` waits at least ``faktory_core.commands.FETCH_WAIT_FLOOR`` s).
    Past either bound, FaktoryTimeoutError is raised and that connection closed. Waiting for a
    free connection when ``pool_size`` are busy is not bounded. A pooled connection that the
    server closed, or wrote to unasked, is replaced before use.

    Whatever the server or the network does raises a :class:`FaktoryError`:
    :class:`ServerReplyError` for an ``-ERR`` reply, :class:`FaktoryConnectionError` (a
    ConnectionError) when the server cannot be reached or the connection breaks,
    :class:`FaktoryTimeoutError` (a TimeoutError), :class:`FaktoryProtocolError`. A wrong
    argument raises TypeError or ValueError, a closed Client :class:`ClientClosedError`.
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
        self._idle: list[_ClientConnection] = []
        self._slots = semaphore(config.pool_size)
        self._loop_binding = LoopBinding()
        self._closed = False

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
        """Send END on every idle connection and close them; closing twice is harmless."""
        self._claim_loop()
        self._closed = True
        idle, self._idle = self._idle, []
        deadline = clock() + self._timeout
        for connection in idle:
            connection.end(deadline)

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
        """Push a job (a :class:`Job`, or a job type with its args and options); return jid."""
        if isinstance(job, str):
            job = self.job(job, args, **options)
        elif not isinstance(job, Job):
            raise ArgumentTypeError(
                f"push(job): job must be a faktory_core.Job or a job type (a str), got "
                f"{type(job).__name__}"
            )
        elif args or options:
            raise ArgumentTypeError("push(job) takes no args or options: they are the Job's fields")
        await self._ok(commands.Push(job=job))
        return job.jid

    async def push_bulk(self, jobs: Iterable[Job]) -> dict[str, str]:
        """Push many jobs in one command (server 1.6+); return {jid: error} of those refused."""
        event = expect(await self.request(commands.PushBulk(jobs=jobs)), events.BulkPushed)
        return event.errors

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
        default) after the command is sent.
        """
        if not isinstance(command, commands.Command):
            raise ArgumentTypeError(
                "request(command): command must be a faktory_core.commands command such as "
                f"commands.Info(), got {type(command).__name__}"
            )
        limit = self._timeout if timeout is None else core.ClientConfig(timeout=timeout).timeout
        self._check_open()
        self._claim_loop()
        async with self._slots:
            self._check_open()  # closed while this call waited for a connection
            connection = self._reusable()
            try:
                if connection is None:
                    connection = await self._open()
                event = await connection.request(command, limit)
            except BaseException:
                if connection is not None:
                    connection.abandon()  # its state is unknown: never reuse it
                raise
            if self._closed:
                connection.end(clock() + self._timeout)
            else:
                self._idle.append(connection)
        if isinstance(event, events.ServerError):
            raise ServerReplyError(event.code, event.message)
        return event

    async def _ok(self, command: core.Command) -> None:
        expect(await self.request(command), events.OK)

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError(
                "the Client is closed (by close(), or at the end of its with block): "
                "make a new Client"
            )

    def _claim_loop(self) -> None:
        """Check the event loop this call runs on (none in the blocking runtimes): when the
        pool belongs to a loop that has closed, its connections are dead, and a new pool starts
        on this loop."""
        if self._loop_binding.claim():
            dead, self._idle = self._idle, []
            for connection in dead:
                connection.abandon()
            self._slots = semaphore(self._pool_size)  # the old one may be bound to that loop

    def _reusable(self) -> _ClientConnection | None:
        """An idle connection fit to carry a command; those found unfit are closed."""
        while True:
            try:
                connection = self._idle.pop()
            except IndexError:  # none is idle
                return None
            if connection.reusable():
                return connection
            connection.abandon()

    async def _open(self) -> _ClientConnection:
        url, limit = self._url, self._connect_timeout
        deadline = clock() + limit
        try:
            stream = await connect(url, self._ssl_context, deadline)
            connection = _ClientConnection(
                url,
                stream,
                core.Connection(core.ClientInfo(username=url.username), password=url.password),
            )
            try:
                event = await connection.next_event(deadline)
            except BaseException:  # a timeout or a cancellation: never leak the socket
                connection.abandon()
                raise
        except TimeoutError:
            raise FaktoryTimeoutError(
                f"connecting to {url} took more than {limit:g} s (connect_timeout)"
            ) from None
        except (OSError, core.RemoteProtocolError) as error:
            raise unusable(error, url, timeout=limit) from error
        if isinstance(event, events.Ready):
            return connection
        connection.abandon()
        if isinstance(event, events.ConnectionClosed):
            raise handshake_closed(url)
        raise handshake_failure(event, url)


class _ClientConnection:
    """One pooled connection: a network stream and the core's protocol state."""

    def __init__(self, url: core.ServerURL, stream: Stream, protocol: core.Connection) -> None:
        self._url = url
        self._stream = stream
        self._protocol = protocol

    async def request(self, command: core.Command, timeout: float) -> core.Event:
        """The reply to ``command``; every failure of the server's or the network's is a
        FaktoryError."""
        self._protocol.send(command)
        try:
            event = await self.next_event(clock() + timeout)
        except TimeoutError:
            raise FaktoryTimeoutError(
                f"{command.verb} got no complete reply within {timeout:g} s"
            ) from None
        except (OSError, core.RemoteProtocolError) as error:
            raise connection_lost(error, self._url, command.verb) from error
        if isinstance(event, events.ConnectionClosed):
            raise FaktoryConnectionError(
                f"{self._url} closed the connection before the reply to {command.verb} was complete"
            )
        return event

    async def next_event(self, deadline: float) -> core.Event:
        """The next event (ConnectionClosed when the server closed the connection), every
        write and read it takes done by ``deadline``."""
        protocol, stream = self._protocol, self._stream
        while True:
            event = protocol.next_event()
            data = protocol.data_to_send()
            if data:
                stream.write(data, deadline)
            if event is not core.NEED_DATA:
                return event
            protocol.receive_data(await stream.read(deadline))

    def reusable(self) -> bool:
        """Whether it can carry another command: not if the server closed it or sent bytes
        nobody asked for (while it sat idle, or after the last reply), which a command sent now
        would take for its reply."""
        if self._protocol.state is not core.ConnectionState.READY or self._protocol.unread:
            return False
        return not self._stream.readable()

    def end(self, deadline: float) -> None:
        """Send END (when the connection is still open to it), then close."""
        protocol = self._protocol
        if protocol.state is core.ConnectionState.READY:
            protocol.send(commands.End())
            with contextlib.suppress(OSError):  # closed, reset or stalled: it ends anyway
                self._stream.write(protocol.data_to_send(), deadline)
        self._stream.close()

    def abandon(self) -> None:
        self._stream.abort()
