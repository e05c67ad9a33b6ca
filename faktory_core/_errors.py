"""The two sides of a protocol failure, after h11: who broke the rules decides the class."""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "LocalProtocolError",
    "OptionError",
    "ProtocolError",
    "RemoteProtocolError",
]


class ProtocolError(Exception):
    """Base class of every protocol failure raised by :mod:`faktory_core`."""


class LocalProtocolError(ProtocolError):
    """Our side broke the rules: an invalid job or command, or a call made in the wrong state.

    Raised by a :class:`~faktory_core.Connection` method, it leaves that connection unusable.
    Raised while building a job or a command, no connection is involved and nothing was sent.
    """


class OptionError(LocalProtocolError, ValueError):
    """A worker or client option outside its documented bounds, named in the message.

    Also a ``ValueError``, as the standard library raises for a bad argument.
    """


class RemoteProtocolError(ProtocolError):
    """The server sent bytes that break the protocol; the connection is unusable afterwards."""


class ConfigurationError(ValueError):
    """A server URL or environment setting that cannot be used."""
