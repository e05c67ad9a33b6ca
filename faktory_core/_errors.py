"""The two sides of a protocol failure, after h11: who broke the rules decides the class.

Our side's mistakes come in two kinds. A value the caller gave that cannot be used raises
:class:`ArgumentError` (also a ``ValueError``) or :class:`ArgumentTypeError` (also a
``TypeError``), as the standard library would; :class:`LocalProtocolError` itself is left for
misuse of state: a Connection method called in the wrong state, a machine fed an input it
cannot take.
"""

from __future__ import annotations

__all__ = [
    "ArgumentError",
    "ArgumentTypeError",
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


class ArgumentError(LocalProtocolError, ValueError):
    """A value the caller gave is out of bounds or malformed: a job field, a command
    argument, an option. The message names the argument and, where it helps, the fix.

    Also a ``ValueError``, as the standard library raises for a bad value.
    """


class ArgumentTypeError(LocalProtocolError, TypeError):
    """A value the caller gave has the wrong type, or is a value JSON cannot encode (a
    ``datetime`` in a job's args, say). The message names the argument and the fix.

    Also a ``TypeError``, as the standard library raises for a value of the wrong type.
    """


class OptionError(ArgumentError):
    """A worker or client option outside its documented bounds, named in the message.

    An :class:`ArgumentError`, so also a ``ValueError``.
    """


class RemoteProtocolError(ProtocolError):
    """The server sent bytes that break the protocol; the connection is unusable afterwards."""


class ConfigurationError(ValueError):
    """A server URL or environment setting that cannot be used."""
