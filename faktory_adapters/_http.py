"""What the metrics and health-check HTTP servers share: the address family an address
needs, a bind without a reverse DNS lookup, a thread that notices a shutdown quickly, and the
URL to log."""

from __future__ import annotations

import socket
import socketserver
import threading
from http.server import HTTPServer
from typing import Final

__all__ = ["SHUTDOWN_POLL", "base_url", "bind", "family", "serve_on_thread"]

#: How often a server's loop looks for a shutdown: the standard library's half a second
#: would hold a stopped worker's port that long after it returned.
SHUTDOWN_POLL: Final = 0.05


def family(address: str) -> socket.AddressFamily:
    """IPv6 for an IPv6 address (``::``), else IPv4."""
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def bind(server: HTTPServer) -> None:
    """Bind ``server`` as HTTPServer.server_bind does, without looking the host's name up
    (``socket.getfqdn``: slow where DNS is)."""
    socketserver.TCPServer.server_bind(server)
    server.server_name, server.server_port = server.server_address[:2]  # type: ignore[assignment]


def serve_on_thread(server: socketserver.BaseServer, name: str) -> threading.Thread:
    """Serve on a daemon thread of its own, started; ``server.shutdown()`` stops it within
    :data:`SHUTDOWN_POLL` seconds."""
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": SHUTDOWN_POLL},
        name=name,
        daemon=True,
    )
    thread.start()
    return thread


def base_url(address: str, port: int) -> str:
    """``http://ADDRESS:PORT``, an IPv6 address in brackets."""
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}"
