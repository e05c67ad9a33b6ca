"""The smallest possible driver of faktory_core: one blocking socket, no threads.

It exists to prove our bytes against the real server; the runtime adapters live in
faktory_adapters.
"""

from __future__ import annotations

import socket
from types import TracebackType

from faktory_core import (
    NEED_DATA,
    ClientInfo,
    Command,
    Connection,
    ConnectionState,
    Event,
    ServerURL,
)
from faktory_core.commands import End
from faktory_core.events import ConnectionClosed


class BlockingClient:
    """Connects, runs the handshake, then answers each request with its events."""

    def __init__(
        self,
        url: str | ServerURL,
        client: ClientInfo | None = None,
        *,
        password: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        address = url if isinstance(url, ServerURL) else ServerURL.parse(url)
        self.connection = Connection(
            client, password=password if password is not None else address.password
        )
        self.sock = socket.create_connection((address.host, address.port), timeout=timeout)
        self.handshake = self.next_event()

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def next_event(self) -> Event:
        """Read until the core has an event, writing what it wants written before each read."""
        while True:
            event = self.connection.next_event()
            if event is not NEED_DATA:
                return event
            self.flush()  # the core answers the greeting with HELLO on its own
            self.connection.receive_data(self.receive())

    def receive(self) -> bytes:
        """One read from the socket (b"" when the server closed it)."""
        return self.sock.recv(65536)

    def flush(self) -> None:
        data = self.connection.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, *commands: Command) -> list[Event]:
        """Send the commands in one write and return one event per command."""
        self.connection.send(*commands)
        self.flush()
        return [self.next_event() for _ in commands]

    def ask(self, command: Command) -> Event:
        """Send one command and return its event."""
        return self.request(command)[0]

    def end(self) -> Event:
        """Send END, then read until the server has closed the socket."""
        self.connection.send(End())
        self.flush()
        while True:
            data = self.sock.recv(65536)
            if not data:
                break
        self.connection.receive_data(b"")
        event = self.connection.next_event()
        assert isinstance(event, ConnectionClosed)
        return event

    def close(self) -> None:
        if self.connection.state is ConnectionState.READY:
            self.connection.send(End())
            self.flush()
        self.sock.close()
